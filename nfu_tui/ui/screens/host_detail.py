"""``enter`` on a host: its compartments with messages, running command, recent output."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

from nfu_tui.backends.base import NIXFLEET, BackendInfo
from nfu_tui.domain.timeparse import parse_time
from nfu_tui.models import COMPARTMENTS, Host
from nfu_tui.ui import copy
from nfu_tui.ui import fleetview as fv
from nfu_tui.ui.messages import ServiceUpdate
from nfu_tui.ui.widgets.footer import KeyFooter
from nfu_tui.ui.widgets.header import StatusHeader
from nfu_tui.ui.widgets.log_view import HostLog

if TYPE_CHECKING:
    from nfu_tui.ui.app import NfuApp

STATE_STYLES = {
    "ok": "green",
    "outdated": "yellow",
    "error": "bold red",
    "working": "blue",
    "unknown": "dim",
    "unreachable": "bold yellow",
}


def host_summary(host: Host, meta: fv.HostMeta, progress: fv.Progress | None, now: datetime,
                 unreachable_since: datetime | None = None, backend: BackendInfo = NIXFLEET) -> Text:
    """Title block: name, kind, connection, agent, generation, badges, running command.

    While the fleet backend is unreachable (``unreachable_since``) the connection is unknown."""
    text = Text()
    text.append(host.name, style="bold")
    kind = " · ".join(p for p in (host.device_type, host.location, host.host_type) if p)
    text.append(f"  {kind}", style="dim")
    text.append("  ")
    if unreachable_since is not None:
        text.append("◌ unknown", style="bold yellow")
        text.append(f" — {backend.noun} is unreachable; {fv.last_seen_live(host, unreachable_since)}", style="dim")
    elif host.online:
        text.append("● online", style="green")
    else:
        seen = parse_time(host.last_seen)
        text.append(f"○ {host.status}", style="bold")
        text.append(f", last seen {fv.ago(seen, now)} ago" if seen else ", never seen", style="dim")
    text.append("\n")
    facts = [f"agent {host.agent_version or '?'}" + (" (outdated)" if host.agent_outdated else "")]
    facts.append(f"config {host.generation or '?'}")
    if host.system_generation is not None:
        facts.append(f"system generation {host.system_generation}")
    if host.os_version:
        facts.append(host.os_version)
    text.append(" · ".join(facts), style="dim")
    badges = fv.badges(meta, host)
    if badges:
        text.append("  ")
        for label, kind_ in badges:
            text.append(label, style={"held": "bold reverse yellow", "canary": "bold cyan",
                                      "outdated": "bold yellow"}.get(kind_, "dim"))
    if host.busy:
        text.append("\nRunning: ", style="bold blue")
        text.append(fv.progress_text(progress, host.pending_command, 40))
    return text


def compartments_table(host: Host, now: datetime, pending: str = "") -> Table:
    """One row per compartment; ``pending`` (the pending update PR) shows in a Lock that is ok, as in the grid."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(ratio=1)
    table.add_column(no_wrap=True, style="dim")
    for name in COMPARTMENTS:
        check = host.compartment(name)
        state = check.state
        glyph = fv.STATE_GLYPHS[state]
        checked = parse_time(check.checked_at)
        label, style, message = Text(f"{glyph} {state.value}", style=STATE_STYLES[state.value]), "", check.message
        if name == "lock" and pending and state.value == "ok":
            label = Text(f"{fv.PENDING_GLYPH} pending", style="bold yellow")
            message = f"{pending} (m on the fleet screen merges & deploys it)"
            style = "yellow"
        table.add_row(
            Text(fv.COMPARTMENT_TITLES[name], style="bold"),
            label,
            Text(message or "—", style=style),
            Text(_checked(checked, now)),
        )
    return table


def _checked(when: datetime | None, now: datetime) -> str:
    if when is None:
        return ""
    age = fv.ago(when, now)
    return "checked just now" if age == "now" else f"checked {age} ago"


