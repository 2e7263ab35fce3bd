"""archrouter.evals.training: tags and weights, bucketed batches, token shares, a short CPU run that lowers
the loss, writes a loadable bf16 pack, and resumes (from optimizer state or from the pack)."""

import json
import tarfile
from collections import Counter

import pytest
import torch

from archrouter.backends.families import load
from archrouter.evals.batches import Sampler, item_tokens, load_recipe
from archrouter.evals.tasks import make_item
from archrouter.evals.training import (
    TrainConfig,
    autocast,
    build_model,
    encode,
    eval_items,
    evaluate,
    evaluate_guarded,
    exact_match,
    loss_fn,
    lr_at,
    make_optimizer,
    score,
    train,
    train_batch,
)


def test_loss_mask_covers_answer_and_tags_only():
    item = make_item("parity", 1, 12)
    ids, targets, weights = encode(item)
    assert len(ids) == len(targets) == len(weights)
    scored = [i for i, t in enumerate(targets) if t != -100]
    # the tags: at prompt character off the target is the tag (BOS, USER come first)
    for off, t in item.tags:
        assert ids[2 + off] == ord(item.prompt[off]) and targets[2 + off] == ord(t)
    assert len(scored) == len(item.tags) + len(item.answer) + 1
    assert abs(sum(weights) - 1.0) < 1e-6  # each row weighs 1: half answer, half tags
    assert abs(sum(weights[2 + o] for o, _ in item.tags) - 0.5) < 1e-6
    ids2, targets2, weights2 = encode(item, with_tags=False)
    answer = [t for t in targets2 if t != -100]
    assert ids2 == ids and bytes(answer[:-1]).decode() == item.answer and abs(sum(weights2) - 1) < 1e-6


def test_exact_match_ignores_tags():
    """A model that gets every tag wrong but the answer right is right; the teacher-forced verdict
    depends on the answer positions only."""
    item = make_item("cups5", 3, 6)
    ids, targets, _ = encode(item, with_tags=False)

    class Oracle(torch.nn.Module):  # predicts exactly the untagged targets, so any tag position is "wrong"
        def forward(self, x, cache):
            out = torch.full((*x.shape, 264), -1e4)
            for r in range(x.shape[0]):
                for i in range(x.shape[1]):
                    tgt = targets[i] if i < len(targets) and targets[i] != -100 else 0
                    out[r, i, tgt] = 0.0
            return out, None

    assert exact_match(Oracle(), [item], torch.device("cpu")) == [True]
    assert score(Oracle(), [item], torch.device("cpu")) == ([True], [True])


def test_data_stream_is_a_function_of_seed_and_step():
    cfg = TrainConfig(family="transformer", out="", tokens_per_step=2048, max_seq_len=256)
    a, b = train_batch(cfg, 5), train_batch(cfg, 5)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    c = train_batch(cfg, 6)
    assert a[0].shape != c[0].shape or not torch.equal(a[0], c[0])
    x, y, w = a
    assert x.numel() <= 2048 and x.shape[1] in load_recipe()["buckets"]  # one bucket, the token budget
    rows = w.sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows))  # every row weighs 1


def test_token_shares_hold_over_many_steps():
    recipe = load_recipe()
    s = Sampler(recipe, 7, tokens_per_step=8192)
    tok: Counter = Counter()
    for step in range(400, 1000):
        items, length = s.batch(step)
        assert all(item_tokens(it) <= length for it in items)
        for it in items:
            tok[it.generator] += item_tokens(it)
    total, shares = sum(tok.values()), recipe["token_shares"]
    z = sum(shares.values())
    for g, share in shares.items():  # within a factor 1.6 of the recipe (bucket fill ratios differ)
        assert 0.6 * share / z < tok[g] / total < 1.6 * share / z, g


def test_schedule_warms_up_holds_then_decays():
    cfg = TrainConfig(family="transformer", out="", steps=100, warmup=10, lr=1e-3, decay_frac=0.25)
    assert lr_at(cfg, 0) < lr_at(cfg, 9) == 1e-3 == lr_at(cfg, 74) > lr_at(cfg, 90) > lr_at(cfg, 99) >= 1e-4


