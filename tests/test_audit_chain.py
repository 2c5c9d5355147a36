"""The ledger's hash chain (issue 13 §4): `cdkit audit verify` finds every edited, deleted, inserted or moved row.

Each attack changes a real ledger with raw sqlite3, as someone with the file would, then runs
the real `cdkit audit verify`; the positive controls (an untouched ledger, one written by
many processes at once, one migrated from schema 7) must verify, so no detection passes
vacuously.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cdkit.history import chain
from cdkit.ledger import LEDGER_NAME, MIGRATIONS, SCHEMA_VERSION, Ledger, _statements
from tests.helpers import cdkit, commit

SHA = ["a" * 40, "b" * 40, "c" * 40]
PIPELINE = "version: 1\nstages:\n  - {name: test, run: 'true'}\nenvironments:\n  - {name: prod, deploy: 'true'}\n"


def ledger_file(repo: Path) -> Path:
    return repo / ".git" / "cdkit" / LEDGER_NAME


def write_history(ledger: Ledger, sha: str, *, fail: bool = False) -> None:
    """A run with two stages, an approval, a deployment that starts and finishes, an audit line."""
    run_id = ledger.start_run(trigger="pre-push", event="pre-push", sha=sha, base_sha=None, ref="main")
    ledger.record_stage(run_id, "build", status="passed", exit_code=0, started_at=1.0, finished_at=2.0)
    ledger.record_stage(run_id, "test", status="failed" if fail else "passed", exit_code=int(fail))
    ledger.finish_run(run_id, "failed" if fail else "passed")
    ledger.add_approval(sha=sha, environment="prod", approver="Bob <bob@example.com>", via="local", comment="ok")
    deployment = ledger.start_deployment(environment="prod", sha=sha, rollback=False, approval={"via": "local"},
                                         deployed_by="Ada <ada@example.com>")
    ledger.finish_deployment(deployment, "failure" if fail else "success", reason="exit 1" if fail else None)
    ledger.audit(f"deployed {sha[:8]}")


@pytest.fixture
def sealed(repo: Path) -> Path:
    commit(repo, {".cdkit.yml": PIPELINE})
    (repo / ".git" / "cdkit").mkdir()
    with Ledger(ledger_file(repo)) as ledger:
        for index, sha in enumerate(SHA):
            write_history(ledger, sha, fail=index == 1)
    return repo


def verify(repo: Path) -> tuple[int, dict]:
    result = cdkit("audit", "verify", "--json", cwd=repo)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def raw(repo: Path, *statements: str) -> None:
    db = sqlite3.connect(ledger_file(repo))
    with db:
        for statement in statements:
            db.execute(statement)
    db.close()


def seq_of(repo: Path, kind: str, row_id: int) -> int:
    db = sqlite3.connect(ledger_file(repo))
    seq = db.execute("SELECT MAX(seq) FROM audit_chain WHERE kind = ? AND row_id = ?", (kind, row_id)).fetchone()[0]
    db.close()
    return int(seq)


def test_an_untouched_ledger_verifies(sealed: Path) -> None:
    code, data = verify(sealed)
    assert code == 0, data
    assert data["intact"] and data["first_problem"] is None and data["problems"] == []
    # 3 runs, 3 approvals, 3 deployments sealed twice each (started, finished), 3 audit lines
    assert data["entries"] == 3 + 3 + 6 + 3
    assert data["records_checked"] == 12 and data["schema_version"] == 1
    human = cdkit("audit", "verify", cwd=sealed)
    assert human.returncode == 0 and "audit chain intact: 15 entries" in human.stdout


def _swap_deployments(repo: Path) -> str:
    raw(repo, "UPDATE deployments SET id = -id WHERE id IN (1, 3)", "UPDATE deployments SET id = 3 WHERE id = -1",
        "UPDATE deployments SET id = 1 WHERE id = -3")
    return "deployment #1"


def _swap_entries(repo: Path) -> str:
    a, b = seq_of(repo, "approval", 1), seq_of(repo, "approval", 2)
    raw(repo, f"UPDATE audit_chain SET seq = -1 WHERE seq = {a}", f"UPDATE audit_chain SET seq = {a} WHERE seq = {b}",
        f"UPDATE audit_chain SET seq = {b} WHERE seq = -1")
    return f"audit_chain #{a}"


def _delete_entry(repo: Path) -> str:
    seq = seq_of(repo, "run", 2)
    raw(repo, f"DELETE FROM audit_chain WHERE seq = {seq}")
    return f"audit_chain #{seq + 1}"


def _insert_entry(repo: Path) -> str:
    # A forged entry in the middle: the later entries move up one to make room.
    seq = seq_of(repo, "approval", 2)
    raw(repo, "UPDATE audit_chain SET seq = -seq WHERE seq > %d" % seq,
        "UPDATE audit_chain SET seq = 1 - seq WHERE seq < 0",
        f"INSERT INTO audit_chain (seq, kind, row_id, at, record_hash, prev_hash, hash) SELECT {seq + 1}, kind,"
        f" row_id, at, record_hash, hash, hash FROM audit_chain WHERE seq = {seq}")
    return f"audit_chain #{seq + 1}"


def _edit_entry(repo: Path) -> str:
    seq = seq_of(repo, "deployment", 2)
    raw(repo, f"UPDATE audit_chain SET record_hash = '{'0' * 64}' WHERE seq = {seq}")
    return f"audit_chain #{seq}"


MUTATIONS: dict[str, Callable[[Path], str]] = {
    "edit a deployment's status": lambda r: (raw(r, "UPDATE deployments SET status = 'success' WHERE id = 2"),
                                             "deployment #2")[1],
    "edit who deployed": lambda r: (raw(r, "UPDATE deployments SET deployed_by = 'Eve' WHERE id = 3"),
                                    "deployment #3")[1],
    "edit an approver": lambda r: (raw(r, "UPDATE approvals SET approver = 'Mallory' WHERE id = 1"), "approval #1")[1],
    "edit a stage result": lambda r: (raw(r, "UPDATE stage_results SET status = 'passed' WHERE run_id = 2"
                                             " AND stage = 'test'"), "run #2")[1],
    "edit a run": lambda r: (raw(r, f"UPDATE runs SET sha = '{'d' * 40}' WHERE id = 1"), "run #1")[1],
    "edit an audit line": lambda r: (raw(r, "UPDATE audit SET what = 'nothing happened' WHERE id = 2"),
                                     "audit #2")[1],
    "set a column to NULL": lambda r: (raw(r, "UPDATE deployments SET finished_at = NULL WHERE id = 1"),
                                       "deployment #1")[1],
    "delete a deployment": lambda r: (raw(r, "DELETE FROM deployments WHERE id = 2"), "deployment #2")[1],
    "delete an approval": lambda r: (raw(r, "DELETE FROM approvals WHERE id = 3"), "approval #3")[1],
    "delete a stage result": lambda r: (raw(r, "DELETE FROM stage_results WHERE run_id = 1 AND stage = 'build'"),
                                        "run #1")[1],
    "delete a run and its stages": lambda r: (raw(r, "DELETE FROM stage_results WHERE run_id = 3",
                                                  "DELETE FROM runs WHERE id = 3"), "run #3")[1],
    "reorder deployments (swap ids)": _swap_deployments,
    "insert a deployment": lambda r: (raw(r, "INSERT INTO deployments (environment, sha, status, started_at)"
                                             f" VALUES ('prod', '{'e' * 40}', 'success', 5)"), "deployment #4")[1],
    "insert an approval": lambda r: (raw(r, "INSERT INTO approvals (sha, environment, approver, via, created_at)"
                                           f" VALUES ('{'e' * 40}', 'prod', 'Mallory', 'local', 5)"), "approval #4")[1],
    "insert a finished run": lambda r: (raw(r, "INSERT INTO runs (trigger, event, sha, status, started_at, "
                                              f"finished_at) VALUES ('ci', 'push', '{'e' * 40}', 'passed', 1, 2)"),
                                        "run #4")[1],
    "delete a chain entry": _delete_entry,
    "edit a chain entry": _edit_entry,
    "reorder chain entries": _swap_entries,
    "insert a chain entry": _insert_entry,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_tampered_ledger_fails_naming_the_first_broken_record(sealed: Path, mutation: str) -> None:
    assert verify(sealed)[0] == 0  # the control, on this very ledger
    expected = MUTATIONS[mutation](sealed)
    code, data = verify(sealed)
    assert code == 1, data
    assert not data["intact"]
    assert data["first_problem"]["record"] == expected, data["problems"]
    human = cdkit("audit", "verify", cwd=sealed)
    assert human.returncode == 1
    assert f"audit chain BROKEN: first broken record: {expected}: " in human.stdout


def test_every_problem_is_listed_and_the_first_is_the_earliest_in_the_chain(sealed: Path) -> None:
    raw(sealed, "UPDATE deployments SET status = 'failure' WHERE id = 3",
        "UPDATE approvals SET approver = 'Mallory' WHERE id = 1")
    code, data = verify(sealed)
    assert code == 1
    assert [p["record"] for p in data["problems"]] == ["approval #1", "deployment #3"]


def test_a_finished_run_waits_for_its_seal_and_is_sealed_by_the_next_write(sealed: Path) -> None:
    with Ledger(ledger_file(sealed)) as ledger:
        run_id = ledger.start_run(trigger="pre-push", event="pre-push", sha=SHA[0], base_sha=None, ref="main")
        ledger.record_stage(run_id, "test", status="passed")
        code, data = verify(sealed)
        assert code == 0 and data["runs_waiting_for_seal"] == 0  # running: nothing to seal yet
        ledger.finish_run(run_id, "passed")
    code, data = verify(sealed)
    assert code == 0 and data["runs_waiting_for_seal"] == 1
    with Ledger(ledger_file(sealed)) as ledger:
        ledger.audit("next write")
    code, data = verify(sealed)
    assert code == 0 and data["runs_waiting_for_seal"] == 0 and data["entries"] == 15 + 2
    raw(sealed, f"UPDATE stage_results SET status = 'failed' WHERE run_id = {run_id}")
    assert verify(sealed)[1]["first_problem"]["record"] == f"run #{run_id}"


def test_a_waiting_run_that_is_deleted_is_reported(sealed: Path) -> None:
    with Ledger(ledger_file(sealed)) as ledger:
        run_id = ledger.start_run(trigger="ci", event="push", sha=SHA[0], base_sha=None, ref="main")
        ledger.finish_run(run_id, "passed")
    raw(sealed, f"DELETE FROM runs WHERE id = {run_id}")
    code, data = verify(sealed)
    assert code == 1 and data["first_problem"]["record"] == f"run #{run_id}"
    assert "queued for its seal, then deleted" in data["first_problem"]["problem"]


def test_re_finishing_a_sealed_run_does_not_queue_it_for_a_new_seal(sealed: Path) -> None:
    # The trigger queues a run only on its first finish: an edit that touches finished_at is not blessed.
    raw(sealed, "UPDATE runs SET status = 'passed', finished_at = finished_at + 1 WHERE id = 2")
    with Ledger(ledger_file(sealed)) as ledger:
        ledger.audit("a later write seals whatever is queued")
    code, data = verify(sealed)
    assert code == 1 and data["first_problem"]["record"] == "run #2"


WRITER = """
import sys
from pathlib import Path
from cdkit.ledger import Ledger
from tests.test_audit_chain import write_history
with Ledger(Path(sys.argv[1])) as ledger:
    for n in range(int(sys.argv[3])):
        write_history(ledger, f"{int(sys.argv[2]):02d}{n:038d}", fail=n % 4 == 3)
