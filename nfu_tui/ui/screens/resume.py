"""At start-up: a run the journal says was interrupted — resume, abandon or later.

Deploy runs, rollbacks after a failure (``revert``) and per-host rollbacks are offered;
the dialog says what the journal knows, so the admin decides with the facts.
"""

from __future__ import annotations

from typing import Any, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

from nfu_tui.backends.base import NIXFLEET, BackendInfo
from nfu_tui.ui.spans import unlead

Choice = Literal["resume", "abandon", "later"]

KIND_TITLES = {"deploy": "Deploy", "converge": "Converge", "revert": "Rollback", "rollback": "Host rollback"}


def _waiting_for(run: Any) -> tuple[str, ...]:
    """Offline hosts a deploy run ended up waiting for (its last ``waiting`` step, if still current)."""
    hosts: tuple[str, ...] = ()
    for step in run.steps or ():
        if step.step == "waiting":
            hosts = tuple(str(h) for h in step.data.get("hosts") or ())
        elif step.step in ("resumed", "host_started"):
            hosts = ()
    return hosts


def _deploy_facts(run: Any, text: Text, backend: BackendInfo) -> None:
    if run.kind == "converge":
        text.append("Target: ", style="bold")
        text.append(f"{run.plan.get('branch') or 'the default branch'}'s head {(run.head_sha or '')[:7]} (no merge)\n")
    else:
        text.append("Merge: ", style="bold")
        text.append(f"done as {run.merge_sha[:7]}\n" if run.merge_sha else "not recorded as done\n")
    done = dict(run.host_outcomes)
    planned = [e["host"] for e in (run.plan.get("entries") or [])] + [e["host"] for e in (run.plan.get("queued") or [])]
    text.append("Hosts: ", style="bold")
    text.append(f"{len(done)} of {len(planned)} finished")
    if done:
        text.append(" (" + ", ".join(f"{h} {o}" for h, o in sorted(done.items())) + ")", style="dim")
    flying = run.hosts_in_flight if run.steps is not None else {}
    if flying:
        text.append("\nIn flight: ", style="bold")
        text.append(", ".join(f"{h} ({phase})" if phase else h for h, phase in sorted(flying.items())))
        text.append(f" — resume follows its command on {backend.noun}", style="dim")
    waiting = _waiting_for(run)
    if waiting:
        text.append("\nWaiting for offline hosts: ", style="bold")
        text.append(", ".join(waiting))


def _revert_facts(run: Any, text: Text) -> None:
    from nfu_tui.core.rollback import RevertJournal

    j = RevertJournal.from_run(run)
    text.append("Strategy: ", style="bold")
    text.append(f"{j.strategy} after the failed run #{j.failed_run}\n")
    text.append("Revert PR: ", style="bold")
    text.append(f"#{j.revert_pr}" if j.revert_pr else "not opened yet")
    text.append(f", merged as {j.merge_sha[:7]}\n" if j.merge_sha else (", merge requested\n" if j.merge_requested else "\n"))
    text.append("Redeploy: ", style="bold")
    if j.redeploy_run is not None:
        text.append(f"run #{j.redeploy_run}")
    elif j.redeploy_requested:
        text.append("requested")
    else:
        text.append(f"not started ({', '.join(j.hosts) or 'no host'} to redeploy)")


def _host_rollback_facts(run: Any, text: Text, backend: BackendInfo) -> None:
    hosts = ", ".join(run.plan.get("hosts") or ()) or "?"
    dispatched = any(s.step == "command_dispatched" for s in run.steps or ())
    text.append("Host: ", style="bold")
    text.append(hosts + "\n")
    text.append(f"{backend.title}: ", style="bold")
    text.append("the rollback op was sent; resume follows it (never sends it twice)" if dispatched
                else "the rollback op may not have been sent; resume checks the host and never sends it twice")


def run_text(run: Any, backend: BackendInfo = NIXFLEET) -> Text:
    """What the journal knows: what, when and by whom, how far it got, what resume/abandon do."""
    text = Text()
    kind = KIND_TITLES.get(run.kind, run.kind.capitalize())
    about = f" of PR #{run.pr}" if run.pr else ""
    text.append(f"{kind} run #{run.id}{about} did not finish", style="bold")
    text.append(f" (started {run.created_at.astimezone():%Y-%m-%d %H:%M} by {run.actor}, {run.trigger}).\n\n")
    if run.kind == "revert":
        _revert_facts(run, text)
        resume = "Resume continues from the last journaled step — never opening or merging a revert twice."
    elif run.kind == "rollback":
        _host_rollback_facts(run, text, backend)
        resume = "Resume follows the rollback to its outcome."
    else:
        _deploy_facts(run, text, backend)
        resume = ("Resume continues with the hosts not yet done — never merging twice, never re-running a "
                  "finished host.")
    text.append("\n\n")
    text.append(resume + " Abandon marks the run as abandoned and changes nothing on GitHub or the hosts.",
                style="dim")
    return unlead(text)


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

    # Focused by Textual once the buttons exist; a key pressed before that (a fast esc) cannot fail.
    AUTO_FOCUS = "#later"

    def __init__(self, run: Any) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = f"Unfinished {KIND_TITLES.get(self.run.kind, self.run.kind).lower()} run"
        with box:
            yield Static(run_text(self.run, self.app.backend), id="run")
            with Horizontal():
                yield Button("Resume (r)", variant="warning", id="resume")
                yield Button("Abandon (a)", id="abandon")
                yield Button("Later (esc)", id="later")
        yield Footer()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)  # type: ignore[arg-type]

    def action_choose(self, choice: Choice) -> None:
        self.dismiss(choice)
