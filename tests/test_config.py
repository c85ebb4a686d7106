"""Configuration: loading, validation with keys and hints, env overrides, secrets, CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nfu_tui.cli import main
from nfu_tui.config import (
    ConfigLoadError,
    Config,
    effective_summary,
    is_loopback_url,
    load_config,
    resolve_secrets,
    write_starter,
)
from nfu_tui.errors import ConfigError

VALID = """
[github]
repo = "alice/nixcfg"
token_file = "{tok}"
poll_minutes = 5

[dashboard]
url = "https://fleet.acme.test"
password_file = "{pw}"

[flake_updates.automation]
enabled = true
delay_minutes = 30
deploy_strategy = "online-only"
max_parallel = 2
maintenance_windows = ["Sat 02:00-05:00 Europe/Vienna", "Mon-Fri 22:00-23:30"]

[flake_updates.rollback]
strategy = "revert-pr"

[hosts.gpc0]
priority = 1
canary = true
"""


def secret_file(path: Path, value: str, mode: int = 0o600) -> Path:
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
def valid_config(tmp_path: Path) -> Path:
    tok = secret_file(tmp_path / "gh", "ghp_supersecret")
    pw = secret_file(tmp_path / "pw", "hunter2")
    cfg = tmp_path / "config.toml"
    cfg.write_text(VALID.format(tok=tok, pw=pw))
    return cfg


def test_valid_config_loads(valid_config: Path) -> None:
    cfg = load_config(valid_config)
    assert cfg.github.repo == "alice/nixcfg"
    assert cfg.github.graphql_endpoint == "https://api.github.com/graphql"
    assert cfg.flake_updates.automation.max_parallel == 2
    assert cfg.flake_updates.rollback.strategy == "revert-pr"
    assert cfg.host("gpc0").canary and cfg.host("gpc0").priority == 1
    assert cfg.host("unknown").auto_update is True
    assert cfg.source == valid_config


def test_defaults_without_file() -> None:
    cfg = load_config(None)
    assert cfg.source is None
    assert cfg.github.poll_minutes == 5
    assert cfg.flake_updates.automation.enabled is False
    assert cfg.flake_updates.rollback.strategy == "revert-commit"


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigLoadError) as exc:
        load_config(tmp_path / "nope.toml")
    assert "no such file" in exc.value.message
    assert "config init" in exc.value.message


def problems_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigLoadError) as exc:
        load_config(path)
    return [str(p) for p in exc.value.problems]


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    probs = problems_for(tmp_path, '[github]\nrepoo = "a/b"\n[dashbord]\nurl = "https://x"\n')
    assert any(p.startswith("github.repoo: unknown key") and "did you mean 'repo'" in p for p in probs)
    assert any(p.startswith("dashbord: unknown key") and "did you mean 'dashboard'" in p for p in probs)


def test_unknown_host_key(tmp_path: Path) -> None:
    probs = problems_for(tmp_path, "[hosts.gpc0]\ncanari = true\n")
    assert any("hosts.gpc0.canari" in p and "did you mean 'canary'" in p for p in probs)


def test_wrong_types_are_reported_with_keys(tmp_path: Path) -> None:
    probs = problems_for(
        tmp_path,
        '[github]\npoll_minutes = "often"\n[flake_updates.automation]\nmax_parallel = 0\ndeploy_strategy = "yolo"\n',
    )
    keys = {p.split(":")[0] for p in probs}
    assert {"github.poll_minutes", "flake_updates.automation.max_parallel", "flake_updates.automation.deploy_strategy"} <= keys


def test_bad_repo_slug(tmp_path: Path) -> None:
    probs = problems_for(tmp_path, '[github]\nrepo = "https://github.com/alice/nixcfg"\n')
    assert any(p.startswith("github.repo:") and "owner/name" in p for p in probs)


def test_bad_window_syntax(tmp_path: Path) -> None:
    probs = problems_for(tmp_path, '[flake_updates.automation]\nmaintenance_windows = ["Someday 25:00-26:00"]\n')
    assert any("maintenance_windows" in p and "Someday" in p for p in probs)
    assert any("e.g." in p for p in probs)


def test_invalid_toml(tmp_path: Path) -> None:
    probs = problems_for(tmp_path, "[github\nrepo=")
    assert probs and probs[0].startswith("(syntax): not valid TOML")


def test_env_overrides_file(valid_config: Path) -> None:
    cfg = load_config(valid_config, env={"NIXFLEET_GITHUB_REPO": "bob/fleet", "NIXFLEET_URL": "https://other.example"})
    assert cfg.github.repo == "bob/fleet"
    assert cfg.dashboard.url == "https://other.example"


def test_secrets_from_files_are_secret(valid_config: Path) -> None:
    cfg = load_config(valid_config)
    s = resolve_secrets(cfg, env={}, use_gh=False)
    assert s.github_token is not None and s.github_token.get_secret_value() == "ghp_supersecret"
    assert s.dashboard_password is not None and s.dashboard_password.get_secret_value() == "hunter2"
    text = repr(s) + str(s) + "\n".join(effective_summary(cfg, s)) + repr(cfg) + cfg.model_dump_json()
    assert "ghp_supersecret" not in text and "hunter2" not in text
    assert s.warnings == []


def test_secret_env_wins_and_world_readable_file_warns(tmp_path: Path) -> None:
    tok = secret_file(tmp_path / "gh", "ghp_fromfile", mode=0o644)
    cfg = Config.model_validate({"github": {"token_file": str(tok)}})
    s = resolve_secrets(cfg, env={}, use_gh=False)
    assert s.github_token.get_secret_value() == "ghp_fromfile"
    assert any("readable by group/others" in w for w in s.warnings)
    s2 = resolve_secrets(cfg, env={"NIXFLEET_GITHUB_TOKEN": "ghp_env"}, use_gh=False)
    assert s2.github_token.get_secret_value() == "ghp_env"
    assert s2.github_token_source == "env NIXFLEET_GITHUB_TOKEN"


def test_missing_or_empty_secret_file(tmp_path: Path) -> None:
    cfg = Config.model_validate({"dashboard": {"password_file": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="cannot read dashboard password file"):
        resolve_secrets(cfg, env={}, use_gh=False)
    empty = secret_file(tmp_path / "empty", "")
    cfg = Config.model_validate({"dashboard": {"password_file": str(empty)}})
    with pytest.raises(ConfigError, match="is empty"):
        resolve_secrets(cfg, env={}, use_gh=False)


def test_gh_auth_token_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gh = tmp_path / "bin" / "gh"
    fake_gh.parent.mkdir()
    fake_gh.write_text("#!/bin/sh\n[ \"$1 $2\" = 'auth token' ] && echo ghp_fromgh\n")
    fake_gh.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_gh.parent}{os.pathsep}{os.environ['PATH']}")
    s = resolve_secrets(Config(), env={})
    assert s.github_token.get_secret_value() == "ghp_fromgh"
    assert s.github_token_source == "gh auth token"


def test_loopback_detection() -> None:
    assert is_loopback_url("http://127.0.0.1:8000")
    assert is_loopback_url("http://localhost:1")
    assert is_loopback_url("http://[::1]:80")
    assert not is_loopback_url("http://fleet.example.com")
    assert not is_loopback_url("http://10.0.0.5")


def test_starter_round_trips_and_never_overwrites(tmp_path: Path) -> None:
    path = write_starter(tmp_path / "cfg" / "config.toml")
    cfg = load_config(path)
    assert cfg.github.repo == "owner/nixcfg"
    assert cfg.flake_updates.automation.maintenance_windows
    before = path.read_text()
    with pytest.raises(ConfigError, match="already exists"):
        write_starter(path)
    assert path.read_text() == before


# --- CLI ----------------------------------------------------------------------


def test_cli_check_ok_masks_secrets(valid_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(valid_config), "config", "check"]) == 0
    out = capsys.readouterr()
    assert "configuration OK" in out.out
    assert "alice/nixcfg" in out.out and "***" in out.out
    assert "ghp_supersecret" not in out.out + out.err and "hunter2" not in out.out + out.err


def test_cli_check_bad_exit_2_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[github]\nrepoo = "a/b"\npoll_minutes = -1\n')
    assert main(["--config", str(bad), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "github.repoo: unknown key" in err and "github.poll_minutes" in err
    assert "Traceback" not in err


def test_cli_check_incomplete_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[github]\npoll_minutes = 10\n")
    assert main(["--config", str(cfg), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "github.repo: not set" in err and "dashboard.url: not set" in err


def test_cli_init_writes_to_xdg_and_refuses_overwrite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "init"]) == 0
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "nfu-tui" / "config.toml"
    assert path.exists()
    assert main(["config", "init"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["config", "path"]) == 0
    assert str(path) in capsys.readouterr().out


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from nfu_tui.cli import COMMAND_MODULES

    for name in COMMAND_MODULES:
        with pytest.raises(SystemExit) as exc:
            main([name.replace("_", "-"), "--help"])
        assert exc.value.code == 0
        assert "usage: nfu-tui" in capsys.readouterr().out


def test_fork_repos_are_validated(tmp_path: Path) -> None:
    cfg = Config.model_validate({"github": {"fork_repos": ["bot/nixcfg"]}})
    assert cfg.github.fork_repos == ["bot/nixcfg"]
    probs = problems_for(tmp_path, '[github]\nfork_repos = ["not a slug"]\n')
    assert any(p.startswith("github.fork_repos") for p in probs)


def test_tui_refuses_plain_http_to_a_remote_dashboard_before_starting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[dashboard]\nurl = "http://fleet.example.com"\n')
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "refusing plain http://" in err and "--insecure" in err


def test_tui_without_anything_configured_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[github]\npoll_minutes = 5\n")
    assert main(["--config", str(cfg)]) == 2
    assert "config init" in capsys.readouterr().err
