"""Shared test set-up.

Every test runs with its own XDG config/state/cache directories so that the user's
real configuration and state are never read or written. Simulator fixtures live in
``nfu_tui/sim/testing.py`` and are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nfu_tui.sim.testing import *  # noqa: F401,F403

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _isolated_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        d = tmp_path / "xdg" / var.lower()
        d.mkdir(parents=True)
        monkeypatch.setenv(var, str(d))
    for var in list(os.environ):
        if var.startswith("NIXFLEET_") or var in ("GH_TOKEN", "GITHUB_TOKEN"):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")


@pytest.fixture(autouse=True)
def _forget_secrets() -> object:
    """Secrets registered for redaction by one test do not mask text in the next."""
    from nfu_tui.sanitize import redactor

    yield
    redactor.clear()
