"""The `archrouter` command: the one room that imports every other (router, backends, policies, evals)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Architecture-aware LLM router.")
policy_app = typer.Typer(no_args_is_help=True, help="Check and try routing policies.")
classifier_app = typer.Typer(no_args_is_help=True, help="Train the task classifier.")
app.add_typer(policy_app, name="policy")
app.add_typer(classifier_app, name="classifier")


def _eval_app() -> typer.Typer:
    from archrouter.cli.evals import app as evals_app

    return evals_app


app.add_typer(_eval_app(), name="eval", help="Evaluate routing policies offline (same as python -m archrouter.evals).")


@app.command()
def serve(
    embedded: Annotated[bool, typer.Option(help="One process, no Ray: router and engines together.")] = False,
    host: Annotated[str | None, typer.Option(help="Bind address [ARCHROUTER_HOST, 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [ARCHROUTER_PORT, 8000].")] = None,
    policy: Annotated[str | None, typer.Option(help="Policy file [ARCHROUTER_POLICY].")] = None,
    device: Annotated[str | None, typer.Option(help="engines: auto (CUDA if present), cpu, cuda.")] = None,
    config: Annotated[Path, typer.Option(help="Ray Serve config (without --embedded).")] = Path("config/serve.yaml"),
) -> None:
    """Serve the OpenAI-compatible API: on Ray Serve (config/serve.yaml), or --embedded in one process."""
    from archrouter.router.settings import Settings

    overrides = {k: v for k, v in dict(host=host, port=port, policy=policy, device=device).items() if v is not None}
    if embedded:
        _serve_embedded(Settings(**overrides))
    else:
        _serve_ray(config, overrides)


def _serve_embedded(settings) -> None:
    import uvicorn

    from archrouter.router.app import create_app

    app_ = create_app(settings)
    settings.host, notice = bind_host(settings.host, keys_enabled=app_.state.router.keys.enabled)
    if notice:
        typer.echo(f"archrouter: {notice}", err=True)
    if settings.redis_url and settings.policy_sync:  # starting makes its policy file the version replicas serve
        _publish_policy(settings)
    typer.echo(f"archrouter: serving {settings.policy} at http://{settings.host}:{settings.port}/v1", err=True)
    # SIGTERM: uvicorn stops accepting, gives in-flight streams the grace period to finish, then re-raises
    # the signal; with this handler in place that re-raise returns, so a drained shutdown exits 0
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(app_, host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=int(settings.shutdown_grace_s), timeout_keep_alive=int(settings.keep_alive_s))


def bind_host(host: str, *, keys_enabled: bool) -> tuple[str, str | None]:
    """The address to bind and what to say about it: without API keys, loopback only."""
    if keys_enabled:
        return host, None
    if not _is_loopback(host):
        return "127.0.0.1", (f"no API keys configured, so binding to 127.0.0.1 instead of {host} "
                             "(set ARCHROUTER_KEYS_FILE or ARCHROUTER_API_KEYS to serve other hosts)")
    return host, "no API keys configured; serving loopback only"


def _serve_ray(config: Path, overrides: dict) -> None:
    """`serve run` of ray_app.build with config/serve.yaml's arguments, on a local Ray instance
    (or the cluster RAY_ADDRESS names); blocks until Ctrl-C or SIGTERM, then shuts the app down."""
    import time

    import yaml

    doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    start_ray_app(doc, overrides, source=str(config))

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        import ray
        from ray import serve

        typer.echo("archrouter: shutting down the Serve app", err=True)
        serve.shutdown()
        ray.shutdown()


def start_ray_app(doc: dict, overrides: dict, *, source: str = "config", ray_init: dict | None = None) -> str:
    """Start the one application of a Serve config (the parsed YAML) in this process, on a local Ray
    instance or the cluster RAY_ADDRESS names; `overrides` (policy, device, host, port) win over the
    config. Returns the API's base URL (".../v1"). benchmarks/bench_cluster.py uses it too."""
    import os

    from archrouter.router.auth import KeyStore
    from archrouter.router.settings import Settings

    if len(doc.get("applications") or []) != 1:
        typer.echo(f"{source}: expected exactly one application (archrouter)", err=True)
        raise typer.Exit(2)
    spec = doc["applications"][0]
    args = dict(spec.get("args") or {})
    for key in ("policy", "device"):
        if key in overrides:
            args[key] = overrides[key]
    http = dict(doc.get("http_options") or {})
    http["host"] = overrides.get("host", http.get("host", "127.0.0.1"))
    http["port"] = overrides.get("port", http.get("port", 8000))
    settings = Settings(**(args.get("settings") or {}))
    keys = KeyStore.from_config(settings.keys_file, settings.api_keys, settings.admin_key)
    http["host"], notice = bind_host(http["host"], keys_enabled=keys.enabled)
    if notice:
        typer.echo(f"archrouter: {notice}", err=True)

    import ray
    from ray import serve

    from archrouter import ray_app

    # RAY_ADDRESS set: join that cluster (whose nodes have archrouter installed); otherwise a local Ray instance
    ray.init(address=os.environ.get("RAY_ADDRESS", "local"), runtime_env=spec.get("runtime_env") or {},
             **(ray_init or {}))
    serve.start(http_options=http, proxy_location=doc.get("proxy_location", "HeadOnly"))
    name, prefix = spec.get("name", "archrouter"), spec.get("route_prefix", "/")
    serve.run(ray_app.build(args), name=name, route_prefix=prefix)
    url = f"http://{http['host']}:{http['port']}{prefix.rstrip('/')}/v1"
    typer.echo(f"archrouter: Ray Serve app {name!r} serving {args.get('policy', 'config/policy.yaml')} at {url} "
               "(`serve status` shows its deployments; Ctrl-C stops it)", err=True)
    return url


