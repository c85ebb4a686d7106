"""Deploy engine: pure decision helpers, scheduling against in-memory ports, and
end-to-end runs against the simulator's real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.clients._dashboard_protocol import DispatchResult
from nfu_tui.config import Config
from nfu_tui.core.engine import (
    CancelRequested,
    DeployEngine,
    EngineEvent,
    HostFinished,
    HostProgress,
    HostStarted,
    JournalState,
    MergeRefused,
    Outcome,
    Paused,
    RunFinished,
    RunStatus,
    Timeouts,
    WaitingForCanaries,
    ci_refusal,
    command_status_note,
    health_problems,
    inert_lines,
    interpret_command,
    interpret_dispatch,
    judge_lost_command,
    merge_refusal,
    notification_for,
    switch_needs_force,
    system_verdict,
    unfinished_detail,
)
from nfu_tui.core.plan import make_plan
from nfu_tui.core.store import DeployLock, Store
from nfu_tui.errors import DashboardUnavailable, DeployLocked, MergeConflict, NotMergeable, StateError
from nfu_tui.models import CIStatus, CIVerdict, Command, CompartmentState, Host, StatusCheck, UpdatePR

HEAD = "a" * 40
MERGE = "b" * 40


# =========================================================== pure helpers


def pr(**kw: Any) -> UpdatePR:
    base = dict(number=42, title="flake.lock: Update", author="bot", html_url="", head_ref="update_flake_lock_action",
                head_sha=HEAD, base_ref="main", base_sha="c" * 40, mergeable=True, mergeable_state="clean")
    base.update(kw)
    return UpdatePR(**base)


def test_merge_refusal_accepts_a_clean_pr() -> None:
    assert merge_refusal(pr(), HEAD) is None
    assert merge_refusal(pr(mergeable=None, mergeable_state="unknown"), HEAD) is None  # GitHub decides at merge


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"head_sha": "d" * 40}, "changed since it was reviewed: its head is now ddddddd, the plan was made for aaaaaaa"),
        ({"state": "closed"}, "closed without being merged"),
        ({"draft": True}, "is a draft"),
        ({"mergeable": False, "mergeable_state": "dirty"}, "has merge conflicts with main"),
        ({"mergeable_state": "dirty"}, "has merge conflicts"),
    ],
)
def test_merge_refusal_reasons(changes: dict[str, Any], expected: str) -> None:
    reason = merge_refusal(pr(**changes), HEAD)
    assert reason is not None and expected in reason and "#42" in reason


def test_merge_refusal_leaves_already_merged_to_the_caller() -> None:
    assert merge_refusal(pr(state="closed", merged=True, merge_commit_sha=MERGE), HEAD) is None


@pytest.mark.parametrize(
    ("ci", "require", "expected"),
    [
        (CIStatus(CIVerdict.GREEN, "3/3 checks passed"), True, None),
        (CIStatus(CIVerdict.NO_CI), False, None),
        (CIStatus(CIVerdict.NO_CI), True, "no CI ran"),
        (CIStatus(CIVerdict.RED, "2/3 checks passed; 'build hosts' failed", ("build hosts",)), True,
         "CI is failing: 2/3 checks passed; 'build hosts' failed"),
        (CIStatus(CIVerdict.RED, "", ("build",)), False, "CI is failing (failing: build)"),
        (CIStatus(CIVerdict.PENDING, "1 check running"), True, "CI is still running: 1 check running"),
        (CIStatus(CIVerdict.UNKNOWN), True, "unknown"),
    ],
)
def test_ci_refusal(ci: CIStatus, require: bool, expected: str | None) -> None:
    reason = ci_refusal(ci, require_ci=require)
    assert reason == expected if expected is None else expected in reason


@pytest.mark.parametrize(
    ("result", "action", "code", "fragment"),
    [
        (DispatchResult("h", "started", "EXECUTING", "20251228-1"), "started", "", ""),
        (DispatchResult("h", "started", "EXECUTING", ""), "fail", "", "no command id"),
        (DispatchResult("h", "blocked", "blocked", "", "offline", "Host is offline"), "offline", "offline", "unreachable"),
        (DispatchResult("h", "blocked", "blocked", "", "send_failed", "Failed to send"), "retry", "send_failed",
         "could not send the switch to the agent (dashboard: Failed to send)"),
        (DispatchResult("h", "blocked", "blocked", "", "busy", 'Command "pull" already running'), "fail", "busy",
         "busy with another command"),
        (DispatchResult("h", "blocked", "blocked", "", "command_pending", "x"), "fail", "command_pending", "busy"),
        (DispatchResult("h", "blocked", "blocked", "", "already_current", "System already up to date"), "current",
         "already_current", "System already up to date"),
        (DispatchResult("h", "blocked", "blocked", "", "lock_outdated", "Pull required"), "fail", "lock_outdated",
         "blocked (lock_outdated)"),
        (DispatchResult("h", "error", "error", "", "", "Host not found"), "fail", "", "Host not found"),
        (None, "fail", "", "no result"),
    ],
)
def test_interpret_dispatch(result: Any, action: str, code: str, fragment: str) -> None:
    d = interpret_dispatch(result, "switch", "h")
    assert (d.action, d.code) == (action, code)
    assert fragment in d.message
    if action == "started":
        assert d.command_id == "20251228-1"


def cmd(status: str, op: str = "switch", error: str = "", exit_code: int | None = None) -> Command:
    return Command("c1", "h", op, status, error=error, exit_code=exit_code)


@pytest.mark.parametrize(
    ("command", "ok", "fragment"),
    [
        (cmd("SUCCESS"), True, ""),
        (cmd("PARTIAL", "pull", "Lock status not ok after pull"), True, "partial: Lock status not ok after pull"),
        (cmd("TIMEOUT"), False, "agent did not reconnect within 90 s"),
        (cmd("TIMEOUT", "pull", "late"), False, "timed out: late"),
        (cmd("ERROR", "switch", "command failed", 1), False, "switch error (exit 1): command failed"),
        (cmd("SKIPPED", error="Cancelled by user"), False, "released in the dashboard (Cancelled by user)"),
        (cmd("BLOCKED", error="System already up to date"), False, "blocked"),
    ],
)
def test_interpret_command(command: Command, ok: bool, fragment: str) -> None:
    got_ok, detail = interpret_command(command)
    assert got_ok is ok and fragment in detail
    if ok and not fragment:
        assert detail == ""


@pytest.mark.parametrize(
    ("after", "before", "merge", "force"),
    [
        ("bbbbbbb", "1234567", MERGE, True),  # at the merge commit
        ("BBBBBBB", "bbbbbbb", MERGE, True),  # already at the merge (resumed): still must rebuild
        ("9999999", "1234567", MERGE, True),  # branch moved past the merge: the pull moved it
        ("1234567", "1234567", MERGE, False),  # nothing moved and not the merge commit
        ("", "1234567", MERGE, True),  # unknown: assume it moved
        ("", "", "", False),
    ],
)
def test_switch_needs_force(after: str, before: str, merge: str, force: bool) -> None:
    assert switch_needs_force(after, before, merge) is force


@pytest.mark.parametrize(
    ("op", "status", "fragments"),
    [
        ("switch", "RUNNING_WARNING", ["RUNNING_WARNING", "10 min warning", "normal for big builds", "still waiting"]),
        ("pull", "running_warning", ["RUNNING_WARNING", "2 min warning", "still waiting"]),
        ("pull", "TIMEOUT_PENDING", ["TIMEOUT_PENDING", "5 min hard timeout", "late result still counts",
                                     "wait / ignore"]),
        ("switch", "AWAITING_RECONNECT", ["reconnect", "90 s"]),
        ("switch", "KILLING", ["KILLING", "cannot stop the process"]),
    ],
)
def test_command_status_note(op: str, status: str, fragments: list[str]) -> None:
    note = command_status_note(op, status)
    assert all(f in note for f in fragments), note


def test_command_status_note_is_silent_for_plain_running_states() -> None:
    assert command_status_note("pull", "EXECUTING") == "" and command_status_note("pull", "VALIDATING") == ""


def test_unfinished_detail() -> None:
    pending = unfinished_detail("switch", "TIMEOUT_PENDING", 35.5, "switch")
    assert pending.startswith("switch still TIMEOUT_PENDING after 35.5 min")
    assert all(word in pending for word in ("timeout-action", "wait (more time", "ignore (releases", "kill (only"))
    assert unfinished_detail("pull", "EXECUTING", 6, "pull") == (
        "pull did not finish within 6 min (dashboard status EXECUTING, pending_command='pull'); check the host")
    assert unfinished_detail("pull", "", 6) == "pull did not finish within 6 min (no result); check the host"


T0 = datetime(2025, 12, 28, 14, 30, 6, 140012, tzinfo=timezone.utc)


def at_gen(generation: str = "1234567") -> Host:
    return Host("h", "h", status="online", generation=generation)


def with_system(state: CompartmentState, checked_at: str, message: str = "m") -> Host:
    return at_gen().with_changes(system=StatusCheck(state, message, checked_at))


@pytest.mark.parametrize(
    ("host", "since", "verdict"),
    [
        (with_system(CompartmentState.OK, "2025-12-28T14:30:06Z"), T0, True),  # same second: the fraction is dropped
        (with_system(CompartmentState.ERROR, "2025-12-28T15:40:00+01:00"), T0, False),  # any offset
        (with_system(CompartmentState.OK, "2025-12-28T14:30:05Z"), T0, None),  # before the start
        (with_system(CompartmentState.WORKING, "2025-12-28T14:31:00Z"), T0, None),
        (with_system(CompartmentState.OK, ""), T0, None),  # synthesised by gating: no time
        (with_system(CompartmentState.OK, "2025-12-28T14:31:00Z"), None, None),
        (None, T0, None),
    ],
)
def test_system_verdict(host: Host | None, since: datetime | None, verdict: bool | None) -> None:
    assert system_verdict(host, since) is verdict


@pytest.mark.parametrize(
    ("op", "host", "before", "verdict", "fragment"),
    [
        ("pull", at_gen(MERGE[:7]), "1234567", "ok", "now bbbbbbb, the merge commit"),
        ("pull", at_gen("9999999"), "1234567", "ok", "moved from 1234567 to 9999999"),
        ("pull", at_gen(), "1234567", "unknown", "generation 1234567 is not the merge commit bbbbbbb; verify"),
        ("pull", at_gen(""), "", "unknown", "generation (unknown)"),
        ("switch", with_system(CompartmentState.OK, "2025-12-28T14:32:00Z", "Last switch succeeded"), "", "ok",
         "System ok since it started (Last switch succeeded)"),
        ("switch", with_system(CompartmentState.ERROR, "2025-12-28T14:32:00Z", "Switch failed (exit 1)"), "",
         "failed", "System error since it started: Switch failed (exit 1)"),
        ("switch", with_system(CompartmentState.WORKING, "2025-12-28T14:32:00Z"), "", "wait", "still reports the switch"),
        ("switch", with_system(CompartmentState.OK, "2025-12-28T12:02:11Z"), "", "unknown", "no switch result since"),
        ("switch", None, "", "unknown", "no longer lists the host"),
    ],
)
def test_judge_lost_command(op: str, host: Host | None, before: str, verdict: str, fragment: str) -> None:
    """Only a System error proves a failure; without evidence either way the verdict is "unknown" (it used
    to be a failure)."""
    ev = judge_lost_command(op, host, T0, MERGE, before)
    assert ev.verdict == verdict and fragment in ev.detail
    assert ev.proven is (verdict == "failed")
    assert ev.detail.startswith(f"the dashboard lost track of the {op} (restarted?)")


def test_health_problems() -> None:
    ok = Host("h", status="online", system=StatusCheck(CompartmentState.OK), tests=StatusCheck(CompartmentState.OUTDATED))
    assert health_problems(ok) == []
    bad = ok.with_changes(status="offline", system=StatusCheck(CompartmentState.ERROR, "Switch failed (exit 1)"),
                          tests=StatusCheck(CompartmentState.ERROR))
    assert health_problems(bad) == ["offline", "System red (Switch failed (exit 1))", "Tests red (error)"]
    assert health_problems(None) == ["no longer known to the dashboard"]


def test_inert_lines_strip_escapes_and_bound_length() -> None:
    hostile = ["\x1b[31mred\x1b[0m [bold]x[/bold]", "\x1b]52;c;ZXZpbA==\x07copied", "A" * 1_000_000, "ok"]
    lines = inert_lines(hostile, limit=3)
    assert len(lines) == 3
    assert lines[0] == "copied"
    assert all("\x1b" not in line and "\x07" not in line for line in lines)
    assert len(lines[1]) < 600 and lines[1].startswith("AAAA")
    assert inert_lines(hostile)[0] == "red [bold]x[/bold]"  # markup stays literal text


def test_journal_state_folds_steps() -> None:
    t = "2026-01-01T00:00:00+00:00"
    steps = [
        ("merge_requested", {}, t),
        ("merged", {"sha": MERGE}, t),
        ("host_started", {"host": "a", "phase": "pull"}, t),
        ("command_dispatched", {"host": "a", "phase": "pull", "command_id": "c1"}, t),
        ("pull_done", {"host": "a"}, t),
        ("host_started", {"host": "a", "phase": "switch"}, t),
        ("host_finished", {"host": "a", "outcome": "ok", "phase": "switch"}, t),
        ("host_started", {"host": "b", "phase": "pull"}, t),
        ("pull_done", {"host": "b"}, t),
        ("host_started", {"host": "b", "phase": "switch"}, "T2"),
        ("command_dispatched", {"host": "b", "phase": "switch", "command_id": "c9"}, t),
        ("host_started", {"host": "c", "phase": "pull"}, t),
        ("host_requeued", {"host": "c"}, t),
        ("canary_wait", {"until": "2026-01-01T00:10:00+00:00"}, t),
        ("canary_gate", {"passed": True}, t),
    ]
    st = JournalState.from_steps(steps)
    assert st.merge_requested and st.merge_sha == MERGE
    assert st.finished["a"].outcome is Outcome.OK
    assert st.in_flight == {"b": ("switch", "c9", "T2")}
    assert st.pulled == {"a", "b"}
    assert "c" not in st.in_flight and "c" not in st.pulled
    assert st.canary_gate is True and st.canary_wait_until.startswith("2026")


def test_notification_severity_follows_status() -> None:
    from nfu_tui.core.engine import HostOutcome, RunResult

    ok = RunResult(1, RunStatus.SUCCEEDED, 42, MERGE, "", (HostOutcome("a", Outcome.OK),))
    failed = RunResult(1, RunStatus.FAILED, 42, MERGE, "x", (HostOutcome("a", Outcome.FAILED, "switch", "boom"),))
    refused = RunResult(1, RunStatus.REFUSED, 42, "", "CI is failing")
    assert notification_for(ok).severity == "information" and "deployed" in notification_for(ok).title
    assert notification_for(failed).severity == "error" and "failed on a" in notification_for(failed).title
    assert notification_for(refused).message == "CI is failing"
    assert ok.exit_code == 0 and failed.exit_code == 1 and refused.exit_code == 1


# ==================================================== in-memory ports


@dataclass
class Script:
    """How a fake host answers: per op a dispatch result / final status; "hang" never finishes."""

    pull: str = "SUCCESS"
    switch: str = "SUCCESS"
    test: str = "SUCCESS"
    system: str = "reported"  # "stale": the dashboard never reports System for the switch
    lines: list[str] = field(default_factory=list)


class FakePorts:
    """GitHub + dashboard + fleet view in memory, with commands finishing after a few loop turns."""

    def __init__(self, hosts: list[Host], scripts: dict[str, Script] | None = None) -> None:
        self.hosts_ = {h.id: h for h in hosts}
        self.scripts = scripts or {}
        self.pr = pr()
        self.ci = CIStatus(CIVerdict.GREEN, "all green")
        self.merge_error: Exception | None = None
        self.merges: list[tuple[int, str, str]] = []
        self.dispatched: list[tuple[str, str, bool]] = []
        self.commands: dict[str, Command] = {}
        self.kills: list[str] = []
        self.ignored: list[str] = []
        self.states_asked = 0
        self.running_now = 0
        self.max_running = 0
        self.changed = asyncio.Event()
        self._ids = itertools.count(1)

    # GitHub port
    async def get_pull(self, number: int, *, wait_mergeable: bool = True) -> UpdatePR:
        return self.pr

    async def ci_status(self, sha: str) -> CIStatus:
        return self.ci

    async def merge(self, number: int, sha: str, *, method: str = "merge") -> str:
        self.merges.append((number, sha, method))
        if self.merge_error:
            raise self.merge_error
        self.pr = self.pr.with_changes(state="closed", merged=True, merge_commit_sha=MERGE)
        return MERGE

    async def wait_for_branch_contains(self, branch: str, sha: str, *, timeout: float = 60) -> None:
        return None

    async def viewer_login(self) -> str:
        return "alice"

    # dashboard port
    async def dispatch(self, op: str, hosts: list[str], *, force: bool = False) -> list[DispatchResult]:
        (host,) = hosts
        self.dispatched.append((op, host, force))
        self._tick()
        h = self.hosts_[host]
        if not h.online:
            return [DispatchResult(host, "blocked", "blocked", "", "offline", "Host is offline")]
        outcome = getattr(self.scripts.get(host, Script()), op)
        if outcome.startswith("blocked:"):
            return [DispatchResult(host, "blocked", "blocked", "", outcome.split(":", 1)[1], "blocked by fake")]
        cid = f"cmd-{next(self._ids)}"
        self.commands[cid] = Command(cid, host, op, "EXECUTING")
        self.running_now += 1
        self.max_running = max(self.max_running, self.running_now)
        if outcome != "hang":
            asyncio.get_running_loop().create_task(self._finish(cid, outcome))
        return [DispatchResult(host, "started", "EXECUTING", cid)]

    async def _finish(self, cid: str, status: str) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        c = self.commands[cid]
        self.commands[cid] = Command(cid, c.host_id, c.op, status, error="" if status == "SUCCESS" else "boom",
                                     exit_code=0 if status == "SUCCESS" else 1)
        self.running_now -= 1
        if c.op == "pull" and status == "SUCCESS":
            self.hosts_[c.host_id] = self.hosts_[c.host_id].with_changes(generation=MERGE[:7])
        stale = self.scripts.get(c.host_id, Script()).system == "stale"
        if c.op == "switch" and status in ("SUCCESS", "ERROR") and not stale:  # what the dashboard stores
            state = CompartmentState.OK if status == "SUCCESS" else CompartmentState.ERROR
            self.hosts_[c.host_id] = self.hosts_[c.host_id].with_changes(system=StatusCheck(
                state, "Last switch succeeded" if status == "SUCCESS" else "command failed", stamp_now()))
        self._tick()

    def _tick(self) -> None:
        ev, self.changed = self.changed, asyncio.Event()
        ev.set()

    def set_online(self, host: str, online: bool) -> None:
        self.hosts_[host] = self.hosts_[host].with_changes(status="online" if online else "offline")
        self._tick()

    async def kill(self, host: str, signal: str = "SIGTERM") -> str:
        self.kills.append(host)
        return "sent"

    async def timeout_action(self, host: str, action: str, minutes: int | None = None) -> None:
        """``ignore`` as the dashboard does it (§3.8): the running command turns SKIPPED, nothing stops."""
        assert action == "ignore"
        self.ignored.append(host)
        for cid, c in list(self.commands.items()):
            if c.host_id == host and not c.terminal:
                self.commands[cid] = Command(cid, host, c.op, "SKIPPED", error="Cancelled by user")
        self._tick()

    async def command_states(self) -> dict[str, Command]:
        self.states_asked += 1
        return {c.host_id: c for c in self.commands.values() if not c.terminal}

    async def events(self, limit: int = 100, host: str | None = None) -> list[dict[str, Any]]:
        return []

    # fleet view
    def host(self, host_id: str) -> Host | None:
        return self.hosts_.get(host_id)

    def hosts(self) -> list[Host]:
        return list(self.hosts_.values())

    def output_lines(self, host_id: str, command_id: str | None = None) -> list[str]:
        lines = self.scripts.get(host_id, Script()).lines
        return [f"{command_id}: {line}" for line in lines] if command_id else list(lines)

    async def settle_output(self, host_id: str, command_id: str) -> None:
        return None  # the scripted output is complete

    def command(self, command_id: str) -> Command | None:
        return self.commands.get(command_id)

    def active_command(self, host_id: str) -> Command | None:
        return next((c for c in reversed(self.commands.values()) if c.host_id == host_id and not c.terminal), None)

    def commands_for(self, host_id: str) -> list[Command]:
        return [c for c in reversed(self.commands.values()) if c.host_id == host_id]

    async def wait_until(self, predicate: Any, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not predicate():
            if loop.time() >= end:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, end - loop.time()))
            except TimeoutError:
                pass
        return True

    async def wait_for_command(self, command_id: str, timeout: float) -> Command:
        if not await self.wait_until(lambda: command_id in self.commands and self.commands[command_id].terminal,
                                     timeout):
            raise TimeoutError(command_id)
        return self.commands[command_id]

    def order(self, op: str = "switch") -> list[str]:
        return [h for o, h, _ in self.dispatched if o == op]


def online(name: str, device: str = "server", location: str = "home") -> Host:
    return Host(name, name, device_type=device, location=location, status="online", generation="1234567",
                system=StatusCheck(CompartmentState.OK), tests=StatusCheck(CompartmentState.OK))


def cfg(**automation: Any) -> Config:
    hosts = automation.pop("hosts", {})
    updates = {"verify_minutes": automation.pop("verify_minutes", 0.05),
               "post_switch_tests": automation.pop("post_switch_tests", "never")}
    auto = {"canary_wait_minutes": 0, **automation}
    return Config.model_validate({"flake_updates": {"automation": auto, **updates}, "hosts": hosts})


def stamp_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "journal.sqlite3")
    yield s
    s.close()


def engine_for(ports: FakePorts, store: Store, config: Config, tmp_path: Path, **kw: Any) -> tuple[DeployEngine, list]:
    """An engine on ``ports``; its events are collected and wake ``ports.wait_until`` waiters."""
    events: list[EngineEvent] = []

    def collect(event: EngineEvent) -> None:
        events.append(event)
        ports._tick()

    timeouts = kw.pop("timeouts", Timeouts(pull=5, switch=5, gate_poll=0.01, queued_poll=0.05, resume_lookup=0.05,
                                           evidence=0.3, evidence_poll=0.05))
    eng = DeployEngine(ports, ports, ports, store, config, lock=lambda: DeployLock(tmp_path, label="test"),
                       on_event=collect, timeouts=timeouts, **kw)
    return eng, events


def plan_for(ports: FakePorts, config: Config, **kw: Any):
    return make_plan(ports.hosts(), config, kw.pop("held", set()), pr_number=42, head_sha=HEAD, **kw)


FLEET = [online("gpc0", "gaming"), online("hsb0"), online("hsb1"), online("csb0", "server", "cloud")]


async def test_sequential_in_plan_order_pull_then_switch(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET)
    config = cfg()
    eng, events = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.status is RunStatus.SUCCEEDED and result.merge_sha == MERGE
    assert ports.merges == [(42, HEAD, "merge")]
    assert [(o, h) for o, h, _ in ports.dispatched] == [
        (op, h) for h in ["gpc0", "hsb0", "hsb1", "csb0"] for op in ("pull", "switch")]
    assert all(force for op, _, force in ports.dispatched)  # pull forced (§8 #42); switch: generation = merge
    assert ports.max_running == 1
    assert [o.outcome for o in result.outcomes] == [Outcome.OK] * 4
    run = store.get_run(result.run_id)
    assert run.status == "succeeded" and run.merge_sha == MERGE
    assert run.host_outcomes == {h.id: "ok" for h in FLEET}
    assert isinstance(events[-1], RunFinished)
    assert [a.action for a in store.audit_entries()] == ["deploy", "merge"]
    assert store.audit_entries()[0].github_login == "alice"


async def test_journal_written_before_acting_and_webhook_notified(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:1])
    config = cfg()
    sent: list[Any] = []

    class Notifier:
        async def send(self, n: Any) -> bool:
            sent.append(n)
            return True

    journal_at_dispatch: list[list[str]] = []
    real_dispatch, real_merge = ports.dispatch, ports.merge

    async def dispatch(op: str, hosts: list[str], *, force: bool = False) -> Any:
        journal_at_dispatch.append([s.step for s in store.get_run(1).steps])
        return await real_dispatch(op, hosts, force=force)

    async def merge(number: int, sha: str, *, method: str = "merge") -> str:
        assert [s.step for s in store.get_run(1).steps][-1] == "merge_requested"
        return await real_merge(number, sha, method=method)

    ports.dispatch, ports.merge = dispatch, merge  # type: ignore[method-assign]
    eng, _ = engine_for(ports, store, config, tmp_path, notifier=Notifier())
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert journal_at_dispatch[0][-1] == "host_started" and journal_at_dispatch[1][-1] == "host_started"
    steps = [s.step for s in store.get_run(result.run_id).steps]
    assert steps == ["merge_requested", "merged", "host_started", "command_dispatched", "pull_done",
                     "host_started", "command_dispatched", "switch_done", "host_finished"]
    (note,) = sent
    assert note.title == "PR #42 deployed" and note.severity == "information"


async def test_max_parallel_bounds_concurrency(store: Store, tmp_path: Path) -> None:
    ports = FakePorts([online(f"h{i}") for i in range(7)])
    config = cfg(max_parallel=3)
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.status is RunStatus.SUCCEEDED
    assert ports.max_running == 3


async def test_failure_stops_scheduling_running_hosts_finish(store: Store, tmp_path: Path) -> None:
    hosts = [online(f"h{i}") for i in range(6)]
    ports = FakePorts(hosts, {"h1": Script(switch="ERROR", lines=["\x1b[31merror:\x1b[0m build failed"])})
    config = cfg(max_parallel=2)
    failures: list[Any] = []

    async def on_failure(outcome: Any) -> None:
        failures.append(outcome.host)

    eng, _ = engine_for(ports, store, config, tmp_path, on_failure=on_failure)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.status is RunStatus.FAILED and result.exit_code == 1
    assert failures == ["h1"]
    failed = result.outcome("h1")
    assert failed.outcome is Outcome.FAILED and failed.phase == "switch" and "exit 1" in failed.detail
    (switch,) = [c.id for c in ports.commands.values() if c.host_id == "h1" and c.op == "switch"]
    assert failed.last_lines == (f"{switch}: error: build failed",)  # sanitised, that command's lines only
    started = set(ports.order("pull"))
    assert {"h0", "h1"} <= started and "h5" not in started
    for host in hosts:
        o = result.outcome(host.id)
        if host.id not in started:
            assert o.outcome is Outcome.SKIPPED and "after h1 failed" in o.detail
        elif host.id != "h1":
            assert o.outcome is Outcome.OK  # running ones finish
    assert store.get_run(result.run_id).status == "failed"


async def test_may_start_host_gate_pauses_until_open(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:2])
    config = cfg()
    answers = itertools.chain([False, False], itertools.repeat(True))  # asked before every pull and switch
    eng, events = engine_for(ports, store, config, tmp_path, may_start_host=lambda: next(answers))
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.status is RunStatus.SUCCEEDED
    assert sum(isinstance(e, Paused) for e in events) == 1
    steps = [s.step for s in store.get_run(result.run_id).steps]
    assert steps.index("paused") < steps.index("host_started")


async def test_canary_gate_health_failure_stops_the_rest(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET)
    config = cfg(canary_wait_minutes=10, hosts={"hsb1": {"canary": True}})
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        ports.hosts_["hsb1"] = ports.hosts_["hsb1"].with_changes(
            tests=StatusCheck(CompartmentState.ERROR, "Tests failed (exit 3)"))

    eng, events = engine_for(ports, store, config, tmp_path, sleep=sleep)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert slept and slept[0] == pytest.approx(600, abs=2)
    assert ports.order("pull") == ["hsb1"]
    assert result.status is RunStatus.FAILED
    assert result.outcome("hsb1").outcome is Outcome.FAILED and result.outcome("hsb1").phase == "health"
    assert "Tests red" in result.outcome("hsb1").detail
    assert all(result.outcome(h).outcome is Outcome.SKIPPED for h in ("gpc0", "hsb0", "csb0"))
    assert any(isinstance(e, WaitingForCanaries) for e in events)


async def test_merge_refusals_touch_nothing(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET)
    ports.ci = CIStatus(CIVerdict.RED, "1/2 checks passed; 'build' failed", ("build",))
    config = cfg()
    eng, events = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.status is RunStatus.REFUSED and "CI is failing" in result.message
    assert ports.merges == [] and ports.dispatched == []
    assert any(isinstance(e, MergeRefused) for e in events)
    assert all(o.outcome is Outcome.SKIPPED for o in result.outcomes)
    assert store.get_run(result.run_id).status == "failed"


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (MergeConflict("Head branch was modified", status=409), "changed since it was reviewed"),
        (NotMergeable("Required status check \"ci\" is expected.", status=405), 'status check "ci" is expected'),
    ],
)
async def test_merge_errors_refuse(store: Store, tmp_path: Path, error: Exception, fragment: str) -> None:
    ports = FakePorts(FLEET)
    ports.merge_error = error
    config = cfg()
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.status is RunStatus.REFUSED and fragment in result.message
    assert ports.dispatched == []


async def test_busy_host_fails_clearly(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:1], {"gpc0": Script(pull="blocked:busy")})
    config = cfg()
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.outcome("gpc0").outcome is Outcome.FAILED
    assert "busy with another command" in result.outcome("gpc0").detail


async def test_switch_lock_outdated_retried_with_force(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:1])
    config = cfg()
    eng, _ = engine_for(ports, store, config, tmp_path)
    # A pull that leaves the generation unchanged (not the merge): the switch is first tried without force.
    ports.scripts["gpc0"] = Script(switch="blocked:lock_outdated")
    orig = ports._finish

    async def finish_keep_generation(cid: str, status: str) -> None:
        gen = ports.hosts_["gpc0"].generation
        await orig(cid, status)
        ports.hosts_["gpc0"] = ports.hosts_["gpc0"].with_changes(generation=gen)

    ports._finish = finish_keep_generation  # type: ignore[method-assign]
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert [(o, f) for o, h, f in ports.dispatched] == [("pull", True), ("switch", False), ("switch", True)]
    assert result.outcome("gpc0").outcome is Outcome.FAILED  # the fake still blocks: reported, not hidden


async def test_cancel_releases_only_on_request_and_never_kills(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET, {"hsb0": Script(switch="hang")})
    config = cfg()
    eng, events = engine_for(ports, store, config, tmp_path)

    def on_event(ev: EngineEvent) -> None:
        if isinstance(ev, HostStarted) and ev.host == "hsb0" and ev.phase == "switch":
            asyncio.get_running_loop().call_later(0.05, lambda: eng.cancel(release_hosts=True))

    eng.subscribe(on_event)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.status is RunStatus.CANCELLED and result.still_running == ("hsb0",)
    assert ports.kills == [] and ports.ignored == ["hsb0"]
    o = result.outcome("hsb0")
    assert o.outcome is Outcome.CANCELLED and o.phase == "switch"
    assert "released in the dashboard" in o.detail and "may still be running on hsb0" in o.detail
    assert result.outcome("gpc0").outcome is Outcome.OK
    assert result.outcome("hsb1").outcome is Outcome.CANCELLED and result.outcome("csb0").outcome is Outcome.CANCELLED
    assert "hsb1" not in ports.order("pull")
    cancel_events = [e for e in events if isinstance(e, CancelRequested)]
    assert len(cancel_events) == 1 and cancel_events[0].still_running == ("hsb0",)
    assert "cannot stop a running command" in cancel_events[0].line()
    assert any(isinstance(e, HostProgress) and e.host == "hsb0" and "timeout-action ignore" in e.message
               for e in events)
    run = store.get_run(result.run_id)
    assert run.status == "cancelled" and run.cancel_requested
    assert [s.host for s in run.steps if s.step == "host_released"] == ["hsb0"]
    assert "still running on the host(s): hsb0" in result.message


@pytest.mark.parametrize("op", ["pull", "switch"])
async def test_cancel_follows_a_running_command_to_its_real_outcome(store: Store, tmp_path: Path, op: str) -> None:
    """Without release nothing is sent to the dashboard: the running command finishes on its own and
    counts as what it was; a host whose pull finished after the cancel is not switched."""
    ports = FakePorts(FLEET[:2], {"gpc0": Script(**{op: "hang"})})
    config = cfg()
    eng, events = engine_for(ports, store, config, tmp_path)
    task = asyncio.create_task(eng.run(plan_for(ports, config), actor="t", queued_wait=0))
    assert await ports.wait_until(lambda: (op, "gpc0") in [(o, h) for o, h, _ in ports.dispatched], 5)
    eng.cancel()
    assert await ports.wait_until(lambda: any(isinstance(e, CancelRequested) for e in events), 5)
    (cid,) = [c.id for c in ports.commands.values() if c.op == op and not c.terminal]
    await ports._finish(cid, "SUCCESS")
    result = await task
    assert result.status is RunStatus.CANCELLED and result.still_running == ()
    assert ports.kills == [] and ports.ignored == []
    o = result.outcome("gpc0")
    if op == "pull":
        assert o.outcome is Outcome.CANCELLED and o.detail == "pulled; the switch was not started: the deploy was cancelled"
        assert ports.order("switch") == []
    else:
        assert o.outcome is Outcome.OK
    assert result.outcome("hsb0").outcome is Outcome.CANCELLED and "hsb0" not in ports.order("pull")
    (cancel,) = [e for e in events if isinstance(e, CancelRequested)]
    assert cancel.still_running == ("gpc0",) and f"gpc0: its {op} keeps running" in cancel.line()


async def test_send_failed_is_retried_once_then_fails_with_the_dashboards_message(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:2], {"gpc0": Script(pull="blocked:send_failed")})
    config = cfg()
    eng, events = engine_for(ports, store, config, tmp_path, timeouts=Timeouts(
        pull=5, switch=5, gate_poll=0.01, queued_poll=0.05, resume_lookup=0.05, send_retry=0.05))
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert ports.order("pull") == ["gpc0", "gpc0"]  # once more, not in a loop
    o = result.outcome("gpc0")
    assert o.outcome is Outcome.FAILED and o.phase == "pull"
    assert "could not send the pull to the agent (dashboard: blocked by fake), twice" in o.detail
    assert result.outcome("hsb0").outcome is Outcome.SKIPPED
    assert any(isinstance(e, HostProgress) and "trying once more" in e.message for e in events)


async def test_send_failed_then_offline_is_queued(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:1], {"gpc0": Script(pull="blocked:send_failed")})
    config = cfg(deploy_strategy="all")
    eng, _ = engine_for(ports, store, config, tmp_path)
    eng.subscribe(lambda ev: ports.set_online("gpc0", False)
                  if isinstance(ev, HostProgress) and "trying once more" in ev.message else None)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert ports.order("pull") == ["gpc0"]
    assert result.status is RunStatus.WAITING and result.outcome("gpc0").outcome is Outcome.QUEUED


@pytest.mark.parametrize("started", [True, False])
async def test_dispatch_error_is_checked_against_the_dashboard(store: Store, tmp_path: Path, started: bool) -> None:
    """An empty-body 500 / transport error after the dashboard may already have started the command."""
    ports = FakePorts(FLEET[:1])
    real = ports.dispatch

    async def dispatch(op: str, hosts: list[str], *, force: bool = False) -> list[DispatchResult]:
        if op == "pull":
            if started:
                await real(op, hosts, force=force)
            else:
                ports.dispatched.append((op, hosts[0], force))
            raise DashboardUnavailable("dashboard answered 500 with an empty body")
        return await real(op, hosts, force=force)

    ports.dispatch = dispatch  # type: ignore[method-assign]
    config = cfg()
    eng, events = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    o = result.outcome("gpc0")
    if started:
        assert result.status is RunStatus.SUCCEEDED and ports.order("pull") == ["gpc0"]
        assert any(isinstance(e, HostProgress) and "the dashboard has the pull (executing, cmd-1)" in e.message
                   for e in events)
    else:  # no trace of it: unknown (it used to be "failed"), the run stops, nothing is rolled back
        assert o.outcome is Outcome.UNKNOWN and "shows no trace of a pull on gpc0" in o.detail
        assert "500 with an empty body" in o.detail
        assert result.status is RunStatus.UNKNOWN and result.exit_code == 1 and result.proven_failures() == []
    assert any(isinstance(e, HostProgress) and e.message.startswith("outcome unknown — checking") for e in events)


async def test_warning_states_are_reported_and_guards_follow_the_dashboard(store: Store, tmp_path: Path) -> None:
    """RUNNING_WARNING keeps the engine waiting past its guard; TIMEOUT_PENDING at the guard fails the
    host naming the dashboard's timeout actions; a ``wait`` from the dashboard extends the guard."""
    ports = FakePorts(FLEET[:2], {"gpc0": Script(switch="hang"), "hsb0": Script(switch="hang")})
    config = cfg(max_parallel=1)
    guard = 0.2
    eng, events = engine_for(ports, store, config, tmp_path, timeouts=Timeouts(
        pull=5, switch=guard, gate_poll=0.01, queued_poll=0.05, resume_lookup=0.05))

    def set_status(host: str, status: str) -> None:
        (cid,) = [c.id for c in ports.commands.values() if c.host_id == host and c.op == "switch"]
        ports.commands[cid] = replace_status(ports.commands[cid], status)
        ports._tick()

    def progress(host: str, fragment: str) -> bool:
        return any(isinstance(e, HostProgress) and e.host == host and fragment in e.message for e in events)

    task = asyncio.create_task(eng.run(plan_for(ports, config), actor="t", queued_wait=0))
    assert await ports.wait_until(lambda: ("switch", "gpc0") in [(o, h) for o, h, _ in ports.dispatched], 5)
    set_status("gpc0", "RUNNING_WARNING")
    assert await ports.wait_until(lambda: progress("gpc0", "RUNNING_WARNING"), 5)
    await asyncio.sleep(3 * guard)  # well past the guard: still followed, because the dashboard says "warning"
    set_status("gpc0", "EXECUTING")  # someone chose timeout-action wait in the dashboard
    assert await ports.wait_until(lambda: progress("gpc0", "gave it more time"), 5)
    (cid,) = [c.id for c in ports.commands.values() if c.host_id == "gpc0" and c.op == "switch"]
    await ports._finish(cid, "SUCCESS")
    assert await ports.wait_until(lambda: ("switch", "hsb0") in [(o, h) for o, h, _ in ports.dispatched], 5)
    set_status("hsb0", "TIMEOUT_PENDING")
    assert await ports.wait_until(lambda: progress("hsb0", "TIMEOUT_PENDING: past the dashboard's 30 min"), 5)
    result = await task
    assert result.outcome("gpc0").outcome is Outcome.OK
    o = result.outcome("hsb0")
    # A command still pending at the guard proves nothing: unknown (it used to be "failed"), never rolled back.
    assert o.outcome is Outcome.UNKNOWN and "still TIMEOUT_PENDING" in o.detail and not o.proven
    assert all(word in o.detail for word in ("timeout-action", "wait", "ignore", "kill"))
    assert ports.ignored == [] and ports.kills == []  # the engine never chooses a timeout action itself
    assert ports.states_asked == 4  # one look-up per command (these hosts always look idle), not per wake-up