class HostDetailScreen(Screen):
    """Everything the dashboard says about one host, live."""

    app: NfuApp

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="host.back"),
        Binding("h", "toggle_hold", "Hold", tooltip="Hold/unhold this host", id="host.hold"),
        Binding(
            "R", "rollback", "Roll back",
            tooltip="Roll this host back to its previous generation (asks first)",
            id="host.rollback",
        ),
        copy.copy_binding("host.copy"),
    ]

    DEFAULT_CSS = """
    HostDetailScreen #host-summary { height: auto; padding: 0 1; }
    HostDetailScreen #host-compartments { height: auto; padding: 0 1; margin-bottom: 1; }
    HostDetailScreen #host-output-title { height: 1; background: $panel; padding: 0 1; }
    HostDetailScreen HostLog { height: 1fr; }
    """

    def __init__(self, host_id: str) -> None:
        super().__init__()
        self.host_id = host_id
        self._recent: list[str] = []  # the dashboard's log of what ran before this process started
        self._recent_loaded = False

    def compose(self) -> ComposeResult:
        yield StatusHeader(self.app.clock, self.app.automation_status, id="header")
        yield Static(id="host-summary")
        yield Static(id="host-compartments")
        yield Static(id="host-output-title")
        yield HostLog(id="host-output")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.app.service_updated.subscribe(self, self.apply_update)
        self._render_host()
        self.query_one(HostLog).show_lines(self._lines())
        self._output_title()
        self.query_one(StatusHeader).show(self.app.service.status if self.app.service else None)
        self.set_interval(1.0, self.query_one(StatusHeader).tick)
        if self.app.service is not None and not self._lines():
            self._load_recent()

    def _lines(self) -> list[str]:
        live = self.app.service.output_lines(self.host_id) if self.app.service else []
        return self._recent + live

    @work(exclusive=True, group="host-output", exit_on_error=False, description="read the host's recent output")
    async def _load_recent(self) -> None:
        """Nothing streamed since start: show what the dashboard logged (e.g. after a restart)."""
        try:
            recent = await self.app.service.recent_output(self.host_id)
        finally:
            self._recent_loaded = True
        self._recent = recent
        self.query_one(HostLog).show_lines(self._lines())
        self._output_title()

    def _render_host(self) -> None:
        service = self.app.shown  # the cached host until the live fleet arrived
        host = service.host(self.host_id) if service else None
        summary = self.query_one("#host-summary", Static)
        if host is None:
            summary.update(Text(f"{self.host_id}: not known to {self.app.backend.noun} (removed?)", style="bold red"))
            self.query_one("#host-compartments", Static).update("")
            return
        now = self.app.clock()
        summary.update(host_summary(host, self.app.host_meta(self.host_id), self.app.host_progress(self.host_id), now,
                                    service.status.unreachable_since, self.app.backend))
        pending = ""
        if service.pending_update() is not None:
            pr = service.pending_update().pr
            pending = f"update PR #{pr.number} pending: {service.update_headline() or pr.title}"
        self.query_one("#host-compartments", Static).update(compartments_table(host, now, pending))

    def _output_title(self) -> None:
        log = self.query_one(HostLog)
        text = Text(" Recent output", style="bold")
        if self._recent:
            text.append(f"  (from {self.app.backend.noun}'s log, then live)", style="dim")
        if log.line_count == 0:
            loading = self.app.service is not None and not self._recent_loaded and not self._lines()
            text.append(f"  reading {self.app.backend.noun}'s log…" if loading else "  none yet — a command's output streams in here",
                        style="dim")
        else:
            text.append(
                "  following" if log.following else "  paused — end/F to follow",
                style="dim" if log.following else "bold yellow",
            )
        self.query_one("#host-output-title", Static).update(text)

    def on_host_log_follow_changed(self) -> None:
        self._output_title()

    def apply_update(self, update: ServiceUpdate) -> None:
        if update.all_hosts or update.status or update.prs or self.host_id in update.hosts:
            self._render_host()
        if self.host_id in update.output:
            self.query_one(HostLog).sync(self._lines())
            self._output_title()
        if (update.status or update.automation) and self.app.service:
            self.query_one(StatusHeader).show(self.app.service.status)

    def action_rollback(self) -> None:
        self.app.request_host_rollback(self.host_id)

    def action_copy(self) -> None:
        """In the output: the line at the bottom of the view; else the host's errors and last output."""
        log = self.query_one(HostLog)
        if log.has_focus:
            copy.copy(self.app, copy.log_line(log, self.host_id), "No output to copy.")
        else:
            copy.copy(self.app, copy.host_error_lines(self.app.service, self.host_id),
                      f"{self.host_id}: no errors and no output to copy.")

    def action_toggle_hold(self) -> None:
        held = self.app.service.held() if self.app.service else set()
        self.app.set_hold([self.host_id], self.host_id not in held)
