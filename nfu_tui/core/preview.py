"""Preview before merge: what an update PR would change on each host (SSH backend), shared by
the CLI (`nfu-tui preview`), the TUI (the PR panel's key) and automation (``preview_before_merge``).

Each chosen host builds the PR head without activating it (``SshFleet.preview``); at most
``concurrency`` builds run at once. Package changes the PR's changelog marks as security
fixes are tagged with their ids and listed first. Results are cached by (host, PR head sha)
in ``state_dir()/previews.json``: a build result is evidence about that exact head, so it is
reused until the head moves; an unreachable host or a failed fetch is never cached.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from nfu_tui.backends.ssh import HostPreview, PackageChange
from nfu_tui.domain.changelog import Category, Changelog
from nfu_tui.sanitize import sanitize_line
from nfu_tui.core.state import atomic_write_text
from nfu_tui.paths import ensure_dir, state_dir

CACHE_NAME = "previews.json"
CACHE_LIMIT = 400  # (host, sha) entries kept; the oldest go first
CONCURRENCY = 2  # builds are heavy: at most this many hosts build at once
SCHEMA = "nfu-tui.preview/1"


# --- security fixes first ------------------------------------------------------------------


def security_ids_by_package(changelog: Changelog | None) -> dict[str, tuple[str, ...]]:
    """Package name → the CVE/GHSA ids (possibly none) of the changelog's security entries."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in changelog.entries if changelog is not None else ():
        if entry.category is Category.SECURITY and entry.change != "module":
            out[entry.name.lower()] = entry.security_ids
            out.setdefault(entry.name.rsplit(".", 1)[-1].lower(), entry.security_ids)  # pythonPackages.x → x
    return out


def with_security(preview: HostPreview, security: Mapping[str, tuple[str, ...]]) -> HostPreview:
    """``preview`` with the changes the changelog marks as security fixes tagged and listed first."""
    if not security or not preview.changes:
        return preview
    marked = [replace(c, security_ids=tuple(security[c.name.lower()])) if c.name.lower() in security else c
              for c in preview.changes]
    flagged = [c for c in marked if c.name.lower() in security]
    return replace(preview, changes=tuple(flagged + [c for c in marked if c.name.lower() not in security]))


# --- (de)serialising ---------------------------------------------------------------------------


def preview_json(p: HostPreview) -> dict[str, Any]:
    return {"host": p.host, "ok": p.ok, "problem": p.problem or None, "reboot_needed": p.reboot_needed,
            "reboot_why": p.reboot_why, "size_kib": round(p.size_kib, 1), "last_lines": list(p.last_lines),
            "changes": [{"name": c.name, "change": c.change, "size_kib": c.size_kib,
                         "security_ids": list(c.security_ids)} for c in p.changes]}


def preview_from_json(d: Mapping[str, Any]) -> HostPreview:
    changes = tuple(PackageChange(str(c["name"]), str(c["change"]),
                                  float(c["size_kib"]) if c.get("size_kib") is not None else None,
                                  tuple(str(i) for i in c.get("security_ids", ())))
                    for c in d.get("changes", ()))
    reboot = d.get("reboot_needed")
    return HostPreview(str(d["host"]), bool(d["ok"]), str(d.get("problem") or ""), changes,
                       reboot if isinstance(reboot, bool) else None, str(d.get("reboot_why", "")),
                       tuple(str(x) for x in d.get("last_lines", ())))


def report_json(number: int, head_sha: str, results: Sequence[HostPreview]) -> dict[str, Any]:
    return {"schema": SCHEMA, "pr": number, "head_sha": head_sha, "hosts": [preview_json(r) for r in results]}


# --- the cache ----------------------------------------------------------------------------------


class PreviewCache:
    """Finished previews by (host, PR head sha), in one small JSON file (unreadable → empty)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else state_dir() / CACHE_NAME

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _key(host: str, sha: str) -> str:
        return f"{host}@{sha}"

    def get(self, host: str, sha: str) -> HostPreview | None:
        return self.for_head(sha, [host]).get(host)

    def for_head(self, sha: str, hosts: Iterable[str]) -> dict[str, HostPreview]:
        """The cached previews of ``sha`` for those of ``hosts`` that have one (an unreadable row: none)."""
        data, out = self._read(), {}
        for host in hosts:
            row = data.get(self._key(host, sha))
            with suppress(KeyError, TypeError, ValueError):
                if isinstance(row, dict):
                    out[host] = preview_from_json(row)
        return out

    def put(self, sha: str, previews: Iterable[HostPreview]) -> None:
        keep = [p for p in previews if p.ok or p.build_failed]
        if not keep:
            return
        data = self._read()
        for p in keep:
            key = self._key(p.host, sha)
            data.pop(key, None)  # re-inserted last: newest
            data[key] = preview_json(p)
        for key in list(data)[:-CACHE_LIMIT]:
            del data[key]
        with suppress(OSError):  # an unwritable cache only costs a rebuild next time
            ensure_dir(self.path.parent)
            atomic_write_text(self.path, json.dumps(data, ensure_ascii=False))


# --- running -------------------------------------------------------------------------------------


async def preview_pr(fleet: Any, pr: Any, hosts: Sequence[str], *, changelog: Changelog | None = None,
                     cache: PreviewCache | None = None, fresh: bool = False, concurrency: int = CONCURRENCY,
                     on_result: Callable[[HostPreview], None] | None = None) -> list[HostPreview]:
    """Preview ``pr`` (number, head_ref, head_sha) on ``hosts`` (in order), reusing cached results unless ``fresh``."""
    security = security_ids_by_package(changelog)
    cached = {} if cache is None or fresh else cache.for_head(pr.head_sha, hosts)
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(host: str) -> HostPreview:
        if host in cached:
            result = with_security(cached[host], security)
        else:
            async with limit:
                result = with_security(await fleet.preview(host, pr.number, pr.head_ref, pr.head_sha), security)
            if cache is not None:
                cache.put(pr.head_sha, [result])
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(h) for h in hosts)))


# --- showing -------------------------------------------------------------------------------------


def change_line(c: PackageChange) -> str:
    size = f" ({c.size_kib:+.1f} KiB)" if c.size_kib is not None else ""
    if c.security_ids:
        return f"⚠ {c.name}: {c.change}{size} — security fix ({', '.join(c.security_ids[:3])})"
    return f"{c.name}: {c.change}{size}"


def summary_line(p: HostPreview) -> str:
    """One line per host: builds (changes, delta, reboot) or why not."""
    if not p.ok:
        return f"{p.host}: {sanitize_line(p.problem)}"
    reboot = "; no reboot needed" if p.reboot_needed is False else f"; {p.reboot_why}" if p.reboot_why else ""
    fixes = sum(1 for c in p.changes if c.security_ids)
    sec = f" ({fixes} security fix{'es' if fixes != 1 else ''})" if fixes else ""
    return f"{p.host}: builds; {len(p.changes)} package change(s){sec}, closure {p.size_kib:+.1f} KiB{reboot}"


def report_lines(p: HostPreview) -> list[str]:
    """The host's summary line, then its package changes (security first) or its last build lines."""
    detail = [f"  {change_line(c)}" for c in p.changes] if p.ok else [f"  | {line}" for line in p.last_lines]
    return [summary_line(p), *detail]


def failed_builds(results: Iterable[HostPreview]) -> list[str]:
    """Hosts whose build failed (evidence), in order."""
    return [p.host for p in results if p.build_failed]
