"""Full automation: detect → wait → require CI → wait for a window → merge → deploy → notify.

Two layers:

* **The decision** (pure): :func:`decide` maps a :class:`Situation` (the time, the
  open update PRs with their CI/mergeability, the configuration, the toggle, the
  maintenance windows and what the journal says was already done) to one
  :class:`Decision`: a state, the next action, when it is due, and a human line
  ("merging PR #42 in 37 min — waiting for CI", "PR #42 ready — next window Sat 02:00").
  The TUI renders :meth:`Decision.describe` in its header; ``nfu-tui auto`` logs it.
* **The runner** (:class:`AutomationRunner`): builds the situation from a
  :class:`~nfu_tui.core.service.FleetService`, sends the decision's notices once,
  and executes the action with the deploy engine (``trigger="auto"``, an automatic
  plan, the windows as ``may_start_host`` gate), rolling back on failure
  (:mod:`nfu_tui.core.rollback`).

Rules (the product owner's issue):

* The **delay** counts from the PR's ``updated_at`` (a force-push restarts it).
* The **newest** update PR wins; older ones are reported as superseded, once, never merged.
* **CI** must be green. A PR with no CI at all needs ``require_ci = false``. Red CI
  blocks and is notified once per (PR, head sha); a re-run that turns green unblocks.
* A PR that changes more than ``flake.lock``, a draft, a conflicting PR or one that
  GitHub reports ``blocked``/``behind`` is left for a human.
* Merges and host steps happen only **inside a maintenance window**, and a merge only
  when the window has **room** for a run: at least ``min_window_minutes``, or the
  longest of this fleet's recent straight-through deploys (:func:`needed_room`). When a
  window closes mid-run, no host step starts (not even the switch of a host whose pull
  finished: it waits, pulled); the run is suspended (journaled ``paused``, then
  ``suspended``), the pause is notified (next window, hosts left), the deploy lock is
  released, and the run is resumed in the next window. Rollbacks (``revert``/``rollback``
  runs and their redeploys) are recovery and ignore windows.
* Nothing is merged when no host qualifies for the automatic plan (all held or
  ``auto_update = false``) unless ``deploy_strategy = "none"`` (merge only).
* **Unfinished runs**: ``trigger = "auto"`` runs are resumed automatically, rollbacks
  first, then oldest first (interrupted ones at once or in the next window; runs that ended ``waiting``
  for offline hosts when one of those hosts is back online). Manual runs are left to
  the admin (the TUI or ``nfu-tui deploy --resume``) and reported once — except a rollback
  waiting for an offline host, which is finished when the host is back, whoever started
  it. While a rollback waits, nothing else is merged.
* While a revert PR opened by the ``revert-pr`` strategy is open, automation merges
  nothing else: the admin decides first.
* One deploy at a time: the runner holds the :class:`~nfu_tui.core.store.DeployLock`
  from the merge to the end of a rollback; when another process holds it the
  decision is ``busy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from nfu_tui.config import AutomationConfig
from nfu_tui.domain.windows import WindowSet
from nfu_tui.models import CIVerdict, Notification, UpdatePR

log = logging.getLogger(__name__)

RECOVERY_KINDS = ("revert", "rollback")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


# ================================================================== values


class AutoState(str, enum.Enum):
    """What automation is doing or waiting for."""

    DISABLED = "disabled"
    IDLE = "idle"  # nothing to do
    WAITING_DELAY = "waiting-delay"
    WAITING_CI = "waiting-ci"
    WAITING_WINDOW = "waiting-window"
    WAITING_FLEET = "waiting-fleet"  # the dashboard is not connected yet
    BLOCKED = "blocked"  # needs a human
    PAUSED = "paused"  # an automatic run waits for the next window
    BUSY = "busy"  # a deploy is running (here or in another process)
    READY = "ready"  # the action is due now


class Action(str, enum.Enum):
    NONE = "none"
    MERGE = "merge"  # merge the PR and deploy it
    RESUME = "resume"  # continue an unfinished run


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification to send once per (``key``, ``value``) (see :class:`~nfu_tui.core.state.AppState`)."""

    key: str
    value: str
    notification: Notification


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the decision needs to know about one journaled run (see :func:`run_info`)."""

    id: int
    kind: str
    pr: int | None
    head_sha: str
    merge_sha: str
    status: str
    trigger: str
    refused: str = ""  # the merge was refused for this reason (nothing merged)
    waiting: tuple[str, ...] = ()  # stopped waiting for these offline hosts (still unfinished)
    redeploy: bool = False  # the redeploy of a revert run
    revert_pr: int | None = None  # revert runs: the PR they opened
    strategy: str = ""  # revert runs: revert-commit | revert-pr

    @property
    def recovery(self) -> bool:
        """A rollback, a revert or a revert's redeploy: not gated by maintenance windows."""
        return self.kind in RECOVERY_KINDS or self.redeploy

    @property
    def resumed_when_back(self) -> bool:
        """Automation resumes it once its offline hosts are back: its own runs and every recovery run
        (a manual run waits for the admin)."""
        return self.trigger == "auto" or self.recovery

    @property
    def unfinished(self) -> bool:
        return self.status in ("running", "paused")

    @property
    def interrupted(self) -> bool:
        """Unfinished and not merely waiting for offline hosts (it died or was suspended)."""
        return self.unfinished and not self.waiting


def run_info(run: Any) -> RunInfo:
    """Summarise a :class:`~nfu_tui.core.store.Run` loaded with its steps."""
    refused = ""
    waiting: tuple[str, ...] = ()
    redeploy = False
    revert_pr: int | None = None
    for step in run.steps or ():
        data = step.data
        if step.step == "merge_refused":
            refused = str(data.get("reason", "")) or "refused"
        elif step.step == "waiting":
            waiting = tuple(str(h) for h in data.get("hosts") or ())
        elif step.step in ("resumed", "host_started"):
            waiting = ()
        elif step.step == "revert_redeploy":
            redeploy = True
        elif step.step == "revert_opened":
            revert_pr = int(data["revert_pr"])
    return RunInfo(
        id=run.id, kind=run.kind, pr=run.pr, head_sha=run.head_sha or "", merge_sha=run.merge_sha or "",
        status=run.status, trigger=run.trigger, refused=refused, waiting=waiting, redeploy=redeploy,
        revert_pr=revert_pr, strategy=str((run.plan or {}).get("strategy", "")),
    )


