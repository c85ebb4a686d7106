"""Bounded reads: nothing from outside is read whole before its size is checked.

Secret files (64 KiB) are covered in test_config.py; here: flake.lock files (32 MiB, read
in chunks), HTTP bodies of both clients (their caps, announced or streamed) and the memory
a 50 MB lock costs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from nfu_tui.cli import main
from nfu_tui.clients import dashboard as dashboard_mod
from nfu_tui.clients import github as github_mod
from nfu_tui.clients.dashboard import DashboardClient
from nfu_tui.clients.github import GitHubClient
from nfu_tui.domain.flakelock import MAX_LOCK_BYTES, parse_lock
from nfu_tui.errors import DashboardError, GitHubError, LockFileError


class Endless(httpx.AsyncByteStream):
    """A body that never ends (1 MiB chunks); counts what was taken from it."""

    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b"[" + b" " * ((1 << 20) - 1)
        while True:
            self.sent += len(chunk)
            yield chunk


async def test_github_refuses_an_endless_body_after_its_cap() -> None:
    body = Endless()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=body))
    async with GitHubClient(api_url="https://api.github.test", repo="a/b", token="ghp_x", transport=transport) as gh:
        with pytest.raises(GitHubError, match=r"larger than 40 MiB"):
            await gh.list_update_prs()
    assert body.sent <= github_mod.MAX_BODY_BYTES + (1 << 20)


async def test_github_refuses_an_announced_huge_body_without_reading_it() -> None:
    body = Endless()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-length": str(1 << 40)}, stream=body))
    async with GitHubClient(api_url="https://api.github.test", repo="a/b", token="ghp_x", transport=transport) as gh:
        with pytest.raises(GitHubError, match="larger than"):
            await gh.list_update_prs()
    assert body.sent == 0


async def test_dashboard_refuses_an_endless_body_after_its_cap() -> None:
    body = Endless()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=body))
    client = DashboardClient(url="http://127.0.0.1:8000", password="pw-unused", transport=transport)
    try:
        with pytest.raises(DashboardError, match=r"larger than 64 MiB"):
            await client.login()
    finally:
        await client.aclose()
    assert body.sent <= dashboard_mod.MAX_BODY_BYTES + (1 << 20)


def test_lock_diff_of_dev_zero_fails_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = tmp_path / "flake.lock"
    ok.write_text(json.dumps({"nodes": {"root": {"inputs": {}}}, "root": "root", "version": 7}))
    assert main(["lock-diff", "/dev/zero", str(ok)]) == 2
    assert capsys.readouterr().err.strip() == "nfu-tui lock-diff: /dev/zero: larger than 32 MiB: not a flake.lock"


def test_parse_lock_refuses_more_than_its_limit() -> None:
    with pytest.raises(LockFileError, match="larger than 32 MiB"):
        parse_lock(b" " * (MAX_LOCK_BYTES + 1))


def test_a_50_mb_lock_is_refused_in_little_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.lock"
    with open(big, "wb") as fh:  # a valid-looking lock, padded to 50 MB
        fh.write(b'{"nodes": {"root": {"inputs": {}}}, "root": "root", "version": 7, "pad": "')
        fh.write(b"x" * (50 * 1000 * 1000))
        fh.write(b'"}')
    probe = (
        "import resource, sys\n"
        "from nfu_tui.cli import main\n"
        "code = main(['lock-diff', sys.argv[1], sys.argv[1]])\n"
        "print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"  # KiB on Linux
    )
    done = subprocess.run([sys.executable, "-c", probe, str(big)], capture_output=True, text=True, timeout=120)
    code, max_rss_kib = map(int, done.stdout.split())
    assert code == 2 and "larger than 32 MiB" in done.stderr and "Traceback" not in done.stderr
    assert max_rss_kib < 256 * 1024  # well under 1 GB (the issue measured 1.16 GB before)
