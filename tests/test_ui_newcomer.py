"""A newcomer's trial (issue 13): keys that never get lost (bursts of scroll keys), the grid's
keys in every table and list, the dialog's keys in the footer, help at the current screen, a
palette of actions; and text and layout that never get in the way.

A "burst" posts all key events at once, without waiting between them (as a fast typist or
a held key does): each must count.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual import events
from textual.command import CommandPalette

from nfu_tui.ui.screens.confirm import DeployConfirmScreen
from nfu_tui.ui.screens.deploy import DeployScreen
from nfu_tui.ui.screens.help import HelpScreen
from nfu_tui.ui.screens.main import FilterInput, MainScreen
from nfu_tui.ui.screens.resume import ResumeScreen
from nfu_tui.ui.widgets.log_view import HostLog
from nfu_tui.ui.widgets.pr_panel import PRDetail
from nfu_tui.ui.widgets.scrolling import KeyTable, Scroller
from nfu_tui.sim.testing import fast_scenario
from test_ui_app import (  # noqa: F401
    footer_keys, fleet_ready, interrupted_run, make_app, prs_ready, shared, start_deploy, wait_for,
)

NARROW = (80, 24)


async def burst(pilot: Any, key: str, n: int = 10) -> None:
    """Post ``n`` presses of ``key`` in one go (no pause between them), then let the app catch up."""
    app = pilot.app
    char = key if len(key) == 1 else None
    for _ in range(n):
        app.post_message(events.Key(key, char))
    while not app._message_queue.empty():  # every press handled (however slow the machine)
        await asyncio.sleep(0.02)
    await pilot.pause(0.1)



async def test_a_burst_of_j_scrolls_the_pr_detail_line_by_line(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        await fleet_ready(pilot)
        await prs_ready(pilot)
        await pilot.press("tab", "tab")
        detail = app.screen.query_one(PRDetail)
        assert detail.has_focus and detail.max_scroll_y > 12
        await burst(pilot, "j")
        assert detail.scroll_y == 10
        await burst(pilot, "k", 3)
        assert detail.scroll_y == 7
        await burst(pilot, "G", 1)
        assert detail.scroll_y == detail.max_scroll_y
        await burst(pilot, "g", 1)
        assert detail.scroll_y == 0
        await burst(pilot, "pagedown", 2)
        assert detail.scroll_y == min(detail.max_scroll_y, 2 * (detail.scrollable_content_region.height - 1))


async def test_the_plan_dialog_scrolls_every_key_at_80x24(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        await fleet_ready(pilot)
        await prs_ready(pilot)
        await pilot.press("m")
        assert isinstance(app.screen, DeployConfirmScreen)
        await pilot.pause(0.1)
        plan = app.screen.query_one(Scroller)
        assert plan.has_focus and plan.max_scroll_y >= 6
        await burst(pilot, "j", 6)
        assert plan.scroll_y == 6
        await burst(pilot, "k", 4)
        assert plan.scroll_y == 2
        await burst(pilot, "home", 1)
        assert plan.scroll_y == 0
        await burst(pilot, "pagedown", 1)
        assert plan.scroll_y == min(plan.max_scroll_y, plan.scrollable_content_region.height - 1) > 0
        await burst(pilot, "end", 1)
        assert plan.scroll_y == plan.max_scroll_y
        # the footer shows the dialog's keys, not the grid's
        await wait_for(pilot, lambda: {"Merge & Deploy", "Cancel"} <= footer_keys(app.screen), "the plan's keys")
        assert "Filter" not in footer_keys(app.screen)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_help_opens_at_the_current_screens_section_and_scrolls_every_key(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        await fleet_ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await wait_for(pilot, lambda: app.screen.query("#help-main-screen") and app.screen.query_one(Scroller).scroll_y
                       == app.screen.query_one("#help-main-screen").virtual_region.y > 0, "help at this screen's section")
        body = app.screen.query_one(Scroller)
        await wait_for(pilot, lambda: "Close" in footer_keys(app.screen), "the help's keys")
        start = body.scroll_y
        await burst(pilot, "j")
        assert body.scroll_y == start + 10
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_the_deploy_tables_cursor_takes_the_grids_keys(sim, tmp_path):
    app = make_app(sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        await start_deploy(pilot, [])
        table = app.screen.query_one(KeyTable)
        assert isinstance(app.screen, DeployScreen) and table.has_focus and table.row_count >= 11
        await burst(pilot, "j")
        assert table.cursor_row == 10
        await burst(pilot, "k", 4)
        assert table.cursor_row == 6
        await burst(pilot, "G", 1)
        assert table.cursor_row == table.row_count - 1
        await burst(pilot, "g", 1)
        assert table.cursor_row == 0
        await burst(pilot, "end", 1)
        assert table.cursor_row == table.row_count - 1
        await burst(pilot, "home", 1)
        assert table.cursor_row == 0
        app.cancel_deploy()
        await wait_for(pilot, lambda: app.deploy_view.finished, "the cancelled run to end", timeout=60)


async def test_a_burst_of_k_in_a_log_scrolls_line_by_line(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        await fleet_ready(pilot)
        await pilot.press("enter")
        log = app.screen.query_one(HostLog)
        log.show_lines([f"line {i}" for i in range(100)])
        log.focus()
        await pilot.pause(0.1)
        end = log.scroll_y
        assert end == log.max_scroll_y > 20
        await burst(pilot, "k")
        assert log.scroll_y == end - 10 and not log.following
        await burst(pilot, "G", 1)
        assert log.scroll_y == log.max_scroll_y and log.following


async def test_the_filter_box_is_emptied_when_the_filter_is_cleared(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        g = await fleet_ready(pilot)
        await pilot.press("slash", *"hsb !hsb8", "enter")
        assert g.visible_ids == ["hsb0", "hsb1"]
        await pilot.press("a", "escape", "escape")  # the selection, then the filter
        assert len(g.visible_ids) == 12
        box = app.screen.query_one(FilterInput)
        assert box.value == "" and not box.has_class("-visible")
        assert "filter:" not in app.screen.query_one("#fleet-title").content.plain


def _palette_titles(app: Any) -> list[str]:
    options = app.screen.query_one("CommandList")
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def test_the_palette_lists_the_products_actions_once(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await fleet_ready(pilot)
        await prs_ready(pilot)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette) and _palette_titles(app), "the palette")
        await pilot.pause(0.3)
        titles = _palette_titles(app)
        assert len(titles) == len(set(titles)), titles
        for noise in ("Up", "Down", "Scroll Left", "Page down", "First host", "Show deploy"):
            assert not any(t.split("\n")[0] == noise for t in titles), (noise, titles)
        first_lines = {t.split("\n")[0] for t in titles}
        for wanted in ("Merge & Deploy", "Converge", "Deploy view", "Hold", "Roll back", "History", "Refresh", "Help",
                       "Quit", "Keys", "Theme"):
            assert wanted in first_lines, (wanted, first_lines)


async def test_queued_hosts_stop_waiting_from_the_footer_and_the_run_ends_paused(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(speed=400.0))
    app = make_app(sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        view = await start_deploy(pilot, [])
        screen = app.screen
        await wait_for(pilot, lambda: view.stage == "waiting-queued", "only the queued host left", timeout=120)
        stage = screen.query_one("#deploy-stage")
        await wait_for(pilot, lambda: "waiting for queued offline hosts" in stage.content.plain, "the waiting stage")
        # Wrapped, not cut (the stage's height follows its new text at the next layout: wait for it).
        await wait_for(pilot, lambda: stage.content.cell_len <= stage.size.width * stage.size.height,
                       "the waiting stage wrapped over its lines")
        await wait_for(pilot, lambda: "Stop waiting" in footer_keys(screen), "w in the footer")
        await pilot.press("w")
        await wait_for(pilot, lambda: view.finished, "the run to end waiting")
        await wait_for(pilot, lambda: stage.content.plain.startswith("◌ paused"), "the paused stage")
        text = stage.content.plain
        assert text.startswith("◌ paused") and "finished" not in text and "1 queued" in text
        await wait_for(pilot, lambda: "Stop waiting" not in footer_keys(screen), "w gone from the footer")


async def test_the_deploy_tables_detail_takes_the_remaining_width(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(speed=400.0))
    sim.dashboard.set_fault("gpc0", "pull_fails")
    app = make_app(sim, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await start_deploy(pilot, ["gpc0"])
        await wait_for(pilot, lambda: view.finished, "the failed run")
        table = app.screen.query_one(KeyTable)
        await wait_for(pilot, lambda: [c.get_render_width(table) for c in table.columns.values()][-1] > 30,
                       "the detail column widened")
        widths = [c.get_render_width(table) for c in table.columns.values()]
        assert widths[-1] > 30 and sum(widths) == table.scrollable_content_region.width  # was cut to 14


async def test_no_toast_covers_the_failure_panel_at_80x24(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(speed=400.0))
    sim.dashboard.set_fault("gpc0", "switch_fails")
    app = make_app(sim, tmp_path)
    async with app.run_test(size=NARROW, notifications=True) as pilot:
        view = await start_deploy(pilot, ["gpc0"])
        await wait_for(pilot, lambda: view.finished, "the failed run")
        await pilot.pause(0.5)  # the run's last events arrive after its result
        assert app.screen.has_class("-failed") and "Next steps" in app.screen.query_one("#failure-text").content.plain
        toasts = [n.message for n in app._notifications]
        assert not any("failed" in message for message in toasts), toasts  # the panel says it, uncovered


async def test_host_detail_agrees_with_the_grid_about_the_pending_update(shared, tmp_path):
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        g = await fleet_ready(pilot)
        await prs_ready(pilot)
        assert "⇡" in (g.row_text("csb0") or "")
        await pilot.press("enter")
        table = _render(app.screen.query_one("#host-compartments").content)
        lock = next(line for line in table.splitlines() if line.startswith("Lock"))
        assert "⇡ pending" in lock and "PR #42" in lock and "is current" not in lock


async def test_host_detail_reads_the_dashboards_log_after_a_restart(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(speed=400.0))
    app = make_app(sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        view = await start_deploy(pilot, ["gpc0"])
        await wait_for(pilot, lambda: view.finished, "the deploy")
        streamed = app.service.output_lines("gpc0")
        assert streamed
    app = make_app(sim, tmp_path / "restarted")  # a new process: nothing streamed yet
    async with app.run_test(size=NARROW) as pilot:
        g = await fleet_ready(pilot)
        g.move_to("gpc0")
        await pilot.press("enter")
        log = app.screen.query_one(HostLog)
        await wait_for(pilot, lambda: log.line_count > 0, "the dashboard's log")
        assert any(streamed[-1] in line for line in log.lines)  # log lines carry a [HH:MM:SS] stamp
        assert "from the dashboard's log" in app.screen.query_one("#host-output-title").content.plain


def _render(renderable: Any, width: int = 100) -> str:
    from io import StringIO

    from rich.console import Console

    console = Console(width=width, file=StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_start_banner_names_the_pr_once_and_keeps_the_m_hint_at_80_columns():
    from nfu_tui.ui.widgets.header import status_line_text

    line = status_line_text("PR #42 flake.lock: Update", 42)  # before the PR is explained
    assert line.plain.count("#42") == 1
    narrow = _render(status_line_text("nixpkgs abc1234 → def5678, 180 commits over 7 days " * 2, 42), 80)
    assert "m merge & deploy #42" in narrow.splitlines()[0][:80]  # the key first: a narrow line cuts the headline


async def test_the_palette_offers_an_unfinished_run_and_dialogs_show_their_keys(shared, tmp_path):
    run_id = interrupted_run(shared.sim, ["gpc0"])
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=NARROW) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen), "the resume dialog")
        await wait_for(pilot, lambda: {"Resume", "Abandon", "Later"} <= footer_keys(app.screen), "the dialog's keys")
        await pilot.press("escape")  # later
        await pilot.press("ctrl+p", *"resume")
        wanted = f"Resume run #{run_id} (PR #42)"
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette)
                       and any(wanted in t for t in _palette_titles(app)), "the resume command")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen), "the resume dialog again")
        await pilot.press("a")  # abandon: the shared simulator is left as it was
        await wait_for(pilot, lambda: app.service.store.get_run(run_id).status == "abandoned", "the run abandoned")
        await pilot.press("A")  # a plain yes/no dialog shows its own keys too
        await wait_for(pilot, lambda: {"Turn on", "Cancel"} <= footer_keys(app.screen), "the dialog's own keys")
        assert "Filter" not in footer_keys(app.screen)
        await pilot.press("n")
    assert shared.sim.github.request_count("/repos/alice/nixcfg/pulls/42/merge") == 0
