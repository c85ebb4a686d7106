"""Realistic ``flake.lock`` files for the simulator, generated (never copied).

The generated lock files have the shape of real NixOS configuration repositories
(github-api contract §6): version 7, a ``root`` node, nested inputs (a ``nixcfg`` input
with its own nixpkgs, home-manager, catppuccin…), follows arrays including ``[]``, node
keys with ``_2``/``_4`` suffixes assigned exactly as nix assigns them, several fetcher
types (github with ``original.ref``/pinned ``rev``/indirect original, git+https with
``ref``/``rev``/``revCount``, FlakeHub tarballs with ``rev``/``revCount``, nixpkgs channel
tarballs, ``file`` inputs, a relative ``path:`` input with ``parent``), ``sha256-…=``
narHashes and ``lastModified`` epochs. Files are written like nix writes them: sorted
keys, 2-space indent, trailing newline.

The model is a tree of :class:`LockNode`; :func:`dump_lock` assigns node keys with nix's
own algorithm (pre-order walk, inputs in name order, clashes suffixed ``_2``, ``_3``…),
so adding an input renumbers keys just as a real update does.

Public API: :func:`generate_lock`, :func:`advance_lock`, :func:`generate_lock_pair`,
:func:`parse_lock`, :func:`dump_lock`, :func:`changes`, :func:`rev_moves`,
:func:`all_revs`, :func:`render_summary`, :func:`render_flake_nix`, :func:`bump_input`.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Union

__all__ = [
    "ANCHOR",
    "LockNode",
    "InputChange",
    "RevMove",
    "generate_lock",
    "advance_lock",
    "generate_lock_pair",
    "parse_lock",
    "dump_lock",
    "changes",
    "rev_moves",
    "all_revs",
    "render_summary",
    "render_flake_nix",
    "bump_input",
]

#: Fixed time base (2026-11-22T00:00:00Z) so that lock contents are reproducible for a seed.
ANCHOR = 1795305600
DAY = 86400

Edge = Union["LockNode", list[str]]


@dataclass(eq=False)
class LockNode:
    """One flake input. ``inputs`` maps names to nodes or follows paths (lists)."""

    locked: dict[str, Any] | None = None
    original: dict[str, Any] | None = None
    inputs: dict[str, Edge] = field(default_factory=dict)
    flake: bool = True
    parent: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown fields, kept verbatim


# --- serialisation -------------------------------------------------------------


def dump_lock(root: LockNode) -> bytes:
    """The lock file bytes, keys assigned like nix's ``LockFile::toJSON``."""
    nodes: dict[str, Any] = {}
    used: set[str] = set()
    keys: dict[int, str] = {}

    def dump(key: str, node: LockNode) -> str:
        if id(node) in keys:
            return keys[id(node)]
        if key in used:
            n = 2
            while f"{key}_{n}" in used:
                n += 1
            key = f"{key}_{n}"
        used.add(key)
        keys[id(node)] = key
        obj: dict[str, Any] = dict(node.extra)
        if node.inputs:
            obj["inputs"] = {
                name: list(edge) if isinstance(edge, list) else dump(name, edge)
                for name, edge in sorted(node.inputs.items())
            }
        if node.locked is not None:
            obj["locked"] = node.locked
        if node.original is not None:
            obj["original"] = node.original
        if not node.flake:
            obj["flake"] = False
        if node.parent is not None:
            obj["parent"] = list(node.parent)
        nodes[key] = obj
        return key

    dump("root", root)
    doc = {"nodes": nodes, "root": "root", "version": 7}
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def parse_lock(data: bytes | str | dict[str, Any]) -> LockNode:
    """Parse a version 5–7 lock file into its root :class:`LockNode` (raises ValueError)."""
    doc = json.loads(data) if isinstance(data, (bytes, str)) else data
    if not isinstance(doc, dict) or doc.get("version") not in (5, 6, 7):
        raise ValueError("not a flake.lock of version 5-7")
    raw = doc.get("nodes")
    root_key = doc.get("root", "root")
    if not isinstance(raw, dict) or root_key not in raw:
        raise ValueError("flake.lock has no root node")
    built: dict[str, LockNode] = {}

    def build(key: str) -> LockNode:
        if key in built:
            return built[key]
        if key not in raw:
            raise ValueError(f"flake.lock refers to a missing node {key!r}")
        src = raw[key]
        node = LockNode(
            locked=src.get("locked"),
            original=src.get("original"),
            flake=src.get("flake", True) is not False,
            parent=src.get("parent"),
            extra={k: v for k, v in src.items() if k not in ("inputs", "locked", "original", "flake", "parent")},
        )
        built[key] = node
        for name, edge in (src.get("inputs") or {}).items():
            node.inputs[name] = list(edge) if isinstance(edge, list) else build(edge)
        return node

    return build(root_key)


