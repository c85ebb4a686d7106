"""An in-memory git object graph for the fake GitHub: commits, trees, refs, merges, diffs.

Pure data and algorithms (only :meth:`GitRepo.export` writes files). Trees are ``path → bytes`` mappings; blob and tree
SHAs are computed exactly as git does, so ``sha`` fields of the contents API are real
blob SHAs. Commits are real git commit objects with fixed dates (not the wall clock), so
a scenario replays to the same SHAs for the same seed, and :meth:`GitRepo.export` writes
them into a bare repository that hosts can fetch the very commits GitHub reports from.

Merging uses a line-based three-way merge (the classic merge3 "sync region" algorithm),
so two pull requests that touch different lines of ``flake.lock`` merge cleanly and two
that move the same input conflict, as with git.
"""

from __future__ import annotations

import difflib
import hashlib
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Person", "Commit", "FileDiff", "GitRepo", "blob_sha", "tree_sha", "merge3", "diff_trees"]

Tree = Mapping[str, bytes]
FIXED_EPOCH = 1_700_000_000


def blob_sha(data: bytes) -> str:
    """The git blob SHA-1 of ``data`` (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree_sha(tree: Tree) -> str:
    """The git tree SHA-1 of a ``path → bytes`` mapping (nested directories included)."""
    return tree_objects(tree, {})


def tree_objects(tree: Tree, out: dict[str, bytes]) -> str:
    """The tree's SHA-1; every blob and tree object (``type size\\0body``) is added to ``out`` by SHA."""

    def build(entries: dict[str, object]) -> bytes:
        rows: list[tuple[str, bytes]] = []
        for name, value in entries.items():
            if isinstance(value, dict):
                rows.append((name + "/", b"40000 " + name.encode() + b"\0" + build(value)))
            else:
                assert isinstance(value, bytes)
                sha = blob_sha(value)
                out[sha] = b"blob %d\0" % len(value) + value
                rows.append((name, b"100644 " + name.encode() + b"\0" + bytes.fromhex(sha)))
        body = b"".join(row for _, row in sorted(rows))
        obj = b"tree %d\0" % len(body) + body
        digest = hashlib.sha1(obj).digest()
        out[digest.hex()] = obj
        return digest

    root: dict[str, object] = {}
    for path, data in tree.items():
        node = root
        *dirs, leaf = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})  # type: ignore[assignment]
        node[leaf] = data
    return build(root).hex()


@dataclass(frozen=True, slots=True)
class Person:
    """Author or committer of a commit; ``login`` is the GitHub account, if any."""

    name: str
    email: str
    date: float
    login: str | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    message: str
    author: Person
    committer: Person
    tree: Mapping[str, bytes]
    tree_sha: str
    generation: int

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]


@dataclass(frozen=True, slots=True)
class FileDiff:
    """One changed file between two trees, shaped like GitHub's *diff-entry*."""

    filename: str
    status: str  # added | removed | modified
    additions: int
    deletions: int
    sha: str  # blob SHA of the new content (old content for removals)
    patch: str | None  # unified diff hunks without ---/+++ headers; None for binary files

    @property
    def changes(self) -> int:
        return self.additions + self.deletions


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _patch(old: bytes, new: bytes) -> tuple[str | None, int, int]:
    a, b = _text(old), _text(new)
    if a is None or b is None:
        return None, 0, 0
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=3))[2:]
    adds = sum(1 for line in lines if line.startswith("+"))
    dels = sum(1 for line in lines if line.startswith("-"))
    return "\n".join(lines), adds, dels


def diff_trees(old: Tree, new: Tree) -> list[FileDiff]:
    """Changed files from ``old`` to ``new``, sorted by path."""
    out: list[FileDiff] = []
    for path in sorted(set(old) | set(new)):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        if before is None:
            patch, adds, dels = _patch(b"", after or b"")
            out.append(FileDiff(path, "added", adds, dels, blob_sha(after or b""), patch))
        elif after is None:
            patch, adds, dels = _patch(before, b"")
            out.append(FileDiff(path, "removed", adds, dels, blob_sha(before), patch))
        else:
            patch, adds, dels = _patch(before, after)
            out.append(FileDiff(path, "modified", adds, dels, blob_sha(after), patch))
    return out


def merge3(base: bytes, ours: bytes, theirs: bytes) -> bytes | None:
    """Three-way line merge; None when both sides changed the same region differently."""
    if ours == theirs or theirs == base:
        return ours
    if ours == base:
        return theirs
    texts = [_text(x) for x in (base, ours, theirs)]
    if any(t is None for t in texts):
        return None
    b, a, t = (s.splitlines(keepends=True) for s in texts)  # type: ignore[union-attr]
    ma = difflib.SequenceMatcher(None, b, a, autojunk=False).get_matching_blocks()
    mt = difflib.SequenceMatcher(None, b, t, autojunk=False).get_matching_blocks()
    # Sync regions: stretches of base matched unchanged in both sides.
    sync: list[tuple[int, int, int, int]] = []
    i = j = 0
    while i < len(ma) and j < len(mt):
        abase, amatch, alen = ma[i]
        tbase, tmatch, tlen = mt[j]
        lo, hi = max(abase, tbase), min(abase + alen, tbase + tlen)
        if lo < hi:
            sync.append((lo, hi, amatch + lo - abase, tmatch + lo - tbase))
        if abase + alen < tbase + tlen:
            i += 1
        else:
            j += 1
    sync.append((len(b), len(b), len(a), len(t)))
    out: list[str] = []
    zb = za = zt = 0
    for lo, hi, alo, tlo in sync:
        base_part, ours_part, theirs_part = b[zb:lo], a[za:alo], t[zt:tlo]
        if ours_part == theirs_part or theirs_part == base_part:
            out += ours_part
        elif ours_part == base_part:
            out += theirs_part
        else:
            return None
        out += b[lo:hi]
        zb, za, zt = hi, alo + (hi - lo), tlo + (hi - lo)
    return "".join(out).encode("utf-8")


