"""Faults around the ledger, with real processes, real SQLite and (as root) a real full filesystem.

A busy ledger is waited for, then refused with exit 2 naming the process that holds it;
a full disk is exit 2 with nothing half-written; a symlink planted in the git dir is
never followed. Each attack is paired with a control that must pass.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdkit.ledger import LEDGER_NAME, Ledger, LedgerBusy
from tests.helpers import cdkit, commit, config, make_repo, small_tmpfs

PIPELINE = config("""
    version: 1
    stages:
      - {name: build, run: 'echo built'}
""")

# Holds the ledger's write lock (BEGIN IMMEDIATE) until its stdin closes, as a cdkit stuck mid-write would.
HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO audit (at, what) VALUES (0, 'held')")
print("locked", flush=True)
sys.stdin.read()
db.execute("COMMIT" if sys.argv[2] == "commit" else "ROLLBACK")
"""


def ledger_path(repo: Path) -> Path:
    return repo / ".git" / "cdkit" / LEDGER_NAME


def runs(repo: Path) -> list[dict[str, object]]:
    result = cdkit("log", "--json", cwd=repo)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)["runs"]
    return rows


@pytest.fixture
def recorded(repo: Path) -> Path:
    """A repository with one recorded run (so the ledger exists)."""
    commit(repo, {".cdkit.yml": PIPELINE})
    first = cdkit("run", cwd=repo)
    assert first.returncode == 0, first.stdout + first.stderr
    return repo


