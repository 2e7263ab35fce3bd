"""code: write, fix, explain, review, translate or trace code (SQL, regex, shell included). Traces of
code with loops also need state tracking, so they carry state_tracking=true."""

from __future__ import annotations

import random

from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.vocab import Vocab

T = "code"

_SPECS = bank("code", "specs")


def _spec(rng: random.Random, v: Vocab) -> str:
    return rng.choice(_SPECS).format(k=rng.randint(2, 10), o=v.object, c=v.colour)


def _ident(rng: random.Random, v: Vocab) -> str:
    return (
        rng.choice(bank("code", "_ident", "verbs"))
        + "_"
        + v.object.replace(" ", "_")
        + rng.choice(bank("code", "_ident", "suffixes"))
    )


def _py_snippet(rng: random.Random, v: Vocab) -> str:
    """One Python function or class; sometimes a small module of several."""
    if rng.random() < 0.25:
        head = rng.choice(bank("code", "_py_snippet", "module_heads"))
        return head + "\n\n".join(_one_py(rng, v) for _ in range(rng.randint(2, 7)))
    return _one_py(rng, v)


def _one_py(rng: random.Random, v: Vocab) -> str:
    f, x, n = _ident(rng, v), rng.choice(bank("code", "_one_py", "arg_names")), rng.randint(2, 9)
    # the class names of two snippets are drawn before the choice, whichever snippet it picks (the sets
    # were generated that way, so the order of these draws is part of the data)
    store = v.object.title().replace(" ", "")
    colour, thing = v.colour.title(), v.object.title().replace(" ", "")
    return pick(rng, bank("code", "_one_py", "snippets"), f=f, x=x, n=n, store=store, colour=colour, thing=thing)


def _other_snippet(rng: random.Random, v: Vocab) -> tuple[str, str]:
    """(language, snippet) in a language other than Python."""
    f = _ident(rng, v)
    camel = "".join(p.title() for p in f.split("_"))
    # the snippets' numbers are drawn before the choice, whichever snippet it picks (as for _one_py)
    js_min, rs_factor, sql_month = rng.randint(1, 50), rng.randint(2, 5), rng.randint(1, 9)
    s = rng.choice(bank("code", "_other_snippet", "snippets"))
    lower_camel = camel[0].lower() + camel[1:]
    code = s["code"].format(
        f=f, camel=camel, lower_camel=lower_camel, js_min=js_min, rs_factor=rs_factor, sql_month=sql_month
    )
    return s["lang"], code


@template(T, "write_function")
def write_function(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("code", "write_function", "asks"),
            l=v.lang,
            s=_spec(rng, v),
            s_es=rng.choice(bank("code", "write_function", "specs_es")),
            s_fr=rng.choice(bank("code", "write_function", "specs_fr")),
        )
    )


_ERRORS = bank("code", "errors")


@template(T, "fix_bug")
def fix_bug(rng: random.Random, v: Vocab) -> Item:
    code = _py_snippet(rng, v) if rng.random() < 0.6 else _other_snippet(rng, v)[1]
    return Item(
        pick(
            rng,
            bank("code", "fix_bug", "asks"),
            e=rng.choice(_ERRORS),
        ),
        code,
        "code",
    )


@template(T, "explain_code")
def explain_code(rng: random.Random, v: Vocab) -> Item:
    code = _py_snippet(rng, v) if rng.random() < 0.5 else _other_snippet(rng, v)[1]
    return Item(
        pick(rng, bank("code", "explain_code", "asks")),
        code,
        "code",
    )


@template(T, "sql_query")
def sql_query(rng: random.Random, v: Vocab) -> Item:
    t1, t2 = rng.choice(bank("code", "sql_query", "tables"))
    return Item(
        pick(
            rng,
            bank("code", "sql_query", "asks"),
            k=rng.randint(3, 20),
            a=t1,
            b=t2,
            a1=t1.rstrip("s"),
        )
    )


@template(T, "regex")
def regex(rng: random.Random, v: Vocab) -> Item:
    what = rng.choice(bank("code", "regex", "targets"))
    return Item(
        pick(
            rng,
            bank("code", "regex", "asks"),
            w=what,
        )
    )


