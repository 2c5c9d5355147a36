"""The stage runner with real processes, real repositories and the real ledger."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdkit.ledger import Ledger
from tests.helpers import cdkit, commit, config, git


def run_json(repo: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    result = cdkit("run", "--json", *args, cwd=repo, env=env)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def stages_by_name(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in doc["stages"]}  # type: ignore[index, union-attr]


def ledger_of(repo: Path) -> Ledger:
    return Ledger(repo / ".git" / "cdkit" / "ledger.sqlite3")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_stages_run_in_dependency_order_and_a_failure_skips_dependents(repo: Path) -> None:
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: build, run: "echo built"}
          - {name: test, run: "echo testing; exit 3"}
          - {name: package, run: "echo never"}
          - {name: docs, run: "echo docs", needs: [build]}
    """)})
    code, doc = run_json(repo)
    assert code == 1
    stages = stages_by_name(doc)
    assert stages["build"]["status"] == "passed"
    assert stages["test"]["status"] == "failed" and stages["test"]["exit_code"] == 3
    assert stages["test"]["reason"] == "exit code 3"
    assert stages["package"]["status"] == "skipped"
    assert stages["package"]["reason"] == "needs 'test', which failed"
    assert stages["docs"]["status"] == "passed", "docs needs only build"
    assert stages["test"]["started_at"] >= stages["build"]["finished_at"]  # type: ignore[operator]
    assert Path(str(stages["test"]["log"])).read_text() == "testing\n"


def test_independent_stages_overlap(repo: Path) -> None:
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: a, run: "sleep 0.5", needs: []}
          - {name: b, run: "sleep 0.5", needs: []}
          - {name: c, run: "sleep 0.5", needs: []}
    """)})
    code, doc = run_json(repo, "--jobs", "3")
    assert code == 0
    stages = doc["stages"]
    latest_start = max(s["started_at"] for s in stages)  # type: ignore[union-attr, index]
    earliest_end = min(s["finished_at"] for s in stages)  # type: ignore[union-attr, index]
    assert latest_start < earliest_end, "all three ran at the same time"


def test_jobs_one_runs_one_at_a_time(repo: Path) -> None:
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: a, run: "sleep 0.2", needs: []}
          - {name: b, run: "sleep 0.2", needs: []}
    """)})
    code, doc = run_json(repo, "--jobs", "1")
    a, b = doc["stages"]  # type: ignore[misc]
    assert code == 0 and b["started_at"] >= a["finished_at"]


def test_timeout_kills_the_whole_process_group(repo: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # The grandchild ignores SIGTERM, so only the KILL after the grace period ends it.
    commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - name: slow
            run: "sh -c 'trap \\"\\" TERM; sleep 60' & echo $! > {pidfile}; wait"
            timeout: 1s
          - name: after
            run: "echo never"
    """)})
    code, doc = run_json(repo, env={"CDKIT_KILL_GRACE": "0.5"})
    assert code == 1
    stages = stages_by_name(doc)
    assert stages["slow"]["status"] == "timed_out"
    assert stages["slow"]["reason"] == "timed out after 1s"
    assert stages["after"]["reason"] == "needs 'slow', which timed out"
    grandchild = int(pidfile.read_text())
    assert wait_until(lambda: not pid_alive(grandchild)), "no grandchild outlives its stage"


def test_background_leftovers_are_ended_when_the_stage_exits(repo: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - name: leaky
            run: "sleep 60 & echo $! > {pidfile}"
    """)})
    code, _ = run_json(repo)
    assert code == 0
    assert wait_until(lambda: not pid_alive(int(pidfile.read_text())))


# Where os.pidfd_open is missing (macOS, Linux before 5.3), a second thread waits for each stage's exit.
WITHOUT_PIDFD = "import os, sys; del os.pidfd_open; from cdkit.entry import main; sys.argv[0] = 'cdkit'; main()"


