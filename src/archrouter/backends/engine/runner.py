"""The model runner: a slot pool, one decode forward and one packed prefill forward a step, one sampling call.

Every sequence owns a slot of the pool (`pools.StatePool` for recurrent states, `pools.KVSlots` for
the Transformer's paged KV) from admission to finish. A step runs the decode rows as one batch that
indexes the pool by slot (replayed from a CUDA graph when one is captured for its size), and all prompt
chunks of the step as one packed forward with cumulative offsets, whatever their lengths: no padding,
no per-length forwards, no gather or concat of caches when the batch changes.

The sampled tokens stay on the device: they are written into `last_token[slot]`, where the next decode
step reads its inputs, so the host never has to send them back. What the host needs (to stream, to
stop) comes back in one device->host copy a step, or one a round of `decode_round`'s several decode
steps, which the host queues back to back while the device runs them.

The sampling call carries each row's extras (`backends.sampling`): penalty counts kept on the device in
`TokenCounts` (bumped there after each draw), logit bias, the grammar's token bitmask (llguidance, one
host->device copy a step), and logprobs, which come back in the same one read-back as the ids. A prompt
asked for n > 1 times is prefilled once: when it completes, its forks get slots holding a copy of its
state (shared KV blocks for the Transformer) and sample from the same last logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from archrouter.backends.base import PackedBatch
from archrouter.backends.engine.graphs import DecodeGraphs
from archrouter.backends.engine.pools import KVSlots, StatePool
from archrouter.backends.engine.sequence import Sequence, Status
from archrouter.backends.grammar import fill_bitmask
from archrouter.backends.sampling import Sampled, TokenCounts, has_penalty, sample_rows

Pool = StatePool | KVSlots


@dataclass
class Round:
    """A decode round in flight: its rows, its length, its tokens (pinned host memory on CUDA, filled when
    `done` fires)."""

    rows: list[Sequence]
    steps: int
    tokens: torch.Tensor
    done: torch.cuda.Event | None


class ModelRunner:
    def __init__(self, pool: Pool, vocab_size: int, *, graphs: DecodeGraphs | None = None,
                 packed: bool | None = None):  # fmt: skip
        self.pool = pool
        self.model = pool.model
        self.graphs = graphs  # captured decode steps per batch bucket (None: always eager)
        self.vocab_size = vocab_size  # the tokenizer's: logits past it (padding rows) are never sampled
        self.device = pool.device
        # each slot's latest token, on the device: decode inputs are read from here, never sent by the host
        self.last_token = torch.zeros(pool.num_slots + 1, dtype=torch.long, device=self.device)
        self.syncs = 0  # device->host reads by the runner (one a step or a decode round)
        self._slots: torch.Tensor | None = None  # the last decode step's slots, on the device
        self._pin = self.device.type == "cuda"
        # one packed forward for all prompt chunks (the Triton kernels take cu_seqlens); the CPU reference
        # kernels loop over packed sequences one by one, so there chunks of equal length run as one dense
        # forward over their slots instead (still no gather, no padding)
        self.packed = packed if packed is not None else self.device.type == "cuda"
        self.counts = TokenCounts(vocab_size, self.device)  # penalties' token counts (allocated on first use)

    # ------------------------------------------------------------------ host <-> device

    def index(self, rows: list[int], dtype: torch.dtype = torch.long) -> torch.Tensor:
        """A host list on the device in one copy (pinned and asynchronous on CUDA)."""
        t = torch.tensor(rows, dtype=dtype)
        if self._pin:
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def to_host(self, t: torch.Tensor) -> list:
        """The step's one device->host read: sampled ids (and logprobs, when asked for) back to Python."""
        self.syncs += 1
        return t.tolist()

    # ------------------------------------------------------------------ slots

    def fork(self, src: Sequence, dst: Sequence) -> None:
        """`dst` (holding a fresh slot) continues from exactly where `src` is: state (a copy, or shared KV
        blocks copy-on-write), its last sampled token and its progress."""
        self.pool.fork(src.slot, dst.slot)
        self.last_token[dst.slot] = self.last_token[src.slot]
        dst.num_computed = src.num_computed

    # ------------------------------------------------------------------ one step

    def step(self, decode: list[Sequence], prefill: list[tuple[Sequence, int]]) -> list[tuple[Sequence, int]]:
        """One decode forward over `decode` (if any), one packed forward over the prompt chunks, one sampling
        call. Returns (sequence, token) for every decode row and then every sequence whose prompt this step
        completed; each sequence's `num_computed` has advanced."""
        logits: list[torch.Tensor] = []
        sampled: list[Sequence] = []
        if decode:
            logits.append(self._decode_forward(decode))
            sampled += decode
        if prefill:
            last, done = self._prefill_forward(prefill)
            if done:
                logits.append(last)
                sampled += done
        if not sampled:
            return []
        all_logits = logits[0] if len(logits) == 1 else torch.cat(logits)
        if any(s.forks for s in sampled):
            all_logits, sampled = self._fork_children(all_logits, sampled)
        only_decode = bool(decode) and len(sampled) == len(decode)
        out = self._sample_full(all_logits, sampled, self._slots if only_decode else None)
        rows = Sampled.unpack(self.to_host(out.packed()))
        host = [t for t, _, _ in rows]
        for s, (_, lp, top) in zip(sampled, rows, strict=True):
            if s.params.logprobs is not None:
                s.pending_logprobs = (lp, top)
        if decode:
            self._fill_tokens(decode, [[t] for t in host[: len(decode)]])
        return list(zip(sampled, host, strict=True))

    def _fork_children(self, logits: torch.Tensor, seqs: list[Sequence]) -> tuple[torch.Tensor, list[Sequence]]:
        """n > 1: each sample after the first gets a slot and starts from its prompt's state (a copied
        recurrent state, or the prompt's KV blocks shared copy-on-write) and the same last logits, so one
        prefill serves all n. They join the decode batch at the next step."""
        rows: list[int] = []
        out: list[Sequence] = []
        for i, s in enumerate(seqs):
            rows.append(i)
            out.append(s)
            for child in s.forks:
                if child.aborted:
                    continue
                child.slot = self.pool.alloc()
                self.fork(s, child)
                child.status = Status.PREFILL
                rows.append(i)
                out.append(child)
            s.forks = []
        return logits.index_select(0, self.index(rows)), out

    def release(self, seq: Sequence) -> None:
        """A finished sequence gives back its sampling state (penalty counts, grammar matcher)."""
        self.counts.release(seq.count_slot)
        seq.count_slot = 0
        seq.matcher = None

    def decode_round(self, decode: list[Sequence], steps: int,
                     after_step: Callable[[int], None] | None = None) -> list[list[int]]:  # fmt: skip
        """`steps` decode steps of the same rows queued back to back, one read-back at the end: the tokens,
        per row. `after_step(j)` runs on the host after step j is queued (device-side snapshots)."""
        return self.finish_round(self.launch_round(decode, steps, after_step))

    def launch_round(self, decode: list[Sequence], steps: int,
                     after_step: Callable[[int], None] | None = None) -> Round:  # fmt: skip
        """Queue a decode round and its tokens' copy to pinned host memory; returns at once on CUDA (the host
        may schedule, emit and launch more while the device runs it). `finish_round` collects it."""
        out = []
        for j in range(steps):
            out.append(self._sample(self._decode_forward(decode), decode, self._slots))
            if after_step is not None:
                after_step(j)
        tokens = torch.stack(out)
        if not self._pin:
            return Round(decode, steps, tokens, None)
        host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
        host.copy_(tokens, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return Round(decode, steps, host, done)

    def finish_round(self, r: Round) -> list[list[int]]:
        """Wait for a launched round (only for it: later work queued behind it keeps running); its tokens per row."""
        if r.done is not None:
            r.done.synchronize()
        per_step = self.to_host(r.tokens)
        per_row = [list(col) for col in zip(*per_step, strict=True)]
        self._fill_tokens(r.rows, per_row)
        return per_row

    # ------------------------------------------------------------------ internals

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence], slots: torch.Tensor | None = None) -> torch.Tensor:
        return self._sample_full(logits, seqs, slots).tokens

    def _sample_full(self, logits: torch.Tensor, seqs: list[Sequence], slots: torch.Tensor | None = None) -> Sampled:
        """Every row with its own parameters, generator, penalties and grammar, in one batched call; the
        tokens go into `last_token` on the device (the next decode step's inputs), penalised rows' counts
        are bumped there too. `slots`: the rows' slots, on the device. Logprobs stay on the device for the
        step's one read-back."""
        params = [s.params for s in seqs]
        extra: dict[str, torch.Tensor] = {}
        count_slots = None
        if any(has_penalty(p) for p in params):
            for s in seqs:
                if not s.count_slot and has_penalty(s.params):
                    s.count_slot = self.counts.alloc(s.prompt if s.params.repetition_penalty != 1.0 else [])
            count_slots = self.index([s.count_slot for s in seqs])
            extra["counts"], extra["prompt_seen"] = self.counts.rows(count_slots)
        if any(s.matcher is not None for s in seqs):
            # a tokenizer without an end token still works: a finished grammar ends its sequence by itself
            eos = min((min(s.eos_ids) for s in seqs if s.matcher is not None and s.eos_ids), default=0)
            extra["bitmask"] = fill_bitmask([s.matcher for s in seqs], self.vocab_size, eos, pin=self._pin)
        out = sample_rows(logits[:, : self.vocab_size], params, [s.generator for s in seqs], **extra)
        if count_slots is not None:
            self.counts.add(count_slots, out.tokens)
        self.last_token.index_copy_(0, slots if slots is not None else self.index([s.slot for s in seqs]), out.tokens)
        return out

    def _decode_forward(self, decode: list[Sequence]) -> torch.Tensor:
        host_slots = [s.slot for s in decode]
        slots = self._slots = self.index(host_slots)  # reused by the sampling call's write into last_token
        last = None
        if self.graphs is not None:
            last = self.graphs.decode(slots, host_slots)
        if last is None:
            ids = self.last_token.index_select(0, slots)[:, None]
            last = self.pool.decode(ids, slots, host_slots)
        for s in decode:
            s.num_computed += 1
        return last

    def _prefill_forward(self, chunks: list[tuple[Sequence, int]]) -> tuple[torch.Tensor, list[Sequence]]:
        """Every prompt chunk in one packed forward (or one dense forward per chunk length, `packed` off);
        the last logits of the prompts completed here, in chunk order."""
        if self.packed:
            flat: list[int] = []
            for seq, n in chunks:
                flat += seq.to_feed(n)
            batch = PackedBatch.build([n for _, n in chunks], [s.slot for s, _ in chunks], self.device)
            last = self.pool.prefill(self.index(flat), batch, flat)
            order = list(range(len(chunks)))
        else:
            groups: dict[int, list[int]] = {}
            for i, (_, n) in enumerate(chunks):
                groups.setdefault(n, []).append(i)
            parts, order = [], []
            for n, rows in groups.items():
                host = [chunks[i][0].to_feed(n) for i in rows]
                host_slots = [chunks[i][0].slot for i in rows]
                ids = self.index(host).view(len(rows), n)
                parts.append(self.pool.prefill_dense(ids, self.index(host_slots), host, host_slots))
                order += rows
            last = parts[0] if len(parts) == 1 else torch.cat(parts)
        for seq, n in chunks:
            seq.num_computed += n
        done_rows = [i for i, (s, _) in enumerate(chunks) if s.prefill_left == 0]
        done = [chunks[i][0] for i in done_rows]
        at = {row: j for j, row in enumerate(order)}
        picks = [at[i] for i in done_rows]
        if done and picks != list(range(len(order))):
            last = last.index_select(0, self.index(picks))
        return last.float(), done

    def _fill_tokens(self, decode: list[Sequence], tokens: list[list[int]]) -> None:
        """The paged KV cache records token ids for prefix sharing: decode fed them from the device, so the
        host learns them here (placeholders until now; their blocks are published once known)."""
        if isinstance(self.pool, KVSlots):
            for s, toks in zip(decode, tokens, strict=True):
                if s.slot is not None:  # a row that ended while its round ran has given its slot back
                    self.pool.fill_tokens(s.slot, toks)
