"""scripts/ray_install_parts.sh: parts arriving over several calls are kept, checked against the MANIFEST's
sha256, unpacked once all are there and imported from the site folder. The bundle here is a small real
package packed and split the way scripts/ray_parts.sh packs and splits the Ray bundle."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts/ray_install_parts.sh"
pytestmark = pytest.mark.skipif(shutil.which("xz") is None or shutil.which("split") is None, reason="needs xz, split")


def make_parts(tmp_path, part_bytes: int = 4096):
    site = tmp_path / "build"
    pkg = site / "bundled_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '1.2.3'\n")
    (pkg / "blob.py").write_text("DATA = " + repr(os.urandom(20_000).hex()) + "\n")  # incompressible: several parts
    (pkg / "tool").write_text("#!/bin/sh\necho ok\n")
    (pkg / "tool").chmod(0o755)
    bundle = tmp_path / "bundle.tar.xz"
    subprocess.run(f"tar -C {site} -cf - . | xz -9 > {bundle}", shell=True, check=True)
    out = tmp_path / "parts"
    out.mkdir()
    subprocess.run(["split", "-b", str(part_bytes), "-d", "-a", "2", str(bundle), str(out / "part-")], check=True)
    parts = sorted(out.glob("part-*"))
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    (out / "MANIFEST").write_text(f"parts={len(parts)}\nsha256={sha}\nray=test\nwheels=\n")
    return out, parts


def call(tmp_path, carried: list, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """One device call: a fresh checkout folder holding only the carried files, the same bundle/site folders."""
    call_dir = tmp_path / f"call{len(list(tmp_path.glob('call*')))}"
    (call_dir / ".device/ray").mkdir(parents=True)
    for f in carried:
        shutil.copy(f, call_dir / ".device/ray" / f.name)
    env = {**os.environ, "RAYBUNDLE": str(tmp_path / "raybundle"), "RAYSITE": str(tmp_path / "site"),
           "PY": sys.executable, "IMPORTS": "bundled_pkg bundled_pkg.blob"}
    return subprocess.run(["bash", str(SCRIPT)], cwd=call_dir, env={**env, **(env_extra or {})},
                          capture_output=True, text=True, timeout=60)


def test_parts_over_several_calls_install_once_all_are_there(tmp_path):
    out, parts = make_parts(tmp_path)
    assert len(parts) >= 3
    manifest = out / "MANIFEST"
    first = call(tmp_path, [parts[0], manifest])
    assert first.returncode == 3 and f"have 1 of {len(parts)} parts" in first.stderr
    for p in parts[1:-1]:  # a later call may carry the part alone: the MANIFEST is kept from the first
        assert call(tmp_path, [p]).returncode == 3
    last = call(tmp_path, [parts[-1]])
    assert last.returncode == 0, last.stderr
    assert "import bundled_pkg: 1.2.3" in last.stdout
    tool = tmp_path / "site/bundled_pkg/tool"
    assert os.access(tool, os.X_OK)  # modes survive (raylet and gcs_server must stay executable)
    again = call(tmp_path, [])
    assert again.returncode == 0 and "already installed" in again.stderr


def test_a_damaged_part_is_refused(tmp_path):
    out, parts = make_parts(tmp_path)
    data = bytearray(parts[1].read_bytes())
    data[100] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    done = call(tmp_path, [*parts, out / "MANIFEST"])
    assert done.returncode == 4 and "sha256" in done.stderr
    assert not (tmp_path / "site/bundled_pkg").exists()


def test_without_a_manifest_it_says_what_to_carry(tmp_path):
    _, parts = make_parts(tmp_path)
    done = call(tmp_path, [parts[0]])
    assert done.returncode == 3 and "MANIFEST" in done.stderr
