"""More training templates (none held out): varied record formats (CSV, JSON lines, key=value, markdown
tables, bullet lists) and the near-misses between tasks that the first set confused: event streams and
symbol sequences (sequential_data) vs. lookups (recall) vs. state updates; exact lookups in long prose
(recall) vs. gist questions (long_document); long prose that ends in a request for code (code)."""

from __future__ import annotations

import json
import random

from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.code import _py_snippet
from archrouter.evals.labelled.text import log_uniform, paragraph, prose, sentence
from archrouter.evals.labelled.vocab import Vocab

# -- record formats ------------------------------------------------------------------------------------


def fmt_rows(rng: random.Random, cols: list[str], rows: list[list[object]]) -> str:
    """The same rows as CSV, TSV, JSON lines, a JSON array, key=value lines, a markdown table or bullets."""
    style = rng.randrange(7)
    if style == 0:
        return "\n".join([",".join(cols)] + [",".join(map(str, r)) for r in rows])
    if style == 1:
        return "\n".join(["\t".join(cols)] + ["\t".join(map(str, r)) for r in rows])
    if style == 2:
        return "\n".join(json.dumps(dict(zip(cols, r, strict=False))) for r in rows)
    if style == 3:
        return json.dumps([dict(zip(cols, r, strict=False)) for r in rows], indent=rng.choice([None, 1, 2]))
    if style == 4:
        return "\n".join(" ".join(f"{c}={x}" for c, x in zip(cols, r, strict=False)) for r in rows)
    if style == 5:
        head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
        return head + "\n" + "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows)
    return "\n".join("- " + ", ".join(f"{c}: {x}" for c, x in zip(cols, r, strict=False)) for r in rows)


def _ts(rng: random.Random, n: int) -> list[str]:
    t = rng.randint(0, 80000)
    d = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    out = []
    step = rng.choice([1, 5, 15, 60, 300])
    for _ in range(n):
        t += rng.randint(1, step)
        out.append(
            rng.choice(
                [f"{d}T{t // 3600 % 24:02d}:{t // 60 % 60:02d}:{t % 60:02d}Z", f"{t // 60 % 60:02d}:{t % 60:02d}"]
            )
            if rng.random() < 0.9
            else str(1700000000 + t)
        )
    return out


def _seq_n(rng: random.Random) -> int:
    return log_uniform(rng, 10, 400)


# -- sequential_data -----------------------------------------------------------------------------------

SD = "sequential_data"


@template(SD, "event_stream")
def event_stream(rng: random.Random, v: Vocab) -> Item:
    n = _seq_n(rng)
    kinds = rng.sample(
        bank("more", "event_stream", "event_kinds"),
        rng.randint(3, 7),
    )
    actors = (
        v.many("name", rng.randint(1, 5)) if rng.random() < 0.5 else [f"dev-{i:02d}" for i in range(rng.randint(1, 9))]
    )
    rows = [[t, rng.choice(actors), rng.choice(kinds), rng.randint(0, 999)] for t in _ts(rng, n)]
    return Item(
        pick(
            rng,
            bank("more", "event_stream", "asks"),
            k=rng.choice(kinds),
        ),
        fmt_rows(rng, ["ts", rng.choice(bank("more", "event_stream", "actor_columns")), "event", "value"], rows),
        rng.choice(bank("more", "event_stream", "labels")),
    )


@template(SD, "token_sequence")
def token_sequence(rng: random.Random, v: Vocab) -> Item:
    alphabet = rng.choice(bank("more", "token_sequence", "alphabets"))
    period = rng.randint(2, 7)
    motif = [rng.choice(alphabet) for _ in range(period)]
    n = log_uniform(rng, 12, 300)
    seq = [motif[i % period] if rng.random() > 0.08 else rng.choice(alphabet) for i in range(n)]
    sep = (
        rng.choice([" ", ", ", "", " -> ", ";", "\n"])
        if all(len(a) == 1 for a in alphabet)
        else rng.choice([" ", ", ", " -> "])
    )
    return Item(
        pick(
            rng,
            bank("more", "token_sequence", "asks"),
            k=rng.randint(3, 20),
            a=rng.choice(alphabet),
        ),
        sep.join(seq),
        rng.choice(bank("more", "token_sequence", "labels")),
    )


