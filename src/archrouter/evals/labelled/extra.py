"""More templates per task: short forms, other phrasings and framings, more languages, more near misses.
(Split from the per-task modules only to keep those readable.)"""

from __future__ import annotations

import random
import string

from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.text import log_uniform, paragraph, prose, sentence
from archrouter.evals.labelled.vocab import Vocab

# -- chat -------------------------------------------------------------------------------------------


@template("chat", "facts_trivia")
def facts_trivia(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("extra", "facts_trivia", "asks"),
            c=v.city,
            c2=v.city,
            p=v.product,
            a=v.animal,
            f=v.food,
        )
    )


@template("chat", "personal_situation")
def personal_situation(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("extra", "personal_situation", "asks"),
            r=v.relation,
            n=v.name,
            k=rng.randint(5, 80),
            t=v.topic,
            j=v.job,
            c=v.city,
            m=v.month,
            a=v.animal,
        )
    )


@template("chat", "product_question")
def product_question(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("extra", "product_question", "asks"),
            p=v.product,
            c=v.company,
        )
    )


@template("chat", "meta_assistant", held_out=True)
def meta_assistant(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("extra", "meta_assistant", "asks"),
            l=rng.choice(bank("extra", "meta_assistant", "languages")),
        )
    )


# -- recall -----------------------------------------------------------------------------------------


@template("recall", "short_fact_lookup")
def short_fact_lookup(rng: random.Random, v: Vocab) -> Item:
    n, c, d = v.name, v.city, rng.randint(1, 28)
    code = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(rng.randint(4, 9)))
    ctx = pick(
        rng,
        bank("extra", "short_fact_lookup", "messages"),
        n=n,
        c=c,
        d=d,
        code=code,
        s=f"{rng.randint(1, 40)}{rng.choice('ABCDEF')}",
        k=rng.randint(20, 2000),
    )
    return Item(
        pick(rng, bank("extra", "short_fact_lookup", "asks")),
        ctx,
        "message",
        answer=code,
    )


@template("recall", "email_extract")
def email_extract(rng: random.Random, v: Vocab) -> Item:
    n, co = v.name, v.company
    phone = f"{rng.randint(100, 999)}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
    body = (
        f"Hi team,\n\n{paragraph(rng, v, rng.randint(1, 4))}\n\nIf anything comes up, call me on {phone} or "
        f"write to {n.lower()}@{co.lower().replace(' ', '')}.com.\n\n{paragraph(rng, v, rng.randint(0, 3))}\n\n"
        f"Thanks,\n{n}"
    )
    return Item(
        pick(
            rng,
            bank("extra", "email_extract", "asks"),
            n=n,
        ),
        body,
        "email",
        answer=phone,
    )


@template("recall", "transcript_quote")
def transcript_quote(rng: random.Random, v: Vocab) -> Item:
    people = v.many("name", rng.randint(2, 5))
    lines = [f"{rng.choice(people)}: {sentence(rng, v)}" for _ in range(log_uniform(rng, 4, 200))]
    i = rng.randrange(len(lines))
    who = lines[i].split(":")[0]
    return Item(
        pick(
            rng,
            bank("extra", "transcript_quote", "asks"),
            w=who,
            k=i + 1,
        ),
        "\n".join(f"{j + 1} {x}" for j, x in enumerate(lines)),
        "transcript",
        answer=lines[i],
    )


@template("recall", "table_cell")
def table_cell(rng: random.Random, v: Vocab) -> Item:
    cols = rng.sample(["price", "stock", "rating", "weight_g", "sku", "colour", "warehouse"], 4)
    rows = []
    for _ in range(log_uniform(rng, 3, 150)):
        rows.append(
            [f"{v.product} {rng.randint(1, 999)}"]
            + [str(rng.randint(1, 9999)) if c != "colour" else v.colour for c in cols]
        )
    r = rng.choice(rows)
    j = rng.randrange(len(cols))
    sep = rng.choice([" | ", ",", "\t"])
    ctx = sep.join(["item", *cols]) + "\n" + "\n".join(sep.join(x) for x in rows)
    return Item(
        pick(
            rng,
            bank("extra", "table_cell", "asks"),
            c=cols[j],
            i=r[0],
        ),
        ctx,
        "table",
        answer=r[j + 1],
    )


