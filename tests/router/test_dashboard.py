"""The dashboard in a real browser (Debian's chromium through Playwright) against a live server,
plus its JSON endpoints: backend load from the /metrics numbers, validation, the policy diff, keys,
and the live stream from Redis."""

from __future__ import annotations

import json
import math
import random
import re
import time
import uuid

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from archrouter.policies.loader import PolicyError, parse_policy

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the dev extra installs it; without it there is no browser to drive
    sync_playwright = None
from archrouter.router.dashboard.load import histogram_quantile
from archrouter.router.metrics import LATENCY_BUCKETS
from archrouter.router.settings import Settings
from tests.conftest import REDIS_URL
from tests.router import browser as chromium
from tests.router.conftest import LiveServer, free_port, policy_text

CHAT = "/v1/chat/completions"
TIMEOUT_MS = 20_000


# --------------------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.skip("browser tests skipped: playwright is not installed (pip install -e '.[dev]')")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        try:
            b = chromium.launch(pw)
        except RuntimeError as exc:
            pytest.skip(f"browser tests skipped: {exc}")
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.set_default_timeout(TIMEOUT_MS)
    p.problems = []  # script errors and console errors (a CSP violation shows up here too)
    p.on("pageerror", lambda e: p.problems.append(f"pageerror: {e}"))
    p.on("console", lambda m: p.problems.append(f"console: {m.text}") if m.type == "error" else None)
    yield p
    context.close()  # closes the page's live stream before the server stops


def _open(page, server, view: str) -> None:
    page.goto(f"{server.url}/dashboard#{view}")
    expect(page.locator("#policy-id")).not_to_have_text("–")


def test_dashboard_loads_every_view(page, server):
    _open(page, server, "live")
    assert page.text_content("#policy-id") == server.router.policy.id
    assert page.text_content("#auth-pill") == "open (loopback)"  # no keys: everyone is an admin on loopback
    expect(page.locator("#conn .label")).to_have_text("live")
    for view in ("backends", "playground", "capability", "live"):
        page.click(f"nav.tabs a[data-view={view}]")
        page.wait_for_selector(f"#view-{view}", state="visible")  # the hash changes, then the view
        views = ("live", "backends", "playground", "capability")
        assert [v for v in views if page.is_visible(f"#view-{v}")] == [view]
    page.click("nav.tabs a[data-view=backends]")
    page.wait_for_selector("#backend-cards .bcard[data-backend=small]")
    cards = page.eval_on_selector_all("#backend-cards .bcard", "els => els.map(e => e.dataset.backend)")
    assert sorted(cards) == ["small", "tiny"]
    page.click("nav.tabs a[data-view=capability]")
    page.wait_for_selector("#capability-body .card")
    assert page.problems == []


