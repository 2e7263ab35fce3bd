"""The training kernels (kernels/*/train_triton.py) compile for an H100 (sm_90) on a machine without a GPU.

TRITON_INTERPRET=1 runs kernels as Python and misses what only the compiler sees (loop-carried
types, constexpr globals, ternaries on constexprs). Triton ships ptxas, so the whole pipeline down
to a cubin runs here, in a subprocess (this process decorates the kernels in interpreter mode).
Each kernel is compiled with the block sizes and warps the autograd functions launch it with, with
bf16 inputs (autocast) for the Mamba scan.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernels.outside_interpreter import run_outside_interpreter

triton = pytest.importorskip("triton")

SCRIPT = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from archrouter.kernels.selective_scan import train_triton as scan
from archrouter.kernels.wkv7 import train_triton as wkv

target = GPUTarget("cuda", 90, 32)
strides = {"sx": "i32", "sdt": "i32", "sb": "i32", "sc": "i32", "sz": "i32"}
flags = {"HAS_D": True, "HAS_Z": True, "HAS_BIAS": True, "SOFTPLUS": True, "BLOCK_D": scan.BLOCK_D, "BLOCK_N": 16}
scan_fwd = {"x_ptr": "*bf16", "dt_ptr": "*bf16", "A_ptr": "*fp32", "B_ptr": "*bf16", "C_ptr": "*bf16",
            "D_ptr": "*fp32", "z_ptr": "*bf16", "bias_ptr": "*fp32", "h0_ptr": "*fp32", "y_ptr": "*bf16",
            "hs_ptr": "*fp32", "hT_ptr": "*fp32", **strides, "T": "i32", "dim": "i32", "dstate": "i32",
            **{k: "constexpr" for k in ("HAS_D", "HAS_Z", "HAS_BIAS", "SOFTPLUS", "SAVE", "BLOCK_D", "BLOCK_N")}}
scan_bwd = {"x_ptr": "*bf16", "dt_ptr": "*bf16", "A_ptr": "*fp32", "B_ptr": "*bf16", "C_ptr": "*bf16",
            "D_ptr": "*fp32", "z_ptr": "*bf16", "bias_ptr": "*fp32", "hs_ptr": "*fp32", "dy_ptr": "*bf16",
            "dhT_ptr": "*fp32", "dx_ptr": "*bf16", "ddt_ptr": "*bf16", "dz_ptr": "*bf16", "dA_part_ptr": "*fp32",
            "dB_part_ptr": "*fp32", "dC_part_ptr": "*fp32", "dD_part_ptr": "*fp32", "dbias_part_ptr": "*fp32",
            "dh0_ptr": "*fp32", **strides, "T": "i32", "batch": "i32", "dim": "i32", "dstate": "i32",
            **{k: "constexpr" for k in ("HAS_D", "HAS_Z", "HAS_BIAS", "SOFTPLUS", "HAS_DHT", "BLOCK_D", "BLOCK_N")}}
wkv_fwd = {**{f"{n}_ptr": "*fp32" for n in ("r", "w", "k", "v", "a", "b", "s0", "y", "ss", "sT")},
           "T": "i32", "H": "i32", "K": "i32", "V": "i32",
           "SAVE": "constexpr", "BLOCK_V": "constexpr", "BLOCK_K": "constexpr"}
wkv_bwd = {**{f"{n}_ptr": "*fp32" for n in ("r", "w", "k", "v", "a", "b", "ss", "dy", "dsT",
                                             "dr", "dw", "dk", "dv", "da", "db", "ds0")},
           "T": "i32", "H": "i32", "K": "i32", "V": "i32", "part_stride": "i64",
           "HAS_DST": "constexpr", "BLOCK_V": "constexpr", "BLOCK_K": "constexpr"}
wkv_blocks = {"BLOCK_V": wkv.BLOCK_V, "BLOCK_K": 64}
jobs = [
    (scan._scan_fwd_kernel, scan_fwd, {**flags, "SAVE": True}, scan.NUM_WARPS),
    (scan._scan_fwd_kernel, scan_fwd, {**flags, "SAVE": False}, scan.NUM_WARPS),
    (scan._scan_bwd_kernel, scan_bwd, {**flags, "HAS_DHT": True}, scan.NUM_WARPS),
    (scan._scan_bwd_kernel, scan_bwd, {**flags, "HAS_D": False, "HAS_Z": False, "HAS_BIAS": False,
                                       "SOFTPLUS": False, "HAS_DHT": False}, scan.NUM_WARPS),
    (wkv._wkv7_fwd_kernel, wkv_fwd, {**wkv_blocks, "SAVE": True}, wkv.NUM_WARPS),
    (wkv._wkv7_bwd_kernel, wkv_bwd, {**wkv_blocks, "HAS_DST": True}, wkv.NUM_WARPS),
    (wkv._wkv7_bwd_kernel, wkv_bwd, {**wkv_blocks, "HAS_DST": False}, wkv.NUM_WARPS),
]
for fn, sig, consts, warps in jobs:
    compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target,
                              options={"num_warps": warps})
    assert compiled.asm["cubin"], fn.__name__
    print("compiled", fn.__name__)
"""


def test_training_kernels_compile_for_sm90():
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip("this triton has no bundled ptxas")
    proc = run_outside_interpreter(SCRIPT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("compiled") == 7, proc.stdout
