"""Report figures (matplotlib, Agg): confusion matrices, rule firing, cost-quality plane, latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def confusion(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(labels), 1.0 + 0.7 * len(labels)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("labelled")
    top = max((max(r) for r in matrix), default=0) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def bars(counts: dict[str, int], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 0.4 * max(3, len(counts)) + 1))
    names = list(counts)[::-1]
    ax.barh(names, [counts[n] for n in names], color="#4c72b0")
    ax.set_xlabel("prompts")
    ax.set_title(title)
    return _save(fig, path)


def cost_quality(points: dict[str, dict[str, Any]], quality_key: str, xlabel: str, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, p in points.items():
        if p.get(quality_key) is None:
            continue
        style = {"policy": ("*", "#c44e52", 220), "oracle": ("D", "#55a868", 90), "random": ("x", "#8172b2", 90)}
        marker, color, size = style.get(name, ("o", "#4c72b0", 60))
        ax.scatter(p["cost"], p[quality_key], marker=marker, color=color, s=size, zorder=3)
        ax.annotate(name, (p["cost"], p[quality_key]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("estimated cost per query")
    ax.set_ylabel(xlabel)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def histogram(values: list[float], title: str, xlabel: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(values, bins=40, color="#4c72b0")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("prompts")
    ax.set_title(title)
    return _save(fig, path)


def curve(xs: list[float], ys: list[float], title: str, xlabel: str, ylabel: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, ys, marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
