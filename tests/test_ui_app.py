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
from textual.widgets import Footer
from textual.widgets.data_table import ColumnKey

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core.plan import DeployPlan, PlanEntry
from nfu_tui.core.service import FleetService
from nfu_tui.core.state import AppState
from nfu_tui.core.store import Store
from nfu_tui.domain.totp import totp
from nfu_tui.sim.runner import SimulatorThread
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario
from nfu_tui.ui import fleetview as fv
from nfu_tui.ui.app import NfuApp
from nfu_tui.ui.screens.confirm import ConfirmScreen, DeployConfirmScreen
from nfu_tui.ui.screens.deploy import DeployScreen
from nfu_tui.ui.screens.help import HelpScreen
from nfu_tui.ui.screens.host_detail import HostDetailScreen
from nfu_tui.ui.screens.login import LoginScreen
from nfu_tui.ui.screens.main import MainScreen
from nfu_tui.ui.screens.resume import ResumeScreen
from nfu_tui.ui.widgets.header import StatusHeader
from nfu_tui.ui.widgets.host_grid import HostGrid
from nfu_tui.ui.widgets.log_view import HostLog
from nfu_tui.ui.widgets.pr_panel import PRDetail, PRList
from nfu_tui.ui.widgets.scrolling import KeyTable

SIZE = (120, 40)
ONLINE = ["csb0", "csb1", "gpc0", "hsb0", "hsb1", "imac0", "mba-mbp-work", "mbp-work", "nixbook", "web-01", "workstation"]


@pytest.fixture(scope="module")
def shared() -> Iterator[SimulatorThread]:
    """A simulator in its own thread: ``shared.sim`` is it, ``shared.call`` runs hooks on its loop."""
    runner = SimulatorThread(fast_scenario(heartbeat_seconds=5.0))
    with runner:
        yield runner


def make_app(
    sim: Any, tmp_path: Path, *, animations: str = "none", ask_login: bool = False, **overrides: Any
) -> NfuApp:
    path = sim.write_config(tmp_path / "cfg", **overrides)
    if ask_login:  # a config without the dashboard password (and TOTP secret): the app must ask
        text = "\n".join(
            line for line in path.read_text().splitlines() if not line.startswith(("password_file", "totp_secret_file"))
        )
        path.write_text(text + "\n")
    cfg = load_config(path)
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


async def fleet_ready(pilot: Any, hosts: int = 12) -> HostGrid:
    """Wait for the grid to show the fleet (``hosts`` of them: the default scenario has 12)."""
    await wait_for(pilot, lambda: grid(pilot.app).total == hosts, "the fleet")
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
        await pilot.press("slash", "escape")  # esc in the box clears the filter
        assert len(g.visible_ids) == 12 and g.has_focus
        await pilot.press("slash", *"hsb", "enter", "slash", *"cl", "enter")  # a new "/" starts afresh
        assert g.visible_ids == ["csb0", "csb1", "web-01"]  # location "cloud"
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
        assert "⇡" in (g.row_text("csb0") or "")  # the glyph says it with or without the pulse
        seen: set[bool] = set()
        if animations == "full":
            await wait_for(pilot, lambda: seen.add(g.has_class("-glow")) or seen == {True, False}, "a pulse")
            await pilot.hover(HostGrid, offset=(fv.cell_x(g.columns, "lock") + 1, 1))  # csb0's Lock cell
            tooltip = str(g.tooltip)
            assert tooltip.startswith("Lock: ok — flake.lock is current") and "Update PR pending: nixpkgs" in tooltip
        else:
            for _ in range(10):  # longer than one pulse period (0.8 s)
                seen.add(g.has_class("-glow"))
                await pilot.pause(0.1)
            assert seen == {False}


