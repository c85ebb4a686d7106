"""The simulator runner: GitHub + dashboard wired together, the thread runner, the fixtures and `nfu-tui sim`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.sim.runner import Simulator, SimulatorThread
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario

SAFETY = 10.0  # a guard against hanging, never an assertion about speed


async def login(url: str) -> tuple[httpx.AsyncClient, str]:
    http = httpx.AsyncClient(base_url=url, follow_redirects=False, verify=False)
    assert (await http.post("/login", data={"password": "demo"})).headers["location"] == "/"
    csrf = re.search(r'data-csrf-token="([^"]*)"', (await http.get("/")).text).group(1)
    return http, csrf


async def until(ws: Any, pred: Any) -> dict[str, Any]:
    async def scan() -> dict[str, Any]:
        while True:
            msg = json.loads(await ws.recv())
            if pred(msg):
                return msg

    return await asyncio.wait_for(scan(), SAFETY)


def host_status(host: str, **compartments: str) -> Any:
    """Predicate: a host_updated delta for ``host`` whose update_status has these compartment states."""

    def match(m: dict[str, Any]) -> bool:
        if m.get("type") != "delta" or m["payload"]["type"] != "host_updated" or m["payload"]["id"] != host:
            return False
        us = m["payload"]["fields"].get("update_status") or {}
        return all((us.get(k) or {}).get("status") == v for k, v in compartments.items())

    return match


async def test_desired_state_is_the_default_branch_head(sim: Simulator) -> None:
    sha, subject = sim.github.default_branch_head()
    desired = sim.desired_state()
    assert desired.git_commit == sha and desired.message == subject
    assert desired.lock_hash == hashlib.sha256(sim.github.file_at(sha, "flake.lock")).hexdigest()
    host = sim.dashboard.hosts["hsb1"]
    assert host.generation == sha[:7] and host.lock["status"] == "ok"


async def test_merge_on_github_turns_git_and_lock_outdated_and_a_pull_fixes_them(sim: Simulator) -> None:
    gh = {"Authorization": f"Bearer {sim.github.token}", "Accept": "application/vnd.github+json"}
    http, csrf = await login(sim.dashboard.url)
    cookie = f"nixfleet_session={http.cookies.get('nixfleet_session')}"
    async with aclosing(http), httpx.AsyncClient(base_url=sim.github.url, headers=gh, verify=False) as github:
        ws = await connect(sim.dashboard.url.replace("http://", "ws://") + "/ws", additional_headers={"Cookie": cookie})
        async with ws:
            head = sim.github.pr_head(42)
            merge = await github.put(f"/repos/{sim.github.repo}/pulls/42/merge", json={"sha": head, "merge_method": "merge"})
            assert merge.status_code == 200, merge.text
            merge_sha = merge.json()["sha"]
            assert sim.github.default_branch_head()[0] == merge_sha
            outdated = await until(ws, host_status("hsb1", git="outdated", lock="outdated"))  # after the publish delay
            git = outdated["payload"]["fields"]["update_status"]["git"]
            assert git["message"].startswith(f"Behind remote ({sim.dashboard.hosts['hsb1'].generation} → {merge_sha[:7]}): ")
            resp = await http.post("/api/dispatch", json={"op": "pull", "hosts": ["hsb1"]}, headers={"X-CSRF-Token": csrf})
            result = resp.json()["results"][0]
            assert result["status"] == "EXECUTING"
            done = await until(ws, lambda m: m.get("type") == "delta" and m["payload"]["type"] == "command_finished"
                               and m["payload"]["fields"]["id"] == result["command_id"])
            assert done["payload"]["fields"]["status"] == "SUCCESS"
            await until(ws, host_status("hsb1", git="ok", lock="ok"))
    host = sim.dashboard.hosts["hsb1"]
    assert host.generation == merge_sha[:7]
    assert host.agent.lock_hash == hashlib.sha256(sim.github.file_at(merge_sha, "flake.lock")).hexdigest()
    assert sim.dashboard.hosts["hsb0"].lock["status"] == "outdated"  # only hsb1 pulled


async def test_publish_lag_blocks_a_plain_pull_right_after_the_merge(sim_factory: Any) -> None:
    sim = await sim_factory(fast_scenario())
    sim.publish_delay = 3600.0  # CI has not republished version.json yet
    head = sim.github.pr_head(42)
    async with httpx.AsyncClient(base_url=sim.github.url, verify=False,
                                 headers={"Authorization": f"Bearer {sim.github.token}"}) as github:
        assert (await github.put(f"/repos/{sim.github.repo}/pulls/42/merge", json={"sha": head})).status_code == 200
    http, csrf = await login(sim.dashboard.url)
    async with aclosing(http):
        resp = await http.post("/api/dispatch", json={"op": "pull", "hosts": ["hsb1"]}, headers={"X-CSRF-Token": csrf})
        assert resp.json()["results"][0]["code"] == "already_current"  # contract §8 #42


async def test_info_and_write_config(sim: Simulator, tmp_path: Path) -> None:
    info = sim.info()
    assert info == {"github_url": sim.github.url, "dashboard_url": sim.dashboard.url, "repo": "alice/nixcfg",
                    "token": sim.github.token, "password": "demo"}
    assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+", info[k]) for k in ("github_url", "dashboard_url"))
    path = sim.write_config(tmp_path / "cfg", github={"poll_minutes": 1}, hosts={"gpc0": {"canary": True}})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = load_config(path)
    assert cfg.github.repo == "alice/nixcfg" and cfg.github.api_url == sim.github.url
    assert cfg.github.graphql_endpoint == sim.github.url + "/graphql"
    assert cfg.github.poll_minutes == 1 and cfg.dashboard.url == sim.dashboard.url and cfg.host("gpc0").canary
    for secret_file in (cfg.github.token_file, cfg.dashboard.password_file):
        assert stat.S_IMODE(Path(secret_file).stat().st_mode) == 0o600
    secrets = resolve_secrets(cfg, env={}, use_gh=False)
    assert secrets.github_token.get_secret_value() == sim.github.token
    assert secrets.dashboard_password.get_secret_value() == "demo"
    assert not secrets.warnings and secrets.totp_secret is None
    assert sim.github.token not in path.read_text() and "demo" not in path.read_text()


@pytest.mark.parametrize("sim", [fast_scenario(totp_secret="JBSWY3DPEHPK3PXP")], indirect=True)
async def test_write_config_includes_the_totp_secret_file(sim: Simulator, sim_config: Path) -> None:
    cfg = load_config(sim_config)
    secrets = resolve_secrets(cfg, env={}, use_gh=False)
    assert secrets.totp_secret.get_secret_value() == "JBSWY3DPEHPK3PXP"


async def test_simulator_is_an_async_context_manager() -> None:
    scenario = fast_scenario(hosts=[HostSpec("solo")], prs=[])
    async with Simulator(scenario) as sim:
        async with httpx.AsyncClient(verify=False) as http:
            assert (await http.get(sim.dashboard.url + "/health")).status_code == 200
        assert list(sim.dashboard.hosts) == ["solo"]
    assert sim.dashboard.url and sim.github.url
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(verify=False) as http:
            await http.get(sim.dashboard.url + "/health")


def test_simulator_thread_runs_hooks_on_its_loop(sim_thread: SimulatorThread) -> None:
    sim = sim_thread.sim
    assert httpx.get(sim.dashboard.url + "/health", verify=False).json() == {"status": "ok"}
    sim_thread.call(sim.dashboard.set_online, "hsb1", False)
    assert sim_thread.call(lambda: sim.dashboard.hosts["hsb1"].status) == "offline"

    async def version() -> int:
        await asyncio.sleep(0)
        return sim.dashboard.version

    assert sim_thread.call(version) > 0


def test_simulator_thread_context_stops_the_servers() -> None:
    with SimulatorThread(fast_scenario(hosts=[HostSpec("solo")], prs=[])) as sim:
        url = sim.dashboard.url
        assert httpx.get(url + "/health", verify=False).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", verify=False)


def test_fast_scenario_rejects_unknown_fields() -> None:
    assert fast_scenario(speed=7.0).speed == 7.0
    with pytest.raises(TypeError):
        fast_scenario(sped=7.0)


# --- nfu-tui sim ----------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "nfu_tui", "sim", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_cli_prints_json_first_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = _cli("--hosts", "20", "--speed", "50", "--write-config", str(tmp_path / "cfg"))
    try:
        first = proc.stdout.readline()
        info = json.loads(first)
        assert set(info) == {"github_url", "dashboard_url", "repo", "token", "password"}
        assert httpx.get(info["dashboard_url"] + "/health", verify=False).status_code == 200
        gh = httpx.get(f"{info['github_url']}/repos/{info['repo']}/pulls", verify=False,
                       headers={"Authorization": f"Bearer {info['token']}"})
        assert gh.status_code == 200 and gh.json()[0]["number"] == 42
        assert load_config(tmp_path / "cfg" / "config.toml").dashboard.url == info["dashboard_url"]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=SAFETY)
        out, err = proc.stdout.read(), proc.stderr.read()  # not communicate(): readline() may hold buffered lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "config written" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "{missing}"], "cannot read scenario"),
        (["--scenario", "{bad}"], "unknown fault(s) explode"),
        (["--hosts", "0"], "--hosts must be between 1 and 5000"),
        (["--speed", "-1"], "--speed must be positive"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[hosts]]\nname = "x"\nfaults = ["explode"]\n', encoding="utf-8")
    args = [a.format(missing=tmp_path / "missing.toml", bad=bad) for a in args]
    proc = subprocess.run([sys.executable, "-m", "nfu_tui", "sim", *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfu-tui sim: ") and message in lines[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hosts = 3\n", "hosts must be an array of tables"),
        ('seed = "x"\n', "scenario.seed"),
        ("speed = true\n", "scenario.speed"),
        ('[[prs]]\nnumber = "42"\n', "prs[0].number"),
        ('[[hosts]]\nname = "a"\nonline = 1\n', "hosts[0].online"),
        ('[[hosts]]\nname = "a"\nfaults = ["explode"]\n', "unknown fault(s) explode"),
    ],
)
def test_bad_scenarios_are_one_clear_error(tmp_path, text: str, message: str) -> None:
    from nfu_tui.sim.scenario import ScenarioError, load_scenario

    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=re.escape(message)):
        load_scenario(path)
