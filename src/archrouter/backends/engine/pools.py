"""Slot-indexed state pools: a request owns a slot from admission to finish, forwards read and write it in place.

Recurrent families (`StatePool`): one cache of `num_slots + 1` rows allocated once; row `slot` is a
sequence's whole state. Prefill (packed, `forward_packed`) and decode (`forward(..., slots=...)`) index
the pool directly, so joining or leaving the batch copies nothing. The extra last row is scratch: the
padding rows of a captured decode graph's batch bucket compute there and no real row reads it.

The Transformer (`KVSlots`): the slot is a row of block tables over the engine's paged KV pool; its K/V
lives in shared, refcounted blocks, so a fork shares them copy-on-write.

Both offer the same small API to the engine and to anyone building on it (n > 1 completions, beam
search): `alloc`, `release`, `read` (a batch-of-one copy, for the state cache), `write` (restore into a
slot), and `fork(src, dst)`: `dst` continues from exactly where `src` is.
"""

from __future__ import annotations

import torch

from archrouter.backends.base import Cache, CausalLM, PackedBatch
from archrouter.backends.paged_cache import UNKNOWN, PagedKVCache, PagedKVPool, _Seq


class OutOfSlots(RuntimeError):
    """Every slot is taken (the scheduler admits no more sequences than there are slots)."""


class _Slots:
    def __init__(self, num_slots: int):
        self.num_slots = num_slots
        self._free = list(range(num_slots - 1, -1, -1))  # pop() hands out the lowest slot first

    @property
    def num_free(self) -> int:
        return len(self._free)

    def _take(self) -> int:
        if not self._free:
            raise OutOfSlots(f"all {self.num_slots} slots are in use")
        return self._free.pop()

    def _give(self, slot: int) -> None:
        if slot in self._free or not 0 <= slot < self.num_slots:
            raise ValueError(f"slot {slot} is not in use")
        self._free.append(slot)


class StatePool(_Slots):
    """Fixed-size recurrent states, one pool row a sequence (plus one scratch row)."""

    kind = "state"

    def __init__(self, model: CausalLM, num_slots: int):
        super().__init__(num_slots)
        self.model = model
        self.cache: Cache = model.init_cache(num_slots + 1)
        self.scratch = num_slots
        fresh = model.init_cache(1)  # a new sequence's state (zeros; -inf for sLSTM stabilisers)
        self._fresh = {k: t[0] for k, t in fresh.tensors.items()}
        self.device = next(iter(self.cache.tensors.values())).device

    def alloc(self) -> int:
        slot = self._take()
        self.reset([slot])
        return slot

    def alloc_many(self, n: int) -> list[int]:
        """`n` slots with fresh states (one indexed write a state tensor for all of them)."""
        if n > self.num_free:
            raise OutOfSlots(f"{n} slots asked for, {self.num_free} free")
        slots = [self._take() for _ in range(n)]
        self.reset(slots)
        return slots

    def release(self, slot: int) -> None:
        self._give(slot)

    def reset(self, slots: list[int]) -> None:
        """Fresh states in `slots` (one indexed write a tensor, whatever the number of slots)."""
        if not slots:
            return
        if len(slots) == 1:
            for k, t in self.cache.tensors.items():
                t[slots[0]].copy_(self._fresh[k])
            return
        index = _index(slots, self.device)
        for k, t in self.cache.tensors.items():
            t.index_copy_(0, index, self._fresh[k].expand(len(slots), *self._fresh[k].shape))

    def read(self, slot: int) -> Cache:
        """A batch-of-one copy of the slot's state (on the device: no host round trip)."""
        return type(self.cache)({k: t[slot : slot + 1].clone() for k, t in self.cache.tensors.items()},
                                self.cache.meta)  # fmt: skip

    def write(self, slot: int, cache: Cache, tokens: list[int] | None = None) -> None:
        """Restore a batch-of-one cache (a state-cache hit) into the slot, device to device."""
        for k, t in self.cache.tensors.items():
            t[slot].copy_(cache.tensors[k][0])

    def fork(self, src: int, dst: int) -> None:
        for t in self.cache.tensors.values():
            t[dst].copy_(t[src])

    # -- forwards -------------------------------------------------------------------------------
    def decode(self, ids: torch.Tensor, slots: torch.Tensor, host_slots: list[int]) -> torch.Tensor:
        logits, _ = self._forward(ids, slots, host_slots)
        return logits[:, -1]

    def _forward(self, ids: torch.Tensor, slots: torch.Tensor, host_slots: list[int]) -> tuple[torch.Tensor, Cache]:
        """Rows that are the pool's first rows in order (one stream, a batch admitted together) run on a view
        of those rows, with no slot gather and scatter; any other set of rows indexes the pool by slot."""
        if host_slots == list(range(len(host_slots))):
            first = type(self.cache)({k: t[: len(host_slots)] for k, t in self.cache.tensors.items()}, self.cache.meta)
            return self.model(ids, first)
        return self.model(ids, self.cache, slots=slots)

    def prefill(self, ids: torch.Tensor, batch: PackedBatch, host_ids: list[int]) -> torch.Tensor:
        return self.model.forward_packed(ids, self.cache, batch)

    def prefill_dense(self, ids: torch.Tensor, slots: torch.Tensor, host: list[list[int]], host_slots: list[int]
                      ) -> torch.Tensor:  # fmt: skip
        logits, _ = self._forward(ids, slots, host_slots)
        return logits[:, -1]


