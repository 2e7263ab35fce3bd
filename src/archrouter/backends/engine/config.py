"""Engine settings: explicit arguments, else ARCHROUTER_ENGINE_* environment variables, else defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARCHROUTER_ENGINE_", extra="ignore")

    # the running batch: sequences being prefilled or decoded together
    max_num_seqs: int = Field(32, gt=0)
    # tokens one step may feed through the model (decode rows + prefill chunks); bounds a step's latency
    max_num_batched_tokens: int = Field(512, gt=0)
    # distinct prompt-chunk lengths per step before chunks are rounded down to powers of two
    max_prefill_shapes: int = Field(4, gt=0)
    # bounded waiting queue (beyond free seats): past it a request is refused (BackendOverloaded -> HTTP 429)
    max_waiting: int = Field(256, ge=0)
    # a request still waiting for admission after this long fails (QueueTimeout -> HTTP 503)
    queue_timeout_s: float = Field(30.0, gt=0)
    # attention caches grow with tokens: admission reserves prompt + max_tokens against this budget, and
    # the paged KV pool is sized from it; recurrent caches are fixed-size, one slot a row
    kv_token_budget: int = Field(65_536, gt=0)
    # attention KV always lives in a pool of fixed-size blocks (`backends.paged_cache`), one slot a sequence;
    # `kv_paged` shares prompt prefixes as pool blocks (off: through state-cache snapshots, e.g. via Redis)
    kv_paged: bool = True
    kv_block_size: int = Field(16, gt=0)
    # prefix caching. Recurrent families: state snapshots (below). Attention with `kv_paged`: full KV
    # blocks shared by prompts that start alike ("auto" and "on"). Attention without paging: "on" keeps
    # KV snapshots like a recurrent state. "off": none.
    state_cache: Literal["auto", "on", "off"] = "auto"
    state_cache_block: int = Field(32, gt=0)  # snapshots sit at multiples of this many tokens
    # a prompt's snapshot is taken (its prefill split there) only when it covers at least this many tokens
    # past the restored prefix; shorter tails are re-prefilled by the next turn within one forward. None: 256
    # on CUDA (where a forward's cost is its launches, not its tokens), 0 on the CPU (where it is the tokens)
    state_cache_min_tokens: int | None = Field(None, ge=0)
    # in-process tier: states kept as tensors on the model's device (GPU memory on CUDA), LRU past this
    state_cache_local_bytes: int = Field(1 << 30, ge=0)
    # the byte tier (Redis when `redis_url` is set: shared by replicas), written behind by a thread
    state_cache_ttl_s: int = Field(3600, gt=0)
    state_cache_max_bytes: int = Field(1 << 30, gt=0)
    # decode steps replayed from CUDA graphs captured per batch-size bucket, every family (the Transformer's
    # paged decode too; CUDA only: elsewhere ignored; a capture failure falls back to eager)
    cuda_graphs: bool = True
    cuda_graph_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128])
    # all prompt chunks of a step in one packed variable-length forward; None: on CUDA (the Triton kernels
    # take cumulative offsets), off on the CPU, whose reference kernels loop over packed sequences one by one
    # (there, chunks of equal length share a dense forward over their slots)
    packed_prefill: bool | None = None
    # decode steps run back to back on the device before the host reads their tokens, while no prompt waits
    # (tokens past a stop are dropped); None: 4 on CUDA, 1 elsewhere
    decode_steps: int | None = Field(None, gt=0)
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "ARCHROUTER_REDIS_URL", "redis_url")
    )

    @model_validator(mode="after")
    def _step_fits_the_batch(self) -> EngineConfig:
        # every decoding sequence feeds one token a step; a smaller budget would starve prefill forever
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be at least "
                             f"max_num_seqs ({self.max_num_seqs})")
        return self
