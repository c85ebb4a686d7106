"""flake.lock parsing, nix's lock diff, and what the diff means for GitHub.

Pure functions, no I/O. The diff follows NixOS/nix ``src/libflake/lockfile.cc``
(``getAllInputs``, ``equals``, ``diff``, ``describe``, ``doFind``) and renders each
locked reference the way the fetchers' ``toURL`` do (``src/libfetchers/*.cc``,
``src/libutil/url.cc``), in two styles:

* ``upstream``: NixOS/nix, full revisions and a percent-encoded ``?narHash=``;
* ``determinate``: Determinate Nix >= 3.13.2 (``to_string(abbreviate=true)``):
  7-character revisions for github/gitlab/sourcehut, no ``narHash`` for any type,
  and git ``ref=master``/``ref=main`` omitted.

Identical lock files give no entries: nix only computes the diff when the new lock
file differs from the old one (``lockFlake`` in ``src/libflake/flake.cc``). The diff
assumes a full ``nix flake update`` (the update-flake-lock default), which re-locks
every input; see :func:`diff` for what that means for relative ``path:`` inputs.

Entry points: :func:`parse_lock`, :func:`diff`, :func:`render_summary`,
:func:`render_message`, :func:`headline`, :func:`compare_targets`,
:func:`explain_changes` and :func:`to_json`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, TypeAlias
from urllib.parse import quote, unquote_to_bytes

from nfu_tui.errors import LockFileError

__all__ = [
    "SUPPORTED_VERSIONS",
    "ChangeKind",
    "ChangeNote",
    "CompareTarget",
    "Edge",
    "Follows",
    "InputPath",
    "LockChange",
    "LockFile",
    "LockNode",
    "LockedRef",
    "Style",
    "UpdateKind",
    "compare_targets",
    "diff",
    "explain_change",
    "explain_changes",
    "github_coordinates",
    "headline",
    "parse_lock",
    "render_edge",
    "render_message",
    "render_summary",
    "to_json",
]

SUPPORTED_VERSIONS = range(5, 8)
MESSAGE_HEADER = "Flake lock file updates:"

InputPath: TypeAlias = tuple[str, ...]


class Style(str, enum.Enum):
    """How locked references are printed (which nix produced the summary)."""

    DETERMINATE = "determinate"
    UPSTREAM = "upstream"


class ChangeKind(str, enum.Enum):
    """The three entry kinds nix prints."""

    ADDED = "added"
    REMOVED = "removed"
    UPDATED = "updated"


class UpdateKind(str, enum.Enum):
    """What an entry means for the user (contract §6.6)."""

    ADDED = "added"
    REMOVED = "removed"
    UPDATE = "update"  # same source, new lock (usually a new revision)
    BRANCH_SWITCH = "branch-switch"  # original.ref (a tarball's channel) changed, e.g. nixos-25.05 -> nixos-25.11
    SOURCE_CHANGED = "source-changed"  # owner/repo/type/url changed: nothing to compare
    NOW_FOLLOWS = "now-follows"
    NO_LONGER_FOLLOWS = "no-longer-follows"
    FOLLOWS_CHANGED = "follows-changed"
    RELOCKED = "relocked"  # identical lock attributes (relative path inputs)


# --- model --------------------------------------------------------------------


@dataclass(frozen=True)
class LockNode:
    """One node of ``nodes``. ``inputs`` maps a name to a node key or a follows path.

    ``locked``/``original`` are the raw attribute dicts (``locked`` with a version-5
    ``info`` merged in); the root node has neither. Treat the dicts as read-only.
    """

    key: str
    inputs: Mapping[str, str | InputPath]
    locked: Mapping[str, Any] | None = None
    original: Mapping[str, Any] | None = None
    flake: bool = True
    parent: InputPath | None = None
    build_time: bool = False  # Determinate Nix ``buildTime``


@dataclass(frozen=True)
class LockFile:
    """A parsed flake.lock: the nodes reachable from ``root`` (as nix reads it)."""

    version: int
    root: str
    nodes: Mapping[str, LockNode]

    @property
    def root_node(self) -> LockNode:
        return self.nodes[self.root]

    def resolve(self, path: Sequence[str]) -> str | None:
        """Key of the node an input path leads to, following follows (nix ``findInput``).

        ``()`` is the root. Returns None when the path does not exist; raises
        :class:`LockFileError` on a follows cycle.
        """
        return _resolve(self, tuple(path), [])

    def locked_ref(self, key: str) -> LockedRef:
        """The :class:`LockedRef` of a non-root node."""
        node = self.nodes[key]
        return LockedRef(
            node_key=key,
            locked=node.locked or {},
            original=node.original,
            flake=node.flake,
            parent=node.parent,
        )

    def resolve_ref(self, path: Sequence[str]) -> LockedRef | None:
        """The effective locked reference at an input path (None: missing or the root)."""
        key = self.resolve(path)
        if key is None or key == self.root:
            return None
        return self.locked_ref(key)

    def all_inputs(self) -> dict[InputPath, str | InputPath]:
        """Every input path with its raw edge, each node expanded once (nix ``getAllInputs``)."""
        res: dict[InputPath, str | InputPath] = {}
        done: set[str] = set()

        def walk(prefix: InputPath, key: str) -> None:
            if key in done:
                return
            done.add(key)
            inputs = self.nodes[key].inputs
            for name in sorted(inputs):
                edge = inputs[name]
                path = prefix + (name,)
                res[path] = edge
                if isinstance(edge, str):
                    walk(path, edge)

        walk((), self.root)
        return res


@dataclass(frozen=True)
class LockedRef:
    """A node edge: the locked reference an input points at."""

    node_key: str
    locked: Mapping[str, Any]
    original: Mapping[str, Any] | None = None
    flake: bool = True
    parent: InputPath | None = None

    @property
    def type(self) -> str:
        return str(self.locked.get("type", ""))

    @property
    def relative(self) -> bool:
        """A relative ``path:`` input (nix ``isRelative``: a path not starting with ``/``).

        nix records the ``parent`` of exactly these inputs; either sign suffices.
        """
        path = self.locked.get("path")
        return self.parent is not None or (self.type == "path" and isinstance(path, str) and not path.startswith("/"))

    @property
    def rev(self) -> str | None:
        rev = self.locked.get("rev")
        if not isinstance(rev, str) or not rev:
            return None
        return rev.lower() if _HEX_RE.fullmatch(rev) else rev

    @property
    def short_rev(self) -> str | None:
        rev = self.rev
        return rev[:7] if rev else None

    @property
    def last_modified(self) -> int | None:
        return _json_int(self.locked.get("lastModified"))

    @property
    def date(self) -> str | None:
        """``lastModified`` as ``YYYY-MM-DD`` in UTC, as nix prints it."""
        return _format_date(self.last_modified)

    @property
    def original_ref(self) -> str | None:
        ref = (self.original or {}).get("ref")
        return ref if isinstance(ref, str) else None

    def url(self, style: Style | str = Style.DETERMINATE) -> str:
        """The locked reference as a flake URL (nix ``FlakeRef::to_string``)."""
        return _flakeref_url(self.locked, Style(style) is Style.DETERMINATE)

    def describe(self, style: Style | str = Style.DETERMINATE) -> str:
        """``'<url>'`` plus `` (YYYY-MM-DD)`` when ``lastModified`` is known."""
        text = f"'{self.url(style)}'"
        day = self.date
        return f"{text} ({day})" if day else text


@dataclass(frozen=True)
class Follows:
    """A follows edge: an input path from the root (``()`` = the root flake)."""

    path: InputPath

    @property
    def target(self) -> str:
        return "/".join(self.path)

    def describe(self) -> str:
        return f"follows '{self.target}'"


Edge: TypeAlias = "LockedRef | Follows"


@dataclass(frozen=True)
class LockChange:
    """One entry of nix's diff. ``old`` is kept for Removed (nix doesn't print it)."""

    path: InputPath
    kind: ChangeKind
    old: LockedRef | Follows | None
    new: LockedRef | Follows | None

    @property
    def name(self) -> str:
        """The input path as nix prints it, e.g. ``nixcfg/nixpkgs``."""
        return "/".join(self.path)


@dataclass(frozen=True)
class CompareTarget:
    """A GitHub compare that explains one or more entries (contract §6.6)."""

    owner: str
    repo: str
    old_rev: str
    new_rev: str
    paths: tuple[InputPath, ...]
    kind: UpdateKind
    old_branch: str | None = None  # original.ref, or a tarball's channel / FlakeHub version
    new_branch: str | None = None

    @property
    def slug(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def basehead(self) -> str:
        return f"{self.old_rev}...{self.new_rev}"

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.repo}/compare/{self.old_rev}...{self.new_rev}"

    @property
    def path_names(self) -> tuple[str, ...]:
        return tuple("/".join(p) for p in self.paths)

    @property
    def is_nixpkgs(self) -> bool:
        return (self.owner.lower(), self.repo.lower()) == ("nixos", "nixpkgs")


@dataclass(frozen=True)
class ChangeNote:
    """A change with its meaning: kind, a short label, effective refs, a compare."""

    change: LockChange
    kind: UpdateKind
    label: str
    old_effective: LockedRef | None = None
    new_effective: LockedRef | None = None
    compare: CompareTarget | None = None


# --- parsing ------------------------------------------------------------------


MAX_LOCK_BYTES = 32 * 1024 * 1024
"""The largest flake.lock nfu-tui reads (real ones are kilobytes; this bounds memory)."""


def parse_lock(data: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> LockFile:
    """Parse a flake.lock (versions 5–7, at most :data:`MAX_LOCK_BYTES`). Raises
    :class:`LockFileError` with one sentence."""
    if isinstance(data, (bytes, bytearray, memoryview, str)) and len(data) > MAX_LOCK_BYTES:
        raise LockFileError(f"larger than {MAX_LOCK_BYTES // (1 << 20)} MiB: not a flake.lock")
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise LockFileError(f"not valid UTF-8 (byte {exc.start})") from None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise LockFileError(
                f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
            ) from None
        except RecursionError:
            raise LockFileError("not valid JSON (nested too deeply)") from None
    if not isinstance(data, Mapping):
        raise LockFileError(f"not a flake.lock: the top level is a JSON {_json_type(data)}, not an object")
    if "version" not in data:
        raise LockFileError("not a flake.lock: there is no 'version' field")
    version = data["version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise LockFileError(f"not a flake.lock: 'version' is a {_json_type(version)}, not a number")
    if version not in SUPPORTED_VERSIONS:
        raise LockFileError(f"unsupported lock file version {version} (nix reads versions 5 to 7)")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, Mapping):
        raise LockFileError("not a flake.lock: there is no 'nodes' object")
    root = data.get("root")
    if not isinstance(root, str):
        raise LockFileError("not a flake.lock: there is no 'root' node name")
    if root not in raw_nodes:
        raise LockFileError(f"the root node '{root}' is missing from 'nodes'")

    nodes: dict[str, LockNode] = {}
    pending = [root]
    while pending:
        key = pending.pop()
        if key in nodes:
            continue
        node = _parse_node(key, raw_nodes[key], is_root=key == root)
        nodes[key] = node
        for name, edge in node.inputs.items():
            if isinstance(edge, str):
                if edge not in raw_nodes:
                    raise LockFileError(f"input '{name}' of node '{key}' refers to a missing node '{edge}'")
                if edge == root:
                    raise LockFileError(f"input '{name}' of node '{key}' refers back to the root node")
                pending.append(edge)
    lock = LockFile(version=version, root=root, nodes=nodes)
    for edge in lock.all_inputs().values():
        if isinstance(edge, tuple):
            lock.resolve(edge)  # raises on a follows cycle
    return lock


def _parse_node(key: str, raw: Any, *, is_root: bool) -> LockNode:
    if not isinstance(raw, Mapping):
        raise LockFileError(f"node '{key}' is a JSON {_json_type(raw)}, not an object")
    raw_inputs = raw.get("inputs", {})
    if not isinstance(raw_inputs, Mapping):
        raise LockFileError(f"the 'inputs' of node '{key}' are not an object")
    inputs: dict[str, str | InputPath] = {}
    for name, edge in raw_inputs.items():
        if isinstance(edge, str):
            inputs[name] = edge
        elif isinstance(edge, list) and all(isinstance(e, str) for e in edge):
            inputs[name] = tuple(edge)
        else:
            raise LockFileError(f"input '{name}' of node '{key}' is neither a node name nor a follows path")
    if is_root:
        return LockNode(key=key, inputs=inputs)
    locked = raw.get("locked")
    if not isinstance(locked, Mapping) or not isinstance(locked.get("type"), str):
        raise LockFileError(f"node '{key}' has no 'locked' attributes with a 'type'")
    merged = dict(locked)
    info = raw.get("info")  # version 5 kept lastModified/narHash here
    if isinstance(info, Mapping):
        merged.update(info)
    original = raw.get("original")
    parent = raw.get("parent")
    return LockNode(
        key=key,
        inputs=inputs,
        locked=merged,
        original=dict(original) if isinstance(original, Mapping) else None,
        flake=raw.get("flake", True) is not False,
        parent=tuple(parent) if isinstance(parent, list) and all(isinstance(p, str) for p in parent) else None,
        build_time=raw.get("buildTime") is True,
    )


def _resolve(lock: LockFile, path: InputPath, visited: list[InputPath]) -> str | None:
    if path in visited:
        cycle = " -> ".join("/".join(p) or "(root)" for p in visited[visited.index(path) :] + [path])
        raise LockFileError(f"the follows paths form a cycle: {cycle}")
    visited.append(path)
    pos = lock.root
    for elem in path:
        edge = lock.nodes[pos].inputs.get(elem)
        if edge is None:
            return None
        if isinstance(edge, str):
            pos = edge
        else:
            target = _resolve(lock, edge, visited)
            if target is None:
                return None
            pos = target
    return pos


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if value is None:
        return "null"
    return "object" if isinstance(value, Mapping) else type(value).__name__


# --- diff ---------------------------------------------------------------------


LockSource: TypeAlias = "LockFile | bytes | str | Mapping[str, Any]"


def diff(old: LockSource, new: LockSource) -> list[LockChange]:
    """Nix's lock diff by input path, in nix's order (contract §6.4).

    Like nix, which only prints a diff when the lock file changed (``LockFile``
    ``operator==`` compares ``toJSON``), two locks with the same content (whatever
    their node keys or version) give ``[]``. Otherwise a relative ``path:`` input of
    the new lock is always Updated: a full update re-locks it from ``flake.nix``
    without the ``__final`` mark every entry read from a lock file carries, so nix's
    ``equals`` never matches it (``computeLocks`` in ``flake.cc``). A selective
    ``nix flake update <input>`` keeps such entries instead; that cannot be told
    from the two lock files.
    """
    old_lock = old if isinstance(old, LockFile) else parse_lock(old)
    new_lock = new if isinstance(new, LockFile) else parse_lock(new)
    if _structure(old_lock) == _structure(new_lock):
        return []
    o, n = old_lock.all_inputs(), new_lock.all_inputs()
    changes: list[LockChange] = []
    for path in sorted(o.keys() | n.keys()):
        if path not in o:
            changes.append(LockChange(path, ChangeKind.ADDED, None, _edge(new_lock, n[path])))
        elif path not in n:
            changes.append(LockChange(path, ChangeKind.REMOVED, _edge(old_lock, o[path]), None))
        else:
            a, b = _edge(old_lock, o[path]), _edge(new_lock, n[path])
            if not _equal(a, b):
                changes.append(LockChange(path, ChangeKind.UPDATED, a, b))
    return changes


def _structure(lock: LockFile) -> tuple[Any, ...]:
    """What nix's ``LockFile::operator==`` compares (its ``toJSON``), without node keys."""
    ids: dict[str, int] = {}
    out: list[Any] = []

    def visit(key: str) -> int:
        if key in ids:
            return ids[key]
        ids[key] = len(ids)
        node = lock.nodes[key]
        slot = len(out)
        out.append(None)
        inputs = tuple(
            (name, ("follows", edge) if isinstance(edge, tuple) else ("node", visit(edge)))
            for name, edge in sorted(node.inputs.items())
        )
        out[slot] = (inputs, _typed(node.locked), _typed(node.original), node.flake, node.parent, node.build_time)
        return ids[key]

    visit(lock.root)
    return tuple(out)


