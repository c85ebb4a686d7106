"""The deploy screen: a row per host, overall progress, live logs, failure panel.

It renders the app's :class:`~nfu_tui.ui.deployview.DeployView` (folded from the
engine's events), so it can be closed (``esc``) and reopened (``D``) while the run goes
on; when another run starts (automation, a rollback's redeploy) it switches to it.
Logs: the focused host's output streams in as it arrives (``enter`` on a row picks
the host; until then the log follows whichever host is running); ``i`` interleaves all
hosts. Lines are sanitized by the core and shown as plain text.

After a failure the panel names the failing host, its last lines and the next steps
for the configured ``rollback.strategy``: ``b`` rolls back now, ``h`` holds the failing
host, ``R`` rolls the highlighted host back on its own (the dashboard's rollback op).
A run that ended cancelled, failed or waiting for offline hosts offers ``c``: converge,
a deploy without a merge of the default branch's head to every host still behind it.
A run that stopped because its canaries ended unverified (switched, never confirmed by the
fleet) offers ``o``: continue anyway — after a confirmation saying what is unproven, the
rest of the plan is deployed in a new run (journaled and audited with the actor).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, ProgressBar, Static
from textual.widgets.data_table import ColumnKey

from nfu_tui.backends.base import NIXFLEET, BackendInfo
from nfu_tui.ui import copy
from nfu_tui.ui.deployview import STATE_GLYPHS, DeployView, HostRow
from nfu_tui.ui.fleetview import Progress, progress_text
from nfu_tui.ui.messages import ServiceUpdate
from nfu_tui.ui.spans import unlead
from nfu_tui.ui.widgets.footer import KeyFooter
from nfu_tui.ui.widgets.header import StatusHeader
from nfu_tui.ui.widgets.log_view import HostLog, appended
from nfu_tui.ui.widgets.scrolling import KeyTable, Scroller

if TYPE_CHECKING:
    from nfu_tui.ui.app import NfuApp

ROW_STYLES = {
    "waiting": "dim",
    "queued": "yellow",
    "running": "bold blue",
    "checking": "bold yellow",
    "ok": "green",
    "unverified": "yellow",
    "failed": "bold red",
    "unknown": "bold magenta",
    "held": "yellow",
    "skipped": "dim",
    "cancelled": "yellow",
}
STAGES = {
    "starting": "starting…",
    "merging": "merging the PR…",
    "deploying": "deploying",
    "waiting-canaries": "waiting for the canaries",
    "waiting-queued": "waiting for queued offline hosts",
    "finished": "finished",
}
DETAIL_WIDTH = 14  # at least; the Detail column takes what the table has left (cropped; the failure panel shows it whole)
DETAIL_ROOM = 24  # below this, the Host and Progress columns give up width to the Detail (compact)
PROGRESS_WIDTH = 10
PHASE_WIDTH = len("switch")  # pull | switch | verify | test | health: set once, it never makes the table jump
COMPACT_WIDTHS = {"host": 12, "progress": len("Progress")}  # compact: long host names end in "…", no bar
COLUMNS = (
    ("pos", "#"), ("host", "Host"), ("state", "State"), ("checks", "ERV"), ("phase", "Phase"),
    ("progress", "Progress"), ("elapsed", "Time"), ("detail", "Detail"),
)
"""``ERV``: executed (the switch's result), reached (the target commit), verified (System ok, tests)."""
STATE_ACTIONS = ("cancel", "converge", "continue_unverified", "stop_waiting", "roll_back", "hold_failed")
"""The actions whose keys come and go with the run's state (see ``check_action``)."""


def host_label(row: HostRow) -> str:
    return row.host + (" ★" if row.canary else "")


def row_cells(row: HostRow, now: datetime, progress: Progress | None = None,
              progress_width: int = PROGRESS_WIDTH) -> list[Text]:
    """Cells of a host's row; ``progress`` is the dashboard's op progress while it runs (the bar is dropped
    when ``progress_width`` leaves no room for it: ``3/4``)."""
    style = ROW_STYLES.get(row.state, "")
    bar = ""
    if row.active and progress is not None and progress.total > 0:
        bar = progress_text(Progress("", progress.current, progress.total), "", progress_width).strip()
    return [
        Text(str(row.position), style="dim"),
        Text(host_label(row), style="bold", no_wrap=True, overflow="ellipsis"),
        Text(f"{STATE_GLYPHS.get(row.state, '?')} {row.state}", style=style),
        Text(row.checks, style=style),
        Text(row.phase, no_wrap=True, overflow="ellipsis"),
        Text(bar, style="blue"),
        Text(row.elapsed(now)),
        Text(row.detail, style="dim", no_wrap=True, overflow="ellipsis"),
    ]


def _status(view: DeployView) -> str:
    """The engine's run status once it returned (``succeeded``, ``waiting`` …), else ""."""
    return getattr(getattr(view.result, "status", None), "value", "")


def _key(text: Text, key: str, what: str) -> None:
    text.append(f" {key} ", style="bold reverse")
    text.append(f" {what}\n")


def can_roll_back(view: DeployView, rollback: Any) -> bool:
    """Whether ``b`` (roll back now per the strategy) applies to this finished run."""
    return (
        rollback is not None and rollback.enabled and rollback.strategy != "alert-only"
        and view.finished and bool(view.proven_failures()) and bool(view.merge_sha) and not view.plan.converge
        and view.trigger != "auto" and not view.recovery and not view.rollback_note
    )


def converge_text(view: DeployView) -> Text:
    """The converge offer after a run that left hosts behind."""
    text = Text()
    behind = view.left_behind()
    _key(text, "c", f"converge: bring the {len(behind)} host(s) left behind ({', '.join(behind)}) and any other host "
                    "behind the default branch to its head — no merge, the plan comes first")
    return text


def next_steps(view: DeployView, rollback: Any, held: Collection[str] = (), backend: BackendInfo = NIXFLEET) -> Text:
    """What the admin can do now, per ``flake_updates.rollback`` (``rollback``: its settings)."""
    text = Text()
    failing = [r.host for r in view.failures() + view.with_state("unknown")]
    strategy = rollback.strategy if rollback is not None else "alert-only"
    text.append("Next steps", style="bold")
    text.append(f" (rollback strategy: {strategy if rollback is None or rollback.enabled else 'disabled'})\n",
                style="dim")
    if view.rollback_note:
        text.append("Rollback: ", style="bold")
        text.append(view.rollback_note + "\n")
    elif view.finished and not view.proven_failures():
        text.append("No proven failure (a command error, failed tests or System error): nothing is rolled "
                    f"back. Check the host(s) on {backend.noun}.\n", style="italic")
        if view.unverified_canaries():
            rest = sum(1 for r in view.order_rows() if not r.canary and r.state != "held")
            _key(text, "o", f"continue anyway: deploy the {rest} remaining host(s) without the canaries' proof "
                            "(asks first; journaled and audited)")
    elif can_roll_back(view, rollback):
        pr = view.plan.pr_number
        if strategy == "revert-commit":
            _key(text, "b", f"roll back now: revert PR #{pr}, redeploy the hosts that had switched")
        else:
            _key(text, "b", f"open a revert PR of #{pr} now; merge & deploy it like an update")
    elif view.trigger == "auto" and rollback is not None and rollback.enabled and view.merge_sha:
        text.append(f"Automation applies the strategy ({strategy}) itself; H shows the history.\n", style="italic")
    elif view.recovery:
        text.append("This run was a rollback's redeploy: it is not rolled back again.\n", style="italic")
    elif view.plan.converge:
        text.append("A converge merged nothing: there is nothing to revert.\n", style="italic")
    elif strategy == "alert-only" or (rollback is not None and not rollback.enabled):
        text.append("Nothing is reverted automatically.\n", style="italic")
    not_held = [h for h in failing if h not in held]
    if not_held:
        _key(text, "h", f"hold {', '.join(not_held)}: deploys and automation skip it")
    elif failing:
        text.append(" ✓ ", style="bold green")
        text.append(f" {', '.join(failing)} held: deploys and automation skip it\n", style="yellow")
    _key(text, "R", f"roll the highlighted host back alone ({backend.label} rollback op)")
    if view.left_behind():
        text.append_text(converge_text(view))
    _key(text, "enter", "show the highlighted host's output")
    return text


def failure_text(view: DeployView, rollback: Any = None, held: Collection[str] = (),
                 backend: BackendInfo = NIXFLEET) -> Text | None:
    """The panel under the table when something failed: what, what now, the last lines.

    ``rollback`` is the ``flake_updates.rollback`` configuration, ``held`` the held hosts.
    """
    failed = view.failures()
    doubtful = view.with_state("unknown", "unverified")
    refused = _status(view) == "refused"
    if not failed and not doubtful and not refused and not view.error:
        if not view.left_behind():
            return None
        text = Text()
        text.append(f"⊘ Run {view.result.status.value}: ", style="bold yellow")
        text.append(f"{', '.join(view.left_behind())} not deployed.\n")
        text.append_text(converge_text(view))
        text.rstrip()
        return unlead(text)
    text = Text()
    if refused:
        text.append("✗ Merge refused: ", style="bold red")
        text.append(view.result.message or view.headline)
        text.append("\nNothing was merged or deployed.", style="dim")
        return unlead(text)
    if view.error and not failed and not doubtful:
        text.append("✗ The deploy stopped: ", style="bold red")
        text.append(view.error)
        return unlead(text)
    for row in failed:
        summary = (row.detail.splitlines() or [""])[0]
        text.append(f"✗ {row.host} failed" + (f" in {row.phase}" if row.phase else ""), style="bold red")
        text.append(f": {summary}\n" if summary else "\n")
    for row in doubtful:
        unknown = row.state == "unknown"
        text.append(f"{STATE_GLYPHS[row.state]} {row.host} " + ("outcome unknown" if unknown else "not verified")
                    + (f" in {row.phase}" if row.phase else ""), style="bold magenta" if unknown else "bold yellow")
        text.append(f": {row.detail}\n" if row.detail else "\n")
    text.append_text(next_steps(view, rollback, held, backend))
    for row in failed:
        _, *more = row.detail.splitlines() or [""]
        text.append(f"Last lines of {row.host}:\n", style="bold")
        for line in (row.last_lines or tuple(more))[-8:]:
            text.append("  │ ", style="dim")
            text.append(line + "\n")
    text.rstrip()
    return unlead(text)


class DeployScreen(Screen):
    """Live view of one merge & deploy run."""

    app: NfuApp

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the fleet; the deploy goes on", id="deploy.back"),
        Binding(  # early: at 80 columns the footer shows the first keys
            "o", "continue_unverified", "Continue anyway",
            tooltip="After the canaries ended unverified: deploy the remaining hosts without that proof (asks first; "
                    "journaled and audited)",
            id="deploy.continue",
        ),
        Binding("enter", "focus_log", "Show log", tooltip="Show the highlighted host's output", id="deploy.log"),
        Binding("i", "interleave", "All logs", tooltip="Toggle all hosts' output interleaved", id="deploy.interleave"),
        Binding(
            "c", "cancel", "Cancel",
            tooltip="Cancel the deploy: no new host starts (asks first); again: release (SSH: stop) running hosts",
            id="deploy.cancel",
        ),
        Binding(
            "c", "converge", "Converge",
            tooltip="After a cancelled, failed or partly queued run: bring every host behind the default branch to "
                    "its head (no merge; the plan comes first)",
            id="deploy.converge",
        ),
        Binding("w", "stop_waiting", "Stop waiting", tooltip="Stop waiting for queued offline hosts", id="deploy.stop-waiting"),
        Binding("b", "roll_back", "Roll back", tooltip="After a failure: roll back now per rollback.strategy (asks first)", id="deploy.roll-back"),
        Binding("h", "hold_failed", "Hold failed", tooltip="Hold the failing host(s): deploys and automation skip them", id="deploy.hold-failed"),
        Binding("R", "rollback_host", "Host rollback", show=False, tooltip="Roll the highlighted host back alone, to its previous generation (asks first)", id="deploy.rollback-host"),
        Binding("tab", "switch_focus", "Table/log", show=False, id="deploy.switch"),
        copy.copy_binding("deploy.copy"),
    ]

    DEFAULT_CSS = """
    DeployScreen #deploy-title { height: 1; background: $panel; padding: 0 1; }
    DeployScreen #deploy-progress-row { height: auto; padding: 0 1; }
    DeployScreen #deploy-stage { width: 1fr; height: auto; }
    DeployScreen ProgressBar { width: auto; }
    DeployScreen #deploy-body { height: 1fr; }
    /* no horizontal scrollbar: the Detail takes what the other columns leave (a scrollbar shown while a column
       grew stayed after the Detail had shrunk back) */
    DeployScreen #deploy-hosts { height: 1fr; min-height: 5; overflow-x: hidden; }
    DeployScreen #deploy-log-pane { height: 1fr; }
    DeployScreen.-wide #deploy-body { layout: horizontal; }
    DeployScreen.-wide #deploy-hosts { width: 2fr; height: 1fr; }
    DeployScreen.-wide #deploy-log-pane { width: 1fr; }
    DeployScreen #log-title { height: 1; background: $panel; padding: 0 1; }
    DeployScreen #failure { height: auto; max-height: 12; display: none; border-top: heavy $error; padding: 0 1; overflow-y: auto; }
    DeployScreen.-failed #failure { display: block; }
    DeployScreen.-finished ProgressBar { display: none; }
    /* narrow and failed: the panel replaces the log (enter toggles the highlighted host's output) */
    DeployScreen.-failed.-narrow #deploy-body { height: auto; max-height: 50%; }
    DeployScreen.-failed.-narrow #deploy-hosts { height: auto; }
    DeployScreen.-failed.-narrow #deploy-log-pane { display: none; }
    DeployScreen.-failed.-narrow #failure { height: 1fr; max-height: 100%; }
    DeployScreen.-failed.-narrow.-show-log #deploy-body { height: 1fr; max-height: 100%; }
    DeployScreen.-failed.-narrow.-show-log #deploy-hosts { height: 1fr; }
    DeployScreen.-failed.-narrow.-show-log #deploy-log-pane { display: block; }
    DeployScreen.-failed.-narrow.-show-log #failure { display: none; }
    """

    def __init__(self, view: DeployView) -> None:
        super().__init__()
        self.view = view
        self._shown: dict[str, HostRow] = {}
        self._log_host: str | None = None  # None = follow whichever host runs
        self._interleaved = False
        self._sources: dict[str, list[str]] = {}
        self._auto_host: str | None = None
        self._compact = False  # Host and Progress narrowed so the Detail keeps DETAIL_ROOM
        self._keys: tuple[bool | None, ...] = ()  # check_action of STATE_ACTIONS when the footer was last built

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.clock, self.app.automation_status, id="header")
        yield Static(id="deploy-title")
        with Horizontal(id="deploy-progress-row"):
            yield Static(id="deploy-stage")
            yield ProgressBar(total=max(1, len(self.view.rows)), show_eta=False, id="deploy-progress")
        with Vertical(id="deploy-body"):
            table = KeyTable(id="deploy-hosts", cursor_type="row", zebra_stripes=True)
            for key, label in COLUMNS:
                width = {"detail": DETAIL_WIDTH, "progress": PROGRESS_WIDTH, "host": self._host_width(),
                         "phase": PHASE_WIDTH}.get(key)
                table.add_column(label, key=key, width=width)
            yield table
            with Vertical(id="deploy-log-pane"):
                yield Static(id="log-title")
                yield HostLog(id="deploy-log")
        yield Scroller(Static(id="failure-text"), id="failure")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.app.service_updated.subscribe(self, self.apply_update)
        self.set_interval(1.0, self._tick)
        self._render_all()
        self.query_one(DataTable).focus()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= 120, "-wide")
        self.set_class(self.size.width < 120, "-narrow")
        self.call_after_refresh(self._fit_detail)

    def _host_width(self) -> int:
        """The Host column's full width: the longest host (with its canary star) of the run."""
        return max([len("Host"), *(cell_len(host_label(row)) for row in self.view.rows.values())])

    def _fit_detail(self) -> None:
        """The Detail column takes the width the other columns leave; when that is less than DETAIL_ROOM,
        Host and Progress narrow first (compact: Phase is short already), the Detail keeps DETAIL_WIDTH."""
        table = self.query_one(KeyTable)
        full = {"host": self._host_width(), "progress": PROGRESS_WIDTH}
        padding = 2 * table.cell_padding

        def others(widths: dict[str, int]) -> int:
            return sum((widths[key.value] + padding) if key.value in widths else c.get_render_width(table)
                       for key, c in table.columns.items() if key.value != "detail")

        space = table.scrollable_content_region.width - padding
        compact = space - others(full) < DETAIL_ROOM
        widths = {k: min(w, COMPACT_WIDTHS[k]) for k, w in full.items()} if compact else full
        changed = compact != self._compact
        self._compact = compact
        widths["detail"] = max(DETAIL_WIDTH, space - others(widths))
        for key, width in widths.items():
            column = table.columns.get(ColumnKey(key))
            if column is not None and column.width != width:
                column.width = width
                changed = True
        if changed:
            table._clear_caches()  # textual 8.2.8's own steps after a column changes width
            table._require_update_dimensions = True
            table.refresh()
            self._render_rows(every=True)  # the progress cells with or without their bar

    # --- rendering ---------------------------------------------------------------

    def _render_all(self) -> None:
        self._render_rows()
        self._render_status()
        self._pick_log_host()

    def _render_rows(self, *, every: bool = False) -> None:
        table = self.query_one(DataTable)
        now = self.app.clock()
        changed = False
        progress_width = COMPACT_WIDTHS["progress"] if self._compact else PROGRESS_WIDTH
        for host in self.view.order:
            row = self.view.rows[host]
            if self._shown.get(host) == row and not row.active and not every:
                continue
            cells = row_cells(row, now, self.app.host_progress(host), progress_width)
            if host not in self._shown:
                table.add_row(*cells, key=host)
            else:
                for (key, _label), cell in zip(COLUMNS, cells, strict=True):
                    table.update_cell(host, key, cell, update_width=key in ("pos", "state", "checks", "elapsed"))
            self._shown[host] = row
            changed = True
        if changed:
            self.call_after_refresh(self._fit_detail)  # other columns may have grown

    def _render_status(self) -> None:
        view = self.view
        done, total = view.counts()
        summary = view.summary() + (" · automatic" if view.trigger == "auto" else "")
        if view.plan.converge:  # "Converge to main 9f8e7d6 · run #2 · 1/3 hosts"
            title = Text("Converge", style="bold")
            summary = summary.removeprefix("converge")
        else:
            title = Text("Merge & Deploy ", style="bold")
        title.append(summary, style="dim")
        self.query_one("#deploy-title", Static).update(unlead(title))
        stage = Text(STAGES.get(view.stage, view.stage), style="bold")
        if view.finished and _status(view) == "waiting":  # reachable hosts done, queued ones left: resumable
            stage = Text("◌ paused", style="bold yellow")
        elif view.finished:
            ok = view.succeeded
            stage = Text("✓ finished" if ok else "✗ finished", style="bold green" if ok else "bold red")
        elif view.cancel_requested and self._running_host() is not None:
            stage = Text("cancelling: waiting for the running hosts (c: release them)", style="bold yellow")
        if view.headline:
            stage.append(f" — {view.headline}", style="dim")
        self.query_one("#deploy-stage", Static).update(unlead(stage))
        bar = self.query_one(ProgressBar)
        bar.update(total=max(1, total), progress=done)
        service = self.app.service
        rollback = service.config.flake_updates.rollback if service is not None else None
        failure = failure_text(view, rollback, service.held() if service is not None else (), self.app.backend)
        self.set_class(failure is not None, "-failed")
        self.set_class(view.finished, "-finished")
        if failure is not None:
            self.query_one("#failure-text", Static).update(failure)
        header = self.query_one(StatusHeader)
        header.show(service.status if service else None)
        keys = tuple(self.check_action(action, ()) for action in STATE_ACTIONS)
        if keys != self._keys:  # the footer is rebuilt only when a key comes or goes (not on every heartbeat)
            self._keys = keys
            self.refresh_bindings()

    def _tick(self) -> None:
        self._render_rows()
        self.query_one(StatusHeader).tick()

    # --- logs ------------------------------------------------------------------------

    def _running_host(self) -> str | None:
        running = [h for h in self.view.order if self.view.rows[h].active]
        return running[0] if running else None

    def _pick_log_host(self) -> None:
        """In auto mode, show the running host's log (or keep the last one)."""
        if self._interleaved or self._log_host is not None:
            return
        host = self._running_host()
        if host is not None and host != self._auto_host:
            self._auto_host = host
            self._show_host_log(host)
        elif self._auto_host is None:
            self._log_title()

    def _show_host_log(self, host: str) -> None:
        lines = self.app.service.output_lines(host) if self.app.service else []
        self._sources = {host: lines}
        self.query_one(HostLog).show_lines(lines)
        self._log_title()

    def _current_log_host(self) -> str | None:
        return self._log_host or self._auto_host

    def _log_title(self) -> None:
        log = self.query_one(HostLog)
        if self._interleaved:
            text = Text(" Output: all hosts", style="bold")
        else:
            host = self._current_log_host()
            text = Text(f" Output: {host}" if host else " Output: (no host started yet)", style="bold")
            if host and self._log_host is None:
                text.append(" (auto)", style="dim")
        text.append(
            "  following" if log.following else "  paused — end/F to follow", style="dim" if log.following else "bold yellow"
        )
        if self.has_class("-failed", "-narrow"):
            text.append("  (enter: failure panel)", style="dim")
        self.query_one("#log-title", Static).update(unlead(text))

    def on_host_log_follow_changed(self) -> None:
        self._log_title()

    def _sync_logs(self, hosts: frozenset[str]) -> None:
        service = self.app.service
        if service is None:
            return
        log = self.query_one(HostLog)
        if self._interleaved:
            for host in self.view.order:
                if host not in hosts:
                    continue
                lines = service.output_lines(host)
                tail = appended(self._sources.get(host, []), lines)
                self._sources[host] = lines
                new = lines if tail is None else tail
                log.add_lines([f"{host} │ {line}" for line in new])
            return
        host = self._current_log_host()
        if host is not None and host in hosts:
            lines = service.output_lines(host)
            self._sources[host] = lines
            log.sync(lines)

    # --- updates -----------------------------------------------------------------------

    def set_view(self, view: DeployView) -> None:
        """Show another run (automation or a rollback started one): rows, logs and panel start over."""
        self.view = view
        self._shown.clear()
        self._log_host, self._auto_host, self._interleaved, self._sources = None, None, False, {}
        self.query_one(DataTable).clear()
        self.query_one(HostLog).show_lines([])
        self._render_all()

    def apply_update(self, update: ServiceUpdate) -> None:
        if self.app.deploy_view is not None and self.app.deploy_view is not self.view:
            self.set_view(self.app.deploy_view)
            return
        if update.automation:
            self.query_one(StatusHeader).tick()
        if update.deploy or update.status or update.all_hosts or update.hosts & self.view.rows.keys():
            self._render_rows()
            self._render_status()
            self._pick_log_host()
        if update.output:
            self._sync_logs(update.output)
        if update.status and self.app.service:
            self.query_one(StatusHeader).show(self.app.service.status)

    # --- actions -------------------------------------------------------------------------

    def _highlighted_host(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_focus_log(self) -> None:
        """Show the highlighted host's output; narrow and failed, enter again returns to the panel."""
        host = self._highlighted_host()
        if host is None:
            return
        if self.has_class("-failed", "-narrow"):
            showing = self.has_class("-show-log") and self._log_host == host and not self._interleaved
            self.set_class(not showing, "-show-log")
            if showing:
                return
        self._interleaved = False
        self._log_host = host
        self._show_host_log(host)

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_focus_log()

    def action_interleave(self) -> None:
        self._interleaved = not self._interleaved
        if self.has_class("-failed", "-narrow"):
            self.set_class(self._interleaved, "-show-log")
        if self._interleaved:
            service = self.app.service
            lines: list[str] = []
            self._sources = {}
            for host in self.view.order:
                host_lines = service.output_lines(host) if service else []
                self._sources[host] = host_lines
                lines.extend(f"{host} │ {line}" for line in host_lines[-200:])
            self.query_one(HostLog).show_lines(lines)
            self._log_title()
        else:
            host = self._current_log_host()
            if host:
                self._show_host_log(host)
            else:
                self.query_one(HostLog).show_lines([])
                self._log_title()

    def action_cancel(self) -> None:
        """First ``c``: stop scheduling. Again while hosts still run: release them in the dashboard."""
        from nfu_tui.ui.screens.confirm import ConfirmScreen

        if self.view.finished:
            self.app.notify("The deploy has already finished.", title="Cancel")
            return
        running = [h for h in self.view.order if self.view.rows[h].active]
        if self.view.cancel_requested:
            if not running:
                self.app.notify("Cancel requested; the run ends in a moment.", title="Cancel")
                return
            names = ", ".join(running)
            question = (
                f"Stop {names}? Its command is terminated on the host (its process group); {names} is "
                "reported cancelled." if self.app.backend.stops_commands else
                f"Release {names} in the dashboard? The dashboard stops waiting for the running command "
                "(timeout action \"ignore\") so the host takes new commands again, but the process keeps "
                f"running on the host and its result is not followed. {names} is reported cancelled."
            )

            def release(yes: bool | None) -> None:
                if yes:
                    self.app.cancel_deploy(release_hosts=True)

            self.app.push_screen(ConfirmScreen(question, yes="Release", no="Keep waiting", width=72), release)
            return
        question = (
            "Cancel the deploy? No new host will start. Running hosts are followed to their real outcome "
            "(c again offers to stop them)." if self.app.backend.stops_commands else
            "Cancel the deploy? No new host will start. The dashboard cannot stop a command that "
            "already runs: running hosts are followed to their real outcome (c again offers to release "
            "them in the dashboard)."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.cancel_deploy()
                self.view.cancel_requested = True
                self._render_status()

        self.app.push_screen(ConfirmScreen(question, yes="Cancel deploy", no="Keep going"), answered)

    def action_continue_unverified(self) -> None:
        """``o`` after the run stopped on unverified canaries: say what is unproven, then deploy the rest."""
        from nfu_tui.core.store import local_actor
        from nfu_tui.ui.screens.confirm import ConfirmScreen

        canaries = self.view.unverified_canaries()
        if not canaries or self.app.deploy_running:
            return
        rest = [r.host for r in self.view.order_rows() if not r.canary and r.state != "held"]
        names = ", ".join(r.host for r in canaries)
        lines = [f"Deploy the rest of run #{self.view.run_id} although {names} "
                 f"{'was' if len(canaries) == 1 else 'were'} never verified?", ""]
        for row in canaries:
            facts = f"executed {row.executed or '?'}, reached {'✓' if row.reached else '?'}"
            lines.append(f"• {row.host} ({facts}): {row.detail or 'not verified'}")
        others = f" ({', '.join(rest)})" if len(rest) <= 4 else ""
        lines += ["", f"Not proven: that {names} {'runs' if len(canaries) == 1 else 'run'} the new generation "
                  "healthily. No failure is proven either, so nothing was rolled back.",
                  "", f"The {len(rest)} other host(s){others} are deployed in a new run, each verified as usual; no "
                  f"second merge, {names} not redeployed. Journaled and audited as {local_actor()}."]

        def answered(yes: bool | None) -> None:
            if yes and self.app.continue_unverified(self.view):
                self.set_view(self.app.deploy_view)

        self.app.push_screen(ConfirmScreen("\n".join(lines), yes="Continue anyway", no="Stop here", width=76),
                             answered)

    def action_converge(self) -> None:
        if self.view.left_behind():
            self.app.plan_converge(None)

    def action_stop_waiting(self) -> None:
        if self.view.stage == "waiting-queued":
            self.app.stop_waiting()

    def action_roll_back(self) -> None:
        service = self.app.service
        if service is not None and can_roll_back(self.view, service.config.flake_updates.rollback):
            self.app.request_roll_back(self.view)

    def action_hold_failed(self) -> None:
        held = self.app.service.held() if self.app.service else set()
        hosts = [r.host for r in self.view.failures() if r.host not in held]
        if hosts:
            self.app.set_hold(hosts, True)

    def action_rollback_host(self) -> None:
        host = self._highlighted_host()
        if host is not None:
            self.app.request_host_rollback(host)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "roll_back":
            service = self.app.service
            return can_roll_back(self.view, service.config.flake_updates.rollback if service else None)
        if action == "hold_failed":
            held = self.app.service.held() if self.app.service else set()
            return any(r.host not in held for r in self.view.failures())
        if action == "stop_waiting":
            return self.view.stage == "waiting-queued"
        if action == "cancel":
            return not self.view.finished
        if action == "converge":
            return bool(self.view.left_behind())
        if action == "continue_unverified":
            return bool(self.view.unverified_canaries()) and not self.app.deploy_running
        return True

    def action_copy(self) -> None:
        """In the log: the line at the bottom of the view; in the table: the host's last error lines
        (a failed host's) or its last output lines."""
        log = self.query_one(HostLog)
        if log.has_focus:
            where = "all hosts" if self._interleaved else (self._current_log_host() or "the deploy")
            copy.copy(self.app, copy.log_line(log, where), "No output to copy.")
            return
        host = self._highlighted_host()
        row = self.view.rows.get(host) if host else None
        if row is None:
            copy.copy(self.app, None, "No host to copy.")
            return
        target = copy.outcome_lines(host, row.detail, row.last_lines) if row.state == "failed" else None
        copy.copy(self.app, target or copy.host_error_lines(self.app.service, host),
                  f"{host}: no errors and no output to copy.")

    def action_switch_focus(self) -> None:
        table = self.query_one(DataTable)
        (self.query_one(HostLog) if table.has_focus else table).focus()
