"""recall: exact lookup or copying of a span from the given context (tables, documents, configs, logs,
code, an earlier turn of the conversation)."""

from __future__ import annotations

import json
import random
import string

from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.text import log_uniform, paragraph, prose
from archrouter.evals.labelled.vocab import Vocab

T = "recall"


def _code(rng: random.Random, n: int = 6) -> str:
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def _phone(rng: random.Random) -> str:
    return f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"


@template(T, "kv_table")
def kv_table(rng: random.Random, v: Vocab) -> Item:
    n = log_uniform(rng, 5, 300)
    field = rng.choice(["phone", "room", "locker", "employee id", "badge", "extension"])
    rows = {}
    for _ in range(n):
        key = f"{v.name} {rng.choice(string.ascii_uppercase)}."
        rows[key] = _phone(rng) if field == "phone" else str(rng.randint(100, 99999))
    key = rng.choice(list(rows))
    sep = rng.choice([": ", " | ", " -> ", "\t", ", "])
    ctx = "\n".join(f"{k}{sep}{val}" for k, val in rows.items())
    return Item(
        pick(
            rng,
            bank("recall", "kv_table", "asks"),
            f=field,
            k=key,
        ),
        ctx,
        "directory",
        answer=rows[key],
    )


@template(T, "needle")
def needle(rng: random.Random, v: Vocab) -> Item:
    words = log_uniform(rng, 300, 3500)
    body = prose(rng, v, words).split("\n\n")
    proj = f"{v.colour.title()} {v.animal.title()}"
    code = _code(rng, rng.choice([5, 6, 8]))
    body.insert(rng.randrange(len(body) + 1), f"The access code for project {proj} is {code}.")
    return Item(
        pick(
            rng,
            bank("recall", "needle", "asks"),
            p=proj,
        ),
        "\n\n".join(body),
        "document",
        answer=code,
    )


@template(T, "copy_verbatim")
def copy_verbatim(rng: random.Random, v: Vocab) -> Item:
    txt = paragraph(rng, v) if rng.random() < 0.6 else prose(rng, v, log_uniform(rng, 80, 600))
    return Item(
        pick(rng, bank("recall", "copy_verbatim", "asks")),
        txt,
        "text",
        answer=txt,
    )


@template(T, "quote_sentence")
def quote_sentence(rng: random.Random, v: Vocab) -> Item:
    doc = prose(rng, v, log_uniform(rng, 250, 3000), headings=rng.random() < 0.5)
    sents = [s for s in doc.replace("\n", " ").split(". ") if len(s.split()) > 6]
    target = rng.choice(sents)
    word = max(target.split(), key=len).strip(".,")
    return Item(
        pick(
            rng,
            bank("recall", "quote_sentence", "asks"),
            w=word,
        ),
        doc,
        "document",
    )


def _config(rng: random.Random, v: Vocab) -> tuple[str, dict[str, str]]:
    keys = {
        "timeout_seconds": str(rng.randint(1, 300)),
        "max_connections": str(rng.randint(4, 512)),
        "region": rng.choice(["eu-west-1", "us-east-2", "ap-south-1"]),
        "log_level": rng.choice(["info", "debug", "warn"]),
        "replicas": str(rng.randint(1, 12)),
        "cache_ttl": f"{rng.randint(1, 90)}m",
        "owner": v.name.lower(),
        "db_host": f"db-{rng.randint(1, 9)}.{v.company.lower().replace(' ', '')}.internal",
        "retry_backoff_ms": str(rng.randint(50, 5000)),
        "feature_flag_" + v.animal.replace(" ", "_"): rng.choice(["true", "false"]),
        "port": str(rng.randint(1024, 65000)),
        "api_version": f"v{rng.randint(1, 4)}",
    }
    items = list(keys.items())
    rng.shuffle(items)
    items = items[: rng.randint(5, len(items))]
    fmt = rng.randrange(3)
    if fmt == 0:
        text = f"[{v.service.replace(' ', '_')}]\n" + "\n".join(f"{k} = {val}" for k, val in items)
    elif fmt == 1:
        text = f"{v.service.replace(' ', '_')}:\n" + "\n".join(f"  {k}: {val}" for k, val in items)
    else:
        text = json.dumps({k: val for k, val in items}, indent=2)
    return text, dict(items)


@template(T, "config_value")
def config_value(rng: random.Random, v: Vocab) -> Item:
    text, kv = _config(rng, v)
    k = rng.choice(list(kv))
    return Item(
        pick(
            rng,
            bank("recall", "config_value", "asks"),
            k=k,
        ),
        text,
        "config",
        answer=kv[k],
    )


@template(T, "list_position")
def list_position(rng: random.Random, v: Vocab) -> Item:
    n = log_uniform(rng, 8, 200)
    items = [
        f"{v.colour} {v.object}" if rng.random() < 0.5 else f"{v.product} #{rng.randint(1, 999)}"
        for _ in range(n)
    ]
    i = rng.randrange(n)
    numbered = rng.random() < 0.5
    ctx = "\n".join(f"{j + 1}. {x}" if numbered else f"- {x}" for j, x in enumerate(items))
    return Item(
        pick(
            rng,
            bank("recall", "list_position", "asks"),
            i=i + 1,
            x=items[i - 1] if i else items[0],
        ),
        ctx,
        "list",
        answer=items[i],
    )


