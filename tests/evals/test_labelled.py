"""Labelled-prompt generator and the JSONL schema."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from archrouter.evals import DATA_DIR
from archrouter.evals.labelled import generate, split, write_dataset
from archrouter.evals.schema import LabelledDataError, LabelledPrompt, parse_lines, read_labelled, write_labelled
from archrouter.policies.types import TASKS

ROOT = Path(__file__).resolve().parents[2]


def test_generator_is_deterministic_and_large_enough() -> None:
    a = generate(seed=0, per_task=640)
    b = generate(seed=0, per_task=640)
    assert [r.model_dump() for r, _ in a] == [r.model_dump() for r, _ in b]
    assert len(a) >= 3000
    counts = Counter(r.task for r, _ in a)
    assert set(counts) == set(TASKS) and min(counts.values()) >= 400
    assert len({r.text() for r, _ in a}) == len(a)  # no duplicate prompts
    forms = Counter("messages" if r.messages else "prompt" for r, _ in a)
    assert forms["messages"] > 500 and forms["prompt"] > 500
    assert any(r.messages and r.messages[0].role == "system" and len(r.messages) > 2 for r, _ in a)
    c = generate(seed=1, per_task=20)
    assert [r.text() for r, _ in c] != [r.text() for r, _ in a if int(r.id.rsplit("-", 1)[1]) < 20]


def test_split_holds_out_templates() -> None:
    gen = generate(seed=0, per_task=60)
    train, test = split(gen, [], seed=0)
    train_templates = {r.template for r in train}
    unseen = [r for r in test if "unseen_template" in r.tags]
    assert unseen and all(r.template not in train_templates for r in unseen)
    assert len(test) / (len(train) + len(test)) >= 0.2


def test_shipped_files_validate() -> None:
    tr = read_labelled(DATA_DIR / "labelled_train.jsonl.gz")
    te = read_labelled(DATA_DIR / "labelled_test.jsonl.gz")
    hw = read_labelled(DATA_DIR / "handwritten.jsonl")
    assert len(hw) >= 150 and len(tr) + len(te) >= 3000
    assert len(te) / (len(tr) + len(te)) >= 0.2
    assert not {r.text() for r in tr} & {r.text() for r in te}


def test_gzip_files_round_trip_byte_for_byte(tmp_path) -> None:
    # a .gz name is gzip both ways; the compressed bytes do not depend on the time they were written,
    # so the manifest's sha256 of a regenerated set matches
    records = read_labelled(DATA_DIR / "handwritten.jsonl")[:50]
    write_labelled(tmp_path / "a.jsonl", records)
    write_labelled(tmp_path / "a.jsonl.gz", records)
    write_labelled(tmp_path / "b.jsonl.gz", records)
    assert gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()) == (tmp_path / "a.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert read_labelled(tmp_path / "a.jsonl.gz") == records == read_labelled(tmp_path / "a.jsonl")
    # the shipped compressed sets are the ones the manifest names
    manifest = json.loads((DATA_DIR / "labelled_manifest.json").read_text())
    for name in ("labelled_train.jsonl.gz", "labelled_test.jsonl.gz"):
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == manifest["sha256"][name]


def test_regenerated_sets_equal_the_shipped_files(tmp_path) -> None:
    # the templates and their text banks (labelled/banks/*.yaml) must still make exactly the shipped sets:
    # the shipped classifier was trained on them, so any drift in wording or RNG order would need a retrain
    manifest = write_dataset(tmp_path, handwritten=DATA_DIR / "handwritten.jsonl")  # the default seed and size
    shipped = json.loads((DATA_DIR / "labelled_manifest.json").read_text())
    for name in ("labelled_train.jsonl.gz", "labelled_test.jsonl.gz"):
        assert gzip.decompress((tmp_path / name).read_bytes()) == gzip.decompress((DATA_DIR / name).read_bytes())
    # everything but the command line (which names the output folder) matches, the .gz hashes included
    assert {**manifest, "command": None} == {**shipped, "command": None}


def test_bad_lines_name_line_and_field() -> None:
    lines = [
        '{"prompt": "hi", "task": "chat"}',
        "",
        '{"prompt": "hi", "task": "chitchat"}',
        '{"prompt": "hi", "task": "chat", "messages": [{"role": "user", "content": "x"}]}',
        "{not json",
        '{"messages": [{"role": "robot", "content": "x"}], "task": "code"}',
        '{"prompt": "hi", "task": "chat", "state_traking": true}',
    ]
    with pytest.raises(LabelledDataError) as e:
        parse_lines(lines, "data.jsonl")
    errs = e.value.errors
    assert any(x.startswith("data.jsonl:3: task:") for x in errs)
    assert any(x.startswith("data.jsonl:4:") and "exactly one" in x for x in errs)
    assert any(x.startswith("data.jsonl:5: invalid JSON") for x in errs)
    assert any(x.startswith("data.jsonl:6: messages.0.role:") for x in errs)
    assert any(x.startswith("data.jsonl:7: state_traking:") for x in errs)
    assert not any(x.startswith("data.jsonl:1:") for x in errs)


def test_text_renders_roles_with_last_turn_last() -> None:
    r = LabelledPrompt(
        task="chat", messages=[{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello"}]
    )
    assert r.text() == "system: be nice\n\nuser: hello"
    assert r.tracks_state() is False
    assert LabelledPrompt(task="state_tracking", prompt="x").tracks_state() is True


def test_record_formats_carry_the_same_rows() -> None:
    import csv
    import io
    import json
    import random

    from archrouter.evals.labelled.more import fmt_rows

    cols = ["ts", "name", "value"]
    rows = [["09:00", "Ana", 3], ["09:05", "Bo", 17], ["09:07", "Cy", 2]]
    seen_styles = set()
    for s in range(200):
        text = fmt_rows(random.Random(s), cols, rows)
        if text.startswith("["):
            assert json.loads(text) == [dict(zip(cols, r, strict=True)) for r in rows]
            seen_styles.add("json")
        elif text.startswith("{"):
            assert [json.loads(x) for x in text.splitlines()] == [dict(zip(cols, r, strict=True)) for r in rows]
            seen_styles.add("jsonl")
        elif text.startswith("ts,"):
            assert list(csv.reader(io.StringIO(text))) == [cols] + [[str(x) for x in r] for r in rows]
            seen_styles.add("csv")
        else:
            # key=value, TSV, markdown table and bullets: every value appears on its own row's line
            body = [ln for ln in text.splitlines() if not set(ln) <= set("|-")]
            body = body[-len(rows) :]
            assert all(str(x) in ln for r, ln in zip(rows, body, strict=True) for x in r)
            seen_styles.add(text[:3])  # "ts\t", "ts=", "| t", "- t"
    assert len(seen_styles) == 7  # all seven formats come up


def test_dashboard_playground_lists_compressed_sets(tmp_path) -> None:
    from archrouter.router.dashboard.playground import LabelledSets

    records = read_labelled(DATA_DIR / "handwritten.jsonl")[:5]
    write_labelled(tmp_path / "plain.jsonl", records)
    write_labelled(tmp_path / "packed.jsonl.gz", records)
    files = {f.name: f.records for f in LabelledSets(tmp_path).files()}
    assert files == {"packed.jsonl.gz": records, "plain.jsonl": records}