def replace_status(c: Command, status: str) -> Command:
    return Command(c.id, c.host_id, c.op, status, c.created_at, c.started_at)


async def test_a_command_the_dashboard_forgot_is_judged_from_the_host(store: Store, tmp_path: Path) -> None:
    """Dashboard restart: command-states no longer holds the command, its record stays EXECUTING.
    The pull is judged by the generation; the switch waits while System says working, then by System."""
    ports = FakePorts(FLEET[:1], {"gpc0": Script(pull="hang", switch="hang")})
    real_states = ports.command_states

    async def forgetful() -> dict[str, Command]:
        await real_states()
        return {}

    ports.command_states = forgetful  # type: ignore[method-assign]
    config = cfg()
    eng, events = engine_for(ports, store, config, tmp_path)
    task = asyncio.create_task(eng.run(plan_for(ports, config), actor="t", queued_wait=0))
    assert await ports.wait_until(lambda: ports.states_asked >= 1, 5)
    ports.hosts_["gpc0"] = ports.hosts_["gpc0"].with_changes(generation=MERGE[:7])  # the pull got through
    ports._tick()
    assert await ports.wait_until(lambda: ports.order("switch") == ["gpc0"], 5)
    ports.hosts_["gpc0"] = ports.hosts_["gpc0"].with_changes(system=StatusCheck(CompartmentState.WORKING,
                                                                                 "Switch in progress..."))
    ports._tick()
    assert await ports.wait_until(lambda: any("still reports the switch running" in e.line() for e in events), 5)
    stamp = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ports.hosts_["gpc0"] = ports.hosts_["gpc0"].with_changes(
        system=StatusCheck(CompartmentState.OK, "Last switch succeeded", stamp))
    ports._tick()
    result = await task
    assert result.status is RunStatus.SUCCEEDED, result.summary()
    assert "lost track of the pull" in result.outcome("gpc0").detail
    assert "reported System ok since it started (Last switch succeeded)" in result.outcome("gpc0").detail


