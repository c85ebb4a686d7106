"""Unit tests of nfu_tui.domain.flakelock with small lock files written here."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest

from nfu_tui.domain.flakelock import (
    ChangeKind,
    Follows,
    LockChange,
    LockedRef,
    Style,
    UpdateKind,
    compare_targets,
    diff,
    explain_changes,
    github_coordinates,
    headline,
    parse_lock,
    render_edge,
    render_message,
    render_summary,
    to_json,
)
from nfu_tui.errors import LockFileError

REV_A = "0123456789abcdef0123456789abcdef01234567"
REV_B = "89abcdef0123456789abcdef0123456789abcdef"
REV_C = "fedcba9876543210fedcba9876543210fedcba98"
NAR_A = "sha256-Jx2+1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0="
NAR_B = "sha256-PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0="
T_A = 1770465600  # 2026-02-07T12:00:00Z
T_B = 1771070400  # 2026-02-14T12:00:00Z


def gh(owner: str, repo: str, rev: str = REV_A, *, t: int = T_A, nar: str = NAR_A, ref: str | None = None,
       inputs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A github node as nix writes it."""
    original: dict[str, Any] = {"owner": owner, "repo": repo, "type": "github"}
    if ref:
        original["ref"] = ref
    node: dict[str, Any] = {
        "locked": {"lastModified": t, "narHash": nar, "owner": owner, "repo": repo, "rev": rev, "type": "github", **extra},
        "original": original,
    }
    if inputs:
        node["inputs"] = inputs
    return node


def lock(root_inputs: dict[str, Any], nodes: dict[str, Any], *, version: int = 7, root: str = "root") -> dict[str, Any]:
    return {"nodes": {root: {"inputs": root_inputs}, **nodes}, "root": root, "version": version}


def ref(locked: dict[str, Any], **kw: Any) -> LockedRef:
    return LockedRef(node_key="n", locked=locked, **kw)


def both(locked: dict[str, Any]) -> tuple[str, str]:
    r = ref(locked)
    return render_edge(r, Style.UPSTREAM), render_edge(r, "determinate")


# --- rendering of every fetcher type ------------------------------------------------


def test_github_both_styles() -> None:
    up, det = both(gh("NixOS", "nixpkgs")["locked"])
    assert up == f"'github:NixOS/nixpkgs/{REV_A}?narHash=sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0%3D' (2026-02-07)"
    assert det == "'github:NixOS/nixpkgs/0123456' (2026-02-07)"


def test_github_host_and_dir_sorted_into_the_query() -> None:
    locked = gh("corp", "infra", host="git.corp.example", dir="nix/lib")["locked"]
    up, det = both(locked)
    assert up == (
        f"'github:corp/infra/{REV_A}?dir=nix/lib&host=git.corp.example"
        "&narHash=sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0%3D' (2026-02-07)"
    )
    assert det == "'github:corp/infra/0123456?dir=nix/lib&host=git.corp.example' (2026-02-07)"


def test_gitlab_and_sourcehut_share_the_github_form() -> None:
    gl = {"type": "gitlab", "owner": "group", "repo": "proj", "rev": REV_B, "host": "gitlab.example.org",
          "narHash": NAR_B, "lastModified": T_B}  # fmt: skip
    assert both(gl) == (
        f"'gitlab:group/proj/{REV_B}?host=gitlab.example.org"
        "&narHash=sha256-PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0%3D' (2026-02-14)",
        "'gitlab:group/proj/89abcde?host=gitlab.example.org' (2026-02-14)",
    )
    srht = {"type": "sourcehut", "owner": "~sircmpwn", "repo": "hare", "rev": REV_C, "narHash": NAR_A}
    assert both(srht) == (
        f"'sourcehut:~sircmpwn/hare/{REV_C}?narHash=sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0%3D'",
        "'sourcehut:~sircmpwn/hare/fedcba9'",
    )


