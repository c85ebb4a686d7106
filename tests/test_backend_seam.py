"""The fleet backend seam (nfu_tui/backends/base.py): both backends satisfy FleetBackend, and with
``fleet.backend = "ssh"`` nothing the user sees says "dashboard" where it means the fleet.

The SSH checks run the TUI and the CLI against real sshd hosts (tests/sshbed.py) and the simulated GitHub.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.backends.base import NIXFLEET, SSH, BackendInfo, FleetBackend, info_of
from nfu_tui.backends.ssh import SshFleet, SshHost
from nfu_tui.cli import main
from nfu_tui.clients.dashboard import DashboardClient
from nfu_tui.core.engine import health_problems, interpret_dispatch, unverified_reason

sys.path.insert(0, str(Path(__file__).parent))
from screentext import svg_lines  # noqa: E402
from sshbed import SshBed  # noqa: E402
from test_ssh_backend import NO_DASHBOARD_HOSTS, async_bed, sim_bed, write_config  # noqa: E402, F401

DASHBOARD = re.compile("dashboard", re.IGNORECASE)


# --- the protocol ----------------------------------------------------------------------------


def _backends(tmp_path: Path) -> list[Any]:
    return [DashboardClient(url="http://127.0.0.1:9", password=None),
            SshFleet([SshHost("web1", "root", "127.0.0.1")], known_hosts=tmp_path / "known_hosts")]


def _members() -> dict[str, Any]:
    return {name: getattr(FleetBackend, name) for name in dir(FleetBackend)
            if not name.startswith("_") and callable(getattr(FleetBackend, name, None))}


def test_both_backends_are_fleet_backends(tmp_path: Path) -> None:
    methods = _members()
    assert {"follow", "dispatch", "timeout_action", "command_states", "events", "output", "aclose"} <= set(methods)
    for backend in _backends(tmp_path):
        assert isinstance(backend, FleetBackend), type(backend)
        assert isinstance(backend.info, BackendInfo) and info_of(backend) is backend.info
        for name, declared in methods.items():
            impl = getattr(type(backend), name)
            if inspect.iscoroutinefunction(declared):
                assert inspect.iscoroutinefunction(impl), (type(backend), name)
            elif name == "follow":  # declared as returning an async iterator: an async generator
                assert inspect.isasyncgenfunction(impl), (type(backend), name)
            wanted = inspect.signature(declared).parameters
            have = inspect.signature(impl).parameters
            for param in wanted.values():  # every declared parameter, under its name and kind (defaults too)
                assert param.name in have, (type(backend), name, param.name)
                got = have[param.name]
                assert got.kind == param.kind, (type(backend), name, param.name)
                assert (got.default is inspect.Parameter.empty) == (param.default is inspect.Parameter.empty), \
                    (type(backend), name, param.name)
            extra = [p for p in have.values() if p.name not in wanted and p.default is inspect.Parameter.empty
                     and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            assert not extra, (type(backend), name, extra)  # callers through the protocol could not call it
    assert [info_of(b) for b in _backends(tmp_path)] == [NIXFLEET, SSH]


def test_a_backend_missing_a_member_is_not_one(tmp_path: Path) -> None:
    class NoEvents(SshFleet):
        events = None  # type: ignore[assignment]

    partial = NoEvents([], known_hosts=tmp_path / "known_hosts")
    assert not isinstance(partial, FleetBackend)
    assert info_of(object()) is NIXFLEET  # a stand-in without info (tests' fakes) reads as the dashboard


def test_the_engine_texts_name_the_backend() -> None:
    assert interpret_dispatch(None, "switch", "web1").message == "the dashboard returned no result for web1"
    assert interpret_dispatch(None, "switch", "web1", SSH).message == "the SSH backend returned no result for web1"

    class Blocked:
        blocked, code, message = True, "offline", "web1 (root@127.0.0.1:22) unreachable: timed out"

    assert interpret_dispatch(Blocked(), "pull", "web1").message.endswith("(dashboard: web1 (root@127.0.0.1:22) "
                                                                          "unreachable: timed out)")
    assert interpret_dispatch(Blocked(), "pull", "web1", SSH).message == ("host unreachable (ssh: web1 "
                                                                         "(root@127.0.0.1:22) unreachable: timed out)")
    assert unverified_reason(None, "abc", None, SSH) == "the SSH backend no longer lists the host"
    assert health_problems(None, SSH) == ["no longer known to the SSH backend"]
    assert SSH.stops_commands and not NIXFLEET.stops_commands


# --- with backend = "ssh": the TUI ------------------------------------------------------------------


def _screen_text(app: Any) -> str:
    """Everything on the screen now, as plain text lines."""
    return "\n".join(svg_lines(app.export_screenshot(), styled=False))


def _rendered(static: Any) -> str:
    """A Static's whole content as text (all of it, also what is scrolled out of view)."""
    from rich.console import Console

    console = Console(width=120, record=True, file=__import__("io").StringIO())
    console.print(static.content)
    return console.export_text()


