"""Journal + audit database and the cross-process deploy lock."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nfu_tui.core.store import (
    DB_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    DeployLock,
    Store,
    _describe_holder,
    local_actor,
    migrate,
)
from nfu_tui.errors import DeployLocked, StateError
from nfu_tui.paths import state_dir

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A clock that advances one second per reading."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / DB_NAME, clock=Clock()) as s:
        yield s


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


# --- file, modes, pragmas ------------------------------------------------------


def test_default_location_modes_and_pragmas() -> None:
    with Store() as s:
        assert s.path == state_dir() / DB_NAME
        assert stat.S_IMODE(s.path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(s.path.stat().st_mode) == 0o600
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    raw = sqlite3.connect(state_dir() / DB_NAME)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


# --- journal --------------------------------------------------------------------


def test_run_lifecycle(store: Store) -> None:
    plan = {"pr_number": 42, "entries": [{"host": "web1"}, {"host": "db1"}]}
    run_id = store.create_run("deploy", actor="alice@box", pr=42, head_sha="abc123", plan=plan)
    run = store.get_run(run_id)
    assert (run.kind, run.pr, run.head_sha, run.status, run.trigger) == ("deploy", 42, "abc123", "running", "manual")
    assert run.plan == plan and run.actor == "alice@box"
    assert not run.merged and not run.merge_requested and run.steps == ()
    assert run.created_at == T0 + timedelta(seconds=1)

    store.record(run_id, "merge_requested", sha="abc123")
    store.record(run_id, "merged", sha="def456")
    store.record(run_id, "host_started", host="web1", phase="pull")
    store.record(run_id, "host_started", host="web1", phase="switch")
    store.record(run_id, "host_finished", host="web1", outcome="succeeded", detail="", log_excerpt="ok")
    store.record(run_id, "host_started", host="db1", phase="pull")
    run = store.get_run(run_id)
    assert run.merged and run.merge_sha == "def456" and run.merge_requested
    assert run.host_outcomes == {"web1": "succeeded"}
    assert run.hosts_in_flight == {"db1": "pull"}
    assert [s.step for s in run.steps] == [
        "merge_requested", "merged", "host_started", "host_started", "host_finished", "host_started",
    ]
    assert run.steps[4].data == {"host": "web1", "outcome": "succeeded", "detail": "", "log_excerpt": "ok"}
    assert run.updated_at > run.created_at

    store.record(run_id, "paused")
    assert store.get_run(run_id).status == "paused"
    assert [r.id for r in store.unfinished_runs()] == [run_id]
    store.record(run_id, "resumed")
    assert store.get_run(run_id).status == "running"
    store.record(run_id, "cancel_requested")
    store.record(run_id, "host_finished", host="db1", outcome="cancelled")
    store.finish_run(run_id, "cancelled", "1 of 2 hosts deployed")
    run = store.get_run(run_id)
    assert run.finished and run.status == "cancelled" and run.summary == "1 of 2 hosts deployed"
    assert run.cancel_requested and run.hosts_in_flight == {}
    assert run.finished_at is not None
    assert store.host_outcomes(run_id) == {"web1": "succeeded", "db1": "cancelled"}
    assert store.unfinished_runs() == []


def test_last_outcome_per_host_wins(store: Store) -> None:
    run_id = store.create_run("deploy", actor="a@b")
    store.record(run_id, "host_finished", host="web1", outcome="failed", detail="switch exited 1")
    store.record(run_id, "host_started", host="web1", phase="switch")
    assert store.get_run(run_id).hosts_in_flight == {"web1": "switch"}
    store.record(run_id, "host_finished", host="web1", outcome="succeeded")
    assert store.host_outcomes(run_id) == {"web1": "succeeded"}
    assert store.host_outcomes(9999) == {}


def test_list_runs_newest_first_without_steps(store: Store) -> None:
    ids = [store.create_run(kind, actor="a@b", trigger="auto") for kind in ("deploy", "rollback", "revert")]
    store.record(ids[0], "host_finished", host="h1", outcome="succeeded")
    listed = store.list_runs(limit=2)
    assert [r.id for r in listed] == [ids[2], ids[1]]
    assert all(r.steps is None and r.trigger == "auto" for r in listed)
    with pytest.raises(ValueError, match="without its steps"):
        listed[0].merge_requested
    assert store.list_runs()[-1].host_outcomes == {"h1": "succeeded"}  # outcomes come without steps


def test_record_validation(store: Store) -> None:
    run_id = store.create_run("deploy", actor="a@b")
    with pytest.raises(ValueError, match="needs sha"):
        store.record(run_id, "merged")
    with pytest.raises(ValueError, match="needs host, phase"):
        store.record(run_id, "host_started")
    with pytest.raises(ValueError, match="needs outcome"):
        store.record(run_id, "host_finished", host="h1", outcome="")
    with pytest.raises(ValueError, match="snake_case"):
        store.record(run_id, "Host Started")
    with pytest.raises(StateError, match="no run 777"):
        store.record(777, "paused")
    store.record(run_id, "canary_wait_started", minutes=10)  # free-form steps are fine
    assert store.get_run(run_id).steps[-1].data == {"minutes": 10}
    with pytest.raises(ValueError, match="run kind"):
        store.create_run("upgrade", actor="a@b")
    with pytest.raises(ValueError, match="run trigger"):
        store.create_run("deploy", actor="a@b", trigger="cron")


def test_finished_runs_are_closed(store: Store) -> None:
    run_id = store.create_run("deploy", actor="a@b")
    with pytest.raises(ValueError, match="finishes as one of"):
        store.finish_run(run_id, "running")
    store.finish_run(run_id, "succeeded")
    with pytest.raises(StateError, match="already succeeded"):
        store.finish_run(run_id, "failed")
    with pytest.raises(StateError, match="already succeeded"):
        store.record(run_id, "host_started", host="h", phase="pull")
    with pytest.raises(StateError, match="no run 5"):
        store.get_run(5)
    # The rejected step was rolled back, not half-written.
    assert store.get_run(run_id).steps == ()


def test_journal_survives_a_crash(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os
            from nfu_tui.core.store import Store
            s = Store({str(db)!r})
            run = s.create_run("deploy", actor="bob@ci", trigger="auto", pr=7, head_sha="aaa",
                               plan={{"entries": ["h1", "h2", "h3"]}})
            s.record(run, "merge_requested")
            s.record(run, "merged", sha="bbb")
            s.record(run, "host_started", host="h1", phase="switch")
            s.record(run, "host_finished", host="h1", outcome="succeeded")
            s.record(run, "host_started", host="h2", phase="pull")
            s.audit("merge", actor="bob@ci", pr=7, details={{"sha": "bbb"}})
            os._exit(1)  # no close, no cleanup
        """)],
        capture_output=True,
        text=True,
    )
    assert child.returncode == 1, child.stderr
    with Store(db) as s:
        (run,) = s.unfinished_runs()
        assert (run.pr, run.head_sha, run.merge_sha, run.status, run.trigger) == (7, "aaa", "bbb", "running", "auto")
        assert run.plan == {"entries": ["h1", "h2", "h3"]}
        assert run.host_outcomes == {"h1": "succeeded"}
        assert run.hosts_in_flight == {"h2": "pull"}
        assert [e.action for e in s.audit_entries()] == ["merge"]


