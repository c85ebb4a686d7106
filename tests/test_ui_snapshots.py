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
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core.plan import DeployPlan, PlanEntry
from nfu_tui.core.service import FleetService
from nfu_tui.core.store import Store
from nfu_tui.models import RateBudget
from nfu_tui.sim.runner import SimulatorThread
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario
from nfu_tui.ui.app import NfuApp
from nfu_tui.ui.messages import ServiceUpdate
from nfu_tui.ui.screens.confirm import DeployConfirmScreen
from nfu_tui.ui.screens.resume import ResumeScreen
from nfu_tui.ui.widgets.host_grid import HostGrid

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture(scope="module")
def snap_sim() -> Iterator[tuple[SimulatorThread, datetime]]:
    runner = SimulatorThread(fast_scenario(heartbeat_seconds=5.0))
    with runner:
        yield runner, datetime.now(timezone.utc)


def build_app(
    snap_sim: tuple[SimulatorThread, datetime], tmp_path: Path, name: str, *, clock: datetime | None = None,
    store: Store | None = None, **overrides: Any,
) -> NfuApp:
    """The app on a FleetService for the simulator; ``overrides`` are config tables, ``clock`` replaces
    the frozen time, ``store`` the journal."""
    runner, frozen = snap_sim
    frozen = clock or frozen
    sim = runner.sim
    token = f"ghp_snapshot_{name}".ljust(40, "0")
    runner.call(sim.github.add_token, token)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    cfg = load_config(sim.write_config(tmp_path / "cfg", github={"token_file": str(token_file)}, **overrides))
    service = FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False), store=store)
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

    async def hold_then_plan(pilot: Any) -> None:
        await settled(pilot)
        await app.service.set_hold(["hsb1"], True)
        await wait(pilot, lambda: app.screen_stack[0].query_one(HostGrid).held == {"hsb1"})
        await pilot.press("m")
        await wait(pilot, lambda: isinstance(app.screen, DeployConfirmScreen) and len(app.screen.query("#plan")) == 1)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=hold_then_plan)


# --- automation, windows, failure panel, history, unfinished runs ------------------------

WEDNESDAY = datetime(2026, 8, 12, 14, 0, tzinfo=timezone.utc)  # outside "Sat 02:00-05:00 UTC"


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC (history dates, window texts), restored afterwards."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_header_with_automation_on(snap_compare, snap_sim, tmp_path):
    """``auto wait`` in the header, the next action with its countdown in the status line."""
    # 24 h + 30 s after a PR updated 20 h ago: "4 h 00 min" however long the simulator took to start
    app = build_app(snap_sim, tmp_path, "auto", flake_updates={"automation": {"enabled": True, "delay_minutes": 1440.5}})

    async def counting_down(pilot: Any) -> None:
        await settled(pilot)
        await wait(pilot, lambda: "CI green" in (app.automation.decision.template if app.automation.decision else ""))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=counting_down)


def test_outside_window_confirmation(snap_compare, snap_sim, tmp_path, utc):
    """A manual deploy outside the maintenance windows: the warning, y disabled until o."""
    app = build_app(snap_sim, tmp_path, "window", flake_updates={"automation": {
        "maintenance_windows": ["Sat 02:00-05:00 UTC"]}}, clock=WEDNESDAY)

    async def select_gpc0(pilot: Any) -> None:
        await settled(pilot)
        grid = app.screen.query_one(HostGrid)
        grid.move_to("gpc0")
        await pilot.press("space")

    assert snap_compare(app, terminal_size=(80, 24), run_before=select_gpc0, press=["m"])


