"""More templates per task: short forms, other phrasings and framings, more languages, more near misses.
(Split from the per-task modules only to keep those readable.)"""

from __future__ import annotations

import random
import string

from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.text import log_uniform, paragraph, prose, sentence
from archrouter.evals.labelled.vocab import Vocab

# -- chat -------------------------------------------------------------------------------------------


@template("chat", "facts_trivia")
def facts_trivia(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "How far is {c} from {c2}, roughly?",
                "Who invented the {p}?",
                "Why is the sky blue?",
                "How long do {a}s live?",
                "What's the capital of Australia? I always forget.",
                "Do {a}s sleep?",
                "What language do they speak in {c}?",
                "When is the best season to see the northern lights?",
                "¿Cuántos habitantes tiene {c} más o menos?",
                "Combien de temps vit un {a} ?",
                "Is {f} originally from {c}?",
                "what year did the first iPhone come out",
            ],
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
            [
                "My {r} {n} is turning {k} next week and I have no idea what to get them. They like {t}.",
                "I've been working as a {j} for {k} years and I'm getting bored. Should I switch careers?",
                "We're moving to {c} with two kids in {m}. Anything we should know?",
                "I have a free afternoon in {c} and it's raining. What would you do?",
                "My {a} keeps waking me up at 5am. Help!",
                "I want to start a book club with friends. How do we pick books?",
                "Meu {r} está doente, o que posso levar quando for visitá-lo?",
                "Ich bin neu in {c} und kenne niemanden. Wie finde ich Anschluss?",
            ],
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
            [
                "Is the {p} from {c} any good?",
                "Does the {p} work without wifi?",
                "How long should a {p} last?",
                "What should I look for when buying a {p}?",
                "Is it worth repairing a 5-year-old {p}?",
                "Can I take a {p} on a plane in hand luggage?",
                "¿Vale la pena comprar un {p} de segunda mano?",
            ],
            p=v.product,
            c=v.company,
        )
    )


@template("chat", "meta_assistant", held_out=True)
def meta_assistant(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "Are you a real person?",
                "What can you help me with?",
                "Do you remember what we talked about yesterday?",
                "Can you speak {l}? (the human language, I mean)",
                "How do you know so much?",
                "Who made you?",
                "Can you set a reminder for me?",
                "Tu parles français ?",
                "Are you better than a search engine?",
            ],
            l=rng.choice(["Portuguese", "Korean", "Swahili", "Dutch"]),
        )
    )


# -- recall -----------------------------------------------------------------------------------------


@template("recall", "short_fact_lookup")
def short_fact_lookup(rng: random.Random, v: Vocab) -> Item:
    n, c, d = v.name, v.city, rng.randint(1, 28)
    code = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(rng.randint(4, 9)))
    ctx = pick(
        rng,
        [
            "{n} flies to {c} on the {d}th, booking reference {code}, seat {s}.",
            "Hi {n}, your parcel {code} will be delivered to the {c} depot on the {d}th.",
            "Dear {n}, your appointment is confirmed for the {d}th at 10:30 in our {c} clinic (ref {code}).",
            "Invoice {code} for {n}: {k} EUR, due on the {d}th. Pay to the {c} branch.",
        ],
        n=n,
        c=c,
        d=d,
        code=code,
        s=f"{rng.randint(1, 40)}{rng.choice('ABCDEF')}",
        k=rng.randint(20, 2000),
    )
    return Item(
        pick(
            rng,
            [
                "What's the reference in this message?",
                "Copy the code from this text exactly.",
                "Which number is the booking/parcel/invoice reference here?",
                "From this, what is the ref? Exact please.",
                "¿Cuál es la referencia?",
                "Quelle est la référence exacte ?",
                "Welche Nummer steht in der Nachricht?",
            ],
        ),
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
            [
                "What phone number does {n} give in this email? Copy it exactly.",
                "Find the email address in this message.",
                "Pull out {n}'s contact details from the email, verbatim.",
                "What number should I call, according to the email?",
            ],
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
            [
                "What exactly did {w} say in line {k}? Quote it.",
                "Copy line {k} of this transcript word for word.",
                "Give me {w}'s words at line {k}, verbatim.",
                "Cita exactamente la línea {k}.",
            ],
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
            [
                "What is the {c} of {i}?",
                "Look up {i} in the table: {c}?",
                "Give me the exact {c} value for {i}.",
                "{i} -> {c}?",
                "Dans ce tableau, quel est le {c} de {i} ?",
            ],
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
            "content": pick(rng, ["What's a good {f} recipe?", "Tell me about {t}."], f=v.food, t=v.topic),
        },
        {"role": "assistant", "content": paragraph(rng, v, 2)},
        {
            "role": "user",
            "content": pick(
                rng,
                [
                    "Paste my note back exactly as I wrote it.",
                    "What was the note I asked you to keep? Word for word.",
                    "Repite la nota que te di, tal cual.",
                ],
            ),
        },
    ]
    return Item(messages=msgs, answer=para)


