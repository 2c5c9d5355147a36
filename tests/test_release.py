"""Deploy gates on real repositories and a real ledger (RELIABILITY.md §F, issue 6).

Every deploy goes through the real `cdkit` CLI or `cdkit.release.deploy`; the deploy
commands are shell snippets that append what they were given to a file.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdkit.config import load
from cdkit.errors import GateFailed
from cdkit.ledger import Ledger
from cdkit.release import ReleaseContext, deploy
from tests.conftest import DemoRun
from tests.helpers import adopt_new, allowed_signers, cdkit, commit, config, git, make_repo, signing_env

BOB = {"GIT_COMMITTER_NAME": "Bob Reviewer", "GIT_COMMITTER_EMAIL": "bob@example.com",
       **signing_env("bob@example.com")}  # Bob signs his approvals; the repository lists his key

# Each deploy appends "ENV SHA ID ROLLBACK" to $DEPLOY_LOG; with $HOLD set it waits for that file to exist.
DEPLOY = ('echo "deploying to $CDKIT_ENVIRONMENT"; echo "$CDKIT_ENVIRONMENT $CDKIT_SHA $CDKIT_DEPLOYMENT_ID $CDKIT_ROLLBACK" >> "$DEPLOY_LOG"; '
          'if [ -n "$HOLD" ]; then echo $$ > "$HOLD.pid"; touch "$HOLD.started"; while [ ! -e "$HOLD" ]; do sleep 0.05; done; fi; '
          'test ! -e "$DEPLOY_FAIL"')

PIPELINE = config(f"""
    version: 1
    stages:
      - name: build
        run: test ! -e fail-build
      - name: test
        run: "true"
    environments:
      - name: staging
        mode: deployment
        deploy: '{DEPLOY}'
      - name: prod
        mode: delivery
        deploy: '{DEPLOY}'
