"""`archrouter eval` (also `python -m archrouter.evals`): run, compare and replay routing policies offline.

Part of the CLI room: `run --execute` without `--url` starts the router in this process, which the
evals room itself never imports (an executed evaluation talks to a server over HTTP)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from archrouter.evals import DATA_DIR

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Evaluate routing policies offline.")


def _policy(path: Path):
    from archrouter.policies.loader import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _records(path: Path):
    from archrouter.policies.labelled import LabelledDataError, read_labelled

    try:
        records = read_labelled(path)
    except LabelledDataError as exc:
        typer.echo(f"{len(exc.errors)} bad line(s) in {path}:\n{exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"cannot read {path}: {exc}", err=True)
        raise typer.Exit(1) from None
    for i, r in enumerate(records):
        if r.id is None:
            r.id = f"{path.name}:{i + 1}"
    return records


@app.command()
def run(
    policy: Annotated[Path, typer.Option(help="Policy YAML.")],
    data: Annotated[Path, typer.Option(help="Labelled prompts (JSONL).")],
    out: Annotated[Path, typer.Option(help="Folder for report.json/.md/.html, plots, decisions.jsonl.")],
    max_tokens: Annotated[int, typer.Option(help="Expected output length used by the cost model.")] = 256,
    execute: Annotated[bool, typer.Option(help="Also generate answers and score them.")] = False,
    url: Annotated[str | None, typer.Option(help="Running server for --execute (else an embedded one).")] = None,
    api_key: Annotated[str, typer.Option(envvar="OPENAI_API_KEY", help="Key for --url.")] = "unused",
    answer_tokens: Annotated[int, typer.Option(help="max_tokens when executing.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the random-routing baseline.")] = 0,
) -> None:
    """Decide every labelled prompt with the policy and write the report."""
    from archrouter.evals import execute as ex
    from archrouter.evals import report
    from archrouter.policies.evaluation import decide_all, summarise

    pol, records = _policy(policy), _records(data)
    rows = decide_all(pol, records, max_tokens=max_tokens)
    summary = summarise(pol, rows, seed=seed)
    execution = None
    if execute:
        runnable = [r for r in records if r.answer is not None]
        summary["skipped_no_answer"] = len(records) - len(runnable)
        if not runnable:
            typer.echo("--execute: no labelled prompt carries an `answer`", err=True)
            raise typer.Exit(1)
        with (serve_in_thread(str(policy)) if url is None else _nullctx(url)) as base:
            outputs = ex.run_all(base, runnable, list(pol.backends), max_tokens=answer_tokens, api_key=api_key)
        execution = ex.score(pol, rows, outputs)
    rep = report.write(out, summary, rows, execution)
    acc = rep["decision_accuracy"]
    typer.echo(f"{pol.id}: {len(rows)} prompts; decision accuracy {'–' if acc is None else f'{acc:.3f}'}; "
               f"task macro-F1 {rep['task_macro_f1']:.3f}; report in {out}/report.html")


@contextlib.contextmanager
def serve_in_thread(policy_path: str) -> Iterator[str]:
    """The router with embedded engines on a free loopback port, in a thread; yields its /v1 URL."""
    import uvicorn

    from archrouter.router.app import create_app
    from archrouter.router.settings import Settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(port=port, policy=policy_path, watch_policy=False, log_format="json")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("embedded server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class _nullctx:
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False


@app.command()
def compare(
    policy: Annotated[list[Path], typer.Option(help="Exactly two: --policy A.yaml --policy B.yaml.")],
    data: Annotated[Path, typer.Option(help="Labelled prompts (JSONL).")],
    fail_if: Annotated[str | None, typer.Option(
        help="e.g. 'accuracy<0.9,cost>1.2x,apgr[task:recall]<0.5' (checked on B; [stratum]: all, task:T, "
             "length:LO-HI; per-stratum metrics: quality, best_single, oracle, random, pgr, apgr, cpt50, cpt80, "
             "decision_accuracy, routed_cost; and ece)")] = None,
    max_tokens: Annotated[int, typer.Option()] = 256,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List prompts whose decision changed between two policies, with metric deltas."""
    from archrouter.policies import comparison as C
    from archrouter.policies.evaluation import decide_all, summarise

    if len(policy) != 2:
        typer.echo("give exactly two --policy options", err=True)
        raise typer.Exit(2)
    records = _records(data)
    pa, pb = _policy(policy[0]), _policy(policy[1])
    ra, rb = decide_all(pa, records, max_tokens=max_tokens), decide_all(pb, records, max_tokens=max_tokens)
    sa, sb = summarise(pa, ra), summarise(pb, rb)
    diff = C.changed(ra, rb)
    result = {"a": pa.id, "b": pb.id, "prompts": len(records), "changed": len(diff), "deltas": C.deltas(sa, sb),
              "changes": diff}
    try:
        fails = C.failures(fail_if, sa, sb) if fail_if else []
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    result["failed_conditions"] = fails
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(f"{pa.id} -> {pb.id}: {len(diff)} of {len(records)} decisions changed")
        for k, v in result["deltas"].items():
            typer.echo(f"  {k:>13}: {_num(v['a'])} -> {_num(v['b'])} ({_num(v['delta'], signed=True)})")
        for c in diff[:50]:
            typer.echo(f"  {c['id']}: {c['a']['backend']} [{c['a']['rule']}] -> {c['b']['backend']} [{c['b']['rule']}]")
        if len(diff) > 50:
            typer.echo(f"  ... {len(diff) - 50} more (use --json)")
        for f in fails:
            typer.echo(f"FAIL {f}", err=True)
    raise typer.Exit(1 if fails else 0)


