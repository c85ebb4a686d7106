"""The SSH fleet backend against real OpenSSH servers on 127.0.0.1 (tests/sshbed.py).

Outcomes are judged by the hosts' own state directories (generation, running revision,
whether the switch process still lives), not by what the backend says.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from nfu_tui.backends.ssh import HostKeyRefused, SshFleet, SshHost, git_blob_hash, reboot_needed
from nfu_tui.cli import main
from nfu_tui.core.live import LiveFleet
from nfu_tui.core.store import Store
from nfu_tui.models import CompartmentState
from nfu_tui.sim.gitrepo import GitRepo, Person
from nfu_tui.sim.scenario import HostSpec
from nfu_tui.sim.testing import fast_scenario

sys.path.insert(0, str(Path(__file__).parent))
from sshbed import SshBed, ensure_sshd  # noqa: E402

NO_DASHBOARD_HOSTS = fast_scenario(hosts=[], speed=400.0)


class RepoGitHub:
    """The three GitHub reads the backend makes, answered from an in-memory repository (port stand-in)."""

    def __init__(self, repo: GitRepo) -> None:
        self.repo = repo

    async def default_branch(self) -> str:
        return "main"

    async def branch_head(self, branch: str) -> str:
        return self.repo.refs[branch]

    async def file_at(self, path: str, ref: str) -> bytes:
        return self.repo.commits[ref].tree[path]


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    r = GitRepo(salt="ssh-tests")
    me = Person("Admin", "admin@example.org", 0)
    c = r.commit({"flake.lock": b'{"nodes": {}}\n', "flake.nix": b"{ }\n"}, [], "Initial commit", me)
    r.refs["main"] = c.sha
    r.export(tmp_path / "remote.git")
    return r


@pytest.fixture
def bed(tmp_path: Path, repo: GitRepo) -> Iterator[SshBed]:
    ensure_sshd()
    b = SshBed(tmp_path / "bed", tmp_path / "remote.git")
    b.setup()
    yield b
    b.close()


def fleet_for(bed: SshBed, github: Any = None, **kw: Any) -> SshFleet:
    hosts = [SshHost(name, "root", "127.0.0.1", h.port, repo_dir=str(h.repo), test_command=kw.pop(f"tests_{name}", ""))
             for name, h in bed.hosts.items()]
    return SshFleet(hosts, known_hosts=bed.known_hosts, identity_file=bed.identity, connect_timeout=3,
                    poll_seconds=kw.pop("poll_seconds", 30), github=github, **kw)


async def finished(live: LiveFleet, command_id: str, timeout: float = 30) -> Any:
    return await live.wait_for_command(command_id, timeout)


# --- probes ---------------------------------------------------------------------------


def test_reboot_need_is_unknown_when_a_link_is_unreadable() -> None:
    same = {f"{w}_{link}": f"/nix/store/{link}-1" for w in ("current", "booted") for link in ("kernel", "initrd", "kernel-modules")}
    assert reboot_needed(same) == (False, "")
    assert reboot_needed(same | {"booted_kernel": "/nix/store/kernel-0"})[0] is True
    needed, why = reboot_needed(same | {"booted_initrd": ""})
    assert needed is None and "unreadable" in why


async def test_probe_fills_every_compartment_from_the_hosts(bed: SshBed, repo: GitRepo) -> None:
    ok, degraded, unknown = bed.add("ok"), bed.add("degraded"), bed.add("unknown")
    degraded.knob("failed-units", "nginx.service\npostgresql.service")
    (degraded.state / "store" / "kernel-6.1").touch()
    (degraded.state / "run" / "booted-system").unlink()  # booted an older kernel
    (degraded.state / "store" / "sys-0").mkdir()
    for f in ("kernel", "initrd", "kernel-modules"):
        (degraded.state / "store" / "sys-0" / f).symlink_to("../kernel-6.1")
    (degraded.state / "run" / "booted-system").symlink_to(degraded.state / "store" / "sys-0")
    (unknown.state / "run" / "booted-system").unlink()
    async with fleet_for(bed, RepoGitHub(repo)) as fleet:
        snap = await fleet.full_state()
    head = repo.refs["main"]
    h = snap.hosts["ok"]
    assert h.online and h.generation == head and h.reboot_needed is False
    assert [h.compartment(c).state for c in ("agent", "git", "lock", "system")] == [CompartmentState.OK] * 4
    assert h.system.message == f"running; runs {head[:7]}"
    d = snap.hosts["degraded"]
    assert d.system.state is CompartmentState.ERROR and d.reboot_needed is True
    assert "failed units nginx.service, postgresql.service" in d.system.message and "reboot needed" in d.system.message
    u = snap.hosts["unknown"]
    assert u.reboot_needed is None and "reboot need unknown" in u.system.message


async def test_git_and_lock_compare_with_the_default_branch_head(bed: SshBed, repo: GitRepo, tmp_path: Path) -> None:
    bed.add("web")
    me = Person("Bot", "bot@example.org", 0)
    new = repo.commit({"flake.lock": b'{"nodes": {"nixpkgs": {}}}\n', "flake.nix": b"{ }\n"}, [repo.refs["main"]],
                      "flake.lock: Update", me)
    repo.refs["main"] = new.sha
    async with fleet_for(bed, RepoGitHub(repo)) as fleet:
        h = (await fleet.full_state()).hosts["web"]
    assert h.git.state is CompartmentState.OUTDATED and f"main is at {new.sha[:7]}" in h.git.message
    assert h.lock.state is CompartmentState.OUTDATED
    assert git_blob_hash(new.tree["flake.lock"]) != git_blob_hash(repo.commits[new.parents[0]].tree["flake.lock"])


# --- host keys ---------------------------------------------------------------------------


async def test_unknown_and_changed_host_keys_are_refused_with_the_fingerprint(bed: SshBed) -> None:
    stranger = bed.add("stranger", trusted=False)
    changed = bed.add("changed")
    changed.stop()
    bed.new_host_key(changed)  # reinstalled, or someone in the middle
    changed.start()
    async with fleet_for(bed) as fleet:
        for host, word in ((stranger, "unknown host key"), (changed, "host key CHANGED")):
            with pytest.raises(HostKeyRefused) as caught:
                await fleet._connect(host.name)
            assert word in caught.value.message and host.name in caught.value.message
            assert bed.fingerprint(host) in caught.value.message
        snap = await fleet.full_state()
        result = await fleet.dispatch("switch", ["changed"])
    refused = snap.hosts["stranger"]
    assert not refused.online and refused.agent.state is CompartmentState.ERROR  # loud: not "unreachable"
    assert bed.fingerprint(stranger) in refused.agent.message and "unknown host key" in refused.agent.message
    assert refused.system.state is CompartmentState.UNKNOWN  # nothing is known about the system
    assert result[0].blocked and result[0].code == "offline"
    assert changed.switches == 0
    assert bed.known_hosts.read_text().count("\n") == 1  # nothing was added


# --- operations ---------------------------------------------------------------------------


async def test_switch_streams_output_and_verifies_the_running_revision(bed: SshBed) -> None:
    web = bed.add("web")
    web.knob("next-kernel", "6.13.0")
    web.knob("switch-steps", "10")
    async with fleet_for(bed) as fleet:
        live = LiveFleet(fleet)
        await live.start()
        try:
            (res,) = await fleet.dispatch("switch", ["web"])
            assert await live.wait_until(lambda: live.host("web").pending_command == "switch", 5)
            cmd = await finished(live, res.command_id)
            assert cmd.status == "SUCCESS", cmd
            lines = live.output_lines("web", res.command_id)
            assert "building the system configuration..." in lines and any("generation 2" in x for x in lines)
            assert await live.wait_until(lambda: live.host("web").reboot_needed is True, 5)
        finally:
            await live.stop()
    assert web.generation == 2 and web.current_rev == web.checkout


async def test_failed_build_and_new_failed_units_fail_the_switch(bed: SshBed) -> None:
    broken, degrading = bed.add("broken"), bed.add("degrading")
    broken.knob("fail-build")
    degrading.knob("units-fail-after-switch", "nginx.service")
    async with fleet_for(bed) as fleet:
        live = LiveFleet(fleet)
        await live.start()
        try:
            results = await fleet.dispatch("switch", ["broken", "degrading"])
            b, d = [await finished(live, r.command_id) for r in results]
        finally:
            await live.stop()
    assert b.status == "ERROR" and b.exit_code == 1
    assert any("failed with exit code 1" in x for x in live.output_lines("broken", b.id))
    assert d.status == "ERROR" and "newly failed units nginx.service" in d.error
    assert broken.generation == 1 and degrading.generation == 2


async def test_cancel_stops_the_remote_command(bed: SshBed) -> None:
    slow = bed.add("slow")
    slow.knob("switch-steps", "100")  # 10 s
    async with fleet_for(bed) as fleet:
        live = LiveFleet(fleet)
        await live.start()
        try:
            (res,) = await fleet.dispatch("switch", ["slow"])
            assert await live.wait_until(lambda: len(live.output_lines("slow", res.command_id)) >= 3, 10)
            pid = int((slow.state / "switch-pid").read_text())
            await fleet.timeout_action("slow", "ignore")
            cmd = await finished(live, res.command_id, 15)
        finally:
            await live.stop()
    assert cmd.status == "KILLED" and "stopped on request" in cmd.error
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the stand-in nixos-rebuild is gone, not just our session
    assert slow.generation == 1 and slow.switches == 0


async def test_a_switch_survives_the_host_dropping_off_the_network(bed: SshBed) -> None:
    flaky = bed.add("flaky")
    flaky.knob("switch-steps", "30")  # 3 s
    async with fleet_for(bed) as fleet:
        live = LiveFleet(fleet)
        await live.start()
        try:
            (res,) = await fleet.dispatch("switch", ["flaky"])
            assert await live.wait_until(lambda: len(live.output_lines("flaky", res.command_id)) >= 3, 10)
            flaky.stop()
            assert await live.wait_until(lambda: not live.host("flaky").online, 10)
            assert live.host("flaky").agent.state is CompartmentState.UNREACHABLE
            assert not live.command(res.command_id).terminal  # no verdict without evidence
            await asyncio.sleep(1)
            flaky.start()
            assert await live.wait_until(lambda: live.host("flaky").online, 10)  # shown back while following
            cmd = await finished(live, res.command_id, 40)
            lines = live.output_lines("flaky", res.command_id)
        finally:
            await live.stop()
    assert cmd.status == "SUCCESS", cmd
    assert flaky.generation == 2 and flaky.current_rev == flaky.checkout
    assert len([x for x in lines if x.startswith("building [")]) == 30  # every line once, across the reconnect


async def test_rollback_returns_to_the_previous_generation(bed: SshBed) -> None:
    from nfu_tui.config import Config
    from nfu_tui.core.rollback import RollbackManager

    web = bed.add("web")
    async with fleet_for(bed) as fleet:
        live = LiveFleet(fleet)
        await live.start()
        try:
            (res,) = await fleet.dispatch("switch", ["web"])
            assert (await finished(live, res.command_id)).status == "SUCCESS"
            assert web.generation == 2
            with Store() as store:
                manager = RollbackManager(None, fleet, live, store, Config(), run_engine=lambda fn: fn(None))
                result = await manager.rollback_host("web", actor="test")
        finally:
            await live.stop()
    assert result.ok, result
    assert web.generation == 1


async def test_output_reads_the_newest_commands_log_for_the_backfill(bed: SshBed) -> None:
    """``output`` (what the engine backfills a finished command's tail from) reads the host's log."""
    broken = bed.add("broken")
    broken.knob("fail-build")
    async with fleet_for(bed) as fleet:
        live = LiveFleet(fleet)
        await live.start()
        try:
            (res,) = await fleet.dispatch("switch", ["broken"])
            assert (await finished(live, res.command_id)).status == "ERROR"
            streamed = live.output_lines("broken", res.command_id)
            stored = await fleet.output("broken", 500)
            assert stored == [line for line in streamed if line], (stored, streamed)  # the same log
            assert any(line.startswith("error: builder") for line in stored), stored
            assert await fleet.output("broken", 1) == stored[-1:]
        finally:
            await live.stop()


async def test_a_new_process_finds_and_follows_a_running_command(bed: SshBed) -> None:
    slow = bed.add("slow")
    slow.knob("switch-steps", "20")
    async with fleet_for(bed) as first:
        (res,) = await first.dispatch("switch", ["slow"])
    # The first process is gone (its connection closed); the switch runs on.
    async with fleet_for(bed) as second:
        live = LiveFleet(second)
        await live.start()
        try:
            states = await second.command_states()
            assert states["slow"].id == res.command_id and not states["slow"].terminal
            cmd = await finished(live, res.command_id)
        finally:
            await live.stop()
    assert cmd.status == "SUCCESS" and slow.generation == 2


# --- the CLI, against the simulated GitHub --------------------------------------------------


def write_config(sim: Any, bed: SshBed, tmp_path: Path, hosts: dict[str, dict]) -> str:
    cfg = sim.write_config(tmp_path / "cfg")
    data = __import__("tomllib").loads(cfg.read_text())
    data.pop("dashboard")
    data |= bed.config()
    data["hosts"] = {name: {**row, **hosts.get(name, {})} for name, row in bed.toml_hosts().items()}
    data["flake_updates"] = {"automation": {"canary_wait_minutes": 0}}
    cfg.write_text(tomli_w.dumps(data))
    return str(cfg)


@pytest.fixture
def sim_bed(sim_thread: Any, tmp_path: Path) -> Iterator[tuple[Any, SshBed]]:
    """The simulated GitHub's repository exported to a bare repo (re-exported whenever a branch moves)."""
    ensure_sshd()
    sim = sim_thread.sim
    remote = tmp_path / "remote.git"
    sim_thread.call(sim.github.export_git, remote)
    sim_thread.call(sim.github.on_branch_moved, lambda _branch, _sha: sim.github.export_git(remote))
    b = SshBed(tmp_path / "bed", remote)
    b.setup()
    yield sim, b
    b.close()


@pytest.mark.parametrize("sim_thread", [NO_DASHBOARD_HOSTS], indirect=True)
def test_status_over_ssh(sim_bed: tuple[Any, SshBed], tmp_path: Path, capsys: Any) -> None:
    sim, bed = sim_bed
    bed.add("web1")
    bed.add("web2", trusted=False)
    bed.add("down").stop()
    cfg = write_config(sim, bed, tmp_path, {"web1": {"role": "vm/dc"}})
    code = main(["--config", cfg, "status", "--json"])
    report = json.loads(capsys.readouterr().out)
    hosts = {h["id"]: h for h in report["hosts"]}
    assert code == 0 and report["dashboard"]["url"] == "ssh"
    assert hosts["web1"]["online"] and hosts["web1"]["compartments"]["git"]["state"] == "ok"
    assert hosts["web1"]["reboot_needed"] is False and hosts["web1"]["system_generation"] == 1
    assert (hosts["web1"]["host_type"], hosts["web1"]["device_type"], hosts["web1"]["location"]) == ("nixos", "vm", "dc")
    assert hosts["down"]["compartments"]["agent"] == {
        "state": "unreachable", "message": f"down (root@127.0.0.1:{bed.hosts['down'].port}) unreachable: Connection refused"}
    assert not hosts["web2"]["online"] and hosts["web2"]["compartments"]["agent"]["state"] == "error"
    assert bed.fingerprint(bed.hosts["web2"]) in hosts["web2"]["compartments"]["agent"]["message"]
    main(["--config", cfg, "status"])
    text = capsys.readouterr().out
    assert "unknown host key" in text and "web2" in text
    assert f"agent: down (root@127.0.0.1:{bed.hosts['down'].port}) unreachable: Connection refused" in text
    assert "down  offline  ⊘ ? ? ? ?" in text


@pytest.mark.parametrize("sim_thread", [NO_DASHBOARD_HOSTS], indirect=True)
def test_deploy_with_a_canary_and_a_failing_host(sim_bed: tuple[Any, SshBed], tmp_path: Path, capsys: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from nfu_tui.clients import _github_protocol

    monkeypatch.setattr(_github_protocol, "mergeable_poll_delays", lambda total=30.0: (0.05,) * int(total / 0.05))
    sim, bed = sim_bed
    canary, broken, later = bed.add("c1"), bed.add("h2"), bed.add("h3")
    broken.knob("fail-build")
    cfg = write_config(sim, bed, tmp_path, {"c1": {"canary": True}, "h2": {"priority": 2}, "h3": {"priority": 3}})
    code = main(["--config", cfg, "deploy", "--pr", "42", "--yes"])
    out, err = capsys.readouterr()
    merge_sha = sim.github.default_branch_head()[0]
    assert code == 1, out + err
    assert canary.checkout == merge_sha and canary.current_rev == merge_sha  # pulled and switched exactly the merge
    assert broken.checkout == merge_sha and broken.generation == 1  # pulled; its build failed
    assert later.generation == 1 and later.checkout != merge_sha  # stopped on the first failure
    assert "h2: failed (switch)" in out and "failed with exit code 1" in out, out
    assert "h3: skipped" in out, out


@pytest.mark.parametrize("sim", [NO_DASHBOARD_HOSTS], indirect=True)
async def test_deploy_killed_mid_switch_then_resumed(sim: Any, tmp_path: Path) -> None:
    ensure_sshd()
    remote = tmp_path / "remote.git"
    sim.github.export_git(remote)
    sim.github.on_branch_moved(lambda _branch, _sha: sim.github.export_git(remote))
    bed = SshBed(tmp_path / "bed", remote)
    bed.setup()
    try:
        first, slow = bed.add("a1"), bed.add("a2")
        slow.knob("switch-steps", "40")
        cfg = write_config(sim, bed, tmp_path, {"a1": {"priority": 1}, "a2": {"priority": 2}})
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nfu_tui", "--config", cfg, "deploy",
                                                    "--pr", "42", "--yes", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env)
        async with asyncio.timeout(60):
            while not (slow.state / "switch-pid").exists():  # a2's switch is building
                assert proc.returncode is None
                await asyncio.sleep(0.05)
        proc.kill()  # SIGKILL: no cleanup at all
        await proc.wait()
        with Store() as store:
            (run,) = store.unfinished_runs()
            assert run.host_outcomes == {"a1": "ok"} and run.hosts_in_flight == {"a2": "switch"}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nfu_tui", "--config", cfg, "deploy",
                                                    "--resume", "--yes", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        text = out.decode()
        merge_sha = sim.github.default_branch_head()[0]
        assert proc.returncode == 0, text + err.decode()
        assert "PR #42: succeeded (2 ok)" in text, text
        assert first.current_rev == merge_sha and slow.current_rev == merge_sha
        assert first.switches == 1 and slow.switches == 1  # the interrupted switch was followed, not repeated
    finally:
        bed.close()


@pytest.fixture
async def async_bed(sim: Any, tmp_path: Path) -> Any:
    """``sim`` on this loop, its repository exported for the hosts (re-exported whenever a branch moves)."""
    ensure_sshd()
    remote = tmp_path / "remote.git"
    sim.github.export_git(remote)
    sim.github.on_branch_moved(lambda _branch, _sha: sim.github.export_git(remote))
    b = SshBed(tmp_path / "bed", remote)
    b.setup()
    yield b
    b.close()


@pytest.mark.parametrize("sim", [NO_DASHBOARD_HOSTS], indirect=True)
async def test_auto_once_merges_and_deploys_over_ssh_and_history_lists_it(sim: Any, async_bed: SshBed,
                                                                          tmp_path: Path) -> None:
    hosts = [async_bed.add("c1"), async_bed.add("h2")]
    cfg = write_config(sim, async_bed, tmp_path, {"c1": {"canary": True}})
    data = __import__("tomllib").loads(Path(cfg).read_text())
    data["flake_updates"] = {"automation": {"enabled": True, "delay_minutes": 0, "canary_wait_minutes": 0}}
    Path(cfg).write_text(tomli_w.dumps(data))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nfu_tui", "--config", cfg, "auto", "--once",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert proc.returncode == 0, (err.decode(), lines)
    done = {line["host"]: line["outcome"] for line in lines if line["event"] == "host_finished"}
    assert done == {"c1": "ok", "h2": "ok"}, lines
    merge_sha = sim.github.default_branch_head()[0]
    assert all(h.current_rev == merge_sha and h.switches == 1 for h in hosts)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nfu_tui", "--config", cfg, "history",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "#42" in out.decode() and "succeeded" in out.decode(), out.decode()


@pytest.mark.parametrize("sim", [NO_DASHBOARD_HOSTS], indirect=True)
async def test_auto_with_preview_before_merge_stops_on_a_host_that_does_not_build(sim: Any, async_bed: SshBed,
                                                                                  tmp_path: Path) -> None:
    ok, broken = async_bed.add("ok"), async_bed.add("broken")
    broken.knob("fail-build")
    cfg = write_config(sim, async_bed, tmp_path, {})
    data = __import__("tomllib").loads(Path(cfg).read_text())
    data["flake_updates"] = {"automation": {"enabled": True, "delay_minutes": 0, "canary_wait_minutes": 0,
                                            "preview_before_merge": True}}
    Path(cfg).write_text(tomli_w.dumps(data))
    base = sim.github.default_branch_head()[0]

    async def auto_once() -> list[dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "nfu_tui", "--config", cfg, "auto",
                                                    "--once", stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        return [json.loads(line) for line in out.decode().splitlines()]

    lines = await auto_once()
    # Nothing merged, nothing switched; the decision and the notification name the host that failed to build.
    assert sim.github.default_branch_head()[0] == base
    assert not [r for r in sim.github.request_log if r.method == "PUT" and r.path.endswith("/merge")]
    assert ok.switches == 0 and broken.switches == 0 and ok.builds == 1 and broken.builds == 1
    assert any(line["event"] == "decision" and "PR #42 does not build on broken" in line["text"] for line in lines), lines
    notes = [line for line in lines if line["event"] == "notify"]
    assert [n["title"] for n in notes if "does not build" in n["title"]] == ["PR #42 does not build on broken"], lines
    # Another round for the same head: the cached result still blocks, without building or notifying again.
    lines = await auto_once()
    assert ok.builds == 1 and broken.builds == 1 and sim.github.default_branch_head()[0] == base
    assert any(line["event"] == "decision" and line["state"] == "blocked" and "does not build on broken" in line["text"]
               for line in lines), lines  # decided from the cache, before any merge step
    assert not [line for line in lines if line["event"] == "notify" and "does not build" in line["title"]]
    # Fixed (a new head would be built anew; here the cached failure is dropped): the merge goes ahead.
    broken.clear("fail-build")
    from nfu_tui.core.preview import PreviewCache

    PreviewCache().path.unlink()
    await auto_once()
    merge_sha = sim.github.default_branch_head()[0]
    assert merge_sha != base and ok.current_rev == merge_sha and broken.current_rev == merge_sha


@pytest.mark.parametrize("sim", [NO_DASHBOARD_HOSTS], indirect=True)
async def test_the_tui_shows_the_ssh_fleet(sim: Any, async_bed: SshBed, tmp_path: Path) -> None:
    from nfu_tui.config import load_config, resolve_secrets
    from nfu_tui.core.service import FleetService
    from nfu_tui.ui.app import NfuApp
    from nfu_tui.ui.widgets.host_grid import HostGrid

    from textual.widgets import Static

    from nfu_tui.ui.screens.host_detail import HostDetailScreen

    async_bed.add("web1")
    async_bed.add("web2").knob("failed-units", "nginx.service")
    async_bed.add("down").stop()
    cfg = load_config(write_config(sim, async_bed, tmp_path, {"web1": {"role": "server/cloud"}}))
    app = NfuApp(FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False)), flush_interval=0.02)
    async with app.run_test(size=(120, 40)) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        grid = app.screen_stack[0].query_one(HostGrid)
        while not (app.service.status.fleet == "live" and grid.total == 3
                   and app.service.host("web2").system.state is CompartmentState.ERROR
                   and app.service.host("down").agent.state is CompartmentState.UNREACHABLE):
            assert loop.time() < deadline, app.service.status
            await pilot.pause(0.05)
        assert app.service.host("web1").git.state is CompartmentState.OK
        await pilot.pause(0.1)
        lines = [grid.render_line(y).text.lstrip("▶◆ ") for y in range(1, 4)]
        rows = {line.split()[0]: line.split() for line in lines}
        assert rows["down"][1:3] == ["⊘", "?"] and "offline" in rows["down"], lines
        assert "server/cloud" in rows["web1"] and rows["web1"][1] == "✓", lines
        await pilot.press("enter")  # the cursor is on the first host: down
        assert isinstance(app.screen, HostDetailScreen)
        await pilot.pause(0.1)
        shown = app.screen.query_one("#host-compartments", Static)
        table = "\n".join(shown.render_line(y).text for y in range(shown.size.height))
        assert "⊘ unreachable" in table and "unreachable: Connection refused" in table
        from nfu_tui.ui.copy import host_error_lines

        copied, _ = host_error_lines(app.service, "down")  # y copies the reason, as it copies an error
        assert copied.startswith("down agent: down (root@127.0.0.1:") and copied.endswith("Connection refused")


