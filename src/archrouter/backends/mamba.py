"""Mamba-1 (Gu & Dao, 2023) in one file: model, cache, checkpoint loading and saving.

Reads and writes the layout of transformers' `MambaForCausalLM.save_pretrained` (the public
`state-spaces/mamba-*-hf` checkpoints): `config.json` + `*.safetensors` with keys
`backbone.embeddings.weight`, `backbone.layers.N.norm.weight`,
`backbone.layers.N.mixer.{in_proj,conv1d,x_proj,dt_proj,out_proj}.*`, `...mixer.A_log`,
`...mixer.D`, `backbone.norm_f.weight` and a `lm_head.weight` tied to the embeddings.

A block: x -> RMSNorm -> in_proj -> (x, z); x -> depthwise causal conv1d -> SiLU -> x_proj ->
(dt, B, C); dt -> dt_proj -> softplus(. + bias); selective scan with A = -exp(A_log) and the
D skip; gate by SiLU(z); out_proj; residual add (in fp32 when `residual_in_fp32`).

The conv, scan and one-step update run through `kernels.selective_scan` (Triton on CUDA, the
plain-PyTorch reference on CPU). The cache *is* the kernels' state pool: one row per sequence
of the batch, so slot i is row i and `forward` updates the cache in place.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from archrouter.backends.base import Cache, CausalLM, PackedBatch
from archrouter.kernels.selective_scan import (
    causal_conv1d,
    causal_conv1d_update,
    selective_scan,
    selective_state_update,
)
from archrouter.kernels.selective_scan.train import causal_conv1d_dense, selective_scan_dense

# SSM parameters stay fp32 whatever the model dtype (as mamba-ssm keeps them): exp(dt * A) is
# sensitive to A's precision over long sequences.
_FP32_PARAMS = ("A_log", ".D")

_DEFAULTS: dict[str, Any] = {
    "state_size": 16,
    "expand": 2,
    "conv_kernel": 4,
    "layer_norm_epsilon": 1e-5,
    "use_bias": False,
    "use_conv_bias": True,
    "hidden_act": "silu",
    "residual_in_fp32": True,
    "time_step_rank": "auto",
    "tie_word_embeddings": True,
    "time_step_min": 0.001,
    "time_step_max": 0.1,
    "time_step_floor": 1e-4,
}

PRESETS: dict[str, dict[str, Any]] = {
    # byte tokenizer: 256 bytes + specials, padded to 264
    "tiny": {"vocab_size": 264, "hidden_size": 32, "num_hidden_layers": 2, "state_size": 8},
    "small": {"vocab_size": 264, "hidden_size": 256, "num_hidden_layers": 4},
    "base": {"vocab_size": 264, "hidden_size": 512, "num_hidden_layers": 8},
    "zoo": {"vocab_size": 264, "hidden_size": 256, "num_hidden_layers": 6},  # ~2.7M: the trained zoo model
    # the shape of state-spaces/mamba-130m (d_inner 1536, dt_rank 48), for GPU benchmarks
    "130m": {"vocab_size": 50280, "hidden_size": 768, "num_hidden_layers": 24},
}


def normalize_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill HF MambaConfig defaults and the derived sizes (intermediate_size, time_step_rank)."""
    cfg = {**_DEFAULTS, **config}
    cfg["intermediate_size"] = int(cfg.get("intermediate_size") or cfg["expand"] * cfg["hidden_size"])
    if cfg["time_step_rank"] == "auto":
        cfg["time_step_rank"] = math.ceil(cfg["hidden_size"] / 16)
    cfg["time_step_rank"] = int(cfg["time_step_rank"])
    if cfg["hidden_act"] != "silu":
        raise ValueError(f"Mamba with hidden_act={cfg['hidden_act']!r} is not supported (silu only)")
    return cfg


def random_config(preset: str = "tiny") -> dict[str, Any]:
    """A config.json dict (HF `MambaConfig` layout) for a preset: tiny, small, base or 130m."""
    try:
        extra = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown Mamba preset {preset!r}; known: {', '.join(PRESETS)}") from None
    cfg = normalize_config({**extra})
    return {"model_type": "mamba", "architectures": ["MambaForCausalLM"], **cfg}


