"""Confirmation dialogs: a plain yes/no, and the Merge & Deploy plan (with the
outside-the-maintenance-window warning that needs its own key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

from nfu_tui.core.plan import DeployPlan, SkipReason
from nfu_tui.ui import prview
from nfu_tui.ui.screens.preview import preview_text
from nfu_tui.ui.spans import unlead
from nfu_tui.ui.widgets.scrolling import Scroller


def relabel(screen: Any, description: str, *keys: str) -> None:
    """Show ``description`` in ``screen``'s footer for ``keys`` (the footer says what the buttons say)."""
    bindings = screen._bindings.key_to_bindings
    for key in keys:
        bindings[key] = [replace(b, description=description) for b in bindings.get(key, ())]


class ConfirmScreen(ModalScreen[bool]):
    """A question with two buttons; ``y`` confirms, ``n``/``esc`` cancels (the default focus)."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 64; max-width: 96%; height: auto; max-height: 90%;
        border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmScreen #question { height: auto; }
    ConfirmScreen Horizontal { height: auto; margin-top: 1; align-horizontal: right; }
    ConfirmScreen Button { margin-left: 2; }
    """
    CHROME = 8
    """Rows of the box that are not the question: border, padding, the buttons and their margin."""

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "Cancel", width: int = 64) -> None:
        super().__init__()
        self._question, self._yes, self._no = question, yes, no
        self._width = width
        relabel(self, yes, "y")
        relabel(self, no, "n", "escape")

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.styles.width = self._width
        with box:
            with VerticalScroll(id="question"):  # a long question scrolls; the buttons stay in view
                yield Static(Text(self._question))
            with Horizontal():
                yield Button(f"{self._yes} (y)", variant="error", id="yes")
                yield Button(f"{self._no} (n)", id="no")
        yield Footer()  # the dialog's keys, not the screen's below

    def on_resize(self) -> None:
        room = int(self.size.height * 0.9) - self.CHROME  # the box is at most 90% high
        for question in self.query("#question").results(VerticalScroll):
            question.styles.max_height = max(3, room)

    def on_mount(self) -> None:
        for button in self.query("#no").results(Button):  # none when answered before it was built
            button.focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def plan_text(plan: DeployPlan, state: Any | None, previews: Mapping[str, Any] | None = None) -> Text:
    """The plan as the admin reads it before confirming: order, waves, skips and why; with ``previews``
    (cached for this head, SSH backend), what the build changes on each planned host."""
    text = Text()
    if state is not None:
        pr = state.pr
        text.append(f"PR #{pr.number} ", style="bold")
        text.append(pr.title + "\n")
        expl = state.explanation
        headline = getattr(expl, "nixpkgs_headline", None) or getattr(expl, "headline", None) if expl else None
        if headline:
            text.append(headline + "\n", style="bold")
        for i, (label, style) in enumerate((prview.ci_label(pr), prview.mergeable_label(pr), prview.lock_only_label(pr))):
            if i:
                text.append(" · ", style="dim")
            text.append(label, style=style)
        text.append("\n\n")
    sha = plan.head_sha[:7] if plan.head_sha else "?"
    if plan.converge:
        text.append("1. No merge: ", style="bold")
        text.append(f"the target is {plan.branch}'s head {sha} (the commit it points to now)\n")
    else:
        text.append("1. Merge ", style="bold")
        text.append(f"PR #{plan.pr_number} at head {sha} (refused if the head moved, CI is not green or it is not "
                    "mergeable)\n")
    if plan.merge_only:
        text.append("2. No deploy: deploy_strategy = none (merge only).\n", style="yellow")
    else:
        text.append("2. Deploy ", style="bold")
        text.append(
            f"{len(plan.entries)} host(s){' behind it' if plan.converge else ''}: pull, then switch; at most "
            f"{plan.max_parallel} at a time; stop on the first failure\n"
        )
    canaries, rest = plan.waves
    n = 0
    if canaries:
        text.append(f"\nWave 1 — canaries (then wait {plan.canary_wait_minutes:g} min, require them healthy)\n", style="bold cyan")
        for entry in canaries:
            n += 1
            _entry(text, n, entry)
    if rest:
        text.append("\nWave 2 — the rest\n" if canaries else "\nOrder\n", style="bold")
        for entry in rest:
            n += 1
            _entry(text, n, entry)
    if plan.queued:
        text.append("\nQueued — offline now, deployed when they come back online\n", style="bold yellow")
        for entry in plan.queued:
            _entry(text, None, entry)
    shown = [s for s in plan.skipped if s.reason is not SkipReason.NOT_SELECTED]
    unselected = [s.host for s in plan.skipped if s.reason is SkipReason.NOT_SELECTED]
    if shown or unselected:
        text.append("\nSkipped\n", style="bold")
        for s in shown:
            text.append("   – ", style="dim")
            text.append(f"{s.host:<16} ", style="bold")
            text.append(s.detail or s.reason.value, style="yellow" if s.reason is SkipReason.HELD else "dim")
            text.append("\n")
        if unselected:
            text.append("   – not selected: ", style="dim")
            text.append(", ".join(unselected) + "\n", style="dim")
    if previews:
        shown_hosts = [h for h in plan.hosts if h in previews]
        text.append("\nPreview (built at this head, not activated; v builds the rest)\n", style="bold")
        text.append_text(preview_text(shown_hosts, previews, running=False))
    for warning in plan.warnings:
        text.append(f"\n⚠ {warning}", style="bold yellow")
    if not plan.entries and not plan.queued and plan.converge:
        text.append(f"\nNothing to deploy: every host is at {plan.branch} or skipped.", style="bold yellow")
    elif not plan.entries and not plan.queued and not plan.merge_only:
        text.append("\nNothing to deploy: no host qualifies (the PR would still be merged).", style="bold yellow")
    text.rstrip()
    return unlead(text)


