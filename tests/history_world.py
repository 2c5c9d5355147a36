"""A repository with a deployment history whose DORA metrics are computed by hand (see EXPECTED).

Commits have set author dates; deployments go through the real `cdkit.release.deploy`
with the ledger's clock injected in this test process only: it reads START until the
deploy command has run (it touches $DEPLOY_MARK), then END. Stages run through the real
`cdkit run`, approvals through the real `cdkit approve` (by Bob, who wrote none of it).

T0 is Monday 2026-03-02 00:00 UTC; times below are offsets from it.

    commit  author date   subject                 deployment (start -> finish, +60 s)   outcome
    c0      T0 - 10d      init                    D1  T0              c0               success (baseline)
    c1      T0 + 1h       add a
    c2      T0 + 2h       add b                   D2  T0 + 3h         c2 (c1, c2)      success
    c3      T0 + 1d       feature                 D3  T0 + 1d 1h      c3               failure (deploy fails)
                                                  D4  T0 + 1d 2h      c3               success
    c4      T0 + 2d       fix: crash on start     D5  T0 + 2d 1h      c4 (a fix)       success
    c5      T0 + 3d       faster                  D6  T0 + 3d 30m     c5               success
                                                  D7  T0 + 3d 2h      c4 --rollback    success

By hand, for the window [T0, T0 + 7d):
- frequency: live D1 D2 D4 D5 D6 D7 = 6 in 7 days: 6/7 a day, 6 a week: "high" (weekly to daily).
- lead times (finish - first commit): c1 7260, c2 3660 (D2); c3 7260 (D4); c4 3660 (D5); c5 1860 (D6):
  median 3660, p90 (nearest rank 5 of 5) 7260.
- failures: D3 failed; D4 fixed by D5 (23 h later, within a day); D6 rolled back by D7: 3 of 7.
- restore: D3 (finished T0+1d1h1m) is not restored by D4 (which failed itself) but by D5 (T0+2d1h1m): 86400;
  D6 (T0+3d31m) by D7 (T0+3d2h1m): 5400. Median 45900, p90 86400.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cdkit.config import load
from cdkit.ledger import Ledger
from cdkit.release import ReleaseContext, deploy
from tests.helpers import allowed_signers, signing_env

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()
HOUR, DAY = 3600.0, 86400.0
NOW = T0 + 7 * DAY  # the clock `cdkit metrics` reads in these tests

DEPLOY = 'touch "$DEPLOY_MARK"; test ! -e "$DEPLOY_FAIL"'
PIPELINE = f"""version: 1
stages:
  - name: build
    run: "true"
  - name: test
    run: "true"
environments:
  - name: prod
    mode: delivery
    deploy: '{DEPLOY}'
"""

EXPECTED = {
    "deployment_frequency": {"deployments": 6, "days": 7.0, "per_day": round(6 / 7, 6),
                             "per_week": round(6 / 7 * 7, 6), "band": "high"},
    "lead_time_for_changes": {"changes": 5, "median_seconds": 3660.0, "p90_seconds": 7260.0},
    "change_failure_rate": {"deployments": 7, "failed": 3, "rate": round(3 / 7, 6)},
    "time_to_restore": {"restores": 2, "median_seconds": 45900.0, "p90_seconds": 86400.0},
}


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GITHUB_", "CDKIT"))
           and k not in ("GH_TOKEN",)}
    env.update({"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
                "GIT_AUTHOR_NAME": "Ada Author", "GIT_AUTHOR_EMAIL": "ada@example.com",
                "GIT_COMMITTER_NAME": "Ada Author", "GIT_COMMITTER_EMAIL": "ada@example.com", "NO_COLOR": "1"})
    return env


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout.strip()


@dataclass
class World:
    repo: Path
    env: dict[str, str]
    shas: dict[str, str]  # c0..c5
    deployments: list[int]  # ledger ids D1..D7

    def ledger(self, clock: Callable[[], float] | None = None) -> Ledger:
        return Ledger(self.repo / ".git" / "cdkit" / "ledger.sqlite3", **({"clock": clock} if clock else {}))


class DeployClock:
    """START until the deploy command touched the mark, END after: a deployment at set times."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark
        self.start = self.end = 0.0

    def __call__(self) -> float:
        return self.end if self.mark.exists() else self.start