def test_transformer_trains_saves_and_resumes(tmp_path):
    cfg = TrainConfig(family="transformer", out=str(tmp_path / "ckpt"), preset="tiny", steps=24, stop_at=20,
                      tokens_per_step=512, max_seq_len=128, warmup=3, lr=3e-3, eval_every=10, eval_items=1,
                      workers=0, progress=False, device="cpu", pack=str(tmp_path / "transformer.tar"))
    rec = train(cfg, command="first")
    hist = [loss for _, loss in rec["loss_history"]]
    assert rec["steps"] == 20 and hist[-1] < hist[0] - 0.5  # the byte distribution alone drops it
    saved = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert saved["tokens"] == sum(g["real_tokens"] for g in saved["generators"].values()) > 0
    assert 0 < saved["supervised_tokens"] < saved["tokens"] <= saved["padded_tokens"] <= 20 * 512
    assert set(saved["eval"]["first_byte"]) == set(saved["eval"]["per_generator"]) and saved["evals"][0]["step"] == 10
    with tarfile.open(tmp_path / "transformer.tar") as tar:
        assert sorted(tar.getnames()) == ["config.json", "model.safetensors", "training.json"]
        tar.extractall(tmp_path / "packed", filter="data")
    model = load("transformer", tmp_path / "packed")
    assert json.loads((tmp_path / "packed" / "config.json").read_text())["dtype"] == "bfloat16"
    logits, _ = model(torch.tensor([[256, 257]]))
    assert logits.shape[-1] >= 263
    cfg.stop_at = 0  # resume: continues from step 20 with the saved optimizer, to the schedule's end
    rec2 = train(cfg, command="second")
    assert rec2["steps"] == 24 and rec2["loss_history"][: len(rec["loss_history"])] == rec["loss_history"]
    assert rec2["commands"] == ["first", "second"] and "optimizer state" in rec2["resumes"][0]
    # a packed (bf16, no optimizer state) checkpoint resumes too, and says the optimizer restarted
    cfg.out, cfg.steps, cfg.pack = str(tmp_path / "packed"), 22, ""
    rec3 = train(cfg)
    assert rec3["steps"] == 22 and "restarted" in rec3["resumes"][-1]


@pytest.mark.parametrize("family", ["mamba", "rwkv", "xlstm"])
def test_recurrent_family_steps_lower_the_loss(family):
    """A few AdamW steps on one batch through each family's differentiable path (kernels/*/train.py)."""
    cfg = TrainConfig(family=family, out="", preset="tiny", tokens_per_step=512, max_seq_len=128, lr=3e-3)
    device = torch.device("cpu")
    model = build_model(family, "tiny", 0, device).train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = make_optimizer(model, cfg)
    x, y, w = train_batch(cfg, 0)
    losses = []
    for _ in range(5):
        loss = loss_fn(model, x, y, w, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses  # from random init the answer-byte loss falls fast


def _grads_and_loss(family: str, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    model = build_model(family, "tiny", 0, device).train()
    for p in model.parameters():
        p.requires_grad_(True)
    logits, _ = model(x, None)  # no autocast: fp32 on both paths
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", ["transformer", "mamba", "rwkv", "xlstm"])
def test_cuda_training_step_matches_torch_paths(family, monkeypatch):
    """On CUDA the training forward/backward takes the Triton training kernels (Mamba, RWKV-7); the loss
    and every parameter gradient match ARCHROUTER_NO_TRITON=1 (all torch), fp32."""
    cfg = TrainConfig(family=family, out="", tokens_per_step=512, max_seq_len=128)
    x, y, _ = (t.cuda() for t in train_batch(cfg, 0))
    device = torch.device("cuda")
    old_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # train() turns them on
    monkeypatch.delenv("ARCHROUTER_NO_TRITON", raising=False)
    loss, grads = _grads_and_loss(family, x, y, device)
    monkeypatch.setenv("ARCHROUTER_NO_TRITON", "1")
    loss_ref, grads_ref = _grads_and_loss(family, x, y, device)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32
    assert abs(loss - loss_ref) <= 1e-4 * max(1.0, abs(loss_ref))
    assert grads.keys() == grads_ref.keys()
    for name, g in grads.items():
        ref = grads_ref[name]
        assert (g - ref).abs().max() <= 1e-3 * max(1e-3, float(ref.abs().max())), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", ["transformer", "mamba", "rwkv", "xlstm"])
def test_cuda_eval_under_autocast_matches_references(family, monkeypatch):
    """The periodic eval (no grad, bf16 autocast, fp32 weights) runs the serving Triton kernels on CUDA;
    its logits match the references' (ARCHROUTER_NO_TRITON=1) up to bf16 rounding, and so do verdicts."""
    device = torch.device("cuda")
    model = build_model(family, "tiny", 0, device).train()
    items = eval_items(2)
    cfg = TrainConfig(family=family, out="", tokens_per_step=1024, max_seq_len=128)
    x, _, _ = train_batch(cfg, 0)
    monkeypatch.delenv("ARCHROUTER_NO_TRITON", raising=False)
    with torch.no_grad(), autocast(device):
        got, _ = model(x.to(device), None)
    ev = evaluate_guarded(model, items, device)
    assert ev["paths"] == "kernels"  # no fallback to the references was needed
    monkeypatch.setenv("ARCHROUTER_NO_TRITON", "1")
    with torch.no_grad(), autocast(device):
        want, _ = model(x.to(device), None)
    ev_ref = evaluate(model, items, device)
    assert (got - want).abs().max() <= 2e-2 * max(1.0, float(want.abs().max()))
    assert ev["items"] == ev_ref["items"] and ev["accuracy"] == ev_ref["accuracy"]
