"""The embedded SQLite ledger: runs, stage results, approvals, deployments, the outbox.

It lives in `<git common dir>/cdkit/ledger.sqlite3`, so every worktree of a
repository shares it and nothing is committed. WAL mode and a busy timeout let
two runs at once both record everything; each write is one short transaction, so
a crash leaves the ledger consistent (a run that never finished stays `running`
and is shown as interrupted once its process is gone).
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cdkit.errors import CdkitError, GateFailed
from cdkit.history import chain
from cdkit.util import HOST, local_process_gone

# Not `typing`: every push imports this module, and typing (with NamedTuple's per-field
# ForwardRef compiles) costs it milliseconds; see cdkit/ntuple.py. mypy treats any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple

    from cdkit.runner import StageResult
else:
    from cdkit.ntuple import NamedTuple

SCHEMA_VERSION = 10
CLAIM_SECONDS = 600.0  # longer than any one send with its retries and rate-limit waits
LEDGER_NAME = "ledger.sqlite3"
# The files SQLite keeps beside the ledger (where a writer's lock is).
SIDE_FILES = ("-wal", "-shm", "-journal")
DEFAULT_WAIT = 30.0  # seconds a busy ledger is waited for; CDKIT_LEDGER_WAIT changes it
WAIT_VAR = "CDKIT_LEDGER_WAIT"

# Each entry migrates from version i to i+1: SQL, or a function of (the connection, now) for a step SQL cannot
# do; all in one transaction. A newer schema than this code knows is refused. A migration that rewrites rows
# the audit chain seals (runs, stage results, deployments, approvals, audit) must seal them again
# (cdkit.history.chain.append); adding a column with a default needs nothing.
Migration = str | Callable[[sqlite3.Connection, float], None]
MIGRATIONS: tuple[Migration, ...] = (
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        trigger TEXT NOT NULL,
        event TEXT NOT NULL,
        sha TEXT NOT NULL,
        base_sha TEXT,
        ref TEXT,
        dirty INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'running',
        started_at REAL NOT NULL,
        finished_at REAL,
        pid INTEGER,
        host TEXT,
        config_path TEXT
    );
    CREATE INDEX runs_sha ON runs(sha);
    CREATE TABLE stage_results (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        stage TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        exit_code INTEGER,
        started_at REAL,
        finished_at REAL,
        log_path TEXT,
        command TEXT,
        PRIMARY KEY (run_id, stage)
    );
    CREATE TABLE approvals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sha TEXT NOT NULL,
        environment TEXT NOT NULL,
        approver TEXT NOT NULL,
        via TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE INDEX approvals_sha ON approvals(sha, environment);
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        environment TEXT NOT NULL,
        sha TEXT NOT NULL,
        status TEXT NOT NULL,
        rollback INTEGER NOT NULL DEFAULT 0,
        approval TEXT,
        github_id INTEGER,
        log_path TEXT,
        started_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX deployments_env ON deployments(environment, id);
    CREATE TABLE locks (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        remote_id TEXT,
        created_at REAL NOT NULL,
        delivered_at REAL
    );
    CREATE INDEX outbox_state ON outbox(state, id);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        what TEXT NOT NULL
    );
    """,
    # 1 -> 2: an outbox item whose send began but whose outcome is unknown (crash, timeout, 5xx)
    # is "in doubt": the next delivery first looks for it on GitHub instead of sending it twice.
    """
    ALTER TABLE outbox ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0
    """,
    # 2 -> 3: a process sending an item claims it until then, so two processes delivering
    # at once (`cdkit sync` beside a run in another worktree) never both send it.
    """
    ALTER TABLE outbox ADD COLUMN claimed_until REAL
    """,
    # 3 -> 4: the tamper-evident audit chain (cdkit.history.chain), and who started each deployment.
    chain.SCHEMA_V4 + """;
    ALTER TABLE deployments ADD COLUMN deployed_by TEXT
    """,
    # 4 -> 5: every command's cost independent of history length: the last success of an
    # environment and a SHA's deployments are index seeks; outbox counts per state are kept
    # by triggers instead of counted.
    """
    CREATE INDEX deployments_env_status ON deployments(environment, status, id);
    CREATE INDEX deployments_env_sha ON deployments(environment, sha, id);
    CREATE INDEX approvals_env ON approvals(environment, id);
    CREATE TABLE outbox_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO outbox_counts SELECT state, COUNT(*) FROM outbox GROUP BY state;
    CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox BEGIN
        INSERT INTO outbox_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER outbox_counts_update AFTER UPDATE OF state ON outbox WHEN OLD.state != NEW.state BEGIN
        UPDATE outbox_counts SET n = n - 1 WHERE state = OLD.state;
        INSERT INTO outbox_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox BEGIN
        UPDATE outbox_counts SET n = n - 1 WHERE state = OLD.state;
    END
    """,
    # 5 -> 6: who holds a claim (pid@host), so a claim of a process known dead (a killed `cdkit sync`)
    # is taken over at once instead of holding its items back until it expires.
    """
    ALTER TABLE outbox ADD COLUMN claimed_by TEXT
    """,
    # 6 -> 7: verification and automatic rollback (why a deployment ended as it did, what it rolled back
    # from), and the SHAs quarantined per environment: no automatic deploy picks them again.
    """
    ALTER TABLE deployments ADD COLUMN reason TEXT;
    ALTER TABLE deployments ADD COLUMN rollback_from TEXT;
    ALTER TABLE deployments ADD COLUMN automatic INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE quarantine (
        environment TEXT NOT NULL,
        sha TEXT NOT NULL,
        reason TEXT NOT NULL,
        deployment_id INTEGER,
        created_at REAL NOT NULL,
        lifted_at REAL,
        lifted_reason TEXT
    );
    CREATE INDEX quarantine_env ON quarantine(environment, sha)
    """,
    # 7 -> 8: the audit chain in its documented format (canonical JSON, columns at their default left out, so
    # an added column no longer breaks earlier seals), runs queued for their seal by a trigger as they finish,
    # and every record already in the ledger sealed now.
    chain.migrate,
    # 8 -> 9: signed local approvals (the SSH signature and the exact text it covers), and the committed
    # pipeline (path@sha) whose rules governed each approval and deployment.
    """
    ALTER TABLE approvals ADD COLUMN signature TEXT;
    ALTER TABLE approvals ADD COLUMN signed_message TEXT;
    ALTER TABLE approvals ADD COLUMN governed_by TEXT;
    ALTER TABLE deployments ADD COLUMN governed_by TEXT
    """,
    # 9 -> 10: adoption (`cdkit adopt`: what an environment ran before cdkit, a deployments row of status
    # 'adopted', at most one per environment, enforced here too) and withdrawn approvals (`cdkit approve
    # --revoke`: a row of its own that names the approval it withdraws; nothing is deleted).
    """
    CREATE UNIQUE INDEX deployments_adopted ON deployments(environment) WHERE status = 'adopted';
    ALTER TABLE approvals ADD COLUMN revokes INTEGER REFERENCES approvals(id)
    """,
)