# --- generation ------------------------------------------------------------------


class _Factory:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def rev(self) -> str:
        return f"{self.rng.getrandbits(160):040x}"

    def nar(self) -> str:
        return "sha256-" + base64.b64encode(self.rng.getrandbits(256).to_bytes(32, "big")).decode()

    def github(self, owner: str, repo: str, ts: float, *, ref: str | None = None, flake: bool = True,
               pinned: bool = False, indirect: str | None = None, inputs: dict[str, Edge] | None = None) -> LockNode:
        rev = self.rev()
        locked = {"lastModified": int(ts), "narHash": self.nar(), "owner": owner, "repo": repo, "rev": rev,
                  "type": "github"}
        if indirect:
            original: dict[str, Any] = {"id": indirect, "type": "indirect"}
        else:
            original = {"owner": owner, "repo": repo, "type": "github"}
            if ref:
                original["ref"] = ref
            if pinned:
                original["rev"] = rev
        return LockNode(locked, original, dict(inputs or {}), flake=flake)

    def channel(self, channel: str, ts: float) -> LockNode:
        node = LockNode(None, {"type": "tarball", "url": f"https://channels.nixos.org/{channel}/nixexprs.tar.xz"})
        self.move_channel(node, ts)
        return node

    def move_channel(self, node: LockNode, ts: float) -> None:
        assert node.original is not None
        channel = node.original["url"].split("/")[3]
        rev = self.rev()
        release = _unstable_release(ts)
        build = 1_009_182 + int((ts - 1780365719) / DAY * 560)
        family = "nixpkgs" if channel.startswith("nixpkgs") else "nixos"
        folder = "nixos/unstable" if family == "nixos" else "nixpkgs"
        node.locked = {
            "lastModified": int(ts),
            "narHash": self.nar(),
            "rev": rev,
            "type": "tarball",
            "url": f"https://releases.nixos.org/{folder}/{family}-{release}pre{build}.{rev[:12]}/nixexprs.tar.xz",
        }

    def flakehub(self, org: str, project: str, version: str, ts: float, rev_count: int,
                 inputs: dict[str, Edge] | None = None, spec: str = "%2A") -> LockNode:
        node = LockNode(None, {"type": "tarball", "url": f"https://flakehub.com/f/{org}/{project}/{spec}"},
                        dict(inputs or {}))
        self.move_flakehub(node, version, ts, rev_count)
        return node

    def move_flakehub(self, node: LockNode, version: str, ts: float, rev_count: int) -> None:
        assert node.original is not None
        _, _, _, _, org, project, _ = node.original["url"].split("/")
        rev = self.rev()
        rand = f"{self.rng.getrandbits(80):020x}"
        millis = f"{int(ts * 1000):012x}"
        variant = "89ab"[int(rand[3], 16) % 4]
        uuid = f"{millis[:8]}-{millis[8:]}-7{rand[:3]}-{variant}{rand[4:7]}-{rand[8:20]}"
        if project == "nixpkgs":
            version = f"0.1.{rev_count}+rev-{rev}"
            url_version = version.replace("+", "%2B")
        else:
            url_version = version
        node.locked = {
            "lastModified": int(ts),
            "narHash": self.nar(),
            "rev": rev,
            "revCount": rev_count,
            "type": "tarball",
            "url": f"https://api.flakehub.com/f/pinned/{org}/{project}/{url_version}/{uuid}/source.tar.gz",
        }

    def nixd_file(self, system: str, version: str) -> LockNode:
        url = f"https://install.determinate.systems/determinate-nixd/tag/v{version}/{system}"
        return LockNode({"narHash": self.nar(), "type": "file", "url": url},
                        {"type": "file", "url": url}, flake=False)

    def git(self, url: str, ts: float, rev_count: int, *, flake: bool = True) -> LockNode:
        locked = {"lastModified": int(ts), "narHash": self.nar(), "ref": "main", "rev": self.rev(),
                  "revCount": rev_count, "type": "git", "url": url}
        return LockNode(locked, {"ref": "main", "type": "git", "url": url}, flake=flake)


