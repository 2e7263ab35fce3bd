"""The Capability view's files: the zoo's heatmaps and cost curves under archrouter/evals/results/capability/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

CAPABILITY_DIR = Path(__file__).resolve().parents[2] / "evals" / "results" / "capability"  # read as files
IMAGES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
          ".webp": "image/webp"}
DATA = {".json": "application/json", ".csv": "text/csv", ".md": "text/markdown", ".txt": "text/plain"}
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")  # plain file names only: no folders, no dot-files


def listing(folder: Path = CAPABILITY_DIR) -> dict[str, Any]:
    files = []
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            ext = p.suffix.lower()
            if p.is_file() and _SAFE.match(p.name) and (ext in IMAGES or ext in DATA):
                files.append({"name": p.name, "kind": "image" if ext in IMAGES else "data",
                              "bytes": p.stat().st_size, "title": p.stem.replace("_", " ").replace("-", " ")})
    return {"folder": _shown(folder), "exists": folder.is_dir(), "files": files}


def resolve(name: str, folder: Path = CAPABILITY_DIR) -> tuple[Path, str] | None:
    """(path, media type) for a listed file, else None."""
    ext = Path(name).suffix.lower()
    media = IMAGES.get(ext) or DATA.get(ext)
    if not _SAFE.match(name) or media is None:
        return None
    path = folder / name
    return (path, media) if path.is_file() else None


def _shown(folder: Path) -> str:
    try:
        return str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)
