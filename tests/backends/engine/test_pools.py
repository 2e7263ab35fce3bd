"""Slot pools and packed prefill: prompt chunks of any lengths in one forward equal each sequence alone,
states live in their slots, a fork continues exactly where its source is."""

from __future__ import annotations

import pytest
import torch

from archrouter.backends import families
from archrouter.backends.base import PackedBatch
from archrouter.backends.engine.pools import KVSlots, OutOfSlots, StatePool
from tests.backends.engine.conftest import FAMILY_PARAMS, RECURRENT_PARAMS


def pool_for(model, family: str, slots: int = 5):  # noqa: ANN001, ANN201
    if family == "transformer":
        return KVSlots(model, model.new_kv_pool(64, 16), slots)
    return StatePool(model, slots)


def feed(pool, seqs: list[torch.Tensor], slots: list[int], spans: list[tuple[int, int]]) -> torch.Tensor:  # noqa: ANN001
    ids = torch.cat([s[a:b] for s, (a, b) in zip(seqs, spans, strict=True)])
    batch = PackedBatch.build([b - a for a, b in spans], slots)
    return pool.prefill(ids, batch, ids.tolist())


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_packed_prefill_in_chunks_equals_each_sequence_alone(family):
    mod = families.family_module(family)
    model = mod.from_config(mod.random_config("tiny"), seed=int(torch.randint(0, 1000, ())))
    gen = torch.Generator().manual_seed(int(torch.randint(0, 1 << 30, ())))
    lengths = [(5, 2), (1, 9), (70, 1), (3, 66)]  # two chunks each: state carried between them
    seqs = [torch.randint(0, 250, (a + b,), generator=gen) for a, b in lengths]
    with torch.inference_mode():
        pool = pool_for(model, family)
        slots = [pool.alloc() for _ in seqs]
        slots = [slots[i] for i in (3, 0, 2, 1)]  # not in admission order
        feed(pool, seqs, slots, [(0, a) for a, _ in lengths])
        last = feed(pool, seqs, slots, [(a, a + b) for a, b in lengths])
        states = [pool.read(s) for s in slots] if family != "transformer" else None
        step = torch.tensor([[7], [8], [9], [10]])
        dec = pool.decode(step, torch.tensor(slots), slots)
        for i, s in enumerate(seqs):
            ref, cache = model(s[None])
            torch.testing.assert_close(last[i].float(), ref[0, -1].float(), rtol=1e-4, atol=1e-4)
            if family != "transformer":
                for k, t in cache.tensors.items():  # the state is in the sequence's own slot
                    torch.testing.assert_close(states[i].tensors[k][0], t[0], rtol=1e-4, atol=1e-4)
            ref2, _ = model(step[i : i + 1], cache)
            torch.testing.assert_close(dec[i].float(), ref2[0, -1].float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_fork_continues_from_the_source(family):
    mod = families.family_module(family)
    model = mod.from_config(mod.random_config("tiny"), seed=3)
    prompt = torch.randint(0, 250, (37,))
    with torch.inference_mode():
        pool = pool_for(model, family)
        src = pool.alloc()
        feed(pool, [prompt], [src], [(0, 37)])
        dst = pool.alloc()
        pool.fork(src, dst)
        # the two now diverge: different next tokens, each equal to the prompt + its token alone
        out = pool.decode(torch.tensor([[5], [6]]), torch.tensor([src, dst]), [src, dst])
        for row, tok in enumerate((5, 6)):
            ref, _ = model(torch.cat([prompt, torch.tensor([tok])])[None])
            torch.testing.assert_close(out[row].float(), ref[0, -1].float(), rtol=1e-4, atol=1e-4)
        if family == "transformer":  # full blocks shared, the partial last one copied on write
            shared = set(pool.seqs[src].blocks[:2]) & set(pool.seqs[dst].blocks[:2])
            assert len(shared) == 2 and pool.seqs[src].blocks[2] != pool.seqs[dst].blocks[2]
            used = pool.kv.allocator.num_used
            pool.release(dst)
            assert pool.kv.allocator.num_used == used - 1  # only its private block went back


@pytest.mark.parametrize("family", RECURRENT_PARAMS)
def test_slots_are_reset_on_admission_and_run_out(family):
    mod = families.family_module(family)
    model = mod.from_config(mod.random_config("tiny"), seed=4)
    with torch.inference_mode():
        pool = StatePool(model, 2)
        a = pool.alloc()
        feed(pool, [torch.arange(1, 9)], [a], [(0, 8)])
        b = pool.alloc()
        with pytest.raises(OutOfSlots):
            pool.alloc()
        pool.release(a)
        again = pool.alloc()
        assert again == a and b != a
        fresh = model.init_cache(1)
        for k, t in fresh.tensors.items():  # a reused slot starts from a new sequence's state
            assert torch.equal(pool.read(again).tensors[k], t)


def test_packed_prefill_and_slot_decode_through_the_triton_kernels(monkeypatch):
    """What the engine runs on a GPU, every family: packed prefill in two chunks and a decode by slot,
    through the Triton kernels (the interpreter on CPU), against the plain-PyTorch path of each sequence."""
    monkeypatch.setenv("ARCHROUTER_TRITON_ON_CPU", "1")  # only read under TRITON_INTERPRET (no GPU here)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(int(torch.randint(0, 1 << 30, ())))
    lengths = [(5, 2), (1, 9), (20, 1), (3, 17)]
    for family in [p.values[0] for p in FAMILY_PARAMS]:
        mod = families.family_module(family)
        model = mod.from_config(mod.random_config("tiny"), seed=1).to(device)
        seqs = [torch.randint(0, 250, (a + b,), generator=gen).to(device) for a, b in lengths]
        with torch.inference_mode():
            pool = pool_for(model, family)
            slots = [pool.alloc() for _ in seqs][::-1]

            def chunk(spans: list[tuple[int, int]], pool=pool, seqs=seqs, slots=slots) -> torch.Tensor:  # noqa: ANN001
                ids = torch.cat([s[a:b] for s, (a, b) in zip(seqs, spans, strict=True)])
                return pool.prefill(ids, PackedBatch.build([b - a for a, b in spans], slots, device), ids.tolist())

            chunk([(0, a) for a, _ in lengths])
            last = chunk([(a, a + b) for a, b in lengths])
            step = torch.tensor([[7], [8], [9], [10]], device=device)
            dec = pool.decode(step, torch.tensor(slots, device=device), slots)
            monkeypatch.setenv("ARCHROUTER_NO_TRITON", "1")  # the reference: plain PyTorch, one sequence at a time
            for i, s in enumerate(seqs):
                ref, cache = model(s[None])
                ref2, _ = model(step[i : i + 1], cache)
                torch.testing.assert_close(last[i].float(), ref[0, -1].float(), rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(dec[i].float(), ref2[0, -1].float(), rtol=1e-4, atol=1e-4)
            monkeypatch.delenv("ARCHROUTER_NO_TRITON")