def test_request_sent_through_the_api_appears_in_the_live_table(page, server):
    _open(page, server, "live")
    expect(page.locator("#conn .label")).to_have_text("live")
    with httpx.Client(base_url=server.url, timeout=60) as c:
        content = f"dashboard check {uuid.uuid4().hex}"
        r = c.post(CHAT, json={"model": "auto", "max_tokens": 3,
                               "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200
    rid, backend, rule = r.json()["id"], r.headers["x-archrouter-backend"], r.headers["x-archrouter-rule"]
    row = page.wait_for_selector(f'#live-table tr[data-request-id="{rid}"]')
    cells = row.eval_on_selector_all("td", "tds => tds.map(td => td.textContent.trim())")
    assert cells[2] == backend and cells[3] == rule
    assert int(cells[6]) == r.json()["usage"]["completion_tokens"]
    assert cells[11] == "–" and cells[12] == "200"  # no cache asked (off by default)

    # the filter hides rows of other backends and shows them again
    other = "small" if backend == "tiny" else "tiny"
    page.select_option("#f-backend", other)
    assert page.query_selector(f'#live-table tr[data-request-id="{rid}"]') is None
    page.select_option("#f-backend", backend)
    assert page.query_selector(f'#live-table tr[data-request-id="{rid}"]') is not None
    page.select_option("#f-backend", "")
    assert page.problems == []


def test_playground_shows_the_rule_trace_and_streams_the_answer(page, server):
    _open(page, server, "playground")
    # ~450 tokens: past long-prompt's 300, inside small's 1024
    prompt = "Here is a log of events. " + " ".join(f"event {i} ok" for i in range(35))
    body = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": prompt}]}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        expected = c.post("/v1/route", json=body).json()
    page.fill("#prompt", prompt)
    page.fill("#max-tokens", "5")
    page.click("#route-btn")
    page.wait_for_selector("#trace tbody tr")
    shown = page.eval_on_selector_all(
        "#trace tbody tr",
        "trs => trs.map(tr => [tr.dataset.rule, tr.dataset.fired, tr.querySelector('.why').textContent])")
    assert shown == [[t["rule"], json.dumps(t["fired"]), t["why"]] for t in expected["trace"]]
    assert expected["rule"] == "long-prompt" and shown[0][1] == "true"
    assert page.text_content("#d-backend") == expected["backend"]
    assert page.text_content("#d-rule") == f"rule: {expected['rule']}"
    estimates = page.eval_on_selector_all("#estimates tbody tr", "trs => trs.map(tr => tr.dataset.backend)")
    assert estimates == list(expected["estimates"])
    assert page.get_attribute("#estimates tbody tr.sel", "data-backend") == expected["backend"]

    page.click("#send-btn")
    expect(page.locator("#answer-meta")).to_contain_text("tokens in")
    meta = page.text_content("#answer-meta")
    assert meta.startswith(f"{expected['backend']} · long-prompt")
    assert int(re.search(r"(\d+) tokens in", meta).group(1)) == 5  # random weights: it runs to max_tokens
    assert page.problems == []


def test_invalid_policy_shows_its_error_at_its_line(page, server):
    _open(page, server, "playground")
    live = server.policy_file.read_text()
    expect(page.locator("#policy-text")).not_to_have_value("")
    assert page.input_value("#policy-text") == live  # no keys on loopback: the page may read the policy

    bad = live.replace("route: small\n", "route: smal\n", 1)
    line = bad.splitlines().index("    route: smal") + 1  # the line as the user sees it in the editor
    with pytest.raises(PolicyError) as err:  # the loader agrees on the line
        parse_policy(bad, file=str(server.policy_file))
    assert [i.line for i in err.value.issues] == [line]
    page.fill("#policy-text", bad)
    page.click("#policy-validate")
    item = page.wait_for_selector("#policy-issues li")
    assert item.get_attribute("data-line") == str(line)
    assert f"line {line}" in item.text_content() and "unknown backend 'smal'" in item.text_content()
    assert page.get_attribute(f'#gutter div[data-line="{line}"]', "class") == "error"
    assert page.eval_on_selector_all("#gutter div.error", "ds => ds.map(d => d.dataset.line)") == [str(line)]
    assert page.is_visible(f'#hl-layer div[data-line="{line}"]')
    assert "1 problem" in page.text_content("#policy-status")

    # fixed: valid, and the diff against the live policy lists what would move
    page.fill("#policy-text", live.replace("default: {route: tiny", "default: {route: small", 1))
    page.click("#policy-validate")
    expect(page.locator("#policy-status")).to_have_text(re.compile(r"^Valid"))
    page.fill("#diff-limit", "60")
    page.click("#policy-diff")
    page.wait_for_selector("#diff-table tbody tr")
    assert re.match(r"\d+ of 60 prompts decide differently", page.text_content("#policy-status"))
    assert server.policy_file.read_text() == live  # nothing applied
    assert page.problems == []


# --------------------------------------------------------------------------------------------- endpoints


def test_histogram_quantile_lands_in_the_bucket_of_the_exact_quantile():
    rng = random.Random()
    h = Histogram("t", "t", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    xs = [rng.lognormvariate(-2.0, 1.2) for _ in range(2000)]
    for x in xs:
        h.observe(x)
    buckets = {float(s.labels["le"]): s.value for s in h.collect()[0].samples if s.name.endswith("_bucket")}
    bounds = [0.0, *LATENCY_BUCKETS, math.inf]
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(xs, q))
        lo, hi = next((a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a < exact <= b)
        got = histogram_quantile(q, buckets)
        assert lo <= got <= (hi if math.isfinite(hi) else lo), (q, exact, got)
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None


def _metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_backends_view_counts_what_metrics_counts(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        c.get("/dashboard/api/backends")
        for i in range(3):
            msg = [{"role": "user", "content": f"n{i}"}]
            r = c.post(CHAT, json={"model": "small", "max_tokens": 2, "messages": msg})
            assert r.status_code == 200
        time.sleep(1.05)  # the tracker samples at most once a second
        snap = c.get("/dashboard/api/backends").json()
        metrics = c.get("/metrics").text
    row = {b["name"]: b for b in snap["backends"]}["small"]
    assert row["requests"] == _metric_sum(metrics, "archrouter_requests_total", backend="small")
    assert row["requests"] >= 3 and row["requests_per_s"] > 0 and row["tokens_per_s"] > 0
    assert row["p50_ms"] is not None and 0 < row["p50_ms"] <= row["p99_ms"]
    assert row["queue_depth"] == 0 and row["running"] == 0  # the engine's stats(): idle again
    # the Transformer's prefix cache is its shared KV blocks: the rate is the engine's hits over lookups
    hits = _metric_sum(metrics, "archrouter_engine_prefix_hits_total", backend="small")
    lookups = hits + _metric_sum(metrics, "archrouter_engine_prefix_misses_total", backend="small")
    assert lookups >= 3 and row["cache_hit_rate"] == hits / lookups
    assert row["cooldown_s"] is None
    assert snap["series"]["small"][-1]["requests_per_s"] == row["requests_per_s"]


def test_validate_and_diff_endpoints(server, model_dir):
    live = server.policy_file.read_text()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        ok = c.post("/dashboard/api/policy/validate", json={"text": live}).json()
        assert ok == {"ok": True, "policy": server.router.policy.id, "issues": [],
                      "backends": ["tiny", "small"], "rules": ["long-prompt", "recall-to-small"]}
        broken = c.post("/dashboard/api/policy/validate", json={"text": "name: x\nrules: [\n"}).json()
        assert not broken["ok"] and broken["issues"][0]["line"] >= 2
        assert "YAML syntax error" in broken["issues"][0]["message"]

        same = c.post("/dashboard/api/policy/diff", json={"text": live, "limit": 80}).json()
        assert same["changed_count"] == 0 and same["prompts"] == 80
        assert all(d["delta"] in (0.0, None) for d in same["deltas"].values())

        # default tiny -> small moves exactly the prompts the live policy sent to the default
        moved = c.post("/dashboard/api/policy/diff", json={"text": policy_text(model_dir, default="small"),
                                                           "limit": 80}).json()
    assert moved["changed_count"] == moved["rule_counts"]["live"].get("default", 0) > 0
    assert all(ch["a"] == {"backend": "tiny", "rule": "default"}
               and ch["b"] == {"backend": "small", "rule": "default"} for ch in moved["changed"])
    assert moved["backend_counts"]["candidate"] == {"small": 80}


# --------------------------------------------------------------------------------------------- keys and Redis


@pytest.fixture(scope="module")
def keyed(model_dir, tmp_path_factory):
    """Keys configured and decisions going to a Redis stream."""
    cfg = tmp_path_factory.mktemp("dash-keys") / "policy.yaml"
    cfg.write_text(policy_text(model_dir, name="keyed"))
    user, admin = f"ar-{uuid.uuid4().hex[:8]}-user", f"ar-{uuid.uuid4().hex[:8]}-admin"
    stream = f"archrouter:test:dashboard:{uuid.uuid4().hex}"
    settings = Settings(host="127.0.0.1", port=free_port(), policy=str(cfg), log_format="json",
                        redis_url=REDIS_URL, decision_stream=stream, api_keys=user, admin_key=admin)
    with LiveServer(settings) as srv:
        srv.user, srv.admin, srv.stream, srv.policy_file = user, admin, stream, cfg
        yield srv
    import redis

    redis.Redis.from_url(REDIS_URL).delete(stream)


def test_keys_apply_to_the_dashboard_api(keyed):
    user = {"authorization": f"Bearer {keyed.user}"}
    with httpx.Client(base_url=keyed.url, timeout=30) as c:
        assert c.get("/dashboard").status_code == 200  # the page itself holds no data
        for path in ("/dashboard/api/info", "/dashboard/api/backends", "/dashboard/api/examples",
                     "/dashboard/api/capability"):
            assert c.get(path).status_code == 401, path
        assert c.post("/dashboard/api/policy/validate", json={"text": "x"}).status_code == 401
        info = c.get("/dashboard/api/info", headers=user).json()
        assert info["auth"] == "keys" and info["admin"] is False and info["decisions"] == "redis"
        assert c.get("/admin/policy", headers=user).status_code == 403  # the editor's "load": admin key
        text = keyed.policy_file.read_text()
        assert c.put("/admin/policy", content=text, headers=user).status_code == 403
        admin = {"authorization": f"Bearer {keyed.admin}"}
        assert c.get("/dashboard/api/info", headers=admin).json()["admin"] is True


def test_live_stream_reads_the_redis_stream(keyed):
    user = {"authorization": f"Bearer {keyed.user}"}
    with httpx.Client(base_url=keyed.url, timeout=30) as c:
        r = c.post(CHAT, headers=user, json={"model": "auto", "max_tokens": 2,
                                             "messages": [{"role": "user", "content": "via redis"}]})
        assert r.status_code == 200
        rid = r.json()["id"]
        events: list[tuple[str, dict]] = []
        deadline = time.time() + 15
        with c.stream("GET", "/dashboard/api/decisions/stream", headers=user) as st:
            kind = None
            for line in st.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    if events[-1][1].get("request_id") == rid or time.time() > deadline:
                        break
    assert events[0] == ("source", {"source": "redis", "stream": keyed.stream})
    got = [e for k, e in events if k == "decision" and e["request_id"] == rid]
    assert got and got[0]["backend"] == r.headers["x-archrouter-backend"]
    assert got[0]["rule"] == r.headers["x-archrouter-rule"] and got[0]["key"] == "env-0"
