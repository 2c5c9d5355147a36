"""`paths` filters: compiled matchers agree with the pattern-by-pattern rule, and a change that
reaches a stage's paths through a tracked symlink runs the stage (real repositories)."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from cdkit.globs import Matcher, SortedFiles, glob_match
from tests.helpers import cdkit, commit, config, git

PIECES = ["src", "lib", "docs", "a", "b.py", "c.md", "x", "gen", "tests"]
PATTERNS = ["src/**", "!src/gen/**", "**/*.py", "docs/*.md", "*.md", "lib/", "a/?/b.py", "[ab]/**", "!**/tests/**",
            "src/gen/keep.py", "x/**/c.md", "**"]


def reference(patterns: list[str], path: str) -> bool:
    """The rule as written: patterns in order, the last one that matches decides."""
    keep = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if keep and glob_match(pattern[1:], path):
                keep = False
        elif not keep and glob_match(pattern, path):
            keep = True
    return keep


def test_the_compiled_matcher_agrees_with_the_rule_and_finds_the_first_match() -> None:
    rng = random.Random(12)
    paths = sorted({"/".join(rng.choice(PIECES) for _ in range(rng.randint(1, 4))) for _ in range(400)})
    files = SortedFiles(reversed(paths))
    for _ in range(300):
        patterns = rng.sample(PATTERNS, rng.randint(1, 4))
        matcher = Matcher(patterns)
        expected = [p for p in paths if reference(patterns, p)]
        assert matcher.matching(paths) == expected, patterns
        assert matcher.first_match(files) == (expected[0] if expected else None), patterns


def test_an_empty_change_set_and_no_patterns_match_nothing() -> None:
    assert Matcher(["src/**"]).first_match(SortedFiles([])) is None
    assert Matcher([]).first_match(SortedFiles(["src/a"])) is None


PIPELINE = config("""
    version: 1
    stages:
      - {name: api, run: 'true', paths: ['src/**'], needs: []}
      - {name: docs, run: 'true', paths: ['docs/**'], needs: []}
""")


@pytest.fixture
def linked(repo: Path) -> Path:
    """lib/ holds the code; src/ reaches it through a file link and a directory link, and one
    link points outside the repository."""
    commit(repo, {".cdkit.yml": PIPELINE, "lib/x.py": "x = 1\n", "lib/deep/y.py": "y = 1\n", "docs/a.md": "a\n"})
    (repo / "src").mkdir()
    os.symlink("../lib/x.py", repo / "src" / "one.py")
    os.symlink("../lib/deep", repo / "src" / "deep")
    os.symlink("/etc", repo / "src" / "outside")
    os.symlink("loop", repo / "src" / "loop")
    commit(repo, message="links")
    return repo


def plan(repo: Path) -> dict[str, str]:
    result = cdkit("plan", "--base", "HEAD~", "--head", "HEAD", "--json", cwd=repo)
    assert result.returncode == 0, result.stderr
    return {s["name"]: ("run: " if s["runs"] else "skip: ") + s["reason"] for s in json.loads(result.stdout)["stages"]}


def test_a_change_to_a_file_a_symlink_points_at_runs_the_stage(linked: Path) -> None:
    commit(linked, {"lib/x.py": "x = 2\n"})
    stages = plan(linked)
    assert stages["api"] == "run: paths matched src/one.py (through a symlink)"
    assert stages["docs"].startswith("skip: paths did not match")  # control: nothing reaches docs/


def test_a_change_under_a_symlinked_directory_runs_the_stage(linked: Path) -> None:
    commit(linked, {"lib/deep/y.py": "y = 2\n"})
    assert plan(linked)["api"] == "run: paths matched src/deep/y.py (through a symlink)"


def test_a_change_no_link_reaches_still_skips(linked: Path) -> None:
    commit(linked, {"docs/a.md": "b\n", "elsewhere.txt": "e\n"})
    stages = plan(linked)
    assert stages["api"].startswith("skip: paths did not match any of 2 changed file(s)")
    assert stages["docs"] == "run: paths matched docs/a.md"


def test_cdkit_run_runs_a_stage_reached_through_a_symlink(linked: Path) -> None:
    commit(linked, {"lib/x.py": "x = 3\n"})
    git(linked, "status")  # the tree is clean: the run is in place
    result = cdkit("run", "--base", "HEAD~", cwd=linked)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "api" in result.stdout and "passed" in result.stdout
    log = json.loads(cdkit("log", "--json", cwd=linked).stdout)["runs"]
    assert {s["name"]: s["status"] for s in log[0]["stages"]} == {"api": "passed", "docs": "skipped"}
