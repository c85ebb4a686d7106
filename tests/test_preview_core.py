"""core/preview.py: security fixes first, and the (host, head sha) cache keeps only evidence."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from nfu_tui.backends.ssh import BUILD_FAILED, HostPreview, PackageChange
from nfu_tui.domain.changelog import build_changelog
from nfu_tui.core.preview import PreviewCache, failed_builds, preview_pr, security_ids_by_package, with_security

CHANGES = (PackageChange("curl", "8.10 → 8.11", 10.0), PackageChange("openssl", "3.4.0 → 3.4.1", -2.0))


def test_changes_the_changelog_marks_as_security_fixes_come_first_with_their_ids() -> None:
    log = build_changelog([("openssl: 3.4.0 -> 3.4.1", "Fixes CVE-2026-1111"), ("curl: 8.10 -> 8.11", "")])
    security = security_ids_by_package(log)
    assert security == {"openssl": ("CVE-2026-1111",)}
    shown = with_security(HostPreview("web", True, changes=CHANGES), security)
    assert [(c.name, c.security_ids) for c in shown.changes] == [("openssl", ("CVE-2026-1111",)), ("curl", ())]
    assert with_security(HostPreview("web", True, changes=CHANGES), {}).changes == CHANGES


class Fleet:
    def __init__(self, answers: dict[str, HostPreview]) -> None:
        self.answers, self.calls, self.running, self.most = answers, [], 0, 0

    async def preview(self, host: str, number: int, head_ref: str, sha: str) -> HostPreview:
        self.calls.append((host, sha))
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        return self.answers[host]


def test_the_cache_keeps_builds_and_build_failures_per_head_but_never_an_unreachable_host(tmp_path: Path) -> None:
    answers = {"ok": HostPreview("ok", True, changes=CHANGES, reboot_needed=False),
               "broken": HostPreview("broken", False, BUILD_FAILED, last_lines=("error: x",)),
               "gone": HostPreview("gone", False, "gone: connection refused")}
    fleet, cache = Fleet(answers), PreviewCache(tmp_path / "p.json")
    pr = SimpleNamespace(number=7, head_ref="update", head_sha="a" * 40)
    first = asyncio.run(preview_pr(fleet, pr, list(answers), cache=cache, concurrency=1))
    assert first == list(answers.values()) and fleet.most == 1 and failed_builds(first) == ["broken"]
    asyncio.run(preview_pr(fleet, pr, list(answers), cache=cache))
    assert [h for h, _ in fleet.calls] == ["ok", "broken", "gone", "gone"]  # only the unreachable host again
    assert cache.get("ok", "a" * 40) == answers["ok"] and cache.get("ok", "b" * 40) is None
    asyncio.run(preview_pr(fleet, SimpleNamespace(number=7, head_ref="update", head_sha="b" * 40), ["ok"], cache=cache))
    assert fleet.calls[-1] == ("ok", "b" * 40)  # the head moved: built again
    (tmp_path / "p.json").write_text("{not json")
    assert cache.get("ok", "a" * 40) is None  # an unreadable cache is an empty one
