"""The Llama family against transformers' LlamaForCausalLM, on fresh random tiny configs.

Tolerance: fp32 logits within 1e-4 of transformers' (both run the same math in a different
order: SDPA with an explicit mask vs transformers' own path, cache writes vs one prefill); the
weights are rescaled so logits are O(1) and the bound means something. Our own paths (prefill
vs decode, batched vs alone) agree within 1e-5.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from archrouter.backends import transformer as tr  # noqa: E402
from archrouter.backends.base import Cache  # noqa: E402

HF_TOL = 1e-4
SELF_TOL = 1e-5
VOCAB = 61  # odd on purpose: nothing may assume a padded vocabulary

CONFIGS = {
    # GQA ratio 1, tied embeddings, plain RoPE
    "mha-tied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    # GQA ratio 2, untied, linear scaling, attention and mlp biases
    "gqa2-linear-bias": dict(
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "linear", "factor": 3.0, "rope_theta": 5000.0},
        attention_bias=True,
        mlp_bias=True,
    ),
    # GQA ratio 4, llama3 scaling whose original context is shorter than the test sequence,
    # and an explicit head_dim that differs from hidden_size / heads
    "gqa4-llama3-headdim": dict(
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=8,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
}


def _randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights at a scale where logits are O(1) (transformers' 0.02 init would make them ~0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def make_hf(kind: str, tmp_path, seed: int | None = None) -> tuple[LlamaForCausalLM, tr.Transformer]:
    seed = torch.randint(0, 2**31, ()).item() if seed is None else seed
    gen = torch.Generator().manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        **CONFIGS[kind],
    )
    hf = LlamaForCausalLM(cfg).eval()
    _randomise(hf, gen)
    hf.save_pretrained(tmp_path / kind)
    return hf, tr.load(tmp_path / kind)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_prefill_and_decode_match_transformers(kind, tmp_path):
    hf, ours = make_hf(kind, tmp_path)
    ids = torch.randint(0, VOCAB, (2, 37))  # 37 > original context 16 of the llama3 config
    with torch.no_grad():
        ref = hf(ids).logits
        prefill, cache = ours(ids)
        assert max_diff(prefill, ref) < HF_TOL
        assert cache.lengths.tolist() == [37, 37]

        cache = ours.init_cache(2)
        steps = []
        for t in range(ids.shape[1]):
            logits, cache = ours(ids[:, t : t + 1], cache)
            steps.append(logits)
    assert max_diff(torch.cat(steps, 1), ref) < HF_TOL


def test_legacy_rope_config_keys(tmp_path):
    """Older checkpoints spell RoPE as top-level rope_theta + rope_scaling {"type": ...}."""
    hf, _ = make_hf("gqa2-linear-bias", tmp_path)
    folder = tmp_path / "gqa2-linear-bias"
    cfg = json.loads((folder / "config.json").read_text())
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params["rope_theta"]
    cfg["rope_scaling"] = {"type": "linear", "factor": params["factor"]}
    (folder / "config.json").write_text(json.dumps(cfg))
    hf_legacy = LlamaForCausalLM.from_pretrained(folder).eval()
    ours = tr.load(folder)
    ids = torch.randint(0, VOCAB, (1, 29))
    with torch.no_grad():
        assert max_diff(ours(ids)[0], hf_legacy(ids).logits) < HF_TOL
        assert max_diff(ours(ids)[0], hf(ids).logits) < HF_TOL


@pytest.mark.parametrize("kind", ["mha-tied", "gqa4-llama3-headdim"])
def test_greedy_matches_generate(kind, tmp_path):
    hf, ours = make_hf(kind, tmp_path)
    prompt = torch.randint(0, VOCAB, (1, 9))
    n_new = 20
    with torch.no_grad():
        ref = hf.generate(prompt, do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new)
        logits, cache = ours(prompt)
        out = prompt.tolist()[0]
        for _ in range(n_new):
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            logits, cache = ours(torch.tensor([[nxt]]), cache)
    assert out == ref[0].tolist()


def test_prefill_then_decode_equals_one_prefill(tmp_path):
    _, ours = make_hf("gqa2-linear-bias", tmp_path)
    ids = torch.randint(0, VOCAB, (3, 31))
    with torch.no_grad():
        full, _ = ours(ids)
        for k in (1, 8, 17):
            first, cache = ours(ids[:, :k])
            parts = [first]
            # the rest in uneven chunks, then single tokens
            mid = min(k + 5, 31)
            logits, cache = ours(ids[:, k:mid], cache)
            parts.append(logits)
            for t in range(mid, 31):
                logits, cache = ours(ids[:, t : t + 1], cache)
                parts.append(logits)
            assert max_diff(torch.cat(parts, 1), full) < SELF_TOL


def _alone(model, seq: torch.Tensor, n_decode: int, feed: torch.Tensor) -> torch.Tensor:
    """Prefill `seq` then decode the tokens of `feed` one at a time; stacked logits of the decode."""
    _, cache = model(seq[None])
    out = []
    for t in range(n_decode):
        logits, cache = model(feed[t].view(1, 1), cache)
        out.append(logits[0, -1])
    return torch.stack(out)


def test_batched_decode_of_different_lengths_equals_each_alone(tmp_path):
    _, ours = make_hf("gqa4-llama3-headdim", tmp_path)
    lengths = [3, 11, 24]
    seqs = [torch.randint(0, VOCAB, (n,)) for n in lengths]
    n_decode = 6
    feed = torch.randint(0, VOCAB, (n_decode, len(lengths)))
    with torch.no_grad():
        caches = [ours(s[None])[1] for s in seqs]
        cache = tr.KVCache.concat(caches)
        assert cache.lengths.tolist() == lengths
        batched = []
        for t in range(n_decode):
            logits, cache = ours(feed[t].view(-1, 1), cache)
            batched.append(logits[:, -1])
        batched = torch.stack(batched, 1)  # [B, n_decode, V]
        for b, s in enumerate(seqs):
            assert max_diff(batched[b], _alone(ours, s, n_decode, feed[:, b])) < SELF_TOL
    assert cache.lengths.tolist() == [n + n_decode for n in lengths]


def test_batched_multi_token_step_at_different_lengths(tmp_path):
    """A T>1 step over rows at different lengths (e.g. speculative or chunked prefill) also matches."""
    _, ours = make_hf("gqa2-linear-bias", tmp_path)
    seqs = [torch.randint(0, VOCAB, (n,)) for n in (5, 13)]
    chunk = torch.randint(0, VOCAB, (2, 4))
    with torch.no_grad():
        cache = tr.KVCache.concat([ours(s[None])[1] for s in seqs])
        logits, _ = ours(chunk, cache)
        for b, s in enumerate(seqs):
            alone, _ = ours(torch.cat([s, chunk[b]])[None])
            assert max_diff(logits[b], alone[0, -4:]) < SELF_TOL


def test_empty_row_joins_a_running_batch(tmp_path):
    """Continuous batching: a fresh (empty, even restored-from-empty) row beside rows mid-sequence."""
    _, ours = make_hf("gqa2-linear-bias", tmp_path)
    seq = torch.randint(0, VOCAB, (7,))
    a, b = torch.randint(0, VOCAB, (2,)).tolist()
    with torch.no_grad():
        empty = tr.KVCache.restore(ours.init_cache(1).snapshot(0))
        assert empty.capacity == 0 and empty.lengths.tolist() == [0]
        cache = tr.KVCache.concat([ours(seq[None])[1], empty])
        logits, cache = ours(torch.tensor([[a], [b]]), cache)
        assert max_diff(logits[0], ours(torch.cat([seq, torch.tensor([a])])[None])[0][0, -1:]) < SELF_TOL
        assert max_diff(logits[1], ours(torch.tensor([[b]]))[0][0]) < SELF_TOL
    assert cache.lengths.tolist() == [8, 1]


def test_gather_snapshot_restore_round_trip(tmp_path):
    _, ours = make_hf("mha-tied", tmp_path)
    seqs = [torch.randint(0, VOCAB, (n,)) for n in (4, 9, 15)]
    feed = torch.randint(0, VOCAB, (3, 3))
    with torch.no_grad():
        cache = tr.KVCache.concat([ours(s[None])[1] for s in seqs])
        # decode once so the batch's capacity has grown past the shortest rows
        _, cache = ours(feed[0].view(-1, 1), cache)

        picked = cache.gather([2, 0])
        assert isinstance(picked, tr.KVCache) and picked.lengths.tolist() == [16, 5]
        logits, _ = ours(feed[1, [2, 0]].view(-1, 1), picked)
        ref_all, _ = ours(feed[1].view(-1, 1), cache.gather([0, 1, 2]))
        assert max_diff(logits, ref_all[[2, 0]]) < SELF_TOL

        data = cache.snapshot(1)
        assert isinstance(data, bytes)
        restored = tr.KVCache.restore(data)
        assert restored.batch_size == 1 and restored.lengths.tolist() == [10]
        assert restored.capacity == 10  # trimmed to the row's length
        a, _ = ours(feed[2, 1].view(1, 1), restored)
        b, _ = ours(feed[2, 1].view(1, 1), cache.gather([1]))
        assert max_diff(a, b) < SELF_TOL

        # a restored snapshot joins a batch like any other cache (forward advanced `restored` in
        # place above, so restore afresh)
        joined = tr.KVCache.concat([tr.KVCache.restore(data), cache.gather([2])])
        c, _ = ours(feed[2, [1, 2]].view(-1, 1), joined)
        d, _ = ours(feed[2, [1, 2]].view(-1, 1), cache.gather([1, 2]))
        assert max_diff(c, d) < SELF_TOL


def test_snapshot_of_another_family_is_refused():
    other = Cache({"state": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match="expected 'transformer'"):
        tr.KVCache.restore(other.snapshot(0))


def test_save_loads_in_transformers(tmp_path):
    cfg = tr.random_config("tiny")
    ours = tr.from_config(cfg, seed=int(torch.randint(0, 2**31, ())))
    _randomise(ours, torch.Generator().manual_seed(0))
    tr.save(ours, tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLM"] and saved["model_type"] == "llama"
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    ids = torch.randint(0, cfg["vocab_size"], (2, 21))
    with torch.no_grad():
        assert max_diff(ours(ids)[0], hf(ids).logits) < HF_TOL
        assert max_diff(tr.load(tmp_path / "ours")(ids)[0], ours(ids)[0]) == 0.0


def test_untied_save_round_trip(tmp_path):
    hf, ours = make_hf("gqa2-linear-bias", tmp_path)
    tr.save(ours, tmp_path / "again")
    back = LlamaForCausalLM.from_pretrained(tmp_path / "again").eval()
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        assert max_diff(back(ids).logits, hf(ids).logits) == 0.0


def test_sharded_checkpoint_loads(tmp_path):
    hf, _ = make_hf("gqa2-linear-bias", tmp_path)
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    ours = tr.load(tmp_path / "sharded")
    ids = torch.randint(0, VOCAB, (1, 15))
    with torch.no_grad():
        assert max_diff(ours(ids)[0], hf(ids).logits) < HF_TOL


def test_missing_and_unexpected_keys_are_named(tmp_path):
    make_hf("mha-tied", tmp_path)
    path = tmp_path / "mha-tied" / "model.safetensors"
    weights = load_file(path)
    weights.pop("model.layers.1.mlp.up_proj.weight")
    weights["model.layers.7.self_attn.q_proj.weight"] = torch.zeros(2, 2)
    save_file(weights, path)
    with pytest.raises(ValueError) as err:
        tr.load(tmp_path / "mha-tied")
    assert "model.layers.1.mlp.up_proj.weight" in str(err.value)
    assert "model.layers.7.self_attn.q_proj.weight" in str(err.value)


def test_wrong_shape_is_named(tmp_path):
    make_hf("mha-tied", tmp_path)
    cfg_path = tmp_path / "mha-tied" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["intermediate_size"] += 8
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as err:
        tr.load(tmp_path / "mha-tied")
    for name in ("gate_proj", "up_proj", "down_proj"):
        assert f"model.layers.1.mlp.{name}.weight has shape" in str(err.value)


@pytest.mark.parametrize("rope", [{"rope_type": "yarn", "factor": 4.0}, {"type": "dynamic", "factor": 2.0}])
def test_unknown_rope_type_is_rejected(rope):
    cfg = tr.random_config("tiny") | {"rope_scaling": rope}
    with pytest.raises(ValueError, match="unsupported rope type"):
        tr.Transformer(cfg)


def test_random_config_presets():
    sizes = {}
    for preset in ("tiny", "small", "base"):
        cfg = tr.random_config(preset)
        LlamaConfig(**cfg)  # transformers accepts it
        with torch.device("meta"):
            sizes[preset] = tr.Transformer(cfg).num_parameters()
        assert cfg["vocab_size"] == 264 and cfg["vocab_size"] % 8 == 0
    assert 0.8e6 < sizes["tiny"] < 1.3e6
    assert 4e6 < sizes["small"] < 6e6
    assert 20e6 < sizes["base"] < 30e6
    assert tr.random_config("tiny")["max_position_embeddings"] == 2048
    assert tr.random_config("base")["max_position_embeddings"] == 4096
    with pytest.raises(ValueError, match="unknown preset"):
        tr.random_config("huge")


def test_context_length_and_family():
    m = tr.from_config(tr.random_config("tiny"), seed=0)
    assert m.context_length == 2048 and m.family == "transformer"
    assert m.init_cache(3).family == "transformer" and m.init_cache(3).batch_size == 3


def test_families_registry_loads_it(tmp_path):
    from archrouter.backends.families import load

    make_hf("mha-tied", tmp_path)
    assert isinstance(load("transformer", tmp_path / "mha-tied"), tr.Transformer)


def test_training_forward_has_gradients():
    """src/archrouter/evals/training.py trains through forward(ids) with no cache."""
    m = tr.from_config(tr.random_config("tiny") | {"num_hidden_layers": 1}, seed=0).train()
    ids = torch.randint(0, 264, (2, 9))
    logits, _ = m(ids)
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 264), ids[:, 1:].reshape(-1)).backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert m.model["layers"][0].self_attn.q_proj.weight.grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_transformers(dtype, tmp_path):
    hf, _ = make_hf("gqa4-llama3-headdim", tmp_path)
    hf = hf.to("cuda", dtype)
    ours = tr.load(tmp_path / "gqa4-llama3-headdim", device="cuda", dtype=dtype)
    ids = torch.randint(0, VOCAB, (3, 45), device="cuda")
    # fp32: CUDA kernels differ from transformers' in summation order only; bf16: ~3 significant digits
    # on O(1)-O(10) logits, through 2 layers
    tol = 1e-3 if dtype == torch.float32 else 0.25
    with torch.no_grad():
        ref = hf(ids).logits.float()
        full, _ = ours(ids)
        assert max_diff(full, ref) < tol
        first, cache = ours(ids[:, :20])
        steps = [first] + [ours(ids[:, t : t + 1], cache)[0] for t in range(20, 45)]
        assert max_diff(torch.cat(steps, 1), ref) < tol