def _num(x, signed: bool = False) -> str:
    return "–" if x is None else (f"{x:+.4g}" if signed else f"{x:.4g}")


@app.command()
def replay(
    log: Annotated[str, typer.Option(help="decisions JSONL file, or redis://host:port/db[#stream].")],
    policy: Annotated[Path, typer.Option(help="The policy to re-decide with.")],
    limit: Annotated[int | None, typer.Option(help="At most this many records.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-decide recorded traffic with a new policy and report what would change."""
    from archrouter.evals.replay import read_log
    from archrouter.evals.replay import replay as do_replay

    pol = _policy(policy)
    try:
        records = read_log(log, limit=limit)
    except (OSError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    res = do_replay(pol, records)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    typer.echo(f"{res['records']} recorded decisions re-decided with {pol.id}: {res['changed']} would change")
    for move, n in sorted(res["moves"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {n:>6}  {move}")


# ----------------------------------------------------------------------------- capability matrix


def _capability(path: Path) -> dict:
    from archrouter.evals.capability import load

    try:
        return load(path)
    except (OSError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _split(values: list[str] | None) -> list[str]:
    """Repeated options and comma/space-separated lists alike: --scales 1,2,4,8 or --scales 1 --scales 2."""
    return [v for item in values or [] for v in item.replace(",", " ").split()]


@app.command()
def capability(
    out: Annotated[Path, typer.Option(help="Folder for capability.json and the figures.")],
    families: Annotated[list[str] | None, typer.Option(help="Families to measure, e.g. transformer,rwkv (default: "
                                                            "all under --models-dir).")] = None,
    models_dir: Annotated[Path, typer.Option(help="Holds one checkpoint folder per family.")] = Path("models"),
    items: Annotated[int, typer.Option(help="Items per (task, scale) cell, spread over the task's generators.")] = 200,
    scales: Annotated[list[str] | None, typer.Option(help="Length scales (x training length) [1,2,4,8].")] = None,
    device: Annotated[str, typer.Option(help="torch device: cpu or cuda.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="Weights dtype as served: float32, bfloat16, float16.")] = "float32",
    accuracy: Annotated[bool, typer.Option(help="Measure accuracy.")] = True,
    cost: Annotated[bool, typer.Option(help="Measure prefill/decode cost and state bytes.")] = True,
    cost_lengths: Annotated[list[str] | None, typer.Option(help="Prompt lengths for cost [256,1024,4096,16384].")]
    = None,
    decode_steps: Annotated[int, typer.Option(help="Decode steps timed per length.")] = 16,
    cost_budget_s: Annotated[float, typer.Option(help="Time budget per family for the cost lengths.")] = 90.0,
    batch_tokens: Annotated[int | None, typer.Option(help="Padded tokens per accuracy batch.")] = None,
    repeats: Annotated[int, typer.Option(help="Prefill timings per length (the fastest is kept).")] = 3,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's).")] = None,
    merge: Annotated[bool, typer.Option(help="Merge into --out's existing capability.json: cost per device type "
                                              "(this run's replaces the same type); accuracy from this run if it "
                                              "measured one, else the file's.")] = False,
) -> None:
    """Measure the capability matrix: accuracy per family x task x length, and serving cost."""
    from archrouter.evals import capability as C

    if dtype not in C.DTYPES:
        typer.echo(f"--dtype must be one of {', '.join(C.DTYPES)}", err=True)
        raise typer.Exit(2)
    if not accuracy and not cost:
        typer.echo("nothing to measure (--no-accuracy and --no-cost)", err=True)
        raise typer.Exit(2)
    existing = out / "capability.json"
    base = _capability(existing) if merge and existing.is_file() else None
    pick = "other" if accuracy else "base"  # this run's accuracy when it measured one

    def partial(cap: dict) -> None:  # after each family: a run stopped by a time limit keeps its measurements
        out.mkdir(parents=True, exist_ok=True)
        (out / "capability.partial.json").write_text(json.dumps(C.merge(base, cap, accuracy_from=pick) if base else cap,
                                                                indent=1))

    try:
        cap = C.run(models_dir=models_dir, families=_split(families) or None, items=items,
                    scales=[int(s) for s in _split(scales)] or C.DEFAULT_SCALES, device=device, dtype=dtype,
                    accuracy=accuracy, cost=cost,
                    cost_lengths=[int(n) for n in _split(cost_lengths)] or C.DEFAULT_COST_LENGTHS,
                    decode_steps=decode_steps,
                    cost_budget_s=cost_budget_s, batch_tokens=batch_tokens, repeats=repeats, threads=threads,
                    log=lambda m: typer.echo(m, err=True), progress=partial)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.echo(f"capability: {exc}", err=True)
        raise typer.Exit(1) from None
    if base is not None:
        cap = C.merge(base, cap, accuracy_from=pick)
    written = C.save(cap, out)
    (out / "capability.partial.json").unlink(missing_ok=True)
    typer.echo("wrote " + ", ".join(str(p) for p in written))


@app.command("capability-merge")
def capability_merge(
    files: Annotated[list[Path], typer.Argument(help="capability.json files; accuracy from the first that has it.")],
    out: Annotated[Path, typer.Option(help="Folder for the merged capability.json and figures.")],
) -> None:
    """Combine capability runs (e.g. accuracy + CUDA cost from the GPU, CPU cost from here)."""
    from archrouter.evals import capability as C

    caps = [_capability(f) for f in files]
    merged = caps[0]
    for c in caps[1:]:
        merged = C.merge(merged, c)
    written = C.save(merged, out)
    typer.echo("wrote " + ", ".join(str(p) for p in written))


@app.command("capability-labels")
def capability_labels(
    capability: Annotated[Path, typer.Option(help="capability.json.")],
    out: Annotated[Path, typer.Option(help="Labelled JSONL to write.")] = DATA_DIR / "labelled_capability.jsonl",
    per_cell: Annotated[int, typer.Option(help="Items per (generator, scale) cell.")] = 10,
    names: Annotated[str | None, typer.Option(help="Backend names: family=name,... (default: family names).")] = None,
    cost_device: Annotated[str | None, typer.Option(help="Cost curves of: cuda or cpu (default: cuda if measured).")]
    = None,
    unsolved: Annotated[bool, typer.Option(help="Keep items no family answered (labelled with the cheapest).")]
    = True,
) -> None:
    """Labelled prompts whose best_backend is the cheapest family that answered correctly."""
    from archrouter.evals.capability_labels import build
    from archrouter.evals.policy_fit import parse_names
    from archrouter.policies.labelled import write_labelled

    try:
        records = build(_capability(capability), names=parse_names(names), per_cell=per_cell, cost_dev=cost_device,
                        include_unsolved=unsolved)
    except ValueError as exc:
        typer.echo(f"capability-labels: {exc}", err=True)
        raise typer.Exit(1) from None
    write_labelled(out, records)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.best_backend or "-"] = counts.get(r.best_backend or "-", 0) + 1
    shares = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    typer.echo(f"{out}: {len(records)} prompts; best_backend {shares}")


@app.command("task-labels")
def task_labels(
    out: Annotated[Path, typer.Option(help="Labelled JSONL(.gz) to write.")] = (
        DATA_DIR / "labelled_tasks_train.jsonl.gz"),
    per_cell: Annotated[int, typer.Option(help="Items per (generator, scale) cell.")] = 12,
) -> None:
    """Task items as classifier training data (seeds disjoint from the capability matrix's)."""
    from archrouter.evals.capability_labels import task_training_set
    from archrouter.policies.labelled import write_labelled

    records = task_training_set(per_cell)
    write_labelled(out, records)
    typer.echo(f"{out}: {len(records)} prompts")


@app.command("capability-doc")
def capability_doc(
    capability: Annotated[Path, typer.Option(help="capability.json (its folder holds the figures).")],
    out: Annotated[Path, typer.Option(help="Markdown page to write.")] = Path("docs/capability.md"),
) -> None:
    """Write the capability page: tables, figures and the computed verdicts on the design's claims."""
    from archrouter.evals.capability_doc import claims, write

    cap = _capability(capability)
    write(cap, cap_path=capability, out=out)
    verdicts = ", ".join(f"{c['claim']}: {c['verdict']}" for c in claims(cap))
    typer.echo(f"wrote {out} ({verdicts})")
