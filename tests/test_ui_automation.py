"""Pilot tests of automation, windows, rollback and unfinished runs in the TUI, on the real
FleetService against the simulator (127.0.0.1).

Module-shared simulator for the tests that leave the simulated fleet and GitHub as they found
them; the others start their own (``sim``/``sim_factory``).
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core.service import FleetService
from nfu_tui.core.state import AppState
from nfu_tui.core.store import Store
from nfu_tui.sim.runner import SimulatorThread
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario
from nfu_tui.ui.app import NfuApp
from nfu_tui.ui.screens.confirm import ConfirmScreen, DeployConfirmScreen
from nfu_tui.ui.screens.deploy import DeployScreen
from nfu_tui.ui.screens.history import HistoryScreen
from nfu_tui.ui.screens.main import MainScreen
from nfu_tui.ui.screens.resume import ResumeScreen
from nfu_tui.ui.widgets.header import StatusHeader, StatusLine
from nfu_tui.ui.widgets.host_grid import HostGrid

SIZE = (120, 40)
SMALL = [HostSpec("gpc0", "gaming", "home"), HostSpec("hsb0", "server", "home"), HostSpec("csb0", "server", "cloud")]
WEDNESDAY = datetime(2026, 8, 12, 14, 0, tzinfo=timezone.utc)
SATURDAY_3AM = datetime(2026, 8, 15, 3, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def shared() -> Iterator[SimulatorThread]:
    runner = SimulatorThread(fast_scenario(heartbeat_seconds=5.0))
    with runner:
        yield runner


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_app(sim: Any, tmp_path: Path, *, clock: Callable[[], datetime] | None = None, **overrides: Any) -> NfuApp:
    """The app on a FleetService for ``sim``; ``overrides`` are config tables. The default flush
    interval: Pilot's keys wait for an idle app, which a faster flush under streaming output delays."""
    cfg = load_config(sim.write_config(tmp_path / "cfg", **overrides))
    service = FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False))
    app = NfuApp(service, **({"clock": clock} if clock else {}))
    app.animation_level = "none"
    return app


async def wait_for(pilot: Any, predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def ready(pilot: Any, hosts: int = 12, *, explained: bool = False) -> HostGrid:
    """The fleet is shown and the update PR listed (``explained``: with CI and lock diff, ~1.5 s more)."""
    app = pilot.app
    grid = app.screen_stack[0].query_one(HostGrid)
    await wait_for(pilot, lambda: grid.total == hosts and app.runner is not None, "the fleet")
    await wait_for(pilot, lambda: app.service.prs and (app.service.prs[0].explanation is not None or not explained),
                   "the PR")
    return grid


def plain(renderable: Any) -> str:
    console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def header(app: NfuApp) -> str:
    return app.screen.query_one(StatusHeader).content.plain


def merges(sim: Any, number: int) -> int:
    return sim.github.request_count(f"/repos/alice/nixcfg/pulls/{number}/merge")


async def test_automation_toggle_asks_first_counts_down_and_is_audited(shared, tmp_path):
    app = make_app(shared.sim, tmp_path, flake_updates={"automation": {"delay_minutes": 1440.5}})
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, explained=True)
        await wait_for(pilot, lambda: "auto off" in header(app), "the automation badge")
        store = app.service.store
        await pilot.press("A")
        assert isinstance(app.screen, ConfirmScreen)  # turning it on asks first
        question = plain(app.screen.query_one("Static").content)
        assert "Turn full automation on?" in question and "1440.5 min old" in question
        assert "rollback strategy revert-commit" in question
        assert "except held and no-auto ones" in question  # auto_update = false hosts are left out too
        assert "Nothing is due now. First: merging PR #42 in " in question
        await pilot.press("n")
        assert isinstance(app.screen, MainScreen) and not app.service.automation_enabled()
        assert [a.action for a in store.audit_entries()] == []
        await pilot.press("A", "y")
        await wait_for(pilot, lambda: "auto wait" in header(app), "automation on, waiting for the delay")
        line = app.screen.query_one(StatusLine).content.plain
        assert re.search(r"⚙ AUTO  merging PR #42 in [34] h \d\d min — CI green", line), line
        assert AppState.load().automation_enabled is True  # shared with `nfu-tui auto`
        entry = store.audit_entries(1)[0]
        assert (entry.action, entry.details) == ("automation", {"enabled": True, "source": "tui"})
        await pilot.press("A")  # off: at once, no question
        await wait_for(pilot, lambda: "auto off" in header(app), "automation off")
        assert "Update PR pending" in app.screen.query_one(StatusLine).content.plain
        assert store.audit_entries(1)[0].details["enabled"] is False
        assert AppState.load().automation_enabled is False
        await pilot.press("ctrl+p", *"automation")
        await wait_for(pilot, lambda: _palette_has(app, "Turn automation on"), "the palette command")
        await pilot.press("escape")
    assert merges(shared.sim, 42) == 0


