"""Captured decode steps, one CUDA graph per batch-size bucket (vLLM's cudagraph sizes), on by default on CUDA.

On a GPU an eager decode step of these small models is bound by kernel launches (tens of small kernels
a layer), so the step is captured and replayed. What makes that possible is the slot pool: the state
(or the paged KV) lives at fixed addresses, and a step's inputs are a static slot vector. A replay
copies the batch's slots into the first rows of that vector (padding rows point at the pool's scratch
slot), and the graph gathers each row's last token from the runner's `last_token`, runs the forward on
the pool by slot and leaves the logits in a static buffer.

Recurrent families capture `model(ids, pool, slots=...)` as it is. The Transformer's paged decode has
host-side work each step (blocks allocated as a sequence grows, block tables, context lengths): that
is done eagerly by `PagedKVCache.prepare`, its tensors are copied into static buffers, and the graph
replays the layers over those buffers (`transformer.Transformer.decode_static`), one graph per batch
bucket and context-length bucket (the flash-decoding split depends on the latter).

Anything that goes wrong while capturing turns graphs off for the engine, logs why, and the step runs
eagerly; nothing is lost. `capture=False` runs the same buffer logic eagerly (how CPU tests check it).
"""

from __future__ import annotations

import structlog
import torch

from archrouter.backends.engine.pools import KVSlots, StatePool

log = structlog.get_logger("archrouter.engine.graphs")

CONTEXT_BUCKET = 512  # paged decode graphs per multiple of this many tokens of context (rounded to powers of 2)


class DecodeGraphs:
    def __init__(self, pool: StatePool | KVSlots, last_token: torch.Tensor, sizes: list[int], *,
                 capture: bool = True, max_context: int = 4096):  # fmt: skip
        self.pool = pool
        self.model = pool.model
        self.last_token = last_token
        self.sizes = sorted({int(s) for s in sizes if s > 0})
        if not self.sizes:
            raise ValueError("cuda_graph_sizes needs at least one positive batch size")
        self.capture = capture
        self.device = pool.device
        n = self.sizes[-1]
        self.scratch = pool.scratch if isinstance(pool, StatePool) else 0
        self.slots = torch.full((n,), self.scratch, dtype=torch.int32, device=self.device)
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.logits: dict[tuple[int, int], torch.Tensor] = {}
        self.disabled: str | None = None  # why graphs went off (None: on)
        self.replays = 0
        self._pool = torch.cuda.graph_pool_handle() if capture else None
        self.static = None
        if isinstance(pool, KVSlots):
            self.static = self.model.static_decode_buffers(n, max_context, pool.kv)

    @property
    def max_size(self) -> int:
        return self.sizes[-1]

    def bucket(self, n: int) -> int | None:
        """The smallest captured size that holds `n` rows (None: too many, decode eagerly)."""
        return next((s for s in self.sizes if s >= n), None)

    def decode(self, slots: torch.Tensor, host_slots: list[int]) -> torch.Tensor | None:
        """Logits [n, vocab] of one decode step of the rows in `slots` (on the device); None when no graph
        can run it (the caller decodes eagerly)."""
        n = len(host_slots)
        b = self.bucket(n)
        if b is None or self.disabled is not None:
            return None
        ctx = 0
        if self.static is not None:  # paged: the host plans the step (blocks, tables), the graph runs it
            view = self.pool.view(host_slots)
            ctx = self.model.prepare_static(view, self.static, b)
            if ctx is None:
                return None
        self.slots[:n].copy_(slots)
        if b > n:
            self.slots[n:b].fill_(self.scratch)
        key = (b, ctx)
        if not self.capture:
            out = self._forward(b, ctx)
        else:
            if key not in self.graphs and not self._capture(key):
                if self.static is not None:
                    self.model.abort_static(view)
                return None
            self.graphs[key].replay()
            out = self.logits[key]
        if self.static is not None:
            self.model.commit_static(view)
        self.replays += 1
        return out[:n]

    def _forward(self, b: int, ctx: int) -> torch.Tensor:
        ids = self.last_token.index_select(0, self.slots[:b].long())[:, None]
        if self.static is not None:
            return self.model.decode_static(ids, self.static, b, ctx)
        logits, _ = self.model(ids, self.pool.cache, slots=self.slots[:b])
        return logits[:, -1]

    def _capture(self, key: tuple[int, int]) -> bool:
        b, ctx = key
        saved = self.slots[:b].clone()
        try:
            # warm-up and capture compute on the scratch slot only (paged: on the rows the step planned,
            # whose K/V writes are rewritten identically by the replay that follows)
            if self.static is None:
                self.slots[:b].fill_(self.scratch)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # compiles and autotunes this bucket's kernels outside the capture
                    self._forward(b, ctx)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other engines' step threads may allocate or launch while this one captures
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                logits = self._forward(b, ctx)
            self.graphs[key], self.logits[key] = graph, logits
            log.info("decode_graph_captured", batch=b, context=ctx)
            return True
        except Exception as exc:  # any capture failure: eager from now on, same results
            self.disabled = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("decode_graph_capture_failed", batch=b, error=self.disabled)
            return False
        finally:
            torch.cuda.synchronize(self.device)
            self.slots[:b].copy_(saved)
