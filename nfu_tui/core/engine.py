"""The merge & deploy engine: merge an update PR (sha-guarded), then pull + switch each host.

The engine executes a :class:`~nfu_tui.core.plan.DeployPlan` against GitHub (merge) and
the NixFleet dashboard (per-host ``pull`` then ``switch``, dashboard contract §9.2). It
is used the same way by the TUI, the headless ``auto`` mode and ``nfu-tui deploy``.

Reliability rules:

* **Journal first.** Every step is written to the journal before it is acted on
  (``merge_requested`` before the merge, ``host_started`` before a dispatch, …), so a
  run that dies can be resumed: the merge is never repeated, a finished host is never
  re-run, and a host that was mid-flight is inspected on the dashboard (its command is
  followed, or re-run only when it certainly did not complete).
* **One deploy at a time**, across processes: the deploy lock is held for the whole run.
* **Stop on the first failure**: no new host starts, running hosts finish, the rest are
  reported ``skipped``.
* **Cancel** stops scheduling and asks the dashboard to kill running commands; the
  dashboard cannot really stop them (contract §3.7, §8 #28), which the result says.
* Cancelling the asyncio task that runs :meth:`DeployEngine.run` (process shutdown) is
  *not* a user cancel: the journal is left unfinished so the run can be resumed.

Hooks for later features: ``may_start_host`` (a gate consulted before each new host is
started, e.g. maintenance windows; the engine pauses while it says no) and
``on_failure`` (called with the failed host's outcome, e.g. to roll back).

Pure decision helpers (:func:`merge_refusal`, :func:`ci_refusal`,
:func:`interpret_dispatch`, :func:`interpret_command`, :func:`switch_needs_force`,
:func:`health_problems`, :class:`JournalState`) are unit-tested directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, ContextManager, Iterable, Mapping, Protocol, Sequence

from nfu_tui.config import Config
from nfu_tui.core.plan import DeployPlan, PlanEntry
from nfu_tui.core.sanitize import sanitize_line
from nfu_tui.core.store import DeployLock
from nfu_tui.errors import (
    DashboardError,
    GitHubError,
    MergeConflict,
    NfuError,
    NotMergeable,
    StateError,
)
from nfu_tui.models import CIStatus, CIVerdict, Command, CompartmentState, Host, Notification, UpdatePR

log = logging.getLogger(__name__)

LAST_LINES = 20
"""How many trailing log lines a failed host's outcome keeps."""
LINE_MAX = 500
"""Longest log line kept in an outcome (the journal is not a log store)."""


# ============================================================== collaborators


class FleetView(Protocol):
    """What the engine reads from the live fleet (the dashboard stream applied to a model)."""

    def host(self, host_id: str) -> Host | None: ...

    def hosts(self) -> list[Host]: ...

    async def wait_for_command(self, command_id: str, timeout: float) -> Command:
        """The command once terminal; ``TimeoutError`` after ``timeout`` seconds."""

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """True as soon as ``predicate()`` holds (re-checked on fleet changes), False on timeout."""

    def output_lines(self, host_id: str) -> list[str]: ...


class GitHubPort(Protocol):
    async def get_pull(self, number: int, *, wait_mergeable: bool = True) -> UpdatePR: ...

    async def ci_status(self, sha: str) -> CIStatus: ...

    async def merge(self, number: int, sha: str, *, method: str = "merge") -> str: ...

    async def wait_for_branch_contains(self, branch: str, sha: str, *, timeout: float = 60) -> None: ...

    async def viewer_login(self) -> str: ...


class DashboardPort(Protocol):
    async def dispatch(self, op: str, hosts: list[str], *, force: bool = False) -> list[Any]: ...

    async def kill(self, host: str, signal: str = "SIGTERM") -> str: ...

    async def timeout_action(self, host: str, action: str, minutes: int | None = None) -> None: ...

    async def command_states(self) -> dict[str, Command]: ...


class JournalPort(Protocol):
    """The part of :class:`nfu_tui.core.store.Store` the engine uses."""

    def create_run(self, kind: str, *, actor: str, trigger: str = "manual", pr: int | None = None,
                   head_sha: str | None = None, plan: Mapping[str, Any] | None = None) -> int: ...

    def record(self, run_id: int, step: str, **data: Any) -> int: ...

    def finish_run(self, run_id: int, status: str, summary: str = "") -> None: ...

    def get_run(self, run_id: int) -> Any: ...

    def audit(self, action: str, *, actor: str, github_login: str | None = None, pr: int | None = None,
              details: Mapping[str, Any] | None = None) -> int: ...


class Notifier(Protocol):
    async def send(self, n: Notification) -> bool: ...


# ================================================================== values