async def test_live_update_of_a_host_from_the_dashboard_stream(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    dashboard = shared.sim.dashboard
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        assert "● online" in g.row_text("gpc0")
        shared.call(dashboard.set_online, "gpc0", False)
        await wait_for(pilot, lambda: "○" in (g.row_text("gpc0") or ""), "gpc0 to go offline")
        assert "10 online" in app.screen.query_one("#fleet-title").content.plain
        shared.call(dashboard.set_online, "gpc0", True)  # the agent registers again
        await wait_for(pilot, lambda: "● online" in (g.row_text("gpc0") or ""), "gpc0 back online")
        lock = fv.cell_x(g.columns, "lock")
        shared.call(dashboard.fleet.drop_lock_hash)  # version.json without lockHash: Lock turns red
        try:
            await wait_for(pilot, lambda: (g.row_text("gpc0") or "")[lock : lock + 3] == " ✗ ", "a red Lock")
        finally:
            shared.call(dashboard.remote_changed)
        await wait_for(pilot, lambda: (g.row_text("gpc0") or "")[lock : lock + 3] != " ✗ ", "the Lock to recover")


async def test_dashboard_disconnect_and_reconnect_show_in_the_header(sim, tmp_path):
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await fleet_ready(pilot)
        header = app.screen.query_one(StatusHeader)
        await wait_for(pilot, lambda: "dashboard ● live" in header.content.plain, "live")
        sim.dashboard.restart_dashboard()  # drops every browser connection
        await wait_for(pilot, lambda: "dashboard ⟳ reconnecting…" in header.content.plain, "reconnecting")
        await wait_for(pilot, lambda: "dashboard ● live" in header.content.plain, "live again")


async def test_github_rate_limit_shows_in_the_header_after_a_refresh(sim, tmp_path):
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await fleet_ready(pilot)
        await prs_ready(pilot)
        header = app.screen.query_one(StatusHeader)
        await wait_for(pilot, lambda: "GitHub ✓ 4," in header.content.plain, "the rate budget")
        sim.github.faults.exhaust(reset_in=600)
        await pilot.press("r")  # poll now
        await wait_for(pilot, lambda: "GitHub ⧗ rate-limited" in header.content.plain, "the rate-limit state")
        assert "rate" in str(header.tooltip).lower()


async def test_help_lists_every_binding_and_closes(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await fleet_ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = "".join(_render(static.content) for static in app.screen.query("#help-body Static"))
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


HOSTILE = [
    "\x1b[31mred\x1b[0m \x1b]0;pwned title\x07 \x1b]52;c;ZWNobyBoaQ==\x07 plain",
    "[bold]not bold[/bold] [/nix/store/abc-foo] [link=https://evil]x[/link]",
    "progress 10%\rprogress 100%",
]


async def test_host_output_streams_live_and_hostile_lines_stay_inert(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        g.move_to("gpc0")
        await pilot.press("enter")
        log = app.screen.query_one(HostLog)
        fleet = shared.sim.dashboard.fleet
        for line in HOSTILE:
            shared.call(fleet.agent_output, fleet.hosts["gpc0"].agent, line)
        await wait_for(pilot, lambda: any("[/nix/store/abc-foo]" in line for line in log.lines), "the lines")
        shown = list(log.lines[-3:])
        assert shown[0].endswith("red   plain") and "pwned" not in shown[0]
        assert shown[1] == "[bold]not bold[/bold] [/nix/store/abc-foo] [link=https://evil]x[/link]"
        assert shown[2] == "progress 100%"
        assert not any(ch in "".join(shown) for ch in "\x1b\x07\r")
        await pilot.pause(0.1)
        painted = [log.render_line(y).text for y in range(log.size.height)]
        assert any("[bold]not bold[/bold] [/nix/store/abc-foo]" in text for text in painted)  # literal on screen


async def test_login_screen_asks_for_the_password_the_config_lacks(shared, tmp_path):
    app = make_app(shared.sim, tmp_path, ask_login=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen), "the login screen")
        await pilot.press(*"wrong", "enter")
        error = app.screen.query_one("#login-error")
        await wait_for(pilot, lambda: "Logging in" not in error.content.plain and error.content.plain, "an error")
        assert isinstance(app.screen, LoginScreen) and app.screen.query_one("#password").value == ""
        await pilot.press(*shared.sim.scenario.password, "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the login screen to close")
        await fleet_ready(pilot)
        header = app.screen.query_one(StatusHeader)
        await wait_for(pilot, lambda: "dashboard ● live" in header.content.plain, "live")


async def test_login_asks_for_a_totp_code_when_the_dashboard_wants_one(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(totp_secret="JBSWY3DPEHPK3PXP"))
    app = make_app(sim, tmp_path, ask_login=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen), "the login screen")
        login = app.screen
        await pilot.press(*sim.scenario.password, "enter")
        await wait_for(pilot, lambda: login.has_class("-totp"), "the TOTP field")
        assert "TOTP" in login.query_one("#login-error").content.plain
        assert login.query_one("#totp").has_focus
        await pilot.press(*totp(sim.scenario.totp_secret), "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the login screen to close")
        await fleet_ready(pilot)


async def test_palette_runs_actions_and_finds_hosts(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        await pilot.press("ctrl+p", *"by stat")
        await wait_for(pilot, lambda: _palette_has(app, "Sort hosts by status"), "the palette hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: g.sort_mode.value == "status", "the new sort order")
        assert g.visible_ids[0] == "hsb8"  # offline sorts before the healthy hosts
        await pilot.press("ctrl+p", *"web")
        await wait_for(pilot, lambda: _palette_has(app, "Host web-01"), "the host hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: g.cursor_host == "web-01", "the cursor on web-01")
        await pilot.press("ctrl+p", *"hold")  # binding-derived commands act on the focused widget
        await wait_for(pilot, lambda: _palette_has(app, "Hold"), "the Hold command")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.service.held() == {"web-01"}, "web-01 held")


async def start_deploy(pilot: Any, hosts: list[str], *, fleet: int = 12) -> Any:
    """Once the fleet (``fleet`` hosts) and the PR are there: select ``hosts``, press m, confirm with y;
    returns the app's DeployView."""
    app = pilot.app
    g = await fleet_ready(pilot, fleet)
    await prs_ready(pilot)
    for host in hosts:
        g.move_to(host)
        await pilot.press("space")
    await pilot.press("m")
    assert isinstance(app.screen, DeployConfirmScreen)
    await pilot.press("y")
    await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), "the deploy screen")
    return app.deploy_view


async def test_merge_and_deploy_through_the_plan_to_a_failure_panel_with_per_host_logs(sim, tmp_path):
    sim.dashboard.set_fault("hsb0", "switch_fails")
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        g = await fleet_ready(pilot)
        await prs_ready(pilot)
        for host in ("gpc0", "hsb0", "csb0"):
            g.move_to(host)
            await pilot.press("space")
        await pilot.press("m")
        assert isinstance(app.screen, DeployConfirmScreen)
        plan = _render(app.screen.query_one("#plan").content)
        assert plan.index("1. gpc0") < plan.index("2. hsb0") < plan.index("3. csb0")
        assert "not selected: " in plan and "web-01" in plan
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), "the deploy screen")
        view = app.deploy_view
        await wait_for(pilot, lambda: view.finished, "the deploy to finish", timeout=60)
        assert sim.github.request_count("/repos/alice/nixcfg/pulls/42/merge") == 1
        assert view.succeeded is False
        assert {h: view.rows[h].state for h in view.order} == {"gpc0": "ok", "hsb0": "failed", "csb0": "skipped"}
        screen = app.screen
        await pilot.pause(0.1)
        assert screen.has_class("-failed")
        panel = _render(screen.query_one("#failure-text").content)
        assert "✗ hsb0 failed in switch" in panel and "Last lines of hsb0" in panel
        assert "(rollback strategy: revert-commit)" in panel and " b  roll back now: revert PR #42" in panel
        log = screen.query_one(HostLog)
        assert log.line_count > 0  # the auto-followed host's output
        await pilot.press("i")  # every host interleaved
        assert "Output: all hosts" in screen.query_one("#log-title").content.plain
        assert any(line.startswith("gpc0 │ ") for line in log.lines)
        assert any(line.startswith("hsb0 │ ") for line in log.lines)
        screen.query_one("DataTable").move_cursor(row=0)
        await pilot.press("enter")  # gpc0's own log
        assert screen.query_one("#log-title").content.plain.startswith(" Output: gpc0")
        assert log.lines and not any(line.startswith("gpc0 │ ") for line in log.lines)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_cancel_asks_first_then_stops_the_run(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(speed=20.0))
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        view = await start_deploy(pilot, ["gpc0", "hsb0", "csb0"])
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen) and not view.cancel_requested  # asks first
        await pilot.press("y")
        await wait_for(pilot, lambda: view.finished, "the run to end", timeout=60)
        assert view.result.status.value == "cancelled"
        assert view.rows["csb0"].state in ("cancelled", "skipped")  # never started
        stage = app.screen.query_one("#deploy-stage")  # re-rendered by the update that follows the result
        await wait_for(pilot, lambda: "✗ finished" in stage.content.plain, "the finished stage")


