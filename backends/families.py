"""Family name -> module. Modules are imported lazily so a backend loads only its own code."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import torch

from backends.base import CausalLM

FAMILIES: dict[str, str] = {
    "transformer": "backends.transformer",
    "mamba": "backends.mamba",
    "rwkv": "backends.rwkv",
    "xlstm": "backends.xlstm",
}


def family_module(family: str) -> ModuleType:
    try:
        return importlib.import_module(FAMILIES[family])
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}") from None


def load(family: str, path: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> CausalLM:
    return family_module(family).load(path, device=device, dtype=dtype)
