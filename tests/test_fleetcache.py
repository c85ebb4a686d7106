"""The fleet cache: the last known fleet drawn in the first frame (stale) until live data replaces it.

The Pilot tests run the real FleetService against the simulator (127.0.0.1); the
settings are "loaded" by a ``prepare`` that waits for the test, so the first frame is
observed before anything is connected.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.commands import tui
from nfu_tui.config import load_config, resolve_secrets
from nfu_tui.core import fleetcache
from nfu_tui.core.fleetcache import CachedPR, FleetCache, HostSettings
from nfu_tui.core.service import FleetService
from nfu_tui.errors import ConfigError
from nfu_tui.models import CompartmentState, Host, StatusCheck, UpdatePR
from nfu_tui.ui.app import NfuApp
from nfu_tui.ui.widgets.host_grid import HostGrid
from nfu_tui.ui.widgets.pr_panel import PRList

SIZE = (120, 40)


def cached_host(name: str, **kw: Any) -> Host:
    return Host(id=name, hostname=name, status="online", agent_version="3.1.5", location="home",
                git=StatusCheck(CompartmentState.OK, "Up to date"), **kw)


def a_cache(identity: str = "x", **kw: Any) -> FleetCache:
    pr = UpdatePR(number=7, title="flake.lock: Update (cached)", author="bot", html_url="https://github.com/o/r/pull/7",
                  head_ref="update_flake_lock_action", head_sha="a" * 40, base_ref="main", base_sha="b" * 40)
    values: dict[str, Any] = dict(
        identity=identity, hosts=(cached_host("old-host"), cached_host("csb0")),
        hosts_at=datetime(2026, 1, 2, 12, 3, tzinfo=timezone.utc),
        prs=(CachedPR(pr, "nixpkgs 180 commits"),), prs_at=datetime(2026, 1, 2, 12, 3, tzinfo=timezone.utc),
        held=frozenset({"old-host"}), settings={"csb0": HostSettings(canary=True, priority=2, auto_update=False)},
        config_digest="d",
    )
    values.update(kw)
    return FleetCache(**values)


def sim_service(sim: Any, tmp_path: Path) -> tuple[FleetService, Path]:
    path = sim.write_config(tmp_path / "cfg")
    cfg = load_config(path)
    return FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False)), path


async def wait_for(pilot: Any, predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def titles(app: NfuApp) -> tuple[str, str]:
    screen = app.screen_stack[0]
    return (str(screen.query_one("#fleet-title").render()), str(screen.query_one("#pr-title").render()))


def first_pr(app: NfuApp) -> str:
    return str(app.screen_stack[0].query_one(PRList).get_option_at_index(0).prompt)


# --- the file ------------------------------------------------------------------------------


def test_a_cache_reads_back_as_written(tmp_path: Path) -> None:
    cache = a_cache()
    fleetcache.save(cache, tmp_path / "c.json")
    back = fleetcache.load(tmp_path / "c.json")
    assert back == cache
    assert back.host("csb0").git == StatusCheck(CompartmentState.OK, "Up to date")
    assert back.host_settings("csb0") == HostSettings(True, 2, False) and back.host_settings("old-host") == HostSettings()
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o600
    unreachable = StatusCheck(CompartmentState.UNREACHABLE, "web (root@web:22) unreachable: Connection refused", "t")
    ssh = a_cache(hosts=(cached_host("web").with_changes(agent_check=unreachable),))
    fleetcache.save(ssh, tmp_path / "ssh.json")
    assert fleetcache.load(tmp_path / "ssh.json").host("web").agent == unreachable  # the SSH backend's own Agent


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe", b"[]", b'{"version": 0, "hosts": []}',
    b'{"version": 1, "hosts": "many"}', b'{"version": 1, "hosts": [{"hostname": "no id"}]}',
    b'{"version": 1, "prs": [{"number": 1, "ci": ["purple", ""]}]}',
])  # fmt: skip
def test_a_corrupt_or_other_version_cache_is_ignored(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(content)
    assert fleetcache.load(path) is None
    assert fleetcache.load(tmp_path / "missing.json") is None


def test_the_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleetcache, "MAX_HOSTS", 50)
    hosts = tuple(cached_host(f"h{i:03d}", system=StatusCheck(CompartmentState.ERROR, "x" * 5000)) for i in range(80))
    fleetcache.save(a_cache(hosts=hosts, held=frozenset()), tmp_path / "c.json")
    back = fleetcache.load(tmp_path / "c.json")
    assert back is not None and len(back.hosts) == 50
    assert len(back.hosts[0].system.message) == fleetcache.MAX_TEXT


def test_the_config_digest_follows_the_config_but_never_a_secret_value(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[github]\nrepo = "o/r"\n')
    base = fleetcache.config_digest(path, env={"NIXFLEET_PASSWORD": "one"})
    assert fleetcache.config_digest(path, env={"NIXFLEET_PASSWORD": "two"}) == base
    assert fleetcache.config_digest(path, env={}) != base  # the password's presence counts
    assert fleetcache.config_digest(path, env={"NIXFLEET_PASSWORD": "one", "NIXFLEET_URL": "https://x"}) != base
    assert fleetcache.config_digest(path, insecure=True, env={"NIXFLEET_PASSWORD": "one"}) != base
    path.write_text('[github]\nrepo = "o/s"\n')
    assert fleetcache.config_digest(path, env={"NIXFLEET_PASSWORD": "one"}) != base


# --- the app ---------------------------------------------------------------------------------


async def test_the_first_frame_shows_the_cached_fleet_marked_stale_until_live_data_replaces_it(sim, tmp_path):
    service, _ = sim_service(sim, tmp_path)
    cfg = service.config
    cache = a_cache(fleetcache.identity(cfg.dashboard.url, cfg.github.repo))
    release = threading.Event()
    app = NfuApp(service_factory=lambda: service, prepare=lambda: release.wait(20), cache=cache, flush_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        grid = app.screen.query_one(HostGrid)
        assert grid.visible_ids == ["csb0", "old-host"]  # the first frame: the cached fleet
        assert grid.held == {"old-host"} and grid.meta("csb0").canary and grid.meta("csb0").priority == 2
        fleet_title, pr_title = titles(app)
        assert "last seen" in fleet_title and "connecting…" in fleet_title and "2 hosts" in fleet_title
        assert "last polled" in pr_title
        assert "(cached)" in first_pr(app)
        await pilot.press("m")  # a cached PR is never deployed
        await pilot.pause(0.1)
        assert app.screen is app.screen_stack[0] and app.service is None
        release.set()
        await wait_for(pilot, lambda: "last seen" not in titles(app)[0], "the live fleet")
        assert "old-host" not in grid.visible_ids and len(grid.visible_ids) == 12
        await wait_for(pilot, lambda: "last polled" not in titles(app)[1], "the first poll")
        await wait_for(pilot, lambda: "(cached)" not in first_pr(app), "the live PRs")
        assert app.cache is None  # everything live: the cache is no longer consulted


async def test_a_cache_of_another_fleet_is_not_shown(sim, tmp_path):
    service, _ = sim_service(sim, tmp_path)
    app = NfuApp(service, cache=a_cache("another fleet"), flush_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        grid = app.screen.query_one(HostGrid)
        await wait_for(pilot, lambda: app.service is not None and app.cache is None, "the cache dropped")
        await pilot.pause(0.05)
        assert "old-host" not in grid.visible_ids and "last seen" not in titles(app)[0]
        await wait_for(pilot, lambda: len(grid.visible_ids) == 12, "the live fleet")


async def test_the_app_saves_what_it_showed_live_without_secrets(sim, tmp_path):
    service, path = sim_service(sim, tmp_path)
    app = NfuApp(service, cache_digest="digest-1", flush_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.screen.query_one(HostGrid).visible_ids) == 12, "the fleet")
        await wait_for(pilot, lambda: service.prs and service.status.last_poll is not None, "the poll")
        await wait_for(pilot, fleetcache.cache_path().exists, "the save soon after the fleet went live")
        await pilot.press("q")
    text = fleetcache.cache_path().read_text()
    secrets = service.secrets
    for secret in (secrets.github_token, secrets.dashboard_password):
        assert secret is not None and secret.get_secret_value() not in text
    assert service.config.dashboard.url not in text and "127.0.0.1" not in text
    cache = fleetcache.load()
    assert cache is not None and cache.config_digest == "digest-1"
    assert cache.identity == fleetcache.identity(service.config.dashboard.url, service.config.github.repo)
    assert sorted(h.id for h in cache.hosts) == sorted(h.id for h in service.hosts())
    assert [p.pr.number for p in cache.prs] == [p.pr.number for p in service.prs]


async def test_a_configuration_that_fails_after_the_first_frame_ends_the_app_with_exit_code_2(tmp_path):
    def prepare() -> None:
        raise ConfigError("cannot read GitHub token file /nowhere: No such file or directory")

    app = NfuApp(service_factory=lambda: None, prepare=prepare, cache=a_cache())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.5)
    assert app.return_value == 2 and "token file /nowhere" in app.exit_message


# --- the command ----------------------------------------------------------------------------


def test_an_unchanged_valid_configuration_paints_the_cache_first_a_changed_one_is_validated_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[github]\nrepo = "o/r"\n[dashboard]\nurl = "http://fleet.example.com"\n')  # refused: plain http
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(tui, "run_app", lambda cfg, secrets, **kw: calls.append({"cfg": cfg, **kw}) or 0)
    args = tui.argparse.Namespace(config=str(config), insecure=False, command=None)
    digest = fleetcache.config_digest(str(config))
    fleetcache.save(replace(a_cache(), config_digest="not this one"))
    assert tui.run(args) == 2 and not calls  # validated before the terminal: nothing started
    assert "refusing plain http://" in capsys.readouterr().err
    fleetcache.save(replace(a_cache(), config_digest=digest))
    assert tui.run(args) == 0  # "the same bytes validated last time": paint first, validate in the app (the decision only)
    assert calls[0]["cfg"] is None and calls[0]["cache"].config_digest == digest
    json.loads(fleetcache.cache_path().read_text())


async def test_the_login_screen_still_asks_for_the_password_over_the_cached_fleet(sim, tmp_path):
    from nfu_tui.ui.screens.login import LoginScreen
    from nfu_tui.ui.screens.main import MainScreen

    path = sim.write_config(tmp_path / "cfg")
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("password_file")) + "\n")
    loaded: dict[str, Any] = {}

    def prepare() -> None:  # as `nfu-tui` does after the first frame
        cfg = load_config(path)
        loaded["service_args"] = (cfg, resolve_secrets(cfg, env={}, use_gh=False))

    cfg = load_config(path)
    cache = a_cache(fleetcache.identity(cfg.dashboard.url, cfg.github.repo))
    app = NfuApp(service_factory=lambda: FleetService(*loaded["service_args"]), prepare=prepare, cache=cache,
                 flush_interval=0.02)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen), "the login screen")
        assert "old-host" in app.screen_stack[0].query_one(HostGrid).visible_ids  # the cached fleet behind it
        await pilot.press(*sim.scenario.password, "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the login screen to close")
        await wait_for(pilot, lambda: "last seen" not in titles(app)[0], "the live fleet")
        assert "old-host" not in app.screen.query_one(HostGrid).visible_ids


async def test_the_configured_keys_apply_once_the_settings_are_loaded_after_the_first_frame(sim, tmp_path):
    from nfu_tui.ui.screens.help import HelpScreen

    path = sim.write_config(tmp_path / "cfg", keys={"app.help": "f1"})
    cfg = load_config(path)
    app = NfuApp(service_factory=lambda: FleetService(cfg, resolve_secrets(cfg, env={}, use_gh=False)),
                 prepare=lambda: None, cache=a_cache(fleetcache.identity(cfg.dashboard.url, cfg.github.repo)))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None and app.keymap, "the settings")
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help on the configured key")
