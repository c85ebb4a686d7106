"""FleetService: the running core shared by the TUI, the CLI and the headless mode.

It owns the GitHub client and the fleet backend (a :class:`~nfu_tui.backends.base.FleetBackend`:
the NixFleet dashboard or SSH), feeds the backend's stream into a
:class:`~nfu_tui.clients.fleet.FleetModel`, polls GitHub for update PRs (conditional
requests, every ``poll_minutes`` and on demand) and explains each one once per head,
keeps the app state (holds, overrides) and the journal/audit store, and runs the
deploy engine. Consumers :meth:`subscribe` to :class:`ServiceEvent`\\ s and read
state; they never talk HTTP themselves. It is also the engine's
:class:`~nfu_tui.core.engine.FleetView`.

Everything runs on one asyncio loop; listeners are called on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

from nfu_tui.backends.base import NIXFLEET, BackendInfo, FleetBackend, info_for, info_of
from nfu_tui.clients.fleet import ChangeKind, FleetChange, FleetModel
from nfu_tui.config import Config, HostConfig, Secrets
from nfu_tui.core.live import LiveFleet
from nfu_tui.core.state import AppState
from nfu_tui.core.store import DeployLock, Store, local_actor
from nfu_tui.errors import GitHubNotFound, GitHubRateLimited, LoginFailed, NfuError, StateError
from nfu_tui.models import Command, CompartmentState, Host, Notification, RateBudget, UpdatePR
from nfu_tui.sanitize import sanitize_line

log = logging.getLogger(__name__)

EventKind = Literal["fleet", "prs", "status", "output", "notify", "deploy"]


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """Something changed. ``host_ids`` empty on a "fleet" event means "everything"."""

    kind: EventKind
    host_ids: frozenset[str] = frozenset()
    payload: Any = None


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    fleet: str = "disabled"  # the fleet backend: connecting | live | reconnecting | login-required | error | disabled
    fleet_detail: str = ""
    backend: BackendInfo = NIXFLEET  # which fleet backend (its label and noun for the texts)
    github: str = "disabled"  # ok | polling | error | rate-limited | disabled
    github_detail: str = ""
    rate: RateBudget = RateBudget()
    last_poll: datetime | None = None
    attention: str = ""  # paused/waiting/blocked runs and unsent notifications (history.attention_text)
    unreachable_since: datetime | None = None  # the live fleet state was lost then: hosts are unknown now


@dataclass(frozen=True, slots=True)
class PRState:
    """One open update PR with its explanation (or why there is none yet)."""

    pr: UpdatePR
    explanation: Any = None  # nfu_tui.clients.github.PRExplanation
    loading: bool = False
    error: str = ""


@dataclass
class _PRCache:
    key: tuple[str, str] = ("", "")  # (head sha, base sha) the detail was fetched for
    state: PRState | None = None
    ci_final: bool = False


Listener = Callable[[ServiceEvent], Any]


class FleetService:
    """See the module docstring. Construct, :meth:`start`, then read and subscribe."""

    def __init__(
        self,
        config: Config,
        secrets: Secrets,
        *,
        state: AppState | None = None,
        store: Store | None = None,
        github: Any = None,
        backend: FleetBackend | None = None,
        insecure: bool = False,
        notifier: Any = None,
        lock_label: str = "the nfu-tui TUI",
    ) -> None:
        self.config = config
        self.secrets = secrets
        self.state = state if state is not None else AppState.load()
        self.store = store if store is not None else Store()
        self.fleet = FleetModel()
        self.github = github if github is not None else self._make_github()
        self.backend = backend if backend is not None else self._make_backend(insecure)
        self.backend_info = info_of(self.backend) if self.backend is not None else info_for(config)
        self.live = LiveFleet(self.backend, self.fleet, on_stream=self._on_stream)
        self.notifier = notifier if notifier is not None else self._make_notifier()
        from nfu_tui.core.notify import Outbox

        # Every webhook notification goes through it; the header shows what stays unsent.
        self.outbox = Outbox(self.store, self.notifier, on_change=self.refresh_attention)
        self.lock_label = lock_label
        self.status = ConnectionStatus(
            fleet="connecting" if self.backend else "disabled",
            fleet_detail="" if self.backend else "dashboard.url is not configured",
            backend=self.backend_info,
            github="polling" if self.github else "disabled",
            github_detail="" if self.github else "github.repo is not configured",
        )
        self.prs: list[PRState] = []
        self._pr_cache: dict[int, _PRCache] = {}
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._explaining: dict[int, asyncio.Task[Any]] = {}
        self._refresh = asyncio.Event()
        self._logged_in = asyncio.Event()
        self.engine: Any = None
        self._github_login: str | None = None
        self.tracked_prs: set[int] = set()  # shown although detection skips them (revert PRs nfu-tui opened)
        self._merged_prs: set[int] = set()  # merged by our engine: not pending, whatever a stale poll says
        self._agent_alerts: dict[str, str] = {}  # host → the Agent error already notified
        self.deployments: Any = self._make_deployments()  # nfu_tui.core.deployments.FleetDeployments or None

    # ------------------------------------------------------------ construction

    def _make_github(self) -> Any:
        if not self.config.github.repo:
            return None
        from nfu_tui.clients.factory import github_client

        return github_client(self.config, self.secrets)

    def _make_backend(self, insecure: bool) -> FleetBackend | None:
        if not self.config.dashboard.url and not self.config.uses_ssh:
            return None
        from nfu_tui.clients.factory import fleet_backend

        return fleet_backend(self.config, self.secrets, insecure=insecure)

    def _make_deployments(self) -> Any:
        """Runs recorded as GitHub deployments, other admins' runs as a lock (``github.deployments``)."""
        from nfu_tui.core.deployments import for_config

        deployments = for_config(self.config, self.github, self.store, label=self.lock_label, notify=self.notify)
        if deployments is None:
            return None
        self.subscribe(lambda ev: deployments.on_event(ev.payload) if ev.kind == "deploy" else None)
        return deployments

    def _make_notifier(self) -> Any:
        if not self.config.notify.webhook_url:
            return None
        from nfu_tui.core.notify import WebhookNotifier

        return WebhookNotifier(self.config.notify.webhook_url)

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the fleet backend's stream, the GitHub poll loop and the notification outbox in the background."""
        self.refresh_attention()
        if self.backend is not None:
            self._tasks.append(asyncio.create_task(self._backend_loop(), name="nfu-fleet"))
        if self.github is not None:
            self._tasks.append(asyncio.create_task(self._poll_loop(), name="nfu-github-poll"))
        if self.outbox.enabled:
            self._tasks.append(asyncio.create_task(self.outbox.run(), name="nfu-outbox"))

    async def stop(self) -> None:
        """Disconnect. A deploy still running is not cancelled: its task is interrupted by its owner and the
        run stays resumable in the journal (the engine treats a cancelled task as a shutdown)."""
        if self.deployments is not None:
            await self.deployments.close()  # the last statuses reach GitHub before the client closes
        tasks = self._tasks + list(self._explaining.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._explaining.clear()
        for client in (self.github, self.backend):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def __aenter__(self) -> "FleetService":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------- listeners

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def _emit(self, event: ServiceEvent) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(event)
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result)
            except Exception:  # a broken listener must not stop the service
                log.exception("service listener failed")

    def _set_status(self, **changes: Any) -> None:
        for key in ("fleet_detail", "github_detail"):  # exception text from outside: the redaction boundary
            if key in changes:
                changes[key] = sanitize_line(changes[key])
        fleet = changes.get("fleet", self.status.fleet)
        if fleet == "live":
            changes["unreachable_since"] = None
        elif self.status.fleet == "live":
            changes["unreachable_since"] = datetime.now(timezone.utc)
        self.status = replace(self.status, **changes)
        self._emit(ServiceEvent("status"))

    def refresh_attention(self) -> None:
        """Re-read the paused/waiting/blocked runs and the unsent notifications for the header."""
        from nfu_tui.core.automation import lock_holder
        from nfu_tui.core.history import attention_text

        try:
            latest = next((r for r in self.store.list_runs(20) if r.kind in ("deploy", "converge")), None)
            text = attention_text(self.store.unfinished_runs(), len(self.outbox.undelivered()),
                                  deploying=self.deploying or lock_holder(DeployLock().path) is not None,
                                  latest=latest)
        except StateError as exc:
            log.warning("cannot read the journal: %s", exc.message)
            return
        if text != self.status.attention:
            self._set_status(attention=text)

    def notify(self, notification: Notification) -> asyncio.Future[Any] | None:
        """Tell the user (toast/log) and, when configured, the webhook through the durable outbox: written
        to the store now, delivered (and retried) in the background. The returned future is the first
        delivery attempt (await it to know whether it went at once)."""
        self._emit(ServiceEvent("notify", payload=notification))
        event_id = self.outbox.enqueue(notification)
        return asyncio.ensure_future(self.outbox.deliver(event_id)) if event_id else None

    # ------------------------------------------------------------- fleet backend

    async def _backend_loop(self) -> None:
        assert self.backend is not None
        while True:
            if self.backend.needs_password and not self._logged_in.is_set():
                self._set_status(fleet="login-required", fleet_detail="the dashboard password is needed")
                await self._logged_in.wait()
            try:
                await self.live.follow()
            except LoginFailed as exc:
                self._logged_in.clear()
                if exc.needs_totp:
                    detail = "the dashboard asks for a TOTP code"
                else:
                    detail = exc.message
                self._set_status(fleet="login-required", fleet_detail=detail)
                await self._logged_in.wait()
            except asyncio.CancelledError:
                raise
            except NfuError as exc:
                self._set_status(fleet="error", fleet_detail=exc.message)
                await asyncio.sleep(5)
            except Exception as exc:  # keep the service alive, say what happened
                log.exception("%s stream failed", self.backend_info.label)
                self._set_status(fleet="error", fleet_detail=f"unexpected error: {exc}")
                await asyncio.sleep(5)
            else:
                return

    def _on_stream(self, event: Any, changes: list[FleetChange]) -> None:
        from nfu_tui.clients._dashboard_protocol import Connected, Disconnected

        if isinstance(event, Connected):
            self._set_status(fleet="connecting", fleet_detail="waiting for the fleet state")
        elif isinstance(event, Disconnected):
            self._set_status(
                fleet="reconnecting",
                fleet_detail=f"{event.reason}; retrying in {event.retry_in:g} s",
            )
        if self.fleet.synced and self.status.fleet != "live":
            self._set_status(fleet="live", fleet_detail="")
        self._publish(changes)

    def _publish(self, changes: Iterable[FleetChange]) -> None:
        fleet_ids: set[str] = set()
        output_ids: set[str] = set()
        everything = False
        for change in changes:
            kind = change.kind
            if kind in (ChangeKind.HOST_CHANGED, ChangeKind.HOST_ADDED, ChangeKind.HOST_REMOVED, ChangeKind.PROGRESS):
                fleet_ids.add(change.id)
            elif kind is ChangeKind.COMMAND_CHANGED:
                cmd = self.fleet.command(change.id)
                if cmd is not None:
                    fleet_ids.add(cmd.host_id)
            elif kind is ChangeKind.OUTPUT:
                output_ids.add(change.id)
            elif kind is ChangeKind.RESYNCED:
                everything = True
        if everything:
            self._emit(ServiceEvent("fleet"))
        elif fleet_ids:
            self._emit(ServiceEvent("fleet", frozenset(fleet_ids)))
        self._alert_refused_agents(self.fleet.snapshot().hosts if everything else fleet_ids)
        if output_ids:
            self._emit(ServiceEvent("output", frozenset(output_ids)))

    def _alert_refused_agents(self, host_ids: Iterable[str]) -> None:
        """A backend's own Agent ``error`` (the SSH backend: a refused host key) is a security signal, not a
        network blip: notified (toast and webhook) once per host and message (the offered fingerprint)."""
        for host_id in host_ids:
            host = self.fleet.host(host_id)
            check = host.agent_check if host is not None else None
            if host is None or check is None or check.state is not CompartmentState.ERROR:
                continue
            if self._agent_alerts.get(host_id) == check.message:
                continue
            self._agent_alerts[host_id] = check.message
            digest = hashlib.sha256(check.message.encode()).hexdigest()[:16]
            self.notify(Notification(f"{host.name}: host key refused", check.message, "error",
                                     ["nfu-tui", "security"], event_id=f"agent-error:{host_id}:{digest}"))

    async def login(self, password: str, totp: str | None = None) -> None:
        """Log in to the dashboard with what the user typed (raises LoginFailed)."""
        if self.backend is None:
            raise NfuError("no dashboard is configured")
        if password:
            self.backend.set_password(password)
        await self.backend.login(totp_code=totp or None)
        self._logged_in.set()
        self._set_status(fleet="connecting", fleet_detail="")

    # ------------------------------------------------------------- fleet view (engine)

    def hosts(self) -> list[Host]:
        return self.live.hosts()

    def host(self, host_id: str) -> Host | None:
        return self.live.host(host_id)

    def output_lines(self, host_id: str, command_id: str | None = None) -> list[str]:
        return self.live.output_lines(host_id, command_id)

    async def settle_output(self, host_id: str, command_id: str) -> None:
        await self.live.settle_output(host_id, command_id)

    async def recent_output(self, host_id: str, lines: int = 200) -> list[str]:
        """The host's recent output as the dashboard logged it (``GET /api/hosts/{id}/output``): what
        streamed before this process started. Raw, all commands mixed (contract §3.9), sanitized."""
        if self.backend is None:
            return []
        return await self.backend.output(host_id, lines)

    def command(self, command_id: str) -> Command | None:
        return self.live.command(command_id)

    def progress(self, host_id: str) -> tuple[str, int, int] | None:
        return self.live.progress(host_id)

    def active_command(self, host_id: str) -> Command | None:
        return self.live.active_command(host_id)

    def commands_for(self, host_id: str) -> tuple[Command, ...]:
        return self.live.commands_for(host_id)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return await self.live.wait_until(predicate, timeout)

    async def wait_for_command(self, command_id: str, timeout: float) -> Command:
        return await self.live.wait_for_command(command_id, timeout)

    # ------------------------------------------------------------- GitHub

    async def refresh(self) -> None:
        """Poll GitHub now (and ask the dashboard for a full state)."""
        self._refresh.set()
        if self.backend is not None:
            with contextlib.suppress(Exception):
                await self.backend.request_state()

    async def _poll_loop(self) -> None:
        while True:
            wait = self.config.github.poll_minutes * 60
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except GitHubRateLimited as exc:
                wait = max(exc.wait_seconds, 1.0)
                self._set_status(github="rate-limited", github_detail=f"{exc.message}; next try in {wait:.0f} s")
            except NfuError as exc:
                self._set_status(github="error", github_detail=exc.message)
            except Exception as exc:
                log.exception("GitHub poll failed")
                self._set_status(github="error", github_detail=f"unexpected error: {exc}")
            self._refresh.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives just as the
            # event is set (the poll then went on and stop() waited a whole poll interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._refresh.wait()

    async def poll_once(self) -> list[PRState]:
        """One detection cycle: list update PRs, (re)explain the ones whose head or base moved."""
        assert self.github is not None
        prs = await self.github.list_update_prs()
        listed = {p.number for p in prs}
        self._merged_prs &= listed  # GitHub caught up: stop filtering
        prs = [p for p in prs if p.number not in self._merged_prs]
        for number in sorted(self.tracked_prs - {p.number for p in prs}):
            try:
                extra = await self.github.get_pull(number, wait_mergeable=False)
            except GitHubNotFound:  # deleted (or the repo moved on): stop tracking it, keep polling
                self.tracked_prs.discard(number)
                continue
            if extra.state == "open" and not extra.merged:
                prs.append(extra)
            else:
                self.tracked_prs.discard(number)
        new_states: list[PRState] = []
        seen: set[int] = set()
        for pr in prs:
            seen.add(pr.number)
            cache = self._pr_cache.setdefault(pr.number, _PRCache())
            key = (pr.head_sha, pr.base_sha)
            if cache.key != key or cache.state is None:
                cache.key, cache.ci_final = key, False
                cache.state = PRState(pr, None, loading=True)
                self._start_explain(pr)
            elif not cache.ci_final and pr.number not in self._explaining:
                self._start_explain(pr, ci_only=True)
            # keep the detail fields (mergeable, ci, files) of the cached PR
            old = cache.state.pr
            cache.state = replace(
                cache.state,
                pr=pr.with_changes(
                    files=old.files or pr.files,
                    mergeable=old.mergeable,
                    mergeable_state=old.mergeable_state,
                    ci=old.ci,
                ),
            )
            new_states.append(cache.state)
        for number in list(self._pr_cache):
            if number not in seen:
                del self._pr_cache[number]
                task = self._explaining.pop(number, None)
                if task is not None:
                    task.cancel()
        self.prs = new_states
        self._set_status(
            github="ok",
            github_detail="",
            rate=self.github.rate,
            last_poll=datetime.now(timezone.utc),
        )
        self._emit(ServiceEvent("prs"))
        return self.prs

    def _start_explain(self, pr: UpdatePR, *, ci_only: bool = False) -> None:
        old = self._explaining.pop(pr.number, None)
        if old is not None:
            old.cancel()
        self._explaining[pr.number] = asyncio.create_task(self._explain(pr, ci_only), name=f"nfu-explain-{pr.number}")

    async def _explain(self, pr: UpdatePR, ci_only: bool) -> None:
        from nfu_tui.models import CIVerdict

        assert self.github is not None
        cache = self._pr_cache.get(pr.number)
        try:
            ci = await self.github.ci_status(pr.head_sha)
            detail = pr if ci_only else await self.github.get_pull(pr.number)
            explanation = None
            if not ci_only:
                explanation = await self.github.explain(detail)
            cache = self._pr_cache.get(pr.number)
            if cache is None or cache.state is None or cache.key != (pr.head_sha, pr.base_sha):
                return  # the PR moved on meanwhile
            cache.ci_final = ci.verdict in (CIVerdict.GREEN, CIVerdict.RED, CIVerdict.NO_CI)
            base = cache.state
            new_pr = base.pr.with_changes(
                ci=ci,
                files=detail.files or base.pr.files,
                mergeable=detail.mergeable if not ci_only else base.pr.mergeable,
                mergeable_state=detail.mergeable_state if not ci_only else base.pr.mergeable_state,
            )
            if explanation is not None and getattr(explanation, "files", None):
                new_pr = new_pr.with_changes(files=tuple(explanation.files))
            cache.state = PRState(new_pr, explanation if explanation is not None else base.explanation, loading=False)
        except asyncio.CancelledError:
            raise
        except NfuError as exc:
            if cache is not None and cache.state is not None:
                cache.state = replace(cache.state, loading=False, error=exc.message)
        except Exception as exc:
            log.exception("explaining PR #%s failed", pr.number)
            if cache is not None and cache.state is not None:
                cache.state = replace(cache.state, loading=False, error=f"unexpected error: {exc}")
        finally:
            if self._explaining.get(pr.number) is asyncio.current_task():
                del self._explaining[pr.number]
        self.prs = [self._pr_cache[p.pr.number].state or p for p in self.prs if p.pr.number in self._pr_cache]
        self._emit(ServiceEvent("prs"))
        if self.github.rate != self.status.rate:  # the explanation's requests spent budget: the header shows it
            self._set_status(rate=self.github.rate)

    def track_pr(self, number: int) -> None:
        """Show PR ``number`` with the update PRs while it is open (e.g. a revert PR to merge like an update)."""
        self.tracked_prs.add(number)
        self._refresh.set()

    def pending_update(self) -> PRState | None:
        """The newest update PR that no other supersedes."""
        for state in self.prs:
            if state.pr.superseded_by is None:
                return state
        return None

    def pr_state(self, number: int) -> PRState | None:
        for state in self.prs:
            if state.pr.number == number:
                return state
        return None

    def update_headline(self) -> str | None:
        state = self.pending_update()
        if state is None:
            return None
        exp = state.explanation
        headline = getattr(exp, "headline", None) if exp is not None else None
        return headline or f"PR #{state.pr.number} {state.pr.title}"

    async def github_login(self) -> str | None:
        if self._github_login is None and self.github is not None:
            with contextlib.suppress(NfuError):
                self._github_login = await self.github.viewer_login()
        return self._github_login

    # ------------------------------------------------------------- holds and host settings

    def held(self) -> set[str]:
        return set(self.state.held)

    def held_now(self, host_id: str) -> bool:
        """Whether ``host_id`` is held now, by this process or another one (the state file is shared)."""
        return self.state.held_now(host_id)

    async def set_hold(self, host_ids: list[str], held: bool) -> None:
        """Hold or release hosts: saved in the app state and written to the audit trail."""
        ids = [h for h in host_ids if (h in self.state.held) != held]
        if not ids:
            return
        for host in ids:
            self.state.held.add(host) if held else self.state.held.discard(host)
        self.state.save()
        self.store.audit(
            "hold" if held else "unhold",
            actor=local_actor(),
            github_login=self._github_login,
            details={"hosts": sorted(ids)},
        )
        self._emit(ServiceEvent("fleet", frozenset(ids)))

    def host_config(self, host_id: str) -> HostConfig:
        base = self.config.host(host_id)
        overrides = self.state.overrides.get(host_id)
        return base.model_copy(update=overrides) if overrides else base

    def automation_enabled(self) -> bool:
        toggle = self.state.automation_enabled
        return self.config.flake_updates.automation.enabled if toggle is None else toggle

    # ------------------------------------------------------------- deploy

    def plan(self, pr_number: int, host_ids: list[str] | None = None, *, automatic: bool = False) -> Any:
        """The deploy plan for a PR (a value to show before anything happens)."""
        from nfu_tui.core.plan import make_plan
        from nfu_tui.core.takeover import with_takeovers

        state = self.pr_state(pr_number)
        head = state.pr.head_sha if state else ""
        return with_takeovers(self.store, make_plan(
            self.hosts(),
            self.config,
            self.state.held,
            targets=host_ids,
            automatic=automatic,
            pr_number=pr_number,
            head_sha=head,
            overrides=self.state.overrides,
        ))

    def make_engine(self, **kw: Any) -> Any:
        from nfu_tui.core.engine import DeployEngine

        if self.github is None or self.backend is None:
            raise NfuError("deploying needs both GitHub and the dashboard configured")
        kw.setdefault("lock", lambda: DeployLock(label=self.lock_label))
        kw.setdefault("is_held", self.held_now)
        if self.deployments is not None:
            kw.setdefault("remote_lock", self.deployments.check_lock)
        engine = DeployEngine(
            self.github,
            self.backend,
            self,
            self.store,
            self.config,
            notifier=self.outbox if self.outbox.enabled else None,
            on_event=self._on_engine_event,
            **kw,
        )
        return engine

    def _on_engine_event(self, event: Any) -> None:
        from nfu_tui.core.engine import Merged

        if isinstance(event, Merged):
            self._pr_merged(event.pr_number)
        self._emit(ServiceEvent("deploy", payload=event))
        if type(event).__name__ in ("RunStarted", "Paused", "RunFinished"):
            self.refresh_attention()

    def _pr_merged(self, number: int) -> None:
        """The engine merged PR ``number``: it is no longer pending — now, not at the next poll."""
        self._merged_prs.add(number)
        self.tracked_prs.discard(number)
        self._pr_cache.pop(number, None)
        task = self._explaining.pop(number, None)
        if task is not None:
            task.cancel()
        if any(state.pr.number == number for state in self.prs):
            self.prs = [state for state in self.prs if state.pr.number != number]
            self._emit(ServiceEvent("prs"))

    # --- preview before merge (SSH backend) ----------------------------------------------

    def _changelog_for(self, pr: UpdatePR) -> Any:
        state = self.pr_state(pr.number)
        explanation = state.explanation if state is not None and state.pr.head_sha == pr.head_sha else None
        return getattr(explanation, "changelog", None)

    async def preview(self, pr: UpdatePR, hosts: list[str], *, fresh: bool = False,
                      on_result: Callable[[Any], None] | None = None) -> list[Any]:
        """Build ``pr``'s head on ``hosts`` without activating it (core/preview.py; cached by head sha)."""
        from nfu_tui.core.preview import PreviewCache, preview_pr

        if not self.config.uses_ssh:
            raise NfuError('a preview needs fleet.backend = "ssh" (the dashboard cannot build without activating)')
        return await preview_pr(self.backend, pr, hosts, changelog=self._changelog_for(pr), cache=PreviewCache(),
                                fresh=fresh, on_result=on_result)

    def cached_previews(self, pr: UpdatePR, hosts: Iterable[str]) -> dict[str, Any]:
        """The cached previews of ``pr``'s current head (security fixes marked from its changelog)."""
        from nfu_tui.core.preview import PreviewCache, security_ids_by_package, with_security

        if not self.config.uses_ssh:
            return {}
        security = security_ids_by_package(self._changelog_for(pr))
        return {h: with_security(p, security) for h, p in PreviewCache().for_head(pr.head_sha, hosts).items()}

    async def plan_converge(self, host_ids: list[str] | None = None) -> Any:
        """A converge plan: the default branch's head to every host behind it (GitHub compares; no merge)."""
        from nfu_tui.core.converge import fleet_lag
        from nfu_tui.core.plan import make_plan
        from nfu_tui.core.takeover import with_takeovers

        if self.github is None:
            raise NfuError("converging needs GitHub configured (the default branch's head is the target)")
        hosts = self.hosts()
        branch, target, lag = await fleet_lag(self.github, hosts, backend=self.backend_info)
        return with_takeovers(self.store, make_plan(hosts, self.config, self.state.held, targets=host_ids, pr_number=0,
                                                    head_sha=target, overrides=self.state.overrides, lag=lag,
                                                    branch=branch))

    async def deploy(self, plan: Any, *, trigger: str = "manual", **engine_kw: Any) -> Any:
        """Merge and deploy ``plan`` with the engine; progress arrives as "deploy" events."""
        self.engine = self.make_engine(**engine_kw)
        await self.github_login()
        try:
            result = await self.engine.run(plan, actor=local_actor(), trigger=trigger)
        finally:
            self._refresh.set()  # the PR list changed
        return result

    async def resume(self, run_id: int, **engine_kw: Any) -> Any:
        self.engine = self.make_engine(**engine_kw)
        return await self.engine.resume(run_id, actor=local_actor())

    async def continue_unverified(self, run_id: int, **engine_kw: Any) -> Any:
        """Deploy the rest of run ``run_id`` past its unverified canaries (the admin's decision; a new run)."""
        self.engine = self.make_engine(**engine_kw)
        return await self.engine.continue_unverified(run_id, actor=local_actor())

    def cancel_deploy(self, *, release_hosts: bool = False) -> None:
        if self.engine is not None and self.engine.running:
            self.engine.cancel(release_hosts=release_hosts)

    def stop_waiting(self) -> None:
        """Stop waiting for queued offline hosts; the run ends "waiting" (resumable)."""
        if self.engine is not None and self.engine.running:
            self.engine.stop_waiting()

    def abandon_run(self, run_id: int, *, where: str = "the TUI") -> None:
        """Mark an unfinished run abandoned (audited); nothing on GitHub or the hosts changes.

        Taken under the deploy lock, so a run that another process is executing is never
        abandoned under it (raises DeployLocked).
        """
        with DeployLock(label=self.lock_label):
            self.store.abandon_run(run_id, actor=local_actor(), where=where, github_login=self._github_login)

    @property
    def deploying(self) -> bool:
        return self.engine is not None and self.engine.running

    def unfinished_runs(self) -> list[Any]:
        return self.store.unfinished_runs()

    # ------------------------------------------------------------- misc

    def now(self) -> float:
        return time.time()


__all__ = ["ConnectionStatus", "FleetService", "PRState", "ServiceEvent"]
