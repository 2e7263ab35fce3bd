"""A Llama-style decoder in one file: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Reads and writes the checkpoint layout of transformers' `LlamaForCausalLM` (config.json +
safetensors with HF key names), so public Llama checkpoints and ours are interchangeable.

The KV cache keeps, per layer, k and v as [B, n_kv_heads, T_cap, head_dim] plus each row's
length. Rows may sit at different lengths: a forward writes row b's new keys at positions
lengths[b] .. lengths[b] + T - 1 and masks everything past them, so a batch of sequences of
different lengths decodes exactly as each would alone.

On CUDA the attention, the KV write and RoPE run on `kernels.attention`'s Triton kernels (flash
prefill over the cache, flash-decoding for single-token steps, one fused RoPE launch); on CPU,
and where a kernel does not cover the shape (head dims other than 16/32/64/128/256), the plain
PyTorch path below runs. `Transformer.use_paged_cache` switches the model to a paged KV cache
(`backends.paged_cache`): a pool of blocks shared by sequences, prefix reuse, `OutOfBlocks`
reported to the caller.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from safetensors.torch import save as st_save
from torch import nn

from archrouter.backends.base import SNAPSHOT_FORMAT, Cache, CausalLM, PackedBatch
from archrouter.backends.paged_cache import PagedKVCache, PagedKVPool, StaticDecode
from archrouter.kernels import attention as attn_kernels
from archrouter.kernels._dispatch import use_triton

FAMILY = "transformer"
DEFAULT_ROPE_THETA = 10_000.0  # LlamaConfig's default when a config names none
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


# ----------------------------------------------------------------------------- config


def _cfg_int(cfg: dict[str, Any], key: str) -> int:
    try:
        return int(cfg[key])
    except KeyError:
        raise ValueError(f"transformer config is missing {key!r}") from None


def head_dim(cfg: dict[str, Any]) -> int:
    return int(cfg.get("head_dim") or _cfg_int(cfg, "hidden_size") // _cfg_int(cfg, "num_attention_heads"))


def num_kv_heads(cfg: dict[str, Any]) -> int:
    return int(cfg.get("num_key_value_heads") or _cfg_int(cfg, "num_attention_heads"))


def rope_inv_freq(cfg: dict[str, Any]) -> torch.Tensor:
    """RoPE inverse frequencies [head_dim / 2] (fp32), as transformers computes them.

    Accepts both spellings transformers reads: the current `rope_parameters` dict and the
    older top-level `rope_theta` + `rope_scaling` (key `type` or `rope_type`).
    """
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if any(isinstance(v, dict) for v in params.values()):
        raise ValueError("per-layer-type rope_parameters are not supported by the Llama family")
    theta = float(params.get("rope_theta", cfg.get("rope_theta") or DEFAULT_ROPE_THETA))
    rope_type = params.get("rope_type", params.get("type", "default"))
    partial = float(params.get("partial_rotary_factor", cfg.get("partial_rotary_factor") or 1.0))
    if partial != 1.0:
        raise ValueError(f"partial_rotary_factor={partial} is not supported (Llama rotates the whole head)")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope type {rope_type!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    dim = head_dim(cfg)
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if rope_type == "linear":
        return inv_freq / float(params["factor"])
    if rope_type == "llama3":
        # Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between.
        factor = float(params["factor"])
        low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
        # transformers gives a top-level original_max_position_embeddings priority (Phi-3 style configs)
        old_ctx = float(
            cfg.get("original_max_position_embeddings")
            or params.get("original_max_position_embeddings")
            or _cfg_int(cfg, "max_position_embeddings")
        )
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_ctx / high) & ~(wavelen > old_ctx / low)
        return torch.where(medium, smoothed, scaled)
    return inv_freq


def random_config(preset: str) -> dict[str, Any]:
    """A LlamaConfig dict for a randomly initialised model sized for our byte tokenizer."""
    presets = {  # hidden, layers, heads, kv heads, mlp width -> ~1M / ~5M / ~25M parameters
        "tiny": (128, 5, 4, 2, 384, 2048, True),
        "small": (256, 7, 8, 4, 688, 2048, True),
        "base": (512, 8, 8, 4, 1408, 4096, True),
        "zoo": (256, 4, 8, 4, 688, 4096, True),  # ~3.0M: the trained zoo checkpoint (evals.tasks)
        # GPU benchmark shapes (head dim 64, the attention kernels' sweet spot): ~180M and ~1.0B
        "180m": (1024, 16, 16, 8, 2816, 8192, True),
        "1b": (2048, 22, 32, 8, 5632, 8192, True),
    }
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    hidden, layers, heads, kv, inter, ctx, tied = presets[preset]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 264,  # ByteTokenizer's 263 ids padded to a multiple of 8
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": hidden // heads,
        "hidden_act": "silu",
        "max_position_embeddings": ctx,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-6,
        "rope_theta": DEFAULT_ROPE_THETA,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "bos_token_id": 256,
        "eos_token_id": [257, 262],
        "pad_token_id": 258,
    }


# ----------------------------------------------------------------------------- cache


class KVCache(Cache):
    """Per layer `k.{i}` / `v.{i}` [B, n_kv_heads, T_cap, head_dim]; `lengths` [B] (long)."""

    family = FAMILY

    # A host copy of `lengths`, so a forward sizes its attention without reading the device (one sync a
    # step otherwise). It is trusted only while `tensors["lengths"]` is the very tensor it mirrors: code
    # that swaps in another lengths tensor makes the next forward read it back once.
    _host: tuple[torch.Tensor, list[int]] | None = None

    @property
    def lengths(self) -> torch.Tensor:
        return self.tensors["lengths"]

    @property
    def host_lengths(self) -> list[int] | None:
        if self._host is not None and self._host[0] is self.tensors["lengths"]:
            return self._host[1]
        return None

    def set_lengths(self, lengths: torch.Tensor, host: list[int]) -> None:
        self.tensors["lengths"] = lengths
        self._host = (lengths, host)

    def gather(self, rows: Sequence[int] | torch.Tensor) -> Self:
        out = super().gather(rows)
        host = self.host_lengths
        if host is not None and not isinstance(rows, torch.Tensor):
            out._host = (out.tensors["lengths"], [host[i] for i in rows])
        return out

    @property
    def num_layers(self) -> int:
        return (len(self.tensors) - 1) // 2

    @property
    def capacity(self) -> int:
        return self.tensors["k.0"].shape[2]

    def k(self, layer: int) -> torch.Tensor:
        return self.tensors[f"k.{layer}"]

    def v(self, layer: int) -> torch.Tensor:
        return self.tensors[f"v.{layer}"]

    def reserve(self, needed: int) -> None:
        """Make room for `needed` positions; grows by doubling so decode is amortised O(1)."""
        cap = self.capacity
        if needed <= cap:
            return
        new_cap = -(-max(needed, 2 * cap, 16) // 16) * 16  # whole 16-token blocks: flash-decoding reads them in place
        for name, t in self.tensors.items():
            if name != "lengths":
                self.tensors[name] = F.pad(t, (0, 0, 0, new_cap - cap))

    @classmethod
    def concat(cls, caches: Sequence[Cache]) -> Self:
        """Join caches row-wise, zero-padding each to the largest T_cap (padding stays masked)."""
        cap = max(c.tensors["k.0"].shape[2] for c in caches)
        out: dict[str, torch.Tensor] = {}
        for name in caches[0].tensors:
            parts = [c.tensors[name] for c in caches]
            if name != "lengths":
                parts = [F.pad(p, (0, 0, 0, cap - p.shape[2])) for p in parts]
            out[name] = torch.cat(parts, 0)
        joined = cls(out, caches[0].meta)
        hosts = [c.host_lengths for c in caches if isinstance(c, KVCache)]
        if len(hosts) == len(caches) and all(h is not None for h in hosts):
            joined._host = (out["lengths"], [n for h in hosts for n in h])
        return joined

    def snapshot(self, row: int = 0) -> bytes:
        """One row's state, trimmed to its length (restore gives T_cap == length)."""
        host = self.host_lengths
        n = host[row] if host is not None else int(self.lengths[row])
        tensors = {
            name: (t[row : row + 1] if name == "lengths" else t[row : row + 1, :, :n]).contiguous().cpu()
            for name, t in self.tensors.items()
        }
        meta = {"format": SNAPSHOT_FORMAT, "family": self.family, "meta": json.dumps(self.meta)}
        return st_save(tensors, meta)


