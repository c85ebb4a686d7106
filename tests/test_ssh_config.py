"""`[fleet] backend = "ssh"`: its settings, their validation, `config check`, and which backend the factory builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfu_tui.cli import main
from nfu_tui.config import ConfigLoadError, load_config, missing_settings, parse_ssh_target, resolve_secrets

SSH = """
[github]
repo = "alice/nixcfg"

[fleet]
backend = "ssh"

[ssh]
known_hosts = "{known}"
poll_seconds = 15

[hosts.web1]
ssh = "deploy@web1.example.org:2222"
flake_attr = "web-1"
repo_dir = "/srv/nixcfg"
canary = true
role = "Server/Cloud"

[hosts.mac]
ssh = "mac.example.org"
system = "darwin"
"""


def write(tmp_path: Path, text: str) -> Path:
    known = tmp_path / "known_hosts"
    known.write_text("")
    path = tmp_path / "config.toml"
    path.write_text(text.replace("{known}", str(known)))
    return path


def test_ssh_settings_load() -> None:
    assert parse_ssh_target("web1.example.org") == ("root", "web1.example.org", 22)
    assert parse_ssh_target("deploy@[::1]:2201") == ("deploy", "::1", 2201)
    with pytest.raises(ValueError):
        parse_ssh_target("root@web1:99999")


def test_ssh_config_loads_and_needs_no_dashboard(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SSH))
    assert cfg.uses_ssh and cfg.ssh.poll_seconds == 15 and cfg.ssh.max_concurrency == 8
    assert cfg.hosts["web1"].flake_attr == "web-1" and cfg.hosts["mac"].system == "darwin"
    assert cfg.hosts["mac"].repo_dir == "/etc/nixos"
    secrets = resolve_secrets(cfg, env={"NIXFLEET_GITHUB_TOKEN": "t"}, use_gh=False)
    assert missing_settings(cfg, secrets) == []  # no dashboard.url, no password


def test_factory_picks_the_backend(tmp_path: Path) -> None:
    from nfu_tui.backends.ssh import SshFleet
    from nfu_tui.clients.dashboard import DashboardClient
    from nfu_tui.clients.factory import fleet_backend

    cfg = load_config(write(tmp_path, SSH))
    fleet = fleet_backend(cfg, resolve_secrets(cfg, env={}, use_gh=False))
    assert isinstance(fleet, SshFleet)
    assert {h.name: (h.user, h.address, h.port, h.attr, h.repo_dir) for h in fleet.hosts.values()} == {
        "web1": ("deploy", "web1.example.org", 2222, "web-1", "/srv/nixcfg"),
        "mac": ("root", "mac.example.org", 22, "mac", "/etc/nixos")}
    # The role is what the dashboard calls device_type and location; darwin is the dashboard's "macos".
    assert {h.name: (h.device_type, h.location, h.host_type) for h in fleet.hosts.values()} == {
        "web1": ("server", "cloud", "nixos"), "mac": ("", "", "macos")}
    plain = load_config(write(tmp_path, '[dashboard]\nurl = "https://fleet.example.com"\n'))
    assert isinstance(fleet_backend(plain, resolve_secrets(plain, env={}, use_gh=False)), DashboardClient)


@pytest.mark.parametrize("text, expected", [
    (SSH.replace('backend = "ssh"', 'backend = "colmena"'), "fleet.backend"),
    (SSH.replace('ssh = "mac.example.org"', 'ssh = "mac example"'), "hosts.mac.ssh"),
    (SSH.replace('ssh = "mac.example.org"\n', ""), "no ssh = \"user@host:port\" for host(s) mac"),
    (SSH.replace('system = "darwin"', 'system = "windows"'), "hosts.mac.system"),
    (SSH.replace("poll_seconds = 15", "poll_seconds = 0"), "ssh.poll_seconds"),
    (SSH.replace('flake_attr = "web-1"', 'flake_attr = "a b"'), "hosts.web1.flake_attr"),
    (SSH.replace('role = "Server/Cloud"', 'role = "sever/cloud"'), "kind 'sever' is not one of desktop, gaming"),
    (SSH.replace('role = "Server/Cloud"', 'role = "server/moon"'), "hosts.web1.role"),
    (SSH.replace('role = "Server/Cloud"', 'role = 3'), "hosts.web1.role"),
])
def test_bad_ssh_settings_are_named(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigLoadError) as caught:
        load_config(write(tmp_path, text))
    assert expected in caught.value.message


def test_config_check_wants_the_known_hosts_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIXFLEET_GITHUB_TOKEN", "t")
    path = write(tmp_path, SSH)
    assert main(["--config", str(path), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert "fleet.backend     ssh" in out and "dashboard.url" not in out
    (tmp_path / "known_hosts").unlink()
    assert main(["--config", str(path), "config", "check"]) == 2
    assert "ssh.known_hosts" in capsys.readouterr().err


def test_preview_needs_the_ssh_backend_and_known_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dashboard = tmp_path / "dash.toml"
    dashboard.write_text('[github]\nrepo = "alice/nixcfg"\n[dashboard]\nurl = "https://fleet.example.com"\n')
    assert main(["--config", str(dashboard), "preview", "--pr", "1"]) == 2
    assert 'needs fleet.backend = "ssh"' in capsys.readouterr().err
    assert main(["--config", str(write(tmp_path, SSH)), "preview", "--pr", "1", "--hosts", "nope"]) == 2
    assert "unknown host(s): nope (known: mac, web1)" in capsys.readouterr().err


def test_preview_before_merge_is_a_strict_bool_and_needs_the_ssh_backend(tmp_path: Path) -> None:
    auto = "\n[flake_updates.automation]\npreview_before_merge = {}\n"
    assert load_config(write(tmp_path, SSH + auto.format("true"))).flake_updates.automation.preview_before_merge
    assert not load_config(write(tmp_path, SSH)).flake_updates.automation.preview_before_merge
    with pytest.raises(ConfigLoadError) as bad:
        load_config(write(tmp_path, SSH + auto.format('"yes"')))
    assert "preview_before_merge" in bad.value.message
    dashboard = '[github]\nrepo = "alice/nixcfg"\n[dashboard]\nurl = "https://fleet.example.com"\n'
    with pytest.raises(ConfigLoadError) as wrong:
        load_config(write(tmp_path, dashboard + auto.format("true")))
    assert 'preview_before_merge needs fleet.backend = "ssh"' in wrong.value.message
