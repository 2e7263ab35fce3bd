"""Server settings: CLI flags, else ARCHROUTER_* environment variables, else defaults."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARCHROUTER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    policy: str = "config/policy.yaml"
    device: str = "cpu"
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "ARCHROUTER_REDIS_URL"))
    decision_stream: str = "archrouter:decisions"
    decision_stream_maxlen: int = 100_000
    log_format: str = "auto"  # json | console | auto (console on a terminal)
    watch_policy: bool = True