class KVSlots(_Slots):
    """The Transformer's slots: rows of block tables over a paged KV pool."""

    kind = "kv"

    def __init__(self, model: CausalLM, kv_pool: PagedKVPool, num_slots: int):
        super().__init__(num_slots)
        self.model = model
        self.kv = kv_pool
        self.seqs: list[_Seq] = [_Seq() for _ in range(num_slots)]
        self.device = kv_pool.k.device
        self._publisher = self.view([])  # publishes filled blocks of any slot (holds no rows)
        self._contiguous: type[Cache] | None = None

    def view(self, slots: list[int]) -> PagedKVCache:
        """A cache over these slots' rows (the rows themselves, not copies); it never frees them."""
        cache = PagedKVCache(self.kv, [self.seqs[s] for s in slots])
        cache._released = True  # the slots own their blocks; `release` gives them back
        return cache

    def alloc(self) -> int:
        slot = self._take()
        self.seqs[slot] = _Seq()
        return slot

    def alloc_many(self, n: int) -> list[int]:
        if n > self.num_free:
            raise OutOfSlots(f"{n} slots asked for, {self.num_free} free")
        return [self.alloc() for _ in range(n)]

    def release(self, slot: int) -> None:
        for b in self.seqs[slot].blocks:
            self.kv.allocator.free(b)
        self.seqs[slot] = _Seq()
        self._give(slot)

    def reset(self, slots: list[int]) -> None:
        for s in slots:
            for b in self.seqs[s].blocks:
                self.kv.allocator.free(b)
            self.seqs[s] = _Seq()

    def length(self, slot: int) -> int:
        return self.seqs[slot].length

    def reuse_prefix(self, slot: int, prompt: list[int]) -> int:
        """Attach the pool's published full blocks that already hold a prefix of `prompt`."""
        return self.view([slot]).reuse_prefix(0, prompt)

    def read(self, slot: int) -> Cache:
        """A batch-of-one contiguous copy of the slot's K/V (the state cache's format: `KVCache`), on the
        device; pool blocks are never held outside a slot, so the pool's budget stays the scheduler's."""
        s = self.seqs[slot]
        n = s.length
        bs = self.kv.block_size
        rows = _index([s.blocks[i // bs] * bs + i % bs for i in range(n)], self.device)
        tensors = {"lengths": torch.tensor([n], dtype=torch.long, device=self.device)}
        for i in range(self.kv.num_layers):
            for name, pool_t in (("k", self.kv.k), ("v", self.kv.v)):
                tensors[f"{name}.{i}"] = pool_t[i].flatten(0, 1).index_select(0, rows).transpose(0, 1)[None]
        cache = self._kv_cache_type(tensors)
        cache.set_lengths(tensors["lengths"], [n])
        return cache

    def write(self, slot: int, cache: Cache, tokens: list[int] | None = None) -> None:
        """Restore a batch-of-one cache into the slot: a paged one shares its blocks, a contiguous one
        (`read`, a snapshot) is copied into fresh blocks. `tokens`: the ids it holds (for prefix sharing)."""
        self.reset([slot])
        if isinstance(cache, PagedKVCache):
            src = cache.seqs[0]
            for b in src.blocks:
                self.kv.allocator.incref(b)
            self.seqs[slot] = _Seq(list(src.blocks), list(src.tokens), list(src.hashes))
            return
        host = getattr(cache, "host_lengths", None)
        n = host[0] if host is not None else int(cache.tensors["lengths"][0])
        bs = self.kv.block_size
        seq = _Seq(self.kv.allocator.allocate(-(-n // bs)))
        rows = _index([seq.blocks[i // bs] * bs + i % bs for i in range(n)], self.device)
        for i in range(self.kv.num_layers):
            for name, pool_t in (("k", self.kv.k), ("v", self.kv.v)):
                src = cache.tensors[f"{name}.{i}"][0, :, :n].transpose(0, 1)
                pool_t[i].flatten(0, 1).index_copy_(0, rows, src.to(pool_t.dtype))
        seq.tokens = list(tokens[:n]) if tokens is not None and len(tokens) >= n else [UNKNOWN] * n
        self.seqs[slot] = seq
        self.view([slot])._publish(seq)

    def fork(self, src: int, dst: int) -> None:
        """`dst` shares `src`'s blocks (refcounts); the first write to a shared partial block copies it."""
        self.write(dst, self.view([src]))

    @property
    def _kv_cache_type(self) -> type[Cache]:
        """The family's contiguous KV cache class (what its snapshots restore to)."""
        if self._contiguous is None:
            pool, self.model.kv_pool = self.model.kv_pool, None
            try:
                self._contiguous = type(self.model.init_cache(0))
            finally:
                self.model.kv_pool = pool
        return self._contiguous

    # -- forwards -------------------------------------------------------------------------------
    def decode(self, ids: torch.Tensor, slots: torch.Tensor, host_slots: list[int]) -> torch.Tensor:
        view = self.view(host_slots)
        view.will_feed([[UNKNOWN]] * len(host_slots))  # the ids are on the device (`fill_tokens` later)
        logits, _ = self.model(ids, view)
        return logits[:, -1]

    def prefill(self, ids: torch.Tensor, batch: PackedBatch, host_ids: list[int]) -> torch.Tensor:
        view = self.view(batch.slot_list)
        view.will_feed([host_ids])
        return self.model.forward_packed(ids, view, batch)

    def prefill_dense(self, ids: torch.Tensor, slots: torch.Tensor, host: list[list[int]], host_slots: list[int]
                      ) -> torch.Tensor:  # fmt: skip
        view = self.view(host_slots)
        view.will_feed(host)
        logits, _ = self.model(ids, view)
        return logits[:, -1]

    def fill_tokens(self, slot: int, tokens: list[int]) -> None:
        s = self.seqs[slot]
        n = min(len(tokens), s.length)
        s.tokens[s.length - n :] = tokens[:n]
        if s.length // self.kv.block_size > len(s.hashes):  # a block filled up: publish it
            self._publisher._publish(s)


def _index(rows: list[int], device: torch.device) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.long)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