@template(SD, "machine_telemetry")
def machine_telemetry(rng: random.Random, v: Vocab) -> Item:
    n = _seq_n(rng)
    metrics = rng.sample(
        bank("more", "machine_telemetry", "metrics"),
        rng.randint(1, 4),
    )
    base = {m: rng.uniform(1, 900) for m in metrics}
    rows = []
    for i, t in enumerate(_ts(rng, n)):
        drift = 1 + (i / n) * rng.uniform(-0.2, 0.5)
        rows.append([t] + [round(base[m] * drift * rng.uniform(0.95, 1.05), 2) for m in metrics])
    return Item(
        pick(
            rng,
            bank("more", "machine_telemetry", "asks"),
            m=rng.choice(metrics),
            x=rng.randint(10, 999),
        ),
        fmt_rows(rng, ["time"] + metrics, rows),
        rng.choice(bank("more", "machine_telemetry", "labels")),
    )


@template(SD, "price_series")
def price_series(rng: random.Random, v: Vocab) -> Item:
    n = _seq_n(rng)
    p = rng.uniform(5, 500)
    rows = []
    for i in range(n):
        o = p
        p = max(0.5, p * (1 + rng.gauss(0.0005, 0.02)))
        rows.append(
            [
                f"2024-{1 + i // 28 % 12:02d}-{1 + i % 28:02d}",
                round(o, 2),
                round(max(o, p) * 1.01, 2),
                round(min(o, p) * 0.99, 2),
                round(p, 2),
                rng.randint(1000, 900000),
            ]
        )
    return Item(
        pick(
            rng,
            bank("more", "price_series", "asks"),
            k=rng.randint(2, 10),
        ),
        fmt_rows(rng, ["date", "open", "high", "low", "close", "volume"], rows),
        rng.choice(bank("more", "price_series", "labels")),
    )


@template(SD, "counts_per_period")
def counts_per_period(rng: random.Random, v: Vocab) -> Item:
    n = log_uniform(rng, 8, 120)
    unit = rng.choice(bank("more", "counts_per_period", "units"))
    what = rng.choice(bank("more", "counts_per_period", "counted"))
    xs = [max(0, int(rng.gauss(100, 30) + 10 * (i % 7 == 5))) for i in range(n)]
    style = rng.randrange(3)
    if style == 0:
        ctx = "\n".join(f"{unit} {i + 1}: {x}" for i, x in enumerate(xs))
    elif style == 1:
        ctx = fmt_rows(rng, [unit, what.replace(" ", "_")], [[i + 1, x] for i, x in enumerate(xs)])
    else:
        ctx = " ".join(map(str, xs))
    return Item(
        pick(
            rng,
            bank("more", "counts_per_period", "asks"),
            w=what,
            u=unit,
        ),
        ctx,
        "counts",
    )


@template(SD, "access_log_pattern")
def access_log_pattern(rng: random.Random, v: Vocab) -> Item:
    n = _seq_n(rng)
    paths = [
        "/",
        "/login",
        "/api/v1/items",
        "/cart",
        "/checkout",
        "/static/app.js",
        "/search?q=" + v.object.replace(" ", "+"),
        "/health",
        "/api/v2/users/" + str(rng.randint(1, 999)),
    ]
    ips = [f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}" for _ in range(rng.randint(2, 8))]
    lines = [
        f'{rng.choice(ips)} - - [{t}] "{rng.choice(["GET", "POST"])} {rng.choice(paths)} HTTP/1.1" '
        f"{rng.choices([200, 301, 404, 500, 503], [20, 2, 3, 1, 1])[0]} {rng.randint(100, 90000)}"
        for t in _ts(rng, n)
    ]
    return Item(
        pick(rng, bank("more", "access_log_pattern", "asks")),
        "\n".join(lines),
        "access log",
    )


