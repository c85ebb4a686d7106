#!/usr/bin/env python3
"""Regenerate ``screenshots/*.svg`` (shown in the README) from a scripted session.

nfu-tui runs on the real FleetService against the embedded simulator (default
scenario; ``hsb0`` fails its switch, ``gpc0`` is a canary, ``hsb1`` is held) at 120×36:
fleet grid → automation on (countdown) → PR panel → help → merge & deploy plan → deploy
in progress → the failed deploy (failure panel) → host detail → history → one run.
Usage: ``.venv/bin/python screenshots/make_screenshots.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZE = (120, 36)


async def until(pilot: Any, predicate: Callable[[], Any], what: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def session(base: Path) -> None:
    from nfu_tui.config import load_config, resolve_secrets
    from nfu_tui.core.service import FleetService
    from nfu_tui.sim.runner import Simulator
    from nfu_tui.sim.testing import fast_scenario
    from nfu_tui.ui.app import NfuApp
    from nfu_tui.ui.screens.deploy import DeployScreen
    from nfu_tui.ui.screens.history import HistoryScreen
    from nfu_tui.ui.widgets.host_grid import HostGrid

    sim = Simulator(fast_scenario(speed=8.0, heartbeat_seconds=1.0))
    await sim.start()
    try:
        frozen = datetime.now(timezone.utc)
        sim.dashboard.set_fault("hsb0", "switch_fails")
        path = sim.write_config(
            base / "cfg",
            flake_updates={"automation": {"canary_wait_minutes": 0, "delay_minutes": 24 * 60}},
            hosts={"gpc0": {"canary": True}, "web-01": {"priority": 5}, "workstation": {"auto_update": False}},
        )
        cfg = load_config(path)
        service = FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False))
        app = NfuApp(service, clock=lambda: frozen)
        app.animation_level = "none"

        def shot(name: str) -> None:
            app.save_screenshot(f"{name}.svg", str(HERE))
            print(f"wrote screenshots/{name}.svg")

        async with app.run_test(size=SIZE) as pilot:
            grid = app.screen.query_one(HostGrid)
            await until(pilot, lambda: grid.total == 12 and service.prs and service.prs[0].explanation, "the fleet and PR")
            await service.set_hold(["hsb1"], True)
            for host in ("gpc0", "imac0", "hsb0", "csb0"):
                grid.move_to(host)
                await pilot.press("space")
            grid.move_to("hsb1")
            await pilot.pause(0.3)
            shot("fleet")
            await pilot.press("A", "y")  # automation on: the PR waits for its delay
            await until(pilot, lambda: app.automation.on, "automation on")
            await pilot.pause(0.3)
            app.clear_notifications()
            await pilot.pause(0.2)
            shot("automation")
            await pilot.press("A")  # off again before the manual deploy
            await until(pilot, lambda: not app.automation.on, "automation off")
            app.clear_notifications()
            await pilot.press("tab")
            await pilot.pause(0.2)
            shot("prs")
            await pilot.press("tab", "tab", "question_mark")
            await pilot.pause(0.2)
            shot("help")
            await pilot.press("escape", "m")
            await pilot.pause(0.2)
            shot("confirm")
            await pilot.press("y")
            await until(pilot, lambda: isinstance(app.screen, DeployScreen), "the deploy screen")
            view = app.deploy_view
            await until(
                pilot,
                lambda: view.rows["imac0"].state == "running" and len(service.output_lines("imac0")) > 25,
                "imac0's switch output",
            )
            shot("deploy")
            await until(pilot, lambda: view.finished, "the end of the run", timeout=120)
            await pilot.pause(0.5)
            app.clear_notifications()
            app.screen.query_one("DataTable").move_cursor(row=2)  # hsb0, the failed host
            await pilot.pause(0.3)
            shot("deploy-failed")
            await pilot.press("escape")
            grid.move_to("hsb0")
            await pilot.press("enter")
            await pilot.pause(0.3)
            shot("host")
            await pilot.press("escape", "H")
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.history, "the history")
            await pilot.pause(0.3)
            shot("history")
            await pilot.press("enter")  # the newest run: the failed deploy
            await pilot.pause(0.3)
            shot("history-run")
    finally:
        await sim.stop()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="nfu-screenshots-") as tmp:
        base = Path(tmp)
        for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            (base / var).mkdir()
            os.environ[var] = str(base / var)
        asyncio.run(session(base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
