"""What the console says at a glance: whether a run can count for a release, and what `status` counts."""
from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cdkit, commit

PIPELINE = "version: 1\nstages:\n  - {name: lint, run: 'true'}\n  - {name: test, run: 'true', needs: []}\n"


def headline(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("run #"))


def test_a_run_that_cannot_count_for_a_release_says_so_in_its_summary_line(repo: Path) -> None:
    sha = commit(repo, {".cdkit.yml": PIPELINE})
    full = cdkit("run", cwd=repo)
    assert full.returncode == 0 and headline(full.stdout) == f"run #1 passed on {sha[:12]}"  # the control
    assert json.loads(cdkit("run", "--json", cwd=repo).stdout)["does_not_count"] == []

    selected = cdkit("run", "--stage", "test", cwd=repo)
    assert headline(selected.stdout).endswith("(does not count for a release: --stage left out lint)")
    skipped = cdkit("run", cwd=repo, env={"CDKIT_SKIP": "lint"})
    assert headline(skipped.stdout).endswith("(does not count for a release: CDKIT_SKIP skipped lint)")
    (repo / "scratch.txt").write_text("not committed\n")
    dirty = cdkit("run", cwd=repo)
    assert "(does not count for a release: uncommitted changes" in headline(dirty.stdout)
    doc = json.loads(cdkit("run", "--json", cwd=repo, env={"CDKIT_SKIP": "lint"}).stdout)
    assert len(doc["does_not_count"]) == 2


def test_status_shows_results_that_do_not_count_apart(repo: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE.replace("{name: test, run: 'true'", "{name: test, run: 'test -e fixed'")})
    (repo / "fixed").write_text("only in the work tree\n")
    assert cdkit("run", cwd=repo).returncode == 0  # passes, but only thanks to an uncommitted file
    text = cdkit("status", cwd=repo).stdout
    _, _, counted = text.partition("results that count for a release")
    counted, _, uncounted = counted.partition("not counted for a release")
    assert "test  no result" in counted and "passed" not in counted  # no "passed" beside "has no result"
    assert "✓ test  passed" in uncounted and "✓ lint  passed" in uncounted
    assert json.loads(cdkit("status", "--json", cwd=repo).stdout)["counted"] == []

    (repo / "fixed").unlink()
    commit(repo, {"fixed": "committed\n"})
    sha = commit(repo, {})
    assert cdkit("run", cwd=repo).returncode == 0
    text = cdkit("status", sha, cwd=repo).stdout  # the control: a clean run counts, nothing is apart
    assert "✓ test  passed" in text and "✓ lint  passed" in text and "not counted" not in text
