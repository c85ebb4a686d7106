"""flakelock against nix's own rules, one source rule per test (small locks written here).

Sources: NixOS/nix and DeterminateSystems/nix-src ``src/libflake/{lockfile,flake,flakeref}.cc``,
``src/libfetchers/{fetchers,attrs,github,git,tarball,path,mercurial,indirect}.cc``,
``src/libutil/url.cc``.
"""

from __future__ import annotations

import json
from typing import Any

from nfu_tui.domain.flakelock import (
    ChangeKind,
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
    render_summary,
)

REV = "0123456789abcdef0123456789abcdef01234567"
REV2 = "89abcdef0123456789abcdef0123456789abcdef"
NAR = "sha256-Jx2+1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0="
NAR_URL = "sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0%3D"
T = 1770465600  # 2026-02-07T12:00:00Z
T2 = 1771070400  # 2026-02-14T12:00:00Z


def up(locked: dict[str, Any]) -> str:
    return render_edge(LockedRef("n", locked), Style.UPSTREAM)


def det(locked: dict[str, Any]) -> str:
    return render_edge(LockedRef("n", locked), Style.DETERMINATE)


def lock(root_inputs: dict[str, Any], nodes: dict[str, Any], version: int = 7) -> dict[str, Any]:
    return {"nodes": {"root": {"inputs": root_inputs}, **nodes}, "root": "root", "version": version}


def node(locked: dict[str, Any], **extra: Any) -> dict[str, Any]:
    original = {k: v for k, v in locked.items() if k in ("type", "owner", "repo", "url", "path")}
    return {"locked": locked, "original": original, **extra}


def gh(rev: str = REV, t: int = T, **extra: Any) -> dict[str, Any]:
    return {"type": "github", "owner": "o", "repo": "r", "rev": rev, "narHash": NAR, "lastModified": t, **extra}


# --- URLs: ParsedURL::to_string, encodeQuery (std::map: sorted keys), percentEncode -------------------


def test_git_query_is_sorted_and_flags_render_as_1() -> None:
    """git.cc toURL: rev, ref, shallow/lfs/submodules/exportIgnore/verifyCommit=1, keytype+publicKey;
    FlakeRef::to_string adds dir; allRefs/revCount/lastModified/narHash never appear."""
    locked = {"type": "git", "url": "https://example.org/r.git", "ref": "main", "rev": REV, "dir": "sub",
              "shallow": True, "lfs": True, "submodules": True, "exportIgnore": True, "verifyCommit": True,
              "allRefs": True, "keytype": "ssh-rsa", "publicKey": "AAAAB3+x/y=", "revCount": 5, "lastModified": T,
              "narHash": NAR}  # fmt: skip
    query = (
        "dir=sub&exportIgnore=1&keytype=ssh-rsa&lfs=1&publicKey=AAAAB3%2Bx/y%3D"
        "&{ref}rev={rev}&shallow=1&submodules=1&verifyCommit=1"
    )
    assert up(locked) == f"'git+https://example.org/r.git?{query.format(ref='ref=main&', rev=REV)}' (2026-02-07)"
    # Determinate abbreviates nothing else for git: the rev stays full, only ref=master|main goes.
    assert det(locked) == f"'git+https://example.org/r.git?{query.format(ref='', rev=REV)}' (2026-02-07)"
    locked.update(shallow=False, lfs=False, submodules=False, exportIgnore=False, verifyCommit=False)
    assert up(locked).startswith("'git+https://example.org/r.git?dir=sub&keytype=ssh-rsa&publicKey=")


def test_git_several_public_keys_become_one_json_parameter() -> None:
    """git.cc getPublicKeys: the publicKeys JSON first, then publicKey; more than one key -> publicKeys=<json>."""
    first = json.dumps([{"type": "ssh-ed25519", "key": "k1"}])
    locked = {"type": "git", "url": "https://e.org/r", "rev": REV, "publicKeys": first, "publicKey": "k2",
              "keytype": "ssh-rsa"}  # fmt: skip
    keys = (
        "%5B%7B%22key%22:%22k1%22%2C%22type%22:%22ssh-ed25519%22%7D"
        "%2C%7B%22key%22:%22k2%22%2C%22type%22:%22ssh-rsa%22%7D%5D"
    )
    assert up(locked) == f"'git+https://e.org/r?publicKeys={keys}&rev={REV}'"


