"""`nfu-tui auto` as a process against the simulator: --once, JSON log lines, the toggle,
configuration errors, and SIGTERM in the middle of a deploy leaving a resumable journal."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.core.store import DB_NAME, Store
from nfu_tui.paths import state_dir
from nfu_tui.sim.scenario import HostSpec, PRSpec
from nfu_tui.sim.testing import fast_scenario

HOSTS = [HostSpec("gpc0", "gaming", "home"), HostSpec("hsb0", "server", "home"), HostSpec("hsb1", "server", "home"),
         HostSpec("csb0", "server", "cloud")]


def scenario(speed: float = 400.0) -> Any:
    return fast_scenario(hosts=[HostSpec(**{**vars(h), "faults": set(h.faults)}) for h in HOSTS],
                         prs=[PRSpec(42, labels=["dependencies"], ci="success")], speed=speed,
                         heartbeat_seconds=0.05)


def config(sim: Any, tmp_path: Path, **automation: Any) -> Path:
    automation = {"enabled": True, "delay_minutes": 0, "canary_wait_minutes": 0, **automation}
    return sim.write_config(tmp_path / "cfg", flake_updates={"automation": automation})


async def start_auto(config_path: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfu_tui", "--config", str(config_path), "auto", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(proc: asyncio.subprocess.Process, timeout: float = 60) -> tuple[int, list[dict[str, Any]], str]:
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    return proc.returncode or 0, lines, err.decode()


def events(lines: list[dict[str, Any]]) -> list[str]:
    return [line["event"] for line in lines]


def journal() -> Store:
    return Store(state_dir() / DB_NAME)


def merges(sim: Any) -> int:
    return sum(1 for method, path, *_ in sim.github.request_log if method == "PUT" and path.endswith("/pulls/42/merge"))


SCENARIO_TOML = """
speed = 400.0
heartbeat_seconds = 0.05
sync_seconds = 1.0

[[hosts]]
name = "gpc0"
device_type = "gaming"

[[hosts]]
name = "hsb0"

[[hosts]]
name = "csb0"
location = "cloud"