class MambaCache(Cache):
    """Per layer i: `conv.{i}` [batch, d_inner, conv_kernel - 1] in the model dtype (the last inputs,
    oldest first) and `ssm.{i}` [batch, d_inner, d_state] in fp32."""

    family = "mamba"

    def conv(self, layer: int) -> torch.Tensor:
        return self.tensors[f"conv.{layer}"]

    def ssm(self, layer: int) -> torch.Tensor:
        return self.tensors[f"ssm.{layer}"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        # fp32 normalisation, cast back, then the weight: transformers' MambaRMSNorm order
        x = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * x.to(dtype)


class MambaMixer(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        d_model, d_inner, d_state = cfg["hidden_size"], cfg["intermediate_size"], cfg["state_size"]
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, cfg["time_step_rank"]
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=cfg["use_bias"])
        self.conv1d = nn.Conv1d(d_inner, d_inner, cfg["conv_kernel"], groups=d_inner,
                                bias=cfg["use_conv_bias"], padding=cfg["conv_kernel"] - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=cfg["use_bias"])
        # S4D-real A and Mamba's dt init: dt ~ logU[dt_min, dt_max], bias = softplus^-1(dt)
        with torch.no_grad():
            std = self.dt_rank**-0.5
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            lo, hi = math.log(cfg["time_step_min"]), math.log(cfg["time_step_max"])
            dt = torch.exp(torch.rand(d_inner) * (hi - lo) + lo).clamp(min=cfg["time_step_floor"])
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self._A: torch.Tensor | None = None
        self._A_key: tuple | None = None

    def neg_A(self) -> torch.Tensor:
        """A = -exp(A_log) in fp32, kept between calls at inference (two fewer kernels per layer and
        decode step; the key notices in-place updates and moves of A_log)."""
        if torch.is_grad_enabled() and self.A_log.requires_grad:
            return -torch.exp(self.A_log.float())
        key = (self.A_log.data_ptr(), self.A_log._version, self.A_log.device, self.A_log.dtype)
        if self._A is None or key != self._A_key:
            self._A, self._A_key = -torch.exp(self.A_log.detach().float()), key
        return self._A

    def forward(self, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                slots: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int | None = None) -> torch.Tensor:
        batch, seqlen, _ = h.shape
        if seqlen > 1 and torch.is_grad_enabled() and self.A_log.requires_grad:
            return self._forward_train(h, conv_state, ssm_state, slots)
        xz = self.in_proj(h).view(batch * seqlen, 2 * self.d_inner)
        x, z = xz[:, : self.d_inner], xz[:, self.d_inner :]  # views: the kernels take row strides
        weight = self.conv1d.weight.view(self.d_inner, -1)
        if seqlen == 1:
            x = causal_conv1d_update(x, weight, self.conv1d.bias, conv_state, slots)
        else:
            x = causal_conv1d(x, weight, self.conv1d.bias, conv_state, cu_seqlens, slots,
                              max_seqlen=max_seqlen or seqlen)
        x_dbl = self.x_proj(x)
        dt = F.linear(x_dbl[:, : self.dt_rank], self.dt_proj.weight)  # bias + softplus: fused in the kernel
        B = x_dbl[:, self.dt_rank : self.dt_rank + self.d_state]
        C = x_dbl[:, self.dt_rank + self.d_state :]
        A = self.neg_A()
        if seqlen == 1:
            y = selective_state_update(x, dt, A, B, C, self.D, z, self.dt_proj.bias, ssm_state, slots)
        else:
            y = selective_scan(x, dt, A, B, C, self.D, z, self.dt_proj.bias, ssm_state, cu_seqlens, slots,
                               max_seqlen=max_seqlen or seqlen)
        return self.out_proj(y.view(batch, seqlen, self.d_inner))

    def _forward_train(self, h: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                       slots: torch.Tensor) -> torch.Tensor:
        """The same block, differentiable and batched (kernels.selective_scan.train): the Triton
        kernels are forward-only and the references loop over sequences. Rows with a negative slot
        start from zeros and write no state, as in the kernels."""
        live = (slots >= 0)[:, None, None]
        rows = slots.long().clamp(min=0)
        x, z = self.in_proj(h).chunk(2, dim=-1)
        x, past = causal_conv1d_dense(x, self.conv1d.weight.view(self.d_inner, -1), self.conv1d.bias,
                                      conv_state[rows] * live)
        x_dbl = self.x_proj(x)
        dt = F.linear(x_dbl[..., : self.dt_rank], self.dt_proj.weight)
        B = x_dbl[..., self.dt_rank : self.dt_rank + self.d_state]
        C = x_dbl[..., self.dt_rank + self.d_state :]
        y, last = selective_scan_dense(x, dt, self.neg_A(), B, C, self.D, z, self.dt_proj.bias,
                                       ssm_state[rows] * live)
        with torch.no_grad():  # the cache carries values, not graph
            keep = slots >= 0
            conv_state[rows[keep]] = past[keep].to(conv_state.dtype)
            ssm_state[rows[keep]] = last[keep].to(ssm_state.dtype)
        return self.out_proj(y)


class MambaBlock(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.residual_in_fp32 = cfg["residual_in_fp32"]
        self.norm = RMSNorm(cfg["hidden_size"], cfg["layer_norm_epsilon"])
        self.mixer = MambaMixer(cfg)

    def forward(self, h: torch.Tensor, *state: torch.Tensor) -> torch.Tensor:
        residual = h.float() if self.residual_in_fp32 else h
        return residual + self.mixer(self.norm(h.to(self.norm.weight.dtype)), *state)


class Backbone(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.embeddings = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm_f = RMSNorm(cfg["hidden_size"], cfg["layer_norm_epsilon"])


class MambaLM(CausalLM):
    family = "mamba"

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = normalize_config(config)
        self.backbone = Backbone(self.config)
        nn.init.normal_(self.backbone.embeddings.weight, std=0.02)
        self.lm_head = None if self.config["tie_word_embeddings"] else nn.Linear(
            self.config["hidden_size"], self.config["vocab_size"], bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.embeddings.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.embeddings.weight.device

    def init_cache(self, batch_size: int) -> MambaCache:
        cfg, tensors = self.config, {}
        for i in range(cfg["num_hidden_layers"]):
            tensors[f"conv.{i}"] = torch.zeros(batch_size, cfg["intermediate_size"], cfg["conv_kernel"] - 1,
                                               dtype=self.dtype, device=self.device)
            tensors[f"ssm.{i}"] = torch.zeros(batch_size, cfg["intermediate_size"], cfg["state_size"],
                                              dtype=torch.float32, device=self.device)
        return MambaCache(tensors, {"num_hidden_layers": cfg["num_hidden_layers"]})

    def forward(self, input_ids: torch.Tensor, cache: MambaCache | None = None, *,
                slots: torch.Tensor | None = None) -> tuple[torch.Tensor, MambaCache]:
        """Logits [B, T, vocab] (fp32) and the cache, updated in place (a fresh one if None).

        `slots` (optional, int [B]): the cache rows holding each sequence, so a cache can be a
        state pool larger than the batch (no gather, no copies); a negative slot is a padded row
        that starts from zeros and writes no state. Without it, row i of the cache is sequence i.
        """
        batch, seqlen = input_ids.shape
        dev = input_ids.device
        if cache is None:
            cache = self.init_cache(batch)
        if slots is None:
            if cache.batch_size != batch:
                raise ValueError(f"cache holds {cache.batch_size} sequences, input_ids {batch}; "
                                 "gather() the rows or pass slots")
            slots = torch.arange(batch, dtype=torch.int32, device=dev)
        elif slots.shape != (batch,):
            raise ValueError(f"slots must have shape ({batch},), got {tuple(slots.shape)}")
        slots = slots.to(device=dev, dtype=torch.int32)
        cu_seqlens = torch.arange(0, batch * seqlen + 1, seqlen, dtype=torch.int32, device=dev)
        h = self.backbone.embeddings(input_ids)
        for i, layer in enumerate(self.backbone.layers):
            h = layer(h, cache.conv(i), cache.ssm(i), slots, cu_seqlens)
        h = self.backbone.norm_f(h)
        head = self.backbone.embeddings.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h.to(head.dtype), head).float(), cache

    def forward_packed(self, input_ids: torch.Tensor, cache: MambaCache, batch: PackedBatch) -> torch.Tensor:
        """Prompt chunks of several sequences in one forward: input_ids [N] packed by `batch`, each
        sequence's state in pool row `batch.slots[i]` (updated in place). Logits [S, vocab] of every
        sequence's last token (the only ones sampled: the head runs on S rows, not N)."""
        h = self.backbone.embeddings(input_ids)[None]
        for i, layer in enumerate(self.backbone.layers):
            h = layer(h, cache.conv(i), cache.ssm(i), batch.slots, batch.cu_seqlens, batch.max_seqlen)
        h = self.backbone.norm_f(h[0].index_select(0, batch.last))
        head = self.backbone.embeddings.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h.to(head.dtype), head).float()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if files:
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            sd.update(load_file(f))
        return sd
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        sd = {}
        for f in bins:
            sd.update(torch.load(f, map_location="cpu", weights_only=True))
        return sd
    raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin in {path}")


def load(path: str | Path, *, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32) -> MambaLM:
    """Load a `MambaForCausalLM.save_pretrained` folder (e.g. state-spaces/mamba-130m-hf)."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    # older checkpoints name the embedding `backbone.embedding`
    raw = _read_state_dict(path)
    sd = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in raw.items()}
    with torch.device("meta"):
        model = MambaLM(config)
    if model.lm_head is None:
        sd.pop("lm_head.weight", None)
    model.load_state_dict(sd, strict=True, assign=True)
    return _cast(model, device, dtype)


def _cast(model: MambaLM, device: str | torch.device, dtype: torch.dtype) -> MambaLM:
    model.to(device=device)
    for name, p in model.named_parameters():
        p.data = p.data.to(torch.float32 if name.endswith(_FP32_PARAMS) else dtype)
    return model.eval()


def from_config(config: dict[str, Any], *, seed: int = 0, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> MambaLM:
    """A randomly initialised model (Mamba's init) for a config dict, e.g. `random_config("130m")`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MambaLM(config)
    return _cast(model, device, dtype)


def save(model: MambaLM, path: str | Path) -> None:
    """Write `config.json` + `model.safetensors` in transformers' MambaForCausalLM layout."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "mamba", "architectures": ["MambaForCausalLM"], **model.config}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