async def test_failure_excerpt_is_the_failed_commands_output(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:1], {"gpc0": Script(switch="ERROR", lines=["building", "error: boom"])})
    config = cfg()
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    (switch,) = [c.id for c in ports.commands.values() if c.op == "switch"]
    assert result.outcome("gpc0").last_lines == (f"{switch}: building", f"{switch}: error: boom")


async def test_queued_host_deployed_when_it_comes_online(store: Store, tmp_path: Path) -> None:
    hosts = FLEET[:2] + [online("hsb8").with_changes(status="offline")]
    ports = FakePorts(hosts)
    config = cfg(deploy_strategy="all")
    eng, events = engine_for(ports, store, config, tmp_path)

    def on_event(ev: EngineEvent) -> None:
        if isinstance(ev, HostFinished) and ev.host == "hsb0":
            asyncio.get_running_loop().call_later(0.05, ports.set_online, "hsb8", True)

    eng.subscribe(on_event)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=None)
    assert result.status is RunStatus.SUCCEEDED
    assert ports.order("switch") == ["gpc0", "hsb0", "hsb8"]
    assert store.get_run(result.run_id).host_outcomes["hsb8"] == "ok"


async def test_queued_host_still_offline_leaves_run_resumable(store: Store, tmp_path: Path) -> None:
    hosts = FLEET[:1] + [online("hsb8").with_changes(status="offline")]
    ports = FakePorts(hosts)
    config = cfg(deploy_strategy="all")
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert result.status is RunStatus.WAITING and result.exit_code == 0
    assert result.outcome("hsb8").outcome is Outcome.QUEUED
    assert [r.id for r in store.unfinished_runs()] == [result.run_id]
    ports.set_online("hsb8", True)
    eng2, _ = engine_for(ports, store, config, tmp_path)
    resumed = await eng2.resume(result.run_id, actor="t", queued_wait=0)
    assert resumed.status is RunStatus.SUCCEEDED
    assert ports.merges == [(42, HEAD, "merge")]  # merged once
    assert ports.order("switch") == ["gpc0", "hsb8"]
    assert store.unfinished_runs() == []