def _log_lines(rng: random.Random, v: Vocab, n: int) -> list[str]:
    lines = []
    h, m, s = rng.randint(0, 23), rng.randint(0, 59), 0
    for _ in range(n):
        s += rng.randint(0, 20)
        m, s = m + s // 60, s % 60
        h, m = (h + m // 60) % 24, m % 60
        lvl = rng.choices(["INFO", "WARN", "ERROR", "DEBUG"], [6, 2, 1, 2])[0]
        rid = _code(rng, 10).lower()
        lines.append(
            f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {h:02d}:{m:02d}:{s:02d} {lvl} "
            f"[{v.service}] req={rid} {rng.choice(bank('recall', '_log_lines', 'outcomes'))}"
            f" in {rng.randint(1, 3000)}ms"
        )
    return lines


@template(T, "log_line_lookup")
def log_line_lookup(rng: random.Random, v: Vocab) -> Item:
    lines = _log_lines(rng, v, log_uniform(rng, 10, 250))
    target = rng.choice(lines)
    rid = target.split("req=")[1].split()[0]
    return Item(
        pick(
            rng,
            bank("recall", "log_line_lookup", "asks"),
            r=rid,
        ),
        "\n".join(lines),
        "log",
        answer=target,
    )


@template(T, "records_json")
def records_json(rng: random.Random, v: Vocab) -> Item:
    n = log_uniform(rng, 3, 80)
    recs = [
        {
            "id": 1000 + i,
            "name": v.name,
            "email": f"{v.name.lower()}.{rng.randint(1, 99)}@{v.company.lower().replace(' ', '')}.com",
            "city": v.city,
            "plan": rng.choice(bank("recall", "records_json", "plans")),
        }
        for i in range(n)
    ]
    r = rng.choice(recs)
    field = rng.choice(["email", "city", "plan"])
    return Item(
        pick(
            rng,
            bank("recall", "records_json", "asks"),
            f=field,
            i=r["id"],
        ),
        json.dumps(recs, indent=rng.choice([None, 2])),
        "json",
        answer=str(r[field]),
    )


@template(T, "code_lookup")
def code_lookup(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with code: the request is a lookup in the source, not programming."""
    fns = []
    for _ in range(rng.randint(2, 8)):
        name = rng.choice(bank("recall", "code_lookup", "verbs")) + "_" + v.service.replace(" ", "_")
        params = {p: rng.randint(1, 500) for p in rng.sample(bank("recall", "code_lookup", "params"), 3)}
        sig = ", ".join(f"{p}={d}" for p, d in params.items())
        fns.append(
            (
                name,
                params,
                f'def {name}(client, {sig}):\n    """{v.topic.capitalize()} helper."""\n'
                f"    return client.call('{name}', {', '.join(params)})\n",
            )
        )
    name, params, _ = rng.choice(fns)
    p = rng.choice(list(params))
    return Item(
        pick(
            rng,
            bank("recall", "code_lookup", "asks"),
            p=p,
            n=name,
        ),
        "\n\n".join(f[2] for f in fns),
        "code",
        answer=str(params[p]),
    )


@template(T, "glossary", held_out=True)
def glossary(rng: random.Random, v: Vocab) -> Item:
    terms = {}
    for _ in range(log_uniform(rng, 5, 60)):
        terms[f"{v.colour.title()} {v.object.title()}"] = paragraph(rng, v, rng.randint(1, 2))
    t = rng.choice(list(terms))
    ctx = "\n".join(f"{k}: {d}" for k, d in terms.items())
    return Item(
        pick(
            rng,
            bank("recall", "glossary", "asks"),
            t=t,
        ),
        ctx,
        "glossary",
        answer=terms[t],
    )


@template(T, "multi_doc", held_out=True)
def multi_doc(rng: random.Random, v: Vocab) -> Item:
    docs = [(f"{v.topic.title()} notes ({v.city})", paragraph(rng, v)) for _ in range(rng.randint(2, 8))]
    code = _code(rng, 7)
    i = rng.randrange(len(docs))
    docs[i] = (docs[i][0], docs[i][1] + f" Reference number: {code}.")
    ctx = "\n\n".join(f"[Doc {j + 1}] {title}\n{body}" for j, (title, body) in enumerate(docs))
    return Item(
        pick(
            rng,
            bank("recall", "multi_doc", "asks"),
            c=code,
        ),
        ctx,
        "documents",
        answer=docs[i][0],
    )


@template(T, "conversation_recall", held_out=True)
def conversation_recall(rng: random.Random, v: Vocab) -> Item:
    ref = _code(rng, 6)
    what = rng.choice(bank("recall", "conversation_recall", "references"))
    filler = [
        ("user", f"Also, can you tell me about {v.topic}?"),
        ("assistant", paragraph(rng, v, 3)),
        ("user", f"Thanks. And is {v.city} nice in {v.month}?"),
        ("assistant", paragraph(rng, v, 2)),
    ]
    msgs = [
        {"role": "user", "content": f"Hi, my {what} is {ref} and my name is {v.name}."},
        {"role": "assistant", "content": "Thanks, noted. How can I help?"},
    ]
    for role, c in filler[: 2 * rng.randint(1, 2)]:
        msgs.append({"role": role, "content": c})
    msgs.append(
        {
            "role": "user",
            "content": pick(
                rng,
                bank("recall", "conversation_recall", "asks"),
                w=what,
            ),
        }
    )
    return Item(messages=msgs, answer=ref)
