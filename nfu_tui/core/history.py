"""History and audit: what the journal and the audit trail say, for the CLI and the TUI.

The journal (:class:`~nfu_tui.core.store.Store`) keeps every run — ``deploy``,
``converge`` (the default branch's head to the hosts behind it, no merge), ``revert``
(rollback after a failure) and ``rollback`` (one host) — with its steps;
the audit trail keeps every merge, deploy, rollback, hold/unhold, automation toggle
and configuration-relevant action. This module turns both into :class:`RunRecord`\\ s
(when, who, what, how each host fared, a timeline) and formats them.

What a run was about is recorded when it starts: :func:`attach_recorder` listens to
a :class:`~nfu_tui.core.service.FleetService` and journals a ``context`` step (PR
title, lock diff in nix's format, headline, revs) for every new deploy run, whoever
started it (TUI, ``nfu-tui auto``, a rollback). The GitHub login comes from the
audit entries of the run (the engine and the rollback write it).

``nfu-tui history --json`` prints :func:`history_json`, schema ``nfu-tui.history/1``
(stable; keys may be added, none removed)::

    {"schema": "nfu-tui.history/1", "generated_at": ISO-8601,
     "runs": [{"id": int, "kind": "deploy"|"converge"|"revert"|"rollback", "pr": int|null, "title": str,
               "trigger": "manual"|"auto", "actor": "user@host", "github_login": str|null,
               "status": "running"|"paused"|"waiting"|"succeeded"|"failed"|"unknown"|"unverified"|"cancelled"
                         |"abandoned",                          # unknown/unverified: never a proven failure
               "started_at": ISO-8601, "finished_at": ISO-8601|null,
               "head_sha": str|null, "merge_sha": str|null, "summary": str,
               "headline": str|null, "lock_diff": str,          # nix's "Flake lock file updates" entries
               "plan": [str],                                   # the plan as shown before the run
               "hosts": [{"host", "outcome", "phase", "detail", "log_excerpt": [str],
                          "executed": str, "reached": bool|null, "verified": bool|null, "proven": bool}],
               "related_runs": [int],                           # failed run <-> revert <-> its redeploy
               "origin": str|null,                              # another client's run, from GitHub deployments
               "timeline": [{"at": ISO-8601, "step": str, "host": str|null, "text": str}]}],
     "audit": [{"id", "at", "action", "actor", "github_login", "pr", "details": {...}}],
     "undelivered_notifications": [{"id", "title", "created_at", "attempts", "last_error", "next_attempt_at"}]}

A paused or waiting run lists every planned host: those without an outcome yet with their
state (``pulled, switch waiting``, ``queued (offline)``, ``not started``). A failed run names
the revert runs started for it in ``related_runs``, and the revert names the failed run.

Runs are newest first; ``--limit N`` bounds both lists.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from nfu_tui.errors import NfuError, StateError

log = logging.getLogger(__name__)

SCHEMA = "nfu-tui.history/1"


# ======================================================== recording the context


async def lock_diff_for(github: Any, pr: Any, lock_path: str | None = None) -> tuple[str, str | None] | None:
    """(nix's lock diff summary, headline) between a PR's base and head; None when unavailable."""
    from nfu_tui.domain import flakelock

    path = lock_path or next((f for f in pr.files if f == "flake.lock" or f.endswith("/flake.lock")), "flake.lock")
    try:
        try:
            old_bytes: bytes | None = await github.file_at(path, pr.base_sha)
        except NfuError as exc:
            if getattr(exc, "status", None) != 404:
                raise
            old_bytes = None
        new_lock = flakelock.parse_lock(await github.file_at(path, pr.head_sha))
        old_lock = flakelock.parse_lock(old_bytes if old_bytes is not None else
                                        {"nodes": {"root": {"inputs": {}}}, "root": "root", "version": 7})
        changes = flakelock.diff(old_lock, new_lock)
        return flakelock.render_summary(changes), flakelock.headline(changes, old_lock, new_lock)
    except (NfuError, AttributeError) as exc:
        log.info("no lock diff for PR #%s: %s", getattr(pr, "number", "?"), exc)
        return None


async def pr_context(github: Any, pr: Any) -> dict[str, Any]:
    """What a deploy of ``pr`` is about (title, URL, revs, lock diff, headline), read from GitHub."""
    found = await lock_diff_for(github, pr)
    return {"title": pr.title, "url": pr.html_url, "head_sha": pr.head_sha, "base_sha": pr.base_sha,
            "lock_diff": found[0] if found else "", "headline": (found[1] or "") if found else ""}


def record_context(store: Any, run_id: int, context: Mapping[str, Any]) -> None:
    """Journal a run's ``context`` step (nothing when the run already finished, e.g. a refused merge)."""
    try:
        store.record(run_id, "context", **context)
    except StateError:
        pass


def _context_from(state: Any, head_sha: str) -> dict[str, Any] | None:
    """The context of a run from the service's explained PR, when it explains that head."""
    if state is None or state.pr.head_sha != head_sha or state.explanation is None:
        return None
    exp = state.explanation
    return {"title": state.pr.title, "url": state.pr.html_url, "head_sha": state.pr.head_sha,
            "base_sha": state.pr.base_sha, "lock_diff": exp.summary_text or "", "headline": exp.headline or "",
            "nixpkgs": exp.nixpkgs_headline or ""}


def attach_recorder(service: Any) -> Callable[[], None]:
    """Journal a ``context`` step for each new deploy run of ``service``; returns the unsubscriber."""
    from nfu_tui.core.engine import RunStarted

    def record(run_id: int, context: Mapping[str, Any]) -> None:
        record_context(service.store, run_id, context)

    async def fetch(run_id: int, pr_number: int, head_sha: str) -> None:
        try:
            pr = await service.github.get_pull(pr_number, wait_mergeable=False)
        except NfuError as exc:
            log.info("no context for run #%s: %s", run_id, exc)
            return
        record(run_id, {**await pr_context(service.github, pr), "head_sha": head_sha})

    def on_event(event: Any) -> Any:
        payload = getattr(event, "payload", None)
        if (event.kind != "deploy" or not isinstance(payload, RunStarted) or payload.resumed or payload.run_id is None
                or payload.subject):  # a converge run is about no PR
            return None
        context = _context_from(service.pr_state(payload.pr_number), payload.head_sha)
        if context is not None:
            record(payload.run_id, context)
            return None
        if service.github is None:
            return None
        return fetch(payload.run_id, payload.pr_number, payload.head_sha)

    return service.subscribe(on_event)


# ================================================================== records


@dataclass(frozen=True, slots=True)
class HostRecord:
    host: str
    outcome: str
    phase: str = ""
    detail: str = ""
    log_excerpt: tuple[str, ...] = ()
    executed: str = ""  # the switch's result; "" when no switch ran
    reached: bool | None = None  # the host's generation was the target
    verified: bool | None = None  # the dashboard confirmed it (System ok, tests where they ran)
    proven: bool = False  # a failure backed by evidence (the only kind ever rolled back)

    def facts(self) -> str:
        from nfu_tui.core.engine import HostOutcome, Outcome

        return HostOutcome(self.host, Outcome.OK, executed=self.executed, reached=self.reached,
                           verified=self.verified).facts()


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: datetime
    step: str
    host: str | None
    text: str


@dataclass(frozen=True)
class RunRecord:
    """One run as the history shows it."""

    id: int
    kind: str
    pr: int | None
    title: str
    trigger: str
    actor: str
    github_login: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    head_sha: str | None
    merge_sha: str | None
    summary: str
    headline: str
    lock_diff: str
    plan: tuple[str, ...]
    hosts: tuple[HostRecord, ...]
    related_runs: tuple[int, ...]
    timeline: tuple[TimelineEntry, ...]
    branch: str = ""  # converge runs: the default branch whose head they deploy
    origin: str = ""  # "" = this machine's journal; else where it ran (a GitHub deployment of another client)
    next_step: str = ""  # a run stopped on unverified canaries (not continued yet): how to deploy the rest

    @property
    def ref(self) -> str:
        """``#12`` for a journaled run, ``elsewhere`` for one another client recorded on GitHub."""
        return "elsewhere" if self.origin else f"#{self.id}"

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for h in self.hosts:
            counts[h.outcome] = counts.get(h.outcome, 0) + 1
        return counts

    def hosts_line(self) -> str:
        """``10 ok, 1 failed`` (or ``no host``)."""
        return ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.counts.items())) or "no host"

    def what(self) -> str:
        """``deploy PR #42`` / ``converge to main 9f8e7d6`` / ``revert of PR #42`` / ``rollback web-01``."""
        if self.kind == "rollback":
            return "rollback " + ", ".join(h.host for h in self.hosts) if self.hosts else "rollback"
        if self.kind == "revert":
            return f"revert of PR #{self.pr}" if self.pr else "revert"
        if self.kind == "converge":
            return f"converge to {self.branch or 'the default branch'} {(self.head_sha or '')[:7]}".rstrip()
        return f"deploy PR #{self.pr}" if self.pr else "deploy"


