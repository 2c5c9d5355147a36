"""The ledger's tamper-evident hash chain: every audit-relevant record carries the hash of the one before.

What is sealed (`KINDS`): each finished run with its stage results, each deployment at
every state it reaches (started, then finished: a status change is a new seal of the same
row), each approval and each audit line. One `audit_chain` entry per seal, appended in the
same transaction as the write it seals:

    record_hash = sha256(canonical JSON of the record: its kind, id and row, a run's stage results)
    hash        = sha256(canonical JSON of {prev, kind, row_id, at, record})   (prev: the entry before's hash)

Canonical JSON is `json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
in UTF-8; a row lists only the columns whose value is neither NULL nor the column's
declared default, so a migration that adds a column (with a default) leaves every earlier
seal valid, while setting it on an old row breaks that row's seal. A migration that
rewrites sealed rows must seal them again (`append` for each).

`verify` recomputes everything: an edited row no longer matches its latest seal, a
deleted one is missing, a row inserted behind cdkit's back has no seal, an edited,
deleted, inserted or moved entry breaks the links. It is tamper-*evident*, not proof: who
can write the file can also recompute every hash, and dropping the newest entries with
their rows leaves a shorter chain that still verifies. Comparing `head` with a copy kept
elsewhere (the CI job summary prints it) catches both.

Runs are sealed lazily: when a run finishes, a trigger queues it in `audit_chain_pending`
(no hashing on the pre-push hook's path: importing hashlib alone costs ~20 ms there) and
the next seal of anything else, a deploy (which depends on the runs), `cdkit audit` and
`cdkit history` seal the queue first. Until then a finished run is "waiting", which
`cdkit audit verify` reports apart from problems.

This module must stay cheap to import: the ledger imports it on its write path.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from cdkit.ntuple import NamedTuple

GENESIS = "0" * 64

# kind -> its table; every table has an INTEGER `id`. Runs also cover their stage results.
KINDS = {"run": "runs", "deployment": "deployments", "approval": "approvals", "audit": "audit"}

# Migration 3 -> 4 as it shipped (a chain in an earlier format, which migration 7's new columns broke);
# kept so that step stays what it was. Migration 7 -> 8 (`migrate`) replaces it.
SCHEMA_V4 = """
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

