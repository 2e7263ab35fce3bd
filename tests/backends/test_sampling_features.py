"""The batched sampler's extras against plain per-row references: penalties (vLLM's formulas), logit bias,
grammar bitmasks, top-k / min-p, logprobs; token counts on the device; and llguidance over each of our
tokenizers (byte, Hugging Face tokenizer.json, RWKV world) producing JSON that parses."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
import torch

from archrouter.backends.grammar import fill_bitmask, new_matcher, token_table, words
from archrouter.backends.protocol import SamplingParams
from archrouter.backends.rwkv_tokenizer import world_tokenizer
from archrouter.backends.sampling import Sampled, TokenCounts, apply_bitmask, sample_rows
from archrouter.backends.tokenizer import ByteTokenizer, load_tokenizer
from tests.backends.test_tokenizer import _bytelevel_bpe

V = 50


def _reference_penalised(logits, counts, prompt_seen, p: SamplingParams) -> torch.Tensor:
    """vLLM's order, one token at a time: repetition (prompt + output), then frequency and presence."""
    x = logits.clone().double()
    for t in range(x.shape[0]):
        if p.repetition_penalty != 1.0 and (counts[t] > 0 or prompt_seen[t]):
            x[t] = x[t] / p.repetition_penalty if x[t] > 0 else x[t] * p.repetition_penalty
        x[t] -= p.frequency_penalty * counts[t] + p.presence_penalty * (1.0 if counts[t] > 0 else 0.0)
    return x


def test_penalties_match_the_reference_row_by_row():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        b = 6
        logits = torch.randn(b, V, generator=g) * 3
        counts = torch.randint(0, 3, (b, V), generator=g).float() * (torch.rand(b, V, generator=g) < 0.3)
        seen = torch.rand(b, V, generator=g) < 0.2
        rnd = random.Random(trial)
        params = [SamplingParams(temperature=0, presence_penalty=rnd.uniform(-2, 2),
                                 frequency_penalty=rnd.uniform(-2, 2),
                                 repetition_penalty=rnd.choice([1.0, 0.7, 1.3, 2.0])) for _ in range(b)]
        params[0] = SamplingParams(temperature=0)  # a row without penalties beside penalised ones
        got = sample_rows(logits, params, [None] * b, counts=counts, prompt_seen=seen).tokens
        want = [int(_reference_penalised(logits[i], counts[i], seen[i], p).argmax()) for i, p in enumerate(params)]
        assert got.tolist() == want
        assert want[0] == int(logits[0].argmax())


def test_logit_bias_bitmask_and_logprobs():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, V, generator=g)
    params = [SamplingParams(temperature=0, logit_bias={7: 100.0}), SamplingParams(temperature=0, logprobs=3),
              SamplingParams(temperature=0, logit_bias={int(logits[2].argmax()): -100.0}),
              SamplingParams(temperature=0)]
    allowed = torch.zeros(4, V, dtype=torch.bool)
    allowed[:3] = True
    allowed[3, [3, 11, 40]] = True
    mask = torch.zeros(4, words(V), dtype=torch.int32)
    for r, t in allowed.nonzero().tolist():
        mask[r, t // 32] |= torch.tensor(1 << (t % 32), dtype=torch.int64).to(torch.int32)
    out = sample_rows(logits, params, [None] * 4, bitmask=mask)
    toks = out.tokens.tolist()
    assert toks[0] == 7
    assert toks[1] == int(logits[1].argmax())
    assert toks[2] == int(logits[2].topk(2).indices[1])  # the best is banned: the second best
    assert toks[3] == max([3, 11, 40], key=lambda t: logits[3, t])
    ref = torch.log_softmax(logits.double(), -1)
    rows = Sampled.unpack(out.packed().tolist())
    assert rows[1][1] == pytest.approx(ref[1, toks[1]].item(), abs=1e-5)
    top = ref[1].topk(3)
    assert [t for t, _ in rows[1][2]] == top.indices.tolist()
    assert [v for _, v in rows[1][2]] == pytest.approx(top.values.tolist(), abs=1e-5)
    # logprobs are the model's: the bias on row 0 does not change them
    assert rows[0][1] == pytest.approx(ref[0, 7].item(), abs=1e-5)
    masked = apply_bitmask(logits, mask)
    assert torch.equal(torch.isfinite(masked), allowed)


def test_top_k_min_p_cut_per_row_and_rows_stay_independent():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, V, generator=g) * 2
    probs = torch.softmax(logits, -1)
    params = [SamplingParams(temperature=1.0, top_k=3), SamplingParams(temperature=1.0, min_p=0.3),
              SamplingParams(temperature=1.0)]
    top3 = set(logits[0].topk(3).indices.tolist())
    keep_minp = {t for t in range(V) if probs[1, t] >= 0.3 * probs[1].max()}
    seen = [set(), set(), set()]
    for seed in range(300):
        gens = [torch.Generator().manual_seed(seed + 1000 * i) for i in range(3)]
        toks = sample_rows(logits, params, gens).tokens.tolist()
        for i, t in enumerate(toks):
            seen[i].add(t)
        if seed < 20:  # a row draws the same alone as in the batch
            alone = sample_rows(logits[2:3], params[2:3], [torch.Generator().manual_seed(seed + 2000)]).tokens
            assert alone.item() == toks[2]
    assert seen[0] <= top3 and len(seen[0]) == 3
    assert seen[1] <= keep_minp
    assert len(seen[2]) > len(top3)  # no cut on the row that asked for none


