"""The TUI (Textual Pilot) on the real FleetService against the real NixFleet dashboard and agents."""

from __future__ import annotations

import asyncio

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core.service import FleetService
from nfu_tui.ui.app import NfuApp
from nfu_tui.ui.screens.confirm import ConfirmScreen
from tests.real.conftest import FleetFactory, RealFleet
from tests.test_ui_app import SIZE, grid, wait_for


def app_for(fleet: RealFleet) -> NfuApp:
    cfg = load_config(fleet.config)
    return NfuApp(FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False)), flush_interval=0.02)


async def test_the_grid_shows_the_real_hosts_live(real_fleet: FleetFactory) -> None:
    fleet = real_fleet()
    app = app_for(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: grid(app).total == 3, "the three hosts", timeout=30)
        g = grid(app)
        assert all("● online" in (g.row_text(h) or "") for h in fleet.hosts), [g.row_text(h) for h in fleet.hosts]
        await asyncio.to_thread(fleet.harness, "agent-stop", "web2")
        await wait_for(pilot, lambda: "○" in (g.row_text("web2") or ""), "web2 offline", timeout=30)
        await asyncio.to_thread(fleet.harness, "agent-start", "web2")
        await wait_for(pilot, lambda: "● online" in (g.row_text("web2") or ""), "web2 back online", timeout=30)


async def test_per_host_rollback_from_the_grid(real_fleet: FleetFactory) -> None:
    fleet = real_fleet()
    app = app_for(fleet)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: grid(app).total == 3, "the three hosts", timeout=30)
        grid(app).move_to("db1")
        await pilot.press("R")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        store = app.service.store
        await wait_for(pilot, lambda: store.list_runs() and store.list_runs()[0].status in ("succeeded", "failed"),
                       "the rollback run", timeout=90)
        (run,) = store.list_runs()
        assert (run.kind, run.status, run.host_outcomes) == ("rollback", "succeeded", {"db1": "ok"})
    assert fleet.runs_of("db1", "switch --rollback") + fleet.runs_of("db1", "--rollback switch") == 1
    assert fleet.runs_of("web1", "") == 0 and fleet.runs_of("web2", "") == 0