def _entry(text: Text, n: int | None, entry: Any) -> None:
    text.append(f"  {n:>2}. " if n is not None else "   – ", style="dim")
    text.append(f"{entry.host:<16} ", style="bold")
    text.append(entry.reason, style="cyan" if entry.canary else "dim")
    if entry.badges:
        text.append("  ")
        text.append(" · ".join(entry.badges), style="yellow")
    if entry.behind:
        text.append(f"  {entry.behind}")
    text.append("\n")


class DeployConfirmScreen(ModalScreen[bool]):
    """``m``: shows what Merge & Deploy will do; nothing happens until ``y``.

    Outside the maintenance windows (``window_warning``) the warning sits above the
    plan and ``y`` only works after ``o`` (deploy outside the window) was pressed.
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Merge & Deploy", id="deploy-confirm.yes"),
        Binding("o", "override_window", "Outside the window", tooltip="Confirm deploying outside the maintenance windows (then y)", id="deploy-confirm.override"),
        Binding("n,escape", "answer(False)", "Cancel", id="deploy-confirm.no"),
    ]

    DEFAULT_CSS = """
    DeployConfirmScreen { align: center middle; }
    DeployConfirmScreen > Vertical {
        width: 96; max-width: 98%; height: auto; max-height: 96%;
        border: thick $warning; background: $surface; padding: 0 1;
        border-title-align: center; border-title-style: bold;
    }
    DeployConfirmScreen.-outside > Vertical { border: thick $error; }
    DeployConfirmScreen #window-warning {
        height: auto; border: heavy $error; background: $error 15%; padding: 0 1; margin-bottom: 1;
    }
    DeployConfirmScreen #window-warning.-acknowledged { border: heavy $warning; background: $warning 10%; }
    DeployConfirmScreen Scroller { height: auto; max-height: 100%; }
    DeployConfirmScreen Horizontal { dock: bottom; height: 3; align-horizontal: right; }
    DeployConfirmScreen Button { margin-left: 2; }
    """

    def __init__(self, plan: DeployPlan, state: Any | None, *, window_warning: str | None = None,
                 previews: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.plan = plan
        self._state = state
        self._previews = previews
        self.window_warning = window_warning
        self.window_acknowledged = False
        if plan.converge:  # the footer says what y does: a converge merges nothing
            relabel(self, "Converge", "y")

    def compose(self) -> ComposeResult:
        box = Vertical()
        converge = self.plan.converge
        box.border_title = f"{self.plan.subject.capitalize()}?" if converge else f"Merge & Deploy PR #{self.plan.pr_number}?"
        self._verb = "Converge" if converge else "Merge & Deploy"
        nothing = converge and not self.plan.entries and not self.plan.queued
        with box:
            if self.window_warning:
                yield Static(self._warning_text(), id="window-warning")
            with Scroller(id="plan-scroll"):
                yield Static(plan_text(self.plan, self._state, self._previews), id="plan")
            with Horizontal():
                yield Button(f"{self._verb} (y)", variant="warning", id="yes",
                             disabled=bool(self.window_warning) or nothing)
                yield Button("Cancel (esc)", id="no")
        yield Footer()

    def on_mount(self) -> None:
        self.set_class(bool(self.window_warning), "-outside")
        for pane in self.query(Scroller).results(Scroller):  # the plan's keys scroll it; y/o/n/esc answer
            pane.focus()

    def _warning_text(self) -> Text:
        text = Text()
        if self.window_acknowledged:
            text.append("⚠ Outside the maintenance windows — confirmed. ", style="bold yellow")
            text.append("y deploys now." if self.plan.converge else "y merges and deploys now.")
            return unlead(text)
        text.append("⚠ ", style="bold red")
        text.append(self.window_warning or "", style="bold")
        text.append("\n")
        text.append("o", style="bold reverse")
        text.append(" deploy outside the window, then ")
        text.append("y", style="bold reverse")
        text.append("; esc cancels.")
        return unlead(text)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_answer(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        if yes and self.plan.converge and not self.plan.entries and not self.plan.queued:
            self.notify("No host is behind: nothing to converge.", title="Converge")
            return
        if yes and self.window_warning and not self.window_acknowledged:
            self.app.bell()
            self.notify("Outside the maintenance windows: press o first to deploy anyway.", title=self._verb,
                        severity="warning")
            return
        self.dismiss(yes)

    def action_override_window(self) -> None:
        if not self.window_warning or self.window_acknowledged:
            return
        self.window_acknowledged = True
        warning = self.query_one("#window-warning", Static)
        warning.add_class("-acknowledged")
        warning.update(self._warning_text())
        yes = self.query_one("#yes", Button)
        yes.disabled = False
        yes.label = f"{self._verb} outside the window (y)"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "override_window":
            return bool(self.window_warning) and not self.window_acknowledged
        return True