async def test_the_automation_question_names_the_pr_due_now(shared, tmp_path):
    app = make_app(shared.sim, tmp_path, flake_updates={"automation": {"delay_minutes": 0}})
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, explained=True)
        await wait_for(pilot, lambda: "auto off" in header(app), "the automation badge")
        await pilot.press("A")
        question = plain(app.screen.query_one("Static").content)
        assert ("Due now: PR #42 (flake.lock: Update) — turning automation on merges and deploys it right away."
                in question)
        await pilot.press("n")
        assert not app.service.automation_enabled()
    assert merges(shared.sim, 42) == 0


async def test_an_automatic_deploy_shows_on_the_deploy_screen(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(hosts=SMALL[:2], speed=400.0))
    app = make_app(sim, tmp_path, flake_updates={"automation": {"enabled": True, "delay_minutes": 0}})
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.deploy_view is not None, "automation to start a deploy")
        view = app.deploy_view
        assert (view.trigger, view.plan.pr_number, view.order) == ("auto", 42, ["gpc0", "hsb0"])
        await pilot.press("D")
        assert isinstance(app.screen, DeployScreen) and app.screen.view is view
        assert "automatic" in app.screen.query_one("#deploy-title").content.plain
        await wait_for(pilot, lambda: view.finished, "the automatic run", timeout=30)
        assert view.succeeded and merges(sim, 42) == 1
        await wait_for(pilot, lambda: "auto on" in header(app), "automation idle again")