@pytest.mark.parametrize("sim", [NO_DASHBOARD_HOSTS], indirect=True)
async def test_the_tui_header_and_screens_name_the_ssh_backend(sim: Any, async_bed: SshBed, tmp_path: Path) -> None:
    from nfu_tui.config import load_config, resolve_secrets
    from nfu_tui.core.service import FleetService
    from textual.widgets import Static

    from nfu_tui.ui.app import NfuApp
    from nfu_tui.ui.screens.help import HelpScreen
    from nfu_tui.ui.screens.host_detail import HostDetailScreen
    from nfu_tui.ui.widgets.header import header_text, header_tooltip
    from nfu_tui.ui.widgets.host_grid import HostGrid

    async_bed.add("web1")
    async_bed.add("web2").knob("failed-units", "nginx.service")
    cfg = load_config(write_config(sim, async_bed, tmp_path, {}))
    app = NfuApp(FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False)), flush_interval=0.02)
    async with app.run_test(size=(120, 40)) as pilot:
        loop = asyncio.get_running_loop()

        async def until(predicate: Any, what: str) -> None:
            deadline = loop.time() + 30
            while not predicate():
                assert loop.time() < deadline, what
                await pilot.pause(0.05)

        await until(lambda: app.service.status.fleet == "live" and app.screen.query_one(HostGrid).total == 2
                    and app.service.pr_state(42) is not None, "the SSH fleet and PR #42")
        await pilot.pause(0.2)
        status = app.service.status
        assert status.backend is SSH
        header = header_text(status, app.clock()).plain
        assert "ssh ● live" in header and not DASHBOARD.search(header), header
        assert header_tooltip(status).plain.startswith("SSH: live")
        shown = _screen_text(app)
        assert "ssh ● live" in shown and not DASHBOARD.search(shown), shown
        app.screen.query_one(HostGrid).focus()
        await pilot.press("enter")  # the focused host's detail
        await until(lambda: isinstance(app.screen, HostDetailScreen), "host detail")
        await pilot.pause(0.3)
        shown = _screen_text(app)
        assert not DASHBOARD.search(shown), shown
        await pilot.press("escape")
        await pilot.press("m")  # the merge & deploy plan
        await pilot.pause(0.3)
        shown = _screen_text(app)
        assert "PR #42" in shown and not DASHBOARD.search(shown), shown
        await pilot.press("escape")
        await pilot.press("question_mark")  # the help screen: every key binding and the legend
        await until(lambda: isinstance(app.screen, HelpScreen), "help")
        help_text = "\n".join(_rendered(static) for static in app.screen.query(Static))
        assert "Roll back" in help_text and "Legend" in help_text, help_text
        assert not DASHBOARD.search(help_text), help_text
        await pilot.press("escape")
        (stream,) = [t for t in asyncio.all_tasks() if t.get_name() == "nfu-fleet"]
        stream.cancel()  # the fleet state is lost (no stream event sets it live again)
        app.service._set_status(fleet="error", fleet_detail="probe round failed")
        await until(lambda: "ssh unreachable since" in _screen_text(app), "the grid's title says so")
        shown = _screen_text(app)
        assert "ssh ✗ error" in shown and not DASHBOARD.search(shown), shown


# --- with backend = "ssh": the CLI ------------------------------------------------------------------