def test_git_urls_are_normalised_like_fix_git_url() -> None:
    """url.cc fixGitURL (applied to the url attribute when nix reads it), then toURL adds ``git+``."""
    assert (
        up({"type": "git", "url": "git@github.com:o/r.git", "rev": REV})
        == f"'git+ssh://git@github.com/o/r.git?rev={REV}'"
    )
    assert up({"type": "git", "url": "/home/me/src", "rev": REV}) == f"'git+file:///home/me/src?rev={REV}'"
    assert up({"type": "git", "url": "git+https://e.org/r", "rev": REV}) == f"'git+https://e.org/r?rev={REV}'"
    assert up({"type": "git", "url": "ssh://git@e.org:2222/r", "rev": REV}) == f"'git+ssh://git@e.org:2222/r?rev={REV}'"
    assert (
        up({"type": "git", "url": "https://e.org/r?x=1", "ref": "dev", "rev": REV})
        == f"'git+https://e.org/r?ref=dev&rev={REV}&x=1'"
    )
    scp = LockedRef("n", {"type": "git", "url": "git@github.com:o/r.git", "rev": REV})
    assert github_coordinates(scp) == ("o", "r", REV)


def test_mercurial_keeps_its_ref_in_both_styles() -> None:
    """mercurial.cc toURL: ``hg+`` scheme, rev and ref; Determinate drops ref=main only for git."""
    locked = {"type": "mercurial", "url": "https://hg.e.org/r", "ref": "main", "rev": REV, "narHash": NAR}
    assert up(locked) == det(locked) == f"'hg+https://hg.e.org/r?ref=main&rev={REV}'"


def test_github_like_segments_are_encoded_one_by_one() -> None:
    """github.cc toURL builds path segments [owner, repo, rev]; url.cc encodeUrlPath encodes each with
    ":@" kept, so a gitlab subgroup owner 'group/sub' prints as group%2Fsub; '~' is unreserved."""
    gitlab = {
        "type": "gitlab",
        "owner": "group/sub",
        "repo": "proj",
        "rev": REV,
        "narHash": NAR,
        "host": "gitlab.e.org",
    }
    assert up(gitlab) == f"'gitlab:group%2Fsub/proj/{REV}?host=gitlab.e.org&narHash={NAR_URL}'"
    assert det(gitlab) == "'gitlab:group%2Fsub/proj/0123456?host=gitlab.e.org'"
    srht = {"type": "sourcehut", "owner": "~me", "repo": "tool", "rev": REV.upper(), "lastModified": T}
    assert det(srht) == "'sourcehut:~me/tool/0123456' (2026-02-07)"  # Hash::to_string: lower-case hex


def test_dir_is_added_to_the_query_without_replacing_one_there() -> None:
    """fetchers.cc toURLString: extraQuery entries are insert()ed, never overwriting."""
    assert det(gh(dir="nix")) == "'github:o/r/0123456?dir=nix' (2026-02-07)"
    old_style = {"type": "git", "url": "https://e.org/r?dir=a", "rev": REV, "dir": "b"}
    assert up(old_style) == f"'git+https://e.org/r?dir=a&rev={REV}'"
    assert det(gh(dir="")) == "'github:o/r/0123456' (2026-02-07)"


def test_tarball_and_file_print_the_url_reencoded_with_no_scheme_prefix() -> None:
    """tarball.cc CurlInputScheme::toURL = parseURL(url) + narHash; no tarball+/file+ prefix even for a
    file input whose URL looks like an archive; path segments are decoded and re-encoded (':@' kept),
    query values keep ':@/?'."""
    locked = {"type": "tarball", "url": "https://e.org/dl/a%7Eb+c.tar.gz?b=2&a=x%2By", "narHash": NAR, "rev": REV,
              "revCount": 9}  # fmt: skip
    assert up(locked) == f"'https://e.org/dl/a~b%2Bc.tar.gz?a=x%2By&b=2&narHash={NAR_URL}'"
    assert det(locked) == "'https://e.org/dl/a~b%2Bc.tar.gz?a=x%2By&b=2'"
    assert (
        up({"type": "file", "url": "https://e.org/x.tar.gz", "narHash": NAR})
        == f"'https://e.org/x.tar.gz?narHash={NAR_URL}'"
    )