def test_git_full_rev_and_ref_rules() -> None:
    locked = {"type": "git", "url": "https://example.org/repo.git", "ref": "main", "rev": REV_A, "revCount": 42,
              "lastModified": T_A, "narHash": NAR_A}  # fmt: skip
    assert both(locked) == (
        f"'git+https://example.org/repo.git?ref=main&rev={REV_A}' (2026-02-07)",
        f"'git+https://example.org/repo.git?rev={REV_A}' (2026-02-07)",
    )
    locked["ref"] = "master"
    assert both(locked)[1] == f"'git+https://example.org/repo.git?rev={REV_A}' (2026-02-07)"
    locked["ref"] = "release-1.0"
    assert both(locked)[1] == f"'git+https://example.org/repo.git?ref=release-1.0&rev={REV_A}' (2026-02-07)"


def test_git_flags_scheme_and_file_urls() -> None:
    locked = {"type": "git", "url": "ssh://git@github.com/o/r.git", "ref": "main", "rev": REV_B,
              "submodules": True, "shallow": True, "lfs": False, "narHash": NAR_B}  # fmt: skip
    up, det = both(locked)
    assert up == f"'git+ssh://git@github.com/o/r.git?ref=main&rev={REV_B}&shallow=1&submodules=1'"
    assert det == f"'git+ssh://git@github.com/o/r.git?rev={REV_B}&shallow=1&submodules=1'"
    assert both({"type": "git", "url": "file:///home/me/flake", "rev": REV_A})[0] == f"'git+file:///home/me/flake?rev={REV_A}'"
    assert both({"type": "git", "url": "git://git.example.org/x", "rev": REV_A})[0] == f"'git://git.example.org/x?rev={REV_A}'"


def test_mercurial() -> None:
    locked = {"type": "mercurial", "url": "https://hg.example.org/repo", "ref": "default", "rev": REV_C, "revCount": 7,
              "narHash": NAR_A}  # fmt: skip
    expected = f"'hg+https://hg.example.org/repo?ref=default&rev={REV_C}'"
    assert both(locked) == (expected, expected)


def test_tarball_and_file_keep_the_url_and_its_encoding() -> None:
    flakehub = {"type": "tarball", "lastModified": T_B, "narHash": NAR_B, "rev": REV_C, "revCount": 1017464,
                "url": "https://api.flakehub.com/f/pinned/NixOS/nixpkgs/0.1.1017464%2Brev-fedcba9/0197/source.tar.gz"}  # fmt: skip
    up, det = both(flakehub)
    assert up == (
        "'https://api.flakehub.com/f/pinned/NixOS/nixpkgs/0.1.1017464%2Brev-fedcba9/0197/source.tar.gz"
        "?narHash=sha256-PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0%3D' (2026-02-14)"
    )
    assert det == "'https://api.flakehub.com/f/pinned/NixOS/nixpkgs/0.1.1017464%2Brev-fedcba9/0197/source.tar.gz' (2026-02-14)"
    file = {"type": "file", "url": "https://example.com/data.json?b=2&a=1", "narHash": NAR_A}
    assert both(file) == (
        "'https://example.com/data.json?a=1&b=2&narHash=sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0%3D'",
        "'https://example.com/data.json?a=1&b=2'",
    )


def test_path_lists_its_attributes_in_the_query() -> None:
    locked = {"type": "path", "path": "/nix/store/abc-source", "lastModified": T_A, "narHash": NAR_A, "rev": REV_A,
              "revCount": 3}  # fmt: skip
    up, det = both(locked)
    assert up == (
        "'path:/nix/store/abc-source?lastModified=1770465600"
        f"&narHash=sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0%3D&rev={REV_A}&revCount=3' (2026-02-07)"
    )
    assert det == f"'path:/nix/store/abc-source?lastModified=1770465600&rev={REV_A}&revCount=3' (2026-02-07)"
    assert both({"type": "path", "path": "./stubs/my flake"}) == ("'path:./stubs/my%20flake'",) * 2


def test_indirect() -> None:
    assert both({"type": "indirect", "id": "nixpkgs", "ref": "nixos-unstable"})[0] == "'flake:nixpkgs/nixos-unstable'"


