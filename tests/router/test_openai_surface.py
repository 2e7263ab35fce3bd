"""The OpenAI request fields SDK clients send by default, through the official client against the real server,
on the four trained zoo checkpoints (models/<family>): n, logprobs / top_logprobs, penalties and the
vLLM extensions, logit_bias, a batch of prompts, response_format, and the fields that stay 400s."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import jsonschema
import openai
import pytest
import torch

from archrouter.backends.engine.sequence import token_repr
from archrouter.backends.families import FAMILIES as _FAMILIES
from archrouter.backends.grammar import new_matcher
from archrouter.router.dashboard.live import row as dashboard_row
from archrouter.router.schemas import ResponseFormat
from archrouter.router.settings import Settings
from archrouter.router.structured import grammar_for
from tests.conftest import CLASSIFIER, ROOT
from tests.router.conftest import LiveServer, free_port

MODELS = ROOT / "models"
FAMILIES = list(_FAMILIES)
CHAT = [{"role": "user", "content": "Count: one two three four"}]
PROMPT = "The ledger moves: alice pays bob 3, bob pays carol 2."
KEYS = ["ar-surface0-main", "ar-surface1-one", "ar-surface2-four"]  # the client's, then two fresh buckets


class Records(list):
    put_nowait = list.append  # a decision-log listener: every record the router writes


@pytest.fixture(scope="module")
def live():
    entries = [f"""  - name: {fam}
    family: {fam}
    checkpoint: {MODELS / fam}
    context_length: 1024
    cost: {{prefill_ms: {{per_token: {0.01 * (i + 1)}}}, decode_ms: {{base: 1.0}}}}"""
               for i, fam in enumerate(FAMILIES)]
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(f"name: surface\nclassifier: {CLASSIFIER}\nbackends:\n" + "\n".join(entries)
                          + f"\nrules: []\ndefault: {{route: {FAMILIES[0]}}}\n")
        settings = Settings(port=free_port(), policy=str(policy), log_format="json", watch_policy=False,
                            redis_url=None, api_keys=",".join(KEYS))
        with LiveServer(settings) as srv:
            srv.records = Records()
            srv.router.decisions.listeners.append(srv.records)
            yield srv


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key=KEYS[0], max_retries=0, timeout=120)


def _stream_chat(client, **kw):
    """Streamed chat choices reassembled: {index: (text, finish_reason, logprob entries)}."""
    out: dict[int, list] = {}
    usage = None
    for c in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if c.usage is not None:
            usage = c.usage
        for ch in c.choices:
            t = out.setdefault(ch.index, ["", None, []])
            t[0] += ch.delta.content or ""
            t[1] = ch.finish_reason or t[1]
            if ch.logprobs is not None and ch.logprobs.content:
                t[2] += ch.logprobs.content
    return out, usage


def _stream_completion(client, **kw):
    out: dict[int, list] = {}
    usage = None
    for c in client.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if c.usage is not None:
            usage = c.usage
        for ch in c.choices:
            t = out.setdefault(ch.index, ["", None, []])
            t[0] += ch.text
            t[1] = ch.finish_reason or t[1]
            if ch.logprobs is not None:
                t[2] += list(zip(ch.logprobs.tokens, ch.logprobs.token_logprobs, strict=True))
    return out, usage


# ---------------------------------------------------------------------------------------------------- n


@pytest.mark.parametrize("family", FAMILIES)
def test_n_greedy_identical_and_seeded_reproducible(client, live, family):
    greedy = client.chat.completions.create(model=family, messages=CHAT, n=3, temperature=0, max_tokens=12)
    assert [c.index for c in greedy.choices] == [0, 1, 2]
    texts = [c.message.content for c in greedy.choices]
    assert texts[0] == texts[1] == texts[2]
    # each choice's tokens counted; the prompt once
    one = client.chat.completions.create(model=family, messages=CHAT, temperature=0, max_tokens=12)
    assert one.choices[0].message.content == texts[0]
    assert greedy.usage.prompt_tokens == one.usage.prompt_tokens
    assert greedy.usage.completion_tokens == 3 * one.usage.completion_tokens

    # temperature 2 (OpenAI's ceiling): the trained zoo is confident enough on this prompt that at 1.0 three samples
    # can all be the same one-token answer
    kw = dict(model=family, messages=CHAT, n=3, temperature=2.0, seed=7, max_tokens=12)
    a = [c.message.content for c in client.chat.completions.create(**kw).choices]
    b = [c.message.content for c in client.chat.completions.create(**kw).choices]
    assert a == b and len(set(a)) > 1  # reproducible, and the samples differ from each other
    streamed, usage = _stream_chat(client, **kw)
    assert [streamed[i][0] for i in range(3)] == a and usage.completion_tokens >= 3
    rec = [r for r in live.records if r.get("n") == 3 and r.get("backend") == family][-1]
    assert rec["choices"] == 3 and rec["tokens_charged"] >= 3 * 12
    assert rec["completion_tokens"] == usage.completion_tokens  # the same seeded choices, streamed or not
    assert dashboard_row(rec, 0.0)["choices"] == 3
    # completions: n choices too
    comp = client.completions.create(model=family, prompt=PROMPT, n=2, temperature=0, max_tokens=6)
    assert [c.index for c in comp.choices] == [0, 1] and comp.choices[0].text == comp.choices[1].text


def test_rate_limit_charges_every_choice(live):
    def remaining(key: str, **kw) -> int:
        c = openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)
        raw = c.completions.with_raw_response.create(model="transformer", prompt=PROMPT, max_tokens=10,
                                                     temperature=0, **kw)
        return int(raw.headers["x-ratelimit-remaining-tokens"])

    # two fresh buckets, the same prompt: n=4 is charged three more choices of max_tokens up front
    assert remaining(KEYS[1]) - remaining(KEYS[2], n=4) == 3 * 10


@pytest.mark.parametrize("family", FAMILIES)
def test_n_forks_one_prefill(live, client, family):
    engine = live.router.pool.clients[family]
    before = engine.stats()["prefill_tokens"]
    client.completions.create(model=family, prompt=PROMPT * 4, n=4, temperature=0, max_tokens=2)
    fed = engine.stats()["prefill_tokens"] - before
    prompt = len(engine.tokenizer.encode(PROMPT * 4, add_bos=True))
    assert fed <= prompt  # four choices, one prefill (fewer tokens when cached blocks served some)


# ---------------------------------------------------------------------------------------------------- logprobs


def _reference_logprobs(engine, ids: list[int]) -> torch.Tensor:
    model = engine.model
    with torch.inference_mode():
        logits, _ = model(torch.tensor([ids]), None)
    return torch.log_softmax(logits[0, -1, : engine.tokenizer.vocab_size].float(), -1)


@pytest.mark.parametrize("family", FAMILIES)
def test_top_logprobs_are_the_models_log_softmax(client, live, family):
    engine = live.router.pool.clients[family]
    resp = client.chat.completions.create(model=family, messages=CHAT, temperature=0, max_tokens=3, logprobs=True,
                                          top_logprobs=5)
    entries = resp.choices[0].logprobs.content
    assert 1 <= len(entries) <= 3
    ids = engine.tokenizer.apply_chat_template([{"role": "user", "content": CHAT[0]["content"]}])
    for e in entries:
        ref = _reference_logprobs(engine, ids)
        top = ref.topk(5)
        assert [round(t.logprob, 4) for t in e.top_logprobs] == pytest.approx(top.values.tolist(), abs=1e-4)
        assert e.logprob == pytest.approx(top.values[0].item(), abs=1e-4)  # greedy: the chosen one is the best
        tok = int(top.indices[0])
        assert (e.token, e.bytes) == token_repr(engine.vocab_bytes()[tok])
        ids = ids + [tok]
    streamed, _ = _stream_chat(client, model=family, messages=CHAT, temperature=0, max_tokens=3, logprobs=True,
                               top_logprobs=2)
    assert [round(x.logprob, 5) for x in streamed[0][2]] == [round(x.logprob, 5) for x in entries]
    comp = client.completions.create(model=family, prompt=PROMPT, temperature=0, max_tokens=3, logprobs=3)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) >= 1
    assert all(len(t) <= 3 for t in lp.top_logprobs) and lp.token_logprobs[0] <= 0
    streamed, _ = _stream_completion(client, model=family, prompt=PROMPT, temperature=0, max_tokens=3, logprobs=1)
    assert [round(v, 5) for _, v in streamed[0][2]] == [round(v, 5) for v in lp.token_logprobs]


# ---------------------------------------------------------------------------------------------------- penalties


@pytest.mark.parametrize("family", FAMILIES)
def test_penalties_and_extensions_change_repetitive_output(client, live, family):
    # the zoo models answer short synthetic tasks and stop early: the end tokens are banned, so every answer runs
    # its 24 tokens and the greedy one falls into repeats that the penalties must break. Two prompts: on either
    # alone a trained model can be sure enough of its repeat that one penalty does not move it
    no_end = {str(t): -100 for t in live.router.pool.clients[family].tokenizer.eos_ids}

    def answers(**extra) -> list[str]:
        prompts = ("a a a a a a a a a a a a", CHAT[0]["content"])
        return [client.completions.create(model=family, prompt=p, temperature=0, max_tokens=24, logit_bias=no_end,
                                          **extra).choices[0].text for p in prompts]

    def most_repeated(texts: list[str]) -> int:
        return sum(max(t.count(c) for c in t) for t in texts)

    base = answers()
    freq = answers(frequency_penalty=2.0)
    assert [len(t) for t in base] == [len(t) for t in freq] == [24, 24] and freq != base
    assert most_repeated(freq) < most_repeated(base)  # repeats cost: the penalised answers repeat themselves less
    assert answers(presence_penalty=2.0) != base
    assert answers(extra_body={"repetition_penalty": 3.0}) != base
    # top_k=1 and min_p=1 keep only the best token: sampling at any temperature is then greedy
    for extra in ({"top_k": 1}, {"min_p": 1.0}):
        sampled = client.completions.create(model=family, prompt=PROMPT, temperature=1.5, max_tokens=8, seed=3,
                                            extra_body=extra)
        greedy = client.completions.create(model=family, prompt=PROMPT, temperature=0, max_tokens=8)
        assert sampled.choices[0].text == greedy.choices[0].text
    streamed, _ = _stream_chat(client, model=family, messages=CHAT, temperature=0, max_tokens=8, presence_penalty=1.5,
                               frequency_penalty=0.5)
    full = client.chat.completions.create(model=family, messages=CHAT, temperature=0, max_tokens=8,
                                          presence_penalty=1.5, frequency_penalty=0.5)
    assert streamed[0][0] == full.choices[0].message.content


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_bias_forces_and_bans_tokens(client, family):
    forced = client.completions.create(model=family, prompt=PROMPT, temperature=0, max_tokens=5,
                                       logit_bias={str(ord("z")): 100})
    assert forced.choices[0].text == "zzzzz"
    base = client.chat.completions.create(model=family, messages=CHAT, temperature=0, max_tokens=1, logprobs=True)
    first = base.choices[0].logprobs.content[0].bytes[0]
    banned = client.chat.completions.create(model=family, messages=CHAT, temperature=0, max_tokens=1, logprobs=True,
                                            logit_bias={str(first): -100})
    assert banned.choices[0].logprobs.content[0].bytes != [first]
    streamed, _ = _stream_chat(client, model=family, messages=CHAT, temperature=0, max_tokens=3,
                               logit_bias={str(ord("q")): 100})
    assert streamed[0][0] == "qqq"


# ---------------------------------------------------------------------------------------------------- batches


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_list_one_choice_per_prompt_in_order(client, family):
    prompts = ["alpha beta", "The ledger moves:", "1 2 3 4 5", "zz"]
    alone = [client.completions.create(model=family, prompt=p, temperature=0, max_tokens=5).choices[0].text
             for p in prompts]
    batch = client.completions.create(model=family, prompt=prompts, temperature=0, max_tokens=5)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert [c.text for c in batch.choices] == alone
    streamed, usage = _stream_completion(client, model=family, prompt=prompts, temperature=0, max_tokens=5)
    assert [streamed[i][0] for i in range(4)] == alone and usage.completion_tokens == batch.usage.completion_tokens
    two = client.completions.create(model=family, prompt=prompts[:2], n=2, temperature=0, max_tokens=5)
    assert [c.text for c in two.choices] == [alone[0], alone[0], alone[1], alone[1]]


# ---------------------------------------------------------------------------------------------------- structured


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "ok"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("family", FAMILIES)
def test_json_schema_answers_validate(client, live, family):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    # 100 sampled answers: 5 rounds of 5 prompts x n=4, each round one batch the engine runs together
    answers = []
    for _ in range(5):
        resp = client.completions.create(model=family, prompt=["Person:", "JSON:", "{", "A record", "x"], n=4,
                                         temperature=1.0, max_tokens=96, extra_body={"response_format": fmt})
        answers += [c for c in resp.choices]
    assert len(answers) == 100
    for c in answers:
        assert c.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text), SCHEMA)
    chat = client.chat.completions.create(model=family, messages=CHAT, max_tokens=96, response_format=fmt, seed=1)
    jsonschema.validate(json.loads(chat.choices[0].message.content), SCHEMA)
    obj, _ = _stream_chat(client, model=family, messages=CHAT, max_tokens=200, temperature=0.7,
                          response_format={"type": "json_object"}, seed=2)
    text, finish = obj[0][0], obj[0][1]
    if finish == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # any object is unbounded: it may run into max_tokens, and what came is still a JSON object's prefix
        assert finish == "length"
        tok = live.router.pool.clients[family].tokenizer
        m = new_matcher(tok, grammar_for(ResponseFormat(type="json_object")))
        ids = tok.encode(text)
        assert m.try_consume_tokens(ids) == len(ids) and text.startswith("{")


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_completions_equal_whole_ones(client, live, family):
    """Every feature streamed through /v1/completions gives what the whole answer gives (chat: above)."""
    no_end = {str(t): -100 for t in live.router.pool.clients[family].tokenizer.eos_ids}
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    cases = [{"n": 2}, {"frequency_penalty": 1.5, "presence_penalty": 0.5, "logit_bias": no_end},
             {"logit_bias": {str(ord("q")): 100}}, {"extra_body": {"response_format": fmt}, "max_tokens": 96},
             {"extra_body": {"top_k": 3, "min_p": 0.1, "repetition_penalty": 1.5}, "temperature": 0.8, "seed": 5},
             {"prompt": ["one", "two two"], "n": 2, "logprobs": 2}]
    for case in cases:
        kw = {"model": family, "prompt": PROMPT, "max_tokens": 12, "temperature": 0, **case}
        whole = client.completions.create(**kw)
        streamed, usage = _stream_completion(client, **kw)
        assert sorted(streamed) == [c.index for c in whole.choices]
        assert [streamed[c.index][0] for c in whole.choices] == [c.text for c in whole.choices], case
        assert [streamed[c.index][1] for c in whole.choices] == [c.finish_reason for c in whole.choices]
        assert usage.completion_tokens == whole.usage.completion_tokens
        assert usage.prompt_tokens == whole.usage.prompt_tokens


@pytest.mark.parametrize("family", ["transformer", "mamba"])
def test_concurrent_mixed_requests_share_the_engine(client, live, family):
    """n, prompt lists, logprobs, penalties and grammars at once in one engine: every request gets all its
    choices, greedy choices of one prompt agree, and every slot, KV block and count row comes back."""
    import concurrent.futures as cf

    shapes = [{"n": 8}, {"n": 3, "logprobs": 2}, {"prompt": ["a b", "c d", "e f"], "n": 2, "frequency_penalty": 1.0},
              {"extra_body": {"response_format": {"type": "json_object"}}, "max_tokens": 48}]

    def one(i: int):
        kw = {"model": family, "prompt": f"{PROMPT} {i}", "max_tokens": 8, "temperature": 0, **shapes[i % 4]}
        return kw, client.completions.create(**kw)

    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(12)))
    for kw, r in results:
        n = kw.get("n", 1)
        prompts = kw["prompt"] if isinstance(kw["prompt"], list) else [kw["prompt"]]
        assert [c.index for c in r.choices] == list(range(len(prompts) * n))
        for p in range(len(prompts)):
            assert len({c.text for c in r.choices[p * n:(p + 1) * n]}) == 1
    engine = live.router.pool.clients[family]
    s = engine.stats()
    assert s["running"] == 0 and s["waiting"] == 0
    assert engine.pool.num_free == engine.pool.num_slots
    counts = engine.runner.counts
    assert counts.counts is None or len(counts.free) == counts.counts.shape[0] - 1
    if family == "transformer":
        assert s["kv_tokens_reserved"] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_tokens_report_the_restored_prefix(client, live, family):
    """usage.prompt_tokens_details.cached_tokens: the next turn of a conversation restores the previous turn's
    state (recurrent) or KV blocks (attention) instead of prefilling them, and says how many tokens."""
    messages = [{"role": "user", "content": f"{family}: the ledger moves, alice pays bob 3 and bob pays carol 2, "
                                            "then carol pays dave 1. Who holds what?"}]
    first = client.chat.completions.create(model=family, messages=messages, temperature=0, max_tokens=4)
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # a prompt never seen
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "and then?"}]
    second = client.chat.completions.create(model=family, messages=messages, temperature=0, max_tokens=4)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens // 2 <= cached < second.usage.prompt_tokens
    _, usage = _stream_chat(client, model=family, messages=messages, temperature=0, max_tokens=4)
    assert usage.prompt_tokens_details.cached_tokens >= cached  # streamed: the same field
    rec = [r for r in live.records if r.get("backend") == family and r.get("cached_tokens")][-1]
    assert rec["cached_tokens"] == usage.prompt_tokens_details.cached_tokens


def test_bad_schema_and_unsupported_fields_are_400s(client):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
        "a": {"type": "strin"}}}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="auto", messages=CHAT, response_format=bad)
    assert e.value.body["param"] == "response_format.json_schema.schema" and "strin" in e.value.body["message"]
    for field, value in [("tools", [{"type": "function", "function": {"name": "f"}}]), ("audio", {"voice": "x"}),
                         ("tool_choice", "auto"), ("modalities", ["audio"])]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="auto", messages=CHAT, extra_body={field: value})
        assert e.value.body["param"] == field and "not supported" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="auto", messages=CHAT, top_logprobs=3)
    assert "logprobs" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="transformer", prompt="x", logit_bias={"99999": 5})
    assert e.value.body["param"] == "logit_bias" and "99999" in e.value.body["message"]


def test_forked_sequences_release_their_state(live, client):
    """After n, penalties and grammars, nothing is left held: slots back, no running sequences."""
    client.completions.create(model="mamba", prompt=PROMPT, n=3, max_tokens=4, frequency_penalty=1.0,
                              extra_body={"response_format": {"type": "json_object"}})
    engine = live.router.pool.clients["mamba"]
    assert engine.scheduler.stats()["running"] == 0
    counts = engine.runner.counts
    assert counts.counts is None or len(counts.free) == counts.counts.shape[0] - 1

