"""The merge & deploy engine: merge an update PR (sha-guarded), then pull + switch each host.

The engine executes a :class:`~nfu_tui.core.plan.DeployPlan` against GitHub (merge) and
the fleet backend (per-host ``pull`` then ``switch``, dashboard contract §9.2), a
:class:`~nfu_tui.backends.base.FleetBackend`: the NixFleet dashboard or SSH. The rules
below are written for the dashboard; the SSH backend speaks its message shapes, names
itself in the texts (``BackendInfo.noun``), answers ``refresh-system`` with a probe of
the host and really stops a released command (``BackendInfo.stops_commands``). It is used
the same way by the TUI, the headless ``auto`` mode and ``nfu-tui deploy``.

Reliability rules:

* **Journal first.** Every step is written to the journal before it is acted on
  (``merge_requested`` before the merge, ``host_started`` before a dispatch, …), so a
  run that dies can be resumed: the merge is never repeated, a finished host is never
  re-run, and a host that was mid-flight is inspected on the dashboard (its command is
  followed, or re-run only when it certainly did not complete).
* **One deploy at a time**, across processes: the deploy lock is held for the whole run.
* **Outcomes from evidence, never from transport alone.** Each host ends with three
  facts: *executed* (the switch command's result), *reached* (its generation is the merge
  commit — see :func:`reached_target` for mirrors) and *verified* (the dashboard reports
  System ``ok`` for that generation, waited for up to ``flake_updates.verify_minutes``;
  an ok reported since the switch but stored as "outdated (flake.lock is behind)" while
  ``version.json`` lagged counts once Lock is ok (:func:`system_ok_behind_lagging_lock`),
  other ``outdated`` values make it ask the agent to ``refresh-system``, once; then the
  host's tests per ``post_switch_tests``). ``ok`` needs all three; executed and reached (or
  not known yet) but not verified in time is ``unverified`` (a warning); no evidence either
  way is ``unknown``. ``failed`` is *proven* (``HostOutcome.proven``) only by a command
  result ERROR/TIMEOUT/KILLED, failed tests or a System error (not one our own
  ``refresh-system`` provoked: that is ``unverified``): only a
  proven failure calls ``on_failure`` (and is ever rolled back, see
  :mod:`nfu_tui.core.rollback`); an unknown outcome stops the run and alerts.
* **Stop on the first failure** (or unknown outcome): no new host starts, running hosts
  finish, the rest are reported ``skipped``. Canaries gate on verification: the rest
  starts only when every canary is ``ok`` and still is after ``canary_wait_minutes``.
* **Hold takes effect at once**: ``is_held`` (the shared state file) is asked before
  each host starts and before its switch; a held host is reported ``held`` (not a
  failure); a host already running finishes its step.
* **Cancel** stops scheduling: no new host and no next phase (a host cancelled after its
  pull is not switched) starts. The dashboard cannot stop a running command (contract
  §3.7, §6.6, §8 #28), and its ``/kill`` is harmful: with a busy agent the command
  turns ``ERROR`` while the process keeps running, with an idle agent or a switch in
  ``AWAITING_RECONNECT`` it stays ``KILLING`` and the host refuses every later op
  (``command_pending``) until someone sends ``ignore``. So the engine **never sends
  kill** (the product brief's "try the dashboard's kill" is deliberately not followed;
  the contract shows it strands hosts): it says which hosts are still running, and that
  the dashboard cannot stop them, and follows their commands to their
  real outcome (a switch that succeeds is ``ok``). Only on explicit request
  (``cancel(release_hosts=True)``) it sends ``timeout-action ignore`` for running
  commands, which frees the host in the dashboard while the process keeps running on
  it (outcome ``cancelled``, host listed in ``RunResult.still_running``) — never for a
  switch in ``AWAITING_RECONNECT``: it has finished, and the dashboard completes it
  when the agent reconnects.
* Cancelling the asyncio task that runs :meth:`DeployEngine.run` (process shutdown) is
  *not* a user cancel: the journal is left unfinished so the run can be resumed.

Following a command (contract §6.4–§6.8):

* Its non-terminal states are reported as :class:`HostProgress`: ``RUNNING_WARNING``
  (normal for big builds; waiting goes on), ``TIMEOUT_PENDING`` (past the dashboard's
  hard timeout: it still accepts a late result, but the host refuses new commands
  until a timeout action is chosen in the dashboard), ``AWAITING_RECONNECT``, ``KILLING``.
* Client-side guards (:class:`Timeouts`) are counted from the dispatch and sized above
  the dashboard's hard timeouts. They are extended when the dashboard gives the command
  more time (back to ``EXECUTING`` after a warning: someone chose ``timeout-action
  wait``), when a switch reaches ``AWAITING_RECONNECT`` (the dashboard decides within
  90 s), and while it is ``RUNNING_WARNING`` (its hard timeout has not passed). A command
  still ``TIMEOUT_PENDING`` at the guard fails the host with a detail naming the state
  and the dashboard's actions. The engine never sends a timeout action by itself.
* A command the dashboard forgot (restart: the host turns idle, ``/api/command-states``
  no longer holds it, its row stays ``EXECUTING``; §6.8, §8 #34) is noticed while the
  host is idle (command-states is asked at most every ``Timeouts.lost_check`` s) and
  judged from the host's state: the generation for a pull, the System compartment
  reported after the start for a switch (kept waiting while the agent still reports
  System ``working``); without such evidence the host fails saying so.
* ``send_failed`` (the dashboard lists the host online but could not hand it the
  command, §3.4, §6.2) is retried once after ``Timeouts.send_retry`` s unless the host
  goes offline meanwhile (then it is queued like any offline host); a second
  ``send_failed`` fails the host with the dashboard's message.
* A dispatch that errors (transport error, timeout, empty-body 500) may still have
  started the command, whose deltas come before the response: the fleet model (finished
  commands too), command-states and the host's events are searched for a new command of
  that op (shown as "outcome unknown — checking"; until the event log was read twice, or for
  up to ``Timeouts.evidence`` s while the dashboard cannot be asked); it is followed to its
  real end, and without any trace the host ends ``unknown``.

Hooks for later features: ``may_start_host`` (a gate consulted before every host step — a
new host's pull and a pulled host's switch —, e.g. maintenance windows; the engine pauses while
it says no, and a host whose pull finished waits, pulled, for its switch; ``describe_gate`` says
why in the journal) and
``on_failure`` (called with a *proven* failure only, e.g. to roll back).

Pure decision helpers (:func:`merge_refusal`, :func:`ci_refusal`,
:func:`interpret_dispatch`, :func:`interpret_command`, :func:`switch_needs_force`,
:func:`command_status_note`, :func:`unfinished_detail`, :func:`system_verdict`,
:func:`judge_lost_command`, :func:`health_problems`,
:func:`command_from_events`, :func:`reached_target`, :class:`JournalState`) are
unit-tested directly.
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

from nfu_tui.backends.base import NIXFLEET, BackendInfo, FleetBackend, info_of
from nfu_tui.config import Config
from nfu_tui.core.plan import DeployPlan, PlanEntry
from nfu_tui.core.store import DeployLock
from nfu_tui.core.takeover import take_over, waiting_runs
from nfu_tui.domain.timeparse import parse_time
from nfu_tui.errors import (
    DashboardError,
    GitHubError,
    MergeConflict,
    NfuError,
    NotMergeable,
    StateError,
)
from nfu_tui.models import CIStatus, CIVerdict, Command, CompartmentState, Host, Notification, UpdatePR
from nfu_tui.sanitize import sanitize_line

log = logging.getLogger(__name__)

LAST_LINES = 20
"""How many trailing log lines a failed host's outcome keeps."""
LINE_MAX = 500
"""Longest log line kept in an outcome (the journal is not a log store)."""


# ============================================================== collaborators


class FleetView(Protocol):
    """What the engine reads from the live fleet (the fleet backend's stream applied to a model)."""

    def host(self, host_id: str) -> Host | None: ...

    def hosts(self) -> list[Host]: ...

    def command(self, command_id: str) -> Command | None:
        """The command as last seen on the stream (any status), None if never seen."""

    def active_command(self, host_id: str) -> Command | None:
        """The command really running on a host (non-terminal, host busy), if any."""

    def commands_for(self, host_id: str) -> Sequence[Command]:
        """Every command of a host the stream described (any status, finished ones too), newest first."""

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """True as soon as ``predicate()`` holds (re-checked on fleet changes), False on timeout."""

    def output_lines(self, host_id: str, command_id: str | None = None) -> list[str]:
        """A host's output lines; only those of ``command_id`` when given."""

    async def settle_output(self, host_id: str, command_id: str) -> None:
        """Add the end of a finished command's output that the stream missed (from the dashboard's log)."""


class GitHubPort(Protocol):
    async def get_pull(self, number: int, *, wait_mergeable: bool = True) -> UpdatePR: ...

    async def ci_status(self, sha: str) -> CIStatus: ...

    async def merge(self, number: int, sha: str, *, method: str = "merge") -> str: ...

    async def wait_for_branch_contains(self, branch: str, sha: str, *, timeout: float = 60) -> None: ...

    async def viewer_login(self) -> str: ...


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
    OK = "ok"  # executed, reached the target and verified by the dashboard
    FAILED = "failed"
    UNKNOWN = "unknown"  # no evidence of what happened on the host: alert and stop, never roll back
    UNVERIFIED = "unverified"  # executed and reached, but the dashboard did not confirm it in time (a warning)
    HELD = "held"  # held during the run, before it started (not a failure)
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    QUEUED = "queued"  # offline; still waiting for it when the run returned