async def test_host_going_offline_at_dispatch_is_requeued(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:2])
    config = cfg(deploy_strategy="online-only")
    ports.hosts_["hsb0"] = ports.hosts_["hsb0"]
    plan = plan_for(ports, config)
    ports.set_online("hsb0", False)
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan, actor="t", queued_wait=0)
    o = result.outcome("hsb0")
    assert o.outcome is Outcome.SKIPPED and "went offline" in o.detail
    assert result.status is RunStatus.SUCCEEDED


async def test_resume_never_remerges_nor_reruns_finished_hosts(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET, {"hsb0": Script(switch="hang")})
    config = cfg()
    eng, _ = engine_for(ports, store, config, tmp_path)
    task = asyncio.create_task(eng.run(plan_for(ports, config), actor="t", queued_wait=0))
    assert await ports.wait_until(lambda: ("switch", "hsb0", True) in ports.dispatched, 5)
    task.cancel()  # the process "dies": no journal finish
    with pytest.raises(asyncio.CancelledError):
        await task
    (run,) = store.unfinished_runs()
    assert run.hosts_in_flight == {"hsb0": "switch"}
    # The interrupted switch completes on the host meanwhile.
    (cid,) = [c.id for c in ports.commands.values() if c.host_id == "hsb0" and c.op == "switch"]
    ports.scripts["hsb0"] = Script()
    await ports._finish(cid, "SUCCESS")
    eng2, events = engine_for(ports, store, config, tmp_path)
    result = await eng2.resume(run.id, actor="t", queued_wait=0)
    assert result.status is RunStatus.SUCCEEDED
    assert ports.merges == [(42, HEAD, "merge")]
    assert ports.order("switch") == ["gpc0", "hsb0", "hsb1", "csb0"]  # hsb0's switch followed, not re-run
    assert ports.order("pull") == ["gpc0", "hsb0", "hsb1", "csb0"]
    assert [e.resumed for e in events if type(e).__name__ == "RunStarted"] == [True]


