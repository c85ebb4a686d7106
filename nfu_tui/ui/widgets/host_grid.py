"""The fleet grid: one line per host, rendered with the Line API.

Built for 5,000 hosts and a steady stream of heartbeats: rows are rendered lazily
(only visible lines), cached per host, and a host update repaints just that host's
line, and only when it is on screen (no repaint at all for the many updates of hosts
scrolled out of view). The order is recomputed only when a change can affect it (sort
key or filter membership), never per event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from nfu_tui.backends.base import NIXFLEET
from nfu_tui.models import Host
from nfu_tui.ui import fleetview as fv
from nfu_tui.ui.fleetview import HostFilter, HostMeta, Progress, SortMode

_CELL_STYLES = frozenset({"ok", "outdated", "error", "working", "unknown", "unreachable", "pending"})
STYLE_NAMES = (
    ["base", "header", "cursor", "cursor-mark", "selected", "name", "dim", "online", "offline", "progress", "held", "canary", "badge"]
    + sorted(_CELL_STYLES)
)


@dataclass(frozen=True, slots=True)
class HostSettings:
    """Deploy-related settings of a host (config + UI overrides)."""

    canary: bool = False
    priority: int | None = None
    auto_update: bool = True


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class HostGrid(ScrollView, can_focus=True):
    """Live grid of hosts with cursor, multi-selection, sorting and filtering."""

    BINDINGS = [
        Binding("j,down", "cursor(1)", "Down", show=False, id="grid.down"),
        Binding("k,up", "cursor(-1)", "Up", show=False, id="grid.up"),
        Binding("pagedown,ctrl+d", "page(1)", "Page down", show=False, id="grid.page-down"),
        Binding("pageup,ctrl+u", "page(-1)", "Page up", show=False, id="grid.page-up"),
        Binding("home,g", "edge(0)", "First host", show=False, id="grid.first"),
        Binding("end,G", "edge(1)", "Last host", show=False, id="grid.last"),
        Binding("space", "toggle_select", "Select", tooltip="Select/unselect the host for a deploy", id="grid.select"),
        Binding("a", "select_online", "All online", show=False, tooltip="Select every online host shown", id="grid.select-online"),
        Binding("escape", "clear", "Clear", show=False, tooltip="Clear the selection, then the filter", id="grid.clear"),
        Binding("h", "toggle_hold", "Hold", tooltip="Hold/unhold the focused or selected hosts", id="grid.hold"),
        Binding(
            "R", "rollback", "Roll back", show=False,
            tooltip="Roll the focused host back to its previous generation (asks first)",
            id="grid.rollback",
        ),
        Binding("enter", "open", "Details", show=False, tooltip="Host detail: compartments and recent output", id="grid.open"),
        Binding("s", "cycle_sort", "Sort", show=False, tooltip="Sort by name → status → priority", id="grid.sort"),
    ]

    COMPONENT_CLASSES = {f"host-grid--{name}" for name in STYLE_NAMES}

    DEFAULT_CSS = """
    HostGrid {
        background: $surface;
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
        & > .host-grid--base { }
        & > .host-grid--header { text-style: bold; color: $text-muted; background: $panel; }
        & > .host-grid--cursor { background: $block-cursor-blurred-background; }
        &:focus > .host-grid--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
        & > .host-grid--cursor-mark { color: $accent; text-style: bold; }
        & > .host-grid--selected { color: $accent; text-style: bold; }
        & > .host-grid--name { text-style: bold; }
        & > .host-grid--dim { color: $text-muted; }
        & > .host-grid--online { color: $success; }
        & > .host-grid--offline { color: $text-muted; }
        & > .host-grid--progress { color: $primary; }
        & > .host-grid--held { color: $warning; text-style: bold reverse; }
        & > .host-grid--canary { color: $accent; text-style: bold; }
        & > .host-grid--badge { color: $text-muted; }
        & > .host-grid--ok { background: $success-muted; color: $text; }
        & > .host-grid--outdated { background: $warning-muted; color: $text; text-style: bold; }
        & > .host-grid--error { background: $error; color: $text; text-style: bold; }
        & > .host-grid--working { background: $primary-muted; color: $text; text-style: bold; }
        & > .host-grid--unknown { background: $panel; color: $text-muted; }
        & > .host-grid--unreachable { background: $panel; color: $warning; text-style: bold; }
        & > .host-grid--pending { background: $warning-muted; color: $text; text-style: bold; }
        &.-glow > .host-grid--pending { background: $warning; color: $text; }
    }
    """

    class Highlighted(Message):
        """The cursor moved to another host (``host_id`` None when the grid is empty)."""

        def __init__(self, host_id: str | None) -> None:
            super().__init__()
            self.host_id = host_id

    class Opened(Message):
        """Enter (or a double click) on a host."""

        def __init__(self, host_id: str) -> None:
            super().__init__()
            self.host_id = host_id

    class SelectionChanged(Message):
        def __init__(self, selected: frozenset[str]) -> None:
            super().__init__()
            self.selected = selected

    class HoldRequested(Message):
        """Hold (``held`` True) or release the given hosts."""

        def __init__(self, host_ids: tuple[str, ...], held: bool) -> None:
            super().__init__()
            self.host_ids = host_ids
            self.held = held

    class RollbackRequested(Message):
        """``R`` on a host: roll it back (the app asks first)."""

        def __init__(self, host_id: str) -> None:
            super().__init__()
            self.host_id = host_id

    class ViewChanged(Message):
        """Sort mode, filter or visible count changed (for the pane title)."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = _utcnow,
        progress: Callable[[str], Progress | None] = lambda _id: None,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._clock = clock
        self._progress = progress
        self._hosts: dict[str, Host] = {}
        self._settings: dict[str, HostSettings] = {}
        self._held: set[str] = set()
        self._selected: set[str] = set()
        self._order: list[str] = []
        self._index: dict[str, int] = {}
        self._online = 0  # online hosts among the shown ones, kept up to date per update
        self._cursor = 0
        self._sort = SortMode.NAME
        self._filter = HostFilter()
        self._pending_lock = False
        self._pending_text = ""
        self._unreachable_since: datetime | None = None
        self.backend = NIXFLEET  # the fleet backend, as the texts name it
        self._cols: tuple[fv.Column, ...] = fv.layout(80)
        self._cache: dict[str, Strip] = {}
        self._styles: dict[str, Style] = {}
        self._cursor_style = Style()
        self._updates_applied = 0

    # --- public API -------------------------------------------------------

    @property
    def sort_mode(self) -> SortMode:
        return self._sort

    @sort_mode.setter
    def sort_mode(self, mode: SortMode) -> None:
        self._sort = mode
        self._reorder()
        self.post_message(self.ViewChanged())

    @property
    def host_filter(self) -> HostFilter:
        return self._filter

    def set_filter(self, text: str) -> None:
        self._filter = HostFilter.parse(text)
        self._reorder()
        self.post_message(self.ViewChanged())

    @property
    def columns(self) -> tuple[fv.Column, ...]:
        """The current column layout (depends on the width)."""
        return self._cols

    @property
    def visible_ids(self) -> list[str]:
        return list(self._order)

    @property
    def total(self) -> int:
        return len(self._hosts)

    @property
    def shown_count(self) -> int:
        """How many hosts the filter lets through."""
        return len(self._order)

    @property
    def shown_online(self) -> int:
        """How many of the shown hosts are online (no pass over the hosts: kept per update)."""
        return self._online

    @property
    def updates_applied(self) -> int:
        """How many host updates were applied so far (for benchmarks)."""
        return self._updates_applied

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    @property
    def selected(self) -> frozenset[str]:
        return frozenset(self._selected)

    @property
    def cursor_row(self) -> int:
        """Index of the cursor among the shown hosts."""
        return self._cursor

    @property
    def cursor_host(self) -> str | None:
        return self._order[self._cursor] if self._order else None

    def targets(self) -> list[str]:
        """The selected hosts, else the host under the cursor."""
        if self._selected:
            return sorted(self._selected, key=lambda h: self._index.get(h, 1 << 30))
        return [self.cursor_host] if self.cursor_host else []

    def host(self, host_id: str) -> Host | None:
        return self._hosts.get(host_id)

    def row_text(self, host_id: str) -> str | None:
        """The plain text of a host's row as the grid shows it (None when filtered out)."""
        row = self._index.get(host_id)
        return None if row is None else "".join(text for text, _ in self._runs(row))

    def set_hosts(self, hosts: Iterable[Host]) -> None:
        """Replace every host (initial load or after a resync)."""
        self._hosts = {h.id: h for h in hosts}
        self._selected &= self._hosts.keys()
        self._updates_applied += len(self._hosts)
        self._reorder()

    def update_hosts(self, hosts: Iterable[Host], removed: Iterable[str] = ()) -> None:
        """Apply changed hosts in place; reorder only when a change can move a row."""
        reorder = False
        for host_id in removed:
            if self._hosts.pop(host_id, None) is not None:
                self._selected.discard(host_id)
                reorder = True
        for host in hosts:
            old = self._hosts.get(host.id)
            self._hosts[host.id] = host
            self._updates_applied += 1
            if old is None or (not reorder and self._moves(old, host)):
                reorder = True
            elif not reorder and old.online != host.online and host.id in self._index:
                self._online += 1 if host.online else -1
            self._cache.pop(host.id, None)
            if not reorder and host.id in self._index:
                self._refresh_row(self._index[host.id])
        if reorder:
            self._reorder()

    def set_settings(self, settings: dict[str, HostSettings]) -> None:
        self._settings = dict(settings)
        self._invalidate(reorder=self._sort is SortMode.PRIORITY or self._filter.active)

    def set_held(self, held: Iterable[str]) -> None:
        self._held = set(held)
        self._invalidate(reorder=self._filter.active)

    def set_pending(self, pending: bool, text: str = "") -> None:
        """Mark every host's Lock as waiting for an update PR (``text`` goes in tooltips)."""
        if pending != self._pending_lock or text != self._pending_text:
            self._pending_lock, self._pending_text = pending, text
            if not pending:
                self.remove_class("-glow")
            self._invalidate()

    def set_unreachable(self, since: datetime | None) -> None:
        """The fleet backend is unreachable since ``since`` (None: live): hosts show as unknown."""
        if since != self._unreachable_since:
            self._unreachable_since = since
            self._invalidate()

    @property
    def unreachable_since(self) -> datetime | None:
        return self._unreachable_since

    def pulse(self) -> None:
        """Advance the Lock glow by one step (called by the app's timer)."""
        if self._pending_lock:
            self.toggle_class("-glow")

    def meta(self, host_id: str) -> HostMeta:
        s = self._settings.get(host_id) or HostSettings()
        return HostMeta(
            held=host_id in self._held,
            selected=host_id in self._selected,
            canary=s.canary,
            priority=s.priority,
            auto_update=s.auto_update,
        )

    def select(self, host_ids: Iterable[str], selected: bool = True) -> None:
        ids = set(host_ids) & self._hosts.keys()
        if selected:
            self._selected |= ids
        else:
            self._selected -= ids
        for host_id in ids:
            self._cache.pop(host_id, None)
        self._after_selection()

    def move_to(self, host_id: str) -> bool:
        """Put the cursor on ``host_id`` if it is shown."""
        if host_id not in self._index:
            return False
        self._set_cursor(self._index[host_id])
        return True

    def refresh_ages(self) -> None:
        """Re-render rows whose text depends on the clock (offline "last seen")."""
        for host_id, host in self._hosts.items():
            if not host.online:
                self._cache.pop(host_id, None)
        self.refresh()

    # --- ordering ----------------------------------------------------------

    def _moves(self, old: Host, new: Host) -> bool:
        if self._sort is SortMode.STATUS and fv.sort_key(self._sort, old, HostMeta()) != fv.sort_key(
            self._sort, new, HostMeta()
        ):
            return True
        if self._sort is SortMode.NAME and old.name != new.name:
            return True
        if self._filter.active:
            meta = self.meta(new.id)
            return self._filter.matches(old, meta) != self._filter.matches(new, meta)
        return False

    def _reorder(self) -> None:
        current = self.cursor_host
        metas = {h: self.meta(h) for h in self._hosts}
        ids = [h for h, host in self._hosts.items() if self._filter.matches(host, metas[h])]
        ids.sort(key=lambda h: fv.sort_key(self._sort, self._hosts[h], metas[h]))
        self._order = ids
        self._index = {h: i for i, h in enumerate(ids)}
        self._online = sum(1 for h in ids if self._hosts[h].online)
        self._cache.clear()
        self.virtual_size = Size(self.size.width, len(ids) + 1)
        if current is not None and current in self._index:
            self._cursor = self._index[current]
        else:
            self._cursor = min(self._cursor, max(0, len(ids) - 1))
        self._scroll_to_cursor()
        self.refresh()
        if current != self.cursor_host:
            self.post_message(self.Highlighted(self.cursor_host))

    def _invalidate(self, reorder: bool = False) -> None:
        if reorder:
            self._reorder()
        else:
            self._cache.clear()
            self.refresh()

    # --- cursor ------------------------------------------------------------

    def _set_cursor(self, row: int) -> None:
        if not self._order:
            return
        row = max(0, min(row, len(self._order) - 1))
        if row == self._cursor:
            self._scroll_to_cursor()
            return
        old = self._cursor
        self._cursor = row
        self._refresh_row(old)
        self._refresh_row(row)
        self._scroll_to_cursor()
        self.post_message(self.Highlighted(self.cursor_host))

    def _scroll_to_cursor(self) -> None:
        rows_visible = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_offset.y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + rows_visible:
            self.scroll_to(y=self._cursor - rows_visible + 1, animate=False, immediate=True)

    def _refresh_row(self, row: int) -> None:
        """Repaint a row if it is on screen (an off-screen row is rendered when scrolled to)."""
        top = int(self.scroll_offset.y)
        if top <= row < top + self.scrollable_content_region.height:
            self.refresh_line(row + 1)

    def action_cursor(self, delta: int) -> None:
        self._set_cursor(self._cursor + delta)

    def action_page(self, direction: int) -> None:
        self._set_cursor(self._cursor + direction * max(1, self.scrollable_content_region.height - 2))

    def action_edge(self, end: int) -> None:
        self._set_cursor(len(self._order) - 1 if end else 0)

    # --- selection / hold / open ----------------------------------------------

    def _after_selection(self) -> None:
        self.refresh()
        self.post_message(self.SelectionChanged(frozenset(self._selected)))

    def action_toggle_select(self) -> None:
        host_id = self.cursor_host
        if host_id is None:
            return
        self.select([host_id], host_id not in self._selected)
        self._set_cursor(self._cursor + 1)

    def action_select_online(self) -> None:
        self.select([h for h in self._order if self._hosts[h].online])

    def action_clear(self) -> None:
        if self._selected:
            self.select(list(self._selected), False)
        elif self._filter.active:
            self.set_filter("")

    def action_toggle_hold(self) -> None:
        ids = tuple(self.targets())
        if ids:
            self.post_message(self.HoldRequested(ids, held=not all(h in self._held for h in ids)))

    def action_rollback(self) -> None:
        if self.cursor_host:
            self.post_message(self.RollbackRequested(self.cursor_host))

    def action_open(self) -> None:
        if self.cursor_host:
            self.post_message(self.Opened(self.cursor_host))

    def action_cycle_sort(self) -> None:
        self.sort_mode = self._sort.next()

    # --- rendering -----------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._cache.clear()

    def on_resize(self, event: events.Resize) -> None:
        self._cols = fv.layout(self.scrollable_content_region.width)
        self._cache.clear()
        self.virtual_size = Size(event.size.width, len(self._order) + 1)
        self._scroll_to_cursor()

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(f"host-grid--{name}")
        return style

    def _strip(self, runs: list[fv.Run], *, cursor: bool) -> Strip:
        segments = []
        cursor_style = self.get_component_rich_style("host-grid--cursor", partial=True) if cursor else None
        for text, style_name in runs:
            style = self._style(style_name)
            if cursor_style is not None and style_name not in _CELL_STYLES:
                style = style + cursor_style
            segments.append(Segment(text, style))
        width = self.scrollable_content_region.width
        return Strip(segments).extend_cell_length(width, self._style("cursor" if cursor else "base")).crop(0, width)

    def _runs(self, row: int) -> list[fv.Run]:
        host_id = self._order[row]
        host = self._hosts[host_id]
        return fv.row_runs(
            host,
            self.meta(host_id),
            self._cols,
            now=self._clock(),
            progress=self._progress(host_id) if host.busy else None,
            pending_lock=self._pending_lock,
            cursor=row == self._cursor,
            unreachable_since=self._unreachable_since,
        )

    def _row_strip(self, row: int) -> Strip:
        host_id = self._order[row]
        cursor = row == self._cursor
        if not cursor and host_id in self._cache:
            return self._cache[host_id]
        strip = self._strip(self._runs(row), cursor=cursor)
        if not cursor:
            self._cache[host_id] = strip
        return strip

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y == 0:
            return self._strip(fv.header_runs(self._cols), cursor=False)
        row = int(self.scroll_offset.y) + y - 1
        if row >= len(self._order):
            if not self._order and y == 1:
                text = "  no hosts match the filter" if self._hosts else f"  waiting for {self.backend.noun}…"
                return self._strip([(text, "dim")], cursor=False)
            return Strip.blank(width, self._style("base"))
        return self._row_strip(row)

    # --- mouse ---------------------------------------------------------------

    def _row_at(self, y: int) -> int | None:
        if y < 1:
            return None
        row = int(self.scroll_offset.y) + y - 1
        return row if row < len(self._order) else None

    def on_click(self, event: events.Click) -> None:
        row = self._row_at(event.y)
        if row is None:
            return
        self._set_cursor(row)
        if event.chain >= 2:
            self.action_open()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        row = self._row_at(event.y)
        tooltip = ""
        if row is not None:
            host = self._hosts[self._order[row]]
            comp = fv.compartment_at(self._cols, event.x)
            if comp is not None:
                check = host.compartment(comp)
                tooltip = f"{fv.COMPARTMENT_TITLES[comp]}: {check.state.value} — {check.message or 'no message'}"
                if comp == "lock" and self._pending_lock and self._pending_text:
                    tooltip += f"\n{self._pending_text}"
            elif self._unreachable_since is not None:
                tooltip = (f"{host.name}: unknown — {self.backend.noun} is unreachable; "
                           f"{fv.last_seen_live(host, self._unreachable_since)}")
        self.tooltip = Text(tooltip) if tooltip else None  # dashboard text: never markup
