"""Classification and routing metrics, plain Python so every figure can be checked by hand."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def accuracy(pred: Sequence[str], gold: Sequence[str]) -> float | None:
    pairs = [(p, g) for p, g in zip(pred, gold, strict=True) if g is not None]
    return sum(p == g for p, g in pairs) / len(pairs) if pairs else None


def confusion(pred: Sequence[str], gold: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Rows: gold label; columns: predicted label (in `labels` order)."""
    index = {lab: i for i, lab in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for p, g in zip(pred, gold, strict=True):
        if g is not None and g in index and p in index:
            m[index[g]][index[p]] += 1
    return m


def per_class(pred: Sequence[str], gold: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per label (0 where undefined, as scikit-learn's zero_division=0)."""
    out = {}
    for lab in labels:
        tp = sum(p == lab and g == lab for p, g in zip(pred, gold, strict=True))
        fp = sum(p == lab and g != lab for p, g in zip(pred, gold, strict=True))
        fn = sum(p != lab and g == lab for p, g in zip(pred, gold, strict=True))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    return out


def macro_f1(per: dict[str, dict[str, float]]) -> float:
    present = [v["f1"] for v in per.values() if v["support"] > 0]
    return sum(present) / len(present) if present else 0.0


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    if not xs:
        return 0.0
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def counts(xs: Sequence[str]) -> dict[str, int]:
    return dict(Counter(xs).most_common())


def pgr(quality: float, weakest: float, strongest: float) -> float:
    """Performance gap recovered (RouteLLM): 0 at the weakest single backend, 1 at the strongest."""
    gap = strongest - weakest
    return (quality - weakest) / gap if gap else 1.0


def apgr(curve: Sequence[tuple[float, float]], weakest: float, strongest: float) -> float:
    """Area under PGR as a function of the share of calls upgraded to the strongest backend (trapezoids)."""
    pts = sorted((x, pgr(q, weakest, strongest)) for x, q in curve)
    area = 0.0
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        area += (x1 - x0) * (y0 + y1) / 2
    span = pts[-1][0] - pts[0][0] if len(pts) > 1 else 1.0
    return area / span if span else pts[0][1]