@template(SD, "short_inline_series")
def short_inline_series(rng: random.Random, v: Vocab) -> Item:
    n = rng.randint(5, 16)
    xs = (
        [rng.randint(0, 99) for _ in range(n)]
        if rng.random() < 0.5
        else [round(rng.uniform(0, 50), 1) for _ in range(n)]
    )
    return Item(
        pick(
            rng,
            bank("more", "short_inline_series", "asks"),
            w=rng.choice(bank("more", "short_inline_series", "series")),
            n=n,
            xs=", ".join(map(str, xs)),
        ),
        None,
    )


@template(SD, "genome_or_signal")
def genome_or_signal(rng: random.Random, v: Vocab) -> Item:
    if rng.random() < 0.5:
        n = log_uniform(rng, 40, 2000)
        s = "".join(rng.choice("ACGT") for _ in range(n))
        s = "\n".join(s[i : i + 60] for i in range(0, len(s), 60))
        instr = rng.choice(bank("more", "genome_or_signal", "dna_asks"))
        return Item(instr, s, "sequence")
    n = log_uniform(rng, 30, 500)
    xs = [round(rng.gauss(0, 1) + (3 if i % rng.randint(10, 40) == 0 else 0), 3) for i in range(n)]
    instr = rng.choice(bank("more", "genome_or_signal", "signal_asks"))
    return Item(instr, rng.choice([" ", ", ", "\n"]).join(map(str, xs)), "signal")


# -- recall --------------------------------------------------------------------------------------------

RC = "recall"


def _fact(rng: random.Random, v: Vocab) -> tuple[str, str, str]:
    """(sentence, question, answer) with a precise detail to look up."""
    k = rng.randrange(5)
    if k == 0:
        who, num = v.name, f"{rng.randint(100, 99999)}"
        return f"{who}'s badge number is {num}.", f"What is {who}'s badge number?", num
    if k == 1:
        c, d = v.city, f"{rng.randint(1, 28)} {v.month}"
        return f"The {c} office reopens on {d}.", f"When does the {c} office reopen?", d
    if k == 2:
        p, price = v.product, f"${rng.randint(5, 900)}.{rng.randint(0, 99):02d}"
        return f"The list price of the {p} was set to {price}.", f"What was the list price of the {p}?", price
    if k == 3:
        code = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8))
        return f"Use access code {code} for the staging door.", "What is the staging door access code?", code
    who, job = v.name, v.job
    return f"{who} was appointed {job} last spring.", f"Who was appointed {job}?", who


@template(RC, "doc_exact_detail")
def doc_exact_detail(rng: random.Random, v: Vocab) -> Item:
    fact, q, ans = _fact(rng, v)
    doc = prose(rng, v, log_uniform(rng, 200, 3500), headings=rng.random() < 0.5).split("\n\n")
    doc.insert(rng.randrange(len(doc) + 1), paragraph(rng, v, 2) + " " + fact + " " + sentence(rng, v))
    return Item(
        pick(
            rng,
            bank("more", "doc_exact_detail", "asks"),
            q=q,
            ql=q[0].lower() + q[1:],
        ),
        "\n\n".join(doc),
        rng.choice(bank("more", "doc_exact_detail", "labels")),
        answer=ans,
    )


@template(RC, "copy_section")
def copy_section(rng: random.Random, v: Vocab) -> Item:
    n = rng.randint(3, 9)
    secs = [(f"{i + 1}. {v.topic.title()}", paragraph(rng, v)) for i in range(n)]
    k = rng.randrange(n)
    doc = "\n\n".join(f"{h}\n{p}" for h, p in secs)
    return Item(
        pick(
            rng,
            bank("more", "copy_section", "asks"),
            k=k + 1,
            h=secs[k][0],
        ),
        doc,
        "document",
        answer=secs[k][1],
    )


@template(RC, "record_lookup_formats")
def record_lookup_formats(rng: random.Random, v: Vocab) -> Item:
    n = log_uniform(rng, 5, 200)
    names = [v.name + " " + rng.choice("ABCDEFGHKLMNPRST") + "." for _ in range(n)]
    rows = [[f"U{rng.randint(1000, 99999)}", nm, v.city, f"{rng.randint(1, 99)}", v.job] for nm in names]
    r = rng.choice(rows)
    return Item(
        pick(
            rng,
            bank("more", "record_lookup_formats", "asks"),
            nm=r[1],
            id=r[0],
        ),
        fmt_rows(rng, ["id", "name", "city", "age", "job"], rows),
        rng.choice(bank("more", "record_lookup_formats", "labels")),
        answer=r[0],
    )


