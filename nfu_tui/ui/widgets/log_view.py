"""Live host output: bounded, inert, with a follow mode that pauses when you scroll up.

Lines arrive already sanitized by the core (no escape sequences or control
characters); :class:`textual.widgets.Log` shows them as plain text — never as markup —
so ``[bold]`` or ``[/nix/store/…]`` from a host appear literally.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Log

from nfu_tui.ui.widgets.scrolling import KeyScroll

DEFAULT_MAX_LINES = 2000


def appended(old: list[str], new: list[str]) -> list[str] | None:
    """Lines added to a bounded buffer between two reads (``old`` then ``new``).

    The buffer drops its oldest lines when full, so ``new`` may be ``old`` shifted left
    plus a tail. Returns the tail, or None when the two reads cannot be lined up (more
    new lines than the buffer holds): the caller then shows ``new`` afresh.
    """
    n = len(old)
    if len(new) >= n and new[:n] == old:
        return new[n:]
    if not new:
        return None
    first = new[0]
    for shift in range(1, n):
        if old[shift] == first and old[shift:] == new[: n - shift]:
            return new[n - shift :]
    return None


class HostLog(Log, KeyScroll):
    """A Log that knows whether it follows the end, and says so (scroll keys: :class:`KeyScroll`)."""

    BINDINGS = [
        Binding("end,G,F", "follow", "Follow", tooltip="Jump to the end and follow new output", id="log.follow"),
    ]

    DEFAULT_CSS = """
    HostLog { background: $surface; scrollbar-size-vertical: 1; }
    """

    class FollowChanged(Message):
        def __init__(self, log: "HostLog", following: bool) -> None:
            super().__init__()
            self.log = log
            self.following = following

        @property
        def control(self) -> "HostLog":
            return self.log

    def __init__(self, *, max_lines: int = DEFAULT_MAX_LINES, **kwargs) -> None:
        super().__init__(max_lines=max_lines, auto_scroll=True, **kwargs)
        self._following = True
        self._source: list[str] = []

    @property
    def following(self) -> bool:
        return self._following

    def show_lines(self, lines: list[str]) -> None:
        """Replace the content (e.g. another host was chosen) and follow the end."""
        self.clear()
        self._source = list(lines)
        if lines:
            self.write_lines(lines[-self.max_lines :] if self.max_lines else lines, scroll_end=True)
        self._set_following(True)

    def sync(self, lines: list[str]) -> None:
        """Append whatever ``lines`` (the host's whole buffer) has beyond the last read."""
        tail = appended(self._source, lines)
        if tail is None:
            following = self._following
            self.show_lines(lines)
            self._set_following(following)
            return
        self._source = list(lines)
        if tail:
            self.write_lines(tail, scroll_end=self._following)

    def add_lines(self, lines: list[str]) -> None:
        """Append lines that are not tracked against a buffer (interleaved view)."""
        if lines:
            self.write_lines(lines, scroll_end=self._following)

    def _set_following(self, following: bool) -> None:
        if following != self._following:
            self._following = following
            self.post_message(self.FollowChanged(self, following))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value < old_value and not self.is_vertical_scroll_end:
            self._set_following(False)
        elif self.is_vertical_scroll_end:
            self._set_following(True)

    def action_follow(self) -> None:
        self._set_following(True)
        self.scroll_end(animate=False, immediate=True)
