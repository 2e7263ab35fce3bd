"""The continuous-batching engine behind `BackendClient`: scheduler + model runner + a step thread.

`generate()` encodes the request, queues a `Sequence` and streams what the step thread hands to the
sequence's asyncio queue. The step thread loops: expire waiting requests past the queue timeout,
drop cancelled ones (their slots go back at this step), admit (each admitted request takes a slot of
the state pool: `pools`), restore cached prefixes into those slots, plan the step, run one decode
forward by slot and one packed forward over every prompt chunk, sample every row in one call, stream.
While only decoding rows run (no prompt waiting), decode steps go in rounds queued back to back on the
device, and the next round is launched before the last one's tokens are read: the host streams while
the device computes.

Cached prefixes: a recurrent family restores a state snapshot (`state_cache`) into the request's slot,
device to device; the Transformer keeps its KV in the engine's paged block pool, where full blocks are
shared by every prompt that starts with the same tokens, so a later prompt attaches them and prefills
only the rest. Beyond the design's model interface the engine uses `forward_packed` (every family),
`forward(..., slots=...)` (the recurrent ones) and `new_kv_pool` (the Transformer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
import torch

from archrouter.backends import families
from archrouter.backends.base import Cache, CausalLM
from archrouter.backends.engine.config import EngineConfig
from archrouter.backends.engine.graphs import DecodeGraphs
from archrouter.backends.engine.pools import KVSlots, StatePool
from archrouter.backends.engine.runner import ModelRunner, Round
from archrouter.backends.engine.scheduler import Scheduler
from archrouter.backends.engine.sequence import Sequence, Status
from archrouter.backends.engine.state_cache import RedisStateStore, StateCache, StateStore
from archrouter.backends.generator import is_trained
from archrouter.backends.grammar import new_matcher, token_table
from archrouter.backends.paged_cache import PagedKVPool
from archrouter.backends.protocol import (
    BackendError,
    BackendInfo,
    ContextLengthExceeded,
    GenerationChunk,
    GenerationRequest,
    InvalidRequest,
)
from archrouter.backends.sampling import is_greedy
from archrouter.backends.tokenizer import Tokenizer, load_tokenizer

log = structlog.get_logger("archrouter.engine")

# families whose cache grows with every token (admitted by KV budget); the rest keep a fixed-size state
ATTENTION_FAMILIES = frozenset({"transformer"})


def checkpoint_fingerprint(checkpoint: str | Path) -> str:
    """Names a checkpoint's contents (config + weight file names and sizes) for state-cache keys."""
    path = Path(checkpoint)
    h = hashlib.blake2b(digest_size=12)
    files = sorted(path.iterdir()) if path.is_dir() else [path] if path.exists() else []
    for f in files:
        if f.name == "config.json":
            h.update(f.read_bytes())
        elif f.suffix in (".safetensors", ".pth", ".bin"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()


def _deliver(items: list[tuple[asyncio.Queue, GenerationChunk]]) -> None:
    for queue, chunk in items:
        queue.put_nowait(chunk)


# sampling fields whose value at this default needs nothing from the host between steps (anything else, e.g.
# penalties over the tokens generated so far, runs one step at a time)
_NEUTRAL = {"presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "logit_bias": None,
            "logprobs": None, "top_logprobs": None, "grammar": None, "response_format": None, "min_tokens": 0}


def plain_sampling(params: object) -> bool:
    """Whether a request samples from its logits alone (temperature, top-k/p, seed): several decode steps
    may then run on the device before the host reads any of their tokens."""
    for name, neutral in _NEUTRAL.items():
        value = getattr(params, name, neutral)
        if value is None or value is False or value == neutral or (neutral is None and not value):
            continue
        return False
    return True


def choice_seed(seed: int, index: int) -> int:
    """Choice `index`'s seed: the request's for the first, distinct well-mixed ones for the rest (n > 1
    with a seed is reproducible, and its samples differ)."""
    if index == 0:
        return seed
    return (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9) % (1 << 63)


def build_state_store(config: EngineConfig) -> StateStore | None:
    """The byte tier behind the in-process one: Redis when configured (shared by replicas), else none."""
    if config.redis_url:
        return RedisStateStore(config.redis_url, ttl_s=config.state_cache_ttl_s, max_bytes=config.state_cache_max_bytes)
    return None


class Engine:
    def __init__(
        self,
        info: BackendInfo,
        model: CausalLM,
        tokenizer: Tokenizer,
        config: EngineConfig | None = None,
        *,
        state_store: StateStore | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.info = info
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        capacity = "tokens" if info.family in ATTENTION_FAMILIES else "slots"
        self.scheduler = Scheduler(self.config, capacity, context_length=info.context_length)
        device = next(model.parameters()).device
        # every sequence owns a slot from admission to finish. Attention: rows of block tables over one
        # paged KV pool, sized so that what admission reserves always fits (each row may round up one
        # partial block and hold one copy-on-write block; graphs borrow one scratch block)
        self.kv_pool: PagedKVPool | None = None
        if capacity == "tokens":
            bs = self.config.kv_block_size
            # per row: a partial block, a copy-on-write block and the overrun of decode rounds (tokens past a
            # row's end, computed and dropped); one scratch block for the captured decode's padding rows
            slack = 3 * self.config.max_num_seqs + 1
            self.kv_pool = model.new_kv_pool(-(-self.config.kv_token_budget // bs) + slack, bs)
            pool: StatePool | KVSlots = KVSlots(model, self.kv_pool, self.config.max_num_seqs)
        else:
            pool = StatePool(model, self.config.max_num_seqs)
        self.pool = pool
        self.runner = ModelRunner(pool, tokenizer.vocab_size, packed=self.config.packed_prefill)
        if self.config.cuda_graphs and device.type == "cuda":
            sizes = [s for s in self.config.cuda_graph_sizes if s <= self.config.max_num_seqs]
            self.runner.graphs = DecodeGraphs(pool, self.runner.last_token, sizes or [self.config.max_num_seqs],
                                              max_context=info.context_length)  # fmt: skip
        steps = self.config.decode_steps
        self.decode_steps = steps if steps is not None else (4 if device.type == "cuda" else 1)
        least = self.config.state_cache_min_tokens
        self.snapshot_min_tokens = least if least is not None else (256 if device.type == "cuda" else 0)
        self.state_cache: StateCache | None = None
        wanted = self.config.state_cache
        # the Transformer shares prompt prefixes as pool blocks (`kv_paged`); without it, and for the
        # recurrent families, states are snapshotted into the state cache
        self.prefix_blocks = self.kv_pool is not None and self.config.kv_paged and wanted != "off"
        self.block_counters = {"prefix_hits": 0, "prefix_misses": 0, "prefix_saved_tokens": 0}
        if not self.prefix_blocks and (wanted == "on" or (wanted == "auto" and capacity == "slots")):
            store = state_store if state_store is not None else build_state_store(self.config)
            dtype = dtype or next(model.parameters()).dtype
            namespace = f"{info.name}|{info.family}|{checkpoint_fingerprint(info.checkpoint)}|{dtype}"
            cache_type = type(pool.read(0))

            def restore(data: bytes) -> Cache:
                return cache_type.restore(data, device=device)

            self.state_cache = StateCache(store, namespace, block=self.config.state_cache_block, restore=restore,
                                          local_bytes=self.config.state_cache_local_bytes)
        self.counters = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "prefill_tokens": 0,
                         "steps": 0, "decode_rounds": 0, "decode_rounds_ahead": 0, "step_errors": 0}
        self._ids = itertools.count()
        self._inflight: Round | None = None  # a decode round queued on the device, its tokens not read yet
        self._vocab_bytes: list[bytes] | None = None
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, GenerationChunk]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"engine-{info.name}", daemon=True)
        self._thread.start()

    @classmethod
    def from_checkpoint(
        cls,
        name: str,
        family: str,
        checkpoint: str | Path,
        *,
        context_length: int,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        config: EngineConfig | None = None,
        state_store: StateStore | None = None,
    ) -> Engine:
        model = families.load(family, checkpoint, device=device, dtype=dtype)
        tokenizer = families.family_module(family).__dict__.get("load_tokenizer", load_tokenizer)(checkpoint)
        info = BackendInfo(name=name, family=family, context_length=context_length, checkpoint=str(checkpoint),
                           trained=is_trained(checkpoint), parameters=model.num_parameters())
        return cls(info, model, tokenizer, config, state_store=state_store, dtype=dtype)

    # ------------------------------------------------------------------ BackendClient

    def encode(self, request: GenerationRequest) -> list[int]:
        """The (first) prompt as ids."""
        return self.encode_all(request)[0]

    def encode_all(self, request: GenerationRequest) -> list[list[int]]:
        """The prompt(s) as ids: one list per prompt (a chat is one prompt)."""
        if request.messages is not None:
            return [self.tokenizer.apply_chat_template(request.messages)]
        prompts = request.prompt if isinstance(request.prompt, list) else [request.prompt or ""]
        return [self.tokenizer.encode(p, add_bos=True) for p in prompts]

    def vocab_bytes(self) -> list[bytes]:
        if self._vocab_bytes is None:
            self._vocab_bytes = token_table(self.tokenizer)
        return self._vocab_bytes

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        prompts = request.prompt if isinstance(request.prompt, list) else [request.prompt or ""]
        size = sum(len(p) for p in prompts) + sum(len(m.get("content") or "") for m in request.messages or [])
        # a long text is tokenized off the event loop, which keeps streaming everyone else's tokens
        all_ids = await asyncio.to_thread(self.encode_all, request) if size > 20_000 else self.encode_all(request)
        sp = request.sampling
        for ids in all_ids:
            if len(ids) + sp.max_tokens > self.info.context_length:
                raise ContextLengthExceeded(len(ids) + sp.max_tokens, self.info.context_length, self.info.name)
        if self._stop.is_set():
            raise BackendError(f"backend {self.info.name!r} is shut down")
        if sp.logit_bias and (bad := sorted(t for t in sp.logit_bias if not 0 <= t < self.tokenizer.vocab_size)):
            raise InvalidRequest(f"logit_bias names token ids {bad[:5]} outside backend {self.info.name!r}'s "
                                 f"vocabulary of {self.tokenizer.vocab_size}", param="logit_bias")
        compiled = None
        if sp.grammar is not None:  # compiled off the event loop (a large schema can take a while)
            try:
                compiled = await asyncio.to_thread(new_matcher, self.tokenizer, sp.grammar)
            except ValueError as exc:
                raise InvalidRequest(str(exc), param="response_format") from None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

        def emit(item: GenerationChunk | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
                loop.call_soon_threadsafe(queue.put_nowait, item)

        n = max(1, sp.n)
        if n > self.config.max_num_seqs:
            raise InvalidRequest(f"n={n} is more than backend {self.info.name!r} runs at once "
                                 f"({self.config.max_num_seqs} sequences)", param="n")
        vocab_bytes = self.vocab_bytes() if sp.logprobs is not None else None
        parents: list[Sequence] = []
        everyone: list[Sequence] = []
        for p, ids in enumerate(all_ids):
            family: list[Sequence] = []
            for j in range(n):
                gen = None  # unseeded rows draw from the default generator, all of them in one call a step
                if sp.seed is not None and not is_greedy(sp):
                    gen = torch.Generator(device=self.runner.device).manual_seed(choice_seed(sp.seed, p * n + j))
                seq = Sequence(next(self._ids), request.request_id, ids, sp, gen, self.tokenizer.decoder(),
                               set(self.tokenizer.eos_ids), emit, loop=loop, queue=queue, index=p * n + j,
                               vocab_bytes=vocab_bytes)
                if compiled is not None:
                    seq.matcher = compiled.deep_copy()  # each choice its own state, one compile
                family.append(seq)
            family[0].forks = family[1:]
            for child in family[1:]:
                child.parent = family[0]
            parents.append(family[0])
            everyone += family
        try:
            for seq in parents:
                self.scheduler.add(seq)  # BackendOverloaded when the waiting queue is full
        except BaseException:
            for seq in parents:
                self.scheduler.abort(seq)
            raise
        self.counters["requests"] += 1
        self.counters["prompt_tokens"] += sum(len(ids) for ids in all_ids)
        left = len(everyone)
        try:
            while left:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason:
                    left -= 1
        finally:
            for seq in everyone:
                if seq.finish_reason is None:  # client gone (or the stream failed): free it at the next step
                    self.scheduler.abort(seq)

    async def ready(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    async def close(self) -> None:
        self._stop.set()
        with self.scheduler.lock:
            self.scheduler.work.notify_all()
        await asyncio.to_thread(self._thread.join, 30)
        if self.state_cache is not None:
            await asyncio.to_thread(self.state_cache.close)

    def stats(self) -> dict[str, float]:
        """Plain numbers for /metrics and the policy's `queue_depth.<backend>` feature."""
        s: dict[str, float] = {**self.scheduler.stats(), **self.counters}
        s["queue_depth"] = s["waiting"]
        g = self.runner.graphs
        s["decode_graphs_on"] = int(g is not None and g.disabled is None)
        s["decode_graph_replays"] = g.replays if g is not None else 0
        s.update(self.state_cache.stats() if self.state_cache else dict.fromkeys(
            ("prefix_hits", "prefix_misses", "prefix_saved_tokens", "prefix_stores", "prefix_bytes_read",
             "prefix_bytes_written", "prefix_errors", "prefix_cache_bytes", "prefix_evictions"), 0))
        if self.kv_pool is not None:
            alloc = self.kv_pool.allocator
            if self.prefix_blocks:
                s.update(self.block_counters)
            graphs = self.runner.graphs
            lent = 1 if graphs is not None and graphs.static is not None else 0  # the graphs' scratch block
            s.update(kv_blocks_total=alloc.num_blocks - lent, kv_blocks_used=alloc.num_used - lent,
                     kv_block_size=alloc.block_size)
        return s

    def describe(self) -> dict:
        return {**self.info.__dict__, **self.stats()}

    # ------------------------------------------------------------------ step thread

    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                try:
                    busy = self._step()
                except Exception as exc:  # a failed step fails its requests, never the engine
                    self._inflight = None
                    self._flush()  # tokens streamed before the failure arrive before the error
                    log.exception("engine_step_failed", backend=self.info.name)
                    self.counters["step_errors"] += 1
                    self._fail_running(BackendError(f"backend {self.info.name!r} failed: {exc}"))
                    busy = True
                if not busy:
                    self.scheduler.wait_for_work(0.25)
        self._fail_all(BackendError(f"backend {self.info.name!r} shut down"))

    def _step(self) -> bool:
        if self._inflight is not None:  # a decode round runs on the device: read it (launching the next first)
            return self._drain_round()
        sched, runner, pool = self.scheduler, self.runner, self.pool
        for seq, err in sched.expire():
            seq.emit(err)
        for seq in sched.drop_finished():
            self._free(seq)
        admitted = sched.admit()
        for seq, slot in zip(admitted, pool.alloc_many(len(admitted)), strict=True):  # fresh states, one write
            seq.slot = slot
        for seq in admitted:
            if self.prefix_blocks:
                self._reuse_blocks(seq)
            else:
                self._restore_prefix(seq)
        plan = sched.plan()
        if not plan:
            return False
        self.counters["steps"] += 1
        if plan.decode and not plan.prefill and not sched.waiting and self.decode_steps > 1:
            # as long as the longest-running row needs: a row that reaches max_tokens inside the round has its
            # extra tokens computed and dropped (cheaper than short rounds whenever the rows are staggered)
            steps = min(self.decode_steps, max(s.params.max_tokens - len(s.output) for s in plan.decode))
            if steps > 1 and all(plain_sampling(s.params) for s in plan.decode):
                self._inflight = self._launch_round(plan.decode, steps)
                return True
        # one decode forward, one packed prompt forward, one sampling call and one read-back for all of them
        sampled = runner.step(plan.decode, plan.prefill)
        if plan.decode:
            self._snapshot_decode_rows(plan.decode)
        for seq, n in plan.prefill:
            self.counters["prefill_tokens"] += n
            if self.state_cache and seq.snapshot_at and seq.num_computed == seq.snapshot_at:
                self.state_cache.store(seq.prompt, seq.snapshot_at, pool.read(seq.slot))  # a device copy
        for seq, _ in sampled:
            if seq.parent is not None and seq.status is Status.PREFILL:
                sched.attach(seq)  # a fork of n > 1 joins the batch beside its parent
        for seq, token in sampled:
            if seq.status is Status.PREFILL:
                seq.status = Status.DECODE
            self._emit_token(seq, token)
        self._flush()
        return True

    def _launch_round(self, rows: list[Sequence], steps: int) -> Round:
        """`steps` decode steps queued back to back with one read-back (no prompt is waiting for a turn):
        tokens past a row's end (a stop, an EOS) are computed and dropped, as vLLM's multi-step does."""
        self.counters["steps"] += steps - 1
        self.counters["decode_rounds"] += 1
        return self.runner.launch_round(rows, steps, lambda j: self._snapshot_decode_rows(rows))

    def _drain_round(self) -> bool:
        """Collect the round in flight. When nothing would change the batch (no prompt waiting, no request
        cancelled or added, no row at its max_tokens within the next round), the next round is launched
        first, so the device computes it while the host streams this one's tokens (the host runs ahead)."""
        r, self._inflight = self._inflight, None
        sched = self.scheduler
        nxt = None
        # the rows still running (those that ended in an earlier round are gone); every running sequence
        # must be one of them, decoding, none cancelled and no prompt waiting for a turn
        rows = [s for s in r.rows if s.finish_reason is None and not s.aborted]
        same = len(sched.running) == len(rows) and all(s.status is Status.DECODE for s in sched.running)
        if rows and same and not sched.waiting:
            steps = min(self.decode_steps, max(s.params.max_tokens - len(s.output) - r.steps for s in rows))
            if steps > 1:
                nxt = self._launch_round(rows, steps)
                self.counters["steps"] += 1
                self.counters["decode_rounds_ahead"] += 1
        per_row = self.runner.finish_round(r)
        for seq, tokens in zip(r.rows, per_row, strict=True):
            for token in tokens:
                if seq.finish_reason is not None:
                    break
                self._emit_token(seq, token)
        self._flush()
        self._inflight = nxt
        return True

    def fork(self, seq: Sequence, child: Sequence) -> None:
        """Continue `child` (admitted, holding its own slot) from where `seq` is now, e.g. after `seq`'s
        prompt: a recurrent state is copied slot to slot on the device; the Transformer's KV blocks are
        shared through the pool's refcounts (copy-on-write). Step thread only."""
        self.runner.fork(seq, child)
        child.status = seq.status

    def _flush(self) -> None:
        """Hand this step's chunks to their event loops: one thread-safe call per loop."""
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
                loop.call_soon_threadsafe(_deliver, items)

    def _emit_token(self, seq: Sequence, token: int) -> None:
        chunk = seq.append(token)
        self.counters["completion_tokens"] += 1
        if chunk.finish_reason:  # bookkeeping first, so a client that sees the end sees it settled
            self.scheduler.finish(seq)
            self._free(seq)
            snap = seq.pending_snapshot
            # a decode round may have snapshotted past the end (tokens computed, then dropped): not stored
            if self.state_cache and snap is not None and snap[0] <= len(seq.tokens):
                self.state_cache.store(seq.tokens, *snap)
            seq.pending_snapshot = None
        if seq.loop is not None and seq.queue is not None:
            self._outbox.setdefault(seq.loop, []).append((seq.queue, chunk))
        else:
            seq.emit(chunk)

    def _free(self, seq: Sequence) -> None:
        """Give the sequence's slot back (its state or KV blocks are free for the next admission), and its
        sampling state (penalty counts, grammar matcher)."""
        self.runner.release(seq)
        if seq.slot is not None:
            self.pool.release(seq.slot)
            seq.slot = None

    def _reuse_blocks(self, seq: Sequence) -> None:
        """Attach the pool's full KV blocks that already hold this prompt's prefix (vLLM's prefix caching)."""
        n = self.pool.reuse_prefix(seq.slot, seq.prompt)  # whole blocks, and never the last prompt token
        c = self.block_counters
        if n:
            seq.num_computed = seq.prefix_tokens = n
            c["prefix_hits"] += 1
            c["prefix_saved_tokens"] += n
        else:
            c["prefix_misses"] += 1

    def _restore_prefix(self, seq: Sequence) -> None:
        sc = self.state_cache
        if sc is None:
            return
        # keep one token: its logits start decoding. The hit is copied into the slot, device to device
        hit = sc.lookup(seq.prompt, max_len=len(seq.prompt) - 1, private=False)
        if hit is not None:
            n, cache = hit
            self.pool.write(seq.slot, cache, seq.prompt[:n])
            seq.num_computed = seq.prefix_tokens = n
        # a snapshot at the prompt's last block boundary costs the prefill one more forward (it must stop
        # there); worth it only when it saves a later turn more than that: a short tail past the restored
        # prefix is re-prefilled next turn within the same single forward instead
        target = sc.boundary(len(seq.prompt))
        worth = target - seq.num_computed >= self.snapshot_min_tokens
        seq.snapshot_at = target if target > seq.num_computed and worth else 0

    def _snapshot_decode_rows(self, rows: list[Sequence]) -> None:
        """Keep each decoding row's latest block-aligned state, as a copy on the device; only the last one
        is stored, when the turn ends. Skipped while a copy of every row would not fit the local tier
        (a large batch of large states): those turns keep their prompt's snapshot only."""
        sc = self.state_cache
        if sc is None:
            return
        per_row = self.pool.cache.nbytes() // (self.pool.num_slots + 1) if isinstance(self.pool, StatePool) else 0
        if per_row * len(rows) > sc.local.max_bytes:
            return
        for seq in rows:
            if seq.num_computed % sc.block == 0 and seq.num_computed > len(seq.prompt):
                seq.pending_snapshot = (seq.num_computed, self.pool.read(seq.slot))

    def _fail_running(self, err: BaseException) -> None:
        for seq in list(self.scheduler.running):
            seq.emit(err)
            seq.finish_reason = seq.finish_reason or "error"
            self.scheduler.finish(seq)
            self._free(seq)

    def _fail_all(self, err: BaseException) -> None:
        self._fail_running(err)
        with self.scheduler.lock:
            waiting, self.scheduler.waiting = list(self.scheduler.waiting), type(self.scheduler.waiting)()
        for seq in waiting:
            seq.status = Status.FINISHED
            seq.emit(err)
