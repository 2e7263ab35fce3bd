"""The Mamba kernels compile for an H100 (sm_90) on a machine without a GPU.

TRITON_INTERPRET=1 runs kernels as Python and misses what only the compiler sees (e.g. a kernel
reading a non-constexpr global). Triton ships ptxas, so the whole pipeline down to a cubin runs
here; it runs in a subprocess because the interpreter tests decorate the kernels in interpreter
mode for this process.
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

from archrouter.kernels.selective_scan import conv1d, scan, step

target = GPUTarget("cuda", 90, 32)
scan_sig = {"x_ptr": "*bf16", "dt_ptr": "*bf16", "A_ptr": "*fp32", "B_ptr": "*bf16", "C_ptr": "*bf16",
            "D_ptr": "*fp32", "z_ptr": "*bf16", "dt_bias_ptr": "*fp32", "state_ptr": "*fp32",
            "y_ptr": "*bf16",
            "cu_seqlens_ptr": "*i32", "slots_ptr": "*i32", "stride_x": "i32", "stride_dt": "i32",
            "stride_b": "i32", "stride_c": "i32", "stride_z": "i32", "stride_y": "i32", "stride_state": "i32",
            "dim": "i32", "dstate": "i32", "HAS_D": "constexpr", "HAS_Z": "constexpr",
            "HAS_DT_BIAS": "constexpr", "DT_SOFTPLUS": "constexpr", "BLOCK_D": "constexpr",
            "BLOCK_N": "constexpr"}
flags = {"HAS_D": True, "HAS_Z": True, "HAS_DT_BIAS": True, "DT_SOFTPLUS": True, "BLOCK_N": 16}
step_sig = {k: v for k, v in scan_sig.items() if k != "cu_seqlens_ptr"}
conv_sig = {"x_ptr": "*bf16", "w_ptr": "*bf16", "bias_ptr": "*bf16", "state_ptr": "*bf16", "y_ptr": "*bf16",
            "cu_seqlens_ptr": "*i32", "slots_ptr": "*i32", "stride_x": "i32", "stride_y": "i32",
            "stride_state_slot": "i32", "stride_state_dim": "i32", "dim": "i32", "WIDTH": "constexpr",
            "HAS_BIAS": "constexpr", "SILU": "constexpr", "BLOCK_T": "constexpr", "BLOCK_D": "constexpr"}
write_sig = {"x_ptr": "*bf16", "state_ptr": "*bf16", "cu_seqlens_ptr": "*i32", "slots_ptr": "*i32",
             "stride_x": "i32", "stride_state_slot": "i32", "stride_state_dim": "i32", "dim": "i32",
             "WIDTH": "constexpr", "BLOCK_K": "constexpr", "BLOCK_D": "constexpr"}
update_sig = {k: v for k, v in conv_sig.items() if k not in ("cu_seqlens_ptr", "BLOCK_T")}
update_sig["BLOCK_K"] = "constexpr"
bt, bd, nw = scan.DEFAULT_TILES["chunk"]
_, rbd, rnw = scan.DEFAULT_TILES["recurrent"]
chunk_sig = {}
for k, v in scan_sig.items():  # the chunk kernel adds a workspace and segment sizes
    chunk_sig[k] = v
    if k == "slots_ptr":
        chunk_sig.update({"ws_h_ptr": "*fp32", "ws_dt_ptr": "*fp32"})
    if k == "dstate":
        chunk_sig.update({"seg_len": "i32", "max_segs": "i32"})
chunk_sig.update({"MODE": "constexpr", "BLOCK_T": "constexpr"})
jobs = [
    (scan._selective_scan_fwd_kernel, chunk_sig, {**flags, "MODE": mode, "BLOCK_D": bd, "BLOCK_T": bt}, nw)
    for mode in (0, 1, 2)
] + [
    (scan._selective_scan_recurrent_kernel, scan_sig, {**flags, "BLOCK_D": rbd}, rnw),
    (step._selective_state_update_kernel, step_sig, {**flags, "BLOCK_D": 128}, 4),
    (conv1d._causal_conv1d_fwd_kernel, conv_sig,
     {"WIDTH": 4, "HAS_BIAS": True, "SILU": True, "BLOCK_T": 32, "BLOCK_D": 128}, 8),
    (conv1d._conv_state_write_kernel, write_sig, {"WIDTH": 4, "BLOCK_K": 4, "BLOCK_D": 128}, 8),
    (conv1d._causal_conv1d_update_kernel, update_sig,
     {"WIDTH": 4, "BLOCK_K": 4, "HAS_BIAS": True, "SILU": True, "BLOCK_D": 256}, 4),
]
for fn, sig, consts, warps in jobs:
    compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=target,
                              options={"num_warps": warps})
    assert compiled.asm["cubin"], fn.__name__
    print("compiled", fn.__name__)
"""


def test_kernels_compile_for_sm90():
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip("this triton has no bundled ptxas")
    proc = run_outside_interpreter(SCRIPT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("compiled") == 8