@pytest.mark.parametrize("sim", [NO_DASHBOARD_HOSTS], indirect=True)
async def test_the_tui_previews_the_focused_pr_per_host_and_the_plan_shows_it(sim: Any, async_bed: SshBed,
                                                                             tmp_path: Path) -> None:
    from textual.widgets import Static

    from nfu_tui.config import load_config, resolve_secrets
    from nfu_tui.core.service import FleetService
    from nfu_tui.ui.app import NfuApp
    from nfu_tui.ui.screens.confirm import DeployConfirmScreen
    from nfu_tui.ui.screens.help import binding_sections
    from nfu_tui.ui.screens.preview import PreviewScreen

    kernel, broken = async_bed.add("kernel"), async_bed.add("broken")
    kernel.knob("closure-diff", "openssl: 3.4.0 → 3.4.1, -12.0 KiB\nfirefox: 140.0.4 → 140.0.5, +1228.8 KiB")
    kernel.knob("next-kernel", "6.13.0")
    broken.knob("fail-build")
    assert any(b.key == "v" and b.tooltip for _, bindings in binding_sections() for b in bindings)  # help, palette
    cfg = load_config(write_config(sim, async_bed, tmp_path, {}))
    app = NfuApp(FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False)), flush_interval=0.02)
    async with app.run_test(size=(120, 40)) as pilot:
        loop = asyncio.get_running_loop()

        async def until(predicate: Any, what: str) -> None:
            deadline = loop.time() + 30
            while not predicate():
                assert loop.time() < deadline, what
                await pilot.pause(0.05)

        await until(lambda: app.service.status.fleet == "live" and app.service.pr_state(42) is not None
                    and app.service.pr_state(42).explanation is not None, "fleet and PR #42 explained")
        await pilot.press("v")
        assert isinstance(app.screen, PreviewScreen)
        await until(lambda: not app.screen.running and len(app.screen.results) == 2, "both hosts built")
        text = str(app.screen.query_one("#preview", Static).render())
        assert "kernel: builds; 3 package change(s) (1 security fix), closure +2240.8 KiB; reboot needed" in text
        assert text.index("⚠ firefox: 140.0.4 → 140.0.5") < text.index("openssl: 3.4.0 → 3.4.1")
        assert "broken: the configuration does not build" in text and "failed with exit code 1" in text
        assert kernel.switches == 0 and kernel.builds == 1
        await pilot.press("escape")
        await pilot.press("m")  # the plan shows the cached previews of this head
        assert isinstance(app.screen, DeployConfirmScreen)
        plan = str(app.screen.query_one("#plan", Static).render())
        assert "Preview (built at this head, not activated" in plan
        assert "broken: the configuration does not build" in plan and "kernel: builds; 3 package change(s)" in plan
        await pilot.press("escape")
        assert kernel.builds == 1 and kernel.switches == 0  # previewing and closing the plan changed nothing