def interrupted_run(sim: Any, hosts: list[str]) -> int:
    """Journal a deploy run of PR #42 as a crashed process leaves it (nothing done yet)."""
    plan = DeployPlan(
        pr_number=42, head_sha=sim.github.pr_head(42), strategy="all", max_parallel=1, canary_wait_minutes=0,
        entries=tuple(PlanEntry(h, wave=1) for h in hosts),
    )
    with Store() as store:
        return store.create_run("deploy", actor="alice@box", trigger="manual", pr=42, head_sha=plan.head_sha,
                                plan=plan.to_dict())


async def test_an_interrupted_run_is_offered_for_resume_at_start(sim, tmp_path):
    run_id = interrupted_run(sim, ["gpc0"])
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.query("#run"), "the resume dialog")
        text = _render(app.screen.query_one("#run").content)
        assert f"Deploy run #{run_id} of PR #42 did not finish" in text and "0 of 1 finished" in text
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), "the deploy screen")
        view = app.deploy_view
        assert view.run_id == run_id
        await wait_for(pilot, lambda: view.finished, "the resumed run to finish", timeout=60)
        assert view.succeeded and view.rows["gpc0"].state == "ok"
    with Store() as store:
        assert store.get_run(run_id).status == "succeeded"


async def test_an_interrupted_run_can_be_abandoned(shared, tmp_path):
    run_id = interrupted_run(shared.sim, ["gpc0", "hsb0"])
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.query("#run"), "the resume dialog")
        await pilot.press("a")
        store = app.service.store
        await wait_for(pilot, lambda: store.get_run(run_id).status == "abandoned", "the run abandoned")
        assert isinstance(app.screen, MainScreen) and app.deploy_view is None
        assert store.audit_entries(1)[0].action == "abandon"
    assert shared.sim.github.request_count("/repos/alice/nixcfg/pulls/42/merge") == 0