def test_concurrent_threads_and_asyncio(store: Store) -> None:
    run_id = store.create_run("deploy", actor="a@b")

    def worker(n: int) -> None:
        for i in range(25):
            store.record(run_id, "host_finished", host=f"h{n}-{i}", outcome="succeeded")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def main() -> None:
        await asyncio.gather(*(asyncio.to_thread(store.audit, "hold", actor="a@b", details={"i": i}) for i in range(10)))

    asyncio.run(main())
    assert len(store.host_outcomes(run_id)) == 100
    assert len(store.audit_entries(limit=1000)) == 10


def test_two_store_objects_share_the_file(tmp_path: Path) -> None:
    with Store(tmp_path / DB_NAME) as a, Store(tmp_path / DB_NAME) as b:
        run_id = a.create_run("deploy", actor="a@b")
        b.record(run_id, "paused")
        assert a.get_run(run_id).status == "paused"


# --- audit ----------------------------------------------------------------------


def test_audit_append_and_query(store: Store) -> None:
    first = store.audit("merge", actor="alice@box", github_login="alice", pr=42, details={"sha": "abc"})
    store.audit("hold", actor="alice@box", details={"host": "db1"})
    store.audit("automation", actor="bob@ci", details={"enabled": False, "at": T0})
    entries = store.audit_entries()
    assert [e.action for e in entries] == ["automation", "hold", "merge"]
    merge = entries[-1]
    assert (merge.id, merge.actor, merge.github_login, merge.pr, merge.details) == (
        first, "alice@box", "alice", 42, {"sha": "abc"},
    )
    assert merge.at == T0 + timedelta(seconds=1)
    assert entries[0].details == {"enabled": False, "at": str(T0)}
    assert [e.action for e in store.audit_entries(limit=1)] == ["automation"]
    assert [e.action for e in store.audit_entries(since=T0 + timedelta(seconds=2))] == ["automation", "hold"]
    with pytest.raises(ValueError):
        store.audit("", actor="a@b")


