"""Unit tests of the nixpkgs package changelog (nfu_tui.domain.changelog)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from nfu_tui.domain.changelog import Category, build_changelog, classify_subject, security_ids


@pytest.mark.parametrize(
    ("subject", "kind", "attrs", "old", "new"),
    [
        ("firefox: 54.0.1 -> 55.0", "bump", ("firefox",), "54.0.1", "55.0"),
        ("firefox: 54.0.1 → 55.0", "bump", ("firefox",), "54.0.1", "55.0"),
        ("python3Packages.numpy: 1.26.4 -> 2.0.0 (#312345)", "bump", ("python3Packages.numpy",), "1.26.4", "2.0.0"),
        ("[Backport release-25.11] curl: 8.9.0 -> 8.9.1", "bump", ("curl",), "8.9.0", "8.9.1"),
        ("[25.05] curl: 8.9.0 -> 8.9.1", "bump", ("curl",), "8.9.0", "8.9.1"),
        ("python3Packages.{numpy,scipy}: 1.0 -> 1.1", "bump", ("python3Packages.numpy", "python3Packages.scipy"), "1.0", "1.1"),
        ("foo: update to 2.0", "bump", ("foo",), None, "2.0"),
        ('Revert "qux: 2.0 -> 3.0"', "bump", ("qux",), "3.0", "2.0"),
        ("nginx: init at 2.0.1", "new", ("nginx",), None, "2.0.1"),
        ("nginx: init", "new", ("nginx",), None, None),
        ("oldthing: remove", "removed", ("oldthing",), None, None),
        ("oldthing: drop as it is unmaintained", "removed", ("oldthing",), None, None),
        ("oldthing: remove unused dependency", "other", ("oldthing",), None, None),
        ("qt6Packages.qtdeclarative: fix build", "other", ("qt6Packages.qtdeclarative",), None, None),
        ("nixos/hydra: add bazBaz option", "module", ("nixos/hydra",), None, None),
        ("nixos/tests/hydra: fix flakiness", "noise", (), None, None),
        ("treewide: format with nixfmt", "noise", (), None, None),
        ("maintainers: add someone", "noise", (), None, None),
        ("Merge staging-next into master", "noise", (), None, None),
        ("Merge branch 'master' into staging-next", "noise", (), None, None),
        ("pkgs/top-level: reorganise", "other", (), None, None),
        ("", "other", (), None, None),
    ],
)
def test_classify_subject(subject: str, kind: str, attrs: tuple[str, ...], old: str | None, new: str | None) -> None:
    info = classify_subject(subject)
    assert (info.kind, info.attrs, info.old, info.new) == (kind, attrs, old, new)


def test_security_ids_are_normalised_and_distinct() -> None:
    text = "Fixes CVE-2024-1234, cve-2024-1234 and GHSA-2m57-hf25-phgg; not CVE-24-1 nor GHSA-aaaa-bbbb-cccc"
    assert security_ids(text) == {"CVE-2024-1234", "GHSA-2m57-hf25-phgg"}


def test_grouping_ordering_and_lines() -> None:
    log = build_changelog(
        [
            "ripgrep: 14.1.1 -> 15.0.0\n\nhttps://github.com/BurntSushi/ripgrep/blob/15.0.0/CHANGELOG.md",
            ("openssl: 3.0.14 -> 3.0.15", "Fixes CVE-2024-1234.\nSee also CVE-2024-5678"),
            "linux_6_12: 6.12.1 -> 6.12.3",
            "linux_6_12: 6.12.3 -> 6.12.4",
            "hello: 2.12.1 -> 2.12.2",
            "foo: init at 1.0",
            "bar: remove",
            "nixos/hydra: add bazBaz option",
            "nixos/nginx: fix typo",
            "nixos/nginx: add option",
            "treewide: format",
        ]
    )
    assert log.lines() == [
        "⚠ openssl 3.0.14 → 3.0.15 (CVE-2024-1234, CVE-2024-5678)",
        "linux_6_12 6.12.1 → 6.12.4",
        "ripgrep 14.1.1 → 15.0.0 (major)",
        "hello 2.12.1 → 2.12.2",
        "+ foo 1.0 (new)",
        "- bar (removed)",
        "~ nixos/hydra: add bazBaz option",
        "~ nixos/nginx (2 changes)",
    ]
    assert [e.category for e in log.entries] == [
        Category.SECURITY, Category.KERNEL, Category.MAJOR, Category.BUMP, Category.NEW, Category.REMOVED,
        Category.MODULE, Category.MODULE,
    ]  # fmt: skip
    assert log.security_ids == ("CVE-2024-1234", "CVE-2024-5678") and log.cve_count == 2
    assert log.count(Category.MODULE) == 2 and log.commits == 11 and log.skipped == 1
    assert log.summary() == "1 security fix (2 CVEs), 1 kernel, 1 major update, 1 update, 1 new, 1 removed, 2 modules"
    assert log.lines(3) == log.lines()[:2] + ["… and 6 more"]
    assert log.lines(100) == log.lines()


def test_repeated_bumps_collapse_in_either_order() -> None:
    oldest_first = build_changelog(["a: 1.0 -> 1.1", "a: 1.1 -> 1.2", "a: 1.2 -> 1.3"])
    newest_first = build_changelog(["a: 1.2 -> 1.3", "a: 1.1 -> 1.2", "a: 1.0 -> 1.1"])
    for log in (oldest_first, newest_first):
        [entry] = log.entries
        assert (entry.old, entry.new, entry.commits) == ("1.0", "1.3", 3)


def test_reverted_and_transient_changes_disappear() -> None:
    log = build_changelog(["qux: 2.0 -> 3.0", 'Revert "qux: 2.0 -> 3.0"', "tmp: init at 0.1", "tmp: remove"])
    assert log.entries == ()
    readded = build_changelog(["zed: remove", "zed: init at 2.0"])
    assert readded.lines() == ["+ zed 2.0 (new)"]
    grown = build_changelog(["baz: init at 1.0", "baz: 1.0 -> 1.1"])
    assert grown.lines() == ["+ baz 1.1 (new)"]


def test_merge_commits_use_the_pr_title_without_double_counting() -> None:
    log = build_changelog(
        [
            "curl: 8.9.0 -> 8.9.1",
            "Merge pull request #1 from someone/curl\n\n[25.11] curl: 8.9.0 -> 8.9.1",
            ("Merge pull request #2 from someone/jq", "jq: 1.7 -> 1.7.1\n\nFixes CVE-2023-50246"),
            "Merge pull request #3 from someone/empty",
        ]
    )
    assert log.lines() == ["⚠ jq 1.7 → 1.7.1 (CVE-2023-50246)", "curl 8.9.0 → 8.9.1"]
    curl = next(e for e in log.entries if e.name == "curl")
    assert curl.commits == 1


def test_security_without_a_version_and_unattributed() -> None:
    log = build_changelog(
        [
            ("libxml2: add patch", "Fixes CVE-2025-0001"),
            ("pkgs/top-level: something", "Mitigates GHSA-2m57-hf25-phgg"),
            "nixos/sshd: harden defaults (CVE-2025-0002)",
        ]
    )
    assert log.lines() == [
        "⚠ libxml2 (CVE-2025-0001)",
        "⚠ nixos/sshd: harden defaults (CVE-2025-0002)",
        "⚠ pkgs/top-level: something (GHSA-2m57-hf25-phgg)",
    ]
    assert log.cve_count == 3


@dataclass
class _Commit:
    subject: str
    body: str | None = None


def test_odd_input_never_crashes() -> None:
    huge = "a." * 200_000 + ": 1 -> 2"
    log = build_changelog(
        [
            None, 42, b"bytes", "", "   ", (None, None), ("x: 1 -> 2", None), {"subject": None}, {"message": 3},
            {"commit": {"message": "y: 1 -> 2\n\nbody"}}, _Commit("z: 0.9 -> 1.0", None), _Commit("☃ snow: 1 -> 2"),
            huge, "é: 1 -> 2", "\x00\x01: \x02 -> \x03", "x" * 1_000_000, "CVE-2025-" + "9" * 5000,
            ": 1 -> 2", "a:", "a: ->", "a: 1 ->", "{: 1 -> 2", "a{b: 1 -> 2",
        ]
    )  # fmt: skip
    names = {e.name for e in log.entries}
    assert {"x", "y", "z", "é"} <= names
    assert log.commits == 23
    assert all(len(line) < 200 for line in log.lines())


def test_many_subjects_with_a_seeded_generator() -> None:
    rng = random.Random(7)
    subjects = [f"p{rng.randint(0, 50)}: {i}.0 -> {i}.1" for i in range(2000)]
    log = build_changelog(subjects)
    assert log.commits == 2000 and log.classified == 2000
    assert sum(e.commits for e in log.entries) == 2000
    assert len(log.entries) == len({s.split(":")[0] for s in subjects})


def test_date_versions_are_not_major_bumps() -> None:
    log = build_changelog([
        "linux-firmware: 20260617 -> 20260631",
        "rust-analyzer: 2025-11-24 -> 2026-11-15",
        "foo: unstable-2026-10-01 -> unstable-2026-11-01",
        "fish: 4.2.1 -> 5.0.0",
    ])
    assert log.count(Category.MAJOR) == 1
    assert any("fish 4.2.1 → 5.0.0 (major)" in line for line in log.lines())