""")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = make_repo(tmp_path / "repo")
    monkeypatch.setenv("DEPLOY_LOG", str(tmp_path / "deploys.txt"))
    monkeypatch.setenv("DEPLOY_FAIL", str(tmp_path / "deploy-fails"))
    monkeypatch.delenv("HOLD", raising=False)
    commit(repo, {".cdkit.yml": PIPELINE, "app.txt": "1\n", **allowed_signers("bob@example.com")}, "first")
    return repo


def deploys(repo: Path) -> list[list[str]]:
    log = Path(os.environ["DEPLOY_LOG"])
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def ledger_of(repo: Path, **kw: object) -> Ledger:
    return Ledger(repo / ".git" / "cdkit" / "ledger.sqlite3", **kw)  # type: ignore[arg-type]


def run_ok(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = cdkit("run", *args, cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaped yet has ended: its descriptors are closed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < end, f"process {pid} never ended"
        time.sleep(0.05)


def wait_for(path: Path, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


# --- deployment mode ---------------------------------------------------------------------------


def test_run_deploy_on_the_release_branch_deploys_the_deployment_environments_in_order(world: Path) -> None:
    sha = git(world, "rev-parse", "HEAD")
    result = run_ok(world, "--deploy")
    assert [d[:2] for d in deploys(world)] == [["staging", sha]]
    assert "prod is in delivery mode" in result.stdout
    with ledger_of(world) as ledger:
        record = ledger.current_deployment("staging")
        assert record is not None and record["sha"] == sha and record["approval"] is None
        assert Path(record["log_path"]).read_text() == "deploying to staging\n"


def test_a_plain_run_never_deploys_and_says_what_deploy_would_do(world: Path) -> None:
    sha = git(world, "rev-parse", "HEAD")
    result = run_ok(world)
    assert (f"cdkit: nothing deployed (a plain `cdkit run` never deploys); `cdkit run --deploy` on a clean main "
            f"would deploy {sha[:12]} to staging, each gate checked again") in result.stdout
    data = json.loads(run_ok(world, "--json").stdout)
    assert data["deployments"] == [] and data["would_deploy"] == ["staging"]
    assert deploys(world) == []
    run_ok(world, "--deploy")  # the control: asked for, it deploys
    assert [d[:2] for d in deploys(world)] == [["staging", sha]]


@pytest.mark.parametrize("limit", ["--stage", "CDKIT_SKIP", "--trigger", "dirty", "--head", "off the branch"])
def test_run_deploy_refuses_a_run_that_would_not_count_before_running_anything(world: Path, limit: str) -> None:
    args: list[str] = []
    env: dict[str, str] = {}
    if limit == "--stage":
        args = ["--stage", "build"]
    elif limit == "CDKIT_SKIP":
        env = {"CDKIT_SKIP": "test"}
    elif limit == "--trigger":
        args = ["--trigger", "pre-push"]
    elif limit == "dirty":
        (world / "app.txt").write_text("uncommitted\n")
    elif limit == "--head":
        args = ["--head", "HEAD"]
    else:
        git(world, "checkout", "-q", "-b", "feature")
    result = cdkit("run", "--deploy", *args, cwd=world, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--deploy releases only a complete run of the clean release branch:" in result.stderr
    with ledger_of(world) as ledger:
        assert ledger.recent_runs() == []  # nothing ran
    assert deploys(world) == []


def test_no_deploy_off_the_release_branch_or_from_a_dirty_tree(world: Path) -> None:
    git(world, "checkout", "-q", "-b", "feature")
    commit(world, {"app.txt": "2\n"})
    assert "nothing deployed" not in run_ok(world).stdout  # nothing --deploy could release here either
    git(world, "checkout", "-q", "main")
    (world / "app.txt").write_text("dirty\n")
    assert "nothing deployed" not in run_ok(world).stdout
    assert deploys(world) == []


def test_run_json_lists_the_deployments(world: Path) -> None:
    result = cdkit("run", "--deploy", "--json", cwd=world)
    data = json.loads(result.stdout)
    assert [(d["environment"], d["status"]) for d in data["deployments"]] == [("staging", "success")]


def test_failed_deploy_command_is_recorded_and_fails_the_run(world: Path, tmp_path: Path) -> None:
    (tmp_path / "deploy-fails").touch()
    result = cdkit("run", "--deploy", cwd=world)
    assert result.returncode == 1
    assert "deployment #1 to staging: failure (the deploy command exited with 1)" in result.stdout
    with ledger_of(world) as ledger:
        assert [d["status"] for d in ledger.deployments()] == ["failure"]
        assert ledger.current_deployment("staging") is None


# --- stages must have passed: every entry point -------------------------------------------------


def test_no_entry_point_deploys_a_sha_whose_stages_did_not_all_pass(world: Path) -> None:
    sha = commit(world, {"fail-build": ""}, "break the build")
    # deployment-mode `cdkit run` on the release branch: the run fails, nothing deploys.
    assert cdkit("run", cwd=world).returncode == 1
    # `cdkit deploy`: refused, naming the failed stage and the skipped one.
    result = cdkit("deploy", "--env", "staging", "--sha", sha, cwd=world)
    assert result.returncode == 1
    assert f"refusing to deploy {sha[:12]} to staging:" in result.stderr
    assert "stage 'build' failed on" in result.stderr
    assert "stage 'test' skipped on" in result.stderr
    # Approved for prod by someone else still does not let it through.
    assert cdkit("deploy", "--env", "prod", "--sha", sha, "--rollback", cwd=world).returncode == 1
    # The Python entry point for automatic releases, even if told the pipeline passed.
    pipeline = load(world / ".cdkit.yml")
    with ledger_of(world) as ledger:
        ctx = ReleaseContext(root=world, cdkit_dir=world / ".git" / "cdkit", pipeline=pipeline, ledger=ledger)
        from cdkit.release import after_pipeline

        results = after_pipeline(ctx, sha=sha, ref="refs/heads/main", passed=True)
        assert [r.status for r in results] == ["refused"]
        assert ledger.deployments() == []
    assert deploys(world) == []


def test_stages_never_run_or_run_on_a_dirty_tree_do_not_count(world: Path) -> None:
    sha = git(world, "rev-parse", "HEAD")
    result = cdkit("deploy", "--env", "staging", cwd=world)
    assert result.returncode == 1
    assert f"stage 'build' has no result for {sha[:12]} (run the pipeline on that commit: cdkit run --head" \
        in result.stderr
    (world / "untracked.txt").write_text("x")
    git(world, "checkout", "-q", "-b", "side")  # off the release branch: no auto deploy
    run_ok(world)  # a dirty run of HEAD
    result = cdkit("deploy", "--env", "staging", "--sha", sha, cwd=world)
    assert result.returncode == 1 and "has no result" in result.stderr


def test_a_later_failure_of_the_same_sha_wins_over_an_earlier_pass(world: Path) -> None:
    git(world, "checkout", "-q", "-b", "side")
    sha = git(world, "rev-parse", "HEAD")
    run_ok(world)
    with ledger_of(world) as ledger:
        run_id = ledger.start_run(trigger="ci", event="run", sha=sha, base_sha=None, ref=None)
        ledger.record_stage(run_id, "test", status="failed", reason="exit code 1")
        ledger.finish_run(run_id, "failed")
    git(world, "checkout", "-q", "main")
    result = cdkit("deploy", "--env", "staging", "--sha", sha, cwd=world)
    assert result.returncode == 1 and "stage 'test' failed" in result.stderr


# --- delivery mode (local approvals) -----------------------------------------------------------


def test_delivery_waits_refuses_self_approval_then_deploys_with_a_second_persons_approval(world: Path) -> None:
    adopt_new(world, "prod")  # a new prod: its first release holds the whole history, on purpose
    sha = git(world, "rev-parse", "HEAD")
    run_ok(world, "--deploy")
    waiting = cdkit("deploy", "--env", "prod", cwd=world)
    assert waiting.returncode == 1
    assert f"{sha[:12]} is not approved for prod: needs 1 approval(s) of {sha[:12]}, has 0" in waiting.stderr
    assert f"cdkit approve {sha[:12]} --env prod" in waiting.stderr

    own = cdkit("approve", sha, "--env", "prod", cwd=world)
    assert own.returncode == 1
    assert own.stderr == (f"cdkit: refusing the approval of {sha[:12]} for prod: Ada Author <ada@example.com>'s "
                          "approval does not count: Ada Author <ada@example.com> authored or committed a commit "
                          "being released, so cannot approve it (someone else must approve it)\n")

    ok = cdkit("approve", sha[:10], "--env", "prod", "--comment", "ship it", cwd=world, env=BOB)
    assert ok.returncode == 0, ok.stderr
    assert f"Bob Reviewer <bob@example.com> approved {sha[:12]} for prod" in ok.stdout

    done = cdkit("deploy", "--env", "prod", "--json", cwd=world)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "success" and data["sha"] == sha and not data["rollback"]
    assert data["approval"]["counted"][0]["who"] == "Bob Reviewer <bob@example.com>"
    assert data["approval"]["counted"][0]["comment"] == "ship it"
    assert deploys(world)[-1] == ["prod", sha, str(data["deployment_id"]), "0"]

    approvals = json.loads(cdkit("approvals", "--env", "prod", "--json", cwd=world).stdout)["approvals"]
    assert [(a["approver"], a["via"], a["comment"]) for a in approvals] == \
        [("Bob Reviewer <bob@example.com>", "local", "ship it")]


def test_approval_of_an_earlier_commit_does_not_carry_over(world: Path) -> None:
    adopt_new(world, "prod")  # a new prod: its first release holds the whole history, on purpose
    first = git(world, "rev-parse", "HEAD")
    run_ok(world)
    assert cdkit("approve", first, "--env", "prod", cwd=world, env=BOB).returncode == 0
    second = commit(world, {"app.txt": "2\n"})
    run_ok(world)
    result = cdkit("deploy", "--env", "prod", "--sha", second, cwd=world)
    assert result.returncode == 1
    assert f"{second[:12]} is not approved for prod" in result.stderr


def test_approver_who_committed_in_the_released_range_is_refused(world: Path) -> None:
    adopt_new(world, "prod")  # a new prod: its first release holds the whole history, on purpose
    commit(world, {"app.txt": "bob\n"})
    bob_commit = subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "by bob"], cwd=world,
                                env={**os.environ, **BOB})
    assert bob_commit.returncode == 0
    sha = git(world, "rev-parse", "HEAD")
    result = cdkit("approve", sha, "--env", "prod", cwd=world, env=BOB)
    assert result.returncode == 1 and "authored or committed a commit being released" in result.stderr


def test_approve_refuses_deployment_environments_and_unknown_ones(world: Path) -> None:
    result = cdkit("approve", "HEAD", "--env", "staging", cwd=world, env=BOB)
    assert result.returncode == 2 and "staging is in deployment mode" in result.stderr
    result = cdkit("approve", "HEAD", "--env", "prdo", cwd=world, env=BOB)
    assert result.returncode == 2
    assert "no environment 'prdo' in" in result.stderr and "(environments: staging, prod)" in result.stderr


# --- release branch and promotion order ---------------------------------------------------------


def test_sha_not_on_the_release_branch_is_refused(world: Path) -> None:
    git(world, "checkout", "-q", "-b", "feature")
    sha = commit(world, {"app.txt": "feature\n"})
    run_ok(world)
    result = cdkit("deploy", "--env", "staging", "--sha", sha, cwd=world)
    assert result.returncode == 1
    assert f"{sha[:12]} is not on the release branch 'main'; merge it into main first" in result.stderr


def test_later_environment_needs_the_earlier_one_to_have_it(world: Path) -> None:
    adopt_new(world, "prod")  # a new prod: its first release holds the whole history, on purpose
    sha = git(world, "rev-parse", "HEAD")
    git(world, "checkout", "-q", "-b", "side")
    run_ok(world)  # stages pass, nothing auto-deployed (not on main)
    git(world, "checkout", "-q", "main")
    assert cdkit("approve", sha, "--env", "prod", cwd=world, env=BOB).returncode == 0
    result = cdkit("deploy", "--env", "prod", "--sha", sha, cwd=world)
    assert result.returncode == 1
    assert (f"prod comes after staging, which has not run {sha[:12]} yet; deploy it there first "
            f"(cdkit deploy --env staging --sha {sha[:12]})") in result.stderr
    assert cdkit("deploy", "--env", "staging", "--sha", sha, cwd=world).returncode == 0
    assert cdkit("deploy", "--env", "prod", "--sha", sha, cwd=world).returncode == 0


# --- older SHAs and rollback ---------------------------------------------------------------------


def test_older_sha_refused_unless_explicit_rollback_which_is_recorded(world: Path) -> None:
    old = git(world, "rev-parse", "HEAD")
    run_ok(world, "--deploy")
    new = commit(world, {"app.txt": "2\n"})
    run_ok(world, "--deploy")
    assert [d[:2] for d in deploys(world)] == [["staging", old], ["staging", new]]

    refused = cdkit("deploy", "--env", "staging", "--sha", old, cwd=world)
    assert refused.returncode == 1
    assert (f"{old[:12]} is older than what staging runs ({new[:12]}); deploying it would roll staging back: "
            "pass --rollback to do that on purpose") in refused.stderr

    back = cdkit("deploy", "--env", "staging", "--sha", old, "--rollback", "--json", cwd=world)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["rollback"] is True
    assert deploys(world)[-1][::3] == ["staging", "1"]
    with ledger_of(world) as ledger:
        current = ledger.current_deployment("staging")
        assert current is not None and current["sha"] == old and current["rollback"] == 1
        assert any(f"explicit rollback of staging from {new[:12]} to {old[:12]}" in what
                   for _, what in ledger.audit_lines())
    envs = json.loads(cdkit("environments", "--json", cwd=world).stdout)["environments"]
    assert envs[0]["sha"] == old and envs[0]["rollback"] is True


def test_rerun_of_an_old_deploy_is_a_rollback_refused_unless_confirmed(world: Path) -> None:
    """Re-running the deploy of A after B shipped (an old workflow re-run) is the same request: refused."""
    a = git(world, "rev-parse", "HEAD")
    run_ok(world, "--deploy")
    commit(world, {"app.txt": "2\n"})
    run_ok(world, "--deploy")
    with ledger_of(world) as ledger:
        first = ledger.deployments(environment="staging")[0]
    rerun = cdkit("deploy", "--env", first["environment"], "--sha", first["sha"], cwd=world)
    assert rerun.returncode == 1 and "would roll staging back" in rerun.stderr
    assert cdkit("deploy", "--env", "staging", "--sha", a, "--rollback", cwd=world).returncode == 0


def test_deploying_what_already_runs_is_a_no_op(world: Path) -> None:
    run_ok(world, "--deploy")
    result = cdkit("deploy", "--env", "staging", "--json", cwd=world)
    assert result.returncode == 0
    assert json.loads(result.stdout)["status"] == "unchanged"
    assert len(deploys(world)) == 1


# --- concurrency, crashes, cancellation ----------------------------------------------------------


def _start_held_deploy(world: Path, hold: Path, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "cdkit", "deploy", "--env", "staging", *args], cwd=world,
                            env={**os.environ, "HOLD": str(hold)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for(Path(f"{hold}.started"))
    return proc


def test_two_deploys_at_once_one_is_refused(world: Path, tmp_path: Path) -> None:
    git(world, "checkout", "-q", "-b", "side")
    run_ok(world)
    git(world, "checkout", "-q", "main")
    hold = tmp_path / "hold"
    first = _start_held_deploy(world, hold)
    second = cdkit("deploy", "--env", "staging", cwd=world)
    assert second.returncode == 1
    assert "another deploy to staging is in progress (deployment #1 started at " in second.stderr
    hold.touch()
    assert first.wait(timeout=60) == 0
    with ledger_of(world) as ledger:
        assert [d["status"] for d in ledger.deployments()] == ["success"]
    assert len(deploys(world)) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cancelled_deploy_is_recorded_exits_130_and_releases_the_lock(world: Path, tmp_path: Path, sig: int) -> None:
    git(world, "checkout", "-q", "-b", "side")
    run_ok(world)
    git(world, "checkout", "-q", "main")
    first = _start_held_deploy(world, tmp_path / "hold")
    first.send_signal(sig)
    assert first.wait(timeout=60) == 130
    with ledger_of(world) as ledger:
        (record,) = ledger.deployments()
        assert record["status"] == "cancelled"
        assert any("cancelled" in what for _, what in ledger.audit_lines())
    assert cdkit("deploy", "--env", "staging", cwd=world).returncode == 0  # the lock is free again


def _staging_ready(world: Path) -> str:
    """Stages passed on HEAD (run on another branch, so nothing deployed yet); returns HEAD."""
    sha = git(world, "rev-parse", "HEAD")
    git(world, "checkout", "-q", "-b", "side")
    run_ok(world)
    git(world, "checkout", "-q", "main")
    return sha


def test_sigkill_of_cdkit_leaves_its_deploy_command_holding_the_environment(world: Path, tmp_path: Path) -> None:
    sha = _staging_ready(world)
    hold = tmp_path / "hold"
    first = _start_held_deploy(world, hold)
    command = int(Path(f"{hold}.pid").read_text())
    assert os.getsid(command) == command != os.getsid(first.pid)  # the deploy command has its own session
    first.kill()  # cdkit dies mid-deploy (SIGKILL: no cleanup at all); its deploy command goes on
    first.wait()
    assert alive(command)
    second = cdkit("deploy", "--env", "staging", cwd=world)
    assert second.returncode == 1
    assert (f"that cdkit is gone, but the deploy command it started still runs (session {command}): wait for it "
            f"to end, or stop it with: kill -TERM -- -{command}") in second.stderr
    assert len(deploys(world)) == 1  # the second deploy never started its command
    hold.touch()  # the orphaned deploy command finishes...
    wait_gone(command)
    third = cdkit("deploy", "--env", "staging", "--json", cwd=world)  # ...and only then is the environment free
    assert third.returncode == 0, third.stderr
    with ledger_of(world) as ledger:
        assert [(d["sha"], d["status"]) for d in ledger.deployments()] == [(sha, "crashed"), (sha, "success")]
        audit = [what for _, what in ledger.audit_lines()]
    assert any("deployment #1 of" in a and "recorded as crashed" in a for a in audit)


def test_a_stopped_holder_keeps_the_lock_and_finishes_its_deploy(world: Path, tmp_path: Path) -> None:
    sha = _staging_ready(world)
    hold = tmp_path / "hold"
    first = _start_held_deploy(world, hold)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = cdkit("deploy", "--env", "staging", cwd=world)
        assert second.returncode == 1
        assert f"by cdkit pid {first.pid} on " in second.stderr
    finally:
        os.kill(first.pid, signal.SIGCONT)
    hold.touch()
    assert first.wait(timeout=60) == 0
    newer = commit(world, {"app.txt": "2\n"})
    git(world, "checkout", "-q", "side")
    git(world, "merge", "-q", "--ff-only", "main")
    run_ok(world)
    git(world, "checkout", "-q", "main")
    assert cdkit("deploy", "--env", "staging", cwd=world).returncode == 0  # free once the holder finished
    with ledger_of(world) as ledger:
        assert [(d["sha"], d["status"]) for d in ledger.deployments()] == [(sha, "success"), (newer, "success")]


def test_a_holder_whose_lock_file_is_replaced_stops_its_deploy_and_records_why(world: Path, tmp_path: Path) -> None:
    _staging_ready(world)
    hold = tmp_path / "hold"
    first = _start_held_deploy(world, hold)
    command = int(Path(f"{hold}.pid").read_text())
    (world / ".git" / "cdkit" / "locks" / "staging.lock").unlink()  # someone cleans the git dir
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 1
    assert "deployment #1 to staging: failure (lost the deploy lock (" in out
    wait_gone(command)  # its deploy command was stopped, never released by `hold`
    assert not hold.exists()
    with ledger_of(world) as ledger:
        (record,) = ledger.deployments()
        assert record["status"] == "failure"
        assert any("lost the deploy lock" in what for _, what in ledger.audit_lines())


def test_a_lock_held_by_any_process_refuses_the_deploy_until_released(world: Path) -> None:
    import fcntl

    _staging_ready(world)
    path = world / ".git" / "cdkit" / "locks" / "staging.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = cdkit("deploy", "--env", "staging", cwd=world)
    assert refused.returncode == 1
    assert "is locked by a process that wrote nothing into it" in refused.stderr
    assert deploys(world) == []
    assert cdkit("deploy", "--env", "staging", cwd=world).returncode == 0


def test_deploy_command_gets_the_documented_environment_and_runs_at_the_sha(world: Path, tmp_path: Path) -> None:
    old = git(world, "rev-parse", "HEAD")
    git(world, "checkout", "-q", "-b", "side")
    run_ok(world)
    git(world, "checkout", "-q", "main")
    command = 'cat app.txt; echo "$CDKIT_ENVIRONMENT:$CDKIT_SHA:$CDKIT_DEPLOYMENT_ID:${GIT_DIR-unset}"'
    # The deploy command is the governing pipeline's (staging runs nothing yet: the tip's), so it is committed.
    commit(world, {"app.txt": "newer\n", ".cdkit.yml": PIPELINE.replace(f"'{DEPLOY}'", f"'{command}'", 1)})
    (world / "app.txt").write_text("uncommitted\n")
    pipeline = load(world / ".cdkit.yml")
    seen: list[bytes] = []
    with ledger_of(world) as ledger:
        ctx = ReleaseContext(root=world, cdkit_dir=world / ".git" / "cdkit", pipeline=pipeline, ledger=ledger,
                             environ={**os.environ, "GIT_DIR": "/nonexistent"}, on_output=seen.append)
        result = deploy(ctx, "staging", old)
    assert result.status == "success"
    assert seen == [b"1\n", f"staging:{old}:{result.deployment_id}:unset\n".encode()]
    assert result.log_path and Path(result.log_path).read_bytes() == b"".join(seen)


def test_status_shows_the_whole_chain(world: Path) -> None:
    sha = git(world, "rev-parse", "HEAD")
    run_ok(world, "--deploy")
    adopt_new(world, "prod")
    cdkit("approve", sha, "--env", "prod", "--comment", "ok", cwd=world, env=BOB)
    text = cdkit("status", cwd=world).stdout
    assert "  staging (deployment) (runs it now)\n    deployment #1 success at " in text
    assert "  prod (delivery)\n    approved by Bob Reviewer <bob@example.com> via local at " in text
    assert "    deployable now" in text
    data = json.loads(cdkit("status", sha, "--json", cwd=world).stdout)
    prod = data["environments"][1]
    assert prod["approval"]["approved"] and prod["deployable"] and prod["approvals"][0]["comment"] == "ok"
    assert data["environments"][0]["deployments"][0]["status"] == "success"


def test_environments_lists_what_runs_where(world: Path) -> None:
    assert "staging  deployment: nothing deployed yet" in cdkit("environments", cwd=world).stdout
    run_ok(world, "--deploy")
    text = cdkit("environments", cwd=world).stdout
    assert text.startswith("staging  deployment: runs ")
    assert "prod     delivery (1 approval(s) via local): nothing deployed yet" in text


def test_review_mode_without_github_fails_closed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r")
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages: [{name: t, run: "true"}]
        environments:
          - {name: prod, mode: delivery, deploy: "true", approval: {via: review}}
    """)})
    run_ok(repo)
    result = cdkit("deploy", "--env", "prod", cwd=repo)
    assert result.returncode == 1
    assert "prod is approved through pull-request reviews (approval.via: review), which needs GitHub" \
        in result.stderr
    assert cdkit("approve", "HEAD", "--env", "prod", cwd=repo, env=BOB).returncode == 2