def test_audit_redacts_secret_looking_keys(store: Store) -> None:
    store.audit(
        "config",
        actor="a@b",
        details={"github_token": "ghp_x", "dashboard": {"Password": "pw", "url": "https://d"}, "list": [{"totp": "1"}]},
    )
    (entry,) = store.audit_entries()
    assert entry.details == {"github_token": "***", "dashboard": {"Password": "***", "url": "https://d"}, "list": [{"totp": "***"}]}
    with sqlite3.connect(store.path) as raw:
        assert "ghp_x" not in raw.execute("SELECT details FROM audit").fetchone()[0]


def test_audit_is_append_only_in_the_database(store: Store) -> None:
    store.audit("merge", actor="a@b", pr=1)
    raw = sqlite3.connect(store.path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("UPDATE audit SET action = 'nothing'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute("DELETE FROM audit")
    finally:
        raw.close()
    assert [e.action for e in store.audit_entries()] == ["merge"]
    assert not [name for name in dir(store) if "delete" in name or "update" in name]


def test_audit_is_committed_before_returning(store: Store) -> None:
    store.audit("unhold", actor="a@b", details={"host": "h"})
    with Store(store.path) as other:
        assert [e.action for e in other.audit_entries()] == ["unhold"]


# --- schema and damage ----------------------------------------------------------


def test_migration_adds_versions_in_order(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    with Store(db) as s:
        s.audit("merge", actor="a@b")
    conn = sqlite3.connect(db, isolation_level=None)
    extra = (*MIGRATIONS, ("ALTER TABLE audit ADD COLUMN origin TEXT",))
    assert migrate(conn, extra) == SCHEMA_VERSION
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert migrate(conn, extra) == SCHEMA_VERSION + 1  # idempotent
    broken = (*extra, ("ALTER TABLE audit ADD COLUMN a TEXT", "THIS IS NOT SQL"))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, broken)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert "a" not in [row[1] for row in conn.execute("PRAGMA table_info(audit)")]  # rolled back
    conn.close()
    # This version refuses the newer schema, naming the file.
    with pytest.raises(StateError, match="newer") as info:
        Store(db)
    assert str(db) in str(info.value)


def test_a_v3_journal_migrates_in_place_keeping_its_rows(tmp_path: Path) -> None:
    """Version 4 lets runs end ``unknown`` / ``unverified``; a journal written by v3 keeps every run, step,
    audit entry and notification as it was (its old "failed" rows stay "failed") and goes on numbering."""
    db = tmp_path / DB_NAME
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, MIGRATIONS[:3])
    now = "2026-03-01T12:00:00.000000+00:00"
    conn.execute("INSERT INTO runs (kind, pr, status, plan, actor, trigger, summary, created_at, updated_at,"
                 " finished_at) VALUES ('deploy', 42, 'failed', '{}', 'a@b', 'auto', 'PR #42: unknown (1 unknown)',"
                 " ?, ?, ?)", (now, now, now))
    conn.execute("INSERT INTO run_steps (run_id, at, step, host, data) VALUES (1, ?, 'host_finished', 'h',"
                 " '{\"outcome\": \"unknown\"}')", (now,))
    conn.execute("INSERT INTO audit (at, action, actor, details) VALUES (?, 'deploy', 'a@b', '{}')", (now,))
    conn.execute("INSERT INTO outbox (id, created_at, title, message, severity, tags, next_attempt_at)"
                 " VALUES ('e1', ?, 't', 'm', 'info', '[]', ?)", (now, now))
    with pytest.raises(sqlite3.IntegrityError):  # v3's CHECK refuses the new statuses
        conn.execute("UPDATE runs SET status = 'unknown' WHERE id = 1")
    conn.close()
    with Store(db) as s:
        (old,) = s.list_runs()
        assert (old.id, old.status, old.summary, old.host_outcomes) == (1, "failed", "PR #42: unknown (1 unknown)",
                                                                        {"h": "unknown"})
        assert [a.action for a in s.audit_entries()] == ["deploy"] and s.notification("e1") is not None
        new = s.create_run("deploy", actor="a@b", pr=43, plan={})
        assert new == 2
        s.finish_run(new, "unknown", "PR #43: unknown")
        s.finish_run(s.create_run("converge", actor="a@b", plan={}), "unverified")
        assert [(r.id, r.status, r.finished) for r in s.list_runs()] == [
            (3, "unverified", True), (2, "unknown", True), (1, "failed", True)]
        assert s.unfinished_runs() == []
    with sqlite3.connect(db, isolation_level=None) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                          " AND tbl_name = 'runs'")] == ["runs_status"]


