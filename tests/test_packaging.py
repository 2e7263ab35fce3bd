"""The installed package, seen from outside the checkout, and the lock it was installed from.

What `make serve` imports must resolve from any working directory; the only import name the project adds
is `archrouter`, taken by no distribution it depends on; requirements.lock pins what pyproject.toml asks for.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _locked() -> dict[str, str]:
    """name -> pinned version, from requirements.lock."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", LOCK.read_text(encoding="utf-8"), flags=re.M)
    return {canonicalize_name(n): v for n, v in pins}


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_installed_modules_import_outside_the_checkout(tmp_path):
    out = _run("from archrouter import ray_app, cli, backends, policies, evals; print(ray_app.__file__)", tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("archrouter/ray_app.py")


def test_the_only_top_level_name_installed_is_archrouter():
    dist = metadata.distribution("archrouter")
    top = set((dist.read_text("top_level.txt") or "").split())
    assert top == {"archrouter"}
    # no distribution of the resolved dependency set has that name, and none installs that import name
    assert not top & set(_locked())
    providers = metadata.packages_distributions()
    assert {name: set(providers.get(name, ())) for name in top} == {"archrouter": {"archrouter"}}


def test_hugging_face_kernels_is_not_shadowed_from_the_repository_root():
    """transformers imports Hugging Face's `kernels`; the checkout's root on sys.path must not hide it."""
    code = ("import kernels, transformers; from transformers import LlamaForCausalLM, MambaForCausalLM; "
            "print(kernels.__file__)")
    out = _run(code, ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "site-packages" in out.stdout and not out.stdout.strip().startswith(str(ROOT / "kernels"))


def test_lock_pins_what_pyproject_asks_for():
    locked = _locked()
    missing, unsatisfied = [], []
    for req in _project_requirements():
        name = canonicalize_name(req.name)
        if name not in locked:
            missing.append(req.name)
        elif not req.specifier.contains(locked[name].split("+")[0], prereleases=True) and not req.specifier.contains(
                locked[name], prereleases=True):
            unsatisfied.append(f"{req} (locked {locked[name]})")
    assert not missing and not unsatisfied, ("requirements.lock disagrees with pyproject.toml (run `make lock`): "
                                             f"not locked {missing}, not satisfied {unsatisfied}")


def test_lock_has_no_direct_pins_pyproject_dropped():
    """A dependency removed from pyproject.toml leaves no pin that says it is ours."""
    direct = {canonicalize_name(r.name) for r in _project_requirements()}
    text = LOCK.read_text(encoding="utf-8")
    ours = set()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", block)
        if m and "archrouter (pyproject.toml)" in block:
            ours.add(canonicalize_name(m[1]))
    assert ours == direct, f"run `make lock`: locked as ours but not in pyproject {ours - direct}, " \
                           f"in pyproject but not locked as ours {direct - ours}"


def test_every_locked_pin_carries_a_hash_and_the_environment_matches_it():
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text(encoding="utf-8"))
    unhashed = [b.split()[0] for b in blocks if re.match(r"[A-Za-z0-9].*==", b) and "--hash=sha256:" not in b]
    assert not unhashed
    # setuptools puts its vendored copies (packaging, platformdirs, ...) on sys.path too: a name may show twice
    installed: dict[str, set[str]] = {}
    for d in metadata.distributions():
        installed.setdefault(canonicalize_name(d.metadata["Name"]), set()).add(d.version)
    drift = {n: (v, installed.get(n)) for n, v in _locked().items() if n in installed and v not in installed[n]}
    assert not drift, f"installed versions differ from the lock (reinstall with `make install`): {drift}"
