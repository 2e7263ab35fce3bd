"""RWKV-7 "Goose" (x070) in one file: model, cache, checkpoint loading and saving.

A block is a time mix (token shift, low-rank w/a/v/g projections, the value residual from the
first layer, the WKV-7 state update S <- S (diag(w) + a^T b) + v^T k per head, group norm) and a
channel mix (token shift, squared ReLU). Parameter names and shapes are those of BlinkDL's RWKV-7
releases, so `state_dict()` is a `.pth` the `rwkv` package loads and vice versa.

Reference: https://github.com/BlinkDL/RWKV-LM (RWKV-v7) and the `rwkv` pip package (model.py,
class RWKV_x070), whose logits the tests match.
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
from archrouter.kernels.wkv7 import wkv7
from archrouter.kernels.wkv7.train import wkv7_dense

# log of the per-step decay is -exp(-0.5) * sigmoid(.), so every channel keeps >= 54.5% per token
_DECAY_SCALE = math.exp(-0.5)
_GROUP_NORM_EPS = 64e-5  # 1e-5 * head_size_divisor**2, head_size_divisor = 8 in RWKV-7 training

WORLD_VOCAB = 65536


def _lora_dim(c: int, factor: float, power: float) -> int:
    """RWKV-LM's suggested low-rank sizes: a multiple of 32, at least 32."""
    return max(32, int(round(factor * (c**power) / 32) * 32))


def random_config(preset: str = "tiny") -> dict[str, Any]:
    """A config.json dict for a freshly initialised model: tiny/small/base (byte-level vocab)
    or 0.1b (the RWKV-7 0.1B release's shape with the world vocabulary)."""
    shapes = {"tiny": (128, 2), "small": (256, 4), "base": (512, 6), "0.1b": (768, 12), "zoo": (256, 3)}
    if preset not in shapes:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(shapes)}")
    c, n_layer = shapes[preset]
    world = preset == "0.1b"
    return {
        "family": "rwkv",
        "architecture": "rwkv7",
        "vocab_size": WORLD_VOCAB if world else 264,
        "tokenizer": "rwkv_world" if world else "byte",
        "n_layer": n_layer,
        "n_embd": c,
        "head_size": 64,
        "dim_ffn": 4 * c,
        "dim_decay_lora": _lora_dim(c, 1.8, 0.5),
        "dim_aaa_lora": _lora_dim(c, 1.8, 0.5),
        "dim_mv_lora": _lora_dim(c, 1.3, 0.5),
        "dim_gate_lora": _lora_dim(c, 0.6, 0.8),
    }


class RWKVCache(Cache):
    """Per layer: the time-mix and channel-mix token-shift vectors [B, C] (model dtype) and the
    WKV state [B, H, N, N] (fp32, value rows x key columns, the `rwkv` package's layout)."""

    family = "rwkv"

    def att_shift(self, i: int) -> torch.Tensor:
        return self.tensors[f"att_shift.{i}"]

    def ffn_shift(self, i: int) -> torch.Tensor:
        return self.tensors[f"ffn_shift.{i}"]

    def wkv(self, i: int) -> torch.Tensor:
        return self.tensors[f"wkv.{i}"]