@pytest.mark.parametrize("watch", ["pidfd", "thread"])
def test_a_stage_s_exit_output_and_leftovers_are_seen_however_its_exit_is_watched(
        repo: Path, tmp_path: Path, watch: str) -> None:
    pidfile = tmp_path / "bg.pid"
    commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - {{name: talks, run: "echo one; printf 'two'"}}
          - {{name: leaky, run: "sleep 60 & echo $! > {pidfile}; echo left", needs: []}}
          - {{name: closes-early, run: "echo bye; exec >&- 2>&-; sleep 0.3; exit 3", needs: []}}
    """)})
    start = [sys.executable, "-m", "cdkit"] if watch == "pidfd" else [sys.executable, "-c", WITHOUT_PIDFD]
    done = subprocess.run([*start, "run", "--json"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    stages = stages_by_name(json.loads(done.stdout))
    assert stages["talks"]["status"] == "passed" and Path(str(stages["talks"]["log"])).read_text() == "one\ntwo"
    assert stages["leaky"]["status"] == "passed" and Path(str(stages["leaky"]["log"])).read_text() == "left\n"
    early = stages["closes-early"]
    assert (early["status"], early["exit_code"]) == ("failed", 3)
    assert early["duration"] >= 0.3  # type: ignore[operator]  # its end is its exit, not its pipe's closing
    assert Path(str(early["log"])).read_text() == "bye\n"
    assert wait_until(lambda: not pid_alive(int(pidfile.read_text())))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cancels_every_stage_and_records_it(repo: Path, tmp_path: Path, sig: signal.Signals) -> None:
    pidfile = tmp_path / "child.pid"
    commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - name: long
            run: "sleep 60 & echo $! > {pidfile}; wait"
          - name: next
            run: "echo never"
    """)})
    proc = subprocess.Popen([sys.executable, "-m", "cdkit", "run", "--json"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CDKIT_KILL_GRACE": "1"})
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    stages = stages_by_name(json.loads(out))
    assert stages["long"]["status"] == "cancelled"
    assert stages["next"]["status"] == "cancelled"
    assert wait_until(lambda: not pid_alive(int(pidfile.read_text())))
    with ledger_of(repo) as ledger:
        run = ledger.recent_runs(1)[0]
        assert run.status == "cancelled"
        assert {r.stage: r.status for r in ledger.stage_results(run.id)} == {"long": "cancelled", "next": "cancelled"}


def test_the_ledger_shows_a_stage_running_while_it_runs_and_every_stage_once_it_ends(repo: Path,
                                                                                       tmp_path: Path) -> None:
    """Stage rows are written in batches when the runner waits: never later than that."""
    started = tmp_path / "started"
    dependents = "".join(f"  - {{name: d{i}, run: 'true', needs: [gate]}}\n" for i in range(150))
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n"
                  f"  - {{name: long, run: 'touch {started}; sleep 30', timeout: 20m}}\n"
                  "  - {name: gate, run: 'exit 4', needs: [long]}\n" + dependents})
    proc = subprocess.Popen([sys.executable, "-m", "cdkit", "run", "--json"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(started.exists)

        def long_is_running() -> bool:
            with ledger_of(repo) as ledger:
                run = ledger.recent_runs(1)[0]
                return {r.stage: r.status for r in ledger.stage_results(run.id)}.get("long") == "running"
        assert wait_until(long_is_running)
    finally:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    with ledger_of(repo) as ledger:
        run = ledger.recent_runs(1)[0]
        recorded = {r.stage: r.status for r in ledger.stage_results(run.id)}
    assert recorded == {"long": "cancelled", "gate": "cancelled", **{f"d{i}": "cancelled" for i in range(150)}}

    # The control, and more rows at once than one statement takes: 150 dependents skipped together.
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: gate, run: 'exit 4'}\n" + dependents})
    code, doc = run_json(repo)
    assert code == 1
    with ledger_of(repo) as ledger:
        run = ledger.recent_runs(1)[0]
        rows = {r.stage: (r.status, r.reason) for r in ledger.stage_results(run.id)}
    assert rows == {"gate": ("failed", "exit code 4"),
                    **{f"d{i}": ("skipped", "needs 'gate', which failed") for i in range(150)}}
    assert {s["name"]: s["status"] for s in doc["stages"]} == {k: v[0] for k, v in rows.items()}


def test_paths_filter_over_a_real_range(repo: Path) -> None:
    base = commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: py, run: "echo py", paths: ["src/**/*.py"], needs: []}
          - {name: docs, run: "echo docs", paths: ["docs/**", "!docs/drafts/**"], needs: []}
          - {name: always, run: "echo always", needs: []}
    """), "README": "x"})
    commit(repo, {"src/pkg/mod.py": "x = 1\n", "docs/drafts/idea.md": "draft"})
    code, doc = run_json(repo, "--base", base)
    stages = stages_by_name(doc)
    assert code == 0
    assert stages["py"]["status"] == "passed"
    assert stages["docs"]["status"] == "skipped"
    assert stages["docs"]["reason"] == "paths did not match any of 2 changed file(s) (docs/**, !docs/drafts/**)"
    plan = cdkit("plan", "--base", base, cwd=repo)
    assert "run  py      paths matched src/pkg/mod.py" in plan.stdout


def test_cdkit_skip_is_recorded(repo: Path) -> None:
    sha = commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: lint, run: "exit 1"}
          - {name: test, run: "echo ok"}
    """)})
    code, doc = run_json(repo, env={"CDKIT_SKIP": "lint"})
    assert code == 0
    assert stages_by_name(doc)["lint"] == {**stages_by_name(doc)["lint"], "status": "skipped",
                                           "reason": "skipped by CDKIT_SKIP"}
    with ledger_of(repo) as ledger:
        assert ledger.latest_stage_results(sha, include_dirty=True)["lint"].reason == "skipped by CDKIT_SKIP"


