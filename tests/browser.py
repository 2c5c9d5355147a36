"""A real headless Chromium for tests: open a local file, return the rendered DOM and what the console said."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


def chromium() -> str:
    """The browser's path; the test is skipped where there is none, except in CI (.ci/run installs it)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("no chromium on PATH in CI: .ci/run should have installed it (apt-get install -y chromium)")
    pytest.skip("no chromium on PATH (apt-get install -y chromium)")


def open_page(page: Path, profile: Path, *extra: str) -> tuple[str, list[str]]:
    """(the DOM after the page's scripts ran, the console lines), from a fresh profile.

    `extra` replaces --dump-dom (e.g. with --screenshot=FILE): headless Chromium exits after either.
    """
    proc = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           *(extra or ("--dump-dom",)), page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def screenshot(page: Path, profile: Path, target: Path) -> Path:
    open_page(page, profile, f"--screenshot={target}", "--window-size=1280,2000", "--hide-scrollbars")
    assert target.stat().st_size > 10_000
    return target