def _shift(x: torch.Tensor, shift: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
    """Each token's predecessor (the cached last token for position 0); then the cache keeps x's
    last token. With `slots`, the cache is a pool and row i of x is pool row slots[i]."""
    last = shift if slots is None else shift[slots]
    prev = torch.cat([last.unsqueeze(1).to(x.dtype), x[:, :-1]], 1)
    if slots is None:
        shift.copy_(x[:, -1])
    else:
        shift[slots] = x[:, -1].to(shift.dtype)
    return prev


def _shift_packed(x: torch.Tensor, shift: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """`_shift` over packed sequences x [1, N, C]: a sequence's first token follows its slot's cached
    last token, never the previous sequence's tokens; then each slot keeps its sequence's last token."""
    flat = x[0]
    prev = torch.cat([flat.new_zeros(1, flat.shape[1]), flat[:-1]], 0)
    prev[batch.first] = shift[batch.slots.long()].to(x.dtype)
    shift[batch.slots.long()] = flat.index_select(0, batch.last).to(shift.dtype)
    return prev[None]


class TimeMix(nn.Module):
    def __init__(self, cfg: dict[str, Any], layer_id: int):
        super().__init__()
        c, n = cfg["n_embd"], cfg["head_size"]
        self.layer_id, self.n_head, self.head_size = layer_id, c // n, n

        def vec() -> nn.Parameter:
            return nn.Parameter(torch.empty(1, 1, c))

        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vec() for _ in range(6))
        self.w0, self.a0 = vec(), vec()
        self.w1 = nn.Parameter(torch.empty(c, cfg["dim_decay_lora"]))
        self.w2 = nn.Parameter(torch.empty(cfg["dim_decay_lora"], c))
        self.a1 = nn.Parameter(torch.empty(c, cfg["dim_aaa_lora"]))
        self.a2 = nn.Parameter(torch.empty(cfg["dim_aaa_lora"], c))
        if layer_id > 0:  # layer 0 *defines* the value residual; the others mix it in
            self.v0 = vec()
            self.v1 = nn.Parameter(torch.empty(c, cfg["dim_mv_lora"]))
            self.v2 = nn.Parameter(torch.empty(cfg["dim_mv_lora"], c))
        self.g1 = nn.Parameter(torch.empty(c, cfg["dim_gate_lora"]))
        self.g2 = nn.Parameter(torch.empty(cfg["dim_gate_lora"], c))
        self.k_k, self.k_a = vec(), vec()
        self.r_k = nn.Parameter(torch.empty(self.n_head, n))
        self.receptance = nn.Linear(c, c, bias=False)
        self.key = nn.Linear(c, c, bias=False)
        self.value = nn.Linear(c, c, bias=False)
        self.output = nn.Linear(c, c, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, c, eps=_GROUP_NORM_EPS)

    def forward(
        self, x: torch.Tensor, shift: torch.Tensor, state: torch.Tensor, v_first: torch.Tensor | None,
        slots: torch.Tensor | None = None, packed: PackedBatch | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        xx = (_shift(x, shift, slots) if packed is None else _shift_packed(x, shift, packed)) - x
        mixes = (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g)
        xr, xw, xk, xv, xa, xg = (x + xx * m for m in mixes)

        r = self.receptance(xr)
        k = self.key(xk)
        v = self.value(xv)
        log_w = -_DECAY_SCALE * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)

        heads = (B, T, H, N)
        args = (r.view(heads), log_w.view(heads), k.view(heads), v.view(heads), -kk, kk * a.view(heads))
        if T > 1 and slots is None and torch.is_grad_enabled() and self.receptance.weight.requires_grad:
            y, last = wkv7_dense(*args, state)  # training: differentiable and batched
            with torch.no_grad():
                state.copy_(last)
        elif packed is not None:
            y = wkv7(*args, state, packed.slots.long(), packed.cu_seqlens, lengths=packed.lengths)
        else:
            y = wkv7(*args, state, slots)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        bonus = (r * k * self.r_k.view(1, 1, C)).view(heads).sum(-1, keepdim=True) * v.view(heads)
        y = y + bonus.view(B, T, C)
        return self.output(y * g), v_first


class ChannelMix(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        c = cfg["n_embd"]
        self.x_k = nn.Parameter(torch.empty(1, 1, c))
        self.key = nn.Linear(c, cfg["dim_ffn"], bias=False)
        self.value = nn.Linear(cfg["dim_ffn"], c, bias=False)

    def forward(
        self, x: torch.Tensor, shift: torch.Tensor, slots: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
    ) -> torch.Tensor:
        xx = (_shift(x, shift, slots) if packed is None else _shift_packed(x, shift, packed)) - x
        k = torch.relu(self.key(x + xx * self.x_k)) ** 2
        return self.value(k)


class Block(nn.Module):
    def __init__(self, cfg: dict[str, Any], layer_id: int):
        super().__init__()
        c = cfg["n_embd"]
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(c)  # applied to the embeddings
        self.ln1 = nn.LayerNorm(c)
        self.ln2 = nn.LayerNorm(c)
        self.att = TimeMix(cfg, layer_id)
        self.ffn = ChannelMix(cfg)


class RWKV7(CausalLM):
    family = "rwkv"

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)
        c = config["n_embd"]
        if c % config["head_size"]:
            raise ValueError(f"n_embd {c} is not a multiple of head_size {config['head_size']}")
        self.emb = nn.Embedding(config["vocab_size"], c)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config["n_layer"]))
        self.ln_out = nn.LayerNorm(c)
        self.head = nn.Linear(c, config["vocab_size"], bias=False)

    @property
    def n_head(self) -> int:
        return self.config["n_embd"] // self.config["head_size"]

    def init_cache(self, batch_size: int) -> RWKVCache:
        p = self.head.weight
        c, n, h = self.config["n_embd"], self.config["head_size"], self.n_head
        tensors: dict[str, torch.Tensor] = {}
        for i in range(self.config["n_layer"]):
            tensors[f"att_shift.{i}"] = torch.zeros(batch_size, c, device=p.device, dtype=p.dtype)
            tensors[f"wkv.{i}"] = torch.zeros(batch_size, h, n, n, device=p.device, dtype=torch.float32)
            tensors[f"ffn_shift.{i}"] = torch.zeros(batch_size, c, device=p.device, dtype=p.dtype)
        return RWKVCache(tensors)

    def forward(
        self, input_ids: torch.Tensor, cache: RWKVCache | None = None, slots: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, RWKVCache]:
        """Logits [B, T, vocab]. The cache is updated in place (and returned): decode steps
        allocate no state, so a step can be captured in a CUDA graph.

        `slots` (optional, [B] distinct pool rows): the cache is a state pool with any number of
        rows and input row i reads and writes row slots[i]; the WKV kernels index the pool
        directly, so batching sequences needs no gather/concat of their states."""
        if cache is None:
            if slots is not None:
                raise ValueError("slots index into a cache: pass the pool")
            cache = self.init_cache(input_ids.shape[0])
        elif slots is None and cache.batch_size != input_ids.shape[0]:
            raise ValueError(f"cache holds {cache.batch_size} sequences, input_ids {input_ids.shape[0]}")
        if slots is not None:
            slots = slots.to(device=input_ids.device, dtype=torch.long)
        x = self.blocks[0].ln0(self.emb(input_ids))
        v_first = None
        for i, blk in enumerate(self.blocks):
            out, v_first = blk.att(blk.ln1(x), cache.att_shift(i), cache.wkv(i), v_first, slots)
            x = x + out
            x = x + blk.ffn(blk.ln2(x), cache.ffn_shift(i), slots)
        return self.head(self.ln_out(x)), cache

    def forward_packed(self, input_ids: torch.Tensor, cache: RWKVCache, batch: PackedBatch) -> torch.Tensor:
        """Prompt chunks of several sequences in one forward: input_ids [N] packed by `batch`, sequence i's
        state in pool row `batch.slots[i]` (updated in place). Logits [S, vocab] of each last token."""
        x = self.blocks[0].ln0(self.emb(input_ids[None]))
        v_first = None
        for i, blk in enumerate(self.blocks):
            out, v_first = blk.att(blk.ln1(x), cache.att_shift(i), cache.wkv(i), v_first, packed=batch)
            x = x + out
            x = x + blk.ffn(blk.ln2(x), cache.ffn_shift(i), packed=batch)
        return self.head(self.ln_out(x[0].index_select(0, batch.last)))

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """RWKV-LM's RWKV-7 initialisation (token-shift ramps, decay and in-context-rate spreads),
        except that the low-rank factors and output projections start small and random rather
        than zero, so every path carries signal from the first step (and in parity tests)."""
        gen = torch.Generator().manual_seed(seed)
        cfg = self.config
        c, n_layer, n = cfg["n_embd"], cfg["n_layer"], cfg["head_size"]

        def rnd(t: torch.Tensor, std: float) -> None:
            t.copy_(torch.randn(t.shape, generator=gen) * std)

        def uni(t: torch.Tensor, bound: float) -> None:
            t.copy_((torch.rand(t.shape, generator=gen) * 2 - 1) * bound)

        idx = torch.arange(c, dtype=torch.float32)
        ddd = (idx / c).view(1, 1, c)
        linear = idx / (c - 1) - 0.5
        zigzag = ((idx % n) - (n - 1) / 2) / ((n - 1) / 2)
        zigzag = zigzag * zigzag.abs()
        uni(self.emb.weight, 1e-4)
        rnd(self.head.weight, 0.5 / math.sqrt(c))
        for ln in [m for m in self.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))]:
            ln.weight.fill_(1.0)
            ln.bias.zero_()
        for i, blk in enumerate(self.blocks):
            att, ffn = blk.att, blk.ffn
            r0 = i / max(1, n_layer - 1)  # 0 -> 1 over depth
            r1 = 1.0 - i / n_layer  # 1 -> ~0 over depth
            for p, e in ((att.x_r, 0.2), (att.x_w, 0.9), (att.x_k, 0.7), (att.x_v, 0.7),
                         (att.x_a, 0.9), (att.x_g, 0.2)):
                p.copy_(1.0 - ddd.pow(e * r1))
            ffn.x_k.copy_(1.0 - ddd.pow(r1**4))
            www = -6 + 6 * (idx / (c - 1)) ** (1 + r0**0.3)
            att.w0.copy_((www + 0.5 + zigzag * 2.5).view(1, 1, c))
            att.a0.copy_((-0.19 + zigzag * 0.3 + linear * 0.4).view(1, 1, c))
            att.k_k.copy_((0.71 - linear * 0.1).view(1, 1, c))
            att.k_a.fill_(1.02)
            att.r_k.fill_(-0.04)
            lora = [att.w1, att.w2, att.a1, att.a2, att.g1, att.g2]
            if i > 0:
                att.v0.copy_((0.73 - linear * 0.4).view(1, 1, c))
                lora += [att.v1, att.v2]
            for p in lora:
                rnd(p, 0.1 / math.sqrt(p.shape[0]))
            uni(att.receptance.weight, 0.5 / math.sqrt(c))
            uni(att.key.weight, 0.5 / math.sqrt(c))
            uni(att.value.weight, 0.5 / math.sqrt(c))
            rnd(att.output.weight, 0.1 / math.sqrt(c))
            uni(ffn.key.weight, 0.5 / math.sqrt(c))
            rnd(ffn.value.weight, 0.1 / math.sqrt(cfg["dim_ffn"]))
            att.ln_x.weight.fill_(((1 + i) / n_layer) ** 0.7)


