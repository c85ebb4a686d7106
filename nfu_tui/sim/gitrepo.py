"""An in-memory git object graph for the fake GitHub: commits, trees, refs, merges, diffs.

Pure data and algorithms, no I/O. Trees are ``path → bytes`` mappings; blob and tree
SHAs are computed exactly as git does, so ``sha`` fields of the contents API are real
blob SHAs. Commit SHAs are deterministic digests of the commit's content (tree, parents,
message, author identity) — not of wall-clock dates — so a scenario replays to the same
SHAs for the same seed.

Merging uses a line-based three-way merge (the classic merge3 "sync region" algorithm),
so two pull requests that touch different lines of ``flake.lock`` merge cleanly and two
that move the same input conflict, as with git.
"""

from __future__ import annotations

import difflib
import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Person", "Commit", "FileDiff", "GitRepo", "blob_sha", "tree_sha", "merge3", "diff_trees"]

Tree = Mapping[str, bytes]


def blob_sha(data: bytes) -> str:
    """The git blob SHA-1 of ``data`` (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree_sha(tree: Tree) -> str:
    """The git tree SHA-1 of a ``path → bytes`` mapping (nested directories included)."""

    def build(entries: dict[str, object]) -> bytes:
        rows: list[tuple[str, bytes]] = []
        for name, value in entries.items():
            if isinstance(value, dict):
                rows.append((name + "/", b"40000 " + name.encode() + b"\0" + build(value)))
            else:
                assert isinstance(value, bytes)
                rows.append((name, b"100644 " + name.encode() + b"\0" + bytes.fromhex(blob_sha(value))))
        body = b"".join(row for _, row in sorted(rows))
        return hashlib.sha1(b"tree %d\0" % len(body) + body).digest()

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
        seed = "\0".join((self.salt, tsha, *parents, message, author.name, author.email))
        sha = hashlib.sha1(seed.encode()).hexdigest()
        n = 1
        while sha in self.commits and not reuse:
            n += 1
            sha = hashlib.sha1(f"{seed}\0{n}".encode()).hexdigest()
        if sha in self.commits:
            return self.commits[sha]
        gen = 1 + max((self.commits[p].generation for p in parents), default=0)
        c = Commit(sha, parents, message, author, committer or author, dict(tree), tsha, gen)
        self.commits[sha] = c
        return c

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