[[prs]]
number = 42
labels = ["dependencies"]
ci = "success"
"""


async def test_once_against_nfu_tui_sim_merges_deploys_and_logs_json_lines(tmp_path: Path) -> None:
    scenario_file = tmp_path / "scenario.toml"
    scenario_file.write_text(SCENARIO_TOML)
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfu_tui", "sim", "--scenario", str(scenario_file), "--write-config",
        str(tmp_path / "cfg"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert sim.stdout is not None
        info = json.loads(await asyncio.wait_for(sim.stdout.readline(), 30))
        while not (await asyncio.wait_for(sim.stdout.readline(), 30)).startswith(b"config written"):
            pass
        cfg = tmp_path / "cfg" / "config.toml"
        with cfg.open("a") as fh:
            fh.write("\n[flake_updates.automation]\nenabled = true\ndelay_minutes = 0\ncanary_wait_minutes = 0\n")
        code, lines, err = await finish(await start_auto(cfg, "--once"))
    finally:
        sim.send_signal(signal.SIGTERM)
        await asyncio.wait_for(sim.wait(), 30)
    assert code == 0, (err, lines)
    assert all({"ts", "level", "event"} <= set(line) for line in lines)
    seen = events(lines)
    assert seen[0] == "started" and seen[-1] == "stopped"
    for expected in ("ready", "decision", "merge", "run_started", "merged", "host_started", "host_finished",
                     "run_finished", "run_result", "cycle"):
        assert expected in seen, expected
    finished = [line for line in lines if line["event"] == "host_finished"]
    assert {line["host"] for line in finished} == {"gpc0", "hsb0", "csb0"}
    assert all(line["outcome"] == "ok" for line in finished)
    cycle = next(line for line in lines if line["event"] == "cycle")
    assert (cycle["acted"], cycle["ok"]) == (True, True)
    assert info["token"] not in "\n".join(json.dumps(line) for line in lines) + err
    with journal() as store:
        (run,) = store.list_runs()
        assert (run.kind, run.trigger, run.status, run.pr) == ("deploy", "auto", "succeeded", 42)
        merged = next(line for line in lines if line["event"] == "merged")
        assert run.merge_sha and run.merge_sha[:7] in merged["message"]


async def test_once_obeys_the_switch(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario())
    code, lines, _ = await finish(await start_auto(config(sim, tmp_path, enabled=False), "--once"))
    assert code == 0 and merges(sim) == 0
    assert lines[0]["automation"] == "off"
    cycle = next(line for line in lines if line["event"] == "cycle")
    assert (cycle["state"], cycle["text"], cycle["acted"]) == ("disabled", "automation off", False)


async def test_a_failed_run_is_logged_at_error_with_one_message_key(sim_factory: Any, tmp_path: Path) -> None:
    hosts = [HostSpec("gpc0", "gaming", "home", faults={"switch_fails"}), HostSpec("hsb0", "server", "home")]
    sim = await sim_factory(fast_scenario(hosts=hosts, prs=[PRSpec(42, labels=["dependencies"], ci="success")],
                                          speed=400.0, heartbeat_seconds=0.05))
    cfg = sim.write_config(tmp_path / "cfg", flake_updates={
        "automation": {"enabled": True, "delay_minutes": 0, "canary_wait_minutes": 0},
        "rollback": {"strategy": "alert-only"}})
    code, lines, _ = await finish(await start_auto(cfg, "--once"))
    assert code == 1
    by_event = {line["event"]: line for line in lines}
    assert by_event["run_result"]["level"] == "error" and by_event["run_result"]["status"] == "failed"
    assert by_event["run_finished"]["level"] == "error"
    assert by_event["stopped"] == {**by_event["stopped"], "level": "error", "exit_code": 1}
    assert not any("msg" in line for line in lines)
    assert all("message" in line for line in lines if line["event"].startswith("host_"))
    assert not any("may_start_host" in json.dumps(line) for line in lines)


async def test_bad_configuration_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[flake_updates.automation]\nmaintenance_windows = ["Caturday 02:00-03:00"]\n')
    code, lines, err = await finish(await start_auto(path, "--once"))
    assert code == 2
    assert lines[0]["event"] == "config_error" and "Caturday" in lines[0]["message"]
    assert "maintenance_windows" in err


async def test_unreachable_dashboard_fails_the_cycle(sim_factory: Any, tmp_path: Path) -> None:
    """... and still sends the notifications due: the webhook does not depend on the dashboard."""
    from aiohttp import web

    got: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.text())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/alerts", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        with Store() as store:  # an earlier process could not deliver it; it is due now
            store.enqueue_notification("run:7", title="PR #42 deploy failed", message="hsb0 failed", severity="error")
        sim = await sim_factory(scenario())
        cfg = sim.write_config(tmp_path / "cfg", dashboard={"url": "http://127.0.0.1:9"},
                               flake_updates={"automation": {"enabled": True, "delay_minutes": 0}},
                               notify={"webhook_url": f"http://127.0.0.1:{runner.addresses[0][1]}/alerts"})
        code, lines, _ = await finish(await start_auto(cfg, "--once", "--ready-timeout", "0.5"))
        assert code == 1 and merges(sim) == 0
        error = next(line for line in lines if line["event"] == "error")
        assert "not ready within the timeout" in error["message"] and "dashboard" in error["message"]
        assert got == ["hsb0 failed"] and journal().undelivered_notifications() == []
    finally:
        await runner.cleanup()


async def test_sigterm_mid_deploy_leaves_a_resumable_journal(sim_factory: Any, tmp_path: Path) -> None:
    sim = await sim_factory(scenario(speed=60.0))  # a switch takes about half a second
    cfg = config(sim, tmp_path)
    proc = await start_auto(cfg, "--stop-grace", "30")
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert raw, f"auto exited early: {lines}"
        lines.append(json.loads(raw))
        if lines[-1]["event"] == "host_started" and lines[-1]["host"] == "hsb0":
            break
    proc.send_signal(signal.SIGTERM)
    code, rest, err = await finish(proc)
    lines += rest
    assert code == 0, err
    seen = events(lines)
    assert "signal" in seen and "suspended" in seen and seen[-1] == "stopped"
    # hsb0 was in flight: it finished (within the grace period); nothing started after the signal.
    after = seen.index("signal")
    assert [line["host"] for line in lines[after:] if line["event"] == "host_started"] in ([], ["hsb0"])
    with journal() as store:
        (run,) = store.unfinished_runs()
        assert run.trigger == "auto" and run.merge_sha
        assert run.host_outcomes.get("gpc0") == "ok" and "hsb1" not in run.host_outcomes
        assert "shutdown_requested" in [s.step for s in run.steps]
        run_id = run.id
        service = [e.details for e in store.audit_entries() if e.action == "auto_service"]
        assert [d["event"] for d in service] == ["stopped", "started"]
        assert service[1]["automation"] is True and service[1]["rollback"] == "revert-commit"
    code, lines, err = await finish(await start_auto(cfg, "--once"))
    assert code == 0, (err, lines)
    assert "resume" in events(lines)
    with journal() as store:
        run = store.get_run(run_id)
        assert run.status == "succeeded" and set(run.host_outcomes) == {"gpc0", "hsb0", "hsb1", "csb0"}
        assert set(run.host_outcomes.values()) == {"ok"}
    assert merges(sim) == 1


SLOW_ONE = fast_scenario(hosts=[HostSpec("a1", "desktop", faults={"slow"})],
                         prs=[PRSpec(42, labels=["dependencies"], ci="success")], speed=60.0, heartbeat_seconds=0.05)


@pytest.mark.parametrize("sim_thread", [SLOW_ONE], indirect=True)
def test_outage_during_a_run_logs_lost_back_and_what_it_waits_for(sim_thread: Any, tmp_path: Path,
                                                                   capsys: Any, monkeypatch: Any) -> None:
    import threading
    import time

    from nfu_tui.cli import main
    from nfu_tui.core import watch

    sim = sim_thread.sim
    monkeypatch.setattr(watch, "QUIET_SECONDS", 0.3)

    def outage() -> None:  # once the switch runs on the host: 1.5 s without the dashboard
        deadline = time.monotonic() + 30
        while not any(c.op == "switch" for c in list(sim.dashboard.commands.values())):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        sim_thread.call(sim.dashboard.set_unreachable, True)
        time.sleep(1.5)
        sim_thread.call(sim.dashboard.set_unreachable, False)

    threading.Thread(target=outage, daemon=True).start()
    code = main(["--config", str(config(sim, tmp_path)), "auto", "--once"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0, lines
    names = events(lines)
    lost, back = names.index("dashboard_lost"), names.index("dashboard_back")
    assert lost < back and names.count("dashboard_lost") == 1
    assert lines[lost]["level"] == "warning" and "hosts' states are unknown" in lines[lost]["message"]
    waits = [line["text"] for line in lines[lost:back] if line["event"] == "waiting"]
    assert waits and waits[0].startswith("waiting for the dashboard (unreachable since ") and "a1 switch" in waits[0]
    assert lines[back]["message"].startswith("dashboard connection back after")
