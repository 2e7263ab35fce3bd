"""The xLSTM family against its origins: transformers' xLSTMForCausalLM and the xlstm package."""

import json
import os

import pytest
import torch

if not torch.cuda.is_available():  # the Triton-path test below runs interpreted on CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")
from safetensors.torch import save_file

from archrouter.backends import xlstm as X
from archrouter.backends.base import CausalLM
from archrouter.backends.families import load as family_load

# fp32 everywhere. Logits are O(1..10); both sides run the same stabilised cell in a different
# order (chunkwise vs per step, fused vs split matmuls), which moves them by ~1e-6: 1e-4 absolute.
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))


def randomise_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Fresh random weights everywhere (norm weights around their identity, gates spread)."""
    with torch.no_grad():
        for p in model.parameters():
            r = torch.randn(p.shape, generator=gen)
            p.copy_(r * 0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else r * 0.3)


def hf_reference(cfg: dict, gen):
    from transformers import xLSTMConfig, xLSTMForCausalLM

    hf = xLSTMConfig(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_heads"],
        weight_mode=cfg["weight_mode"],
        use_bias=cfg["use_bias"],
        # the native torch kernels, fp32 states and kernels: the path to compare with on CPU
        chunkwise_kernel="chunkwise--native_autograd",
        sequence_kernel="native_sequence__native",
        step_kernel="native",
        mode="inference",
        autocast_kernel_dtype="float32",
        inference_state_dtype="float32",
        chunk_size=16,
    )
    ref = xLSTMForCausalLM(hf).eval()
    randomise_(ref, gen)
    return ref


def package_reference(cfg: dict, gen):
    pytest.importorskip("xlstm")
    from xlstm import (
        FeedForwardConfig,
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
        xLSTMLMModel,
        xLSTMLMModelConfig,
    )

    m, sb = cfg["mlstm_block"]["mlstm"], cfg["slstm_block"]
    pc = xLSTMLMModelConfig(
        vocab_size=cfg["vocab_size"],
        embedding_dim=cfg["embedding_dim"],
        num_blocks=cfg["num_blocks"],
        context_length=cfg["context_length"],
        slstm_at=list(cfg["slstm_at"]),
        bias=cfg["bias"],
        tie_weights=cfg["tie_weights"],
        mlstm_block=mLSTMBlockConfig(
            mlstm=mLSTMLayerConfig(
                conv1d_kernel_size=m["conv1d_kernel_size"],
                qkv_proj_blocksize=m["qkv_proj_blocksize"],
                num_heads=m["num_heads"],
                proj_factor=m["proj_factor"],
            )
        ),
        slstm_block=sLSTMBlockConfig(
            slstm=sLSTMLayerConfig(
                backend="vanilla",
                num_heads=sb["slstm"]["num_heads"],
                conv1d_kernel_size=sb["slstm"]["conv1d_kernel_size"],
                dtype="float32",
            ),
            feedforward=FeedForwardConfig(
                proj_factor=sb["feedforward"]["proj_factor"], act_fn=sb["feedforward"]["act_fn"]
            ),
        ),
    )
    ref = xLSTMLMModel(pc).eval()
    randomise_(ref, gen)
    return ref


def package_checkpoint(ref, cfg: dict, path) -> None:
    """What a user of the package saves: its state dict as safetensors plus our config.json."""
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.fixture
def hf_pair(tmp_path, gen):
    cfg = X.random_config("7b-tiny")
    ref = hf_reference(cfg, gen)
    ref.save_pretrained(tmp_path)  # the folder format `load` must read
    return ref, X.load(tmp_path)


@pytest.fixture
def pkg_pair(tmp_path, gen):
    cfg = {**X.random_config("tiny"), "context_length": 64}
    ref = package_reference(cfg, gen)
    package_checkpoint(ref, cfg, tmp_path)
    return ref, family_load("xlstm", tmp_path)


def decode_split(model: CausalLM, ids: torch.Tensor, split: int) -> torch.Tensor:
    logits, cache = model(ids[:, :split])
    out = [logits]
    for t in range(split, ids.shape[1]):
        logits, cache = model(ids[:, t : t + 1], cache)
        out.append(logits)
    return torch.cat(out, 1)


@torch.no_grad()
def test_hf_prefill_and_decode_match_transformers(hf_pair, gen):
    ref, ours = hf_pair
    assert isinstance(ours, X.XLSTMForCausalLM) and ours.context_length is None
    ids = torch.randint(0, ours.vocab_size, (2, 37), generator=gen)
    torch.testing.assert_close(ours(ids)[0], ref(ids).logits, **TOL)
    # transformers token by token (prefill 20, then 17 single steps) vs ours the same way
    out = ref(ids[:, :20], use_cache=True)
    ref_steps, cache = [out.logits], out.cache
    for t in range(20, 37):
        out = ref(ids[:, t : t + 1], cache=cache, use_cache=True)
        ref_steps.append(out.logits)
        cache = out.cache
    torch.testing.assert_close(decode_split(ours, ids, 20), torch.cat(ref_steps, 1), **TOL)


@torch.no_grad()
def test_hf_fused_weight_mode(hf_pair, gen):
    """weight_mode="fused" (one qkv+o matrix, one i+f matrix, one gate+up matrix). transformers'
    own init breaks for fused models, so the reference is the single-mode model with the same weights."""
    ref, single = hf_pair
    fused = X.build({**single.config, "weight_mode": "fused"}).eval()
    groups = {  # fused parameter -> the single-mode parameters stacked in it, in order
        "mlstm_layer.qkv_opreact": [
            "mlstm_layer.q",
            "mlstm_layer.k",
            "mlstm_layer.v",
            "mlstm_layer.ogate_preact",
        ],
        "mlstm_layer.ifgate_preact": ["mlstm_layer.igate_preact", "mlstm_layer.fgate_preact"],
        "ffn.proj_up_gate_z": ["ffn.proj_up_gate", "ffn.proj_up"],
    }
    src = single.state_dict()
    state = {}
    for name in fused.state_dict():
        prefix, leaf = name.rsplit(".", 1)
        hit = next((g for g in groups if prefix.endswith(g)), None)
        if hit is None:
            state[name] = src[name]
        else:
            block = prefix[: -len(hit)]
            state[name] = torch.cat([src[f"{block}{part}.{leaf}"] for part in groups[hit]])
    fused.load_state_dict(state, strict=True)
    ids = torch.randint(0, single.vocab_size, (1, 19), generator=gen)
    torch.testing.assert_close(fused(ids)[0], ref(ids).logits, **TOL)


@torch.no_grad()
def test_mixed_model_matches_xlstm_package(pkg_pair, gen):
    ref, ours = pkg_pair
    assert isinstance(ours, X.XLSTMLMModel) and ours.config["slstm_at"] == [1]
    ids = torch.randint(0, ours.vocab_size, (2, 33), generator=gen)
    torch.testing.assert_close(ours(ids)[0], ref(ids), **TOL)
    # the package's own step() token by token vs our prefill of 9 then single steps
    state, steps = None, []
    for t in range(ids.shape[1]):
        logits, state = ref.step(ids[:, t : t + 1], state)
        steps.append(logits)
    torch.testing.assert_close(decode_split(ours, ids, 9), torch.cat(steps, 1), **TOL)


@pytest.mark.parametrize("preset", ["tiny", "7b-tiny"])
@torch.no_grad()
def test_prefill_then_decode_equals_one_prefill(preset, gen):
    model = X.init_weights(
        X.build(X.random_config(preset)), seed=int(torch.randint(0, 1000, (1,), generator=gen))
    )
    ids = torch.randint(0, model.vocab_size, (3, 70), generator=gen)  # > one 64-token chunk
    full, _ = model(ids)
    torch.testing.assert_close(decode_split(model, ids, 41), full, **TOL)
    # two prefills back to back
    a, cache = model(ids[:, :30])
    b, _ = model(ids[:, 30:], cache)
    torch.testing.assert_close(torch.cat([a, b], 1), full, **TOL)


@torch.no_grad()
def test_cache_gather_snapshot_restore(gen):
    model = X.init_weights(X.build(X.random_config("tiny")), seed=3)
    ids = torch.randint(0, model.vocab_size, (3, 12), generator=gen)
    nxt = torch.randint(0, model.vocab_size, (3, 1), generator=gen)
    _, cache = model(ids)
    assert isinstance(cache, X.XLSTMCache) and cache.batch_size == 3
    assert {"0.C", "0.n", "0.m", "0.conv", "1.h", "1.c", "1.n", "1.m", "1.conv"} <= cache.tensors.keys()
    snap = cache.snapshot(1)
    picked = cache.gather([2, 0])
    want, _ = model(nxt, cache)  # advances `cache` in place
    got, _ = model(nxt[[2, 0]], picked)
    # same states; only BLAS blocking differs with the batch size: 1e-5
    torch.testing.assert_close(got, want[[2, 0]], rtol=1e-5, atol=1e-5)
    restored = X.XLSTMCache.restore(snap)
    assert restored.batch_size == 1 and restored.meta["arch"] == "xLSTMLMModel"
    one, _ = model(nxt[1:2], restored)
    torch.testing.assert_close(one, want[1:2], rtol=1e-5, atol=1e-5)
    joined = X.XLSTMCache.concat([X.XLSTMCache.restore(snap), X.XLSTMCache.restore(snap)])
    assert joined.batch_size == 2
    with pytest.raises(ValueError):
        from archrouter.backends.base import Cache

        type("Other", (Cache,), {"family": "mamba"}).restore(snap)


@torch.no_grad()
def test_save_load_roundtrip_and_presets(tmp_path, gen):
    for preset in ("tiny", "small", "base", "7b-tiny"):
        cfg = X.random_config(preset)
        model = X.init_weights(X.build(cfg))
        assert model.family == "xlstm" and model.vocab_size == 264 and model.context_length is None
        if preset != "7b-tiny":
            assert cfg["slstm_at"], "byte-level zoo presets carry sLSTM blocks for state tracking"
    X.save(model, tmp_path / "m")
    again = X.load(tmp_path / "m")
    ids = torch.randint(0, 264, (1, 9), generator=gen)
    torch.testing.assert_close(again(ids)[0], model(ids)[0], rtol=0, atol=0)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "xlstm"
    tied = X.init_weights(X.build({**X.random_config("tiny"), "tie_weights": True}), seed=2)
    X.save(tied, tmp_path / "tied")
    again = X.load(tmp_path / "tied")
    assert again.lm_head.weight is again.token_embedding.weight
    torch.testing.assert_close(again(ids)[0], tied(ids)[0], rtol=0, atol=0)
    (tmp_path / "tied" / "config.json").write_text(json.dumps({**tied.config, "tie_weights": False}))
    with pytest.raises(KeyError, match="lm_head"):
        X.load(tmp_path / "tied")
    with pytest.raises(ValueError, match="slstm_at"):
        X.build({**X.random_config("tiny"), "slstm_at": [5]})
    assert X.random_config("tiny")["slstm_block"]["feedforward"]["act_fn"] == "gelu"  # schema defaults filled
    big = X.random_config("125m")
    with torch.device("meta"):
        n = X.build(big).num_parameters()
    assert 100e6 < n < 150e6, n


@torch.no_grad()
def test_model_through_triton_kernels_interpreted(monkeypatch, gen):
    """The model wired to the Triton kernels (run by the interpreter) equals its reference path."""
    from archrouter.kernels import mlstm, slstm

    model = X.init_weights(X.build(X.random_config("tiny")), seed=4)
    ids = torch.randint(0, model.vocab_size, (1, 70), generator=gen)
    ref = decode_split(model, ids, 68)
    monkeypatch.setattr(mlstm, "use_triton", lambda *t: True)
    monkeypatch.setattr(slstm, "use_triton", lambda *t: True)
    torch.testing.assert_close(decode_split(model, ids, 68), ref, **TOL)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_triton_path_matches_reference_on_gpu(gen):
    """On CUDA the model takes the Triton kernels; compare with ARCHROUTER_NO_TRITON=1 (torch path)."""
    model = X.init_weights(X.build(X.random_config("small")), seed=1).cuda()
    ids = torch.randint(0, 264, (2, 100), generator=gen).cuda()
    tri = decode_split(model, ids, 80)
    os.environ["ARCHROUTER_NO_TRITON"] = "1"
    try:
        ref = decode_split(model, ids, 80)
    finally:
        del os.environ["ARCHROUTER_NO_TRITON"]
    # fp32 inputs; tl.dot in ieee fp32: 1e-3 on logits (chunk-order differences)
    torch.testing.assert_close(tri, ref, rtol=1e-3, atol=1e-3)


@torch.no_grad()
def test_saved_hf_folder_loads_in_transformers(tmp_path, gen):
    """`save` writes what `xLSTMForCausalLM.from_pretrained` reads (config keys and tensor names)."""
    from transformers import xLSTMForCausalLM

    ours = X.init_weights(X.build(X.random_config("7b-tiny")), seed=5)
    X.save(ours, tmp_path)
    ref = xLSTMForCausalLM.from_pretrained(
        tmp_path,
        chunkwise_kernel="chunkwise--native_autograd",
        sequence_kernel="native_sequence__native",
        step_kernel="native",
        mode="inference",
        autocast_kernel_dtype="float32",
        inference_state_dtype="float32",
    ).eval()
    ids = torch.randint(0, ours.vocab_size, (1, 21), generator=gen)
    torch.testing.assert_close(ours(ids)[0], ref(ids).logits, **TOL)
