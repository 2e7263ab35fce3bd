"""chat: short conversational or support questions (including ones that mention logs, parity, code,
documents or sequences without asking for any of those tasks)."""

from __future__ import annotations

import random

from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.vocab import Vocab

T = "chat"

_ERRORS = bank("chat", "errors")


@template(T, "support_login")
def support_login(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("chat", "support_login", "asks"),
            s=v.company,
            e=rng.choice(_ERRORS),
        )
    )


@template(T, "support_order")
def support_order(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("chat", "support_order", "asks"),
            n=rng.randint(10000, 999999),
            c=v.company,
            d=rng.choice(bank("chat", "support_order", "due")),
            p=v.product,
        )
    )


@template(T, "smalltalk")
def smalltalk(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("chat", "smalltalk", "asks"),
            a=v.animal,
            a2=v.animal,
            c=v.city,
        )
    )


@template(T, "advice")
def advice(rng: random.Random, v: Vocab) -> Item:
    act = rng.choice(bank("chat", "advice", "activities")).format(f=v.food)
    return Item(
        pick(
            rng,
            bank("chat", "advice", "asks"),
            a=act,
            c=rng.choice(bank("chat", "advice", "circumstances")),
        )
    )


@template(T, "recommend")
def recommend(rng: random.Random, v: Vocab) -> Item:
    kind = rng.choice(bank("chat", "recommend", "kinds"))
    return Item(
        pick(
            rng,
            bank("chat", "recommend", "asks"),
            k=kind,
            t=v.topic,
            r=v.relation,
        )
    )


_CONCEPTS = bank("chat", "concepts")


@template(T, "define_concept")
def define_concept(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("chat", "define_concept", "asks"),
            c=rng.choice(_CONCEPTS),
            c2=rng.choice(_CONCEPTS),
            r=v.relation,
        )
    )


@template(T, "travel", held_out=True)
def travel(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("chat", "travel", "asks"),
            c=v.city,
            c2=v.city,
            n=rng.randint(2, 10),
            m=v.month,
        )
    )


@template(T, "emotional", held_out=True)
def emotional(rng: random.Random, v: Vocab) -> Item:
    ev = rng.choice(bank("chat", "emotional", "events"))
    return Item(
        pick(
            rng,
            bank("chat", "emotional", "asks"),
            e=ev,
            r=v.relation,
            c=v.city,
        )
    )


@template(T, "howto_everyday")
def howto_everyday(rng: random.Random, v: Vocab) -> Item:
    t = rng.choice(bank("chat", "howto_everyday", "tasks")).format(f=v.food, a=v.animal, p=v.product, j=v.job)
    return Item(
        pick(
            rng,
            bank("chat", "howto_everyday", "asks"),
            t=t,
        )
    )


@template(T, "near_miss_topics")
def near_miss_topics(rng: random.Random, v: Vocab) -> Item:
    """Mentions code, logs, documents, recall or sequences, but is just a conversational question."""
    return Item(
        pick(
            rng,
            bank("chat", "near_miss_topics", "asks"),
            t=v.topic,
            n=rng.randint(14, 70),
            o=v.object,
            l=v.lang,
            r=v.relation,
        )
    )


@template(T, "short_creative")
def short_creative(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("chat", "short_creative", "asks"),
            r=v.relation,
            n=v.name,
            f=v.food,
            a=v.animal,
            t=v.topic,
        )
    )


@template(T, "opinion_compare", held_out=True)
def opinion_compare(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("chat", "opinion_compare", "asks"),
            c=v.city,
            c2=v.city,
            p=v.product,
            p2=v.product,
            f=v.food,
            f2=v.food,
            l=v.lang,
            l2=v.lang,
            t=v.topic,
        )
    )


_SYSTEMS = bank("chat", "systems")


@template(T, "multi_turn_support")
def multi_turn_support(rng: random.Random, v: Vocab) -> Item:
    c = v.company
    msgs = [{"role": "system", "content": rng.choice(_SYSTEMS).format(c=c)}] if rng.random() < 0.7 else []
    msgs += [
        {
            "role": "user",
            "content": pick(rng, bank("chat", "multi_turn_support", "openers")),
        },
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {
            "role": "user",
            "content": pick(
                rng,
                bank("chat", "multi_turn_support", "requests"),
                p=v.product,
                c=c,
                city=v.city,
            ),
        },
    ]
    if rng.random() < 0.5:
        msgs += [
            {
                "role": "assistant",
                "content": pick(rng, bank("chat", "multi_turn_support", "replies")),
            },
            {
                "role": "user",
                "content": pick(rng, bank("chat", "multi_turn_support", "follow_ups")),
            },
        ]
    return Item(messages=msgs)