@dataclass(frozen=True)
class History:
    runs: tuple[RunRecord, ...]
    audit: tuple[Any, ...]  # nfu_tui.core.store.AuditEntry, newest first
    generated_at: datetime
    undelivered: tuple[Any, ...] = ()  # nfu_tui.core.store.OutboxEntry: notifications not delivered yet


def step_text(step: str, data: Mapping[str, Any], host: str | None) -> str:
    """A journal step as one human line."""
    who = f"{host} " if host else ""
    sha = str(data.get("sha", ""))[:7]
    texts: dict[str, Callable[[], str]] = {
        "merge_requested": lambda: f"merge requested (head {sha})" if sha else "merge requested",
        "merged": lambda: f"merged as {sha}" + (f" ({data['note']})" if data.get("note") else ""),
        "merge_refused": lambda: f"merge refused: {data.get('reason', '')}",
        "merge_failed": lambda: f"merge failed: {data.get('error', '')}",
        "host_started": lambda: f"{who}{data.get('phase', '')} started" + (" (force)" if data.get("force") else ""),
        "command_dispatched": lambda: f"{who}{data.get('phase', '')} command {data.get('command_id', '')}",
        "pull_done": lambda: f"{who}pull done" + (f" ({data['detail']})" if data.get("detail") else ""),
        "switch_done": lambda: f"{who}switch {str(data.get('executed', '')).lower() or 'done'}; verifying",
        "switch_deferred": lambda: f"{who}pulled; its switch waits: {data.get('reason', '')}",
        "host_requeued": lambda: f"{who}queued again: {data.get('reason', '')}",
        "host_finished": lambda: f"{who}{data.get('outcome', '')}" + (f" ({data['phase']})" if data.get("phase")
                                                                        and data.get("outcome") != "ok" else "")
        + (f" — {data['detail']}" if data.get("detail") else ""),
        "canary_wait": lambda: f"waiting for canaries {', '.join(data.get('hosts') or [])} until "
                               f"{_short_time(data.get('until'))}",
        "canary_gate": lambda: "canaries healthy" if data.get("passed") else
        "canary gate failed: " + "; ".join(data.get("problems") or []),
        "canary_accepted": lambda: f"continued from run #{data.get('from_run')} by {data.get('actor', '?')}: "
                                   f"canaries {', '.join(data.get('hosts') or [])} not verified, accepted",
        "paused": lambda: "paused: no new host starts" + (f" ({data['reason']})" if data.get("reason") else ""),
        "resumed": lambda: "resumed" + (f" by {data['actor']}" if data.get("actor") else ""),
        "suspended": lambda: f"suspended: {data.get('reason', '')}",
        "shutdown_requested": lambda: f"shutdown requested ({data.get('reason', '')})",
        "waiting": lambda: f"waiting for offline host(s): {', '.join(data.get('hosts') or [])}",
        "cancel_requested": lambda: "cancel requested" + (f"; still running: {', '.join(data['running'])}"
                                                          if data.get("running") else ""),
        "context": lambda: f"about: {data.get('title') or 'PR'}" + (f" — {data['headline']}" if data.get("headline")
                                                                      else ""),
        "revert_requested": lambda: f"revert of PR #{data.get('pr')} requested" + (" (again)" if data.get("repeated")
                                                                                  else ""),
        "revert_opened": lambda: f"revert PR #{data.get('revert_pr')} opened ({str(data.get('head_sha', ''))[:7]})",
        "redeploy_requested": lambda: f"redeploying {', '.join(data.get('hosts') or []) or 'no host'} at the revert",
        "redeploy_started": lambda: f"redeploy run #{data.get('run')} started",
        "revert_redeploy": lambda: f"redeploy of revert run #{data.get('parent')}",
    }
    make = texts.get(step)
    if make is not None:
        return make()
    extra = ", ".join(f"{k}={v}" for k, v in sorted(data.items()) if k != "host")
    return f"{who}{step.replace('_', ' ')}" + (f" ({extra})" if extra else "")