@template(RC, "event_lookup")
def event_lookup(rng: random.Random, v: Vocab) -> Item:
    """A lookup in an event list: a near-miss of the sequential_data event streams."""
    n = log_uniform(rng, 10, 300)
    ts = _ts(rng, n)
    rows = [
        [t, f"ord-{rng.randint(10000, 99999)}", rng.choice(bank("more", "event_lookup", "statuses")), v.name]
        for t in ts
    ]
    r = rng.choice(rows)
    return Item(
        pick(
            rng,
            bank("more", "event_lookup", "asks"),
            o=r[1],
            s=r[2],
            nm=r[3],
            t=r[0],
        ),
        fmt_rows(rng, ["ts", "order", "status", "agent"], rows),
        rng.choice(bank("more", "event_lookup", "labels")),
        answer=r[0],
    )


@template(RC, "series_value_lookup")
def series_value_lookup(rng: random.Random, v: Vocab) -> Item:
    """Reading one value off a series: recall, not a series analysis."""
    n = log_uniform(rng, 10, 300)
    ts = _ts(rng, n)
    rows = [[t, round(rng.uniform(0, 500), 2)] for t in ts]
    r = rng.choice(rows)
    return Item(
        pick(
            rng,
            bank("more", "series_value_lookup", "asks"),
            t=r[0],
            x=r[1],
        ),
        fmt_rows(rng, ["time", rng.choice(bank("more", "series_value_lookup", "value_columns"))], rows),
        "data",
        answer=str(r[1]),
    )


@template(RC, "contract_clause_lookup")
def contract_clause_lookup(rng: random.Random, v: Vocab) -> Item:
    n = rng.randint(6, 30)
    clauses = []
    for i in range(n):
        clauses.append(f"{i + 1}.{rng.randint(1, 9)} {paragraph(rng, v, rng.randint(1, 3))}")
    k = rng.randrange(n)
    days = rng.randint(5, 120)
    clauses[k] = (
        f"{k + 1}.{rng.randint(1, 9)} Either party may terminate with {days} days' written notice. "
        + clauses[k].split(" ", 1)[1]
    )
    return Item(
        pick(rng, bank("more", "contract_clause_lookup", "asks")),
        "\n".join(clauses),
        rng.choice(bank("more", "contract_clause_lookup", "labels")),
        answer=str(days),
    )


@template(RC, "chat_history_lookup")
def chat_history_lookup(rng: random.Random, v: Vocab) -> Item:
    fact, q, ans = _fact(rng, v)
    msgs = []
    k = rng.randint(1, 6)
    pos = rng.randrange(k)
    for i in range(k):
        msgs.append(
            {"role": "user", "content": (fact + " " if i == pos else "") + paragraph(rng, v, rng.randint(1, 4))}
        )
        msgs.append({"role": "assistant", "content": paragraph(rng, v, rng.randint(1, 3))})
    msgs.append(
        {
            "role": "user",
            "content": pick(rng, bank("more", "chat_history_lookup", "asks"), q=q),
        }
    )
    return Item(messages=msgs, answer=ans)


# -- long_document -------------------------------------------------------------------------------------

LD = "long_document"


@template(LD, "doc_gist_questions")
def doc_gist_questions(rng: random.Random, v: Vocab) -> Item:
    doc = prose(rng, v, log_uniform(rng, 400, 4500), headings=rng.random() < 0.5)
    return Item(
        pick(rng, bank("more", "doc_gist_questions", "asks")),
        doc,
        rng.choice(bank("more", "doc_gist_questions", "labels")),
    )


