"""The header line (connection state, rate budget, last poll) and the bottom status line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.widgets import Static

from nfu_tui.models import RateBudget
from nfu_tui.ui.fleetview import PENDING_GLYPH, ago

DASHBOARD_STATES: dict[str, tuple[str, str]] = {
    "live": ("● live", "green"),
    "connecting": ("◌ connecting…", "blue"),
    "reconnecting": ("⟳ reconnecting…", "yellow"),
    "login-required": ("✗ login required", "bold red"),
    "error": ("✗ error", "bold red"),
    "disabled": ("– off", "dim"),
}
GITHUB_STATES: dict[str, tuple[str, str]] = {
    "ok": ("✓", "green"),
    "polling": ("⟳", "blue"),
    "error": ("✗ error", "bold red"),
    "rate-limited": ("⧗ rate-limited", "bold yellow"),
    "disabled": ("– off", "dim"),
}


def rate_text(rate: RateBudget | None) -> str:
    if rate is None or rate.remaining is None or rate.limit is None:
        return ""
    return f"{rate.remaining:,}/{rate.limit:,}"


def header_text(status: Any, now: datetime, *, title: str = "nfu-tui", compact: bool = False) -> Text:
    """``nfu-tui │ dashboard ● live │ GitHub ✓ 4,987/5,000 │ polled 12s ago``.

    ``status`` is the service's ``ConnectionStatus`` (or None before the service exists).
    """
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f" {title} ", style="bold reverse")
    sep = (" │ ", "dim")
    if status is None:
        text.append(*sep)
        text.append("starting…", style="dim")
        return text
    label, style = DASHBOARD_STATES.get(status.dashboard, (status.dashboard, "dim"))
    text.append(*sep)
    text.append("dash " if compact else "dashboard ", style="dim")
    text.append(label, style=style)
    label, style = GITHUB_STATES.get(status.github, (status.github, "dim"))
    text.append(*sep)
    text.append("GitHub ", style="dim")
    text.append(label, style=style)
    budget = rate_text(status.rate)
    if budget:
        low = status.rate.remaining is not None and status.rate.limit and status.rate.remaining < status.rate.limit // 10
        text.append(f" {budget}", style="yellow" if low else "dim")
    text.append(*sep)
    if status.last_poll is None:
        text.append("not polled yet", style="dim")
    else:
        age = ago(status.last_poll, now)
        text.append("polled " + ("just now" if age == "now" else f"{age} ago"), style="dim")
    return text


def header_tooltip(status: Any) -> Text | None:
    if status is None:
        return None
    lines = [f"Dashboard: {status.dashboard}" + (f" — {status.dashboard_detail}" if status.dashboard_detail else "")]
    lines.append(f"GitHub: {status.github}" + (f" — {status.github_detail}" if status.github_detail else ""))
    if status.last_poll is not None:
        lines.append(f"Last poll: {status.last_poll.astimezone():%Y-%m-%d %H:%M:%S %Z}")
    return Text("\n".join(lines))


class StatusHeader(Static):
    """One line at the top: connection state, GitHub rate budget, last poll."""

    DEFAULT_CSS = """
    StatusHeader { height: 1; background: $panel; color: $foreground; }
    """

    def __init__(self, clock: Callable[[], datetime], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._status: Any = None

    def show(self, status: Any) -> None:
        self._status = status
        self.update(header_text(status, self._clock(), compact=self.size.width < 90))
        self.tooltip = header_tooltip(status)

    def tick(self) -> None:
        self.show(self._status)

    def on_resize(self) -> None:
        self.tick()


def status_line_text(headline: str | None, pr_number: int | None, detail: str = "") -> Text:
    """Bottom line: the pending update PR (with the key to act on it), or a quiet note."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if headline:
        text.append(f" {PENDING_GLYPH} ", style="bold reverse yellow")
        text.append(f" Update PR pending: {headline}", style="bold")
        if pr_number is not None:
            text.append(f"  (#{pr_number} · m merge & deploy)", style="dim")
    else:
        text.append(" " + (detail or "No update PR pending"), style="dim")
    return text


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine { height: 1; background: $boost; }
    StatusLine.-pending { background: $warning 15%; }
    """

    def show(self, headline: str | None, pr_number: int | None, detail: str = "") -> None:
        self.set_class(bool(headline), "-pending")
        self.update(status_line_text(headline, pr_number, detail))
