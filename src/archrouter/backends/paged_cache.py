"""Paged KV cache: a pool of fixed-size blocks shared by every sequence of a Transformer.

- `BlockAllocator`: free list, reference counts, and a table of full blocks keyed by a hash of
  the token ids they hold (chained over the prefix), so sequences that start with the same
  prompt share blocks. A full block whose last owner is gone stays findable until its space is
  needed (least recently freed first). Asking for more blocks than exist raises `OutOfBlocks`
  before anything changes, so the engine can catch it, preempt or queue, and carry on.
- `PagedKVPool`: the K/V tensors, [layers, num_blocks, block_size, kv_heads, head_dim] each, plus
  the allocator.
- `PagedKVCache`: one batch's sequences (block tables + lengths) over a pool, a `Cache` of
  family "transformer". `gather` shares blocks instead of copying them: a sequence that appends
  to a partially filled block another sequence also holds copies that block first
  (copy-on-write). Snapshots are contiguous K/V as safetensors in the contiguous KV cache's
  format, so they outlive the pool and move between paged and contiguous caches.

A model's forward calls `prepare(input_ids)` once (allocates room, copies shared blocks about
to be written, computes write slots; raises `OutOfBlocks` with nothing changed), then
`attend(layer, q, k, v)` per layer (writes the new K/V, runs prefill or paged decode), then
`commit()` (advances lengths, publishes newly filled blocks for prefix reuse).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from archrouter.backends.base import SNAPSHOT_FORMAT, Cache, _safetensors_metadata
from archrouter.kernels import attention as attn


class OutOfBlocks(RuntimeError):
    """The pool cannot hold what was asked; nothing was allocated."""

    def __init__(self, needed: int, available: int):
        super().__init__(f"KV cache out of blocks: need {needed}, {available} available")
        self.needed = needed
        self.available = available


def block_hash(parent: bytes | None, tokens: Sequence[int]) -> bytes:
    """Identity of a full block: its tokens and (through `parent`) every token before them."""
    h = hashlib.blake2b(parent or b"", digest_size=16)
    h.update(b"".join(int(t).to_bytes(8, "little", signed=True) for t in tokens))
    return h.digest()


class BlockAllocator:
    """Block ids 0..num_blocks-1 with reference counts and a prefix table of full blocks."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.refcount = [0] * num_blocks
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() hands out low ids first
        self._by_hash: dict[bytes, int] = {}
        self._hash_of: dict[int, bytes] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()  # unowned full blocks, oldest first

    @property
    def num_free(self) -> int:
        """Blocks an allocation can take now (free, or cached but unowned)."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def allocate(self, n: int = 1) -> list[int]:
        """n fresh blocks with refcount 1, or OutOfBlocks with nothing taken."""
        if n > self.num_free:
            raise OutOfBlocks(n, self.num_free)
        out = []
        for _ in range(n):
            if self._free:
                b = self._free.pop()
            else:
                b, _ = self._evictable.popitem(last=False)
                del self._by_hash[self._hash_of.pop(b)]
            self.refcount[b] = 1
            out.append(b)
        return out

    def incref(self, block: int) -> None:
        if self.refcount[block] == 0:
            raise ValueError(f"block {block} is not allocated")
        self.refcount[block] += 1

    def free(self, block: int) -> None:
        """Drop one reference; at zero the block is reusable (kept findable if it is a full, hashed one)."""
        if self.refcount[block] <= 0:
            raise ValueError(f"block {block} freed more often than allocated")
        self.refcount[block] -= 1
        if self.refcount[block] == 0:
            if block in self._hash_of:
                self._evictable[block] = None
            else:
                self._free.append(block)

    def lookup(self, h: bytes) -> int | None:
        """The cached block holding this prefix hash, with a new reference taken; None if absent."""
        b = self._by_hash.get(h)
        if b is None:
            return None
        if self.refcount[b] == 0:
            del self._evictable[b]
        self.refcount[b] += 1
        return b

    def register(self, block: int, h: bytes) -> int:
        """Publish a just-filled block under its prefix hash; returns the block to keep using.

        If an identical block is already published, this sequence switches to it and its own
        copy is freed, so identical prefixes converge on one block.
        """
        existing = self._by_hash.get(h)
        if existing is not None and existing != block:
            self.lookup(h)
            self.free(block)
            return existing
        if block not in self._hash_of:
            self._by_hash[h] = block
            self._hash_of[block] = h
        return block


@dataclass
class PagedKVPool:
    """K/V storage for every layer, in blocks, with its allocator."""

    num_layers: int
    num_blocks: int
    block_size: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype = torch.float32
    device: torch.device | str = "cpu"
    k: torch.Tensor = field(init=False, repr=False)
    v: torch.Tensor = field(init=False, repr=False)
    allocator: BlockAllocator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shape = (self.num_layers, self.num_blocks, self.block_size, self.kv_heads, self.head_dim)
        self.k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.allocator = BlockAllocator(self.num_blocks, self.block_size)

    @property
    def block_bytes(self) -> int:
        """Bytes one block holds across all layers, K and V."""
        return 2 * self.num_layers * self.block_size * self.kv_heads * self.head_dim * self.k.element_size()

    def new_cache(self, batch_size: int) -> PagedKVCache:
        return PagedKVCache(self, [_Seq() for _ in range(batch_size)])

    def copy_block(self, src: int, dst: int) -> None:
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]


@dataclass
class _Seq:
    blocks: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # ids whose K/V are stored, for prefix hashes
    hashes: list[bytes] = field(default_factory=list)  # one per full block, chained

    @property
    def length(self) -> int:
        return len(self.tokens)


@dataclass
class _Step:
    """What `prepare` computed for one forward, reused by every layer's `attend`."""

    new_tokens: int
    slots: torch.Tensor  # [B * T] flat rows of the pool's [num_blocks * block_size] view
    context_lens: torch.Tensor  # [B] int32, after this step
    block_tables: torch.Tensor  # [B, max_blocks] int32
    max_context: int
    gather_rows: torch.Tensor | None = None  # prefill: every context token's flat row, row-major
    cu_seqlens_k: torch.Tensor | None = None
    cu_seqlens_q: torch.Tensor | None = None
    tokens: list[list[int]] = field(default_factory=list)
    max_new: int = 1  # the most new tokens of one row (the packed attention's max_seqlen_q)


