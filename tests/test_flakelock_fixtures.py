"""Byte-for-byte agreement with nix on real flake.lock updates (shared fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nfu_tui.domain.flakelock import (
    ChangeKind,
    compare_targets,
    diff,
    headline,
    parse_lock,
    render_message,
    render_summary,
    to_json,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "flake-lock-updates"
CASES = sorted(p for p in FIXTURES.iterdir() if p.is_dir()) if FIXTURES.is_dir() else []

pytestmark = pytest.mark.skipif(not CASES, reason=f"shared flake.lock fixtures not found at {FIXTURES}")


def _case(case: Path) -> tuple[bytes, bytes, str, str]:
    summary = (case / "nix-summary.txt").read_text(encoding="utf-8")
    style = "upstream" if "?narHash=" in summary else "determinate"
    return (case / "before.lock").read_bytes(), (case / "after.lock").read_bytes(), summary, style


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_summary_is_byte_identical_to_nix(case: Path) -> None:
    before, after, summary, style = _case(case)
    header, blank, entries = summary.split("\n", 2)
    assert (header, blank) == ("Flake lock file updates:", "")
    changes = diff(parse_lock(before), parse_lock(after))
    assert render_summary(changes, style) == entries
    assert render_message(changes, style) == summary


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fixture_views_are_consistent(case: Path) -> None:
    before, after, summary, style = _case(case)
    old, new = parse_lock(before), parse_lock(json.loads(after))  # bytes and dict inputs agree
    changes = diff(old, new)
    assert diff(old, old) == [] and diff(new, new) == []
    assert changes == diff(before.decode(), after.decode())
    line = headline(changes, old, new)
    assert line is not None and line.split(" ")[0] in {c.name for c in changes} | {"nixpkgs"}
    targets = compare_targets(changes, old, new)
    covered = [p for t in targets for p in t.paths]
    assert len(covered) == len(set(covered))
    for t in targets:
        assert t.url == f"https://github.com/{t.owner}/{t.repo}/compare/{t.old_rev}...{t.new_rev}"
        assert len(t.old_rev) == len(t.new_rev) == 40 and t.old_rev != t.new_rev
    doc = to_json(changes, old, new, style=style)
    assert [d["path"] for d in doc] == [c.name for c in changes]
    assert sum(d["kind"] == "updated" for d in doc) == sum(c.kind is ChangeKind.UPDATED for c in changes)
    json.dumps(doc)