def _palette_has(app: NfuApp, title: str) -> bool:
    from textual.command import CommandPalette

    screen = app.screen
    if not isinstance(screen, CommandPalette):
        return False
    options = screen.query_one("CommandList")
    return any(title in str(options.get_option_at_index(i).prompt) for i in range(options.option_count))


def _render(renderable: Any, width: int = 100) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def footer_keys(screen: Any) -> set[str]:
    """The descriptions of the keys in the screen's footer (shown or cut off)."""
    return {key.description for key in screen.query_one(Footer).query("FooterKey")}


def shows_key(screen: Any, description: str) -> bool:
    """The footer key ``description`` is there and wholly on screen (not cut off on the right)."""
    key = next((key for key in screen.query("FooterKey") if key.description == description), None)
    return key is not None and key.region.width > 0 and key.region.right <= screen.size.width


async def test_help_key_is_visible_at_80x24_on_every_main_screen(sim_factory, tmp_path):
    """The app's ``? Help`` came last in the footer, after the focused pane's keys: 80 columns cut it off."""
    sim = await sim_factory(fast_scenario(speed=20.0))
    app = make_app(sim, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await fleet_ready(pilot)
        await prs_ready(pilot)
        main = app.screen
        for pane in ("the fleet grid", "the PR list", "the PR detail"):
            await wait_for(pilot, lambda: shows_key(main, "Help"), f"? Help with {pane} focused")
            await pilot.press("tab")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HostDetailScreen), "the host detail")
        await wait_for(pilot, lambda: shows_key(app.screen, "Help"), "? Help on the host detail")
        await pilot.press("escape", "H")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", "the history")
        await wait_for(pilot, lambda: shows_key(app.screen, "Help"), "? Help on the history")
        await pilot.press("escape")
        view = await start_deploy(pilot, ["gpc0"])
        await wait_for(pilot, lambda: shows_key(app.screen, "Help"), "? Help on the deploy screen")
        await wait_for(pilot, lambda: view.finished, "the deploy", timeout=60)
        await wait_for(pilot, lambda: shows_key(app.screen, "Help"), "? Help on the finished deploy")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)


async def test_the_deploy_tables_detail_keeps_a_sensible_width(sim_factory, tmp_path):
    """80×24, 100×30 and 120×40 (log beside the table): the Detail column is never squeezed to a sliver
    nor pushed off the table; a long host name gives up width first (ellipsis), the progress bar too."""
    long_name = "build-server-with-a-long-name"
    hosts = [HostSpec("gpc0", "gaming"), HostSpec(long_name, "server"), HostSpec("hsb0", "server", online=False)]
    sim = await sim_factory(fast_scenario(hosts=hosts, speed=100.0))
    app = make_app(sim, tmp_path, hosts={"gpc0": {"canary": True}},
                   flake_updates={"automation": {"canary_wait_minutes": 0}})
    async with app.run_test(size=(80, 24)) as pilot:
        await start_deploy(pilot, [], fleet=3)
        screen = app.screen
        table = screen.query_one(KeyTable)
        view = app.deploy_view
        await wait_for(pilot, lambda: view.stage == "waiting-queued", "the online hosts deployed", timeout=60)
        for size, wide in (((80, 24), False), ((100, 30), False), ((120, 40), True)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.3)
            detail = table.columns[ColumnKey("detail")]
            assert screen.has_class("-wide") is wide
            assert detail.width >= 20, (size, detail.width)  # it was 14 at 80 columns, pushed off at 120
            assert table.virtual_size.width <= table.scrollable_content_region.width, size  # nothing cut off
            cells = [table.get_cell(host, "detail").plain for host in ("gpc0", "hsb0")]
            assert all(cells), cells  # e.g. hsb0's "offline; deployed when it comes back online"
            host = table.columns[ColumnKey("host")]
            assert host.width < len(long_name)  # a name this long is what gives way
            painted = "\n".join(strip.text for strip in table.render_lines(table.region.reset_offset))
            assert "build-serve…" in painted and "queued" in painted, painted
