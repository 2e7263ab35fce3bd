"""backends/mamba.py against transformers' MambaForCausalLM (its plain-PyTorch path), random tiny configs."""

from __future__ import annotations

import importlib.util

import pytest
import torch

transformers = pytest.importorskip("transformers")

from archrouter.backends import mamba  # noqa: E402
from archrouter.backends.families import load as family_load  # noqa: E402

# fp32 on both sides, same operations in a different order: differences are float rounding
# (~1e-6); the bar is 1e-4.
ATOL = 1e-4

if importlib.util.find_spec("mamba_ssm") or importlib.util.find_spec("causal_conv1d"):
    pytest.skip("mamba_ssm/causal_conv1d installed: transformers would not take its plain-torch path",
                allow_module_level=True)


def _hf_model(tmp_path, *, vocab=61, hidden=16, layers=2, state=4, conv=4, **kw):
    cfg = transformers.MambaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                   state_size=state, conv_kernel=conv, **kw)
    hf = transformers.MambaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF's init makes D = 1 and A regular; randomise so every term matters
        for layer in hf.backbone.layers:
            layer.mixer.D.normal_()
            layer.mixer.A_log.add_(0.3 * torch.randn_like(layer.mixer.A_log))
            layer.norm.weight.normal_(1.0, 0.2)
    hf.save_pretrained(tmp_path)
    return hf


def _hf_stepwise(hf, ids):
    out = hf(ids[:, :1], use_cache=True)
    logits, cache = [out.logits], out.cache
    for t in range(1, ids.shape[1]):
        out = hf(ids[:, t : t + 1], cache=cache, use_cache=True)
        logits.append(out.logits)
        cache = out.cache
    return torch.cat(logits, 1)


@pytest.mark.parametrize("variant", [
    {},
    {"use_conv_bias": False, "use_bias": True, "residual_in_fp32": False, "conv": 3, "state": 16},
    {"tie_word_embeddings": False, "time_step_rank": 3},
])
def test_prefill_and_decode_match_transformers(tmp_path, variant):
    hf = _hf_model(tmp_path, **variant)
    ours = mamba.load(tmp_path)
    ids = torch.randint(0, 61, (3, 11))
    with torch.no_grad():
        ref = hf(ids).logits
        got, _ = ours(ids)
        assert (got - ref).abs().max() < ATOL
        ref_steps = _hf_stepwise(hf, ids)
        cache, steps = ours.init_cache(3), []
        for t in range(ids.shape[1]):
            logits, cache = ours(ids[:, t : t + 1], cache)
            steps.append(logits)
        assert (torch.cat(steps, 1) - ref_steps).abs().max() < ATOL


def test_prefill_then_decode_equals_one_prefill(tmp_path):
    _hf_model(tmp_path, hidden=24, state=8)
    ours = mamba.load(tmp_path)
    ids = torch.randint(0, 61, (2, 13))
    k = 5
    with torch.no_grad():
        full, _ = ours(ids)
        first, cache = ours(ids[:, :k])
        steps = [first]
        for t in range(k, 9):
            logits, cache = ours(ids[:, t : t + 1], cache)
            steps.append(logits)
        rest, cache = ours(ids[:, 9:], cache)  # a second multi-token chunk continues the state too
        steps.append(rest)
    assert (torch.cat(steps, 1) - full).abs().max() < ATOL


# the same rows in a batch of another size: BLAS may block the matmuls differently, so allow
# fp32 rounding rather than bit equality
ROW_ATOL = 1e-5


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() < ROW_ATOL)


def test_cache_gather_snapshot_restore(tmp_path):
    _hf_model(tmp_path)
    ours = mamba.load(tmp_path)
    ids = torch.randint(0, 61, (3, 7))
    nxt = torch.randint(0, 61, (3, 1))
    with torch.no_grad():
        _, cache = ours(ids)
        copy = mamba.MambaCache({k: v.clone() for k, v in cache.tensors.items()}, cache.meta)
        batch_logits, _ = ours(nxt, copy)
        sub = cache.gather([2, 0])
        sub_logits, _ = ours(nxt[[2, 0]], sub)
        assert _close(sub_logits, batch_logits[[2, 0]])
        data = cache.snapshot(1)
        one = mamba.MambaCache.restore(data)
        assert one.batch_size == 1 and one.ssm(0).dtype == torch.float32
        one_logits, _ = ours(nxt[1:2], one)
        assert _close(one_logits, batch_logits[1:2])
        again = mamba.MambaCache.restore(data)  # `one` was advanced in place by the forward above
        assert torch.equal(again.ssm(1), cache.ssm(1)[1:2]) and torch.equal(again.conv(0), cache.conv(0)[1:2])
        joined = mamba.MambaCache.concat([mamba.MambaCache.restore(cache.snapshot(i)) for i in (0, 1, 2)])
        joined_logits, _ = ours(nxt, joined)
        assert _close(joined_logits, batch_logits)
    with pytest.raises(ValueError):
        from archrouter.backends.base import Cache

        class Other(Cache):
            family = "rwkv"

        Other.restore(data)


