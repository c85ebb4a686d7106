"""The app-owned state file (holds, overrides, automation toggle, notify-once) and XDG paths."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nfu_tui import paths
from nfu_tui.core.state import NOTIFIED_LIMIT, STATE_NAME, AppState, atomic_write_text
from nfu_tui.errors import StateError

# --- paths ------------------------------------------------------------------------


def test_xdg_variables_are_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "s"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "k"))
    monkeypatch.delenv(paths.STATE_DIR_ENV, raising=False)
    assert paths.config_path() == tmp_path / "c" / "nfu-tui" / "config.toml"
    assert paths.state_dir() == tmp_path / "s" / "nfu-tui"
    assert paths.cache_dir() == tmp_path / "k" / "nfu-tui"
    assert not (tmp_path / "s").exists()  # nothing is created by asking


def test_relative_or_empty_xdg_values_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    monkeypatch.setenv("XDG_STATE_HOME", "")
    monkeypatch.delenv("XDG_CACHE_HOME")
    if sys.platform.startswith("linux"):
        assert paths.config_path() == tmp_path / ".config" / "nfu-tui" / "config.toml"
        assert paths.state_dir() == tmp_path / ".local" / "state" / "nfu-tui"
        assert paths.cache_dir() == tmp_path / ".cache" / "nfu-tui"
    assert paths.config_path().is_absolute() and paths.state_dir().is_absolute()


def test_state_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.STATE_DIR_ENV, str(tmp_path / "demo-state"))
    assert paths.state_dir() == tmp_path / "demo-state"
    state = AppState.load()
    state.hold("web1")
    assert (tmp_path / "demo-state" / STATE_NAME).exists()


def test_ensure_dir_creates_private_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert paths.ensure_dir(target) == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    target.chmod(0o750)
    paths.ensure_dir(target)  # an existing directory keeps the user's choice
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        paths.ensure_dir(tmp_path / "file")


# --- state file -------------------------------------------------------------------


def test_empty_when_missing_and_round_trip() -> None:
    state = AppState.load()
    assert state.path == paths.state_dir() / STATE_NAME
    assert (state.held, state.overrides, state.automation_enabled, state.notified, state.warnings) == (
        set(), {}, None, {}, [],
    )
    state.hold("web1")
    state.hold("db1")
    state.unhold("web1")
    state.set_override("db1", "priority", 5)
    state.set_override("db1", "canary", True)
    state.set_override("db1", "canary", None)
    state.set_override("web2", "auto_update", False)
    state.set_automation(False)
    state.mark_notified("pr:42", "abc")

    again = AppState.load()
    assert again.held == {"db1"} and again.is_held("db1") and not again.is_held("web1")
    assert again.overrides == {"db1": {"priority": 5}, "web2": {"auto_update": False}}
    assert again.automation_enabled is False
    assert again.notified == {"pr:42": "abc"}
    data = json.loads(state.path.read_text())
    assert data["version"] == 1 and data["held"] == ["db1"]
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    assert not list(state.path.parent.glob(".state.json.*"))  # no temp files left
    assert not paths.config_path().exists()  # config.toml is never written


def test_removing_the_last_override_drops_the_host() -> None:
    state = AppState.load()
    state.set_override("h", "priority", 1)
    state.set_override("h", "priority", None)
    state.set_override("never-set", "priority", None)
    assert AppState.load().overrides == {}
    with pytest.raises(ValueError, match="JSON value"):
        state.set_override("h", "priority", object())
    assert state.overrides == {}


def test_automation_none_follows_config() -> None:
    state = AppState.load()
    state.set_automation(True)
    state.set_automation(None)
    assert AppState.load().automation_enabled is None


def test_notify_once() -> None:
    state = AppState.load()
    assert state.should_notify("pr:42:opened", "sha1")
    state.mark_notified("pr:42:opened", "sha1")
    assert not AppState.load().should_notify("pr:42:opened", "sha1")
    assert AppState.load().should_notify("pr:42:opened", "sha2")  # new head: tell again


def test_notify_marks_are_bounded_oldest_first() -> None:
    state = AppState.load()
    for i in range(NOTIFIED_LIMIT):
        state.notified[f"k{i}"] = "v"
    state.save()
    state.mark_notified("k0", "v2")  # refreshed: now the newest
    state.mark_notified("new", "v")
    keys = list(AppState.load().notified)
    assert len(keys) == NOTIFIED_LIMIT
    assert "k1" not in keys and keys[-2:] == ["k0", "new"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"held": "web1"}', "'held' is not a list"),
        (b'{"held": [1]}', "'held' is not a list"),
        (b'{"overrides": {"h": 3}}', "'overrides'"),
        (b'{"automation_enabled": "yes"}', "'automation_enabled'"),
        (b'{"notified": {"k": 1}}', "'notified'"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_corrupt_file_is_moved_aside(content: bytes, problem: str, caplog: pytest.LogCaptureFixture) -> None:
    path = paths.ensure_dir(paths.state_dir()) / STATE_NAME
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="nfu_tui.core.state"):
        state = AppState.load()
    assert state.held == set() and state.overrides == {}
    (backup,) = path.parent.glob("state.json.corrupt-*")
    assert backup.read_bytes() == content
    assert len(state.warnings) == 1 and problem in state.warnings[0] and backup.name in state.warnings[0]
    assert problem in caplog.text
    assert not path.exists()
    state.hold("h1")  # and it carries on
    assert AppState.load().held == {"h1"}


def test_two_corrupt_files_in_the_same_second_keep_both_backups() -> None:
    path = paths.ensure_dir(paths.state_dir()) / STATE_NAME
    path.write_text("{bad")
    AppState.load()
    path.write_text("{worse")
    AppState.load()
    backups = sorted(p.read_text() for p in path.parent.glob("state.json.corrupt-*"))
    assert backups == ["{bad", "{worse"]


def test_file_damaged_after_load_keeps_what_this_process_knew() -> None:
    state = AppState.load()
    state.hold("a")
    state.hold("b")
    state.path.write_text("{oops")
    state.hold("c")
    assert AppState.load().held == {"a", "b", "c"}
    assert len(list(state.path.parent.glob("state.json.corrupt-*"))) == 1
    assert "damaged" in state.warnings[0]


def test_unknown_keys_are_preserved() -> None:
    path = paths.ensure_dir(paths.state_dir()) / STATE_NAME
    path.write_text(json.dumps({"version": 1, "held": ["a"], "future_feature": {"x": 1}}))
    state = AppState.load()
    state.hold("b")
    data = json.loads(path.read_text())
    assert data["future_feature"] == {"x": 1} and data["held"] == ["a", "b"]


def test_unreadable_file_is_a_state_error() -> None:
    path = paths.ensure_dir(paths.state_dir()) / STATE_NAME
    path.mkdir()
    with pytest.raises(StateError, match="cannot read the state file"):
        AppState.load()


# --- concurrency -------------------------------------------------------------------


def test_two_instances_do_not_lose_each_others_changes() -> None:
    tui, auto = AppState.load(), AppState.load()
    tui.hold("web1")
    auto.hold("db1")  # auto never saw web1
    tui.set_override("web1", "priority", 1)
    auto.set_override("web1", "canary", True)
    auto.set_automation(False)
    tui.mark_notified("pr:1", "x")  # tui's stale toggle (None) must not undo auto's False
    tui.unhold("db1")  # tui now knows db1 (re-read on its last save) and releases it
    final = AppState.load()
    assert final.held == {"web1"}
    assert final.overrides == {"web1": {"priority": 1, "canary": True}}
    assert final.automation_enabled is False
    assert final.notified == {"pr:1": "x"}
    assert tui.held == {"web1"} and tui.automation_enabled is False  # refreshed by its save


def test_direct_edits_are_merged_by_save() -> None:
    a, b = AppState.load(), AppState.load()
    a.held.update({"x", "y"})
    a.save()
    b.held.add("z")
    b.notified["k"] = "v"
    b.save()
    assert AppState.load().held == {"x", "y", "z"}
    b.held.add("unsaved")
    b.reload()
    assert b.held == {"x", "y", "z"}


def test_processes_in_parallel_keep_every_hold(tmp_path: Path) -> None:
    state_path = tmp_path / STATE_NAME
    code = textwrap.dedent("""
        import sys
        from nfu_tui.core.state import AppState
        state = AppState.load(sys.argv[1])
        for i in range(20):
            state.hold(f"{sys.argv[2]}-{i}")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(state_path), f"p{n}"]) for n in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert AppState.load(state_path).held == {f"p{n}-{i}" for n in range(4) for i in range(20)}


def test_atomic_write_replaces_in_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    target = tmp_path / "d" / "f.json"
    target.write_text("old")

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nfu_tui.core.state.os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # temp file cleaned up
