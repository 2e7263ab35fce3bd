"""Server settings: CLI flags, else ARCHROUTER_* environment variables, else defaults."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARCHROUTER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    policy: str = "config/policy.yaml"
    device: str = "auto"  # the engines' device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "ARCHROUTER_REDIS_URL"))
    decision_stream: str = "archrouter:decisions"
    decision_stream_maxlen: int = 100_000
    decision_log_buffer: int = 10_000  # records held while Redis is down; older ones beyond it are dropped, counted
    log_format: str = "auto"  # json | console | auto (console on a terminal)
    watch_policy: bool = True
    # several router replicas (Ray Serve turns it on with redis_url): accepted policies are published on
    # the channel and in the key, and every replica swaps to them
    policy_sync: bool = False
    policy_channel: str = "archrouter:policy"
    policy_key: str = "archrouter:policy:current"
    # Ray Serve: a request no backend replica takes within this long goes to a fallback (deployment down or full)
    backend_assign_timeout_s: float = 5.0
    replica: str | None = None  # names this replica in the x-archrouter-replica header (set by ray_app)

    # keys: a YAML file of salted hashes (`archrouter keys add`), and/or plaintext keys from the environment
    keys_file: str | None = None
    api_keys: str | None = None  # ARCHROUTER_API_KEYS: comma-separated ar-<id>-<secret>
    admin_key: str | None = None  # ARCHROUTER_ADMIN_KEY
    # per-key budgets (a key's own rpm/tpm in the keys file wins)
    rpm: int = 600
    tpm: int = 2_000_000
    ratelimit_redis_retry_s: float = 5.0  # while Redis is down, limits are local; Redis is tried again this often
    # limits on input
    max_body_bytes: int = 1 << 20
    max_json_depth: int = 32
    max_messages: int = 256
    max_tokens_cap: int = 4096
    # time limits
    request_timeout_s: float = 300.0  # whole generation, first token to last
    # idle keep-alive connections are kept longer than clients keep them (httpx and the openai client: 5 s),
    # so a client never sends on a connection the server is closing at that moment
    keep_alive_s: float = 65.0
    shutdown_grace_s: float = 30.0  # SIGTERM: in-flight streams get this long to finish
    # fallbacks: a backend failing `cooldown_failures` times within `cooldown_window_s` sits out `cooldown_s`
    cooldown_failures: int = 3
    cooldown_window_s: float = 60.0
    cooldown_s: float = 30.0
    # exact response cache in Redis (temperature 0, one choice, not streamed): off unless turned on
    response_cache: bool = False  # ARCHROUTER_RESPONSE_CACHE=1
    response_cache_ttl_s: float = 3600.0
    response_cache_max_bytes: int = 64 << 20
    response_cache_prefix: str = "archrouter:rcache"