def _unstable_release(ts: float) -> str:
    """The next NixOS release as named by unstable at time ``ts`` (e.g. ``27.05``)."""
    day = datetime.fromtimestamp(ts, tz=timezone.utc)
    yy = day.year % 100
    if day.month == 12 or (day.month == 11 and day.day >= 15):
        return f"{yy + 1}.05"
    if day.month >= 6:
        return f"{yy}.11"
    return f"{yy}.05"


def _stable_release(ts: float) -> str:
    day = datetime.fromtimestamp(ts, tz=timezone.utc)
    yy = day.year % 100
    if day.month >= 12:
        return f"{yy}.11"
    if day.month >= 6:
        return f"{yy}.05"
    return f"{yy - 1}.11"


_DETERMINATE_VERSION = "3.13.2"


def generate_lock(rng: random.Random, *, at: float = ANCHOR) -> LockNode:
    """A realistic configuration-repo lock as it would be locked at time ``at``."""
    f = _Factory(rng)

    def ago(lo: float, hi: float) -> float:
        return at - rng.uniform(lo, hi) * DAY

    def systems() -> LockNode:
        return f.github("nix-systems", "default", 1681028828)

    unstable = ago(0.5, 2.0)
    stable = _stable_release(at)
    nixcfg = f.github("pbek", "nixcfg", ago(1, 6), inputs={
        "agenix": f.github("ryantm", "agenix", ago(60, 200), inputs={
            "darwin": f.github("lnl7", "nix-darwin", ago(200, 400), ref="master",
                               inputs={"nixpkgs": ["nixcfg", "agenix", "nixpkgs"]}),
            "home-manager": f.github("nix-community", "home-manager", ago(200, 400),
                                     inputs={"nixpkgs": ["nixcfg", "agenix", "nixpkgs"]}),
            "nixpkgs": ["nixcfg", "nixpkgs"],
            "systems": systems(),
        }),
        "catppuccin": f.github("catppuccin", "nix", ago(2, 10), inputs={
            "nixpkgs": f.channel("nixpkgs-unstable", ago(3, 12)),
        }),
        "disko": f.github("nix-community", "disko", ago(3, 14), inputs={"nixpkgs": ["nixcfg", "nixpkgs"]}),
        "home-manager": f.github("nix-community", "home-manager", ago(1, 8), ref=f"release-{stable}",
                                 inputs={"nixpkgs": ["nixcfg", "nixpkgs"]}),
        "kanboard-cli": f.github("digital-blueprint", "kanboard-cli", ago(2, 20),
                                 inputs={"nixpkgs": ["nixcfg", "nixpkgs"]}),
        "nixos-hardware": f.github("NixOS", "nixos-hardware", ago(2, 9), ref="master", inputs={
            "nixpkgs": f.channel("nixos-unstable", ago(40, 80)),
        }),
        "nixpkgs": f.github("nixos", "nixpkgs", ago(1.5, 4), ref="nixos-unstable"),
        "nixpkgs-stable": f.github("nixos", "nixpkgs", ago(2, 9), ref=f"nixos-{stable}"),
        "pia": f.github("pia-foss", "manual-connections", ago(300, 500), flake=False),
        "plasma-manager": f.github("nix-community", "plasma-manager", ago(3, 20), inputs={
            "home-manager": ["nixcfg", "home-manager"], "nixpkgs": ["nixcfg", "nixpkgs"],
        }),
    })
    determinate = f.flakehub("DeterminateSystems", "determinate", _DETERMINATE_VERSION, ago(5, 20), 420, inputs={
        "determinate-nixd-aarch64-darwin": f.nixd_file("aarch64-darwin", _DETERMINATE_VERSION),
        "determinate-nixd-x86_64-linux": f.nixd_file("x86_64-linux", _DETERMINATE_VERSION),
        "nix": f.flakehub("DeterminateSystems", "nix-src", _DETERMINATE_VERSION, ago(5, 20), 23_410, inputs={
            "nixpkgs": ["determinate", "nixpkgs"],
        }),
        "nixpkgs": f.flakehub("NixOS", "nixpkgs", "", ago(6, 25), 905_000, spec="0.1"),
    })
    root = LockNode(inputs={
        "agenix": f.github("ryantm", "agenix", ago(60, 200), inputs={
            "darwin": f.github("lnl7", "nix-darwin", ago(200, 400), ref="master",
                               inputs={"nixpkgs": ["agenix", "nixpkgs"]}),
            "home-manager": f.github("nix-community", "home-manager", ago(200, 400),
                                     inputs={"nixpkgs": ["agenix", "nixpkgs"]}),
            "nixpkgs": ["nixpkgs"],
            "systems": systems(),
        }),
        "catppuccin": ["nixcfg", "catppuccin"],
        "determinate": determinate,
        "disko": f.github("nix-community", "disko", ago(3, 14), inputs={"nixpkgs": ["nixpkgs"]}),
        "fleet-modules": f.github("alice", "fleet-modules", ago(5, 30), inputs={
            "flake-utils": f.github("numtide", "flake-utils", ago(200, 300), inputs={"systems": systems()}),
            "host-config": [],
            "nixpkgs": ["nixpkgs"],
        }),
        "flake-utils": f.github("numtide", "flake-utils", ago(200, 300), indirect="flake-utils",
                                inputs={"systems": systems()}),
        "home-manager": f.github("nix-community", "home-manager", ago(1, 6), inputs={"nixpkgs": ["nixpkgs"]}),
        "nixcfg": nixcfg,
        "nixhostforge": LockNode({"path": "./stubs/nixhostforge", "type": "path"},
                                 {"path": "./stubs/nixhostforge", "type": "path"}, parent=[]),
        "nixos-hardware": f.github("NixOS", "nixos-hardware", ago(2, 9), ref="master", inputs={
            "nixpkgs": f.channel("nixos-unstable", ago(30, 60)),
        }),
        "nixpkgs": f.github("nixos", "nixpkgs", unstable - 0.2 * DAY, ref="nixos-unstable"),
        "nixpkgs-stable": f.github("nixos", "nixpkgs", ago(1, 6), ref=f"nixos-{stable}"),
        "plasma-manager": f.github("nix-community", "plasma-manager", ago(3, 20), inputs={
            "home-manager": ["home-manager"], "nixpkgs": ["nixpkgs"],
        }),
        "secrets": f.git("https://git.example.org/alice/nix-secrets.git", ago(10, 40), 187, flake=False),
        "treefmt-nix": f.github("numtide", "treefmt-nix", ago(90, 150), pinned=True,
                                inputs={"nixpkgs": ["nixpkgs"]}),
    })
    return root