def test_path_lists_its_raw_attributes_and_only_narhash_goes_in_determinate() -> None:
    """path.cc toURL: attrsToQuery(attrs) minus path/type/__final, values as stored (no SRI fix-up of
    narHash, unlike github); attrs.cc attrsToQuery prints integers in decimal."""
    unpadded = NAR.rstrip("=")
    locked = {
        "type": "path",
        "path": "/nix/store/abc-source",
        "lastModified": T,
        "narHash": unpadded,
        "rev": REV,
        "revCount": 3,
    }
    assert up(locked) == (
        f"'path:/nix/store/abc-source?lastModified={T}&narHash=sha256-Jx2%2B1nB8Yc0W4gVq9dC6l3kZ8uT2yS1pR7oQ5mN4bE0"
        f"&rev={REV}&revCount=3' (2026-02-07)"
    )
    assert det(locked) == f"'path:/nix/store/abc-source?lastModified={T}&rev={REV}&revCount=3' (2026-02-07)"
    assert up(gh(narHash=unpadded)) == f"'github:o/r/{REV}?narHash={NAR_URL}' (2026-02-07)"


def test_indirect_prints_as_a_flake_url() -> None:
    """indirect.cc toURL: flake:<id>[/<ref>][/<rev>]."""
    assert up({"type": "indirect", "id": "nixpkgs", "rev": REV, "narHash": NAR}) == f"'flake:nixpkgs/{REV}'"


def test_the_date_is_utc_and_only_present_with_last_modified() -> None:
    """lockfile.cc describe: getLastModified() set -> ' (%Y-%m-%d)' of gmtime, for every input type."""
    assert det({"type": "tarball", "url": "https://e.org/x.tar.gz", "narHash": NAR}) == "'https://e.org/x.tar.gz'"
    assert det({"type": "path", "path": "/p", "lastModified": 0}) == "'path:/p?lastModified=0' (1970-01-01)"
    assert det({"type": "git", "url": "https://e.org/r", "rev": REV, "lastModified": 1700006399}).endswith(
        "' (2023-11-14)"
    )


FH = "https://api.flakehub.com/f/pinned/DeterminateSystems/determinate/"
MAC = "https://install.determinate.systems/determinate-nixd/tag/v"
RELEASES = {  # version: lastModified, narHash, rev, FlakeHub upload id, narHash of the macOS daemon
    "3.13.0": (1762741923, "sha256-mmqjU8EPtjc3sWQfFC5Gr+aYb2MtilYjKBkhj5dmGHE=",
               "5ac54c7bc6144bd8d02644b7f8f141df49f1462c", "019a6b9e-c466-7b69-bfaa-d0a1b3d5e0af",
               "sha256-r3uNzqD9AGA3nTGFKD3MV4KrTA/03cwCxRqEiDcNJlQ="),
    "3.13.1": (1762970173, "sha256-sEdTVZblVsdwLNRGKShu+Aq9uYUYVgM57bsVaIDlmw4=",
               "fb09415ca153b81a9c361c5fae7a056e04b69f21", "019a793a-86ab-768c-aeea-35a477c89058",
               "sha256-Xkp+uzaXBuZ4czEpKa2EPTUtGq71R9JTum3rkdA3gLI="),
    "3.13.2": (1763536872, "sha256-QCYGGghBya+qsY59f1zzgYzxEzz+N9S7YRkVWDIDbgo=",
               "f4e598cbb10021c93f73dd4c0cf01ec791ea53f9", "019a9b01-c0c6-7e1c-959e-98ac5b7675de",
               "sha256-g1r0dPwlUi1h96c4BuHzv9M2lWDqRy9bPDW9tRSq35I="),
}  # fmt: skip


def determinate_lock(version: str) -> dict[str, Any]:
    """The determinate input of DeterminateSystems/nixos-iso's flake.lock at a release (two of its nodes)."""
    t, nar, rev, upload, mac_nar = RELEASES[version]
    locked = {"lastModified": t, "narHash": nar, "rev": rev, "revCount": 313, "type": "tarball",
              "url": f"{FH}{version}/{upload}/source.tar.gz"}  # fmt: skip
    mac = {"narHash": mac_nar, "type": "file", "url": f"{MAC}{version}/macOS"}
    original = {"type": "tarball", "url": "https://flakehub.com/f/DeterminateSystems/determinate/%2A"}
    determinate = {"inputs": {"determinate-nixd-aarch64-darwin": "mac"}, "locked": locked, "original": original}
    mac_node = {"flake": False, "locked": mac, "original": {"type": "file", "url": mac["url"]}}
    return lock({"determinate": "determinate"}, {"determinate": determinate, "mac": mac_node})