class RunStatus(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # stopped: a host's outcome could not be established
    UNVERIFIED = "unverified"  # done, but some hosts were not verified in time
    CANCELLED = "cancelled"
    REFUSED = "refused"  # nothing merged or deployed: the PR did not pass the merge checks
    WAITING = "waiting"  # every reachable host done; queued offline hosts still pending


PROVEN_FAILURES = frozenset({"ERROR", "TIMEOUT", "KILLED"})
"""Command results that prove a failure (with failed tests and System error): only these roll back."""


def _mark(value: bool | None) -> str:
    return "?" if value is None else ("✓" if value else "✗")


@dataclass(frozen=True, slots=True)
class HostOutcome:
    host: str
    outcome: Outcome
    phase: str = ""  # where it ended: pull | switch | verify | test | health | ""
    detail: str = ""
    last_lines: tuple[str, ...] = ()
    executed: str = ""  # the switch command's result (SUCCESS, ERROR, …); "" when no switch ran
    reached: bool | None = None  # the host's generation is the target (None: not known)
    verified: bool | None = None  # System ok for that generation (and Tests ok where tests ran)
    proven: bool = False  # a FAILED outcome backed by evidence (command ERROR/TIMEOUT/KILLED, tests, System error)

    @property
    def proven_failure(self) -> bool:
        """The only kind of outcome that may start a rollback or the engine's ``on_failure`` hook."""
        return self.outcome is Outcome.FAILED and self.proven

    def facts(self) -> str:
        """``executed SUCCESS · reached ✓ · verified ✗`` ("" when none of the three is known)."""
        if not self.executed and self.reached is None and self.verified is None:
            return ""
        return (f"executed {self.executed or '?'} · reached {_mark(self.reached)} · "
                f"verified {_mark(self.verified)}")

    def describe(self) -> str:
        text = f"{self.host}: {self.outcome.value}"
        if self.phase and self.outcome is not Outcome.OK:
            text += f" ({self.phase})"
        text += f" — {self.detail}" if self.detail else ""
        facts = self.facts()
        return text + (f" [{facts}]" if facts else "")

    def journal_data(self) -> dict[str, Any]:
        """The ``host_finished`` step's data (read back by :class:`JournalState` and the history)."""
        return {"outcome": self.outcome.value, "phase": self.phase, "detail": self.detail,
                "log_excerpt": list(self.last_lines), "executed": self.executed, "reached": self.reached,
                "verified": self.verified, "proven": self.proven}

    @classmethod
    def from_journal(cls, host: str, data: Mapping[str, Any]) -> "HostOutcome":
        outcome = Outcome(str(data.get("outcome", "failed")))
        # Journals written before "proven" existed: a failure then was always acted on.
        proven = bool(data.get("proven", outcome is Outcome.FAILED))
        return cls(host, outcome, str(data.get("phase", "")), str(data.get("detail", "")),
                   tuple(data.get("log_excerpt") or ()), str(data.get("executed", "") or ""),
                   _opt_bool(data.get("reached")), _opt_bool(data.get("verified")), proven)


def _opt_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: int | None
    status: RunStatus
    pr_number: int
    merge_sha: str = ""
    message: str = ""
    outcomes: tuple[HostOutcome, ...] = ()
    still_running: tuple[str, ...] = ()  # hosts whose command may still run after a cancel
    subject: str = ""  # DeployPlan.subject; "" = PR #pr_number

    @property
    def ok(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.WAITING)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (queued and held hosts are not failures), else 1 (unknown and
        unverified outcomes included)."""
        return 0 if self.ok else 1

    def outcome(self, host: str) -> HostOutcome | None:
        return next((o for o in self.outcomes if o.host == host), None)

    def hosts_with(self, outcome: Outcome) -> list[str]:
        return [o.host for o in self.outcomes if o.outcome is outcome]

    def proven_failures(self) -> list[str]:
        """Hosts whose failure is proven: the only reason to roll anything back."""
        return [o.host for o in self.outcomes if o.proven_failure]

    def summary(self) -> str:
        counts = {k: len(self.hosts_with(k)) for k in Outcome}
        parts = [f"{n} {k.value}" for k, n in counts.items() if n]
        head = f"{self.subject or f'PR #{self.pr_number}'}: {self.status.value}"
        return head + (f" ({', '.join(parts)})" if parts else "") + (f": {self.message}" if self.message else "")


@dataclass(frozen=True)
class Timeouts:
    """Client-side guards, a bit above the dashboard's enforced timeouts (contract §6.7)."""

    pull: float = 6 * 60.0  # pull: hard timeout 5 min
    switch: float = 30 * 60.0 + 90.0 + 4 * 60.0  # switch: hard 30 min, then 90 s reconnect
    merge_visible: float = 120.0  # default branch must contain the merge commit
    gate_poll: float = 30.0  # re-ask may_start_host while it says no
    queued_poll: float = 30.0  # re-check offline hosts (also woken by fleet changes)
    resume_lookup: float = 2.0  # how long to look for a command in the fleet model (resume, after a lookup)
    lost_check: float = 15.0  # at most this often ask command-states whether an idle host's command is forgotten
    send_retry: float = 5.0  # after send_failed: wait this long for the host to go offline, then dispatch once more
    test: float = 11 * 60.0  # test: hard timeout 10 min
    evidence: float = 120.0  # after a lost/late dispatch answer: look this long for a trace of the command
    evidence_poll: float = 5.0  # how often command-states and the host's events are asked meanwhile


RECONNECT_GRACE = 120.0
"""Seconds a switch in ``AWAITING_RECONNECT`` is followed at least (the dashboard decides within 90 s)."""

_RUNNING_STATES = frozenset({"EXECUTING", "RUNNING_WARNING", "TIMEOUT_PENDING", "KILLING", "AWAITING_RECONNECT"})
"""Statuses of a command that has reached the agent (a release after a cancel waits for one)."""

DASHBOARD_TIMEOUTS = {"pull": (2, 5), "switch": (10, 30), "test": (5, 10)}
"""op → (warning, hard) timeout in minutes as the dashboard enforces them (§6.7); others (5, 15)."""


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
    subject: str = ""  # DeployPlan.subject ("converge to main 9f8e7d6"); "" = the PR

    def line(self) -> str:
        verb = "resumed" if self.resumed else "started"
        what = self.subject or f"PR #{self.pr_number} ({self.head_sha[:7]})"
        return f"run #{self.run_id} {verb}: {what}, {len(self.hosts)} host(s)"


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

    action: str  # started | offline | retry | fail | current | unknown
    command_id: str = ""
    message: str = ""
    code: str = ""  # the dashboard's validation code, if blocked
    found: Command | None = None  # the command as found after a dispatch without an answer


def interpret_dispatch(result: Any, op: str, host: str, backend: BackendInfo = NIXFLEET) -> DispatchDecision:
    """Map a dispatch result (started / blocked with a §6.2 code / error) to an action.

    ``send_failed`` is ``retry``: the dashboard lists the host online but could not hand
    the agent the command (no socket yet noticed as gone, or a full queue); nothing ran.
    ``backend`` names the backend in the messages.
    """
    if result is None:
        return DispatchDecision("fail", message=f"{backend.noun} returned no result for {host}")
    if getattr(result, "started", False):
        cid = str(getattr(result, "command_id", "") or "")
        if not cid:
            return DispatchDecision("fail", message=f"{op} started but {backend.noun} gave no command id")
        return DispatchDecision("started", command_id=cid)
    code = str(getattr(result, "code", "") or "")
    message = str(getattr(result, "message", "") or "")
    said = f" ({backend.label}: {message})" if message else ""
    if getattr(result, "blocked", False):
        if code == "offline":
            return DispatchDecision("offline", message=f"host unreachable{said}", code=code)
        if code == "send_failed":
            return DispatchDecision("retry", message=f"the dashboard could not send the {op} to the agent{said}",
                                    code=code)
        if code in ("busy", "command_pending"):
            return DispatchDecision("fail", message=f"host is busy with another command{said}; left untouched", code=code)
        if code == "already_current":
            return DispatchDecision("current", message=message or "already up to date", code=code)
        return DispatchDecision("fail", message=f"{op} blocked ({code or 'no code'}){said}", code=code)
    return DispatchDecision("fail", message=f"{op} could not be started{said or ': error'}", code=code)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the dashboard proves about one command: ``verdict`` ok | failed | unknown (| wait, internal)."""

    verdict: str
    detail: str = ""
    status: str = ""  # the command's terminal status, when known
    proven: bool = False  # failed, and the failure is proven (command result, System error)
    since: datetime | None = None  # when the command started, by the dashboard's clock

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def evidence_of(cmd: Command) -> Evidence:
    """The evidence a terminal command gives (see :func:`interpret_command`)."""
    ok, detail = interpret_command(cmd)
    status = cmd.status.upper()
    since = parse_time(cmd.started_at) or parse_time(cmd.created_at)
    if ok:
        return Evidence("ok", detail, status, since=since)
    return Evidence("failed", detail, status, proven=status in PROVEN_FAILURES, since=since)


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


def command_status_note(op: str, status: str) -> str:
    """The progress line for a non-terminal command status (§6.4, §6.7); "" for plain running states."""
    warning, hard = DASHBOARD_TIMEOUTS.get(op, (5, 15))
    status = status.upper()
    if status == "RUNNING_WARNING":
        return (f"RUNNING_WARNING: running longer than the dashboard's {warning} min warning"
                + ("; normal for big builds" if op == "switch" else "") + "; still waiting")
    if status == "TIMEOUT_PENDING":
        return (f"TIMEOUT_PENDING: past the dashboard's {hard} min hard timeout; a late result still counts, but "
                "the host refuses new commands until a timeout action (wait / ignore) is chosen in the dashboard")
    if status == "AWAITING_RECONNECT":
        return "switched; waiting for the agent to restart and reconnect (the dashboard allows 90 s)"
    if status == "KILLING":
        return "KILLING: a kill was sent from the dashboard; it cannot stop the process (contract §3.7)"
    return ""


def unfinished_detail(op: str, status: str, minutes: float, pending_command: str = "",
                      backend: BackendInfo = NIXFLEET) -> str:
    """Why a host failed when its command was still not terminal at the client-side guard."""
    if status.upper() == "TIMEOUT_PENDING":
        return (f"{op} still TIMEOUT_PENDING after {minutes:g} min: past the dashboard's hard timeout; it may still "
                "be running on the host, which refuses new commands until a timeout-action is chosen in the "
                "dashboard: wait (more time; a late result still counts), ignore (releases the host; the process "
                "keeps running) or kill (only marks it; it does not stop the process, contract §3.7)")
    state = f"{backend.label} status {status.upper()}" if status else "no result"
    if pending_command:
        state += f", pending_command={pending_command!r}"
    return f"{op} did not finish within {minutes:g} min ({state}); check the host"


def system_verdict(host: Host | None, since: datetime | None) -> bool | None:
    """True/False when the host reported System ok/error at or after ``since``, else None.

    The dashboard stamps System with second precision (and its own clock), so ``since``
    is compared without its fraction.
    """
    if host is None or since is None:
        return None
    checked = parse_time(host.system.checked_at)
    if checked is None or checked < since.replace(microsecond=0):
        return None
    if host.system.state is CompartmentState.OK:
        return True
    if host.system.state is CompartmentState.ERROR:
        return False
    return None


def judge_lost_command(op: str, host: Host | None, since: datetime | None, merge_sha: str,
                       generation_before: str = "", backend: BackendInfo = NIXFLEET) -> Evidence:
    """Verdict on a command the dashboard no longer tracks (restart, §6.8, §8 #34), from the host's state.

    ``ok`` done, ``failed`` proven failed (System error), ``unknown`` no evidence either
    way, ``wait`` still running by the host's own report. A pull is done when the host's
    generation is the merge commit (or moved since before the pull: the branch went past
    the merge); a switch by the System compartment reported since it started.
    """
    lost = f"{backend.noun} lost track of the {op} (restarted?)"
    if host is None:
        return Evidence("unknown", f"{lost} and no longer lists the host; verify it manually")
    if op in ("switch", "test"):
        part = host.system if op == "switch" else host.tests
        verdict = system_verdict(host, since) if op == "switch" else _check_verdict(host.tests, since)
        name = "System" if op == "switch" else "Tests"
        if verdict is True:
            return Evidence("ok", f"{lost}; the host reported {name} ok since it started ({part.message})",
                            "SUCCESS", since=since)
        if verdict is False:
            return Evidence("failed", f"{lost}; the host reported {name} error since it started: {part.message}",
                            "ERROR", proven=True, since=since)
        if part.state is CompartmentState.WORKING:
            return Evidence("wait", f"{lost}; the host still reports the {op} running ({name} working)")
        return Evidence("unknown", f"{lost} and the host reported no {op} result since it started; "
                                   "verify the host manually")
    gen = host.generation.strip().lower()
    before = generation_before.strip().lower()
    if gen and merge_sha and merge_sha.lower().startswith(gen[:7]):
        return Evidence("ok", f"{lost}; the host's generation is now {gen}, the merge commit", since=since)
    if gen and before and gen != before:
        return Evidence("ok", f"{lost}; the host's generation moved from {before} to {gen}", since=since)
    return Evidence("unknown", f"{lost} and the host's generation {gen or '(unknown)'} is not the merge commit "
                               f"{merge_sha[:7] or '(unknown)'}; verify the host and deploy again")


def _check_verdict(check: Any, since: datetime | None) -> bool | None:
    """True/False when a compartment reported ok/error at or after ``since`` (second precision)."""
    if since is None:
        return None
    checked = parse_time(check.checked_at)
    if checked is None or checked < since.replace(microsecond=0):
        return None
    if check.state is CompartmentState.OK:
        return True
    if check.state is CompartmentState.ERROR:
        return False
    return None


def command_from_events(events: Iterable[Mapping[str, Any]], host: str, op: str, since: datetime) -> Command | None:
    """What a host's event log (``/api/hosts/{id}/events``, §3.15) says about an ``op`` started at or after
    ``since``: a command without its id (``events:…``) in its last known status, or None without a trace.

    Used when a dispatch's answer was lost: the lifecycle logs "Validating/Executing <op>", then
    "<op> completed successfully", "Partial: …", "Blocked: …", "<op> failed: …" or the switch's
    reconnect timeout, all under ``action = op:<op>``.
    """
    floor = since.replace(microsecond=0) - timedelta(seconds=1)
    found: Command | None = None
    for event in sorted(events, key=lambda e: str(e.get("timestamp", ""))):
        if event.get("action") != f"op:{op}" or event.get("host_id", host) != host:
            continue
        at = parse_time(str(event.get("timestamp", "")))
        if at is None or at < floor:
            continue
        message = str(event.get("message", ""))
        level = str(event.get("level", ""))
        stamp = str(event.get("timestamp", ""))
        status, error = "", ""
        if message.startswith(("Validating", "Executing")):
            status = "EXECUTING"
        elif message.startswith("Blocked:"):
            status, error = "BLOCKED", message.removeprefix("Blocked:").strip()
        elif message.startswith("Partial:"):
            status, error = "PARTIAL", message.removeprefix("Partial:").strip()
        elif message.startswith("Switch completed - waiting"):
            status = "AWAITING_RECONNECT"
        elif message.startswith("Reconnect timeout"):
            status, error = "TIMEOUT", message
        elif level == "success":
            status = "SUCCESS"
        elif level == "error":
            status, error = "ERROR", message
        if not status:
            continue
        started = found.started_at if found is not None else stamp
        found = Command(f"events:{host}:{op}:{started}", host, op, status, created_at=started, started_at=started,
                        finished_at=stamp if status in ("SUCCESS", "PARTIAL", "ERROR", "TIMEOUT", "BLOCKED") else "",
                        error=error)
    return found


def reached_target(host: Host | None, target: str, generation_before: str = "", *,
                   since: datetime | None = None) -> bool | None:
    """Whether the host's configuration checkout is at ``target`` (the merge commit).

    True when its generation is the target's short id. Where hosts pull from a mirror
    whose commit ids differ (or the branch moved past the merge), True when the
    generation moved since before the deploy and the dashboard reports Git and Lock ``ok``
    (checked at or after ``since``) against the remote state, i.e. the state published
    after the merge; None (not known yet) while it moved but that is not confirmed, e.g.
    while ``version.json`` lags the merge. False when the generation is known and did not
    move (or nothing says it moved); None unknown.
    """
    if host is None or not target:
        return None
    gen = host.generation.strip().lower()
    if not gen:
        return None
    if target.lower().startswith(gen[:7]):
        return True
    before = generation_before.strip().lower()
    moved = bool(before) and gen != before
    if not moved:
        return False
    if host.git.state is CompartmentState.OK and host.lock.state is CompartmentState.OK:
        lock_at = parse_time(host.lock.checked_at)
        if since is None or (lock_at is not None and lock_at >= since.replace(microsecond=0)):
            return True
    return None


LAGGED_SYSTEM_MESSAGE = "System outdated (flake.lock is behind)"


def system_ok_behind_lagging_lock(host: Host | None, since: datetime | None) -> bool:
    """Whether System is ``outdated`` only because ``version.json`` lagged: the dashboard stores the agent's
    System ``ok`` as "System outdated (flake.lock is behind)" while Lock is ``outdated`` (§5.4, P3800), and
    keeps it after Lock turns ``ok`` (the agent restarted by the switch reports no System value by itself).
    True when that value was reported at or after ``since`` and Lock is ``ok`` now: System was ok since."""
    if host is None or host.system.state is not CompartmentState.OUTDATED or host.lock.state is not CompartmentState.OK:
        return False
    if host.system.message.strip() != LAGGED_SYSTEM_MESSAGE:
        return False
    checked = parse_time(host.system.checked_at)
    return since is None or (checked is not None and checked >= since.replace(microsecond=0))


def unverified_reason(host: Host | None, target: str, since: datetime | None,
                      backend: BackendInfo = NIXFLEET) -> str:
    """Why a switched host is not verified yet, in the backend's words."""
    if host is None:
        return f"{backend.noun} no longer lists the host"
    parts = []
    if not host.online:
        parts.append("offline")
    gen = host.generation or "(unknown)"
    if target and not target.lower().startswith(gen.lower()[:7]):
        parts.append(f"generation {gen}, not {target[:7]}")
    if system_verdict(host, since) is not True:
        state = host.system.state.value if hasattr(host.system.state, "value") else str(host.system.state)
        message = f": {host.system.message}" if host.system.message else ""
        parts.append(f"System {state}{message}")
    return "; ".join(parts) or f"waiting for {backend.noun}"


def still_verified_problems(host: Host | None, target: str, backend: BackendInfo = NIXFLEET) -> list[str]:
    """Why a verified canary is no longer verified (other than red compartments): offline, System not ok,
    generation moved away."""
    if host is None:
        return [f"no longer known to {backend.noun}"]
    problems = []
    if not host.online:
        problems.append("offline")
    if (host.system.state not in (CompartmentState.OK, CompartmentState.ERROR)
            and not system_ok_behind_lagging_lock(host, None)):
        problems.append(f"System {host.system.state.value} ({host.system.message or 'no message'})")
    gen = host.generation.strip().lower()
    if target and gen and not target.lower().startswith(gen[:7]) and host.git.state is not CompartmentState.OK:
        problems.append(f"generation {gen} is not {target[:7]}")
    return problems


def health_problems(host: Host | None, backend: BackendInfo = NIXFLEET) -> list[str]:
    """Why a deployed (canary) host is not healthy: offline, System red or Tests red."""
    if host is None:
        return [f"no longer known to {backend.noun}"]
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


def notification_for(result: RunResult, plan: DeployPlan | None = None, link: str = "", *,
                     automation_resumes: bool = False, backend: BackendInfo = NIXFLEET,
                     continuable: bool = False) -> Notification:
    """The toast/webhook message for a finished run (:func:`nfu_tui.core.notify.run_notification`)."""
    from nfu_tui.core.notify import run_notification

    return run_notification(result, plan, link, automation_resumes=automation_resumes, backend=backend,
                            continuable=continuable)


# ================================================================= journal state


@dataclass
class JournalState:
    """What a run's journal says has happened (input of resume). Pure: built from steps."""

    merge_requested: bool = False
    merge_sha: str = ""
    finished: dict[str, HostOutcome] = field(default_factory=dict)
    in_flight: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # host -> (phase, command_id, started_at)
    pulled: set[str] = field(default_factory=set)
    switched: dict[str, tuple[str, str, str, bool]] = field(default_factory=dict)  # host -> (result, since,
    # detail, whether its tests had reported a result before the deploy)
    generation_before: dict[str, str] = field(default_factory=dict)  # host -> its generation before the deploy
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
                if data.get("generation_before"):
                    st.generation_before.setdefault(host, str(data["generation_before"]))
                if phase == "pull":
                    st.pulled.discard(host)
                    st.switched.pop(host, None)
                if phase not in ("pull", "switch"):
                    continue  # after switch_done (test, refresh-system): run again on resume
                st.in_flight[host] = (phase, "", at)
                st.finished.pop(host, None)
            elif step == "command_dispatched":
                if data.get("phase") not in (None, "pull", "switch"):
                    continue  # after switch_done: run again on resume
                phase, _, started = st.in_flight.get(host, (str(data.get("phase", "")), "", at))
                st.in_flight[host] = (phase, str(data.get("command_id", "")), started)
            elif step == "pull_done":
                st.pulled.add(host)
            elif step == "host_requeued":
                st.in_flight.pop(host, None)
                st.pulled.discard(host)
            elif step == "switch_done":
                st.in_flight.pop(host, None)
                st.switched[host] = (str(data.get("executed", "")), str(data.get("since", "")),
                                     str(data.get("detail", "")), bool(data.get("tests")))
            elif step == "host_finished":
                st.in_flight.pop(host, None)
                st.switched.pop(host, None)
                st.finished[host] = HostOutcome.from_journal(host, data)
            elif step == "canary_wait":
                st.canary_wait_until = str(data.get("until", ""))
            elif step == "canary_gate":
                st.canary_gate = bool(data.get("passed"))
            elif step == "canary_accepted":  # a run continued past its unverified canaries (continue_unverified)
                st.canary_gate = True
            elif step == "cancel_requested":
                st.cancel_requested = True
        return st


def continuable(run: Any) -> list[HostOutcome]:
    """The unverified canaries of a finished deploy (or converge) run that stopped on them alone — switched,
    never confirmed by the fleet, no host failed or unknown, no other host started — which the admin may
    continue past its canary gate (:meth:`DeployEngine.continue_unverified`); [] for any other run."""
    if run.kind not in ("deploy", "converge") or not run.finished or run.status in ("succeeded", "cancelled",
                                                                                      "abandoned"):
        return []
    plan = DeployPlan.from_dict(run.plan)
    journal = JournalState.from_run(run)
    canaries = [e.host for e in plan.waves[0]]
    outcomes = journal.finished
    if plan.merge_only or not canaries or not (journal.merge_sha or plan.converge):
        return []
    if any(outcomes.get(h) is None or outcomes[h].outcome not in (Outcome.OK, Outcome.HELD, Outcome.UNVERIFIED)
           for h in canaries):
        return []
    if any(o.outcome not in (Outcome.SKIPPED, Outcome.HELD, Outcome.QUEUED)
           for h, o in outcomes.items() if h not in canaries):
        return []
    return [outcomes[h] for h in canaries if outcomes[h].outcome is Outcome.UNVERIFIED]


def continued_already(run_id: int, audit: Iterable[Any]) -> bool:
    """Whether an audit entry (newest entries suffice) says run ``run_id`` was continued past its canaries."""
    return any(e.action == "continue_unverified" and e.details.get("from_run") == run_id for e in audit)


def to_continue(store: Any, run_id: int) -> tuple[Any, list[HostOutcome]]:
    """The stored run ``run_id`` and its unverified canaries, when the admin may continue it past them
    (:func:`continuable`, and nobody did yet); :class:`~nfu_tui.errors.StateError` saying why not otherwise."""
    stored = store.get_run(run_id)  # StateError when unknown
    accepted = continuable(stored)
    if not accepted:
        raise StateError(f"run #{run_id} did not stop on unverified canaries alone; there is nothing to "
                         "continue anyway")
    if continued_already(run_id, store.audit_entries(10_000, since=stored.created_at)):
        raise StateError(f"run #{run_id} was continued already; there is nothing to continue anyway")
    return stored, accepted


def continue_command(run_id: int) -> str:
    """The way on after a run stopped on unverified canaries (:func:`to_continue`)."""
    return f"`nfu-tui deploy --continue {run_id}` deploys the rest without the canaries' proof"


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
    still_running: list[str] = field(default_factory=list)  # released after a cancel: the process may still run
    journaled: set[str] = field(default_factory=set)  # hosts whose outcome is in the journal
    cancel_reported: bool = False
    command: dict[str, str] = field(default_factory=dict)  # host -> id of the command followed last
    released: set[str] = field(default_factory=set)  # hosts released in the dashboard after a cancel
    release_tried: set[str] = field(default_factory=set)  # hosts whose release was attempted or declined
    gen_before: dict[str, str] = field(default_factory=dict)  # host -> generation before its deploy started
    deferred: set[str] = field(default_factory=set)  # pulled hosts whose switch waits for the gate
    takeover: list[tuple[Any, list[str]]] = field(default_factory=list)  # (older waiting run, hosts) to take over


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class DeployEngine:
    """Runs deploy plans. One run at a time per engine (and per machine: the deploy lock)."""

    def __init__(
        self,
        github: GitHubPort,
        backend: FleetBackend,
        fleet_view: FleetView,
        store: JournalPort,
        config: Config,
        *,
        notifier: Notifier | None = None,
        lock: Callable[[], ContextManager[Any]] | None = None,
        remote_lock: Callable[[], Awaitable[None]] | None = None,
        lock_label: str = "nfu-tui",
        on_event: Listener | None = None,
        may_start_host: Callable[[], Awaitable[bool] | bool] | None = None,
        describe_gate: Callable[[], str] | None = None,
        on_failure: Callable[[HostOutcome], Awaitable[None] | None] | None = None,
        is_held: Callable[[str], bool] | None = None,
        timeouts: Timeouts = Timeouts(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.github = github
        self.backend = backend
        self.info = info_of(backend)
        self.fleet = fleet_view
        self.store = store
        self.config = config
        self.notifier = notifier
        self._lock = lock or (lambda: DeployLock(label=lock_label))
        self._remote_lock = remote_lock  # raises DeployLocked when a deploy runs elsewhere (GitHub deployments)
        self._listeners: list[Listener] = [on_event] if on_event else []
        self.may_start_host = may_start_host
        self.describe_gate = describe_gate or (lambda: "no new host step may start now")
        self.on_failure = on_failure
        self.is_held = is_held
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
        """Stop scheduling; running commands are followed to their outcome; the run ends "cancelled".

        Nothing is killed: the dashboard cannot stop a running command and its kill
        strands hosts (module docstring). ``release_hosts`` (may be given in a later call)
        sends ``timeout-action ignore`` for hosts whose command is still running, which
        frees them in the dashboard while the process keeps running on the host
        (contract §3.8); a switch in ``AWAITING_RECONNECT`` is never released.
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

    async def continue_unverified(self, run_id: int, *, actor: str, queued_wait: float | None = None) -> RunResult:
        """Deploy the rest of run ``run_id``, which stopped because its canaries ended ``unverified``: the
        admin's explicit decision to go on without the fleet's proof (see :func:`continuable`).

        A new run continues it: the merge and the canaries' steps are carried over, a ``canary_accepted``
        step (who, which canaries, what was not proven) opens its canary gate, the decision is audited
        (``continue_unverified``), and the run is resumed like an interrupted one — nothing is merged
        again, the canaries are not deployed again. :class:`~nfu_tui.errors.StateError` for any other run.
        """
        return await self.run(None, actor=actor, continue_run_id=run_id, queued_wait=queued_wait)

    # --- the run ----------------------------------------------------------------

    async def run(
        self,
        plan: DeployPlan | None,
        *,
        actor: str,
        trigger: str = "manual",
        resume_run_id: int | None = None,
        queued_wait: float | None = None,
        continue_run_id: int | None = None,
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
            if self._remote_lock is not None:
                await self._remote_lock()  # before anything is journaled or merged
            if continue_run_id is not None:
                resume_run_id = self._continued_run(continue_run_id, actor=actor, trigger=trigger)
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
            # Hosts an older run waits for (taken over once merged); a waiting rollback refuses before anything.
            waiting = [] if plan.merge_only else waiting_runs(self.store, plan)
            run_id = self.store.create_run(
                "converge" if plan.converge else "deploy", actor=actor, trigger=trigger,
                pr=None if plan.converge else plan.pr_number, head_sha=plan.head_sha, plan=plan.to_dict(),
            )
            return _Run(run_id, plan, JournalState(), resumed=False, actor=actor, takeover=waiting)
        stored = self.store.get_run(resume_run_id)  # StateError when unknown
        if stored.kind not in ("deploy", "converge"):
            raise StateError(f"run #{resume_run_id} is a {stored.kind}, not a deploy")
        if stored.finished:
            raise StateError(f"run #{resume_run_id} is already {stored.status}; nothing to resume")
        journal = JournalState.from_run(stored)
        stored_plan = DeployPlan.from_dict(stored.plan)
        # A run interrupted before its merge takes over when it merges; past it, it did already.
        waiting = ([] if journal.merge_sha or stored_plan.converge or stored_plan.merge_only
                   else waiting_runs(self.store, stored_plan, exclude=resume_run_id))
        self.store.record(resume_run_id, "resumed", actor=actor, trigger=trigger)
        r = _Run(resume_run_id, stored_plan, journal, resumed=True, actor=actor, merge_sha=journal.merge_sha,
                 takeover=waiting)
        r.outcomes.update(journal.finished)
        r.journaled.update(journal.finished)
        r.gen_before.update(journal.generation_before)
        return r

    def _continued_run(self, run_id: int, *, actor: str, trigger: str) -> int:
        """Journal the run that continues ``run_id`` past its unverified canaries; its id (to resume)."""
        stored, accepted = to_continue(self.store, run_id)
        hosts = [o.host for o in accepted]
        unproven = {o.host: o.detail or "not verified" for o in accepted}
        canaries = {e.host for e in DeployPlan.from_dict(stored.plan).waves[0]}
        new_id = self.store.create_run(stored.kind, actor=actor, trigger=trigger, pr=stored.pr,
                                       head_sha=stored.head_sha, plan=stored.plan)
        for step in stored.steps or ():  # what is done already: the merge, the PR's context, the canaries
            if step.step in ("context", "merged") or (step.host in canaries and step.step != "resumed"):
                data = dict(step.data)
                if step.step == "merged":
                    data["note"] = f"in run #{run_id}"
                self.store.record(new_id, step.step, **data)
        self.store.record(new_id, "canary_accepted", from_run=run_id, actor=actor, hosts=hosts, unproven=unproven)
        try:
            self.store.audit("continue_unverified", actor=actor, github_login=self.github_login, pr=stored.pr,
                             details={"run": new_id, "from_run": run_id, "hosts": hosts, "unproven": unproven})
        except (StateError, OSError) as exc:  # the journal has the decision; never stop a deploy for this
            log.warning("could not write the audit entry continue_unverified: %s", exc)
        return new_id

    async def _execute(self, r: _Run, queued_wait: float | None) -> RunResult:
        plan = r.plan
        await self._emit(RunStarted(run_id=r.run_id, pr_number=plan.pr_number, head_sha=plan.head_sha,
                                    hosts=plan.hosts, resumed=r.resumed, subject=plan.subject if plan.converge else ""))
        try:
            if plan.converge:
                r.merge_sha = plan.head_sha  # no merge: the target is the branch head the plan was made at
            elif not r.merge_sha:
                await self._merge(r)
            if r.takeover:  # the target is known: the branch head, or the merge (made after the older runs')
                target = (f"{plan.branch or 'the default branch'} {plan.head_sha[:7]}" if plan.converge
                          else f"merge {r.merge_sha[:7]}")
                take_over(self.store, r.takeover, r.run_id, plan, target, r.actor)
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
            merged = (f" (PR #{r.plan.pr_number} was merged as {r.merge_sha[:7]})"
                      if r.merge_sha and not r.plan.converge else "")
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
            bad = [f"{h} {o.outcome.value}" for h in canary_hosts if (o := r.outcomes.get(h)) is not None
                   and o.outcome not in (Outcome.OK, Outcome.HELD)]
            if r.failure or bad:
                r.failure = f"canary {', '.join(bad) or 'deploy failed'}: nothing else is deployed"
                return
            verified = [h for h in canary_hosts if (o := r.outcomes.get(h)) is not None and o.outcome is Outcome.OK]
            await self._canary_gate(r, verified)
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
        minutes = f"{r.plan.canary_wait_minutes:g} min"
        for host in hosts:
            h = self.fleet.host(host)
            red = [p for p in health_problems(h, self.info) if p != "offline"]
            gone = [] if red else still_verified_problems(h, r.merge_sha, self.info)
            if not red and not gone:
                continue
            before = r.outcomes.get(host) or HostOutcome(host, Outcome.OK)
            problems.append(f"{host}: {', '.join(red or gone)}")
            if red:  # System or Tests red: a proven failure
                outcome = replace(before, outcome=Outcome.FAILED, phase="health", verified=False, proven=True,
                                  detail=f"unhealthy {minutes} after the switch: {', '.join(red)}",
                                  last_lines=self._excerpt(r, host))
            else:
                outcome = replace(before, outcome=Outcome.UNVERIFIED, phase="health", verified=False,
                                  detail=f"no longer verified {minutes} after the switch: {', '.join(gone)}")
            await self._host_done(r, outcome)
        passed = not problems
        self.store.record(r.run_id, "canary_gate", passed=passed, problems=problems)
        await self._emit(CanaryGate(run_id=r.run_id, passed=passed, problems=tuple(problems)))
        if not passed and not r.failure:
            r.failure = "canary gate failed: nothing else is deployed"

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
            cancelled = self._cancel.is_set()
            if cancelled and not r.cancel_reported:
                await self._report_cancel(r)
            for host in list(waiting if not cancelled else ()):
                if self._held_now(host):
                    waiting.remove(host)
                    await self._host_done(r, self._held(host, "queued"))
                    continue
                h = self.fleet.host(host)
                if h is not None and h.online:
                    waiting.remove(host)
                    pending.append(host)
                    await self._emit(HostProgress(run_id=r.run_id, host=host, phase="queue", message="back online"))
            while pending and not r.failure and not cancelled and len(r.running) < max(1, r.plan.max_parallel):
                if not await self._gate_open():
                    if not paused:
                        paused = True
                        reason = self.describe_gate()
                        self.store.record(r.run_id, "paused", reason=reason)
                        await self._emit(Paused(run_id=r.run_id, reason=reason))
                    break
                if paused:
                    paused = False
                    self.store.record(r.run_id, "resumed", reason="host steps may start again")
                    await self._emit(Unpaused(run_id=r.run_id))
                host = pending.pop(0)
                if self._held_now(host) and host not in r.journal.in_flight:
                    await self._host_done(r, self._held(host, "not started"))
                    continue
                r.running[host] = asyncio.create_task(self._host_task(r, host), name=f"deploy {host}")
            waiting_done = (
                not waiting or bool(r.failure) or cancelled or self._stop_waiting.is_set()
                or (deadline is not None and loop.time() >= deadline)
            )
            if not r.running and (not pending or r.failure or cancelled) and waiting_done:
                break
            await self._wait_for_change(r, waiting, paused, deadline)
            for host, task in list(r.running.items()):
                if task.done():
                    del r.running[host]
                    outcome = task.result()
                    if host in r.released and outcome.outcome in (Outcome.FAILED, Outcome.UNKNOWN):
                        phase = outcome.phase or r.phase.get(host, "")
                        if self.info.stops_commands:
                            outcome = replace(outcome, outcome=Outcome.CANCELLED, detail=(
                                f"stopped on {host} after the cancel; the {phase} did not finish ({outcome.detail})"))
                        else:
                            outcome = replace(outcome, outcome=Outcome.CANCELLED, detail=(
                                f"released in the dashboard after the cancel (timeout-action ignore); the {phase} "
                                f"may still be running on {host} ({outcome.detail})"))
                            r.still_running.append(host)
                    if host in r.deferred and outcome.outcome is Outcome.QUEUED:
                        r.deferred.discard(host)  # pulled; its switch waits for the gate
                        pending.insert(0, host)
                        await self._emit(HostQueued(run_id=r.run_id, host=host, reason=outcome.detail))
                        continue
                    if outcome.outcome is Outcome.QUEUED and self._cancel.is_set():
                        outcome = self._not_started(r, host, queued=True)
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
        # Watch queued hosts only while they are still waited for: once the deadline has passed
        # (``queued_wait = 0``) a zero-time watcher would finish at once and make this loop spin.
        if (waiting and not r.failure and not self._cancel.is_set() and not self._stop_waiting.is_set()
                and (deadline is None or loop.time() < deadline)):
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

    def _held_now(self, host: str) -> bool:
        """Whether ``host`` is held right now (the shared state file: TUI, CLI or another process)."""
        if self.is_held is None:
            return False
        try:
            return bool(self.is_held(host))
        except Exception:  # an unreadable state file must not stop the deploy
            log.exception("could not check whether %s is held", host)
            return False

    @staticmethod
    def _held(host: str, where: str) -> HostOutcome:
        return HostOutcome(host, Outcome.HELD, "", f"held during the run ({where}); left untouched")

    def _not_started(self, r: _Run, host: str, *, queued: bool) -> HostOutcome:
        if self._held_now(host):
            return self._held(host, "not started")
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
        self.store.record(r.run_id, "host_finished", host=outcome.host, **outcome.journal_data())
        r.journaled.add(outcome.host)

    async def _host_done(self, r: _Run, outcome: HostOutcome) -> None:
        r.outcomes[outcome.host] = outcome
        self._journal_outcome(r, outcome)
        await self._emit(HostFinished(run_id=r.run_id, host=outcome.host, outcome=outcome))
        if outcome.outcome is Outcome.UNKNOWN and not r.failure:
            r.failure = f"deploy stopped: the outcome on {outcome.host} is unknown"
        if outcome.outcome is Outcome.FAILED:
            if not r.failure:
                r.failure = f"deploy stopped after {outcome.host} failed"
            if outcome.proven and self.on_failure is not None:
                try:
                    await _maybe_await(self.on_failure(outcome))
                except Exception:
                    log.exception("on_failure hook failed for %s", outcome.host)

    async def _report_cancel(self, r: _Run) -> None:
        """Journal and announce the cancel: which hosts are still running, and that they go on."""
        running = sorted(r.running)
        self.store.record(r.run_id, "cancel_requested", running=running, release=self._release_on_cancel)
        why = ("until it ends or is stopped" if self.info.stops_commands
               else "(the dashboard cannot stop a running command, contract §3.7)")
        notes = [f"{host}: its {r.phase.get(host, 'deploy')} keeps running {why}; following it to its outcome"
                 for host in running]
        await self._emit(CancelRequested(run_id=r.run_id, still_running=tuple(running), notes=tuple(notes)))

    async def _release(self, r: _Run, host: str, op: str, status: str) -> None:
        """``timeout-action ignore`` for a running command after ``cancel(release_hosts=True)``; once per host."""
        r.release_tried.add(host)
        if status == "AWAITING_RECONNECT":
            await self._emit(HostProgress(run_id=r.run_id, host=host, phase=op, message=(
                "not released: the switch has finished; the dashboard completes it when the agent reconnects")))
            return
        try:
            await self.backend.timeout_action(host, "ignore")
        except DashboardError as exc:
            message = f"release failed ({exc}); following the {op} to its outcome"
        else:
            r.released.add(host)
            self.store.record(r.run_id, "host_released", host=host, phase=op)
            message = (f"stopping the {op} on the host" if self.info.stops_commands
                       else f"released in the dashboard (timeout-action ignore); the {op} keeps running on the host")
        await self._emit(HostProgress(run_id=r.run_id, host=host, phase=op, message=message))

    # --- one host -----------------------------------------------------------------

    async def _host_task(self, r: _Run, host: str) -> HostOutcome:
        try:
            return await self._deploy_host(r, host)
        except asyncio.CancelledError:
            raise
        except NfuError as exc:  # no proof of what happened on the host: never a rollback
            return self._unknown(r, host, r.phase.get(host, "pull"), f"{exc.title}: {exc}")
        except Exception as exc:  # never let one host's bug kill the run silently
            log.exception("deploying %s failed unexpectedly", host)
            return self._unknown(r, host, r.phase.get(host, "pull"), f"internal error: {exc!r}")

    def _excerpt(self, r: _Run, host: str) -> tuple[str, ...]:
        """The last lines of the command followed last on ``host`` (all its lines if none was)."""
        command_id = r.command.get(host)
        return inert_lines(self.fleet.output_lines(host, command_id) if command_id else self.fleet.output_lines(host))

    def _failed(self, r: _Run, host: str, phase: str, detail: str, *, proven: bool = False,
                **facts: Any) -> HostOutcome:
        return HostOutcome(host, Outcome.FAILED, phase, detail, self._excerpt(r, host), proven=proven, **facts)

    def _unknown(self, r: _Run, host: str, phase: str, detail: str, **facts: Any) -> HostOutcome:
        return HostOutcome(host, Outcome.UNKNOWN, phase, detail, self._excerpt(r, host), **facts)

    def _from_evidence(self, r: _Run, host: str, phase: str, ev: Evidence, **facts: Any) -> HostOutcome:
        """The outcome of a command that did not succeed: failed (proven or not) or unknown."""
        if ev.verdict == "unknown":
            return self._unknown(r, host, phase, ev.detail, **facts)
        return self._failed(r, host, phase, ev.detail, proven=ev.proven, **facts)

    def _cancelled_before(self, host: str, phase: str, done: str = "") -> HostOutcome:
        """A host whose next phase is not started because the deploy was cancelled."""
        text = f"{done}; " if done else ""
        return HostOutcome(host, Outcome.CANCELLED, phase, f"{text}the {phase} was not started: the deploy was cancelled")

    async def _deploy_host(self, r: _Run, host: str) -> HostOutcome:
        resume = r.journal.in_flight.pop(host, None)
        pulled = host in r.journal.pulled
        r.journal.pulled.discard(host)
        before = self.fleet.host(host) or Host(id=host)
        gen_before = r.gen_before.setdefault(host, before.generation)
        had_tests = before.tests.state in (CompartmentState.OK, CompartmentState.ERROR)
        switched = r.journal.switched.pop(host, None)
        if switched is not None:  # the switch finished before the interruption: verify it
            status, since, detail, had_tests = switched
            ev = Evidence("ok", detail, status, since=parse_time(since))
            return await self._verify(r, host, ev, gen_before, had_tests)
        pull_note = ""
        if resume is not None and resume[0] == "switch":
            outcome = await self._resume_switch(r, host, resume, gen_before, had_tests)
            if outcome is not None:
                return outcome
            pulled = True  # the pull finished before the switch was started
        if not pulled:
            if self._cancel.is_set():
                return self._cancelled_before(host, "pull")
            resumed_pull = resume if resume is not None and resume[0] == "pull" else None
            result = await self._pull(r, host, resumed_pull, gen_before)
            if isinstance(result, HostOutcome):
                return result
            pull_note = result
        if self._cancel.is_set():
            return self._cancelled_before(host, "switch", "pulled")
        if self._held_now(host):
            return HostOutcome(host, Outcome.HELD, "switch", "held during the run after its pull: not switched")
        if not await self._gate_open():  # no host step starts while the gate is closed, a switch neither
            r.journal.pulled.add(host)
            r.deferred.add(host)
            reason = self.describe_gate()
            self.store.record(r.run_id, "switch_deferred", host=host, reason=reason)
            return HostOutcome(host, Outcome.QUEUED, "switch", f"pulled; its switch waits: {reason}")
        h = self.fleet.host(host) or Host(id=host)
        force = switch_needs_force(h.generation, gen_before, r.merge_sha) or pulled
        outcome = await self._switch(r, host, force, gen_before, had_tests)
        if pull_note and outcome.outcome in (Outcome.OK, Outcome.UNVERIFIED):
            outcome = replace(outcome, detail="; ".join(filter(None, [pull_note, outcome.detail])))
        return outcome

    async def _start(self, r: _Run, host: str, op: str, force: bool) -> DispatchDecision:
        r.phase[host] = op
        # The generation before the deploy, for resume: by then a mirror host's pulled generation is not the
        # merge commit, and only "it moved" (with Git and Lock ok) says it reached the target.
        self.store.record(r.run_id, "host_started", host=host, phase=op, force=force,
                          generation_before=r.gen_before.get(host, ""))
        await self._emit(HostStarted(run_id=r.run_id, host=host, phase=op, force=force))
        decision = await self._dispatch(r, host, op, force)
        if decision.action == "retry":  # send_failed (§3.4, §6.2): nothing ran; once more, unless it went offline
            await self._emit(HostProgress(run_id=r.run_id, host=host, phase=op, message=(
                f"{decision.message}; trying once more in {self.timeouts.send_retry:g} s")))
            if await self.fleet.wait_until(lambda: not ((x := self.fleet.host(host)) and x.online),
                                           self.timeouts.send_retry):
                return DispatchDecision("offline", message=f"went offline ({decision.message})", code=decision.code)
            decision = await self._dispatch(r, host, op, force)
            if decision.action == "retry":
                decision = DispatchDecision("fail", code=decision.code, message=(
                    f"{decision.message}, twice, although it lists the host online; check the agent's connection"))
        if decision.action == "started":
            self.store.record(r.run_id, "command_dispatched", host=host, phase=op, command_id=decision.command_id)
        return decision

    async def _dispatch(self, r: _Run, host: str, op: str, force: bool) -> DispatchDecision:
        """One dispatch; an error answer is checked against the dashboard before anything is concluded."""
        before = {c.id for c in self.fleet.commands_for(host)}
        began = self._clock()
        try:
            results = await self.backend.dispatch(op, [host], force=force)
        except DashboardError as exc:
            status = getattr(exc, "status", None)
            if status is not None and 400 <= status < 500:  # refused before anything ran (§3.4)
                return DispatchDecision("fail", message=f"{exc.title}: {exc}")
            # The dispatch may have happened (its deltas come before the answer, §3.4): look for it.
            found = await self._find_dispatched(r, host, op, before, began, f"{exc.title}: {exc}")
            if found is None:
                return DispatchDecision("unknown", message=(
                    f"{exc.title}: {exc}; {self.info.noun} shows no trace of a {op} on {host} (no command, no "
                    "event): it probably never ran; verify the host"))
            await self._emit(HostProgress(run_id=r.run_id, host=host, phase=op, message=(
                f"the dispatch answered with an error ({exc}), but {self.info.noun} has the {op} "
                f"({found.status.lower()}{'' if found.id.startswith('events:') else ', ' + found.id})")))
            if found.status.upper() == "BLOCKED":
                return DispatchDecision("fail", message=f"{op} blocked ({found.error or 'no message'})")
            return DispatchDecision("started", command_id=found.id, found=found)
        mine = next((x for x in results if getattr(x, "host_id", host) == host), None)
        return interpret_dispatch(mine, op, host, self.info)

    def _new_command(self, host: str, op: str, before: set[str]) -> Command | None:
        return next((c for c in self.fleet.commands_for(host) if c.op == op and c.id not in before), None)

    async def _find_dispatched(self, r: _Run, host: str, op: str, before: set[str], began: datetime,
                               error: str) -> Command | None:
        """The ``op`` command a dispatch without an answer started on ``host`` (running or already
        finished), from the stream, ``/api/command-states`` or the host's events; None without a trace.
        Shown as "outcome unknown — checking" meanwhile.

        The lifecycle logs "Validating <op>" before it answers (§4.7), so once the host's event log
        has been read twice without a trace of it the dispatch never reached the dashboard; while the
        dashboard cannot be asked, the search goes on for ``Timeouts.evidence`` s.
        """
        await self._emit(HostProgress(run_id=r.run_id, host=host, phase=op, message=(
            f"outcome unknown — checking: the {op} dispatch got no answer ({error}); "
            f"looking for it on {self.info.noun}")))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.evidence
        clean_reads = 0  # event logs read without a trace of the dispatch
        while True:
            found = self._new_command(host, op, before)
            if found is not None:
                return found
            with contextlib.suppress(DashboardError):
                entry = (await self.backend.command_states()).get(host)
                if entry is not None and entry.op == op and entry.id not in before:
                    return entry
            with contextlib.suppress(DashboardError):
                from_events = command_from_events(await self.backend.events(50, host), host, op, began)
                if from_events is not None:
                    # Prefer the stream's record (it has the id) if it arrived meanwhile.
                    return self._new_command(host, op, before) or from_events
                clean_reads += 1
            remaining = deadline - loop.time()
            if remaining <= 0 or clean_reads >= 2:
                return None
            await self.fleet.wait_until(lambda: self._new_command(host, op, before) is not None,
                                        min(remaining, self.timeouts.evidence_poll))

    def _offline(self, r: _Run, host: str, phase: str, message: str) -> HostOutcome:
        if r.plan.strategy == "all":
            self.store.record(r.run_id, "host_requeued", host=host, reason=message)
            return HostOutcome(host, Outcome.QUEUED, phase, message)
        return HostOutcome(host, Outcome.SKIPPED, phase, f"went offline before {phase}: {message}")

    async def _await_command(self, r: _Run, host: str, op: str, command_id: str, *,
                             known: Command | None = None, gen_before: str = "") -> Evidence:
        """Follow ``command_id`` to its end; the policy is in the module docstring.

        ``known`` is the command as command-states (or the host's events) gave it (used until
        the stream has it).
        """
        r.command[host] = command_id
        loop = asyncio.get_running_loop()
        guard = {"pull": self.timeouts.pull, "switch": self.timeouts.switch}.get(op, self.timeouts.test)
        began = loop.time()
        deadline = began + guard
        dispatched_at = self._clock()
        since: datetime | None = None  # when it started, by the dashboard's clock
        shown = ""  # the last status announced
        next_lookup = loop.time()  # earliest next command-states look-up while the host looks idle
        lost = False
        lost_note = ""
        def found(ev: Evidence) -> Evidence:  # without the dashboard's start time: our dispatch time
            return ev if ev.since is not None else replace(ev, since=since or dispatched_at)

        while True:
            cmd = self.fleet.command(command_id) or known
            if cmd is not None and cmd.terminal:
                return found(evidence_of(cmd))
            now = loop.time()
            status = cmd.status.upper() if cmd is not None else ""
            if cmd is not None and since is None:
                since = parse_time(cmd.started_at) or parse_time(cmd.created_at)
            if status and status != shown:
                note = command_status_note(op, status)
                if status == "EXECUTING" and shown in ("RUNNING_WARNING", "TIMEOUT_PENDING"):
                    deadline = max(deadline, now + guard)
                    note = "running again: the dashboard gave it more time (timeout-action wait)"
                if status == "AWAITING_RECONNECT":
                    deadline = max(deadline, now + min(guard, RECONNECT_GRACE))
                shown = status
                if note:
                    await self._emit(HostProgress(run_id=r.run_id, host=host, phase=op, message=note))
            if (self._cancel.is_set() and self._release_on_cancel and host not in r.release_tried
                    and status in _RUNNING_STATES):
                await self._release(r, host, op, status)
            h = self.fleet.host(host)
            # A known, running command on a host that looks idle: finished a moment ago, or forgotten.
            if cmd is not None and not lost and h is not None and not h.pending_command and now >= next_lookup:
                next_lookup = now + self.timeouts.lost_check
                tracked = await self._backend_tracks(host, command_id)
                if isinstance(tracked, Command):
                    return found(evidence_of(tracked))
                lost = not tracked
            if lost:
                ev = judge_lost_command(op, self.fleet.host(host), since or dispatched_at, r.merge_sha, gen_before,
                                        self.info)
                if ev.verdict != "wait":
                    return ev
                if ev.detail != lost_note:
                    lost_note = ev.detail
                    await self._emit(HostProgress(run_id=r.run_id, host=host, phase=op, message=ev.detail))
            if now >= deadline:
                minutes = round((now - began) / 60, 1)
                if lost:
                    return Evidence("unknown",
                                    f"{lost_note}; still not finished after {minutes:g} min; verify the host")
                if status != "RUNNING_WARNING":
                    return Evidence("unknown", unfinished_detail(op, status, minutes,
                                                                 h.pending_command if h is not None else "",
                                                                 self.info))
                deadline = now + guard  # its hard timeout has not passed on the dashboard: keep waiting
            await self._wait_for_news(command_id, host, max(0.0, min(1.0, deadline - loop.time())))

    async def _wait_for_news(self, command_id: str, host: str, timeout: float) -> None:
        """Until the command or its host changes in the fleet view (or ``timeout`` s)."""
        seen = (self.fleet.command(command_id), self.fleet.host(host))
        await self.fleet.wait_until(lambda: (self.fleet.command(command_id), self.fleet.host(host)) != seen, timeout)

    async def _backend_tracks(self, host: str, command_id: str) -> Command | bool:
        """Whether the dashboard still tracks a command whose host looks idle.

        The command itself when it turned out finished (a terminal leftover in
        command-states, or its finish reaching the stream), True while command-states
        holds it running (or cannot be asked), False when it is forgotten.
        """
        try:
            entry = (await self.backend.command_states()).get(host)
        except DashboardError as exc:
            log.info("command-states unavailable while following %s: %s", command_id, exc)
            return True
        if entry is not None and entry.id == command_id:
            return entry if entry.terminal else True

        def finished() -> bool:
            cmd = self.fleet.command(command_id)
            return cmd is not None and cmd.terminal

        # Not held: finished a moment ago (its deltas may still be on the way), or forgotten.
        if await self.fleet.wait_until(finished, self.timeouts.resume_lookup):
            return self.fleet.command(command_id) or False
        return False

    async def _pull(self, r: _Run, host: str, resume: tuple[str, str, str] | None, gen_before: str) -> HostOutcome | str:
        """Pull (forced: right after a merge version.json may still be stale, §8 #42). Returns a note or an outcome."""
        known = await self._known_command(resume[1], host) if resume is not None and resume[1] else None
        if known is None:
            decision = await self._start(r, host, "pull", True)
            if decision.action == "offline":
                return self._offline(r, host, "pull", decision.message)
            if decision.action == "unknown":
                return self._unknown(r, host, "pull", decision.message)
            if decision.action != "started":
                detail = decision.message
                if decision.action == "current":
                    detail = f"{self.info.noun} refused the forced pull as already current ({decision.message})"
                return self._failed(r, host, "pull", detail)
            command_id, known = decision.command_id, decision.found
        else:
            command_id = known.id
            r.phase[host] = "pull"
            await self._emit(HostProgress(run_id=r.run_id, host=host, phase="pull", message="following the interrupted pull"))
        ev = await self._await_command(r, host, "pull", command_id, known=known, gen_before=gen_before)
        if not ev.ok:
            await self.fleet.settle_output(host, command_id)
            return self._from_evidence(r, host, "pull", ev)
        gen = (self.fleet.host(host) or Host(id=host)).generation or "(unknown)"
        moved = bool(gen_before) and gen not in ("(unknown)", gen_before)
        if ev.status == "PARTIAL" and not moved and not reached_target(self.fleet.host(host), r.merge_sha, gen_before):
            # "Lock status not ok after pull" is fine while version.json lags, not when the host did not get there.
            # A generation that moved but is not the merge commit is a mirror's (the real harness): whether it is
            # the merge is proven after the switch, once version.json caught up (verification).
            return self._failed(r, host, "pull", f"pull {ev.detail}, and the host's generation {gen} is not the "
                                                 f"merge commit {r.merge_sha[:7]}", reached=False)
        self.store.record(r.run_id, "pull_done", host=host, detail=ev.detail)
        await self._emit(HostProgress(run_id=r.run_id, host=host, phase="pull",
                                      message=f"done{' (' + ev.detail + ')' if ev.detail else ''}"))
        return f"pull {ev.detail}" if ev.detail else ""

    async def _switch(self, r: _Run, host: str, force: bool, gen_before: str, had_tests: bool) -> HostOutcome:
        decision = await self._start(r, host, "switch", force)
        if decision.code == "lock_outdated" and not force:
            decision = await self._start(r, host, "switch", True)  # version.json lags the merge (§8 #42)
        if decision.action == "current":
            ev = Evidence("ok", f"already current ({decision.message})", "already current")
            return await self._verify(r, host, ev, gen_before, had_tests)
        if decision.action == "offline":
            return self._offline(r, host, "switch", decision.message)
        if decision.action == "unknown":
            return self._unknown(r, host, "switch", decision.message)
        if decision.action != "started":
            return self._failed(r, host, "switch", decision.message)
        return await self._follow_switch(r, host, decision.command_id, decision.found, gen_before, had_tests)

    async def _follow_switch(self, r: _Run, host: str, command_id: str, known: Command | None, gen_before: str,
                             had_tests: bool) -> HostOutcome:
        ev = await self._await_command(r, host, "switch", command_id, known=known)
        if not ev.ok:
            await self.fleet.settle_output(host, command_id)
            return self._from_evidence(r, host, "switch", ev, executed=ev.status)
        self.store.record(r.run_id, "switch_done", host=host, executed=ev.status, detail=ev.detail,
                          since=(ev.since or self._clock()).isoformat(), tests=had_tests)
        return await self._verify(r, host, ev, gen_before, had_tests)

    async def _verify(self, r: _Run, host: str, ev: Evidence, gen_before: str, had_tests: bool) -> HostOutcome:
        """After a switch: wait (``verify_minutes``) for the dashboard to report System ok for the target
        generation, then run the host's tests where ``post_switch_tests`` says so."""
        r.phase[host] = "verify"
        since = ev.since
        executed = ev.status
        target = r.merge_sha
        minutes = self.config.flake_updates.verify_minutes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + minutes * 60.0
        shown = ""
        refreshed: Evidence | None = None  # the refresh-system we sent, once sent
        while True:
            h = self.fleet.host(host)
            reached = reached_target(h, target, gen_before, since=since)
            verdict = system_verdict(h, since) if since is not None else (
                True if h is not None and h.system.state is CompartmentState.OK else None)
            if verdict is False and refreshed is None:
                return self._failed(r, host, "verify", f"System error after the switch: {h.system.message}",
                                    proven=True, executed=executed, reached=reached, verified=False)
            if reached and verdict:
                break
            if reached and refreshed is None and system_ok_behind_lagging_lock(h, since):
                # The agent reported System ok since the switch; only the lock lag masked it, and that is over.
                break
            if refreshed is not None and (verdict is False or refreshed.verdict == "failed"):
                # Our own check failed (e.g. "Cannot read current system"): the switch succeeded and the
                # host reached the target; that the agent could not inspect it proves nothing either way.
                said = h.system.message if verdict is False and h is not None else refreshed.detail
                return HostOutcome(host, Outcome.UNVERIFIED, "verify", (
                    f"switched ({ev.detail or executed}) and reached {target[:7]}, but the agent could not check "
                    f"the running system (refresh-system: {said or 'no result'}); verify the host manually"),
                    executed=executed, reached=reached, verified=False)
            if (reached and refreshed is None and h is not None and h.online
                    and not h.busy
                    and h.git.state is CompartmentState.OK and h.lock.state is CompartmentState.OK
                    and h.system.state is CompartmentState.OUTDATED):
                # version.json has caught up, but System stays outdated, and not as the mask of an ok
                # reported since the switch (above): ask the agent to check it (refresh-system).
                refreshed = await self._refresh_system(r, host)
                continue
            why = unverified_reason(h, target, since, self.info)
            if loop.time() >= deadline:
                if reached is False:
                    return self._failed(r, host, "verify", f"switched, but the host did not reach {target[:7]}: {why}",
                                        executed=executed, reached=False, verified=False)
                return HostOutcome(host, Outcome.UNVERIFIED, "verify", (
                    f"switched ({ev.detail or executed}), but {self.info.noun} did not confirm it within "
                    f"{minutes:g} min: "
                    f"{why}"), executed=executed, reached=reached, verified=False)
            if why != shown:
                shown = why
                await self._emit(HostProgress(run_id=r.run_id, host=host, phase="verify", message=(
                    f"waiting up to {minutes:g} min for {self.info.noun} to report System ok for "
                    f"{target[:7]} ({why})")))
            await self.fleet.wait_until(lambda seen=h: self.fleet.host(host) != seen,
                                        max(0.0, min(30.0, deadline - loop.time())))
        mode = self.config.post_switch_tests(host)
        verified = f"verified: System ok ({h.system.message})" if h is not None else ""
        if h is not None and h.system.state is CompartmentState.OUTDATED:
            verified = (f"verified: System ok since the switch (stored as {h.system.message!r} while version.json "
                        "lagged; Lock is ok now)")
        note = "; ".join(filter(None, [ev.detail, verified]))
        if mode == "never" or (mode == "auto" and not had_tests):
            return HostOutcome(host, Outcome.OK, "switch", note, executed=executed, reached=True, verified=True)
        return await self._run_tests(r, host, executed, note)

    async def _refresh_system(self, r: _Run, host: str) -> Evidence:
        """The dashboard's ``refresh-system`` op (``nix build --dry-run`` on the host, §5.4): the agent
        reports System ok "System is current" when the running system is the checkout's. Returns what
        the command ended with (a System error it provokes is no proof against the switch)."""
        await self._emit(HostProgress(run_id=r.run_id, host=host, phase="verify", message=(
            "Git and Lock are ok now, but System still shows the value stored while version.json lagged; "
            "asking the agent to check it (refresh-system)")))
        decision = await self._start(r, host, "refresh-system", False)
        ev = Evidence("unknown", decision.message)  # not started: keep waiting for the agent's own report
        if decision.action == "started":
            ev = await self._await_command(r, host, "refresh-system", decision.command_id, known=decision.found)
        r.phase[host] = "verify"
        return ev

    async def _run_tests(self, r: _Run, host: str, executed: str, note: str) -> HostOutcome:
        """The dashboard's ``test`` op after a verified switch: failed tests are a (proven) failure of the host."""
        facts: dict[str, Any] = {"executed": executed, "reached": True}
        decision = await self._start(r, host, "test", False)
        if decision.action == "unknown":
            return HostOutcome(host, Outcome.UNVERIFIED, "test", f"{note}; tests: {decision.message}",
                               verified=False, **facts)
        if decision.action != "started":
            return HostOutcome(host, Outcome.UNVERIFIED, "test",
                               f"{note}; the tests could not be started: {decision.message}", verified=False, **facts)
        ev = await self._await_command(r, host, "test", decision.command_id, known=decision.found)
        if ev.ok:
            return HostOutcome(host, Outcome.OK, "test", f"{note}; tests passed", verified=True, **facts)
        if ev.verdict == "failed" and ev.proven:
            return self._failed(r, host, "test", f"tests failed: {ev.detail}", proven=True, verified=False, **facts)
        return HostOutcome(host, Outcome.UNVERIFIED, "test", f"{note}; tests: {ev.detail}", verified=False, **facts)

    # --- resume -------------------------------------------------------------------

    async def _known_command(self, command_id: str, host: str) -> Command | None:
        """The journaled command as the dashboard knows it now (command-states or the stream), else None."""
        try:
            states = await self.backend.command_states()
        except DashboardError:
            states = {}
        active = states.get(host)
        if active is not None and active.id == command_id:
            return active  # running, or a finished leftover (§3.6): either way, its state now
        await self.fleet.wait_until(lambda: self.fleet.command(command_id) is not None, self.timeouts.resume_lookup)
        return self.fleet.command(command_id)

    async def _resume_switch(self, r: _Run, host: str, resume: tuple[str, str, str], gen_before: str,
                             had_tests: bool) -> HostOutcome | None:
        """Settle a switch that was in flight when the previous process died.

        Returns the outcome, or None when the switch certainly did not run (then the
        caller starts it again).
        """
        _, command_id, started_at = resume
        r.phase[host] = "switch"
        await self._emit(HostProgress(run_id=r.run_id, host=host, phase="switch", message="checking the interrupted switch"))
        known = await self._known_command(command_id, host) if command_id else None
        if known is not None:
            return await self._follow_switch(r, host, known.id, known, gen_before, had_tests)
        try:
            states = await self.backend.command_states()
        except DashboardError:
            states = {}
        active = states.get(host)
        if active is not None and active.op == "switch" and not active.terminal:
            self.store.record(r.run_id, "command_dispatched", host=host, phase="switch", command_id=active.id)
            return await self._follow_switch(r, host, active.id, active, gen_before, had_tests)
        h = self.fleet.host(host)
        if h is not None and h.pending_command == "switch":
            # Running, but we cannot name its command: wait until the host is idle, then judge by System.
            await self._emit(HostProgress(run_id=r.run_id, host=host, phase="switch",
                                          message=f"a switch is still running on {self.info.noun}; waiting for it"))
            if not await self.fleet.wait_until(lambda: not ((x := self.fleet.host(host)) and x.busy),
                                               self.timeouts.switch):
                return self._unknown(r, host, "switch",
                                     f"still busy with a switch after {self.timeouts.switch / 60:g} min")
            h = self.fleet.host(host)
        since = parse_time(started_at)
        verdict = system_verdict(h, since)
        if verdict is False:
            return self._failed(r, host, "switch", f"the interrupted switch failed: {h.system.message}", proven=True,
                                executed="ERROR")
        if verdict is True:
            ev = Evidence("ok", f"the interrupted switch completed ({h.system.message})", "SUCCESS", since=since)
            return await self._verify(r, host, ev, gen_before, had_tests)
        if command_id:
            return self._unknown(r, host, "switch", "the interrupted switch's outcome is unknown (its command is no "
                                                    f"longer known to {self.info.noun}); verify the host manually")
        return None  # never dispatched (or left no trace at all): start it

    # --- finishing ----------------------------------------------------------------

    def _final_status(self, r: _Run) -> tuple[RunStatus, str]:
        values = [o.outcome for o in r.outcomes.values()]
        if self._cancel.is_set():
            still = f"; still running on the host(s): {', '.join(r.still_running)}" if r.still_running else ""
            return RunStatus.CANCELLED, "cancelled" + still
        if Outcome.FAILED in values:
            return RunStatus.FAILED, r.failure or "a host failed"
        if Outcome.UNKNOWN in values:
            unknown = [h for h, o in r.outcomes.items() if o.outcome is Outcome.UNKNOWN]
            return RunStatus.UNKNOWN, (f"outcome unknown on {', '.join(unknown)}: the run stopped and nothing was "
                                       "rolled back; check the host(s)")
        if Outcome.UNVERIFIED in values:
            unverified = [h for h, o in r.outcomes.items() if o.outcome is Outcome.UNVERIFIED]
            return RunStatus.UNVERIFIED, (f"not verified on {', '.join(unverified)}"
                                          + (f"; {r.failure}" if r.failure else ""))
        if r.failure:
            return RunStatus.FAILED, r.failure
        if Outcome.QUEUED in values:
            waiting = [h for h, o in r.outcomes.items() if o.outcome is Outcome.QUEUED]
            return RunStatus.WAITING, f"waiting for {', '.join(waiting)} to come back online"
        if r.plan.merge_only:
            return RunStatus.SUCCEEDED, f"merged as {r.merge_sha[:7]}, not deployed (merge only)"
        return RunStatus.SUCCEEDED, ""

    async def _finish(self, r: _Run, status: RunStatus, message: str) -> RunResult:
        order = list(r.plan.hosts)
        outcomes = tuple(r.outcomes[h] for h in order if h in r.outcomes) + tuple(
            o for h, o in r.outcomes.items() if h not in order
        )
        result = RunResult(r.run_id, status, r.plan.pr_number, r.merge_sha, message, outcomes, tuple(r.still_running),
                           r.plan.subject if r.plan.converge else "")
        if status is RunStatus.WAITING:
            self.store.record(r.run_id, "waiting", hosts=result.hosts_with(Outcome.QUEUED))
        else:
            for outcome in outcomes:
                if outcome.host not in r.journaled:
                    self._journal_outcome(r, outcome)
            self.store.finish_run(r.run_id, _JOURNAL_STATUS[status], result.summary())
        self._audit(r, "converge" if r.plan.converge else "deploy", status=status.value, summary=result.summary(),
                    outcomes={o.host: o.outcome.value for o in outcomes})
        from nfu_tui.core.notify import pr_link

        note = notification_for(result, r.plan, pr_link(self.config.github.api_url, self.config.github.repo,
                                                        r.plan.pr_number),
                                automation_resumes=status is RunStatus.WAITING and self._resumed_when_back(r.run_id),
                                backend=self.info,
                                continuable=status is RunStatus.UNVERIFIED
                                and bool(continuable(self.store.get_run(r.run_id))))
        await self._emit(RunFinished(run_id=r.run_id, result=result, notification=note))
        if self.notifier is not None:
            try:
                await self.notifier.send(note)
            except Exception:  # the notifier promises not to raise; be safe anyway
                log.exception("webhook notification failed")
        return result

    def _resumed_when_back(self, run_id: int) -> bool:
        """Whether automation resumes this waiting run (its rule, from the journal: trigger, recovery)."""
        from nfu_tui.core.automation import run_info

        try:
            return run_info(self.store.get_run(run_id)).resumed_when_back
        except StateError:
            return False

    def _audit(self, r: _Run, action: str, **details: Any) -> None:
        try:
            self.store.audit(action, actor=r.actor, github_login=self.github_login, pr=r.plan.pr_number or None,
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
    RunStatus.UNKNOWN: "unknown",  # not a proven failure: nothing rolls back on it
    RunStatus.UNVERIFIED: "unverified",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.REFUSED: "failed",
}


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
    "Evidence",
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
    "command_from_events",
    "continuable",
    "continue_command",
    "continued_already",
    "evidence_of",
    "reached_target",
    "still_verified_problems",
    "system_ok_behind_lagging_lock",
    "to_continue",
    "unverified_reason",
    "command_status_note",
    "health_problems",
    "interpret_command",
    "interpret_dispatch",
    "judge_lost_command",
    "merge_refusal",
    "notification_for",
    "switch_needs_force",
    "system_verdict",
    "unfinished_detail",
]