_NEW_INPUTS = (("tokstat", "pbek"), ("uncrash", "pbek"), ("zfsguard", "pbek"), ("nixbit", "pbek"))


def _walk(root: LockNode) -> list[tuple[tuple[str, ...], LockNode]]:
    """Every node once, with the first input path that reaches it (pre-order, names sorted)."""
    out: list[tuple[tuple[str, ...], LockNode]] = []
    seen: set[int] = set()

    def visit(path: tuple[str, ...], node: LockNode) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        out.append((path, node))
        for name, edge in sorted(node.inputs.items()):
            if isinstance(edge, LockNode):
                visit(path + (name,), edge)

    visit((), root)
    return out


def _is_nixpkgs(node: LockNode) -> bool:
    lk = node.locked or {}
    if lk.get("type") == "github":
        return f"{lk.get('owner', '')}/{lk.get('repo', '')}".lower() == "nixos/nixpkgs"
    return lk.get("type") == "tarball" and ("releases.nixos.org" in lk.get("url", "")
                                            or "/NixOS/nixpkgs/" in lk.get("url", ""))


def advance_lock(root: LockNode, rng: random.Random, days: float, *, structural: bool | None = None) -> LockNode:
    """A copy of ``root`` as ``nix flake update`` would leave it ``days`` later.

    The root ``nixpkgs`` always moves by about ``days``; other nixpkgs inputs usually
    follow, a few other inputs move, pinned and ``path:`` inputs never do. With
    ``structural`` (default: randomly, 15 %) an input is added under ``nixcfg``, which
    renumbers node keys like a real update does.
    """
    new = copy.deepcopy(root)
    f = _Factory(rng)
    root_np = new.inputs.get("nixpkgs")
    base_ts = float((root_np.locked or {}).get("lastModified", ANCHOR)) if isinstance(root_np, LockNode) else ANCHOR
    target = base_ts + days * DAY + rng.uniform(-0.25, 0.25) * DAY
    target = max(target, base_ts + 3600)
    moved_other = 0
    moved: set[int] = {id(new)}  # nested inputs only move when their parent flake moved
    by_path = dict(_walk(new))
    for path, node in by_path.items():
        lk = node.locked
        if lk is None or node.parent is not None or id(by_path[path[:-1]]) not in moved:
            continue
        before = dict(lk)
        _maybe_move(f, rng, node, path, root_np, base_ts, target, days)
        if node.locked != before:
            moved.add(id(node))
            moved_other += node is not root_np and not _is_nixpkgs(node)
    if moved_other < 2:
        for name in ("home-manager", "disko"):
            node = new.inputs.get(name)
            if isinstance(node, LockNode) and node.locked:
                _move_github(f, node, min(target, float(node.locked["lastModified"]) + DAY))
    if structural if structural is not None else rng.random() < 0.15:
        _add_input(f, new, rng, target)
    return new


