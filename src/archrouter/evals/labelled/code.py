"""code: write, fix, explain, review, translate or trace code (SQL, regex, shell included). Traces of
code with loops also need state tracking, so they carry state_tracking=true."""

from __future__ import annotations

import random

from archrouter.evals.labelled.base import Item, pick, template
from archrouter.evals.labelled.vocab import Vocab

T = "code"

_SPECS = [
    "returns the {k} largest numbers in a list",
    "checks whether a string is a palindrome",
    "merges two sorted arrays",
    "parses an ISO date and returns the weekday",
    "deduplicates a list while keeping order",
    "counts word frequencies in a text file",
    "validates an email address",
    "flattens a nested list",
    "computes the nth Fibonacci number iteratively",
    "converts Celsius to Fahrenheit",
    "reverses a linked list",
    "groups {o}s by {c}",
    "retries an HTTP request with exponential backoff",
    "reads a CSV and sums a column",
    "implements binary search",
    "computes a moving average over a list",
    "finds the longest common prefix",
    "chunks a list into batches of size {k}",
    "debounces a function",
    "serialises a {o} object to JSON",
    "computes the parity of an integer",
    "rotates a matrix by 90 degrees",
    "implements an LRU cache",
]


def _spec(rng: random.Random, v: Vocab) -> str:
    return rng.choice(_SPECS).format(k=rng.randint(2, 10), o=v.object, c=v.colour)


def _ident(rng: random.Random, v: Vocab) -> str:
    return (
        rng.choice(["get", "load", "compute", "parse", "build", "count", "find", "update"])
        + "_"
        + v.object.replace(" ", "_")
        + rng.choice(["", "s", "_items", "_count", "_map"])
    )


def _py_snippet(rng: random.Random, v: Vocab) -> str:
    """One Python function or class; sometimes a small module of several."""
    if rng.random() < 0.25:
        head = rng.choice(
            [
                "",
                "import os\nimport sys\n\n",
                "from dataclasses import dataclass\n\n",
                "import logging\n\nlog = logging.getLogger(__name__)\n\n",
            ]
        )
        return head + "\n\n".join(_one_py(rng, v) for _ in range(rng.randint(2, 7)))
    return _one_py(rng, v)


def _one_py(rng: random.Random, v: Vocab) -> str:
    f, x, n = _ident(rng, v), rng.choice(["items", "data", "rows", "values", "xs"]), rng.randint(2, 9)
    body = rng.choice(
        [
            f"def {f}({x}):\n    result = []\n    for i in range(len({x})):\n        if {x}[i] % {n} == 0:\n"
            f"            result.append({x}[i] * 2)\n    return result\n",
            f"def {f}({x}, key):\n    out = {{}}\n    for item in {x}:\n        out.setdefault(item[key], []).append(item)\n"
            f"    return out\n",
            f"class {v.object.title().replace(' ', '')}Store:\n    def __init__(self):\n        self._data = {{}}\n\n"
            f"    def add(self, k, val):\n        self._data[k] = val\n\n    def {f}(self, k):\n        return self._data[k]\n",
            f"import json\n\ndef {f}(path):\n    with open(path) as fh:\n        data = json.load(fh)\n"
            f"    return [d for d in data if d.get('active')]\n",
            f"async def {f}(session, urls):\n    results = []\n    for u in urls:\n        async with session.get(u) as r:\n"
            f"            results.append(await r.json())\n    return results\n",
            f"def {f}(n):\n    if n < {n}:\n        return n\n    return {f}(n - 1) + {f}(n - {n})\n",
            f"@dataclass\nclass {v.colour.title()}{v.object.title().replace(' ', '')}:\n    name: str\n    size: int = {n}\n\n"
            f"    def {f}(self) -> int:\n        return self.size * len(self.name)\n",
            f"def {f}(path, {x}):\n    try:\n        with open(path, 'w') as fh:\n            for row in {x}:\n"
            f"                fh.write(','.join(map(str, row)) + '\\n')\n    except OSError as e:\n"
            f"        print('failed', e)\n",
            f"def {f}(text):\n    counts = {{}}\n    for w in text.split():\n        counts[w] = counts.get(w, 0) + 1\n"
            f"    return sorted(counts.items(), key=lambda kv: -kv[1])[:{n}]\n",
        ]
    )
    return body