# How cdkit.release words the reason of a `--force` deploy past a quarantine (the history reads it back).
FORCED_REASON_PREFIX = "forced past its quarantine by "
# What an adoption is recorded as (`cdkit adopt`): the environment ran this before cdkit's first deployment
# there; nothing was deployed or verified by cdkit. An adoption of "nothing" (--empty) has the SHA "".
ADOPTED = "adopted"
# Deployment statuses after which the environment runs the deployed SHA (verified, unverified, or not), and an
# adoption (what it ran before cdkit).
LIVE_STATUSES = frozenset({"success", "verified", "verification_failed", ADOPTED})


class AlreadyDeployed(GateFailed):
    """`cdkit adopt` after the environment's first deployment or adoption: adoption is a start, recorded once."""


def _skip_checkpoint_on_close(db: sqlite3.Connection) -> None:
    """No WAL checkpoint when this connection closes (Python 3.12+ exposes the switch; 3.10/3.11 do not).

    Every short-lived cdkit process (each push) would otherwise copy the WAL back into the
    database on exit; SQLite's automatic checkpoint at 1,000 pages still bounds the WAL.
    """
    flag = getattr(sqlite3, "SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE", None)
    setconfig = getattr(db, "setconfig", None)
    if flag is not None and setconfig is not None:
        setconfig(flag, True)


def _statements(script: str) -> list[str]:
    """A migration's statements, one each (a trigger's body holds `;` too), to run inside our transaction.

    `executescript` would commit first; this keeps a migration all or nothing.
    """
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return statements


def _storable(text: str | None) -> str | None:
    """Text SQLite can store: names from git keep undecodable bytes as surrogates, shown as \\xNN here.

    A branch or file name need not be UTF-8 (`caf\\xe9`); it must not crash the run that records it.
    """
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def _to_json(value: Any) -> str:
    import json  # not at import time: the pre-push hook records runs without needing it

    return json.dumps(value, sort_keys=True)


def _from_json(text: str) -> Any:
    import json

    return json.loads(text)


def _claimant_gone(claimant: str | None) -> bool:
    """Whether the process that claimed an outbox item (`pid@host`) is known to have ended."""
    pid, _, host = (claimant or "").partition("@")
    return pid.isdigit() and local_process_gone(int(pid), host)


ABANDONED_REASON = "interrupted: cdkit's process ended before the stage did (killed, or its machine stopped)"


def run_interrupted(run_status: str, pid: int | None, host: str | None) -> bool:
    """Whether a run recorded `running` never will finish: its cdkit process is gone (kill -9, a crash)."""
    return run_status == "running" and bool(pid) and local_process_gone(int(pid or 0), host)


