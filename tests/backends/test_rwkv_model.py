"""RWKV-7 model against the `rwkv` package's RWKV_x070 (plain-torch path), plus cache behaviour."""

import importlib
import os

import pytest
import torch

from archrouter.backends import rwkv
from archrouter.backends.base import Cache

# fp32 throughout; the package and we run the same math in a different order (batched matmuls,
# our F.group_norm vs theirs on a different view): logits agree to ~1e-6, assert 1e-4.
ATOL = 1e-4

# the package scripts its RWKV-7 functions with torch.jit, which newer torch deprecates
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script:DeprecationWarning")


def _package_model_class():
    os.environ.update(RWKV_V7_ON="1", RWKV_JIT_ON="0", RWKV_CUDA_ON="0")
    pytest.importorskip("rwkv")
    mod = importlib.import_module("rwkv.model")
    if not hasattr(mod, "RWKV_x070"):  # imported earlier without RWKV_V7_ON
        mod = importlib.reload(mod)
    return mod.RWKV_x070


def tiny_config(**over):
    cfg = rwkv.random_config("tiny")
    cfg.update(n_layer=3, vocab_size=300, dim_decay_lora=32, dim_aaa_lora=32, dim_mv_lora=16,
               dim_gate_lora=48, dim_ffn=384)
    cfg.update(over)
    return cfg


@pytest.fixture
def seed():
    return int(torch.randint(0, 2**31 - 1, ()).item())  # fresh weights every run


@pytest.fixture
def model_and_pth(tmp_path, seed):
    model = rwkv.from_config(tiny_config(), seed=seed)
    with torch.no_grad():  # off the init's regular patterns: every parameter a distinct random value
        gen = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    # the .pth layout of BlinkDL's releases: our state_dict as is
    torch.save({k: t.clone() for k, t in model.state_dict().items()}, tmp_path / "rwkv7-tiny.pth")
    return model, tmp_path / "rwkv7-tiny.pth"


def test_pth_layout_keys_and_shapes(model_and_pth):
    model, _ = model_and_pth
    sd = model.state_dict()
    c, h = 128, 2
    assert sd["blocks.0.att.r_k"].shape == (h, 64)
    assert sd["blocks.1.att.x_r"].shape == (1, 1, c)
    assert sd["blocks.0.att.receptance.weight"].shape == (c, c)
    assert sd["blocks.0.ffn.key.weight"].shape == (384, c)
    assert "blocks.0.ln0.weight" in sd and "blocks.1.ln0.weight" not in sd
    assert "blocks.0.att.v1" not in sd and sd["blocks.2.att.v1"].shape == (c, 16)


def test_prefill_and_token_by_token_match_rwkv_package(model_and_pth):
    model, pth = model_and_pth
    theirs = _package_model_class()(str(pth.with_suffix("")), "cpu fp32")
    ids = torch.randint(0, 300, (2, 17))
    with torch.no_grad():
        ours, _ = model(ids)
    for row in range(2):
        full, _ = theirs.forward(ids[row].tolist(), None, full_output=True)
        assert (ours[row] - full).abs().max() < ATOL
        state = None
        for t in range(ids.shape[1]):
            step, state = theirs.forward([int(ids[row, t])], state)
            assert (ours[row, t] - step).abs().max() < ATOL


def test_load_pth_and_safetensors_give_the_same_model(model_and_pth, tmp_path):
    model, pth = model_and_pth
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        want, _ = model(ids)
        from_pth = rwkv.load(pth)
        assert from_pth.config["n_layer"] == 3 and from_pth.config["dim_mv_lora"] == 16
        assert torch.equal(from_pth(ids)[0], want)
        rwkv.save(model, tmp_path / "st")
        from_st = rwkv.load(tmp_path / "st")
        assert torch.equal(from_st(ids)[0], want)
        assert from_st.context_length is None and from_st.family == "rwkv"


def test_config_json_overrides_and_layer0_value_mix_is_ignored(tmp_path, seed):
    model = rwkv.from_config(tiny_config(n_layer=2), seed=seed)
    sd = dict(model.state_dict())
    c = model.config["n_embd"]
    # some releases carry layer 0's (unused) value-residual parameters
    sd["blocks.0.att.v0"] = torch.ones(1, 1, c)
    sd["blocks.0.att.v1"] = torch.zeros(c, 16)
    sd["blocks.0.att.v2"] = torch.zeros(16, c)
    d = tmp_path / "ckpt"
    d.mkdir()
    torch.save(sd, d / "model.pth")
    (d / "config.json").write_text('{"tokenizer": "byte", "name": "tiny-test"}')
    loaded = rwkv.load(d)
    assert loaded.config["name"] == "tiny-test" and loaded.config["n_layer"] == 2
    ids = torch.randint(0, 300, (1, 5))
    with torch.no_grad():
        assert torch.equal(loaded(ids)[0], model(ids)[0])


def test_prefill_then_decode_equals_one_prefill(seed):
    model = rwkv.from_config(tiny_config(), seed=seed)
    ids = torch.randint(0, 300, (3, 17))
    with torch.no_grad():
        full, full_cache = model(ids)
        part, cache = model(ids[:, :10])
        steps = [part]
        for t in range(10, 17):
            logits, cache = model(ids[:, t : t + 1], cache)
            steps.append(logits)
    assert (torch.cat(steps, 1) - full).abs().max() < ATOL
    for k in full_cache.tensors:
        assert (cache.tensors[k] - full_cache.tensors[k]).abs().max() < ATOL


