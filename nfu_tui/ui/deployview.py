"""What the deploy screen shows, folded from the engine's events (pure, no Textual).

:class:`DeployView` starts from the confirmed :class:`~nfu_tui.core.plan.DeployPlan`
(a row per host, in deploy order) and applies each ``EngineEvent`` as it arrives; the
app keeps it, so the deploy screen can be closed and reopened without losing anything.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from nfu_tui.core import engine as eng
from nfu_tui.core.plan import DeployPlan

STATE_GLYPHS = {
    "waiting": "·",
    "queued": "◌",
    "running": "⟳",
    "checking": "?",
    "ok": "✓",
    "unverified": "≈",
    "failed": "✗",
    "unknown": "?",
    "held": "⏸",
    "skipped": "–",
    "cancelled": "⊘",
}
DONE_STATES = frozenset({"ok", "unverified", "failed", "unknown", "held", "skipped", "cancelled"})
CHECKING = "outcome unknown — checking"
"""A progress message starting so puts the row in the ``checking`` state (the engine looks for evidence)."""
_OUTCOME_STATES = {
    eng.Outcome.OK: "ok",
    eng.Outcome.UNVERIFIED: "unverified",
    eng.Outcome.FAILED: "failed",
    eng.Outcome.UNKNOWN: "unknown",
    eng.Outcome.HELD: "held",
    eng.Outcome.SKIPPED: "skipped",
    eng.Outcome.CANCELLED: "cancelled",
    eng.Outcome.QUEUED: "queued",
}


@dataclass(frozen=True, slots=True)
class HostRow:
    host: str
    position: int  # 1-based deploy order
    wave: int
    canary: bool = False
    state: str = "waiting"
    phase: str = ""
    started: datetime | None = None
    finished: datetime | None = None
    detail: str = ""
    last_lines: tuple[str, ...] = ()
    executed: str = ""  # the switch's result (HostOutcome.executed)
    reached: bool | None = None
    verified: bool | None = None
    proven: bool = False  # failed, and the failure is proven (may be rolled back)

    @property
    def checks(self) -> str:
        """Executed · reached · verified as three glyphs (``✓✓✓``, ``✓✓✗``, ``✗··``); "" before any is known."""
        if not self.executed and self.reached is None and self.verified is None:
            return ""
        executed = None if not self.executed else self.executed.upper() in ("SUCCESS", "PARTIAL", "ALREADY CURRENT")
        return "".join("·" if v is None else ("✓" if v else "✗") for v in (executed, self.reached, self.verified))

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES

    @property
    def active(self) -> bool:
        """Running on the dashboard (or the engine is still checking what happened there)."""
        return self.state in ("running", "checking")

    def elapsed(self, now: datetime) -> str:
        if self.started is None:
            return ""
        end = self.finished or now
        seconds = max(0, int((end - self.started).total_seconds()))
        return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class DeployView:
    """The state of one merge & deploy run as the UI shows it."""

    plan: DeployPlan
    clock: Callable[[], datetime]
    rows: dict[str, HostRow] = field(default_factory=dict)
    run_id: int | None = None
    stage: str = "starting"  # starting | merging | deploying | waiting-canaries | waiting-queued | finished
    merge_sha: str = ""
    headline: str = ""  # the latest notable event, e.g. "merged PR #42 as abc1234"
    events: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    result: Any = None  # engine RunResult once finished
    error: str = ""
    cancel_requested: bool = False
    rollback_note: str = ""  # the "roll back now" the admin started from the failure panel, and how it went
    trigger: str = "manual"  # "auto": automation started it (and rolls it back itself)
    recovery: bool = False  # the redeploy of a rollback (never rolled back again)

    @classmethod
    def from_plan(cls, plan: DeployPlan, clock: Callable[[], datetime]) -> "DeployView":
        view = cls(plan, clock)
        for i, entry in enumerate(plan.entries + plan.queued, start=1):
            view.rows[entry.host] = HostRow(
                entry.host, i, entry.wave, entry.canary, state="queued" if entry.queued else "waiting"
            )
        view.headline = f"{plan.subject.capitalize()}: no merge…" if plan.converge else f"Merging PR #{plan.pr_number}…"
        return view

    @classmethod
    def from_run(cls, run: Any, clock: Callable[[], datetime], *, resumed: bool = True) -> "DeployView":
        """A run from the journal (``store.Run``): its plan, hosts already done marked.

        ``resumed``: an interrupted run continued now; else a run that just started
        elsewhere (automation, a rollback's redeploy).
        """
        view = cls.from_plan(DeployPlan.from_dict(run.plan), clock)
        view.run_id = run.id
        view.merge_sha = run.merge_sha or ""
        view.trigger = run.trigger
        view.recovery = any(step.step == "revert_redeploy" for step in run.steps or ())
        for host, outcome in run.host_outcomes.items():
            if host in view.rows and outcome in DONE_STATES:
                view._set(host, state=outcome, detail="done before the interruption")
        who = "automatic" if run.trigger == "auto" else run.trigger
        view.headline = f"Resuming run #{run.id}…" if resumed else f"{who} run #{run.id} started"
        return view

    # --- derived ----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.stage == "finished"

    @property
    def order(self) -> list[str]:
        return sorted(self.rows, key=lambda h: self.rows[h].position)

    def counts(self) -> tuple[int, int]:
        """(hosts done, hosts in the plan)."""
        return sum(1 for r in self.rows.values() if r.done), len(self.rows)

    def failures(self) -> list[HostRow]:
        return [r for r in self.rows.values() if r.state == "failed"]

    def proven_failures(self) -> list[HostRow]:
        """Failed rows whose failure is proven: the only ones a rollback is offered for."""
        return [r for r in self.failures() if r.proven]

    def with_state(self, *states: str) -> list[HostRow]:
        return [r for r in self.order_rows() if r.state in states]

    def order_rows(self) -> list[HostRow]:
        return [self.rows[h] for h in self.order]

    def left_behind(self) -> list[str]:
        """Once a run ended cancelled, failed, unknown, unverified or waiting (not refused): the hosts it did
        not bring to the target (an unverified host that reached it is not behind: converge would skip it)."""
        status = getattr(getattr(self.result, "status", None), "value", "")
        if status not in ("cancelled", "failed", "unknown", "unverified", "waiting"):
            return []
        rows = self.order_rows()
        return [r.host for r in rows if r.state != "ok" and not (r.state == "unverified" and r.reached)]

    def unverified_canaries(self) -> list[HostRow]:
        """Once the run stopped on unverified canaries alone (no host failed or unknown, no other host
        started): those canaries — the admin may continue anyway (mirrors ``engine.continuable``)."""
        status = getattr(getattr(self.result, "status", None), "value", "")
        canaries = [r for r in self.order_rows() if r.canary]
        if status != "unverified" or self.plan.merge_only or any(
                r.state not in ("ok", "held", "unverified") for r in canaries):
            return []
        if any(r.state not in ("skipped", "held", "queued") for r in self.order_rows() if not r.canary):
            return []
        return [r for r in canaries if r.state == "unverified"]

    def continued(self) -> "DeployView":
        """The view of the run that continues this one past its unverified canaries: the same plan, the
        canaries as they ended, the rest still to come (the new run's id arrives with its RunStarted)."""
        view = DeployView.from_plan(self.plan, self.clock)
        view.merge_sha = self.merge_sha
        for row in self.order_rows():
            if row.canary:
                view.rows[row.host] = row
        names = ", ".join(r.host for r in self.unverified_canaries())
        view.headline = f"Continuing run #{self.run_id} without {names} verified…"
        return view

    @property
    def succeeded(self) -> bool | None:
        if self.result is None:
            return None if not self.error else False
        return bool(self.result.ok)

    def summary(self) -> str:
        done, total = self.counts()
        parts = [self.plan.subject]
        if self.run_id is not None:
            parts.append(f"run #{self.run_id}")
        parts.append(f"{done}/{total} hosts")
        if self.merge_sha:
            parts.append(f"merged {self.merge_sha[:7]}")
        return " · ".join(parts)

    # --- folding events ------------------------------------------------------------

    def _row(self, host: str) -> HostRow:
        row = self.rows.get(host)
        if row is None:  # a host the plan did not list (resume of an older run)
            row = self.rows[host] = HostRow(host, len(self.rows) + 1, 1)
        return row

    def _set(self, host: str, **changes: Any) -> None:
        self.rows[host] = replace(self._row(host), **changes)

    def apply(self, event: Any) -> bool:
        """Fold one engine event in; True when the run just finished (time for the bell)."""
        if not isinstance(event, eng.EngineEvent):
            return False
        if event.run_id is not None:
            self.run_id = event.run_id
        stamp = event.at.astimezone().strftime("%H:%M:%S")
        self.events.append(f"{stamp} {event.line()}")
        if self.result is not None:  # the engine's result came before its last events: it is the final word
            return isinstance(event, eng.RunFinished)
        if isinstance(event, eng.RunStarted):
            self.stage = "deploying" if self.plan.converge or self.merge_sha else "merging"
            for host in event.hosts:
                self._row(host)
        elif isinstance(event, eng.MergeRequested):
            self.stage = "merging"
            self.headline = event.line()
        elif isinstance(event, eng.Merged):
            self.merge_sha = event.merge_sha
            self.stage = "deploying"
            self.headline = event.line()
        elif isinstance(event, eng.MergeRefused):
            self.headline = event.line()
        elif isinstance(event, eng.HostQueued):
            self._set(event.host, state="queued", detail=event.reason)
        elif isinstance(event, eng.HostStarted):
            self.stage = "deploying"
            row = self._row(event.host)
            self._set(event.host, state="running", phase=event.phase, started=row.started or event.at, detail="")
        elif isinstance(event, eng.HostProgress):
            checking = event.message.startswith(CHECKING)
            state = "checking" if checking else ("running" if self._row(event.host).state == "checking"
                                                 else self._row(event.host).state)
            self._set(event.host, phase=event.phase, detail=event.message, state=state)
        elif isinstance(event, eng.HostFinished):
            out = event.outcome
            state = _OUTCOME_STATES[out.outcome]
            self._set(
                out.host,
                state=state,
                phase=out.phase or self._row(out.host).phase,
                finished=event.at if state in DONE_STATES else None,
                detail=out.detail,
                last_lines=tuple(out.last_lines),
                **_facts(out),
            )
        elif isinstance(event, eng.WaitingForCanaries):
            self.stage = "waiting-canaries"
            self.headline = event.line()
        elif isinstance(event, eng.CanaryGate):
            self.stage = "deploying"
            self.headline = event.line()
        elif isinstance(event, (eng.Paused, eng.Unpaused)):
            self.headline = event.line()
        elif isinstance(event, eng.CancelRequested):
            self.cancel_requested = True
            self.headline = event.line()
        elif isinstance(event, eng.RunFinished):
            self.finish(event.result)
            return True
        if self.stage == "deploying" and self.rows and all(
            r.done or r.state == "queued" for r in self.rows.values()
        ) and any(r.state == "queued" for r in self.rows.values()):
            self.stage = "waiting-queued"
            queued = [h for h in self.order if self.rows[h].state == "queued"]
            self.headline = f"{', '.join(queued)} offline: deployed when back online"
        return False

    def finish(self, result: Any) -> None:
        """The engine returned ``result`` (a RunResult)."""
        if self.result is not None:
            return
        self.result = result
        self.stage = "finished"
        self.headline = result.summary()
        for outcome in result.outcomes:  # the result is the final word, even before its events arrive
            row = self._row(outcome.host)
            state = _OUTCOME_STATES[outcome.outcome]
            if row.state != state:
                self._set(
                    outcome.host,
                    state=state,
                    phase=outcome.phase or row.phase,
                    finished=row.finished or (self.clock() if state in DONE_STATES else None),
                    detail=outcome.detail,
                    last_lines=tuple(outcome.last_lines),
                    **_facts(outcome),
                )

    def fail(self, message: str) -> None:
        """The deploy worker raised (e.g. another deploy holds the lock)."""
        self.error = message
        self.stage = "finished"
        self.headline = message


def _facts(outcome: Any) -> dict[str, Any]:
    """The executed / reached / verified facts (and proof) of an engine HostOutcome, for a row."""
    return {"executed": outcome.executed, "reached": outcome.reached, "verified": outcome.verified,
            "proven": outcome.proven_failure}