def test_failure_panel(snap_compare, tmp_path):
    """hsb0's switch fails: what failed, the next steps for revert-commit, its last lines."""
    hosts = [HostSpec("gpc0", "gaming", "home"), HostSpec("hsb0", "server", "home", faults={"switch_fails"})]
    thread = SimulatorThread(fast_scenario(hosts=hosts, speed=400.0))
    with thread:
        app = build_app((thread, datetime.now(timezone.utc)), tmp_path, "failure")

        async def failed_deploy(pilot: Any) -> None:
            service = app.service
            await wait(pilot, lambda: service is not None and service.status.dashboard == "live" and service.prs
                       and app.screen.query_one(HostGrid).total == 2)
            app.screen.query_one(HostGrid).move_to("hsb0")
            await pilot.press("space", "m", "y")
            await wait(pilot, lambda: app.deploy_view is not None and app.deploy_view.finished)
            await pilot.pause(0.5)  # the run's last events (and their toast) arrive after its result
            # What depends on the machine's speed: how long the switch took, how often GitHub was polled.
            view = app.deploy_view
            for host, row in view.rows.items():
                view.rows[host] = replace(row, started=None, finished=None)
            service.status = replace(service.status, rate=RateBudget(limit=5000, remaining=4980))
            app.clear_notifications()
            app.publish(ServiceUpdate(status=True))
            await pilot.pause(0.3)

        assert snap_compare(app, terminal_size=(80, 24), run_before=failed_deploy)


@pytest.mark.parametrize("size", SIZES)
def test_history(snap_compare, snap_sim, tmp_path, utc, size):
    """H: the journal's runs (newest first) and the audit trail."""
    clock = Clock()
    app = build_app(snap_sim, tmp_path, f"history{size[0]}", store=Store(clock=clock))
    write_journal(app.service.store, clock)

    async def history(pilot: Any) -> None:  # settled: the header line shows the connections
        await settled(pilot)
        await wait(pilot, lambda: app.runner is not None)
        await pilot.press("H")
        await wait(pilot, lambda: getattr(app.screen, "history", None) is not None)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=history)


def test_unfinished_run_modal(snap_compare, snap_sim, tmp_path, utc):
    """At start: a deploy run that died after gpc0 — resume, abandon or later."""
    runner, _ = snap_sim
    store = Store(clock=Clock())
    app = build_app(snap_sim, tmp_path, "resume", store=store)
    plan = DeployPlan(pr_number=42, head_sha=runner.sim.github.pr_head(42), strategy="all", max_parallel=1,
                      canary_wait_minutes=0, entries=tuple(PlanEntry(h, wave=1) for h in ("gpc0", "hsb0", "csb0")))
    run_id = store.create_run("deploy", actor="alice@box", trigger="manual", pr=42, head_sha=plan.head_sha,
                              plan=plan.to_dict())
    store.record(run_id, "merge_requested", pr=42, sha=plan.head_sha)
    store.record(run_id, "merged", sha="5" * 40)
    store.record(run_id, "host_started", host="gpc0", phase="pull")
    store.record(run_id, "host_finished", host="gpc0", outcome="ok", phase="switch", detail="")

    async def offered(pilot: Any) -> None:
        await settled(pilot)  # the header's rate budget counts the PR explanation's requests
        await wait(pilot, lambda: isinstance(app.screen, ResumeScreen))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=offered)