@pytest.mark.xdist_group("demo")
def test_the_demo_never_deploys_the_commit_whose_stage_failed(demo_run: DemoRun) -> None:
    result = demo_run.result
    assert result.returncode == 0, result.stderr
    text = result.stdout
    broken = text.split("A commit whose test fails is never released anywhere", 1)[1].split("── ", 1)[0]
    assert "cdkit: deploying" not in broken
    assert "stage 'test' failed on" in broken and "(exit code 1)" in broken
    assert "authored or committed a commit being released, so cannot approve it" in text
    assert "deploying it would roll prod back: pass --rollback" in text
    assert "cdkit: rolling back prod to" in text
    before_windows = text.split("── 15.", 1)[0]
    assert before_windows.count("  cdkit: deploying ") + before_windows.count("  cdkit: rolling back ") == 8
    story = text.split("rolls itself back when that fails", 1)[1].split("── 13.", 1)[0]
    assert "staging: verification failed (verification failed after 2 attempts" in story
    assert "on_failure: rollback: staging goes back to" in story and "is quarantined for staging" in story
    # Windows (issue 10 §4): a freeze refusal naming the window, then break-glass with a second approver.
    freeze = text.split("── 15.", 1)[1].split("── 16.", 1)[0]
    glass = text.split("── 16.", 1)[1].split("\nDone.", 1)[0]
    assert len(freeze.splitlines()) < 90 and len(glass.splitlines()) < 60
    # The commit adding the window is released under the rules before it; the next one is held (issue 9 §4).
    released, held = freeze.split("A change during the freeze", 1)
    assert released.count("cdkit: deploying prod") == 1 and "prod is held by a window" not in released
    assert "prod is held by a window: change freeze until " in held and "deploying prod" not in held
    assert "break-glass needs 1 break-glass approval(s)" in glass
    assert "Bob Reviewer <bob@example.com> approved a break-glass deploy of" in glass
    assert "cdkit: BREAK-GLASS: change freeze until " in glass and "to prod: success" in glass
    assert glass.count("cdkit: deploying prod") == 1 and "BREAK-GLASS\n" in glass  # the history's flag


