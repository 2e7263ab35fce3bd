"""Synthetic tasks with checkable answers, one generator family per task type (policies.types.TASKS).

Zoo v2 (design note `shared/zoo-v2.md` §4.3): every answer is one byte except `copy_span`'s (the copy
is the point), keys are lowercase and values uppercase so they never collide, and lengths are drawn
from [n_min, top] so every generator carries its own curriculum.

A generator is `gen(rng, n) -> (prompt, answer, tags)`; `n` is the size knob (pairs, bits, swaps,
words...). `tags` are training-only dense labels on the prompt: `(offset, byte)` means "the model's
output AT prompt character `offset` should be `byte`". A state tag is the state after the step that
ends at that character (running parity, the ball's cup); an LM-style tag is simply the next character
(an answered in-prompt query's value, a series term), placed at the character before it. Tags are never
shown to the model as input and never scored: `exact_match` encodes items without them.

`make_item(name, seed, n)` is deterministic per (name, seed, n); held-out items use seeds < 0, training
draws seeds >= 0. `check(item, output)` scores exact match after normalising whitespace and case.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Tag = tuple[int, str]
Generator = Callable[[random.Random, int], tuple[str, str, list[Tag]]]

LETTERS = "abcdefghijklmnopqrstuvwxyz"
VALUES = LETTERS.upper()


@dataclass(frozen=True)
class Item:
    prompt: str
    answer: str
    task: str  # one of policies.types.TASKS
    generator: str
    length: int
    tags: tuple[Tag, ...] = ()  # training-only dense labels (module docstring); never input, never scored

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("tags")
        return d


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def check(item: Item, output: str) -> bool:
    """Exact match after whitespace/case normalisation."""
    return normalise(output) == normalise(item.answer)


def _distinct(rng: random.Random, count: int, n: int) -> list[str]:
    """`count` distinct random lowercase words of `n` letters."""
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        w = "".join(rng.choice(LETTERS) for _ in range(n))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def _key_len(count: int) -> int:
    """Letters per key: 2 (676 keys) up to 640 keys, 3 beyond (prompts past the 4,096-token context only)."""
    return 2 if count <= 640 else 3


def _lm_tags(text: str, start: int, end: int) -> list[Tag]:
    """LM-style tags: each character of text[start:end] predicted at the character before it."""
    return [(j - 1, text[j]) for j in range(max(1, start), end)]


# ----------------------------------------------------------------------------- recall


def mqar(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """Multi-query associative recall: n pairs `key=V` (distinct 2-letter keys, values A-Z with
    replacement), then n//2 answered queries (keys with replacement; their values are LM tags), then
    the final query, whose key is uniform over all n keys (so elimination gives no shortcut)."""
    keys = _distinct(rng, n, _key_len(n))
    vals = {k: rng.choice(VALUES) for k in keys}
    text = " ".join(f"{k}={vals[k]}" for k in keys) + " |"
    tags: list[Tag] = []
    for _ in range(n // 2):
        k = rng.choice(keys)
        text += f" {k}="
        tags.append((len(text) - 1, vals[k]))
        text += vals[k]
    q = rng.choice(keys)
    return f"{text} {q}=", vals[q], tags


def copy_span(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """n distinct 3-letter words; answer = a marked word and the 2 words after it. Before the final
    request, max(1, n//4) answered copies whose 2nd and 3rd words are LM tags (dense copying signal)."""
    words = _distinct(rng, max(n, 4), 3)
    text = " ".join(words) + " |"
    tags: list[Tag] = []
    for _ in range(max(1, len(words) // 4)):
        i = rng.randrange(len(words) - 2)
        text += " "
        a = len(text) + 3  # the copied continuation starts after the given first word
        text += " ".join(words[i : i + 3]) + ";"
        tags += _lm_tags(text, a, len(text) - 1)
    i = rng.randrange(len(words) - 2)
    return f"{text} copy {words[i]}", " ".join(words[i : i + 3]), tags


def var_lookup(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """n assignments `ab=3;` to 2-letter names from a pool of n//2+1 (so names are re-assigned);
    `print(x)` asks for the last value assigned to an assigned name."""
    names = _distinct(rng, n // 2 + 1, _key_len(n // 2 + 1))
    env: dict[str, str] = {}
    parts = []
    for _ in range(n):
        k, v = rng.choice(names), str(rng.randrange(10))
        env[k] = v
        parts.append(f"{k}={v}")
    q = rng.choice(sorted(env))
    return f"{';'.join(parts)};print({q})", env[q], []


# ----------------------------------------------------------------------------- state tracking


def parity(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """n bits; answer = parity of the ones; state tag = running parity at every bit."""
    bits = "".join(rng.choice("01") for _ in range(n))
    head, tags, p = "parity ", [], 0
    for j, b in enumerate(bits):
        p ^= b == "1"
        tags.append((len(head) + j, str(int(p))))
    return head + bits, str(int(p)), tags


def cups5(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """A ball under one of 5 cups, n transpositions `ab` (a != b); answer = the cup holding it (S5,
    NC1-complete). State tag = the ball's cup at the 2nd digit of every swap."""
    pos = rng.randrange(5)
    text, tags = f"ball {pos} |", []
    for _ in range(n):
        a, b = rng.sample(range(5), 2)
        pos = b if pos == a else a if pos == b else pos
        text += f" {a}{b}"
        tags.append((len(text) - 1, str(pos)))
    return text, str(pos), tags


def cycle5(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """Start on a 5-cycle, n moves in {+,-,0}; answer = the final position (Z5, the xLSTM paper's
    cycle navigation). State tag = the position after every move."""
    pos = rng.randrange(5)
    text, tags = f"cycle {pos} |", []
    for _ in range(n):
        m = rng.choice("+-0")
        pos = (pos + (m == "+") - (m == "-")) % 5
        text += m if text[-1] != "|" else f" {m}"
        tags.append((len(text) - 1, str(pos)))
    return text, str(pos), tags


# ----------------------------------------------------------------------------- long document

_FILLER = [
    "the river ran past the old mill", "a cat slept on the warm wall", "rain fell over the quiet town",
    "the market opened at dawn", "birds sang in the tall trees", "a cart rolled down the hill",
    "the bell rang twice at noon", "smoke rose from the chimney", "children played near the well",
]


def facts(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """n filler sentences with 1 + n//3 facts `the code of wxyz is Q` interleaved (multi-needle);
    the question asks for one of them."""
    whos = _distinct(rng, 1 + n // 3, 4)
    codes = {w: rng.choice(VALUES) for w in whos}
    sents = [rng.choice(_FILLER) for _ in range(n)]
    for w in whos:
        sents.insert(rng.randrange(len(sents) + 1), f"the code of {w} is {codes[w]}")
    q = rng.choice(whos)
    return f"{'. '.join(sents)}. | code of {q}?", codes[q], []


# ----------------------------------------------------------------------------- sequential data


def arithmetic_series(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """n terms of a + d*i mod 100; answer = the next term. Terms 3..n are LM tags (the first two fix them)."""
    a, d = rng.randrange(100), rng.randrange(1, 10)
    terms = [str((a + d * i) % 100) for i in range(max(n, 2) + 1)]
    head = "next "
    text = head + " ".join(terms[:-1])
    start = len(head) + len(terms[0]) + 1 + len(terms[1])  # the space before term 3
    return text, terms[-1], _lm_tags(text, start + 1, len(text))


def periodic_series(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """A repeating digit pattern of period 2..5; answer = the next term. Terms after the first period
    are LM tags."""
    pattern = [str(rng.randrange(10)) for _ in range(rng.randint(2, 5))]
    terms = [pattern[i % len(pattern)] for i in range(max(n, 2) + 1)]
    head = "next "
    text = head + " ".join(terms[:-1])
    return text, terms[-1], _lm_tags(text, len(head) + 2 * len(pattern), len(text))


def running_total(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """A log of n signed digits mod 10; answer = the total. State tag = the running total at every digit."""
    total, text, tags = 0, "log mod 10:", []
    for _ in range(n):
        k, s = rng.randrange(1, 10), rng.choice("+-")
        total = (total + k if s == "+" else total - k) % 10
        text += f" {s}{k}"
        tags.append((len(text) - 1, str(total)))
    return f"{text} total?", str(total), tags


# ----------------------------------------------------------------------------- code


def expression(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """((x op k) op k ...) over n operations mod 10; answer = the value. State tag = the value mod 10
    at every `)`."""
    x = rng.randrange(10)
    ops = [(rng.choice("+-*"), rng.randrange(10)) for _ in range(n)]
    head = "eval " + "(" * n + str(x)
    text, tags = head, []
    for op, k in ops:
        x = (x + k if op == "+" else x - k if op == "-" else x * k) % 10
        text += f"{op}{k})"
        tags.append((len(text) - 1, str(x)))
    return f"{text}%10", str(x), tags


def loop_program(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """x starts at a digit; a loop of 2-4 iterations applies n statements; answer = x mod 10."""
    reps, start = rng.randint(2, 4), rng.randrange(10)
    body = [(rng.choice("+*"), rng.randint(1, 3)) for _ in range(n)]
    x = start
    for _ in range(reps):
        for op, k in body:
            x = (x + k if op == "+" else x * k) % 10
    stmts = ";".join(f"x{op}={k}" for op, k in body)
    return f"x={start};for i in range({reps}):{stmts}; x%10?", str(x), []


# ----------------------------------------------------------------------------- chat

_FACTS = {
    "capital": {"france": "paris", "japan": "tokyo", "italy": "rome", "peru": "lima", "egypt": "cairo",
                "spain": "madrid", "kenya": "nairobi", "chile": "santiago"},
    "colour": {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red",
               "sun": "yellow"},
    "legs": {"spider": "8", "dog": "4", "bird": "2", "ant": "6", "fish": "0", "crab": "10"},
}
_TEMPLATES = {
    "capital": ["what is the capital of {k}?", "capital of {k}?", "which city is the capital of {k}?"],
    "colour": ["what colour is {k}?", "colour of {k}?", "tell me the colour of {k}."],
    "legs": ["how many legs does a {k} have?", "legs of a {k}?", "a {k} has how many legs?"],
}


def fact_qa(rng: random.Random, n: int) -> tuple[str, str, list[Tag]]:
    """Templated questions over a small fact table; n = greeting/filler words before the question."""
    rel = rng.choice(sorted(_FACTS))
    k = rng.choice(sorted(_FACTS[rel]))
    lead = " ".join(rng.choice(["hi", "hello", "please", "thanks", "quick", "question"]) for _ in range(n))
    q = rng.choice(_TEMPLATES[rel]).format(k=k)
    return f"{lead} {q}".strip(), _FACTS[rel][k], []


# ----------------------------------------------------------------------------- registry

GENERATORS: dict[str, tuple[str, Generator, int]] = {
    # name: (task, generator, L = the knob at 1x; the capability matrix measures 1x/2x/4x/8x of it)
    "mqar": ("recall", mqar, 32),
    "copy_span": ("recall", copy_span, 32),
    "var_lookup": ("code", var_lookup, 32),
    "parity": ("state_tracking", parity, 32),
    "cups5": ("state_tracking", cups5, 32),
    "cycle5": ("state_tracking", cycle5, 64),
    "facts": ("long_document", facts, 9),
    "arithmetic_series": ("sequential_data", arithmetic_series, 16),
    "periodic_series": ("sequential_data", periodic_series, 24),
    "running_total": ("sequential_data", running_total, 24),
    "expression": ("code", expression, 12),
    "loop_program": ("code", loop_program, 6),
    "fact_qa": ("chat", fact_qa, 4),
}

# the smallest knob a generator is drawn at (training draws n ~ U[N_MIN, TRAIN_TOP])
N_MIN: dict[str, int] = {"mqar": 2, "copy_span": 4, "var_lookup": 2, "arithmetic_series": 3, "periodic_series": 2}
# training reaches past 1x where the recall load must outgrow the recurrent states inside the
# Transformer's trained positions (the accuracy-vs-load curve): 4x for mqar and copy_span
TRAIN_TOP: dict[str, int] = {"mqar": 128, "copy_span": 128}
# a uniform guess over the answer alphabet; None where guessing is hopeless (multi-word copies, chat)
CHANCE: dict[str, float | None] = {
    "mqar": 1 / 26, "copy_span": None, "var_lookup": 1 / 10, "parity": 1 / 2, "cups5": 1 / 5,
    "cycle5": 1 / 5, "facts": 1 / 26, "arithmetic_series": 1 / 100, "periodic_series": 1 / 10,
    "running_total": 1 / 10, "expression": 1 / 10, "loop_program": 1 / 10, "fact_qa": None,
}


def n_min(name: str) -> int:
    return N_MIN.get(name, 1)


def training_length(name: str) -> int:
    return GENERATORS[name][2]


def train_top(name: str) -> int:
    return TRAIN_TOP.get(name, training_length(name))


def make_item(name: str, seed: int, length: int | None = None) -> Item:
    """The item of generator `name` for `seed` at `length` (default: its training length)."""
    task, gen, default = GENERATORS[name]
    n = default if length is None else max(length, n_min(name))
    rng = random.Random(f"{name}:{seed}:{n}")
    prompt, answer, tags = gen(rng, n)
    return Item(prompt, answer, task, name, n, tuple(tags))


def mixture(seed: int, *, scale: float = 1.0, names: list[str] | None = None):
    """An endless, seeded stream of items over all generators (uniform over generators), each at a
    length drawn in [n_min, round(scale * L)]."""
    rng = random.Random(seed)
    pool = names or sorted(GENERATORS)
    i = 0
    while True:
        name = rng.choice(pool)
        top = max(n_min(name), round(scale * training_length(name)))
        yield make_item(name, seed * 1_000_003 + i, rng.randint(n_min(name), top))
        i += 1
