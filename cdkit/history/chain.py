"""The ledger's tamper-evident hash chain: every record cdkit writes for an audit carries the previous hash.

Each entry of `audit_chain` seals one record (a finished run with its stage results,
a deployment at each state it reaches, an approval, an audit line) as it is written, in
the same transaction:

    record_hash = sha256(canonical text of the record's row(s), its id included)
    hash        = sha256(previous entry's hash, kind, row id, record_hash)

`verify` recomputes everything: an edited row no longer matches its latest seal, a
deleted one is missing, a row inserted behind cdkit's back has no seal, a reordered
or deleted seal breaks the links. What no chain inside one file can show is the loss
of its newest entries together with their rows; compare `head` with a copy kept
elsewhere (the CI job summary prints it) to catch that.

Runs are sealed lazily (before the next deployment, approval or audit line, and when
history is read): hashing would add ~6 ms to every push through the pre-push hook, and a
deploy, which depends on the runs, seals them first. This module must stay cheap to
import: the ledger imports it on its write path.
"""
from __future__ import annotations

import sqlite3
from typing import NamedTuple

GENESIS = "0" * 64

# kind -> (table, the column its rows are ordered by). Runs also cover their stage results.
KINDS = {"run": "runs", "deployment": "deployments", "approval": "approvals", "audit": "audit"}

SCHEMA = """
    CREATE TABLE audit_chain (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        row_id INTEGER NOT NULL,
        at REAL NOT NULL,
        record_hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_chain_row ON audit_chain(kind, row_id, seq);
    CREATE TABLE audit_chain_start (
        kind TEXT PRIMARY KEY,
        last_unsealed_id INTEGER NOT NULL
    );
    INSERT INTO audit_chain_start SELECT 'run', COALESCE(MAX(id), 0) FROM runs;
    INSERT INTO audit_chain_start SELECT 'deployment', COALESCE(MAX(id), 0) FROM deployments;
    INSERT INTO audit_chain_start SELECT 'approval', COALESCE(MAX(id), 0) FROM approvals;
    INSERT INTO audit_chain_start SELECT 'audit', COALESCE(MAX(id), 0) FROM audit
"""


def _sha256(text: str) -> str:
    import hashlib  # here, not at import time: the hook's path imports this module but never hashes

    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _canonical(row: sqlite3.Row | None) -> str:
    """The row as text that changes whenever any column does (repr of str/int/float/None is stable)."""
    if row is None:
        return "missing"
    return repr(sorted((key, row[key]) for key in row.keys()))


def record_text(db: sqlite3.Connection, kind: str, row_id: int) -> str | None:
    """The canonical text of one record, or None when its row is gone."""
    table = KINDS[kind]
    row = db.execute(f"SELECT * FROM {table} WHERE id = ?", (row_id,)).fetchone()  # noqa: S608 - fixed names
    if row is None:
        return None
    text = _canonical(row)
    if kind == "run":
        stages = db.execute("SELECT * FROM stage_results WHERE run_id = ? ORDER BY stage", (row_id,)).fetchall()
        text += "\n" + "\n".join(_canonical(s) for s in stages)
    return text


def _link(prev_hash: str, kind: str, row_id: int, record_hash: str) -> str:
    return _sha256(f"{prev_hash}\n{kind}\n{row_id}\n{record_hash}")


def head(db: sqlite3.Connection) -> str:
    row = db.execute("SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1").fetchone()
    return str(row[0]) if row else GENESIS


def append(db: sqlite3.Connection, kind: str, row_id: int, at: float) -> str:
    """Seal the current state of one record (inside the caller's write transaction); the new head."""
    if kind != "run":
        seal_finished_runs(db, at)
    return _append(db, kind, row_id, at)


def _append(db: sqlite3.Connection, kind: str, row_id: int, at: float) -> str:
    text = record_text(db, kind, row_id)
    if text is None:
        raise ValueError(f"cannot seal {kind} #{row_id}: it does not exist")
    record_hash = _sha256(text)
    prev = head(db)
    new = _link(prev, kind, row_id, record_hash)
    db.execute("INSERT INTO audit_chain (kind, row_id, at, record_hash, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
               (kind, row_id, at, record_hash, prev, new))
    return new


def _start(db: sqlite3.Connection, kind: str) -> int:
    row = db.execute("SELECT last_unsealed_id FROM audit_chain_start WHERE kind = ?", (kind,)).fetchone()
    return int(row[0]) if row else 0


def seal_finished_runs(db: sqlite3.Connection, at: float) -> int:
    """Seal every finished run that has no seal yet (see the module docstring for why runs wait); how many."""
    rows = db.execute(
        "SELECT id FROM runs WHERE finished_at IS NOT NULL AND id > ?"
        " AND id NOT IN (SELECT row_id FROM audit_chain WHERE kind = 'run') ORDER BY id", (_start(db, "run"),)
    ).fetchall()
    for row in rows:
        _append(db, "run", int(row[0]), at)
    return len(rows)


class Problem(NamedTuple):
    where: str  # "audit_chain #7", "deployment #3"
    what: str


def verify(db: sqlite3.Connection) -> tuple[list[Problem], int]:
    """Every way the ledger no longer matches its chain; (problems, entries checked)."""
    problems: list[Problem] = []
    prev = GENESIS
    latest: dict[tuple[str, int], str] = {}
    entries = db.execute("SELECT * FROM audit_chain ORDER BY seq").fetchall()
    for entry in entries:
        where = f"audit_chain #{entry['seq']}"
        if entry["prev_hash"] != prev:
            problems.append(Problem(where, "does not follow the entry before it (an entry was deleted, "
                                           "inserted or moved)"))
        if _link(entry["prev_hash"], entry["kind"], entry["row_id"], entry["record_hash"]) != entry["hash"]:
            problems.append(Problem(where, "its hash does not match its contents (the entry was edited)"))
        prev = entry["hash"]
        if entry["kind"] in KINDS:
            latest[(entry["kind"], int(entry["row_id"]))] = entry["record_hash"]
        else:
            problems.append(Problem(where, f"unknown kind {entry['kind']!r}"))
    for (kind, row_id), record_hash in latest.items():
        text = record_text(db, kind, row_id)
        if text is None:
            problems.append(Problem(f"{kind} #{row_id}", "was deleted (it is sealed in the chain)"))
        elif _sha256(text) != record_hash:
            problems.append(Problem(f"{kind} #{row_id}", "was changed after it was sealed"))
    problems += _unsealed(db, latest)
    return problems, len(entries)


def _unsealed(db: sqlite3.Connection, sealed: dict[tuple[str, int], str]) -> list[Problem]:
    """Rows that cdkit would have sealed but that have no seal: written behind its back."""
    problems = []
    for kind, table in KINDS.items():
        finished = " AND finished_at IS NOT NULL" if kind == "run" else ""
        ids = db.execute(f"SELECT id FROM {table} WHERE id > ?{finished} ORDER BY id",  # noqa: S608
                         (_start(db, kind),)).fetchall()
        for (row_id,) in ids:
            if (kind, int(row_id)) not in sealed and not (kind == "run" and _is_newest_unsealed_run(db, row_id)):
                problems.append(Problem(f"{kind} #{row_id}", "has no seal in the chain (written outside cdkit)"))
    return problems


def _is_newest_unsealed_run(db: sqlite3.Connection, run_id: int) -> bool:
    """A finished run after the newest seal of anything is merely waiting to be sealed (runs are sealed lazily)."""
    row = db.execute("SELECT MAX(row_id) FROM audit_chain WHERE kind = 'run'").fetchone()
    return row[0] is None or run_id > int(row[0])