PATHS_PIPELINE = config(f"""
    version: 1
    stages:
      - name: test
        run: test ! -e src/bad
        paths: ["src/**"]
    environments:
      - name: staging
        mode: deployment
        deploy: '{DEPLOY}'
""")


def test_a_paths_skip_does_not_vouch_for_an_earlier_unchecked_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_LOG", str(tmp_path / "deploys.txt"))
    repo = make_repo(tmp_path / "repo")
    commit(repo, {".cdkit.yml": PATHS_PIPELINE, "src/ok.py": "1"}, "first")
    assert cdkit("run", "--deploy", cwd=repo).returncode == 0  # test passes on the first commit
    bad = commit(repo, {"src/bad": "x"}, "a bad change pushed with --no-verify: never checked")
    docs = commit(repo, {"docs/readme.md": "x"}, "docs only")
    run = cdkit("run", "--deploy", "--base", bad, cwd=repo)  # the pushed range touches docs only: test skipped
    assert "paths did not match" in cdkit("status", cwd=repo).stdout
    assert run.returncode == 1, run.stdout  # deployment mode tried to release it, and the gate refused
    deployed_first = (tmp_path / "deploys.txt").read_text()
    result = cdkit("deploy", "--env", "staging", "--sha", docs, cwd=repo)
    assert result.returncode == 1, result.stdout
    assert (f"stage 'test' was skipped on {docs[:12]} by its paths, and no earlier commit with the same files "
            "under them passed it") in result.stderr + result.stdout
    assert (tmp_path / "deploys.txt").read_text() == deployed_first  # only the first commit was ever deployed


