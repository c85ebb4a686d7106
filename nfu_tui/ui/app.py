"""The Textual application: renders the fleet service's state and sends it intents.

The app never talks HTTP. It subscribes to the :class:`FleetService` (``subscribe``),
coalesces its events (:class:`~nfu_tui.ui.messages.EventBatcher`) and publishes at most
one :class:`~nfu_tui.ui.messages.ServiceUpdate` per flush interval on the
``service_updated`` signal, which the screens subscribe to. Intents (hold, refresh,
login, deploy) run in workers with ``exit_on_error=False``; a failure becomes a toast.

Start-up is kept fast: the service (and with it httpx/websockets) may be built by a
factory after the first frame, and connecting happens in a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.signal import Signal
from textual.worker import Worker, WorkerState

from nfu_tui.models import Host
from nfu_tui.ui.fleetview import HostMeta, Progress
from nfu_tui.ui.messages import EventBatcher, ServiceUpdate
from nfu_tui.ui.screens.main import MainScreen

if TYPE_CHECKING:
    from nfu_tui.ui.deployview import DeployView


class FleetServiceAPI(Protocol):
    """What the UI uses of ``nfu_tui.core.service.FleetService``."""

    status: Any
    prs: list[Any]
    store: Any  # nfu_tui.core.store.Store (journal + audit)
    lock_label: str

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def hosts(self) -> list[Host]: ...
    def host(self, host_id: str) -> Host | None: ...
    def output_lines(self, host_id: str) -> list[str]: ...
    def progress(self, host_id: str) -> tuple[str, int, int] | None: ...
    def pending_update(self) -> Any | None: ...
    def update_headline(self) -> str | None: ...
    async def login(self, password: str, totp: str | None = None) -> None: ...
    async def refresh(self) -> None: ...
    def held(self) -> set[str]: ...
    async def set_hold(self, host_ids: list[str], held: bool) -> None: ...
    def host_config(self, host_id: str) -> Any: ...
    def plan(self, pr_number: int, host_ids: list[str] | None = None) -> Any: ...
    async def deploy(self, plan: Any) -> Any: ...
    async def resume(self, run_id: int) -> Any: ...
    def unfinished_runs(self) -> list[Any]: ...
    def cancel_deploy(self) -> None: ...


def _fleet_commands() -> type:
    """The palette provider, imported when the palette first opens (textual.command is slow to import)."""
    from nfu_tui.ui.commands import FleetCommands

    return FleetCommands


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class NfuApp(App[int]):
    """nfu-tui: fleet grid, update PRs, merge & deploy."""

    TITLE = "nfu-tui"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {_fleet_commands}

    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="Quit nfu-tui", id="app.quit"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="Every key binding and the legend", id="app.help"),
        Binding("r", "refresh", "Refresh", show=False, tooltip="Poll GitHub and resync the dashboard now", id="app.refresh"),
    ]

    def __init__(
        self,
        service: FleetServiceAPI | None = None,
        *,
        service_factory: Callable[[], FleetServiceAPI] | None = None,
        clock: Callable[[], datetime] = utcnow,
        flush_interval: float = 0.1,
        bell: bool = True,
    ) -> None:
        super().__init__()
        if service is None and service_factory is None:
            raise ValueError("NfuApp needs a service or a service_factory")
        self.service: FleetServiceAPI | None = service
        self._factory = service_factory
        self.clock = clock
        self.flush_interval = flush_interval
        self.ring_bell = bell
        self.service_updated: Signal[ServiceUpdate] = Signal(self, "service-updated")
        self.deploy_view: DeployView | None = None
        self._batcher = EventBatcher()
        self._flush_scheduled = False
        self._unsubscribe: Callable[[], None] | None = None
        self._login_asked = False
        self._stopped = False
        self._pulse_timer: Any = None

    # --- lifecycle --------------------------------------------------------------

    def get_default_screen(self) -> MainScreen:
        return MainScreen()

    def on_mount(self) -> None:
        if self.animation_level == "full":
            self._pulse_timer = self.set_interval(0.8, self._pulse)
        self.call_after_refresh(self._start_service)

    @work(group="service", exclusive=True, exit_on_error=False, description="connect to dashboard and GitHub")
    async def _start_service(self) -> None:
        if self.service is None:
            assert self._factory is not None
            self.service = self._factory()
        self._unsubscribe = self.service.subscribe(self._on_service_event)
        self.service_updated.publish(ServiceUpdate(all_hosts=True, prs=True, status=True))
        await self.service.start()
        unfinished = [run for run in self.service.unfinished_runs() if run.kind == "deploy"]
        if unfinished:
            run = max(unfinished, key=lambda r: r.id)
            busy = self._deploy_lock_holder()
            if busy is None:
                self.offer_resume(run)
            else:  # not interrupted: another process is deploying it right now
                self.notify(f"Run #{run.id} (PR #{run.pr}): {busy}", title="Deploy in progress", markup=False)

    async def _stop_service(self) -> None:
        """Disconnect (bounded: quitting must not hang on a dead connection)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.service is not None and not self._stopped:
            self._stopped = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.service.stop(), timeout=5)

    async def action_quit(self) -> None:
        if not self.deploy_running:
            await self._stop_service()
            self.exit(0)
            return
        from nfu_tui.ui.screens.confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.cancel_deploy()
                self.exit(0)  # on_unmount stops the service

        self.push_screen(
            ConfirmScreen(
                "A deploy is running. Quit anyway? The run is cancelled: no new host starts; "
                "commands already running on hosts finish on their own.",
                yes="Quit",
            ),
            answered,
        )

    async def on_unmount(self) -> None:
        await self._stop_service()

    # --- service events -----------------------------------------------------------

    def _on_service_event(self, event: Any) -> None:
        self._batcher.add(event)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.set_timer(self.flush_interval, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._batcher.empty:
            return
        update = self._batcher.take()
        for note in update.notifications:
            self.notify(note.message, title=note.title, severity=note.severity, markup=False)
        if update.deploy and self.deploy_view is not None:
            for event in update.deploy:
                if self.deploy_view.apply(event):  # the run finished: toast + bell
                    note = event.notification
                    self.notify(note.message, title=note.title, severity=note.severity, timeout=15, markup=False)
                    if self.ring_bell:
                        self.bell()
        if update.status:
            self._check_login()
        self.service_updated.publish(update)

    def publish(self, update: ServiceUpdate) -> None:
        """Re-render screens as if the service had reported ``update``."""
        self.service_updated.publish(update)

    def host_progress(self, host_id: str) -> Progress | None:
        if self.service is None:
            return None
        progress = self.service.progress(host_id)
        return Progress(*progress) if progress else None

    def host_meta(self, host_id: str) -> HostMeta:
        """Hold and deploy settings of a host, straight from the service."""
        if self.service is None:
            return HostMeta()
        cfg = self.service.host_config(host_id)
        return HostMeta(
            held=host_id in self.service.held(),
            canary=cfg.canary,
            priority=cfg.priority,
            auto_update=cfg.auto_update,
        )

    def _pulse(self) -> None:
        screen = self.screen_stack[0] if self.screen_stack else None
        if isinstance(screen, MainScreen):
            screen.grid.pulse()

    # --- login ----------------------------------------------------------------------

    def _check_login(self) -> None:
        status = self.service.status if self.service else None
        if status is not None and status.dashboard == "live":
            self._login_asked = False  # a later expiry asks again
        if status is not None and status.dashboard == "login-required" and not self._login_asked:
            self._login_asked = True  # once; after "skip" the palette offers it again
            self.show_login()

    def show_login(self) -> None:
        """The dashboard login dialog (when the dashboard waits for a password/TOTP)."""
        from nfu_tui.ui.screens.login import LoginScreen

        status = self.service.status if self.service else None
        if status is None or status.dashboard != "login-required" or isinstance(self.screen, LoginScreen):
            return
        self.push_screen(LoginScreen(detail=status.dashboard_detail))

    # --- intents --------------------------------------------------------------------

    @work(group="hold", exit_on_error=False, description="hold/unhold hosts")
    async def set_hold(self, host_ids: list[str], held: bool) -> None:
        assert self.service is not None
        await self.service.set_hold(host_ids, held)
        names = ", ".join(host_ids[:5]) + (f" and {len(host_ids) - 5} more" if len(host_ids) > 5 else "")
        self.notify(
            f"{names}: {'held — skipped by deploys and automation' if held else 'released'}",
            title="Hold" if held else "Unhold",
            markup=False,
        )
        self.publish(ServiceUpdate(hosts=frozenset(host_ids)))

    def action_refresh(self) -> None:
        if self.service is None:
            return
        self.notify("Polling GitHub and resyncing the dashboard…", title="Refresh", timeout=2)
        self._refresh()

    @work(group="refresh", exclusive=True, exit_on_error=False, description="refresh now")
    async def _refresh(self) -> None:
        assert self.service is not None
        await self.service.refresh()

    def action_help(self) -> None:
        from nfu_tui.ui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # --- deploy -------------------------------------------------------------------------

    @property
    def deploy_running(self) -> bool:
        return self.deploy_view is not None and not self.deploy_view.finished

    def plan_deploy(self, pr_number: int, host_ids: list[str] | None) -> None:
        """Build the plan and ask for confirmation; deploy when confirmed."""
        from nfu_tui.errors import NfuError
        from nfu_tui.ui.screens.confirm import DeployConfirmScreen

        assert self.service is not None
        if self.deploy_running:
            self.notify("A deploy is already running.", title="Deploy", severity="warning")
            self.show_deploy()
            return
        try:
            plan = self.service.plan(pr_number, host_ids)
        except NfuError as exc:
            self.notify(exc.message, title=exc.title, severity="error", markup=False)
            return
        state = next((s for s in self.service.prs if s.pr.number == pr_number), None)

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.start_deploy(plan)

        self.push_screen(DeployConfirmScreen(plan, state), confirmed)

    def start_deploy(self, plan: Any) -> None:
        from nfu_tui.ui.deployview import DeployView

        self.deploy_view = DeployView.from_plan(plan, self.clock)
        self._deploy(plan, None)
        self.show_deploy()

    def offer_resume(self, run: Any) -> None:
        """Ask what to do with a deploy run the journal says was interrupted."""
        from nfu_tui.ui.deployview import DeployView
        from nfu_tui.ui.screens.resume import ResumeScreen

        def chosen(choice: str | None) -> None:
            if choice == "resume" and not self.deploy_running:
                self.deploy_view = DeployView.from_run(run, self.clock)
                self._deploy(None, run.id)
                self.show_deploy()
            elif choice == "abandon":
                self._abandon(run)
            else:
                self.notify(
                    f"Run #{run.id} stays unfinished; it is offered again at the next start "
                    f"(or: nfu-tui deploy --resume {run.id}).",
                    title="Unfinished deploy",
                    markup=False,
                )

        self.push_screen(ResumeScreen(run), chosen)

    @work(group="deploy", exclusive=True, exit_on_error=False, description="merge & deploy")
    async def _deploy(self, plan: Any, resume_run_id: int | None) -> None:
        assert self.service is not None
        if resume_run_id is None:
            result = await self.service.deploy(plan)
        else:
            result = await self.service.resume(resume_run_id)
        if self.deploy_view is not None:
            self.deploy_view.finish(result)
            self.publish(ServiceUpdate(status=True))

    def _deploy_lock_holder(self) -> str | None:
        """Who holds the cross-process deploy lock right now, or None when it is free."""
        from nfu_tui.core.store import DeployLock
        from nfu_tui.errors import DeployLocked

        assert self.service is not None
        try:
            with DeployLock(label=self.service.lock_label):
                return None
        except DeployLocked as exc:
            return exc.message

    @work(group="abandon", exit_on_error=False, description="abandon the unfinished run")
    async def _abandon(self, run: Any) -> None:
        from nfu_tui.core.store import DeployLock, local_actor

        assert self.service is not None
        store = self.service.store
        with DeployLock(label=self.service.lock_label):  # never under a deploy that is running
            store.finish_run(run.id, "abandoned", f"abandoned by {local_actor()} in the TUI")
            store.audit("abandon", actor=local_actor(), pr=run.pr, details={"run": run.id})
        self.notify(f"Run #{run.id} (PR #{run.pr}) abandoned; nothing on GitHub or the hosts was changed.",
                    title="Unfinished deploy", markup=False)

    def show_deploy(self) -> None:
        from nfu_tui.ui.screens.deploy import DeployScreen

        if self.deploy_view is None:
            self.notify("No deploy has run in this session.", title="Deploy")
            return
        if not isinstance(self.screen, DeployScreen):
            self.push_screen(DeployScreen(self.deploy_view))

    def cancel_deploy(self) -> None:
        if self.service is not None and self.deploy_running:
            self.service.cancel_deploy()

    def stop_waiting(self) -> None:
        """Stop waiting for queued offline hosts (the run ends "waiting", resumable)."""
        engine = getattr(self.service, "engine", None)
        if engine is not None and engine.running:
            engine.stop_waiting()

    # --- errors -------------------------------------------------------------------------

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR:
            return
        from nfu_tui.errors import NfuError

        error = event.worker.error
        if isinstance(error, NfuError):
            title, message = error.title, str(error)
        else:
            title, message = f"{event.worker.description or 'Background task'} failed", f"{type(error).__name__}: {error}"
        self.notify(message, title=title, severity="error", timeout=10, markup=False)
        if event.worker.group == "deploy" and self.deploy_view is not None:
            self.deploy_view.fail(message)
            self.publish(ServiceUpdate(status=True))