def test_unknown_stage_in_cdkit_skip_is_a_usage_error(repo: Path) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: lint, run: 'true'}\n"})
    result = cdkit("run", cwd=repo, env={"CDKIT_SKIP": "lnit"})
    assert result.returncode == 2
    assert "unknown stage(s) lnit (in --stage or CDKIT_SKIP); stages are: lint" in result.stderr


def test_stage_environment(repo: Path) -> None:
    sha = commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - name: env
            run: env | grep -E '^(CDKIT_|GIT_DIR|GIT_INDEX_FILE|GIT_WORK_TREE|GREETING)' | sort; cat "$CDKIT_CHANGED_FILES" | tr '\\0' '\\n'
            env: {GREETING: hello}
            working_directory: sub
    """), "sub/file name.txt": "x"})
    code, doc = run_json(repo, env={"GIT_DIR": str(repo / ".git"), "GIT_INDEX_FILE": str(repo / ".git" / "index"),
                                      "GIT_WORK_TREE": str(repo)})
    assert code == 0
    log = Path(str(stages_by_name(doc)["env"]["log"])).read_text()
    assert f"CDKIT_SHA={sha}" in log
    assert "CDKIT_STAGE=env" in log and "GREETING=hello" in log and f"CDKIT_RUN_ID={doc['run_id']}" in log
    assert "CDKIT_REF=refs/heads/main" in log and "CDKIT_BASE_SHA=\n" in log
    assert "GIT_DIR" not in log and "GIT_INDEX_FILE" not in log and "GIT_WORK_TREE" not in log
    assert "sub/file name.txt" in log


def test_head_other_than_work_tree_runs_checked_out_in_place(repo: Path) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: check, run: 'test \"$(cat v)\" = good'}\n", "v": "bad"})
    good = commit(repo, {"v": "good"})
    commit(repo, {"v": "bad"})
    result = cdkit("run", "--head", good, cwd=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"in the work tree, checked out at {good[:12]}" in result.stdout
    assert (repo / "v").read_text() == "bad", "the work tree is back at HEAD"
    assert cdkit("run", cwd=repo).returncode == 1


def test_dirty_run_is_recorded_as_dirty(repo: Path) -> None:
    sha = commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: a, run: 'true'}\n"})
    (repo / "untracked").write_text("x")
    assert cdkit("run", cwd=repo).returncode == 0
    with ledger_of(repo) as ledger:
        assert ledger.recent_runs(1)[0].dirty
        assert ledger.latest_stage_results(sha) == {}, "a dirty run never counts for a gate"
    assert "not counted for a release (uncommitted changes" in cdkit("status", cwd=repo).stdout


def test_two_runs_at_once_are_both_recorded(repo: Path) -> None:
    sha = commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: a, run: "sleep 0.3; echo a", needs: []}
          - {name: b, run: "sleep 0.3; echo b", needs: []}
          - {name: c, run: "echo c"}
    """)})
    procs = [subprocess.Popen([sys.executable, "-m", "cdkit", "run"], cwd=repo, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    with ledger_of(repo) as ledger:
        runs = ledger.runs_for_sha(sha)
        assert len(runs) == 2 and all(r.status == "passed" for r in runs)
        for run in runs:
            results = ledger.stage_results(run.id)
            assert {r.stage: r.status for r in results} == {"a": "passed", "b": "passed", "c": "passed"}
            assert all(Path(r.log_path or "").read_text().strip() == r.stage for r in results)


def test_status_and_log(repo: Path) -> None:
    sha = commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: a, run: 'exit 4'}\n"})
    cdkit("run", cwd=repo)
    status = cdkit("status", "--json", cwd=repo)
    doc = json.loads(status.stdout)
    assert doc["sha"] == sha and {s["name"]: s["status"] for s in doc["stages"]}["a"] == "failed"
    log = cdkit("log", "-n", "5", cwd=repo)
    assert f"#1    " in log.stdout and sha[:12] in log.stdout and "failed" in log.stdout


def test_unknown_revision_is_a_clear_error(repo: Path) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: a, run: 'true'}\n"})
    result = cdkit("run", "--base", "no-such-branch", cwd=repo)
    assert result.returncode == 2
    assert result.stderr == ("cdkit: 'no-such-branch' does not name a commit in this repository "
                             "(check the spelling, or `git fetch` it)\n")


