"""long_document: read, summarise or answer over a long text (reports, transcripts, contracts, stories,
email threads, reviews); the questions need the gist of the whole text, not one span."""

from __future__ import annotations

import random

from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.text import log_uniform, paragraph, prose, sentence
from archrouter.evals.labelled.vocab import Vocab

T = "long_document"


def _words(rng: random.Random) -> int:
    return log_uniform(rng, 300, 4500)


@template(T, "summarise_report")
def summarise_report(rng: random.Random, v: Vocab) -> Item:
    doc = prose(rng, v, _words(rng), headings=rng.random() < 0.6)
    return Item(
        pick(
            rng,
            bank("longdoc", "summarise_report", "asks"),
            n=rng.randint(3, 8),
            w=rng.choice([100, 150, 200, 300]),
        ),
        doc,
        "report",
    )


def _transcript(rng: random.Random, v: Vocab, words: int) -> str:
    people = v.many("name", rng.randint(3, 6))
    out, n = [], 0
    while n < words:
        line = f"{rng.choice(people)}: {' '.join(sentence(rng, v) for _ in range(rng.randint(1, 3)))}"
        out.append(line)
        n += len(line.split())
    return "\n".join(out)


@template(T, "meeting_transcript")
def meeting_transcript(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(rng, bank("longdoc", "meeting_transcript", "asks")),
        _transcript(rng, v, _words(rng)),
        "transcript",
    )


_CLAUSES = bank("longdoc", "clauses")


@template(T, "contract_explain")
def contract_explain(rng: random.Random, v: Vocab) -> Item:
    words, out, sec = _words(rng), [], 1
    while sum(len(x.split()) for x in out) < words:
        clauses = " ".join(
            rng.choice(_CLAUSES).format(
                m=rng.randint(300, 3000), d=rng.randint(1, 28), n=rng.randint(1, 24), c=v.city, co=v.company
            )
            for _ in range(rng.randint(2, 5))
        )
        out.append(f"Section {sec}. {clauses} {paragraph(rng, v, 2)}")
        sec += 1
    return Item(
        pick(rng, bank("longdoc", "contract_explain", "asks")),
        "\n\n".join(out),
        "contract",
    )


@template(T, "article_qa")
def article_qa(rng: random.Random, v: Vocab) -> Item:
    topic = v.topic
    return Item(
        pick(
            rng,
            bank("longdoc", "article_qa", "asks"),
            t=topic,
        ),
        prose(rng, v, _words(rng)),
        "article",
    )


@template(T, "compare_sections")
def compare_sections(rng: random.Random, v: Vocab) -> Item:
    doc = prose(rng, v, _words(rng), headings=True)
    return Item(
        pick(
            rng,
            bank("longdoc", "compare_sections", "asks"),
            a=rng.randint(1, 3),
            b=rng.randint(4, 6),
        ),
        doc,
        "document",
    )


@template(T, "email_thread")
def email_thread(rng: random.Random, v: Vocab) -> Item:
    people = v.many("name", rng.randint(2, 5))
    words, out = _words(rng), []
    while sum(len(x.split()) for x in out) < words:
        a, b = rng.sample(people, 2)
        out.append(f"From: {a}\nTo: {b}\nSubject: Re: {v.topic} plan\n\n{paragraph(rng, v)}\n\nBest,\n{a}")
    return Item(
        pick(rng, bank("longdoc", "email_thread", "asks")),
        "\n\n-----\n\n".join(out),
        "emails",
    )


@template(T, "paper_review")
def paper_review(rng: random.Random, v: Vocab) -> Item:
    doc = "Abstract\n" + paragraph(rng, v) + "\n\n" + prose(rng, v, _words(rng), headings=True)
    return Item(
        pick(rng, bank("longdoc", "paper_review", "asks")),
        doc,
        "paper",
    )


@template(T, "rewrite_simple")
def rewrite_simple(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(rng, bank("longdoc", "rewrite_simple", "asks")),
        prose(rng, v, _words(rng)),
        "document",
    )


@template(T, "doc_with_table")
def doc_with_table(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with sequential data and recall: numbers and a table inside, but the ask is the gist."""
    rows = "\n".join(
        f"{v.city} | {rng.randint(1, 900)} | {rng.randint(1, 99)}%" for _ in range(rng.randint(4, 12))
    )
    doc = (
        prose(rng, v, _words(rng) // 2)
        + "\n\nTable 1: results by city\nCity | Projects | Completion\n"
        + rows
        + "\n\n"
        + prose(rng, v, _words(rng) // 2)
    )
    return Item(
        pick(rng, bank("longdoc", "doc_with_table", "asks")),
        doc,
        "report",
    )


@template(T, "story_analysis", held_out=True)
def story_analysis(rng: random.Random, v: Vocab) -> Item:
    hero = v.name
    parts = []
    for _ in range(max(3, _words(rng) // 120)):
        parts.append(
            f"{hero} " + rng.choice(bank("longdoc", "story_analysis", "actions")) + f" {v.city}. " + paragraph(rng, v)
        )
    return Item(
        pick(
            rng,
            bank("longdoc", "story_analysis", "asks"),
            h=hero,
        ),
        "\n\n".join(parts),
        "story",
    )


@template(T, "reviews_themes", held_out=True)
def reviews_themes(rng: random.Random, v: Vocab) -> Item:
    prod = v.product
    out = []
    while sum(len(x.split()) for x in out) < _words(rng):
        out.append(
            f"★{rng.randint(1, 5)} - {v.name}: "
            + pick(rng, bank("longdoc", "reviews_themes", "reviews"), product=prod, company=v.company, city=v.city)
            + " "
            + sentence(rng, v)
        )
    return Item(
        pick(
            rng,
            bank("longdoc", "reviews_themes", "asks"),
            p=prod,
        ),
        "\n".join(out),
        "reviews",
    )


@template(T, "handbook_policy", held_out=True)
def handbook_policy(rng: random.Random, v: Vocab) -> Item:
    doc = f"{v.company} Employee Handbook\n\n" + prose(rng, v, _words(rng), headings=True)
    return Item(
        pick(rng, bank("longdoc", "handbook_policy", "asks")),
        doc,
        "handbook",
    )