@dataclass(frozen=True)
class Situation:
    """Everything :func:`decide` looks at. ``runs``: recent runs, newest first."""

    now: datetime
    enabled: bool
    config: AutomationConfig
    windows: WindowSet
    prs: tuple[UpdatePR, ...] = ()
    runs: tuple[RunInfo, ...] = ()
    open_reverts: frozenset[int] = frozenset()  # revert PRs nfu-tui opened that are still open
    superseded_earlier: Mapping[int, str] = field(default_factory=dict)  # PR -> the newer PR it was reported
    # superseded by (from the notify-once marks): never merged automatically
    busy: str = ""  # non-empty: who is deploying right now
    fleet_ready: bool = True  # the dashboard's fleet state is known
    online: frozenset[str] = frozenset()  # hosts online now
    room: timedelta = timedelta(minutes=30)  # how much of an open window a new run needs (needed_room)
    deployable: bool = True  # an automatic plan has a host to deploy (or deploy_strategy = "none")
    build_failures: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # PR head sha -> hosts whose
    # preview build failed (preview_before_merge; from the preview cache)


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`. ``template`` may contain ``{in}``: the countdown to ``due``."""

    state: AutoState
    template: str
    action: Action = Action.NONE
    pr: int | None = None
    head_sha: str = ""
    run_id: int | None = None
    due: datetime | None = None  # when the next step is due (delay end, window start)
    wake_at: datetime | None = None  # when to look again at the latest (None: on the next change)
    window: str = ""  # "next window Sat 02:00" / "window open until 05:00" / "no maintenance window: …"
    notices: tuple[Notice, ...] = ()
    superseded: tuple[int, ...] = ()

    def describe(self, now: datetime) -> str:
        """The one-line status with a live countdown, e.g. ``merging PR #42 in 37 min — waiting for CI``."""
        if self.due is None:
            return self.template.replace("{in}", "now")
        return self.template.replace("{in}", countdown(self.due - now))

    def same_as(self, other: "Decision | None") -> bool:
        """Equal apart from the countdown (used to log a decision only when it changes)."""
        return other is not None and (self.state, self.template, self.action, self.pr, self.run_id, self.due) == (
            other.state, other.template, other.action, other.pr, other.run_id, other.due)


def countdown(delta: timedelta) -> str:
    """``"37 min"``, ``"2 h 05 min"``, ``"3 d 4 h"``, ``"<1 min"``."""
    minutes = int(delta.total_seconds() // 60)
    if delta.total_seconds() < 60:
        return "<1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def needed_room(durations: Iterable[timedelta], min_minutes: float) -> timedelta:
    """How much of a window a new run needs: the longest of the recent run ``durations`` of this fleet,
    at least ``min_minutes``."""
    return max([timedelta(minutes=min_minutes), *durations])


# ================================================================ the decision


def _pr_notification(title: str, message: str, severity: str, pr: UpdatePR, *tags: str) -> Notification:
    return Notification(title, message, severity, ["nfu-tui", f"pr-{pr.number}", *tags], click=pr.html_url)


def _ci_wait_reason(pr: UpdatePR, require_ci: bool) -> str:
    """Why CI is not yet acceptable (empty when it is); red CI and NO_CI are handled as blocks."""
    ci = pr.ci
    if ci is None:
        return "waiting for the CI state"
    if ci.verdict is CIVerdict.GREEN or (ci.verdict is CIVerdict.NO_CI and not require_ci):
        return ""
    if ci.verdict is CIVerdict.PENDING:
        return "waiting for CI" + (f" ({ci.summary})" if ci.summary else "")
    return "waiting for CI (state unknown)"


def _block(pr: UpdatePR) -> tuple[str, str] | None:
    """(notice key, reason) when the PR needs a human regardless of CI."""
    n = pr.number
    if pr.draft:
        return "draft", f"PR #{n} is a draft"
    if pr.lock_only is False:
        others = [f for f in pr.files if f != "flake.lock" and not f.endswith("/flake.lock")]
        shown = ", ".join(others[:3]) + (" …" if len(others) > 3 else "")
        return "not-lock-only", f"PR #{n} changes more than flake.lock ({shown}): review and merge it by hand"
    if pr.mergeable is False or pr.mergeable_state == "dirty":
        return "conflict", f"PR #{n} has merge conflicts with {pr.base_ref or 'its base branch'}"
    if pr.mergeable_state == "blocked" and pr.ci is not None and pr.ci.verdict is CIVerdict.GREEN:
        return "blocked", f"GitHub reports PR #{n} blocked by branch protection (e.g. a required review)"
    if pr.mergeable_state == "behind":
        return "behind", f"PR #{n} is behind {pr.base_ref or 'its base branch'} and the branch must be up to date"
    return None


def decide(s: Situation) -> Decision:
    """The automation decision for situation ``s`` (pure; see the module docs for the rules)."""
    window = s.windows.describe_next(s.now)
    base = dict(window=window)
    if not s.enabled:
        return Decision(AutoState.DISABLED, "automation off", **base)
    superseded = tuple(p.number for p in s.prs if p.superseded_by is not None)
    notices = [
        Notice(f"superseded:{p.number}", str(p.superseded_by), _pr_notification(
            f"PR #{p.number} superseded by PR #{p.superseded_by}",
            f"PR #{p.number} ({p.title}) will not be merged: the newer update PR #{p.superseded_by} replaces it.",
            "information", p, "fast_forward"))
        for p in s.prs if p.superseded_by is not None and p.number not in s.open_reverts
    ]
    base.update(notices=tuple(notices), superseded=superseded)
    if s.busy:
        return Decision(AutoState.BUSY, s.busy, **base)
    from nfu_tui.core.history import resume_command

    for run in sorted((r for r in s.runs if r.interrupted and r.trigger != "auto"), key=lambda r: r.id):
        command = resume_command(run)
        notices.append(Notice(f"manual-unfinished:{run.id}", "1", Notification(
            f"Run #{run.id} is unfinished",
            f"The manual {run.kind} run #{run.id}" + (f" of PR #{run.pr}" if run.pr else "")
            + " was interrupted; automation does not resume manual runs: resume it in the TUI"
            + (f" or with `{command}`." if command else "."), "warning", ["nfu-tui", "warning"])))
    base.update(notices=tuple(notices))

    wake: list[datetime] = []
    # Unfinished automatic runs come first: recovery (rollbacks) before deploys, oldest first. A rollback
    # waiting for an offline host is finished when the host is back, whoever started it.
    mine = (r for r in s.runs if r.unfinished and (r.trigger == "auto" or (r.waiting and r.resumed_when_back)))
    for run in sorted(mine, key=lambda r: (not r.recovery, r.id)):
        may_run = run.recovery or s.windows.is_open(s.now)
        what = f"run #{run.id}" + (f" (PR #{run.pr})" if run.pr else "")
        if run.waiting:
            back = sorted(h for h in run.waiting if h in s.online)
            if back and may_run:
                return Decision(AutoState.READY, f"resuming {what}: {', '.join(back)} back online",
                                Action.RESUME, pr=run.pr, run_id=run.id, **base)
            if back:
                wake.append(s.windows.next_open(s.now))
            continue
        if may_run:
            return Decision(AutoState.READY, f"resuming interrupted {what}", Action.RESUME, pr=run.pr,
                            run_id=run.id, **base)
        start = s.windows.next_open(s.now)
        return Decision(AutoState.PAUSED, f"{what} paused — resumes in {{in}} ({window})", pr=run.pr, run_id=run.id,
                        due=start, wake_at=start, **base)
    wake_at = min(wake) if wake else None
    base.update(wake_at=wake_at)
    rollback = next((r for r in sorted(s.runs, key=lambda r: r.id) if r.kind == "revert" and r.unfinished
                     and r.waiting), None)
    if rollback is not None:
        return Decision(AutoState.WAITING_FLEET, f"rollback run #{rollback.id} (PR #{rollback.pr}) waits for "
                        f"{', '.join(rollback.waiting)} to come back online; nothing else is merged until then "
                        f"(give up: nfu-tui deploy --abandon {rollback.id})", run_id=rollback.id, **base)

    pending_reverts = sorted(p.number for p in s.prs if p.number in s.open_reverts)
    if pending_reverts:
        listed = ", ".join(f"#{n}" for n in pending_reverts)
        return Decision(AutoState.BLOCKED, f"revert PR {listed} is waiting for you: merge it, or close it to let "
                        "automation continue", **base)
    candidates = [p for p in s.prs if p.superseded_by is None and p.number not in s.open_reverts
                  and p.state == "open" and not p.merged]
    if not candidates:
        return Decision(AutoState.IDLE, "no update PR", **base)
    pr = candidates[0]
    n = pr.number
    base.update(pr=n, head_sha=pr.head_sha)
    if n in s.superseded_earlier:
        return _blocked(base, f"PR #{n} was superseded by PR #{s.superseded_earlier[n]} and is not merged "
                              "automatically; close it (or merge it by hand)", None)
    same = [r for r in s.runs if r.kind == "deploy" and r.pr == n and r.head_sha == pr.head_sha]
    if any(r.merge_sha or r.unfinished for r in same):
        return Decision(AutoState.IDLE, f"PR #{n} already merged (run #{max(r.id for r in same)})", **base)
    refused = next((r for r in same if r.refused and r.trigger == "auto"), None)
    if refused is not None:
        reason = f"PR #{n} not merged: {refused.refused}"
        return _blocked(base, reason, Notice(f"refused:{n}", pr.head_sha, _pr_notification(
            f"PR #{n} not merged automatically", reason, "warning", pr, "no_entry")))
    blocked = _block(pr)
    if blocked is not None:
        key, reason = blocked
        return _blocked(base, reason, Notice(f"{key}:{n}", pr.head_sha, _pr_notification(
            f"PR #{n} needs you", reason, "warning", pr, "warning")))
    ci = pr.ci
    if ci is not None and ci.verdict is CIVerdict.RED:
        reason = f"CI is failing on PR #{n}" + (f": {ci.summary}" if ci.summary else "") + "; not merging"
        return _blocked(base, reason, Notice(f"ci-red:{n}", pr.head_sha, _pr_notification(
            f"PR #{n}: CI failing", reason, "error", pr, "x")))
    if s.build_failures.get(pr.head_sha):
        return _does_not_build(base, pr, s.build_failures[pr.head_sha])
    if ci is not None and ci.verdict is CIVerdict.NO_CI and s.config.require_ci:
        reason = (f"no CI ran on PR #{n}; set flake_updates.automation.require_ci = false to merge it without CI")
        return _blocked(base, reason, Notice(f"no-ci:{n}", pr.head_sha, _pr_notification(
            f"PR #{n}: no CI", reason, "warning", pr, "warning")))

    last = pr.updated_at or pr.created_at
    if last is None:
        return _blocked(base, f"GitHub gave no update time for PR #{n}; the delay cannot be counted", None)
    ci_wait = _ci_wait_reason(pr, s.config.require_ci)
    delay_end = last + timedelta(minutes=s.config.delay_minutes)
    if s.now < delay_end:
        due = delay_end if s.windows.is_open(delay_end) else s.windows.next_open(delay_end)
        tail = f" — {ci_wait}" if ci_wait else (" — CI green" if ci is not None and ci.verdict is CIVerdict.GREEN else "")
        if due == delay_end:
            text = f"merging PR #{n} in {{in}}{tail}"
        else:
            text = f"merging PR #{n} in {{in}} (next window {s.windows.display(due, s.now)}){tail}"
        return Decision(AutoState.WAITING_DELAY, text, due=due, **{**base, "wake_at": _earliest(wake_at, due)})
    if ci_wait:
        return Decision(AutoState.WAITING_CI, f"PR #{n}: {ci_wait}", **base)
    if pr.lock_only is None:
        return Decision(AutoState.WAITING_CI, f"PR #{n}: reading its changed files", **base)
    if not s.fleet_ready:
        return Decision(AutoState.WAITING_FLEET, f"PR #{n} ready — waiting for the dashboard's fleet state", **base)
    if not s.deployable:
        reason = (f"PR #{n} is not merged: no host qualifies for an automatic deploy (all held or auto_update = "
                  f"false); release a hold, or merge it without a deploy: nfu-tui deploy --pr {n} --merge-only")
        return _blocked(base, reason, Notice(f"no-host:{n}", pr.head_sha, _pr_notification(
            f"PR #{n} not merged: no host to deploy", reason, "warning", pr, "warning")))
    if not s.windows.is_open(s.now):
        start = s.windows.next_open(s.now)
        return Decision(AutoState.WAITING_WINDOW, f"PR #{n} ready — {window}", due=start,
                        **{**base, "wake_at": _earliest(wake_at, start)})
    closes = s.windows.closes_at(s.now)
    if closes is not None and closes - s.now < s.room:
        start = s.windows.next_open(closes)
        return Decision(AutoState.WAITING_WINDOW, f"PR #{n} ready — the window closes at "
                        f"{s.windows.display(closes, s.now)}, too soon for a run (~{countdown(s.room)}); "
                        f"next window {s.windows.display(start, s.now)}", due=start,
                        **{**base, "wake_at": _earliest(wake_at, start)})
    return Decision(AutoState.READY, f"merging PR #{n} now", Action.MERGE, **base)


def _blocked(base: dict[str, Any], reason: str, notice: Notice | None) -> Decision:
    notices = tuple(base.get("notices", ())) + ((notice,) if notice is not None else ())
    return Decision(AutoState.BLOCKED, reason, **{**base, "notices": notices})


def _does_not_build(base: dict[str, Any], pr: UpdatePR, hosts: Iterable[str]) -> Decision:
    n, names = pr.number, ", ".join(hosts)
    reason = (f"PR #{n} does not build on {names}: not merged automatically; "
              f"see nfu-tui preview --pr {n}, fix it, or merge it by hand")
    return _blocked(base, reason, Notice(f"preview-failed:{n}", pr.head_sha, _pr_notification(
        f"PR #{n} does not build on {names}", f"{reason}.", "error", pr, "x")))


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return min((x for x in (a, b) if x is not None), default=None)


def outside_window_warning(windows: WindowSet, now: datetime) -> str | None:
    """For manual deploys: the warning to confirm when ``now`` is outside every maintenance
    window (None inside one, or when no window is configured)."""
    if windows.is_open(now):
        return None
    return (f"Outside the maintenance windows ({windows}); {windows.describe_next(now)}. "
            "Deploy anyway?")


# ===================================================== toggle and lock holder


def set_automation(state: Any, store: Any, enabled: bool | None, *, actor: str, github_login: str | None = None,
                   source: str = "tui") -> None:
    """Turn automation on/off (None: follow the config) in the app state, with an audit entry."""
    state.set_automation(enabled)
    store.audit("automation", actor=actor, github_login=github_login,
                details={"enabled": enabled, "source": source})


def lock_holder(path: Path) -> dict[str, Any] | None:
    """Who holds the deploy lock according to its file (None: free, or the holder died).

    Reads the holder record that :class:`~nfu_tui.core.store.DeployLock` writes; it is
    cleared on release, and a record of a dead process is ignored. Never takes the lock.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    try:
        os.kill(data["pid"], 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's process
    return data


def describe_holder(holder: Mapping[str, Any]) -> str:
    label = holder.get("label") or "nfu-tui"
    return f"deploy running in {label} (pid {holder.get('pid')})"


# ================================================================== the runner


@dataclass
class _Active:
    """The engine run the runner is executing right now."""

    task: asyncio.Task[Any]
    run_id: int | None = None
    in_flight: set[str] = field(default_factory=set)
    merging: bool = False
    suspend_reason: str = ""
    suspended: bool = False
    window_closed: bool = False  # suspended because the maintenance window closed


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one :meth:`AutomationRunner.step` did."""

    decision: Decision
    acted: bool = False
    ok: bool = True  # False: an action failed (deploy failed, merge refused, rollback failed, error)
    message: str = ""
    suspended: bool = False


EventSink = Callable[..., None]
"""``sink(event, level="info", **fields)``: structured log of what the runner does."""


class AutomationRunner:
    """Runs the automation for one :class:`~nfu_tui.core.service.FleetService` (TUI or headless).

    ``subscribe(callback)`` delivers every :class:`Decision` (for the TUI's status line);
    notifications go through ``service.notify`` and the engine's progress arrives as the
    service's "deploy" events, like a manual deploy's.
    """

    def __init__(
        self,
        service: Any,
        *,
        clock: Callable[[], datetime] = _utcnow,
        rollback: Any = None,
        engine_kw: Mapping[str, Any] | None = None,
        stop_grace: float = 60.0,
        lock_factory: Callable[[], Any] | None = None,
        sink: EventSink | None = None,
        min_interval: float = 0.5,
    ) -> None:
        from nfu_tui.core.history import attach_recorder
        from nfu_tui.core.rollback import RollbackManager
        from nfu_tui.core.store import DeployLock

        self.service = service
        self.config = service.config
        self.windows = WindowSet(self.config.flake_updates.automation.maintenance_windows)
        self.clock = clock
        self.engine_kw = dict(engine_kw or {})
        self.stop_grace = stop_grace
        self.min_interval = min_interval
        self._lock_factory = lock_factory or (lambda: DeployLock(label=service.lock_label))
        self._lock_path: Path = DeployLock().path
        self._sink = sink or (lambda event, level="info", **fields: None)
        self.rollback = rollback if rollback is not None else RollbackManager.for_service(
            service, run_engine=lambda start: self._engine_run(start, gated=False), notify=self._notify,
            sink=self._sink)
        self.decision = Decision(AutoState.IDLE, "starting", window=self.windows.describe_next(clock()))
        self._listeners: list[Callable[[Any], Any]] = []
        self._active: _Active | None = None
        self._watch: frozenset[str] | None = None  # offline hosts runs wait for; None: every fleet change
        self._acting = False
        self._stopping = False
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._unsubscribe = [service.subscribe(self._on_service_event), attach_recorder(service)]
        for run in self._runs():  # revert PRs nfu-tui opened: shown like update PRs while open
            if run.kind == "revert" and run.revert_pr is not None:
                service.track_pr(run.revert_pr)

    def __repr__(self) -> str:
        return f"AutomationRunner(state={self.decision.state.value!r})"

    # --- observers ---------------------------------------------------------------

    def subscribe(self, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Receive each :class:`Decision` (notifications arrive as the service's "notify" events)."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _publish(self, item: Any) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(item)
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("automation listener failed")

    def close(self) -> None:
        """Stop listening to the service."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _on_service_event(self, event: Any) -> None:
        # PR and connection changes always matter; fleet changes (every heartbeat!) only while
        # the fleet state is unknown, or when a host a run waits for comes back online.
        if event.kind in ("prs", "status"):
            self._wake.set()
        elif event.kind == "fleet":
            watch = self._watch
            if watch is None:
                self._wake.set()
                return
            changed = (event.host_ids & watch) if event.host_ids else watch
            if any((h := self.service.host(host)) is not None and h.online for host in changed):
                self._wake.set()

    # --- the situation -------------------------------------------------------------

    def enabled(self) -> bool:
        return bool(self.service.automation_enabled())

    def set_enabled(self, enabled: bool | None, *, actor: str, github_login: str | None = None,
                    source: str = "tui") -> None:
        """The TUI toggle: saved in the app state (shared with ``nfu-tui auto``) and audited."""
        set_automation(self.service.state, self.service.store, enabled, actor=actor, github_login=github_login,
                       source=source)
        self._wake.set()

    def _runs(self) -> list[RunInfo]:
        store = self.service.store
        listed = store.list_runs(40)
        unfinished = {r.id: r for r in store.unfinished_runs()}
        infos = []
        for run in listed:
            if run.id in unfinished:
                full = unfinished.pop(run.id)
            elif run.kind in RECOVERY_KINDS or (run.kind == "deploy" and run.status == "failed" and not run.merge_sha):
                full = store.get_run(run.id)  # needs its steps: refusal, revert PR
            else:
                full = run
            infos.append(run_info(full))
        infos.extend(run_info(r) for r in unfinished.values())  # older than the listed window
        return infos

    def _run_durations(self, last: int = 5) -> list[timedelta]:
        """How long the last deploy runs of this fleet took that ran straight through (succeeded the same day)."""
        found = []
        for run in self.service.store.list_runs(40):
            if run.kind in ("deploy", "converge") and run.status == "succeeded" and run.finished_at is not None:
                took = run.finished_at - run.created_at
                if took < timedelta(hours=12):
                    found.append(took)
        return found[:last]

    def situation(self, prs: Iterable[UpdatePR] | None = None) -> Situation:
        """The current situation (re-reads the shared app state: the toggle may change in another process)."""
        from nfu_tui.errors import StateError

        service = self.service
        try:
            service.state.reload()
        except StateError as exc:
            self._sink("state_error", level="warning", message=exc.message)
        runs = tuple(self._runs())
        pr_list = tuple(prs) if prs is not None else tuple(state.pr for state in service.prs)
        open_numbers = {p.number for p in pr_list}
        reverts = frozenset(r.revert_pr for r in runs if r.kind == "revert" and r.revert_pr in open_numbers)
        holder = lock_holder(self._lock_path)
        busy = describe_holder(holder) if holder is not None else ""
        hosts = service.hosts()
        superseded = {int(key.split(":", 1)[1]): newer for key, newer in service.state.notified.items()
                      if key.startswith("superseded:") and key.split(":", 1)[1].isdigit()}
        auto = self.config.flake_updates.automation
        from nfu_tui.core.plan import make_plan

        plan = make_plan(hosts, self.config, service.state.held, automatic=True, overrides=service.state.overrides)
        failures: dict[str, tuple[str, ...]] = {}
        if auto.preview_before_merge:
            from nfu_tui.core.preview import PreviewCache

            cache = PreviewCache()
            for pr in pr_list:
                failed = tuple(h for h, p in cache.for_head(pr.head_sha, plan.hosts).items() if p.build_failed)
                if failed:
                    failures[pr.head_sha] = failed
        return Situation(
            build_failures=failures,
            deployable=bool(plan.hosts) or plan.merge_only,
            room=needed_room(self._run_durations(), auto.min_window_minutes),
            now=self.clock(), enabled=self.enabled(), config=self.config.flake_updates.automation,
            windows=self.windows, prs=pr_list, runs=runs, open_reverts=reverts, superseded_earlier=superseded,
            busy=busy,
            fleet_ready=bool(service.fleet.synced), online=frozenset(h.id for h in hosts if h.online),
        )

    def decide(self, prs: Iterable[UpdatePR] | None = None) -> Decision:
        situation = self.situation(prs)
        self._watch = None if not situation.fleet_ready else frozenset(
            h for r in situation.runs if r.unfinished for h in r.waiting if h not in situation.online)
        decision = decide(situation)
        self.service.refresh_attention()  # the header's paused/waiting runs and unsent notifications
        return self._adopt(decision)

    def _adopt(self, decision: Decision) -> Decision:
        """Make ``decision`` the current one: logged when it changed, published to the listeners."""
        if not decision.same_as(self.decision):
            self._sink("decision", state=decision.state.value, text=decision.describe(self.clock()),
                       pr=decision.pr, run=decision.run_id, action=decision.action.value,
                       due=decision.due.isoformat() if decision.due else None)
        self.decision = decision
        self._publish(decision)
        return decision

    async def _send_notices(self, decision: Decision) -> None:
        """Each notice once (shared app state: the TUI and ``nfu-tui auto`` never both send it)."""
        state = self.service.state
        for notice in decision.notices:
            if not state.should_notify(notice.key, notice.value):
                continue
            n = replace(notice.notification, event_id=f"notice:{notice.key}:{notice.value}")
            # Into the durable outbox first (delivered and retried from there), then marked as decided.
            sent = self._enqueue(n)
            await asyncio.to_thread(state.mark_notified, notice.key, notice.value)
            if sent is not None:
                await sent

    def _enqueue(self, n: Notification) -> Any:
        from nfu_tui.core.notify import LOG_LEVELS

        self._sink("notify", level=LOG_LEVELS.get(n.severity, "info"), title=n.title, message=n.message,
                   severity=n.severity)
        return self.service.notify(n)

    async def _notify(self, n: Notification) -> None:
        """Toast (the service's "notify" event) and webhook (through the outbox), waiting for the first
        delivery attempt."""
        sent = self.service.notify(n)
        if sent is not None:
            await sent

    # --- one cycle -----------------------------------------------------------------

    async def step(self, *, refresh: bool = False) -> StepResult:
        """Decide, send notices, and execute the action if one is due.

        ``refresh`` first re-reads the open candidate PRs from GitHub (CI, mergeability),
        for a one-shot run that cannot wait for the service's background explanations.
        """
        decision = self.decide(await self._refreshed_prs() if refresh else None)
        await self._send_notices(decision)
        if self._stopping or decision.action is Action.NONE:
            return StepResult(decision)
        from nfu_tui.errors import DeployLocked, NfuError

        self._acting = True
        try:
            if decision.action is Action.MERGE:
                return await self._merge_and_deploy(decision)
            return await self._resume(decision)
        except DeployLocked as exc:
            self._sink("busy", message=exc.message)
            return StepResult(decision, message=exc.message)
        except NfuError as exc:
            self._sink("error", level="error", title=exc.title, message=str(exc))
            return StepResult(decision, acted=True, ok=False, message=f"{exc.title}: {exc}")
        finally:
            self._acting = False

    async def run_once(self, *, rounds: int = 4) -> StepResult:
        """One detection cycle for ``nfu-tui auto --once``: act until nothing more is due now.

        Expects the service to be started and to have polled once. Several rounds let
        a resumed run be followed by the merge of a due PR in the same invocation. The
        result has the final decision, ``acted``/``suspended`` if any round did, and
        ``ok`` only if every round was.
        """
        results: list[StepResult] = []
        for _ in range(rounds):
            result = await self.step(refresh=True)
            results.append(result)
            if not result.acted or not result.ok or result.suspended or self._stopping:
                break
        acted = [r for r in results if r.acted]
        return StepResult(results[-1].decision, acted=bool(acted), ok=all(r.ok for r in results),
                          message="; ".join(r.message for r in acted if r.message),
                          suspended=any(r.suspended for r in results))

    async def run_forever(self) -> None:
        """Decide and act until :meth:`request_stop`; wakes on service changes and due times."""
        loop = asyncio.get_running_loop()
        last = 0.0
        while not self._stop.is_set():
            pause = self.min_interval - (loop.time() - last)
            if pause > 0:
                await self._wait(pause, wake_early=False)
                if self._stop.is_set():
                    break
            last = loop.time()
            self._wake.clear()
            result = await self.step()
            if result.acted:
                await self._refresh_prs()
                continue
            await self._wait(self._sleep_for(result.decision), wake_early=True)

    def _sleep_for(self, decision: Decision) -> float:
        """Until the decision's wake time, at most a minute (windows and the countdown move)."""
        limit = 60.0
        if decision.wake_at is not None:
            limit = min(limit, max(0.0, (decision.wake_at - self.clock()).total_seconds()))
        return limit

    async def _wait(self, seconds: float, *, wake_early: bool) -> None:
        waits = [asyncio.ensure_future(self._stop.wait())]
        if wake_early:
            waits.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _refresh_prs(self) -> None:
        """Poll GitHub again after acting (the merged PR closes)."""
        from nfu_tui.errors import NfuError

        if self.service.github is None:
            return
        try:
            await self.service.poll_once()
        except NfuError as exc:
            self._sink("github_error", level="warning", message=str(exc))

    def request_stop(self, reason: str = "stop requested") -> None:
        """Shut down cleanly (SIGTERM): start no new host, let the in-flight step finish or
        journal it, and return from :meth:`run_forever` (see the module docs)."""
        if self._stopping:
            return
        self._stopping = True
        self._stop.set()
        active = self._active
        if active is None:
            return
        self._sink("stopping", run=active.run_id, in_flight=sorted(active.in_flight), grace=self.stop_grace)
        self._journal(active, "shutdown_requested", reason=reason)
        self._suspend(active, f"nfu-tui stopped ({reason})")
        loop = asyncio.get_running_loop()
        loop.call_later(self.stop_grace, self._force_suspend, active)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def acting(self) -> bool:
        """An action (merge + deploy, resume, rollback) is being executed."""
        return self._acting

    # --- for the TUI ---------------------------------------------------------------

    async def roll_back(self, failed_run_id: int, *, trigger: str = "manual") -> Any:
        """Apply ``flake_updates.rollback.strategy`` to a deploy run that failed (e.g. a manual
        deploy in the TUI), under the deploy lock; returns a
        :class:`~nfu_tui.core.rollback.RollbackOutcome`. Raises ``DeployLocked`` when another
        deploy runs."""
        self._acting = True
        try:
            with self._lock_factory():
                return await self.rollback.after_failure(failed_run_id, trigger=trigger)
        finally:
            self._acting = False

    async def rollback_host(self, host: str, *, actor: str | None = None) -> Any:
        """The dashboard's ``rollback`` op on one host (confirm first); returns a
        :class:`~nfu_tui.core.rollback.HostRollbackResult`. Journaled and audited."""
        return await self.rollback.rollback_host(host, actor=actor)

    # --- actions -------------------------------------------------------------------

    async def _refreshed_prs(self) -> list[UpdatePR]:
        """Poll the PR list, then re-read the non-superseded PRs from GitHub (closed ones drop out)."""
        from nfu_tui.errors import NfuError

        await self._refresh_prs()
        prs: list[UpdatePR] = []
        for state in self.service.prs:
            pr = state.pr
            if pr.superseded_by is None:
                try:
                    pr = await self._fresh_pr(pr.number)
                except NfuError as exc:
                    self._sink("github_error", level="warning", pr=pr.number, message=str(exc))
            if pr.state == "open" and not pr.merged:
                prs.append(pr)
        return prs

    async def _fresh_pr(self, number: int) -> UpdatePR:
        """Re-read one PR right before acting: mergeability, CI and files as GitHub says now."""
        github = self.service.github
        pr = await github.get_pull(number)
        ci = await github.ci_status(pr.head_sha)
        files = pr.files
        if not files:
            known = self.service.pr_state(number)
            files = known.pr.files if known is not None and known.pr.head_sha == pr.head_sha else ()
        if not files:
            files = await github.pr_files(number)
        listed = self.service.pr_state(number)
        superseded = listed.pr.superseded_by if listed is not None else None
        return pr.with_changes(ci=ci, files=tuple(files), superseded_by=superseded)

    async def _merge_and_deploy(self, decision: Decision) -> StepResult:
        from nfu_tui.core.plan import make_plan
        from nfu_tui.core.store import local_actor

        assert decision.pr is not None
        fresh = await self._fresh_pr(decision.pr)
        prs = [fresh if s.pr.number == fresh.number else s.pr for s in self.service.prs]
        if fresh.number not in {p.number for p in prs}:
            prs.insert(0, fresh)
        again = self.decide(prs)
        await self._send_notices(again)
        if again.action is not Action.MERGE or again.pr != decision.pr or self._stopping:
            return StepResult(again)
        service = self.service
        plan = make_plan(service.hosts(), self.config, service.state.held, automatic=True, pr_number=fresh.number,
                         head_sha=fresh.head_sha, overrides=service.state.overrides)
        if self.config.flake_updates.automation.preview_before_merge:
            stopped = await self._preview_gate(again, fresh, list(plan.hosts))
            if stopped is not None:
                return stopped
            again = self.decide(prs)  # the builds took time: the window may have closed meanwhile
            await self._send_notices(again)
            if again.action is not Action.MERGE or again.pr != decision.pr or self._stopping:
                return StepResult(again)
        self._sink("merge", pr=fresh.number, head=fresh.head_sha, hosts=list(plan.hosts),
                   plan=plan.describe())
        with self._lock_factory():
            if any(r.kind == "deploy" and r.pr == fresh.number and r.head_sha == fresh.head_sha
                   and (r.merge_sha or r.unfinished) for r in self._runs()):
                return StepResult(again, message=f"PR #{fresh.number} was just deployed by another process")
            self._abandon_superseded_waiting(fresh.number)
            result = await self._engine_run(
                lambda engine: engine.run(plan, actor=local_actor(), trigger="auto", queued_wait=0), gated=True)
            if result is None:
                return StepResult(again, acted=True, suspended=True, message="suspended")
            return await self._after_run(again, result)

    async def _preview_gate(self, decision: Decision, pr: UpdatePR, hosts: list[str]) -> StepResult | None:
        """``preview_before_merge``: build ``pr`` on the planned hosts (not activated; cached by head sha).
        A host whose build fails stops the merge (blocked, notified once per head; while the failure is
        cached, :func:`decide` keeps the PR blocked); an unreachable host is no evidence either way and
        is left to the deploy's own rules."""
        from nfu_tui.core.preview import failed_builds

        results = await self.service.preview(pr, hosts)
        failed = failed_builds(results)
        unknown = [r.host for r in results if not r.ok and not r.build_failed]
        self._sink("preview", level="warning" if unknown else "info", pr=pr.number, head=pr.head_sha,
                   built=[r.host for r in results if r.ok], failed=failed, unknown=unknown)
        if not failed:
            return None
        blocked = self._adopt(_does_not_build({"pr": pr.number, "head_sha": pr.head_sha, "window": decision.window},
                                              pr, failed))
        await self._send_notices(blocked)
        return StepResult(blocked, acted=True, ok=False, message=blocked.template)

    async def _resume(self, decision: Decision) -> StepResult:
        from nfu_tui.core.store import local_actor

        assert decision.run_id is not None
        run = self.service.store.get_run(decision.run_id)
        info = run_info(run)
        self._sink("resume", run=run.id, kind=run.kind, pr=run.pr)
        with self._lock_factory():
            if run.kind not in ("deploy", "converge"):
                outcome = await self.rollback.resume(run.id)
                return StepResult(decision, acted=True, ok=outcome.ok, suspended=outcome.suspended,
                                  message=outcome.summary)
            result = await self._engine_run(
                lambda engine: engine.resume(run.id, actor=local_actor(), queued_wait=0), gated=not info.recovery)
            if result is None:
                return StepResult(decision, acted=True, suspended=True, message="suspended")
            return await self._after_run(decision, result, may_roll_back=not info.recovery)

    async def _after_run(self, decision: Decision, result: Any, *, may_roll_back: bool = True) -> StepResult:
        from nfu_tui.core.engine import RunStatus

        self._sink("run_result", level="info" if result.ok else "error", run=result.run_id,
                   status=result.status.value, summary=result.summary())
        # Only a proven failure is rolled back; an unknown or unverified outcome alerts (the engine's
        # notification) and stops, and the admin decides.
        failed = result.status is RunStatus.FAILED and bool(result.merge_sha) and bool(result.proven_failures())
        if failed and may_roll_back:
            outcome = await self.rollback.after_failure(result.run_id, trigger="auto")
            return StepResult(decision, acted=True, ok=False, suspended=outcome.suspended,
                              message=f"{result.summary()}; rollback: {outcome.summary}")
        return StepResult(decision, acted=True, ok=result.ok, message=result.summary())

    async def _notify_paused(self, run_id: int) -> None:
        """The run stopped at a window's close: when it goes on, and which hosts are left."""
        from nfu_tui.core.notify import pr_link

        run = self.service.store.get_run(run_id)
        now = self.clock()
        start = self.windows.next_open(now)
        when = self.windows.display(start, now)
        from nfu_tui.core.history import run_hosts

        left = run_hosts(run)
        done = [h for h, state in left.items() if state == "ok"]
        rest = {h: state for h, state in left.items() if state != "ok"}
        lines = [f"The maintenance window closed during run #{run_id} (PR #{run.pr}); no host step starts until "
                 f"the next window, {when}, when automation resumes it."]
        if done:
            lines.append(f"Deployed: {', '.join(done)}.")
        if rest:
            lines.append("Left: " + "; ".join(f"{h} ({state})" for h, state in rest.items()) + ".")
        lines.append(f"To finish it now, outside the window: `nfu-tui deploy --resume {run_id}`.")
        github = self.config.github
        await self._notify(Notification(
            f"PR #{run.pr} deploy paused until {when}", " ".join(lines), "warning",
            ["nfu-tui", f"pr-{run.pr}", "pause_button"], click=pr_link(github.api_url, github.repo, run.pr or 0),
            event_id=f"paused:{run_id}:{start.isoformat()}"))

    def _abandon_superseded_waiting(self, pr: int) -> None:
        """Older automatic runs still waiting for offline hosts are replaced by this new deploy."""
        store = self.service.store
        for run in store.unfinished_runs():
            info = run_info(run)
            if info.kind == "deploy" and info.trigger == "auto" and info.waiting and not info.recovery:
                store.finish_run(run.id, "abandoned", f"superseded by the automatic deploy of PR #{pr} "
                                                      f"(still waiting for {', '.join(info.waiting)})")
                self._sink("abandoned", run=run.id, superseded_by=pr)

    # --- engine plumbing -------------------------------------------------------------

    def _make_engine(self, *, gated: bool = False, **kw: Any) -> Any:
        """An engine from the service, under the runner's deploy lock (held by the caller)."""
        kwargs = {**self.engine_kw, **kw}
        kwargs.setdefault("lock", contextlib.nullcontext)
        if gated:
            kwargs["may_start_host"] = self._gate
            kwargs["describe_gate"] = self._gate_text
        elif "may_start_host" not in kwargs:
            kwargs["may_start_host"] = lambda: not self._stopping
        engine = self.service.make_engine(**kwargs)
        self.service.engine = engine  # the TUI watches/cancels it like its own deploys
        return engine

    def _gate(self) -> bool:
        return not self._stopping and self.windows.is_open(self.clock())

    def _gate_text(self) -> str:
        if self._stopping:
            return "nfu-tui is stopping"
        return f"outside the maintenance window ({self.windows.describe_next(self.clock())})"

    async def _engine_run(self, start: Callable[[Any], Any], *, gated: bool) -> Any:
        """Run ``start(engine)`` in a task; None when it was suspended (window closed, shutdown)."""
        engine = self._make_engine(gated=gated)
        unsubscribe = engine.subscribe(self._on_engine_event)
        task = asyncio.ensure_future(start(engine))
        active = self._active = _Active(task)
        if self._stopping:
            self._suspend(active, "nfu-tui stopped")
        try:
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
            if task.cancelled():
                if active.run_id is not None:
                    self._journal(active, "suspended", reason=active.suspend_reason or "interrupted")
                self._sink("suspended", level="warning", run=active.run_id, reason=active.suspend_reason)
                if active.window_closed and active.run_id is not None:
                    await self._notify_paused(active.run_id)
                return None
            return task.result()
        finally:
            unsubscribe()
            self._active = None

    def _journal(self, active: _Active, step: str, **data: Any) -> None:
        from nfu_tui.errors import StateError

        if active.run_id is None:
            return
        try:
            self.service.store.record(active.run_id, step, **data)
        except StateError:
            pass  # the run already finished

    def _suspend(self, active: _Active, reason: str) -> None:
        """Stop the run as soon as no host and no merge is in flight (journal stays resumable)."""
        if not active.suspend_reason:
            active.suspend_reason = reason
        if not active.in_flight and not active.merging and not active.suspended:
            active.suspended = True
            asyncio.get_running_loop().call_soon(active.task.cancel)

    def _force_suspend(self, active: _Active) -> None:
        """The grace period is over: interrupt in-flight hosts too (the journal has their commands)."""
        if self._active is active and not active.task.done():
            self._sink("stop_grace_over", level="warning", run=active.run_id, in_flight=sorted(active.in_flight))
            active.suspended = True
            active.task.cancel()

    def _on_engine_event(self, event: Any) -> None:
        from nfu_tui.core import engine as eng

        active = self._active
        if active is None:
            return
        if isinstance(event, eng.RunStarted):
            active.run_id = event.run_id
            self.decision = replace(self.decision, state=AutoState.BUSY, action=Action.NONE, pr=event.pr_number,
                                    run_id=event.run_id, due=None, notices=(),
                                    template=f"deploying PR #{event.pr_number} (run #{event.run_id})")
            self._publish(self.decision)
        elif isinstance(event, eng.HostStarted):
            active.in_flight.add(event.host)
        elif isinstance(event, (eng.HostFinished, eng.HostQueued)):
            active.in_flight.discard(event.host)
        elif isinstance(event, eng.MergeRequested):
            active.merging = True
        elif isinstance(event, (eng.Merged, eng.MergeRefused)):
            active.merging = False
        elif isinstance(event, eng.Paused) and not self._stopping:
            now = self.clock()
            active.window_closed = True
            self._suspend(active, f"maintenance window closed; {self.windows.describe_next(now)}")
        elif isinstance(event, eng.Unpaused) and not self._stopping:
            active.suspend_reason = ""  # the window opened again before the run could be suspended
            active.window_closed = False
        if active.suspend_reason:
            self._suspend(active, active.suspend_reason)


__all__ = [
    "Action",
    "AutoState",
    "AutomationRunner",
    "Decision",
    "Notice",
    "RunInfo",
    "Situation",
    "StepResult",
    "countdown",
    "decide",
    "describe_holder",
    "lock_holder",
    "outside_window_warning",
    "run_info",
    "set_automation",
    "needed_room",
]