@template("recall", "repeat_earlier_turn")
def repeat_earlier_turn(rng: random.Random, v: Vocab) -> Item:
    para = paragraph(rng, v, rng.randint(1, 3))
    msgs = [
        {"role": "user", "content": f"Keep this note for me: {para}"},
        {"role": "assistant", "content": "Saved. Anything else?"},
        {
            "role": "user",
            "content": pick(rng, bank("extra", "repeat_earlier_turn", "topics"), f=v.food, t=v.topic),
        },
        {"role": "assistant", "content": paragraph(rng, v, 2)},
        {
            "role": "user",
            "content": pick(rng, bank("extra", "repeat_earlier_turn", "asks")),
        },
    ]
    return Item(messages=msgs, answer=para)


@template("recall", "source_snippet", held_out=True)
def source_snippet(rng: random.Random, v: Vocab) -> Item:
    doc = prose(rng, v, log_uniform(rng, 150, 2500))
    url = f"https://{v.company.lower().replace(' ', '')}.example/{v.topic.replace(' ', '-')}/{rng.randint(100, 9999)}"
    doc = doc + f"\n\nSource: {url}"
    return Item(
        pick(rng, bank("extra", "source_snippet", "asks")),
        doc,
        "article",
        answer=url,
    )


# -- state tracking ---------------------------------------------------------------------------------


@template("state_tracking", "short_story_state")
def short_story_state(rng: random.Random, v: Vocab) -> Item:
    a, b = v.name, v.name
    o, p1, p2, p3 = v.object, v.place, v.place, v.place
    return Item(
        pick(
            rng,
            bank("extra", "short_story_state", "asks"),
            a=a,
            b=b,
            o=o,
            o2=v.object,
            p1=p1,
            p2=p2,
            p3=p3,
        ),
        state=True,
    )


@template("state_tracking", "counter_inline")
def counter_inline(rng: random.Random, v: Vocab) -> Item:
    start = x = rng.randint(0, 20)
    ops = []
    for _ in range(log_uniform(rng, 2, 40)):
        k = rng.randint(1, 9)
        if rng.random() < 0.5:
            x += k
            ops.append(pick(rng, bank("extra", "counter_inline", "increments"), k=k))
        else:
            x -= k
            ops.append(pick(rng, bank("extra", "counter_inline", "decrements"), k=k))
    return Item(
        pick(
            rng,
            bank("extra", "counter_inline", "asks"),
            s=start,
            ops=", ".join(ops),
        ),
        state=True,
        answer=str(x),
    )


@template("state_tracking", "bank_ledger")
def bank_ledger(rng: random.Random, v: Vocab) -> Item:
    who = v.name
    bal = rng.randint(0, 500)
    lines = [f"{who}'s account opens with {bal} EUR."]
    for _ in range(log_uniform(rng, 3, 60)):
        k = rng.randint(5, 200)
        if rng.random() < 0.5:
            bal += k
            lines.append(pick(rng, bank("extra", "bank_ledger", "credits"), k=k, who=who, sender=v.name))
        else:
            bal -= k
            lines.append(pick(rng, bank("extra", "bank_ledger", "debits"), k=k, food=v.food, payee=v.name))
    return Item(
        pick(
            rng,
            bank("extra", "bank_ledger", "asks"),
            w=who,
        ),
        "\n".join(lines),
        "transactions",
        state=True,
        answer=str(bal),
    )


@template("state_tracking", "grid_game")
def grid_game(rng: random.Random, v: Vocab) -> Item:
    n = rng.randint(3, 8)
    x, y = rng.randrange(n), rng.randrange(n)
    piece = rng.choice(["pawn", "token", "knight", v.animal, "marker"])
    lines = [f"On a {n}x{n} board the {piece} starts at row {y + 1}, column {x + 1}."]
    for _ in range(log_uniform(rng, 3, 60)):
        d = rng.choice(["up", "down", "left", "right"])
        dx, dy = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}[d]
        if 0 <= x + dx < n and 0 <= y + dy < n:
            x, y = x + dx, y + dy
            lines.append(f"{d}")
        else:
            lines.append(f"{d} (blocked by the edge, no move)")
    return Item(
        pick(rng, bank("extra", "grid_game", "asks"), p=piece),
        "\n".join(lines) if rng.random() < 0.5 else ", ".join(lines),
        "moves",
        state=True,
        answer=f"({y + 1}, {x + 1})",
    )