def _short_time(value: Any) -> str:
    try:
        return datetime.fromisoformat(str(value)).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return str(value)


def _plan_lines(kind: str, plan: Mapping[str, Any]) -> tuple[str, ...]:
    if kind in ("deploy", "converge"):
        from nfu_tui.core.plan import DeployPlan

        try:
            return tuple(DeployPlan.from_dict(plan).describe())
        except (KeyError, TypeError, ValueError):
            return ()
    if kind == "revert":
        lines = [f"Strategy {plan.get('strategy', '?')}: revert PR #{plan.get('reverts_pr')} "
                 f"(merge {str(plan.get('reverts_merge_sha', ''))[:7]}) after run #{plan.get('failed_run')} failed"]
        failed = plan.get("failed_hosts") or {}
        if failed:
            lines.append("Failed: " + "; ".join(f"{h} ({why})" for h, why in failed.items()))
        hosts = plan.get("hosts") or []
        if plan.get("strategy") == "revert-commit":
            lines.append("Roll back (pull + switch at the revert): " + (", ".join(hosts) or "no host had switched"))
        return tuple(lines)
    if kind == "rollback":
        return (f"Dashboard op {plan.get('op', 'rollback')} on {', '.join(plan.get('hosts') or [])}",)
    return ()


def record_of(run: Any, audit: Iterable[Any] = (), rollbacks: Iterable[int] = ()) -> RunRecord:
    """A :class:`RunRecord` from a stored run with its steps and the audit entries (any order);
    ``rollbacks``: the revert runs started after this (failed) run (see :func:`rollbacks_of`)."""
    from nfu_tui.core.engine import HostOutcome, Outcome, continuable, continue_command, continued_already

    OUTCOMES = {o.value for o in Outcome}  # noqa: N806
    audit = tuple(audit)
    context: Mapping[str, Any] = {}
    hosts: dict[str, HostRecord] = {}
    related: list[int] = list(rollbacks)
    timeline = []
    plan = run.plan or {}
    if run.kind == "revert" and plan.get("failed_run"):
        related.append(int(plan["failed_run"]))
    for step in run.steps or ():
        data = step.data
        if step.step == "context":
            context = data
        elif step.step == "host_finished" and step.host:
            hosts.pop(step.host, None)
            outcome = HostOutcome.from_journal(step.host, data) if data.get("outcome") in OUTCOMES else None
            hosts[step.host] = HostRecord(step.host, str(data.get("outcome", "")), str(data.get("phase", "")),
                                          str(data.get("detail", "")),
                                          tuple(str(x) for x in data.get("log_excerpt") or ()),
                                          outcome.executed if outcome else "", outcome.reached if outcome else None,
                                          outcome.verified if outcome else None,
                                          outcome.proven_failure if outcome else False)
        elif step.step == "waiting":  # the run ended with these hosts offline, queued for later
            for host in data.get("hosts") or ():
                if host not in hosts or hosts[host].outcome == "queued":
                    hosts[host] = HostRecord(str(host), "queued", "", "offline: deployed when it is back online")
        elif step.step == "redeploy_started":
            related.append(int(data["run"]))
        elif step.step == "revert_redeploy":
            related.append(int(data["parent"]))
        timeline.append(TimelineEntry(step.at, step.step, step.host, step_text(step.step, data, step.host)))
    login = next((a.github_login for a in sorted(audit, key=lambda a: a.id)
                  if a.github_login and _audit_run(a) == run.id), None)
    status = run.status
    if status == "running" and run.steps and run.steps[-1].step == "waiting":
        status = "waiting"  # every reachable host is done; queued offline hosts remain
    if not run.finished and run.kind in ("deploy", "converge"):  # every host of a paused or waiting run, with its state
        for host, state in run_hosts(run).items():
            if host not in hosts:
                hosts[host] = HostRecord(host, state)
    return RunRecord(
        id=run.id, kind=run.kind, pr=run.pr, title=str(context.get("title", "")), trigger=run.trigger,
        actor=run.actor, github_login=login, status=status, started_at=run.created_at,
        finished_at=run.finished_at, head_sha=run.head_sha, merge_sha=run.merge_sha, summary=run.summary,
        headline=str(context.get("headline", "")), lock_diff=str(context.get("lock_diff", "")),
        plan=_plan_lines(run.kind, plan), hosts=tuple(hosts.values()), related_runs=tuple(dict.fromkeys(related)),
        timeline=tuple(timeline), branch=str(plan.get("branch", "")),
        next_step=continue_command(run.id) if run.status == "unverified" and continuable(run)
        and not continued_already(run.id, audit) else "",
    )