@template(LD, "multi_doc_synthesis")
def multi_doc_synthesis(rng: random.Random, v: Vocab) -> Item:
    k = rng.randint(2, 5)
    docs = [f"Document {i + 1}: {v.topic.title()}\n{prose(rng, v, log_uniform(rng, 150, 1200))}" for i in range(k)]
    return Item(
        pick(
            rng,
            bank("more", "multi_doc_synthesis", "asks"),
            k=k,
        ),
        "\n\n".join(docs),
        "documents",
    )


@template(LD, "doc_with_table_summary")
def doc_with_table_summary(rng: random.Random, v: Vocab) -> Item:
    parts = [prose(rng, v, log_uniform(rng, 200, 1500))]
    rows = [[v.city, rng.randint(10, 999), f"{rng.randint(-20, 40)}%"] for _ in range(rng.randint(3, 8))]
    parts.insert(rng.randint(0, 1), fmt_rows(rng, ["region", "revenue", "growth"], rows))
    parts.append(prose(rng, v, log_uniform(rng, 200, 1500)))
    return Item(
        pick(rng, bank("more", "doc_with_table_summary", "asks")),
        "\n\n".join(parts),
        "report",
    )


@template(LD, "email_thread_gist")
def email_thread_gist(rng: random.Random, v: Vocab) -> Item:
    people = v.many("name", rng.randint(2, 5))
    mails = [
        f"From: {rng.choice(people)}\nSubject: Re: {v.topic}\n\n{prose(rng, v, log_uniform(rng, 60, 400))}"
        for _ in range(rng.randint(3, 10))
    ]
    return Item(
        pick(rng, bank("more", "email_thread_gist", "asks")),
        "\n\n".join(mails),
        "thread",
    )


# -- code ----------------------------------------------------------------------------------------------

CD = "code"


@template(CD, "prose_then_code")
def prose_then_code(rng: random.Random, v: Vocab) -> Item:
    """A long design note or issue, ending in a request to write code: code, not long_document."""
    note = prose(rng, v, log_uniform(rng, 150, 2500), headings=rng.random() < 0.4)
    lang = rng.choice(bank("more", "prose_then_code", "languages"))
    return Item(
        pick(
            rng,
            bank("more", "prose_then_code", "asks"),
            l=lang,
            f=rng.choice(bank("more", "prose_then_code", "function_names")),
        ),
        note,
        rng.choice(bank("more", "prose_then_code", "labels")),
    )


@template(CD, "prose_with_snippet_fix")
def prose_with_snippet_fix(rng: random.Random, v: Vocab) -> Item:
    story = prose(rng, v, log_uniform(rng, 80, 900))
    code = _py_snippet(rng, v)
    return Item(
        pick(
            rng,
            bank("more", "prose_with_snippet_fix", "asks"),
            l=rng.choice(bank("more", "prose_with_snippet_fix", "languages")),
        ),
        f"{story}\n\n```python\n{code}\n```",
        "ticket",
    )


@template(CD, "data_to_code")
def data_to_code(rng: random.Random, v: Vocab) -> Item:
    """Data shown only as an example of input for a program to write: code, not sequential_data/recall."""
    rows = [[t, round(rng.uniform(0, 100), 2), v.city] for t in _ts(rng, rng.randint(3, 12))]
    return Item(
        pick(rng, bank("more", "data_to_code", "asks")),
        fmt_rows(rng, ["ts", "value", "city"], rows),
        "sample",
    )


@template(CD, "code_howto_short")
def code_howto_short(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("more", "code_howto_short", "asks"),
            l=rng.choice(bank("more", "code_howto_short", "languages")),
            o=v.object,
            k=rng.randint(3, 20),
        ),
        None,
    )


# -- state_tracking in record formats (near-misses of the event streams above) -------------------------

ST = "state_tracking"


