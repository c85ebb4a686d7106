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


# --- strict, bounded settings (issue: absurd numbers, bools as numbers) ------------------


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ("[flake_updates.automation]\ndelay_minutes = inf", "flake_updates.automation.delay_minutes", "finite number"),
        ("[flake_updates.automation]\ndelay_minutes = nan", "flake_updates.automation.delay_minutes", "finite number"),
        ("[flake_updates.automation]\ndelay_minutes = 1e300", "flake_updates.automation.delay_minutes", "10080"),
        ("[flake_updates.automation]\ndelay_minutes = true", "flake_updates.automation.delay_minutes", "number (got true)"),
        ("[flake_updates.automation]\ncanary_wait_minutes = 20000", "flake_updates.automation.canary_wait_minutes", "10080"),
        ("[flake_updates.automation]\nmax_parallel = true", "flake_updates.automation.max_parallel", "whole number (got true)"),
        ("[flake_updates.automation]\nmax_parallel = 65", "flake_updates.automation.max_parallel", "64"),
        ("[flake_updates.automation]\nmax_parallel = 2.5", "flake_updates.automation.max_parallel", "whole number"),
        ("[flake_updates.automation]\nrequire_ci = 1", "flake_updates.automation.require_ci", "true or false"),
        ("[hosts.gpc0]\ncanary = \"yes\"", "hosts.gpc0.canary", "true or false (without quotes) (got 'yes')"),
        ("[hosts.gpc0]\npriority = false", "hosts.gpc0.priority", "whole number"),
        ("[github]\npoll_minutes = inf", "github.poll_minutes", "finite number"),
        ("[github]\npoll_minutes = 2000", "github.poll_minutes", "1440"),
        ("[github]\npoll_minutes = false", "github.poll_minutes", "number (got false)"),
        ("[dashboard]\ninsecure = \"true\"", "dashboard.insecure", "true or false"),
        ("github = \"alice/nixcfg\"", "github", "must be a table"),
        ("[hosts]\ngpc0 = 1", "hosts.gpc0", "must be a table"),
    ],
)
def test_absurd_values_are_refused_in_the_users_words(tmp_path: Path, toml: str, key: str, words: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ConfigLoadError) as err:
        load_config(path)
    (problem,) = err.value.problems
    assert problem.key == key and words in problem.message
    assert "instance of" not in str(err.value) and "Config" not in problem.message


def test_numbers_written_as_integers_still_load(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[flake_updates.automation]\ndelay_minutes = 10080\ncanary_wait_minutes = 0\nmax_parallel = 64\n")
    auto = load_config(path).flake_updates.automation
    assert (auto.delay_minutes, auto.canary_wait_minutes, auto.max_parallel) == (10080.0, 0.0, 64)


def test_cli_check_reports_every_problem_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readable = secret_file(tmp_path / "pw", "hunter2", mode=0o644)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[github]\nrepo = "a/b"\ntoken_file = "/dev/zero"\nmerge_token_file = "/nonexistent/tok"\n'
        f'[dashboard]\nurl = "http://fleet.lan"\npassword_file = "{readable}"\ntotp_secret_file = "/nonexistent/totp"\n'
    )
    assert main(["--config", str(cfg), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "4 problem(s)" in err
    assert "GitHub token file /dev/zero is larger than 64 KiB" in err
    assert "GitHub merge token file /nonexistent/tok" in err and "TOTP secret file /nonexistent/totp" in err
    assert "dashboard.url: Refusing plain http:// to fleet.lan" in err and "--insecure" in err
    assert f"warning: dashboard password file {readable} is readable by group/others" in err
    assert "hunter2" not in err
    # the same rule as the commands: --insecure (or dashboard.insecure) lifts it
    assert main(["--insecure", "--config", str(cfg), "config", "check"]) == 2
    assert "dashboard.url" not in capsys.readouterr().err


def test_cli_check_flags_the_placeholders_of_config_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    assert main(["--config", str(cfg), "config", "init"]) == 0
    capsys.readouterr()
    assert main(["--config", str(cfg), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert "github.repo: still the example 'owner/nixcfg'" in err
    assert "dashboard.url: still the example 'https://fleet.example.com'" in err
    assert "hosts.example-host: an example host" in err


def test_a_secret_file_that_never_ends_fails_fast(tmp_path: Path) -> None:
    cfg = Config.model_validate({"github": {"token_file": "/dev/zero"}})
    with pytest.raises(ConfigError, match="larger than 64 KiB"):
        resolve_secrets(cfg, env={}, use_gh=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "--pr", "42", "--wait-offline", "nan"],
        ["deploy", "--pr", "42", "--wait-offline", "inf"],
        ["deploy", "--pr", "42", "--wait-offline", "-1"],
        ["deploy", "--pr", "42", "--wait-offline", "20000"],
        ["auto", "--stop-grace", "nan"],
        ["auto", "--stop-grace", "1e300"],
        ["auto", "--ready-timeout", "0"],
        ["auto", "--ready-timeout", "-inf"],
        ["history", "--limit", "0"],
        ["history", "--limit", "1.5"],
    ],
)
def test_absurd_option_values_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(argv)
    err = capsys.readouterr().err
    assert refused.value.code == 2 and f"argument {argv[-2]}" in err and "Traceback" not in err


@pytest.mark.parametrize("value", [True, float("inf"), float("nan"), -1, 2000])
def test_min_window_minutes_is_strict_and_bounded(value: object) -> None:
    from nfu_tui.config import AutomationConfig

    with pytest.raises(ValueError):
        AutomationConfig(min_window_minutes=value)
