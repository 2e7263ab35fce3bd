"""Captured decode steps for the fixed-state families (Mamba, RWKV-7, xLSTM), like vLLM's cudagraph sizes.

On a GPU an eager decode step of these models is bound by kernel launches (tens of small kernels a
layer; the H100 measurements in benchmarks/results show 10-20x between eager and a replayed graph).
A recurrent state has a fixed size and the forward updates it in place, so one step can be captured
per batch-size bucket and replayed: the decode batch's rows live in the first rows of one static
cache of the largest bucket, every bucket's graph reads and writes a prefix of it, and a step copies
the token ids in, replays the smallest bucket that holds the batch and reads its logits. Rows past
the batch compute on stale state, which no real row ever reads (every op is row-wise).

Anything that goes wrong while capturing (a kernel that reads the device from the host, a forward
that replaces its state tensors instead of updating them) turns graphs off for the engine, logs why,
and the step runs eagerly on the same buffers; nothing is lost. The attention family is not captured:
its KV cache grows and its attention is sized on the host every step.

`capture=False` runs the same buffer logic with eager forwards (how CPU tests check it).
"""

from __future__ import annotations

import structlog
import torch

from archrouter.backends.base import Cache, CausalLM

log = structlog.get_logger("archrouter.engine.graphs")


class DecodeGraphs:
    def __init__(self, model: CausalLM, sizes: list[int], *, capture: bool = True):
        self.model = model
        self.sizes = sorted({int(s) for s in sizes if s > 0})
        if not self.sizes:
            raise ValueError("cuda_graph_sizes needs at least one positive batch size")
        self.capture = capture
        self.device = next(model.parameters()).device
        self.static = model.init_cache(self.sizes[-1])
        self.ids = torch.zeros(self.sizes[-1], 1, dtype=torch.long, device=self.device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.disabled: str | None = None  # why graphs went off (None: on)
        self.replays = 0
        self._pool = torch.cuda.graph_pool_handle() if capture else None

    @property
    def max_size(self) -> int:
        return self.sizes[-1]

    def bucket(self, n: int) -> int | None:
        """The smallest captured size that holds `n` rows (None: too many, decode eagerly)."""
        return next((s for s in self.sizes if s >= n), None)

    def view(self, n: int) -> Cache:
        """The first `n` rows of the static cache (views: updates land in the static buffers)."""
        return type(self.static)({k: t[:n] for k, t in self.static.tensors.items()}, self.static.meta)

    def load(self, cache: Cache) -> Cache:
        """Copy a decode batch's rows into the static buffers; the returned cache is their view."""
        n = cache.batch_size
        for k, t in cache.tensors.items():
            self.static.tensors[k][:n].copy_(t)
        return self.view(n)

    def holds(self, cache: Cache | None) -> bool:
        """Whether `cache` is a view of the static buffers (the batch was loaded and graphs are on)."""
        if cache is None or self.disabled is not None:
            return False
        k, t = next(iter(cache.tensors.items()))
        return t.data_ptr() == self.static.tensors[k].data_ptr() and cache.batch_size <= self.max_size

    def decode(self, ids: torch.Tensor, n: int) -> torch.Tensor | None:
        """Logits [n, vocab] of one decode step of the loaded batch with token ids [n, 1] (on the device);
        None when no graph can run it (the caller decodes eagerly on the same buffers)."""
        b = self.bucket(n)
        if b is None or self.disabled is not None:
            return None
        self.ids[:n].copy_(ids)
        if not self.capture:
            logits, _ = self.model(self.ids[:b], self.view(b))
            self.replays += 1
            return logits[:n, -1]
        if b not in self.graphs and not self._capture(b):
            return None
        self.graphs[b].replay()
        self.replays += 1
        return self.logits[b][:n, -1]

    def _capture(self, b: int) -> bool:
        view = self.view(b)
        # warm-up and capture run real kernels on these rows (warm-up) or not at all (capture): keep them
        backup = {k: t.clone() for k, t in view.tensors.items()}
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # compiles and autotunes this bucket's kernels outside the capture
                    _, out = self.model(self.ids[:b], view)
                    moved = [k for k, t in out.tensors.items() if t.data_ptr() != view.tensors[k].data_ptr()]
                    if moved:
                        raise RuntimeError(f"decode replaces state tensors {moved[:4]} instead of updating them")
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other engines' step threads may allocate or launch while this one captures
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                logits, _ = self.model(self.ids[:b], view)
            self.graphs[b], self.logits[b] = graph, logits
            log.info("decode_graph_captured", batch=b)
            return True
        except Exception as exc:  # any capture failure: eager from now on, same buffers, same results
            self.disabled = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("decode_graph_capture_failed", batch=b, error=self.disabled)
            return False
        finally:
            try:
                torch.cuda.synchronize(self.device)
                for k, t in view.tensors.items():
                    t.copy_(backup[k])
            except Exception as exc:  # the device itself failed: the step fails and its requests with it
                self.disabled = self.disabled or f"{type(exc).__name__}: {exc}"[:300]
                raise