def run_hosts(run: Any) -> dict[str, str]:
    """host -> its state in a run loaded with its steps: the outcome of a finished host, else where it
    stands (``pulled, switch waiting``, ``in flight (pull)``, ``queued (offline)``, ``not started``)."""
    from nfu_tui.core.engine import JournalState

    plan = run.plan or {}
    order = [str(e.get("host")) for key in ("entries", "queued") for e in plan.get(key) or ()]
    queued = {str(e.get("host")) for e in plan.get("queued") or ()}
    st = JournalState.from_run(run)
    found: dict[str, str] = {}
    for host in order + [h for h in st.finished if h not in order]:
        if host in st.finished:
            found[host] = st.finished[host].outcome.value
        elif st.in_flight.get(host, ("",))[0] == "switch":
            found[host] = "interrupted (switch)"
        elif host in st.pulled:
            found[host] = "pulled, switch waiting"
        elif host in st.in_flight:
            found[host] = f"interrupted ({st.in_flight[host][0]})"
        elif host in queued:
            found[host] = "queued (offline)"
        else:
            found[host] = "not started"
    return found


def resume_command(run: Any) -> str:
    """The command that continues an unfinished run from the CLI; "" for a revert (the TUI or ``nfu-tui auto``)."""
    if run.kind in ("deploy", "converge"):
        return f"nfu-tui deploy --resume {run.id}"
    if run.kind == "rollback":
        return f"nfu-tui rollback --resume {run.id}"
    return ""