SCHEMA = (
    "DROP TABLE IF EXISTS audit_chain_start",
    "DROP TABLE IF EXISTS audit_chain",
    """CREATE TABLE audit_chain (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        row_id INTEGER NOT NULL,
        at REAL NOT NULL,
        record_hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX audit_chain_row ON audit_chain(kind, row_id, seq)",
    "CREATE TABLE audit_chain_pending (run_id INTEGER PRIMARY KEY)",
    # Only the first finish queues a run: an UPDATE of a finished run must not get it resealed.
    """CREATE TRIGGER audit_chain_run_finished AFTER UPDATE OF finished_at ON runs
        WHEN OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL
    BEGIN
        INSERT OR IGNORE INTO audit_chain_pending (run_id) VALUES (NEW.id);
    END""",
)


def migrate(db: sqlite3.Connection, at: float) -> None:
    """Schema 7 -> 8: the chain in this format, backfilled over every record already in the ledger."""
    for statement in SCHEMA:
        db.execute(statement)
    backfill(db, at)


def _sha256(text: str) -> str:
    import hashlib  # here, not at import time: the hook's path imports this module but never hashes

    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def canonical(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _Tables:
    """Each table's columns and declared defaults (read once per use: a migration may have added some)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._defaults: dict[str, dict[str, Any]] = {}

    def defaults(self, table: str) -> dict[str, Any]:
        found = self._defaults.get(table)
        if found is None:
            found = {}
            for info in self.db.execute(f"PRAGMA table_info({table})").fetchall():
                name, default = info[1], info[4]
                # The default is SQL text from our own schema ('0', "''", 'pending'): let SQLite read it.
                found[name] = None if default is None else self.db.execute(f"SELECT {default}").fetchone()[0]
            self._defaults[table] = found
        return found

    def significant(self, table: str, columns: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
        defaults = self.defaults(table)
        return {c: v for c, v in zip(columns, values) if v is not None and v != defaults.get(c)}


def _record(kind: str, row_id: int, row: dict[str, Any], stages: list[dict[str, Any]] | None) -> str:
    doc: dict[str, Any] = {"kind": kind, "id": row_id, "row": row}
    if stages is not None:
        doc["stages"] = stages
    return canonical(doc)


def _plain(db: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = db.cursor()
    cursor.row_factory = None  # plain tuples, whatever the connection's factory
    rows = cursor.execute(sql, args).fetchall()
    return [c[0] for c in cursor.description], rows


def record_text(db: sqlite3.Connection, kind: str, row_id: int, tables: _Tables | None = None) -> str | None:
    """The canonical text of one record, or None when its row is gone."""
    tables = tables or _Tables(db)
    table = KINDS[kind]
    columns, rows = _plain(db, f"SELECT * FROM {table} WHERE id = ?", (row_id,))  # noqa: S608 - fixed names
    if not rows:
        return None
    stages = None
    if kind == "run":
        stage_columns, stage_rows = _plain(db, "SELECT * FROM stage_results WHERE run_id = ? ORDER BY stage",
                                           (row_id,))
        stages = [tables.significant("stage_results", stage_columns, s) for s in stage_rows]
    return _record(kind, row_id, tables.significant(table, columns, rows[0]), stages)


class Record(NamedTuple):
    kind: str
    row_id: int
    text: str
    sealable: bool  # a run that has not finished is not sealed yet


def all_records(db: sqlite3.Connection, kind: str, tables: _Tables | None = None) -> Iterator[Record]:
    """Every record of `kind` in id order, read in bulk (one query per table, not one per row)."""
    tables = tables or _Tables(db)
    table = KINDS[kind]
    stages: dict[int, list[dict[str, Any]]] = {}
    if kind == "run":
        stage_columns, stage_rows = _plain(db, "SELECT * FROM stage_results ORDER BY run_id, stage")
        run_at = stage_columns.index("run_id")
        for s in stage_rows:
            stages.setdefault(int(s[run_at]), []).append(tables.significant("stage_results", stage_columns, s))
    columns, rows = _plain(db, f"SELECT * FROM {table} ORDER BY id")  # noqa: S608 - fixed names
    id_at = columns.index("id")
    finished_at = columns.index("finished_at") if kind == "run" else None
    for values in rows:
        row_id = int(values[id_at])
        text = _record(kind, row_id, tables.significant(table, columns, values),
                       stages.get(row_id, []) if kind == "run" else None)
        yield Record(kind, row_id, text, finished_at is None or values[finished_at] is not None)


def _link(prev_hash: str, kind: str, row_id: int, at: float, record_hash: str) -> str:
    return _sha256(canonical({"prev": prev_hash, "kind": kind, "row_id": row_id, "at": at, "record": record_hash}))


def head(db: sqlite3.Connection) -> str:
    """The newest entry's hash (GENESIS for an empty chain): keep a copy elsewhere to notice a rewrite."""
    row = db.execute("SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1").fetchone()
    return str(row[0]) if row else GENESIS


def append(db: sqlite3.Connection, kind: str, row_id: int, at: float) -> str:
    """Seal the current state of one record (inside the caller's write transaction); the new head."""
    if kind != "run":
        seal_pending(db, at)
    text = record_text(db, kind, row_id)
    if text is None:
        raise ValueError(f"cannot seal {kind} #{row_id}: it does not exist")
    return _append(db, kind, row_id, at, text)


def _append(db: sqlite3.Connection, kind: str, row_id: int, at: float, text: str) -> str:
    record_hash = _sha256(text)
    prev = head(db)
    new = _link(prev, kind, row_id, at, record_hash)
    db.execute("INSERT INTO audit_chain (kind, row_id, at, record_hash, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)",
               (kind, row_id, at, record_hash, prev, new))
    return new


def seal_pending(db: sqlite3.Connection, at: float) -> int:
    """Seal the finished runs waiting in the queue (see the module docstring for why runs wait); how many.

    A queued run that is gone stays queued, so `verify` reports it.
    """
    sealed = 0
    for (run_id,) in db.execute("SELECT run_id FROM audit_chain_pending ORDER BY run_id").fetchall():
        text = record_text(db, "run", int(run_id))
        if text is None:
            continue
        if db.execute("SELECT 1 FROM audit_chain WHERE kind = 'run' AND row_id = ?", (run_id,)).fetchone() is None:
            _append(db, "run", int(run_id), at, text)
            sealed += 1
        db.execute("DELETE FROM audit_chain_pending WHERE run_id = ?", (run_id,))
    return sealed


def backfill(db: sqlite3.Connection, at: float) -> int:
    """Seal every record there is (the migration's start of the chain), kind by kind in id order; how many."""
    tables = _Tables(db)
    count = 0
    for kind in KINDS:
        for record in list(all_records(db, kind, tables)):
            if record.sealable:
                _append(db, kind, record.row_id, at, record.text)
                count += 1
    return count


class Problem(NamedTuple):
    where: str  # "audit_chain #7", "deployment #3"
    what: str
    seq: int | None  # the chain entry it shows at (the order problems are reported in); None: after all

    def as_data(self) -> dict[str, Any]:
        return {"record": self.where, "problem": self.what, "entry": self.seq}


class Verification(NamedTuple):
    problems: list[Problem]  # first broken record first
    entries: int
    records: int  # rows checked against their seals
    waiting: int  # finished runs queued for their seal
    head: str

    @property
    def intact(self) -> bool:
        return not self.problems


def _walk(db: sqlite3.Connection, problems: list[Problem]) -> tuple[dict[tuple[str, int], tuple[str, int]], int]:
    """Check every link; each record's latest seal: (kind, id) -> (record_hash, seq); and the entry count."""
    prev = GENESIS
    latest: dict[tuple[str, int], tuple[str, int]] = {}
    _, entries = _plain(db, "SELECT seq, kind, row_id, at, record_hash, prev_hash, hash FROM audit_chain ORDER BY seq")
    for seq, kind, row_id, at, record_hash, prev_hash, entry_hash in entries:
        where = f"audit_chain #{seq}"
        if prev_hash != prev:
            problems.append(Problem(where, "does not follow the entry before it: an entry was deleted, inserted "
                                           "or moved there", seq))
        if _link(prev_hash, kind, row_id, at, record_hash) != entry_hash:
            problems.append(Problem(where, "its hash does not match its contents: the entry was edited", seq))
        prev = entry_hash
        if kind in KINDS:
            latest[(kind, int(row_id))] = (record_hash, seq)
        else:
            problems.append(Problem(where, f"seals an unknown kind of record {kind!r}", seq))
    return latest, len(entries)


def verify(db: sqlite3.Connection) -> Verification:
    """Every way the ledger no longer matches its chain (read only)."""
    problems: list[Problem] = []
    latest, entries = _walk(db, problems)
    waiting_ids = {int(r[0]) for r in db.execute("SELECT run_id FROM audit_chain_pending").fetchall()}
    tables = _Tables(db)
    records = waiting = 0
    for kind in KINDS:
        for record in all_records(db, kind, tables):
            seal = latest.pop((kind, record.row_id), None)
            where = f"{kind} #{record.row_id}"
            if seal is None:
                if kind == "run" and record.row_id in waiting_ids and record.sealable:
                    waiting += 1
                elif record.sealable:
                    problems.append(Problem(where, "has no seal in the chain: it was inserted outside cdkit, "
                                                   "or its seal was deleted", None))
                continue
            records += 1
            if _sha256(record.text) != seal[0]:
                problems.append(Problem(where, f"was changed after it was sealed (audit_chain #{seal[1]})", seal[1]))
    for (kind, row_id), (_, seq) in latest.items():
        problems.append(Problem(f"{kind} #{row_id}", f"was deleted (it is sealed at audit_chain #{seq})", seq))
    existing = {int(r[0]) for r in db.execute("SELECT id FROM runs").fetchall()} if waiting_ids else set()
    for run_id in sorted(waiting_ids - existing):
        problems.append(Problem(f"run #{run_id}", "finished and was queued for its seal, then deleted", None))
    problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    return Verification(problems, entries, records, waiting, head(db))