UNKNOWN = -1  # a token id the host does not know yet (never a real id: such a block is never published)


class PagedKVCache(Cache):
    """A batch of sequences over a `PagedKVPool` (block tables, lengths); see the module doc."""

    family = "transformer"

    def __init__(self, pool: PagedKVPool, seqs: list[_Seq]):
        self.pool = pool
        self.seqs = seqs
        self.meta: dict[str, Any] = {"paged": True, "block_size": pool.block_size}
        self._step: _Step | None = None
        self._released = False
        self._host_ids: list[list[int]] | None = None  # `will_feed`: the next forward's ids, already on the host

    # -- the Cache interface -------------------------------------------------------------------
    @property
    def tensors(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return {"lengths": self.lengths}

    @property
    def batch_size(self) -> int:
        return len(self.seqs)

    @property
    def lengths(self) -> torch.Tensor:
        return torch.tensor([s.length for s in self.seqs], dtype=torch.long)

    def gather(self, rows: Sequence[int] | torch.Tensor) -> Self:
        """A new cache of `rows`, sharing their blocks (copy-on-write keeps the two independent)."""
        rows = torch.as_tensor(rows, dtype=torch.long).tolist()
        out = []
        for r in rows:
            s = self.seqs[r]
            for b in s.blocks:
                self.pool.allocator.incref(b)
            out.append(_Seq(list(s.blocks), list(s.tokens), list(s.hashes)))
        return type(self)(self.pool, out)

    @classmethod
    def concat(cls, caches: Sequence[PagedKVCache]) -> Self:
        """Join caches of one pool row-wise (blocks shared, as in `gather`)."""
        pool = caches[0].pool
        if any(c.pool is not pool for c in caches):
            raise ValueError("paged caches of different pools cannot be joined; restore into one pool")
        parts = [c.gather(range(c.batch_size)) for c in caches]
        seqs = [s for p in parts for s in p.seqs]
        for p in parts:
            p.seqs, p._released = [], True  # references moved to the joined cache
        return cls(pool, seqs)

    def snapshot(self, row: int = 0) -> bytes:
        """One sequence's K/V as safetensors bytes, in the contiguous `KVCache`'s format
        (`k.{i}` / `v.{i}` [1, kv_heads, len, D], `lengths` [1]), so either cache restores the other's;
        the token ids ride in the metadata for prefix reuse after a restore."""
        s = self.seqs[row]
        rows = self._rows(s, s.length)
        tensors = {"lengths": torch.tensor([s.length], dtype=torch.long)}
        for i in range(self.pool.num_layers):
            for name, pool_t in (("k", self.pool.k), ("v", self.pool.v)):
                kv = pool_t[i].flatten(0, 1)[rows]  # [n, Hkv, D]
                tensors[f"{name}.{i}"] = kv.transpose(0, 1)[None].contiguous().cpu()
        meta = {"format": SNAPSHOT_FORMAT, "family": self.family,
                "meta": json.dumps({**self.meta, "tokens": s.tokens})}  # fmt: skip
        return st_save(tensors, meta)

    @classmethod
    def restore(  # type: ignore[override]
        cls, data: bytes, *, device: torch.device | str = "cpu", pool: PagedKVPool | None = None
    ) -> Self:
        """A batch-of-one cache from a snapshot (ours or `KVCache`'s), in `pool`; None: a new pool just
        large enough."""
        header = _safetensors_metadata(data)
        if header.get("format") != SNAPSHOT_FORMAT or header.get("family") != cls.family:
            raise ValueError(f"snapshot is {header.get('family')!r}/{header.get('format')!r}, not a KV cache")
        t = st_load(data)
        meta = json.loads(header.get("meta", "{}"))
        n = int(t["lengths"][0])
        layers = (len(t) - 1) // 2
        k0 = t["k.0"]  # [1, Hkv, T, D]
        tokens = meta.get("tokens")
        if not isinstance(tokens, list) or len(tokens) != n:
            tokens = [-1] * n  # unknown ids: this sequence's blocks will never match a prompt
        if pool is None:
            bs = int(meta.get("block_size", 16))
            pool = PagedKVPool(layers, max(1, -(-n // bs)), bs, k0.shape[1], k0.shape[3], k0.dtype, device)
        cache = pool.new_cache(1)
        seq = cache.seqs[0]
        seq.blocks = pool.allocator.allocate(-(-n // pool.block_size))
        rows = cache._rows(seq, n)
        for i in range(layers):
            for name, pool_t in (("k", pool.k), ("v", pool.v)):
                src = t[f"{name}.{i}"][0, :, :n].transpose(0, 1)  # [n, Hkv, D]
                pool_t[i].flatten(0, 1)[rows] = src.to(device=pool_t.device, dtype=pool_t.dtype)
        seq.tokens = [int(x) for x in tokens]
        cache._publish(seq)
        return cache

    def nbytes(self) -> int:
        """Bytes of pool blocks this batch references (a shared block counts once)."""
        return len({b for s in self.seqs for b in s.blocks}) * self.pool.block_bytes

    # -- lifetime ------------------------------------------------------------------------------
    def release(self) -> None:
        """Give every block reference back to the pool (idempotent)."""
        if self._released:
            return
        self._released = True
        for s in self.seqs:
            for b in s.blocks:
                self.pool.allocator.free(b)
            s.blocks = []

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown the pool may be gone first
            self.release()

    # -- prefix reuse ----------------------------------------------------------------------------
    def reuse_prefix(self, row: int, prompt: Sequence[int]) -> int:
        """Attach the longest published prefix of `prompt` (whole blocks) to empty row `row`.

        Returns how many prompt tokens are already cached; the caller feeds only the rest. At
        least one token is always left to compute, so the forward has logits to return.
        """
        s = self.seqs[row]
        if s.length:
            raise ValueError("reuse_prefix needs an empty row")
        bs = self.pool.block_size
        parent = None
        for i in range((len(prompt) - 1) // bs):
            h = block_hash(parent, prompt[i * bs : (i + 1) * bs])
            b = self.pool.allocator.lookup(h)
            if b is None:
                break
            s.blocks.append(b)
            s.hashes.append(h)
            s.tokens.extend(int(t) for t in prompt[i * bs : (i + 1) * bs])
            parent = h
        return s.length

    # -- one forward -----------------------------------------------------------------------------
    def prepare(self, input_ids: torch.Tensor, lengths: list[int] | None = None) -> None:
        """Make room for input_ids [B, T] (raises OutOfBlocks with nothing changed), plan the writes.

        `lengths` (packed prefill): input_ids [1, N] holds row i's `lengths[i]` new tokens one row after
        another (no padding), and attention runs over the packed batch with cumulative offsets."""
        host_ids, self._host_ids = self._host_ids, None  # good for this forward only
        bsz, t = input_ids.shape
        if lengths is not None:
            if bsz != 1 or sum(lengths) != t or len(lengths) != self.batch_size:
                raise ValueError(f"packed input [1, {t}] does not hold lengths {lengths} of {self.batch_size} rows")
        elif bsz != self.batch_size:
            raise ValueError(f"input batch {bsz} != cache batch {self.batch_size}")
        news = lengths if lengths is not None else [t] * bsz
        alloc, bs = self.pool.allocator, self.pool.block_size
        plans, needed = [], 0
        for s, n in zip(self.seqs, news, strict=True):
            new_blocks = -(-(s.length + n) // bs) - len(s.blocks)
            cow = s.length % bs != 0 and alloc.refcount[s.blocks[-1]] > 1
            plans.append((new_blocks, cow))
            needed += new_blocks + cow
        if needed > alloc.num_free:
            raise OutOfBlocks(needed, alloc.num_free)
        for s, (new_blocks, cow) in zip(self.seqs, plans, strict=True):
            if cow:  # the partially filled last block is shared: write into a private copy
                (copy,) = alloc.allocate(1)
                self.pool.copy_block(s.blocks[-1], copy)
                alloc.free(s.blocks[-1])
                s.blocks[-1] = copy
            s.blocks.extend(alloc.allocate(new_blocks))
        self._plan(input_ids, host_ids, lengths)

    def will_feed(self, ids: list[list[int]]) -> None:
        """The next forward's ids as the host knows them; `UNKNOWN` for ids the device holds (a decode
        step reading the last sampled tokens on the device), filled in later by `fill_tokens`."""
        self._host_ids = ids

    def fill_tokens(self, row: int, tokens: list[int]) -> None:
        """The host learned the ids of row `row`'s last `len(tokens)` positions: record and publish them."""
        s = self.seqs[row]
        n = min(len(tokens), s.length)
        s.tokens[s.length - n :] = [int(t) for t in tokens[:n]]
        self._publish(s)

    def _plan(self, input_ids: torch.Tensor, host_ids: list[list[int]] | None, lengths: list[int] | None) -> None:
        if host_ids is not None and (len(host_ids), len(host_ids[0])) != tuple(input_ids.shape):
            host_ids = None  # not this forward's: read the ids back
        dev = self.pool.k.device
        t = input_ids.shape[1]
        news = lengths if lengths is not None else [t] * len(self.seqs)
        slots, ctx, gather = [], [], []
        for s, n in zip(self.seqs, news, strict=True):
            slots.extend(self._rows_list(s, s.length + n, start=s.length))
            ctx.append(s.length + n)
            if t > 1:  # prefill reads every context token back as one packed batch; decode reads blocks
                gather.extend(self._rows_list(s, s.length + n))
        width = max(len(s.blocks) for s in self.seqs)
        table = [s.blocks + [0] * (width - len(s.blocks)) for s in self.seqs]
        flat = host_ids if host_ids is not None else input_ids.tolist()
        if lengths is not None:  # one packed row: each sequence's tokens, in order
            cut = _cumsum(lengths)
            tokens = [flat[0][b:e] for b, e in zip([0, *cut[:-1]], cut, strict=True)]
        else:
            tokens = flat
        step = _Step(
            new_tokens=t,
            slots=torch.tensor(slots, dtype=torch.long, device=dev),
            context_lens=torch.tensor(ctx, dtype=torch.int32, device=dev),
            block_tables=torch.tensor(table, dtype=torch.int32, device=dev),
            max_context=max(ctx),
            tokens=tokens,
            max_new=max(news),
        )
        if t > 1:
            step.gather_rows = torch.tensor(gather, dtype=torch.long, device=dev)
            step.cu_seqlens_k = torch.tensor([0, *_cumsum(ctx)], dtype=torch.int32, device=dev)
            step.cu_seqlens_q = torch.tensor([0, *_cumsum(news)], dtype=torch.int32, device=dev)
        self._step = step

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scale: float | None = None) -> torch.Tensor:  # fmt: skip
        """Store this step's k/v [B, Hkv, T, D] for `layer` and attend q [B, Hq, T, D] -> [B, Hq, T, D]."""
        step = self._step
        if step is None:
            raise RuntimeError("call prepare(input_ids) before attend")
        bsz, hq, t, d = q.shape
        kc, vc = self.pool.k[layer], self.pool.v[layer]  # [num_blocks, block_size, Hkv, D]
        k_new = k.transpose(1, 2).reshape(bsz * t, -1, d)
        v_new = v.transpose(1, 2).reshape(bsz * t, -1, d)
        attn.write_paged(kc, vc, k_new, v_new, step.slots)
        if t == 1:
            out = attn.paged_decode(q[:, :, 0].contiguous(), kc, vc, step.block_tables, step.context_lens,
                                    scale=scale, max_context_len=step.max_context)  # fmt: skip
            return out[:, :, None]
        k_ctx = kc.flatten(0, 1).index_select(0, step.gather_rows)  # [sum ctx, Hkv, D]
        v_ctx = vc.flatten(0, 1).index_select(0, step.gather_rows)
        q_packed = q.transpose(1, 2).reshape(bsz * t, hq, d)
        out = attn.attention_varlen(q_packed, k_ctx, v_ctx, step.cu_seqlens_q, step.cu_seqlens_k, step.max_new,
                                    scale=scale)  # fmt: skip
        return out.view(bsz, t, hq, d).transpose(1, 2)

    def commit(self) -> None:
        """After every layer has attended: advance lengths and publish newly filled blocks."""
        step = self._step
        if step is None:
            raise RuntimeError("commit without prepare")
        for s, toks in zip(self.seqs, step.tokens, strict=True):
            s.tokens.extend(toks)
            self._publish(s)
        self._step = None

    # -- helpers ---------------------------------------------------------------------------------
    def _publish(self, s: _Seq) -> None:
        """Hash and register the sequence's full blocks not yet published."""
        bs, alloc = self.pool.block_size, self.pool.allocator
        for i in range(len(s.hashes), s.length // bs):
            parent = s.hashes[-1] if s.hashes else None
            block = s.tokens[i * bs : (i + 1) * bs]
            if UNKNOWN in block:  # ids fed from the device, not known here yet (`fill_tokens` publishes it)
                return
            h = block_hash(parent, block)
            s.blocks[i] = alloc.register(s.blocks[i], h)
            s.hashes.append(h)

    def _rows_list(self, s: _Seq, n: int, start: int = 0) -> list[int]:
        """Flat pool rows of the sequence's tokens start..n-1."""
        bs = self.pool.block_size
        return [s.blocks[i // bs] * bs + i % bs for i in range(start, n)]

    def _rows(self, s: _Seq, n: int) -> torch.Tensor:
        return torch.tensor(self._rows_list(s, n), dtype=torch.long, device=self.pool.k.device)


def _cumsum(xs: list[int]) -> list[int]:
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out


class StaticDecode:
    """Fixed-address decode inputs for a captured (CUDA-graph) paged decode step of up to `max_batch` rows.

    The host plans a step as usual (`PagedKVCache.prepare`: blocks allocated, tables built), `load` copies
    the plan into these buffers (padding rows write into a scratch block the pool lends for good and read
    one token of it), and `cache(b, bucket)` is a cache whose `attend` reads the buffers: what a graph
    captured once replays for any step of that batch and context bucket.
    """

    def __init__(self, pool: PagedKVPool, max_batch: int, max_context: int):
        self.pool = pool
        self.max_batch = max_batch
        self.max_blocks = -(-max_context // pool.block_size)
        self.max_context = self.max_blocks * pool.block_size
        (self.scratch_block,) = pool.allocator.allocate(1)
        dev = pool.k.device
        self.write_rows = torch.full((max_batch,), self.scratch_block * pool.block_size, dtype=torch.long,
                                     device=dev)  # fmt: skip
        self.context_lens = torch.ones(max_batch, dtype=torch.int32, device=dev)
        self.block_tables = torch.full((max_batch, self.max_blocks), self.scratch_block, dtype=torch.int32,
                                       device=dev)  # fmt: skip

    def fits(self, view: PagedKVCache) -> bool:
        return all(s.length + 1 <= self.max_context for s in view.seqs)

    def load(self, view: PagedKVCache, b: int) -> int:
        """Plan one decode step of `view`'s rows (ids unknown to the host) and copy it into the buffers;
        returns the step's longest context (after the step)."""
        n = view.batch_size
        view.will_feed([[UNKNOWN]] * n)
        view.prepare(torch.empty((n, 1), device="meta"))
        step = view._step
        width = step.block_tables.shape[1]
        self.write_rows[:n].copy_(step.slots)
        self.context_lens[:n].copy_(step.context_lens)
        self.block_tables[:n, :width].copy_(step.block_tables)
        if b > n:
            self.write_rows[n:b].fill_(self.scratch_block * self.pool.block_size)
            self.context_lens[n:b].fill_(1)
            self.block_tables[n:b, 0].fill_(self.scratch_block)
        return step.max_context

    def cache(self, b: int, max_context: int) -> PagedKVCache:
        """A cache whose one planned step is these buffers' first `b` rows (for the captured layers)."""
        cache = PagedKVCache(self.pool, [])
        cache._released = True
        cache._step = _Step(new_tokens=1, slots=self.write_rows[:b], context_lens=self.context_lens[:b],
                            block_tables=self.block_tables[:b], max_context=max_context)  # fmt: skip
        return cache
