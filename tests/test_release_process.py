"""scripts/release.py in a temporary clone of this repository: the version bump, the CHANGELOG section, the
annotated tag, and `cdkit init` of the new version pinning the Action to that tag's commit."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdkit.commands.init import ACTION_REPOSITORY_ENV
from tests.helpers import ROOT, cdkit, commit, git, make_repo
from tests.test_act import snapshot_of_this_repository

DATE = "2026-12-02"


def release(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(clone / "scripts" / "release.py"), *args], cwd=clone,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(clone.parent), "GIT_AUTHOR_NAME": "Rel",
                               "GIT_AUTHOR_EMAIL": "rel@example.com", "GIT_COMMITTER_NAME": "Rel",
                               "GIT_COMMITTER_EMAIL": "rel@example.com"},
                          capture_output=True, text=True)


def version_of(clone: Path) -> str:
    done = subprocess.run([sys.executable, "-c", "import cdkit; print(cdkit.__version__)"], cwd=clone,
                          env={"PYTHONPATH": str(clone)}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    repo, _base, _head = snapshot_of_this_repository(tmp_path / "cdkit")
    return repo


def next_version(clone: Path) -> str:
    major, minor, _patch = version_of(clone).split(".")
    return f"{major}.{int(minor) + 1}.0"


def test_a_release_bumps_the_version_moves_the_changelog_and_tags_the_commit(clone: Path, tmp_path: Path) -> None:
    version = next_version(clone)
    unreleased = (clone / "CHANGELOG.md").read_text().split("## Unreleased\n", 1)[1]
    done = release(clone, version, "--date", DATE)
    assert done.returncode == 0, done.stderr
    tag = f"v{version}"
    head = git(clone, "rev-parse", "HEAD")
    assert f"release: {tag} is commit {head}. Push it: git push origin HEAD {tag}" in done.stdout
    assert version_of(clone) == version
    assert git(clone, "log", "-1", "--format=%s") == f"Release {tag}"
    assert git(clone, "cat-file", "-t", tag) == "tag"  # annotated
    assert git(clone, "rev-parse", f"{tag}^{{commit}}") == head
    assert git(clone, "status", "--porcelain") == ""
    changelog = (clone / "CHANGELOG.md").read_text()
    assert f"## Unreleased\n\n## {tag} ({DATE})\n\n" + unreleased.strip() in changelog
    # What names the version follows it: the examples' Action tag and the pre-commit `rev:`.
    for example in (clone / "examples").glob("*.yml"):
        assert f"cdkit/cdkit@{tag} # zizmor: ignore[unpinned-uses] tag {tag}: pin its commit SHA" in \
            example.read_text(), example
    assert f"#     rev: {tag}\n" in (clone / ".pre-commit-hooks.yaml").read_text()

    # The released version's `cdkit init`, with that repository as "GitHub": the Action pinned to the tag's commit.
    bare = tmp_path / "cdkit.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(clone), str(bare)], check=True)
    user = make_repo(tmp_path / "user")
    init = subprocess.run([sys.executable, "-m", "cdkit", "init"], cwd=user, capture_output=True, text=True,
                          env={"PYTHONPATH": str(clone), "PATH": "/usr/bin:/bin", ACTION_REPOSITORY_ENV: str(bare)})
    assert init.returncode == 0, init.stderr
    assert f"uses: cdkit/cdkit@{head} # {tag}" in (user / ".github" / "workflows" / "cdkit.yml").read_text()


@pytest.mark.parametrize("attack", ["dirty tree", "not above", "not a version", "tag exists", "empty changelog"])
def test_a_release_that_must_not_happen_changes_nothing(clone: Path, attack: str) -> None:
    version = next_version(clone)
    expected = {
        "dirty tree": "the work tree has uncommitted changes",
        "not above": f"is not above the current version {version_of(clone)}",
        "not a version": "'v1.0' is not a version X.Y.Z",
        "tag exists": f"the tag v{version} exists already",
        "empty changelog": "CHANGELOG.md's `## Unreleased` section is empty",
    }[attack]
    args = [version]
    if attack == "dirty tree":
        (clone / "stray.txt").write_text("x")
    elif attack == "not above":
        args = [version_of(clone)]
    elif attack == "not a version":
        args = ["v1.0"]
    elif attack == "tag exists":
        git(clone, "tag", f"v{version}")
    else:
        text = (clone / "CHANGELOG.md").read_text()
        head, rest = text.split("## Unreleased\n", 1)
        commit(clone, {"CHANGELOG.md": head + "## Unreleased\n\n## v0.0.1 (2020-01-01)\n- old\n"}, "empty")
    before = git(clone, "rev-parse", "HEAD")
    done = release(clone, *args)
    assert done.returncode == 2 and expected in done.stderr and "nothing was changed" in done.stderr, done.stderr
    assert git(clone, "rev-parse", "HEAD") == before
    assert git(clone, "status", "--porcelain") == ("?? stray.txt" if attack == "dirty tree" else "")
    assert version_of(clone) != version or attack == "not above"
