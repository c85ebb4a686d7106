"""The Textual application: renders the fleet service's state and sends it intents.

The app never talks HTTP. It subscribes to the :class:`FleetService` (``subscribe``),
coalesces its events (:class:`~nfu_tui.ui.messages.EventBatcher`) and publishes at most
one :class:`~nfu_tui.ui.messages.ServiceUpdate` per flush interval on the
``service_updated`` signal, which the screens subscribe to. Intents (hold, refresh,
login, deploy, rollback) run in workers with ``exit_on_error=False``; a failure becomes
a toast.

Automation: once the service is started the app creates an
:class:`~nfu_tui.core.automation.AutomationRunner` (also when automation is off: it
installs the recorder that journals each run's lock diff, and it runs rollbacks) and
runs it in a worker that survives the runner's failures. Its decisions feed the
header and the status line; deploys it starts (and rollback redeploys) show on the
deploy screen like manual ones.

Start-up is kept fast: the first frame draws the last known fleet from the cache
(:mod:`nfu_tui.core.fleetcache`, marked stale) while the settings are loaded (``prepare``,
in a thread: pydantic, secrets), the service (and with it httpx/websockets) is built by
a factory, and connecting happens in a worker. The screens read :attr:`NfuApp.shown`:
the cache for what has not arrived live yet, then the service. What was shown live is
saved back to the cache every minute (when it changed) and at quit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.signal import Signal
from textual.worker import Worker, WorkerState

from nfu_tui.backends.base import NIXFLEET, BackendInfo
from nfu_tui.models import Host
from nfu_tui.ui.fleetview import HostMeta, Progress
from nfu_tui.ui.messages import EventBatcher, ServiceUpdate
from nfu_tui.ui.screens.main import MainScreen
from nfu_tui.ui.widgets.header import AutomationStatus

if TYPE_CHECKING:
    from nfu_tui.ui.deployview import DeployView

log = logging.getLogger(__name__)

AUTOMATION_RETRY = 30.0
"""Seconds before the automation loop starts again after an unexpected error."""

CACHE_SAVE_INTERVAL = 60.0
"""Seconds between saves of the fleet cache while something changed."""

CACHE_FIRST_SAVE_DELAY = 2.0
"""Seconds after the fleet first went live before it is saved (the first GitHub poll usually lands meanwhile)."""


class FleetServiceAPI(Protocol):
    """What the UI uses of ``nfu_tui.core.service.FleetService``."""

    status: Any
    prs: list[Any]
    store: Any  # nfu_tui.core.store.Store (journal + audit)
    config: Any  # nfu_tui.config.Config
    state: Any  # nfu_tui.core.state.AppState (holds, toggle, theme)
    lock_label: str

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def hosts(self) -> list[Host]: ...
    def host(self, host_id: str) -> Host | None: ...
    def output_lines(self, host_id: str) -> list[str]: ...
    async def recent_output(self, host_id: str, lines: int = 200) -> list[str]: ...
    def progress(self, host_id: str) -> tuple[str, int, int] | None: ...
    def pending_update(self) -> Any | None: ...
    def update_headline(self) -> str | None: ...
    async def login(self, password: str, totp: str | None = None) -> None: ...
    async def refresh(self) -> None: ...
    async def github_login(self) -> str | None: ...
    def held(self) -> set[str]: ...
    async def set_hold(self, host_ids: list[str], held: bool) -> None: ...
    def host_config(self, host_id: str) -> Any: ...
    def automation_enabled(self) -> bool: ...
    def plan(self, pr_number: int, host_ids: list[str] | None = None) -> Any: ...
    async def plan_converge(self, host_ids: list[str] | None = None) -> Any: ...
    async def deploy(self, plan: Any) -> Any: ...
    async def resume(self, run_id: int) -> Any: ...
    async def continue_unverified(self, run_id: int) -> Any: ...
    def unfinished_runs(self) -> list[Any]: ...
    def cancel_deploy(self, *, release_hosts: bool = False) -> None: ...
    def stop_waiting(self) -> None: ...
    def abandon_run(self, run_id: int, *, where: str = "the TUI") -> None: ...


def _fleet_commands() -> type:
    """The palette provider, imported when the palette first opens (textual.command is slow to import)."""
    from nfu_tui.ui.commands import FleetCommands

    return FleetCommands


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def automation_question(config: Any, windows: Any, first: str = "") -> str:
    """What turning automation on means, in the words of the configuration; ``first``: what it
    does at once (see :func:`first_step`)."""
    auto = config.flake_updates.automation
    rollback = config.flake_updates.rollback
    ci = "CI is green" if auto.require_ci else "CI is green (or there is no CI: require_ci = false)"
    hosts = {
        "all": "every host except held and no-auto ones (auto_update = false); offline ones when they come back",
        "online-only": "the hosts online at the time, except held and no-auto ones (auto_update = false)",
        "none": "no host: merge only",
    }[auto.deploy_strategy]
    when = "at any time (no maintenance window configured)" if windows.always_open else f"only in the maintenance windows ({windows})"
    after = f"rollback strategy {rollback.strategy}" if rollback.enabled else "no rollback (rollback.enabled = false)"
    return (
        "Turn full automation on?\n\n"
        f"nfu-tui then merges the newest update PR by itself once it is {auto.delay_minutes:g} min old and {ci}, "
        f"{when}, and deploys it to {hosts}, {auto.max_parallel} at a time, canaries first. "
        f"On a failure: {after}.\n\n"
        + (f"{first}\n\n" if first else "")
        + "The setting is saved (shared with `nfu-tui auto`) and written to the audit trail. A turns it off again."
    )


def first_step(decision: Any, now: datetime, titles: Mapping[int, str]) -> str:
    """What automation would do as soon as it is on (``decision``: its decision as if it were on)."""
    from nfu_tui.core.automation import Action

    if decision.action is Action.MERGE:
        title = titles.get(decision.pr, "")
        return (f"Due now: PR #{decision.pr}" + (f" ({title})" if title else "")
                + " — turning automation on merges and deploys it right away.")
    if decision.action is Action.RESUME:
        return f"Due now: {decision.describe(now)} — right away."
    return f"Nothing is due now. First: {decision.describe(now)}."


class NfuApp(App[int]):
    """nfu-tui: fleet grid, update PRs, merge & deploy, automation, rollback, history."""

    TITLE = "nfu-tui"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {_fleet_commands}

    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="Quit nfu-tui", id="app.quit"),
        Binding(
            "question_mark", "help", "Help", key_display="?", show=False,  # pinned right by KeyFooter
            tooltip="Every key binding and the legend", id="app.help",
        ),
        Binding("r", "refresh", "Refresh", show=False, tooltip="Poll GitHub and resync the fleet now", id="app.refresh"),
        Binding(
            "A", "toggle_automation", "Automation on/off", show=False,
            tooltip="Turn full automation on (asks first) or off; saved and audited", id="app.automation",
        ),
        Binding(
            "H", "history", "History", show=False,
            tooltip="Past runs (lock diff, plan, host outcomes, timeline) and the audit trail", id="app.history",
        ),
    ]

    def __init__(
        self,
        service: FleetServiceAPI | None = None,
        *,
        service_factory: Callable[[], FleetServiceAPI] | None = None,
        clock: Callable[[], datetime] = utcnow,
        flush_interval: float = 0.1,
        bell: bool | None = True,
        automation_kw: Mapping[str, Any] | None = None,
        keymap: Mapping[str, str] | None = None,
        prepare: Callable[[], None] | None = None,
        cache: Any = None,
        cache_digest: str | None = None,
    ) -> None:
        """``automation_kw``: extra keyword arguments for the AutomationRunner (tests: ``engine_kw``);
        ``keymap``: binding id -> keys (the config's ``[keys]``; default: the service's config,
        applied once the service exists when it is built after the first frame).

        ``prepare`` runs in a thread before the factory (loading the settings); a ConfigError
        it raises ends the app with exit code 2 and :attr:`exit_message`. ``bell`` None: the
        service's ``notify.bell``. ``cache``: a ``FleetCache`` to draw until live data arrives;
        with ``cache_digest`` (the configuration's digest) the app saves what it shows back.
        """
        super().__init__()
        if service is None and service_factory is None:
            raise ValueError("NfuApp needs a service or a service_factory")
        self.service: FleetServiceAPI | None = service
        self._factory = service_factory
        self._prepare = prepare
        self.cache = cache  # nfu_tui.core.fleetcache.FleetCache until live data replaced all of it
        self._cache_digest = cache_digest
        self._hosts_live = False
        self._prs_live = False
        self._cache_dirty = False
        self._cache_saved_live = cache_digest is None
        self.exit_message = ""  # printed by the caller after the terminal is restored
        self.clock = clock
        self.flush_interval = flush_interval
        self.ring_bell = bell
        self.service_updated: Signal[ServiceUpdate] = Signal(self, "service-updated")
        self.deploy_view: DeployView | None = None
        self.runner: Any = None  # nfu_tui.core.automation.AutomationRunner once the service started
        self.automation = AutomationStatus()
        self._automation_kw = dict(automation_kw or {})
        self._batcher = EventBatcher()
        self._flush_scheduled = False
        self._unsubscribe: Callable[[], None] | None = None
        self._login_asked = False
        self._stopped = False
        self._pulse_timer: Any = None
        self._offers: list[Any] = []  # unfinished runs still to offer (resume/abandon/later)
        self._rolling_back: set[str] = set()  # hosts whose per-host rollback runs now
        self._theme_state: Any = None  # the AppState the theme is kept in until the service exists
        if keymap is None and service is not None:
            keymap = getattr(service.config, "keys", None)
        self.keymap: dict[str, str] = dict(keymap or {})
        if self.keymap:
            self.set_keymap(self.keymap)  # validated by load_config (nfu_tui.keymap)

    # --- lifecycle --------------------------------------------------------------

    def get_system_commands(self, screen: Any) -> Any:
        """Of Textual's own palette commands only theme, keys and quit (ours: ``FleetCommands``)."""
        for command in super().get_system_commands(screen):
            if command.title in ("Theme", "Keys", "Quit"):
                yield command

    def get_default_screen(self) -> MainScreen:
        return MainScreen()

    def on_mount(self) -> None:
        self._restore_theme()
        if self.animation_level == "full":
            self._pulse_timer = self.set_interval(0.8, self._pulse)
        if self._cache_digest is not None:
            self.set_interval(CACHE_SAVE_INTERVAL, self._save_cache_in_background)
        self.call_after_refresh(self._start_service)

    @property
    def shown(self) -> Any:
        """What the screens show: the service, or a view that answers from the cache until live data arrived."""
        if self.cache is None:
            return self.service
        from nfu_tui.core.fleetcache import CachedView

        return CachedView(self.cache, self.service, hosts_live=self._hosts_live, prs_live=self._prs_live)

    @work(group="service", exclusive=True, exit_on_error=False, description="connect to dashboard and GitHub")
    async def _start_service(self) -> None:
        if self.service is None:
            assert self._factory is not None
            from nfu_tui.errors import ConfigError

            try:
                if self._prepare is not None:
                    await asyncio.to_thread(self._prepare)
                self.service = self._factory()
            except ConfigError as exc:
                self.exit_message = exc.message
                self.exit(2)
                return
        if self.ring_bell is None:
            self.ring_bell = bool(self.service.config.notify.bell)
        if not self.keymap and (keys := getattr(self.service.config, "keys", None)):
            self.keymap = dict(keys)
            self.set_keymap(self.keymap)
        self._check_cache_identity()
        self._unsubscribe = self.service.subscribe(self._on_service_event)
        self.service_updated.publish(ServiceUpdate(all_hosts=True, prs=True, status=True))
        await self.service.start()
        self._start_automation()
        self._offer_unfinished()

    def _start_automation(self) -> None:
        """Create the runner (it also records lock diffs and runs rollbacks) and run it."""
        from nfu_tui.core.automation import AutomationRunner
        from nfu_tui.errors import NfuError

        try:
            self.runner = AutomationRunner(self.service, clock=self.clock, **self._automation_kw)
        except NfuError as exc:  # e.g. the journal cannot be read
            self._automation_failed(exc.message)
            return
        self.runner.subscribe(self._on_decision)
        self._run_automation()

    @work(group="automation", exclusive=True, exit_on_error=False, description="automation")
    async def _run_automation(self) -> None:
        """The runner's loop; an unexpected error is shown and the loop starts again later."""
        runner = self.runner
        while not runner.stopping:
            try:
                await runner.run_forever()
            except Exception as exc:  # automation must never take the app down
                log.exception("automation failed")
                self._automation_failed(f"{type(exc).__name__}: {exc}; retrying in {AUTOMATION_RETRY:g} s")
                await asyncio.sleep(AUTOMATION_RETRY)
                self.automation = AutomationStatus(self.automation.decision, enabled=self.automation.enabled)
                self.publish(ServiceUpdate(automation=True))

    def _automation_failed(self, message: str) -> None:
        self.automation = AutomationStatus(self.automation.decision, message, self.automation.enabled)
        self.notify(message, title="Automation stopped", severity="error", timeout=10, markup=False)
        self.publish(ServiceUpdate(automation=True))

    def _on_decision(self, decision: Any) -> None:
        """Each decision of the runner; screens re-render when it changed (the countdown ticks on its own)."""
        before = self.automation
        assert self.service is not None
        self.automation = AutomationStatus(decision, before.error, self.service.automation_enabled())
        previous = before.decision
        if (previous is None or not decision.same_as(previous) or decision.window != previous.window
                or before.enabled != self.automation.enabled):
            self.publish(ServiceUpdate(automation=True))

    # --- theme (kept in the state file) -------------------------------------------

    def _state_for_theme(self) -> Any:
        """The service's AppState, or (before the service exists) one read here; None if unreadable."""
        if self.service is not None:
            return self.service.state
        if self._theme_state is None:
            from nfu_tui.core.state import AppState
            from nfu_tui.errors import StateError

            try:
                self._theme_state = AppState.load()
            except StateError as exc:
                self.notify(exc.message, title="Theme not restored", severity="warning", markup=False)
                return None
        return self._theme_state

    def _restore_theme(self) -> None:
        state = self._state_for_theme()
        name = state.theme if state is not None else None
        if name and name in self.available_themes:
            self.theme = name

    def watch_theme(self, theme: str) -> None:
        """A theme chosen in the palette ("Change theme") is kept for the next start."""
        if not self.is_running:
            return
        state = self._state_for_theme()
        if state is not None and state.theme != theme:
            from nfu_tui.errors import StateError

            try:
                state.set_theme(theme)
            except StateError as exc:
                self.notify(exc.message, title="Theme not saved", severity="warning", markup=False)

    async def _stop_service(self) -> None:
        """Stop automation and disconnect (bounded: quitting must not hang on a dead connection)."""
        if self._cache_dirty and not self._stopped:
            self._save_cache()
        if self.runner is not None:
            self.runner.request_stop("nfu-tui quit")
            self.runner.close()
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

        self.push_screen(ConfirmScreen(self.quit_question(), yes="Quit, leave it resumable", no="Stay", width=72),
                         self._quit_answered)

    def quit_question(self) -> str:
        """What quitting during a run really does: the run is interrupted, never cancelled, and left resumable."""
        automatic = self.runner is not None and self.runner.acting
        view = self.deploy_view
        run = f"run #{view.run_id}" if view is not None and view.run_id is not None else "the run"
        what = "Automation is deploying" if automatic else "A deploy is running"
        text = (f"{what} ({run}). Quit anyway?\n\n"
                f"Quitting does not cancel it: {run} is left resumable in the journal. No new host starts; commands "
                "already running on hosts finish on their own"
                + (". " if self.backend.stops_commands else " (the dashboard cannot stop them). "))
        if automatic:
            text += ("At the next start automation resumes it (in a maintenance window); with automation off, "
                     "nfu-tui offers to resume it.")
        else:
            text += ("The next start offers to resume it (resume follows the running hosts and never merges twice) "
                     "or to abandon it.")
        if view is not None and view.cancel_requested:
            text += ("\n\nA cancel was requested but the running hosts have not finished: to end the run cancelled, "
                     "stay until it finishes.")
        else:
            text += "\n\nTo cancel it instead, stay: c on the deploy screen cancels it."
        return text

    def _quit_answered(self, yes: bool | None) -> None:
        if not yes:
            return
        if self.runner is not None:
            self.runner.request_stop("nfu-tui quit")
        # Interrupt (not cancel) the run now, so it is left resumable whatever the timing of the shutdown.
        for group in ("deploy", "automation"):
            self.workers.cancel_group(self, group)
        self.exit(0)  # on_unmount stops automation and the service

    async def on_unmount(self) -> None:
        await self._stop_service()

    # --- the fleet cache ----------------------------------------------------------

    def _check_cache_identity(self) -> None:
        """Drop a cache that belongs to another dashboard/repository than the service's."""
        from nfu_tui.core import fleetcache

        assert self.service is not None
        cfg = self.service.config
        if self.cache is not None and self.cache.identity != fleetcache.identity(cfg.dashboard.url, cfg.github.repo):
            self.cache = None

    def _replace_cached(self, update: ServiceUpdate) -> ServiceUpdate:
        """Switch hosts/PRs from the cache to live data once the service has them (for good)."""
        assert self.service is not None and self.cache is not None
        status = self.service.status
        if not self._hosts_live and (status.fleet in ("live", "disabled") or not self.cache.hosts):
            self._hosts_live = True
            update = replace(update, all_hosts=True, hosts=frozenset())
        if not self._prs_live and (status.last_poll is not None or status.github == "disabled" or not self.cache.prs):
            self._prs_live = True
            update = replace(update, prs=True)
        if self._hosts_live and self._prs_live:
            self.cache = None
        return update

    def _cached_hosts_shown(self, title: str) -> bool:
        """True (and says so) while the grid shows the last session's hosts: nothing is planned on them."""
        if self.cache is None or self._hosts_live or not self.cache.hosts:
            return False
        self.notify(f"The hosts shown are from the last session; wait for {self.backend.noun}'s live fleet.",
                    title=title, severity="warning")
        return True

    def _live(self) -> bool:
        return self.service is not None and self.service.status.fleet == "live"

    def _cache_snapshot(self) -> Any:
        """What is shown now, as a cache (the cached part kept for what is not live yet)."""
        from nfu_tui.core import fleetcache

        service = self.service
        assert service is not None and self._cache_digest is not None
        cfg = service.config
        old = self.cache
        hosts_live = old is None or self._hosts_live
        prs_live = old is None or self._prs_live
        hosts = tuple(service.hosts()) if hosts_live else old.hosts
        settings = {}
        for host in hosts:
            c = service.host_config(host.id)
            settings[host.id] = fleetcache.HostSettings(c.canary, c.priority, c.auto_update)
        now = utcnow()
        return fleetcache.FleetCache(
            identity=fleetcache.identity(cfg.dashboard.url, cfg.github.repo),
            config_digest=self._cache_digest,
            hosts=hosts,
            hosts_at=(service.status.unreachable_since or now) if hosts_live else old.hosts_at,
            prs=fleetcache.summarize_prs(service.prs) if prs_live else old.prs,
            prs_at=(service.status.last_poll or now) if prs_live else old.prs_at,
            held=frozenset(service.held()),
            settings=settings,
        )

    def _save_cache(self) -> None:
        from nfu_tui.core import fleetcache

        if self.service is None or self._cache_digest is None:
            return
        self._cache_dirty = False
        fleetcache.save(self._cache_snapshot())

    async def _save_cache_in_background(self) -> None:
        from nfu_tui.core import fleetcache

        if self.service is None or not self._cache_dirty:
            return
        self._cache_dirty = False
        await asyncio.to_thread(fleetcache.save, self._cache_snapshot())

    # --- service events -----------------------------------------------------------

    def _on_service_event(self, event: Any) -> None:
        self._batcher.add(event)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.set_timer(self.flush_interval, self._flush_events)

    def _flush_events(self) -> None:
        self._flush_scheduled = False
        if self._batcher.empty:
            return
        update = self._batcher.take()
        if update.fleet or update.prs:
            self._cache_dirty = True
        if update.status and self.cache is not None:
            update = self._replace_cached(update)
        if update.status and not self._cache_saved_live and self._live():
            self._cache_saved_live = True  # keep the first live fleet soon (a crash must not lose it)
            self.set_timer(CACHE_FIRST_SAVE_DELAY, self._save_cache_in_background)
        for note in update.notifications:
            self.notify(note.message, title=note.title, severity=note.severity, markup=False)
        for event in update.deploy:
            self._apply_deploy_event(event)
        if update.status:
            self._check_login()
        self.service_updated.publish(update)

    def _apply_deploy_event(self, event: Any) -> None:
        """Fold an engine event into the deploy view; a run the app did not start gets a new view."""
        from nfu_tui.core import engine as eng

        if not isinstance(event, eng.EngineEvent):
            return
        view = self.deploy_view
        if isinstance(event, eng.RunStarted) and not _shows(view, event.run_id):
            view = self._follow_run(event)
        if view is None or not _shows(view, event.run_id):
            return
        if view.apply(event):  # the run just finished: toast + bell
            note = event.notification
            # Failed or left hosts: the deploy screen's panel says it (with the next steps), uncovered.
            if not (getattr(self._screen_or_none(), "view", None) is view
                    and (view.failures() or view.left_behind())):
                self.notify(note.message, title=note.title, severity=note.severity, timeout=15, markup=False)
            if self.ring_bell:
                self.bell()

    def _screen_or_none(self) -> Any:
        """The active screen; None once the app is shutting down (a run's last events may arrive then)."""
        from textual.app import ScreenStackError

        try:
            return self.screen
        except ScreenStackError:
            return None

    def _follow_run(self, event: Any) -> DeployView | None:
        """A run started by automation or a rollback: show it like a deploy of our own."""
        from nfu_tui.errors import NfuError
        from nfu_tui.ui.deployview import DeployView

        assert self.service is not None
        try:
            run = self.service.store.get_run(event.run_id)
        except NfuError:
            return None
        view = self.deploy_view = DeployView.from_run(run, self.clock, resumed=event.resumed)
        who = "Automation" if run.trigger == "auto" else "nfu-tui"
        verb = "resumed" if event.resumed else "started"
        what = (f"the rollback's redeploy of PR #{run.pr}" if view.recovery
                else f"{view.plan.subject} (run #{run.id})" if view.plan.converge else f"deploy run #{run.id} of PR #{run.pr}")
        self.notify(f"{who} {verb} {what} — D shows it.", title=f"Run #{run.id}", markup=False)
        return view

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

    def automation_status(self) -> AutomationStatus:
        """For the headers: the runner's latest decision (or why automation stopped)."""
        return self.automation

    def _pulse(self) -> None:
        screen = self.screen_stack[0] if self.screen_stack else None
        if isinstance(screen, MainScreen):
            screen.grid.pulse()

    # --- login ----------------------------------------------------------------------

    def _check_login(self) -> None:
        status = self.service.status if self.service else None
        if status is not None and status.fleet == "live":
            self._login_asked = False  # a later expiry asks again
        if status is not None and status.fleet == "login-required" and not self._login_asked:
            self._login_asked = True  # once; after "skip" the palette offers it again
            self.show_login()

    def show_login(self) -> None:
        """The dashboard login dialog (when the dashboard waits for a password/TOTP)."""
        from nfu_tui.ui.screens.login import LoginScreen

        status = self.service.status if self.service else None
        if status is None or status.fleet != "login-required" or isinstance(self.screen, LoginScreen):
            return
        self.push_screen(LoginScreen(detail=status.fleet_detail))

    # --- intents --------------------------------------------------------------------

    @work(group="hold", exit_on_error=False, description="hold/unhold hosts")
    async def set_hold(self, host_ids: list[str], held: bool) -> None:
        if self.service is None:
            self.notify("Hosts can be held once nfu-tui has started.", title="Hold", severity="warning")
            return
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
        self.notify(f"Polling GitHub and resyncing {self.backend.noun}…", title="Refresh", timeout=2)
        self._refresh()

    @work(group="refresh", exclusive=True, exit_on_error=False, description="refresh now")
    async def _refresh(self) -> None:
        assert self.service is not None
        await self.service.refresh()

    def action_help(self) -> None:
        from nfu_tui.ui.screens.help import SCREEN_SECTIONS, HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(SCREEN_SECTIONS.get(type(self.screen).__name__)))

    def action_history(self) -> None:
        from nfu_tui.ui.screens.history import HistoryScreen, RunDetailScreen

        if self.service is None:
            self.notify("The journal opens once nfu-tui has started.", title="History")
            return
        if isinstance(self.screen, RunDetailScreen):
            self.pop_screen()
        if not isinstance(self.screen, HistoryScreen):
            self.push_screen(HistoryScreen(self.service.store, deployments=getattr(self.service, "deployments", None)))

    # --- automation -----------------------------------------------------------------

    def windows(self) -> Any:
        """The configured maintenance windows (a ``WindowSet``)."""
        if self.runner is not None:
            return self.runner.windows
        from nfu_tui.domain.windows import WindowSet

        assert self.service is not None
        return WindowSet(self.service.config.flake_updates.automation.maintenance_windows)

    def action_toggle_automation(self) -> None:
        """``A``: off at once; on after a confirm that says what automation will do."""
        from nfu_tui.ui.screens.confirm import ConfirmScreen

        if self.service is None or self.runner is None:
            self.notify("Automation can be switched once nfu-tui is connected.", title="Automation", severity="warning")
            return
        if self.service.automation_enabled():
            self._set_automation(False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._set_automation(True)

        from dataclasses import replace

        from nfu_tui.core.automation import decide

        as_if_on = decide(replace(self.runner.situation(), enabled=True))
        titles = {s.pr.number: s.pr.title for s in self.service.prs}
        question = automation_question(self.service.config, self.windows(), first_step(as_if_on, self.clock(), titles))
        self.push_screen(ConfirmScreen(question, yes="Turn on", width=76), answered)

    @work(group="automation-toggle", exclusive=True, exit_on_error=False, description="switch automation")
    async def _set_automation(self, enabled: bool) -> None:
        from nfu_tui.core.store import local_actor

        assert self.service is not None and self.runner is not None
        login = await self.service.github_login()
        self.runner.set_enabled(enabled, actor=local_actor(), github_login=login, source="tui")
        decision = self.runner.decide()  # show the new state now; the loop acts on it
        if enabled:
            message = f"Automation on: {decision.describe(self.clock())}."
        elif self.runner.acting:
            message = "Automation off. The run in progress goes on (c on the deploy screen cancels it)."
        else:
            message = "Automation off: nothing is merged or deployed without you."
        self.notify(message, title="Automation", markup=False)

    # --- rollback -------------------------------------------------------------------

    @property
    def backend(self) -> BackendInfo:
        """The fleet backend's label and noun for the texts (the dashboard's until the service exists)."""
        return self.service.status.backend if self.service is not None else NIXFLEET

    def request_host_rollback(self, host_id: str) -> None:
        """``R``: the backend's ``rollback`` op on one host, after a confirm."""
        from nfu_tui.core.rollback import host_rollback_question, host_rollback_refusal
        from nfu_tui.ui.screens.confirm import ConfirmScreen

        if self.service is None or self.runner is None:
            self.notify("Rollback is possible once nfu-tui is connected.", title="Rollback", severity="warning")
            return
        host = self.service.host(host_id)
        if host_id in self._rolling_back:
            self.notify(f"{host_id} is being rolled back already.", title="Rollback", markup=False)
            return
        refusal = host_rollback_refusal(host_id, host, self.backend)
        if refusal:
            self.notify(refusal, title="Rollback", severity="warning", markup=False)
            return
        question = host_rollback_question(host_id, host, held=host_id in self.service.held(), hold_hint="h",
                                          backend=self.backend)

        def answered(yes: bool | None) -> None:
            if yes:
                self._rolling_back.add(host_id)
                self._rollback_host(host_id)

        self.push_screen(ConfirmScreen(question, yes=f"Roll back {host_id}", width=72), answered)

    @work(group="host-rollback", exit_on_error=False, description="roll a host back")
    async def _rollback_host(self, host_id: str) -> None:
        """The outcome arrives as the rollback's own notification (toast + webhook)."""
        assert self.runner is not None
        self.notify(f"Rolling {host_id} back…", title="Rollback", markup=False)
        try:
            await self.runner.rollback_host(host_id)
        finally:
            self._rolling_back.discard(host_id)

    def request_roll_back(self, view: DeployView) -> None:
        """Roll back the failed run per ``rollback.strategy``, after a confirm."""
        from nfu_tui.core.rollback import switched_hosts
        from nfu_tui.errors import NfuError
        from nfu_tui.ui.screens.confirm import ConfirmScreen

        if self.service is None or self.runner is None or view.run_id is None:
            return
        settings = self.service.config.flake_updates.rollback
        pr = view.plan.pr_number
        try:
            switched = switched_hosts(self.service.store.get_run(view.run_id), self.service)
        except NfuError as exc:
            self.notify(exc.message, title=exc.title, severity="error", markup=False)
            return
        if settings.strategy == "revert-commit":
            hosts = ", ".join(switched) if switched else "no host (none had switched)"
            question = (
                f"Roll back PR #{pr} now?\n\nnfu-tui opens a revert PR of its merge ({view.merge_sha[:7]}), merges it "
                "(waiting for CI only when GitHub requires it) and redeploys the hosts that had switched to the "
                f"previous lock: {hosts}. Held hosts are skipped; maintenance windows do not apply (recovery)."
            )
        else:
            question = (
                f"Open a revert PR of PR #{pr} now?\n\nIt is listed with the update PRs; merge & deploy it like an "
                "update (m). Automation merges nothing else while it is open."
            )

        def answered(yes: bool | None) -> None:
            if yes:
                self._roll_back(view)

        self.push_screen(ConfirmScreen(question, yes="Roll back", width=72), answered)

    @work(group="rollback", exclusive=True, exit_on_error=False, description="roll back")
    async def _roll_back(self, view: DeployView) -> None:
        from nfu_tui.errors import NfuError

        assert self.service is not None and self.runner is not None and view.run_id is not None
        strategy = self.service.config.flake_updates.rollback.strategy
        view.rollback_note = f"⟳ rolling back ({strategy})…"
        self.publish(ServiceUpdate(status=True))
        try:
            outcome = await self.runner.roll_back(view.run_id)
        except NfuError as exc:
            view.rollback_note = f"✗ rollback not started: {exc.message}"
            raise
        else:
            view.rollback_note = ("✓ " if outcome.ok else "✗ ") + outcome.summary
        finally:
            self.publish(ServiceUpdate(status=True))

    # --- deploy -------------------------------------------------------------------------

    @property
    def deploy_running(self) -> bool:
        return self.deploy_view is not None and not self.deploy_view.finished

    def plan_deploy(self, pr_number: int, host_ids: list[str] | None) -> None:
        """Build the plan and ask for confirmation (warning outside the maintenance windows); deploy when confirmed."""
        from nfu_tui.core.automation import outside_window_warning
        from nfu_tui.errors import NfuError
        from nfu_tui.ui.screens.confirm import DeployConfirmScreen

        assert self.service is not None
        if self._cached_hosts_shown("Deploy"):
            return
        if self.deploy_running or (self.runner is not None and self.runner.acting):
            self.notify("A deploy is already running.", title="Deploy", severity="warning")
            self.show_deploy()
            return
        try:
            plan = self.service.plan(pr_number, host_ids)
        except NfuError as exc:
            self.notify(exc.message, title=exc.title, severity="error", markup=False)
            return
        state = next((s for s in self.service.prs if s.pr.number == pr_number), None)
        warning = outside_window_warning(self.windows(), self.clock())

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.start_deploy(plan)

        previews = self.service.cached_previews(state.pr, plan.hosts) if state is not None else None
        self.push_screen(DeployConfirmScreen(plan, state, window_warning=warning, previews=previews), confirmed)

    def plan_converge(self, host_ids: list[str] | None) -> None:
        """``c``: plan a converge (GitHub compares each host's generation to the default branch), confirm, run."""
        if self.service is None or self._cached_hosts_shown("Converge"):
            return
        if self.deploy_running or (self.runner is not None and self.runner.acting):
            self.notify("A deploy is already running.", title="Converge", severity="warning")
            self.show_deploy()
            return
        self._plan_converge(host_ids)

    @work(group="plan", exclusive=True, exit_on_error=False, description="plan the converge")
    async def _plan_converge(self, host_ids: list[str] | None) -> None:
        from nfu_tui.core.automation import outside_window_warning
        from nfu_tui.ui.screens.confirm import DeployConfirmScreen

        assert self.service is not None
        self.notify("Comparing each host's generation with the default branch…", title="Converge", timeout=3)
        plan = await self.service.plan_converge(host_ids)

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.start_deploy(plan)

        warning = outside_window_warning(self.windows(), self.clock())
        self.push_screen(DeployConfirmScreen(plan, None, window_warning=warning), confirmed)

    def converge_hint(self) -> str:
        """After a cancelled, failed or partly queued run: how many hosts it left behind, and the key."""
        view = self.deploy_view
        result = view.result if view is not None else None
        if result is None or result.status.value not in ("cancelled", "failed", "unknown", "unverified", "waiting"):
            return ""
        # unverified hosts reached the target; unknown ones may have: the converge plan judges by generation
        unknown = sum(1 for o in result.outcomes if o.outcome.value == "unknown")
        behind = sum(1 for o in result.outcomes if o.outcome.value not in ("ok", "unverified", "unknown"))
        parts = [f"{behind} host(s) not deployed"] if behind else []
        parts += [f"{unknown} host(s) outcome unknown"] if unknown else []
        if not parts:
            return ""
        return f"Run #{result.run_id} {result.status.value}: {', '.join(parts)} · c converge"

    def continue_unverified(self, view: DeployView) -> bool:
        """Deploy the rest of ``view``'s run past its unverified canaries (the admin confirmed); False when
        a deploy runs already."""
        if self.service is None or view.run_id is None:
            return False
        if self.deploy_running or (self.runner is not None and self.runner.acting):
            self.notify("A deploy is already running.", title="Continue", severity="warning")
            return False
        self.deploy_view = view.continued()
        self._deploy(None, None, continue_run_id=view.run_id)
        return True

    def start_deploy(self, plan: Any) -> None:
        from nfu_tui.ui.deployview import DeployView

        self.deploy_view = DeployView.from_plan(plan, self.clock)
        self._deploy(plan, None)
        self.show_deploy()

    # --- unfinished runs ------------------------------------------------------------------

    def _offer_unfinished(self) -> None:
        """At start: offer each unfinished run the admin has to decide on (automation resumes its own)."""
        from nfu_tui.core.automation import run_info

        assert self.service is not None
        runs = self.service.unfinished_runs()
        automatic = self.runner is not None and self.service.automation_enabled()
        left_to_automation = [r for r in runs if automatic and r.trigger == "auto"]
        if left_to_automation:
            ids = ", ".join(f"#{r.id}" for r in left_to_automation)
            self.notify(f"Automation resumes the unfinished run(s) {ids} (in a maintenance window).",
                        title="Unfinished runs", markup=False)
        offers = [r for r in runs if r not in left_to_automation]
        if not offers:
            return
        busy = self._deploy_lock_holder()
        if busy is not None:  # not interrupted: another process is running it right now
            self.notify(f"{len(offers)} unfinished run(s): {busy}", title="Deploy in progress", markup=False)
            return
        self._offers = sorted(offers, key=lambda r: (not run_info(r).recovery, r.id))
        self._offer_next()

    def _offer_next(self) -> None:
        if self._offers:
            self.offer_resume(self._offers.pop(0))

    def offer_resume(self, run: Any) -> None:
        """Ask what to do with a run the journal says was interrupted."""
        from nfu_tui.core.history import resume_command
        from nfu_tui.ui.screens.resume import ResumeScreen

        def chosen(choice: str | None) -> None:
            if choice == "resume":
                self._resume(run)
                if self._offers:
                    rest = ", ".join(f"#{r.id}" for r in self._offers)
                    self.notify(f"Still unfinished: {rest}; offered again at the next start.",
                                title="Unfinished runs", markup=False)
                    self._offers.clear()
                return
            if choice == "abandon":
                self._abandon(run)
            else:
                self.notify(
                    f"Run #{run.id} stays unfinished; it is offered again at the next start"
                    + (f" (or: {resume_command(run)})." if resume_command(run) else "."),
                    title="Unfinished run",
                    markup=False,
                )
            self._offer_next()

        self.push_screen(ResumeScreen(run), chosen)

    def _resume(self, run: Any) -> None:
        from nfu_tui.ui.deployview import DeployView

        if self.deploy_running:
            self.notify("A deploy is running; resume the run after it.", title="Resume", severity="warning")
            return
        if run.kind in ("deploy", "converge"):
            self.deploy_view = DeployView.from_run(run, self.clock)
            self._deploy(None, run.id)
            self.show_deploy()
        else:
            self._resume_rollback(run)

    @work(group="resume-rollback", exclusive=True, exit_on_error=False, description="resume the rollback")
    async def _resume_rollback(self, run: Any) -> None:
        """A ``revert`` (under the deploy lock) or per-host ``rollback`` run, continued from its journal."""
        from nfu_tui.core.store import DeployLock

        assert self.service is not None and self.runner is not None
        lock = DeployLock(label=self.service.lock_label) if run.kind == "revert" else contextlib.nullcontext()
        with lock:
            outcome = await self.runner.rollback.resume(run.id)
        self.notify(outcome.summary, title=f"Run #{run.id} resumed", severity="information" if outcome.ok else "error",
                    markup=False)

    @work(group="deploy", exclusive=True, exit_on_error=False, description="merge & deploy")
    async def _deploy(self, plan: Any, resume_run_id: int | None, *, continue_run_id: int | None = None) -> None:
        assert self.service is not None
        if continue_run_id is not None:
            result = await self.service.continue_unverified(continue_run_id)
        elif resume_run_id is None:
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
        assert self.service is not None
        self.service.abandon_run(run.id, where="the TUI")  # under the deploy lock; audited
        self.notify(f"Run #{run.id}" + (f" (PR #{run.pr})" if run.pr else "")
                    + " abandoned; nothing on GitHub or the hosts was changed.",
                    title="Unfinished run", markup=False)

    def show_deploy(self) -> None:
        from nfu_tui.ui.screens.deploy import DeployScreen

        if self.deploy_view is None:
            self.notify("No deploy has run in this session.", title="Deploy")
            return
        if not isinstance(self.screen, DeployScreen):
            self.push_screen(DeployScreen(self.deploy_view))

    def cancel_deploy(self, *, release_hosts: bool = False) -> None:
        """Stop scheduling new hosts; ``release_hosts`` also frees still-running hosts in the dashboard."""
        if self.service is not None and self.deploy_running:
            self.service.cancel_deploy(release_hosts=release_hosts)

    def stop_waiting(self) -> None:
        """Stop waiting for queued offline hosts (the run ends "waiting", resumable)."""
        if self.service is not None:
            self.service.stop_waiting()

    # --- errors -------------------------------------------------------------------------

    def notify(self, message: str, *, title: str = "", **kwargs: Any) -> None:  # type: ignore[override]
        """Every toast passes the redaction boundary (no secret, valid text, no control sequences)."""
        from nfu_tui.sanitize import sanitize_text

        super().notify(sanitize_text(message), title=sanitize_text(title), **kwargs)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR:
            return
        from nfu_tui.errors import NfuError

        error = event.worker.error
        if isinstance(error, NfuError):
            title, message = error.title, str(error)
        else:
            from nfu_tui.sanitize import sanitize_text

            title = f"{event.worker.description or 'Background task'} failed"
            message = sanitize_text(f"{type(error).__name__}: {error}")
        self.notify(message, title=title, severity="error", timeout=10, markup=False)
        if event.worker.group == "deploy" and self.deploy_view is not None and not self.deploy_view.finished:
            self.deploy_view.fail(message)
            self.publish(ServiceUpdate(status=True))


def _shows(view: DeployView | None, run_id: int | None) -> bool:
    """Whether ``view`` is the view of run ``run_id`` (a fresh view of our own adopts the first run id)."""
    if view is None:
        return False
    if view.run_id is None:
        return not view.finished
    return run_id is None or view.run_id == run_id
