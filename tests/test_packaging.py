"""The installed package, seen from outside the checkout: what `make serve` imports must resolve from any
working directory (pytest puts the repository on sys.path; `archrouter serve` run elsewhere does not)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_installed_modules_import_outside_the_checkout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "from archrouter import ray_app, cli, backends, policies, evals; print(ray_app.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ray_app.py")