def test_outside_a_repository(tmp_path: Path) -> None:
    result = cdkit("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "not inside a git repository" in result.stderr


def test_corrupt_ledger_is_an_expected_error(repo: Path) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: a, run: 'true'}\n"})
    ledger = repo / ".git" / "cdkit" / "ledger.sqlite3"
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(b"this is not a database" * 100)
    result = cdkit("run", cwd=repo)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{ledger}: the ledger is not a readable SQLite database" in result.stderr


def test_stage_option_runs_only_the_named_stages(repo: Path) -> None:
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: a, run: "exit 1"}
          - {name: b, run: "echo b"}
          - {name: c, run: "echo c"}
    """)})
    code, doc = run_json(repo, "--stage", "b")
    stages = stages_by_name(doc)
    assert code == 0
    assert stages["b"]["status"] == "passed"
    assert stages["a"]["reason"] == stages["c"]["reason"] == "not selected (--stage)"


def test_plan_json_says_why_not(repo: Path) -> None:
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: hook, run: "true", on: [pre-push]}
          - {name: ci, run: "true"}
    """)})
    doc = json.loads(cdkit("plan", "--json", "--trigger", "pre-push", cwd=repo, env={"CDKIT_SKIP": "ci"}).stdout)
    assert [(s["name"], s["runs"], s["reason"]) for s in doc["stages"]] == [
        ("hook", True, "no paths filter"),
        ("ci", False, "not on pre-push (runs on: ci)"),
    ]