@template(ST, "update_records")
def update_records(rng: random.Random, v: Vocab) -> Item:
    """State updates written as records: the answer is the state after all of them, not a statistic."""
    k = rng.randrange(4)
    n = log_uniform(rng, 5, 120)
    ts = _ts(rng, n)
    if k == 0:
        accts = v.many("name", rng.randint(1, 4))
        bal = dict.fromkeys(accts, 0)
        rows = []
        for t in ts:
            a, op, x = rng.choice(accts), rng.choice(["deposit", "withdraw", "set"]), rng.randint(1, 500)
            bal[a] = bal[a] + x if op == "deposit" else bal[a] - x if op == "withdraw" else x
            rows.append([t, a, op, x])
        a = rng.choice(accts)
        q = pick(rng, bank("more", "update_records", "balance_asks"), a=a)
        return Item(q, fmt_rows(rng, ["ts", "account", "op", "amount"], rows), "ledger", state=True, answer=str(bal[a]))
    if k == 1:
        keys = rng.sample(bank("more", "update_records", "state_keys"), rng.randint(2, 5))
        st: dict[str, object] = {}
        rows = []
        for t in ts:
            key = rng.choice(keys)
            val = rng.choice([rng.randint(0, 9), v.colour, v.name, "on", "off"])
            st[key] = val
            rows.append([t, "SET", key, val])
        key = rng.choice(keys)
        q = pick(rng, bank("more", "update_records", "change_asks"), key=key)
        return Item(
            q, fmt_rows(rng, ["ts", "op", "key", "value"], rows), "changes", state=True, answer=str(st.get(key))
        )
    if k == 2:
        stack: list[int] = []
        rows = []
        for t in ts:
            if stack and rng.random() < 0.4:
                rows.append([t, "pop", ""])
                stack.pop()
            else:
                x = rng.randint(0, 99)
                stack.append(x)
                rows.append([t, "push", x])
        q = rng.choice(bank("more", "update_records", "stack_asks"))
        return Item(
            q,
            fmt_rows(rng, ["ts", "op", "arg"], rows),
            "operations",
            state=True,
            answer=str(stack[-1] if stack else None),
        )
    rooms = v.many("place", rng.randint(2, 5))
    people = v.many("name", rng.randint(1, 4))
    where = {p: rng.choice(rooms) for p in people}
    rows = [[ts[0], p, "enters", where[p]] for p in people]
    for t in ts[1:]:
        p, r = rng.choice(people), rng.choice(rooms)
        where[p] = r
        rows.append([t, p, rng.choice(bank("more", "update_records", "move_verbs")), r])
    p = rng.choice(people)
    q = pick(rng, bank("more", "update_records", "room_asks"), p=p)
    return Item(q, fmt_rows(rng, ["ts", "who", "action", "where"], rows), "badge log", state=True, answer=where[p])


@template(ST, "register_machine")
def register_machine(rng: random.Random, v: Vocab) -> Item:
    regs = rng.sample(list("abcdxyzrpq"), rng.randint(2, 4))
    val = {r: rng.randint(0, 9) for r in regs}
    lines = [f"{r} = {x}" for r, x in val.items()]
    for _ in range(log_uniform(rng, 4, 80)):
        r, s = rng.choice(regs), rng.choice(regs)
        op = rng.choice(["+=", "-=", "=", "swap", "*= 2"])
        if op == "swap":
            val[r], val[s] = val[s], val[r]
            lines.append(rng.choice([f"swap {r} {s}", f"{r}, {s} = {s}, {r}"]))
        elif op == "*= 2":
            val[r] *= 2
            lines.append(f"{r} *= 2")
        elif op == "=":
            val[r] = val[s]
            lines.append(f"{r} = {s}")
        else:
            x = rng.randint(1, 9)
            val[r] = val[r] + x if op == "+=" else val[r] - x
            lines.append(f"{r} {op} {x}")
    r = rng.choice(regs)
    return Item(
        pick(
            rng,
            bank("more", "register_machine", "asks"),
            r=r,
        ),
        rng.choice(["\n", "; "]).join(lines),
        "program",
        state=True,
        answer=str(val[r]),
    )


# -- more recall near-misses in long prose --------------------------------------------------------------


@template(RC, "extract_all_mentions")
def extract_all_mentions(rng: random.Random, v: Vocab) -> Item:
    doc = prose(rng, v, log_uniform(rng, 200, 3000), headings=rng.random() < 0.3)
    return Item(
        pick(
            rng,
            bank("more", "extract_all_mentions", "asks"),
            c=v.city,
            n=v.name,
        ),
        doc,
        rng.choice(bank("more", "extract_all_mentions", "labels")),
    )