def _publish_policy(settings) -> None:
    from archrouter.policies.loader import load_policy
    from archrouter.router.policy_sync import publish_now

    policy = load_policy(settings.policy)
    publish_now(settings.redis_url, Path(settings.policy).read_text(encoding="utf-8"), policy.id,
                origin="archrouter serve", channel=settings.policy_channel, key=settings.policy_key)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (stored as salted hashes).")
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Option(help="Who the key is for.")],
    file: Annotated[Path, typer.Option(help="Keys file (YAML).")] = Path("config/keys.yaml"),
    backends: Annotated[str | None, typer.Option(help="Comma-separated backends this key may use.")] = None,
    admin: Annotated[bool, typer.Option(help="May call /admin/*.")] = False,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
) -> None:
    """Create a key, store its salted hash, print the key once."""
    import yaml

    from archrouter.router.auth import KeyRecord, KeysFile, new_key

    data = KeysFile.model_validate(yaml.safe_load(file.read_text()) or {}) if file.exists() else KeysFile()
    kid, key, hashed = new_key()
    data.keys.append(KeyRecord(id=kid, name=name, hash=hashed, admin=admin, rpm=rpm, tpm=tpm,
                               backends=backends.split(",") if backends else None))
    file.write_text(yaml.safe_dump(data.model_dump(exclude_none=True), sort_keys=False))
    typer.echo(key)


@policy_app.command("check")
def policy_check(files: Annotated[list[Path], typer.Argument(help="Policy YAML files.")]) -> None:
    """Validate policy files; exit 1 listing every error with its file and line."""
    from archrouter.policies.loader import PolicyError, load_policy

    bad = False
    for f in files:
        try:
            p = load_policy(f)
        except PolicyError as exc:
            bad = True
            typer.echo(str(exc), err=True)
        else:
            typer.echo(f"{f}: ok ({p.id}: {len(p.backends)} backends, {len(p.rules)} rules)")
    raise typer.Exit(1 if bad else 0)