def _maybe_move(f: _Factory, rng: random.Random, node: LockNode, path: tuple[str, ...],
                root_np: object, base_ts: float, target: float, days: float) -> None:
    """Move one input (or not) the way a week of upstream activity would."""
    lk = node.locked or {}
    kind = lk.get("type")
    old_ts = float(lk.get("lastModified", base_ts))
    if node is root_np:
        _move_github(f, node, target)
        return
    if (node.original or {}).get("rev") or lk.get("owner") == "nix-systems" or kind == "file":
        return  # pinned, or never updated upstream
    if _is_nixpkgs(node):
        ref = (node.original or {}).get("ref", "")
        if ref.startswith("nixos-2"):
            if rng.random() < 0.6:
                _move_github(f, node, old_ts + rng.uniform(0.3, max(0.5, days)) * DAY)
        elif rng.random() < 0.8:
            ts = max(old_ts + 3600, target - rng.uniform(0, 1.5) * DAY)
            if kind == "github":
                _move_github(f, node, ts)
            elif "flakehub" in (node.original or {}).get("url", ""):
                f.move_flakehub(node, "", ts, int(lk.get("revCount", 0)) + rng.randint(200, 900))
            else:
                f.move_channel(node, ts)
        return
    chance = {"home-manager": 0.8, "nixcfg": 0.75, "nixos-hardware": 0.6}.get(path[-1], 0.3)
    if kind == "github" and rng.random() < chance:
        _move_github(f, node, min(target, old_ts + rng.uniform(0.2, max(0.5, days)) * DAY))
    elif kind == "git" and rng.random() < 0.35:
        node.locked = {**lk, "lastModified": int(min(target, old_ts + rng.uniform(0.5, 3) * DAY)),
                       "narHash": f.nar(), "rev": f.rev(), "revCount": int(lk["revCount"]) + rng.randint(1, 12)}
    elif kind == "tarball" and "flakehub" in (node.original or {}).get("url", "") and rng.random() < 0.25:
        _bump_determinate(f, node, rng, min(target, old_ts + rng.uniform(1, 5) * DAY))


def _move_github(f: _Factory, node: LockNode, ts: float) -> None:
    assert node.locked is not None
    node.locked = {**node.locked, "lastModified": int(ts), "narHash": f.nar(), "rev": f.rev()}


def _bump_determinate(f: _Factory, node: LockNode, rng: random.Random, ts: float) -> None:
    """Move the Determinate flake to a new patch release (and its nixd binaries with it)."""
    lk = node.locked or {}
    version = lk.get("url", "").split("/")[7] if lk.get("url", "").count("/") > 7 else _DETERMINATE_VERSION
    major, minor, patch = (version.split(".") + ["0", "0"])[:3]
    version = f"{major}.{minor}.{int(patch) + 1}"
    f.move_flakehub(node, version, ts, int(lk.get("revCount", 0)) + rng.randint(3, 15))
    for name, child in node.inputs.items():
        if isinstance(child, LockNode) and (child.locked or {}).get("type") == "file":
            system = name.removeprefix("determinate-nixd-")
            fresh = f.nixd_file(system, version)
            child.locked, child.original = fresh.locked, fresh.original


def _add_input(f: _Factory, root: LockNode, rng: random.Random, ts: float) -> None:
    nixcfg = root.inputs.get("nixcfg")
    if not isinstance(nixcfg, LockNode):
        return
    free = [(name, owner) for name, owner in _NEW_INPUTS if name not in nixcfg.inputs]
    if not free:
        return
    name, owner = rng.choice(free)
    systems = f.github("nix-systems", "default", 1681028828)
    nixcfg.inputs[name] = f.github(owner, name, ts - rng.uniform(0.5, 5) * DAY, ref="release", inputs={
        "flake-utils": f.github("numtide", "flake-utils", 1731533236, inputs={"systems": systems}),
        "nixpkgs": ["nixcfg", "nixpkgs"],
    })


