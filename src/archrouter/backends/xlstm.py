"""The xLSTM family: mLSTM (matrix memory) and sLSTM (scalar memory, state tracking) models.

Two architectures, one cache, one `load`:

- ``xLSTMForCausalLM``: the xLSTM-7B architecture as transformers' ``xLSTMForCausalLM`` defines it
  (pre-norm mLSTM layer with soft-capped exponential gates + gated SiLU FFN per block, RMSNorm,
  soft-capped logits). Checkpoints are its ``save_pretrained`` folders (config.json with
  ``"model_type": "xlstm"`` + model.safetensors); parameter names match transformers'.
- ``xLSTMLMModel``: stacks mixing mLSTM and sLSTM blocks as the ``xlstm`` package builds them
  (``slstm_at``: the sLSTM block positions). Checkpoints: that model's state dict as
  model.safetensors plus a config.json written by `save` (``"model_type": "xlstm_lm"``, the
  ``xLSTMLMModelConfig`` fields nested as the package's dataclasses nest them). Parameter names
  match the package's.

Every recurrent op goes through `kernels.mlstm` / `kernels.slstm` with the cache tensors as the
state pool (slot = batch row), so prefill and decode update the cache in place.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load_file, save_file
from torch import nn

from archrouter.backends.base import Cache, CausalLM, PackedBatch
from archrouter.kernels.mlstm import mlstm_chunkwise, mlstm_step
from archrouter.kernels.mlstm.train import mlstm_chunkwise_dense
from archrouter.kernels.slstm import slstm_scan, slstm_step
from archrouter.kernels.slstm.train import slstm_scan_dense

BYTE_VOCAB = 264  # 256 bytes + 8 specials, shared with the other families' byte-level presets


# ----------------------------------------------------------------------------- cache


class XLSTMCache(Cache):
    """Per-layer recurrent state, batch first, fp32 except conv windows (model dtype).

    mLSTM layer l: ``{l}.C`` (B, H, K, V), ``{l}.n`` (B, H, K), ``{l}.m`` (B, H).
    sLSTM layer l: ``{l}.h``, ``{l}.c``, ``{l}.n``, ``{l}.m`` (B, NH, D); a fresh m is -inf.
    Causal conv (xlstm package blocks): ``{l}.conv`` (B, kernel-1, width), the last inputs.
    """

    family = "xlstm"

    def layer(self, idx: int, *names: str) -> list[torch.Tensor]:
        return [self.tensors[f"{idx}.{name}"] for name in names]


def _batch_rows(cache: Cache, B: int, T: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots and cumulative offsets of a dense (B, T) batch: row b is pool slot b."""
    slots = torch.arange(B, dtype=torch.int32, device=device)
    cu = torch.arange(0, (B + 1) * T, T, dtype=torch.int32, device=device)
    return slots, cu


MLSTM_CHUNK = 64  # the Triton chunkwise kernel's chunk size


