"""Debian's chromium driven by Playwright (no `playwright install`: the browser comes from apt)."""

from __future__ import annotations

import os
import shutil

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]


def chromium_path() -> str | None:
    for p in (os.environ.get("ARCHROUTER_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if p and os.access(p, os.X_OK):
            return p
    return None


def launch(playwright):
    """A headless chromium; raises RuntimeError saying why when none can be started."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("no chromium at /usr/bin/chromium (`make test` installs it with apt-get)")
    try:
        return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
    except Exception as exc:  # playwright raises its own Error type; anything here means no browser
        raise RuntimeError(f"chromium at {path} did not start: {exc}") from exc