def test_a_detached_process_holding_the_output_does_not_hang_the_run(repo: Path, tmp_path: Path) -> None:
    # The daemon leaves the stage's process group (setsid) but keeps its stdout: the run
    # must still end when the stage's shell does, instead of waiting for the pipe to close.
    pidfile = tmp_path / "daemon.pid"
    daemon = f"import os, time; os.setsid(); open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    commit(repo, {".cdkit.yml": config(f"""
        version: 1
        stages:
          - name: start-daemon
            run: {sys.executable} -c "{daemon}" & sleep 0.5; echo started
    """)})
    try:
        code, doc = run_json(repo)
        assert code == 0
        assert stages_by_name(doc)["start-daemon"]["status"] == "passed"
        assert Path(str(stages_by_name(doc)["start-daemon"]["log"])).read_text() == "started\n"
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_a_kill_grace_that_never_kills_is_refused(repo: Path) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: a, run: 'true'}\n"})
    result = cdkit("run", cwd=repo, env={"CDKIT_KILL_GRACE": "inf"})
    assert result.returncode == 2
    assert "CDKIT_KILL_GRACE='inf' is not a number of seconds from 0 to 3600" in result.stderr


def test_a_commit_is_judged_by_its_own_pipeline_not_an_uncommitted_edit(repo: Path) -> None:
    sha = commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: test, run: 'exit 1'}\n"})
    (repo / ".cdkit.yml").write_text("version: 1\nstages:\n  - {name: test, run: 'exit 0'}\n")  # not committed
    code, doc = run_json(repo, "--head", sha)
    assert code == 1
    assert stages_by_name(doc)["test"]["status"] == "failed"
    with ledger_of(repo) as ledger:
        assert ledger.latest_stage_results(sha)["test"].status == "failed"


def test_a_branch_and_file_named_in_latin_1_are_recorded(repo: Path) -> None:
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: a, run: 'true', paths: ['**']}\n"})
    subprocess.run(["git", "checkout", "-q", "-b", b"caf\xe9".decode("utf-8", "surrogateescape")], cwd=repo,
                   check=True)
    (repo / os.fsdecode(b"men\xfc.txt")).write_text("x")
    commit(repo, {}, "a file with a Latin-1 name")
    result = cdkit("run", "--base", "HEAD~1", cwd=repo)
    assert result.returncode == 0, result.stderr
    with ledger_of(repo) as ledger:
        run = ledger.recent_runs(1)[0]
        assert run.ref == "refs/heads/caf\\xe9"
    assert "caf\\xe9" in cdkit("log", cwd=repo).stdout
    plan = subprocess.run([sys.executable, "-m", "cdkit", "plan", "--base", "HEAD~1"], cwd=repo, capture_output=True)
    assert plan.returncode == 0 and b"paths matched men\xfc.txt" in plan.stdout  # the name's own bytes, as git shows


def test_status_keeps_a_real_result_over_a_run_that_did_not_judge_the_stage(repo: Path) -> None:
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: test, run: "exit 1"}
          - {name: hook, run: "true", on: [pre-push], needs: []}
    """)})
    assert cdkit("run", cwd=repo).returncode == 1
    assert cdkit("run", "--trigger", "pre-push", cwd=repo).returncode == 0  # test: "not on pre-push"
    doc = json.loads(cdkit("status", "--json", cwd=repo).stdout)
    assert {s["name"]: s["status"] for s in doc["stages"]}["test"] == "failed"


def test_live_output_never_shows_a_token(repo: Path) -> None:
    token = "ghp_" + "Z" * 36
    commit(repo, {".cdkit.yml": "version: 1\nstages:\n  - {name: a, env_passthrough: [GITHUB_TOKEN], "
                                "run: 'echo \"Authorization: token $GITHUB_TOKEN\"'}\n"})  # granted, still hidden
    result = cdkit("run", cwd=repo, env={"GITHUB_TOKEN": token})
    assert token not in result.stdout and "Authorization: ***" in result.stdout


def test_the_logs_made_ahead_of_the_stages_are_only_those_of_stages_that_ran(repo: Path) -> None:
    # The runner creates its log files ahead of the stages, from a thread; a stage that never
    # starts (its need failed, the run was over) must not leave an empty log behind.
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: first, run: "echo one"}
          - {name: fails, run: "echo two; exit 1", needs: []}
          - {name: quiet, run: "true", needs: []}
          - {name: blocked, run: "echo never", needs: [fails]}
          - {name: also-blocked, run: "echo never", needs: [blocked]}
    """)})
    code, doc = run_json(repo, "--jobs", "1")
    assert code == 1
    stages = stages_by_name(doc)
    ran = {name for name, s in stages.items() if s["log"]}
    assert ran == {"first", "fails", "quiet"}
    log_dir = Path(str(stages["first"]["log"])).parent
    assert sorted(p.name for p in log_dir.glob("*.log")) == ["fails.log", "first.log", "quiet.log"]
    assert (log_dir / "first.log").read_text() == "one\n" and (log_dir / "fails.log").read_text() == "two\n"
    assert (log_dir / "quiet.log").read_bytes() == b""  # a stage that ran and printed nothing keeps its log