def generate_lock_pair(rng: random.Random, days: float = 7, *, anchor: float = ANCHOR) -> tuple[bytes, bytes]:
    """(before, after) lock bytes: a fresh lock and the same lock updated ``days`` later."""
    before = generate_lock(rng, at=anchor - days * DAY)
    after = advance_lock(before, rng, days)
    return dump_lock(before), dump_lock(after)


# --- what changed ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputChange:
    """One entry of nix's lock diff: ``kind`` is added, removed or updated."""

    path: tuple[str, ...]
    kind: str
    old: LockNode | tuple[str, ...] | None
    new: LockNode | tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class RevMove:
    """A moved input whose source lives on GitHub (nixpkgs tarballs count as NixOS/nixpkgs)."""

    owner: str
    repo: str
    old_rev: str
    new_rev: str
    old_ts: int
    new_ts: int
    ref: str
    path: tuple[str, ...]


def _edges(root: LockNode) -> dict[tuple[str, ...], LockNode | tuple[str, ...]]:
    res: dict[tuple[str, ...], LockNode | tuple[str, ...]] = {}
    done: set[int] = set()

    def walk(prefix: tuple[str, ...], node: LockNode) -> None:
        if id(node) in done:
            return
        done.add(id(node))
        for name, edge in sorted(node.inputs.items()):
            p = prefix + (name,)
            if isinstance(edge, list):
                res[p] = tuple(edge)
            else:
                res[p] = edge
                walk(p, edge)

    walk((), root)
    return res


def changes(before: LockNode, after: LockNode) -> list[InputChange]:
    """nix's lock diff (``LockFile::diff``), including the relative-path rule."""
    o, n = _edges(before), _edges(after)
    out: list[InputChange] = []
    for p in sorted(o.keys() | n.keys()):
        if p not in o:
            out.append(InputChange(p, "added", None, n[p]))
        elif p not in n:
            out.append(InputChange(p, "removed", o[p], None))
        else:
            a, b = o[p], n[p]
            if isinstance(a, LockNode) and isinstance(b, LockNode):
                if a.locked != b.locked or (a.parent is not None and b.parent is not None):
                    out.append(InputChange(p, "updated", a, b))
            elif a != b:
                out.append(InputChange(p, "updated", a, b))
    return out


def _source(node: LockNode) -> tuple[str, str, str, int, str] | None:
    """(owner, repo, rev, lastModified, ref) for inputs that can be compared on GitHub."""
    lk = node.locked or {}
    rev = lk.get("rev")
    if not rev:
        return None
    ref = str((node.original or {}).get("ref", ""))
    if lk.get("type") == "github":
        return lk["owner"], lk["repo"], rev, int(lk.get("lastModified", 0)), ref
    if _is_nixpkgs(node):
        url = (node.original or {}).get("url", "")
        channel = url.split("/")[3] if "channels.nixos.org" in url else "nixpkgs-unstable"
        return "NixOS", "nixpkgs", rev, int(lk.get("lastModified", 0)), channel
    return None


def rev_moves(before: LockNode, after: LockNode) -> list[RevMove]:
    """Updated inputs that moved within one GitHub repository (compare candidates)."""
    out: list[RevMove] = []
    for ch in changes(before, after):
        if ch.kind != "updated" or not isinstance(ch.old, LockNode) or not isinstance(ch.new, LockNode):
            continue
        a, b = _source(ch.old), _source(ch.new)
        if a and b and a[:2] == b[:2] and a[2] != b[2]:
            out.append(RevMove(a[0], a[1], a[2], b[2], a[3], b[3], b[4], ch.path))
    return out


def all_revs(root: LockNode) -> list[tuple[str, str, str, int, str]]:
    """(owner, repo, rev, lastModified, ref) of every GitHub-comparable node in the lock."""
    return [src for _, node in _walk(root) if (src := _source(node))]


# --- rendering (Determinate Nix style, as update-flake-lock PR bodies show it) -------


