"""Several admins, one fleet: each run as a GitHub deployment, and other clients' runs as a lock.

The deploy lock (:class:`~nfu_tui.core.store.DeployLock`) and the journal live on one
machine. With ``github.deployments`` on, :class:`FleetDeployments` also

* **records each run** on GitHub (contract §7b): one deployment per run, for the merge
  commit (a converge: the branch head it deploys), in ``github.deployment_environment`` (``fleet``); its payload names the client,
  the actor, the run, the PR and each planned host; statuses go ``in_progress`` (again
  after every finished host, with the progress, so a long run stays fresh) →
  ``success`` / ``failure`` / ``inactive`` with the run's summary as description.
  GitHub deployments are immutable, so the payload carries the plan per host and the
  final status's description the outcome.
* **treats another client's ``in_progress`` deployment as a lock held elsewhere**
  (:meth:`FleetDeployments.check_lock`, called by the engine before it opens a run): who
  and since when are in the :class:`~nfu_tui.errors.DeployLocked` message. A deployment
  whose newest status is older than ``deployment_stale_minutes`` is stale and ignored.
  A "client" is one state directory on one machine: the TUI and ``nfu-tui auto`` sharing
  it share the local lock, so they never lock each other out here.
* lists **runs started elsewhere** for the history (:meth:`FleetDeployments.remote_runs`).

Without ``deployments: write`` (403/404) it warns once and goes on with the local lock
only. Other GitHub errors never stop a deploy: they are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from nfu_tui.errors import DeployLocked, GitHubError, GitHubForbidden, GitHubNotFound, StateError
from nfu_tui.models import Notification

log = logging.getLogger(__name__)

LOCK_LOOKBACK = 5  # newest deployments checked for a lock held elsewhere
HELD_STATES = ("in_progress", "queued")
FINAL_STATES = {"succeeded": "success", "failed": "failure", "cancelled": "inactive", "refused": "inactive",
                "waiting": "inactive", "unknown": "error", "unverified": "error"}
"""The engine's run status -> the GitHub deployment state. ``unknown`` and ``unverified`` are not proven
failures: ``error`` (the description, the run's summary, starts ``PR #42: unknown``), read back as such
by :func:`nfu_tui.core.history.remote_record`."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def client_id(state_dir: str) -> str:
    """One nfu-tui "client": this machine and the directory of its journal (the TUI and ``auto`` share it)."""
    return hashlib.sha256(f"{socket.gethostname()}\0{state_dir}".encode()).hexdigest()[:16]


def holder_of(record: Any, me: str, now: datetime, stale: timedelta) -> str | None:
    """Why ``record`` is a lock held elsewhere (who, since when), or None."""
    payload = record.payload or {}
    if record.state not in HELD_STATES or payload.get("client") == me:
        return None
    since = record.created_at
    fresh = record.status_at or record.created_at
    if fresh is None or now - fresh > stale:
        return None
    who = str(payload.get("actor") or record.creator or "someone")
    label = str(payload.get("label") or "")
    run = f"run #{payload['run']}" if payload.get("run") else "a run"
    pr = f" of PR #{payload['pr']}" if payload.get("pr") else ""
    when = since.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if since else "an unknown time"
    return (f"a deploy runs elsewhere: {who}" + (f" ({label})" if label else "") + f", {run}{pr}, since {when} "
            f"(GitHub deployment {record.id} in '{record.environment}'"
            + (f", by {record.creator}" if record.creator and record.creator not in who else "")
            + f"); it counts as stale after {int(stale.total_seconds() // 60)} min without news")


@dataclass(frozen=True, slots=True)
class RemoteRun:
    """A run another client recorded on GitHub (for the history)."""

    deployment_id: int
    sha: str
    environment: str
    state: str
    actor: str
    creator: str
    run: int | None
    pr: int | None
    trigger: str
    created_at: datetime | None
    updated_at: datetime | None
    summary: str
    hosts: tuple[str, ...]


@dataclass
class _Tracked:
    pr: int | None
    hosts: tuple[str, ...]
    subject: str = ""  # converge runs: "converge to main 9f8e7d6"
    deployment: int | None = None
    done: dict[str, str] = field(default_factory=dict)


class FleetDeployments:
    """See the module docstring. ``on_event`` is the engine's event listener."""

    def __init__(self, github: Any, store: Any, *, environment: str = "fleet", stale_minutes: float = 120,
                 client: str, actor: str, label: str, notify: Callable[[Notification], Any] | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.github = github
        self.store = store
        self.environment = environment
        self.stale = timedelta(minutes=stale_minutes)
        self.client = client
        self.actor = actor
        self.label = label
        self._notify = notify or (lambda n: None)
        self.clock = clock
        self.enabled = True
        self._runs: dict[int, _Tracked] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    # --- the lock --------------------------------------------------------------------

    async def check_lock(self) -> None:
        """DeployLocked when another client's deployment is in progress (and not stale)."""
        if not self.enabled:
            return
        try:
            records = await self.github.list_deployments(self.environment, limit=LOCK_LOOKBACK)
        except (GitHubForbidden, GitHubNotFound) as exc:
            self._no_permission(exc)
            return
        except GitHubError as exc:
            log.warning("could not read GitHub deployments (the local deploy lock still applies): %s", exc)
            return
        now = self.clock()
        for record in records:
            why = holder_of(record, self.client, now, self.stale)
            if why is not None:
                raise DeployLocked(why)

    def _no_permission(self, exc: Exception) -> None:
        if self.enabled:
            self.enabled = False
            message = (f"GitHub refused the Deployments API ({exc}): give the token \"Deployments: write\" to "
                       "record runs on GitHub and share the deploy lock with other admins. Until then only "
                       "this machine's deploy lock applies.")
            log.warning(message)
            self._notify(Notification("GitHub deployments off", message, "warning"))

    # --- recording ----------------------------------------------------------------------

    def on_event(self, event: Any) -> None:
        """The engine's events, recorded in order by one background task."""
        if not self.enabled or type(event).__name__ not in ("RunStarted", "Merged", "HostFinished", "RunFinished"):
            return
        self._queue.put_nowait(event)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until every event so far is recorded (e.g. before the process exits)."""
        if self._worker is not None and not self._worker.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)

    async def close(self) -> None:
        await self.flush()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                if self.enabled:
                    await self._record(event)
            except (GitHubForbidden, GitHubNotFound) as exc:
                self._no_permission(exc)
            except GitHubError as exc:
                log.warning("could not record run #%s on GitHub: %s", event.run_id, exc)
            except Exception:  # recording must never break a deploy
                log.exception("recording run #%s on GitHub failed", event.run_id)
            finally:
                self._queue.task_done()

    async def _record(self, event: Any) -> None:
        name = type(event).__name__
        run_id = event.run_id
        if name == "RunStarted":
            subject = str(getattr(event, "subject", "") or "")  # a converge: no merge, its target is known now
            tracked = self._runs[run_id] = _Tracked(None if subject else event.pr_number, tuple(event.hosts), subject)
            sha = event.head_sha if subject else (self._merge_sha(run_id) if event.resumed else "")
            if sha:
                found = await self._find(run_id, sha) if event.resumed else None
                tracked.deployment = found or await self._create(run_id, sha)
                await self._status(tracked, "in_progress", f"run #{run_id} resumed by {self.actor}" if event.resumed
                                   else f"{subject}: {len(tracked.hosts)} hosts (run #{run_id})")
            return
        tracked = self._runs.get(run_id)
        if tracked is None:
            return
        if name == "Merged":
            if tracked.deployment is None:  # (a converge has one from its start)
                tracked.deployment = await self._create(run_id, event.merge_sha)
            await self._status(tracked, "in_progress", f"deploying to {len(tracked.hosts)} hosts (run #{run_id})")
        elif name == "HostFinished":
            tracked.done[event.host] = event.outcome.outcome.value
            text = f"{len(tracked.done)} of {len(tracked.hosts)} hosts done" + "".join(
                f"; {outcome}: {', '.join(hosts)}" for outcome in ("failed", "unknown")
                if (hosts := [h for h, o in tracked.done.items() if o == outcome]))
            await self._status(tracked, "in_progress", text)
        elif name == "RunFinished":
            self._runs.pop(run_id, None)
            result = event.result
            await self._status(tracked, FINAL_STATES.get(result.status.value, "inactive"), result.summary())

    def _merge_sha(self, run_id: int) -> str:
        try:
            return self.store.get_run(run_id).merge_sha or ""
        except StateError:
            return ""

    def _payload(self, run_id: int) -> dict[str, Any]:
        try:
            run = self.store.get_run(run_id)
            plan, trigger = run.plan, run.trigger
        except StateError:
            plan, trigger = {}, ""
        hosts = {e["host"]: {"wave": e.get("wave"), "canary": bool(e.get("canary"))}
                 for e in plan.get("entries", []) if isinstance(e, Mapping) and "host" in e}
        hosts.update({e["host"]: {"queued": True} for e in plan.get("queued", []) if isinstance(e, Mapping)})
        tracked = self._runs.get(run_id)
        return {"nfu_tui": 1, "client": self.client, "actor": self.actor, "label": self.label, "run": run_id,
                "pr": tracked.pr if tracked else plan.get("pr_number"), "subject": tracked.subject if tracked else "",
                "trigger": trigger, "hosts": hosts}

    async def _create(self, run_id: int, sha: str) -> int:
        tracked = self._runs.get(run_id)
        pr = tracked.subject or (f"PR #{tracked.pr}" if tracked.pr else "a deploy") if tracked else "a deploy"
        record = await self.github.create_deployment(
            sha, environment=self.environment, payload=self._payload(run_id),
            description=f"nfu-tui run #{run_id}: {pr} by {self.actor}")
        return record.id

    async def _find(self, run_id: int, sha: str) -> int | None:
        for record in await self.github.list_deployments(self.environment, limit=20, with_status=False):
            payload = record.payload or {}
            if record.sha == sha and payload.get("client") == self.client and payload.get("run") == run_id:
                return record.id
        return None

    async def _status(self, tracked: _Tracked, state: str, description: str) -> None:
        if tracked.deployment is not None:
            await self.github.create_deployment_status(tracked.deployment, state, description)

    # --- history ------------------------------------------------------------------------

    async def remote_runs(self, limit: int = 20) -> list[RemoteRun]:
        """Runs other clients recorded in the environment (newest first); [] when GitHub cannot tell."""
        if not self.enabled:
            return []
        try:
            records = await self.github.list_deployments(self.environment, limit=limit)
        except (GitHubForbidden, GitHubNotFound) as exc:
            self._no_permission(exc)
            return []
        except GitHubError as exc:
            log.warning("could not read GitHub deployments for the history: %s", exc)
            return []
        runs = []
        for r in records:
            payload = r.payload or {}
            if payload.get("client") == self.client:
                continue  # ours: the journal has it
            runs.append(RemoteRun(
                deployment_id=r.id, sha=r.sha, environment=r.environment, state=r.state,
                actor=str(payload.get("actor") or r.creator), creator=r.creator,
                run=_int(payload.get("run")), pr=_int(payload.get("pr")), trigger=str(payload.get("trigger") or ""),
                created_at=r.created_at, updated_at=r.status_at, summary=r.status_description or r.description,
                hosts=tuple(sorted(payload.get("hosts") or ())),
            ))
        return runs


def for_config(config: Any, github: Any, store: Any, *, label: str,
               notify: Callable[[Notification], Any] | None = None) -> FleetDeployments | None:
    """The deployments of a configuration (None when ``github.deployments`` is off or there is no GitHub)."""
    if github is None or not config.github.deployments:
        return None
    from nfu_tui.core.store import local_actor

    return FleetDeployments(  # one client = one journal (the TUI and `auto` share it)
        github, store, environment=config.github.deployment_environment,
        stale_minutes=config.github.deployment_stale_minutes, client=client_id(str(store.path.parent)),
        actor=local_actor(), label=label, notify=notify)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["FleetDeployments", "RemoteRun", "client_id", "for_config", "holder_of"]
