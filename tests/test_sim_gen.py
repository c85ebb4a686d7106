"""Unit tests of the simulator's pure parts: lock generator, nixpkgs commits, git graph, GraphQL."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from nfu_tui.sim import lockgen, nixpkgs
from nfu_tui.sim.gitrepo import GitRepo, Person, blob_sha, diff_trees, merge3, merge_trees, tree_sha
from nfu_tui.sim.graphql_mini import FieldDef, FieldError, Schema, execute

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures" / "flake-lock-updates"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"shared lock fixtures not found at {FIXTURES}")


def _cases() -> list[Path]:
    return sorted(p for p in FIXTURES.iterdir() if p.is_dir()) if FIXTURES.is_dir() else []


# --- lockgen --------------------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.name)
def test_dump_reproduces_real_lock_files_byte_for_byte(case: Path) -> None:
    # Re-serialising a parsed real lock must give nix's bytes: same node keys (nix's
    # pre-order key assignment with _N suffixes), sorted keys, 2-space indent, newline.
    for name in ("before.lock", "after.lock"):
        raw = (case / name).read_bytes()
        assert lockgen.dump_lock(lockgen.parse_lock(raw)) == raw


@needs_fixtures
@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.name)
def test_render_summary_matches_nix_for_determinate_style_cases(case: Path) -> None:
    summary = (case / "nix-summary.txt").read_text(encoding="utf-8")
    if "?narHash=" in summary:
        pytest.skip("upstream-style summary; the PR body generator renders Determinate style only")
    before = lockgen.parse_lock((case / "before.lock").read_bytes())
    after = lockgen.parse_lock((case / "after.lock").read_bytes())
    assert lockgen.render_summary(before, after) == summary.split("\n", 2)[2]


def _nodes(raw: bytes) -> dict:
    doc = json.loads(raw)
    assert doc["version"] == 7 and doc["root"] == "root"
    return doc["nodes"]


def test_generated_lock_has_the_shape_of_real_ones() -> None:
    before, after = lockgen.generate_lock_pair(random.Random(5), 7)
    for raw in (before, after):
        nodes = _nodes(raw)
        assert raw == (json.dumps(json.loads(raw), indent=2, sort_keys=True) + "\n").encode()
        follows = [e for n in nodes.values() for e in n.get("inputs", {}).values() if isinstance(e, list)]
        assert [] in follows and ["nixpkgs"] in follows and ["nixcfg", "nixpkgs"] in follows
        assert any(re.fullmatch(r"[\w-]+_[2-9]", key) for key in nodes)
        types = {n["locked"]["type"] for n in nodes.values() if "locked" in n}
        assert {"github", "git", "tarball", "path", "file"} <= types
        originals = [n.get("original", {}) for n in nodes.values()]
        assert any(o.get("type") == "indirect" for o in originals)
        assert any(o.get("ref") == "nixos-unstable" for o in originals)
        assert any("rev" in o for o in originals)  # a pinned input
        assert any(n.get("parent") == [] for n in nodes.values())
        assert any(n.get("flake") is False for n in nodes.values())
        git = next(n["locked"] for n in nodes.values() if n.get("locked", {}).get("type") == "git")
        assert {"ref", "rev", "revCount", "narHash", "lastModified", "url"} <= set(git)
        flakehub = [n["locked"] for n in nodes.values() if "flakehub.com" in n.get("locked", {}).get("url", "")]
        assert flakehub and all({"rev", "revCount"} <= set(lk) for lk in flakehub)
        for n in nodes.values():
            if "narHash" in n.get("locked", {}):
                assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", n["locked"]["narHash"])
        root = nodes["root"]["inputs"]
        assert isinstance(root["catppuccin"], list) and root["nixcfg"] == "nixcfg"
        assert nodes[root["nixpkgs"]]["original"] == {"owner": "nixos", "ref": "nixos-unstable", "repo": "nixpkgs",
                                                      "type": "github"}


def test_update_moves_nixpkgs_by_about_the_given_days_and_reports_like_nix() -> None:
    before_raw, after_raw = lockgen.generate_lock_pair(random.Random(9), 7)
    before, after = lockgen.parse_lock(before_raw), lockgen.parse_lock(after_raw)
    old, new = before.inputs["nixpkgs"].locked, after.inputs["nixpkgs"].locked
    assert old["rev"] != new["rev"]
    assert 6.5 * 86400 <= new["lastModified"] - old["lastModified"] <= 7.5 * 86400
    moves = {m.path: m for m in lockgen.rev_moves(before, after)}
    assert moves[("nixpkgs",)].new_rev == new["rev"] and moves[("nixpkgs",)].owner == "nixos"
    assert len(moves) >= 3  # nixpkgs and a few others
    summary = lockgen.render_summary(before, after)
    assert f"• Updated input 'nixpkgs':\n    'github:nixos/nixpkgs/{old['rev'][:7]}'" in summary
    assert "• Updated input 'nixhostforge':\n    'path:./stubs/nixhostforge'\n" in summary  # relative path rule


def test_nested_inputs_only_move_with_their_parent() -> None:
    for seed in range(20):
        before = lockgen.generate_lock(random.Random(seed))
        after = lockgen.advance_lock(before, random.Random(seed + 100), 7, structural=False)
        changed = {ch.path for ch in lockgen.changes(before, after)}
        for path in changed:
            if len(path) > 1:
                assert path[:-1] in changed, (seed, path)


def test_structural_update_adds_an_input_and_renumbers_keys() -> None:
    before = lockgen.generate_lock(random.Random(3))
    after = lockgen.advance_lock(before, random.Random(4), 7, structural=True)
    added = [ch for ch in lockgen.changes(before, after) if ch.kind == "added"]
    assert added and added[0].path[0] == "nixcfg"
    assert "• Added input 'nixcfg/" in lockgen.render_summary(before, after)
    keys_before, keys_after = set(_nodes(lockgen.dump_lock(before))), set(_nodes(lockgen.dump_lock(after)))
    assert len(keys_after) > len(keys_before)


def test_lock_generation_is_deterministic_per_seed() -> None:
    assert lockgen.generate_lock_pair(random.Random(1), 7) == lockgen.generate_lock_pair(random.Random(1), 7)
    assert lockgen.generate_lock_pair(random.Random(1), 7) != lockgen.generate_lock_pair(random.Random(2), 7)


def test_flake_nix_declares_the_locked_inputs() -> None:
    root = lockgen.generate_lock(random.Random(2))
    text = lockgen.render_flake_nix(root)
    assert 'nixpkgs.url = "github:nixos/nixpkgs/nixos-unstable";' in text
    assert 'catppuccin.follows = "nixcfg/catppuccin";' in text
    assert 'home-manager.inputs.nixpkgs.follows = "nixpkgs";' in text
    assert "secrets.flake = false;" in text


def test_parse_lock_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        lockgen.parse_lock(b'{"version": 3, "nodes": {}}')
    with pytest.raises(ValueError):
        lockgen.parse_lock(b'{"version": 7, "root": "root", "nodes": {"root": {"inputs": {"a": "missing"}}}}')


# --- nixpkgs commits -----------------------------------------------------------------------

BUMP = re.compile(r"^(?:\[Backport release-\d\d\.\d\d\] )?[\w.+-]+: \S+ -> \S+")
INIT = re.compile(r"^[\w.+-]+: init at \S+$")
MODULE = re.compile(r"^nixos/[\w.-]+: .+")
MERGE = re.compile(r"^Merge pull request #\d+ from [\w-]+/\S+\n\n\S")
KERNEL = re.compile(r"^linux_6_\d+: 6\.\d+\.\d+ -> 6\.\d+\.\d+$")
CVE = re.compile(r"\bCVE-\d{4}-\d{4,}\b")


def test_nixpkgs_commits_look_like_nixpkgs() -> None:
    start = datetime(2026, 11, 14, tzinfo=timezone.utc)
    end = datetime(2026, 11, 21, 6, tzinfo=timezone.utc)
    commits = nixpkgs.generate_commits(random.Random(1), 2000, start, end)
    assert len(commits) == 2000
    dates = [c["committer"]["date"] for c in commits]
    assert dates == sorted(dates) and dates[0] >= "2026-11-14T00:00:00Z"
    assert dates[-1] == "2026-11-21T06:00:00Z"
    subjects = [c["message"].split("\n", 1)[0] for c in commits]
    for pattern in (BUMP, INIT, MODULE, KERNEL):
        assert any(pattern.match(s) for s in subjects), pattern.pattern
    assert any(s.startswith("python3Packages.") and BUMP.match(s) for s in subjects)
    assert any(s.startswith("treewide: ") for s in subjects)
    merges = [c for c in commits if c["merge"]]
    assert merges and all(MERGE.match(c["message"]) for c in merges)
    assert any(CVE.search(c["message"].split("\n", 1)[0]) for c in commits)
    assert any(CVE.search(c["message"].partition("\n")[2]) for c in commits)
    assert all(re.fullmatch(r"[0-9a-f]{40}", c["sha"]) for c in commits)
    assert len({c["sha"] for c in commits}) == 2000


def test_nixpkgs_commits_are_reproducible_and_stable_ranges_backport() -> None:
    a = nixpkgs.generate_commits(random.Random("x"), 50, 0, 86400)
    assert a == nixpkgs.generate_commits(random.Random("x"), 50, 0, 86400)
    stable = nixpkgs.generate_commits(random.Random(2), 300, 1795000000, 1795300000, stable=True)
    assert any(c["message"].startswith("[Backport release-26.05] ") for c in stable)
    assert nixpkgs.generate_commits(random.Random(1), 0, 0, 1) == []


def test_upstream_commits() -> None:
    commits = nixpkgs.generate_upstream_commits(random.Random(1), 30, 0, 86400 * 10, repo="nix-community/disko")
    assert len(commits) == 30 and commits[-1]["committer"]["date"] == "1970-01-11T00:00:00Z"


# --- git graph -------------------------------------------------------------------------------


def test_blob_and_tree_shas_match_git() -> None:
    # `printf 'hello\n' > a.txt; printf x > d/b; git add .; git write-tree`
    assert blob_sha(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert tree_sha({"a.txt": b"hello\n", "d/b": b"x"}) == "60a1046ef7dbcd695e8967e09932564b178b53e8"


def test_merge3_merges_separate_hunks_and_detects_conflicts() -> None:
    base = "".join(f"line {i}\n" for i in range(20)).encode()
    ours = base.replace(b"line 2\n", b"line two\n")
    theirs = base.replace(b"line 15\n", b"line fifteen\n")
    merged = merge3(base, ours, theirs)
    assert merged is not None and b"line two" in merged and b"line fifteen" in merged
    assert merge3(base, ours, base.replace(b"line 2\n", b"line TWO\n")) is None
    assert merge3(base, ours, ours) == ours
    tree, conflicts = merge_trees({"f": base, "g": b"1"}, {"f": ours, "g": b"1"}, {"f": theirs})
    assert conflicts == [] and "g" not in tree and tree["f"] == merged


def test_repo_commits_ranges_and_resolution() -> None:
    repo = GitRepo("t")
    me = Person("A", "a@x", 1.0, "a")
    c1 = repo.commit({"f": b"1\n"}, [], "one", me)
    c2 = repo.commit({"f": b"2\n"}, [c1.sha], "two", me)
    c3 = repo.commit({"f": b"1\n", "g": b"x\n"}, [c1.sha], "three", me)
    repo.refs["main"] = c2.sha
    assert repo.resolve("main") == repo.resolve("heads/main") == repo.resolve("refs/heads/main") == c2.sha
    assert repo.resolve(c2.sha[:8]) == c2.sha and repo.resolve("nope") is None
    assert repo.merge_base(c2.sha, c3.sha) == c1.sha
    assert [c.sha for c in repo.log_range(c2.sha, c3.sha)] == [c3.sha]
    assert repo.commit({"f": b"1\n"}, [], "one", me).sha != c1.sha  # a new commit, not a collision
    assert repo.commit({"f": b"1\n"}, [], "one", me, reuse=True).sha == c1.sha
    (d,) = diff_trees(c1.tree, c2.tree)
    assert (d.filename, d.status, d.additions, d.deletions) == ("f", "modified", 1, 1)
    assert d.patch == "@@ -1 +1 @@\n-1\n+2"


# --- GraphQL engine --------------------------------------------------------------------------


def _schema() -> Schema:
    def item(_, args, ctx):
        if args["id"] == 0:
            raise FieldError("Could not resolve to a node", "NOT_FOUND")
        return {"id": args["id"], "name": f"item-{args['id']}", "tags": ["a", "b"]}

    return Schema(
        types={
            "Query": {"item": FieldDef("Item", item, ("id",)), "node": FieldDef("Node", item, ("id",))},
            "Item": {"id": FieldDef("Int!"), "name": FieldDef("String!"), "tags": FieldDef("[String]")},
            "Node": {"id": FieldDef("Int!")},
        },
        interfaces={"Node": {"Item"}},
        type_of=lambda obj: "Item",
    )


def test_graphql_executes_aliases_fragments_variables_and_directives() -> None:
    q = """
    query Q($id: Int!, $skip: Boolean = true) {
      first: item(id: $id) { ...F  tags }
      second: item(id: 2) { name @skip(if: $skip) id }
      node(id: 3) { __typename ... on Item { name } }
    }
    fragment F on Item { id name }
    """
    out = execute(_schema(), q, {"id": 1})
    assert out == {"data": {"first": {"id": 1, "name": "item-1", "tags": ["a", "b"]}, "second": {"id": 2},
                            "node": {"__typename": "Item", "name": "item-3"}}}


def test_graphql_errors_like_github() -> None:
    schema = _schema()
    out = execute(schema, "{ item(id: 1) { nope } }")
    assert "data" not in out and out["errors"][0]["extensions"]["code"] == "undefinedField"
    assert out["errors"][0]["message"] == "Field 'nope' doesn't exist on type 'Item'"
    assert "Parse error" in execute(schema, "{ item(id: 1) { id }")["errors"][0]["message"]
    assert execute(schema, "query($id: Int!) { item(id: $id) { id } }")["errors"][0]["message"].startswith(
        "Variable $id of type Int! was provided invalid value")
    out = execute(schema, "{ a: item(id: 0) { id } b: item(id: 5) { id } }")
    assert out["data"] == {"a": None, "b": {"id": 5}}
    assert out["errors"][0]["type"] == "NOT_FOUND" and out["errors"][0]["path"] == ["a"]
    assert execute(schema, "{ item(id: 1, bad: 2) { id } }")["errors"][0]["extensions"]["code"] == "argumentNotAccepted"
    assert execute(schema, "{ item(id: 1) }")["errors"][0]["extensions"]["code"] == "selectionMismatch"
    assert execute(schema, "query A { item(id: 1) { id } } query B { item(id: 2) { id } }")["errors"][0][
        "message"] == "An operation name is required"
    assert execute(schema, "query A { item(id: 1) { id } } query B { item(id: 2) { id } }",
                   operation_name="B")["data"] == {"item": {"id": 2}}