@template(T, "refactor")
def refactor(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(rng, bank("code", "refactor", "asks")),
        _py_snippet(rng, v),
        "code",
    )


@template(T, "translate_code")
def translate_code(rng: random.Random, v: Vocab) -> Item:
    src_lang, code = _other_snippet(rng, v) if rng.random() < 0.5 else ("Python", _py_snippet(rng, v))
    return Item(
        pick(
            rng,
            bank("code", "translate_code", "asks"),
            s=src_lang,
            d=v.lang,
        ),
        code,
        "code",
    )


@template(T, "unit_tests")
def unit_tests(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(rng, bank("code", "unit_tests", "asks")),
        _py_snippet(rng, v),
        "code",
    )


def _trace(rng: random.Random) -> tuple[str, str]:
    """A small Python loop and its printed output (computed by running the same logic here)."""
    n, k, a0 = rng.randint(3, 12), rng.randint(2, 5), rng.randint(0, 9)
    kind = rng.randrange(4)
    if kind == 0:
        code = (
            f"x = {a0}\nfor i in range({n}):\n    if i % {k} == 0:\n        x += i\n"
            "    else:\n        x -= 1\nprint(x)\n"
        )
        x = a0
        for i in range(n):
            x = x + i if i % k == 0 else x - 1
        return code, str(x)
    if kind == 1:
        code = f"a, b = {a0}, 1\nfor _ in range({n}):\n    a, b = b, (a + b) % {k + 7}\nprint(a, b)\n"
        a, b = a0, 1
        for _ in range(n):
            a, b = b, (a + b) % (k + 7)
        return code, f"{a} {b}"
    if kind == 2:
        code = (
            f"s = []\nfor i in range({n}):\n    if i % {k}:\n        s.append(i)\n"
            "    elif s:\n        s.pop()\nprint(s)\n"
        )
        s: list[int] = []
        for i in range(n):
            if i % k:
                s.append(i)
            elif s:
                s.pop()
        return code, str(s)
    bits = "".join(rng.choice("ab") for _ in range(n))
    code = f"flag = False\nfor c in '{bits}':\n    if c == 'a':\n        flag = not flag\nprint(flag)\n"
    seq = code.split("'")[1]
    return code, str(seq.count("a") % 2 == 1)


@template(T, "trace_loop")
def trace_loop(rng: random.Random, v: Vocab) -> Item:
    code, out = _trace(rng)
    return Item(
        pick(rng, bank("code", "trace_loop", "asks")),
        code,
        "code",
        state=True,
        answer=out,
    )


@template(T, "log_parser_script")
def log_parser_script(rng: random.Random, v: Vocab) -> Item:
    """Near-miss with sequential data: a log sample is included, but the ask is a program."""
    lines = "\n".join(
        f"2024-06-0{rng.randint(1, 9)} 1{rng.randint(0, 9)}:0{rng.randint(0, 9)}:11 "
        f"{rng.choice(['ERROR', 'INFO', 'WARN'])} [{v.service}] took {rng.randint(1, 900)}ms"
        for _ in range(rng.randint(2, 6))
    )
    return Item(
        pick(
            rng,
            bank("code", "log_parser_script", "asks"),
            l=v.lang,
        ),
        lines,
        "sample",
    )


@template(T, "api_usage")
def api_usage(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("code", "api_usage", "asks"),
            c=rng.choice(bank("code", "api_usage", "columns")),
            g=rng.choice(bank("code", "api_usage", "group_by")),
            l=v.lang,
        )
    )


@template(T, "complexity", held_out=True)
def complexity(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(rng, bank("code", "complexity", "asks")),
        _py_snippet(rng, v),
        "code",
    )


@template(T, "shell_devops", held_out=True)
def shell_devops(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            bank("code", "shell_devops", "asks"),
            k=rng.randint(2, 60),
            s=v.service,
        )
    )


@template(T, "code_review", held_out=True)
def code_review(rng: random.Random, v: Vocab) -> Item:
    code = _py_snippet(rng, v)
    diff = "\n".join(("+ " if rng.random() < 0.6 else "- ") + line for line in code.splitlines())
    return Item(
        pick(rng, bank("code", "code_review", "asks")),
        diff,
        "diff",
    )