def test_cache_gather_snapshot_restore(seed):
    model = rwkv.from_config(tiny_config(), seed=seed)
    ids = torch.randint(0, 300, (3, 8))
    nxt = torch.randint(0, 300, (3, 1))
    with torch.no_grad():
        _, cache = model(ids)
        want, _ = model(nxt, rwkv.RWKVCache({k: t.clone() for k, t in cache.tensors.items()}))
        # gather: reorder rows, continue decoding, same logits per sequence
        order = [2, 0]
        got, _ = model(nxt[order], cache.gather(order))
        assert (got - want[order]).abs().max() < ATOL
        # snapshot one sequence as safetensors bytes, restore, continue
        blob = cache.snapshot(1)
        assert isinstance(blob, bytes)
        restored = rwkv.RWKVCache.restore(blob)
        assert restored.batch_size == 1 and restored.wkv(0).dtype == torch.float32
        assert restored.wkv(0).shape == (1, 2, 64, 64)
        got1, _ = model(nxt[1:2], restored)
        assert (got1 - want[1:2]).abs().max() < ATOL
        # concat of single-sequence caches continues like the batch
        joined = rwkv.RWKVCache.concat([rwkv.RWKVCache.restore(cache.snapshot(i)) for i in range(3)])
        got_all, _ = model(nxt, joined)
        assert (got_all - want).abs().max() < ATOL
    with pytest.raises(ValueError):
        rwkv.RWKVCache.restore(Cache({"x": torch.zeros(1, 2)}).snapshot(0))


def test_random_config_presets():
    for preset in ("tiny", "small", "base"):
        cfg = rwkv.random_config(preset)
        assert cfg["vocab_size"] == 264 and cfg["head_size"] == 64 and cfg["family"] == "rwkv"
    big = rwkv.random_config("0.1b")
    assert (big["n_embd"], big["n_layer"], big["vocab_size"]) == (768, 12, 65536)
    assert (big["dim_decay_lora"], big["dim_aaa_lora"], big["dim_mv_lora"], big["dim_gate_lora"]) == (
        64, 64, 32, 128)
    with torch.device("meta"):
        n = rwkv.RWKV7(big).num_parameters()
    assert 150e6 < n < 200e6  # RWKV-7 0.1B: 191M parameters with its 65536-word embedding + head
    with pytest.raises(ValueError):
        rwkv.random_config("huge")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_kernels_match_reference_path(seed, monkeypatch):
    """Same model on the GPU: WKV by the Triton kernels vs by the PyTorch reference
    (ARCHROUTER_NO_TRITON=1), prefill then decode; bf16 weights -> relative 2e-2 on logits."""
    model = rwkv.from_config(tiny_config(), seed=seed, device="cuda", dtype=torch.bfloat16)
    ids = torch.randint(0, 300, (2, 40), device="cuda")
    out = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("ARCHROUTER_NO_TRITON", flag)
        with torch.no_grad():
            pre, cache = model(ids[:, :33])
            steps = [model(ids[:, t : t + 1], cache)[0] for t in range(33, 40)]
        out[flag] = torch.cat([pre, *steps], 1).float()
    scale = out["1"].abs().max()
    assert (out["0"] - out["1"]).abs().max() / scale < 2e-2


def test_gradients_flow_for_training(seed):
    model = rwkv.from_config(tiny_config(n_layer=2), seed=seed)
    model.train()
    ids = torch.randint(0, 300, (2, 9))
    logits, _ = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 300), ids[:, 1:].reshape(-1))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    # the decay and in-context-rate paths reach the loss through the WKV recurrence
    assert grads["blocks.1.att.w0"].abs().sum() > 0 and grads["blocks.1.att.a0"].abs().sum() > 0
    with pytest.raises(ValueError):
        model(ids, model.init_cache(3))


def test_world_vocabulary_checkpoints_get_the_world_tokenizer(tmp_path, seed):
    from archrouter.backends.rwkv_tokenizer import WorldTokenizer

    cfg = tiny_config(n_layer=1, vocab_size=65536, tokenizer="rwkv_world")
    model = rwkv.from_config(cfg, seed=seed)
    torch.save(model.state_dict(), tmp_path / "world.pth")  # no config.json: inferred from emb rows
    assert isinstance(rwkv.load_tokenizer(tmp_path / "world.pth"), WorldTokenizer)
    rwkv.save(model, tmp_path / "st")
    assert isinstance(rwkv.load_tokenizer(tmp_path / "st"), WorldTokenizer)
    small = rwkv.from_config(tiny_config(n_layer=1), seed=seed)
    rwkv.save(small, tmp_path / "byte")
    generic = pytest.importorskip("archrouter.backends.tokenizer")  # the byte-level tokenizer (another module)
    assert isinstance(rwkv.load_tokenizer(tmp_path / "byte"), generic.ByteTokenizer)


def test_slots_index_a_state_pool(seed):
    """Two sequences living at rows 3 and 1 of a 5-row pool whose other rows hold other tenants'
    state: prefill and decode through `slots` give the logits of separate fresh caches, and the
    rows no sequence owns stay bit-identical."""
    model = rwkv.from_config(tiny_config(), seed=seed)
    ids = torch.randint(0, 300, (2, 12))
    slots = torch.tensor([3, 1])
    pool = model.init_cache(5)
    for t in pool.tensors.values():
        t.normal_()
        t[slots] = 0  # the two sequences start fresh
    before = {k: t.clone() for k, t in pool.tensors.items()}
    with torch.no_grad():
        want = [model(ids[i : i + 1])[0] for i in range(2)]
        pre, _ = model(ids[:, :9], pool, slots=slots)
        steps = [model(ids[:, t : t + 1], pool, slots=slots)[0] for t in range(9, 12)]
    got = torch.cat([pre, *steps], 1)
    for i in range(2):
        assert (got[i] - want[i][0]).abs().max() < ATOL
    for k, t in pool.tensors.items():
        assert torch.equal(t[[0, 2, 4]], before[k][[0, 2, 4]])
