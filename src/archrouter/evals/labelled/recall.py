"""recall: exact lookup or copying of a span from the given context (tables, documents, configs, logs,
code, an earlier turn of the conversation)."""

from __future__ import annotations

import json
import random
import string

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
            [
                "What is the {f} of {k}?",
                "Look up {k} in the list below and give me their {f}.",
                "{k} - {f}? Answer with the value only.",
                "Find {k}'s {f} in this directory.",
                "¿Cuál es el {f} de {k}? Responde solo con el valor.",
                "Quel est le {f} de {k} dans cette liste ?",
            ],
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
            [
                "What is the access code for project {p}? Reply with the code only.",
                "Somewhere in this text there's an access code for {p}. What is it exactly?",
                "Find the access code for project {p} in the document.",
                "What code does the text give for {p}? Copy it exactly.",
                "¿Cuál es el código de acceso del proyecto {p}?",
                "Wie lautet der Zugangscode für Projekt {p}?",
            ],
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
        pick(
            rng,
            [
                "Repeat the following text exactly, word for word.",
                "Copy this paragraph verbatim, don't change anything.",
                "Echo back the text below exactly as written.",
                "Please reproduce the passage below character for character.",
                "Copia el siguiente texto exactamente, sin cambiar nada.",
                "Recopie ce texte à l'identique.",
                "Output the text between the markers unchanged.",
            ],
        ),
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
            [
                "Quote the exact sentence in the document that contains the word '{w}'.",
                'Which sentence mentions "{w}"? Copy it exactly, no paraphrasing.',
                "Give me, verbatim, the first sentence where '{w}' appears.",
                "Find the line with '{w}' and paste it exactly as it is written.",
                "Cita textualmente la frase que contiene '{w}'.",
            ],
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
            [
                "What is {k} set to in this config?",
                "In the file below, what's the value of `{k}`? Just the value.",
                "Tell me the {k} from this configuration, exactly as written.",
                "{k}=?",
                "Quel est la valeur de {k} dans ce fichier ?",
            ],
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
            [
                "What is item number {i} in the list?",
                "Give me the {i}th entry of this list exactly.",
                "Which item comes right after '{x}'?",
                "Copy the entry at position {i}.",
                "¿Qué elemento está en la posición {i}?",
            ],
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
            f"[{v.service}] req={rid} {rng.choice(['handled', 'timeout', 'retrying', 'ok', 'cache miss'])}"
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
            [
                "Which log line contains request id {r}? Copy the whole line exactly.",
                "Find req={r} in these logs and paste that line.",
                "grep for {r} in this log and show me the matching line",
                "Show me, unchanged, the entry for request {r}.",
                "Copia la línea del log con la petición {r}.",
            ],
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
            "plan": rng.choice(["free", "pro", "team"]),
        }
        for i in range(n)
    ]
    r = rng.choice(recs)
    field = rng.choice(["email", "city", "plan"])
    return Item(
        pick(
            rng,
            [
                "What is the {f} of the user with id {i}?",
                "From this JSON, give me user {i}'s {f}.",
                "Look up id {i} and return its {f} field exactly.",
                "Dame el campo {f} del registro {i}.",
            ],
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
        name = (
            rng.choice(["connect", "fetch", "retry", "parse", "upload", "render", "sync", "notify"])
            + "_"
            + v.service.replace(" ", "_")
        )
        params = {
            p: rng.randint(1, 500)
            for p in rng.sample(
                ["timeout", "retries", "batch_size", "limit", "port", "backoff", "max_items"], 3
            )
        }
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
            [
                "What's the default value of `{p}` in `{n}`? Just the number.",
                "In this file, what default does {n} use for {p}?",
                "Copy the signature line of {n} exactly.",
                "Which default is given to {p} in the function {n}? Quote it.",
            ],
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
            [
                "What definition does the glossary give for '{t}'? Quote it exactly.",
                "Copy the glossary entry for {t}.",
                'Look up "{t}" in the glossary and give me the exact text.',
                "Qual é a definição de {t} no glossário? Copie exatamente.",
            ],
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
            [
                "Which document contains reference number {c}? Give its title exactly.",
                "Find the doc that mentions {c} and copy its title.",
                "Where does {c} appear? Title only, verbatim.",
            ],
            c=code,
        ),
        ctx,
        "documents",
        answer=docs[i][0],
    )


@template(T, "conversation_recall", held_out=True)
def conversation_recall(rng: random.Random, v: Vocab) -> Item:
    ref = _code(rng, 6)
    what = rng.choice(["booking reference", "order number", "ticket id", "confirmation code"])
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
                [
                    "What was my {w} again? Exactly as I typed it.",
                    "Remind me of the {w} I gave you at the start.",
                    "Can you repeat my {w}?",
                ],
                w=what,
            ),
        }
    )
    return Item(messages=msgs, answer=ref)
