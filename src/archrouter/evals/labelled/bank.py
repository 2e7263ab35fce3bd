"""The generator's text as data: phrasing banks and word pools read from banks/<module>.yaml."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

BANKS_DIR = Path(__file__).resolve().parent / "banks"  # package data (see pyproject.toml)


@functools.cache
def load(module: str) -> dict[str, Any]:
    """The whole bank file of one module, parsed once per process."""
    return yaml.safe_load((BANKS_DIR / f"{module}.yaml").read_text(encoding="utf-8"))


def bank(module: str, *keys: str) -> list[Any]:
    """One bank, e.g. `bank("chat", "support_login", "asks")`: a list in file order.

    The list is shared between calls (so the file is parsed once); callers draw from it and never change it.
    The generated sets depend on the order and contents of every list, so edits change the shipped data.
    """
    node: Any = load(module)
    for k in keys:
        node = node[k]
    if not isinstance(node, list):
        raise TypeError(f"banks/{module}.yaml: {'.'.join(keys)} is not a list")
    return node
