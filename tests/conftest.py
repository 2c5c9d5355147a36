from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import make_repo

if TYPE_CHECKING:
    from tests.fake_github import FakeGitHub


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Pinned identity, no user or system git config, no colour: every test sees the same world."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for key, value in {
        "GIT_AUTHOR_NAME": "Ada Author", "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada Author", "GIT_COMMITTER_EMAIL": "ada@example.com",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NO_COLOR", "1")
    for key in ("CDKIT_SKIP", "CDKIT", "GITHUB_TOKEN", "GH_TOKEN", "GITHUB_ACTIONS", "GITHUB_REPOSITORY",
                "GITHUB_API_URL", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_EVENT_NAME", "GITHUB_EVENT_PATH"):
        monkeypatch.delenv(key, raising=False)


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
