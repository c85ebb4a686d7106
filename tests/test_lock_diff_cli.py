"""`nfu-tui lock-diff`: output, JSON, and one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.cli import main

REV_A = "0123456789abcdef0123456789abcdef01234567"
REV_B = "89abcdef0123456789abcdef0123456789abcdef"
NAR = "sha256-PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0="


def _lock(rev: str, t: int) -> dict[str, Any]:
    return {
        "nodes": {
            "root": {"inputs": {"nixpkgs": "nixpkgs"}},
            "nixpkgs": {
                "locked": {"lastModified": t, "narHash": NAR, "owner": "NixOS", "repo": "nixpkgs", "rev": rev, "type": "github"},
                "original": {"owner": "NixOS", "ref": "nixos-unstable", "repo": "nixpkgs", "type": "github"},
            },
        },
        "root": "root",
        "version": 7,
    }


@pytest.fixture
def locks(tmp_path: Path) -> tuple[str, str]:
    before, after = tmp_path / "before.lock", tmp_path / "after.lock"
    before.write_text(json.dumps(_lock(REV_A, 1770465600), indent=2))
    after.write_text(json.dumps(_lock(REV_B, 1771070400), indent=2))
    return str(before), str(after)


def test_text_output_in_both_styles(locks: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lock-diff", *locks]) == 0
    out = capsys.readouterr()
    assert out.out == (
        "• Updated input 'nixpkgs':\n"
        "    'github:NixOS/nixpkgs/0123456' (2026-02-07)\n"
        "  → 'github:NixOS/nixpkgs/89abcde' (2026-02-14)\n"
    )
    assert out.err == ""
    assert main(["lock-diff", "--style", "upstream", *locks]) == 0
    assert f"'github:NixOS/nixpkgs/{REV_B}?narHash=sha256-PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0%3D' (2026-02-14)\n" in (
        capsys.readouterr().out
    )


def test_unchanged_prints_nothing_or_an_empty_list(locks: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lock-diff", locks[0], locks[0]]) == 0
    assert capsys.readouterr().out == ""
    assert main(["lock-diff", "--json", locks[0], locks[0]]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_json_lists_each_change(locks: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lock-diff", "--json", *locks]) == 0
    [change] = json.loads(capsys.readouterr().out)
    assert change["path"] == "nixpkgs" and change["path_list"] == ["nixpkgs"] and change["kind"] == "updated"
    assert change["old"]["rev"] == REV_A and change["new"]["rev"] == REV_B
    assert (change["old"]["date"], change["new"]["date"]) == ("2026-02-07", "2026-02-14")
    assert change["new"]["url"] == "github:NixOS/nixpkgs/89abcde"
    assert change["compare"] == {
        "owner": "NixOS", "repo": "nixpkgs", "old_rev": REV_A, "new_rev": REV_B, "basehead": f"{REV_A}...{REV_B}",
        "url": f"https://github.com/NixOS/nixpkgs/compare/{REV_A}...{REV_B}", "kind": "update",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        ("{oops", "not valid JSON"),
        ("[]", "not a flake.lock"),
        ('{"version": 3, "root": "root", "nodes": {}}', "unsupported lock file version 3"),
        ('{"version": 7, "root": "root"}', "no 'nodes' object"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, locks: tuple[str, str], capsys: pytest.CaptureFixture[str], content: str | None, reason: str
) -> None:
    bad = tmp_path / "bad.lock"
    if content is not None:
        bad.write_text(content)
    assert main(["lock-diff", locks[0], str(bad)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith(f"nfu-tui lock-diff: {bad}: ") and reason in out.err
    assert out.err.count("\n") == 1 and "Traceback" not in out.err


def test_subprocess_run(locks: tuple[str, str], tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "nfu_tui", "lock-diff", *locks], capture_output=True, timeout=60)
    assert ok.returncode == 0 and ok.stderr == b""
    assert ok.stdout.decode("utf-8").startswith("• Updated input 'nixpkgs':\n")
    bad = subprocess.run(
        [sys.executable, "-m", "nfu_tui", "lock-diff", locks[0], str(tmp_path / "missing.lock")],
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stdout == b""
    assert bad.stderr.decode() == f"nfu-tui lock-diff: {tmp_path / 'missing.lock'}: no such file\n"