def _edge(lock: LockFile, raw: str | InputPath) -> LockedRef | Follows:
    return lock.locked_ref(raw) if isinstance(raw, str) else Follows(raw)


def _equal(a: LockedRef | Follows, b: LockedRef | Follows) -> bool:
    if isinstance(a, Follows) and isinstance(b, Follows):
        return a.path == b.path
    if isinstance(a, LockedRef) and isinstance(b, LockedRef):
        # The old edge was read from a file (final); a re-locked relative input is not.
        return not b.relative and _typed(a.locked) == _typed(b.locked)
    return False


def _typed(value: Any) -> Any:
    """A comparison key that keeps JSON types apart (``true`` is not ``1``).

    Numbers compare as nix's ``jsonToAttrs`` reads them: as unsigned integers.
    """
    if isinstance(value, Mapping):
        return ("o", tuple(sorted((k, _typed(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("a", tuple(_typed(v) for v in value))
    number = _json_int(value)
    if number is not None:
        return ("int", number)
    return (type(value).__name__, value)


def _json_int(value: Any) -> int | None:
    """A JSON number as nix's attributes hold it (``uint64_t``); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


# --- rendering ----------------------------------------------------------------


def render_edge(edge: LockedRef | Follows, style: Style | str = Style.DETERMINATE) -> str:
    """An edge as nix prints it: ``'<url>' (YYYY-MM-DD)`` or ``follows 'a/b'``."""
    return edge.describe() if isinstance(edge, Follows) else edge.describe(style)


def render_summary(changes: Iterable[LockChange], style: Style | str = Style.DETERMINATE) -> str:
    """The entries nix prints after ``Flake lock file updates:`` and a blank line."""
    style = Style(style)
    out: list[str] = []
    for c in changes:
        if c.kind is ChangeKind.ADDED:
            assert c.new is not None
            out.append(f"• Added input '{c.name}':\n    {render_edge(c.new, style)}\n")
        elif c.kind is ChangeKind.REMOVED:
            out.append(f"• Removed input '{c.name}'\n")
        else:
            assert c.old is not None and c.new is not None
            out.append(
                f"• Updated input '{c.name}':\n    {render_edge(c.old, style)}\n  → {render_edge(c.new, style)}\n"
            )
    return "".join(out)


def render_message(changes: Iterable[LockChange], style: Style | str = Style.DETERMINATE) -> str:
    """The section as it appears in the commit body: header, blank line, entries."""
    return f"{MESSAGE_HEADER}\n\n{render_summary(changes, style)}"


_HEX_RE = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)", re.S)
_QUERY_SAFE = ":@/?"
_PATH_SAFE = ":@"
_GIT_FLAGS = ("shallow", "lfs", "submodules", "exportIgnore", "verifyCommit")


_SCP_RE = re.compile(r"([^/]*)@(.*):(.*)")


def _fix_git_url(url: str) -> str:
    """nix ``fixGitURL``, which git inputs' ``url`` goes through when read.

    scp-like ``user@host:path`` becomes ``ssh://user@host/path``, a bare path a
    ``file:`` URL, and a ``git+`` prefix is dropped (``toURL`` adds it back).
    """
    if not url.startswith("/") and (m := _SCP_RE.fullmatch(url)):
        url = f"ssh://{m[1]}@{m[2]}/{m[3]}"
    if not url.startswith(("file:", "git+file:")) and "://" not in url:
        return ("file://" if url.startswith("/") else "file:") + url
    scheme, colon, rest = url.partition(":")
    return scheme[4:] + colon + rest if scheme.startswith("git+") else url


def _format_date(ts: int | None) -> str | None:
    if ts is None:
        return None
    try:
        return time.strftime("%Y-%m-%d", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return None


def _pct_decode(s: str) -> bytes:
    return unquote_to_bytes(s)


def _pct_encode(s: str | bytes, safe: str) -> str:
    """nix ``percentEncode``: keep unreserved characters and ``safe``, upper-case hex."""
    if isinstance(s, str):
        return quote(s, safe=safe, encoding="utf-8", errors="surrogateescape")
    return quote(s, safe=safe)


@dataclass
class _URL:
    """nix ``ParsedURL``: decoded path segments and a sorted query map."""

    scheme: str
    authority: str | None
    path: list[bytes]
    query: dict[str, str]
    fragment: bytes = b""

    def render(self) -> str:
        out = [self.scheme, ":"]
        if self.authority is not None:
            out += ["//", _render_authority(self.authority)]
        out.append("/".join(_pct_encode(seg, _PATH_SAFE) for seg in self.path))
        if self.query:
            out.append("?")
            out.append(
                "&".join(
                    f"{_pct_encode(k, _QUERY_SAFE)}={_pct_encode(v, _QUERY_SAFE)}"
                    for k, v in sorted(self.query.items())
                )
            )
        if self.fragment:
            out += ["#", _pct_encode(self.fragment, "")]
        return "".join(out)


def _parse_url(text: str) -> _URL | None:
    m = _SCHEME_RE.fullmatch(text)
    if not m:
        return None
    scheme, rest = m.groups()
    rest, _, fragment = rest.partition("#")
    rest, has_query, raw_query = rest.partition("?")
    query: dict[str, str] = {}
    if has_query:
        for part in raw_query.split("&"):
            if "=" not in part:
                continue  # nix warns and ignores a parameter without '='
            k, _, v = part.partition("=")
            query.setdefault(
                _pct_decode(k).decode("utf-8", "surrogateescape"), _pct_decode(v).decode("utf-8", "surrogateescape")
            )
    authority: str | None = None
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
    if not rest and scheme.rpartition("+")[2] == "file":
        rest = "/"
    return _URL(scheme, authority, [_pct_decode(seg) for seg in rest.split("/")], query, _pct_decode(fragment))


def _render_authority(authority: str) -> str:
    userinfo, at, hostport = authority.rpartition("@")
    out = ""
    if at:
        user, colon, password = userinfo.partition(":")
        out = _pct_encode(_pct_decode(user), "")
        if colon:
            out += ":" + _pct_encode(_pct_decode(password), "")
        out += "@"
    if hostport.startswith("["):
        host, bracket, port = hostport.partition("]")
        out += host + bracket
        port = port[1:] if port.startswith(":") else ""
    else:
        host, colon, port = hostport.rpartition(":")
        if not colon or not port.isdigit():
            host, port = hostport, ""
        out += _pct_encode(_pct_decode(host), "")
    if port.isdigit() and int(port):
        out += f":{int(port)}"
    return out


def _sri(nar_hash: str) -> str:
    """nix ``Hash::to_string(SRI)`` of a ``narHash`` (fixes missing base-64 padding)."""
    if nar_hash == "":
        return "sha256-" + base64.b64encode(bytes(32)).decode()
    algo, dash, b64 = nar_hash.partition("-")
    if dash and algo == "sha256":
        try:
            raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        except (binascii.Error, ValueError):
            return nar_hash
        if len(raw) == 32:
            return "sha256-" + base64.b64encode(raw).decode()
    return nar_hash


def _attr_str(value: Any) -> str | None:
    """nix ``attrsToQuery`` for one value (ints in decimal, booleans as 1/0)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    number = _json_int(value)
    return None if number is None else str(number)


def _git_public_keys(locked: Mapping[str, Any]) -> dict[str, str]:
    keys: list[dict[str, str]] = []
    raw = locked.get("publicKeys")
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = []
        if isinstance(parsed, list):
            keys += [
                {"key": str(k.get("key", "")), "type": str(k.get("type", "ssh-ed25519"))}
                for k in parsed
                if isinstance(k, dict)
            ]
    if isinstance(locked.get("publicKey"), str):
        keytype = locked.get("keytype")
        keys.append({"key": locked["publicKey"], "type": keytype if isinstance(keytype, str) else "ssh-ed25519"})
    if len(keys) == 1:
        return {"keytype": keys[0]["type"], "publicKey": keys[0]["key"]}
    if len(keys) > 1:
        return {"publicKeys": json.dumps(keys, separators=(",", ":"), sort_keys=True, ensure_ascii=False)}
    return {}


def _rev_text(locked: Mapping[str, Any]) -> str | None:
    rev = locked.get("rev")
    if not isinstance(rev, str) or not rev:
        return None
    return rev.lower() if _HEX_RE.fullmatch(rev) else rev


def _flakeref_url(locked: Mapping[str, Any], abbreviate: bool) -> str:
    """nix ``FlakeRef::to_string(abbreviate)`` of a locked attribute set."""
    kind = str(locked.get("type", ""))
    rev = _rev_text(locked)
    ref = locked.get("ref") if isinstance(locked.get("ref"), str) else None
    url: _URL | None
    if kind in ("github", "gitlab", "sourcehut"):
        segments = [str(locked.get("owner", "")), str(locked.get("repo", ""))]
        if ref:
            segments.append(ref)
        if rev:
            segments.append(rev[:7] if abbreviate else rev)
        query: dict[str, str] = {}
        if isinstance(locked.get("narHash"), str):
            query["narHash"] = _sri(locked["narHash"])
        if isinstance(locked.get("host"), str):
            query["host"] = locked["host"]
        url = _URL(kind, None, [s.encode() for s in segments], query)
    elif kind in ("git", "mercurial"):
        raw_url = str(locked.get("url", ""))
        url = _parse_url(_fix_git_url(raw_url) if kind == "git" else raw_url)
        if url is None:
            return raw_url
        prefix = "git" if kind == "git" else "hg"
        if not (kind == "git" and url.scheme == "git"):
            url.scheme = f"{prefix}+{url.scheme}"
        if rev:
            url.query["rev"] = rev
        if ref and not (kind == "git" and abbreviate and ref in ("master", "main")):
            url.query["ref"] = ref
        if kind == "git":
            for flag in _GIT_FLAGS:
                if locked.get(flag) is True:
                    url.query[flag] = "1"
            url.query.update(_git_public_keys(locked))
    elif kind in ("tarball", "file"):
        url = _parse_url(str(locked.get("url", "")))
        if url is None:
            return str(locked.get("url", ""))
        if isinstance(locked.get("narHash"), str):
            url.query["narHash"] = _sri(locked["narHash"])
    elif kind == "path":
        query = {}
        for k, v in locked.items():
            text = _attr_str(v)
            if k not in ("path", "type", "__final", "dir") and text is not None:
                query[k] = text
        url = _URL("path", None, [s.encode() for s in str(locked.get("path", "")).split("/")], query)
    elif kind == "indirect":
        segments = [str(locked.get("id", ""))] + [s for s in (ref, rev) if s]
        url = _URL("flake", None, [s.encode() for s in segments], {})
    else:  # not a nix fetcher: show its attributes as a query
        query = {}
        for k, v in locked.items():
            text = _attr_str(v)
            if k not in ("type", "dir") and text is not None:
                query[k] = text
        url = _URL(kind or "unknown", None, [b""], query)
    if abbreviate:
        url.query.pop("narHash", None)
    subdir = locked.get("dir")
    if isinstance(subdir, str) and subdir:
        url.query.setdefault("dir", subdir)
    return url.render()


# --- meaning: compares, headline, JSON ------------------------------------------

_FLAKEHUB_RE = re.compile(r"https://api\.flakehub\.com/f/pinned/(?P<org>[^/]+)/(?P<project>[^/]+)/", re.I)
_CHANNEL_RE = re.compile(r"https?://(?:releases|channels)\.nixos\.org/", re.I)
_GITHUB_ARCHIVE_RE = re.compile(
    r"https://(?:codeload\.)?github\.com/(?P<owner>[^/]+)/(?P<repo>[^/]+)/(?:archive|tar\.gz|legacy\.tar\.gz)/"
    r"(?P<rev>[0-9a-fA-F]{40})(?:\.tar\.gz|\.zip)?(?:[?#].*)?$",
    re.I,
)
_GITHUB_GIT_RE = re.compile(
    r"(?:https?://|ssh://git@|git://)github\.com[:/](?P<owner>[^/]+)/(?P<repo>[^/?#]+?)(?:\.git)?/?(?:[?#].*)?$", re.I
)


def github_coordinates(ref: LockedRef) -> tuple[str, str, str] | None:
    """``(owner, repo, rev)`` on github.com for a locked reference, if it has one.

    github inputs (no ``host`` or ``github.com``); git inputs with a github.com URL;
    tarballs of GitHub archives; nixpkgs channel and FlakeHub ``NixOS/nixpkgs``
    tarballs with a ``rev`` (contract §6.6).
    """
    rev = ref.rev
    locked = ref.locked
    kind = ref.type
    if kind == "github":
        host = locked.get("host")
        if rev and (host is None or str(host).lower() == "github.com"):
            return str(locked.get("owner", "")), str(locked.get("repo", "")), rev
        return None
    url = str(locked.get("url", ""))
    if kind == "git" and rev:
        m = _GITHUB_GIT_RE.match(_fix_git_url(url))
        return (m["owner"], m["repo"], rev) if m else None
    if kind in ("tarball", "file"):
        if m := _GITHUB_ARCHIVE_RE.match(url):
            return m["owner"], m["repo"], m["rev"].lower()
        if not rev:
            return None
        if _CHANNEL_RE.match(url) and re.search(r"/nix(?:os|pkgs)[-/]", url):
            return "NixOS", "nixpkgs", rev
        m = _FLAKEHUB_RE.match(url)
        if m and (m["org"].lower(), m["project"].lower()) == ("nixos", "nixpkgs"):
            return m["org"], m["project"], rev
    return None


def _source_id(ref: LockedRef) -> tuple[str, ...]:
    """What stays the same when an input merely moves to a new revision."""
    locked = ref.locked
    kind = ref.type
    if kind in ("github", "gitlab", "sourcehut"):
        return (
            kind,
            str(locked.get("host", "")).lower(),
            str(locked.get("owner", "")).lower(),
            str(locked.get("repo", "")).lower(),
            str(locked.get("dir", "")),
        )
    if kind in ("tarball", "file"):
        coords = github_coordinates(ref)
        if coords:
            return ("github-archive", coords[0].lower(), coords[1].lower())
        url = (ref.original or {}).get("url") or locked.get("url")
        return (kind, str(url))
    if kind in ("git", "mercurial"):
        url = str(locked.get("url", "")).partition("?")[0]
        return (kind, url, str(locked.get("dir", "")))
    if kind == "path":
        return (kind, str(locked.get("path", "")))
    if kind == "indirect":
        return (kind, str(locked.get("id", "")))
    return (kind,)


_CHANNEL_NAME_RE = re.compile(r"https?://(?:channels\.nixos\.org|nixos\.org/channels)/(?P<name>[^/?#]+)", re.I)
_FLAKEHUB_VERSION_RE = re.compile(
    r"https://flakehub\.com/f/[^/]+/[^/]+/(?P<version>[^/?#]+?)(?:\.tar\.gz)?(?:[?#].*)?$", re.I
)
_ARCHIVE_REF_RE = re.compile(r"https://github\.com/[^/]+/[^/]+/archive/(?P<ref>.+?)\.(?:tar\.gz|zip)(?:[?#].*)?$", re.I)


def _branch(ref: LockedRef) -> str | None:
    """What the input tracks: ``original.ref``; for a tarball, its channel or version.

    ``https://channels.nixos.org/nixos-25.11/nixexprs.tar.xz`` tracks ``nixos-25.11``,
    ``https://flakehub.com/f/NixOS/nixpkgs/0.2511`` tracks ``0.2511``, a GitHub
    archive of a branch tracks that branch; any other tarball its original URL.
    """
    if ref.original_ref is not None or ref.type not in ("tarball", "file"):
        return ref.original_ref
    url = (ref.original or {}).get("url")
    if not isinstance(url, str):
        return None
    if m := _CHANNEL_NAME_RE.match(url):
        return m["name"]
    if m := _FLAKEHUB_VERSION_RE.match(url):
        return m["version"]
    if m := _ARCHIVE_REF_RE.match(url):
        return m["ref"]
    return url


def _short(ref: LockedRef) -> str:
    return ref.short_rev or ref.date or ref.url(Style.DETERMINATE)


def _compare(
    path: InputPath, kind: UpdateKind, old: LockedRef | None, new: LockedRef | None
) -> CompareTarget | None:
    if old is None or new is None:
        return None
    a, b = github_coordinates(old), github_coordinates(new)
    if not a or not b or (a[0].lower(), a[1].lower()) != (b[0].lower(), b[1].lower()) or a[2] == b[2]:
        return None
    return CompareTarget(
        owner=a[0],
        repo=a[1],
        old_rev=a[2],
        new_rev=b[2],
        paths=(path,),
        kind=kind,
        old_branch=_branch(old),
        new_branch=_branch(new),
    )


def explain_change(
    change: LockChange, old_lock: LockFile | None = None, new_lock: LockFile | None = None
) -> ChangeNote:
    """Classify one change (§6.6); follows edges are resolved in the given locks."""
    old, new = change.old, change.new
    old_eff = old if isinstance(old, LockedRef) else None
    new_eff = new if isinstance(new, LockedRef) else None
    if isinstance(old, Follows) and old_lock is not None:
        old_eff = old_lock.resolve_ref(old.path)
    if isinstance(new, Follows) and new_lock is not None:
        new_eff = new_lock.resolve_ref(new.path)

    if change.kind is ChangeKind.ADDED:
        what = new.describe() if isinstance(new, Follows) else _short(new) if new else ""
        return ChangeNote(change, UpdateKind.ADDED, f"added ({what})", None, new_eff)
    if change.kind is ChangeKind.REMOVED:
        return ChangeNote(change, UpdateKind.REMOVED, "removed", old_eff, None)

    if isinstance(old, LockedRef) and isinstance(new, Follows):
        kind, label = UpdateKind.NOW_FOLLOWS, f"now follows '{new.target}'"
    elif isinstance(old, Follows) and isinstance(new, LockedRef):
        kind, label = UpdateKind.NO_LONGER_FOLLOWS, f"no longer follows '{old.target}'"
    elif isinstance(old, Follows) and isinstance(new, Follows):
        kind, label = UpdateKind.FOLLOWS_CHANGED, f"follows '{new.target}' instead of '{old.target}'"
    else:
        assert isinstance(old, LockedRef) and isinstance(new, LockedRef)
        if _typed(old.locked) == _typed(new.locked):
            kind, label = UpdateKind.RELOCKED, "re-locked (unchanged)"
        elif _source_id(old) != _source_id(new):
            kind, label = UpdateKind.SOURCE_CHANGED, f"source changed to {new.url(Style.DETERMINATE)}"
        elif _branch(old) != _branch(new):
            kind = UpdateKind.BRANCH_SWITCH
            label = f"branch switch {_branch(old) or '(default)'} → {_branch(new) or '(default)'}"
        else:
            kind, label = UpdateKind.UPDATE, f"{_short(old)} → {_short(new)}"
    compare = None if kind is UpdateKind.SOURCE_CHANGED else _compare(change.path, kind, old_eff, new_eff)
    return ChangeNote(change, kind, label, old_eff, new_eff, compare)


def explain_changes(
    changes: Iterable[LockChange], old_lock: LockFile | None = None, new_lock: LockFile | None = None
) -> list[ChangeNote]:
    return [explain_change(c, old_lock, new_lock) for c in changes]


def compare_targets(
    changes: Iterable[LockChange], old_lock: LockFile | None = None, new_lock: LockFile | None = None
) -> list[CompareTarget]:
    """GitHub compares that explain the changes, de-duplicated by (owner, repo, old, new).

    Owner/repo match case-insensitively; the first spelling and kind win, paths
    accumulate in diff order. Source changes, additions and removals have none.
    """
    merged: dict[tuple[str, str, str, str], CompareTarget] = {}
    for note in explain_changes(changes, old_lock, new_lock):
        t = note.compare
        if t is None:
            continue
        key = (t.owner.lower(), t.repo.lower(), t.old_rev, t.new_rev)
        prev = merged.get(key)
        merged[key] = t if prev is None else replace(prev, paths=prev.paths + t.paths)
    return list(merged.values())


def _nixpkgs_path(lock: LockFile) -> InputPath | None:
    """The root input ``nixpkgs``, else the shortest path to a NixOS/nixpkgs source."""
    if "nixpkgs" in lock.root_node.inputs:
        return ("nixpkgs",)
    candidates = []
    for path, raw in lock.all_inputs().items():
        if isinstance(raw, str):
            coords = github_coordinates(lock.locked_ref(raw))
            if coords and (coords[0].lower(), coords[1].lower()) == ("nixos", "nixpkgs"):
                candidates.append(path)
    return min(candidates, key=lambda p: (len(p), p)) if candidates else None


def _days(old: LockedRef, new: LockedRef) -> str | None:
    if old.last_modified is None or new.last_modified is None or not old.date or not new.date:
        return None
    delta = (date.fromisoformat(new.date) - date.fromisoformat(old.date)).days
    if delta == 0:
        return "same day"
    unit = "day" if abs(delta) == 1 else "days"
    return f"{delta:+d} {unit}"


def _move_text(name: str, old: LockedRef, new: LockedRef) -> str:
    text = f"{name} {_short(old)} → {_short(new)}"
    days = _days(old, new)
    return f"{text} ({days})" if days else text


def _others(n: int) -> str:
    return "" if n <= 0 else f" and {n} other input" if n == 1 else f" and {n} other inputs"


def headline(changes: Sequence[LockChange], old_lock: LockFile, new_lock: LockFile) -> str | None:
    """One line for a PR list, e.g. ``nixpkgs abc1234 → def5678 (+7 days) and 3 other inputs``.

    nixpkgs is the root input ``nixpkgs``, else the shortest input path to a
    NixOS/nixpkgs source (github, git, channel or FlakeHub tarball, as in
    :func:`github_coordinates`); follows are resolved so a root ``nixpkgs`` that
    follows another input still counts. None when nothing changed.
    """
    if not changes:
        return None
    path = _nixpkgs_path(new_lock) or _nixpkgs_path(old_lock)
    if path is not None:
        old_ref, new_ref = old_lock.resolve_ref(path), new_lock.resolve_ref(path)
        if old_ref and new_ref and _typed(old_ref.locked) != _typed(new_ref.locked):
            covered = {path}
            for lock in (old_lock, new_lock):
                edge = lock.all_inputs().get(path)
                if isinstance(edge, tuple):
                    covered.add(edge)
            others = sum(1 for c in changes if c.path not in covered)
            return _move_text("/".join(path), old_ref, new_ref) + _others(others)
    first = changes[0]
    if first.kind is ChangeKind.ADDED:
        text = f"{first.name} added"
    elif first.kind is ChangeKind.REMOVED:
        text = f"{first.name} removed"
    elif isinstance(first.old, LockedRef) and isinstance(first.new, LockedRef):
        if _typed(first.old.locked) == _typed(first.new.locked):
            text = f"{first.name} re-locked"
        else:
            text = _move_text(first.name, first.old, first.new)
    else:
        text = f"{first.name} {explain_change(first).label}"
    return text + _others(len(changes) - 1)


def _edge_json(edge: LockedRef | Follows | None, lock: LockFile | None, style: Style) -> dict[str, Any] | None:
    if edge is None:
        return None
    if isinstance(edge, Follows):
        target = lock.resolve_ref(edge.path) if lock is not None else None
        return {
            "follows": edge.target,
            "follows_path": list(edge.path),
            "resolved": _edge_json(target, None, style),
        }
    return {
        "node": edge.node_key,
        "type": edge.type,
        "url": edge.url(style),
        "rev": edge.rev,
        "short_rev": edge.short_rev,
        "last_modified": edge.last_modified,
        "date": edge.date,
        "original_ref": edge.original_ref,
        "text": edge.describe(style),
        "locked": dict(edge.locked),
        "original": dict(edge.original) if edge.original is not None else None,
    }


def _compare_json(t: CompareTarget | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {
        "owner": t.owner,
        "repo": t.repo,
        "old_rev": t.old_rev,
        "new_rev": t.new_rev,
        "basehead": t.basehead,
        "url": t.url,
        "kind": t.kind.value,
    }


def to_json(
    changes: Iterable[LockChange],
    old_lock: LockFile | None = None,
    new_lock: LockFile | None = None,
    *,
    style: Style | str = Style.DETERMINATE,
) -> list[dict[str, Any]]:
    """JSON-ready description of each change: path, kinds, both edges, the compare."""
    style = Style(style)
    out = []
    for note in explain_changes(changes, old_lock, new_lock):
        c = note.change
        out.append(
            {
                "path": c.name,
                "path_list": list(c.path),
                "kind": c.kind.value,
                "update_kind": note.kind.value,
                "label": note.label,
                "old": _edge_json(c.old, old_lock, style),
                "new": _edge_json(c.new, new_lock, style),
                "compare": _compare_json(note.compare),
            }
        )
    return out