def open_run(run: Any) -> dict[str, Any]:
    """An unfinished run (loaded with its steps) for ``status``: its state — ``paused`` (maintenance
    window), ``waiting`` (offline hosts), ``interrupted`` (automation resumes it) or ``blocked`` (a
    manual run: the admin resumes it) —, why, what to do next, and every host with its state."""
    steps = list(run.steps or ())
    last = steps[-1] if steps else None
    waiting = list(last.data.get("hosts") or []) if last is not None and last.step == "waiting" else []
    suspended = next((s for s in reversed(steps) if s.step in ("suspended", "paused", "resumed")), None)
    reason = str(suspended.data.get("reason", "")) if suspended is not None and suspended.step != "resumed" else ""
    if waiting:
        state, reason = "waiting", f"waiting for {', '.join(waiting)} to come back online"
        from nfu_tui.core.automation import run_info

        next_ = ("automation resumes it when they are back" if run_info(run).resumed_when_back else
                 f"once they are back: {resume_command(run) or 'resume it'} (or the TUI); automation resumes only "
                 "its own runs")
    elif run.status == "paused" or "maintenance window" in reason:
        state = "paused"
        next_ = f"automation resumes it in the next window; now: {resume_command(run) or 'the TUI'}"
    elif run.trigger == "auto":
        state, reason = "interrupted", reason or "interrupted"
        next_ = "automation resumes it"
    else:
        state, reason = "blocked", reason or "interrupted"
        next_ = (f"{resume_command(run)} (or the TUI)" if resume_command(run) else "resume it in the TUI") + (
            f", or nfu-tui deploy --abandon {run.id}")
    if run.kind in ("deploy", "converge"):
        hosts = run_hosts(run)
    else:
        plan = run.plan or {}
        hosts = {str(h): ("waiting (offline)" if h in waiting else "to roll back") for h in plan.get("hosts") or ()}
    return {"id": run.id, "kind": run.kind, "pr": run.pr, "trigger": run.trigger, "state": state, "reason": reason,
            "next": next_, "hosts": [{"host": h, "state": st} for h, st in hosts.items()]}