def test_narhash_padding_is_restored_like_nix() -> None:
    locked = gh("o", "r", nar="sha256-Jx2+1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0")["locked"]
    assert "narHash=sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0%3D'" in both(locked)[0]


def test_dates_are_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        assert ref({"type": "github", "owner": "o", "repo": "r", "lastModified": 1700006399}).date == "2023-11-14"
        assert ref({"type": "github", "owner": "o", "repo": "r", "lastModified": 0}).date == "1970-01-01"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_follows_rendering_and_message_header() -> None:
    assert render_edge(Follows(("nixcfg", "nixpkgs"))) == "follows 'nixcfg/nixpkgs'"
    assert render_edge(Follows(())) == "follows ''"
    change = LockChange(("a",), ChangeKind.REMOVED, Follows(("b",)), None)
    assert render_message([change]) == "Flake lock file updates:\n\n• Removed input 'a'\n"
    assert render_summary([]) == ""


# --- diff semantics -------------------------------------------------------------------


def test_unchanged_lock_has_an_empty_diff_even_with_new_node_keys() -> None:
    a = lock({"nixpkgs": "nixpkgs"}, {"nixpkgs": gh("NixOS", "nixpkgs")})
    b = lock({"nixpkgs": "nixpkgs_4"}, {"nixpkgs_4": gh("NixOS", "nixpkgs")})
    assert diff(a, a) == []
    assert diff(a, b) == []


def test_added_updated_removed_entries_in_nix_format() -> None:
    a = lock({"hm": "hm", "old": "old"}, {"hm": gh("nix-community", "home-manager"), "old": gh("x", "old")})
    b = lock(
        {"hm": "hm", "new": "new"},
        {"hm": gh("nix-community", "home-manager", REV_B, t=T_B, nar=NAR_B), "new": gh("x", "new", REV_C)},
    )
    changes = diff(a, b)
    assert [(c.name, c.kind) for c in changes] == [
        ("hm", ChangeKind.UPDATED), ("new", ChangeKind.ADDED), ("old", ChangeKind.REMOVED),
    ]  # fmt: skip
    assert render_summary(changes) == (
        "• Updated input 'hm':\n"
        "    'github:nix-community/home-manager/0123456' (2026-02-07)\n"
        "  → 'github:nix-community/home-manager/89abcde' (2026-02-14)\n"
        "• Added input 'new':\n"
        "    'github:x/new/fedcba9' (2026-02-07)\n"
        "• Removed input 'old'\n"
    )


def test_any_change_of_locked_counts_but_original_alone_does_not() -> None:
    base = lock({"a": "a"}, {"a": gh("o", "r")})
    new_hash = lock({"a": "a"}, {"a": gh("o", "r", nar=NAR_B)})
    assert [c.kind for c in diff(base, new_hash)] == [ChangeKind.UPDATED]
    new_original = lock({"a": "a"}, {"a": gh("o", "r", ref="some-branch")})
    new_original["nodes"]["a"]["flake"] = False
    assert diff(base, new_original) == []


def test_locked_values_compare_with_their_json_types() -> None:
    a = lock({"g": "g"}, {"g": {"locked": {"type": "git", "url": "https://e.org/r", "rev": REV_A, "submodules": True}, "original": {}}})
    b = json.loads(json.dumps(a))
    b["nodes"]["g"]["locked"]["submodules"] = 1
    assert [c.kind for c in diff(a, b)] == [ChangeKind.UPDATED]


