"""Command palette (``ctrl+p``): the product's actions bound on the calling screen (a
binding with a tooltip is an action; cursor and scroll keys have none), plus the
automation toggle (titled by its state), resuming an unfinished run, sort modes,
update PRs and hosts by name. Textual's own commands are kept to theme, keys and quit
(:meth:`NfuApp.get_system_commands`).

Titles are shown as plain :class:`~textual.content.Content` and help texts are escaped:
PR titles and host names come from outside and may contain ``[`` … ``]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.fuzzy import Matcher
from textual.markup import escape

Command = tuple[str, str, Callable[[], Any]]
"""(title, help, callback)"""


def _highlight(matcher: Matcher, title: str) -> Content:
    """Like ``Matcher.highlight`` but without parsing ``title`` as markup."""
    content = Content(title)
    _score, offsets = matcher.fuzzy_search.match(matcher.query, title)
    for offset in offsets:
        if not title[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content


class FleetCommands(Provider):
    """Actions of the focused screen (from its bindings) and fleet-specific commands."""

    SKIPPED = ("command_palette", "toggle_automation", "quit")
    """Actions listed otherwise: the palette itself, automation (titled by its state), Textual's Quit."""

    def _binding_commands(self) -> Iterator[Command]:
        seen: set[str] = set()
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if not binding.description or not binding.tooltip or binding.system or binding.action in seen:
                continue
            if binding.action in self.SKIPPED:
                continue
            seen.add(binding.action)
            title = binding.description
            key = binding.key_display or self.app.get_key_display(binding)
            help_text = f"{binding.tooltip or title} ({key})"
            yield title, help_text, partial(self.app.run_action, binding.action, active.node)

    def _extra_commands(self) -> Iterator[Command]:
        from nfu_tui.ui.fleetview import SortMode
        from nfu_tui.ui.screens.main import MainScreen

        screen = self.screen
        app: Any = self.app
        service = app.service
        if service is not None and app.runner is not None:
            on = service.automation_enabled()
            yield (
                "Turn automation off" if on else "Turn automation on",
                "Automation merges and deploys update PRs by itself (A; turning it on asks first)",
                app.action_toggle_automation,
            )
        if service is not None and app.runner is not None and not app.deploy_running:
            for run in service.unfinished_runs():
                what = f"PR #{run.pr}" if run.pr else run.kind
                yield (f"Resume run #{run.id} ({what})", "An unfinished run from the journal: resume or abandon it",
                       partial(app.offer_resume, run))
        if not isinstance(screen, MainScreen):
            return
        for mode in SortMode:
            yield f"Sort hosts by {mode.value}", "Change the fleet grid order", partial(setattr, screen.grid, "sort_mode", mode)
        if service is None:
            return
        if service.status.fleet == "login-required":
            yield "Log in to the dashboard", "The dashboard waits for a password or TOTP code", app.show_login
        for state in service.prs:
            pr = state.pr
            yield f"PR #{pr.number}: {pr.title}", "Focus this update PR", partial(screen.focus_pr, pr.number)
        for host in service.hosts():
            yield f"Host {host.name}", f"{host.device_type}/{host.location} — show in the grid", partial(
                self._goto_host, host.id
            )

    def _goto_host(self, host_id: str) -> None:
        screen: Any = self.screen
        screen.show_pane("fleet")
        grid = screen.grid
        if not grid.move_to(host_id):
            screen.query_one("#filter").value = ""
            grid.set_filter("")
            grid.move_to(host_id)
        grid.focus()

    def _commands(self) -> list[Command]:
        return [*self._binding_commands(), *self._extra_commands()]

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            if not title.startswith("Host "):
                yield DiscoveryHit(Content(title), callback, text=title, help=escape(help_text))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, _highlight(matcher, title), callback, text=title, help=escape(help_text))