def attention_text(runs: Iterable[Any], undelivered: int, *, deploying: bool = False, latest: Any = None) -> str:
    """The header's short note on what waits for attention: ``run #12 paused · ✉ 1 unsent`` ("" when
    nothing). ``deploying``: a deploy runs now somewhere, so an unfinished run is not taken as interrupted.
    ``latest``: the newest deploy or converge run; when it ended ``unknown`` (some host's outcome could not be
    established, nothing was rolled back) it is named until a newer run replaces it."""
    shown = [r for r in (open_run(run) for run in runs)
             if r["state"] in ("paused", "waiting") or (r["state"] == "blocked" and not deploying)]
    parts = [f"run #{r['id']} {r['state']}" for r in shown[:2]]
    if latest is not None and latest.status == "unknown" and not deploying:
        parts.insert(0, f"run #{latest.id} outcome unknown")
    if len(shown) > 2:
        parts.append(f"{len(shown) - 2} more open")
    if undelivered:
        parts.append(f"✉ {undelivered} unsent")
    return " · ".join(parts)


def _audit_run(entry: Any) -> int | None:
    value = entry.details.get("run") if isinstance(entry.details, Mapping) else None
    return value if isinstance(value, int) else None


def rollbacks_of(store: Any, limit: int = 200) -> dict[int, list[int]]:
    """failed run id -> the revert runs started for it (the revert names its failed run in its plan)."""
    found: dict[int, list[int]] = {}
    for r in store.list_runs(limit):
        if r.kind == "revert" and isinstance((r.plan or {}).get("failed_run"), int):
            found.setdefault(r.plan["failed_run"], []).insert(0, r.id)
    return found


def load_run(store: Any, run_id: int) -> RunRecord:
    """One run with its links both ways (StateError when unknown)."""
    return record_of(store.get_run(run_id), store.audit_entries(limit=1000), rollbacks_of(store).get(run_id, ()))


def load_history(store: Any, limit: int = 20) -> History:
    """The newest ``limit`` runs (with steps) and audit entries, and the undelivered notifications."""
    audit = store.audit_entries(limit=max(limit * 10, 200))
    links = rollbacks_of(store)
    runs = tuple(record_of(store.get_run(r.id), audit, links.get(r.id, ())) for r in store.list_runs(limit))
    return History(runs, tuple(audit[:limit]), datetime.now(timezone.utc),
                   tuple(store.undelivered_notifications()))


async def load_history_async(store: Any, limit: int = 20, deployments: Any = None) -> History:
    """:func:`load_history` off the event loop (SQLite reads), with the runs other clients recorded
    on GitHub when ``deployments`` (:class:`~nfu_tui.core.deployments.FleetDeployments`) is given."""
    history = await asyncio.to_thread(load_history, store, limit)
    if deployments is None:
        return history
    remote = [remote_record(r) for r in await deployments.remote_runs(limit)]
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    runs = sorted([*history.runs, *remote], key=lambda r: r.started_at or epoch, reverse=True)[:limit]
    return History(tuple(runs), history.audit, history.generated_at)


REMOTE_STATUS = {"success": "succeeded", "failure": "failed", "error": "failed", "inactive": "inactive",
                 "in_progress": "running", "queued": "running", "pending": "running"}


def remote_status(state: str, summary: str) -> str:
    """A GitHub deployment state as a run status: ``error`` is an ``unknown`` or ``unverified`` run when its
    description (the run's summary, ``PR #42: unknown (…)``) says so (see core.deployments.FINAL_STATES)."""
    said = summary.partition(": ")[2].split(" ", 1)[0] if state == "error" else ""
    return said if said in ("unknown", "unverified") else REMOTE_STATUS.get(state, state)


def remote_record(r: Any) -> RunRecord:
    """A :class:`RunRecord` of a run another client recorded as a GitHub deployment."""
    status = remote_status(r.state, r.summary)
    where = f"GitHub deployment {r.deployment_id}" + (f", their run #{r.run}" if r.run else "")
    return RunRecord(
        id=r.deployment_id, kind="deploy", pr=r.pr, title="", trigger=r.trigger or "?", actor=r.actor,
        github_login=r.creator or None, status=status, started_at=r.created_at,
        finished_at=r.updated_at if status != "running" else None, head_sha=None, merge_sha=r.sha or None,
        summary=r.summary, headline="", lock_diff="",
        plan=tuple(f"{i}. {h}" for i, h in enumerate(r.hosts, 1)), hosts=(), related_runs=(),
        timeline=(), origin=where,
    )


