"""Synthetic tasks with checkable answers, one generator family per task type (policies.types.TASKS).

Every generator is `gen(rng, length) -> (prompt, answer)`; `length` is the size knob (number of
updates, pairs, terms, lines...). Answers are a few bytes so byte-level models can learn them.
`make_item(name, seed, length)` is deterministic per (name, seed, length); `check(item, output)`
scores exact match after normalising whitespace and case. `Item.messages()` renders the item as a
chat for the byte tokenizer's template, so a trainer can take the loss on the answer bytes only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Generator = Callable[[random.Random, int], tuple[str, str]]

LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Item:
    prompt: str
    answer: str
    task: str  # one of policies.types.TASKS
    generator: str
    length: int

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def check(item: Item, output: str) -> bool:
    """Exact match after whitespace/case normalisation."""
    return normalise(output) == normalise(item.answer)


def _word(rng: random.Random, n: int = 3) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(n))


def _words(rng: random.Random, count: int, n: int = 3) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        w = _word(rng, n)
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


# ----------------------------------------------------------------------------- state tracking

def parity(rng: random.Random, length: int) -> tuple[str, str]:
    """length = number of bits; answer = parity of the ones."""
    bits = "".join(rng.choice("01") for _ in range(length))
    return f"parity {bits}", str(bits.count("1") % 2)


def cups(rng: random.Random, length: int) -> tuple[str, str]:
    """A ball under one of 3 cups; length = number of swaps; answer = the cup holding it."""
    pos = rng.randrange(3)
    swaps = []
    for _ in range(length):
        a, b = rng.sample(range(3), 2)
        swaps.append(f"{a}{b}")
        pos = b if pos == a else a if pos == b else pos
    return f"ball at {_start(swaps, pos)} swaps {' '.join(swaps)} where?", str(pos)


def _start(swaps: list[str], end: int) -> int:
    # undo the swaps from the end to find where the ball started (keeps the generator one pass)
    pos = end
    for s in reversed(swaps):
        a, b = int(s[0]), int(s[1])
        pos = b if pos == a else a if pos == b else pos
    return pos


def permutations(rng: random.Random, length: int) -> tuple[str, str]:
    """Compose `length` permutations of 5 elements; answer = the composed permutation."""
    state = list(range(5))
    perms = []
    for _ in range(length):
        p = list(range(5))
        rng.shuffle(p)
        perms.append("".join(map(str, p)))
        state = [state[i] for i in p]
    return f"compose {' '.join(perms)}", "".join(map(str, state))


def trace(rng: random.Random, length: int) -> tuple[str, str]:
    """A straight-line program over a, b, c (length statements, mod 10); answer = final value of one."""
    env = {v: rng.randrange(10) for v in "abc"}
    lines = [f"{v}={env[v]}" for v in "abc"]
    for _ in range(length):
        dst, src = rng.choice("abc"), rng.choice("abc")
        op = rng.choice("+-=")
        k = rng.randrange(10)
        if op == "=":
            env[dst] = env[src]
            lines.append(f"{dst}={src}")
        elif op == "+":
            env[dst] = (env[src] + k) % 10
            lines.append(f"{dst}={src}+{k}")
        else:
            env[dst] = (env[src] - k) % 10
            lines.append(f"{dst}={src}-{k}")
    q = rng.choice("abc")
    return f"mod 10: {';'.join(lines)}; {q}?", str(env[q])


# ----------------------------------------------------------------------------- recall

def kv_lookup(rng: random.Random, length: int) -> tuple[str, str]:
    """length = number of key:value pairs; answer = the value of one key."""
    keys = _words(rng, length)
    vals = [_word(rng) for _ in keys]
    i = rng.randrange(length)
    pairs = " ".join(f"{k}:{v}" for k, v in zip(keys, vals, strict=True))
    return f"{pairs} get {keys[i]}", vals[i]


def copy_span(rng: random.Random, length: int) -> tuple[str, str]:
    """length = number of words in the text; answer = the 2 words after a marked word."""
    words = _words(rng, max(length, 4))
    i = rng.randrange(len(words) - 2)
    return f"{' '.join(words)} copy after {words[i]}", " ".join(words[i + 1 : i + 3])


def named_line(rng: random.Random, length: int) -> tuple[str, str]:
    """length = number of lines `name: number`; answer = the number on the named line."""
    names = _words(rng, length, 4)
    nums = [str(rng.randrange(1000)) for _ in names]
    i = rng.randrange(length)
    body = "\n".join(f"{n}: {v}" for n, v in zip(names, nums, strict=True))
    return f"{body}\nline {names[i]}?", nums[i]


# ----------------------------------------------------------------------------- sequential data

def arithmetic_series(rng: random.Random, length: int) -> tuple[str, str]:
    """length = terms shown; answer = the next term."""
    a, d = rng.randrange(50), rng.randrange(1, 10)
    terms = [a + d * i for i in range(length + 1)]
    return f"next {' '.join(map(str, terms[:-1]))}", str(terms[-1])


def periodic_series(rng: random.Random, length: int) -> tuple[str, str]:
    """A repeating pattern of period 2..5 over digits; length = terms shown; answer = next term."""
    pattern = [rng.randrange(10) for _ in range(rng.randint(2, 5))]
    terms = [pattern[i % len(pattern)] for i in range(length + 1)]
    return f"next {' '.join(map(str, terms[:-1]))}", str(terms[-1])


def mixed_series(rng: random.Random, length: int) -> tuple[str, str]:
    """Alternating steps +d1, +d2 (mod 100); length = terms shown; answer = next term."""
    x, d1, d2 = rng.randrange(100), rng.randrange(1, 10), rng.randrange(1, 10)
    terms = [x]
    for i in range(length):
        x = (x + (d1 if i % 2 == 0 else d2)) % 100
        terms.append(x)
    return f"next {' '.join(map(str, terms[:-1]))}", str(terms[-1])


def running_total(rng: random.Random, length: int) -> tuple[str, str]:
    """A log of `length` deposits/withdrawals (mod 100); answer = the balance."""
    total, lines = 0, []
    for _ in range(length):
        k = rng.randrange(1, 10)
        if rng.random() < 0.5:
            total += k
            lines.append(f"+{k}")
        else:
            total -= k
            lines.append(f"-{k}")
    return f"log mod 100: {' '.join(lines)} total?", str(total % 100)


# ----------------------------------------------------------------------------- long document

_FILLER = [
    "the river ran past the old mill", "a cat slept on the warm wall", "rain fell over the quiet town",
    "the market opened at dawn", "birds sang in the tall trees", "a cart rolled down the hill",
    "the bell rang twice at noon", "smoke rose from the chimney", "children played near the well",
]


def buried_fact(rng: random.Random, length: int) -> tuple[str, str]:
    """length = filler sentences around one fact; answer = the fact's value."""
    who, code = _word(rng, 4), _word(rng)
    sents = [rng.choice(_FILLER) for _ in range(length)]
    sents.insert(rng.randrange(length + 1), f"the code of {who} is {code}")
    return f"{'. '.join(sents)}. code of {who}?", code