def test_follows_added_removed_changed_and_unchanged_target_moves() -> None:
    a = lock(
        {"nixpkgs": "nixpkgs", "hm": "hm", "x": "x"},
        {"nixpkgs": gh("NixOS", "nixpkgs"), "hm": gh("nix-community", "home-manager", inputs={"nixpkgs": ["nixpkgs"]}),
         "x": gh("o", "x", inputs={"nixpkgs": ["nixpkgs"], "gone": ["hm"]})},
    )  # fmt: skip
    b = lock(
        {"nixpkgs": "nixpkgs", "hm": "hm", "x": "x"},
        {"nixpkgs": gh("NixOS", "nixpkgs", REV_B, t=T_B), "hm": gh("nix-community", "home-manager", inputs={"nixpkgs": ["nixpkgs"]}),
         "x": gh("o", "x", inputs={"nixpkgs": ["hm", "nixpkgs"], "new": ["nixpkgs"]})},
    )  # fmt: skip
    changes = diff(a, b)
    # hm/nixpkgs follows the moved nixpkgs but its edge is unchanged: not reported.
    assert render_summary(changes) == (
        "• Updated input 'nixpkgs':\n"
        "    'github:NixOS/nixpkgs/0123456' (2026-02-07)\n"
        "  → 'github:NixOS/nixpkgs/89abcde' (2026-02-14)\n"
        "• Removed input 'x/gone'\n"
        "• Added input 'x/new':\n"
        "    follows 'nixpkgs'\n"
        "• Updated input 'x/nixpkgs':\n"
        "    follows 'nixpkgs'\n"
        "  → follows 'hm/nixpkgs'\n"
    )
    notes = {n.change.name: n for n in explain_changes(changes, parse_lock(a), parse_lock(b))}
    assert notes["x/nixpkgs"].kind is UpdateKind.FOLLOWS_CHANGED


def test_node_to_follows_switches_both_ways() -> None:
    a = lock({"nixpkgs": "nixpkgs", "h": "h"}, {"nixpkgs": gh("NixOS", "nixpkgs", REV_B, t=T_B),
             "h": gh("o", "h", inputs={"nixpkgs": "nixpkgs_2"}), "nixpkgs_2": gh("nixos", "nixpkgs", REV_A)})  # fmt: skip
    b = lock({"nixpkgs": "nixpkgs", "h": "h"}, {"nixpkgs": gh("NixOS", "nixpkgs", REV_B, t=T_B),
             "h": gh("o", "h", inputs={"nixpkgs": ["nixpkgs"]})})  # fmt: skip
    forward = diff(a, b)
    assert render_summary(forward) == (
        "• Updated input 'h/nixpkgs':\n    'github:nixos/nixpkgs/0123456' (2026-02-07)\n  → follows 'nixpkgs'\n"
    )
    backward = diff(b, a)
    assert render_summary(backward) == (
        "• Updated input 'h/nixpkgs':\n    follows 'nixpkgs'\n  → 'github:nixos/nixpkgs/0123456' (2026-02-07)\n"
    )
    [note] = explain_changes(forward, parse_lock(a), parse_lock(b))
    assert note.kind is UpdateKind.NOW_FOLLOWS and note.label == "now follows 'nixpkgs'"
    assert note.new_effective is not None and note.new_effective.rev == REV_B
    assert note.compare is not None and (note.compare.old_rev, note.compare.new_rev) == (REV_A, REV_B)
    [back] = explain_changes(backward, parse_lock(b), parse_lock(a))
    assert back.kind is UpdateKind.NO_LONGER_FOLLOWS and back.compare is not None
    assert (back.compare.old_rev, back.compare.new_rev) == (REV_B, REV_A)


def test_a_node_reachable_by_two_paths_is_expanded_once() -> None:
    def shared(rev: str) -> dict[str, Any]:
        return lock(
            {"a": "a", "b": "b"},
            {"a": gh("o", "a", inputs={"x": "x"}), "b": gh("o", "b", inputs={"x": "x"}),
             "x": gh("o", "x", inputs={"y": "y"}), "y": gh("o", "y", rev)},
        )  # fmt: skip

    old, new = parse_lock(shared(REV_A)), parse_lock(shared(REV_B))
    assert set(old.all_inputs()) == {("a",), ("a", "x"), ("a", "x", "y"), ("b",), ("b", "x")}
    assert [c.path for c in diff(old, new)] == [("a", "x", "y")]


def test_paths_are_ordered_element_wise_not_as_joined_strings() -> None:
    a = lock({}, {})
    b = lock({"a": "a", "a-b": "ab"}, {"a": gh("o", "a", inputs={"b": "b"}), "b": gh("o", "b"), "ab": gh("o", "ab")})
    # "a-b" < "a/b" as strings, but ("a", "b") < ("a-b",) as tuples: nix prints a/b first.
    assert [c.name for c in diff(a, b)] == ["a", "a/b", "a-b"]


