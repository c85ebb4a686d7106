"""``y``: copy what is under the cursor, over SSH too (OSC 52 via ``App.copy_to_clipboard``).

The screens that bind ``y`` (main, host detail, deploy, history, a history run) pick what
their cursor points at in ``action_copy`` with the helpers here; :func:`copy` copies it and
tells what was copied in a toast. ``y`` is "yes" in confirmation dialogs, which are modal
screens of their own, so it never reaches these screens while a dialog is open.

The terminal must allow OSC 52 (most do; tmux needs ``set -g set-clipboard on``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.binding import Binding
from textual.markup import escape

from nfu_tui.models import COMPARTMENTS, CompartmentState

if TYPE_CHECKING:
    from textual.app import App

    from nfu_tui.ui.widgets.log_view import HostLog

ERROR_LINES = 20  # a host's last output lines copied with its errors


def copy_binding(binding_id: str) -> Binding:
    return Binding("y", "copy", "Copy", show=False, id=binding_id,
                   tooltip="Copy what is under the cursor (OSC 52)")


Target = tuple[str, str]  # (text, what it is: for the toast)


def copy(app: App[Any], target: Target | None, nothing: str = "Nothing to copy here.") -> None:
    """Copy ``target`` and say what was copied; a warning toast when there is nothing."""
    if target is None or not target[0]:
        app.notify(nothing, title="Copy", severity="warning")
        return
    text, what = target
    app.copy_to_clipboard(text)
    app.notify(escape(what), title="Copied")


def pr_url(service: Any, number: int | None) -> Target | None:
    state = service.pr_state(number) if service is not None and number is not None else None
    if state is None:
        return None
    return state.pr.html_url, f"PR #{number}'s URL"


def host_error_lines(service: Any, host_id: str | None) -> Target | None:
    """The host's compartments in error or unreachable (with their messages) and its last output lines."""
    host = service.host(host_id) if service is not None and host_id else None
    if host is None:
        return None
    lines = [f"{host.name} {name}: {host.compartment(name).message or 'error'}" for name in COMPARTMENTS
             if host.compartment(name).state in (CompartmentState.ERROR, CompartmentState.UNREACHABLE)]
    lines += service.output_lines(host.id)[-ERROR_LINES:]
    if not lines:
        return None
    return "\n".join(lines), f"{host.name}: {_lines(len(lines))} (errors and last output)"


def outcome_lines(host: str, detail: str, last_lines: tuple[str, ...]) -> Target | None:
    """A deploy row's failure: its detail and the last lines the engine kept."""
    lines = [line for line in (detail, *last_lines) if line]
    if not lines:
        return None
    return "\n".join(lines), f"{host}: {_lines(len(lines))} (last error lines)"


def log_line(log: HostLog, where: str) -> Target | None:
    """The line at the bottom of the log's view (the newest while it follows)."""
    if log.line_count == 0:
        return None
    index = min(log.line_count - 1, int(log.scroll_y) + max(1, log.scrollable_content_region.height) - 1)
    return log.lines[index], f"a log line of {where}"


def merge_commit(run_id: int, merge_sha: str | None) -> Target | None:
    if not merge_sha:
        return None
    return merge_sha, f"merge commit {merge_sha[:12]} of run #{run_id}"


def _lines(n: int) -> str:
    return "1 line" if n == 1 else f"{n} lines"


__all__ = ["copy", "copy_binding", "host_error_lines", "log_line", "merge_commit", "outcome_lines", "pr_url"]
