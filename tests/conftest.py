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
from screentext import svg_lines

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


@pytest.fixture
def snap_compare(snap_compare, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """pytest-textual-snapshot's comparison, printing what differs (the screen's text, else its styles)
    when a snapshot does not match: CI keeps the output, not the HTML report."""
    import difflib
    import pickle

    from pytest_textual_snapshot import node_to_report_path

    def compare(*args: object, **kwargs: object) -> bool:
        matched = snap_compare(*args, **kwargs)
        if not matched:
            expected, actual = pickle.loads(node_to_report_path(request.node).read_bytes())[1:3]
            for styled in (False, True):
                diff = list(difflib.unified_diff(svg_lines(expected, styled=styled), svg_lines(actual, styled=styled),
                                                 "expected", "actual", lineterm="", n=1))
                if diff:
                    print("\n".join(["snapshot differs" + (" (styles only)" if styled else "") + ":", *diff]))
                    break
        return matched

    return compare