def test_root_not_named_root() -> None:
    a = lock({"n": "n"}, {"n": gh("o", "n")}, root="top")
    b = lock({"n": "n"}, {"n": gh("o", "n", REV_B)}, root="top")
    assert parse_lock(a).root == "top"
    assert [c.name for c in diff(a, b)] == ["n"]


def test_version_5_merges_info_and_version_6_parses() -> None:
    v5 = {
        "nodes": {
            "root": {"inputs": {"nixpkgs": "nixpkgs"}},
            "nixpkgs": {
                "info": {"lastModified": T_A, "narHash": NAR_A},
                "locked": {"owner": "NixOS", "repo": "nixpkgs", "rev": REV_A, "type": "github"},
                "original": {"owner": "NixOS", "repo": "nixpkgs", "type": "github"},
            },
        },
        "root": "root",
        "version": 5,
    }
    v6 = lock({"nixpkgs": "nixpkgs"}, {"nixpkgs": gh("NixOS", "nixpkgs", REV_B, t=T_B)}, version=6)
    changes = diff(v5, v6)
    assert render_summary(changes, "upstream") == (
        "• Updated input 'nixpkgs':\n"
        f"    'github:NixOS/nixpkgs/{REV_A}?narHash=sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0%3D' (2026-02-07)\n"
        f"  → 'github:NixOS/nixpkgs/{REV_B}?narHash=sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0%3D' (2026-02-14)\n"
    )


def test_relative_path_input_is_always_updated() -> None:
    node = {"locked": {"path": "./stubs/tool", "type": "path"}, "original": {"path": "./stubs/tool", "type": "path"}, "parent": []}
    a = lock({"tool": "tool", "x": "x"}, {"tool": node, "x": gh("o", "x")})
    b = lock({"tool": "tool", "x": "x"}, {"tool": node, "x": gh("o", "x", REV_B)})
    changes = diff(a, b)
    assert [c.name for c in changes] == ["tool", "x"]
    assert render_summary(changes[:1]) == "• Updated input 'tool':\n    'path:./stubs/tool'\n  → 'path:./stubs/tool'\n"
    assert diff(a, json.loads(json.dumps(a))) == []  # an unchanged lock file: nix prints nothing
    note = explain_changes(changes)[0]
    assert note.kind is UpdateKind.RELOCKED and note.compare is None
    absolute = lock({"tool": "tool"}, {"tool": {"locked": {"path": "/src/tool", "type": "path", "narHash": NAR_A}}})
    assert diff(absolute, absolute) == []


def test_follows_resolution() -> None:
    lf = parse_lock(lock(
        {"nixpkgs": ["cfg", "nixpkgs"], "cfg": "cfg", "self": []},
        {"cfg": gh("o", "cfg", inputs={"nixpkgs": "np", "alias": ["nixpkgs"]}), "np": gh("NixOS", "nixpkgs")},
    ))  # fmt: skip
    assert lf.resolve(["nixpkgs"]) == "np"
    assert lf.resolve(["cfg", "alias"]) == "np"
    assert lf.resolve([]) == lf.resolve(["self"]) == "root"
    assert lf.resolve(["nope"]) is None and lf.resolve(["cfg", "nixpkgs", "deeper"]) is None
    assert lf.resolve_ref(["cfg", "alias"]).rev == REV_A  # type: ignore[union-attr]


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid UTF-8"),
        ("[1, 2]", "top level is a JSON array"),
        ({"nodes": {}, "root": "root"}, "no 'version'"),
        ({"nodes": {"root": {}}, "root": "root", "version": 4}, "unsupported lock file version 4"),
        ({"nodes": {"root": {}}, "root": "root", "version": 8}, "unsupported lock file version 8"),
        ({"nodes": {"root": {}}, "root": "root", "version": "7"}, "'version' is a string"),
        ({"root": "root", "version": 7}, "no 'nodes' object"),
        ({"nodes": {"root": {}}, "version": 7}, "no 'root'"),
        ({"nodes": {}, "root": "root", "version": 7}, "root node 'root' is missing"),
        (lock({"a": "ghost"}, {}), "missing node 'ghost'"),
        (lock({"a": "a"}, {"a": {"inputs": {"back": "root"}, "locked": {"type": "path", "path": "/x"}}}), "root node"),
        (lock({"a": "a"}, {"a": {"original": {}}}), "no 'locked'"),
        (lock({"a": ["b"], "b": ["a"]}, {}), "cycle"),
        (lock({"a": 3}, {}), "neither a node name nor a follows path"),
    ],
)
def test_bad_input_raises_one_clear_sentence(data: Any, fragment: str) -> None:
    with pytest.raises(LockFileError) as info:
        parse_lock(data)
    assert fragment in info.value.message
    assert "\n" not in info.value.message