def test_real_update_flake_lock_bodies_in_both_styles() -> None:
    """Entries as published in update-flake-lock PRs of DeterminateSystems/nixos-iso: #37 (upstream
    style: FlakeHub tarball and a ``file`` input, '/' left as is in narHash) and #38 (Determinate 3.13.2)."""
    assert render_summary(diff(determinate_lock("3.13.0"), determinate_lock("3.13.1")), Style.UPSTREAM) == (
        "• Updated input 'determinate':\n"
        "    'https://api.flakehub.com/f/pinned/DeterminateSystems/determinate/3.13.0/019a6b9e-c466-7b69-bfaa-"
        "d0a1b3d5e0af/source.tar.gz?narHash=sha256-mmqjU8EPtjc3sWQfFC5Gr%2BaYb2MtilYjKBkhj5dmGHE%3D' (2025-11-10)\n"
        "  → 'https://api.flakehub.com/f/pinned/DeterminateSystems/determinate/3.13.1/019a793a-86ab-768c-aeea-"
        "35a477c89058/source.tar.gz?narHash=sha256-sEdTVZblVsdwLNRGKShu%2BAq9uYUYVgM57bsVaIDlmw4%3D' (2025-11-12)\n"
        "• Updated input 'determinate/determinate-nixd-aarch64-darwin':\n"
        "    'https://install.determinate.systems/determinate-nixd/tag/v3.13.0/macOS"
        "?narHash=sha256-r3uNzqD9AGA3nTGFKD3MV4KrTA/03cwCxRqEiDcNJlQ%3D'\n"
        "  → 'https://install.determinate.systems/determinate-nixd/tag/v3.13.1/macOS"
        "?narHash=sha256-Xkp%2BuzaXBuZ4czEpKa2EPTUtGq71R9JTum3rkdA3gLI%3D'\n"
    )
    assert render_summary(diff(determinate_lock("3.13.1"), determinate_lock("3.13.2")), Style.DETERMINATE) == (
        "• Updated input 'determinate':\n"
        "    'https://api.flakehub.com/f/pinned/DeterminateSystems/determinate/3.13.1/019a793a-86ab-768c-aeea-"
        "35a477c89058/source.tar.gz' (2025-11-12)\n"
        "  → 'https://api.flakehub.com/f/pinned/DeterminateSystems/determinate/3.13.2/019a9b01-c0c6-7e1c-959e-"
        "98ac5b7675de/source.tar.gz' (2025-11-19)\n"
        "• Updated input 'determinate/determinate-nixd-aarch64-darwin':\n"
        "    'https://install.determinate.systems/determinate-nixd/tag/v3.13.1/macOS'\n"
        "  → 'https://install.determinate.systems/determinate-nixd/tag/v3.13.2/macOS'\n"
    )


# --- the diff: LockFile parsing, getAllInputs, equals, and when flake.cc computes it ------------------


def test_follows_of_the_root_flake_prints_an_empty_path() -> None:
    """lockfile.cc operator<<(Edge): follows '<printInputAttrPath>' -> follows '' for the root."""
    a = lock({"x": "x"}, {"x": node(gh())})
    b = lock({"x": "x"}, {"x": node(gh(), inputs={"self": []})})
    assert render_summary(diff(a, b)) == "• Added input 'x/self':\n    follows ''\n"


def test_original_flake_and_build_time_changes_change_the_file_but_print_no_entry() -> None:
    """equals() compares lockedRef only; operator== (toJSON) also sees original, flake, parent and
    Determinate's buildTime, so the file changes and only relative inputs (always re-locked) show."""
    stub = {"locked": {"path": "./stub", "type": "path"}, "original": {"path": "./stub", "type": "path"}, "parent": []}
    for change in (
        {"flake": False},
        {"buildTime": True},
        {"original": {"type": "github", "owner": "o", "repo": "r", "ref": "v2"}},
    ):
        for extra in ({}, {"stub": stub}):
            a = lock({name: name for name in ["x", *extra]}, {"x": node(gh()), **extra})
            b = json.loads(json.dumps(a))
            b["nodes"]["x"].update(change)
            expected = [("stub", ChangeKind.UPDATED)] if extra else []
            assert [(c.name, c.kind) for c in diff(a, b)] == expected, change


