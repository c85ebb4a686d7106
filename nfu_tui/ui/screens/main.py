"""The main screen: header, fleet grid pane, update-PR pane, status line, footer.

Narrow terminals (< 140 columns) show one pane at a time (``tab`` switches); wide ones
show both side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Static

from nfu_tui.ui import copy
from nfu_tui.ui.messages import ServiceUpdate
from nfu_tui.ui.spans import unlead
from nfu_tui.ui.widgets.footer import KeyFooter
from nfu_tui.ui.widgets.header import StatusHeader, StatusLine, automation_text
from nfu_tui.ui.widgets.host_grid import HostGrid, HostSettings
from nfu_tui.ui.widgets.pr_panel import PRDetail, PRList

if TYPE_CHECKING:
    from nfu_tui.ui.app import NfuApp

WIDE = 140


class FilterInput(Input):
    """The ``/`` filter; ``esc`` clears it and returns to the grid.

    Reopening it selects the current text (typing starts a new filter; ``end`` keeps it).
    """

    BINDINGS = [Binding("escape", "cancel", "Clear filter", id="filter.cancel")]

    def action_cancel(self) -> None:
        self.value = ""
        self.post_message(self.Submitted(self, ""))


class MainScreen(Screen):
    """Fleet grid and PR panel."""

    app: NfuApp

    BINDINGS = [
        Binding("tab", "next_pane", "Pane", tooltip="Next pane: fleet → PR list → PR detail", id="main.next-pane"),
        Binding("shift+tab", "next_pane(-1)", "Previous pane", show=False, id="main.prev-pane"),
        Binding("slash", "filter", "Filter", tooltip="Filter hosts by name, location or state", id="main.filter"),
        Binding("m", "merge_deploy", "Merge & Deploy", tooltip="Plan a merge & deploy of the focused PR", id="main.merge-deploy"),
        Binding(
            "c", "converge", "Converge", show=False,
            tooltip="Bring every host behind the default branch (or the selected ones) to its head: no merge; "
                    "shows the plan first",
            id="main.converge",
        ),
        Binding(
            "v", "preview", "Preview", show=False,
            tooltip="Build the focused PR on the hosts (or the selected ones) without activating it: package "
                    "changes (security fixes first), closure size, reboot needed, build failures (ssh backend)",
            id="main.preview",
        ),
        Binding("D", "show_deploy", "Deploy view", show=False, tooltip="Show the current/last deploy", id="main.deploy-view"),
        copy.copy_binding("main.copy"),
    ]

    def compose(self) -> ComposeResult:
        clock = self.app.clock
        yield StatusHeader(clock, self.app.automation_status, id="header")
        with Horizontal(id="panes"):
            with Vertical(id="fleet-pane", classes="pane"):
                yield Static(id="fleet-title", classes="pane-title")
                yield HostGrid(clock=clock, progress=self.app.host_progress, id="grid")
                yield FilterInput(placeholder="filter: name, location, online/offline, held, lock:outdated …", id="filter")
            with Vertical(id="pr-pane", classes="pane"):
                yield Static(id="pr-title", classes="pane-title")
                yield PRList(clock, id="pr-list")
                yield PRDetail(clock, id="pr-detail")
        yield StatusLine(id="status-line")

    @property
    def grid(self) -> HostGrid:
        return self.query_one(HostGrid)

    def on_mount(self) -> None:
        self.call_after_refresh(self._add_footer)
        self.app.service_updated.subscribe(self, self.apply_update)
        self.set_interval(1.0, self._tick)
        self.apply_update(ServiceUpdate(all_hosts=True, prs=True, status=True))
        self.grid.focus()

    async def _add_footer(self) -> None:
        """The footer (one widget per key) costs ~0.1 s to style: it comes after the first frame."""
        await self.mount(KeyFooter())
        self.refresh_bindings()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= WIDE, "-wide")
        self._titles()

    def _tick(self) -> None:
        self.query_one(StatusHeader).tick()
        if self.app.automation.on or self.app.automation.error:
            self._status_line()  # the countdown

    # --- service updates ------------------------------------------------------

    def apply_update(self, update: ServiceUpdate) -> None:
        service = self.app.shown
        if service is None:
            self.query_one(StatusHeader).show(None)
            return
        grid = self.grid
        if update.all_hosts:
            hosts = service.hosts()
            grid.set_settings({h.id: self._settings(h.id) for h in hosts})
            grid.set_hosts(hosts)
        elif update.hosts:
            changed, removed = [], []
            for host_id in update.hosts:
                host = service.host(host_id)
                if host is None:
                    removed.append(host_id)
                else:
                    changed.append(host)
            if any(grid.host(h.id) is None for h in changed):  # a new host: (re)read every host's settings
                grid.set_settings({h.id: self._settings(h.id) for h in service.hosts()})
            grid.update_hosts(changed, removed)
        held = service.held()
        if held != set(grid.held):
            grid.set_held(held)
        if update.prs or update.all_hosts:
            self._show_prs()
        if update.prs or update.status or update.automation:
            self._status_line()
        if update.status or update.automation:
            self.query_one(StatusHeader).show(service.status)
        status = service.status
        if update.status and status is not None:
            grid.backend = status.backend
            if status.unreachable_since != grid.unreachable_since:
                grid.set_unreachable(status.unreachable_since)
        if update.fleet or update.prs or update.status:
            self._titles()

    def _settings(self, host_id: str) -> HostSettings:
        cfg = self.app.shown.host_config(host_id)
        return HostSettings(canary=cfg.canary, priority=cfg.priority, auto_update=cfg.auto_update)

    def _show_prs(self) -> None:
        service = self.app.shown
        states = list(service.prs)
        pr_list = self.query_one(PRList)
        pr_list.show(states)
        self._show_detail(pr_list.focused_number)
        pending = service.pending_update()
        headline = service.update_headline() if pending is not None else None
        self.grid.set_pending(pending is not None, f"Update PR pending: {headline}" if headline else "")

    def _status_line(self) -> None:
        """Automation's next action while it is on; else the pending update PR, or what keeps GitHub from telling us."""
        service = self.app.shown
        pending = service.pending_update()
        headline = service.update_headline() if pending is not None else None
        detail = ""
        status = service.status
        if status is not None and status.github in ("error", "rate-limited") and status.github_detail:
            detail = f"GitHub: {service.status.github_detail}"
        hint = self.app.converge_hint()
        if hint:
            detail = f"{hint} · {detail}" if detail else hint
        auto = automation_text(self.app.automation, self.app.clock())
        self.query_one(StatusLine).show(headline, pending.pr.number if pending else None, detail, auto)

    def _show_detail(self, number: int | None) -> None:
        service = self.app.shown
        state = next((s for s in service.prs if s.pr.number == number), None) if service else None
        self.query_one(PRDetail).show(state)

    def _titles(self) -> None:
        grid = self.grid
        wide = self.has_class("-wide")
        service = self.app.shown
        stale = self._stale_notes(service)
        n_prs = len(service.prs) if service else 0
        online = grid.shown_online
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append(" Fleet ", style="bold")
        shown = grid.shown_count
        count = f"{shown}/{grid.total}" if grid.host_filter.active else f"{grid.total}"
        if grid.unreachable_since is not None:
            since = grid.unreachable_since.astimezone().strftime("%H:%M")
            title.append(f"{count} hosts · ", style="dim")
            title.append(f"{self.app.backend.label} unreachable since {since}: states unknown", style="bold yellow")
        else:
            title.append(f"{count} hosts · {online} online", style="dim")
        if grid.selected:
            title.append(f" · {len(grid.selected)} selected", style="bold")
        held = len(grid.held)
        if held:
            title.append(f" · {held} held", style="yellow")
        title.append(f" · sort {grid.sort_mode.value}", style="dim")
        if grid.host_filter.active:
            title.append(f" · filter: {self.query_one(FilterInput).value}", style="italic")
        if stale[0]:
            title.append(f" · {stale[0]}", style="bold yellow")
        if not wide:
            title.append(f"  [tab] PRs ({n_prs})", style="dim")
        self.query_one("#fleet-title", Static).update(unlead(title))
        pr_title = Text(no_wrap=True, overflow="ellipsis")
        pr_title.append(" Update PRs ", style="bold")
        pr_title.append(f"{n_prs} open", style="dim")
        if stale[1]:
            pr_title.append(f" · {stale[1]}", style="bold yellow")
        if not wide:
            pr_title.append("  [tab] next · fleet", style="dim")
        self.query_one("#pr-title", Static).update(unlead(pr_title))

    def _stale_notes(self, shown: Any) -> tuple[str, str]:
        """"last seen 12:03 · connecting…" for cached hosts and PRs ("" for live ones)."""
        from nfu_tui.core.fleetcache import CachedView, seen_label

        if not isinstance(shown, CachedView):
            return "", ""
        now = self.app.clock()
        hosts = prs = ""
        if not shown.hosts_live and shown.cache.hosts:
            status = shown.status
            state = "connecting…" if status is None or status.fleet == "connecting" else status.fleet.replace("-", " ")
            hosts = f"last seen {seen_label(shown.cache.hosts_at, now)} · {state}"
        if not shown.prs_live and shown.cache.prs:
            prs = f"last polled {seen_label(shown.cache.prs_at, now)}"
        return hosts, prs

    # --- grid and PR events ---------------------------------------------------

    @on(HostGrid.ViewChanged)
    @on(HostGrid.SelectionChanged)
    def _grid_changed(self) -> None:
        box = self.query_one(FilterInput)
        if not self.grid.host_filter.active and box.value and not box.has_focus:  # cleared in the grid (esc)
            box.value = ""
            box.remove_class("-visible")
        self._titles()

    @on(HostGrid.Opened)
    def _open_host(self, event: HostGrid.Opened) -> None:
        from nfu_tui.ui.screens.host_detail import HostDetailScreen

        self.app.push_screen(HostDetailScreen(event.host_id))

    @on(HostGrid.HoldRequested)
    def _hold(self, event: HostGrid.HoldRequested) -> None:
        self.app.set_hold(list(event.host_ids), event.held)

    @on(HostGrid.RollbackRequested)
    def _rollback(self, event: HostGrid.RollbackRequested) -> None:
        self.app.request_host_rollback(event.host_id)

    @on(PRList.Focused)
    def _pr_focused(self, event: PRList.Focused) -> None:
        self._show_detail(event.number)

    # --- panes ----------------------------------------------------------------

    def _pane_order(self) -> list[Widget]:
        return [self.grid, self.query_one(PRList), self.query_one(PRDetail)]

    def show_pane(self, name: str) -> None:
        """Make ``fleet`` or ``prs`` the visible pane (narrow layout)."""
        self.set_class(name == "prs", "-show-prs")

    def action_next_pane(self, step: int = 1) -> None:
        order = self._pane_order()
        focused = self.focused
        index = next((i for i, w in enumerate(order) if focused is w or (focused and w in focused.ancestors)), -1)
        target = order[(index + step) % len(order)]
        self.show_pane("fleet" if target is self.grid else "prs")
        target.focus()

    def on_descendant_focus(self, event: Any) -> None:
        widget = event.widget
        if isinstance(widget, (PRList, PRDetail)):
            self.show_pane("prs")
        elif isinstance(widget, (HostGrid, FilterInput)):
            self.show_pane("fleet")

    def focus_pr(self, number: int) -> bool:
        """Focus an update PR in the list (switching to the PR pane)."""
        pr_list = self.query_one(PRList)
        if not pr_list.focus_number(number):
            return False
        self.show_pane("prs")
        pr_list.focus()
        return True

    # --- filter -------------------------------------------------------------

    def action_filter(self) -> None:
        self.show_pane("fleet")
        box = self.query_one(FilterInput)
        box.add_class("-visible")
        self.set_focus(box)  # synchronously: keys typed right after "/" go to the box

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.grid.set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        box = self.query_one(FilterInput)
        if not event.value:
            box.remove_class("-visible")
            self.grid.set_filter("")
        self.grid.focus()

    # --- actions --------------------------------------------------------------

    def action_merge_deploy(self) -> None:
        service = self.app.service
        if service is None:
            return
        if self.app.cache is not None and not self.app.shown.prs_live:
            self.app.notify("The update PRs shown are from the last session; wait for the first GitHub poll.",
                            title="Not polled yet", severity="warning")
            return
        number = self.query_one(PRList).focused_number
        if number is None:
            pending = service.pending_update()
            number = pending.pr.number if pending else None
        if number is None:
            self.app.notify("There is no open update PR to deploy. c converges the hosts behind the default branch.",
                            title="Nothing to deploy", severity="warning")
            return
        targets = sorted(self.grid.selected) or None
        self.app.plan_deploy(number, targets)

    def action_preview(self) -> None:
        from nfu_tui.ui.screens.preview import PreviewScreen

        service = self.app.service
        if service is None:
            return
        if not service.config.uses_ssh:
            self.app.notify('A preview needs fleet.backend = "ssh": the dashboard cannot build without activating.',
                            title="Preview", severity="warning")
            return
        number = self.query_one(PRList).focused_number
        state = service.pr_state(number) if number is not None else service.pending_update()
        if state is None:
            self.app.notify("There is no open update PR to preview.", title="Preview", severity="warning")
            return
        hosts = sorted(self.grid.selected) or sorted(service.config.hosts)
        self.app.push_screen(PreviewScreen(service, state.pr, hosts))

    def action_converge(self) -> None:
        self.app.plan_converge(sorted(self.grid.selected) or None)

    def action_show_deploy(self) -> None:
        self.app.show_deploy()

    def action_copy(self) -> None:
        """The focused PR's URL, or the host under the cursor's errors and last output lines."""
        service = self.app.service
        if isinstance(self.focused, (PRList, PRDetail)):
            copy.copy(self.app, copy.pr_url(service, self.query_one(PRList).focused_number), "No PR to copy.")
        else:
            host = self.grid.cursor_host
            copy.copy(self.app, copy.host_error_lines(service, host),
                      f"{host}: no errors and no output to copy." if host else "No host to copy.")