@template("state_tracking", "queue_line")
def queue_line(rng: random.Random, v: Vocab) -> Item:
    q = v.many("name", rng.randint(2, 4))
    lines = [f"The queue at the {v.place} is: {', '.join(q)}."]
    for _ in range(log_uniform(rng, 3, 40)):
        if q and rng.random() < 0.4:
            lines.append(f"{q.pop(0)} is served and leaves.")
        else:
            n = v.name
            if n not in q:
                q.append(n)
                lines.append(f"{n} joins the end of the queue.")
    return Item(
        pick(rng, bank("extra", "queue_line", "asks")),
        " ".join(lines),
        "story",
        state=True,
        answer=", ".join(q) or "nobody",
    )


@template("state_tracking", "binary_toggle_array", held_out=True)
def binary_toggle_array(rng: random.Random, v: Vocab) -> Item:
    n = rng.randint(4, 10)
    bits = [0] * n
    ops = []
    for _ in range(log_uniform(rng, 3, 60)):
        i = rng.randrange(n)
        bits[i] ^= 1
        ops.append(f"flip lamp {i + 1}")
    return Item(
        f"{n} lamps are all off. " + "; ".join(ops) + ". Which lamps are on?",
        state=True,
        answer=" ".join(str(i + 1) for i, b in enumerate(bits) if b),
    )


# -- long document ----------------------------------------------------------------------------------


@template("long_document", "lecture_notes")
def lecture_notes(rng: random.Random, v: Vocab) -> Item:
    doc = f"Lecture {rng.randint(1, 20)}: {v.topic.title()}\n\n" + prose(
        rng, v, log_uniform(rng, 300, 4000), headings=True
    )
    return Item(
        pick(rng, bank("extra", "lecture_notes", "asks")),
        doc,
        "notes",
    )


@template("long_document", "news_digest")
def news_digest(rng: random.Random, v: Vocab) -> Item:
    arts = [f"{v.city.upper()} - " + paragraph(rng, v, rng.randint(4, 10)) for _ in range(rng.randint(3, 20))]
    return Item(
        pick(rng, bank("extra", "news_digest", "asks")),
        "\n\n".join(arts),
        "articles",
    )


@template("long_document", "doc_question_open")
def doc_question_open(rng: random.Random, v: Vocab) -> Item:
    doc = prose(rng, v, log_uniform(rng, 400, 4500))
    return Item(
        pick(rng, bank("extra", "doc_question_open", "asks")),
        doc,
        "document",
    )


@template("long_document", "interview_transcript", held_out=True)
def interview_transcript(rng: random.Random, v: Vocab) -> Item:
    guest = v.name
    parts = []
    while sum(len(p.split()) for p in parts) < log_uniform(rng, 400, 4000):
        parts.append(f"INTERVIEWER: {sentence(rng, v)}\n{guest.upper()}: {paragraph(rng, v)}")
    return Item(
        pick(
            rng,
            bank("extra", "interview_transcript", "asks"),
            g=guest,
        ),
        "\n\n".join(parts),
        "interview",
    )


# -- sequential data --------------------------------------------------------------------------------


@template("sequential_data", "short_series_question")
def short_series_question(rng: random.Random, v: Vocab) -> Item:
    xs = [rng.randint(1, 100) for _ in range(rng.randint(5, 15))]
    return Item(
        pick(
            rng,
            bank("extra", "short_series_question", "asks"),
            w=rng.choice(bank("extra", "short_series_question", "series")),
            n=len(xs),
            s=", ".join(map(str, xs)),
        )
    )


