"""Screenshots of the dashboard's four views for the README (docs/img/dashboard-*.png).

Serves config/policy.yaml embedded (its checkpoints; random-weight ones made in a temporary folder
for entries that have none; the shipped classifier), sends labelled prompts through
/v1/chat/completions from a few threads so every view has traffic, and photographs each view with
Debian's chromium (the test suite's launcher). So that the live view shows both mechanisms, the
response cache is on (Redis at $ARCHROUTER_REDIS_URL, a throwaway prefix) and a few popular prompts
recur at temperature 0 (cache hits), and Mamba's engine runs two sequences with no queue, so that
a burst overflows it to the next-best family (capability fallbacks, reason "overloaded").

    python scripts/dashboard_screenshots.py [--policy config/policy.yaml] [--out docs/img] [--seconds 30]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archrouter.backends.engine import Engine, EngineConfig  # noqa: E402
from archrouter.backends.families import init_random  # noqa: E402
from archrouter.evals import DATA_DIR  # noqa: E402
from archrouter.policies.labelled import read_labelled  # noqa: E402
from archrouter.router.settings import Settings  # noqa: E402
from tests.conftest import REDIS_URL  # noqa: E402
from tests.router import browser as chromium  # noqa: E402
from tests.router.conftest import LiveServer, free_port  # noqa: E402


def local_policy(policy: Path, folder: Path) -> Path:
    """The policy with absolute paths: checkpoints in the repository as they are (the trained zoo),
    missing ones made in `folder` from their `init` presets."""
    text = policy.read_text()
    spec = yaml.safe_load(text)
    for b in spec["backends"]:
        if not (ROOT / b["checkpoint"] / "config.json").exists():
            init_random(b["family"], b["init"]["preset"], folder / b["checkpoint"], seed=b["init"]["seed"])

    def absolute(m: re.Match) -> str:
        ckpt = ROOT / m.group(2)
        return f"{m.group(1)}{ckpt if (ckpt / 'config.json').exists() else folder / m.group(2)}"

    text = re.sub(r"(checkpoint:\s*)(\S+)", absolute, text)
    text = re.sub(r"^(classifier:\s*)(\S+)", lambda m: f"{m.group(1)}{ROOT / m.group(2)}", text, flags=re.M)
    out = folder / "policy.yaml"
    out.write_text(text)
    return out


def traffic(url: str, stop: threading.Event, seed: int) -> None:
    """Labelled prompts (short enough to answer quickly on a CPU), a few tokens each; one in five is one of
    a few popular prompts, asked greedily (the response cache answers those after the first time)."""
    rng = random.Random(seed)
    files = [*sorted(DATA_DIR.glob("*test*.jsonl*")), DATA_DIR / "handwritten.jsonl"]
    records = [r for f in files if f.exists() for r in read_labelled(f) if len(r.text()) < 2500]
    popular = random.Random(0).sample(records, 4)
    with httpx.Client(base_url=url, timeout=120) as c:
        while not stop.is_set():
            repeat = rng.random() < 0.2
            rec = rng.choice(popular if repeat else records)
            messages = [m.model_dump() for m in rec.messages] if rec.messages else [
                {"role": "user", "content": rec.prompt}]
            body = {"model": "auto", "messages": messages, "max_tokens": 8 if repeat else rng.choice([4, 8, 16])}
            if repeat:
                body["temperature"] = 0
            if rng.random() < 0.08:
                body["metadata"] = {"quality": "high"}
            c.post("/v1/chat/completions", json=body)


def whole_page(page, path: Path) -> None:
    """A viewport as tall as the page (a full-page capture would paint the sticky header mid-page)."""
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1440, "height": max(900, height)})
    time.sleep(0.5)  # the charts redraw on resize
    page.screenshot(path=str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=ROOT / "config/policy.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/img")
    ap.add_argument("--seconds", type=float, default=30.0, help="traffic before the Backends screenshot")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory(prefix="archrouter-shots-") as tmp:
        policy = local_policy(args.policy, Path(tmp))
        prefix = f"archrouter:shots:{uuid.uuid4().hex[:8]}"
        settings = Settings(host="127.0.0.1", port=free_port(), policy=str(policy), log_format="json",
                            redis_url=REDIS_URL, watch_policy=False, response_cache=True,
                            response_cache_prefix=f"{prefix}:rcache", decision_stream=f"{prefix}:decisions",
                            policy_key=f"{prefix}:policy", policy_channel=f"{prefix}:policy-updates")

        def engine(name: str, spec) -> Engine:  # noqa: ANN001
            config = EngineConfig(max_num_seqs=2, max_waiting=0) if name == "mamba" else EngineConfig()
            return Engine.from_checkpoint(name, spec.family, spec.checkpoint, context_length=spec.context_length,
                                          device="cpu", config=config)

        with LiveServer(settings, factory=engine) as server, sync_playwright() as pw:
            stop = threading.Event()
            workers = [threading.Thread(target=traffic, args=(server.url, stop, i), daemon=True)
                       for i in range(3)]
            for w in workers:
                w.start()
            b = chromium.launch(pw)
            page = b.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
            expect.set_options(timeout=60_000)
            page.goto(f"{server.url}/dashboard#backends")
            expect(page.locator("#policy-id")).not_to_have_text("–")
            time.sleep(args.seconds)  # the Backends page polls every 2 s meanwhile: its charts fill
            whole_page(page, args.out / "dashboard-backends.png")
            page.set_viewport_size({"width": 1440, "height": 900})

            page.click("nav.tabs a[data-view=live]")
            page.wait_for_selector("#live-table tbody tr")
            page.screenshot(path=str(args.out / "dashboard-live.png"))

            page.click("nav.tabs a[data-view=playground]")
            expect(page.locator("#policy-text")).not_to_have_value("")
            value = page.eval_on_selector_all(
                "#example option", "os => (os.find(o => o.value.startsWith('handwritten') && "
                "o.parentElement.label === 'state_tracking') || os[1]).value")
            page.select_option("#example", value)
            expect(page.locator("#prompt")).not_to_have_value("")
            page.click("#route-btn")
            page.wait_for_selector("#trace tbody tr")
            page.click("#send-btn")
            expect(page.locator("#answer-meta")).to_contain_text("tokens in")
            editor = page.input_value("#policy-text")
            # an edit whose decisions differ visibly: send prompts past 400 tokens to the recurrent families
            edited = editor.replace("prompt_tokens: {gt: 3840}", "prompt_tokens: {gt: 400}", 1)
            page.fill("#policy-text", edited)
            line = edited[:edited.index("{gt: 400}")].count("\n") + 1
            page.locator("#policy-text").evaluate(  # show the edited rule in the editor
                f"ta => {{ ta.scrollTop = {max(0, line - 8)} * 20; ta.dispatchEvent(new Event('scroll')); }}")
            page.fill("#diff-limit", "300")
            page.click("#policy-diff")
            page.wait_for_selector("#diff-result:not([hidden])")
            whole_page(page, args.out / "dashboard-playground.png")
            page.set_viewport_size({"width": 1440, "height": 900})

            page.click("nav.tabs a[data-view=capability]")
            page.wait_for_selector("#capability-body .card")
            page.screenshot(path=str(args.out / "dashboard-capability.png"))
            b.close()
            stop.set()
            for w in workers:
                w.join(timeout=120)
    r = redis.Redis.from_url(REDIS_URL)
    for k in r.scan_iter(f"{prefix}:*"):
        r.delete(k)
    for name in ("live", "backends", "playground", "capability"):
        print(args.out / f"dashboard-{name}.png")


if __name__ == "__main__":
    main()