def test_unreachable_garbage_nodes_are_ignored_like_nix() -> None:
    data = lock({"a": "a"}, {"a": gh("o", "a"), "orphan": {"whatever": True}})
    assert set(parse_lock(data).nodes) == {"root", "a"}


def test_unknown_fields_are_tolerated() -> None:
    data = lock({"a": "a"}, {"a": {**gh("o", "a"), "buildTime": True, "futureField": {"x": 1}}})
    data["futureTopLevel"] = 1
    assert parse_lock(json.dumps(data).encode()).nodes["a"].locked["rev"] == REV_A  # type: ignore[index]


# --- headline, compares, JSON ----------------------------------------------------------------


def _pair(old_nodes: dict[str, Any], new_nodes: dict[str, Any], old_root: dict[str, Any], new_root: dict[str, Any] | None = None):
    old, new = parse_lock(lock(old_root, old_nodes)), parse_lock(lock(new_root or old_root, new_nodes))
    return old, new, diff(old, new)


def test_headline_for_a_nixpkgs_move_and_others() -> None:
    old, new, changes = _pair(
        {"nixpkgs": gh("NixOS", "nixpkgs"), "hm": gh("nix-community", "home-manager"), "d": gh("o", "d")},
        {"nixpkgs": gh("NixOS", "nixpkgs", REV_B, t=T_B), "hm": gh("nix-community", "home-manager", REV_C), "d": gh("o", "d", REV_C)},
        {"nixpkgs": "nixpkgs", "hm": "hm", "d": "d"},
    )  # fmt: skip
    assert headline(changes, old, new) == "nixpkgs 0123456 → 89abcde (+7 days) and 2 other inputs"
    old, new, only = _pair(
        {"nixpkgs": gh("NixOS", "nixpkgs")}, {"nixpkgs": gh("NixOS", "nixpkgs", REV_B, t=T_A + 3600)}, {"nixpkgs": "nixpkgs"}
    )
    assert headline(only, old, new) == "nixpkgs 0123456 → 89abcde (same day)"


def test_headline_without_a_nixpkgs_move_and_when_unchanged() -> None:
    old, new, changes = _pair(
        {"nixpkgs": gh("NixOS", "nixpkgs"), "hm": gh("nix-community", "home-manager")},
        {"nixpkgs": gh("NixOS", "nixpkgs"), "hm": gh("nix-community", "home-manager", REV_B, t=T_A - 86400)},
        {"nixpkgs": "nixpkgs", "hm": "hm"},
    )
    assert headline(changes, old, new) == "hm 0123456 → 89abcde (-1 day)"
    assert headline([], old, old) is None
    _, _, added = _pair({}, {"x": gh("o", "x"), "y": gh("o", "y")}, {}, {"x": "x", "y": "y"})
    assert headline(added, old, new) == "x added and 1 other input"


