"""Pilot tests of the TUI on the real FleetService against the simulator (127.0.0.1).

The fake GitHub + fake dashboard run in a background thread (shared by the tests that
leave the simulated fleet as they found it; the others start their own). Each test
builds the service from the config the simulator writes and drives the app with keys.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core.service import FleetService
from nfu_tui.core.state import AppState
from nfu_tui.sim.runner import SimulatorThread
from nfu_tui.sim.testing import fast_scenario
from nfu_tui.ui.app import NfuApp
from nfu_tui.ui.screens.confirm import DeployConfirmScreen
from nfu_tui.ui.screens.deploy import DeployScreen
from nfu_tui.ui.screens.help import HelpScreen
from nfu_tui.ui.screens.host_detail import HostDetailScreen
from nfu_tui.ui.screens.main import MainScreen
from nfu_tui.ui.widgets.header import StatusHeader
from nfu_tui.ui.widgets.host_grid import HostGrid
from nfu_tui.ui.widgets.log_view import HostLog
from nfu_tui.ui.widgets.pr_panel import PRDetail, PRList

SIZE = (120, 40)
ONLINE = ["csb0", "csb1", "gpc0", "hsb0", "hsb1", "imac0", "mba-mbp-work", "mbp-work", "nixbook", "web-01", "workstation"]


@pytest.fixture(scope="module")
def shared() -> Iterator[SimulatorThread]:
    """A simulator in its own thread: ``shared.sim`` is it, ``shared.call`` runs hooks on its loop."""
    runner = SimulatorThread(fast_scenario(heartbeat_seconds=0.5))
    with runner:
        yield runner


def make_app(sim: Any, tmp_path: Path, *, animations: str = "none", **overrides: Any) -> NfuApp:
    cfg = load_config(sim.write_config(tmp_path / "cfg", **overrides))
    service = FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False))
    app = NfuApp(service, flush_interval=0.02)
    app.animation_level = animations  # textual read TEXTUAL_ANIMATIONS at import time
    return app


async def wait_for(pilot: Any, predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    """Let the app run until ``predicate()`` holds (fails the test after ``timeout``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def grid(app: NfuApp) -> HostGrid:
    return app.screen_stack[0].query_one(HostGrid)


async def fleet_ready(pilot: Any) -> HostGrid:
    await wait_for(pilot, lambda: grid(pilot.app).total == 12, "the fleet")
    return grid(pilot.app)


async def prs_ready(pilot: Any) -> None:
    service = pilot.app.service
    await wait_for(pilot, lambda: service.prs and service.prs[0].explanation is not None, "the explained PR")
    await pilot.pause(0.1)


async def test_hold_and_unhold_are_shown_persisted_and_audited(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        assert g.cursor_host == "csb0" and g.has_focus
        await pilot.press("h")
        await wait_for(pilot, lambda: "HOLD" in (g.row_text("csb0") or ""), "the HOLD badge")
        assert app.service.held() == {"csb0"}
        assert AppState.load().held == {"csb0"}  # persisted in the app state file
        entry = app.service.store.audit_entries(1)[0]
        assert (entry.action, entry.details["hosts"]) == ("hold", ["csb0"])
        await pilot.press("h")
        await wait_for(pilot, lambda: "HOLD" not in (g.row_text("csb0") or ""), "the badge to go")
        assert app.service.held() == set() and app.service.store.audit_entries(1)[0].action == "unhold"
        # selected hosts are held together
        await pilot.press("space", "space", "h")
        await wait_for(pilot, lambda: app.service.held() == {"csb0", "csb1"}, "both holds")
        await wait_for(pilot, lambda: "2 held" in app.screen.query_one("#fleet-title").content.plain, "the title")


async def test_filter_by_name_state_and_location(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        await pilot.press("slash", *"hsb")
        assert g.visible_ids == ["hsb0", "hsb1", "hsb8"]
        assert "3/12 hosts" in app.screen.query_one("#fleet-title").content.plain
        await pilot.press("enter")  # keep the filter, back to the grid
        assert g.has_focus and g.visible_ids == ["hsb0", "hsb1", "hsb8"]
        await pilot.press("slash", "end", "space", *"!offline")  # "hsb !offline": AND, negation
        assert g.visible_ids == ["hsb0", "hsb1"]
        await pilot.press("escape")  # esc in the box clears the filter
        assert len(g.visible_ids) == 12 and g.has_focus
        await pilot.press("slash", *"hsb", "enter", "slash", *"cloud", "enter")  # a new "/" starts afresh
        assert g.visible_ids == ["csb0", "csb1", "web-01"]
        await pilot.press("escape")  # esc in the grid: no selection, so it clears the filter
        assert len(g.visible_ids) == 12


async def test_selection_space_all_online_and_escape(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        await pilot.press("space")
        assert g.selected == {"csb0"} and g.cursor_host == "csb1"
        assert (g.row_text("csb0") or "").startswith(" ◆")
        await pilot.press("a")
        assert sorted(g.selected) == ONLINE  # hsb8 is offline
        assert "11 selected" in app.screen.query_one("#fleet-title").content.plain
        await pilot.press("escape")
        assert g.selected == frozenset()


async def test_pr_focus_shows_the_explained_pr_and_the_pending_update(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        g = await fleet_ready(pilot)
        await prs_ready(pilot)
        main = app.screen
        assert isinstance(main, MainScreen)
        # narrow: one pane at a time; tab goes to the PR list
        await pilot.press("tab")
        pr_list = main.query_one(PRList)
        assert pr_list.has_focus and main.has_class("-show-prs")
        assert pr_list.focused_number == 42
        detail = main.query_one(PRDetail).query_one("#pr-body").content
        console_text = _render(detail)
        assert "#42 flake.lock: Update" in console_text
        assert "https://github.com/alice/nixcfg/pull/42" in console_text
        assert "Lock diff" in console_text and "• Updated input 'nixpkgs':" in console_text
        assert "commits over 7 days" in console_text
        status = main.query_one("#status-line").content.plain
        assert "Update PR pending: nixpkgs" in status and "#42" in status
        assert "⇡" in (g.row_text("gpc0") or "")  # every host's Lock shows the pending update
        await pilot.press("tab")
        assert main.query_one(PRDetail).has_focus
        await pilot.press("tab")
        assert g.has_focus and not main.has_class("-show-prs")


@pytest.mark.parametrize("animations", ["full", "none"])
async def test_pending_lock_pulses_only_when_animations_are_on(shared, tmp_path, animations):
    app = make_app(shared.sim, tmp_path, animations=animations)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        await prs_ready(pilot)
        seen: set[bool] = set()
        for _ in range(30):  # the pulse flips every 0.8 s
            seen.add(g.has_class("-glow"))
            await pilot.pause(0.1)
        assert seen == ({True, False} if animations == "full" else {False})
        assert "⇡" in (g.row_text("csb0") or "")  # the glyph says it either way


async def test_live_update_of_a_host_from_the_dashboard_stream(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        assert "● online" in g.row_text("gpc0")
        shared.call(shared.sim.dashboard.set_online, "gpc0", False)
        await wait_for(pilot, lambda: "○" in (g.row_text("gpc0") or ""), "gpc0 to go offline")
        assert "10 online" in app.screen.query_one("#fleet-title").content.plain
        shared.call(shared.sim.dashboard.set_online, "gpc0", True)  # the agent registers again
        await wait_for(pilot, lambda: "● online" in (g.row_text("gpc0") or ""), "gpc0 back online")


async def test_dashboard_disconnect_and_reconnect_show_in_the_header(sim, tmp_path):
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await fleet_ready(pilot)
        header = app.screen.query_one(StatusHeader)
        await wait_for(pilot, lambda: "dashboard ● live" in header.content.plain, "live")
        sim.dashboard.restart_dashboard()  # drops every browser connection
        await wait_for(pilot, lambda: "dashboard ⟳ reconnecting…" in header.content.plain, "reconnecting")
        await wait_for(pilot, lambda: "dashboard ● live" in header.content.plain, "live again")


async def test_help_lists_every_binding_and_closes(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await fleet_ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = _render(app.screen.query_one("#help-body Static").content)
        for needle in ("Merge & Deploy", "Filter", "Hold", "Select", "Command palette", "Cancel", "All logs", "⇡"):
            assert needle in text
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_enter_opens_the_host_detail(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        g.move_to("hsb0")
        await pilot.press("enter")
        assert isinstance(app.screen, HostDetailScreen) and app.screen.host_id == "hsb0"
        summary = app.screen.query_one("#host-summary").content.plain
        assert summary.startswith("hsb0") and "● online" in summary
        table = _render(app.screen.query_one("#host-compartments").content)
        for name in ("Agent", "Git", "Lock", "System", "Tests"):
            assert name in table
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_merge_and_deploy_runs_through_the_confirmation_and_the_deploy_screen(sim, tmp_path):
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        await prs_ready(pilot)
        for host in ("gpc0", "hsb0"):
            g.move_to(host)
            await pilot.press("space")
        await pilot.press("m")
        assert isinstance(app.screen, DeployConfirmScreen)
        plan_text = _render(app.screen.query_one("#plan").content)
        assert "gpc0" in plan_text and "hsb0" in plan_text
        assert "not selected" in plan_text and "web-01" in plan_text
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), "the deploy screen")
        view = app.deploy_view
        await wait_for(pilot, lambda: view.finished, "the deploy to finish", timeout=60)
        assert view.succeeded, view.headline
        assert [view.rows[h].state for h in view.order] == ["ok", "ok"]
        assert sim.github.request_count("/repos/alice/nixcfg/pulls/42/merge") >= 1
        log = app.screen.query_one(HostLog)
        assert log.line_count > 0  # the last host's output streamed in
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


def _render(renderable: Any, width: int = 100) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text()