# ================================================================== output


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def run_json(r: RunRecord) -> dict[str, Any]:
    return {
        "id": r.id, "kind": r.kind, "pr": r.pr, "title": r.title, "trigger": r.trigger, "actor": r.actor,
        "github_login": r.github_login, "status": r.status, "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at), "head_sha": r.head_sha, "merge_sha": r.merge_sha,
        "summary": r.summary, "headline": r.headline or None, "lock_diff": r.lock_diff, "plan": list(r.plan),
        "hosts": [{"host": h.host, "outcome": h.outcome, "phase": h.phase, "detail": h.detail,
                   "log_excerpt": list(h.log_excerpt), "executed": h.executed, "reached": h.reached,
                   "verified": h.verified, "proven": h.proven} for h in r.hosts],
        "related_runs": list(r.related_runs), "origin": r.origin or None,
        "timeline": [{"at": _iso(t.at), "step": t.step, "host": t.host, "text": t.text} for t in r.timeline],
    }


def audit_json(a: Any) -> dict[str, Any]:
    return {"id": a.id, "at": _iso(a.at), "action": a.action, "actor": a.actor, "github_login": a.github_login,
            "pr": a.pr, "details": a.details}


def history_json(h: History) -> dict[str, Any]:
    """The ``nfu-tui.history/1`` document (see the module docs)."""
    return {"schema": SCHEMA, "generated_at": _iso(h.generated_at), "runs": [run_json(r) for r in h.runs],
            "audit": [audit_json(a) for a in h.audit],
            "undelivered_notifications": [
                {"id": e.id, "title": e.title, "created_at": _iso(e.created_at), "attempts": e.attempts,
                 "last_error": e.last_error, "next_attempt_at": _iso(e.next_attempt_at)} for e in h.undelivered]}


