"""The deploy screen: a row per host, overall progress, live logs, failure panel.

It renders the app's :class:`~nfu_tui.ui.deployview.DeployView` (folded from the
engine's events), so it can be closed (``esc``) and reopened (``D``) while the run goes
on. Logs: the focused host's output streams in as it arrives (``enter`` on a row picks
the host; until then the log follows whichever host is running); ``i`` interleaves all
hosts. Lines are sanitized by the core and shown as plain text.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, ProgressBar, Static

from nfu_tui.ui.deployview import STATE_GLYPHS, DeployView, HostRow
from nfu_tui.ui.fleetview import Progress, progress_text
from nfu_tui.ui.messages import ServiceUpdate
from nfu_tui.ui.widgets.header import StatusHeader
from nfu_tui.ui.widgets.log_view import HostLog, appended

if TYPE_CHECKING:
    from nfu_tui.ui.app import NfuApp

ROW_STYLES = {
    "waiting": "dim",
    "queued": "yellow",
    "running": "bold blue",
    "ok": "green",
    "failed": "bold red",
    "skipped": "dim",
    "cancelled": "yellow",
}
STAGES = {
    "starting": "starting…",
    "merging": "merging the PR…",
    "deploying": "deploying",
    "waiting-canaries": "waiting for the canaries",
    "waiting-queued": "waiting for queued offline hosts (w: stop waiting)",
    "finished": "finished",
}
DETAIL_WIDTH = 14  # the detail is cropped in the table; the failure panel shows it whole
PROGRESS_WIDTH = 10
COLUMNS = (
    ("pos", "#"), ("host", "Host"), ("state", "State"), ("phase", "Phase"), ("progress", "Progress"),
    ("elapsed", "Time"), ("detail", "Detail"),
)
NEXT_STEPS = (
    "Next steps (rollback: alert only for now): no further host was started. Open the host "
    "(esc, then enter on it) to read its compartments and output, fix the configuration and "
    "let a new update PR through, or roll the host back from the dashboard."
)


def row_cells(row: HostRow, now: datetime, progress: Progress | None = None) -> list[Text]:
    """Cells of a host's row; ``progress`` is the dashboard's op progress while it runs."""
    style = ROW_STYLES.get(row.state, "")
    bar = ""
    if row.state == "running" and progress is not None and progress.total > 0:
        bar = progress_text(Progress("", progress.current, progress.total), "", PROGRESS_WIDTH).strip()
    return [
        Text(str(row.position), style="dim"),
        Text(row.host + (" ★" if row.canary else ""), style="bold"),
        Text(f"{STATE_GLYPHS.get(row.state, '?')} {row.state}", style=style),
        Text(row.phase),
        Text(bar, style="blue"),
        Text(row.elapsed(now)),
        Text(row.detail, style="dim", no_wrap=True, overflow="ellipsis"),
    ]


def failure_text(view: DeployView) -> Text | None:
    """The panel under the table when something failed: what, the last lines, what now."""
    failed = view.failures()
    refused = view.result is not None and getattr(view.result.status, "value", "") == "refused"
    if not failed and not refused and not view.error:
        return None
    text = Text()
    if refused:
        text.append("✗ Merge refused: ", style="bold red")
        text.append(view.result.message or view.headline)
        text.append("\nNothing was merged or deployed.", style="dim")
        return text
    if view.error and not failed:
        text.append("✗ The deploy stopped: ", style="bold red")
        text.append(view.error)
        return text
    for row in failed:
        summary, *more = row.detail.splitlines() or [""]
        text.append(f"✗ {row.host} failed", style="bold red")
        text.append(f" in {row.phase}" if row.phase else "", style="bold red")
        text.append(f": {summary}\n" if summary else "\n")
    text.append(NEXT_STEPS + "\n", style="italic")
    for row in failed:
        _, *more = row.detail.splitlines() or [""]
        text.append(f"Last lines of {row.host}:\n", style="bold")
        for line in (row.last_lines or tuple(more))[-8:]:
            text.append("  │ ", style="dim")
            text.append(line + "\n")
    text.rstrip()
    return text


class DeployScreen(Screen):
    """Live view of one merge & deploy run."""

    app: NfuApp

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the fleet; the deploy goes on", id="deploy.back"),
        Binding("enter", "focus_log", "Show log", tooltip="Show the highlighted host's output", id="deploy.log"),
        Binding("i", "interleave", "All logs", tooltip="Toggle all hosts' output interleaved", id="deploy.interleave"),
        Binding("c", "cancel", "Cancel", tooltip="Cancel the deploy (asks first)", id="deploy.cancel"),
        Binding("w", "stop_waiting", "Stop waiting", show=False, tooltip="Stop waiting for queued offline hosts", id="deploy.stop-waiting"),
        Binding("tab", "switch_focus", "Table/log", show=False, id="deploy.switch"),
    ]

    DEFAULT_CSS = """
    DeployScreen #deploy-title { height: 1; background: $panel; padding: 0 1; }
    DeployScreen #deploy-progress-row { height: 1; padding: 0 1; }
    DeployScreen #deploy-stage { width: 1fr; height: 1; }
    DeployScreen ProgressBar { width: auto; }
    DeployScreen #deploy-body { height: 1fr; }
    DeployScreen #deploy-hosts { height: 1fr; min-height: 5; }
    DeployScreen #deploy-log-pane { height: 1fr; }
    DeployScreen.-wide #deploy-body { layout: horizontal; }
    DeployScreen.-wide #deploy-hosts { width: 1fr; height: 1fr; }
    DeployScreen.-wide #deploy-log-pane { width: 1fr; }
    DeployScreen #log-title { height: 1; background: $panel; padding: 0 1; }
    DeployScreen #failure { height: auto; max-height: 12; display: none; border-top: heavy $error; padding: 0 1; overflow-y: auto; }
    DeployScreen.-failed #failure { display: block; }
    """

    def __init__(self, view: DeployView) -> None:
        super().__init__()
        self.view = view
        self._shown: dict[str, HostRow] = {}
        self._log_host: str | None = None  # None = follow whichever host runs
        self._interleaved = False
        self._sources: dict[str, list[str]] = {}
        self._auto_host: str | None = None

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.clock, id="header")
        yield Static(id="deploy-title")
        with Horizontal(id="deploy-progress-row"):
            yield Static(id="deploy-stage")
            yield ProgressBar(total=max(1, len(self.view.rows)), show_eta=False, id="deploy-progress")
        with Vertical(id="deploy-body"):
            table: DataTable = DataTable(id="deploy-hosts", cursor_type="row", zebra_stripes=True)
            for key, label in COLUMNS:
                width = {"detail": DETAIL_WIDTH, "progress": PROGRESS_WIDTH}.get(key)
                table.add_column(label, key=key, width=width)
            yield table
            with Vertical(id="deploy-log-pane"):
                yield Static(id="log-title")
                yield HostLog(id="deploy-log")
        yield Static(id="failure")
        yield Footer()

    def on_mount(self) -> None:
        self.app.service_updated.subscribe(self, self.apply_update)
        self.set_interval(1.0, self._tick)
        self._render_all()
        self.query_one(DataTable).focus()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= 120, "-wide")

    # --- rendering ---------------------------------------------------------------

    def _render_all(self) -> None:
        self._render_rows()
        self._render_status()
        self._pick_log_host()

    def _render_rows(self) -> None:
        table = self.query_one(DataTable)
        now = self.app.clock()
        for host in self.view.order:
            row = self.view.rows[host]
            if self._shown.get(host) == row and row.state != "running":
                continue
            cells = row_cells(row, now, self.app.host_progress(host))
            if host not in self._shown:
                table.add_row(*cells, key=host)
            else:
                for (key, _label), cell in zip(COLUMNS, cells, strict=True):
                    table.update_cell(host, key, cell, update_width=key not in ("detail", "progress"))
            self._shown[host] = row

    def _render_status(self) -> None:
        view = self.view
        done, total = view.counts()
        title = Text(" Merge & Deploy ", style="bold")
        title.append(view.summary(), style="dim")
        self.query_one("#deploy-title", Static).update(title)
        stage = Text(STAGES.get(view.stage, view.stage), style="bold")
        if view.finished:
            ok = view.succeeded
            stage = Text("✓ finished" if ok else "✗ finished", style="bold green" if ok else "bold red")
        if view.headline:
            stage.append(f" — {view.headline}", style="dim")
        self.query_one("#deploy-stage", Static).update(stage)
        bar = self.query_one(ProgressBar)
        bar.update(total=max(1, total), progress=done)
        failure = failure_text(view)
        self.set_class(failure is not None, "-failed")
        if failure is not None:
            self.query_one("#failure", Static).update(failure)
        header = self.query_one(StatusHeader)
        header.show(self.app.service.status if self.app.service else None)

    def _tick(self) -> None:
        self._render_rows()
        self.query_one(StatusHeader).tick()

    # --- logs ------------------------------------------------------------------------

    def _running_host(self) -> str | None:
        running = [h for h in self.view.order if self.view.rows[h].state == "running"]
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
        self.query_one("#log-title", Static).update(text)

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

    def apply_update(self, update: ServiceUpdate) -> None:
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
        host = self._highlighted_host()
        if host is None:
            return
        self._interleaved = False
        self._log_host = host
        self._show_host_log(host)

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_focus_log()

    def action_interleave(self) -> None:
        self._interleaved = not self._interleaved
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
        from nfu_tui.ui.screens.confirm import ConfirmScreen

        if self.view.finished:
            self.app.notify("The deploy has already finished.", title="Cancel")
            return
        question = (
            "Cancel the deploy? No new host will start. Commands already running on hosts "
            "cannot be stopped by the dashboard; they finish on their own."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.cancel_deploy()
                self.view.cancel_requested = True
                self._render_status()

        self.app.push_screen(ConfirmScreen(question, yes="Cancel deploy", no="Keep going"), answered)

    def action_stop_waiting(self) -> None:
        if self.view.stage == "waiting-queued":
            self.app.stop_waiting()

    def action_switch_focus(self) -> None:
        table = self.query_one(DataTable)
        (self.query_one(HostLog) if table.has_focus else table).focus()