async def test_outside_the_windows_y_works_only_after_o(shared, tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    clock = Clock(WEDNESDAY)
    app = make_app(shared.sim, tmp_path, clock=clock,
                   flake_updates={"automation": {"maintenance_windows": ["Sat 02:00-05:00 UTC"]}})
    started: list[Any] = []
    monkeypatch.setattr(app, "start_deploy", started.append)
    async with app.run_test(size=SIZE) as pilot:
        grid = await ready(pilot)
        grid.move_to("gpc0")
        await pilot.press("space", "m")
        confirm = app.screen
        assert isinstance(confirm, DeployConfirmScreen)
        warning = confirm.query_one("#window-warning").content.plain
        assert "Outside the maintenance windows (Sat 02:00-05:00 UTC); next window Sat 02:00" in warning
        assert confirm.query_one("#yes").disabled
        await pilot.press("y")
        assert app.screen is confirm and started == []  # not without o
        await pilot.press("o")
        assert not confirm.query_one("#yes").disabled
        assert "confirmed" in confirm.query_one("#window-warning").content.plain
        await pilot.press("y")
        assert isinstance(app.screen, MainScreen) and [p.hosts for p in started] == [("gpc0",)]
        clock.now = SATURDAY_3AM  # inside the window: the plain confirmation
        await pilot.press("m")
        assert isinstance(app.screen, DeployConfirmScreen) and app.screen.window_warning is None
        assert not app.screen.query("#window-warning") and not app.screen.query_one("#yes").disabled
        await pilot.press("y")
        assert len(started) == 2


async def test_per_host_rollback_from_the_grid_runs_the_dashboards_rollback(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(hosts=SMALL, speed=400.0))
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        grid = await ready(pilot, len(SMALL))
        grid.move_to("hsb0")
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Roll hsb0 back to its previous NixOS generation?" in plain(app.screen.query_one("Static").content)
        assert not [c for c in sim.dashboard.commands.values() if c.op == "rollback"]  # asks first
        await pilot.press("y")
        await wait_for(pilot, lambda: [c.status for c in sim.dashboard.commands.values() if c.op == "rollback"]
                       == ["SUCCESS"], "the rollback on the dashboard")
        (cmd,) = [c for c in sim.dashboard.commands.values() if c.op == "rollback"]
        assert cmd.host_id == "hsb0"
        store = app.service.store
        await wait_for(pilot, lambda: store.list_runs() and store.list_runs()[0].status == "succeeded", "the journal")
        (run,) = store.list_runs()
        assert (run.kind, run.trigger, run.host_outcomes) == ("rollback", "manual", {"hsb0": "ok"})
        await wait_for(pilot, lambda: [a.action for a in store.audit_entries()] == ["rollback_host"], "the audit entry")


async def test_failure_panel_holds_the_failing_host_and_rolls_back_per_strategy(sim_factory, tmp_path):
    sim = await sim_factory(fast_scenario(hosts=SMALL, speed=400.0))
    sim.dashboard.set_fault("hsb0", "switch_fails")
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        grid = await ready(pilot, len(SMALL))
        grid.move_to("hsb0")
        await pilot.press("space", "m", "y")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), "the deploy screen")
        view = app.deploy_view
        await wait_for(pilot, lambda: view.finished, "the failed run", timeout=30)
        screen = app.screen
        await pilot.pause(0.1)
        panel = plain(screen.query_one("#failure-text").content)
        assert "✗ hsb0 failed in switch" in panel and "(rollback strategy: revert-commit)" in panel
        assert " h  hold hsb0" in panel and "Last lines of hsb0:" in panel
        await pilot.press("h")  # one key
        await wait_for(pilot, lambda: app.service.held() == {"hsb0"}, "hsb0 held")
        assert app.service.store.audit_entries(1)[0].action == "hold"
        await wait_for(pilot, lambda: "hsb0 held" in plain(screen.query_one("#failure-text").content), "the panel")
        await pilot.press("b")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Roll back PR #42 now?" in plain(app.screen.query_one("Static").content)
        assert merges(sim, 43) == 0
        await pilot.press("y")
        await wait_for(pilot, lambda: view.rollback_note.startswith(("✓", "✗")), "the rollback", timeout=30)
        assert view.rollback_note.startswith("✓ Reverted PR #42 with PR #43"), view.rollback_note
        assert merges(sim, 43) == 1  # the revert PR, merged
        revert = next(r for r in app.service.store.list_runs() if r.kind == "revert")
        assert (revert.trigger, revert.status) == ("manual", "succeeded")
        assert "Rollback: ✓ Reverted PR #42" in plain(screen.query_one("#failure-text").content)