def _other_snippet(rng: random.Random, v: Vocab) -> tuple[str, str]:
    f = _ident(rng, v)
    camel = "".join(p.title() for p in f.split("_"))
    return rng.choice(
        [
            (
                "JavaScript",
                f"function {camel[0].lower() + camel[1:]}(arr) {{\n  let total = 0;\n  for (const x of arr) {{\n"
                f"    if (x > {rng.randint(1, 50)}) total += x;\n  }}\n  return total;\n}}\n",
            ),
            (
                "Go",
                f"func {camel}(xs []int) int {{\n\tbest := xs[0]\n\tfor _, x := range xs {{\n\t\tif x > best {{\n"
                f"\t\t\tbest = x\n\t\t}}\n\t}}\n\treturn best\n}}\n",
            ),
            (
                "Rust",
                f"fn {f}(v: &[i32]) -> Vec<i32> {{\n    v.iter().filter(|x| **x % 2 == 0).map(|x| x * {rng.randint(2, 5)})"
                f".collect()\n}}\n",
            ),
            (
                "Java",
                f"public static int {camel[0].lower() + camel[1:]}(List<Integer> xs) {{\n    int n = 0;\n"
                f"    for (int x : xs) {{ if (x < 0) n++; }}\n    return n;\n}}\n",
            ),
            (
                "SQL",
                f"SELECT c.name, COUNT(o.id) AS orders\nFROM customers c\nLEFT JOIN orders o ON o.customer_id = c.id\n"
                f"WHERE o.created_at > '2024-0{rng.randint(1, 9)}-01'\nGROUP BY c.name\nORDER BY orders DESC;\n",
            ),
            (
                "C",
                f"int {f}(const int *a, int n) {{\n    int s = 0;\n    for (int i = 0; i <= n; i++) s += a[i];\n    return s;\n}}\n",
            ),
        ]
    )


@template(T, "write_function")
def write_function(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "Write a {l} function that {s}.",
                "Can you implement a function in {l} that {s}?",
                "{l}: function that {s}",
                "I need {l} code that {s}. Include type hints if possible.",
                "Escribe una función en {l} que {s_es}.",
                "Écris une fonction {l} qui {s_fr}.",
                "how do i write something in {l} that {s}",
                "Give me a one-liner in {l} that {s}.",
            ],
            l=v.lang,
            s=_spec(rng, v),
            s_es=rng.choice(
                ["ordene una lista de diccionarios por fecha", "lea un archivo CSV", "invierta una cadena"]
            ),
            s_fr=rng.choice(["trie une liste", "lit un fichier JSON", "compte les voyelles"]),
        )
    )


_ERRORS = [
    "TypeError: 'NoneType' object is not subscriptable",
    "IndexError: list index out of range",
    "KeyError: 'id'",
    "AttributeError: 'dict' object has no attribute 'name'",
    "RecursionError: maximum recursion depth exceeded",
    "ValueError: too many values to unpack",
    "segmentation fault (core dumped)",
    "undefined is not a function",
    "NullPointerException",
]


@template(T, "fix_bug")
def fix_bug(rng: random.Random, v: Vocab) -> Item:
    code = _py_snippet(rng, v) if rng.random() < 0.6 else _other_snippet(rng, v)[1]
    return Item(
        pick(
            rng,
            [
                "Why does this fail with `{e}`?",
                "This code throws {e}. How do I fix it?",
                "Find the bug in this code.",
                "It works on my laptop but crashes in prod with {e}. What's wrong?",
                "fix pls: {e}",
                "¿Por qué este código da {e}?",
                "Pourquoi ce code plante avec {e} ?",
            ],
            e=rng.choice(_ERRORS),
        ),
        code,
        "code",
    )


@template(T, "explain_code")
def explain_code(rng: random.Random, v: Vocab) -> Item:
    code = _py_snippet(rng, v) if rng.random() < 0.5 else _other_snippet(rng, v)[1]
    return Item(
        pick(
            rng,
            [
                "What does this code do?",
                "Explain this function line by line.",
                "Can you add docstrings and comments to this?",
                "Is there anything unsafe in this snippet?",
                "Was macht dieser Code?",
                "Explica este código.",
            ],
        ),
        code,
        "code",
    )


@template(T, "sql_query")
def sql_query(rng: random.Random, v: Vocab) -> Item:
    t1, t2 = rng.choice(
        [
            ("customers", "orders"),
            ("users", "sessions"),
            ("employees", "departments"),
            ("products", "reviews"),
            ("patients", "visits"),
        ]
    )
    return Item(
        pick(
            rng,
            [
                "Write a SQL query to get the top {k} {a} by number of {b}.",
                "Given tables {a}(id, name, created_at) and {b}(id, {a1}_id, amount), how do I find {a} with no {b}?",
                "Postgres: how do I count {b} per {a1} per month?",
                "SQL to delete duplicate rows in {a} keeping the newest?",
                "Why is my LEFT JOIN between {a} and {b} returning duplicates?",
            ],
            k=rng.randint(3, 20),
            a=t1,
            b=t2,
            a1=t1.rstrip("s"),
        )
    )


@template(T, "regex")
def regex(rng: random.Random, v: Vocab) -> Item:
    what = rng.choice(
        [
            "UK postcodes",
            "IPv4 addresses",
            "dates like 2024-03-01",
            "hex colours",
            "US phone numbers",
            "log lines that start with ERROR",
            "words that repeat twice in a row",
            "semantic versions",
        ]
    )
    return Item(
        pick(
            rng,
            [
                "Give me a regex that matches {w}.",
                "Regex for {w}? Python flavour.",
                "How do I match {w} with grep -E?",
                "Why doesn't my regex ^\\d+$ match {w}?",
                "Necesito una expresión regular para {w}.",
            ],
            w=what,
        )
    )