def test_headline_finds_nixpkgs_by_repo_or_through_follows() -> None:
    old, new, changes = _pair(
        {"pkgs": gh("nixos", "NixPkgs", ref="nixos-unstable")}, {"pkgs": gh("nixos", "NixPkgs", REV_B, t=T_B)}, {"pkgs": "pkgs"}
    )  # fmt: skip
    assert headline(changes, old, new) == "pkgs 0123456 → 89abcde (+7 days)"
    old, new, changes = _pair(
        {"cfg": gh("o", "cfg", inputs={"nixpkgs": "np"}), "np": gh("NixOS", "nixpkgs")},
        {"cfg": gh("o", "cfg", REV_B, inputs={"nixpkgs": "np"}), "np": gh("NixOS", "nixpkgs", REV_C, t=T_B)},
        {"cfg": "cfg", "nixpkgs": ["cfg", "nixpkgs"]},
    )
    assert [c.name for c in changes] == ["cfg", "cfg/nixpkgs"]
    assert headline(changes, old, new) == "nixpkgs 0123456 → fedcba9 (+7 days) and 1 other input"


def test_compare_targets_are_deduplicated_case_insensitively() -> None:
    old, new, changes = _pair(
        {"nixpkgs": gh("NixOS", "nixpkgs"), "cfg": gh("o", "cfg", inputs={"nixpkgs": "np"}), "np": gh("nixos", "nixpkgs")},
        {"nixpkgs": gh("NixOS", "nixpkgs", REV_B), "cfg": gh("o", "cfg", inputs={"nixpkgs": "np"}), "np": gh("nixos", "nixpkgs", REV_B)},
        {"nixpkgs": "nixpkgs", "cfg": "cfg"},
    )  # fmt: skip
    [target] = compare_targets(changes, old, new)
    assert (target.owner, target.repo, target.kind) == ("nixos", "nixpkgs", UpdateKind.UPDATE)
    assert target.path_names == ("cfg/nixpkgs", "nixpkgs")
    assert target.url == f"https://github.com/nixos/nixpkgs/compare/{REV_A}...{REV_B}"
    assert target.is_nixpkgs


def test_branch_switch_source_change_and_non_github_inputs() -> None:
    old, new, changes = _pair(
        {"stable": gh("NixOS", "nixpkgs", ref="nixos-25.05"), "fork": gh("me", "tool"),
         "gl": {"locked": {"type": "gitlab", "owner": "g", "repo": "p", "rev": REV_A}},
         "ghe": gh("corp", "x", host="ghe.corp.example")},
        {"stable": gh("NixOS", "nixpkgs", REV_B, ref="nixos-25.11"), "fork": gh("upstream", "tool", REV_B),
         "gl": {"locked": {"type": "gitlab", "owner": "g", "repo": "p", "rev": REV_B}},
         "ghe": gh("corp", "x", REV_B, host="ghe.corp.example")},
        {"stable": "stable", "fork": "fork", "gl": "gl", "ghe": "ghe"},
    )  # fmt: skip
    notes = {n.change.name: n for n in explain_changes(changes, old, new)}
    assert notes["stable"].kind is UpdateKind.BRANCH_SWITCH
    assert notes["stable"].label == "branch switch nixos-25.05 → nixos-25.11"
    assert notes["fork"].kind is UpdateKind.SOURCE_CHANGED and notes["fork"].compare is None
    assert notes["gl"].kind is UpdateKind.UPDATE and notes["gl"].compare is None
    assert notes["ghe"].compare is None
    [target] = compare_targets(changes, old, new)
    assert (target.kind, target.old_branch, target.new_branch) == (UpdateKind.BRANCH_SWITCH, "nixos-25.05", "nixos-25.11")


def test_channel_and_flakehub_tarballs_compare_nixpkgs() -> None:
    channel = ref({"type": "tarball", "rev": REV_A,
                   "url": "https://releases.nixos.org/nixpkgs/nixpkgs-26.11pre1020805.0123456789ab/nixexprs.tar.xz"})  # fmt: skip
    flakehub = ref({"type": "tarball", "rev": REV_B,
                    "url": "https://api.flakehub.com/f/pinned/NixOS/nixpkgs/0.1.1%2Brev-89abcde/0197/source.tar.gz"})  # fmt: skip
    assert github_coordinates(channel) == ("NixOS", "nixpkgs", REV_A)
    assert github_coordinates(flakehub) == ("NixOS", "nixpkgs", REV_B)
    assert github_coordinates(ref({"type": "tarball", "url": "https://example.com/x.tar.gz", "rev": REV_A})) is None
    git = ref({"type": "git", "url": "https://github.com/o/r.git", "rev": REV_C})
    assert github_coordinates(git) == ("o", "r", REV_C)


