"""At start-up: a deploy run the journal says was interrupted — resume, abandon or later."""

from __future__ import annotations

from typing import Any, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

Choice = Literal["resume", "abandon", "later"]


def run_text(run: Any) -> Text:
    """What the journal knows: PR, head, merge, hosts done, when and by whom."""
    text = Text()
    text.append(f"Deploy run #{run.id} of PR #{run.pr} did not finish", style="bold")
    text.append(f" (started {run.created_at.astimezone():%Y-%m-%d %H:%M} by {run.actor}, {run.trigger}).\n\n")
    text.append("Merge: ", style="bold")
    text.append(f"done as {run.merge_sha[:7]}\n" if run.merge_sha else "not recorded as done\n")
    done = dict(run.host_outcomes)
    planned = [e["host"] for e in (run.plan.get("entries") or [])] + [e["host"] for e in (run.plan.get("queued") or [])]
    text.append("Hosts: ", style="bold")
    text.append(f"{len(done)} of {len(planned)} finished")
    if done:
        text.append(" (" + ", ".join(f"{h} {o}" for h, o in sorted(done.items())) + ")", style="dim")
    text.append("\n\n")
    text.append(
        "Resume continues with the hosts not yet done — never merging twice, never re-running a "
        "finished host. Abandon marks the run as abandoned and changes nothing on GitHub or the hosts.",
        style="dim",
    )
    return text


class ResumeScreen(ModalScreen[Choice]):
    """``r`` resume, ``a`` abandon, ``esc`` decide later (the run stays unfinished)."""

    BINDINGS = [
        Binding("r", "choose('resume')", "Resume", id="resume.resume"),
        Binding("a", "choose('abandon')", "Abandon", id="resume.abandon"),
        Binding("escape", "choose('later')", "Later", id="resume.later"),
    ]

    DEFAULT_CSS = """
    ResumeScreen { align: center middle; }
    ResumeScreen > Vertical {
        width: 76; max-width: 96%; height: auto; max-height: 90%;
        border: thick $warning; background: $surface; padding: 1 2;
        border-title-align: center;
    }
    ResumeScreen Horizontal { height: auto; margin-top: 1; align-horizontal: right; }
    ResumeScreen Button { margin-left: 2; }
    """

    def __init__(self, run: Any) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = "Unfinished deploy"
        with box:
            yield Static(run_text(self.run), id="run")
            with Horizontal():
                yield Button("Resume (r)", variant="warning", id="resume")
                yield Button("Abandon (a)", id="abandon")
                yield Button("Later (esc)", id="later")

    def on_mount(self) -> None:
        self.query_one("#later", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)  # type: ignore[arg-type]

    def action_choose(self, choice: Choice) -> None:
        self.dismiss(choice)
