"""API keys: stored as salted hashes, compared in constant time, scoped to backends.

A key looks like `ar-<id>-<secret>`: the id finds the record without hashing against every
stored key, the secret is checked against its salted SHA-256 (secrets are 32 random bytes, so
a slow password hash buys nothing). Keys come from a YAML file (`archrouter keys add` writes
it) and/or the environment (`ARCHROUTER_API_KEYS`, `ARCHROUTER_ADMIN_KEY`: plaintext, hashed at
start-up and never kept).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from archrouter.router.errors import APIError


class KeyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9]{6,32}$")
    name: str
    hash: str  # "sha256$<salt hex>$<digest hex>"
    backends: list[str] | None = None  # None: every backend
    admin: bool = False
    rpm: int | None = Field(default=None, ge=1)  # requests per minute; None: the server default
    tpm: int | None = Field(default=None, ge=1)  # tokens per minute


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyRecord] = []


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    backends: frozenset[str] | None
    admin: bool
    rpm: int | None
    tpm: int | None

    def may_use(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends


ANONYMOUS = Principal("anonymous", "anonymous", None, True, None, None)


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    return f"sha256${salt.hex()}${hashlib.sha256(salt + secret.encode()).hexdigest()}"


def new_key() -> tuple[str, str, str]:
    """(key id, the full key to hand out once, its stored hash)."""
    kid = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    return kid, f"ar-{kid}-{secret}", hash_secret(secret)


class KeyStore:
    def __init__(self, records: list[KeyRecord]):
        self.records = {r.id: r for r in records}

    @property
    def enabled(self) -> bool:
        return bool(self.records)

    @classmethod
    def from_config(cls, path: str | None, env_keys: str | None, admin_key: str | None) -> KeyStore:
        records: list[KeyRecord] = []
        if path:
            records += KeysFile.model_validate(yaml.safe_load(Path(path).read_text()) or {}).keys
        for i, key in enumerate(k.strip() for k in (env_keys or "").split(",") if k.strip()):
            records.append(_plain_record(key, f"env-{i}", admin=False))
        if admin_key:
            records.append(_plain_record(admin_key, "admin", admin=True))
        return cls(records)

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if not authorization or not authorization.lower().startswith("bearer "):
            raise _unauthorized("Missing API key: send it as 'Authorization: Bearer <key>'.")
        key = authorization[7:].strip()
        parts = key.split("-", 2)
        rec = self.records.get(parts[1]) if len(parts) == 3 and parts[0] == "ar" else None
        if rec is None or not _verify(parts[2], rec.hash):
            raise _unauthorized("Incorrect API key provided.")
        return Principal(rec.id, rec.name, frozenset(rec.backends) if rec.backends is not None else None,
                         rec.admin, rec.rpm, rec.tpm)


def _plain_record(key: str, name: str, *, admin: bool) -> KeyRecord:
    parts = key.split("-", 2)
    if len(parts) != 3 or parts[0] != "ar":
        raise ValueError(f"API key for {name!r} must look like ar-<id>-<secret> (use `archrouter keys add`)")
    return KeyRecord(id=parts[1], name=name, hash=hash_secret(parts[2]), admin=admin)


def _verify(secret: str, stored: str) -> bool:
    try:
        algo, salt, digest = stored.split("$")
    except ValueError:
        return False
    if algo != "sha256":
        return False
    got = hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()
    return hmac.compare_digest(got, digest)


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, type="invalid_request_error", code="invalid_api_key",
                    headers={"www-authenticate": "Bearer"})


def forbidden_backend(principal: Principal, backend: str) -> APIError:
    return APIError(403, f"API key {principal.name!r} may not use backend {backend!r}", param="model",
                    code="backend_not_allowed")