def test_token_counts_on_the_device():
    tc = TokenCounts(V, torch.device("cpu"))
    slots = [tc.alloc([1, 2, 2]) for _ in range(10)]  # past the first 8: the pool grows
    assert 0 not in slots and len(set(slots)) == 10
    drawn = torch.tensor([5, 5, 9, 5, 1, 0, 0, 0, 0, 0])
    idx = torch.tensor(slots)
    tc.add(idx, drawn)
    tc.add(idx, drawn)
    counts, seen = tc.rows(idx)
    assert counts[0, 5] == 2 and counts[2, 9] == 2 and counts.sum() == 20
    assert seen[:, [1, 2]].all() and seen.sum() == 20
    # rows without penalties read slot 0, which stays zero whatever they draw
    tc.add(torch.tensor([0, 0]), torch.tensor([3, 4]))
    assert tc.counts[0].sum() == 0
    tc.release(slots[0])
    again = tc.alloc([])
    assert again == slots[0] and tc.counts[again].sum() == 0 and not tc.prompt[again].any()


SCHEMA = {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                                          "tag": {"enum": ["red", "green"]},
                                          "note": {"type": "string", "maxLength": 5}},
          "required": ["id", "tag", "note"], "additionalProperties": False}


def _tokenizers(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    _bytelevel_bpe().save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": [1]}))
    return {"byte": ByteTokenizer(), "hf": load_tokenizer(folder), "world": world_tokenizer()}


def test_grammar_over_every_tokenizer_gives_valid_json(tmp_path):
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA), defaults={"whitespace_flexible": False})
    for name, tok in _tokenizers(tmp_path).items():
        table = token_table(tok)
        assert len(table) == tok.vocab_size
        text = "héllo {x}"
        assert b"".join(table[i] for i in tok.encode(text)) == text.encode(), name
        eos = min(tok.eos_ids)
        g = torch.Generator().manual_seed(3)
        for _ in range(4):
            m = new_matcher(tok, grammar)
            out: list[int] = []
            for _ in range(80):
                mask = fill_bitmask([m], tok.vocab_size, eos, pin=False)
                logits = torch.randn(1, tok.vocab_size, generator=g)
                t = int(sample_rows(logits, [SamplingParams(temperature=1.0)], [g], bitmask=mask).tokens[0])
                if t in tok.eos_ids:
                    break
                assert m.consume_token(t), m.get_error()
                out.append(t)
                if m.is_stopped():
                    break
            answer = json.loads(b"".join(table[i] for i in out).decode())
            jsonschema.validate(answer, SCHEMA)
    with pytest.raises(ValueError, match="grammar"):
        new_matcher(ByteTokenizer(), "start: (")


def test_batched_masks_equal_one_at_a_time():
    from llguidance import LLMatcher

    tok = ByteTokenizer()
    grammar = LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA), defaults={"whitespace_flexible": False})
    ms = [new_matcher(tok, grammar) for _ in range(4)]
    for m, prefix in zip(ms, [b"", b'{"id":1', b'{"id":12,"tag":"red","note":"', b'{"id":3,"tag":"green","note":""}'],
                         strict=True):
        for b in prefix:
            assert m.consume_token(b)
    rows = [None, *ms]
    batched = fill_bitmask(rows, tok.vocab_size, ByteTokenizer.EOS, pin=False)
    for i, m in enumerate(rows):
        alone = fill_bitmask([m], tok.vocab_size, ByteTokenizer.EOS, pin=False)
        assert torch.equal(batched[i], alone[0])
    allowed = apply_bitmask(torch.zeros(5, tok.vocab_size), batched).isfinite()
    assert allowed[0].all()
    assert allowed[4].nonzero().flatten().tolist() == [ByteTokenizer.EOS]  # complete: only the end
    assert allowed[2, ord(",")] and allowed[2, ord("5")] and not allowed[2, ord("a")]


def test_logprob_tokens_read_as_openai_shows_them():
    from archrouter.backends.engine.sequence import token_repr

    table = token_table(ByteTokenizer())
    assert token_repr(table[ord("a")]) == ("a", [97])
    assert token_repr(table[ByteTokenizer.EOS]) == ("<|eos|>", list(b"<|eos|>"))  # no vocabulary marker
    assert token_repr(table[0xC3]) == ("\ufffd", [0xC3])  # half a character: its exact byte beside U+FFFD


@pytest.mark.gpu
def test_extras_on_cuda_equal_cpu():
    """The same extras on CUDA (pinned copies, device counts, the bitmask copied over) pick what the CPU picks."""
    g = torch.Generator().manual_seed(4)
    b = 8
    logits = torch.randn(b, V, generator=g) * 3
    mask = torch.full((b, words(V)), -1, dtype=torch.int32)
    mask[3] = 0x0F0F0F0F
    params = [SamplingParams(temperature=0, presence_penalty=0.7, frequency_penalty=0.3, repetition_penalty=1.5,
                             logit_bias={5: 2.0}, logprobs=4, top_k=5, min_p=0.1) for _ in range(b)]
    picks = {}
    for dev in ("cpu", "cuda"):
        tc = TokenCounts(V, torch.device(dev))
        slots = torch.tensor([tc.alloc(list(range(i, i + 10))) for i in range(b)], device=dev)
        for t in range(3):  # three draws counted on the device
            tc.add(slots, torch.full((b,), t * 7, dtype=torch.long, device=dev))
        counts, seen = tc.rows(slots)
        out = sample_rows(logits.to(dev), params, [None] * b, counts=counts, prompt_seen=seen,
                          bitmask=fill_bitmask([None] * b, V, 0, pin=dev == "cuda") & mask)
        picks[dev] = Sampled.unpack(out.packed().tolist())
    assert [r[0] for r in picks["cuda"]] == [r[0] for r in picks["cpu"]]
    for a, c in zip(picks["cpu"], picks["cuda"], strict=True):
        assert c[1] == pytest.approx(a[1], abs=1e-5) and [t for t, _ in c[2]] == [t for t, _ in a[2]]