def abandoned(stage_status: str, run_status: str, pid: int | None, host: str | None) -> bool:
    """Whether a stage recorded `running` never will finish: its run is interrupted (`run_interrupted`).

    Shown as `cancelled` (ABANDONED_REASON), as its run is shown `interrupted`; the row itself is
    left as written (the audit chain seals rows as they were recorded).
    """
    return stage_status == "running" and run_interrupted(run_status, pid, host)


def _stage_record(row: sqlite3.Row) -> StageRecord:
    """A stage_results row, read with its run's status, pid and host (`run_status`, `run_pid`, `run_host`)."""
    record = StageRecord(**{k: row[k] for k in StageRecord._fields})
    if abandoned(record.status, row["run_status"], row["run_pid"], row["run_host"]):
        return record._replace(status="cancelled", reason=ABANDONED_REASON)
    return record


class LedgerError(CdkitError):
    """The ledger cannot be opened or written: its message says why and what to do (exit 2)."""


class LedgerBusy(LedgerError):
    """Another process kept the ledger locked for longer than the wait bound."""


class LedgerFull(LedgerError):
    """The disk holding the ledger is full: the transaction was rolled back, nothing half-written."""


def ledger_wait(environ: Mapping[str, str]) -> float:
    """How long to wait for a busy ledger: CDKIT_LEDGER_WAIT seconds, else DEFAULT_WAIT."""
    text = environ.get(WAIT_VAR, "").strip()
    if not text:
        return DEFAULT_WAIT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise LedgerError(f"{WAIT_VAR}={text!r} is not a number of seconds (use e.g. {WAIT_VAR}=60)")
    return value


def refuse_symlinks(directory: Path) -> None:
    """Refuse `directory` or any entry in it (the ledger, SQLite's side files, logs) that is a symlink.

    Someone who can write to the git dir (a shared repository, an unpacked archive) could
    plant `cdkit/ledger.sqlite3 -> ~/.bashrc` or `cdkit/logs -> /elsewhere`; cdkit would then
    write where the link points. It never follows one: the user removes it.
    """
    _refuse_link(directory)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _os_error(directory, exc) from None
    for entry in entries:
        if entry.is_symlink():
            _refuse_link(Path(entry.path))


def _refuse_link(path: Path) -> None:
    if os.path.islink(path):
        raise LedgerError(
            f"{path} is a symbolic link (to {os.readlink(path)}); cdkit never follows links in the git dir. "
            f"Remove it (rm {path}) and run cdkit again"
        )


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) without following a symlink at its last component."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        make_private_dir(path)
        return
    except OSError as exc:
        raise _os_error(path, exc) from None
    _refuse_link(path)
    if not path.is_dir():
        raise LedgerError(f"{path} is not a directory; cdkit keeps its ledger and logs there. "
                          f"Move it aside (mv {path} {path}.old) and run cdkit again")


def _os_error(path: Path, exc: OSError) -> LedgerError:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LedgerFull(f"{path}: no space left on the disk holding the ledger; nothing was recorded. "
                          "Free some space (`cdkit gc` prunes old logs) and run again")
    return LedgerError(f"{path}: {exc.strerror or exc}; check the permissions of the git dir")


def lock_holders(paths: Sequence[Path]) -> list[str]:
    """Who holds a write lock on any of `paths`, from /proc/locks: `pid N (command)` each.

    SQLite locks with fcntl, which Linux lists with the holder's pid; elsewhere (or for a
    lock taken through an open file description) nothing is known and the list is empty.
    """
    inodes = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        inodes.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pids: list[int] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or "->" in fields or fields[3] != "WRITE" or fields[5] not in inodes:
            continue
        pid = int(fields[4]) if fields[4].lstrip("-").isdigit() else -1
        if pid > 0 and pid != os.getpid() and pid not in pids:
            pids.append(pid)
    return [f"pid {pid} ({_command_of(pid)})" for pid in pids]


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "command unknown"
    text = " ".join(a.decode("utf-8", "replace") for a in argv)
    return text if len(text) <= 120 else text[:117] + "..."


class RunRecord(NamedTuple):
    id: int
    trigger: str
    event: str
    sha: str
    base_sha: str | None
    ref: str | None
    dirty: bool
    status: str
    started_at: float
    finished_at: float | None
    pid: int | None
    host: str | None


class StageRecord(NamedTuple):
    run_id: int
    stage: str
    status: str
    reason: str
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    log_path: str | None
    command: str | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


ROWS_PER_STATEMENT = 100  # 9 parameters a row: SQLite before 3.32 allows 999 in one statement


# A stage row's columns after run_id, in the order record_stage and record_stages give them.
StageValues = tuple[str, str, str, "int | None", "float | None", "float | None", "str | None", "str | None"]