async def wait(pilot: Any, predicate: Any, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await pilot.pause(0.05)


class Clock:
    """The journal's clock in these tests: fixed, moved by hand (shown dates do not depend on the day)."""

    def __init__(self, now: datetime = WEDNESDAY) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


LOCK_DIFF = (
    "• Updated input 'nixpkgs':\n"
    "    'github:NixOS/nixpkgs/00c21e4' (2026-08-04)\n"
    "  → 'github:NixOS/nixpkgs/a82ccc3' (2026-08-11)\n"
    "• Updated input 'home-manager':\n"
    "    'github:nix-community/home-manager/1d3b2c4' (2026-08-01)\n"
    "  → 'github:nix-community/home-manager/9e8f7a6' (2026-08-10)\n"
)


def write_journal(store: Store, clock: Clock) -> None:
    """A failed manual deploy of PR #42, its revert-commit rollback with a redeploy, a per-host
    rollback and the audit entries the TUI writes, at fixed times."""
    head, merge, revert_head = "a" * 40, "b" * 40, "c" * 40
    plan = DeployPlan(pr_number=42, head_sha=head, strategy="all", max_parallel=1, canary_wait_minutes=0,
                      entries=(PlanEntry("gpc0", wave=1, canary=True), PlanEntry("hsb0", wave=2),
                               PlanEntry("csb0", wave=2)))
    t = clock.now = WEDNESDAY
    deploy = store.create_run("deploy", actor="alice@box", trigger="manual", pr=42, head_sha=head,
                              plan=plan.to_dict())
    store.record(deploy, "context", title="flake.lock: Update", lock_diff=LOCK_DIFF,
                 headline="nixpkgs 00c21e4 → a82ccc3 (+7 days) and 1 other input", head_sha=head)
    store.record(deploy, "merge_requested", pr=42, sha=head)
    store.record(deploy, "merged", sha=merge)
    store.audit("merge", actor="alice@box", github_login="alice", pr=42, details={"run": deploy})
    clock.now = t + timedelta(minutes=1)
    store.record(deploy, "host_started", host="gpc0", phase="pull")
    store.record(deploy, "host_finished", host="gpc0", outcome="ok", phase="switch", detail="")
    clock.now = t + timedelta(minutes=3)
    store.record(deploy, "host_started", host="hsb0", phase="pull")
    store.record(deploy, "host_finished", host="hsb0", outcome="failed", phase="switch",
                 detail="switch error (exit 1): command failed",
                 log_excerpt=[("error: builder for '/nix/store/idwy7afik6kv8ncpgk33h8ki7q17g1s7-coreutils-9.5.drv' "
                               "failed with exit code 2"), "error: 1 dependencies of derivation failed to build"])
    store.record(deploy, "host_finished", host="csb0", outcome="skipped", phase="", detail="not started")
    store.finish_run(deploy, "failed", "PR #42: failed (1 ok, 1 failed, 1 skipped)")
    clock.now = t + timedelta(minutes=5)
    store.audit("hold", actor="alice@box", details={"hosts": ["hsb0"]})
    revert = store.create_run("revert", actor="alice@box", trigger="manual", pr=42, plan={
        "strategy": "revert-commit", "failed_run": deploy, "reverts_pr": 42, "reverts_merge_sha": merge,
        "hosts": ["gpc0"], "failed_hosts": {"hsb0": "switch: switch error (exit 1): command failed"}})
    store.record(revert, "revert_opened", revert_pr=43, head_sha=revert_head, url="")
    store.record(revert, "merged", sha="d" * 40)
    redeploy = store.create_run("deploy", actor="alice@box", trigger="manual", pr=43, head_sha=revert_head)
    store.record(revert, "redeploy_started", run=redeploy)
    store.record(redeploy, "revert_redeploy", parent=revert)
    clock.now = t + timedelta(minutes=7)
    store.record(redeploy, "host_finished", host="gpc0", outcome="ok", phase="switch", detail="")
    store.finish_run(redeploy, "succeeded", "PR #43: succeeded (1 ok)")
    store.finish_run(revert, "succeeded", "reverted PR #42 with PR #43; rolled back gpc0")
    store.audit("rollback", actor="alice@box", github_login="alice", pr=42, details={"run": revert})
    clock.now = t + timedelta(minutes=9)
    rollback = store.create_run("rollback", actor="alice@box", plan={"op": "rollback", "hosts": ["hsb0"]})
    store.record(rollback, "host_finished", host="hsb0", outcome="ok", phase="rollback",
                 detail="rolled back to the previous generation")
    store.finish_run(rollback, "succeeded", "hsb0: rollback succeeded")
    store.audit("rollback_host", actor="alice@box", details={"run": rollback, "host": "hsb0", "outcome": "ok"})
    store.audit("automation", actor="alice@box", github_login="alice", details={"enabled": True, "source": "tui"})
