"""Rolling back: after a failed deploy (``flake_updates.rollback.strategy``) and per host.

Strategies after a deploy run failed on a host (only when the PR was merged):

``revert-commit``
    Open the revert PR (GraphQL ``revertPullRequest``), merge it (sha-guarded), then
    pull + switch the hosts that had switched in the failed run, so they return to
    the previous lock. **CI policy:** the revert restores a lock the fleet ran before
    the failure, so nfu-tui does *not* wait for CI on it; when GitHub refuses the
    merge (405, e.g. branch protection requires checks) it waits for the revert's CI
    to turn green (at most ``ci_timeout``, 30 min by default) and merges then; red or
    missing CI stops the rollback with an alert. The redeploy ignores maintenance
    windows (it is recovery), has no canary wave, and skips held hosts.
``revert-pr``
    Open the revert PR and stop. It is shown like an update PR (the service tracks
    it) and the admin merges it from the TUI; automation merges nothing else while it
    is open.
``alert-only``
    Notify (and comment on the PR); leave everything as it is.

The hosts rolled back are every host that ran (or may run) the bad generation
(:func:`rollback_targets`): its outcome is ``ok``, or its switch was started in the failed
run, whatever happened after (failed health check, went offline, unknown outcome), unless
the fleet shows the switch failed (System ``error`` since it started). Hosts whose pull
failed never switched and are named in the summary. An offline host is queued: the
redeploy ends ``waiting``, the revert run journals ``waiting(hosts)`` and stays open (its
notification says so) until the host is back and rolled back — automation resumes it
then; it is never ``succeeded`` while a host is still on the bad generation. Held hosts
are skipped and named; the run is then not ``succeeded`` either.

Journal: a ``revert`` run (``plan`` = strategy, failed run, reverted PR and merge
sha, hosts) with the steps ``revert_requested`` → ``revert_opened(revert_pr,
head_sha, url, found)`` → ``merge_requested`` → ``merged(sha)`` → ``redeploy_requested(hosts)``
→ ``redeploy_started(run)``; the redeploy is an engine ``deploy`` run that carries a
``revert_redeploy(parent)`` step. :meth:`RollbackManager.resume` continues from the
last step (a merge request is repeated safely thanks to the sha guard; an
interrupted redeploy is resumed by the engine).

Opening the revert is idempotent: ``revertPullRequest`` is not, and a crash between
``revert_requested`` and GitHub's reply (or a 5xx / lost connection after GitHub acted)
would open a second revert PR on the next attempt. So before asking for one, and again
when asking failed, the open PRs into the base branch are searched for one that reverts
this merge (:func:`find_revert`); one found is journaled (``found: true``) and used.

Per-host rollback (grid / deploy screen after a confirm, ``nfu-tui rollback --host``): the dashboard's
``rollback`` op on one host, journaled as a ``rollback`` run (``host_started``,
``command_dispatched``, ``host_finished``) and audited. It ends ``ok`` when the command succeeded
(the dashboard's post-check: System ok), ``unverified`` when it ran but that check failed (PARTIAL),
``failed`` on ERROR/TIMEOUT, ``unknown`` when it could not be followed to an end. It is never dispatched twice:
``nixos-rebuild --rollback`` again would go back one more generation. Resuming an
interrupted one follows its command or reads the System compartment.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from nfu_tui.core.engine import (
    HostOutcome,
    Outcome,
    RunResult,
    RunStarted,
    RunStatus,
    inert_lines,
    interpret_command,
    interpret_dispatch,
    system_verdict,
)
from nfu_tui.core.notify import LOG_LEVELS, pr_link
from nfu_tui.errors import (
    MergeConflict,
    NfuError,
    NotMergeable,
    StateError,
)
from nfu_tui.models import CIVerdict, Notification, UpdatePR

log = logging.getLogger(__name__)

STRATEGIES = ("revert-commit", "revert-pr", "alert-only")
CI_POLL_SECONDS = 30.0


# ================================================================ pure helpers


def revert_title(original: UpdatePR) -> str:
    """The title nfu-tui gives a revert PR (GitHub's own default, too)."""
    return f'Revert "{original.title}"'


def find_revert(prs: Iterable[UpdatePR], original: UpdatePR) -> UpdatePR | None:
    """The open PR among ``prs`` that reverts the merged ``original`` (the oldest if several), or None.

    ``revertPullRequest`` pushes the branch ``revert-<n>-<headRef>`` (a ``-<k>`` suffix,
    for when that name was taken, is accepted too) and opens the PR into the original's
    base. A revert opened another way counts when it has the revert title and names
    ``#<n>`` in its body (ours does; so does the web UI's default ``Reverts owner/repo#<n>``).
    """
    n = original.number
    branch = re.compile(re.escape(f"revert-{n}-{original.head_ref}") + r"(-\d+)?")
    named = re.compile(rf"#{n}(?!\d)")
    found = [
        pr for pr in prs
        if pr.state == "open" and pr.number != n and (not original.base_ref or pr.base_ref == original.base_ref)
        and (branch.fullmatch(pr.head_ref) or (pr.title == revert_title(original) and named.search(pr.body)))
    ]
    return min(found, key=lambda pr: pr.number, default=None)


def last_outcomes(run: Any) -> dict[str, tuple[str, str, str, tuple[str, ...]]]:
    """host -> (outcome, phase, detail, log excerpt) of its last ``host_finished`` in a run with steps."""
    found: dict[str, tuple[str, str, str, tuple[str, ...]]] = {}
    for step in run.steps or ():
        if step.step == "host_finished" and step.host:
            d = step.data
            found[step.host] = (str(d.get("outcome", "")), str(d.get("phase", "")), str(d.get("detail", "")),
                                tuple(str(x) for x in d.get("log_excerpt") or ()))
    return found


def rollback_targets(run: Any, fleet: Any = None) -> dict[str, str]:
    """host -> what is known of it, for every host of ``run`` that ran (or may run) its generation.

    From the journal: a host whose outcome is ``ok``, or whose switch was started
    (``host_started`` phase ``switch``) whatever happened after — it failed its health
    check, went offline, its outcome is unknown. From the fleet's evidence: a host whose
    switch failed and that reported System ``error`` since the switch started did not
    activate the new generation and is left out. Hosts whose pull failed never switched.
    """
    switch_started: dict[str, Any] = {}
    for step in run.steps or ():
        if step.step == "host_started" and step.host and step.data.get("phase") == "switch":
            switch_started[step.host] = step.at
    found: dict[str, str] = {}
    for host, (outcome, phase, detail, _) in last_outcomes(run).items():
        h = fleet.host(host) if fleet is not None else None
        if outcome == Outcome.OK.value:
            state = "switched"
        elif phase == "health":
            state = f"switched, then failed its health check ({detail})" if detail else "switched, then unhealthy"
        elif host in switch_started:
            if outcome == Outcome.FAILED.value and system_verdict(h, switch_started[host]) is False:
                continue  # the fleet says the switch failed: still on the previous generation
            state = f"switch {outcome}" + (f" ({detail})" if detail else "") + ": it may run the new generation"
        else:
            continue
        if h is not None and not h.online:
            state += "; offline now"
        found[host] = state
    return found


def switched_hosts(run: Any, fleet: Any = None) -> list[str]:
    """The hosts of :func:`rollback_targets`."""
    return list(rollback_targets(run, fleet))


def failed_hosts(run: Any) -> dict[str, str]:
    """host -> "phase: detail" for the hosts whose failure in ``run`` is proven (command ERROR/TIMEOUT/KILLED,
    failed tests, System error): nothing else is ever rolled back. Unknown outcomes are not failures."""
    proven = {s.host: HostOutcome.from_journal(s.host, s.data).proven_failure
              for s in run.steps or () if s.step == "host_finished" and s.host}  # the last one counts
    return {h: f"{phase}: {detail}" if phase else detail
            for h, (outcome, phase, detail, _) in last_outcomes(run).items()
            if outcome == Outcome.FAILED.value and proven.get(h)}


@dataclass
class RevertJournal:
    """What a ``revert`` run's journal says has happened (pure fold)."""

    strategy: str
    failed_run: int
    reverts_pr: int
    reverts_merge_sha: str
    hosts: tuple[str, ...]
    failed: Mapping[str, str] = field(default_factory=dict)  # host -> why it failed in the failed run
    states: Mapping[str, str] = field(default_factory=dict)  # host -> what was known of it (rollback_targets)
    requested: bool = False
    revert_pr: int | None = None
    revert_head: str = ""
    revert_url: str = ""
    merge_requested: bool = False
    merge_sha: str = ""
    redeploy_requested: bool = False
    redeploy_run: int | None = None

    @classmethod
    def from_run(cls, run: Any) -> "RevertJournal":
        plan = run.plan or {}
        j = cls(
            strategy=str(plan.get("strategy", "revert-commit")),
            failed_run=int(plan.get("failed_run", 0)),
            reverts_pr=int(plan.get("reverts_pr") or run.pr or 0),
            reverts_merge_sha=str(plan.get("reverts_merge_sha", "")),
            hosts=tuple(plan.get("hosts") or ()),
            failed=dict(plan.get("failed_hosts") or {}),
            states=dict(plan.get("host_states") or {}),
        )
        for step in run.steps or ():
            d = step.data
            if step.step == "revert_requested":
                j.requested = True
            elif step.step == "revert_opened":
                j.revert_pr, j.revert_head, j.revert_url = int(d["revert_pr"]), str(d.get("head_sha", "")), str(
                    d.get("url", ""))
            elif step.step == "merge_requested":
                j.merge_requested = True
            elif step.step == "merged":
                j.merge_sha = str(d.get("sha", ""))
            elif step.step == "redeploy_requested":
                j.redeploy_requested = True
            elif step.step == "redeploy_started":
                j.redeploy_run = int(d["run"])
        return j


def _stored_result(run: Any) -> RunResult:
    """A finished deploy run of the journal as a :class:`~nfu_tui.core.engine.RunResult`."""
    found = last_outcomes(run)
    status = RunStatus(run.status) if run.status in {s.value for s in RunStatus} else RunStatus.FAILED
    outcomes = tuple(HostOutcome(h, Outcome(o) if o in {x.value for x in Outcome} else Outcome.FAILED, phase, detail)
                     for h, (o, phase, detail, _) in found.items())
    return RunResult(run.id, status, run.pr or 0, run.merge_sha or "", run.summary, outcomes)


def host_rollback_refusal(host_id: str, host: Any) -> str:
    """Why the dashboard cannot roll ``host_id`` back now ("" when it can); ``host`` as the fleet knows it."""
    if host is None:
        return f"{host_id} is not known to the dashboard."
    if not host.online:
        return f"{host_id} is offline: the dashboard cannot run a rollback on it."
    return ""


def host_rollback_question(host_id: str, host: Any, *, held: bool, hold_hint: str) -> str:
    """What a per-host rollback does, asked before it (the TUI's ``R`` and ``nfu-tui rollback --host``).
    ``hold_hint``: how to hold the host where the question is asked (``h``, ``nfu-tui hold web-01``)."""
    question = (
        f"Roll {host_id} back to its previous NixOS generation?\n\n"
        f"The dashboard runs its rollback op on {host_id} only; nothing changes on GitHub. "
        "The rollback is journaled and audited; if nfu-tui is interrupted it is followed, never sent twice "
        "(a second rollback would go back one more generation)."
    )
    if host is not None and host.busy:
        question += f"\n\n{host_id} is running a command now; the dashboard refuses a second one."
    if not held:
        question += f"\n\nTo keep the next deploy off {host_id}, hold it too ({hold_hint})."
    return question


def rollback_plan(plan: Any) -> Any:
    """A redeploy plan without a canary wave (recovery must not wait for canaries) that waits for
    offline hosts whatever ``deploy_strategy`` says (a rollback must reach every host)."""
    return replace(plan, strategy="all", canary_wait_minutes=0.0,
                   entries=tuple(replace(e, wave=1) for e in plan.entries))


def recovery_config(config: Any) -> Any:
    """``config`` with ``deploy_strategy = "all"``: a rollback queues offline hosts instead of skipping them."""
    fu = config.flake_updates
    auto = fu.automation.model_copy(update={"deploy_strategy": "all"})
    return config.model_copy(update={"flake_updates": fu.model_copy(update={"automation": auto})})


# ================================================================== results


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    strategy: str
    ok: bool
    summary: str
    run_id: int | None = None
    revert_pr: int | None = None
    redeploy_run: int | None = None
    suspended: bool = False  # interrupted (shutdown): the journal is resumable
    waiting: tuple[str, ...] = ()  # offline hosts still on the bad generation: the run stays open


@dataclass(frozen=True, slots=True)
class HostRollbackResult:
    host: str
    ok: bool
    detail: str
    run_id: int
    log_excerpt: tuple[str, ...] = ()
    outcome: str = ""  # ok | unverified | failed | unknown (no evidence either way: verify the host, never roll
    # back again)


class _Failed(Exception):
    """Internal: the rollback stops here with a message."""


# ================================================================== manager


Notify = Callable[[Notification], Awaitable[None] | None]


class RollbackManager:
    """Rollbacks against GitHub, the dashboard and the journal (ports like the engine's).

    ``run_engine(start)`` runs ``start(engine)`` (an awaitable returning a
    :class:`~nfu_tui.core.engine.RunResult`) on a fresh engine and returns its result,
    or None when the run was suspended (shutdown). ``lock`` guards a whole revert
    (merge + redeploy) across processes; pass :class:`contextlib.nullcontext` when the
    caller already holds the deploy lock.
    """

    def __init__(
        self,
        github: Any,
        dashboard: Any,
        fleet: Any,
        store: Any,
        config: Any,
        *,
        run_engine: Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]] | None = None,
        state: Any = None,
        notify: Notify | None = None,
        lock: Callable[[], Any] = contextlib.nullcontext,
        on_revert_opened: Callable[[int], None] | None = None,
        sink: Callable[..., None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        ci_timeout: float = 30 * 60.0,
        command_timeout: float = 16 * 60.0,
        resume_lookup: float = 2.0,
    ) -> None:
        self.github = github
        self.dashboard = dashboard
        self.fleet = fleet
        self.store = store
        self.config = config
        self.state = state
        self._run_engine = run_engine
        self._notify = notify
        self._lock = lock
        self._on_revert_opened = on_revert_opened
        self._sink = sink or (lambda event, level="info", **fields: None)
        self._sleep = sleep
        self.ci_timeout = ci_timeout
        self.command_timeout = command_timeout
        self.resume_lookup = resume_lookup
        self._login: str | None = None

    @classmethod
    def for_service(
        cls,
        service: Any,
        *,
        run_engine: Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]] | None = None,
        lock: Callable[[], Any] | None = None,
        notify: Notify | None = None,
        **kw: Any,
    ) -> "RollbackManager":
        """Wire to a :class:`~nfu_tui.core.service.FleetService`.

        Defaults (for the TUI): the manager takes the service's deploy lock itself and
        runs engines from ``service.make_engine``; notifications go to ``service.notify``.
        """
        from nfu_tui.core.store import DeployLock

        async def default_run(start: Callable[[Any], Awaitable[Any]]) -> Any:
            engine = service.make_engine(lock=contextlib.nullcontext)
            service.engine = engine
            return await start(engine)

        if lock is None:
            lock = (lambda: DeployLock(label=service.lock_label)) if run_engine is None else contextlib.nullcontext
        return cls(
            service.github, service.dashboard, service, service.store, service.config,
            run_engine=run_engine or default_run, state=service.state, notify=notify or service.notify, lock=lock,
            on_revert_opened=service.track_pr, **kw,
        )

    # --- shared plumbing ----------------------------------------------------------

    async def _github_login(self) -> str | None:
        if self._login is None:
            with contextlib.suppress(NfuError, AttributeError):
                self._login = await self.github.viewer_login()
        return self._login

    async def _tell(self, n: Notification) -> None:
        self._sink("notify", level=LOG_LEVELS.get(n.severity, "info"), title=n.title, message=n.message,
                   severity=n.severity)
        if self._notify is not None:
            result = self._notify(n)
            if inspect.isawaitable(result):
                await result

    async def _audit(self, action: str, *, actor: str, pr: int | None, details: Mapping[str, Any]) -> None:
        try:
            self.store.audit(action, actor=actor, github_login=await self._github_login(), pr=pr, details=details)
        except (StateError, OSError) as exc:
            log.warning("could not write the audit entry %s: %s", action, exc)

    async def _comment(self, pr: int, body: str) -> None:
        try:
            await self.github.comment(pr, body)
        except NfuError as exc:
            self._sink("comment_failed", level="warning", pr=pr, message=str(exc))

    # --- after a failed deploy ------------------------------------------------------

    async def after_failure(self, failed_run_id: int, *, trigger: str = "manual",
                            actor: str | None = None) -> RollbackOutcome:
        """Apply the configured strategy to a deploy run that failed after its merge."""
        from nfu_tui.core.store import local_actor

        actor = actor or local_actor()
        settings = self.config.flake_updates.rollback
        failed = self.store.get_run(failed_run_id)
        bad = failed_hosts(failed)
        targets = rollback_targets(failed, self.fleet)
        where = ", ".join(bad) or "the run"
        if not settings.enabled:
            self._sink("rollback_disabled", run=failed_run_id)
            return RollbackOutcome("disabled", True, "rollback disabled (flake_updates.rollback.enabled = false)")
        if not failed.merge_sha:
            return RollbackOutcome(settings.strategy, True, "nothing was merged: nothing to roll back")
        if not bad:  # only a proven failure is ever rolled back (an unknown outcome alerts instead)
            self._sink("rollback_refused", run=failed_run_id, reason="no proven failure")
            return RollbackOutcome(settings.strategy, True,
                                   f"run #{failed_run_id} has no proven failure: nothing rolled back")
        if settings.strategy == "alert-only":
            return await self._alert_only(failed, bad, actor)
        with self._lock():
            run_id = self.store.create_run(
                "revert", actor=actor, trigger=trigger, pr=failed.pr,
                plan={"strategy": settings.strategy, "failed_run": failed.id, "reverts_pr": failed.pr,
                      "reverts_merge_sha": failed.merge_sha, "hosts": list(targets), "host_states": targets,
                      "failed_hosts": bad},
            )
            self._sink("rollback_started", run=run_id, strategy=settings.strategy, failed_run=failed.id,
                       failed_hosts=where)
            return await self._continue_revert(run_id, actor)

    async def _alert_only(self, failed: Any, bad: Mapping[str, str], actor: str) -> RollbackOutcome:
        n = failed.pr
        lines = [f"{host}: {why}" for host, why in bad.items()]
        message = ("Rollback strategy alert-only: nothing was reverted or rolled back. "
                   f"Roll the hosts back with `nfu-tui rollback --host {' '.join(bad) or 'HOST'}` (or R on each in "
                   f"the TUI), or hold them (`nfu-tui hold {' '.join(bad) or 'HOST'}`). " + "; ".join(lines))
        github = self.config.github
        await self._tell(Notification(f"PR #{n} deploy failed on {', '.join(bad) or 'a host'} — not rolled back",
                                      message, "error", ["nfu-tui", f"pr-{n}", "rotating_light"],
                                      click=pr_link(github.api_url, github.repo, n or 0),
                                      event_id=f"alert-only:{failed.id}"))
        await self._comment(n, f"nfu-tui: deploy run #{failed.id} failed ({'; '.join(lines) or 'see the journal'}). "
                               "Rollback strategy `alert-only`: nothing was reverted.")
        await self._audit("rollback", actor=actor, pr=n, details={
            "run": failed.id, "strategy": "alert-only", "failed_hosts": dict(bad), "status": "alerted"})
        return RollbackOutcome("alert-only", True, "alerted; nothing rolled back")

    # --- revert runs ----------------------------------------------------------------

    async def resume(self, run_id: int) -> RollbackOutcome:
        """Continue an unfinished ``revert`` or per-host ``rollback`` run from its journal."""
        from nfu_tui.core.store import local_actor

        run = self.store.get_run(run_id)
        if run.finished:
            raise StateError(f"run #{run_id} is already {run.status}; nothing to resume")
        self.store.record(run_id, "resumed", actor=local_actor())
        if run.kind == "rollback":
            result = await self._resume_host_rollback(run)
            return RollbackOutcome("host", result.ok, f"{result.host}: {result.detail}", run_id)
        if run.kind != "revert":
            raise StateError(f"run #{run_id} is a {run.kind}, not a rollback")
        with self._lock():
            return await self._continue_revert(run_id, local_actor())

    async def _continue_revert(self, run_id: int, actor: str) -> RollbackOutcome:
        j = RevertJournal.from_run(self.store.get_run(run_id))
        try:
            if j.revert_pr is None:
                await self._open_revert(run_id, j)
            if j.strategy == "revert-pr":
                summary = (f"revert PR #{j.revert_pr} of PR #{j.reverts_pr} is open; nothing is rolled back until it "
                           f"is merged and deployed: `nfu-tui deploy --pr {j.revert_pr}` (or merge & deploy it in the "
                           "TUI). Automation merges nothing else while it is open.")
                return await self._finish(run_id, j, actor, True, summary, f"PR #{j.reverts_pr} deploy failed: revert "
                                          f"PR #{j.revert_pr} waits for you", "warning", click=j.revert_url)
            if not j.merge_sha:
                await self._merge_revert(run_id, j)
            result = await self._redeploy(run_id, j, actor)
        except (_Failed, NfuError) as exc:
            text = str(exc) if isinstance(exc, _Failed) else f"{exc.title}: {exc}"
            summary = f"rollback of PR #{j.reverts_pr} failed: {text}"
            if j.revert_pr is not None and not j.merge_sha:
                summary += (f" (revert PR #{j.revert_pr} is open: merge it on GitHub, then "
                            f"`nfu-tui deploy --pr {j.revert_pr}`)")
            return await self._finish(run_id, j, actor, False, summary, f"PR #{j.reverts_pr}: rollback failed",
                                      "error", click=j.revert_url)
        if result is None:
            self._sink("rollback_suspended", run=run_id)
            return RollbackOutcome(j.strategy, True, "suspended; resumes from the journal", run_id, j.revert_pr,
                                   j.redeploy_run, suspended=True)
        return await self._report(run_id, j, actor, result)

    async def _report(self, run_id: int, j: RevertJournal, actor: str, result: Any) -> RollbackOutcome:
        """Finish (or keep open, while a host waits) a revert-commit run from its redeploy's result."""
        n = j.reverts_pr

        def named(hosts: Iterable[str]) -> str:
            return "; ".join(f"{h} ({j.states[h]})" if j.states.get(h) else h for h in hosts)

        rolled = result.hosts_with(Outcome.OK)
        waiting = result.hosts_with(Outcome.QUEUED)
        failed = [o for o in result.outcomes if o.outcome is Outcome.FAILED]
        other = [o for o in result.outcomes if o.outcome not in (Outcome.OK, Outcome.QUEUED, Outcome.FAILED)]
        reached = {o.host for o in result.outcomes}
        left_out = [h for h in j.hosts if h not in reached]  # held (the redeploy skips held hosts)
        lines = [f"Reverted PR #{n} with PR #{j.revert_pr} (merged as {j.merge_sha[:7]})."]
        if not j.hosts:
            lines.append(f"No host had switched to PR #{n}: no host needed a rollback.")
        if rolled:
            lines.append(f"Rolled back: {named(rolled)}.")
        if waiting:
            lines.append(f"Still on PR #{n}, offline: {named(waiting)} — rolled back as soon as it reconnects "
                         f"(nfu-tui auto or the TUI resumes run #{run_id}); to give up on it: "
                         f"`nfu-tui deploy --abandon {run_id}`.")
        if failed:
            lines.append("Rollback failed on: " + "; ".join(f"{o.host} ({o.phase}: {o.detail})" for o in failed)
                         + ". Check the host; roll it back with `nfu-tui rollback --host HOST` or from the grid.")
        if other:
            lines.append("Not rolled back: " + "; ".join(o.describe() for o in other) + ".")
        if left_out:
            lines.append(f"Held, not rolled back (still on PR #{n}): {named(left_out)}; release the hold, then "
                         f"`nfu-tui deploy --pr {j.revert_pr} --hosts {','.join(left_out)}`.")
        left = [h for h in j.failed if h not in j.hosts]
        if left:
            lines.append("Left as they are (had not switched): " + "; ".join(f"{h} ({j.failed[h]})" for h in left) + ".")
        summary = " ".join(lines)
        if waiting and not failed and not other:
            run = self.store.get_run(run_id)
            last = run.steps[-1] if run.steps else None
            if last is None or last.step != "waiting" or list(last.data.get("hosts") or ()) != waiting:
                self.store.record(run_id, "waiting", hosts=waiting)
            self._sink("rollback_waiting", level="warning", run=run_id, hosts=waiting)
            await self._tell(Notification(
                f"PR #{n} rollback waiting for {', '.join(waiting)} (offline)", summary, "warning",
                ["nfu-tui", f"pr-{n}", "hourglass"], click=j.revert_url,
                event_id=f"rollback-waiting:{run_id}:{','.join(waiting)}"))
            return RollbackOutcome(j.strategy, True, summary, run_id, j.revert_pr, j.redeploy_run,
                                   waiting=tuple(waiting))
        ok = result.status is RunStatus.SUCCEEDED and not left_out and not waiting
        if ok:
            title = (f"PR #{n} rolled back on {', '.join(rolled)}" if rolled
                     else f"PR #{n} reverted; no host needed a rollback")
        else:
            hosts = [o.host for o in failed + other] + left_out + waiting
            title = (f"PR #{n}: rollback incomplete on {', '.join(hosts)}" if hosts
                     else f"PR #{n}: rollback redeploy {result.status.value}")
        # A redeploy that stopped on an unknown outcome, or was not verified, did not fail: the run says which.
        truthful = (result.status.value if result.status in (RunStatus.UNKNOWN, RunStatus.UNVERIFIED)
                    and not failed and not left_out and not waiting else None)
        return await self._finish(run_id, j, actor, ok, summary, title, "warning" if ok else "error",
                                  click=j.revert_url, status=truthful)

    async def _open_revert(self, run_id: int, j: RevertJournal) -> None:
        original = await self.github.get_pull(j.reverts_pr, wait_mergeable=False)
        if not original.merged or not original.node_id:
            raise _Failed(f"PR #{j.reverts_pr} is not merged on GitHub; there is nothing to revert")
        bad = failed_hosts(self.store.get_run(j.failed_run)) if j.failed_run else {}
        revert = await self._open_revert_of(original)  # a previous attempt (or someone) may have opened it
        found = revert is not None
        if revert is None:
            self.store.record(run_id, "revert_requested", pr=j.reverts_pr, merge_sha=original.merge_commit_sha,
                              repeated=j.requested)
            body = (f"nfu-tui: the deploy of #{j.reverts_pr} (run #{j.failed_run}) failed on "
                    f"{', '.join(bad) or 'a host'}. This reverts it"
                    + (f"; {len(j.hosts)} host(s) that had switched will be rolled back."
                       if j.strategy == "revert-commit" and j.hosts else "."))
            try:
                revert = await self.github.revert_pull(original.node_id, title=revert_title(original), body=body)
            except NfuError:
                # A 5xx or a lost connection does not say GitHub did nothing: look before failing.
                revert = await self._open_revert_of(original)
                if revert is None:
                    raise
                found = True
        self.store.record(run_id, "revert_opened", revert_pr=revert.number, head_sha=revert.head_sha,
                          url=revert.html_url, base_sha=revert.base_sha, found=found)
        j.revert_pr, j.revert_head, j.revert_url = revert.number, revert.head_sha, revert.html_url
        self._sink("revert_found" if found else "revert_opened", run=run_id, revert_pr=revert.number,
                   head=revert.head_sha)
        await self._record_context(run_id, revert)
        if self._on_revert_opened is not None:
            self._on_revert_opened(revert.number)
        plan = ("merging it and rolling back the hosts that had switched" if j.strategy == "revert-commit"
                else "merge it to roll back")
        verb = "using the open revert" if found else "opened the revert"
        await self._comment(j.reverts_pr, f"nfu-tui: deploy failed on {', '.join(bad) or 'a host'}; {verb} "
                                          f"#{revert.number} ({plan}).")

    async def _open_revert_of(self, original: UpdatePR) -> UpdatePR | None:
        """The open PR reverting ``original`` (full detail), if there is one."""
        found = find_revert(await self.github.open_pulls_into(original.base_ref or "main"), original)
        return await self.github.get_pull(found.number, wait_mergeable=False) if found is not None else None

    async def _record_context(self, run_id: int, revert: Any) -> None:
        """The revert's lock diff for the history (best effort)."""
        from nfu_tui.core.history import lock_diff_for

        found = await lock_diff_for(self.github, revert)
        with contextlib.suppress(StateError):
            self.store.record(run_id, "context", title=revert.title, head_sha=revert.head_sha,
                              base_sha=revert.base_sha, lock_diff=found[0] if found else "",
                              headline=found[1] if found else "")

    async def _merge_revert(self, run_id: int, j: RevertJournal) -> None:
        assert j.revert_pr is not None
        n = j.revert_pr
        pr = await self.github.get_pull(n)
        if pr.merged:
            sha, note = pr.merge_commit_sha, "already merged"
        else:
            if pr.state != "open":
                raise _Failed(f"revert PR #{n} was closed without being merged")
            if pr.mergeable is False or pr.mergeable_state == "dirty":
                raise _Failed(f"revert PR #{n} has merge conflicts (flake.lock changed since the update?)")
            self.store.record(run_id, "merge_requested", pr=n, sha=pr.head_sha, repeated=j.merge_requested)
            method = self.config.github.merge_method
            try:
                sha = await self.github.merge(n, pr.head_sha, method=method)
                note = "merged without waiting for CI"
            except MergeConflict:
                raise _Failed(f"revert PR #{n} changed before the merge; review it and merge it by hand") from None
            except NotMergeable as exc:
                self._sink("revert_waits_for_ci", run=run_id, revert_pr=n, github=exc.message)
                await self._wait_for_green(n, pr.head_sha, exc.message)
                sha = await self.github.merge(n, pr.head_sha, method=method)
                note = "merged once its CI was green (GitHub required it)"
        if not sha:
            raise _Failed(f"GitHub gave no merge commit for revert PR #{n}")
        self.store.record(run_id, "merged", sha=sha, note=note)
        j.merge_sha = sha
        await self._audit("merge", actor=self.store.get_run(run_id).actor, pr=n,
                          details={"run": run_id, "merge_sha": sha, "revert_of": j.reverts_pr, "note": note})
        await self.github.wait_for_branch_contains(pr.base_ref or "main", sha, timeout=120)

    async def _wait_for_green(self, number: int, sha: str, refusal: str) -> None:
        waited = 0.0
        while True:
            ci = await self.github.ci_status(sha)
            if ci.verdict is CIVerdict.GREEN:
                return
            if ci.verdict in (CIVerdict.RED, CIVerdict.NO_CI):
                state = "failing" if ci.verdict is CIVerdict.RED else "absent"
                raise _Failed(f"GitHub refused to merge revert PR #{number} ({refusal}) and its CI is {state}")
            if waited >= self.ci_timeout:
                raise _Failed(f"GitHub refused to merge revert PR #{number} ({refusal}) and its CI was not green "
                              f"within {self.ci_timeout / 60:g} min")
            await self._sleep(CI_POLL_SECONDS)
            waited += CI_POLL_SECONDS

    async def _redeploy(self, run_id: int, j: RevertJournal, actor: str) -> Any:
        """Pull + switch the hosts that ran the bad generation at the revert: the redeploy's
        :class:`~nfu_tui.core.engine.RunResult`, None when suspended."""
        from nfu_tui.core.plan import make_plan

        assert j.revert_pr is not None
        trigger = self.store.get_run(run_id).trigger
        child_id = j.redeploy_run
        if child_id is None and j.redeploy_requested:
            child_id = next((r.id for r in self.store.unfinished_runs()
                             if r.kind == "deploy" and r.pr == j.revert_pr), None)
            if child_id is not None:
                self._link(run_id, child_id)
        if child_id is not None:
            child = self.store.get_run(child_id)
            if child.finished:
                return _stored_result(child)

            async def start(engine: Any) -> Any:
                return await engine.resume(child_id, actor=actor, queued_wait=0)
        else:
            hosts = list(j.hosts)
            if not hosts:
                return RunResult(None, RunStatus.SUCCEEDED, j.revert_pr, j.merge_sha)
            held = set(self.state.held) if self.state is not None else set()
            overrides = self.state.overrides if self.state is not None else {}
            plan = rollback_plan(make_plan(self.fleet.hosts(), recovery_config(self.config), held, targets=hosts,
                                           pr_number=j.revert_pr, head_sha=j.revert_head, overrides=overrides))
            self.store.record(run_id, "redeploy_requested", hosts=list(plan.hosts),
                              skipped=[s.describe() for s in plan.skipped if s.host in hosts])

            async def start(engine: Any) -> Any:
                def link(event: Any) -> None:
                    if isinstance(event, RunStarted) and not event.resumed:
                        self._link(run_id, event.run_id)
                engine.subscribe(link)
                return await engine.run(plan, actor=actor, trigger=trigger, queued_wait=0)
        if self._run_engine is None:  # a manager for per-host rollbacks only (nfu-tui rollback --host)
            raise _Failed("this process cannot redeploy: resume the run in nfu-tui auto or the TUI")
        return await self._run_engine(start)

    def _link(self, parent: int, child: int | None) -> None:
        if child is None:
            return
        with contextlib.suppress(StateError):
            self.store.record(parent, "redeploy_started", run=child)
        with contextlib.suppress(StateError):
            self.store.record(child, "revert_redeploy", parent=parent)

    async def _finish(self, run_id: int, j: RevertJournal, actor: str, ok: bool, summary: str, title: str,
                      severity: str, *, click: str = "", status: str | None = None) -> RollbackOutcome:
        """Close the revert run: ``succeeded`` / ``failed`` by ``ok``, or ``status`` (``unknown``, ``unverified``)."""
        status = status or ("succeeded" if ok else "failed")
        run = self.store.get_run(run_id)
        if not run.finished:
            self.store.finish_run(run_id, status, summary)
        await self._audit("rollback", actor=actor, pr=j.reverts_pr, details={
            "run": run_id, "strategy": j.strategy, "failed_run": j.failed_run, "revert_pr": j.revert_pr,
            "merge_sha": j.merge_sha, "hosts": list(j.hosts), "redeploy_run": j.redeploy_run, "status": status})
        tags = ["nfu-tui", f"pr-{j.reverts_pr}", "leftwards_arrow_with_hook" if ok else "rotating_light"]
        await self._tell(Notification(title, summary, severity, tags, click=click, event_id=f"rollback:{run_id}"))
        self._sink("rollback_finished", level="info" if ok else "error", run=run_id, ok=ok, summary=summary)
        return RollbackOutcome(j.strategy, ok, summary, run_id, j.revert_pr,
                               RevertJournal.from_run(self.store.get_run(run_id)).redeploy_run)

    # --- per host -------------------------------------------------------------------

    async def rollback_host(self, host: str, *, actor: str | None = None,
                            trigger: str = "manual") -> HostRollbackResult:
        """The dashboard's ``rollback`` op on ``host`` (ask the user first), journaled and audited."""
        from nfu_tui.core.store import local_actor

        actor = actor or local_actor()
        run_id = self.store.create_run("rollback", actor=actor, trigger=trigger,
                                       plan={"op": "rollback", "hosts": [host]})
        self._sink("host_rollback", run=run_id, host=host)
        self.store.record(run_id, "host_started", host=host, phase="rollback")
        try:
            results = await self.dashboard.dispatch("rollback", [host])
        except NfuError as exc:
            return await self._host_done(run_id, actor, HostOutcome(host, Outcome.FAILED, "rollback",
                                                                    f"{exc.title}: {exc}"))
        mine = next((r for r in results if getattr(r, "host_id", host) == host), None)
        decision = interpret_dispatch(mine, "rollback", host)
        if decision.action != "started":
            return await self._host_done(run_id, actor, HostOutcome(host, Outcome.FAILED, "rollback",
                                                                    decision.message))
        self.store.record(run_id, "command_dispatched", host=host, phase="rollback", command_id=decision.command_id)
        self._sink("host_rollback_dispatched", run=run_id, host=host, command=decision.command_id)
        return await self._host_done(run_id, actor, await self._follow(host, decision.command_id))

    async def _follow(self, host: str, command_id: str) -> HostOutcome:
        try:
            cmd = await self.fleet.wait_for_command(command_id, self.command_timeout)
        except (TimeoutError, asyncio.TimeoutError):
            return HostOutcome(host, Outcome.UNKNOWN, "rollback", f"the rollback did not finish within "
                               f"{self.command_timeout / 60:g} min; check the host",
                               inert_lines(self.fleet.output_lines(host, command_id)))
        ok, detail = interpret_command(cmd)
        if ok and cmd.status.upper() == "PARTIAL":  # exit 0, but the dashboard's post-check found System not ok
            return HostOutcome(host, Outcome.UNVERIFIED, "rollback", f"rolled back, not verified: {detail}",
                               inert_lines(self.fleet.output_lines(host, command_id)))
        if ok:  # the dashboard's post-check: System ok after the rollback (contract §6.6)
            return HostOutcome(host, Outcome.OK, "rollback", detail or "rolled back to the previous generation "
                                                                      "(System ok)")
        await self.fleet.settle_output(host, command_id)
        return self._host_failed(host, detail, command_id)

    def _host_failed(self, host: str, detail: str, command_id: str | None = None) -> HostOutcome:
        """A failed rollback with the last lines of its command (of the host, when the command is unknown)."""
        return HostOutcome(host, Outcome.FAILED, "rollback", detail,
                           inert_lines(self.fleet.output_lines(host, command_id)))

    async def _resume_host_rollback(self, run: Any) -> HostRollbackResult:
        from nfu_tui.core.store import local_actor

        started_at: datetime | None = None
        command_id = ""
        host = ""
        for step in run.steps or ():
            if step.step == "host_started" and step.host:
                host, started_at, command_id = step.host, step.at, ""
            elif step.step == "command_dispatched" and step.host:
                command_id = str(step.data.get("command_id", ""))
        host = host or str((run.plan.get("hosts") or [""])[0])
        outcome: HostOutcome | None = None
        if command_id:
            try:
                await self.fleet.wait_for_command(command_id, self.resume_lookup)
                outcome = await self._follow(host, command_id)
            except (TimeoutError, asyncio.TimeoutError):
                outcome = None
        if outcome is None:
            with contextlib.suppress(NfuError):
                active = (await self.dashboard.command_states()).get(host)
                if active is not None and active.op == "rollback" and not active.terminal:
                    self.store.record(run.id, "command_dispatched", host=host, phase="rollback", command_id=active.id)
                    outcome = await self._follow(host, active.id)
        if outcome is None:
            outcome = self._from_system(host, started_at)
        return await self._host_done(run.id, local_actor(), outcome)

    def _from_system(self, host: str, since: datetime | None) -> HostOutcome:
        """Judge an interrupted rollback by the System compartment reported after it started."""
        h = self.fleet.host(host)
        verdict = system_verdict(h, since) if h is not None and "rollback" in h.system.message.lower() else None
        if verdict is True:
            return HostOutcome(host, Outcome.OK, "rollback", f"the interrupted rollback completed ({h.system.message})")
        if verdict is False:
            return self._host_failed(host, f"the interrupted rollback failed ({h.system.message})")
        return HostOutcome(host, Outcome.UNKNOWN, "rollback", "the interrupted rollback's outcome is unknown (not "
                           "repeated: a second rollback would go back one more generation); verify the host",
                           inert_lines(self.fleet.output_lines(host, None)))

    async def _host_done(self, run_id: int, actor: str, outcome: HostOutcome) -> HostRollbackResult:
        host = outcome.host
        ok = outcome.outcome is Outcome.OK
        status, verdict, title = _HOST_ROLLBACK_ENDS.get(outcome.outcome, _HOST_ROLLBACK_ENDS[Outcome.FAILED])
        self.store.record(run_id, "host_finished", host=host, outcome=outcome.outcome.value, phase="rollback",
                          detail=outcome.detail, log_excerpt=list(outcome.last_lines))
        summary = f"{host}: rollback {verdict}" + (f" — {outcome.detail}" if outcome.detail else "")
        self.store.finish_run(run_id, status, summary)
        self._sink("rollback_host_finished", level="info" if ok else "error", run=run_id, host=host,
                   outcome=outcome.outcome.value, detail=outcome.detail, log_excerpt=list(outcome.last_lines))
        await self._audit("rollback_host", actor=actor, pr=None, details={
            "run": run_id, "host": host, "outcome": outcome.outcome.value, "detail": outcome.detail})
        await self._tell(Notification(title.format(host=host), summary, "information" if ok else "error",
                                      ["nfu-tui", host]))
        return HostRollbackResult(host, ok, outcome.detail, run_id, outcome.last_lines, outcome.outcome.value)


_HOST_ROLLBACK_ENDS = {  # a per-host rollback's outcome -> (run status, summary verdict, notification title)
    Outcome.OK: ("succeeded", "succeeded", "{host} rolled back"),
    Outcome.UNVERIFIED: ("unverified", "not verified", "{host} rolled back, not verified"),
    Outcome.UNKNOWN: ("unknown", "outcome unknown", "Rollback of {host}: outcome unknown"),
    Outcome.FAILED: ("failed", "failed", "Rollback of {host} failed"),
}


__all__ = [
    "HostRollbackResult",
    "RevertJournal",
    "RollbackManager",
    "RollbackOutcome",
    "STRATEGIES",
    "failed_hosts",
    "find_revert",
    "host_rollback_question",
    "host_rollback_refusal",
    "last_outcomes",
    "revert_title",
    "rollback_plan",
    "switched_hosts",
]