def _stage_rows_insert(run_id: int, rows: Sequence[StageValues]) -> tuple[str, list[Any]]:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
    return ("INSERT OR REPLACE INTO stage_results"
            " (run_id, stage, status, reason, exit_code, started_at, finished_at, log_path, command)"
            f" VALUES {values}",
            [value for (stage, status, reason, exit_code, started_at, finished_at, log_path, command) in rows
             for value in (run_id, stage, status, _storable(reason), exit_code, started_at, finished_at,
                           _storable(log_path), _storable(command))])


class OutboxItem(NamedTuple):
    id: int
    key: str
    kind: str
    payload: dict[str, Any]
    state: str
    attempts: int
    last_error: str | None
    remote_id: str | None
    in_doubt: bool = False


class Ledger:
    """Owns one SQLite connection to the ledger file.

    A busy ledger (another process in a long write) is waited for with SQLite's backoff
    up to `wait` seconds, then refused with `LedgerBusy` naming the holder; a full disk is
    `LedgerFull`. Both are exit 2, and each write is one transaction, so a refused write
    leaves nothing half-written.
    """

    def __init__(self, path: Path, *, clock: Any = time.time, wait: float = DEFAULT_WAIT) -> None:
        self.path = path
        self.clock = clock
        self.wait = wait
        make_private_dir(path.parent)
        refuse_symlinks(path.parent)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so writers queue on the lock
        # (busy timeout) instead of failing on an upgrade from a read transaction.
        try:
            self.db = sqlite3.connect(str(path), timeout=wait, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._translate(exc, "opening it") from None
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            self._enable_wal()
            # WAL + NORMAL: still consistent after any crash, and no fsync per transaction (a push
            # records ~10); only a power loss can drop the very last writes.
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            _skip_checkpoint_on_close(self.db)
            self._migrate()
        except sqlite3.Error as exc:
            self.db.close()
            raise self._translate(exc, "opening it") from None
        except BaseException:
            self.db.close()
            raise

    def _translate(self, exc: sqlite3.Error, doing: str) -> Exception:
        """The LedgerError a failed SQLite call means, with what to do about it; an error no user
        can cause (a wrong query, a missing table) stays itself: a bug, reported as one (exit 3)."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            holders = lock_holders([self.path, *(Path(f"{self.path}{s}") for s in SIDE_FILES)])
            who = ", ".join(holders) if holders else "another process (its pid is not visible from here)"
            return LedgerBusy(
                f"{self.path}: the ledger stayed locked for {self.wait:g} s while {doing}; held by {who}. "
                f"Wait for it to finish (or stop it if it is stuck) and run again; {WAIT_VAR}=SECONDS waits longer"
            )
        if "full" in text:
            return LedgerFull(
                f"{self.path}: the disk holding the ledger is full while {doing}; that write was rolled back "
                "and nothing was half-written. Free some space (`cdkit gc` prunes old logs) and run again"
            )
        if isinstance(exc, sqlite3.OperationalError):
            if "disk I/O" in text or "unable to open" in text or "readonly" in text:
                return LedgerError(f"{self.path}: {text} while {doing} (a full disk, or no permission to write "
                                   "the git dir?); free space or fix the permissions and run again")
            return exc
        return LedgerError(
            f"{self.path}: the ledger is not a readable SQLite database ({text}); "
            "move it aside (cdkit starts a new one) and report how it happened"
        )

    def _enable_wal(self) -> None:
        """Switch to WAL mode once (it is stored in the file), waiting out another process creating it too.

        Changing the journal mode does not wait on the busy timeout: two first runs at
        once would otherwise see "database is locked" immediately.
        """
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self.db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    @classmethod
    def for_dir(cls, cdkit_dir: Path, environ: Mapping[str, str] | None = None, *,
                clock: Any = None) -> Ledger:
        """The ledger of a cdkit directory; `clock` only from tests in the same process (never from input)."""
        return cls(cdkit_dir / LEDGER_NAME, wait=ledger_wait(os.environ if environ is None else environ),
                   clock=clock or time.time)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._translate(exc, "starting a write") from None
        try:
            yield self.db
        except sqlite3.Error as exc:
            self._rollback()
            raise self._translate(exc, "writing") from None
        except BaseException:
            self._rollback()
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._translate(exc, "committing a write") from None

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Reads that all see one state of the ledger (WAL: writers carry on meanwhile, unseen).

        The audit chain's check needs it: a row and its seal are written in one transaction,
        and reading them at two moments would see one without the other.
        """
        try:
            self.db.execute("BEGIN DEFERRED")
            self.db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # the snapshot starts here
        except sqlite3.Error as exc:
            raise self._translate(exc, "starting a read") from None
        try:
            yield self.db
        except sqlite3.Error as exc:
            raise self._translate(exc, "reading") from None
        finally:
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    def _rollback(self) -> None:
        if self.db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL does)
            self.db.execute("ROLLBACK")

    def _write_one(self, sql: str, args: Sequence[Any]) -> None:
        """One write statement, in a transaction of its own: a writing statement takes the write lock
        before it reads (as BEGIN IMMEDIATE does), so this is `transaction()` at a third of the calls.
        Stage rows are recorded this way, on the runner's path (`record_stages`)."""
        try:
            self.db.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._translate(exc, "writing") from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of one query; a busy or broken ledger becomes a LedgerError, never a crash."""
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc, "reading") from None

    def _migrate(self) -> None:
        # A read first: when the schema is current (every open but the first), no write transaction.
        if self.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path}: ledger schema {version} is newer than this cdkit understands ({SCHEMA_VERSION}); "
                    "upgrade cdkit"
                )
            for step in range(version, SCHEMA_VERSION):
                migration = MIGRATIONS[step]
                if callable(migration):
                    migration(db, self.clock())
                    continue
                for statement in _statements(migration):
                    db.execute(statement)
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- runs and stage results -------------------------------------------------------------

    def start_run(
        self, *, trigger: str, event: str, sha: str, base_sha: str | None, ref: str | None,
        dirty: bool = False, config_path: str | None = None,
    ) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (trigger, event, sha, base_sha, ref, dirty, started_at, pid, host, config_path)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trigger, event, sha, base_sha, _storable(ref), int(dirty), self.clock(), os.getpid(), HOST,
                 _storable(config_path)),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def record_stage(
        self, run_id: int, stage: str, *, status: str, reason: str = "", exit_code: int | None = None,
        started_at: float | None = None, finished_at: float | None = None, log_path: str | None = None,
        command: str | None = None,
    ) -> None:
        """Insert or replace one stage's result (first as `running`, then its outcome)."""
        self._write_one(*_stage_rows_insert(
            run_id, [(stage, status, reason, exit_code, started_at, finished_at, log_path, command)]))

    def record_stages(self, run_id: int, results: Sequence[StageResult]) -> None:
        """Insert or replace stages' results (one row per stage; `running` for a stage that started) in one
        commit: one statement for up to ROWS_PER_STATEMENT rows (within SQLite's oldest limit on
        parameters), a transaction beyond."""
        rows = [(r.stage, r.status, r.reason, r.exit_code, r.started_at, r.finished_at, r.log_path, r.command)
                for r in results]
        chunks = [rows[i:i + ROWS_PER_STATEMENT] for i in range(0, len(rows), ROWS_PER_STATEMENT)]
        if not chunks:
            return
        if len(chunks) == 1:
            self._write_one(*_stage_rows_insert(run_id, chunks[0]))
            return
        with self.transaction() as db:
            for chunk in chunks:
                db.execute(*_stage_rows_insert(run_id, chunk))

    def finish_run(self, run_id: int, status: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?", (status, self.clock(), run_id))

    def _run(self, row: sqlite3.Row) -> RunRecord:
        status = row["status"]
        if run_interrupted(status, row["pid"], row["host"]):
            status = "interrupted"  # its process died without finishing it
        return RunRecord(
            id=row["id"], trigger=row["trigger"], event=row["event"], sha=row["sha"], base_sha=row["base_sha"],
            ref=row["ref"], dirty=bool(row["dirty"]), status=status, started_at=row["started_at"],
            finished_at=row["finished_at"], pid=row["pid"], host=row["host"],
        )

    def recent_runs(self, limit: int = 20) -> list[RunRecord]:
        rows = self._read("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        return [self._run(r) for r in rows]

    def runs_for_sha(self, sha: str) -> list[RunRecord]:
        rows = self._read("SELECT * FROM runs WHERE sha = ? ORDER BY id", (sha,))
        return [self._run(r) for r in rows]

    def run(self, run_id: int) -> RunRecord | None:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        return self._run(rows[0]) if rows else None

    def stage_results(self, run_id: int) -> list[StageRecord]:
        rows = self._read(
            "SELECT s.*, r.status AS run_status, r.pid AS run_pid, r.host AS run_host FROM stage_results s"
            " JOIN runs r ON r.id = s.run_id WHERE s.run_id = ? ORDER BY COALESCE(s.started_at, 1e18), s.rowid",
            (run_id,),
        )
        return [_stage_record(r) for r in rows]

    def latest_stage_results(self, sha: str, *, include_dirty: bool = False,
                             ignore_reasons: tuple[str, ...] = ()) -> dict[str, StageRecord]:
        """For each stage, its most recent recorded result on `sha` (runs of a dirty tree excluded).

        Results whose reason starts with one of `ignore_reasons` (a run that did not judge
        the stage at all) never hide an earlier real one.
        """
        latest: dict[str, StageRecord] = {}
        rows = self._read(  # one query: the runs of `sha` (index runs_sha), then each run's results (primary key)
            "SELECT s.*, r.status AS run_status, r.pid AS run_pid, r.host AS run_host FROM runs r"
            " JOIN stage_results s ON s.run_id = r.id WHERE r.sha = ? AND (? OR r.dirty = 0)"
            " ORDER BY r.id, COALESCE(s.started_at, 1e18), s.rowid", (sha, int(include_dirty)),
        )
        for row in rows:
            result = _stage_record(row)
            if not (ignore_reasons and result.reason.startswith(ignore_reasons)):
                latest[result.stage] = result
        return latest

    # --- outbox -------------------------------------------------------------------------------

    def enqueue(self, key: str, kind: str, payload: dict[str, Any]) -> int:
        """Add a report to the outbox; a key already present is left as it is (exactly once)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO outbox (key, kind, payload, created_at) VALUES (?, ?, ?, ?)",
                (key, kind, _to_json(payload), self.clock()),
            )
            row = db.execute("SELECT id FROM outbox WHERE key = ?", (key,)).fetchone()
            return int(row["id"])

    def _outbox(self, row: sqlite3.Row) -> OutboxItem:
        return OutboxItem(
            id=row["id"], key=row["key"], kind=row["kind"], payload=_from_json(row["payload"]), state=row["state"],
            attempts=row["attempts"], last_error=row["last_error"], remote_id=row["remote_id"],
            in_doubt=bool(row["in_doubt"]),
        )

    def pending(self, limit: int | None = None) -> list[OutboxItem]:
        rows = self._read("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id LIMIT ?", (limit if limit else -1,))
        return [self._outbox(r) for r in rows]

    def outbox_item(self, key: str) -> OutboxItem | None:
        rows = self._read("SELECT * FROM outbox WHERE key = ?", (key,))
        return self._outbox(rows[0]) if rows else None

    def outbox_counts(self) -> dict[str, int]:
        # Kept by triggers (schema 4): counting a long history's delivered rows took ~80 ms per `cdkit status`.
        rows = self._read("SELECT state, n FROM outbox_counts WHERE n > 0")
        return {r["state"]: r["n"] for r in rows}

    def mark_delivered(self, item_id: int, remote_id: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET state = 'delivered', delivered_at = ?, remote_id = COALESCE(?, remote_id),"
                " attempts = attempts + 1, last_error = NULL, in_doubt = 0 WHERE id = ?",
                (self.clock(), remote_id, item_id),
            )

    def mark_failed(self, item_id: int, error: str, *, final: bool = False, in_doubt: bool | None = None) -> None:
        """Record a failed attempt; `final` (401, a 422 that will never pass) stops retrying it.

        `in_doubt` says whether the attempt may still have reached GitHub (None: leave as it was).
        """
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, state = ?,"
                " in_doubt = COALESCE(?, in_doubt) WHERE id = ?",
                (error, "failed" if final else "pending", None if in_doubt is None else int(in_doubt), item_id),
            )

    def claim(self, item_id: int) -> OutboxItem | None:
        """Take a pending item to send it; None when it is no longer pending or another process has it.

        The claim also marks the item in doubt: until it is marked delivered or failed, a
        crash mid-send leaves it for a later delivery to look up before sending again. The
        item returned is as it was before the claim (`in_doubt` of earlier attempts).
        """
        now = self.clock()
        with self.transaction() as db:
            row = db.execute("SELECT * FROM outbox WHERE id = ?", (item_id,)).fetchone()
            if row is None or row["state"] != "pending":
                return None
            if (row["claimed_until"] or 0) > now and not _claimant_gone(row["claimed_by"]):
                return None
            db.execute("UPDATE outbox SET in_doubt = 1, claimed_until = ?, claimed_by = ? WHERE id = ?",
                       (now + CLAIM_SECONDS, f"{os.getpid()}@{HOST}", item_id))
        return self._outbox(row)

    def release_claim(self, item_id: int, *, in_doubt: bool | None = None) -> None:
        """End a claim; `in_doubt` restores the flag when nothing was sent (None: leave it)."""
        with self.transaction() as db:
            db.execute("UPDATE outbox SET claimed_until = NULL, claimed_by = NULL, in_doubt = COALESCE(?, in_doubt)"
                       " WHERE id = ?",
                       (None if in_doubt is None else int(in_doubt), item_id))

    def mark_sending(self, item_id: int) -> None:
        """Before a send: until it is marked delivered or failed, the item is in doubt (a crash mid-send)."""
        with self.transaction() as db:
            db.execute("UPDATE outbox SET in_doubt = 1 WHERE id = ?", (item_id,))

    def mark_superseded(self, item_id: int, reason: str) -> None:
        """Never send this item: a newer one says the same or more (e.g. a final status after `pending`)."""
        with self.transaction() as db:
            db.execute("UPDATE outbox SET state = 'superseded', last_error = ?, in_doubt = 0 WHERE id = ?",
                       (reason, item_id))

    def set_remote_id(self, item_id: int, remote_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE outbox SET remote_id = ? WHERE id = ?", (remote_id, item_id))

    # --- approvals, deployments, locks ---------------------------------------------------------

    def add_approval(self, *, sha: str, environment: str, approver: str, via: str, comment: str = "",
                     signature: str | None = None, signed_message: str | None = None,
                     governed_by: str | None = None, revokes: int | None = None) -> int:
        """Record an approval, or (`revokes`: the id of one) its withdrawal, a row of its own."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO approvals (sha, environment, approver, via, comment, created_at, signature,"
                " signed_message, governed_by, revokes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sha, environment, approver, via, comment, self.clock(), signature, signed_message,
                 _storable(governed_by), revokes),
            )
            assert cursor.lastrowid is not None
            chain.append(db, "approval", cursor.lastrowid, self.clock())
            return cursor.lastrowid

    def standing_approvals(self, *, sha: str, environment: str, via: str) -> list[dict[str, Any]]:
        """The approvals of `sha` for `environment` given `via` that no later row withdraws (`cdkit approve --revoke`)."""
        rows = self.approvals(sha=sha, environment=environment)
        revoked = {r["revokes"] for r in rows if r["revokes"] is not None}
        return [r for r in rows if r["via"] == via and r["revokes"] is None and r["id"] not in revoked]

    def approvals(self, *, sha: str | None = None, environment: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM approvals WHERE 1=1", list[str]()
        if sha:
            query, args = query + " AND sha = ?", [*args, sha]
        if environment:
            query, args = query + " AND environment = ?", [*args, environment]
        return [dict(r) for r in self._read(query + " ORDER BY id", args)]

    def start_deployment(
        self, *, environment: str, sha: str, rollback: bool, approval: dict[str, Any] | None,
        deployed_by: str | None = None, rollback_from: str | None = None, automatic: bool = False,
        reason: str | None = None, governed_by: str | None = None,
    ) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO deployments (environment, sha, status, rollback, approval, started_at, deployed_by,"
                " rollback_from, automatic, reason, governed_by) VALUES (?, ?, 'in_progress', ?, ?, ?, ?, ?, ?, ?, ?)",
                (environment, sha, int(rollback), _to_json(approval) if approval else None, self.clock(),
                 _storable(deployed_by), rollback_from, int(automatic), _storable(reason), _storable(governed_by)),
            )
            assert cursor.lastrowid is not None
            chain.append(db, "deployment", cursor.lastrowid, self.clock())
            return cursor.lastrowid

    def finish_deployment(self, deployment_id: int, status: str, *, github_id: int | None = None,
                          log_path: str | None = None, reason: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE deployments SET status = ?, finished_at = ?, github_id = COALESCE(?, github_id),"
                " log_path = COALESCE(?, log_path), reason = COALESCE(?, reason) WHERE id = ?",
                (status, self.clock(), github_id, log_path, _storable(reason), deployment_id),
            )
            chain.append(db, "deployment", deployment_id, self.clock())

    def deployments(self, *, environment: str | None = None, sha: str | None = None, status: str | None = None,
                    newest: int | None = None) -> list[dict[str, Any]]:
        """Deployments in the order they started; `newest=N` only the last N (an index seek, not the history)."""
        query, args = "SELECT * FROM deployments WHERE 1=1", list[str]()
        for column, value in (("environment", environment), ("sha", sha), ("status", status)):
            if value:
                query, args = query + f" AND {column} = ?", [*args, value]
        if newest is not None:
            query = f"SELECT * FROM ({query} ORDER BY id DESC LIMIT {int(newest)})"
        rows = [dict(r) for r in self._read(query + " ORDER BY id", args)]
        for row in rows:
            row["approval"] = _from_json(row["approval"]) if row["approval"] else None
        return rows

    def adopt(self, *, environment: str, sha: str, adopted_by: str, reason: str | None,
              governed_by: str | None = None) -> int:
        """Record that `environment` runs `sha` ("" for nothing) before cdkit's first deployment there.

        One transaction with its check, so two adoptions at once cannot both be recorded (the
        unique index `deployments_adopted` holds too); refused (AlreadyDeployed) once anything
        was deployed to or adopted for the environment.
        """
        with self.transaction() as db:
            first = db.execute("SELECT id, sha, status FROM deployments WHERE environment = ? ORDER BY id LIMIT 1",
                               (environment,)).fetchone()
            if first is not None:
                what = "adopted" if first["status"] == ADOPTED else f"has deployment #{first['id']}"
                runs = f" ({first['sha'][:12] or 'nothing'})" if first["status"] == ADOPTED else \
                    f" of {first['sha'][:12]}"
                raise AlreadyDeployed(
                    f"{environment} already {what}{runs} in {self.path}: adoption records what an environment ran "
                    "before cdkit's first deployment there, once; from now on its deployments say what it runs "
                    f"(cdkit environments), and a rollback is cdkit deploy --env {environment} --sha SHA --rollback")
            now = self.clock()
            cursor = db.execute(
                "INSERT INTO deployments (environment, sha, status, rollback, started_at, finished_at, deployed_by,"
                " reason, governed_by) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
                (environment, sha, ADOPTED, now, now, _storable(adopted_by), _storable(reason),
                 _storable(governed_by)),
            )
            assert cursor.lastrowid is not None
            chain.append(db, "deployment", cursor.lastrowid, now)
            self._audit(db, now, f"{environment}: adopted {sha or 'nothing'} by {adopted_by} (deployment "
                                 f"#{cursor.lastrowid}, nothing ran)" + (f": {reason}" if reason else ""))
            return cursor.lastrowid

    def set_github_id(self, deployment_id: int, github_id: int) -> None:
        """The GitHub deployment that mirrors a ledger record made without running anything (an adoption)."""
        with self.transaction() as db:
            db.execute("UPDATE deployments SET github_id = ? WHERE id = ?", (github_id, deployment_id))
            chain.append(db, "deployment", deployment_id, self.clock())

    def adoption(self, environment: str) -> dict[str, Any] | None:
        """The environment's adoption record (`cdkit adopt`), or None."""
        rows = self.deployments(environment=environment, status=ADOPTED)
        return rows[0] if rows else None

    def current_deployment(self, environment: str) -> dict[str, Any] | None:
        """The last deployment of `environment` whose command succeeded (or its adoption): what runs there now."""
        live = [d for d in (self.last_deployment(environment, status=s) for s in sorted(LIVE_STATUSES)) if d]
        return max(live, key=lambda d: int(d["id"])) if live else None

    def last_deployment(self, environment: str, *, status: str | None = None) -> dict[str, Any] | None:
        """The most recent deployment of `environment` (of that `status`, when given)."""
        rows = self.deployments(environment=environment, status=status, newest=1)
        return rows[0] if rows else None

    def quarantine(self, *, environment: str, sha: str, reason: str, deployment_id: int | None) -> None:
        """No automatic deploy of `sha` to `environment` from now on (a failed, or rolled-back-from, SHA)."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM quarantine WHERE environment = ? AND sha = ? AND lifted_at IS NULL",
                          (environment, sha)).fetchone() is None:
                db.execute("INSERT INTO quarantine (environment, sha, reason, deployment_id, created_at)"
                           " VALUES (?, ?, ?, ?, ?)", (environment, sha, _storable(reason), deployment_id,
                                                      self.clock()))

    def lift_quarantine(self, *, environment: str, sha: str, reason: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE quarantine SET lifted_at = ?, lifted_reason = ? WHERE environment = ? AND sha = ?"
                       " AND lifted_at IS NULL", (self.clock(), _storable(reason), environment, sha))

    def quarantined(self, environment: str) -> dict[str, dict[str, Any]]:
        """The SHAs quarantined for `environment` now: sha -> its record (reason, deployment_id, created_at)."""
        rows = self.db.execute("SELECT * FROM quarantine WHERE environment = ? AND lifted_at IS NULL ORDER BY rowid",
                               (environment,)).fetchall()
        return {r["sha"]: dict(r) for r in rows}

    def acquire_lock(self, name: str, holder: str, *, ttl: float) -> str | None:
        """Take `name` for `ttl` seconds; return None, or the holder that has it.

        An expired lock (its holder crashed) is taken over, with an audit line.
        """
        now = self.clock()
        with self.transaction() as db:
            row = db.execute("SELECT holder, expires_at FROM locks WHERE name = ?", (name,)).fetchone()
            if row and row["expires_at"] > now and row["holder"] != holder:
                return str(row["holder"])
            if row and row["expires_at"] <= now:
                self._audit(db, now, f"lock {name} held by {row['holder']} expired; taken over by {holder}")
            db.execute("INSERT OR REPLACE INTO locks (name, holder, expires_at) VALUES (?, ?, ?)",
                       (name, holder, now + ttl))
        return None

    def release_lock(self, name: str, holder: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM locks WHERE name = ? AND holder = ?", (name, holder))

    def audit(self, what: str) -> None:
        with self.transaction() as db:
            self._audit(db, self.clock(), what)

    @staticmethod
    def _audit(db: sqlite3.Connection, at: float, what: str) -> None:
        cursor = db.execute("INSERT INTO audit (at, what) VALUES (?, ?)", (at, _storable(what)))
        assert cursor.lastrowid is not None
        chain.append(db, "audit", cursor.lastrowid, at)

    def audit_lines(self) -> Sequence[tuple[float, str]]:
        return [(r["at"], r["what"]) for r in self._read("SELECT at, what FROM audit ORDER BY id")]
