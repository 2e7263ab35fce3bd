"""The sLSTM block of the xlstm package's ``xLSTMLMModel`` (split out of backends/xlstm.py).

Parameter names and shapes are the package's (``slstm_cell._recurrent_kernel_`` (NH, 4*D, D) and
``slstm_cell._bias_`` (4*NH*D) in its vanilla layout), so its state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backends.xlstm import (
    CausalConv,
    FeedForwardConfig,
    LinearHeadwise,
    MultiHeadLayerNorm,
    SLSTMLayerConfig,
    XLSTMCache,
    _batch_rows,
    proj_dim,
)
from kernels.slstm import slstm_scan, slstm_step
from kernels.slstm.train import slstm_scan_dense

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

    def forward(self, x: torch.Tensor, cache: XLSTMCache, idx: int) -> torch.Tensor:
        B, T, _ = x.shape
        xc = F.silu(self.conv1d(x, cache, idx)) if self.kernel > 0 else x
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
        slots, cu = _batch_rows(cache, B, T, x.device)
        y = slstm_step(pre, R, b, h, c, n, m, slots) if T == 1 else slstm_scan(pre, R, b, h, c, n, m, slots, cu)
        return self.group_norm(y.view(B, T, self.nh, self.dh))


def init_slstm_bias_(bias: torch.Tensor, nh: int) -> None:
    """Forget-gate biases spread over 3..6 per head (open forget gates), the rest zero."""
    b = bias.view(4, nh, -1)
    b.zero_()
    b[1] = torch.linspace(3.0, 6.0, b.shape[-1])