# ----------------------------------------------------------------------------- model


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in fp32 whatever the model dtype, as Llama does
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@dataclass
class Step:
    """What every layer of one forward shares."""

    cos: torch.Tensor | None  # [B, 1, T, D] (plain path)
    sin: torch.Tensor | None
    write_index: torch.Tensor | None  # [B, 1, T, 1]: where each row's new keys go (contiguous cache)
    mask: torch.Tensor | None  # [B, 1, T, S] or None for a prefill from empty (plain path)
    kernels: bool = False  # Triton path: fused RoPE + flash attention kernels
    positions: torch.Tensor | None = None  # [B, T] (kernel path)
    rope_table: torch.Tensor | None = None  # [max_pos, D] cos | sin (kernel path)
    k_lens: torch.Tensor | None = None  # [B] int32 keys per row after this step (kernel path)
    max_len: int = 0


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q [B, H, T, D]; k, v [B, H_kv, S, D]; mask [B, 1, T, S] bool (True = may attend), or None
    for plain causal attention with S == T (a prefill from empty, where SDPA's flash path applies).

    The one place attention is computed, so a flash / paged kernel can replace it.
    """
    gqa = q.shape[1] != k.shape[1]
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


class Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.n_heads = _cfg_int(cfg, "num_attention_heads")
        self.n_kv = num_kv_heads(cfg)
        self.head_dim = head_dim(cfg)
        if self.n_heads % self.n_kv:
            raise ValueError(f"num_attention_heads={self.n_heads} is not a multiple of {self.n_kv} kv heads")
        hidden, bias = _cfg_int(cfg, "hidden_size"), bool(cfg.get("attention_bias", False))
        self.q_proj = nn.Linear(hidden, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor, cache: KVCache | PagedKVCache, layer: int, step: Step) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        if step.kernels:  # one fused launch for q and k, on the [B, T, H, D] layout
            q, k = attn_kernels.apply_rope(q, k, step.positions, step.rope_table)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        else:
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            q = q * step.cos + rotate_half(q) * step.sin
            k = k * step.cos + rotate_half(k) * step.sin
        if isinstance(cache, PagedKVCache):  # the cache writes its blocks and picks prefill / decode
            y = cache.attend(layer, q, k, v)
        else:
            y = self._attend_contiguous(q, k, v, cache, layer, step)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))

    def _attend_contiguous(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache, layer: int, step: Step
    ) -> torch.Tensor:
        B, _, T, _ = q.shape
        # write this step's keys/values at each row's own positions, then read up to the longest row
        index = step.write_index.expand(B, self.n_kv, T, self.head_dim)
        # under bf16 autocast the projections come out bf16 (v) or fp32 (k, through RoPE); the cache keeps its dtype
        cache.k(layer).scatter_(2, index, k.to(cache.k(layer).dtype))
        cache.v(layer).scatter_(2, index, v.to(cache.v(layer).dtype))
        if step.kernels:
            if step.mask is None:  # prefill from empty: this step's keys are all there is
                return attn_kernels.attention_padded(q, k, v, step.k_lens)
            if T == 1:  # flash-decoding straight from the contiguous buffer
                out = attn_kernels.attention_decode_contiguous(
                    q[:, :, 0], cache.k(layer), cache.v(layer), step.k_lens, step.max_len
                )
                return out[:, :, None]
            S = step.max_len
            return attn_kernels.attention_padded(q, cache.k(layer)[:, :, :S], cache.v(layer)[:, :, :S], step.k_lens)
        if step.mask is None:
            return attend(q, k, v, None)
        S = step.mask.shape[-1]
        return attend(q, cache.k(layer)[:, :, :S], cache.v(layer)[:, :, :S], step.mask)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        act = cfg.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"hidden_act={act!r} is not supported (Llama uses 'silu')")
        hidden, inter = _cfg_int(cfg, "hidden_size"), _cfg_int(cfg, "intermediate_size")
        bias = bool(cfg.get("mlp_bias", False))
        self.gate_proj = nn.Linear(hidden, inter, bias=bias)
        self.up_proj = nn.Linear(hidden, inter, bias=bias)
        self.down_proj = nn.Linear(inter, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.input_layernorm = RMSNorm(_cfg_int(cfg, "hidden_size"), eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(_cfg_int(cfg, "hidden_size"), eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | PagedKVCache, layer: int, step: Step) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cache, layer, step)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(CausalLM):
    """Llama decoder. Module names follow transformers' so state dicts map key for key."""

    family = FAMILY

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)
        cfg = self.config
        hidden, vocab = _cfg_int(cfg, "hidden_size"), _cfg_int(cfg, "vocab_size")
        self.model = nn.ModuleDict(
            {
                "embed_tokens": nn.Embedding(vocab, hidden),
                "layers": nn.ModuleList(Block(cfg) for _ in range(_cfg_int(cfg, "num_hidden_layers"))),
                "norm": RMSNorm(hidden, float(cfg.get("rms_norm_eps", 1e-6))),
            }
        )
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        if self.tied:
            self.lm_head.weight = self.model["embed_tokens"].weight
        # fp32 whatever the model dtype (a bf16 inv_freq would shift positions); kept per device
        self._inv_freq = {torch.device("cpu"): rope_inv_freq(cfg)}
        self.n_kv = num_kv_heads(cfg)
        self.head_dim = head_dim(cfg)
        self.kv_pool: PagedKVPool | None = None
        self._rope_tables: dict[torch.device, torch.Tensor] = {}

    @property
    def context_length(self) -> int:
        return _cfg_int(self.config, "max_position_embeddings")

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Llama's initialisation: normal(0, initializer_range) weights, zero biases, unit norms."""
        std = float(self.config.get("initializer_range", 0.02))
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                with torch.no_grad():
                    m.weight.normal_(0.0, std, generator=generator)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    def new_kv_pool(self, num_blocks: int, block_size: int = 16) -> PagedKVPool:
        """A pool of `num_blocks` KV blocks shaped for this model; `pool.new_cache(n)` hands out caches
        over it (the engine keeps its own, so a model shared with other callers is left as it is)."""
        p = self.model["embed_tokens"].weight
        return PagedKVPool(len(self.model["layers"]), num_blocks, block_size, self.n_kv, self.head_dim,
                           p.dtype, p.device)  # fmt: skip

    def use_paged_cache(self, num_blocks: int, block_size: int = 16) -> PagedKVPool:
        """From now on `init_cache` hands out caches over one new pool; returns the pool (its allocator
        says what is free)."""
        self.kv_pool = self.new_kv_pool(num_blocks, block_size)
        return self.kv_pool

    def init_cache(self, batch_size: int) -> KVCache | PagedKVCache:
        if self.kv_pool is not None:
            return self.kv_pool.new_cache(batch_size)
        p = self.model["embed_tokens"].weight
        tensors = {"lengths": torch.zeros(batch_size, dtype=torch.long, device=p.device)}
        for i in range(len(self.model["layers"])):
            for kind in ("k", "v"):
                tensors[f"{kind}.{i}"] = p.new_zeros(batch_size, self.n_kv, 0, self.head_dim)
        cache = KVCache(tensors)
        cache.set_lengths(tensors["lengths"], [0] * batch_size)
        return cache

    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, T, head_dim] for integer positions [B, T]."""
        freqs = positions[..., None].float() * self._inv_freq_on(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]

    def _kernels(self, x: torch.Tensor) -> bool:
        """The Triton path: CUDA, kernels enabled, a head dim the kernels are built for, and no
        training (the attention kernels are forward-only: gradients take RoPE + SDPA in torch)."""
        if torch.is_grad_enabled() and self.model["embed_tokens"].weight.requires_grad:
            return False
        return use_triton(x) and self.head_dim in attn_kernels.SUPPORTED_HEAD_DIMS

    def _rope_table(self, device: torch.device, needed: int) -> torch.Tensor:
        """The fused RoPE kernel's cos | sin table [n, head_dim] (fp32), grown by doubling."""
        table = self._rope_tables.get(device)
        if table is None or table.shape[0] < needed:
            n = max(needed, 2 * (table.shape[0] if table is not None else 0), 4096)
            table = attn_kernels.rope_cos_sin(self._inv_freq_on(device), n)
            self._rope_tables[device] = table
        return table

    def _inv_freq_on(self, dev: torch.device) -> torch.Tensor:
        if dev not in self._inv_freq:
            self._inv_freq[dev] = self._inv_freq[torch.device("cpu")].to(dev)
        return self._inv_freq[dev]

    def _forward_paged(self, input_ids: torch.Tensor, cache: PagedKVCache) -> tuple[torch.Tensor, PagedKVCache]:
        B, T = input_ids.shape
        host = [s.length for s in cache.seqs]  # the host knows every row's length: no device read
        lengths = torch.tensor(host, dtype=torch.long)
        dev = input_ids.device
        lengths = (lengths.pin_memory() if dev.type == "cuda" else lengths).to(dev, non_blocking=True)
        positions = lengths[:, None] + torch.arange(T, device=dev)
        cache.prepare(input_ids)  # allocates blocks; OutOfBlocks leaves the cache as it was
        x = self._paged_layers(self.model["embed_tokens"](input_ids), cache, positions, max(host) + T)
        cache.commit()
        return self.lm_head(self.model["norm"](x)).float(), cache

    def _paged_layers(self, x: torch.Tensor, cache: PagedKVCache, positions: torch.Tensor,
                      needed: int | None) -> torch.Tensor:
        """The decoder layers over a paged cache: the fused-RoPE kernel path where the kernels run (its table
        grown to `needed` positions; None: the table as allocated, since a captured graph keeps its address),
        else RoPE in torch."""
        if self._kernels(x):
            table = self._rope_tables[x.device] if needed is None else self._rope_table(x.device, needed)
            step = Step(None, None, None, None, kernels=True, positions=positions, rope_table=table)
        else:
            cos, sin = self._rope(positions, x.dtype)
            step = Step(cos, sin, None, None)
        for i, block in enumerate(self.model["layers"]):
            x = block(x, cache, i, step)
        return x

    # -- captured paged decode (engine.graphs): the host plans, the graph replays the layers -------------

    def static_decode_buffers(self, max_batch: int, max_context: int, pool: PagedKVPool) -> StaticDecode:
        static = StaticDecode(pool, max_batch, min(max_context, self.context_length))
        self._rope_table(pool.k.device, static.max_context + 1)  # allocated now: a graph keeps its address
        return static

    def prepare_static(self, view: PagedKVCache, static: StaticDecode, b: int) -> int | None:
        """Plan a decode step of `view` into `static`; its context bucket (None: too long for the buffers)."""
        if not static.fits(view):
            return None
        longest = static.load(view, b)
        bucket = 512
        while bucket < longest:
            bucket *= 2
        return min(bucket, static.max_context)

    def decode_static(self, ids: torch.Tensor, static: StaticDecode, b: int, max_context: int) -> torch.Tensor:
        """The layers of one decode step over `static`'s first `b` rows: logits [b, vocab] (what is captured)."""
        cache = static.cache(b, max_context)
        positions = cache._step.context_lens[:, None].long() - 1
        x = self._paged_layers(self.model["embed_tokens"](ids), cache, positions, None)
        return self.lm_head(self.model["norm"](x[:, -1])).float()

    @staticmethod
    def commit_static(view: PagedKVCache) -> None:
        view.commit()

    @staticmethod
    def abort_static(view: PagedKVCache) -> None:
        view._step = None  # the blocks it allocated stay with their rows; the eager step reuses them

    def forward_packed(self, input_ids: torch.Tensor, cache: PagedKVCache, batch: PackedBatch) -> torch.Tensor:
        """Prompt chunks of several sequences in one forward, no padding: input_ids [N] packed by `batch`,
        row i of the paged `cache` taking `batch.lengths[i]` tokens (its K/V written into its blocks).
        Logits [S, vocab] of every row's last token (the head runs on S rows, not N)."""
        if not isinstance(cache, PagedKVCache):
            raise TypeError("packed prefill needs a PagedKVCache (the engine's block pool)")
        dev = input_ids.device
        host_pos = [s.length + j for s, n in zip(cache.seqs, batch.lengths, strict=True) for j in range(n)]
        positions = torch.tensor(host_pos, dtype=torch.long)
        positions = (positions.pin_memory() if dev.type == "cuda" else positions).to(dev, non_blocking=True)[None]
        cache.prepare(input_ids[None], batch.lengths)
        x = self._paged_layers(self.model["embed_tokens"](input_ids[None]), cache, positions, max(host_pos) + 1)
        cache.commit()
        return self.lm_head(self.model["norm"](x[0].index_select(0, batch.last))).float()

    def forward(
        self, input_ids: torch.Tensor, cache: Cache | None = None
    ) -> tuple[torch.Tensor, KVCache | PagedKVCache]:
        """Logits [B, T, vocab] (fp32) for `input_ids` [B, T] appended to `cache` (updated in place)."""
        B, T = input_ids.shape
        if cache is None:
            cache = self.init_cache(B)
        if not isinstance(cache, KVCache | PagedKVCache):
            raise TypeError(f"transformer needs a KVCache or PagedKVCache, got {type(cache).__name__}")
        if cache.batch_size != B:
            raise ValueError(f"cache holds {cache.batch_size} rows, input has {B}")
        if isinstance(cache, PagedKVCache):
            return self._forward_paged(input_ids, cache)
        lengths = cache.lengths
        positions = lengths[:, None] + torch.arange(T, device=lengths.device)  # [B, T]
        host = cache.host_lengths
        if host is None:  # a restored cache, or lengths set from outside: read them once, then track them
            host = lengths.tolist()
        past = max(host) if B else 0  # sizes the attention from the host copy: no device read
        S = past + T
        cache.reserve(S)
        kernels = self._kernels(cache.k(0)) if len(self.model["layers"]) else False
        # key j is visible to query (b, t) iff j <= its position: causal, and blind to other rows'
        # padding. With nothing cached that is plain causal attention.
        mask = None
        if past:
            mask = (torch.arange(S, device=lengths.device) <= positions[..., None])[:, None]  # [B, 1, T, S]
        write_index = positions[:, None, :, None]  # [B, 1, T, 1]

        x = self.model["embed_tokens"](input_ids)
        if kernels:
            table = self._rope_table(x.device, S)
            step = Step(None, None, write_index, mask, kernels=True, positions=positions, rope_table=table,
                        k_lens=(lengths + T).to(torch.int32), max_len=S)  # fmt: skip
        else:
            cos, sin = self._rope(positions, x.dtype)
            step = Step(cos, sin, write_index, mask)
        for i, block in enumerate(self.model["layers"]):
            x = block(x, cache, i, step)
        logits = self.lm_head(self.model["norm"](x)).float()
        cache.set_lengths(lengths + T, [n + T for n in host])
        return logits, cache