@policy_app.command("fit")
def policy_fit(
    capability: Annotated[Path, typer.Option(help="capability.json from `python -m archrouter.evals capability`.")],
    out: Annotated[Path, typer.Option(help="Where to write the proposed policy YAML.")],
    base: Annotated[Path | None, typer.Option(help="Policy whose name, classifier and backend settings to keep.")]
    = None,
    names: Annotated[str | None, typer.Option(help="Backend names: family=name,... (default: the family names).")]
    = None,
    cost_device: Annotated[str | None, typer.Option(help="Cost measurements to fit: cuda or cpu (default: cuda if "
                                                         "measured).")] = None,
    z: Annotated[float, typer.Option(help="Families within z standard errors of the best count as tied.")] = 1.96,
    gpu_hour_price: Annotated[float, typer.Option(help="Notional price per GPU-hour for the cost model.")] = 2.0,
    name: Annotated[str | None, typer.Option(help="Policy name (default: the base's, else 'capability').")] = None,
) -> None:
    """Propose a readable policy from a capability matrix; the result is checked before it is written."""
    from archrouter.evals.capability import load
    from archrouter.evals.policy_fit import fit_policy, parse_names, read_base
    from archrouter.policies.loader import PolicyError, parse_policy

    try:
        text = fit_policy(load(capability), base=read_base(base), names=parse_names(names), cost_dev=cost_device,
                          z=z, gpu_hour_price=gpu_hour_price, source=capability.name, name=name)
    except (OSError, ValueError, KeyError) as exc:
        typer.echo(f"policy fit: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        pol = parse_policy(text, file=str(out))
    except PolicyError as exc:
        typer.echo(f"the fitted policy does not pass the checks (a bug):\n{exc}", err=True)
        raise typer.Exit(1) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"{out}: {len(pol.rules)} rules over {len(pol.backends)} backends ({pol.id})")


@app.command()
def route(
    prompt: Annotated[str, typer.Option(help="The prompt (user message) to route.")],
    policy: Annotated[Path, typer.Option(help="Policy file.")] = Path("config/policy.yaml"),
    max_tokens: Annotated[int, typer.Option(help="Expected output length.")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Show which backend a prompt goes to, the rule that fired and why earlier rules did not."""
    from archrouter.policies.loader import PolicyError, load_policy

    try:
        pol = load_policy(policy)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    features = pol.features(messages=[{"role": "user", "content": prompt}], prompt=None, max_tokens=max_tokens,
                            metadata={}, session_id=None)
    decision = pol.decide(features)
    if as_json:
        typer.echo(json.dumps({"decision": decision.to_dict(), "features": features.to_dict()}, indent=2))
        return
    typer.echo(f"backend: {decision.backend}   rule: {decision.rule}   policy: {decision.policy}")
    typer.echo(f"reason: {decision.reason}")
    acc = decision.expected_accuracy  # the policy's capability matrix, when it has one

    def delta(b: str) -> str:
        return f" ({acc[b] - acc[decision.backend]:+.2f})" if b in acc and decision.backend in acc else ""

    typer.echo(f"fallbacks: {', '.join(b + delta(b) for b in decision.fallbacks) or '-'}")
    typer.echo(f"task: {features.task} ({features.task_probs[features.task]:.2f})   "
               f"state_tracking: {features.state_tracking:.2f}   prompt_tokens: {features.prompt_tokens}")
    for t in decision.trace:
        typer.echo(f"  {'FIRED' if t.fired else 'no   '} {t.rule}: {t.why}")


@classifier_app.command("train")
def classifier_train(
    data: Annotated[list[Path], typer.Option(help="Labelled JSONL (training split); repeat to add files.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    test: Annotated[Path | None, typer.Option(help="Held-out labelled JSONL to score.")] = None,
) -> None:
    """Train the task classifier from labelled prompts and save it (JSON, no pickle)."""
    from archrouter.policies.classifier import train_file

    metrics = train_file(data, out, test=test)
    typer.echo(json.dumps(metrics, indent=2))


@app.command("init-models")
def init_models(
    policy: Annotated[Path, typer.Option(help="Policy whose catalogue to initialise.")] = Path("config/policy.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite existing checkpoints.")] = False,
) -> None:
    """Create random-weight checkpoints (from their `init` presets) for catalogue entries that have none."""
    from archrouter.backends.families import init_random
    from archrouter.policies.loader import load_policy

    pol = load_policy(policy)
    for name, spec in pol.backends.items():
        path = Path(spec.checkpoint)
        if (path / "config.json").exists() and not force:
            kind = "trained" if (path / "training.json").exists() else "present"
            typer.echo(f"{name}: {spec.family} checkpoint at {path} ({kind})")
            continue
        if spec.init is None:
            typer.echo(f"{name}: no checkpoint at {path} and no `init` preset in the catalogue", err=True)
            raise typer.Exit(1)
        model = init_random(spec.family, spec.init.preset, path, seed=spec.init.seed)
        typer.echo(f"{name}: wrote random {spec.family}/{spec.init.preset} "
                   f"({model.num_parameters() / 1e6:.1f}M parameters) to {path}")


def main() -> None:  # pragma: no cover
    sys.exit(app())