@pytest.mark.parametrize("sim_thread", [NO_DASHBOARD_HOSTS], indirect=True)
def test_a_host_lost_mid_run_is_queued_and_deployed_on_resume(sim_bed: tuple[Any, SshBed], tmp_path: Path,
                                                              capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from nfu_tui.clients import _github_protocol

    monkeypatch.setattr(_github_protocol, "mergeable_poll_delays", lambda total=30.0: (0.05,) * int(total / 0.05))
    sim, bed = sim_bed
    first, lost = bed.add("a1"), bed.add("a2")
    first.knob("switch-steps", "15")
    cfg = write_config(sim, bed, tmp_path, {"a1": {"priority": 1}, "a2": {"priority": 2}})

    def drop_a2_during_a1s_switch() -> None:
        deadline = time.monotonic() + 60
        while not (first.state / "switch-pid").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        lost.stop()

    dropper = threading.Thread(target=drop_a2_during_a1s_switch)
    dropper.start()
    code = main(["--config", cfg, "deploy", "--pr", "42", "--yes"])
    dropper.join()
    out, err = capsys.readouterr()
    merge_sha = sim.github.default_branch_head()[0]
    assert code == 0, out + err  # a queued offline host is not a failure
    assert "a2 still offline" in out, out
    assert first.current_rev == merge_sha and lost.generation == 1
    lost.start()
    code = main(["--config", cfg, "deploy", "--resume", "--yes"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert lost.current_rev == merge_sha and first.switches == 1, out


# --- the demo's in-process SSH hosts (no sshd, no root) ----------------------------------------


DEMO_HOSTS = fast_scenario(hosts=[HostSpec("a1", "server", "cloud"), HostSpec("a2", faults={"switch_fails"}),
                                  HostSpec("a3", faults={"offline"}),
                                  HostSpec("m4", "laptop", "work", host_type="macos")], speed=400.0)


@pytest.mark.parametrize("sim_thread", [DEMO_HOSTS], indirect=True)
def test_demo_ssh_hosts_serve_the_scenario(sim_thread: Any, tmp_path: Path, capsys: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from nfu_tui.clients import _github_protocol
    from nfu_tui.commands.demo import DEMO_SETTINGS
    from nfu_tui.sim.runner import _merge
    from nfu_tui.sim.sshhosts import missing_tools, serve_scenario

    if missing_tools():
        pytest.skip(f"the simulated SSH hosts need {', '.join(missing_tools())}")
    monkeypatch.setattr(_github_protocol, "mergeable_poll_delays", lambda total=30.0: (0.05,) * int(total / 0.05))
    sim = sim_thread.sim
    server, ssh_settings = sim_thread.call(serve_scenario, sim, tmp_path / "hosts")
    try:
        settings = {"flake_updates": {"automation": {"canary_wait_minutes": 0}}, "hosts": {"a1": {"canary": True}}}
        _merge(settings, ssh_settings)
        assert set(DEMO_SETTINGS) <= {"github", "flake_updates", "hosts"}
        cfg = str(sim.write_config(tmp_path / "cfg", **settings))
        assert main(["--config", cfg, "status"]) == 0
        out = capsys.readouterr().out
        assert "Fleet: 4 hosts, 3 online  (ssh)" in out and "agent: a3 (" in out and "unreachable: Connection refused" in out
        assert main(["--config", cfg, "status", "--json"]) == 0
        hosts = {h["id"]: h for h in json.loads(capsys.readouterr().out)["hosts"]}
        assert hosts["a3"]["compartments"]["agent"]["state"] == "unreachable"
        assert "Connection refused" in hosts["a3"]["compartments"]["agent"]["message"]
        assert [hosts[h]["host_type"] for h in ("a1", "m4")] == ["nixos", "macos"]  # m4's uname says Darwin
        assert (hosts["a1"]["device_type"], hosts["a1"]["location"], hosts["a1"]["system_generation"]) == ("server", "cloud", 1)
        code = main(["--config", cfg, "deploy", "--pr", "42", "--yes", "--hosts", "a1,a2"])
        out, err = capsys.readouterr()
        main(["--config", cfg, "status", "--json"])
        after = {h["id"]: h for h in json.loads(capsys.readouterr().out)["hosts"]}
    finally:
        sim_thread.call(server.close)
    merge_sha = sim.github.default_branch_head()[0]
    rev = (tmp_path / "hosts" / "a1" / "state" / "run" / "current-system" / "rev").read_text().strip()
    assert code == 1 and rev == merge_sha, out + err
    assert "a2: failed (switch)" in out and "failed with exit code 1" in out
    # The demo's update brings a new kernel: a1 switched and needs a reboot; a2 (build failed) and m4 do not know one.
    assert (after["a1"]["reboot_needed"], after["a1"]["system_generation"]) == (True, 2)
    assert after["a2"]["reboot_needed"] is False and after["m4"]["reboot_needed"] is None


def test_the_grid_and_host_detail_show_a_reboot_badge_only_when_known_needed() -> None:
    from nfu_tui.models import Host
    from nfu_tui.ui import fleetview as fv

    meta = fv.HostMeta(canary=True)
    assert fv.badges(meta, Host(id="a", reboot_needed=True))[0] == ("reboot", "outdated")
    for unknown_or_no in (None, False):
        assert ("reboot", "outdated") not in fv.badges(meta, Host(id="a", reboot_needed=unknown_or_no))


async def test_the_test_op_runs_the_hosts_tests_and_fills_the_tests_compartment(bed: SshBed) -> None:
    bed.add("good")
    bed.add("bad")
    bed.add("none")
    async with fleet_for(bed, tests_good="test -f flake.nix && echo checks passed",
                         tests_bad="echo 'check vm-test failed' >&2; exit 3") as fleet:
        live = LiveFleet(fleet)
        await live.start()
        try:
            good, bad, none = await fleet.dispatch("test", ["good", "bad", "none"])
            assert none.blocked and none.code == "no_tests"
            g, b = await finished(live, good.command_id), await finished(live, bad.command_id)
            assert await live.wait_until(lambda: (live.host("bad").tests.state, live.host("good").tests.state)
                                         == (CompartmentState.ERROR, CompartmentState.OK), 10)
            assert "checks passed" in live.output_lines("good", g.id)
            assert "check vm-test failed" in live.output_lines("bad", b.id)
        finally:
            await live.stop()
    assert (g.status, b.status, b.exit_code) == ("SUCCESS", "ERROR", 3)


async def test_a_silent_host_neither_hangs_nor_delays_the_fleet(bed: SshBed, monkeypatch: pytest.MonkeyPatch) -> None:
    import nfu_tui.backends.ssh as ssh

    bed.add("web")
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never says a word
    port = silent.sockets[0].getsockname()[1]
    monkeypatch.setattr(ssh, "FIRST_PROBE_WAIT", 0.5)
    hosts = [SshHost("web", "root", "127.0.0.1", bed.hosts["web"].port, repo_dir=str(bed.hosts["web"].repo)),
             SshHost("silent", "root", "127.0.0.1", port)]
    fleet = SshFleet(hosts, known_hosts=bed.known_hosts, identity_file=bed.identity, connect_timeout=2)
    live = LiveFleet(fleet)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        await live.start()
        assert loop.time() - began < 1.9  # the first state did not wait for the silent host
        assert live.host("web").online and live.host("silent").status == "unknown"
        assert await live.wait_until(lambda: live.host("silent").status == "offline", 10)
        silent_host = live.host("silent")
        assert silent_host.agent.state is CompartmentState.UNREACHABLE and "timed out" in silent_host.agent.message
    finally:
        await live.stop()
        await fleet.aclose()
        silent.close()


# --- preview: what a PR would change, per host ---------------------------------------------------


@pytest.mark.parametrize("sim_thread", [NO_DASHBOARD_HOSTS], indirect=True)
def test_preview_shows_package_changes_reboot_needs_and_build_failures(sim_bed: tuple[Any, SshBed], tmp_path: Path,
                                                                       capsys: Any) -> None:
    sim, bed = sim_bed
    plain, kernel, broken = bed.add("plain"), bed.add("kernel"), bed.add("broken")
    for host in (plain, kernel):
        host.knob("closure-diff", "openssl: 3.4.0 → 3.4.1, -12.0 KiB\nfirefox: 140.0.4 → 140.0.5, +1228.8 KiB")
    kernel.knob("next-kernel", "6.13.0")
    broken.knob("fail-build")
    cfg = write_config(sim, bed, tmp_path, {})
    code = main(["--config", cfg, "preview", "--pr", "42", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # a host does not build
    hosts = {h["host"]: h for h in report["hosts"]}
    assert report["head_sha"] == sim.github.pr_head(42)
    assert hosts["plain"]["ok"] and hosts["plain"]["reboot_needed"] is False
    # The simulated PR's changelog fixes CVEs in firefox (not openssl): security fixes come first, with their ids.
    fixes = hosts["plain"]["changes"][0].pop("security_ids")
    assert fixes and all(i.startswith(("CVE-", "GHSA-")) for i in fixes)
    assert hosts["plain"]["changes"] == [{"name": "firefox", "change": "140.0.4 → 140.0.5", "size_kib": 1228.8},
                                         {"name": "openssl", "change": "3.4.0 → 3.4.1", "size_kib": -12.0,
                                          "security_ids": []}]
    assert hosts["kernel"]["reboot_needed"] is True
    assert {"name": "linux", "change": "6.12.1 → 6.13.0", "size_kib": 1024.0,
            "security_ids": []} in hosts["kernel"]["changes"]
    assert not hosts["broken"]["ok"] and hosts["broken"]["problem"] == "the configuration does not build"
    assert any("failed with exit code 1" in line for line in hosts["broken"]["last_lines"])
    # Nothing was activated, nothing merged, no checkout moved.
    assert all(h.generation == 1 and h.switches == 0 and h.checkout != report["head_sha"] for h in (plain, kernel, broken))
    assert not [r for r in sim.github.request_log if r.method == "PUT" and r.path.endswith("/pulls/42/merge")]
    # Cached by (host, head sha): a second run reuses the results without building again.
    builds = kernel.builds
    main(["--config", cfg, "preview", "--pr", "42", "--hosts", "kernel"])
    text = capsys.readouterr().out
    assert kernel.builds == builds
    assert ("kernel: builds; 3 package change(s) (1 security fix), closure +2240.8 KiB; "
            "reboot needed (kernel, initrd, kernel-modules") in text
    assert f"  ⚠ firefox: 140.0.4 → 140.0.5 (+1228.8 KiB) — security fix ({', '.join(fixes[:3])})" in text
    assert text.index("firefox") < text.index("openssl")
    main(["--config", cfg, "preview", "--pr", "42", "--hosts", "kernel", "--fresh"])
    capsys.readouterr()
    assert kernel.builds == builds + 1


# --- unreachable hosts: why, and back without a restart ----------------------------------------------


async def test_an_unreachable_host_says_why_and_is_reachable_again_when_it_is_back(bed: SshBed) -> None:
    web = bed.add("web")
    async with fleet_for(bed, poll_seconds=0.3) as fleet:
        live = LiveFleet(fleet)
        await live.start()
        try:
            assert live.host("web").agent.state is CompartmentState.OK and live.host("web").online
            web.stop()
            assert await live.wait_until(lambda: live.host("web").agent.state is CompartmentState.UNREACHABLE, 10)
            gone = live.host("web")
            assert not gone.online and "Connection refused" in gone.agent.message and "web" in gone.agent.message
            assert gone.system.state is CompartmentState.OK  # what the host said last is kept, as with the dashboard
            web.start()
            assert await live.wait_until(lambda: live.host("web").online, 10)
            back = live.host("web")
            assert back.agent.state is CompartmentState.OK and "reachable over SSH" in back.agent.message
        finally:
            await live.stop()


async def test_a_refused_login_is_unreachable_with_the_reason(bed: SshBed, tmp_path: Path) -> None:
    from nfu_tui.sim.sshhosts import ssh_keygen

    web = bed.add("web")
    stranger_key = tmp_path / "not-authorized"
    ssh_keygen(stranger_key)
    fleet = SshFleet([SshHost("web", "root", "127.0.0.1", web.port, repo_dir=str(web.repo))],
                     known_hosts=bed.known_hosts, identity_file=stranger_key, connect_timeout=3)
    async with fleet:
        h = (await fleet.full_state()).hosts["web"]
    assert not h.online and h.agent.state is CompartmentState.UNREACHABLE
    assert "authentication refused" in h.agent.message


# --- what the host is: type, generation, role ----------------------------------------------------------


async def test_the_probe_tells_the_system_kind_and_generation_and_the_config_the_role(bed: SshBed) -> None:
    from nfu_tui.config import Config
    from nfu_tui.core.plan import Tier, make_plan, tier_of
    from nfu_tui.core.preview import summary_line
    from nfu_tui.ui import fleetview as fv

    linux, mac = bed.add("web"), bed.add("mac", darwin=True)
    cfg = Config.model_validate({"fleet": {"backend": "ssh"}, "hosts": {
        "web": {"ssh": f"root@127.0.0.1:{linux.port}", "repo_dir": str(linux.repo), "role": "server/cloud"},
        "mac": {"ssh": f"root@127.0.0.1:{mac.port}", "repo_dir": str(mac.repo), "role": "laptop/work",
                "system": "darwin"}},
        "ssh": {"known_hosts": str(bed.known_hosts), "identity_file": str(bed.identity), "connect_timeout": 3}})
    async with SshFleet.from_config(cfg) as fleet:
        live = LiveFleet(fleet)
        await live.start()
        try:
            web, m = live.host("web"), live.host("mac")
            assert (web.host_type, web.device_type, web.location, web.system_generation) == ("nixos", "server", "cloud", 1)
            assert (m.host_type, m.device_type, m.location) == ("macos", "laptop", "work")
            assert m.reboot_needed is None and "reboot" not in m.system.message  # nix-darwin: no booted system
            assert m.agent.message == f"reachable over SSH (root@127.0.0.1:{mac.port})"
            built = await fleet.preview("mac", 42, "main", m.generation)
            assert built.ok and built.reboot_needed is None and built.reboot_why == ""
            assert summary_line(built) == "mac: builds; 0 package change(s), closure +0.0 KiB"
            (res,) = await fleet.dispatch("switch", ["web"])
            assert (await finished(live, res.command_id)).status == "SUCCESS"
            assert await live.wait_until(lambda: live.host("web").system_generation == 2, 5)
            hosts = live.hosts()
        finally:
            await live.stop()
    assert linux.generation == 2 and mac.generation == 1
    assert tier_of(web) is Tier.CLOUD_SERVER and tier_of(m) is Tier.WORKSTATION
    plan = make_plan(hosts, cfg, held=())
    assert [(e.host, e.reason) for e in plan.entries] == [("mac", "workstation"), ("web", "cloud server")]
    cols = fv.layout(100)
    kinds = {h.id: "".join(t for t, _ in fv.row_runs(h, fv.HostMeta(), cols, now=datetime_now())) for h in hosts}
    assert "server/cloud" in kinds["web"] and "laptop/work mac" in kinds["mac"]


def datetime_now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


# --- refresh-system: check the running system now ------------------------------------------------------


async def test_refresh_system_probes_the_host_now_and_reports_the_fresh_system_state(bed: SshBed) -> None:
    web, gone = bed.add("web"), bed.add("gone")
    async with fleet_for(bed, poll_seconds=600) as fleet:  # no poll of its own: only refresh-system probes
        live = LiveFleet(fleet)
        await live.start()
        try:
            assert live.host("web").system.state is CompartmentState.OK
            web.knob("failed-units", "nginx.service")  # the host changed since the last probe
            gone.stop()
            ok, down = await fleet.dispatch("refresh-system", ["web", "gone"])
            assert ok.started and down.started
            (busy,) = await fleet.dispatch("switch", ["web"])  # one command per host, as on the dashboard
            assert busy.blocked and busy.code == "busy" and busy.message == "refresh-system running"
            checked = await finished(live, ok.command_id, 15)
            failed = await finished(live, down.command_id, 15)
            web_now = live.host("web")
            lines = live.output_lines("web", ok.command_id)
        finally:
            await live.stop()
    assert checked.status == "SUCCESS" and checked.op == "refresh-system"
    assert web_now.system.state is CompartmentState.ERROR and "nginx.service" in web_now.system.message
    assert lines == [f"System error: {web_now.system.message}"]
    assert failed.status == "ERROR" and "could not check the host" in failed.error and "Connection refused" in failed.error
    assert web.switches == 0  # a check, nothing activated


# --- reboot needed, end to end ---------------------------------------------------------------------------


@pytest.mark.parametrize("sim_thread", [NO_DASHBOARD_HOSTS], indirect=True)
def test_a_reboot_need_shows_in_the_outcome_status_and_history(sim_bed: tuple[Any, SshBed], tmp_path: Path,
                                                               capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from nfu_tui.clients import _github_protocol

    monkeypatch.setattr(_github_protocol, "mergeable_poll_delays", lambda total=30.0: (0.05,) * int(total / 0.05))
    sim, bed = sim_bed
    kernel, same = bed.add("kernel"), bed.add("same")
    kernel.knob("next-kernel", "6.13.0")
    cfg = write_config(sim, bed, tmp_path, {})
    code = main(["--config", cfg, "deploy", "--pr", "42", "--yes"])
    out, err = capsys.readouterr()
    merge_sha = sim.github.default_branch_head()[0]
    assert code == 0, out + err
    assert kernel.current_rev == merge_sha and same.current_rev == merge_sha
    booted = (kernel.state / "run" / "booted-system").resolve().name
    assert booted == "sys-1"  # nfu-tui did not reboot it (nor could the stand-in): booted is still generation 1
    kernel_line = next(line for line in out.splitlines() if line.strip().startswith("kernel:") and "ok" in line)
    assert "reboot needed (kernel, initrd, kernel-modules differ from the booted system)" in kernel_line, out
    assert "reboot" not in next(line for line in out.splitlines() if line.strip().startswith("same:") and "ok" in line)
    assert main(["--config", cfg, "status", "--json"]) == 0
    hosts = {h["id"]: h for h in json.loads(capsys.readouterr().out)["hosts"]}
    assert hosts["kernel"]["reboot_needed"] is True and hosts["same"]["reboot_needed"] is False
    assert hosts["kernel"]["system_generation"] == 2
    main(["--config", cfg, "status"])
    assert "[reboot needed]" in next(line for line in capsys.readouterr().out.splitlines() if "kernel" in line)
    assert main(["--config", cfg, "history", "--json"]) == 0
    history = capsys.readouterr().out
    assert "reboot needed (kernel, initrd, kernel-modules" in history


# --- preview: runs detached; a lost session is no build failure -----------------------------------------------


async def test_a_preview_outlives_a_dropped_session_and_one_cut_short_is_unavailable_not_a_build_failure(
        bed: SshBed, repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    import nfu_tui.backends.ssh as ssh
    from nfu_tui.core.preview import PreviewCache, failed_builds

    monkeypatch.setattr(ssh, "RECONNECT_WINDOW", 3.0)
    dropped, gone, killed = bed.add("dropped"), bed.add("gone"), bed.add("killed")
    for host in (dropped, gone, killed):
        host.knob("switch-steps", "40")  # a 4 s build
    dropped.knob("closure-diff", "openssl: 3.4.0 → 3.4.1, -12.0 KiB")
    head = repo.refs["main"]
    async with fleet_for(bed) as fleet:
        runs = {name: asyncio.create_task(fleet.preview(name, 42, "main", head)) for name in bed.hosts}
        async with asyncio.timeout(15):
            while not all(h.builds and (h.state / "switch-pid").exists() for h in (dropped, gone, killed)):
                await asyncio.sleep(0.05)
        dropped.stop()  # the session drops mid-build (sshd and its sessions end): back a second later
        gone.stop()  # and this one stays away
        os.kill(int((killed.state / "switch-pid").read_text()), signal.SIGKILL)  # the build dies on the host
        await asyncio.sleep(1)
        dropped.start()
        results = {name: await asyncio.wait_for(task, 30) for name, task in runs.items()}
    survived, lost, cut = results["dropped"], results["gone"], results["killed"]
    assert survived.ok, survived  # the build went on while the host was away; its result was read afterwards
    assert [c.name for c in survived.changes] == ["openssl"] and dropped.builds == 1
    assert not lost.ok and lost.problem == "preview unavailable for gone (connection lost)" and not lost.build_failed
    assert not cut.ok and cut.problem == "preview unavailable for killed (the build was killed by signal 9)"
    assert not cut.build_failed
    assert failed_builds(results.values()) == []  # nothing that would stop an automatic merge
    cache = PreviewCache(tmp_path / "previews.json")
    cache.put(head, results.values())
    assert set(cache.for_head(head, bed.hosts)) == {"dropped"}  # no verdict for the others: built again next time
    assert not [f for f in (dropped.root / "home" / ".cache" / "nfu-tui").iterdir() if f.name.startswith("preview-")]


async def test_closing_a_preview_stops_its_build_on_the_host(bed: SshBed, repo: GitRepo) -> None:
    slow = bed.add("slow")
    slow.knob("switch-steps", "100")  # 10 s
    async with fleet_for(bed) as fleet:
        task = asyncio.create_task(fleet.preview("slow", 42, "main", repo.refs["main"]))
        async with asyncio.timeout(15):
            while not (slow.state / "switch-pid").exists():
                await asyncio.sleep(0.05)
        pid = int((slow.state / "switch-pid").read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the build is gone from the host, not just our session


async def test_a_refused_host_key_is_notified_once_per_fingerprint(bed: SshBed) -> None:
    from nfu_tui.config import Config, resolve_secrets
    from nfu_tui.core.service import FleetService

    bed.add("web")
    stranger = bed.add("stranger", trusted=False)
    cfg = Config.model_validate(bed.config(poll_seconds=2) | {"hosts": bed.toml_hosts()})
    service = FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False))
    seen: list[Any] = []
    service.subscribe(lambda ev: seen.append(ev.payload) if ev.kind == "notify" else None)
    async with service:
        assert await service.wait_until(lambda: service.fleet.synced and any(seen), 20)
        await asyncio.sleep(4.5)  # two more probe rounds: the same refusal is not notified again
        assert service.host("web").agent.state is CompartmentState.OK
    (note,) = seen
    assert note.title == "stranger: host key refused" and note.severity == "error"
    assert bed.fingerprint(stranger) in note.message and "unknown host key" in note.message


def test_a_host_whose_kernel_contradicts_its_system_setting_says_so(tmp_path: Path) -> None:
    fleet = SshFleet([SshHost("m", "root", "mac.example.org")], known_hosts=tmp_path / "known_hosts")
    row = fleet._row_from(fleet.hosts["m"], {"os": "Darwin", "profile": "system-7-link"})
    assert row["host_type"] == "macos" and row["system_generation"] == 7
    assert row["update_status"]["agent"]["message"] == ("reachable over SSH (root@mac.example.org:22); it runs Darwin, "
                                                        "but its system setting is 'nixos'")
