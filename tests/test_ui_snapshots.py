"""SVG snapshots of the main screens at 80×24 and 120×40 (pytest-textual-snapshot).

The app runs on the real FleetService against the simulator (default scenario, fixed
seed) in a background thread. Everything time-dependent is pinned: the app's clock is
frozen right after the simulator starts (recent events read "just now", the offline
host's and the PR's ages are whole days/hours), animations are off (conftest), and every
test logs in to the fake GitHub with its own token so the rate budget in the header
does not depend on which tests ran before. Update with ``--snapshot-update``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core.service import FleetService
from nfu_tui.sim.runner import SimulatorThread
from nfu_tui.sim.testing import fast_scenario
from nfu_tui.ui.app import NfuApp
from nfu_tui.ui.widgets.host_grid import HostGrid

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture(scope="module")
def snap_sim() -> Iterator[tuple[SimulatorThread, datetime]]:
    runner = SimulatorThread(fast_scenario(heartbeat_seconds=5.0))
    with runner:
        yield runner, datetime.now(timezone.utc)


def build_app(snap_sim: tuple[SimulatorThread, datetime], tmp_path: Path, name: str) -> NfuApp:
    runner, frozen = snap_sim
    sim = runner.sim
    token = f"ghp_snapshot_{name}".ljust(40, "0")
    runner.call(sim.github.add_token, token)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    cfg = load_config(sim.write_config(tmp_path / "cfg", github={"token_file": str(token_file)}))
    service = FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False))
    app = NfuApp(service, clock=lambda: frozen)
    app.animation_level = "none"  # textual read TEXTUAL_ANIMATIONS at import, before conftest set it
    return app


async def settled(pilot: Any) -> None:
    """Wait until the fleet is live and the update PR is explained."""
    app = pilot.app
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20

    def ready() -> bool:
        service = app.service
        return (
            service is not None
            and service.status.dashboard == "live"
            and service.status.github == "ok"
            and len(service.hosts()) == 12
            and bool(service.prs)
            and service.prs[0].explanation is not None
            and app.screen_stack[0].query_one(HostGrid).total == 12
        )

    while not ready():
        assert loop.time() < deadline, "the app did not settle"
        await pilot.pause(0.05)
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", SIZES)
def test_fleet_grid(snap_compare, snap_sim, tmp_path, size):
    """The fleet grid with the pending update PR (Lock ⇡) and one offline host."""
    app = build_app(snap_sim, tmp_path, f"grid{size[0]}")
    assert snap_compare(app, terminal_size=size, run_before=settled)


@pytest.mark.parametrize("size", SIZES)
def test_pr_panel(snap_compare, snap_sim, tmp_path, size):
    """The update-PR pane: list, headline, coloured lock diff."""
    app = build_app(snap_sim, tmp_path, f"prs{size[0]}")
    assert snap_compare(app, terminal_size=size, run_before=settled, press=["tab"])


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, snap_sim, tmp_path, size):
    app = build_app(snap_sim, tmp_path, f"help{size[0]}")
    assert snap_compare(app, terminal_size=size, run_before=settled, press=["question_mark"])


@pytest.mark.parametrize("size", SIZES)
def test_merge_and_deploy_confirmation(snap_compare, snap_sim, tmp_path, size):
    """The plan shown by ``m``: order, queued offline host; one held host skipped."""
    app = build_app(snap_sim, tmp_path, f"confirm{size[0]}")

    async def hold_then_settle(pilot: Any) -> None:
        await settled(pilot)
        await app.service.set_hold(["hsb1"], True)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=hold_then_settle, press=["m"])
