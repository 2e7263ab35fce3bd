"""Every model family served through the same generator and API, pinned by name via the openai client."""

from __future__ import annotations

import openai
import pytest

from archrouter.backends.families import FAMILIES, init_random
from archrouter.router.settings import Settings
from tests.conftest import CLASSIFIER
from tests.router.conftest import LiveServer, free_port

SERVED = list(FAMILIES)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    entries = []
    for i, fam in enumerate(SERVED):
        init_random(fam, "tiny", root / fam, seed=i)
        entries.append(f"""  - name: {fam}
    family: {fam}
    checkpoint: {root / fam}
    context_length: 1024
    cost: {{prefill_ms: {{per_token: {0.01 * (i + 1)}}}, decode_ms: {{base: 1.0}}}}""")
    (root / "policy.yaml").write_text(f"name: families\nclassifier: {CLASSIFIER}\nbackends:\n" + "\n".join(entries)
                                      + f"\nrules: []\ndefault: {{route: {SERVED[0]}}}\n")
    settings = Settings(port=free_port(), policy=str(root / "policy.yaml"), log_format="json", watch_policy=False)
    with LiveServer(settings) as srv:
        yield srv


@pytest.mark.parametrize("family", SERVED)
def test_pinned_family_answers(live, family):
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=family, messages=[{"role": "user", "content": "Tell me about routing."}], max_tokens=8, temperature=0)
    resp = raw.parse()
    assert raw.headers["x-archrouter-backend"] == family and raw.headers["x-archrouter-rule"] == "pinned"
    assert resp.usage.completion_tokens >= 1 and resp.choices[0].finish_reason in {"stop", "length"}
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=family, messages=[{"role": "user", "content": "Tell me about routing."}], max_tokens=8, temperature=0,
        stream=True) if c.choices)
    assert streamed == resp.choices[0].message.content
    models = {m.id: m for m in client.models.list().data}
    assert models[family].model_extra["family"] == family and models[family].model_extra["weights"] == "random"