# ----------------------------------------------------------------------------- code

def expression(rng: random.Random, length: int) -> tuple[str, str]:
    """A left-to-right expression of `length` operations on digits (mod 100); answer = value."""
    x = rng.randrange(10)
    src = str(x)
    for _ in range(length):
        op, k = rng.choice("+-*"), rng.randrange(10)
        src = f"({src}{op}{k})"
        x = x + k if op == "+" else x - k if op == "-" else x * k
    return f"eval {src}%100", str(x % 100)


def loop_program(rng: random.Random, length: int) -> tuple[str, str]:
    """x starts at a digit; a loop of n iterations applies `length` statements; answer = x mod 10."""
    n, start = rng.randint(2, 4), rng.randrange(10)
    body = [(rng.choice("+*"), rng.randint(1, 3)) for _ in range(length)]
    x = start
    for _ in range(n):
        for op, k in body:
            x = (x + k if op == "+" else x * k) % 10
    stmts = ";".join(f"x{op}={k}" for op, k in body)
    return f"x={start};for i in range({n}):{stmts}; x%10?", str(x)


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


def fact_qa(rng: random.Random, length: int) -> tuple[str, str]:
    """Templated questions over a small fact table; length = number of greeting/filler words before."""
    rel = rng.choice(sorted(_FACTS))
    k = rng.choice(sorted(_FACTS[rel]))
    lead = " ".join(rng.choice(["hi", "hello", "please", "thanks", "quick", "question"]) for _ in range(length))
    q = rng.choice(_TEMPLATES[rel]).format(k=k)
    return f"{lead} {q}".strip(), _FACTS[rel][k]


# ----------------------------------------------------------------------------- registry

GENERATORS: dict[str, tuple[str, Generator, int]] = {
    # name: (task, generator, training length: the knob value giving prompts of roughly <= 200 bytes)
    "parity": ("state_tracking", parity, 48),
    "cups": ("state_tracking", cups, 24),
    "permutations": ("state_tracking", permutations, 8),
    "trace": ("state_tracking", trace, 12),
    "kv_lookup": ("recall", kv_lookup, 20),
    "copy_span": ("recall", copy_span, 30),
    "named_line": ("recall", named_line, 16),
    "arithmetic_series": ("sequential_data", arithmetic_series, 12),
    "periodic_series": ("sequential_data", periodic_series, 24),
    "mixed_series": ("sequential_data", mixed_series, 16),
    "running_total": ("sequential_data", running_total, 20),
    "buried_fact": ("long_document", buried_fact, 5),
    "expression": ("code", expression, 8),
    "loop_program": ("code", loop_program, 6),
    "fact_qa": ("chat", fact_qa, 4),
}


def make_item(name: str, seed: int, length: int | None = None) -> Item:
    """The item of generator `name` for `seed` at `length` (default: its training length)."""
    task, gen, default = GENERATORS[name]
    n = default if length is None else length
    rng = random.Random(f"{name}:{seed}:{n}")
    prompt, answer = gen(rng, n)
    return Item(prompt, answer, task, name, n)


def training_length(name: str) -> int:
    return GENERATORS[name][2]


def mixture(seed: int, *, scale: float = 1.0, names: list[str] | None = None):
    """An endless, seeded stream of items over all generators (uniform over generators), each at
    round(scale * training length) with lengths drawn in [1, that] so the model sees short items too."""
    rng = random.Random(seed)
    pool = names or sorted(GENERATORS)
    i = 0
    while True:
        name = rng.choice(pool)
        top = max(1, round(scale * training_length(name)))
        yield make_item(name, seed * 1_000_003 + i, rng.randint(max(1, top // 4), top))
        i += 1
