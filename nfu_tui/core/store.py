"""Persistent deploy journal and audit trail (one SQLite file), and the deploy lock.

The **journal** makes deploys crash-safe and resumable: a run is created before
anything happens and every step is written (and synced: WAL + ``synchronous=FULL``)
*before* it is acted on. After a crash, :meth:`Store.unfinished_runs` tells the engine
whether the merge was requested or done (and its sha), which hosts finished with
which outcome and which were in flight.

Known steps and the data they require (others are free-form, ``snake_case``)::

    merge_requested                   merged(sha)            merge_failed(error)
    host_started(host, phase)         host_finished(host, outcome[, detail, log_excerpt])
    paused                            resumed                cancel_requested

``merged`` also sets the run's ``merge_sha``; ``paused``/``resumed`` switch the run's
status between ``paused`` and ``running``.

The **audit trail** is append-only: triggers in the database refuse UPDATE and DELETE
of its rows and this module offers no way to change them (a guard against mistakes,
not against someone with a shell who can drop the triggers). Values under keys that
look like secrets (token, password, …) are replaced by ``***`` before they are stored,
and every text written (journal and audit alike) passes the redaction boundary of
:mod:`nfu_tui.sanitize` first: valid UTF-8 (a lone surrogate in a host's output
cannot fail the write), no secret values or credential shapes, no control sequences.

The **notification outbox** (table ``outbox``, see :class:`~nfu_tui.core.notify.Outbox`)
keeps every notification by its stable event id until a delivery succeeded: attempts,
the next attempt, the last error, and a short claim so two processes never send one twice.

The **deploy lock** (:class:`DeployLock`) is an exclusive ``flock`` on a file in the
state directory: one deploy at a time across the TUI, ``nfu-tui auto`` and
``nfu-tui deploy``. The kernel drops it when its process dies, so a stale file never
blocks.

Calls are short and synchronous; one connection is shared between threads under a
lock, so ``asyncio.to_thread`` or direct calls from the event loop are both fine.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import os
import re
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from nfu_tui.errors import DeployLocked, StateError
from nfu_tui.paths import ensure_dir, state_dir
from nfu_tui.sanitize import sanitize_data, sanitize_text

DB_NAME = "nfu-tui.sqlite3"
LOCK_NAME = "deploy.lock"

RUN_KINDS = ("deploy", "rollback", "revert", "converge")
RUN_TRIGGERS = ("manual", "auto")
ACTIVE_STATUSES = ("running", "paused")
FINAL_STATUSES = ("succeeded", "failed", "unknown", "unverified", "cancelled", "abandoned")
"""``failed`` is a proven or stated failure; ``unknown`` (a host's outcome could not be established)
and ``unverified`` (done, but not confirmed in time) are never taken for a failure: nothing rolls
back on them."""

# Step name -> data keys it must carry.
STEP_FIELDS: dict[str, tuple[str, ...]] = {
    "merge_requested": (),
    "merged": ("sha",),
    "merge_failed": ("error",),
    "host_started": ("host", "phase"),
    "host_finished": ("host", "outcome"),
    "paused": (),
    "resumed": (),
    "cancel_requested": (),
}
_STEP_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SECRET_KEY = re.compile(r"token|password|passwd|secret|authorization|cookie|totp|credential", re.I)

# Schema migrations, one tuple of statements per version (user_version = index + 1).
# Append new versions; never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback', 'revert')),
            pr INTEGER,
            head_sha TEXT,
            merge_sha TEXT,
            status TEXT NOT NULL CHECK (status IN
                ('running', 'paused', 'succeeded', 'failed', 'cancelled', 'abandoned')),
            plan TEXT NOT NULL,
            actor TEXT NOT NULL,
            trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'auto')),
            summary TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT
        )""",
        "CREATE INDEX runs_status ON runs (status)",
        """CREATE TABLE run_steps (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id INTEGER NOT NULL REFERENCES runs (id),
            at TEXT NOT NULL,
            step TEXT NOT NULL,
            host TEXT,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX run_steps_run ON run_steps (run_id, id)",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            actor TEXT NOT NULL,
            github_login TEXT,
            pr INTEGER,
            details TEXT NOT NULL
        )""",
        "CREATE INDEX audit_at ON audit (at)",
        """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
           BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
        """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
           BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
    ),
    (  # 2: runs may be "converge" runs (deploy the default branch's head, no merge)
        """CREATE TABLE runs_v2 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback', 'revert', 'converge')),
            pr INTEGER,
            head_sha TEXT,
            merge_sha TEXT,
            status TEXT NOT NULL CHECK (status IN
                ('running', 'paused', 'succeeded', 'failed', 'cancelled', 'abandoned')),
            plan TEXT NOT NULL,
            actor TEXT NOT NULL,
            trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'auto')),
            summary TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT
        )""",
        "INSERT INTO runs_v2 SELECT * FROM runs",
        "DROP TABLE runs",
        "ALTER TABLE runs_v2 RENAME TO runs",
        "CREATE INDEX runs_status ON runs (status)",
    ),
    (  # 3: the notification outbox (see nfu_tui.core.notify.Outbox)
        """CREATE TABLE outbox (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            title TEXT NOT NULL,
            message TEXT NOT NULL,
            severity TEXT NOT NULL,
            tags TEXT NOT NULL,
            click TEXT NOT NULL DEFAULT '',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            claimed_until TEXT,
            delivered_at TEXT,
            last_error TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at)",
    ),
    (  # 4: runs may end "unknown" or "unverified" (stored as "failed" before; those rows stay as they are)
        """CREATE TABLE runs_v4 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback', 'revert', 'converge')),
            pr INTEGER,
            head_sha TEXT,
            merge_sha TEXT,
            status TEXT NOT NULL CHECK (status IN ('running', 'paused', 'succeeded', 'failed', 'unknown',
                                                   'unverified', 'cancelled', 'abandoned')),
            plan TEXT NOT NULL,
            actor TEXT NOT NULL,
            trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'auto')),
            summary TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT
        )""",
        "INSERT INTO runs_v4 SELECT * FROM runs",
        "DROP TABLE runs",
        "ALTER TABLE runs_v4 RENAME TO runs",
        "CREATE INDEX runs_status ON runs (status)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_DAMAGED_HINT = "if it is damaged, move it aside and nfu-tui starts a new one"


def local_actor() -> str:
    """``user@hostname`` of this process (best effort)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname() or 'localhost'}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _ts(dt: datetime) -> str:
    if dt.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): "***" if _SECRET_KEY.search(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    """JSON of ``value`` after the redaction boundary: valid UTF-8, no secrets, no control sequences."""
    return json.dumps(sanitize_data(value), sort_keys=True, ensure_ascii=False)


def _text(value: str | None) -> str | None:
    return None if value is None else sanitize_text(value)


@dataclass(frozen=True, slots=True)
class Step:
    """One journal entry of a run."""

    id: int
    run_id: int
    at: datetime
    step: str
    host: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Run:
    """A deploy/rollback/revert run as journaled.

    ``host_outcomes`` is always filled (last ``host_finished`` per host); ``steps`` is
    None when the run was listed without them (:meth:`Store.list_runs`).
    """

    id: int
    kind: str
    pr: int | None
    head_sha: str | None
    merge_sha: str | None
    status: str
    plan: dict[str, Any]
    actor: str
    trigger: str
    summary: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    host_outcomes: dict[str, str]
    steps: tuple[Step, ...] | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def merged(self) -> bool:
        return self.merge_sha is not None

    def _steps(self) -> tuple[Step, ...]:
        if self.steps is None:
            raise ValueError(f"run {self.id} was loaded without its steps; use Store.get_run")
        return self.steps

    @property
    def merge_requested(self) -> bool:
        """A merge was requested (it may or may not have happened: check GitHub)."""
        return any(s.step == "merge_requested" for s in self._steps())

    @property
    def cancel_requested(self) -> bool:
        return any(s.step == "cancel_requested" for s in self._steps())

    @property
    def hosts_in_flight(self) -> dict[str, str]:
        """Hosts started (host -> phase) without a ``host_finished`` after that start."""
        flying: dict[str, str] = {}
        for s in self._steps():
            if s.step == "host_started" and s.host:
                flying[s.host] = str(s.data.get("phase", ""))
            elif s.step == "host_finished" and s.host:
                flying.pop(s.host, None)
        return flying


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    action: str
    actor: str
    github_login: str | None
    pr: int | None
    details: dict[str, Any]


def migrate(conn: sqlite3.Connection, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Bring the schema to ``len(migrations)``; returns the version found before.

    Each version is applied in its own transaction together with its
    ``user_version`` bump. A database newer than ``migrations`` is refused.
    Foreign keys are off meanwhile (a table is rebuilt by copy, drop and rename, as
    SQLite's documentation prescribes) and checked before each commit.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > len(migrations):
        raise StateError(
            f"the database has schema version {found}, this nfu-tui knows up to {len(migrations)}",
            hint="it was written by a newer nfu-tui; upgrade",
        )
    foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        for version in range(found, len(migrations)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] > version:  # another process was first
                    conn.execute("COMMIT")
                    continue
                for statement in migrations[version]:
                    conn.execute(statement)
                if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                    raise sqlite3.IntegrityError(f"schema version {version + 1} breaks a foreign key")
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
    finally:
        conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    return found


class Store:
    """The journal + audit database (``state_dir()/nfu-tui.sqlite3`` by default)."""

    def __init__(self, path: Path | str | None = None, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.path = Path(path) if path is not None else state_dir() / DB_NAME
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        try:
            if path is None:
                ensure_dir(self.path.parent)
            self._open()
        except StateError as exc:  # schema newer than this version
            self.close()
            raise StateError(f"{self.path}: {exc.message}", hint=exc.hint) from None
        except (sqlite3.Error, OSError) as exc:
            self.close()
            folder = self.path.parent
            hint = (f"the state directory {folder} must be writable, or set NFU_TUI_STATE_DIR"
                    if folder.is_dir() and not os.access(folder, os.W_OK) else _DAMAGED_HINT)
            raise StateError(f"cannot open the state database {self.path}: {exc}", hint=hint) from exc

    def _open(self) -> None:
        if not self.path.exists():
            # Create it private; SQLite gives the -wal/-shm files the same mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        self._conn = conn
        conn.execute("PRAGMA busy_timeout = 10000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
        conn.execute("SELECT count(*) FROM runs").fetchone()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn SQLite/OS failures into a StateError naming the file."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StateError(
                f"cannot {doing} the state database {self.path}: {exc}", hint=_DAMAGED_HINT
            ) from exc

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A short IMMEDIATE transaction, committed (and synced) before returning."""
        with self._lock, self._errors(doing):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors(doing):
            yield self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError("the state database is closed")
        return self._conn

    # --- journal --------------------------------------------------------------

    def create_run(
        self,
        kind: str,
        *,
        actor: str,
        trigger: str = "manual",
        pr: int | None = None,
        head_sha: str | None = None,
        merge_sha: str | None = None,
        plan: Mapping[str, Any] | None = None,
    ) -> int:
        """Journal a new run (status ``running``) and return its id."""
        if kind not in RUN_KINDS:
            raise ValueError(f"run kind must be one of {', '.join(RUN_KINDS)}, got {kind!r}")
        if trigger not in RUN_TRIGGERS:
            raise ValueError(f"run trigger must be one of {', '.join(RUN_TRIGGERS)}, got {trigger!r}")
        now = _ts(self._clock())
        with self._write("record a run in") as conn:
            cur = conn.execute(
                "INSERT INTO runs (kind, pr, head_sha, merge_sha, status, plan, actor, trigger,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (kind, pr, _text(head_sha), _text(merge_sha), _dumps(dict(plan or {})), _text(actor), trigger, now, now),
            )
            return int(cur.lastrowid)

    def record(self, run_id: int, step: str, **data: Any) -> int:
        """Journal ``step`` of an unfinished run *before* acting on it; returns the step id."""
        if not _STEP_NAME.fullmatch(step):
            raise ValueError(f"step names are snake_case, got {step!r}")
        missing = [k for k in STEP_FIELDS.get(step, ()) if data.get(k) in (None, "")]
        if missing:
            raise ValueError(f"step {step!r} needs {', '.join(missing)}")
        now = _ts(self._clock())
        host = data.get("host")
        with self._write("journal a step in") as conn:
            status = self._status(conn, run_id)
            if status in FINAL_STATUSES:
                raise StateError(f"run {run_id} is already {status}; cannot record {step!r}")
            cur = conn.execute(
                "INSERT INTO run_steps (run_id, at, step, host, data) VALUES (?, ?, ?, ?, ?)",
                (run_id, now, step, _text(None if host is None else str(host)), _dumps(_redact(data))),
            )
            sets, args = ["updated_at = ?"], [now]
            if step == "merged":
                sets.append("merge_sha = ?")
                args.append(sanitize_text(str(data["sha"])))
            elif step in ("paused", "resumed"):
                sets.append("status = ?")
                args.append("paused" if step == "paused" else "running")
            conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, run_id))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, summary: str = "") -> None:
        """Close a run with a final status and a one-line summary."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"a run finishes as one of {', '.join(FINAL_STATUSES)}, got {status!r}")
        now = _ts(self._clock())
        with self._write("finish a run in") as conn:
            current = self._status(conn, run_id)
            if current in FINAL_STATUSES:
                raise StateError(f"run {run_id} is already {current}")
            conn.execute(
                "UPDATE runs SET status = ?, summary = ?, updated_at = ?, finished_at = ? WHERE id = ?",
                (status, sanitize_text(summary), now, now, run_id),
            )

    def abandon_run(self, run_id: int, *, actor: str, where: str = "", github_login: str | None = None) -> Run:
        """Close an unfinished run as ``abandoned`` and audit it; StateError if it already finished.

        Nothing on GitHub or the hosts changes. Callers hold the :class:`DeployLock`, so a
        run another process is executing is never abandoned under it.
        """
        run = self.get_run(run_id)
        self.finish_run(run_id, "abandoned", f"abandoned by {actor}" + (f" in {where}" if where else ""))
        self.audit("abandon", actor=actor, github_login=github_login, pr=run.pr, details={"run": run_id})
        return run

    @staticmethod
    def _status(conn: sqlite3.Connection, run_id: int) -> str:
        row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StateError(f"no run {run_id} in the journal")
        return str(row[0])

    def get_run(self, run_id: int) -> Run:
        """The run with all its steps; StateError when unknown."""
        with self._read("read") as conn:
            row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StateError(f"no run {run_id} in the journal")
            return self._runs(conn, [row], with_steps=True)[0]

    def host_outcomes(self, run_id: int) -> dict[str, str]:
        """Host -> outcome of its last ``host_finished`` in the run."""
        with self._read("read") as conn:
            return self._outcomes(conn, [run_id]).get(run_id, {})

    def unfinished_runs(self) -> list[Run]:
        """Runs still ``running`` or ``paused`` (oldest first), with their steps."""
        with self._read("read") as conn:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ('running', 'paused') ORDER BY id"
            ).fetchall()
            return self._runs(conn, rows, with_steps=True)

    def list_runs(self, limit: int = 50) -> list[Run]:
        """The newest runs first, without their steps."""
        with self._read("read") as conn:
            rows = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            return self._runs(conn, rows, with_steps=False)

    def _runs(self, conn: sqlite3.Connection, rows: list[tuple], *, with_steps: bool) -> list[Run]:
        ids = [r[0] for r in rows]
        outcomes = self._outcomes(conn, ids)
        steps: dict[int, list[Step]] = {i: [] for i in ids}
        if with_steps and ids:
            marks = ",".join("?" * len(ids))
            for sid, run_id, at, step, host, data in conn.execute(
                f"SELECT id, run_id, at, step, host, data FROM run_steps WHERE run_id IN ({marks}) ORDER BY id",
                ids,
            ):
                steps[run_id].append(Step(sid, run_id, datetime.fromisoformat(at), step, host, json.loads(data)))
        return [
            Run(
                id=r[0], kind=r[1], pr=r[2], head_sha=r[3], merge_sha=r[4], status=r[5], plan=json.loads(r[6]),
                actor=r[7], trigger=r[8], summary=r[9], created_at=datetime.fromisoformat(r[10]),
                updated_at=datetime.fromisoformat(r[11]),
                finished_at=datetime.fromisoformat(r[12]) if r[12] else None,
                host_outcomes=outcomes.get(r[0], {}),
                steps=tuple(steps[r[0]]) if with_steps else None,
            )
            for r in rows
        ]

    @staticmethod
    def _outcomes(conn: sqlite3.Connection, run_ids: list[int]) -> dict[int, dict[str, str]]:
        result: dict[int, dict[str, str]] = {}
        if not run_ids:
            return result
        marks = ",".join("?" * len(run_ids))
        for run_id, host, data in conn.execute(
            "SELECT run_id, host, data FROM run_steps WHERE step = 'host_finished'"
            f" AND run_id IN ({marks}) ORDER BY id",
            run_ids,
        ):
            result.setdefault(run_id, {})[host] = str(json.loads(data).get("outcome", ""))
        return result

    # --- audit ----------------------------------------------------------------

    def audit(
        self,
        action: str,
        *,
        actor: str,
        github_login: str | None = None,
        pr: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Append an audit entry (committed before returning); returns its id."""
        if not action:
            raise ValueError("audit action must not be empty")
        with self._write("append to the audit trail in") as conn:
            cur = conn.execute(
                "INSERT INTO audit (at, action, actor, github_login, pr, details) VALUES (?, ?, ?, ?, ?, ?)",
                (_ts(self._clock()), _text(action), _text(actor), _text(github_login), pr,
                 _dumps(_redact(dict(details or {})))),
            )
            return int(cur.lastrowid)

    def audit_entries(self, limit: int = 100, since: datetime | None = None) -> list[AuditEntry]:
        """The newest entries first, optionally only those at or after ``since``."""
        query, args = "SELECT id, at, action, actor, github_login, pr, details FROM audit", []
        if since is not None:
            query += " WHERE at >= ?"
            args.append(_ts(since))
        query += " ORDER BY id DESC LIMIT ?"
        with self._read("read the audit trail of") as conn:
            return [
                AuditEntry(i, datetime.fromisoformat(at), action, actor, login, pr, json.loads(details))
                for i, at, action, actor, login, pr, details in conn.execute(query, (*args, limit))
            ]


    # --- notification outbox ------------------------------------------------------

    def enqueue_notification(self, event_id: str, *, title: str, message: str, severity: str,
                             tags: Sequence[str] = (), click: str = "") -> bool:
        """Store a notification to deliver (committed before returning); False when ``event_id`` is
        already in the outbox (enqueueing is idempotent)."""
        if not event_id:
            raise ValueError("a notification needs an event id")
        now = _ts(self._clock())
        with self._write("queue a notification in") as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO outbox (id, created_at, title, message, severity, tags, click,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (event_id, now, sanitize_text(title), sanitize_text(message), severity, _dumps(list(tags)),
                 sanitize_text(click), now),
            )
            return cur.rowcount == 1

    def claim_notifications(self, lease_seconds: float, limit: int = 20, *, due_only: bool = True) -> list[OutboxEntry]:
        """Undelivered notifications due now (``due_only=False``: every undelivered one, its backoff
        ignored), claimed for ``lease_seconds`` (another process sharing the store skips them meanwhile),
        oldest first."""
        now = self._clock()
        until = _ts(now + timedelta(seconds=lease_seconds))
        due, args = ("AND next_attempt_at <= ? ", (_ts(now),)) if due_only else ("", ())
        with self._write("read the outbox of") as conn:
            rows = conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE delivered_at IS NULL {due}"
                "AND (claimed_until IS NULL OR claimed_until <= ?) ORDER BY created_at, id LIMIT ?",
                (*args, _ts(now), limit),
            ).fetchall()
            conn.executemany("UPDATE outbox SET claimed_until = ? WHERE id = ?", [(until, r[0]) for r in rows])
            return [_outbox_entry(r) for r in rows]

    def notification_delivered(self, event_id: str) -> None:
        with self._write("update the outbox of") as conn:
            conn.execute("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, claimed_until = NULL,"
                         " last_error = '' WHERE id = ?", (_ts(self._clock()), event_id))

    def notification_failed(self, event_id: str, error: str, next_attempt_at: datetime) -> None:
        with self._write("update the outbox of") as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1, claimed_until = NULL, last_error = ?,"
                         " next_attempt_at = ? WHERE id = ?", (sanitize_text(error), _ts(next_attempt_at), event_id))

    def notification(self, event_id: str) -> OutboxEntry | None:
        with self._read("read the outbox of") as conn:
            row = conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (event_id,)).fetchone()
            return _outbox_entry(row) if row else None

    def undelivered_notifications(self, limit: int = 100) -> list[OutboxEntry]:
        """Notifications not delivered yet, oldest first."""
        with self._read("read the outbox of") as conn:
            rows = conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE delivered_at IS NULL"
                                " ORDER BY created_at, id LIMIT ?", (limit,)).fetchall()
            return [_outbox_entry(r) for r in rows]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One notification in the outbox."""

    id: str
    created_at: datetime
    title: str
    message: str
    severity: str
    tags: tuple[str, ...]
    click: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str


_OUTBOX_COLUMNS = ("id, created_at, title, message, severity, tags, click, attempts, next_attempt_at, delivered_at,"
                   " last_error")


def _outbox_entry(r: Sequence[Any]) -> OutboxEntry:
    return OutboxEntry(str(r[0]), datetime.fromisoformat(r[1]), str(r[2]), str(r[3]), str(r[4]),
                       tuple(json.loads(r[5])), str(r[6]), int(r[7]), datetime.fromisoformat(r[8]),
                       datetime.fromisoformat(r[9]) if r[9] else None, str(r[10]))


_RUN_COLUMNS = (
    "id, kind, pr, head_sha, merge_sha, status, plan, actor, trigger, summary, created_at, updated_at, finished_at"
)


# --- deploy lock ----------------------------------------------------------------


class DeployLock:
    """Exclusive, non-blocking, cross-process deploy lock (``flock`` on ``deploy.lock``).

    ``label`` says who holds it in the message others get, e.g. ``"nfu-tui auto"``
    or ``"the nfu-tui TUI"``. Use as a context manager or call acquire/release.
    """

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        label: str = "nfu-tui",
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.path = Path(directory if directory is not None else state_dir()) / LOCK_NAME
        self.label = label
        self._clock = clock
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"DeployLock({str(self.path)!r}, held={self.held})"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DeployLocked` naming the holder."""
        if self._fd is not None:
            raise StateError("this deploy lock is already held by this object")
        try:
            ensure_dir(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the deploy lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = self._read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DeployLocked(_describe_holder(holder)) from None
            raise StateError(f"cannot lock {self.path}: {exc.strerror}") from exc
        info = {
            "pid": os.getpid(),
            "actor": local_actor(),
            "label": self.label,
            "started_at": _ts(self._clock()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Clear the holder information and drop the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the only descriptor releases the flock

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any] | None:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def __enter__(self) -> "DeployLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_holder(holder: Mapping[str, Any] | None) -> str:
    """``deploy running in nfu-tui auto (pid 1234, alice@box) since 14:02``."""
    if not holder:
        return "deploy running in another nfu-tui process"
    who = [f"pid {holder['pid']}"] if holder.get("pid") else []
    if holder.get("actor"):
        who.append(str(holder["actor"]))
    text = f"deploy running in {holder.get('label') or 'nfu-tui'}"
    if who:
        text += f" ({', '.join(who)})"
    try:
        started = datetime.fromisoformat(str(holder["started_at"])).astimezone()
    except (KeyError, ValueError):
        return text
    today = datetime.now().astimezone().date()
    return text + (f" since {started:%H:%M}" if started.date() == today else f" since {started:%Y-%m-%d %H:%M}")