def test_a_paths_skip_is_vouched_for_by_a_pass_with_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_LOG", str(tmp_path / "deploys.txt"))
    repo = make_repo(tmp_path / "repo")
    first = commit(repo, {".cdkit.yml": PATHS_PIPELINE, "src/ok.py": "1"}, "first")
    assert cdkit("run", "--deploy", cwd=repo).returncode == 0
    docs = commit(repo, {"docs/readme.md": "x"}, "docs only")
    assert cdkit("run", "--deploy", "--base", first, cwd=repo).returncode == 0  # test skipped by paths
    result = cdkit("deploy", "--env", "staging", "--sha", docs, cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[:2] for line in (tmp_path / "deploys.txt").read_text().splitlines()] == \
        [["staging", first], ["staging", docs]]  # each released by its passing run (deployment mode)


def test_only_a_missing_approval_waits_any_other_refusal_is_refused(world: Path) -> None:
    adopt_new(world, "prod")  # a new prod: its first release holds the whole history, on purpose
    from cdkit.release import deploy_if_approved

    good = git(world, "rev-parse", "HEAD")
    assert cdkit("run", "--deploy", cwd=world).returncode == 0  # passes; staging deploys it (deployment mode)
    bad = commit(world, {"fail-build": "x"}, "breaks the build")
    assert cdkit("run", "--deploy", cwd=world).returncode == 1
    pipeline = load(world / ".cdkit.yml")
    with ledger_of(world) as ledger:
        ctx = ReleaseContext(root=world, cdkit_dir=world / ".git" / "cdkit", pipeline=pipeline, ledger=ledger)
        waiting = deploy_if_approved(ctx, "prod", good)
        assert waiting.status == "waiting" and "is not approved for prod" in waiting.reasons[0]
        refused = deploy_if_approved(ctx, "prod", bad)
        assert refused.status == "refused" and "stage 'build' failed" in refused.reasons[0]


def test_a_deploy_that_leaves_a_detached_process_holding_its_output_still_ends(world: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    daemon = f"import os, time; os.setsid(); open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    (world / "deploy.py").write_text(daemon)
    text = PIPELINE.replace(f"deploy: '{DEPLOY}'", f"deploy: {sys.executable} deploy.py & sleep 0.5; echo started", 1)
    commit(world, {".cdkit.yml": text}, "a deploy that starts a daemon")
    try:
        assert cdkit("run", "--deploy", cwd=world).returncode == 0  # staging (deployment mode) deploys it
        with ledger_of(world) as ledger:
            (deployment,) = ledger.deployments(environment="staging")
        assert deployment["status"] == "success"
        assert Path(deployment["log_path"]).read_text().endswith("started\n")
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