class Outcome(str, enum.Enum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    QUEUED = "queued"  # offline; still waiting for it when the run returned


class RunStatus(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUSED = "refused"  # nothing merged or deployed: the PR did not pass the merge checks
    WAITING = "waiting"  # every reachable host done; queued offline hosts still pending


@dataclass(frozen=True, slots=True)
class HostOutcome:
    host: str
    outcome: Outcome
    phase: str = ""  # where it ended: pull | switch | health | ""
    detail: str = ""
    last_lines: tuple[str, ...] = ()

    def describe(self) -> str:
        text = f"{self.host}: {self.outcome.value}"
        if self.phase and self.outcome is not Outcome.OK:
            text += f" ({self.phase})"
        return text + (f" — {self.detail}" if self.detail else "")


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: int | None
    status: RunStatus
    pr_number: int
    merge_sha: str = ""
    message: str = ""
    outcomes: tuple[HostOutcome, ...] = ()
    still_running: tuple[str, ...] = ()  # hosts whose command may still run after a cancel

    @property
    def ok(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.WAITING)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (queued hosts are not failures), else 1."""
        return 0 if self.ok else 1

    def outcome(self, host: str) -> HostOutcome | None:
        return next((o for o in self.outcomes if o.host == host), None)

    def hosts_with(self, outcome: Outcome) -> list[str]:
        return [o.host for o in self.outcomes if o.outcome is outcome]

    def summary(self) -> str:
        counts = {k: len(self.hosts_with(k)) for k in Outcome}
        parts = [f"{n} {k.value}" for k, n in counts.items() if n]
        head = f"PR #{self.pr_number}: {self.status.value}"
        return head + (f" ({', '.join(parts)})" if parts else "") + (f": {self.message}" if self.message else "")


@dataclass(frozen=True)
class Timeouts:
    """Client-side guards, a bit above the dashboard's enforced timeouts (contract §6.7)."""

    pull: float = 6 * 60.0  # pull: hard timeout 5 min
    switch: float = 30 * 60.0 + 90.0 + 4 * 60.0  # switch: hard 30 min, then 90 s reconnect
    merge_visible: float = 120.0  # default branch must contain the merge commit
    gate_poll: float = 30.0  # re-ask may_start_host while it says no
    queued_poll: float = 30.0  # re-check offline hosts (also woken by fleet changes)
    resume_lookup: float = 2.0  # how long to look for a journaled command in the fleet model


# ================================================================== events


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, kw_only=True)
class EngineEvent:
    """Base of everything the engine reports; ``line()`` is the CLI's text (after a time)."""

    at: datetime = field(default_factory=_now)
    run_id: int | None = None
    host: str = ""

    def line(self) -> str:  # pragma: no cover - every subclass overrides it
        return type(self).__name__


@dataclass(frozen=True, kw_only=True)
class RunStarted(EngineEvent):
    pr_number: int
    head_sha: str
    hosts: tuple[str, ...]
    resumed: bool = False

    def line(self) -> str:
        verb = "resumed" if self.resumed else "started"
        return f"run #{self.run_id} {verb}: PR #{self.pr_number} ({self.head_sha[:7]}), {len(self.hosts)} host(s)"


@dataclass(frozen=True, kw_only=True)
class MergeRequested(EngineEvent):
    pr_number: int
    head_sha: str

    def line(self) -> str:
        return f"merge requested: PR #{self.pr_number} at {self.head_sha[:7]}"


@dataclass(frozen=True, kw_only=True)
class Merged(EngineEvent):
    pr_number: int
    merge_sha: str
    note: str = ""

    def line(self) -> str:
        return f"merged PR #{self.pr_number} as {self.merge_sha[:7]}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True, kw_only=True)
class MergeRefused(EngineEvent):
    pr_number: int
    reason: str

    def line(self) -> str:
        return f"merge refused: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class HostQueued(EngineEvent):
    reason: str

    def line(self) -> str:
        return f"{self.host} queued: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class HostStarted(EngineEvent):
    phase: str  # pull | switch
    force: bool = False

    def line(self) -> str:
        return f"{self.host} {self.phase} started" + (" (force)" if self.force else "")


@dataclass(frozen=True, kw_only=True)
class HostProgress(EngineEvent):
    phase: str
    message: str

    def line(self) -> str:
        return f"{self.host} {self.phase}: {self.message}"


@dataclass(frozen=True, kw_only=True)
class HostFinished(EngineEvent):
    outcome: HostOutcome

    def line(self) -> str:
        return self.outcome.describe()


@dataclass(frozen=True, kw_only=True)
class WaitingForCanaries(EngineEvent):
    until: datetime
    hosts: tuple[str, ...]

    def line(self) -> str:
        local = self.until.astimezone().strftime("%H:%M:%S")
        return f"canaries {', '.join(self.hosts)} deployed; checking their health at {local}"


@dataclass(frozen=True, kw_only=True)
class CanaryGate(EngineEvent):
    passed: bool
    problems: tuple[str, ...] = ()

    def line(self) -> str:
        return "canaries healthy: continuing" if self.passed else "canary gate failed: " + "; ".join(self.problems)


@dataclass(frozen=True, kw_only=True)
class Paused(EngineEvent):
    reason: str

    def line(self) -> str:
        return f"paused: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class Unpaused(EngineEvent):
    def line(self) -> str:
        return "continuing"


@dataclass(frozen=True, kw_only=True)
class CancelRequested(EngineEvent):
    still_running: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def line(self) -> str:
        text = "cancel requested: no new host will start"
        return text + ("; " + "; ".join(self.notes) if self.notes else "")


@dataclass(frozen=True, kw_only=True)
class RunFinished(EngineEvent):
    result: RunResult
    notification: Notification

    def line(self) -> str:
        return f"run #{self.run_id} finished: {self.result.summary()}"


Listener = Callable[[EngineEvent], Any]


# ======================================================== pure decision helpers


def merge_refusal(pr: UpdatePR, expected_head: str) -> str | None:
    """Why the PR must not be merged now (before CI is looked at), or None."""
    n = pr.number
    if pr.merged:
        return None  # handled by the caller (already merged)
    if pr.state != "open":
        return f"PR #{n} is closed without being merged"
    if expected_head and pr.head_sha != expected_head:
        return (
            f"PR #{n} changed since it was reviewed: its head is now {pr.head_sha[:7]}, "
            f"the plan was made for {expected_head[:7]}. Review it again; nothing was merged."
        )
    if pr.draft:
        return f"PR #{n} is a draft"
    if pr.mergeable is False or pr.mergeable_state == "dirty":
        return f"PR #{n} has merge conflicts with {pr.base_ref or 'its base branch'} (mergeable_state {pr.mergeable_state})"
    return None


def ci_refusal(ci: CIStatus, *, require_ci: bool) -> str | None:
    """Why the CI verdict blocks the merge, or None (GREEN, or NO_CI with ``require_ci = false``)."""
    summary = f": {ci.summary}" if ci.summary else ""
    if ci.verdict is CIVerdict.GREEN:
        return None
    if ci.verdict is CIVerdict.NO_CI:
        if not require_ci:
            return None
        return "no CI ran on the PR's head (set flake_updates.automation.require_ci = false to merge without CI)"
    if ci.verdict is CIVerdict.RED:
        failing = f" (failing: {', '.join(ci.failing)})" if ci.failing and not ci.summary else ""
        return f"CI is failing{summary}{failing}"
    if ci.verdict is CIVerdict.PENDING:
        return f"CI is still running{summary}"
    return f"the CI state is unknown{summary}"


@dataclass(frozen=True, slots=True)
class DispatchDecision:
    """What to do with one host's ``/api/dispatch`` result."""

    action: str  # started | offline | fail | current
    command_id: str = ""
    message: str = ""
    code: str = ""  # the dashboard's validation code, if blocked


def interpret_dispatch(result: Any, op: str, host: str) -> DispatchDecision:
    """Map a dispatch result (started / blocked with a §6.2 code / error) to an action."""
    if result is None:
        return DispatchDecision("fail", message=f"the dashboard returned no result for {host}")
    if getattr(result, "started", False):
        cid = str(getattr(result, "command_id", "") or "")
        if not cid:
            return DispatchDecision("fail", message=f"{op} started but the dashboard gave no command id")
        return DispatchDecision("started", command_id=cid)
    code = str(getattr(result, "code", "") or "")
    message = str(getattr(result, "message", "") or "")
    said = f" (dashboard: {message})" if message else ""
    if getattr(result, "blocked", False):
        if code in ("offline", "send_failed"):
            return DispatchDecision("offline", message=f"host unreachable{said}", code=code)
        if code in ("busy", "command_pending"):
            return DispatchDecision("fail", message=f"host is busy with another command{said}; left untouched", code=code)
        if code == "already_current":
            return DispatchDecision("current", message=message or "already up to date", code=code)
        return DispatchDecision("fail", message=f"{op} blocked ({code or 'no code'}){said}", code=code)
    return DispatchDecision("fail", message=f"{op} could not be started{said or ': error'}", code=code)


def interpret_command(cmd: Command) -> tuple[bool, str]:
    """(succeeded, detail) for a terminal pull/switch command (contract §6.4, §6.6)."""
    status = cmd.status.upper()
    err = cmd.error.strip()
    if status == "SUCCESS":
        return True, ""
    if status == "PARTIAL":
        return True, f"partial: {err}" if err else "partial"
    if status == "TIMEOUT":
        if cmd.op == "switch":
            return False, "agent did not reconnect within 90 s after the switch (verify the host manually)"
        return False, f"timed out{': ' + err if err else ''}"
    if status == "SKIPPED":
        return False, f"released in the dashboard ({err or 'timeout-action ignore'}); the process may still run"
    code = f" (exit {cmd.exit_code})" if cmd.exit_code not in (None, 0) else ""
    return False, f"{cmd.op} {status.lower()}{code}{': ' + err if err else ''}"


def switch_needs_force(generation_after_pull: str, generation_before_pull: str, merge_sha: str) -> bool:
    """Force the switch when the host must rebuild (contract §8 #19, #42).

    After an isolated-mode pull the stored System stays ``ok`` and the switch would be
    blocked ``already_current`` (or ``lock_outdated`` while ``version.json`` lags). The
    host must rebuild when its generation now equals the merge commit, or when the
    pull moved its generation at all (the branch may have moved past the merge).
    """
    gen = generation_after_pull.strip().lower()
    if not gen:
        return bool(merge_sha)  # unknown generation after a pull: assume it moved
    if merge_sha and merge_sha.lower().startswith(gen[:7]):
        return True
    return gen != generation_before_pull.strip().lower()


def health_problems(host: Host | None) -> list[str]:
    """Why a deployed (canary) host is not healthy: offline, System red or Tests red."""
    if host is None:
        return ["no longer known to the dashboard"]
    problems = []
    if not host.online:
        problems.append("offline")
    if host.system.state is CompartmentState.ERROR:
        problems.append(f"System red ({host.system.message or 'error'})")
    if host.tests.state is CompartmentState.ERROR:
        problems.append(f"Tests red ({host.tests.message or 'error'})")
    return problems


def inert_lines(lines: Iterable[str], limit: int = LAST_LINES) -> tuple[str, ...]:
    """The last ``limit`` lines as inert text (sanitised again: defence in depth), each bounded."""
    tail = list(lines)[-limit:]
    return tuple(sanitize_line(line, max_len=LINE_MAX) for line in tail)


def notification_for(result: RunResult) -> Notification:
    """The toast/webhook message for a finished run."""
    n = result.pr_number
    tags = ["nfu-tui", f"pr-{n}"]
    if result.status is RunStatus.SUCCEEDED:
        return Notification(f"PR #{n} deployed", result.summary(), "information", tags + ["white_check_mark"])
    if result.status is RunStatus.WAITING:
        waiting = ", ".join(result.hosts_with(Outcome.QUEUED))
        return Notification(f"PR #{n} deployed; waiting for {waiting}", result.summary(), "information", tags)
    if result.status is RunStatus.CANCELLED:
        return Notification(f"PR #{n} deploy cancelled", result.summary(), "warning", tags + ["warning"])
    if result.status is RunStatus.REFUSED:
        return Notification(f"PR #{n} not merged", result.message, "warning", tags + ["no_entry"])
    failed = ", ".join(result.hosts_with(Outcome.FAILED)) or "the run"
    return Notification(f"PR #{n} deploy failed on {failed}", result.summary(), "error", tags + ["rotating_light"])


# ================================================================= journal state


@dataclass
class JournalState:
    """What a run's journal says has happened (input of resume). Pure: built from steps."""

    merge_requested: bool = False
    merge_sha: str = ""
    finished: dict[str, HostOutcome] = field(default_factory=dict)
    in_flight: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # host -> (phase, command_id, started_at)
    pulled: set[str] = field(default_factory=set)
    canary_wait_until: str = ""
    canary_gate: bool | None = None
    cancel_requested: bool = False

    @classmethod
    def from_run(cls, run: Any) -> "JournalState":
        """The state of a stored :class:`~nfu_tui.core.store.Run` (loaded with its steps)."""
        return cls.from_steps(_steps_of(run))

    @classmethod
    def from_steps(cls, steps: Iterable[tuple[str, Mapping[str, Any], str]]) -> "JournalState":
        """Fold ``(step, data, at)`` tuples (in journal order) into a state."""
        st = cls()
        for step, data, at in steps:
            host = str(data.get("host", ""))
            if step == "merge_requested":
                st.merge_requested = True
            elif step == "merged":
                st.merge_sha = str(data.get("sha", ""))
            elif step == "host_started":
                phase = str(data.get("phase", "pull"))
                if phase == "pull":
                    st.pulled.discard(host)
                st.in_flight[host] = (phase, "", at)
                st.finished.pop(host, None)
            elif step == "command_dispatched":
                phase, _, started = st.in_flight.get(host, (str(data.get("phase", "")), "", at))
                st.in_flight[host] = (phase, str(data.get("command_id", "")), started)
            elif step == "pull_done":
                st.pulled.add(host)
            elif step == "host_requeued":
                st.in_flight.pop(host, None)
                st.pulled.discard(host)
            elif step == "host_finished":
                st.in_flight.pop(host, None)
                outcome = Outcome(str(data.get("outcome", "failed")))
                st.finished[host] = HostOutcome(
                    host,
                    outcome,
                    str(data.get("phase", "")),
                    str(data.get("detail", "")),
                    tuple(data.get("log_excerpt") or ()),
                )
            elif step == "canary_wait":
                st.canary_wait_until = str(data.get("until", ""))
            elif step == "canary_gate":
                st.canary_gate = bool(data.get("passed"))
            elif step == "cancel_requested":
                st.cancel_requested = True
        return st


# ==================================================================== engine


class _Stop(Exception):
    """Internal: the run stops here (refused merge, cancel) with a status and message."""

    def __init__(self, status: RunStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Run:
    run_id: int
    plan: DeployPlan
    journal: JournalState
    resumed: bool
    actor: str
    merge_sha: str = ""
    outcomes: dict[str, HostOutcome] = field(default_factory=dict)
    running: dict[str, asyncio.Task[HostOutcome]] = field(default_factory=dict)
    phase: dict[str, str] = field(default_factory=dict)
    failure: str = ""  # set on the first failure: stop scheduling
    still_running: list[str] = field(default_factory=list)
    journaled: set[str] = field(default_factory=set)  # hosts whose outcome is in the journal
    cancel_reported: bool = False


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class DeployEngine:
    """Runs deploy plans. One run at a time per engine (and per machine: the deploy lock)."""

    def __init__(
        self,
        github: GitHubPort,
        dashboard: DashboardPort,
        fleet_view: FleetView,
        store: JournalPort,
        config: Config,
        *,
        notifier: Notifier | None = None,
        lock: Callable[[], ContextManager[Any]] | None = None,
        lock_label: str = "nfu-tui",
        on_event: Listener | None = None,
        may_start_host: Callable[[], Awaitable[bool] | bool] | None = None,
        on_failure: Callable[[HostOutcome], Awaitable[None] | None] | None = None,
        timeouts: Timeouts = Timeouts(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.github = github
        self.dashboard = dashboard
        self.fleet = fleet_view
        self.store = store
        self.config = config
        self.notifier = notifier
        self._lock = lock or (lambda: DeployLock(label=lock_label))
        self._listeners: list[Listener] = [on_event] if on_event else []
        self.may_start_host = may_start_host
        self.on_failure = on_failure
        self.timeouts = timeouts
        self._sleep = sleep
        self._clock = clock
        self.github_login: str | None = None  # recorded in the audit trail
        self._run: _Run | None = None
        self._cancel = asyncio.Event()
        self._release_on_cancel = False
        self._stop_waiting = asyncio.Event()
        self._wake = asyncio.Event()

    # --- public control ---------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add an event listener (sync or async); returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    @property
    def running(self) -> bool:
        return self._run is not None

    @property
    def run_id(self) -> int | None:
        return self._run.run_id if self._run else None

    def cancel(self, *, release_hosts: bool = False) -> None:
        """Stop scheduling, ask the dashboard to kill running commands, record "cancelled".

        ``release_hosts`` additionally sends ``timeout-action ignore`` for hosts whose
        command is still running, which frees them in the dashboard (the process on the
        host keeps running; contract §3.8).
        """
        self._release_on_cancel = self._release_on_cancel or release_hosts
        self._cancel.set()
        self._wake.set()

    def stop_waiting(self) -> None:
        """Stop waiting for queued offline hosts; the run ends ``waiting`` with them still queued."""
        self._stop_waiting.set()
        self._wake.set()

    async def resume(self, run_id: int, *, actor: str, queued_wait: float | None = None) -> RunResult:
        """Continue an unfinished run from its journal (its own plan)."""
        return await self.run(None, actor=actor, resume_run_id=run_id, queued_wait=queued_wait)

    # --- the run ----------------------------------------------------------------

    async def run(
        self,
        plan: DeployPlan | None,
        *,
        actor: str,
        trigger: str = "manual",
        resume_run_id: int | None = None,
        queued_wait: float | None = None,
    ) -> RunResult:
        """Merge (unless already done) and deploy ``plan``; returns when the run ends.

        ``queued_wait``: how long to keep waiting for queued offline hosts once every
        reachable host is done: None (default) = while this process runs, until
        :meth:`stop_waiting` or :meth:`cancel`; 0 = not at all (``nfu-tui deploy``).
        Hosts still offline then leave the run unfinished in the journal (result
        status ``waiting``), so a later start can resume it.
        Raises :class:`~nfu_tui.errors.DeployLocked` when another deploy runs,
        :class:`~nfu_tui.errors.StateError` for an unknown/finished resume id.
        """
        if self._run is not None:
            raise RuntimeError("this engine is already running a deploy")
        self._cancel.clear()
        self._stop_waiting.clear()
        self._release_on_cancel = False
        if self.github_login is None:
            with contextlib.suppress(GitHubError, AttributeError):
                self.github_login = await self.github.viewer_login()
        with self._lock():
            r = self._open_run(plan, actor=actor, trigger=trigger, resume_run_id=resume_run_id)
            self._run = r
            try:
                return await self._execute(r, queued_wait)
            finally:
                self._run = None

    def _open_run(self, plan: DeployPlan | None, *, actor: str, trigger: str, resume_run_id: int | None) -> _Run:
        if resume_run_id is None:
            if plan is None:
                raise ValueError("a plan is needed to start a new run")
            run_id = self.store.create_run(
                "deploy", actor=actor, trigger=trigger, pr=plan.pr_number, head_sha=plan.head_sha,
                plan=plan.to_dict(),
            )
            return _Run(run_id, plan, JournalState(), resumed=False, actor=actor)
        stored = self.store.get_run(resume_run_id)  # StateError when unknown
        if stored.kind != "deploy":
            raise StateError(f"run #{resume_run_id} is a {stored.kind}, not a deploy")
        if stored.finished:
            raise StateError(f"run #{resume_run_id} is already {stored.status}; nothing to resume")
        journal = JournalState.from_run(stored)
        stored_plan = DeployPlan.from_dict(stored.plan)
        self.store.record(resume_run_id, "resumed", actor=actor, trigger=trigger)
        r = _Run(resume_run_id, stored_plan, journal, resumed=True, actor=actor, merge_sha=journal.merge_sha)
        r.outcomes.update(journal.finished)
        r.journaled.update(journal.finished)
        return r

    async def _execute(self, r: _Run, queued_wait: float | None) -> RunResult:
        plan = r.plan
        await self._emit(RunStarted(run_id=r.run_id, pr_number=plan.pr_number, head_sha=plan.head_sha,
                                    hosts=plan.hosts, resumed=r.resumed))
        try:
            if not r.merge_sha:
                await self._merge(r)
            self._check_cancel_before_deploy(r)
            if not plan.merge_only:
                await self._deploy(r, queued_wait)
            status, message = self._final_status(r)
        except _Stop as stop:
            status, message = stop.status, stop.message
        except asyncio.CancelledError:
            # Process shutdown, not a user cancel: leave the journal resumable.
            for task in r.running.values():
                task.cancel()
            log.warning("deploy run #%s interrupted; it can be resumed from the journal", r.run_id)
            raise
        except NfuError as exc:
            status, message = RunStatus.FAILED, f"{exc.title}: {exc}"
        self._skip_unstarted(r, status)
        if status is RunStatus.CANCELLED and not r.cancel_reported:
            self.store.record(r.run_id, "cancel_requested", running=[])
            await self._emit(CancelRequested(run_id=r.run_id))
        return await self._finish(r, status, message)

    def _check_cancel_before_deploy(self, r: _Run) -> None:
        if self._cancel.is_set():
            merged = f" (PR #{r.plan.pr_number} was merged as {r.merge_sha[:7]})" if r.merge_sha else ""
            raise _Stop(RunStatus.CANCELLED, f"cancelled before any host was deployed{merged}")

    # --- merge ------------------------------------------------------------------

    async def _merge(self, r: _Run) -> None:
        plan = r.plan
        n = plan.pr_number
        pr = await self.github.get_pull(n)
        if pr.merged:
            if plan.head_sha and pr.head_sha != plan.head_sha:
                await self._refuse(r, f"PR #{n} was merged with head {pr.head_sha[:7]}, not the reviewed "
                                      f"{plan.head_sha[:7]}; not deploying it")
            note = "merge was requested before the interruption" if r.journal.merge_requested else "already merged"
            await self._record_merged(r, pr.merge_commit_sha, pr.base_ref, note)
            return
        if r.journal.merge_requested:
            # We asked GitHub to merge, then died before hearing back, and it is not merged.
            await self._refuse(r, f"a merge of PR #{n} was requested before the interruption but the PR is not "
                                  "merged; abandon this run and start a new deploy")
        if self._cancel.is_set():
            raise _Stop(RunStatus.CANCELLED, "cancelled before merging; nothing was merged")
        reason = merge_refusal(pr, plan.head_sha)
        if reason is None:
            ci = await self.github.ci_status(pr.head_sha)
            reason = ci_refusal(ci, require_ci=self.config.flake_updates.automation.require_ci)
            if reason:
                reason = f"PR #{n} not merged: {reason}"
        if reason:
            await self._refuse(r, reason)
        if self._cancel.is_set():
            raise _Stop(RunStatus.CANCELLED, "cancelled before merging; nothing was merged")
        self.store.record(r.run_id, "merge_requested", pr=n, sha=pr.head_sha)
        await self._emit(MergeRequested(run_id=r.run_id, pr_number=n, head_sha=pr.head_sha))
        try:
            merge_sha = await self.github.merge(n, pr.head_sha, method=self.config.github.merge_method)
        except MergeConflict:
            await self._refuse(r, f"PR #{n} changed since it was reviewed (GitHub refused the sha-guarded merge: "
                                  "the head moved). Nothing was merged; review it again.")
        except NotMergeable as exc:
            await self._refuse(r, f"GitHub will not merge PR #{n}: {exc.message}")
        await self._record_merged(r, merge_sha, pr.base_ref, "")

    async def _record_merged(self, r: _Run, merge_sha: str, base_ref: str, note: str) -> None:
        if not merge_sha:
            raise _Stop(RunStatus.FAILED, f"PR #{r.plan.pr_number} is merged but GitHub gave no merge commit")
        r.merge_sha = merge_sha
        self.store.record(r.run_id, "merged", sha=merge_sha, note=note)
        self._audit(r, "merge", merge_sha=merge_sha, head_sha=r.plan.head_sha, note=note)
        await self._emit(Merged(run_id=r.run_id, pr_number=r.plan.pr_number, merge_sha=merge_sha, note=note))
        branch = base_ref or "main"
        try:
            await self.github.wait_for_branch_contains(branch, merge_sha, timeout=self.timeouts.merge_visible)
        except GitHubError as exc:
            raise _Stop(RunStatus.FAILED, f"merged as {merge_sha[:7]}, but {exc}; not deploying") from None

    async def _refuse(self, r: _Run, reason: str) -> None:
        self.store.record(r.run_id, "merge_refused", reason=reason)
        await self._emit(MergeRefused(run_id=r.run_id, pr_number=r.plan.pr_number, reason=reason))
        raise _Stop(RunStatus.REFUSED, reason)

    # --- deploy -----------------------------------------------------------------

    async def _deploy(self, r: _Run, queued_wait: float | None) -> None:
        plan = r.plan
        canaries, rest = plan.waves

        def todo(entries: Sequence[PlanEntry]) -> list[str]:
            return [e.host for e in entries if e.host not in r.outcomes]

        queued = todo(plan.queued)
        for host in queued:
            await self._emit(HostQueued(run_id=r.run_id, host=host, reason="offline; deployed when it comes back online"))
        canary_hosts = [e.host for e in canaries]
        if canary_hosts and r.journal.canary_gate is not True:
            await self._wave(r, todo(canaries), [], 0.0)
            if self._cancel.is_set():
                return
            if r.failure:
                failed = [h for h in canary_hosts if (o := r.outcomes.get(h)) and o.outcome is Outcome.FAILED]
                r.failure = f"canary {', '.join(failed) or 'deploy'} failed: nothing else is deployed"
                return
            await self._canary_gate(r, canary_hosts)
            if r.failure or self._cancel.is_set():
                return
        await self._wave(r, todo(rest), queued, queued_wait)

    async def _canary_gate(self, r: _Run, hosts: list[str]) -> None:
        wait_s = max(0.0, r.plan.canary_wait_minutes * 60.0)
        until = self._clock() + timedelta(seconds=wait_s)
        if r.journal.canary_wait_until:
            with contextlib.suppress(ValueError):
                until = datetime.fromisoformat(r.journal.canary_wait_until)
        else:
            self.store.record(r.run_id, "canary_wait", until=until.isoformat(), hosts=hosts)
        await self._emit(WaitingForCanaries(run_id=r.run_id, until=until, hosts=tuple(hosts)))
        remaining = (until - self._clock()).total_seconds()
        if remaining > 0 and not await self._sleep_unless_cancelled(remaining):
            return
        problems: list[str] = []
        for host in hosts:
            found = health_problems(self.fleet.host(host))
            if found:
                problems.append(f"{host}: {', '.join(found)}")
                outcome = HostOutcome(host, Outcome.FAILED, "health",
                                      f"unhealthy {r.plan.canary_wait_minutes:g} min after the switch: {', '.join(found)}",
                                      inert_lines(self.fleet.output_lines(host)))
                await self._host_done(r, outcome)
        passed = not problems
        self.store.record(r.run_id, "canary_gate", passed=passed, problems=problems)
        await self._emit(CanaryGate(run_id=r.run_id, passed=passed, problems=tuple(problems)))
        if not passed and not r.failure:
            r.failure = "canary gate failed"

    async def _sleep_unless_cancelled(self, seconds: float) -> bool:
        """Sleep; False if cancelled meanwhile."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        canceller = asyncio.ensure_future(self._cancel.wait())
        try:
            await asyncio.wait({sleeper, canceller}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, canceller):
                t.cancel()
        return not self._cancel.is_set()

    async def _gate_open(self) -> bool:
        if self.may_start_host is None:
            return True
        try:
            return bool(await _maybe_await(self.may_start_host()))
        except Exception:  # a broken gate must not start hosts
            log.exception("may_start_host failed; treating it as closed")
            return False

    async def _wave(self, r: _Run, hosts: list[str], queued: list[str], queued_wait: float | None) -> None:
        """Run ``hosts`` in order (at most ``max_parallel`` at once), plus ``queued`` ones once online."""
        pending = list(hosts)
        waiting = list(queued)
        loop = asyncio.get_running_loop()
        deadline = None if queued_wait is None else loop.time() + max(0.0, queued_wait)
        paused = False
        # Hosts interrupted mid-flight in a previous process go first: they already started.
        pending.sort(key=lambda h: 0 if h in r.journal.in_flight else 1)
        while True:
            if self._cancel.is_set():
                await self._cancel_running(r)
                break
            for host in list(waiting):
                h = self.fleet.host(host)
                if h is not None and h.online:
                    waiting.remove(host)
                    pending.append(host)
                    await self._emit(HostProgress(run_id=r.run_id, host=host, phase="queue", message="back online"))
            while pending and not r.failure and len(r.running) < max(1, r.plan.max_parallel):
                if not await self._gate_open():
                    if not paused:
                        paused = True
                        self.store.record(r.run_id, "paused", reason="may_start_host said no")
                        await self._emit(Paused(run_id=r.run_id, reason="waiting for the deploy gate (e.g. maintenance window)"))
                    break
                if paused:
                    paused = False
                    self.store.record(r.run_id, "resumed", reason="the deploy gate opened")
                    await self._emit(Unpaused(run_id=r.run_id))
                host = pending.pop(0)
                r.running[host] = asyncio.create_task(self._host_task(r, host), name=f"deploy {host}")
            waiting_done = (
                not waiting or bool(r.failure) or self._stop_waiting.is_set()
                or (deadline is not None and loop.time() >= deadline)
            )
            if not r.running and (not pending or r.failure) and waiting_done:
                break
            await self._wait_for_change(r, waiting, paused, deadline)
            for host, task in list(r.running.items()):
                if task.done():
                    del r.running[host]
                    outcome = task.result()
                    if outcome.outcome is Outcome.QUEUED:
                        waiting.append(host)  # went offline before it could start: wait for it
                        await self._emit(HostQueued(run_id=r.run_id, host=host, reason=outcome.detail))
                        continue
                    await self._host_done(r, outcome)
        for host in pending + waiting:
            if host not in r.outcomes:
                r.outcomes[host] = self._not_started(r, host, queued=host in waiting)

    async def _wait_for_change(self, r: _Run, waiting: list[str], paused: bool, deadline: float | None) -> None:
        self._wake.clear()
        aws: set[asyncio.Future[Any]] = set(r.running.values())
        waker = asyncio.ensure_future(self._wake.wait())
        aws.add(waker)
        extra: list[asyncio.Future[Any]] = [waker]
        timeout: float | None = None
        loop = asyncio.get_running_loop()
        if waiting and not r.failure:
            limit = self.timeouts.queued_poll
            if deadline is not None:
                limit = min(limit, max(0.0, deadline - loop.time()))
            watcher = asyncio.ensure_future(self.fleet.wait_until(lambda: any(
                (h := self.fleet.host(name)) is not None and h.online for name in waiting), limit))
            aws.add(watcher)
            extra.append(watcher)
            timeout = limit + 1.0
        if paused:
            timeout = self.timeouts.gate_poll if timeout is None else min(timeout, self.timeouts.gate_poll)
        try:
            await asyncio.wait(aws, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in extra:
                fut.cancel()

    def _not_started(self, r: _Run, host: str, *, queued: bool) -> HostOutcome:
        if self._cancel.is_set():
            return HostOutcome(host, Outcome.CANCELLED, "", "not started: the deploy was cancelled")
        if r.failure:
            return HostOutcome(host, Outcome.SKIPPED, "", f"not started: {r.failure}")
        if queued:
            return HostOutcome(host, Outcome.QUEUED, "", "offline; still queued")
        return HostOutcome(host, Outcome.SKIPPED, "", "not started")

    def _skip_unstarted(self, r: _Run, status: RunStatus) -> None:
        """Give every planned host without an outcome one, matching how the run ended."""
        for host in r.plan.hosts:
            if host in r.outcomes:
                continue
            if status is RunStatus.CANCELLED:
                r.outcomes[host] = HostOutcome(host, Outcome.CANCELLED, "", "not started: the deploy was cancelled")
            elif status is RunStatus.REFUSED:
                r.outcomes[host] = HostOutcome(host, Outcome.SKIPPED, "", "not deployed: the merge was refused")
            else:
                r.outcomes[host] = HostOutcome(host, Outcome.SKIPPED, "", f"not started: {r.failure or 'the run stopped'}")

    def _journal_outcome(self, r: _Run, outcome: HostOutcome) -> None:
        self.store.record(
            r.run_id, "host_finished", host=outcome.host, outcome=outcome.outcome.value, phase=outcome.phase,
            detail=outcome.detail, log_excerpt=list(outcome.last_lines),
        )
        r.journaled.add(outcome.host)

    async def _host_done(self, r: _Run, outcome: HostOutcome) -> None:
        r.outcomes[outcome.host] = outcome
        self._journal_outcome(r, outcome)
        await self._emit(HostFinished(run_id=r.run_id, host=outcome.host, outcome=outcome))
        if outcome.outcome is Outcome.FAILED:
            if not r.failure:
                r.failure = f"deploy stopped after {outcome.host} failed"
            if self.on_failure is not None:
                try:
                    await _maybe_await(self.on_failure(outcome))
                except Exception:
                    log.exception("on_failure hook failed for %s", outcome.host)

    async def _cancel_running(self, r: _Run) -> None:
        self.store.record(r.run_id, "cancel_requested", running=sorted(r.running))
        notes: list[str] = []
        for host, task in list(r.running.items()):
            phase = r.phase.get(host, "pull")
            note = await self._try_kill(host, phase)
            notes.append(note)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            r.still_running.append(host)
            await self._host_done(r, HostOutcome(host, Outcome.CANCELLED, phase, note,
                                                 inert_lines(self.fleet.output_lines(host))))
        r.running.clear()
        await self._emit(CancelRequested(run_id=r.run_id, still_running=tuple(r.still_running), notes=tuple(notes)))

    async def _try_kill(self, host: str, phase: str) -> str:
        try:
            await self.dashboard.kill(host)
            note = (f"kill sent, but the dashboard cannot stop a running command (contract §3.7): "
                    f"the {phase} may still be running on {host}")
        except DashboardError as exc:
            note = f"kill failed ({exc}); the {phase} may still be running on {host}"
        if self._release_on_cancel:
            try:
                await self.dashboard.timeout_action(host, "ignore")
                note += "; released in the dashboard (timeout-action ignore)"
            except DashboardError as exc:
                note += f"; release failed ({exc})"
        return note

    # --- one host -----------------------------------------------------------------

    async def _host_task(self, r: _Run, host: str) -> HostOutcome:
        try:
            return await self._deploy_host(r, host)
        except asyncio.CancelledError:
            raise
        except NfuError as exc:
            return self._failed(host, r.phase.get(host, "pull"), f"{exc.title}: {exc}")
        except Exception as exc:  # never let one host's bug kill the run silently
            log.exception("deploying %s failed unexpectedly", host)
            return self._failed(host, r.phase.get(host, "pull"), f"internal error: {exc!r}")

    def _failed(self, host: str, phase: str, detail: str) -> HostOutcome:
        return HostOutcome(host, Outcome.FAILED, phase, detail, inert_lines(self.fleet.output_lines(host)))

    async def _deploy_host(self, r: _Run, host: str) -> HostOutcome:
        resume = r.journal.in_flight.pop(host, None)
        pulled = host in r.journal.pulled
        r.journal.pulled.discard(host)
        gen_before = (self.fleet.host(host) or Host(id=host)).generation
        pull_note = ""
        if resume is not None and resume[0] == "switch":
            outcome = await self._resume_switch(r, host, resume)
            if outcome is not None:
                return outcome
            pulled = True  # the pull finished before the switch was started
        if not pulled:
            resumed_pull = resume if resume is not None and resume[0] == "pull" else None
            result = await self._pull(r, host, resumed_pull)
            if isinstance(result, HostOutcome):
                return result
            pull_note = result
        h = self.fleet.host(host) or Host(id=host)
        force = switch_needs_force(h.generation, gen_before, r.merge_sha) or pulled
        outcome = await self._switch(r, host, force)
        if pull_note and outcome.outcome is Outcome.OK:
            outcome = HostOutcome(host, outcome.outcome, outcome.phase, "; ".join(filter(None, [pull_note, outcome.detail])))
        return outcome

    async def _start(self, r: _Run, host: str, op: str, force: bool) -> DispatchDecision:
        r.phase[host] = op
        self.store.record(r.run_id, "host_started", host=host, phase=op, force=force)
        await self._emit(HostStarted(run_id=r.run_id, host=host, phase=op, force=force))
        results = await self.dashboard.dispatch(op, [host], force=force)
        mine = next((x for x in results if getattr(x, "host_id", host) == host), None)
        decision = interpret_dispatch(mine, op, host)
        if decision.action == "started":
            self.store.record(r.run_id, "command_dispatched", host=host, phase=op, command_id=decision.command_id)
        return decision

    def _offline(self, r: _Run, host: str, phase: str, message: str) -> HostOutcome:
        if r.plan.strategy == "all":
            self.store.record(r.run_id, "host_requeued", host=host, reason=message)
            return HostOutcome(host, Outcome.QUEUED, phase, message)
        return HostOutcome(host, Outcome.SKIPPED, phase, f"went offline before {phase}: {message}")

    async def _await_command(self, host: str, op: str, command_id: str, guard: float) -> tuple[bool, str]:
        try:
            cmd = await self.fleet.wait_for_command(command_id, guard)
        except (TimeoutError, asyncio.TimeoutError):
            h = self.fleet.host(host)
            state = f"dashboard shows pending_command={h.pending_command!r}" if h and h.pending_command else "no result"
            return False, f"{op} did not finish within {guard / 60:g} min ({state}); check the host"
        return interpret_command(cmd)

    async def _pull(self, r: _Run, host: str, resume: tuple[str, str, str] | None) -> HostOutcome | str:
        """Pull (forced: right after a merge version.json may still be stale, §8 #42). Returns a note or an outcome."""
        command_id = ""
        if resume is not None and resume[1]:
            command_id = await self._live_command(resume[1], host)
        if not command_id:
            decision = await self._start(r, host, "pull", True)
            if decision.action == "offline":
                return self._offline(r, host, "pull", decision.message)
            if decision.action != "started":
                detail = decision.message
                if decision.action == "current":
                    detail = f"the dashboard refused the forced pull as already current ({decision.message})"
                return self._failed(host, "pull", detail)
            command_id = decision.command_id
        else:
            r.phase[host] = "pull"
            await self._emit(HostProgress(run_id=r.run_id, host=host, phase="pull", message="following the interrupted pull"))
        ok, detail = await self._await_command(host, "pull", command_id, self.timeouts.pull)
        if not ok:
            return self._failed(host, "pull", detail)
        self.store.record(r.run_id, "pull_done", host=host, detail=detail)
        await self._emit(HostProgress(run_id=r.run_id, host=host, phase="pull", message=f"done{' (' + detail + ')' if detail else ''}"))
        return f"pull {detail}" if detail else ""

    async def _switch(self, r: _Run, host: str, force: bool) -> HostOutcome:
        decision = await self._start(r, host, "switch", force)
        if decision.code == "lock_outdated" and not force:
            decision = await self._start(r, host, "switch", True)  # version.json lags the merge (§8 #42)
        if decision.action == "current":
            return HostOutcome(host, Outcome.OK, "switch", f"already current ({decision.message})")
        if decision.action == "offline":
            return self._offline(r, host, "switch", decision.message)
        if decision.action != "started":
            return self._failed(host, "switch", decision.message)
        return await self._follow_switch(host, decision.command_id)

    async def _follow_switch(self, host: str, command_id: str) -> HostOutcome:
        ok, detail = await self._await_command(host, "switch", command_id, self.timeouts.switch)
        if not ok:
            return self._failed(host, "switch", detail)
        return HostOutcome(host, Outcome.OK, "switch", detail)

    # --- resume -------------------------------------------------------------------

    async def _live_command(self, command_id: str, host: str) -> str:
        """``command_id`` if the dashboard still knows it (running, or finished recently), else ""."""
        try:
            states = await self.dashboard.command_states()
        except DashboardError:
            states = {}
        active = states.get(host)
        if active is not None and active.id == command_id:
            return command_id
        try:
            await self.fleet.wait_for_command(command_id, self.timeouts.resume_lookup)
        except (TimeoutError, asyncio.TimeoutError):
            return ""
        return command_id

    async def _resume_switch(self, r: _Run, host: str, resume: tuple[str, str, str]) -> HostOutcome | None:
        """Settle a switch that was in flight when the previous process died.

        Returns the outcome, or None when the switch certainly did not run (then the
        caller starts it again).
        """
        _, command_id, started_at = resume
        r.phase[host] = "switch"
        await self._emit(HostProgress(run_id=r.run_id, host=host, phase="switch", message="checking the interrupted switch"))
        if command_id and await self._live_command(command_id, host):
            return await self._follow_switch(host, command_id)
        try:
            states = await self.dashboard.command_states()
        except DashboardError:
            states = {}
        active = states.get(host)
        if active is not None and active.op == "switch" and not active.terminal:
            self.store.record(r.run_id, "command_dispatched", host=host, phase="switch", command_id=active.id)
            return await self._follow_switch(host, active.id)
        h = self.fleet.host(host)
        if h is not None and h.pending_command == "switch":
            # Running, but we cannot name its command: wait until the host is idle, then judge by System.
            await self._emit(HostProgress(run_id=r.run_id, host=host, phase="switch",
                                          message="a switch is still running on the dashboard; waiting for it"))
            if not await self.fleet.wait_until(lambda: not ((x := self.fleet.host(host)) and x.busy),
                                               self.timeouts.switch):
                return self._failed(host, "switch", f"still busy with a switch after {self.timeouts.switch / 60:g} min")
            h = self.fleet.host(host)
        since = _parse_iso(started_at)
        checked = _parse_iso(h.system.checked_at) if h is not None else None
        # The dashboard stamps System with second precision (and its own clock).
        if h is not None and checked is not None and since is not None and checked >= since.replace(microsecond=0):
            if h.system.state is CompartmentState.ERROR:
                return self._failed(host, "switch", f"the interrupted switch failed: {h.system.message}")
            if h.system.state is CompartmentState.OK:
                return HostOutcome(host, Outcome.OK, "switch", f"the interrupted switch completed ({h.system.message})")
        if command_id:
            return self._failed(host, "switch", "the interrupted switch's outcome is unknown (its command is no longer "
                                                "known to the dashboard); verify the host manually")
        return None  # never dispatched (or left no trace at all): start it

    # --- finishing ----------------------------------------------------------------

    def _final_status(self, r: _Run) -> tuple[RunStatus, str]:
        values = [o.outcome for o in r.outcomes.values()]
        if self._cancel.is_set():
            still = f"; still running on the host(s): {', '.join(r.still_running)}" if r.still_running else ""
            return RunStatus.CANCELLED, "cancelled" + still
        if Outcome.FAILED in values or r.failure:
            return RunStatus.FAILED, r.failure or "a host failed"
        if Outcome.QUEUED in values:
            waiting = [h for h, o in r.outcomes.items() if o.outcome is Outcome.QUEUED]
            return RunStatus.WAITING, f"waiting for {', '.join(waiting)} to come back online"
        if r.plan.merge_only:
            return RunStatus.SUCCEEDED, f"merged as {r.merge_sha[:7]}; no deploy (strategy none)"
        return RunStatus.SUCCEEDED, ""

    async def _finish(self, r: _Run, status: RunStatus, message: str) -> RunResult:
        order = list(r.plan.hosts)
        outcomes = tuple(r.outcomes[h] for h in order if h in r.outcomes) + tuple(
            o for h, o in r.outcomes.items() if h not in order
        )
        result = RunResult(r.run_id, status, r.plan.pr_number, r.merge_sha, message, outcomes, tuple(r.still_running))
        if status is RunStatus.WAITING:
            self.store.record(r.run_id, "waiting", hosts=result.hosts_with(Outcome.QUEUED))
        else:
            for outcome in outcomes:
                if outcome.host not in r.journaled:
                    self._journal_outcome(r, outcome)
            self.store.finish_run(r.run_id, _JOURNAL_STATUS[status], result.summary())
        self._audit(r, "deploy", status=status.value, summary=result.summary(),
                    outcomes={o.host: o.outcome.value for o in outcomes})
        note = notification_for(result)
        await self._emit(RunFinished(run_id=r.run_id, result=result, notification=note))
        if self.notifier is not None:
            try:
                await self.notifier.send(note)
            except Exception:  # the notifier promises not to raise; be safe anyway
                log.exception("webhook notification failed")
        return result

    def _audit(self, r: _Run, action: str, **details: Any) -> None:
        try:
            self.store.audit(action, actor=r.actor, github_login=self.github_login, pr=r.plan.pr_number,
                             details={"run": r.run_id, **details})
        except (StateError, OSError) as exc:  # the journal has the facts; never stop a deploy for this
            log.warning("could not write the audit entry %s: %s", action, exc)

    async def _emit(self, event: EngineEvent) -> None:
        event = replace(event, at=self._clock())
        if isinstance(event, CancelRequested) and self._run is not None:
            self._run.cancel_reported = True
        for listener in list(self._listeners):
            try:
                await _maybe_await(listener(event))
            except Exception:
                log.exception("engine event listener failed")


_JOURNAL_STATUS = {
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.REFUSED: "failed",
}


def _parse_iso(value: str) -> datetime | None:
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _steps_of(stored: Any) -> list[tuple[str, Mapping[str, Any], str]]:
    """(step, data, at) tuples from a stored :class:`~nfu_tui.core.store.Run`."""
    return [
        (s.step, s.data, s.at.isoformat() if isinstance(s.at, datetime) else str(s.at))
        for s in stored.steps or ()
    ]


__all__ = [
    "CanaryGate",
    "CancelRequested",
    "DeployEngine",
    "EngineEvent",
    "FleetView",
    "HostFinished",
    "HostOutcome",
    "HostProgress",
    "HostQueued",
    "HostStarted",
    "JournalState",
    "MergeRefused",
    "MergeRequested",
    "Merged",
    "Outcome",
    "Paused",
    "RunFinished",
    "RunResult",
    "RunStarted",
    "RunStatus",
    "Timeouts",
    "Unpaused",
    "WaitingForCanaries",
    "ci_refusal",
    "health_problems",
    "interpret_command",
    "interpret_dispatch",
    "merge_refusal",
    "notification_for",
    "switch_needs_force",
]
