"""Network calls never hang (issue 9 §6): every GitHub request and every `git fetch` has a timeout,
and the time they may lose is bounded by `max-wait`. Each hang is paired with a control that
goes through when the network answers. No wall-clock limit is asserted: a hang would show as
the subprocess guard in `tests.helpers.cdkit` tripping, which fails the test."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cdkit.util import CommandTimedOut, cmd_output_b
from tests.fake_github import FakeGitHub
from tests.helpers import commit, git, make_bare, make_repo
from tests.test_action import push_payload, run_action
from tests.test_evidence import ci, deploy_job, deployed, pipeline


@pytest.mark.parametrize("hangs", [True, False])
def test_a_github_that_hangs_fails_the_gate_closed_within_max_wait(
        tmp_path: Path, fake_github: FakeGitHub, hangs: bool) -> None:
    repo = make_repo(tmp_path / "repo")
    base = commit(repo, {".cdkit.yml": pipeline()}, "first")
    head = commit(repo, {"b.txt": "b"}, "second")
    assert ci(repo, fake_github, base, head).proc.returncode == 0
    if hangs:
        fake_github.hold()  # every request from now on waits for an answer that never comes
    fake_github.requests.clear()
    try:
        run = deploy_job(repo, fake_github, base, head, extra={"INPUT_MAX_WAIT": "2"})
    finally:
        fake_github.release()
    if hangs:
        assert run.proc.returncode == 1, run.proc.stdout + run.proc.stderr
        assert "GitHub unreachable or failing" in run.proc.stderr or "no wait budget left" in run.proc.stderr, \
            run.proc.stderr
        assert "Traceback" not in run.proc.stderr
        assert not fake_github.state.extra.get("deployments")
        # One attempt of at most max-wait, then no budget for another: not 4 tries of 15 s each.
        assert len(fake_github.requests) == 1, [(r.method, r.path) for r in fake_github.requests]
    else:
        assert deployed(run), run.proc.stdout + run.proc.stderr


@pytest.mark.parametrize("hangs", [True, False])
def test_a_git_fetch_that_hangs_fails_closed_within_max_wait(tmp_path: Path, hangs: bool) -> None:
    origin = make_bare(tmp_path / "origin.git")
    work = make_repo(tmp_path / "work")
    first = commit(work, {".cdkit.yml": pipeline(environments=())}, "first")
    git(work, "push", "-q", str(origin), "main")
    runner = tmp_path / "runner" / "repo"
    runner.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(origin), str(runner)], check=True)
    before = commit(work, {"b.txt": "b"}, "pushed before, missing from the checkout")
    git(work, "push", "-q", str(origin), "main")
    git(runner, "checkout", "-q", "--detach", first)
    after = commit(runner, {"c.txt": "c"}, "the pushed commit")  # its parent is `first`: a rewrite
    env = {"INPUT_MAX_WAIT": "2"}
    if hangs:  # origin now answers through an ssh that never returns
        git(runner, "remote", "set-url", "origin", "ssh://git@example.invalid/octo-org/octo-repo.git")
        env["GIT_SSH_COMMAND"] = "sleep 600"
    run = run_action(runner, "push", push_payload(before, after), sha=after, env=env)
    assert "Traceback" not in run.proc.stderr
    if hangs:
        assert run.proc.returncode == 1, run.proc.stdout + run.proc.stderr
        assert "fetching from origin took the whole wait budget (2s, input max-wait): failing closed" \
            in run.proc.stderr or f"{before} is not in this checkout and could not be fetched" in run.proc.stderr
    else:
        assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
        assert "rewritten history" in run.proc.stdout


def test_a_command_that_outlives_its_timeout_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(CommandTimedOut):
        cmd_output_b("sh", "-c", f'sleep 600 & echo $! > "{pid_file}"; wait', timeout=0.5)
    pid = int(pid_file.read_text())
    _wait_until_gone(pid)
    assert cmd_output_b("sh", "-c", "echo fine", timeout=30) == (0, b"fine\n", b"")  # the control


def _wait_until_gone(pid: int) -> None:
    """Until the process is gone (killed, then reaped by init): the test fails by its guard otherwise."""
    import time

    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(") ")[-1].startswith("Z"):
                return  # killed; only init's reaping is left
        time.sleep(0.05)


@pytest.mark.parametrize("value, ok", [("soon", False), ("-1", False), ("nan", False), ("30", True)])
def test_max_wait_input_is_checked(tmp_path: Path, value: str, ok: bool) -> None:
    repo = make_repo(tmp_path / "repo")
    head = commit(repo, {".cdkit.yml": pipeline(environments=())}, "first")
    run = run_action(repo, "push", push_payload("0" * 40, head), sha=head, env={"INPUT_MAX_WAIT": value})
    if ok:
        assert run.proc.returncode == 0, run.proc.stderr
    else:
        assert run.proc.returncode == 2 and f"input max-wait={value!r} is not a number of seconds from 0 to 3600" \
            in run.proc.stderr
