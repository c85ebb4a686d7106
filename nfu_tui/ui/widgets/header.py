"""The header line (connection state, rate budget, last poll) and the bottom status line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.widgets import Static

from nfu_tui.models import RateBudget
from nfu_tui.ui.fleetview import PENDING_GLYPH, ago
from nfu_tui.ui.spans import unlead

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


AUTO_BADGES: dict[str, tuple[str, str]] = {
    "disabled": ("auto off", "dim"),
    "idle": ("auto on", "green"),
    "waiting-delay": ("auto wait", "cyan"),
    "waiting-ci": ("auto wait", "cyan"),
    "waiting-window": ("auto wait", "cyan"),
    "waiting-fleet": ("auto wait", "cyan"),
    "paused": ("auto paused", "yellow"),
    "blocked": ("auto ⚠", "bold yellow"),
    "busy": ("auto ⟳", "bold blue"),
    "ready": ("auto ⟳", "bold blue"),
}
AUTO_ERROR_BADGE = ("auto ✗", "bold red")


@dataclass(frozen=True, slots=True)
class AutomationStatus:
    """What the app knows about automation: the runner's latest decision, or why it stopped."""

    decision: Any = None  # nfu_tui.core.automation.Decision
    error: str = ""
    enabled: bool = False  # the toggle (the runner also decides "busy" while it runs a rollback with automation off)

    @property
    def known(self) -> bool:
        return self.decision is not None or bool(self.error)

    @property
    def on(self) -> bool:
        return self.enabled and self.decision is not None and self.decision.state.value != "disabled"


def automation_badge(auto: AutomationStatus | None) -> tuple[str, str] | None:
    """The header's short automation label and style (None before the first decision)."""
    if auto is None or not auto.known:
        return None
    if auto.error:
        return AUTO_ERROR_BADGE
    state = auto.decision.state.value if auto.enabled else "disabled"
    return AUTO_BADGES.get(state, (f"auto {state}", "dim"))


def automation_text(auto: AutomationStatus | None, now: datetime) -> Text | None:
    """The status line while automation is on (or failed): next action with countdown, window.

    ``⚙ AUTO  merging PR #42 in 37 min — waiting for CI · next window Sat 02:00``; None when off.
    """
    if auto is None or not (auto.on or auto.error):
        return None
    text = Text(no_wrap=True, overflow="ellipsis")
    if auto.error:
        text.append(" ⚙ AUTO ", style="bold reverse red")
        text.append(f" automation stopped: {auto.error}", style="bold red")
        return unlead(text)
    decision = auto.decision
    blocked = decision.state.value in ("blocked", "paused")
    text.append(" ⚙ AUTO ", style="bold reverse yellow" if blocked else "bold reverse cyan")
    text.append(" " + decision.describe(now), style="bold")
    if decision.window and decision.window not in decision.template:
        text.append(f" · {decision.window}", style="dim")
    return unlead(text)


def rate_text(rate: RateBudget | None) -> str:
    if rate is None or rate.remaining is None or rate.limit is None:
        return ""
    return f"{rate.remaining:,}/{rate.limit:,}"


def header_text(
    status: Any, now: datetime, *, title: str = "nfu-tui", compact: bool = False,
    automation: AutomationStatus | None = None,
) -> Text:
    """``nfu-tui │ auto off │ run #12 paused │ dashboard ● live │ GitHub ✓ 4,987/5,000 │ polled 12s ago``
    (``ssh ● live`` with the SSH backend).

    ``status`` is the service's ``ConnectionStatus`` (or None before the service exists).
    The automation badge comes first so that it survives truncation at 80 columns.
    Separators end the previous span (a span never starts with a space: some SVG
    renderers drop a leading space).
    """
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f" {title} ", style="bold reverse")
    sep = (" │ ", "dim")
    badge = automation_badge(automation)
    if badge is not None:
        text.append(*sep)
        text.append(*badge)
    if status is None:
        text.append(*sep)
        text.append("starting…", style="dim")
        return unlead(text)
    if status.attention:  # paused/waiting/blocked runs, unsent notifications: before it is cut at 80 columns
        text.append(*sep)
        text.append(status.attention, style="bold yellow")
    label, style = DASHBOARD_STATES.get(status.fleet, (status.fleet, "dim"))
    text.append(*sep)
    name = status.backend.label
    text.append(f"{name[:4] if compact else name} ", style="dim")
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
    return unlead(text)


def header_tooltip(status: Any, automation: AutomationStatus | None = None, now: datetime | None = None) -> Text | None:
    if status is None:
        return None
    lines = []
    if automation is not None and automation.error:
        lines.append(f"Automation: stopped — {automation.error}")
    elif automation is not None and automation.decision is not None and now is not None:
        decision = automation.decision
        lines.append(f"Automation: {decision.describe(now)}" + (f" · {decision.window}" if decision.window else ""))
    if status.attention:
        lines.append(f"Needs attention: {status.attention} (nfu-tui status lists them)")
    lines += [f"{status.backend.title}: {status.fleet}" + (f" — {status.fleet_detail}" if status.fleet_detail else "")]
    lines.append(f"GitHub: {status.github}" + (f" — {status.github_detail}" if status.github_detail else ""))
    if status.last_poll is not None:
        lines.append(f"Last poll: {status.last_poll.astimezone():%Y-%m-%d %H:%M:%S %Z}")
    return Text("\n".join(lines))


class StatusHeader(Static):
    """One line at the top: connection state, GitHub rate budget, last poll."""

    DEFAULT_CSS = """
    StatusHeader { height: 1; background: $panel; color: $foreground; }
    """

    def __init__(
        self,
        clock: Callable[[], datetime],
        automation: Callable[[], AutomationStatus | None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._automation = automation
        self._status: Any = None

    def show(self, status: Any) -> None:
        self._status = status
        now, auto = self._clock(), self._automation()
        self.update(header_text(status, now, compact=self.size.width < 90, automation=auto))
        self.tooltip = header_tooltip(status, auto, now)

    def tick(self) -> None:
        self.show(self._status)

    def on_resize(self) -> None:
        self.tick()


def status_line_text(headline: str | None, pr_number: int | None, detail: str = "") -> Text:
    """Bottom line: the pending update PR, the key to act on it first (it survives 80 columns),
    then the headline (``PR #42 …`` is not repeated), or a quiet note."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if headline:
        text.append(f" {PENDING_GLYPH} ", style="bold reverse yellow")
        if pr_number is not None:
            text.append(" m", style="bold")
            text.append(f" merge & deploy #{pr_number} · ", style="dim")
            headline = headline.removeprefix(f"PR #{pr_number} ")
        text.append(f"Update PR pending: {headline}", style="bold")
    else:
        text.append(" " + (detail or "No update PR pending"), style="dim")
    return unlead(text)


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine { height: 1; background: $boost; }
    StatusLine.-pending { background: $warning 15%; }
    """

    def show(self, headline: str | None, pr_number: int | None, detail: str = "", automation: Text | None = None) -> None:
        """The pending PR line, or ``automation`` (see :func:`automation_text`) while automation is on."""
        self.set_class(bool(headline) and automation is None, "-pending")
        self.update(automation if automation is not None else status_line_text(headline, pr_number, detail))
