"""History: the journal's runs → one run's lock diff, plan, host outcomes and timeline.

Self-contained: ``HistoryScreen(store)`` reads a :class:`~nfu_tui.core.store.Store`
(off the event loop) through :mod:`nfu_tui.core.history`, the same data as
``nfu-tui history``. ``enter`` on a run opens :class:`RunDetailScreen`. Everything
that came from hosts or GitHub is shown as plain :class:`rich.text.Text`, never markup.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from nfu_tui.core import history as hist
from nfu_tui.ui import copy
from nfu_tui.ui.prview import Folded, colour_summary
from nfu_tui.ui.spans import unlead
from nfu_tui.ui.widgets.footer import KeyFooter
from nfu_tui.ui.widgets.header import StatusHeader
from nfu_tui.ui.widgets.scrolling import KeyTable, Scroller

STATUS_STYLES = {
    "succeeded": "green",
    "failed": "bold red",
    "unknown": "bold magenta",  # not a proven failure: verify the hosts
    "unverified": "yellow",
    "cancelled": "yellow",
    "abandoned": "dim",
    "running": "bold blue",
    "paused": "bold yellow",
}
OUTCOME_STYLES = {"ok": "green", "failed": "bold red", "skipped": "dim", "cancelled": "yellow", "queued": "cyan",
                  "unverified": "yellow", "unknown": "bold magenta", "held": "yellow"}
diff_text = colour_summary  # the same colouring as the PR panel


def header(app: Any) -> StatusHeader:
    """The header line the other screens have (connection state, automation; shown by :func:`show_header`)."""
    clock = getattr(app, "clock", lambda: datetime.now(timezone.utc))
    return StatusHeader(clock, getattr(app, "automation_status", lambda: None), id="header")


def show_header(screen: Screen) -> None:
    screen.query_one(StatusHeader).show(getattr(getattr(screen.app, "service", None), "status", None))


def _section(title: str) -> Text:
    return Text(title, style="bold underline")


def run_summary(r: hist.RunRecord) -> Text:
    """Heading block: what, status, when, who, revs, summary."""
    text = Text()
    text.append(f"#{r.id} {r.what()}", style="bold")
    if r.title:
        text.append(f"  {r.title}")
    text.append("  ")
    text.append(r.status, style=STATUS_STYLES.get(r.status, ""))
    text.append(f"  ({r.trigger})\n", style="dim")
    finished = f" · finished {hist.local_time(r.finished_at)}" if r.finished_at else ""
    text.append(f"started {hist.local_time(r.started_at)}{finished} · by {hist.who(r)}\n", style="dim")
    if r.headline:
        text.append(r.headline + "\n")
    revs = [f"head {r.head_sha[:7]}" if r.head_sha else "", f"merged as {r.merge_sha[:7]}" if r.merge_sha else "",
            "related runs " + ", ".join(f"#{n}" for n in r.related_runs) if r.related_runs else ""]
    if any(revs):
        text.append(" · ".join(x for x in revs if x) + "\n", style="dim")
    if r.summary:
        text.append(r.summary)
    if r.next_step:
        text.append(f"\nNext: {r.next_step}", style="bold")
    return unlead(text)


def hosts_table(r: hist.RunRecord) -> Table | Text:
    if not r.hosts:
        return Text("No host outcome recorded.", style="dim")
    table = Table(box=None, padding=(0, 1), show_header=True, header_style="bold")
    table.add_column("Host", no_wrap=True)
    table.add_column("Outcome", no_wrap=True)
    table.add_column("Phase", no_wrap=True)
    table.add_column("Detail", ratio=1)
    for h in r.hosts:
        detail = Text(h.detail)
        if h.facts():
            detail.append(f" [{h.facts()}]", style="dim")
        if h.log_excerpt:
            detail.append("\n" + "\n".join(f"│ {line}" for line in h.log_excerpt), style="dim")
        table.add_row(Text(h.host), Text(h.outcome, style=OUTCOME_STYLES.get(h.outcome, "")), Text(h.phase), detail)
    return table


def timeline_text(r: hist.RunRecord) -> Text:
    text = Text()
    for t in r.timeline:
        text.append(hist.local_time(t.at, "%H:%M:%S") + "  ", style="dim")
        text.append(t.text + "\n")
    return text


class RunDetailScreen(Screen):
    """One run: summary, plan, hosts (with failing hosts' log excerpts), timeline, lock diff."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="history.detail.back"),
                copy.copy_binding("history.detail.copy")]

    DEFAULT_CSS = """
    RunDetailScreen Scroller { padding: 0 1; }
    RunDetailScreen Static { margin-bottom: 1; }
    """

    def __init__(self, record: hist.RunRecord) -> None:
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        r = self.record
        yield header(self.app)
        with Scroller(id="run-detail"):
            yield Static(run_summary(r), id="run-summary")
            if r.plan:
                yield Static(Group(_section("Plan"), Text("\n".join(r.plan))), id="run-plan")
            yield Static(Group(_section("Hosts"), hosts_table(r)), id="run-hosts")
            yield Static(Group(_section("Timeline"), timeline_text(r)), id="run-timeline")
            if r.lock_diff:
                yield Static(Group(_section("Lock diff"), Folded(diff_text(r.lock_diff))), id="run-lock-diff")
        yield KeyFooter()

    def on_mount(self) -> None:
        show_header(self)

    def action_copy(self) -> None:
        r = self.record
        copy.copy(self.app, copy.merge_commit(r.id, r.merge_sha), f"Run #{r.id} merged nothing: no commit to copy.")


HOST_GLYPHS = {"ok": "✓", "failed": "✗", "skipped": "–", "cancelled": "⊘", "queued": "◌", "unverified": "≈",
               "unknown": "?", "held": "⏸"}