def test_fresh_database_starts_at_version_zero(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    assert migrate(conn) == 0
    assert migrate(conn) == SCHEMA_VERSION
    conn.close()


@pytest.mark.parametrize(
    "content",
    [os.urandom(4096), b"SQLite format 3\x00" + b"\xff" * 4000, b"not a database at all\n"],
    ids=["random", "bad-header", "text"],
)
def test_corrupt_database_gives_a_state_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / DB_NAME
    db.write_bytes(content)
    with pytest.raises(StateError) as info:
        Store(db)
    assert str(db) in info.value.message
    assert "move it aside" in info.value.hint


def test_unreadable_database_path(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    db.mkdir()
    with pytest.raises(StateError, match="cannot open the state database"):
        Store(db)


def test_closed_store_raises_state_error(tmp_path: Path) -> None:
    s = Store(tmp_path / DB_NAME)
    s.close()
    with pytest.raises(StateError, match="closed"):
        s.audit_entries()


# --- deploy lock ----------------------------------------------------------------


def test_lock_in_one_process(tmp_path: Path) -> None:
    first = DeployLock(tmp_path, label="nfu-tui auto")
    with first:
        assert first.held
        assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
        with pytest.raises(DeployLocked) as info:
            DeployLock(tmp_path, label="nfu-tui deploy").acquire()
        message = str(info.value)
        assert message.startswith(f"deploy running in nfu-tui auto (pid {os.getpid()}, {local_actor()}) since ")
        assert info.value.title == "Another deploy is running"
        with pytest.raises(StateError, match="already held"):
            first.acquire()
    assert not first.held
    assert first.path.read_bytes() == b""  # holder info cleared on release
    with DeployLock(tmp_path, label="nfu-tui deploy"):
        pass
    first.release()  # releasing twice is harmless


def test_lock_between_processes(tmp_path: Path) -> None:
    child = _child(f"""
        import sys
        from nfu_tui.core.store import DeployLock
        with DeployLock({str(tmp_path)!r}, label="nfu-tui auto"):
            print("locked", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
    """)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(DeployLocked) as info:
            DeployLock(tmp_path, label="the nfu-tui TUI").acquire()
        assert f"deploy running in nfu-tui auto (pid {child.pid}, " in str(info.value)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "released"
    finally:
        child.stdin.close()
        child.wait()
    with DeployLock(tmp_path, label="the nfu-tui TUI"):
        pass


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    child = _child(f"""
        import sys
        from nfu_tui.core.store import DeployLock
        DeployLock({str(tmp_path)!r}, label="nfu-tui auto").acquire()
        print("locked", flush=True)
        sys.stdin.readline()
    """)
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(DeployLocked):
        DeployLock(tmp_path).acquire()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert b'"pid"' in (tmp_path / "deploy.lock").read_bytes()  # stale holder info left behind
    with DeployLock(tmp_path, label="nfu-tui deploy") as lock:
        assert lock.held


def test_describe_holder_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    assert _describe_holder(None) == "deploy running in another nfu-tui process"
    assert _describe_holder({"pid": 12, "label": "nfu-tui auto"}) == "deploy running in nfu-tui auto (pid 12)"
    old = {"pid": 1234, "actor": "alice@box", "label": "nfu-tui auto", "started_at": "2020-01-02T14:02:00+00:00"}
    assert _describe_holder(old).endswith("(pid 1234, alice@box) since 2020-01-02 14:02")
    today = datetime.now(timezone.utc).replace(hour=0, minute=5, second=0)
    assert _describe_holder({**old, "started_at": today.isoformat()}).endswith("since 00:05")


def test_local_actor_is_user_at_host() -> None:
    user, _, host = local_actor().partition("@")
    assert user and host


def test_abandon_run_closes_and_audits(tmp_path) -> None:
    from nfu_tui.core.store import Store
    from nfu_tui.errors import StateError

    with Store(tmp_path / "db.sqlite3") as store:
        run_id = store.create_run("deploy", actor="alice@box", pr=42)
        run = store.abandon_run(run_id, actor="alice@box", where="the TUI")
        assert run.pr == 42
        assert store.get_run(run_id).status == "abandoned"
        entry = store.audit_entries(limit=1)[0]
        assert entry.action == "abandon" and entry.details == {"run": run_id} and entry.pr == 42
        with pytest.raises(StateError, match="already abandoned"):
            store.abandon_run(run_id, actor="alice@box")


# --- the redaction boundary at the journal's door ---------------------------------------


def test_hostile_text_is_journaled_valid_redacted_and_inert(store: Store) -> None:
    from nfu_tui.sanitize import redactor

    token = "ghp_" + "Q7" * 18
    redactor.add(token)
    run = store.create_run("deploy", actor="alice@box\udcff", plan={"note": f"Bearer {token}"})
    # a lone surrogate from a JSON escape in a host's output used to raise UnicodeEncodeError here
    store.record(run, "host_finished", host="gpc0", outcome="failed",
                 detail=f"switch failed \udcff token {token}", log_excerpt=["\x1b[31mbad \udc80\x1b[0m", "ok"])
    store.finish_run(run, "failed", summary=f"failed: Authorization: token {token}\udcff")
    store.audit("merge", actor="alice", details={"error": f"echo {token}", "lines": ["\udcff"]})
    got = store.get_run(run)
    data = got.steps[-1].data
    assert data["detail"] == "switch failed \ufffd token ***"
    assert data["log_excerpt"] == ["bad \ufffd", "ok"]
    assert got.summary == "failed: Authorization: token ***"
    assert got.actor == "alice@box\ufffd" and got.plan == {"note": "Bearer ***"}
    assert store.audit_entries(1)[0].details == {"error": "echo ***", "lines": ["\ufffd"]}
    store.close()
    raw = b"".join(p.read_bytes() for p in store.path.parent.iterdir() if p.is_file())
    assert token.encode() not in raw