def _describe(node: LockNode | tuple[str, ...]) -> str:
    if isinstance(node, tuple):
        return f"follows '{'/'.join(node)}'"
    lk = node.locked or {}
    kind = lk.get("type")
    if kind in ("github", "gitlab", "sourcehut"):
        url = f"{kind}:{lk['owner']}/{lk['repo']}"
        if lk.get("rev"):
            url += f"/{lk['rev'][:7]}"
        elif lk.get("ref"):
            url += f"/{lk['ref']}"
        query = [f"{k}={lk[k]}" for k in ("dir", "host") if lk.get(k)]
    elif kind == "git":
        url = "git+" + lk["url"]
        query = []
        if lk.get("ref") and lk["ref"] not in ("master", "main"):
            query.append(f"ref={lk['ref']}")
        if lk.get("rev"):
            query.append(f"rev={lk['rev']}")
    elif kind == "path":
        url, query = f"path:{lk['path']}", []
    else:
        url, query = str(lk.get("url", "")), []
    if query:
        url += "?" + "&".join(query)
    text = f"'{url}'"
    if "lastModified" in lk:
        text += f" ({datetime.fromtimestamp(int(lk['lastModified']), tz=timezone.utc):%Y-%m-%d})"
    return text


def render_summary(before: LockNode, after: LockNode) -> str:
    """The entries nix prints after ``Flake lock file updates:`` (Determinate style)."""
    lines: list[str] = []
    for ch in changes(before, after):
        name = "/".join(ch.path)
        if ch.kind == "added":
            assert ch.new is not None
            lines += [f"• Added input '{name}':", f"    {_describe(ch.new)}"]
        elif ch.kind == "removed":
            lines.append(f"• Removed input '{name}'")
        else:
            assert ch.old is not None and ch.new is not None
            lines += [f"• Updated input '{name}':", f"    {_describe(ch.old)}", f"  → {_describe(ch.new)}"]
    return "".join(line + "\n" for line in lines)


def _flake_ref(node: LockNode) -> str:
    orig = node.original or {}
    kind = orig.get("type")
    if kind == "github":
        ref = orig.get("rev") or orig.get("ref")
        return f"github:{orig['owner']}/{orig['repo']}" + (f"/{ref}" if ref else "")
    if kind == "indirect":
        return str(orig["id"])
    if kind == "git":
        return f"git+{orig['url']}" + (f"?ref={orig['ref']}" if orig.get("ref") else "")
    if kind == "path":
        return f"path:{orig['path']}"
    return str(orig.get("url", ""))


def render_flake_nix(root: LockNode, description: str = "NixOS configurations of the fleet") -> str:
    """A ``flake.nix`` whose inputs (urls, ``flake = false``, follows) match the lock."""
    out = ["{", f'  description = "{description}";', "", "  inputs = {"]
    for name, edge in sorted(root.inputs.items()):
        if isinstance(edge, list):
            out.append(f'    {name}.follows = "{"/".join(edge)}";')
            continue
        out.append(f'    {name}.url = "{_flake_ref(edge)}";')
        if not edge.flake:
            out.append(f"    {name}.flake = false;")
        for sub, sub_edge in sorted(edge.inputs.items()):
            if isinstance(sub_edge, list):
                out.append(f'    {name}.inputs.{sub}.follows = "{"/".join(sub_edge)}";')
    out += [
        "  };",
        "",
        "  outputs = { self, nixpkgs, ... }@inputs:",
        "    let",
        "      mkHost = name: system: nixpkgs.lib.nixosSystem {",
        "        inherit system;",
        "        specialArgs = { inherit inputs; };",
        "        modules = [ ./modules/common.nix ./hosts/${name}/configuration.nix ];",
        "      };",
        "    in {",
        "      nixosConfigurations = builtins.mapAttrs (name: _: mkHost name \"x86_64-linux\")",
        "        (builtins.readDir ./hosts);",
        "    };",
        "}",
    ]
    return "\n".join(out) + "\n"


def bump_input(root: LockNode, rng: random.Random, name: str, days: float) -> LockNode:
    """A copy of ``root`` where only the root input ``name`` moved ``days`` forward
    (what ``nix flake update <name>`` committed by hand looks like)."""
    new = copy.deepcopy(root)
    node = new.inputs.get(name)
    if not isinstance(node, LockNode) or not node.locked:
        raise KeyError(f"no locked root input {name!r}")
    _move_github(_Factory(rng), node, float(node.locked.get("lastModified", ANCHOR)) + days * DAY)
    return new