@template("sequential_data", "metrics_dashboard")
def metrics_dashboard(rng: random.Random, v: Vocab) -> Item:
    svc = v.service
    n = log_uniform(rng, 6, 300)
    lines = [
        f"t={i * 10}s {svc}.p99_ms={abs(int(rng.gauss(200 + i * rng.uniform(-1, 3), 40)))} "
        f"{svc}.rps={abs(int(rng.gauss(500, 80)))} {svc}.errors={rng.choice([0, 0, 0, 1, 2, 5])}"
        for i in range(n)
    ]
    return Item(
        pick(
            rng,
            bank("extra", "metrics_dashboard", "asks"),
            s=svc,
        ),
        "\n".join(lines),
        "metrics",
    )


@template("sequential_data", "transactions_pattern")
def transactions_pattern(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with state tracking: transactions, but the ask is about patterns and aggregates."""
    categories = bank("extra", "transactions_pattern", "categories")
    lines = [
        f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.choice(categories)} "
        f"{rng.randint(3, 900)}.{rng.randint(0, 99):02d}"
        for _ in range(log_uniform(rng, 8, 300))
    ]
    return Item(
        pick(rng, bank("extra", "transactions_pattern", "asks")),
        "\n".join(lines),
        "transactions",
    )


@template("sequential_data", "sequence_math")
def sequence_math(rng: random.Random, v: Vocab) -> Item:
    xs = [rng.randint(-50, 200) for _ in range(log_uniform(rng, 10, 400))]
    return Item(
        pick(rng, bank("extra", "sequence_math", "asks")),
        " ".join(map(str, xs)),
        "sequence",
    )


@template("sequential_data", "iot_events", held_out=True)
def iot_events(rng: random.Random, v: Vocab) -> Item:
    devs = [f"{v.place}-{rng.randint(1, 9)}" for _ in range(rng.randint(2, 6))]
    t = 0
    lines = []
    for _ in range(log_uniform(rng, 10, 300)):
        t += rng.randint(1, 120)
        lines.append(f"[{t:>6}] {rng.choice(devs)} motion={rng.choice([0, 1])} lux={rng.randint(0, 900)}")
    return Item(
        pick(rng, bank("extra", "iot_events", "asks")),
        "\n".join(lines),
        "events",
    )


# -- code ---------------------------------------------------------------------------------------------


@template("code", "short_code_question")
def short_code_question(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("extra", "short_code_question", "asks"),
            l=v.lang,
        )
    )


@template("code", "implement_class")
def implement_class(rng: random.Random, v: Vocab) -> Item:
    thing = v.object
    return Item(
        pick(
            rng,
            bank("extra", "implement_class", "asks"),
            l=v.lang,
            T=thing.title().replace(" ", ""),
            t=thing,
            s=v.service,
        )
    )


@template("code", "stacktrace")
def stacktrace(rng: random.Random, v: Vocab) -> Item:
    f = v.object.replace(" ", "_")
    types, messages = bank("extra", "stacktrace", "error_types"), bank("extra", "stacktrace", "error_messages")
    tb = (
        "Traceback (most recent call last):\n"
        f'  File "app/{v.service.replace(" ", "_")}.py", line {rng.randint(10, 400)}, in handle\n'
        f"    result = load_{f}(payload['{f}'])\n  File \"app/models.py\", line {rng.randint(10, 200)}, in load_{f}\n"
        f"    return {f.title()}(**data)\n{rng.choice(types)}: {rng.choice(messages)}"
    )
    return Item(
        pick(rng, bank("extra", "stacktrace", "asks")),
        tb,
        "traceback",
    )


@template("code", "data_pipeline_code")
def data_pipeline_code(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with sequential data: about time series, but the ask is code."""
    return Item(
        pick(
            rng,
            bank("extra", "data_pipeline_code", "asks"),
            s=v.service,
            l=v.lang,
        )
    )


@template("code", "doc_code", held_out=True)
def doc_code(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with long_document: a long text, but the ask is code."""
    doc = prose(rng, v, log_uniform(rng, 200, 1500))
    return Item(
        pick(rng, bank("extra", "doc_code", "asks")),
        doc,
        "sample text",
    )
