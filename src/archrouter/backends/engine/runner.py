"""The model runner: batched inputs in, one forward per shape, one batched sampling call out.

Decoding sequences live together in one batched cache whose rows follow `self.rows`; it is gathered
(rows leave) and concatenated (rows join) only when membership changes. A prefilling sequence owns
a batch-of-one cache until its prompt is in, then joins the decode batch. Prompt chunks of equal
length run as one forward; the model's forward takes rows at different positions, so nothing here
depends on the family.

The per-step host path is kept short, as vLLM's runner keeps it: each forward's token ids are built
as one host tensor and copied to the device once; the last logits of every row that needs a token
(decode rows and prompts that just completed) are sampled in one `sample_batch` call; the sampled ids
come back in one device->host copy (`to_host`, counted in `self.syncs`). Nothing loops over device
tensors per token.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from archrouter.backends.base import Cache, CausalLM
from archrouter.backends.engine.graphs import DecodeGraphs
from archrouter.backends.engine.sequence import Sequence, Status
from archrouter.backends.grammar import fill_bitmask
from archrouter.backends.sampling import Sampled, TokenCounts, has_penalty, sample_rows


class ModelRunner:
    def __init__(self, model: CausalLM, vocab_size: int, *, graphs: DecodeGraphs | None = None,
                 init_cache: Callable[[int], Cache] | None = None):  # fmt: skip
        self.model = model
        self.graphs = graphs  # captured decode steps for fixed-size states (None: always eager)
        self.vocab_size = vocab_size  # the tokenizer's: logits past it (padding rows) are never sampled
        self.device = next(model.parameters()).device
        self.rows: list[Sequence] = []
        self.cache: Cache | None = None
        self.init_cache = init_cache or model.init_cache  # the engine's KV block pool, for paged attention
        self.cache_type = type(self.init_cache(1))
        self.syncs = 0  # device->host reads by the runner (one a step when anything was sampled)
        self._pin = self.device.type == "cuda"
        self.counts = TokenCounts(vocab_size, self.device)  # penalties' token counts (allocated on first use)

    # ------------------------------------------------------------------ host <-> device

    def to_device(self, ids: list[list[int]]) -> torch.Tensor:
        """Token ids [B, T] built on the host, one copy to the device (pinned + async on CUDA)."""
        t = torch.tensor(ids, dtype=torch.long)
        if self._pin:
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def index(self, rows: list[int]) -> torch.Tensor:
        """Row indices on the device without a blocking copy (a plain list index would sync on CUDA)."""
        t = torch.tensor(rows, dtype=torch.long)
        if self._pin:
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def to_host(self, t: torch.Tensor) -> list:
        """The step's one device->host read: sampled ids (and logprobs, when asked for) back to Python."""
        self.syncs += 1
        return t.tolist()

    # ------------------------------------------------------------------ decode batch membership

    def sync(self, decode: list[Sequence]) -> None:
        """Make the batched cache hold exactly `decode` (rows that left are freed here)."""
        wanted = {id(s) for s in decode}
        if len(wanted) == len(self.rows) and all(id(s) in wanted for s in self.rows):
            return
        keep = [i for i, s in enumerate(self.rows) if id(s) in wanted]
        have = {id(s) for s in self.rows}
        new = [s for s in decode if id(s) not in have]
        parts: list[Cache] = []
        if keep:
            parts.append(self.cache if len(keep) == len(self.rows) else self.cache.gather(keep))
        for s in new:
            parts.append(s.cache)
            s.cache = None
        self.rows = [self.rows[i] for i in keep] + new
        self.cache = None if not parts else parts[0] if len(parts) == 1 else self.cache_type.concat(parts)
        g = self.graphs
        if g is not None and self.cache is not None and g.disabled is None and g.bucket(len(self.rows)):
            self.cache = g.load(self.cache)  # the batch's rows into the static buffers the graphs replay on

    def row_of(self, seq: Sequence) -> int:
        return next(i for i, s in enumerate(self.rows) if s is seq)

    # ------------------------------------------------------------------ one step

    def step(self, prefill: list[tuple[Sequence, int]]) -> list[tuple[Sequence, int]]:
        """One decode forward over `self.rows` (if any), the prompt-chunk forwards, one sampling call.

        Returns (sequence, sampled token) for every decode row (row order) and then every sequence
        whose prompt this step completed; each sequence's `num_computed` has advanced.
        """
        logits: list[torch.Tensor] = []
        sampled: list[Sequence] = []
        if self.rows:
            logits.append(self._decode_forward())
            sampled += self.rows
        if prefill:
            last, done = self._prefill_forwards(prefill)
            logits += last
            sampled += done
        if not sampled:
            return []
        last_logits = logits[0] if len(logits) == 1 else torch.cat(logits)
        if any(s.forks for s in sampled):
            last_logits, sampled = self._fork(last_logits, sampled)
        return list(zip(sampled, self.sample(last_logits, sampled), strict=True))

    def _fork(self, last_logits: torch.Tensor, seqs: list[Sequence]) -> tuple[torch.Tensor, list[Sequence]]:
        """n > 1: each sample after the first starts from its prompt's cache (blocks shared copy-on-write
        for paged attention, a copied state for recurrent families) and the same last logits, so one
        prefill serves all n. The forks join the decode batch at the next step."""
        rows: list[int] = []
        out: list[Sequence] = []
        for i, s in enumerate(seqs):
            rows.append(i)
            out.append(s)
            for child in s.forks:
                if child.aborted:
                    continue
                child.cache = s.cache.gather([0])
                child.num_computed = s.num_computed
                child.status = Status.PREFILL
                rows.append(i)
                out.append(child)
            s.forks = []
        return last_logits.index_select(0, self.index(rows)), out

    def release(self, seq: Sequence) -> None:
        """A finished sequence gives back its sampling state."""
        self.counts.release(seq.count_slot)
        seq.count_slot = 0
        seq.matcher = None

    def sample(self, last_logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """Every row with its own parameters, generator, penalties and grammar, in one batched call and one
        read-back (the ids, with the logprobs of the rows that asked for them)."""
        params = [s.params for s in seqs]
        extra: dict[str, torch.Tensor] = {}
        slots = None
        if any(has_penalty(p) for p in params):
            for s in seqs:
                if not s.count_slot and has_penalty(s.params):
                    s.count_slot = self.counts.alloc(s.prompt if s.params.repetition_penalty != 1.0 else [])
            slots = self.index([s.count_slot for s in seqs])
            extra["counts"], extra["prompt_seen"] = self.counts.rows(slots)
        if any(s.matcher is not None for s in seqs):
            eos = min(min(s.eos_ids) for s in seqs if s.matcher is not None)
            extra["bitmask"] = fill_bitmask([s.matcher for s in seqs], self.vocab_size, eos, pin=self._pin)
        out = sample_rows(last_logits[:, : self.vocab_size], params, [s.generator for s in seqs], **extra)
        if slots is not None:
            self.counts.add(slots, out.tokens)
        rows = Sampled.unpack(self.to_host(out.packed()))
        for s, (_, lp, top) in zip(seqs, rows, strict=True):
            if s.params.logprobs is not None:
                s.pending_logprobs = (lp, top)
        return [t for t, _, _ in rows]

    def decode(self) -> list[int]:
        """One token for every row of the decode batch; the sampled tokens in row order."""
        return [t for _, t in self.step([])]

    def prefill(self, chunks: list[tuple[Sequence, int]]) -> dict[int, int]:
        """Feed prompt chunks alone (no decode rows); {seq_id: first token} for completed prompts."""
        last, done = self._prefill_forwards(chunks)
        if not done:
            return {}
        logits = last[0] if len(last) == 1 else torch.cat(last)
        return {s.seq_id: t for s, t in zip(done, self.sample(logits, done), strict=True)}

    # ------------------------------------------------------------------ forwards

    def _decode_forward(self) -> torch.Tensor:
        host = [[s.last_token] for s in self.rows]
        ids = self.to_device(host)
        self.cache.will_feed(host)
        last = None
        if self.graphs is not None and self.graphs.holds(self.cache):
            last = self.graphs.decode(ids, len(self.rows))
        if last is None:  # eager (also on the static buffers, when a capture failed)
            logits, self.cache = self.model(ids, self.cache)
            last = logits[:, -1]
        for s in self.rows:
            s.num_computed += 1
        return last

    def _prefill_forwards(self, chunks: list[tuple[Sequence, int]]) -> tuple[list[torch.Tensor], list[Sequence]]:
        """Prompt chunks, equal lengths in one forward; the last logits of prompts completed here."""
        groups: dict[int, list[Sequence]] = defaultdict(list)
        for seq, n in chunks:
            groups[n].append(seq)
        last: list[torch.Tensor] = []
        done: list[Sequence] = []
        for n, seqs in groups.items():
            host = [s.to_feed(n) for s in seqs]
            ids = self.to_device(host)
            if all(s.cache is None for s in seqs):
                cache = self.init_cache(len(seqs))
            else:
                parts = [s.cache if s.cache is not None else self.init_cache(1) for s in seqs]
                cache = parts[0] if len(parts) == 1 else self.cache_type.concat(parts)
            cache.will_feed(host)
            logits, cache = self.model(ids, cache)
            for i, s in enumerate(seqs):
                s.cache = cache if len(seqs) == 1 else cache.gather([i])
                s.num_computed += n
            rows = [i for i, s in enumerate(seqs) if s.prefill_left == 0]
            if rows:
                end = logits[:, -1]
                last.append(end if len(rows) == len(seqs) else end.index_select(0, self.index(rows)))
                done += [seqs[i] for i in rows]
        return last, done
