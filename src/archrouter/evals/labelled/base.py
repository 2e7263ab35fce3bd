"""Template registry: each template is a function (rng, vocab) -> Item for one task type."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from archrouter.evals.labelled.vocab import Vocab


@dataclass
class Item:
    instr: str = ""  # the request; noise (typos, casing) applies to this part only
    context: str | None = None  # material the request is about (document, table, code, log)
    label: str = "text"  # how the context is introduced when wrapped ("document", "log", ...)
    state: bool = False  # answering needs following a state through updates
    answer: str | None = None
    messages: list[dict[str, str]] | None = None  # a whole conversation instead of instr/context
    noise: bool = True


@dataclass
class Template:
    task: str
    name: str
    held_out: bool  # items of held-out templates only ever go to the test split
    fn: Callable[[random.Random, Vocab], Item]


TEMPLATES: list[Template] = []


def template(task: str, name: str, *, held_out: bool = False):
    def deco(fn: Callable[[random.Random, Vocab], Item]) -> Callable[[random.Random, Vocab], Item]:
        TEMPLATES.append(Template(task, name, held_out, fn))
        return fn

    return deco


def pick(rng: random.Random, options: list[str], **kw: object) -> str:
    return rng.choice(options).format(**kw)