def test_load_bf16(tmp_path):
    hf = _hf_model(tmp_path, hidden=32, state=8)
    ids = torch.randint(0, 61, (2, 9))
    ours = family_load("mamba", tmp_path, dtype=torch.bfloat16)
    assert ours.backbone.layers[0].mixer.in_proj.weight.dtype == torch.bfloat16
    assert ours.backbone.layers[0].mixer.A_log.dtype == torch.float32
    with torch.no_grad():
        ref = hf(ids).logits
        got, cache = ours(ids)
    assert cache.ssm(0).dtype == torch.float32 and cache.conv(0).dtype == torch.bfloat16
    # bf16 weights and activations against the fp32 model: ~2^-8 relative per op over two
    # layers; bound the error by 5% of the logits' range
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()
    ours16 = mamba.load(tmp_path, dtype=torch.float16)
    with torch.no_grad():
        got16, _ = ours16(ids)
    assert (got16 - ref).abs().max() < 0.05 * ref.abs().max()


def test_save_roundtrips_through_transformers(tmp_path):
    model = mamba.from_config(mamba.random_config("tiny"), seed=1)
    mamba.save(model, tmp_path / "ours")
    hf = transformers.MambaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    ids = torch.randint(0, model.vocab_size, (2, 6))
    with torch.no_grad():
        got, _ = model(ids)
        ref = hf(ids).logits
    assert (got - ref).abs().max() < ATOL
    again = mamba.load(tmp_path / "ours")
    with torch.no_grad():
        assert torch.equal(again(ids)[0], got)


def test_presets_and_interface():
    for preset in mamba.PRESETS:
        cfg = mamba.random_config(preset)
        assert cfg["model_type"] == "mamba" and cfg["intermediate_size"] == 2 * cfg["hidden_size"]
    assert mamba.random_config("tiny")["vocab_size"] == 264
    c130 = mamba.random_config("130m")
    assert (c130["intermediate_size"], c130["time_step_rank"], c130["vocab_size"]) == (1536, 48, 50280)
    model = mamba.from_config(mamba.random_config("tiny"))
    assert model.family == "mamba" and model.context_length is None and model.vocab_size == 264
    with pytest.raises(ValueError):
        mamba.random_config("huge")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_path_matches_transformers_on_gpu(tmp_path):
    """The model on CUDA (Triton conv, scan and step kernels) against transformers on the CPU."""
    hf = _hf_model(tmp_path, hidden=32, state=16, layers=3)
    ours = mamba.load(tmp_path, device="cuda")
    ids = torch.randint(0, 61, (3, 37))
    with torch.no_grad():
        ref = hf(ids).logits
        got, cache = ours(ids[:, :20].cuda())
        steps = [got]
        for t in range(20, 37):
            logits, cache = ours(ids[:, t : t + 1].cuda(), cache)
            steps.append(logits)
    # fp32 everywhere; exp2 vs exp and GPU reduction order add ~1e-6 per op
    assert (torch.cat(steps, 1).cpu() - ref).abs().max() < 1e-3


def test_state_pool_with_slots(tmp_path):
    """A cache used as a pool: sequences at arbitrary rows, padded rows (slot -1) touch nothing."""
    _hf_model(tmp_path)
    ours = mamba.load(tmp_path)
    ids = torch.randint(0, 61, (2, 6))
    with torch.no_grad():
        want_prefill, batch_cache = ours(ids)
        want_step, _ = ours(ids[:, -1:], batch_cache)
        pool = ours.init_cache(5)
        for k in pool.tensors:
            pool.tensors[k].normal_()  # other tenants' states
        before = {k: v.clone() for k, v in pool.tensors.items()}
        for k in pool.tensors:  # fresh sequences start from zero state
            pool.tensors[k][[4, 1]] = 0
        got_prefill, _ = ours(ids, pool, slots=torch.tensor([4, 1]))
        padded = torch.cat([ids[:, -1:], ids[:1, -1:]])  # a third, padded row
        got_step, _ = ours(padded, pool, slots=torch.tensor([4, 1, -1]))
    assert (got_prefill - want_prefill).abs().max() < ROW_ATOL
    assert (got_step[:2] - want_step).abs().max() < ROW_ATOL
    for k, v in pool.tensors.items():
        assert torch.equal(v[[0, 2, 3]], before[k][[0, 2, 3]]), k
    with pytest.raises(ValueError, match="slots"):
        ours(ids, pool, slots=torch.tensor([0]))


def test_cache_batch_mismatch_is_an_error(tmp_path):
    model = mamba.from_config(mamba.random_config("tiny"))
    with pytest.raises(ValueError, match="gather"):
        model(torch.zeros(2, 3, dtype=torch.long), model.init_cache(3))
