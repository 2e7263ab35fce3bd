"""Sampling and stop strings, on their own."""

from __future__ import annotations

import random

import torch
from hypothesis import given
from hypothesis import strategies as st

from archrouter.backends.protocol import SamplingParams
from archrouter.backends.sampling import sample
from archrouter.backends.stopping import StopMatcher


def test_greedy_and_top_k_1_agree():
    logits = torch.randn(300)
    g = torch.Generator().manual_seed(0)
    assert sample(logits, SamplingParams(temperature=0), g) == int(logits.argmax())
    assert sample(logits, SamplingParams(temperature=1.5, top_k=1), g) == int(logits.argmax())


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    seen = {sample(logits, SamplingParams(top_p=0.7), g) for _ in range(300)}
    assert seen == {0, 1}


def test_seed_reproduces():
    logits = torch.randn(50)
    a = [sample(logits, SamplingParams(), torch.Generator().manual_seed(5)) for _ in range(3)]
    assert len(set(a)) == 1


@given(st.text(alphabet="abc", max_size=40), st.lists(st.text(alphabet="abc", min_size=1, max_size=4), max_size=3),
       st.integers(0, 2**31))
def test_stop_matcher_equals_find_on_whole_text(text, stops, seed):
    # split the text into random token-sized pieces: output must equal cutting the whole text
    rnd = random.Random(seed)
    pieces, i = [], 0
    while i < len(text):
        n = rnd.randint(1, 3)
        pieces.append(text[i : i + n])
        i += n
    m, out, stopped = StopMatcher(stops), "", False
    for p in pieces:
        t, stopped = m.push(p)
        out += t
        if stopped:
            break
    if not stopped:
        out += m.flush()
    # oracle: feed one character at a time; stop at the first stop string to complete
    expect, hit = text, False
    for end in range(1, len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            expect, hit = text[: end - max(map(len, done))], True
            break
    assert out == expect
    assert stopped == hit