def merge_trees(base: Tree, ours: Tree, theirs: Tree) -> tuple[dict[str, bytes], list[str]]:
    """Three-way merge of whole trees: (merged tree, conflicting paths)."""
    merged: dict[str, bytes] = {}
    conflicts: list[str] = []
    for path in sorted(set(base) | set(ours) | set(theirs)):
        b, o, t = base.get(path), ours.get(path), theirs.get(path)
        if o == t:
            result = o
        elif t == b:
            result = o
        elif o == b:
            result = t
        elif o is None or t is None:
            conflicts.append(path)  # modify/delete conflict
            continue
        else:
            result = merge3(b or b"", o, t)
            if result is None:
                conflicts.append(path)
                continue
        if result is not None:
            merged[path] = result
    return merged, conflicts


@dataclass
class GitRepo:
    """Commits by SHA plus branch refs (``name → sha``)."""

    salt: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit(
        self,
        tree: Mapping[str, bytes],
        parents: Iterable[str],
        message: str,
        author: Person,
        committer: Person | None = None,
        *,
        reuse: bool = False,
    ) -> Commit:
        """Create (or, with ``reuse``, find the identical) commit; SHAs are content digests."""
        parents = tuple(parents)
        for p in parents:
            if p not in self.commits:
                raise KeyError(f"unknown parent {p}")
        tsha = tree_sha(tree)
        n = 1
        sha = hashlib.sha1(self._object(tsha, parents, message, author, committer or author, n)).hexdigest()
        while sha in self.commits and not reuse:
            n += 1
            sha = hashlib.sha1(self._object(tsha, parents, message, author, committer or author, n)).hexdigest()
        if sha in self.commits:
            return self.commits[sha]
        gen = 1 + max((self.commits[p].generation for p in parents), default=0)
        c = Commit(sha, parents, message, author, committer or author, dict(tree), tsha, gen)
        self.commits[sha] = c
        return c

    def _object(self, tsha: str, parents: tuple[str, ...], message: str, author: Person, committer: Person,
                n: int) -> bytes:
        """The real git commit object. Its dates are fixed (from the salt and ``n``), not the wall clock, so a
        scenario replays to the same SHAs and hosts can fetch the very commits GitHub reports (:meth:`export`)."""
        when = FIXED_EPOCH + int(hashlib.sha1(self.salt.encode()).hexdigest()[:5], 16) + n
        body = f"tree {tsha}\n" + "".join(f"parent {p}\n" for p in parents)
        body += f"author {author.name} <{author.email}> {when} +0000\n"
        body += f"committer {committer.name} <{committer.email}> {when} +0000\n\n{message}"
        if not message.endswith("\n"):
            body += "\n"
        data = body.encode()
        return b"commit %d\0" % len(data) + data

    def export(self, bare_dir: Path) -> None:
        """Write every commit (with its trees and blobs) and branch into the bare git repository ``bare_dir``
        as loose objects (created when missing): hosts in tests fetch from it, as from GitHub."""
        objects = bare_dir / "objects"
        if not (bare_dir / "HEAD").exists():
            for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
                (bare_dir / sub).mkdir(parents=True, exist_ok=True)
            (bare_dir / "HEAD").write_text("ref: refs/heads/main\n")
            (bare_dir / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
        out: dict[str, bytes] = {}
        for c in self.commits.values():
            path = objects / c.sha[:2] / c.sha[2:]
            if path.exists():
                continue
            tree_objects(c.tree, out)
            n = 1
            while hashlib.sha1(obj := self._object(c.tree_sha, c.parents, c.message, c.author, c.committer, n)
                               ).hexdigest() != c.sha:
                n += 1
            out[c.sha] = obj
        for sha, obj in out.items():
            path = objects / sha[:2] / sha[2:]
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(zlib.compress(obj))
        for name, sha in self.refs.items():
            ref = bare_dir / "refs" / "heads" / name
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(sha + "\n")

    def resolve(self, ref: str) -> str | None:
        """A commit SHA for a full/abbreviated (≥ 7) SHA, a branch, ``heads/x`` or ``refs/heads/x``."""
        for prefix in ("refs/heads/", "heads/"):
            if ref.startswith(prefix) and ref[len(prefix):] in self.refs:
                return self.refs[ref[len(prefix):]]
        if ref in self.refs:
            return self.refs[ref]
        low = ref.lower()
        if low in self.commits:
            return low
        if 7 <= len(low) < 40 and all(ch in "0123456789abcdef" for ch in low):
            hits = [s for s in self.commits if s.startswith(low)]
            if len(hits) == 1:
                return hits[0]
        return None

    def ancestors(self, sha: str) -> set[str]:
        """``sha`` and every commit reachable from it."""
        seen = {sha}
        todo = deque([sha])
        while todo:
            for p in self.commits[todo.popleft()].parents:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return ancestor in self.ancestors(descendant)

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor (the newest when several qualify)."""
        common = self.ancestors(a) & self.ancestors(b)
        if not common:
            return None
        return max(common, key=lambda s: (self.commits[s].generation, self.commits[s].committer.date, s))

    def log_range(self, base: str, head: str) -> list[Commit]:
        """Commits reachable from ``head`` but not from ``base``, oldest first."""
        exclude = self.ancestors(base)
        picked = [self.commits[s] for s in self.ancestors(head) if s not in exclude]
        return sorted(picked, key=lambda c: (c.generation, c.committer.date, c.sha))