def test_every_relative_input_of_the_new_lock_is_updated_at_any_depth() -> None:
    """flake.cc computeLocks: a full update re-creates every node; a relative input gets
    lockedRef = the flake.nix ref, without the __final that LockedNode adds when reading a file, so
    equals() fails for it wherever it sits (here inside 'cfg', parent ['cfg'])."""
    stub = {
        "locked": {"path": "./stubs/s", "type": "path"},
        "original": {"path": "./stubs/s", "type": "path"},
        "parent": ["cfg"],
    }
    a = lock({"cfg": "cfg"}, {"cfg": node(gh(), inputs={"s": "s"}), "s": stub})
    b = lock({"cfg": "cfg"}, {"cfg": node(gh(REV2, T2), inputs={"s": "s"}), "s": stub})
    changes = diff(a, b)
    assert render_summary(changes) == (
        "• Updated input 'cfg':\n    'github:o/r/0123456' (2026-02-07)\n  → 'github:o/r/89abcde' (2026-02-14)\n"
        "• Updated input 'cfg/s':\n    'path:./stubs/s'\n  → 'path:./stubs/s'\n"
    )
    assert diff(b, b) == []  # unchanged file: nix computes no diff at all (newLockFile != oldLockFile)


def test_relative_means_a_path_not_starting_with_a_slash() -> None:
    """path.cc isRelative: decided by the path itself; nix records 'parent' for exactly these."""
    legacy = {"locked": {"path": "../shared", "type": "path"}}
    absolute = {"locked": {"path": "/srv/shared", "type": "path", "narHash": NAR}}
    a = lock({"x": "x", "rel": "rel", "abs": "abs"}, {"x": node(gh()), "rel": legacy, "abs": absolute})
    b = lock({"x": "x", "rel": "rel", "abs": "abs"}, {"x": node(gh(REV2)), "rel": legacy, "abs": absolute})
    assert [c.name for c in diff(a, b)] == ["rel", "x"]
    assert LockedRef("n", {"type": "git", "url": "./x"}).relative is False


def test_only_the_new_edge_decides_whether_an_input_was_relocked() -> None:
    """Only the new edge can lack __final (the old one was read from a file): an entry that is not
    relative in the new lock compares by its attributes, whatever the old entry was marked as."""
    path = {"locked": {"path": "/srv/tool", "type": "path", "narHash": NAR}}
    marked = lock({"t": "t", "x": "x"}, {"t": {**path, "parent": []}, "x": node(gh())})
    plain = lock({"t": "t", "x": "x"}, {"t": path, "x": node(gh(REV2))})
    assert [c.name for c in diff(marked, plain)] == ["x"]
    assert [c.name for c in diff(plain, marked)] == ["t", "x"]


def test_version_5_info_overrides_locked_and_old_versions_equal_version_7() -> None:
    """lockfile.cc getFlakeRef: version-5 'info' attributes are insert_or_assign'ed over 'locked';
    toJSON always writes version 7, so the same content in v5 and v7 is no change."""
    v5 = lock({"n": "n"}, {"n": {"info": {"lastModified": T2, "narHash": NAR},
                                 "locked": {"lastModified": T, "owner": "o", "repo": "r", "rev": REV, "type": "github"},
                                 "original": {"owner": "o", "repo": "r", "type": "github"}}}, version=5)  # fmt: skip
    v7 = lock({"n": "n"}, {"n": {"locked": gh(t=T2), "original": {"owner": "o", "repo": "r", "type": "github"}}})
    assert parse_lock(v5).resolve_ref(["n"]).date == "2026-02-14"  # type: ignore[union-attr]
    assert diff(v5, v7) == [] and diff(v7, v5) == []


def test_numbers_are_compared_as_nix_reads_them() -> None:
    """attrs.cc jsonToAttrs: every JSON number becomes a uint64_t (1.0 is 1); booleans stay booleans."""
    a = lock({"n": "n"}, {"n": node(gh())})
    b = lock({"n": "n"}, {"n": node(gh(t=float(T)))})
    assert diff(a, b) == []
    assert LockedRef("n", gh(t=float(T))).date == "2026-02-07"
    c = lock({"n": "n"}, {"n": node({**gh(), "lastModified": True})})
    assert [ch.kind for ch in diff(a, c)] == [ChangeKind.UPDATED]


# --- what an entry means (contract §6.6) --------------------------------------------------------------


