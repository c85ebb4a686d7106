"""The PR pane: the list of open update PRs and the focused PR's detail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from nfu_tui.ui import prview
from nfu_tui.ui.widgets.scrolling import KeyScroll


class PRList(OptionList):
    """Open update PRs, newest first; highlighting one shows its detail."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="prs.down"),
        Binding("k", "cursor_up", "Up", show=False, id="prs.up"),
        Binding("g", "first", "First", show=False, id="prs.first"),
        Binding("G", "last", "Last", show=False, id="prs.last"),
        Binding("ctrl+d", "page_down", "Page down", show=False, id="prs.page-down"),
        Binding("ctrl+u", "page_up", "Page up", show=False, id="prs.page-up"),
    ]

    DEFAULT_CSS = """
    PRList, PRList:focus { height: auto; max-height: 40%; border: none; padding: 0; }
    PRList > .option-list--option { padding: 0 1; }
    """

    class Focused(Message):
        """Another PR was highlighted (``number`` None when there is none)."""

        def __init__(self, number: int | None) -> None:
            super().__init__()
            self.number = number

    def __init__(self, clock: Callable[[], datetime], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._numbers: list[int] = []

    @property
    def focused_number(self) -> int | None:
        if self.highlighted is None or not self._numbers:
            return None
        return self._numbers[self.highlighted]

    def show(self, states: list[Any]) -> None:
        """Rebuild from the service's PR states, keeping the highlighted PR."""
        keep = self.focused_number
        now = self._clock()
        self._numbers = [s.pr.number for s in states]
        self.clear_options()
        if not states:
            self.add_option(Option(Text("No open update PRs.", style="dim"), disabled=True))
            self.post_message(self.Focused(None))
            return
        self.add_options([Option(prview.pr_entry(s.pr, now), id=str(s.pr.number)) for s in states])
        index = self._numbers.index(keep) if keep in self._numbers else 0
        self.highlighted = index
        if keep != self._numbers[index]:
            self.post_message(self.Focused(self._numbers[index]))

    def focus_number(self, number: int) -> bool:
        if number not in self._numbers:
            return False
        self.highlighted = self._numbers.index(number)
        return True

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        if event.option.id is not None:
            self.post_message(self.Focused(int(event.option.id)))


class PRDetail(VerticalScroll, KeyScroll, can_focus=True):
    """Scrollable detail of one PR: headline, coloured lock diff, changelog, URL."""

    DEFAULT_CSS = """
    PRDetail { height: 1fr; padding: 0 1; }
    PRDetail > Static { width: 100%; }
    """

    def __init__(self, clock: Callable[[], datetime], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._body = Static(Text("Select an update PR.", style="dim"), id="pr-body")

    def compose(self):
        yield self._body

    def show(self, state: Any | None) -> None:
        if state is None:
            self._body.update(Text("No update PR selected.", style="dim"))
        else:
            self._body.update(prview.pr_detail(state, self._clock()))