async def test_resume_after_merge_requested_checks_github(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:1])
    config = cfg()
    plan = plan_for(ports, config)
    run_id = store.create_run("deploy", actor="t", pr=42, head_sha=HEAD, plan=plan.to_dict())
    store.record(run_id, "merge_requested", pr=42, sha=HEAD)
    # Not merged on GitHub: refuse to guess.
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.resume(run_id, actor="t", queued_wait=0)
    assert result.status is RunStatus.REFUSED and "was requested before the interruption" in result.message
    assert ports.merges == []
    # Merged on GitHub meanwhile: record the sha and deploy, without merging again.
    run_id = store.create_run("deploy", actor="t", pr=42, head_sha=HEAD, plan=plan.to_dict())
    store.record(run_id, "merge_requested", pr=42, sha=HEAD)
    ports.pr = ports.pr.with_changes(state="closed", merged=True, merge_commit_sha=MERGE)
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.resume(run_id, actor="t", queued_wait=0)
    assert result.status is RunStatus.SUCCEEDED and result.merge_sha == MERGE
    assert ports.merges == [] and store.get_run(run_id).merge_sha == MERGE


async def test_resume_switch_without_trace_is_rerun_but_unknown_command_is_not(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:2])
    config = cfg()
    plan = plan_for(ports, config)
    run_id = store.create_run("deploy", actor="t", pr=42, head_sha=HEAD, plan=plan.to_dict())
    store.record(run_id, "merged", sha=MERGE)
    for host in ("gpc0", "hsb0"):
        store.record(run_id, "host_started", host=host, phase="pull")
        store.record(run_id, "pull_done", host=host)
        ports.hosts_[host] = ports.hosts_[host].with_changes(generation=MERGE[:7])  # what the pull did
        store.record(run_id, "host_started", host=host, phase="switch")
    store.record(run_id, "command_dispatched", host="hsb0", phase="switch", command_id="gone-1")
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.resume(run_id, actor="t", queued_wait=0)
    assert ports.dispatched == [("switch", "gpc0", True)]  # no trace: certainly not run → run it
    assert result.outcome("gpc0").outcome is Outcome.OK
    o = result.outcome("hsb0")  # unknown now (it used to be "failed"): no evidence, so never a rollback
    assert o.outcome is Outcome.UNKNOWN and "outcome is unknown" in o.detail


