"""Mamba-1 kernels: selective scan (prefill), one-step state update (decode), causal conv1d (both).

Public functions take the Triton path for CUDA tensors and the plain-PyTorch reference
otherwise (`kernels._dispatch.use_triton`). Contract and shapes: see `naive.py`. These are
forward-only; training (gradients, dense batches) uses `train.py` (Triton forward + backward on CUDA).
"""

from __future__ import annotations

import torch

from archrouter.kernels._dispatch import use_triton
from archrouter.kernels.selective_scan.naive import (
    causal_conv1d_ref,
    causal_conv1d_update_ref,
    selective_scan_ref,
    selective_state_update_ref,
)

__all__ = [
    "causal_conv1d",
    "causal_conv1d_ref",
    "causal_conv1d_update",
    "causal_conv1d_update_ref",
    "selective_scan",
    "selective_scan_ref",
    "selective_state_update",
    "selective_state_update_ref",
]


def selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    slots: torch.Tensor,
    *,
    dt_softplus: bool = True,
    max_seqlen: int | None = None,
) -> torch.Tensor:
    if use_triton(x, state):
        from archrouter.kernels.selective_scan.scan import selective_scan_triton

        return selective_scan_triton(x, dt, A, B, C, D, z, dt_bias, state, cu_seqlens, slots,
                                     dt_softplus=dt_softplus, max_seqlen=max_seqlen)
    return selective_scan_ref(x, dt, A, B, C, D, z, dt_bias, state, cu_seqlens, slots,
                              dt_softplus=dt_softplus)


def selective_state_update(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    state: torch.Tensor,
    slots: torch.Tensor,
    *,
    dt_softplus: bool = True,
) -> torch.Tensor:
    if use_triton(x, state):
        from archrouter.kernels.selective_scan.step import selective_state_update_triton

        return selective_state_update_triton(x, dt, A, B, C, D, z, dt_bias, state, slots,
                                             dt_softplus=dt_softplus)
    return selective_state_update_ref(x, dt, A, B, C, D, z, dt_bias, state, slots, dt_softplus=dt_softplus)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    slots: torch.Tensor,
    *,
    activation: str | None = "silu",
    max_seqlen: int | None = None,
) -> torch.Tensor:
    if use_triton(x, conv_state):
        from archrouter.kernels.selective_scan.conv1d import causal_conv1d_triton

        return causal_conv1d_triton(x, weight, bias, conv_state, cu_seqlens, slots, activation=activation,
                                    max_seqlen=max_seqlen)
    return causal_conv1d_ref(x, weight, bias, conv_state, cu_seqlens, slots, activation=activation)


def causal_conv1d_update(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    slots: torch.Tensor,
    *,
    activation: str | None = "silu",
) -> torch.Tensor:
    if use_triton(x, conv_state):
        from archrouter.kernels.selective_scan.conv1d import causal_conv1d_update_triton

        return causal_conv1d_update_triton(x, weight, bias, conv_state, slots, activation=activation)
    return causal_conv1d_update_ref(x, weight, bias, conv_state, slots, activation=activation)