# ----------------------------------------------------------------------------- checkpoints


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.exists():
        return load_file(single)
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        weights: dict[str, torch.Tensor] = {}
        for shard in shards:
            weights.update(load_file(folder / shard))
        return weights
    raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")


def from_config(
    config: dict[str, Any],
    *,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Transformer:
    """A freshly initialised model (Llama init) for `config`; `seed` makes it reproducible."""
    model = Transformer(config)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    model.init_weights(gen)
    return model.to(device=device, dtype=dtype).eval()


def load(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Transformer:
    """Read a `LlamaForCausalLM.save_pretrained` folder (single or sharded safetensors)."""
    folder = Path(path)
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type", "llama") != "llama":
        raise ValueError(f"{folder}: model_type {config.get('model_type')!r} is not 'llama'")
    with torch.device("meta"):
        model = Transformer(config)
    weights = _read_weights(folder)
    expected = set(model.state_dict())
    if model.tied:
        expected.discard("lm_head.weight")
        # some tied checkpoints also store the head; it is the embedding, so drop it
        weights.pop("lm_head.weight", None)
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: checkpoint does not match the config; missing keys: {missing or 'none'}; "
            f"unexpected keys: {unexpected or 'none'}"
        )
    shapes = {k: t.shape for k, t in model.state_dict().items()}
    wrong = [
        f"{name} has shape {tuple(t.shape)}, config implies {tuple(shapes[name])}"
        for name, t in sorted(weights.items())
        if t.shape != shapes[name]
    ]
    if wrong:
        raise ValueError(f"{folder}: checkpoint does not match the config; " + "; ".join(wrong))
    # the model was built on the meta device: assign the checkpoint's tensors in place of its parameters
    model.load_state_dict(
        {k: t.to(device=device, dtype=dtype) for k, t in weights.items()}, strict=False, assign=True
    )
    if model.tied:
        model.lm_head.weight = model.model["embed_tokens"].weight
    model._inv_freq = {torch.device("cpu"): rope_inv_freq(config)}
    return model.eval()


def save(model: Transformer, path: str | Path) -> None:
    """Write config.json + model.safetensors in `LlamaForCausalLM.save_pretrained`'s layout."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(model.config)
    config.update(architectures=["LlamaForCausalLM"], model_type="llama")
    config["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: t.detach().contiguous().cpu() for k, t in model.state_dict().items()}
    if model.tied:
        state.pop("lm_head.weight")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