@pytest.fixture
def holder(recorded: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(ledger_path(recorded)), "rollback"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    yield proc
    proc.kill()
    proc.wait()


def test_a_ledger_locked_past_the_wait_is_exit_2_naming_the_holder(recorded: Path,
                                                                    holder: subprocess.Popen[str]) -> None:
    result = cdkit("run", cwd=recorded, env={"CDKIT_LEDGER_WAIT": "0.5"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the ledger stayed locked for 0.5 s" in result.stderr
    assert f"held by pid {holder.pid} (" in result.stderr and "BEGIN IMMEDIATE" not in result.stderr
    assert "Traceback" not in result.stderr and "CDKIT_LEDGER_WAIT=SECONDS waits longer" in result.stderr
    holder.kill()
    holder.wait()
    control = cdkit("run", cwd=recorded, env={"CDKIT_LEDGER_WAIT": "0.5"})  # the lock is gone: it records
    assert control.returncode == 0, control.stdout + control.stderr
    assert [r["status"] for r in runs(recorded)] == ["passed", "passed"]  # the refused run left no row


def test_a_lock_released_within_the_wait_is_waited_for(recorded: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(ledger_path(recorded)), "commit"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    run = subprocess.Popen([sys.executable, "-m", "cdkit", "run"], cwd=recorded, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "CDKIT_LEDGER_WAIT": "60"})
    # Release only once the run is queued behind the lock: it shows up in /proc/locks as waiting.
    waiting_for_lock(run.pid)
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, out + err
    assert [r["status"] for r in runs(recorded)] == ["passed", "passed"]


def waiting_for_lock(pid: int) -> None:
    """Return once `pid` has tried the ledger at least once (SQLite polls: look for its open ledger fd)."""
    import time

    for _ in range(6000):
        try:
            targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            targets = []
        if any(t.endswith(LEDGER_NAME + "-shm") for t in targets):
            time.sleep(0.2)  # it is past opening and into the busy wait
            return
        time.sleep(0.01)
    raise AssertionError("the run never opened the ledger")


def test_the_ledger_class_names_the_holder_too(recorded: Path, holder: subprocess.Popen[str]) -> None:
    with Ledger(ledger_path(recorded), wait=0.2) as ledger:
        with pytest.raises(LedgerBusy, match=f"held by pid {holder.pid} "):
            ledger.audit("blocked")
        assert ledger.recent_runs(5)  # reading a WAL ledger does not wait on a writer


def test_a_bad_wait_value_is_a_usage_error(recorded: Path) -> None:
    result = cdkit("run", cwd=recorded, env={"CDKIT_LEDGER_WAIT": "soon"})
    assert result.returncode == 2
    assert "CDKIT_LEDGER_WAIT='soon' is not a number of seconds" in result.stderr


# --- symlinks planted in the git dir ---------------------------------------------------------


def test_a_symlinked_cdkit_dir_is_refused_and_its_target_untouched(repo: Path, tmp_path: Path) -> None:
    commit(repo, {".cdkit.yml": PIPELINE})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo / ".git" / "cdkit").symlink_to(elsewhere)
    result = cdkit("run", cwd=repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is a symbolic link" in result.stderr and "cdkit never follows links" in result.stderr
    assert list(elsewhere.iterdir()) == []
    (repo / ".git" / "cdkit").unlink()
    control = cdkit("run", cwd=repo)
    assert control.returncode == 0, control.stderr
    assert ledger_path(repo).is_file() and not ledger_path(repo).is_symlink()


@pytest.mark.parametrize("name", [LEDGER_NAME, LEDGER_NAME + "-wal", LEDGER_NAME + "-shm", "logs"])
def test_a_symlink_planted_in_the_cdkit_dir_is_never_written_through(recorded: Path, tmp_path: Path,
                                                                     name: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    planted = recorded / ".git" / "cdkit" / name
    if planted.is_dir():
        os.rename(planted, tmp_path / "old-logs")
    elif planted.exists():
        planted.unlink()
    planted.symlink_to(victim)
    result = cdkit("run", cwd=recorded)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{planted} is a symbolic link" in result.stderr
    assert victim.read_bytes() == b"precious\n"


def test_a_run_log_dir_planted_for_a_future_run_is_refused(recorded: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (recorded / ".git" / "cdkit" / "logs" / "2").symlink_to(elsewhere)  # run #2 comes next
    result = cdkit("run", cwd=recorded)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "logs/2 is a symbolic link" in result.stderr
    assert list(elsewhere.iterdir()) == []
    control = cdkit("run", cwd=recorded)  # run #3 gets a directory of its own
    assert control.returncode == 0, control.stderr


# --- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (root only)."""
    with small_tmpfs(tmp_path, "2m") as mount:
        yield mount


def fill(disk: Path, *, leave: int = 0) -> Path:
    """Fill `disk` up to `leave` bytes free; return the filler file."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
                if free <= leave:
                    break
                f.write(b"\0" * min(65536, max(4096, free - leave)))
                f.flush()
        except OSError:
            pass
    return filler


def integrity(repo: Path) -> str:
    with sqlite3.connect(ledger_path(repo)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def test_a_full_disk_is_exit_2_and_nothing_half_written(small_disk: Path) -> None:
    repo = make_repo(small_disk / "repo")
    commit(repo, {".cdkit.yml": PIPELINE})
    assert cdkit("run", cwd=repo).returncode == 0
    filler = fill(small_disk)
    result = cdkit("run", cwd=repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "full" in result.stderr or "no space left" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    filler.unlink()
    assert integrity(repo) == "ok"
    statuses = [r["status"] for r in runs(repo)]
    assert statuses[0] == "passed" and all(s in ("passed", "interrupted") for s in statuses)
    control = cdkit("run", cwd=repo)  # space again: the next run records in full
    assert control.returncode == 0, control.stdout + control.stderr
    assert runs(repo)[-1]["status"] == "passed"


def test_a_stage_flooding_a_full_disk_does_not_block_until_its_timeout(small_disk: Path) -> None:
    repo = make_repo(small_disk / "repo")
    flood = config("""
        version: 1
        stages:
          - {name: flood, run: 'head -c 8000000 /dev/zero | tr "\\0" x | fold -w 100', timeout: 10m}
    """)
    commit(repo, {".cdkit.yml": flood})
    assert cdkit("run", "--stage", "flood", cwd=repo, env={"CDKIT_SKIP": "flood"}).returncode == 0
    fill(small_disk, leave=256 * 1024)  # room for the ledger's few pages, not for 8 MB of log
    result = cdkit("run", cwd=repo, timeout=300)
    # Passed with a cut log, failed because the tree could not be checked, or exit 2 when the
    # ledger could not record it: never a timeout, never a crash.
    assert result.returncode in (0, 1, 2), result.stdout[-2000:] + result.stderr
    assert "timed out" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    if result.returncode == 1:
        assert "could not check whether this stage changed the work tree (No space left on device)" in result.stdout
    assert "cannot write this log any more (No space left on device)" in result.stdout + result.stderr


# --- schema 4: outbox counts kept by triggers ----------------------------------------------------


def test_outbox_counts_follow_every_state_change(tmp_path: Path) -> None:
    with Ledger(tmp_path / LEDGER_NAME) as ledger:
        ids = [ledger.enqueue(f"k{i}", "status", {"i": i}) for i in range(4)]
        ledger.enqueue("k0", "status", {"i": 0})  # ignored: already there
        ledger.mark_delivered(ids[0])
        ledger.mark_superseded(ids[1], "newer")
        ledger.mark_failed(ids[2], "401", final=True)
        ledger.mark_failed(ids[3], "timeout")  # still pending
        assert ledger.outbox_counts() == {"delivered": 1, "superseded": 1, "failed": 1, "pending": 1}


def test_a_schema_3_ledger_migrates_with_its_outbox_counted(tmp_path: Path) -> None:
    from cdkit.ledger import MIGRATIONS, SCHEMA_VERSION, _statements

    path = tmp_path / LEDGER_NAME
    db = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:3]:
        for statement in _statements(migration):
            db.execute(statement)
    db.execute("PRAGMA user_version = 3")
    db.executemany("INSERT INTO outbox (key, kind, payload, state, created_at) VALUES (?, 'status', '{}', ?, 0)",
                   [("a", "delivered"), ("b", "delivered"), ("c", "pending")])
    db.close()
    with Ledger(path) as ledger:
        assert ledger.outbox_counts() == {"delivered": 2, "pending": 1}
        assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# --- a run whose cdkit was killed ---------------------------------------------------------------------------


def start_run_and_wait_for_its_stage(repo: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`cdkit run` of a stage that sleeps, started for real; returns once the stage runs (and its pid)."""
    commit(repo, {".cdkit.yml": config("""
        version: 1
        stages:
          - {name: slow, run: 'echo $$ > ../stage.pid; exec sleep 60'}
    """)})
    proc = subprocess.Popen([sys.executable, "-m", "cdkit", "run"], cwd=repo, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pid_file = repo.parent / "stage.pid"
    for _ in range(600):
        if pid_file.exists() and pid_file.read_text().strip():
            return proc, int(pid_file.read_text())
        assert proc.poll() is None, "cdkit run ended before its stage started"
        time.sleep(0.05)
    raise AssertionError("the stage never started")


def logged_stage(repo: Path) -> dict[str, object]:
    (run,) = runs(repo)
    (stage,) = run["stages"]  # type: ignore[misc]
    return {"run": run["status"], **stage}  # type: ignore[dict-item]


def test_a_stage_whose_cdkit_was_killed_is_shown_cancelled_not_running_forever(repo: Path) -> None:
    proc, stage_pid = start_run_and_wait_for_its_stage(repo)
    try:
        # Control: while cdkit lives, its stage is running, and so is its run.
        alive = logged_stage(repo)
        assert (alive["run"], alive["status"]) == ("running", "running"), alive
        proc.kill()  # kill -9: cdkit records nothing more
        proc.wait()
        gone = logged_stage(repo)
        assert (gone["run"], gone["status"]) == ("interrupted", "cancelled"), gone
        assert "cdkit's process ended before the stage did" in str(gone["reason"])
        status = cdkit("status", "--json", cwd=repo)
        assert json.loads(status.stdout)["stages"][0]["status"] == "cancelled", status.stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stage_pid, 9)
    with sqlite3.connect(ledger_path(repo)) as db:  # the row stays as recorded (the audit chain sealed it so)
        assert db.execute("SELECT status FROM stage_results").fetchall() == [("running",)]