@template(T, "refactor")
def refactor(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "Refactor this to be more readable.",
                "Rewrite this using a list comprehension.",
                "Make this function faster; it's called millions of times.",
                "Add type hints and error handling.",
                "Split this into smaller functions.",
                "Can this be written more idiomatically?",
            ],
        ),
        _py_snippet(rng, v),
        "code",
    )


@template(T, "translate_code")
def translate_code(rng: random.Random, v: Vocab) -> Item:
    src_lang, code = _other_snippet(rng, v) if rng.random() < 0.5 else ("Python", _py_snippet(rng, v))
    return Item(
        pick(
            rng,
            [
                "Convert this {s} code to {d}.",
                "Port the following to {d}.",
                "How would this look in {d}?",
                "Traduce este código de {s} a {d}.",
            ],
            s=src_lang,
            d=v.lang,
        ),
        code,
        "code",
    )


@template(T, "unit_tests")
def unit_tests(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "Write pytest tests for this function.",
                "Add unit tests covering the edge cases.",
                "What test cases would you write for this?",
                "Write a property-based test (hypothesis) for this.",
            ],
        ),
        _py_snippet(rng, v),
        "code",
    )


def _trace(rng: random.Random) -> tuple[str, str]:
    """A small Python loop and its printed output (computed by running the same logic here)."""
    n, k, a0 = rng.randint(3, 12), rng.randint(2, 5), rng.randint(0, 9)
    kind = rng.randrange(4)
    if kind == 0:
        code = f"x = {a0}\nfor i in range({n}):\n    if i % {k} == 0:\n        x += i\n    else:\n        x -= 1\nprint(x)\n"
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
        code = f"s = []\nfor i in range({n}):\n    if i % {k}:\n        s.append(i)\n    elif s:\n        s.pop()\nprint(s)\n"
        s: list[int] = []
        for i in range(n):
            if i % k:
                s.append(i)
            elif s:
                s.pop()
        return code, str(s)
    code = f"flag = False\nfor c in '{''.join(rng.choice('ab') for _ in range(n))}':\n    if c == 'a':\n        flag = not flag\nprint(flag)\n"
    seq = code.split("'")[1]
    return code, str(seq.count("a") % 2 == 1)


@template(T, "trace_loop")
def trace_loop(rng: random.Random, v: Vocab) -> Item:
    code, out = _trace(rng)
    return Item(
        pick(
            rng,
            [
                "What does this Python code print?",
                "Trace this loop by hand and tell me the output.",
                "What's the output of the following program?",
                "Without running it, what will this print?",
                "¿Qué imprime este código?",
            ],
        ),
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
            [
                "Write a Python script that parses log lines like these and counts errors per service.",
                "How do I parse this log format with a regex in {l}?",
                "Write an awk one-liner that sums the ms column of this log.",
                "I need a function that reads this log file and returns the slowest request. Code please.",
            ],
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
            [
                "How do I use pandas groupby to get the mean {c} per {g}?",
                "numpy: how do I reshape a (N, 3) array to (3, N)?",
                "In React, how do I fetch data when a component mounts?",
                "How do I read an environment variable in {l}?",
                "What's the difference between `let` and `const` in JavaScript?",
                "How do I make an async HTTP call in {l}?",
                "How to sort a dict by value in Python?",
                "git: how do I undo the last commit but keep the changes?",
            ],
            c=rng.choice(["price", "latency", "score"]),
            g=rng.choice(["city", "day", "user"]),
            l=v.lang,
        )
    )


@template(T, "complexity", held_out=True)
def complexity(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "What's the time complexity of this function?",
                "Big-O of this code? Can it be done faster?",
                "How much memory does this use as the input grows?",
            ],
        ),
        _py_snippet(rng, v),
        "code",
    )


@template(T, "shell_devops", held_out=True)
def shell_devops(rng: random.Random, v: Vocab) -> Item:
    return Item(
        pick(
            rng,
            [
                "Write a bash one-liner to find files larger than {k}MB and delete them.",
                "My Dockerfile builds but the container exits immediately. FROM python:3.12\nCOPY . /app\nCMD python app.py",
                "How do I write a Kubernetes deployment for a {s} service with {k} replicas?",
                "Write a GitHub Actions workflow that runs pytest on every push.",
                "cron syntax for every {k} minutes?",
            ],
            k=rng.randint(2, 60),
            s=v.service,
        )
    )


@template(T, "code_review", held_out=True)
def code_review(rng: random.Random, v: Vocab) -> Item:
    code = _py_snippet(rng, v)
    diff = "\n".join(("+ " if rng.random() < 0.6 else "- ") + line for line in code.splitlines())
    return Item(
        pick(
            rng,
            [
                "Review this diff. Anything you'd change before merging?",
                "Is this PR safe to merge?",
                "Leave code review comments on this change.",
            ],
        ),
        diff,
        "diff",
    )
