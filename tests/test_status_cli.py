"""`nfu-tui status` against the simulator (run in a thread: the command runs its own event loop)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nfu_tui.cli import main


@pytest.fixture
def config_path(sim_thread, tmp_path: Path) -> Path:
    return sim_thread.sim.write_config(tmp_path / "cfg")


def test_status_json_schema(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_path), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "nfu-tui.status/1"
    assert report["dashboard"]["ok"] and report["github"]["ok"]
    assert report["github"]["rate"]["remaining"] is not None
    hosts = {h["hostname"]: h for h in report["hosts"]}
    assert len(hosts) == 12 and hosts["hsb8"]["online"] is False
    assert set(hosts["gpc0"]["compartments"]) == {"agent", "git", "lock", "system", "tests"}
    assert hosts["gpc0"]["compartments"]["lock"]["state"] == "ok"
    (pr,) = report["update_prs"]
    assert pr["number"] == 42 and pr["ci"] == "green" and pr["mergeable"] is True and pr["lock_only"] is True
    assert pr["headline"].startswith("nixpkgs ") and pr["summary"].startswith("• Updated input")


def test_status_text(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_path), "status"]) == 0
    out = capsys.readouterr().out
    assert "Fleet: 12 hosts, 11 online" in out
    assert "PR #42 flake.lock: Update" in out and "CI green" in out


def test_status_unreachable_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o600)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[github]\nrepo = "a/b"\napi_url = "http://127.0.0.1:9"\n'
        f'[dashboard]\nurl = "http://127.0.0.1:9"\npassword_file = "{pw}"\n'
    )
    assert main(["--config", str(cfg), "status"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert any(line.startswith("nfu-tui status: dashboard") for line in err.splitlines())


def test_status_incomplete_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[github]\npoll_minutes = 5\n")
    assert main(["--config", str(cfg), "status"]) == 2
    assert "not configured" in capsys.readouterr().err


def test_status_refuses_plain_http_to_remote_dashboard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o600)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[github]\nrepo = "a/b"\n[dashboard]\nurl = "http://fleet.example.com"\npassword_file = "{pw}"\n')
    assert main(["--config", str(cfg), "status"]) == 2
    assert "insecure" in capsys.readouterr().err