"""


def test_many_writes_from_concurrent_processes_verify(sealed: Path) -> None:
    path = ledger_file(sealed)
    root = Path(__file__).resolve().parent.parent
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(i), "15"], cwd=root)
               for i in range(4)]
    checks = 0
    with Ledger(path) as reader:
        while any(w.poll() is None for w in writers):
            with reader.snapshot() as db:  # verified while they write: never a false alarm
                result = chain.verify(db)
            assert result.intact, result.problems[:3]
            checks += 1
            time.sleep(0.05)
    assert all(w.wait(timeout=120) == 0 for w in writers)
    code, data = verify(sealed)
    assert code == 0, data["problems"][:3]
    assert data["entries"] == 15 + 4 * 15 * 5 and checks > 0


def _schema_7_ledger(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:7]:
        assert isinstance(migration, str)
        for statement in _statements(migration):
            db.execute(statement)
    db.execute("PRAGMA user_version = 7")
    return db


def test_a_schema_7_ledger_gets_its_chain_backfilled_on_migration(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_NAME
    db = _schema_7_ledger(path)
    db.execute("INSERT INTO runs (trigger, event, sha, status, started_at, finished_at) VALUES"
               " ('ci', 'push', 'x', 'passed', 1, 2), ('ci', 'push', 'y', 'running', 3, NULL)")
    db.execute("INSERT INTO stage_results (run_id, stage, status) VALUES (1, 'test', 'passed')")
    db.execute("INSERT INTO deployments (environment, sha, status, started_at, finished_at, reason) VALUES"
               " ('prod', 'x', 'success', 5, 6, 'first')")
    db.execute("INSERT INTO approvals (sha, environment, approver, via, created_at) VALUES"
               " ('x', 'prod', 'bob', 'local', 4)")
    db.execute("INSERT INTO audit (at, what) VALUES (7, 'an old line')")
    db.close()
    with Ledger(path) as ledger:
        assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        result = chain.verify(ledger.db)
        assert result.intact and result.entries == 4  # the running run is sealed when it finishes
        ledger.finish_run(2, "passed")
        ledger.audit("after the migration")
        result = chain.verify(ledger.db)
        assert result.intact and result.entries == 6
    raw_db = sqlite3.connect(path)
    with raw_db:
        raw_db.execute("UPDATE deployments SET reason = 'edited' WHERE id = 1")
    raw_db.close()
    with Ledger(path) as ledger:
        assert [p.where for p in chain.verify(ledger.db).problems] == ["deployment #1"]


def test_a_later_migration_adding_columns_keeps_earlier_seals_valid(sealed: Path) -> None:
    # What another engineer's migration does (signatures, break-glass flags): earlier rows keep verifying...
    raw(sealed, "ALTER TABLE deployments ADD COLUMN break_glass INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE approvals ADD COLUMN later_note TEXT")
    assert verify(sealed)[0] == 0
    # ...and setting the new column on an old row is an edit like any other.
    raw(sealed, "UPDATE deployments SET break_glass = 1 WHERE id = 2")
    code, data = verify(sealed)
    assert code == 1 and data["first_problem"]["record"] == "deployment #2"


def test_the_seal_format_is_the_documented_canonical_json(sealed: Path) -> None:
    """Anyone can recompute a seal without cdkit: sha256 over the canonical JSON the docstring describes."""
    import hashlib

    db = sqlite3.connect(ledger_file(sealed))
    db.row_factory = sqlite3.Row
    entry = db.execute("SELECT * FROM audit_chain WHERE kind = 'approval' AND row_id = 1").fetchone()
    row = db.execute("SELECT * FROM approvals WHERE id = 1").fetchone()
    record = {"kind": "approval", "id": 1, "row": {k: row[k] for k in row.keys() if row[k] not in (None, "")}}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(text.encode()).hexdigest() == entry["record_hash"]
    link = {"prev": entry["prev_hash"], "kind": "approval", "row_id": 1, "at": entry["at"],
            "record": entry["record_hash"]}
    assert hashlib.sha256(json.dumps(link, sort_keys=True, separators=(",", ":")).encode()).hexdigest() == \
        entry["hash"]
    previous = db.execute("SELECT hash FROM audit_chain WHERE seq = ?", (entry["seq"] - 1,)).fetchone()
    assert previous["hash"] == entry["prev_hash"]
    db.close()
