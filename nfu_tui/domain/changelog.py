"""A package-level changelog from nixpkgs commit messages (contract §7.1).

nixpkgs subjects follow ``<attr>: <old> -> <new>``, ``<attr>: init at <version>``,
``<attr>: remove``, ``nixos/<module>: <message>``. :func:`build_changelog` turns the
commits of a compare (oldest first, as GitHub returns them) into grouped entries,
most relevant first: security fixes, kernels, major-version bumps, other bumps,
new packages, removals, NixOS module changes. Pure and linear in the input; odd
input (None, non-strings, huge or binary-looking lines) is skipped, never fatal.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Category",
    "Changelog",
    "ChangelogEntry",
    "SubjectInfo",
    "build_changelog",
    "classify_subject",
    "security_ids",
]

# Classification looks at this much of a subject / body; ids are searched in this much.
_SUBJECT_LIMIT = 1000
_BODY_LIMIT = 200_000
_SHOW_VERSION = 32
_SHOW_TEXT = 72


class Category(str, enum.Enum):
    """Entry groups, in display order."""

    SECURITY = "security"
    KERNEL = "kernel"
    MAJOR = "major"
    BUMP = "bump"
    NEW = "new"
    REMOVED = "removed"
    MODULE = "module"


_ORDER = {c: i for i, c in enumerate(Category)}


@dataclass(frozen=True)
class SubjectInfo:
    """What one subject line says. ``kind``: bump, new, removed, module, other, noise."""

    kind: str
    attrs: tuple[str, ...] = ()
    old: str | None = None
    new: str | None = None
    message: str = ""


@dataclass(frozen=True)
class ChangelogEntry:
    """One package (or NixOS module) and what happened to it over the range."""

    category: Category
    name: str
    old: str | None = None
    new: str | None = None
    change: str = "bump"  # bump | new | removed | module | patch
    security_ids: tuple[str, ...] = ()
    commits: int = 1
    message: str = ""

    def line(self) -> str:
        """A short display line, e.g. ``⚠ openssl 3.0.14 → 3.0.15 (CVE-2024-1234)``."""
        name = _clip(self.name, _SHOW_TEXT)
        if self.change == "new":
            core = f"{name} {_clip(self.new, _SHOW_VERSION)} (new)" if self.new else f"{name} (new)"
            mark = "+ "
        elif self.change == "removed":
            core, mark = f"{name} (removed)", "- "
        elif self.change == "module":
            if self.commits == 1:
                core = f"{name}: {_clip(self.message, _SHOW_TEXT)}"
            else:
                core = f"{name} ({self.commits} changes)"
            mark = "~ "
        elif self.change == "bump":
            old = f"{_clip(self.old, _SHOW_VERSION)} " if self.old else ""
            core = f"{name} {old}→ {_clip(self.new, _SHOW_VERSION)}"
            if self.category is Category.MAJOR:
                core += " (major)"
            mark = ""
        else:
            core, mark = name, ""
        if self.category is Category.SECURITY:
            shown = [i for i in self.security_ids if i not in core]
            if not shown:
                return f"⚠ {core}"
            ids = ", ".join(shown[:2])
            if len(shown) > 2:
                ids += f", +{len(shown) - 2} more"
            return f"⚠ {core} ({ids})"
        return mark + core


@dataclass(frozen=True)
class Changelog:
    """Grouped, ordered entries plus counts over the whole range."""

    entries: tuple[ChangelogEntry, ...]
    commits: int
    classified: int
    skipped: int
    security_ids: tuple[str, ...]
    counts: Mapping[Category, int] = field(default_factory=dict)

    @property
    def cve_count(self) -> int:
        """Distinct CVE and GHSA ids mentioned anywhere in the range."""
        return len(self.security_ids)

    def count(self, category: Category) -> int:
        return self.counts.get(category, 0)

    def lines(self, limit: int | None = None) -> list[str]:
        """Display lines, most relevant first; with ``limit``, the last says how many more."""
        lines = [e.line() for e in self.entries]
        if limit is None or len(lines) <= limit:
            return lines
        if limit <= 0:
            return []
        keep = limit - 1
        return lines[:keep] + [f"… and {len(lines) - keep} more"]

    def summary(self) -> str:
        """E.g. ``2 security fixes (3 CVEs), 1 kernel, 40 updates, 3 new, 1 removed, 5 modules``."""
        parts = []
        sec = self.count(Category.SECURITY)
        if sec or self.cve_count:
            ids = f" ({self.cve_count} CVE{'s' if self.cve_count != 1 else ''})" if self.cve_count else ""
            parts.append(f"{sec} security fix{'es' if sec != 1 else ''}{ids}")
        for cat, one, many in (
            (Category.KERNEL, "kernel", "kernels"),
            (Category.MAJOR, "major update", "major updates"),
            (Category.BUMP, "update", "updates"),
            (Category.NEW, "new", "new"),
            (Category.REMOVED, "removed", "removed"),
            (Category.MODULE, "module", "modules"),
        ):
            if n := self.count(cat):
                parts.append(f"{n} {one if n == 1 else many}")
        return ", ".join(parts) if parts else "no package changes"


# --- subject classification ------------------------------------------------------

_BACKPORT = re.compile(r"^\[(?:Backport\s+)?(?:release-)?(?:\d{2}\.\d{2}|staging-\d{2}\.\d{2})\]\s*", re.I)
_PR_SUFFIX = re.compile(r"\s*\(#\d+\)\s*$")
_REVERT = re.compile(r'^Revert\s+"(?P<inner>.*)"\s*$', re.S)
_MERGE_PR = re.compile(r"^Merge pull request #\d+ from \S+")
_NOISE = re.compile(
    r"^(?:Merge\b(?! pull request)|treewide\b|maintainers\b|maintainer-list\b|Revert \"Merge\b|"
    r"\[skip|Update (?:CODEOWNERS|\.github)|nixos/(?:tests|doc|release-notes|manual)\b)",
    re.I,
)
_ATTR = re.compile(r"(?:[\w.+\-,]|\{[^{}:]*\})+")
_MODULE = re.compile(r"^nixos/(?P<module>[^:\s]+):\s*(?P<msg>.*)$", re.S)
_BUMP = re.compile(
    r"^(?:(?:update[sd]?|bump(?:ed)?|upgrade[sd]?)\s+(?:from\s+)?)?"
    r"(?P<old>[^\s]+?)\s*(?:->|→|⟶)\s*(?P<new>[^\s,;]+)",
    re.I,
)
_BUMP_TO = re.compile(r"^(?:update[sd]?|bump(?:ed)?|upgrade[sd]?)\s+to\s+(?P<new>[^\s,;]+)", re.I)
_INIT = re.compile(r"^init(?:iali[sz]ed?)?\b(?:\s+at\s+(?P<ver>[^\s,;]+))?", re.I)
_REMOVE = re.compile(r"^(?:remove[ds]?|drop(?:ped|s)?|delete[ds]?)\b(?P<tail>.*)$", re.I | re.S)
_REMOVE_TAIL = re.compile(
    r"^(?:$|[(,;:.\-–—]|(?:the\s+)?(?:package|attribute|alias(?:es)?|it|as|since|because|due|in\s+favou?r|from|"
    r"unmaintained|broken|deprecated|abandoned|after|per|eol|end[- ]of[- ]life|insecure|obsolete)\b)",
    re.I,
)
_IDS = re.compile(r"\b(?:CVE-\d{4}-\d{4,7}|GHSA(?:-[23456789cfghjmpqrvwx]{4}){3})\b", re.I)
_KERNEL = re.compile(
    r"^(?:linux(?:_[A-Za-z0-9_]+)?|linux-rt(?:_[A-Za-z0-9_]+)?|linux-libre|linuxKernel\..+|"
    r"linuxPackages(?:_[A-Za-z0-9_]+)?(?:\..+)?)$"
)
_DIGITS = re.compile(r"\d+")


def _clip(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _version(text: str) -> str:
    return text.strip("`'\"").rstrip(".:)")


def _expand(attrs: str) -> tuple[str, ...]:
    """``python3Packages.{a,b}`` → ``python3Packages.a``, ``python3Packages.b``; ``a,b`` → both."""
    if "{" not in attrs and "," not in attrs:
        return (attrs,)
    parts, depth, cur = [], 0, ""
    for ch in attrs:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out: list[str] = []
    for part in parts:
        m = re.fullmatch(r"(?P<pre>[^{}]*)\{(?P<alts>[^{}]*)\}(?P<post>[^{}]*)", part)
        if m:
            out += [f"{m['pre']}{alt.strip()}{m['post']}" for alt in m["alts"].split(",") if alt.strip()]
        elif part.strip():
            out.append(part.strip())
    return tuple(dict.fromkeys(out))


def classify_subject(subject: str) -> SubjectInfo:
    """Classify one commit subject (backport prefix and ``(#123)`` suffix stripped)."""
    s = subject.strip()[:_SUBJECT_LIMIT]
    while m := _BACKPORT.match(s):
        s = s[m.end() :]
    s = _PR_SUFFIX.sub("", s)
    reverts = 0
    while m := _REVERT.match(s):
        s, reverts = m["inner"].strip(), reverts + 1
    if _NOISE.match(s):
        return SubjectInfo("noise")
    info = _classify_plain(s)
    if reverts % 2 == 0:
        return info
    if info.kind == "bump" and info.old:
        return SubjectInfo("bump", info.attrs, info.new, info.old)
    if info.kind == "new":
        return SubjectInfo("removed", info.attrs)
    if info.kind == "removed":
        return SubjectInfo("new", info.attrs)
    return SubjectInfo("other", info.attrs, message=info.message)


def _classify_plain(s: str) -> SubjectInfo:
    if m := _MODULE.match(s):
        return SubjectInfo("module", (f"nixos/{m['module']}",), message=m["msg"].strip())
    head, colon, rest = s.partition(":")
    head = head.strip()
    if not colon or not head or len(head) > 200 or not _ATTR.fullmatch(head):
        return SubjectInfo("other", message=s)
    attrs = _expand(head)
    if not attrs:
        return SubjectInfo("other", message=s)
    rest = rest.strip()
    if m := _BUMP.match(rest):
        old, new = _version(m["old"]), _version(m["new"])
        if new and any(c.isalnum() for c in new):
            return SubjectInfo("bump", attrs, old or None, new)
    if m := _BUMP_TO.match(rest):
        new = _version(m["new"])
        if new:
            return SubjectInfo("bump", attrs, None, new)
    if m := _INIT.match(rest):
        return SubjectInfo("new", attrs, new=_version(m["ver"]) if m["ver"] else None)
    if (m := _REMOVE.match(rest)) and _REMOVE_TAIL.match(m["tail"].strip()):
        return SubjectInfo("removed", attrs)
    return SubjectInfo("other", attrs, message=rest)


def security_ids(text: str) -> set[str]:
    """Distinct CVE and GHSA ids in a text, normalised (``CVE-…`` upper, ``GHSA-…`` lower)."""
    return {m.upper() if m[:1] in "cC" else "GHSA-" + m[5:].lower() for m in _IDS.findall(text[:_BODY_LIMIT])}


_DATE_VERSION = re.compile(r"^(?:unstable-)?(?:19|20)\d{2}-?[01]\d-?[0-3]\d")


def _is_major(old: str | None, new: str | None) -> bool:
    if not old or not new:
        return False
    if _DATE_VERSION.match(old) or _DATE_VERSION.match(new):
        return False  # date versions (firmware snapshots, unstable-2026-11-15) move every release
    a = [d.lstrip("0") or "0" for d in _DIGITS.findall(old[:64])[:2]]
    b = [d.lstrip("0") or "0" for d in _DIGITS.findall(new[:64])[:2]]
    if not a or not b:
        return False
    if a[0] != b[0]:
        return True
    return a[0] == "0" and len(a) > 1 and len(b) > 1 and a[1] != b[1]


# --- building -------------------------------------------------------------------


@dataclass
class _Acc:
    name: str
    order: int
    old: str | None = None
    new: str | None = None
    bumped: bool = False
    first_life: str | None = None
    last_life: str | None = None
    is_module: bool = False
    ids: set[str] = field(default_factory=set)
    commits: int = 0
    message: str = ""

    def bump(self, old: str | None, new: str | None) -> None:
        if not self.bumped:
            self.old, self.new, self.bumped = old, new, True
        elif old is not None and old == self.new:
            self.new = new
        elif new is not None and new == self.old:
            self.old = old  # the commits came newest first
        else:
            self.new = new

    def life(self, event: str) -> None:
        self.first_life = self.first_life or event
        self.last_life = event

    def entry(self) -> ChangelogEntry | None:
        ids = tuple(sorted(self.ids))
        if self.is_module:
            change, category = "module", Category.MODULE
        elif self.first_life == "new" and self.last_life == "removed":
            return None  # added and removed within the range
        elif self.last_life == "removed":
            change, category = "removed", Category.REMOVED
        elif self.last_life == "new":
            change, category = "new", Category.NEW
        elif self.bumped and self.old != self.new:
            change = "bump"
            if _KERNEL.match(self.name):
                category = Category.KERNEL
            elif _is_major(self.old, self.new):
                category = Category.MAJOR
            else:
                category = Category.BUMP
        elif ids:
            change, category = "patch", Category.SECURITY
        else:
            return None  # reverted back to where it started
        if ids:
            category = Category.SECURITY
        return ChangelogEntry(
            category=category,
            name=self.name,
            old=self.old if change == "bump" else None,
            new=self.new,
            change=change,
            security_ids=ids,
            commits=self.commits,
            message=self.message,
        )


def _split_commit(commit: Any) -> tuple[str, str] | None:
    """(subject, body) from a message string, a pair, a mapping or an object."""
    subject: Any = None
    body: Any = ""
    if isinstance(commit, str):
        subject, _, body = commit.partition("\n")
    elif isinstance(commit, (tuple, list)) and len(commit) == 2:
        subject, body = commit
    elif isinstance(commit, Mapping):
        if "subject" in commit:
            subject, body = commit.get("subject"), commit.get("body")
        else:
            message = commit.get("message")
            if message is None and isinstance(commit.get("commit"), Mapping):
                message = commit["commit"].get("message")
            if isinstance(message, str):
                subject, _, body = message.partition("\n")
    elif hasattr(commit, "subject"):
        subject, body = getattr(commit, "subject", None), getattr(commit, "body", "")
    elif isinstance(getattr(commit, "message", None), str):
        subject, _, body = commit.message.partition("\n")
    if not isinstance(subject, str):
        return None
    if not isinstance(body, str):
        body = ""
    return subject.replace("\r", "").strip(), body.replace("\r", "")


def _pr_title(body: str) -> str:
    for line in body[:_SUBJECT_LIMIT * 4].split("\n"):
        if line.strip():
            return line.strip()
    return ""


def build_changelog(commits: Iterable[Any]) -> Changelog:
    """Group compare commits (oldest first) into a package-level changelog.

    Each commit is a full message string (subject, blank line, body), a
    ``(subject, body)`` pair, a mapping (``subject``/``body``, ``message`` or a
    GitHub ``{"commit": {"message": …}}``) or an object with ``subject``/``body``.
    A ``Merge pull request`` commit is classified by its PR title and only adds
    what the merged commits did not already say.
    """
    accs: dict[str, _Acc] = {}
    all_ids: set[str] = set()
    total = classified = 0
    merges: list[tuple[str, set[str]]] = []

    def acc(name: str) -> _Acc:
        if name not in accs:
            accs[name] = _Acc(name, len(accs))
        return accs[name]

    def apply(info: SubjectInfo, ids: set[str], subject: str, primary: bool) -> bool:
        names = info.attrs
        if info.kind in ("noise",) or (info.kind == "other" and not ids):
            return False
        if not names:
            names = (_clip(subject, _SHOW_TEXT),)  # a security fix we can't attribute
        for name in names:
            if not primary and name in accs:
                accs[name].ids |= ids
                continue
            a = acc(name)
            a.commits += 1
            a.ids |= ids
            if info.kind == "bump":
                a.bump(info.old, info.new)
            elif info.kind in ("new", "removed"):
                a.life(info.kind)
                if info.kind == "new" and info.new:
                    a.new = info.new
            elif info.kind == "module":
                a.is_module = True
                a.message = a.message or info.message
        return True

    for commit in commits:
        total += 1
        parts = _split_commit(commit)
        if parts is None:
            continue
        subject, body = parts
        ids = security_ids(f"{subject[:_BODY_LIMIT]}\n{body}")
        all_ids |= ids
        if _MERGE_PR.match(subject):
            title = _pr_title(body)
            if title:
                merges.append((title, ids))
            continue
        if apply(classify_subject(subject), ids, subject, primary=True):
            classified += 1
    for title, ids in merges:
        if apply(classify_subject(title), ids, title, primary=False):
            classified += 1

    entries = [e for a in sorted(accs.values(), key=lambda a: a.order) if (e := a.entry()) is not None]
    entries.sort(key=lambda e: (_ORDER[e.category], e.name.casefold(), e.name))
    counts: dict[Category, int] = {}
    for e in entries:
        counts[e.category] = counts.get(e.category, 0) + 1
    return Changelog(
        entries=tuple(entries),
        commits=total,
        classified=classified,
        skipped=total - classified,
        security_ids=tuple(sorted(all_ids)),
        counts=counts,
    )