# --------------------------------------------------------------------------- checkpoints


def config_from_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infer the config from tensor shapes, as the `rwkv` package does (r_k gives heads x head size)."""
    n_head, head_size = sd["blocks.0.att.r_k"].shape
    vocab, c = sd["emb.weight"].shape
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    mv_key = "blocks.1.att.v1" if n_layer > 1 else "blocks.0.att.v1"
    return {
        "family": "rwkv",
        "architecture": "rwkv7",
        "vocab_size": int(vocab),
        "tokenizer": "rwkv_world" if vocab == WORLD_VOCAB else "byte",
        "n_layer": n_layer,
        "n_embd": int(c),
        "head_size": int(head_size),
        "dim_ffn": int(sd["blocks.0.ffn.key.weight"].shape[0]),
        "dim_decay_lora": int(sd["blocks.0.att.w1"].shape[1]),
        "dim_aaa_lora": int(sd["blocks.0.att.a1"].shape[1]),
        "dim_mv_lora": int(sd[mv_key].shape[1]) if mv_key in sd else _lora_dim(c, 1.3, 0.5),
        "dim_gate_lora": int(sd["blocks.0.att.g1"].shape[1]),
    }


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    if path.suffix in (".pth", ".pt", ".bin"):
        # weights only: a .pth is a pickle, and nothing else in it may run
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(sd, dict) or not all(isinstance(t, torch.Tensor) for t in sd.values()):
            raise ValueError(f"{path} is not a flat state dict of tensors")
        return sd
    raise ValueError(f"don't know how to read weights from {path}")


def _find_weights(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(path)
    for pattern in ("*.safetensors", "*.pth", "*.pt"):
        found = sorted(path.glob(pattern))
        if len(found) > 1:
            raise ValueError(f"{path} holds several {pattern} files: {[f.name for f in found]}")
        if found:
            return found[0]
    raise FileNotFoundError(f"no .safetensors or .pth weights in {path}")


def load(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> RWKV7:
    """Read an RWKV-7 checkpoint: a folder or a file, `.pth` (BlinkDL's release layout) or
    `.safetensors` with the same tensor names; a config.json beside it overrides inferred values."""
    weights = _find_weights(Path(path))
    sd = _read_weights(weights)
    # layer 0's value-residual mix is unused (it defines v_first); some releases carry it anyway
    for name in ("v0", "v1", "v2"):
        sd.pop(f"blocks.0.att.{name}", None)
    config = config_from_state_dict(sd)
    cfg_file = weights.parent / "config.json"
    if cfg_file.is_file():
        config.update({k: v for k, v in json.loads(cfg_file.read_text()).items() if not k.startswith("_")})
    if config.get("family", "rwkv") != "rwkv":
        raise ValueError(f"{cfg_file} describes a {config['family']!r} model, not rwkv")
    with torch.device("meta"):
        model = RWKV7(config)
    expected = model.state_dict()
    for key, t in sd.items():
        # some exports squeeze the [1, 1, C] vectors; restore the release layout
        if key in expected and t.shape != expected[key].shape and t.numel() == expected[key].numel():
            sd[key] = t.reshape(expected[key].shape)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def _vocab_rows(path: Path) -> tuple[int | None, str | None]:
    """(embedding rows, config's tokenizer) of a checkpoint, without loading its weights."""
    weights = _find_weights(path)
    cfg_file = weights.parent / "config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    if "vocab_size" in cfg or "tokenizer" in cfg:
        return cfg.get("vocab_size"), cfg.get("tokenizer")
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return f.get_slice("emb.weight").get_shape()[0], None
    sd = torch.load(str(weights), map_location="cpu", weights_only=True, mmap=True)
    return sd["emb.weight"].shape[0], None


def load_tokenizer(checkpoint: str | Path | None = None) -> Any:
    """The RWKV world tokenizer for world-vocabulary checkpoints (65536 rows, or config
    "tokenizer": "rwkv_world"); otherwise whatever backends.tokenizer picks for the folder."""
    if checkpoint is not None:
        rows, name = _vocab_rows(Path(checkpoint))
        if name == "rwkv_world" or (name is None and rows == WORLD_VOCAB):
            from archrouter.backends.rwkv_tokenizer import world_tokenizer

            return world_tokenizer()
    from archrouter.backends.tokenizer import load_tokenizer as generic

    folder = None if checkpoint is None else Path(checkpoint)
    return generic(folder.parent if folder is not None and folder.is_file() else folder)


def save(model: RWKV7, path: str | Path) -> None:
    """model.safetensors + config.json in `path` (a folder); tensor names are the `.pth` release's."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: t.detach().contiguous().cpu() for k, t in model.state_dict().items()},
              str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(model.config, indent=2) + "\n")


def from_config(config: dict[str, Any], *, seed: int | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> RWKV7:
    """A randomly initialised model (for training, tests and benchmarks); without `seed` it draws
    one from torch's global generator, so `torch.manual_seed` makes it reproducible."""
    model = RWKV7(config)
    model.reset_parameters(int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed)
    return model.to(device=device, dtype=dtype).eval()
