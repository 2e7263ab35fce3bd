"""Family name -> module. Modules are imported lazily so a backend loads only its own code."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import torch

from archrouter.backends.base import CausalLM

FAMILIES: dict[str, str] = {
    "transformer": "archrouter.backends.transformer",
    "mamba": "archrouter.backends.mamba",
    "rwkv": "archrouter.backends.rwkv",
    "xlstm": "archrouter.backends.xlstm",
}


def family_module(family: str) -> ModuleType:
    try:
        return importlib.import_module(FAMILIES[family])
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}") from None


def load(family: str, path: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> CausalLM:
    return family_module(family).load(path, device=device, dtype=dtype)


def init_random(family: str, preset: str, path: str | Path, *, seed: int = 0) -> CausalLM:
    """Write a randomly initialised checkpoint of `preset` size in the family's format."""
    mod = family_module(family)
    torch.manual_seed(seed)
    model = mod.from_config(mod.random_config(preset))
    mod.save(model, path)
    (Path(path) / "init.json").write_text(
        f'{{"trained": false, "family": "{family}", "preset": "{preset}", "seed": {seed}}}\n'
    )
    return model
