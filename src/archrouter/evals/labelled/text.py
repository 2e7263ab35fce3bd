"""Building blocks shared by the task templates: prose, noise (typos, casing), and how an instruction
is put together with its context. The sentences and noise phrases are in banks/text.yaml."""

from __future__ import annotations

import random

from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.vocab import Vocab

_SENTENCES = bank("text", "sentences")
_WEEKDAYS = bank("text", "weekdays")
_PERIODS = bank("text", "periods")


def sentence(rng: random.Random, v: Vocab) -> str:
    t = rng.choice(_SENTENCES)
    return t.format(
        company=v.company,
        topic=v.topic,
        city=v.city,
        city2=v.city,
        name=v.name,
        name2=v.name,
        pct=rng.randint(2, 60),
        period=rng.choice(_PERIODS),
        n=rng.randint(2, 12),
        n2=rng.randint(50, 5000),
        month=v.month,
        money=rng.randint(2, 900),
        year=rng.randint(1995, 2024),
        year2=rng.randint(2025, 2040),
        decade=rng.randrange(1900, 2000, 10),
        job=v.job,
        weekday=rng.choice(_WEEKDAYS),
    )


def paragraph(rng: random.Random, v: Vocab, n_sent: int | None = None) -> str:
    return " ".join(sentence(rng, v) for _ in range(n_sent or rng.randint(3, 8)))


def prose(rng: random.Random, v: Vocab, words: int, *, headings: bool = False) -> str:
    """Roughly `words` words of paragraphs, optionally under numbered section headings."""
    out, count, sec = [], 0, 1
    while count < words:
        if headings and (not out or rng.random() < 0.25):
            out.append(f"{sec}. {v.topic.title()} in {v.city}")
            sec += 1
        p = paragraph(rng, v)
        out.append(p)
        count += len(p.split())
    return "\n\n".join(out)


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(round(lo * (hi / lo) ** rng.random()))


# -- noise ---------------------------------------------------------------------------------------------

_KEYS = "abcdefghijklmnopqrstuvwxyz"


def typos(rng: random.Random, text: str, rate: float) -> str:
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) > 3 and rng.random() < rate:
            j = rng.randrange(len(w) - 1)
            kind = rng.randrange(4)
            if kind == 0:
                w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
            elif kind == 1:
                w = w[:j] + w[j + 1 :]
            elif kind == 2:
                w = w[:j] + w[j] + w[j:]
            else:
                w = w[:j] + rng.choice(_KEYS) + w[j + 1 :]
            words[i] = w
    return " ".join(words)


def noisy(rng: random.Random, instr: str) -> str:
    """Random casing, typos, punctuation and politeness on an instruction (never on its context)."""
    r = rng.random()
    if r < 0.12:
        instr = instr.lower()
    elif r < 0.15 and len(instr) < 200:
        instr = instr.upper()
    if rng.random() < 0.18:
        instr = typos(rng, instr, rng.choice([0.05, 0.1, 0.2]))
    if rng.random() < 0.1:
        instr = instr.rstrip(".?!")
    if rng.random() < 0.15:
        instr = rng.choice(bank("text", "noisy", "openers")) + instr
    r = rng.random()
    if r < 0.04:
        instr = f"Task: {instr}"
    elif r < 0.08:
        instr = f"Question: {instr}\nAnswer:"
    elif r < 0.11:
        instr = f"{instr} Explain your reasoning."
    elif r < 0.14:
        instr = f"I need help with something. {instr}"
    elif r < 0.16:
        instr = f"{instr} Be brief."
    if rng.random() < 0.1:
        instr += rng.choice(bank("text", "noisy", "sign_offs"))
    return instr


# -- composing an instruction with its context ---------------------------------------------------------


def wrap_context(rng: random.Random, context: str, label: str = "text") -> str:
    style = rng.randrange(6)
    if style == 0:
        return f'"""\n{context}\n"""'
    if style == 1:
        return f"<{label}>\n{context}\n</{label}>"
    if style == 2:
        return f"---\n{context}\n---"
    if style == 3:
        return f"{label.capitalize()}:\n{context}"
    if style == 4:
        return f"```\n{context}\n```"
    return context


def compose(rng: random.Random, instr: str, context: str | None, label: str = "text") -> str:
    if context is None:
        return instr
    ctx = wrap_context(rng, context, label)
    r = rng.random()
    if r < 0.55:
        return f"{instr}\n\n{ctx}"
    if r < 0.9:
        return f"{ctx}\n\n{instr}"
    return f"{instr}\n\n{ctx}\n\nAgain: {instr}"
