"""Scrolling panes and tables that honour every key press, with the grid's keys.

Why keys were lost: Textual's relative scrolls (``scroll_down``, ``scroll_relative``,
``scroll_page_down`` …) compute the target from the current position *when called* but
apply it only after the next refresh (``call_after_refresh``), and animated. Ten ``j``
that arrive before a refresh all compute the same target, so they move one line.
:class:`KeyScroll` scrolls immediately and without animation, from where the pane
really is, so each press counts at any rate of typing.

Every pane and table uses the same keys as the fleet grid: ``j/k`` (and arrows),
``pgup/pgdn`` (and ``ctrl+u/ctrl+d``), ``g/home`` and ``G/end``.
"""

from __future__ import annotations

from textual.actions import SkipAction
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable

SCROLL_BINDINGS = [
    Binding("j,down", "scroll_down", "Down", show=False, id="scroll.down"),
    Binding("k,up", "scroll_up", "Up", show=False, id="scroll.up"),
    Binding("pagedown,ctrl+d", "page_down", "Page down", show=False, id="scroll.page-down"),
    Binding("pageup,ctrl+u", "page_up", "Page up", show=False, id="scroll.page-up"),
    Binding("home,g", "scroll_home", "Top", show=False, id="scroll.top"),
    Binding("end,G", "scroll_end", "Bottom", show=False, id="scroll.bottom"),
]


class KeyScroll(Widget):
    """Mixin for a scrolling widget: key scrolls that never get lost.

    Put it *last* in the bases (``class Pane(VerticalScroll, KeyScroll)``): Textual takes
    default CSS only along the first base, and bindings from the whole MRO.
    """

    BINDINGS = SCROLL_BINDINGS

    def scroll_lines(self, lines: float) -> None:
        """Scroll ``lines`` down (negative: up) now, from the current position."""
        if not self.allow_vertical_scroll:
            raise SkipAction()
        self.app.animator.force_stop_animation(self, "scroll_y")  # a wheel scroll in flight lands first
        self.scroll_to(y=self.scroll_y + lines, animate=False, immediate=True)

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def action_scroll_down(self) -> None:
        self.scroll_lines(1)

    def action_scroll_up(self) -> None:
        self.scroll_lines(-1)

    def action_page_down(self) -> None:
        self.scroll_lines(self._page())

    def action_page_up(self) -> None:
        self.scroll_lines(-self._page())

    def action_scroll_home(self) -> None:
        self.scroll_lines(-self.scroll_y)

    def action_scroll_end(self) -> None:
        self.scroll_lines(self.max_scroll_y - self.scroll_y)


class Scroller(VerticalScroll, KeyScroll, can_focus=True):
    """A focusable vertical scroll pane with the grid's keys (dialogs, help, run detail, failure panel)."""


class KeyTable(DataTable):
    """A row-cursor table with the grid's keys: ``j/k``, ``g/home``, ``G/end`` move the cursor."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("home,g", "first_row", "First row", show=False, id="table.first"),
        Binding("end,G", "last_row", "Last row", show=False, id="table.last"),
        Binding("ctrl+d", "page_down", "Page down", show=False, id="table.page-down"),
        Binding("ctrl+u", "page_up", "Page up", show=False, id="table.page-up"),
    ]

    def action_first_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)
