"""Task-classifier latency: p50/p99 of `predict` at 100, 1k and 10k-token prompts (CPU).

Side by side with the same features computed by scikit-learn's TfidfVectorizer (the usual way to serve
such a model) on the same text, so the ratio shows what the numpy featuriser buys.
python benchmarks/classifier_speed.py [--model models/classifier/task-classifier.json.gz] [--n 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

from archrouter.policies.classifier import TaskClassifier

WORDS = [
    "the",
    "of",
    "report",
    "service",
    "error",
    "value",
    "returned",
    "swap",
    "cup",
    "moved",
    "summary",
    "latency",
    "window",
    "forecast",
    "city",
    "council",
    "budget",
    "function",
    "loop",
    "index",
    "table",
    "row",
    "column",
    "meeting",
    "decision",
    "parity",
    "sequence",
]


def prompt(rng: random.Random, tokens: int) -> str:
    # ~0.75 words per token for English text
    words = [rng.choice(WORDS) for _ in range(int(tokens * 0.75))]
    return "Summarise the following text.\n\n" + " ".join(words)


def timed(fn, text: str, n: int) -> tuple[float, float]:
    for _ in range(10):
        fn(text)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(text)
        ts.append(time.perf_counter() - t0)
    return float(np.percentile(ts, 50) * 1e3), float(np.percentile(ts, 99) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/classifier/task-classifier.json.gz")
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.perf_counter()
    clf = TaskClassifier.load(args.model)
    load_s = time.perf_counter() - t0
    rng = random.Random(0)
    # the anchor: scikit-learn vectorizers with the same n-gram settings, fitted on a small corpus
    corpus = [prompt(rng, 200) for _ in range(50)]
    char = TfidfVectorizer(analyzer="char", ngram_range=(3, 5), sublinear_tf=True).fit(corpus)
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(corpus)

    def sk(text: str) -> None:
        char.transform([text])
        word.transform([text])

    rows = []
    for tokens in (100, 1000, 10000):
        text = prompt(rng, tokens)
        p50, p99 = timed(clf.predict, text, args.n)
        s50, s99 = timed(sk, text, max(args.n // 10, 20))
        rows.append(
            {
                "tokens": tokens,
                "chars": len(text),
                "ours_p50_ms": round(p50, 3),
                "ours_p99_ms": round(p99, 3),
                "sklearn_tfidf_p50_ms": round(s50, 3),
                "sklearn_tfidf_p99_ms": round(s99, 3),
                "ratio_p50": round(p50 / s50, 3),
            }
        )
    out = Path(os.environ.get("OUT", "bench-out"))
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "model": args.model,
        "load_seconds": round(load_s, 2),
        "command": "python benchmarks/classifier_speed.py",
    }
    (out / "classifier_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"model load: {load_s:.2f} s",
        f"{'tokens':>7} {'chars':>7} {'p50 ms':>8} {'p99 ms':>8} {'sklearn p50':>12} {'ours/sk':>8}",
    ]
    lines += [
        f"{r['tokens']:>7} {r['chars']:>7} {r['ours_p50_ms']:>8.3f} {r['ours_p99_ms']:>8.3f} "
        f"{r['sklearn_tfidf_p50_ms']:>12.3f} {r['ratio_p50']:>8.3f}"
        for r in rows
    ]
    (out / "classifier_speed.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
