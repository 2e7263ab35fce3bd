"""The model runner: batched inputs in, one forward per shape, per-request sampling out.

Decoding sequences live together in one batched cache whose rows follow `self.rows`; it is gathered
(rows leave) and concatenated (rows join) only when membership changes. A prefilling sequence owns
a batch-of-one cache until its prompt is in, then joins the decode batch. Prompt chunks of equal
length run as one forward; the model's forward takes rows at different positions, so nothing here
depends on the family.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from backends.base import Cache, CausalLM
from backends.engine.sequence import Sequence
from backends.sampling import sample


class ModelRunner:
    def __init__(self, model: CausalLM, vocab_size: int):
        self.model = model
        self.vocab_size = vocab_size  # the tokenizer's: logits past it (padding rows) are never sampled
        self.device = next(model.parameters()).device
        self.rows: list[Sequence] = []
        self.cache: Cache | None = None
        self.cache_type = type(model.init_cache(1))

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

    def row_of(self, seq: Sequence) -> int:
        return next(i for i, s in enumerate(self.rows) if s is seq)

    # ------------------------------------------------------------------ forwards

    def decode(self) -> list[int]:
        """One token for every row of the decode batch; returns the sampled tokens in row order."""
        ids = torch.tensor([[s.last_token] for s in self.rows], dtype=torch.long, device=self.device)
        logits, self.cache = self.model(ids, self.cache)
        for s in self.rows:
            s.num_computed += 1
        return self._sample(logits[:, -1], self.rows)

    def prefill(self, chunks: list[tuple[Sequence, int]]) -> dict[int, int]:
        """Feed prompt chunks; returns {seq_id: first token} for sequences whose prompt is now complete."""
        groups: dict[int, list[Sequence]] = defaultdict(list)
        for seq, n in chunks:
            groups[n].append(seq)
        out: dict[int, int] = {}
        for n, seqs in groups.items():
            ids = torch.tensor([s.to_feed(n) for s in seqs], dtype=torch.long, device=self.device)
            if all(s.cache is None for s in seqs):
                cache = self.model.init_cache(len(seqs))
            else:
                parts = [s.cache if s.cache is not None else self.model.init_cache(1) for s in seqs]
                cache = parts[0] if len(parts) == 1 else self.cache_type.concat(parts)
            logits, cache = self.model(ids, cache)
            for i, s in enumerate(seqs):
                s.cache = cache if len(seqs) == 1 else cache.gather([i])
                s.num_computed += n
            done = [i for i, s in enumerate(seqs) if s.prefill_left == 0]
            if done:
                tokens = self._sample(logits[done, -1], [seqs[i] for i in done])
                out.update({seqs[i].seq_id: t for i, t in zip(done, tokens, strict=True)})
        return out

    def _sample(self, last_logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """Each row with its own sampling parameters and generator; greedy rows in one argmax."""
        last_logits = last_logits[:, : self.vocab_size]
        greedy = last_logits.argmax(-1).tolist()
        out = []
        for i, s in enumerate(seqs):
            if s.params.temperature <= 0.0:
                out.append(int(greedy[i]))
            else:
                out.append(sample(last_logits[i].float().cpu(), s.params, s.generator))
        return out