def channel(rev: str, t: int, name: str, release: str) -> dict[str, Any]:
    """A nixos channel tarball node, e.g. https://releases.nixos.org/nixos/25.05/nixos-25.05.4193.<rev>/..."""
    url = f"https://releases.nixos.org/nixos/{name[6:]}/{name}.{release}.{rev[:12]}/nixexprs.tar.xz"
    return {"locked": {"lastModified": t, "narHash": NAR, "rev": rev, "type": "tarball", "url": url},
            "original": {"type": "tarball", "url": f"https://channels.nixos.org/{name}/nixexprs.tar.xz"}}  # fmt: skip


def test_channel_tarball_switch_is_a_branch_switch_with_a_nixpkgs_compare() -> None:
    old = parse_lock(lock({"pkgs": "p"}, {"p": channel(REV, T, "nixos-25.05", "4193")}))
    new = parse_lock(lock({"pkgs": "p"}, {"p": channel(REV2, T2, "nixos-25.11", "812")}))
    changes = diff(old, new)
    [note] = explain_changes(changes, old, new)
    assert note.kind is UpdateKind.BRANCH_SWITCH and note.label == "branch switch nixos-25.05 → nixos-25.11"
    [target] = compare_targets(changes, old, new)
    assert (target.slug, target.old_rev, target.new_rev) == ("NixOS/nixpkgs", REV, REV2)
    assert (target.old_branch, target.new_branch) == ("nixos-25.05", "nixos-25.11")
    # The input is not called nixpkgs, but it is NixOS/nixpkgs: the headline is about it.
    assert headline(changes, old, new) == "pkgs 0123456 → 89abcde (+7 days)"


def test_flakehub_nixpkgs_compares_and_tracks_its_version_spec() -> None:
    def fh(rev: str, spec: str) -> dict[str, Any]:
        url = f"https://api.flakehub.com/f/pinned/NixOS/nixpkgs/0.1.1%2Brev-{rev}/0197/source.tar.gz"
        return {"locked": {"narHash": NAR, "rev": rev, "revCount": 1, "type": "tarball", "url": url},
                "original": {"type": "tarball", "url": f"https://flakehub.com/f/NixOS/nixpkgs/{spec}"}}  # fmt: skip

    old = parse_lock(lock({"nixpkgs": "n", "x": "x"}, {"n": fh(REV, "0.1"), "x": node(gh())}))
    same = parse_lock(lock({"nixpkgs": "n", "x": "x"}, {"n": fh(REV2, "0.1"), "x": node(gh(REV2))}))
    moved = parse_lock(lock({"nixpkgs": "n", "x": "x"}, {"n": fh(REV2, "0.2511.tar.gz"), "x": node(gh())}))
    notes = {n.change.name: n for n in explain_changes(diff(old, same), old, same)}
    assert notes["nixpkgs"].kind is UpdateKind.UPDATE and notes["nixpkgs"].compare is not None
    assert [t.slug for t in compare_targets(diff(old, same), old, same)] == ["NixOS/nixpkgs", "o/r"]
    [note] = explain_changes(diff(old, moved), old, moved)
    assert note.kind is UpdateKind.BRANCH_SWITCH and note.label == "branch switch 0.1 → 0.2511"
    assert headline(diff(old, same), old, same) == "nixpkgs 0123456 → 89abcde and 1 other input"


def test_follows_change_keeps_the_compare_of_the_effective_revisions() -> None:
    nixpkgs = node(gh(owner="NixOS", repo="nixpkgs"))
    old = parse_lock(lock({"nixpkgs": "a", "hm": "hm"}, {
        "a": nixpkgs, "hm": node(gh(), inputs={"nixpkgs": "b"}), "b": node(gh(REV2, owner="NixOS", repo="nixpkgs")),
    }))  # fmt: skip
    following = node(gh(), inputs={"nixpkgs": ["nixpkgs"]})
    new = parse_lock(lock({"nixpkgs": "a", "hm": "hm"}, {"a": nixpkgs, "hm": following}))
    changes = diff(old, new)
    assert (
        render_summary(changes)
        == "• Updated input 'hm/nixpkgs':\n    'github:NixOS/nixpkgs/89abcde' (2026-02-07)\n  → follows 'nixpkgs'\n"
    )
    [target] = compare_targets(changes, old, new)
    assert (target.kind, target.old_rev, target.new_rev) == (UpdateKind.NOW_FOLLOWS, REV2, REV)
    assert headline(changes, old, new) == "hm/nixpkgs now follows 'nixpkgs'"