def test_to_json_is_serialisable_and_complete() -> None:
    old, new, changes = _pair(
        {"nixpkgs": gh("NixOS", "nixpkgs"), "h": gh("o", "h", inputs={"nixpkgs": "np"}), "np": gh("NixOS", "nixpkgs")},
        {"nixpkgs": gh("NixOS", "nixpkgs", REV_B, t=T_B), "h": gh("o", "h", inputs={"nixpkgs": ["nixpkgs"]})},
        {"nixpkgs": "nixpkgs", "h": "h"},
    )  # fmt: skip
    doc = json.loads(json.dumps(to_json(changes, old, new)))
    by_path = {d["path"]: d for d in doc}
    follow = by_path["h/nixpkgs"]
    assert follow["path_list"] == ["h", "nixpkgs"] and follow["kind"] == "updated"
    assert follow["update_kind"] == "now-follows"
    assert follow["new"]["follows"] == "nixpkgs" and follow["new"]["resolved"]["rev"] == REV_B
    assert follow["old"]["url"] == "github:NixOS/nixpkgs/0123456" and follow["old"]["date"] == "2026-02-07"
    moved = by_path["nixpkgs"]
    assert moved["compare"]["basehead"] == f"{REV_A}...{REV_B}"
    assert moved["new"]["last_modified"] == T_B
    assert to_json([], old, old) == []


# --- properties over random lock files ------------------------------------------------------


def random_lock(rng: random.Random) -> dict[str, Any]:
    """A random but valid lock: a DAG of github nodes with shared nodes and follows."""
    names = ["nixpkgs", "hm", "utils", "systems", "a", "a-b", "b"]
    keys = [f"n{i}" for i in range(rng.randint(1, 7))]
    nodes: dict[str, Any] = {}
    for i, key in enumerate(keys):
        inputs: dict[str, Any] = {}
        for name in rng.sample(names, rng.randint(0, 3)):
            later = keys[i + 1 :]
            if later and rng.random() < 0.7:
                inputs[name] = rng.choice(later)
            else:
                inputs[name] = [rng.choice(names)]  # may dangle: nix tolerates it
        nodes[key] = gh("o", rng.choice(names), rng.choice([REV_A, REV_B, REV_C]), t=T_A + rng.randint(0, 9) * 86400,
                        inputs=inputs or None)  # fmt: skip
    root = {name: rng.choice(keys) for name in rng.sample(names, rng.randint(1, 4))}
    return lock(root, nodes)


def test_properties_over_random_locks() -> None:
    rng = random.Random(20260215)
    seen = 0
    for _ in range(300):
        a_raw, b_raw = random_lock(rng), random_lock(rng)
        try:
            a, b = parse_lock(a_raw), parse_lock(b_raw)
        except LockFileError:
            continue  # a generated follows cycle
        seen += 1
        assert diff(a, a) == []
        changes = diff(a, b)
        paths = [c.path for c in changes]
        assert paths == sorted(set(paths))
        known = set(a.all_inputs()) | set(b.all_inputs())
        assert all(p in known for p in paths)
        reverse = {c.path: c.kind for c in diff(b, a)}
        flip = {ChangeKind.ADDED: ChangeKind.REMOVED, ChangeKind.REMOVED: ChangeKind.ADDED, ChangeKind.UPDATED: ChangeKind.UPDATED}
        assert reverse == {c.path: flip[c.kind] for c in changes}
        text = render_summary(changes, rng.choice(list(Style)))
        assert text.count("\n") == sum({ChangeKind.ADDED: 2, ChangeKind.REMOVED: 1, ChangeKind.UPDATED: 3}[c.kind] for c in changes)
        for target in compare_targets(changes, a, b):
            assert target.old_rev != target.new_rev and target.paths
    assert seen > 200