async def test_resume_switch_dispatched_but_unjournaled(store: Store, tmp_path: Path) -> None:
    """Killed between the dispatch and journaling its command id: the dashboard decides."""
    ports = FakePorts(FLEET[:2])
    config = cfg()
    plan = plan_for(ports, config)
    run_id = store.create_run("deploy", actor="t", pr=42, head_sha=HEAD, plan=plan.to_dict())
    store.record(run_id, "merged", sha=MERGE)
    for host in ("gpc0", "hsb0"):
        store.record(run_id, "host_started", host=host, phase="pull")
        store.record(run_id, "pull_done", host=host)
        ports.hosts_[host] = ports.hosts_[host].with_changes(generation=MERGE[:7])  # what the pull did
        store.record(run_id, "host_started", host=host, phase="switch")
    # gpc0's switch finished meanwhile: System was stamped after the start (second precision, Z).
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    ports.hosts_["gpc0"] = ports.hosts_["gpc0"].with_changes(
        system=StatusCheck(CompartmentState.OK, "Last switch succeeded", stamp))
    # hsb0's switch is still running on the dashboard.
    ports.commands["run-1"] = Command("run-1", "hsb0", "switch", "EXECUTING")
    eng, _ = engine_for(ports, store, config, tmp_path)
    task = asyncio.create_task(eng.resume(run_id, actor="t", queued_wait=0))
    await asyncio.sleep(0.05)
    await ports._finish("run-1", "SUCCESS")
    result = await task
    assert ports.dispatched == []  # neither switch is started again
    assert result.outcome("gpc0").outcome is Outcome.OK and "interrupted switch completed" in result.outcome("gpc0").detail
    assert result.outcome("hsb0").outcome is Outcome.OK
    steps = store.get_run(run_id).steps
    assert any(s.step == "command_dispatched" and s.data["command_id"] == "run-1" for s in steps)


async def test_resume_waits_for_an_unnamed_switch_still_running(store: Store, tmp_path: Path) -> None:
    """No command id anywhere, but the host's pending_command says switch: wait, then judge by System."""
    ports = FakePorts(FLEET[:1])
    ports.hosts_["gpc0"] = ports.hosts_["gpc0"].with_changes(pending_command="switch")
    config = cfg()
    plan = plan_for(ports, config)
    run_id = store.create_run("deploy", actor="t", pr=42, head_sha=HEAD, plan=plan.to_dict())
    store.record(run_id, "merged", sha=MERGE)
    store.record(run_id, "host_started", host="gpc0", phase="pull")
    store.record(run_id, "pull_done", host="gpc0")
    ports.hosts_["gpc0"] = ports.hosts_["gpc0"].with_changes(generation=MERGE[:7])
    store.record(run_id, "host_started", host="gpc0", phase="switch")
    eng, events = engine_for(ports, store, config, tmp_path)
    task = asyncio.create_task(eng.resume(run_id, actor="t", queued_wait=0))
    assert await ports.wait_until(lambda: any("still running" in e.line() for e in events), 5)
    stamp = (datetime.now(timezone.utc) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ports.hosts_["gpc0"] = ports.hosts_["gpc0"].with_changes(
        pending_command="", system=StatusCheck(CompartmentState.ERROR, "Switch failed (exit 1)", stamp))
    ports._tick()
    result = await task
    assert ports.dispatched == []
    o = result.outcome("gpc0")
    assert o.outcome is Outcome.FAILED and "the interrupted switch failed: Switch failed (exit 1)" in o.detail


async def test_resume_rejects_finished_or_unknown_runs(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:1])
    config = cfg()
    eng, _ = engine_for(ports, store, config, tmp_path)
    result = await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    with pytest.raises(StateError, match="already succeeded"):
        await eng.resume(result.run_id, actor="t")
    with pytest.raises(StateError, match="no run 999"):
        await eng.resume(999, actor="t")


