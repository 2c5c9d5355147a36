from __future__ import annotations

import compileall
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import ROOT, make_repo

if TYPE_CHECKING:
    from tests.fake_github import FakeGitHub


def pytest_configure(config: pytest.Config) -> None:
    """Compile cdkit's modules to bytecode once, before any worker starts.

    Tests run the real CLI (`python -m cdkit ...`) well over a thousand times (280 in four files).
    An editable install has no bytecode, and under PYTHONDONTWRITEBYTECODE (set on this project's
    machines) Python never writes any, so each of those processes compiled 13,000 lines of cdkit
    again: 40 to 60 ms apiece. A release from PyPI ships compiled; this makes the tests' cdkit start like it.
    Python checks each file's size and mtime against its source, so an edit is never run stale.
    """
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist), not each worker
        compileall.compile_dir(str(ROOT / "cdkit"), quiet=1)


GIT_CONFIG = """\
[maintenance]
\tauto = false
[gc]
\tauto = 0
"""


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Pinned identity, no user or system git config, no colour: every test sees the same world."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    # After every commit git starts `git maintenance run --auto` (one more process, ~230 per 100 tests)
    # that never has anything to do in a test's small repository.
    (home / ".gitconfig").write_text(GIT_CONFIG)
    for key, value in {
        "GIT_AUTHOR_NAME": "Ada Author", "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada Author", "GIT_COMMITTER_EMAIL": "ada@example.com",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NO_COLOR", "1")
    for key in ISOLATION_DROPPED:
        monkeypatch.delenv(key, raising=False)


ISOLATION_DROPPED = ("CDKIT_SKIP", "CDKIT", "GITHUB_TOKEN", "GH_TOKEN", "GITHUB_ACTIONS", "GITHUB_REPOSITORY",
                     "GITHUB_API_URL", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_EVENT_NAME",
                     "GITHUB_EVENT_PATH")


@dataclass(frozen=True)
class DemoRun:
    result: subprocess.CompletedProcess[str]
    cwd_before: list[Path]
    cwd_after: list[Path]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One `cdkit demo` per test process, read by each test about the demo (it takes ~15 s).

    The tests that read it share an xdist group, so a parallel run makes one. Run as
    `_isolated_git` isolates a test: its own HOME, no git config, no colour, no token.
    """
    home, cwd = tmp_path_factory.mktemp("demo-home"), tmp_path_factory.mktemp("demo-cwd")
    env = {k: v for k, v in os.environ.items() if k not in ISOLATION_DROPPED}
    env.update({"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
                "NO_COLOR": "1", "GIT_AUTHOR_NAME": "Ada Author", "GIT_AUTHOR_EMAIL": "ada@example.com",
                "GIT_COMMITTER_NAME": "Ada Author", "GIT_COMMITTER_EMAIL": "ada@example.com"})
    before = sorted(cwd.iterdir())
    result = subprocess.run([sys.executable, "-m", "cdkit", "demo"], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    return DemoRun(result, before, sorted(cwd.iterdir()))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    """A running fake GitHub API (`.url` for GITHUB_API_URL); fails the test on a request GitHub would reject."""
    from tests.fake_github import FakeGitHub

    server = FakeGitHub().start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.invalid, "requests that do not match GitHub's OpenAPI description:\n" + "\n".join(server.invalid)