@template(RC, "needle_in_notes")
def needle_in_notes(rng: random.Random, v: Vocab) -> Item:
    fact, q, ans = _fact(rng, v)
    notes = [f"- {sentence(rng, v)}" for _ in range(log_uniform(rng, 10, 150))]
    notes.insert(rng.randrange(len(notes) + 1), f"- {fact}")
    return Item(
        pick(
            rng,
            bank("more", "needle_in_notes", "asks"),
            q=q,
        ),
        "\n".join(notes),
        rng.choice(bank("more", "needle_in_notes", "labels")),
        answer=ans,
    )


# -- more code with prose -------------------------------------------------------------------------------


@template(CD, "explain_or_review_code")
def explain_or_review_code(rng: random.Random, v: Vocab) -> Item:
    code = _py_snippet(rng, v)
    return Item(
        pick(rng, bank("more", "explain_or_review_code", "asks")),
        code,
        "code",
    )


@template(CD, "cli_and_config")
def cli_and_config(rng: random.Random, v: Vocab) -> Item:
    svc = v.service.replace(" ", "-")
    return Item(
        pick(
            rng,
            bank("more", "cli_and_config", "asks"),
            s=svc,
            k=rng.randint(2, 12),
            p=rng.randint(3000, 9999),
            l=rng.choice(bank("more", "cli_and_config", "languages")),
        ),
        None,
    )


# -- third batch: lookups across several sources, API docs to code --------------------------------------


@template(RC, "source_attribution")
def source_attribution(rng: random.Random, v: Vocab) -> Item:
    fact, q, ans = _fact(rng, v)
    k = rng.randint(2, 6)
    srcs = [paragraph(rng, v, rng.randint(3, 12)) for _ in range(k)]
    j = rng.randrange(k)
    srcs[j] += " " + fact
    kind = rng.choice(bank("more", "source_attribution", "source_kinds"))
    body = "\n\n".join(f"[{kind} {i + 1}]\n{s}" for i, s in enumerate(srcs))
    return Item(
        pick(
            rng,
            bank("more", "source_attribution", "asks"),
            q=q,
            k=kind.lower(),
        ),
        body,
        "sources",
        answer=ans,
    )


@template(RC, "term_definition_lookup")
def term_definition_lookup(rng: random.Random, v: Vocab) -> Item:
    terms = [f"{v.colour.title()} {v.object.title()}" for _ in range(rng.randint(5, 40))]
    terms = list(dict.fromkeys(terms))
    defs = [f"{t}{rng.choice([': ', ' - ', ' — ', ' means '])}{paragraph(rng, v, rng.randint(1, 2))}" for t in terms]
    t = rng.choice(terms)
    return Item(
        pick(
            rng,
            bank("more", "term_definition_lookup", "asks"),
            t=t,
        ),
        "\n".join(defs),
        rng.choice(bank("more", "term_definition_lookup", "labels")),
    )


@template(CD, "api_docs_to_client")
def api_docs_to_client(rng: random.Random, v: Vocab) -> Item:
    svc = v.service.replace(" ", "-")
    eps = []
    for _ in range(rng.randint(2, 8)):
        m, path = rng.choice(["GET", "POST", "PUT", "DELETE"]), f"/v1/{v.object.replace(' ', '-')}s"
        eps.append(f"{m} {path}{rng.choice(['', '/{id}'])}\n{paragraph(rng, v, rng.randint(1, 4))}")
    doc = f"{svc} API\n\n{prose(rng, v, log_uniform(rng, 60, 600))}\n\n" + "\n\n".join(eps)
    return Item(
        pick(
            rng,
            bank("more", "api_docs_to_client", "asks"),
            l=rng.choice(bank("more", "api_docs_to_client", "languages")),
        ),
        doc,
        "API docs",
    )


@template(CD, "code_to_docs")
def code_to_docs(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(rng, bank("more", "code_to_docs", "asks")),
        _py_snippet(rng, v),
        "code",
    )