async def test_second_deployer_refused_with_holder(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:1])
    config = cfg()
    eng, _ = engine_for(ports, store, config, tmp_path)
    with DeployLock(tmp_path, label="nfu-tui auto"):
        with pytest.raises(DeployLocked, match="deploy running in nfu-tui auto"):
            await eng.run(plan_for(ports, config), actor="t")
    assert store.list_runs() == [] and ports.merges == []


async def test_events_carry_the_injected_clock(store: Store, tmp_path: Path) -> None:
    ports = FakePorts(FLEET[:1])
    config = cfg()
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    ticks = itertools.count()
    eng, events = engine_for(ports, store, config, tmp_path,
                             clock=lambda: t0 + timedelta(seconds=next(ticks)))
    await eng.run(plan_for(ports, config), actor="t", queued_wait=0)
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert events[0].at >= t0
    lines = [e.line() for e in events]
    assert lines[0].startswith("run #1 started: PR #42 (aaaaaaa), 1 host(s)")
    assert "gpc0 pull started (force)" in lines
    assert any(line.startswith("gpc0: ok") and line.endswith("[executed SUCCESS · reached ✓ · verified ✓]")
               for line in lines)


# ============================================= end to end against the simulator

from nfu_tui.sim.scenario import HostSpec  # noqa: E402
from nfu_tui.sim.testing import fast_scenario  # noqa: E402

SIM_TIMEOUTS = Timeouts(pull=20, switch=30, merge_visible=20, gate_poll=0.05, queued_poll=0.2, resume_lookup=0.5)
SMALL = [HostSpec("gpc0", "gaming", "home"), HostSpec("hsb0", "server", "home"), HostSpec("hsb1", "server", "home"),
         HostSpec("csb0", "server", "cloud")]


def scenario(*hosts: HostSpec, **kw: Any):
    kw = {"speed": 400.0, "heartbeat_seconds": 0.05, **kw}
    return fast_scenario(hosts=[HostSpec(**{**vars(h), "faults": set(h.faults)}) for h in (hosts or SMALL)], **kw)


class Deploy:
    """A FleetService (the TUI's fleet view) on a started simulator, plus helpers."""

    def __init__(self, sim: Any, tmp_path: Path, *, client_timeout: float | None = None, **config: Any) -> None:
        from nfu_tui.clients.dashboard import DashboardClient
        from nfu_tui.clients.github import GitHubClient
        from nfu_tui.config import load_config, resolve_secrets
        from nfu_tui.core.service import FleetService
        from nfu_tui.core.state import AppState

        config.setdefault("flake_updates", {}).setdefault("automation", {}).setdefault("canary_wait_minutes", 0)
        config["flake_updates"].setdefault("post_switch_tests", "never")  # tests have their own cases below
        config["flake_updates"].setdefault("verify_minutes", 0.5)
        self.sim = sim
        self.cfg = load_config(sim.write_config(tmp_path / "cfg", **config))
        self.store = Store(tmp_path / "journal.sqlite3")
        secrets = resolve_secrets(self.cfg, use_gh=False)
        gh = self.cfg.github
        # GitHub computes `mergeable` lazily (the fake answers null first); poll it quickly here.
        github = GitHubClient(api_url=gh.api_url, repo=gh.repo, token=secrets.github_token,
                              cache_dir=tmp_path / "cache", sleep=lambda s: asyncio.sleep(min(s, 0.05)))
        dashboard = None
        if client_timeout is not None:  # a short HTTP timeout: a late answer is "lost" quickly
            dashboard = DashboardClient(url=self.cfg.dashboard.url, password=secrets.dashboard_password,
                                        timeout=client_timeout)
        self.service = FleetService(self.cfg, secrets, store=self.store, github=github, backend=dashboard,
                                    state=AppState.load(tmp_path / "state.json"))
        self.events: list[EngineEvent] = []

    async def __aenter__(self) -> "Deploy":
        await self.service.start()
        expected = {h.name for h in self.sim.scenario.hosts}
        assert await self.service.wait_until(
            lambda: self.service.fleet.synced and {h.id for h in self.service.hosts()} == expected, 15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.service.stop()
        self.store.close()

    def engine(self, **kw: Any) -> DeployEngine:
        eng = self.service.make_engine(timeouts=kw.pop("timeouts", SIM_TIMEOUTS), **kw)
        eng.subscribe(self.events.append)
        return eng

    async def plan(self, *, held: set[str] = frozenset(), automatic: bool = False, targets: list[str] | None = None):
        pr_ = await self.service.github.get_pull(42)
        return make_plan(self.service.hosts(), self.cfg, held, targets=targets, automatic=automatic,
                         pr_number=42, head_sha=pr_.head_sha)

    def ops(self) -> list[tuple[str, str]]:
        """(host, op) of every command the dashboard created, in order."""
        return [(c.host_id, c.op) for c in self.sim.dashboard.commands.values()]

    def merge_requests(self) -> int:
        return sum(1 for method, path, *_ in self.sim.github.request_log
                   if method == "PUT" and path.endswith("/pulls/42/merge"))


async def test_e2e_happy_path_merged_once_pull_then_switch_in_order(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario())
    async with Deploy(sim, tmp_path) as d:
        plan = await d.plan()
        assert [e.host for e in plan.entries] == ["gpc0", "hsb0", "hsb1", "csb0"]
        result = await d.engine().run(plan, actor="tester", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        assert d.merge_requests() == 1
        head, _ = sim.github.default_branch_head()
        assert result.merge_sha == head
        assert d.ops() == [(h, op) for h in ["gpc0", "hsb0", "hsb1", "csb0"] for op in ("pull", "switch")]
        statuses = {(c.host_id, c.op): c.status for c in sim.dashboard.commands.values()}
        assert {statuses[(h, "switch")] for h in ("gpc0", "hsb0", "hsb1", "csb0")} == {"SUCCESS"}
        # A pull that lands before version.json is republished ends PARTIAL (Lock not ok, §8 #42);
        # the engine continues and says so.
        for h in ("gpc0", "hsb0", "hsb1", "csb0"):
            assert statuses[(h, "pull")] in ("SUCCESS", "PARTIAL")
            if statuses[(h, "pull")] == "PARTIAL":
                assert "partial: Lock status not ok after pull" in result.outcome(h).detail
        for h in ("gpc0", "hsb0", "hsb1", "csb0"):
            assert d.service.host(h).generation == head[:7]
        run = d.store.get_run(result.run_id)
        assert run.status == "succeeded" and run.merge_sha == head
        assert set(run.host_outcomes.values()) == {"ok"}


async def test_e2e_failure_on_third_host_stops_the_rest(sim_factory: Any, tmp_path: Path) -> None:
    hosts = [HostSpec("a1", "desktop"), HostSpec("a2", "desktop"), HostSpec("a3", "desktop", faults={"switch_fails"}),
             HostSpec("a4", "desktop"), HostSpec("a5", "desktop")]
    sim = await sim_factory(scenario(*hosts))
    async with Deploy(sim, tmp_path) as d:
        result = await d.engine().run(await d.plan(), actor="tester", queued_wait=0)
        assert result.status is RunStatus.FAILED
        assert [o.outcome for o in result.outcomes] == [Outcome.OK, Outcome.OK, Outcome.FAILED,
                                                        Outcome.SKIPPED, Outcome.SKIPPED]
        failed = result.outcome("a3")
        assert failed.phase == "switch" and "switch error (exit 1)" in failed.detail
        assert any("failed to build" in line for line in failed.last_lines)
        assert "after a3 failed" in result.outcome("a4").detail
        assert {h for h, _ in d.ops()} == {"a1", "a2", "a3"}


async def test_e2e_canary_failure_deploys_nothing_else(sim_factory: Any, tmp_path: Path) -> None:
    hosts = [HostSpec("gpc0", "gaming"), HostSpec("hsb0", "server", faults={"pull_fails"}), HostSpec("hsb1")]
    sim = await sim_factory(scenario(*hosts))
    async with Deploy(sim, tmp_path, hosts={"hsb0": {"canary": True}}) as d:
        plan = await d.plan()
        assert plan.waves[0][0].host == "hsb0"
        result = await d.engine().run(plan, actor="tester", queued_wait=0)
        assert result.status is RunStatus.FAILED
        assert result.outcome("hsb0").outcome is Outcome.FAILED and result.outcome("hsb0").phase == "pull"
        assert "canary hsb0 failed" in result.outcome("gpc0").detail
        assert d.ops() == [("hsb0", "pull")]


async def test_e2e_held_offline_and_excluded_hosts_skipped_with_reasons(sim_factory: Any, tmp_path: Path) -> None:
    hosts = [HostSpec("gpc0", "gaming"), HostSpec("hsb0"), HostSpec("hsb8", online=False, faults={"offline"}),
             HostSpec("csb0", location="cloud")]
    sim = await sim_factory(scenario(*hosts))
    config = {"flake_updates": {"automation": {"deploy_strategy": "online-only"}},
              "hosts": {"csb0": {"auto_update": False}}}
    async with Deploy(sim, tmp_path, **config) as d:
        plan = await d.plan(held={"hsb0"}, automatic=True)
        reasons = {s.host: s.detail for s in plan.skipped}
        assert reasons == {"hsb0": "held", "hsb8": "offline (strategy online-only)",
                           "csb0": "auto_update = false (manual deploys only)"}
        result = await d.engine().run(plan, actor="auto", trigger="auto", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED
        assert {h for h, _ in d.ops()} == {"gpc0"}


async def test_e2e_stale_sha_no_merge_and_a_clear_message(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("gpc0", "gaming")))
    async with Deploy(sim, tmp_path) as d:
        plan = await d.plan()
        sim.github.push_pr_head(42)  # someone force-pushed after the review
        result = await d.engine().run(plan, actor="tester", queued_wait=0)
        assert result.status is RunStatus.REFUSED
        assert "changed since it was reviewed" in result.message and plan.head_sha[:7] in result.message
        assert d.merge_requests() == 0 and d.ops() == []


async def test_e2e_head_moving_during_the_checks_hits_the_sha_guard(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("gpc0", "gaming")))
    async with Deploy(sim, tmp_path) as d:
        plan = await d.plan()
        github = d.service.github
        real_ci = github.ci_status

        async def ci_then_push(sha: str) -> CIStatus:
            status = await real_ci(sha)
            sim.github.push_pr_head(42)  # between our checks and the merge
            return status

        github.ci_status = ci_then_push
        result = await d.engine().run(plan, actor="tester", queued_wait=0)
        assert result.status is RunStatus.REFUSED and "GitHub refused the sha-guarded merge" in result.message
        assert d.merge_requests() == 1  # attempted once, answered 409
        assert sim.github.default_branch_head()[0] != result.merge_sha and d.ops() == []


async def test_e2e_failing_ci_refused(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("gpc0", "gaming")))
    sim.github.set_ci(42, "failure")
    async with Deploy(sim, tmp_path) as d:
        result = await d.engine().run(await d.plan(), actor="tester", queued_wait=0)
        assert result.status is RunStatus.REFUSED and "CI is failing" in result.message
        assert d.merge_requests() == 0 and d.ops() == []