def local_time(dt: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return dt.astimezone().strftime(fmt) if dt is not None else "—"


def who(r: RunRecord) -> str:
    return r.actor + (f" (GitHub {r.github_login})" if r.github_login else "") + (f" — {r.origin}" if r.origin else "")


def run_heading(r: RunRecord) -> str:
    """``#12 deploy PR #42 "flake.lock: Update" — succeeded (auto)``."""
    title = f' "{r.title}"' if r.title else ""
    return f"{r.ref} {r.what()}{title} — {r.status} ({r.trigger})"


def format_run(r: RunRecord, *, details: bool = True) -> list[str]:
    """Text lines for one run: heading, when/who, what, hosts (failures with log excerpts)."""
    lines = [run_heading(r)]
    finished = f", finished {local_time(r.finished_at)}" if r.finished_at else ""
    lines.append(f"  started {local_time(r.started_at)}{finished} · by {who(r)}")
    if r.headline:
        lines.append(f"  {r.headline}")
    revs = []
    if r.head_sha:
        revs.append(f"target {r.head_sha[:7]} ({r.branch}'s head; no merge)" if r.kind == "converge"
                    else f"head {r.head_sha[:7]}")
    if r.merge_sha:
        revs.append(f"merged as {r.merge_sha[:7]}")
    if r.related_runs:
        revs.append("related runs " + ", ".join(f"#{n}" for n in r.related_runs))
    if revs:
        lines.append("  " + " · ".join(revs))
    lines.append(f"  hosts: {r.hosts_line()}")
    for h in r.hosts:
        phase = f" ({h.phase})" if h.phase else ""
        facts = f"  [{h.facts()}]" if h.facts() else ""
        if h.outcome == "failed":
            proof = "" if h.proven else " (no proven failure: not rolled back)"
            lines.append(f"    ✗ {h.host} failed{phase}: {h.detail}{proof}{facts}")
            lines.extend(f"        │ {line}" for line in h.log_excerpt[-8:])
        elif h.outcome in ("unknown", "unverified", "held"):
            glyph = {"unknown": "?", "unverified": "≈", "held": "⏸"}[h.outcome]
            lines.append(f"    {glyph} {h.host} {h.outcome}{phase}: {h.detail}{facts}")
        elif facts:
            lines.append(f"    {'✓' if h.outcome == 'ok' else '·'} {h.host} {h.outcome}{facts}")
    queued = [h.host for h in r.hosts if h.outcome == "queued"]
    if queued:
        lines.append(f"    ◌ queued (offline, deployed when back online): {', '.join(queued)}")
    if r.summary:
        lines.append(f"  summary: {r.summary}")
    if r.next_step:
        lines.append(f"  next: {r.next_step}")
    if details:
        if r.lock_diff:
            lines.append("  lock diff:")
            lines.extend(f"    {line}" for line in r.lock_diff.rstrip("\n").splitlines())
        if r.timeline:
            lines.append("  timeline:")
            lines.extend(f"    {local_time(t.at, '%H:%M:%S')}  {t.text}" for t in r.timeline)
    return lines


def audit_line(a: Any) -> str:
    who_ = a.actor + (f" ({a.github_login})" if a.github_login else "")
    pr = f" PR #{a.pr}" if a.pr else ""
    details = audit_details(a.details)
    return f"{local_time(a.at)}  {a.action}{pr}  {who_}" + (f"  {details}" if details else "")


def audit_details(details: Mapping[str, Any]) -> str:
    """An audit entry's details for people: ``run #7 · merge sha bbbbbbb · outcomes: ok csb0, csb1; failed hsb0``."""
    parts = []
    for key, value in sorted(details.items()):
        label = key.replace("_", " ")
        if value is None or value == "":
            continue  # nothing to tell
        if key == "run" and isinstance(value, int):
            parts.append(f"run #{value}")
        elif isinstance(value, bool):
            parts.append(f"{label} {'yes' if value else 'no'}")
        elif isinstance(value, Mapping):
            parts.append(f"{label}: {_mapping_text(value)}")
        elif isinstance(value, (list, tuple)):
            parts.append(f"{label}: {', '.join(_short(v) for v in value) or 'none'}")
        else:
            parts.append(f"{label} {_short(value)}")
    return " · ".join(parts)


def _mapping_text(value: Mapping[str, Any]) -> str:
    """``{'csb0': 'ok', 'csb1': 'ok', 'hsb0': 'failed'}`` → ``ok csb0, csb1; failed hsb0``."""
    if value and all(isinstance(v, str) for v in value.values()):
        groups: dict[str, list[str]] = {}
        for k, v in value.items():
            groups.setdefault(v, []).append(str(k))
        return "; ".join(f"{v} {', '.join(keys)}" for v, keys in groups.items())
    return ", ".join(f"{k} {_short(v)}" for k, v in value.items()) or "none"


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 40 and all(c in "0123456789abcdef" for c in value):
        return value[:7]
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "…"


def format_history(h: History, *, details: bool = False) -> list[str]:
    """The CLI's text output: the runs (newest first), then the audit trail."""
    lines: list[str] = []
    if not h.runs:
        lines.append("No runs in the journal yet.")
    for r in h.runs:
        lines.extend(format_run(r, details=details))
        lines.append("")
    if h.undelivered:
        lines.append("Undelivered notifications (retried by nfu-tui auto or the TUI; now: nfu-tui notify --retry):")
        lines.extend(f"  {local_time(e.created_at)}  {e.title} — {e.attempts} attempt(s)"
                     + (f", last error {e.last_error}" if e.last_error else "") for e in h.undelivered)
        lines.append("")
    lines.append("Audit trail (newest first):" if h.audit else "The audit trail is empty.")
    lines.extend(f"  {audit_line(a)}" for a in h.audit)
    return lines


# ==================================================== lock diff line classes


def diff_line_kind(line: str) -> str:
    """How the TUI colours a line of nix's lock diff: added | removed | updated | old | new | plain."""
    stripped = line.lstrip()
    if stripped.startswith("• Added input"):
        return "added"
    if stripped.startswith("• Removed input"):
        return "removed"
    if stripped.startswith("• Updated input"):
        return "updated"
    if stripped.startswith("→"):
        return "new"
    if line.startswith("    ") and stripped:
        return "old"
    return "plain"


def classify_diff(text: str) -> list[tuple[str, str]]:
    """(kind, line) for each line of a lock diff; an added input's single line counts as new."""
    result: list[tuple[str, str]] = []
    previous = ""
    for line in text.rstrip("\n").splitlines():
        kind = diff_line_kind(line)
        if kind == "old" and previous == "added":
            kind = "new"
        result.append((kind, line))
        if kind in ("added", "removed", "updated"):
            previous = kind
    return result


__all__ = [
    "History",
    "HostRecord",
    "RunRecord",
    "SCHEMA",
    "TimelineEntry",
    "attach_recorder",
    "audit_json",
    "audit_line",
    "classify_diff",
    "diff_line_kind",
    "format_history",
    "format_run",
    "history_json",
    "load_history",
    "load_history_async",
    "lock_diff_for",
    "record_of",
    "run_heading",
    "resume_command",
    "run_json",
    "step_text",
]