NARROW = 110  # below this width the tables drop a column and shorten dates


def host_counts(r: hist.RunRecord) -> Text:
    """``✓10 ✗1 –2``: each host outcome with its count, coloured (compact Hosts cell)."""
    text = Text(no_wrap=True)
    for outcome, n in sorted(r.counts.items()):
        if text:
            text.append(" ")
        text.append(f"{HOST_GLYPHS.get(outcome, outcome)}{n}", style=OUTCOME_STYLES.get(outcome, ""))
    return text or Text("–", style="dim")


def _cell(value: str, style: str = "") -> Text:
    return Text(value, style=style, no_wrap=True, overflow="ellipsis")


class HistoryScreen(Screen):
    """Runs (newest first) and the audit trail; ``enter`` opens a run."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="history.back"),
        Binding("r", "reload", "Reload", tooltip="Read the journal again", id="history.reload"),
        copy.copy_binding("history.copy"),
    ]

    DEFAULT_CSS = """
    HistoryScreen .history-title { height: 1; background: $panel; padding: 0 1; }
    HistoryScreen #history-runs { height: 2fr; }
    HistoryScreen #history-audit { height: 1fr; }
    """

    def __init__(self, store: Any, *, limit: int = 200, deployments: Any = None) -> None:
        super().__init__()
        self.store = store
        self.deployments = deployments  # runs other clients recorded on GitHub (FleetDeployments)
        self.limit = limit
        self.history: hist.History | None = None
        self._narrow: bool | None = None  # the layout the tables were filled for

    def compose(self) -> ComposeResult:
        yield header(self.app)
        yield Static(Text("Runs — enter opens one", style="bold"), id="runs-title", classes="history-title")
        yield KeyTable(id="history-runs", cursor_type="row", zebra_stripes=True)
        yield Static(Text("Audit trail", style="bold"), classes="history-title")
        yield KeyTable(id="history-audit", cursor_type="row")
        yield KeyFooter()

    def on_mount(self) -> None:
        show_header(self)
        self.action_reload()

    def on_resize(self) -> None:
        if self.history is not None and (self.size.width < NARROW) != self._narrow:
            self.show(self.history)

    def action_reload(self) -> None:
        self._load()

    @work(exclusive=True, group="history-load", description="reading the journal", exit_on_error=False)
    async def _load(self) -> None:
        self.show(await hist.load_history_async(self.store, self.limit, self.deployments))

    def show(self, history: hist.History) -> None:
        """Fill both tables from ``history`` (narrow: short dates, compact host counts, no "By" column)."""
        self.history = history
        narrow = self._narrow = self.size.width < NARROW
        when = "%m-%d %H:%M" if narrow else "%Y-%m-%d %H:%M"
        title = Text(f"Runs ({len(history.runs)}) — enter opens one", style="bold")
        self.query_one("#runs-title", Static).update(title)
        labels = ["Run", "When", "What", "Trigger", "Status", "Hosts"] + ([] if narrow else ["By"])
        rows: list[tuple[str, list[Text]]] = []
        for r in history.runs:
            cells = [
                _cell(r.ref), _cell(hist.local_time(r.started_at, when)), _cell(r.what()), _cell(r.trigger),
                _cell(r.status, STATUS_STYLES.get(r.status, "")),
                host_counts(r) if narrow else _cell(r.hosts_line()),
            ]
            if not narrow:
                cells.append(_cell(hist.who(r)))
            rows.append((str(r.id), cells))
        self._fill(self.query_one("#history-runs", DataTable), labels, rows)
        rows = []
        for a in history.audit:
            details = hist.audit_details(a.details)
            who = a.actor if narrow else a.actor + (f" ({a.github_login})" if a.github_login else "")
            rows.append((str(a.id), [_cell(hist.local_time(a.at, when)), _cell(a.action),
                                     _cell(f"#{a.pr}" if a.pr else ""), _cell(who), _cell(details)]))
        self._fill(self.query_one("#history-audit", DataTable), ["When", "Action", "PR", "Who", "Details"], rows)

    def _fill(self, table: DataTable, labels: list[str], rows: list[tuple[str, list[Text]]]) -> None:
        """Columns sized to their content up front (no reflow when the table catches up), the last
        one cut with an ellipsis to what the screen has left."""
        widths = [max([len(label)] + [row[i].cell_len for _, row in rows]) for i, label in enumerate(labels)]
        room = self.size.width - sum(widths[:-1]) - 2 * len(widths) - 1  # cell padding, scrollbar
        if room > 0:
            widths[-1] = max(min(widths[-1], room), len(labels[-1]))
        table.clear(columns=True)
        for label, width in zip(labels, widths, strict=True):
            table.add_column(label, width=width)
        for key, cells in rows:
            table.add_row(*cells, key=key)

    def action_copy(self) -> None:
        """The merge commit of the run under the cursor."""
        table = self.query_one("#history-runs", DataTable)
        if self.history is None or table.row_count == 0:
            copy.copy(self.app, None, "No run to copy.")
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        record = next((r for r in self.history.runs if str(r.id) == key), None)
        if record is not None:
            copy.copy(self.app, copy.merge_commit(record.id, record.merge_sha),
                      f"Run #{record.id} merged nothing: no commit to copy.")

    @on(DataTable.RowSelected, "#history-runs")
    def _open(self, event: DataTable.RowSelected) -> None:
        if self.history is None or event.row_key.value is None:
            return
        record = next((r for r in self.history.runs if str(r.id) == event.row_key.value), None)
        if record is not None:
            self.app.push_screen(RunDetailScreen(record))


__all__ = ["HistoryScreen", "RunDetailScreen", "diff_text", "host_counts"]