@template("recall", "source_snippet", held_out=True)
def source_snippet(rng: random.Random, v: Vocab) -> Item:
    doc = prose(rng, v, log_uniform(rng, 150, 2500))
    url = f"https://{v.company.lower().replace(' ', '')}.example/{v.topic.replace(' ', '-')}/{rng.randint(100, 9999)}"
    doc = doc + f"\n\nSource: {url}"
    return Item(
        pick(
            rng,
            [
                "What URL is given as the source? Exact link please.",
                "Copy the source link at the bottom.",
                "Which link does the article cite? Verbatim.",
            ],
        ),
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
            [
                "{a} puts the {o} in the {p1}. {b} moves it to the {p2} while {a} is out. Then {a} moves it to the {p3}. "
                "Where is the {o} now?",
                "The {o} starts in the {p1}. It gets moved to the {p2}, then back, then to the {p3}. Where is it?",
                "{a} has 3 {o}s, gives one to {b}, gets two back, then loses one. How many does {a} have?",
                "I'm holding a {o}. I swap it with {a} for a {o2}, then swap that with {b} for a pen. What am I holding?",
                "{a} est dans la {p1}, puis va dans la {p2}, puis revient. Où est {a} ?",
                "Un interruptor empieza apagado. Lo pulso 4 veces. ¿Está encendido o apagado?",
            ],
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
            ops.append(rng.choice([f"add {k}", f"+{k}", f"plus {k}", f"increase by {k}"]))
        else:
            x -= k
            ops.append(rng.choice([f"subtract {k}", f"-{k}", f"minus {k}", f"take away {k}"]))
    return Item(
        pick(
            rng,
            [
                "Start at {s}, then {ops}. What number do you end with?",
                "Begin with {s}: {ops}. Result?",
                "Counter = {s}. Apply: {ops}. Final counter?",
                "Empieza en {s} y luego {ops}. ¿Resultado?",
            ],
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
            lines.append(rng.choice([f"Deposit {k}.", f"{v.name} sends {who} {k}.", f"Salary part: +{k}."]))
        else:
            bal -= k
            lines.append(
                rng.choice([f"Withdraw {k}.", f"Pays {k} for {v.food}.", f"Transfer {k} to {v.name}."])
            )
    return Item(
        pick(
            rng,
            [
                "What is the balance after all of this?",
                "Final balance of {w}?",
                "Walk through the transactions; how much is left at the end?",
            ],
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
        pick(rng, ["Where is the {p} at the end (row, column)?", "Final square of the {p}?"], p=piece),
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
        pick(
            rng,
            [
                "Who is first in the queue now?",
                "Who's in the queue at the end, in order?",
                "How many people are waiting at the end?",
            ],
        ),
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
        pick(
            rng,
            [
                "Turn these lecture notes into a study guide.",
                "What are the five most important ideas in these notes?",
                "I have an exam tomorrow. Explain what these notes cover, briefly.",
                "Make flashcard questions from this text.",
                "Haz un esquema de estos apuntes.",
            ],
        ),
        doc,
        "notes",
    )


@template("long_document", "news_digest")
def news_digest(rng: random.Random, v: Vocab) -> Item:
    arts = [f"{v.city.upper()} - " + paragraph(rng, v, rng.randint(4, 10)) for _ in range(rng.randint(3, 20))]
    return Item(
        pick(
            rng,
            [
                "Here are today's articles. Give me a news digest, one line per story.",
                "What are the common threads across these articles?",
                "Summarize today's news below for a busy reader.",
                "Quelles sont les grandes tendances dans ces articles ?",
            ],
        ),
        "\n\n".join(arts),
        "articles",
    )


@template("long_document", "doc_question_open")
def doc_question_open(rng: random.Random, v: Vocab) -> Item:
    doc = prose(rng, v, log_uniform(rng, 400, 4500))
    return Item(
        pick(
            rng,
            [
                "Read this and tell me what you think the authors got wrong.",
                "What is this text really about?",
                "Is the tone of this document optimistic or pessimistic? Support your answer.",
                "Who is the intended audience of this document, and how can you tell?",
                "Pick the three most important paragraphs and explain why.",
                "Was ist die Kernaussage dieses Textes?",
            ],
        ),
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
            [
                "What are {g}'s main views in this interview?",
                "Write a short profile of {g} based on this interview.",
                "Summarise the interview in a paragraph.",
            ],
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
            [
                "My {w} over the last {n} days: {s}. Is it going up or down?",
                "Average of {s}?",
                "Which day was the outlier: {s}",
                "{s} -- any trend here?",
                "Media y tendencia de: {s}",
                "Here are {w}: {s}. What's the max, min and the biggest day-to-day jump?",
            ],
            w=rng.choice(
                ["step counts (thousands)", "coffee sales", "bug reports", "sign-ups", "hours slept"]
            ),
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
            [
                "Here's the metrics export for {s}. Is latency correlated with errors?",
                "When did p99 first exceed 300ms, and did it recover?",
                "Aggregate these metrics per minute.",
                "Any signs of a regression in this series?",
                "¿Cuándo empeoró la latencia?",
            ],
            s=svc,
        ),
        "\n".join(lines),
        "metrics",
    )


@template("sequential_data", "transactions_pattern")
def transactions_pattern(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with state tracking: transactions, but the ask is about patterns and aggregates."""
    lines = [
        f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.choice(['grocery', 'rent', 'fuel', 'dining', 'travel'])} "
        f"{rng.randint(3, 900)}.{rng.randint(0, 99):02d}"
        for _ in range(log_uniform(rng, 8, 300))
    ]
    return Item(
        pick(
            rng,
            [
                "Which spending category grows fastest month over month?",
                "Total spend per category per month, please.",
                "Flag any transactions that look unusual compared to the rest.",
                "Is my dining spending seasonal?",
            ],
        ),
        "\n".join(lines),
        "transactions",
    )


@template("sequential_data", "sequence_math")
def sequence_math(rng: random.Random, v: Vocab) -> Item:
    xs = [rng.randint(-50, 200) for _ in range(log_uniform(rng, 10, 400))]
    return Item(
        pick(
            rng,
            [
                "Compute the running mean of this sequence and report it every 10 elements.",
                "Find the longest increasing run in this sequence.",
                "Where does the sequence change regime?",
                "Smooth this series with a window of 5 and describe the shape.",
                "Compte les valeurs négatives par bloc de 20.",
            ],
        ),
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
        pick(
            rng,
            [
                "From these motion sensor events, which room is busiest by hour?",
                "Estimate occupancy over time from this event stream.",
                "Detect periods with no motion anywhere.",
            ],
        ),
        "\n".join(lines),
        "events",
    )


# -- code ---------------------------------------------------------------------------------------------


@template("code", "short_code_question")
def short_code_question(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "In {l}, how do I check if a key exists in a map?",
                "What's the {l} equivalent of Python's enumerate?",
                "How do I split a string on commas in {l}?",
                "Why is `0.1 + 0.2 != 0.3` in {l}?",
                "What does `yield` do in Python?",
                "How do I exit vim?",
                "How to reverse a string in {l}?",
                "What's a closure in JavaScript? Show an example.",
                "How do I pretty-print JSON from the command line?",
                "¿Cómo declaro una constante en {l}?",
                "Wie sortiere ich eine Liste absteigend in {l}?",
                "npm install fails with EACCES, how do I fix it?",
                "pip says 'externally-managed-environment', what now?",
            ],
            l=v.lang,
        )
    )


@template("code", "implement_class")
def implement_class(rng: random.Random, v: Vocab) -> Item:
    thing = v.object
    return Item(
        pick(
            rng,
            [
                "Implement a {l} class `{T}Inventory` with add, remove and count methods, with tests.",
                "Design a REST API for managing {t}s: endpoints, payloads and status codes.",
                "Write a CLI tool in {l} that takes a directory and prints the 10 largest files.",
                "Create a {l} module that rate-limits calls to an external {s} API.",
                "Write a script that renames all .jpeg files in a folder to .jpg.",
                "Build a small Flask app with one endpoint that returns the current time as JSON.",
            ],
            l=v.lang,
            T=thing.title().replace(" ", ""),
            t=thing,
            s=v.service,
        )
    )


@template("code", "stacktrace")
def stacktrace(rng: random.Random, v: Vocab) -> Item:
    f = v.object.replace(" ", "_")
    tb = (
        f'Traceback (most recent call last):\n  File "app/{v.service.replace(" ", "_")}.py", line {rng.randint(10, 400)}, in handle\n'
        f"    result = load_{f}(payload['{f}'])\n  File \"app/models.py\", line {rng.randint(10, 200)}, in load_{f}\n"
        f"    return {f.title()}(**data)\n{rng.choice(['TypeError', 'KeyError', 'ValueError', 'AttributeError'])}: "
        f"{rng.choice(['missing 1 required positional argument', 'unexpected keyword argument', 'NoneType has no attribute get'])}"
    )
    return Item(
        pick(
            rng,
            [
                "Got this traceback in production. What's going on and how do I fix it?",
                "Explain this stack trace.",
                "How do I debug this error?",
                "¿Qué significa este error?",
            ],
        ),
        tb,
        "traceback",
    )


@template("code", "data_pipeline_code")
def data_pipeline_code(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with sequential data: about time series, but the ask is code."""
    return Item(
        pick(
            rng,
            [
                "Write a pandas function that resamples a minute-level time series to hourly means and fills gaps.",
                "How do I compute a rolling 7-day average in SQL over a table of daily {s} events?",
                "Write Python that reads sensor CSV files and flags readings more than 3 standard deviations from the mean.",
                "Give me numpy code to forecast the next value of a series with simple exponential smoothing.",
                "Implement a streaming median in {l} for an infinite sequence of integers.",
            ],
            s=v.service,
            l=v.lang,
        )
    )


@template("code", "doc_code", held_out=True)
def doc_code(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with long_document: a long text, but the ask is code."""
    doc = prose(rng, v, log_uniform(rng, 200, 1500))
    return Item(
        pick(
            rng,
            [
                "Write a Python script that counts how often each word appears in a text like the one below.",
                "Write a function that splits a document like this into sentences and returns the longest one.",
                "Write a regex that extracts every percentage from text like this.",
            ],
        ),
        doc,
        "sample text",
    )
