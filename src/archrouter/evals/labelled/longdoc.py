"""long_document: read, summarise or answer over a long text (reports, transcripts, contracts, stories,
email threads, reviews); the questions need the gist of the whole text, not one span."""

from __future__ import annotations

import random

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
            [
                "Summarise this report in {n} bullet points.",
                "Can you give me a summary of the document below?",
                "TL;DR please.",
                "Write an executive summary (max {w} words) of the following report.",
                "Resume este informe en {n} puntos.",
                "Fasse den folgenden Bericht zusammen.",
                "Résume ce document en quelques phrases.",
                "What are the key takeaways of this report?",
                "summarize",
                "I don't have time to read all of this - what does it say?",
            ],
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
        pick(
            rng,
            [
                "What were the main decisions and action items in this meeting?",
                "Summarise the meeting transcript below.",
                "Write minutes for this meeting: attendees, decisions, open questions.",
                "Who argued for what in this discussion? Give me an overview.",
                "¿Cuáles fueron las decisiones principales de esta reunión?",
            ],
        ),
        _transcript(rng, v, _words(rng)),
        "transcript",
    )


_CLAUSES = [
    "The Tenant shall pay the rent of {m} EUR on or before the {d}th day of each month.",
    "The Landlord is responsible for structural repairs, including the roof, walls and plumbing.",
    "Either party may terminate this Agreement with {n} months' written notice.",
    "The Supplier warrants that the goods are free from defects for a period of {n} months.",
    "Any dispute arising out of this Agreement shall be settled by arbitration in {c}.",
    "The Contractor shall maintain insurance of not less than {m},000 EUR.",
    "Confidential Information excludes information that is publicly available at the time of disclosure.",
    "Pets are not permitted without the prior written consent of the Landlord.",
    "The Customer may not assign this Agreement without the consent of {co}.",
    "Late payments accrue interest at {d}% per annum.",
    "This Agreement is governed by the laws of the jurisdiction in which {c} is located.",
    "The Employee agrees not to solicit clients of {co} for {n} months after termination.",
]


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
        pick(
            rng,
            [
                "What are the tenant's obligations under this agreement? Explain in plain English.",
                "Explain this contract to me like I'm not a lawyer.",
                "Are there any clauses in this agreement I should worry about?",
                "Summarise the key terms of this contract.",
                "What happens if I want to leave early, according to this agreement?",
                "Explícame este contrato de forma sencilla.",
            ],
        ),
        "\n\n".join(out),
        "contract",
    )


@template(T, "article_qa")
def article_qa(rng: random.Random, v: Vocab) -> Item:
    topic = v.topic
    return Item(
        pick(
            rng,
            [
                "According to the article, why did the {t} programme run into trouble?",
                "Based on this text, what does the author think about {t}?",
                "What arguments does the article make for and against {t}?",
                "What is the main point of this article?",
                "How does the article explain the change in public opinion?",
                "Selon cet article, quelles sont les causes principales du problème ?",
            ],
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
            [
                "Compare the approaches described in sections {a} and {b}.",
                "How does section {b} differ from section {a}?",
                "Which sections of this document discuss costs, and what do they conclude overall?",
                "Give me an outline of this document, one line per section.",
            ],
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
        pick(
            rng,
            [
                "Catch me up on this email thread. What's been agreed and what's still open?",
                "tl;dr of this thread?",
                "Draft a reply that addresses the open questions in this thread.",
                "Summarize the discussion below.",
                "Was ist der Stand in diesem E-Mail-Verlauf?",
            ],
        ),
        "\n\n-----\n\n".join(out),
        "emails",
    )


@template(T, "paper_review")
def paper_review(rng: random.Random, v: Vocab) -> Item:
    doc = "Abstract\n" + paragraph(rng, v) + "\n\n" + prose(rng, v, _words(rng), headings=True)
    return Item(
        pick(
            rng,
            [
                "What are the limitations of this study?",
                "Write a short peer review of this paper.",
                "What is the paper's main contribution, and is it convincing?",
                "Explain this paper to a first-year student.",
                "List the paper's methods and findings.",
            ],
        ),
        doc,
        "paper",
    )


@template(T, "rewrite_simple")
def rewrite_simple(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "Rewrite this document for a 10-year-old.",
                "Turn this long text into a one-page briefing.",
                "Make this report shorter and easier to read, keep all the main points.",
                "Convert the following into a slide outline.",
                "Reescribe este texto de forma más breve.",
            ],
        ),
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
        pick(
            rng,
            [
                "Summarise the findings of this report, including what the table shows overall.",
                "What's the overall story this document tells?",
                "Write a one-paragraph abstract for this report.",
            ],
        ),
        doc,
        "report",
    )


@template(T, "story_analysis", held_out=True)
def story_analysis(rng: random.Random, v: Vocab) -> Item:
    hero = v.name
    parts = []
    for _ in range(max(3, _words(rng) // 120)):
        parts.append(
            f"{hero} "
            + rng.choice(["walked through", "remembered", "argued about", "dreamed of", "returned to"])
            + f" {v.city}. "
            + paragraph(rng, v)
        )
    return Item(
        pick(
            rng,
            [
                "How does {h}'s attitude change over the course of the story?",
                "What are the main themes of this story?",
                "Summarise the plot in a few sentences.",
                "Is the ending of this story hopeful? Explain.",
            ],
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
            + rng.choice(
                [
                    f"The {prod} is great but the battery dies fast.",
                    f"Customer service at {v.company} was slow.",
                    f"Shipping to {v.city} took weeks.",
                    "Works as advertised.",
                    "Too expensive for what it does.",
                    "Setup was confusing.",
                    "Would buy again!",
                ]
            )
            + " "
            + sentence(rng, v)
        )
    return Item(
        pick(
            rng,
            [
                "What are the common complaints in these reviews?",
                "Summarise what customers like and dislike.",
                "Based on all these reviews, should I buy the {p}?",
            ],
            p=prod,
        ),
        "\n".join(out),
        "reviews",
    )


@template(T, "handbook_policy", held_out=True)
def handbook_policy(rng: random.Random, v: Vocab) -> Item:
    doc = f"{v.company} Employee Handbook\n\n" + prose(rng, v, _words(rng), headings=True)
    return Item(
        pick(
            rng,
            [
                "Does this handbook allow remote work? Explain with reference to the relevant sections.",
                "What does the handbook say overall about training and development?",
                "Give me an overview of the policies in this handbook.",
            ],
        ),
        doc,
        "handbook",
    )