@pytest.mark.parametrize("release", [False, True])
async def test_e2e_cancel_mid_deploy(sim_factory: Any, tmp_path: Path, release: bool) -> None:
    hosts = [HostSpec("a1", "desktop"), HostSpec("a2", "desktop", faults={"slow"}), HostSpec("a3", "desktop")]
    sim = await sim_factory(scenario(*hosts))
    async with Deploy(sim, tmp_path) as d:
        eng = d.engine()
        eng.subscribe(lambda ev: eng.cancel(release_hosts=release) if isinstance(ev, HostStarted) and ev.host == "a2"
                      and ev.phase == "switch" else None)
        result = await eng.run(await d.plan(), actor="tester", queued_wait=0)
        assert result.status is RunStatus.CANCELLED
        assert result.outcome("a1").outcome is Outcome.OK
        a2 = result.outcome("a2")
        (switch,) = [c for c in sim.dashboard.commands.values() if c.host_id == "a2" and c.op == "switch"]
        assert switch.kill_initiated_at is None  # never asked to kill
        if release:
            assert a2.outcome is Outcome.CANCELLED and "may still be running on a2" in a2.detail
            assert result.still_running == ("a2",) and switch.status == "SKIPPED"
        else:  # followed to its real end
            assert a2.outcome is Outcome.OK and result.still_running == () and switch.status == "SUCCESS"
        assert result.outcome("a3").outcome is Outcome.CANCELLED
        assert "a3" not in {h for h, _ in d.ops()}
        assert d.store.get_run(result.run_id).status == "cancelled"


async def test_e2e_killed_process_resumed_without_remerging(sim_factory: Any, tmp_path: Path) -> None:
    hosts = [HostSpec("a1", "desktop"), HostSpec("a2", "desktop", faults={"slow"}), HostSpec("a3", "desktop")]
    sim = await sim_factory(scenario(*hosts))
    async with Deploy(sim, tmp_path) as d:
        eng = d.engine()
        task = asyncio.create_task(eng.run(await d.plan(), actor="tester", queued_wait=0))
        assert await d.service.wait_until(lambda: ("a2", "switch") in d.ops(), 20)
        task.cancel()  # the process dies: no cancel, no journal finish
        with pytest.raises(asyncio.CancelledError):
            await task
        (run,) = d.store.unfinished_runs()
        assert run.merged and run.host_outcomes == {"a1": "ok"} and run.hosts_in_flight == {"a2": "switch"}
        result = await d.engine().resume(run.id, actor="tester", queued_wait=0)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        assert d.merge_requests() == 1
        assert d.ops() == [("a1", "pull"), ("a1", "switch"), ("a2", "pull"), ("a2", "switch"),
                           ("a3", "pull"), ("a3", "switch")]  # a2's switch followed, not re-run
        assert d.store.get_run(run.id).status == "succeeded"


async def test_e2e_two_deployers_at_once(sim_factory: Any, tmp_path: Path) -> None:
    hosts = [HostSpec("a1", "desktop", faults={"slow"})]
    sim = await sim_factory(scenario(*hosts))
    async with Deploy(sim, tmp_path) as d:
        plan = await d.plan()
        first = d.engine()
        task = asyncio.create_task(first.run(plan, actor="tester", queued_wait=0))
        assert await d.service.wait_until(lambda: bool(d.ops()), 20)
        second = DeployEngine(d.service.github, d.service.backend, d.service, d.store, d.cfg,
                              lock_label="nfu-tui auto")
        with pytest.raises(DeployLocked, match=r"deploy running in the nfu-tui TUI \(pid \d+"):
            await second.run(plan, actor="other", queued_wait=0)
        assert (await task).status is RunStatus.SUCCEEDED
        assert d.merge_requests() == 1 and len(d.store.list_runs()) == 1


async def test_e2e_queued_offline_host_deployed_when_back(sim_factory: Any, tmp_path: Path) -> None:
    hosts = [HostSpec("a1", "desktop"), HostSpec("hsb8", online=False, faults={"offline"})]
    sim = await sim_factory(scenario(*hosts))
    async with Deploy(sim, tmp_path) as d:
        plan = await d.plan()
        assert [e.host for e in plan.queued] == ["hsb8"]
        eng = d.engine()
        eng.subscribe(lambda ev: sim.dashboard.set_online("hsb8", True)
                      if isinstance(ev, HostFinished) and ev.host == "a1" else None)
        result = await eng.run(plan, actor="tester", queued_wait=None)
        assert result.status is RunStatus.SUCCEEDED, result.summary()
        assert d.ops() == [("a1", "pull"), ("a1", "switch"), ("hsb8", "pull"), ("hsb8", "switch")]
        assert d.store.get_run(result.run_id).host_outcomes == {"a1": "ok", "hsb8": "ok"}


async def test_e2e_hostile_log_lines_stored_inert(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(HostSpec("a1", "desktop", faults={"switch_fails"})))
    agent = sim.dashboard.hosts["a1"].agent
    real = agent._switch_lines
    hostile = ["\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b]52;c;cm0gLXJmIH4=\x07[bold red]not markup[/]",
               "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ \u202eevil\u202c [/nix/store/abc-x]",
               "B" * 1_000_000 + "\x1b[31m"]

    def lines(fail: bool):  # type: ignore[no-untyped-def]
        build, copy, activate = real(fail)
        return build, copy + hostile, activate

    agent._switch_lines = lines
    async with Deploy(sim, tmp_path) as d:
        result = await d.engine().run(await d.plan(), actor="tester", queued_wait=0)
        stored = tuple(d.store.get_run(result.run_id).steps[-1].data["log_excerpt"])
    outcome = result.outcome("a1")
    assert outcome.outcome is Outcome.FAILED and stored == outcome.last_lines
    text = "\n".join(stored)
    assert "[bold red]not markup[/]" in text and "[/nix/store/abc-x]" in text  # literal, shown with markup off
    for bad in ("\x1b", "\x07", "\u202e", "\u202c", "\x9b"):
        assert bad not in text
    assert all(len(line) <= 600 for line in stored)
    assert any(line.startswith("BBBB") for line in stored)
