"""Pieces the attention kernels share."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from archrouter.kernels._dispatch import interpreting


@triton.jit
def mma(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """tl.dot, upcasting to fp32 first when UPCAST (the CPU interpreter's bf16 workaround)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PRECISION)


def dot_flags(dtype: torch.dtype) -> dict[str, object]:
    """PRECISION / UPCAST constexprs for tensors of `dtype`.

    fp32 inputs get exact ("ieee") products instead of TF32, so fp32 models keep fp32 parity.
    Triton 3.9's interpreter multiplies the raw uint16 storage of bf16 operands in tl.dot, so
    under TRITON_INTERPRET=1 bf16/fp16 tiles are upcast before the product (the values, and every
    rounding to bf16 the kernel does, stay the same).
    """
    return {
        "PRECISION": "ieee" if dtype == torch.float32 else "tf32",
        "UPCAST": interpreting() and dtype != torch.float32,
    }


def num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 132
    return torch.cuda.get_device_properties(device).multi_processor_count


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def quick_bench(fn, quantiles=None):  # noqa: ANN001, ANN201 - triton.autotune's do_bench hook
    """Shorter timing for autotuning than Triton's default (25 ms warmup, 100 ms), same median."""
    return triton.testing.do_bench(fn, warmup=5, rep=25, quantiles=quantiles)


def autotune(configs: list, key: list[str]):  # noqa: ANN201 - returns triton's decorator
    """triton.autotune with the shorter timing where this Triton accepts a do_bench hook."""
    try:
        return triton.autotune(configs, key=key, do_bench=quick_bench)
    except TypeError:  # an older Triton without the hook
        return triton.autotune(configs, key=key)
