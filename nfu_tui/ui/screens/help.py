"""``?``: every key binding, grouped by where it works, and the grid's legend."""

from __future__ import annotations

import re
from collections.abc import Mapping

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from nfu_tui.ui.fleetview import LEGEND
from nfu_tui.ui.widgets.scrolling import SCROLL_BINDINGS, Scroller

_KEY_NAMES = {
    "question_mark": "?",
    "slash": "/",
    "escape": "esc",
    "space": "space",
    "enter": "enter",
    "pagedown": "pgdn",
    "pageup": "pgup",
    "shift+tab": "shift+tab",
}


def key_label(keys: str) -> str:
    """``j,down`` → ``j/↓``-style label for the help table."""
    out = []
    for key in keys.split(","):
        key = key.strip()
        key = {"down": "↓", "up": "↑", "left": "←", "right": "→"}.get(key, _KEY_NAMES.get(key, key))
        out.append(key)
    return "/".join(out)


def binding_sections() -> list[tuple[str, list[Binding]]]:
    """Every binding of the app, grouped by where it applies (imported lazily: screens import this)."""
    from nfu_tui.ui.app import NfuApp
    from nfu_tui.ui.screens.confirm import DeployConfirmScreen
    from nfu_tui.ui.screens.deploy import DeployScreen
    from nfu_tui.ui.screens.history import HistoryScreen
    from nfu_tui.ui.screens.host_detail import HostDetailScreen
    from nfu_tui.ui.screens.main import MainScreen
    from nfu_tui.ui.screens.resume import ResumeScreen
    from nfu_tui.ui.widgets.host_grid import HostGrid
    from nfu_tui.ui.widgets.log_view import HostLog

    palette = Binding("ctrl+p", "command_palette", "Command palette", tooltip="Search every action, PR and host")
    return [
        ("Everywhere", [*NfuApp.BINDINGS, palette, Binding("escape", "back", "Back / close", tooltip="Close a dialog or go back")]),
        ("Main screen", list(MainScreen.BINDINGS)),
        ("Fleet grid", list(HostGrid.BINDINGS)),
        ("Host detail", list(HostDetailScreen.BINDINGS)),
        ("Deploy", list(DeployScreen.BINDINGS)),
        ("Deploy plan", list(DeployConfirmScreen.BINDINGS)),
        ("Resume dialog", list(ResumeScreen.BINDINGS)),
        ("History", [*HistoryScreen.BINDINGS, Binding("enter", "open", "Open run", tooltip="Lock diff, plan, host outcomes, timeline")]),
        ("Logs, lists and panes", [*HostLog.BINDINGS, *SCROLL_BINDINGS]),
    ]


KEY_WIDTH = 14


def section_table(title: str, bindings: list[Binding], keymap: Mapping[str, str] | None = None) -> Table:
    """One section of the help: its title, then each action once with its keys and what it does;
    ``keymap`` (the config's ``[keys]``) replaces the default keys shown."""
    keymap = keymap or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True, width=KEY_WIDTH)
    table.add_column()
    table.add_row(Text(title, style="bold underline"), "")
    seen: set[str] = set()
    for b in bindings:
        if b.action in seen or not b.description:
            continue
        seen.add(b.action)
        desc = Text(b.description)
        if b.tooltip and b.tooltip != b.description:
            desc.append(f" — {b.tooltip}", style="dim")
        keys = keymap.get(b.id) if b.id else None
        table.add_row(Text(key_label(keys) if keys else b.key_display or key_label(b.key)), desc)
    return table


def legend_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True, width=KEY_WIDTH)
    table.add_column()
    table.add_row(Text("Legend", style="bold underline"), Text("compartments: Agent · Git · Lock · System · Tests", style="dim"))
    for glyph, name, meaning in LEGEND:
        table.add_row(Text(glyph), Text(f"{name} — {meaning}"))
    table.add_row("", "")
    table.add_row(Text("Filter", style="bold underline"), "")
    table.add_row(Text("/"), Text("terms AND-ed; !term negates; name, location, type, or"))
    table.add_row(Text(""), Text("online offline held canary selected busy no-auto ok outdated error working unknown"))
    table.add_row(Text(""), Text("compartment:state, e.g. lock:outdated"))
    return table


SCREEN_SECTIONS = {
    "MainScreen": "Main screen",
    "HostDetailScreen": "Host detail",
    "DeployScreen": "Deploy",
    "DeployConfirmScreen": "Deploy plan",
    "ResumeScreen": "Resume dialog",
    "HistoryScreen": "History",
    "RunDetailScreen": "History",
}
"""The section ``?`` opens at, by the name of the screen it was pressed on."""


def section_id(title: str) -> str:
    return "help-" + "-".join(re.findall(r"[a-z0-9]+", title.lower()))


class HelpScreen(ModalScreen[None]):
    """The help overlay (``esc``, ``q`` or ``?`` closes it), opened at ``section``'s keys."""

    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help.close"),
    ]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Scroller {
        width: 100; max-width: 96%; height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
        border-title-align: center;
    }
    HelpScreen .help-section { margin-bottom: 1; }
    """

    def __init__(self, section: str | None = None) -> None:
        super().__init__()
        self.section = section

    def compose(self) -> ComposeResult:
        with Scroller(id="help-body") as scroll:
            scroll.border_title = "nfu-tui — keys (esc to close)"
            for title, bindings in binding_sections():
                yield Static(section_table(title, bindings, getattr(self.app, "keymap", None)), id=section_id(title),
                             classes="help-section")
            yield Static(legend_table(), id="help-legend")
        yield Footer()

    def on_mount(self) -> None:
        scroll = self.query_one(Scroller)
        scroll.focus()
        if self.section:
            target = self.query_one(f"#{section_id(self.section)}")
            self.call_after_refresh(scroll.scroll_to_widget, target, animate=False, top=True)
