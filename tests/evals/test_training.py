"""archrouter.evals.training: a short CPU run lowers the loss, writes a loadable checkpoint, and resumes."""

import json

import pytest
import torch

from archrouter.backends.families import load
from archrouter.evals.tasks import make_item
from archrouter.evals.training import (
    TrainConfig,
    autocast,
    build_model,
    encode,
    eval_items,
    evaluate,
    evaluate_guarded,
    loss_fn,
    lr_at,
    make_optimizer,
    train,
    train_batch,
)


def test_loss_mask_covers_answer_only():
    item = make_item("kv_lookup", 1, 4)
    ids, targets = encode(item)
    answer = [t for t in targets if t != -100]
    assert bytes(answer[:-1]).decode() == item.answer and len(ids) == len(targets)


def test_data_stream_is_a_function_of_seed_and_step():
    cfg = TrainConfig(family="transformer", out="", batch_size=3, seq_len=256)
    assert torch.equal(train_batch(cfg, 5)[0], train_batch(cfg, 5)[0])
    assert not torch.equal(train_batch(cfg, 5)[0], train_batch(cfg, 6)[0])


def test_schedule_warms_up_then_decays():
    cfg = TrainConfig(family="transformer", out="", steps=100, warmup=10, lr=1e-3)
    assert lr_at(cfg, 0) < lr_at(cfg, 9) == 1e-3 > lr_at(cfg, 50) > lr_at(cfg, 99) >= 1e-4


def test_transformer_trains_saves_and_resumes(tmp_path):
    cfg = TrainConfig(family="transformer", out=str(tmp_path / "ckpt"), preset="tiny", steps=20, batch_size=8,
                      seq_len=128, warmup=3, lr=3e-3, eval_every=0, eval_items=1, progress=False,
                      device="cpu", pack=str(tmp_path / "transformer.tar"))
    rec = train(cfg)
    hist = [loss for _, loss in rec["loss_history"]]
    assert hist[-1] < hist[0] - 0.5  # 20 steps from random init: the byte distribution alone drops it
    model = load("transformer", tmp_path / "ckpt")
    logits, _ = model(torch.tensor([[256, 257]]))
    assert logits.shape[-1] >= 263
    saved = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert saved["steps"] == 20 and saved["tokens"] == 20 * 8 * 128 and set(saved["eval"]["per_task"])
    assert (tmp_path / "transformer.tar").stat().st_size > 0
    cfg.steps = 24  # resume: continues from step 20 with the saved optimizer
    rec2 = train(cfg)
    assert rec2["steps"] == 24 and rec2["loss_history"][: len(rec["loss_history"])] == rec["loss_history"]


@pytest.mark.parametrize("family", ["mamba", "rwkv", "xlstm"])
def test_recurrent_family_steps_lower_the_loss(family):
    """A few AdamW steps on one batch through each family's differentiable path (kernels/*/train.py)."""
    cfg = TrainConfig(family=family, out="", preset="tiny", batch_size=2, seq_len=128, lr=3e-3)
    device = torch.device("cpu")
    model = build_model(family, "tiny", 0, device).train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = make_optimizer(model, cfg)
    x, y = train_batch(cfg, 0)
    losses = []
    for _ in range(5):
        loss = loss_fn(model, x, y, device)
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
    cfg = TrainConfig(family=family, out="", batch_size=4, seq_len=128)
    x, y = (t.cuda() for t in train_batch(cfg, 0))
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
    cfg = TrainConfig(family=family, out="", batch_size=8, seq_len=128)
    x, _ = train_batch(cfg, 0)
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
