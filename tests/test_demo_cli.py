"""`nfu-tui demo --state-dir`: settings are kept, the journal starts afresh with the simulator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.cli import main
from nfu_tui.core.state import AppState
from nfu_tui.core.store import DB_NAME, Store
from nfu_tui.paths import state_dir


def test_a_demo_with_a_state_dir_keeps_settings_and_starts_a_fresh_journal(tmp_path: Path, monkeypatch: Any) -> None:
    from nfu_tui.commands import tui

    seen: list[tuple[int, set[str]]] = []

    def fake_app(cfg: Any, secrets: Any, **kw: Any) -> int:  # what the TUI would find, without a terminal
        with Store() as store:
            seen.append((len(store.list_runs()), AppState.load().held))
            store.create_run("deploy", actor="alice@box", pr=42)  # left unfinished, as by a quit mid-deploy
        state = AppState.load()
        state.held = {"hsb0"}
        state.save()
        return 0

    monkeypatch.setattr(tui, "run_app", fake_app)
    for var in ("XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(var, os.environ[var])  # restored after the demo set them
    demo_dir = tmp_path / "demo"
    assert main(["demo", "--state-dir", str(demo_dir), "--hosts", "2"]) == 0
    assert main(["demo", "--state-dir", str(demo_dir), "--hosts", "2"]) == 0
    assert seen == [(0, set()), (0, {"hsb0"})]  # the hold is kept; the run of the simulator that is gone is not
    previous = state_dir() / (DB_NAME + ".previous")
    assert previous.exists() and str(previous).startswith(str(demo_dir))
