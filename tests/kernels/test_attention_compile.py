"""The attention kernels compile for Hopper (sm_90) with this Triton, on a machine without a GPU.

The interpreter runs kernel bodies as numpy and lets through what the real compiler rejects (tile
shapes, dot operand types, layouts); compiling to a cubin with Triton's bundled ptxas catches that
here. Pointer and stride arguments are marked 16-divisible, as Triton's launcher specialises them
at a real launch, so the compiled code is the pipelined one (async copies + wgmma) that will run.
"""

from __future__ import annotations

import pytest

from tests.kernels.outside_interpreter import run_outside_interpreter

pytest.importorskip("triton")


def _compile(fn, consts: dict, types: dict[str, str], num_warps: int = 4, num_stages: int = 3):  # noqa: ANN001, ANN202
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as triton_compile

    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name] = "constexpr"
            constexprs[(i,)] = consts[name]
            continue
        signature[name] = types.get(name, "i32")
        if signature[name].startswith("*") or name.startswith("stride"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton_compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps,
                                                                          "num_stages": num_stages})  # fmt: skip


def test_kernels_compile_for_sm90_pipelined() -> None:
    """Compiled in a subprocess: this process runs Triton in interpreter mode (tests/conftest.py), which
    decorates kernels as interpreted functions and patches the language for the interpreter."""
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError:
        pytest.skip("Triton's NVIDIA backend is not installed")
    proc = run_outside_interpreter("import tests.kernels.test_attention_compile as t; t.compile_all()")
    assert proc.returncode == 0, proc.stderr[-4000:]


def compile_all() -> None:
    """Compile every attention kernel for sm_90 and check the pipelined code (run outside the interpreter)."""
    from archrouter.kernels.attention import decode, prefill, rope

    cfg = prefill._CONFIGS[2]  # BLOCK_M 128, BLOCK_N 64, 8 warps, 3 stages
    k = _compile(prefill._attn_fwd_kernel,
                 dict(GROUP=8, HEAD_DIM=128, IS_CAUSAL=True, PRECISION="tf32", UPCAST=False, **cfg.kwargs),
                 {**dict.fromkeys(["Q", "K", "V", "O"], "*bf16"),
                  **dict.fromkeys(["Q_START", "Q_LEN", "K_START", "K_LEN"], "*i32"), "qk_scale": "fp32"},
                 cfg.num_warps, cfg.num_stages)  # fmt: skip
    ir = k.asm["ttgir"]
    assert "warp_group_dot" in ir and "async_copy_global_to_local" in ir  # wgmma fed by pipelined loads
    k = _compile(decode._paged_decode_kernel,
                 dict(GROUP=4, GROUP_PAD=16, HEAD_DIM=128, PAGE=16, ONE_SPLIT=False, PRECISION="tf32",
                      UPCAST=False, BLOCK_N=64),
                 {**dict.fromkeys(["Q", "K_CACHE", "V_CACHE", "O"], "*bf16"),
                  **dict.fromkeys(["BLOCK_TABLES", "CONTEXT_LENS"], "*i32"),
                  **dict.fromkeys(["O_PART", "LSE_PART"], "*fp32"), "qk_scale": "fp32"})  # fmt: skip
    assert "async_copy_global_to_local" in k.asm["ttgir"]
    _compile(decode._merge_splits_kernel, dict(SPLITS_PAD=8, HEAD_DIM=128),
             {"O": "*bf16", "O_PART": "*fp32", "LSE_PART": "*fp32"})  # fmt: skip
    _compile(rope._rope_kernel, dict(HQ_PAD=32, HK_PAD=8, HALF=64),
             {**dict.fromkeys(["Q", "K", "QO", "KO"], "*bf16"), "POS": "*i64", "COS_SIN": "*fp32"})  # fmt: skip