@dataclass
class Rows:
    """Where one forward's sequences live in the state pool, computed once and shared by every layer.

    Dense (B, T) batches: row b reads and writes pool row slots[b] (slots None: row b itself). Packed
    batches (`packed`): flat tokens, sequence i in pool row packed.slots[i]."""

    slots: torch.Tensor  # [S] int32
    cu: torch.Tensor  # [S + 1] int32
    dense: tuple[int, int] | None = None
    packed: PackedBatch | None = None
    layout: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # mLSTM chunks (packed)
    identity: bool = False  # dense rows that are pool rows 0..B-1 (no slot indexing needed)

    @classmethod
    def of_dense(cls, B: int, T: int, device: torch.device, slots: torch.Tensor | None = None) -> Rows:
        own, cu = _batch_rows(None, B, T, device)
        if slots is None:
            return cls(own, cu, dense=(B, T), identity=True)
        return cls(slots.to(device=device, dtype=torch.int32), cu, dense=(B, T))

    @classmethod
    def of_packed(cls, batch: PackedBatch) -> Rows:
        # the mLSTM chunk layout from the host lengths: no device read inside the forward
        coff, seq, start = [0], [], []
        for i, (b, n) in enumerate(zip([0, *_running(batch.lengths)], batch.lengths, strict=False)):
            c = -(-n // MLSTM_CHUNK)
            coff.append(coff[-1] + c)
            seq += [i] * c
            start += [b + j * MLSTM_CHUNK for j in range(c)]
        host = torch.tensor(coff + seq + start, dtype=torch.int32)
        dev = batch.cu_seqlens.device
        if dev.type == "cuda":
            host = host.pin_memory()
        t = host.to(dev, non_blocking=True)
        a, b = len(coff), len(coff) + len(seq)
        return cls(batch.slots, batch.cu_seqlens, packed=batch, layout=(t[:a], t[a:b], t[b:]))


def _running(lengths: list[int]) -> list[int]:
    out, total = [], 0
    for n in lengths:
        total += n
        out.append(total)
    return out


def soft_cap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    return x if cap is None else cap * torch.tanh(x / cap)


def round_up(x: float, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


# ------------------------------------------------------------------- xLSTM-7B (transformers)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight
        return y if self.bias is None else y + self.bias


class HeadLayerNorm(nn.Module):
    """LayerNorm over each head's features (x: (..., H, D)), one affine over all H*D."""

    def __init__(self, heads: int, dim: int, eps: float, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(heads * dim))
        self.bias = nn.Parameter(torch.zeros(heads * dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = (xf - xf.mean(-1, keepdim=True)) * torch.rsqrt(
            xf.var(-1, keepdim=True, unbiased=False) + self.eps
        )
        y = y.to(x.dtype).flatten(-2) * self.weight
        return y if self.bias is None else y + self.bias


class MLSTMLayer(nn.Module):
    """transformers' xLSTMLayer: q, k, v, output gate and the two scalar gates per head."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        d, nh, bias = cfg["hidden_size"], cfg["num_heads"], cfg["use_bias"]
        self.nh, self.cap, self.eps, self.fused = (
            nh,
            cfg["gate_soft_cap"],
            cfg["eps"],
            cfg["weight_mode"] == "fused",
        )
        self.qk_dim, self.v_dim = int(d * cfg["qk_dim_factor"]), int(d * cfg["v_dim_factor"])
        if self.fused:
            self.qkv_opreact = nn.Linear(d, 2 * self.qk_dim + 2 * self.v_dim, bias=bias)
            self.ifgate_preact = nn.Linear(d, 2 * nh, bias=True)
        else:
            self.q = nn.Linear(d, self.qk_dim, bias=bias)
            self.k = nn.Linear(d, self.qk_dim, bias=bias)
            self.v = nn.Linear(d, self.v_dim, bias=bias)
            self.ogate_preact = nn.Linear(d, self.v_dim, bias=bias)
            self.igate_preact = nn.Linear(d, nh, bias=True)
            self.fgate_preact = nn.Linear(d, nh, bias=True)
        self.multihead_norm = HeadLayerNorm(nh, self.v_dim // nh, cfg["norm_eps"], bias)
        self.out_proj = nn.Linear(self.v_dim, d, bias=bias)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        dk, dv = self.qk_dim // self.nh, self.v_dim // self.nh
        return {"C": (self.nh, dk, dv), "n": (self.nh, dk), "m": (self.nh,)}

    def forward(self, x: torch.Tensor, cache: XLSTMCache, idx: int, rows: Rows | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        if self.fused:
            q, k, v, o = self.qkv_opreact(x).split([self.qk_dim, self.qk_dim, self.v_dim, self.v_dim], -1)
            ig, fg = soft_cap(self.ifgate_preact(x), self.cap).split([self.nh, self.nh], -1)
        else:
            q, k, v, o = self.q(x), self.k(x), self.v(x), self.ogate_preact(x)
            ig, fg = soft_cap(self.igate_preact(x), self.cap), soft_cap(self.fgate_preact(x), self.cap)
        h = _mlstm(q, k, v, ig, fg, cache, idx, self.nh, scale=None, eps=self.eps, rows=rows)
        return self.out_proj(torch.sigmoid(o) * self.multihead_norm(h.view(B, T, self.nh, -1)))


def _mlstm(q, k, v, ig, fg, cache: XLSTMCache, idx: int, nh: int, *, scale, eps, rows: Rows | None = None
           ) -> torch.Tensor:  # fmt: skip
    """(B, T, H*D) projections -> (B, T, H, V) through the kernels, cache rows = slots."""
    B, T, _ = q.shape
    C, n, m = cache.layer(idx, "C", "n", "m")
    rows = rows or Rows.of_dense(B, T, q.device)
    slots, cu = rows.slots, rows.cu
    args = (
        q.reshape(B * T, nh, -1),
        k.reshape(B * T, nh, -1),
        v.reshape(B * T, nh, -1),
        ig.reshape(B * T, nh),
        fg.reshape(B * T, nh),
        C,
        n,
        m,
        slots,
    )
    if T > 1 and torch.is_grad_enabled() and q.requires_grad:  # training: differentiable and batched
        h, *last = mlstm_chunkwise_dense(q.view(B, T, nh, -1), k.view(B, T, nh, -1), v.view(B, T, nh, -1),
                                         ig.view(B, T, nh), fg.view(B, T, nh), C, n, m, scale=scale, eps=eps)
        with torch.no_grad():
            for pool, value in zip((C, n, m), last, strict=True):
                pool.copy_(value)
    elif T == 1 if rows.packed is None else rows.packed.num_tokens == len(rows.packed.lengths):  # one token each
        h = mlstm_step(*args, scale=scale, eps=eps)
    else:
        h = mlstm_chunkwise(*args, cu, scale=scale, eps=eps, dense=rows.dense, layout=rows.layout)
    return h.view(B, T, nh, -1)


class FeedForward(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        d, bias = cfg["hidden_size"], cfg["use_bias"]
        self.up = round_up(d * cfg["ffn_proj_factor"], cfg["ffn_round_up_to_multiple_of"])
        self.fused = cfg["weight_mode"] == "fused"
        if self.fused:
            self.proj_up_gate_z = nn.Linear(d, 2 * self.up, bias=bias)
        else:
            self.proj_up_gate = nn.Linear(d, self.up, bias=bias)
            self.proj_up = nn.Linear(d, self.up, bias=bias)
        self.proj_down = nn.Linear(self.up, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            gate, z = self.proj_up_gate_z(x).split([self.up, self.up], -1)
        else:
            gate, z = self.proj_up_gate(x), self.proj_up(x)
        return self.proj_down(F.silu(gate) * z)


class XLSTMBlock(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        d, eps, bias = cfg["hidden_size"], cfg["norm_eps"], cfg["use_bias"]
        self.norm_mlstm = RMSNorm(d, eps, bias)
        self.mlstm_layer = MLSTMLayer(cfg)
        self.norm_ffn = RMSNorm(d, eps, bias)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cache: XLSTMCache, idx: int, rows: Rows | None = None) -> torch.Tensor:
        x = x + self.mlstm_layer(self.norm_mlstm(x), cache, idx, rows)
        return x + self.ffn(self.norm_ffn(x))


class Backbone(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.embeddings = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.blocks = nn.ModuleList(XLSTMBlock(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.out_norm = RMSNorm(cfg["hidden_size"], cfg["norm_eps"])


HF_DEFAULTS: dict[str, Any] = {
    "model_type": "xlstm",
    "architectures": ["xLSTMForCausalLM"],
    "vocab_size": 50304,
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_heads": 8,
    "use_bias": False,
    "norm_eps": 1e-6,
    "eps": 1e-6,
    "qk_dim_factor": 0.5,
    "v_dim_factor": 1.0,
    "gate_soft_cap": 15.0,
    "output_logit_soft_cap": 30.0,
    "ffn_proj_factor": 2.667,
    "ffn_round_up_to_multiple_of": 64,
    "weight_mode": "single",
    "tie_word_embeddings": False,
    "add_out_norm": True,
    "chunk_size": 64,
}


class XLSTMForCausalLM(CausalLM):
    """The xLSTM-7B architecture (transformers' ``xLSTMForCausalLM``), mLSTM blocks only."""

    family = "xlstm"

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        cfg = {**HF_DEFAULTS, **config}
        cfg["hidden_size"] = cfg.get("hidden_size") or cfg["embedding_dim"]
        cfg["num_hidden_layers"] = cfg.get("num_hidden_layers") or cfg["num_blocks"]
        self.config = cfg
        self.backbone = Backbone(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg["tie_word_embeddings"]:
            self.lm_head.weight = self.backbone.embeddings.weight

    def init_cache(self, batch_size: int) -> XLSTMCache:
        p = next(self.parameters())
        tensors = {}
        for idx, block in enumerate(self.backbone.blocks):
            for name, shape in block.mlstm_layer.state_shapes().items():
                tensors[f"{idx}.{name}"] = torch.zeros(
                    batch_size, *shape, dtype=torch.float32, device=p.device
                )
        return XLSTMCache(tensors, {"arch": "xLSTMForCausalLM"})

    def forward(self, input_ids: torch.Tensor, cache: Cache | None = None, *, slots: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, XLSTMCache]:  # fmt: skip
        """Logits [B, T, vocab]; `slots` [B] (optional): the cache is a state pool and row b of the
        batch reads and writes pool row slots[b]."""
        cache = _check_cache(self, input_ids, cache, slots)
        rows = Rows.of_dense(*input_ids.shape, input_ids.device, slots)
        x = self.backbone.embeddings(input_ids)
        for idx, block in enumerate(self.backbone.blocks):
            x = block(x, cache, idx, rows)
        logits = self.lm_head(self.backbone.out_norm(x)).float()
        return soft_cap(logits, self.config["output_logit_soft_cap"]), cache

    def forward_packed(self, input_ids: torch.Tensor, cache: XLSTMCache, batch: PackedBatch) -> torch.Tensor:
        """Prompt chunks packed by `batch` (input_ids [N]); logits [S, vocab] of each sequence's last token."""
        rows = Rows.of_packed(batch)
        x = self.backbone.embeddings(input_ids[None])
        for idx, block in enumerate(self.backbone.blocks):
            x = block(x, cache, idx, rows)
        logits = self.lm_head(self.backbone.out_norm(x[0].index_select(0, batch.last))).float()
        return soft_cap(logits, self.config["output_logit_soft_cap"])


def _check_cache(model: CausalLM, input_ids: torch.Tensor, cache: Cache | None, slots: torch.Tensor | None
                 ) -> Cache:  # fmt: skip
    B = input_ids.shape[0]
    if cache is None:
        if slots is not None:
            raise ValueError("slots index into a cache: pass the pool")
        return model.init_cache(B)
    if slots is None and cache.batch_size != B:
        raise ValueError(f"cache holds {cache.batch_size} sequences, input_ids {B}; gather() the rows or pass slots")
    return cache


# ------------------------------------------------------------------ xlstm package: mLSTM blocks


class LayerNorm(nn.Module):
    """The xlstm package's LayerNorm: weight stored as an offset from 1, optional bias, eps 1e-5."""

    def __init__(self, dim: int, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), 1.0 + self.weight, self.bias, self.eps)


class MultiHeadLayerNorm(LayerNorm):
    """Group norm with one group per head; x (..., NH, D) -> (..., NH*D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nh = x.shape[-2]
        y = F.group_norm(x.reshape(-1, self.dim), nh, 1.0 + self.weight, self.bias, self.eps)
        return y.view(*x.shape[:-2], self.dim)


class LinearHeadwise(nn.Module):
    """Block-diagonal projection: ``weight`` (heads, out/heads, in/heads)."""

    def __init__(self, features: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.weight = nn.Parameter(torch.empty(heads, features // heads, features // heads))
        self.bias = nn.Parameter(torch.zeros(features)) if bias else None
        nn.init.normal_(self.weight, std=math.sqrt(2 / 5 / self.weight.shape[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("...hd,hod->...ho", x.unflatten(-1, (self.heads, -1)), self.weight).flatten(-2)
        return y if self.bias is None else y + self.bias


class CausalConv(nn.Module):
    """Depthwise causal conv1d whose last `kernel-1` inputs are kept in the cache as ``{l}.conv``."""

    def __init__(self, features: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(features, features, kernel, padding=kernel - 1, groups=features, bias=True)

    def forward(self, x: torch.Tensor, cache: XLSTMCache, idx: int, rows: Rows | None = None) -> torch.Tensor:
        state = cache.tensors[f"{idx}.conv"]
        if rows is not None and rows.packed is not None:
            return self._packed(x, state, rows.packed)
        own = rows is None or rows.identity
        prev = state if own else state[rows.slots.long()]
        xp = torch.cat([prev.to(x.dtype), x], 1)
        if own:
            state.copy_(xp[:, -(self.kernel - 1) :])  # in place: the cache is a pool (and CUDA-graph safe)
        else:
            state[rows.slots.long()] = xp[:, -(self.kernel - 1) :].to(state.dtype)
        y = F.conv1d(xp.transpose(1, 2), self.conv.weight, self.conv.bias, groups=xp.shape[-1])
        return y.transpose(1, 2)

    def _packed(self, x: torch.Tensor, state: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        """Packed sequences x [1, N, W]: each sequence's window starts from its slot's kept inputs. The
        flat tokens are laid out with each sequence's k-1 kept inputs before it, then read k times shifted."""
        k1, (n, w) = self.kernel - 1, x.shape[1:]
        s = len(batch.lengths)
        slots = batch.slots.long()
        tok = torch.arange(n, device=x.device) + (batch.seq_of_token + 1) * k1  # each token's row in ext
        lead = (batch.first + torch.arange(s, device=x.device) * k1)[:, None] + torch.arange(k1, device=x.device)
        ext = x.new_empty(n + s * k1, w)
        ext[tok] = x[0]
        ext[lead.flatten()] = state[slots].to(x.dtype).flatten(0, 1)
        weight = self.conv.weight[:, 0]  # [W, kernel]
        y = self.conv.bias.to(x.dtype).expand(n, w).clone() if self.conv.bias is not None else x.new_zeros(n, w)
        for j in range(self.kernel):
            y = y + ext[tok - k1 + j] * weight[:, j]
        end = (batch.last + (torch.arange(s, device=x.device) + 1) * k1)[:, None]
        state[slots] = ext[(end - k1 + 1 + torch.arange(k1, device=x.device)).flatten()].view(s, k1, w).to(state.dtype)
        return y[None]


class PackageMLSTMLayer(nn.Module):
    """The xlstm package's mLSTMLayer: up-projection, conv, headwise q/k/v, mLSTM cell, skip, gate."""

    def __init__(self, d: int, mcfg: MLSTMLayerConfig, bias: bool):
        super().__init__()
        self.inner = proj_dim(mcfg.proj_factor, d, mcfg)
        self.nh = mcfg.num_heads
        proj_heads = self.inner // mcfg.qkv_proj_blocksize
        self.proj_up = nn.Linear(d, 2 * self.inner, bias=bias)
        self.q_proj = LinearHeadwise(self.inner, proj_heads, bias)
        self.k_proj = LinearHeadwise(self.inner, proj_heads, bias)
        self.v_proj = LinearHeadwise(self.inner, proj_heads, bias)
        self.conv1d = CausalConv(self.inner, mcfg.conv1d_kernel_size)
        self.mlstm_cell = nn.Module()
        self.mlstm_cell.igate = nn.Linear(3 * self.inner, self.nh)
        self.mlstm_cell.fgate = nn.Linear(3 * self.inner, self.nh)
        self.mlstm_cell.outnorm = MultiHeadLayerNorm(self.inner)
        self.learnable_skip = nn.Parameter(torch.ones(self.inner))
        self.proj_down = nn.Linear(self.inner, d, bias=bias)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        dh = self.inner // self.nh
        return {
            "C": (self.nh, dh, dh),
            "n": (self.nh, dh),
            "m": (self.nh,),
            "conv": (self.conv1d.kernel - 1, self.inner),
        }

    def forward(self, x: torch.Tensor, cache: XLSTMCache, idx: int, rows: Rows | None = None) -> torch.Tensor:
        xm, z = self.proj_up(x).split([self.inner, self.inner], -1)
        xc = F.silu(self.conv1d(xm, cache, idx, rows))
        q, k, v = self.q_proj(xc), self.k_proj(xc), self.v_proj(xm)
        gates_in = torch.cat([q, k, v], -1)
        ig, fg = self.mlstm_cell.igate(gates_in), self.mlstm_cell.fgate(gates_in)
        # the package scales k (not q) by D^-1/2; doing the same keeps our states equal to its states
        k = k * (self.inner // self.nh) ** -0.5
        h = _mlstm(q, k, v, ig, fg, cache, idx, self.nh, scale=1.0, eps=1e-6, rows=rows)
        h = self.mlstm_cell.outnorm(h) + self.learnable_skip * xc
        return self.proj_down(h * F.silu(z))


class PackageBlock(nn.Module):
    """xlstm package xLSTMBlock: pre-norm residual around the cell layer (+ optional gated FFN)."""

    def __init__(self, xlstm: nn.Module, ffn: nn.Module | None, d: int):
        super().__init__()
        self.xlstm_norm = LayerNorm(d)
        self.xlstm = xlstm
        if ffn is not None:
            self.ffn_norm = LayerNorm(d)
            self.ffn = ffn
        else:
            self.ffn = None

    def forward(self, x: torch.Tensor, cache: XLSTMCache, idx: int, rows: Rows | None = None) -> torch.Tensor:
        x = x + self.xlstm(self.xlstm_norm(x), cache, idx, rows)
        return x if self.ffn is None else x + self.ffn(self.ffn_norm(x))


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")  # the package's other fields (init schemes, dtypes) ride along


class MLSTMLayerConfig(_Section):
    conv1d_kernel_size: int = 4
    qkv_proj_blocksize: int = 4
    num_heads: int = 4
    proj_factor: float = 2.0
    round_proj_up_dim_up: bool = True
    round_proj_up_to_multiple_of: int = 64


class SLSTMLayerConfig(_Section):
    num_heads: int = 4
    conv1d_kernel_size: int = 4


class FeedForwardConfig(_Section):
    proj_factor: float = 1.3
    act_fn: Literal["gelu", "relu", "relu^2", "sigmoid", "swish", "selu"] = "gelu"
    round_proj_up_dim_up: bool = True
    round_proj_up_to_multiple_of: int = 64


class MLSTMBlockConfig(_Section):
    mlstm: MLSTMLayerConfig = Field(default_factory=MLSTMLayerConfig)


class SLSTMBlockConfig(_Section):
    slstm: SLSTMLayerConfig = Field(default_factory=SLSTMLayerConfig)
    feedforward: FeedForwardConfig | None = Field(default_factory=FeedForwardConfig)


class XLSTMLMConfig(_Section):
    """config.json of an ``xLSTMLMModel`` checkpoint: the package's ``xLSTMLMModelConfig`` fields,
    nested as its dataclasses nest them, plus the two keys that tell `load` which model this is."""

    model_type: Literal["xlstm_lm"] = "xlstm_lm"
    architecture: Literal["xLSTMLMModel"] = "xLSTMLMModel"
    vocab_size: int = BYTE_VOCAB
    embedding_dim: int = 128
    num_blocks: int = 2
    context_length: int = -1
    slstm_at: list[int] | Literal["all"] = Field(default_factory=list)
    tie_weights: bool = False
    add_post_blocks_norm: bool = True
    bias: bool = False
    mlstm_block: MLSTMBlockConfig | None = Field(default_factory=MLSTMBlockConfig)
    slstm_block: SLSTMBlockConfig | None = Field(default_factory=SLSTMBlockConfig)

    @model_validator(mode="after")
    def _blocks(self) -> XLSTMLMConfig:
        if self.mlstm_block is None or self.slstm_at == "all":  # the package's rule
            self.slstm_at = list(range(self.num_blocks))
        if any(not 0 <= i < self.num_blocks for i in self.slstm_at):
            raise ValueError(f"slstm_at {self.slstm_at} outside 0..{self.num_blocks - 1}")
        if self.slstm_at and self.slstm_block is None:
            raise ValueError("slstm_at names blocks but slstm_block is null")
        return self


def proj_dim(factor: float, d: int, section: MLSTMLayerConfig | FeedForwardConfig) -> int:
    """The package's UpProjConfigMixin: factor * d rounded (up or down) to a multiple."""
    mult = section.round_proj_up_to_multiple_of
    steps = factor * d / mult
    return int((math.ceil(steps) if section.round_proj_up_dim_up else math.floor(steps)) * mult)


# --- the sLSTM block of the xlstm package's xLSTMLMModel -----------------------------------------
# Parameter names and shapes are the package's (``slstm_cell._recurrent_kernel_`` (NH, 4*D, D) and
# ``slstm_cell._bias_`` (4*NH*D) in its vanilla layout), so its state dicts load unchanged.

_ACT = {
    "gelu": F.gelu,
    "relu": F.relu,
    "relu^2": lambda x: F.relu(x).square(),
    "sigmoid": torch.sigmoid,
    "swish": F.silu,
    "selu": F.selu,
}


class GatedFeedForward(nn.Module):
    def __init__(self, d: int, up: int, act: str, bias: bool):
        super().__init__()
        self.up, self.act = up, _ACT[act]
        self.proj_up = nn.Linear(d, 2 * up, bias=bias)
        self.proj_down = nn.Linear(up, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, z = self.proj_up(x).split([self.up, self.up], -1)
        return self.proj_down(self.act(gate) * z)


def package_feedforward(d: int, fcfg: FeedForwardConfig, bias: bool) -> GatedFeedForward:
    return GatedFeedForward(d, proj_dim(fcfg.proj_factor, d, fcfg), fcfg.act_fn, bias)


class SLSTMLayer(nn.Module):
    """conv -> headwise gate projections -> sLSTM recurrence (in the kernel) -> per-head group norm."""

    def __init__(self, d: int, scfg: SLSTMLayerConfig):
        super().__init__()
        self.d, self.nh = d, scfg.num_heads
        self.dh = d // self.nh
        self.kernel = scfg.conv1d_kernel_size
        if self.kernel > 0:
            self.conv1d = CausalConv(d, self.kernel)
        self.fgate = LinearHeadwise(d, self.nh, bias=False)
        self.igate = LinearHeadwise(d, self.nh, bias=False)
        self.zgate = LinearHeadwise(d, self.nh, bias=False)
        self.ogate = LinearHeadwise(d, self.nh, bias=False)
        self.slstm_cell = nn.Module()
        self.slstm_cell._recurrent_kernel_ = nn.Parameter(torch.zeros(self.nh, 4 * self.dh, self.dh))
        self.slstm_cell._bias_ = nn.Parameter(torch.zeros(4 * d))
        self.group_norm = MultiHeadLayerNorm(d)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {k: (self.nh, self.dh) for k in ("h", "c", "n", "m")}
        if self.kernel > 0:
            shapes["conv"] = (self.kernel - 1, self.d)
        return shapes

    def forward(self, x: torch.Tensor, cache: XLSTMCache, idx: int, rows: Rows | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        xc = F.silu(self.conv1d(x, cache, idx, rows)) if self.kernel > 0 else x
        # The package feeds `fgate`'s output to the input-gate slot and `igate`'s to the forget-gate
        # slot (sLSTMLayer.forward: `i, f = self.fgate(x_conv), self.igate(x_conv)`); keep that
        # so its checkpoints mean the same thing here.
        pre = torch.stack([self.fgate(xc), self.igate(xc), self.zgate(x), self.ogate(x)], -2)
        pre = pre.view(B * T, 4, self.nh, self.dh)
        R = self.slstm_cell._recurrent_kernel_.view(self.nh, 4, self.dh, self.dh)
        b = self.slstm_cell._bias_.view(4, self.nh, self.dh)
        h, c, n, m = cache.layer(idx, "h", "c", "n", "m")
        if T > 1 and torch.is_grad_enabled() and pre.requires_grad:  # training: differentiable and batched
            y, last = slstm_scan_dense(pre.view(B, T, 4, self.nh, self.dh), R, b, h, c, n, m)
            with torch.no_grad():
                for pool, value in zip((h, c, n, m), last, strict=True):
                    pool.copy_(value)
            return self.group_norm(y)
        rows = rows or Rows.of_dense(B, T, x.device)
        one_each = T == 1 if rows.packed is None else rows.packed.num_tokens == len(rows.packed.lengths)
        if one_each:
            y = slstm_step(pre, R, b, h, c, n, m, rows.slots)
        else:
            y = slstm_scan(pre, R, b, h, c, n, m, rows.slots, rows.cu)
        return self.group_norm(y.view(B, T, self.nh, self.dh))


def init_slstm_bias_(bias: torch.Tensor, nh: int) -> None:
    """Forget-gate biases spread over 3..6 per head (open forget gates), the rest zero."""
    b = bias.view(4, nh, -1)
    b.zero_()
    b[1] = torch.linspace(3.0, 6.0, b.shape[-1])


class XLSTMLMModel(CausalLM):
    """The xlstm package's ``xLSTMLMModel`` (mLSTM blocks, sLSTM blocks at ``slstm_at``)."""

    family = "xlstm"

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        parsed = XLSTMLMConfig.model_validate(config)
        self.config = parsed.model_dump(mode="json")
        d = parsed.embedding_dim
        blocks = []
        for idx in range(parsed.num_blocks):
            if idx in parsed.slstm_at:
                sb = parsed.slstm_block
                ffn = package_feedforward(d, sb.feedforward, parsed.bias) if sb.feedforward else None
                blocks.append(PackageBlock(SLSTMLayer(d, sb.slstm), ffn, d))
            else:
                blocks.append(
                    PackageBlock(PackageMLSTMLayer(d, parsed.mlstm_block.mlstm, parsed.bias), None, d)
                )
        cfg = self.config
        self.token_embedding = nn.Embedding(cfg["vocab_size"], d)
        self.xlstm_block_stack = nn.Module()
        self.xlstm_block_stack.blocks = nn.ModuleList(blocks)
        self.xlstm_block_stack.post_blocks_norm = (
            LayerNorm(d) if cfg["add_post_blocks_norm"] else nn.Identity()
        )
        self.lm_head = nn.Linear(d, cfg["vocab_size"], bias=False)
        if cfg["tie_weights"]:
            self.lm_head.weight = self.token_embedding.weight

    def init_cache(self, batch_size: int) -> XLSTMCache:
        p = next(self.parameters())
        tensors = {}
        for idx, block in enumerate(self.xlstm_block_stack.blocks):
            for name, shape in block.xlstm.state_shapes().items():
                dtype = p.dtype if name == "conv" else torch.float32
                t = torch.zeros(batch_size, *shape, dtype=dtype, device=p.device)
                if name == "m" and len(shape) == 2:  # sLSTM: a fresh stabiliser is -inf (see kernels.slstm)
                    t.fill_(float("-inf"))
                tensors[f"{idx}.{name}"] = t
        return XLSTMCache(tensors, {"arch": "xLSTMLMModel"})

    def forward(self, input_ids: torch.Tensor, cache: Cache | None = None, *, slots: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, XLSTMCache]:  # fmt: skip
        """Logits [B, T, vocab]; `slots` [B] (optional): the cache is a state pool and row b of the
        batch reads and writes pool row slots[b]."""
        cache = _check_cache(self, input_ids, cache, slots)
        rows = Rows.of_dense(*input_ids.shape, input_ids.device, slots)
        x = self.token_embedding(input_ids)
        for idx, block in enumerate(self.xlstm_block_stack.blocks):
            x = block(x, cache, idx, rows)
        return self.lm_head(self.xlstm_block_stack.post_blocks_norm(x)).float(), cache

    def forward_packed(self, input_ids: torch.Tensor, cache: XLSTMCache, batch: PackedBatch) -> torch.Tensor:
        """Prompt chunks packed by `batch` (input_ids [N]); logits [S, vocab] of each sequence's last token."""
        rows = Rows.of_packed(batch)
        x = self.token_embedding(input_ids[None])
        for idx, block in enumerate(self.xlstm_block_stack.blocks):
            x = block(x, cache, idx, rows)
        return self.lm_head(self.xlstm_block_stack.post_blocks_norm(x[0].index_select(0, batch.last))).float()


# ------------------------------------------------------------------------ load / save / presets


def build(config: dict[str, Any]) -> CausalLM:
    """The model class a config.json names (``model_type`` / ``architecture(s)``)."""
    kind = config.get("model_type")
    if kind == "xlstm" or "xLSTMForCausalLM" in config.get("architectures", []):
        return XLSTMForCausalLM(config)
    if kind == "xlstm_lm" or config.get("architecture") == "xLSTMLMModel":
        return XLSTMLMModel(config)
    raise ValueError(f"not an xLSTM config: model_type={kind!r}")


def from_config(config: dict[str, Any], *, seed: int = 0, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> CausalLM:
    """A randomly initialised model of `config` (the family interface's constructor)."""
    return init_weights(build(config), seed).to(device=device, dtype=dtype)


def load(path: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> CausalLM:
    """A model from a checkpoint folder: config.json + *.safetensors (see the module docstring)."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    with torch.device("meta"):
        model = build(config)
    state: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(file))
    if not state:
        raise FileNotFoundError(f"no *.safetensors in {path}")
    tied = bool(model.config.get("tie_word_embeddings") or model.config.get("tie_weights"))
    if tied:
        state.pop("lm_head.weight", None)
    expected = {k for k in model.state_dict() if not (tied and k == "lm_head.weight")}
    missing = sorted(expected - state.keys())
    if missing:
        raise KeyError(f"checkpoint lacks {missing[:5]}{'...' if len(missing) > 5 else ''}")
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        embedding = (
            model.backbone.embeddings if isinstance(model, XLSTMForCausalLM) else model.token_embedding
        )
        model.lm_head.weight = embedding.weight
    return model.to(device=device, dtype=dtype).eval()


def save(model: CausalLM, path: str | Path) -> None:
    """config.json + model.safetensors, in the format `load` (and the model's origin) reads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(model.config, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.get("tie_word_embeddings") or model.config.get("tie_weights"):
        state.pop("lm_head.weight", None)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def init_weights(model: CausalLM, seed: int = 0) -> CausalLM:
    """Random weights of the right scale for training from scratch (and for tests)."""
    g = torch.Generator().manual_seed(seed)
    offset_norms = isinstance(model, XLSTMLMModel)  # the package stores norm weights as 1 + w
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and ("igate" in name or "fgate" in name):
                # forget gates open (3..6), input gates small, as both reference inits do
                if "fgate" in name:
                    p.copy_(torch.linspace(3.0, 6.0, p.numel()).view_as(p))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("learnable_skip"):
                p.fill_(1.0)
            elif p.ndim == 1:
                p.fill_(0.0 if offset_norms or name.endswith("bias") else 1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2 / (5 * p.shape[-1])))
        for module in model.modules():
            if isinstance(module, SLSTMLayer):
                init_slstm_bias_(module.slstm_cell._bias_, module.nh)
                module.slstm_cell._recurrent_kernel_.zero_()
    return model


PRESETS: dict[str, dict[str, Any]] = {
    # sLSTM-bearing (xlstm package xLSTMLMModel, mLSTM + sLSTM): the zoo's state-tracking models
    "tiny": {
        "model_type": "xlstm_lm",
        "embedding_dim": 64,
        "num_blocks": 2,
        "slstm_at": [1],
        "mlstm_block": {"mlstm": {"num_heads": 2}},
        "slstm_block": {"slstm": {"num_heads": 2}},
    },
    "small": {"model_type": "xlstm_lm", "embedding_dim": 256, "num_blocks": 4, "slstm_at": [1]},
    "base": {"model_type": "xlstm_lm", "embedding_dim": 512, "num_blocks": 6, "slstm_at": [1, 4]},
    # ~2.7M, two sLSTM blocks: the trained zoo model (evals.tasks; the state-tracking claim)
    "zoo": {"model_type": "xlstm_lm", "embedding_dim": 256, "num_blocks": 6, "slstm_at": [1, 4]},
    # the xLSTM-7B architecture (transformers), mLSTM only, at test size
    "7b-tiny": {
        "model_type": "xlstm",
        "vocab_size": BYTE_VOCAB,
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_heads": 2,
    },
    # GPU benchmark: xLSTM[7:1]-style ~125M with a GPT-2 vocabulary; sLSTM heads of 64
    "125m": {
        "model_type": "xlstm_lm",
        "vocab_size": 50304,
        "embedding_dim": 768,
        "num_blocks": 24,
        "slstm_at": [3, 20],
        "tie_weights": True,
        "slstm_block": {"slstm": {"num_heads": 12}},
    },
    "125m-7b": {
        "model_type": "xlstm",
        "vocab_size": 50304,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_heads": 4,
    },
}


def random_config(preset: str = "tiny") -> dict[str, Any]:
    """A config.json dict: tiny/small/base (byte vocab, mLSTM+sLSTM), 7b-tiny, 125m, 125m-7b."""
    try:
        cfg = json.loads(json.dumps(PRESETS[preset]))
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}") from None
    if cfg["model_type"] == "xlstm":
        return {**HF_DEFAULTS, **cfg}
    return XLSTMLMConfig.model_validate(cfg).model_dump(mode="json")