@pytest.mark.parametrize("sim_thread", [NO_DASHBOARD_HOSTS], indirect=True)
def test_the_cli_never_says_dashboard_over_ssh(sim_bed: tuple[Any, SshBed], tmp_path: Path, capsys: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from nfu_tui.clients import _github_protocol

    monkeypatch.setattr(_github_protocol, "mergeable_poll_delays", lambda total=30.0: (0.05,) * int(total / 0.05))
    sim, bed = sim_bed
    canary, broken, later = bed.add("c1"), bed.add("h2"), bed.add("h3")
    bed.add("stranger", trusted=False)
    broken.knob("fail-build")
    cfg = write_config(sim, bed, tmp_path, {"c1": {"canary": True}, "h2": {"priority": 2}, "h3": {"priority": 3},
                                            "stranger": {"auto_update": False}})

    assert main(["--config", cfg, "config", "check"]) == 0
    out, err = capsys.readouterr()
    assert "fleet.backend     ssh" in out and not DASHBOARD.search(out + err), out + err

    assert main(["--config", cfg, "status"]) == 0
    out, err = capsys.readouterr()
    assert "Fleet: 4 hosts, 3 online  (ssh)" in out and "unknown host key" in out
    assert not DASHBOARD.search(out + err), out + err

    code = main(["--config", cfg, "deploy", "--pr", "42", "--yes", "--hosts", "c1,h2,h3"])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "h2: failed (switch)" in out and "h3: skipped" in out, out
    assert not DASHBOARD.search(out + err), out + err

    assert main(["--config", cfg, "history"]) == 0
    out, err = capsys.readouterr()
    assert "#42" in out and not DASHBOARD.search(out + err), out + err
    merge_sha = sim.github.default_branch_head()[0]
    assert canary.current_rev == merge_sha and later.generation == 1  # what the texts said happened

    assert canary.generation == 2
    assert main(["--config", cfg, "rollback", "--host", "c1", "--yes"]) == 0
    out, err = capsys.readouterr()
    assert "The SSH backend runs its rollback op on c1 only" in out, out
    assert not DASHBOARD.search(out + err), out + err
    assert canary.generation == 1


# --- with backend = "ssh": cancel really stops -------------------------------------------------------


@pytest.mark.parametrize("sim", [NO_DASHBOARD_HOSTS], indirect=True)
async def test_a_released_host_is_stopped_on_the_host_not_left_running(sim: Any, async_bed: SshBed, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from nfu_tui.clients import _github_protocol
    from nfu_tui.config import load_config, resolve_secrets
    from nfu_tui.core.engine import CancelRequested, HostProgress, Outcome
    from nfu_tui.core.service import FleetService

    monkeypatch.setattr(_github_protocol, "mergeable_poll_delays", lambda total=30.0: (0.05,) * int(total / 0.05))
    slow = async_bed.add("slow")
    slow.knob("switch-steps", "300")  # 30 s
    cfg = load_config(write_config(sim, async_bed, tmp_path, {}))
    lines: list[str] = []
    async with FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False)) as service:
        service.subscribe(lambda ev: lines.append(ev.payload.line()) if ev.kind == "deploy"
                          and isinstance(ev.payload, (CancelRequested, HostProgress)) else None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (service.fleet.synced and service.pr_state(42) is not None):
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        run = asyncio.ensure_future(service.deploy(service.plan(42)))
        pid_file = slow.state / "switch-pid"
        async with asyncio.timeout(60):
            while not pid_file.exists():
                assert not run.done(), run.result()
                await asyncio.sleep(0.05)
        pid = int(pid_file.read_text())
        service.cancel_deploy()
        service.cancel_deploy(release_hosts=True)
        result = await asyncio.wait_for(run, 60)
    (outcome,) = result.outcomes
    assert outcome.outcome is Outcome.CANCELLED and outcome.detail.startswith("stopped on slow after the cancel")
    assert result.still_running == ()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # really stopped on the host
    assert slow.generation == 1 and slow.switches == 0
    said = "\n".join(lines)
    assert "keeps running until it ends or is stopped" in said and "stopping the switch on the host" in said, said
    assert not DASHBOARD.search(said + outcome.detail), said
