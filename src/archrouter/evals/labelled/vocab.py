"""Word pools for the labelled-prompt generator; the words themselves are in banks/vocab.yaml.

Every pool is split in two: three quarters for items that may land in training, one quarter (every 4th
entry) kept for held-out-template items only, so part of the test set uses names, objects and places
the classifier never saw (see `evals.labelled.generate`).
"""

from __future__ import annotations

import random

from archrouter.evals.labelled.bank import load

_POOLS: dict[str, list[str]] = load("vocab")  # banks/vocab.yaml


class Vocab:
    """Draws from one side of the pools: `held_out=False` the 3/4 share, `held_out=True` the other 1/4."""

    def __init__(self, rng: random.Random, *, held_out: bool):
        self.rng = rng
        self.held_out = held_out
        self.pools = {k: [w for i, w in enumerate(v) if (i % 4 == 3) == held_out] for k, v in _POOLS.items()}

    def __getattr__(self, kind: str) -> str:
        pools = self.__dict__.get("pools", {})
        if kind not in pools:
            raise AttributeError(kind)
        return self.rng.choice(pools[kind]).replace("-", " ")

    def many(self, kind: str, k: int) -> list[str]:
        """k distinct entries (fewer if the pool is smaller)."""
        pool = self.pools[kind]
        return [w.replace("-", " ") for w in self.rng.sample(pool, min(k, len(pool)))]
