"""Every command behaves like a Unix tool: a clean WebSocket close, a quiet end when stdout
is closed, a clear error (exit 1) when the state directory cannot be written, and
``status`` naming the part it does not know."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core.service import FleetService
from nfu_tui.sim.scenario import HostSpec, PRSpec
from nfu_tui.sim.testing import fast_scenario
from nfu_tui.ui.app import NfuApp

NORMAL_CLOSURE = 1000


def small_fleet() -> Any:
    return fast_scenario(hosts=[HostSpec("gpc0", "gaming", "home"), HostSpec("hsb0", "server", "home")],
                         prs=[PRSpec(42, labels=["dependencies"], ci="success")], speed=400.0,
                         heartbeat_seconds=0.05)


def cli(config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
        **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "nfu_tui", "--config", str(config), *args], timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, **kw)


def closes(sim: Any, count: int) -> list[int | None]:
    """The close codes of the dashboard's finished /ws connections, once ``count`` have ended."""
    deadline = time.monotonic() + 10
    while len(sim.dashboard.ws_close_codes) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(sim.dashboard.ws_close_codes)


@pytest.mark.parametrize("sim_thread", [small_fleet()], indirect=True)
def test_status_deploy_and_auto_close_the_websocket_normally(sim_thread: Any, tmp_path: Path) -> None:
    sim = sim_thread.sim
    config = sim.write_config(tmp_path / "cfg", flake_updates={
        "automation": {"enabled": True, "delay_minutes": 0, "canary_wait_minutes": 0}})
    assert cli(config, "status", capture_output=True).returncode == 0
    assert closes(sim, 1) == [NORMAL_CLOSURE]
    assert cli(config, "deploy", "--pr", "42", "--yes", "--hosts", "gpc0", capture_output=True).returncode == 0
    assert cli(config, "auto", "--once", capture_output=True).returncode == 0  # deploys hsb0 (resume/redeploy)
    codes = closes(sim, 3)
    assert len(codes) >= 3 and set(codes) == {NORMAL_CLOSURE}


async def test_the_tui_closes_the_websocket_normally_on_quit(sim: Any, tmp_path: Path) -> None:
    cfg = load_config(sim.write_config(tmp_path / "cfg"))
    app = NfuApp(FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False)), flush_interval=0.02)
    async with app.run_test(size=(100, 30)) as pilot:
        while not app.service.fleet.synced:
            await pilot.pause(0.05)
        await pilot.press("q")
    for _ in range(100):
        if sim.dashboard.ws_close_codes:
            break
        await asyncio_sleep(0.05)
    assert sim.dashboard.ws_close_codes == [NORMAL_CLOSURE]


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


@pytest.mark.parametrize("sim_thread", [small_fleet()], indirect=True)
def test_a_closed_stdout_ends_quietly(sim_thread: Any, tmp_path: Path) -> None:
    config = sim_thread.sim.write_config(tmp_path / "cfg")
    for args in (["status"], ["status", "--json"], ["history", "--json"], ["config", "check"]):
        proc = subprocess.Popen([sys.executable, "-m", "nfu_tui", "--config", str(config), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # `nfu-tui status | true`: the reader is gone before the first line
        err = proc.stderr.read()
        assert proc.wait(60) in (0, 1), err
        assert b"Traceback" not in err and b"BrokenPipe" not in err and b"Exception ignored" not in err, err


@pytest.mark.parametrize("sim_thread", [small_fleet()], indirect=True)
def test_an_unwritable_state_dir_is_a_clear_error_in_every_command(sim_thread: Any, tmp_path: Path) -> None:
    config = sim_thread.sim.write_config(tmp_path / "cfg", flake_updates={"automation": {"enabled": True}})
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be\n")
    env = {"NFU_TUI_STATE_DIR": str(blocker / "state")}  # cannot be created (also as root)
    for args in ([], ["status"], ["deploy", "--pr", "42", "--yes"], ["deploy", "--abandon", "1"], ["auto", "--once"]):
        done = cli(config, *args, env=env, capture_output=True)
        err = done.stderr.decode()
        assert done.returncode == 1, (args, err)
        assert "Traceback" not in err and str(blocker) in err, (args, err)


def test_status_names_the_unknown_parts_and_warns_about_a_readable_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("ghp_" + "x" * 36 + "\n")
    token.chmod(0o644)
    config = tmp_path / "c.toml"
    config.write_text(f'[github]\nrepo = "a/b"\napi_url = "http://127.0.0.1:9"\ntoken_file = "{token}"\n'
                      '[dashboard]\nurl = "http://127.0.0.1:9"\n')
    done = cli(config, "status", capture_output=True, env={"NIXFLEET_PASSWORD": "pw-for-nothing"})
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 1
    assert "Fleet: unknown" in out and "Update PRs: unknown" in out
    assert "0 hosts" not in out and "No open update PRs" not in out
    assert "readable by group/others" in err and str(token) in err
    as_json = cli(config, "status", "--json", capture_output=True, env={"NIXFLEET_PASSWORD": "pw-for-nothing"})
    import json

    report = json.loads(as_json.stdout)
    assert report["dashboard"]["ok"] is False and report["dashboard"]["error"]
    assert report["github"]["ok"] is False and report["github"]["error"]
