"""Length-bucketed, token-budgeted training batches with token-share sampling (zoo v2, §4.4).

Each step is one batch of rows from one length bucket: `tokens_per_step // bucket` rows, each one item
(no packing: no state or attention leaks across items), right-padded to the bucket's length. A few
fixed bucket lengths keep the number of distinct shapes small (kernel plans and autotuning are per
shape). The step's bucket is drawn with probability equal to its share of the expected real tokens,
and the rows inside it in proportion to their item probability, so over many steps each generator
gets about its `token_shares` of the real tokens (up to the buckets' fill ratio).

Item probabilities: generator g with probability proportional to share_g / E[tokens_g], its knob n
uniform on [n_min, top] (top halved during the first `curriculum_steps`). Everything is a pure
function of (data seed, step), so families see the same stream and a resumed run continues it.
"""

from __future__ import annotations

import bisect
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from archrouter.evals.tasks import GENERATORS, make_item, n_min, train_top

RECIPE = Path(__file__).parent / "data" / "zoo_recipe.json"


def load_recipe(path: str | Path | None = None) -> dict[str, Any]:
    return json.loads(Path(path or RECIPE).read_text())


def item_tokens(item) -> int:
    """Input length of the encoded row: BOS, USER, prompt bytes, END, ASSISTANT, answer bytes (the last
    target, END, has no input position)."""
    return len(item.prompt.encode()) + 4 + len(item.answer.encode())


@dataclass(frozen=True)
class Table:
    """The (generator, n) joint for one curriculum phase, grouped by bucket."""

    buckets: tuple[int, ...]
    bucket_p: tuple[float, ...]  # probability of drawing each bucket for a step
    rows: tuple[tuple[tuple[str, int], ...], ...]  # per bucket: the (g, n) cells that land in it
    cum: tuple[tuple[float, ...], ...]  # per bucket: cumulative item probability of its cells
    gen_p: dict[str, float]  # item probability per generator


@lru_cache(maxsize=8)
def _lengths(name: str, top: int, probe: int = 3) -> tuple[int, ...]:
    """The longest of `probe` items' token lengths for each n in [n_min, top] (training seeds)."""
    return tuple(max(item_tokens(make_item(name, 10**9 + s, n)) for s in range(probe))
                 for n in range(n_min(name), top + 1))


def build_table(shares: dict[str, float], buckets: tuple[int, ...], *, half: bool = False) -> Table:
    tops = {g: max(n_min(g), train_top(g) // 2 if half else train_top(g)) for g in shares}
    lens = {g: [x for x in _lengths(g, train_top(g))[: tops[g] - n_min(g) + 1]] for g in shares}
    mean = {g: sum(v) / len(v) for g, v in lens.items()}
    total = sum(shares.values())
    raw = {g: shares[g] / total / mean[g] for g in shares}
    z = sum(raw.values())
    gen_p = {g: p / z for g, p in raw.items()}
    cells: list[list[tuple[str, int]]] = [[] for _ in buckets]
    weights: list[list[float]] = [[] for _ in buckets]
    mass = [0.0] * len(buckets)
    for g in sorted(shares):
        for i, length in enumerate(lens[g]):
            b = bisect.bisect_left(buckets, length)
            if b == len(buckets):
                continue  # longer than the longest bucket: never drawn
            p = gen_p[g] / len(lens[g])
            cells[b].append((g, n_min(g) + i))
            weights[b].append(p)
            mass[b] += p * length
    m = sum(mass)
    cum = []
    for w in weights:
        acc, out = 0.0, []
        for x in w:
            acc += x
            out.append(acc)
        cum.append(tuple(out))
    return Table(tuple(buckets), tuple(x / m for x in mass), tuple(tuple(c) for c in cells), tuple(cum), gen_p)


class Sampler:
    """`batch(step)` -> the step's items and bucket length."""

    def __init__(self, recipe: dict[str, Any], data_seed: int, *, tokens_per_step: int | None = None,
                 max_seq_len: int | None = None) -> None:
        self.seed = data_seed
        self.tokens = int(tokens_per_step or recipe["tokens_per_step"])
        cap = int(max_seq_len or recipe["max_seq_len"])
        buckets = tuple(b for b in recipe["buckets"] if b <= cap)
        shares = {g: float(s) for g, s in recipe["token_shares"].items() if s > 0}
        unknown = set(shares) - set(GENERATORS)
        if unknown:
            raise ValueError(f"recipe names unknown generators: {sorted(unknown)}")
        self.curriculum = int(recipe.get("curriculum_steps", 0))
        self.full = build_table(shares, buckets)
        self.half = build_table(shares, buckets, half=True) if self.curriculum else self.full

    def batch(self, step: int) -> tuple[list, int]:
        t = self.half if step < self.curriculum else self.full
        rng = random.Random(f"batch:{self.seed}:{step}")
        b = rng.choices(range(len(t.buckets)), weights=t.bucket_p)[0]
        length = t.buckets[b]
        rows = max(1, self.tokens // length)
        cells, cum = t.rows[b], t.cum[b]
        items = []
        while len(items) < rows:
            g, n = cells[min(bisect.bisect_left(cum, rng.random() * cum[-1]), len(cells) - 1)]
            item = make_item(g, rng.randrange(2**40), n)
            if item_tokens(item) <= length:  # the probe lengths are maxima of 3 seeds: a rare longer draw is redrawn
                items.append(item)
        return items, length