def build(tmp: Path) -> World:
    home = tmp / "home"
    home.mkdir()
    repo = tmp / "repo"
    repo.mkdir()
    env = base_env(home)
    run(["git", "init", "-q", "-b", "main"], repo, env)
    (repo / ".cdkit.yml").write_text(PIPELINE)
    for name, text in allowed_signers("bob@example.com").items():  # Bob signs his approvals
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text(text)
    shas: dict[str, str] = {}
    for name, when, subject in [("c0", T0 - 10 * DAY, "init"), ("c1", T0 + HOUR, "add a"), ("c2", T0 + 2 * HOUR, "add b"),
                                ("c3", T0 + DAY, "feature"), ("c4", T0 + 2 * DAY, "fix: crash on start"),
                                ("c5", T0 + 3 * DAY, "faster")]:
        (repo / f"{name}.txt").write_text(name)
        run(["git", "add", "-A"], repo, env)
        dated = {**env, "GIT_AUTHOR_DATE": f"@{int(when)} +0000", "GIT_COMMITTER_DATE": f"@{int(when)} +0000"}
        run(["git", "commit", "-q", "-m", subject], repo, dated)
        shas[name] = run(["git", "rev-parse", "HEAD"], repo, env)
    bob = {**env, "GIT_COMMITTER_NAME": "Bob Reviewer", "GIT_COMMITTER_EMAIL": "bob@example.com",
           **signing_env("bob@example.com")}
    for name in ("c0", "c2", "c3", "c4", "c5"):
        run([sys.executable, "-m", "cdkit", "run", "--head", shas[name]], repo, env)

    def approve(name: str) -> None:
        """Bob approves once prod runs what comes before (the range his approval is judged by)."""
        run([sys.executable, "-m", "cdkit", "approve", shas[name], "--env", "prod", "--comment", f"ok {name}"],
            repo, bob)

    approved = {"c0"}
    approve("c0")  # the root commit: its range is itself, though prod ran nothing before
    mark, fail = tmp / "deployed", tmp / "fail"
    clock = DeployClock(mark)
    world = World(repo, env, shas, [])
    pipeline = load(repo / ".cdkit.yml")
    plan = [("c0", 0.0, False, False), ("c2", 3 * HOUR, False, False), ("c3", DAY + HOUR, True, False),
            ("c3", DAY + 2 * HOUR, False, False), ("c4", 2 * DAY + HOUR, False, False),
            ("c5", 3 * DAY + 30 * 60, False, False), ("c4", 3 * DAY + 2 * HOUR, False, True)]
    # In this process too, git sees the test's identity (module fixtures run before conftest's).
    with pytest.MonkeyPatch.context() as patch, world.ledger(clock) as ledger:
        for key in [k for k in os.environ if k.startswith(("GIT_", "GITHUB_"))]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        ctx = ReleaseContext(root=repo, cdkit_dir=repo / ".git" / "cdkit", pipeline=pipeline, ledger=ledger,
                             environ={**env, "DEPLOY_MARK": str(mark), "DEPLOY_FAIL": str(fail)})
        failed: set[str] = set()
        for name, offset, fails, rollback in plan:
            mark.unlink(missing_ok=True)
            fail.unlink(missing_ok=True)
            if fails:
                fail.touch()
            clock.start, clock.end = T0 + offset, T0 + offset + 60
            # A SHA whose deploy failed is quarantined: deploying it again is a person's decision, with a reason.
            force = "retried by hand after its deploy failed" if name in failed else None
            if name not in approved:
                approved.add(name)
                approve(name)
            result = deploy(ctx, "prod", shas[name], rollback=rollback, force=force)
            if fails:
                failed.add(name)
            assert result.ok != fails, result
            assert result.deployment_id is not None
            world.deployments.append(result.deployment_id)
    return world