async def test_an_interrupted_host_rollback_is_resumed_without_sending_it_again(shared, tmp_path):
    with Store() as store:
        revert = store.create_run("revert", actor="alice@box", pr=42, plan={"strategy": "revert-pr"})
        store.record(revert, "revert_opened", revert_pr=4242, head_sha="c" * 40, url="")  # deleted on GitHub since
        store.finish_run(revert, "succeeded", "revert PR #4242 opened")
        run_id = store.create_run("rollback", actor="alice@box", plan={"op": "rollback", "hosts": ["gpc0"]})
        store.record(run_id, "host_started", host="gpc0", phase="rollback")
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ResumeScreen) and app.screen.query("#run"), "the resume dialog")
        text = plain(app.screen.query_one("#run").content)
        assert f"Host rollback run #{run_id} did not finish" in text and "never sends it twice" in text
        await pilot.press("r")
        store = app.service.store
        await wait_for(pilot, lambda: store.get_run(run_id).finished, "the resumed rollback")
        run = store.get_run(run_id)
        assert run.status == "unknown" and "not repeated" in run.summary  # its outcome is unknown: said so
        assert not [c for c in shared.sim.dashboard.commands.values() if c.op == "rollback"]
        await pilot.press("H")  # the history lists it
        assert isinstance(app.screen, HistoryScreen)
        await wait_for(pilot, lambda: app.screen.history is not None, "the history")
        assert [r.id for r in app.screen.history.runs] == [run_id, revert]
        # The runner tracks the revert PRs the journal names; one GitHub no longer has stops nothing.
        await wait_for(pilot, lambda: 4242 not in app.service.tracked_prs, "the deleted revert PR dropped")
        await pilot.press("r")  # poll again
        await wait_for(pilot, lambda: app.service.status.github == "ok", "GitHub ok")
        assert [s.pr.number for s in app.service.prs] == [42]


def _palette_has(app: NfuApp, title: str) -> bool:
    from textual.command import CommandPalette

    screen = app.screen
    if not isinstance(screen, CommandPalette):
        return False
    options = screen.query_one("CommandList")
    return any(title in str(options.get_option_at_index(i).prompt) for i in range(options.option_count))


async def test_cancel_then_release_the_running_host_in_the_dashboard(sim_factory, tmp_path):
    """The dashboard cannot stop a running command: cancel stops scheduling; c again offers to
    release the host (timeout action "ignore"), which ends the run at once."""
    hosts = [HostSpec("hsb0", "server", "home", faults={"slow"}), HostSpec("csb0", "server", "cloud")]
    sim = await sim_factory(fast_scenario(hosts=hosts, speed=1.0))
    app = make_app(sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot, len(hosts))
        await pilot.press("m", "y")
        await wait_for(pilot, lambda: isinstance(app.screen, DeployScreen), "the deploy screen")
        view = app.deploy_view
        await wait_for(pilot, lambda: view.rows["hsb0"].state == "running", "hsb0 running")
        await pilot.press("c")
        assert "cannot stop a command" in plain(app.screen.query_one("Static").content)
        await pilot.press("y")
        await wait_for(pilot, lambda: "c: release them" in app.screen.query_one("#deploy-stage").content.plain,
                       "the cancelling stage")
        assert not view.finished  # hsb0's command still runs: followed, not killed
        await pilot.press("c")
        assert "Release hsb0 in the dashboard?" in plain(app.screen.query_one("Static").content)
        await pilot.press("y")
        await wait_for(pilot, lambda: view.finished, "the run to end")
        assert view.result.status.value == "cancelled" and view.result.still_running == ("hsb0",)
        assert view.rows["csb0"].state in ("cancelled", "skipped")  # never started
        assert not [c for c in sim.dashboard.commands.values() if c.op == "kill" or c.status == "KILLING"]


async def test_a_crash_in_the_automation_loop_is_shown_and_retried_not_fatal(shared, tmp_path, monkeypatch):
    from nfu_tui.core.automation import AutomationRunner
    from nfu_tui.ui import app as app_module

    calls: list[int] = []
    real = AutomationRunner.run_forever

    async def crashing_once(self: AutomationRunner) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        await real(self)

    monkeypatch.setattr(AutomationRunner, "run_forever", crashing_once)
    monkeypatch.setattr(app_module, "AUTOMATION_RETRY", 0.5)
    app = make_app(shared.sim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "auto ✗" in header(app), "the failure in the header")
        line = app.screen.query_one(StatusLine).content.plain
        assert "automation stopped: RuntimeError: boom; retrying in 0.5 s" in line
        await wait_for(pilot, lambda: len(calls) == 2 and "auto off" in header(app), "the loop running again")
        await wait_for(pilot, lambda: "Update PR pending" in app.screen.query_one(StatusLine).content.plain,
                       "the status line back to the pending PR")
        assert app.is_running
