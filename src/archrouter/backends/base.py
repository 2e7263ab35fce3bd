"""The model interface every family implements, and the cache they share.

A family module (`transformer.py`, `mamba.py`, `rwkv.py`, `xlstm.py`) exposes::

    def load(path, *, device="cpu", dtype=torch.float32) -> CausalLM
    def save(model, path) -> None                 # the family's public checkpoint format
    def random_config(preset: str) -> dict        # a config.json dict for `archrouter init-models`
    def from_config(config, *, seed=...) -> CausalLM   # random weights of that config
    def load_tokenizer(path) -> Tokenizer         # optional; else backends.tokenizer.load_tokenizer
    class CausalLM(torch.nn.Module, abc.ABC):
        def init_cache(self, batch_size: int) -> Cache
        def forward(self, input_ids, cache=None) -> tuple[logits, Cache]

`forward` over all tokens at once and one token at a time give the same logits. The engine
knows nothing about families beyond this module.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

SNAPSHOT_FORMAT = "archrouter-cache/1"


class Cache:
    """Per-sequence state of a batch: named tensors, each with the batch on dim 0.

    Families subclass it (KV cache, conv + SSM state, WKV state, ...) and keep their own
    accessors; gathering rows, joining caches and snapshotting one sequence are generic
    because every state tensor is batch-first.
    """

    family: str = "generic"

    def __init__(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None):
        self.tensors = tensors
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def gather(self, rows: Sequence[int] | torch.Tensor) -> Self:
        """A new cache holding `rows` of this one, in that order (copies)."""
        index = self._index(rows)
        return type(self)({k: t.index_select(0, index) for k, t in self.tensors.items()}, self.meta)

    def _index(self, rows: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """`rows` on the cache's device in one copy; pinned and async on CUDA (a pageable copy would block
        the host until the device is idle, and did so once per tensor)."""
        dev = next(iter(self.tensors.values())).device
        if isinstance(rows, torch.Tensor):
            return rows.to(dev, torch.long)
        index = torch.tensor(list(rows), dtype=torch.long)
        if dev.type == "cuda":
            return index.pin_memory().to(dev, non_blocking=True)
        return index

    @classmethod
    def concat(cls, caches: Sequence[Cache]) -> Self:
        """Join caches row-wise (batch of several sequences from several single ones)."""
        first = caches[0]
        return cls({k: torch.cat([c.tensors[k] for c in caches], 0) for k in first.tensors}, first.meta)

    def snapshot(self, row: int = 0) -> bytes:
        """One sequence's state as safetensors bytes (no pickle anywhere)."""
        meta = {"format": SNAPSHOT_FORMAT, "family": self.family, "meta": json.dumps(self.meta)}
        return st_save({k: t[row : row + 1].contiguous().cpu() for k, t in self.tensors.items()}, meta)

    @classmethod
    def restore(cls, data: bytes, *, device: torch.device | str = "cpu") -> Self:
        """A batch-of-one cache from `snapshot` bytes."""
        from safetensors import safe_open  # noqa: F401  (documents the format)

        header = _safetensors_metadata(data)
        if header.get("format") != SNAPSHOT_FORMAT or header.get("family") != cls.family:
            raise ValueError(
                f"snapshot is {header.get('family')!r}/{header.get('format')!r}, "
                f"expected {cls.family!r}/{SNAPSHOT_FORMAT!r}"
            )
        tensors = {k: t.to(device) for k, t in st_load(data).items()}
        return cls(tensors, json.loads(header.get("meta", "{}")))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def will_feed(self, ids: list[list[int]]) -> None:
        """The host copy of the ids the next forward feeds (the engine's runner has them). Caches that
        keep token ids (the paged KV cache's prefix hashes) use it instead of reading the device."""


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {}) or {}


@dataclass
class PackedBatch:
    """Prompt chunks of several sequences packed into one forward (no padding): `forward_packed`'s batch.

    Sequence i feeds `lengths[i]` tokens, tokens `cu[i]:cu[i+1]` of the flat input, and reads and writes
    its state in pool row `slots[i]` (the Transformer: its i-th row of the cache it is given). Built on
    the host, where the lengths are known, and moved to the device in one copy: nothing in a forward reads
    them back.
    """

    lengths: list[int]
    cu_seqlens: torch.Tensor  # [S + 1] int32
    slots: torch.Tensor  # [S] int32 (pool rows)
    seq_of_token: torch.Tensor  # [N] long: which sequence each flat token belongs to
    last: torch.Tensor  # [S] long: each sequence's last flat token (its logits are returned)
    first: torch.Tensor  # [S] long: each sequence's first flat token
    slot_list: list[int] = field(default_factory=list)

    @property
    def max_seqlen(self) -> int:
        return max(self.lengths) if self.lengths else 0

    @property
    def num_tokens(self) -> int:
        return sum(self.lengths)

    @classmethod
    def build(cls, lengths: Sequence[int], slots: Sequence[int], device: torch.device | str = "cpu") -> PackedBatch:
        lengths, slots = [int(n) for n in lengths], [int(s) for s in slots]
        if any(n <= 0 for n in lengths) or len(lengths) != len(slots):
            raise ValueError(f"every packed sequence needs at least one token and a slot: {lengths}, {slots}")
        cu = [0]
        for n in lengths:
            cu.append(cu[-1] + n)
        seq_of = [i for i, n in enumerate(lengths) for _ in range(n)]
        n_seq, n_tok = len(lengths), cu[-1]
        # one host tensor, one copy: [cu | slots | seq_of | last | first]
        host = torch.tensor(cu + slots + seq_of + [c - 1 for c in cu[1:]] + cu[:-1], dtype=torch.long)
        dev = torch.device(device)
        if dev.type == "cuda":
            host = host.pin_memory()
        t = host.to(dev, non_blocking=True)
        a, b, c, d = n_seq + 1, 2 * n_seq + 1, 2 * n_seq + 1 + n_tok, 3 * n_seq + 1 + n_tok
        return cls(lengths, t[:a].to(torch.int32), t[a:b].to(torch.int32), t[b:c], t[c:d], t[d:], slots)


class CausalLM(torch.nn.Module, abc.ABC):
    """Base class: what the engine may rely on besides `forward`."""

    family: str = "generic"
    #: the config.json dict the model was built from
    config: dict[str, Any]

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def context_length(self) -> int | None:
        """Training/positional limit; None for recurrent models with no hard limit."""
        return None

    @abc.abstractmethod
    def init_cache(self, batch_size: int) -> Cache:
        """An empty cache for `batch_size` sequences (each family defines its own)."""

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
