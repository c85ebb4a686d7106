"""GitHubClient against the fake GitHub server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from nfu_tui.clients.github import GitHubClient
from nfu_tui.domain import flakelock
from nfu_tui.errors import (
    GitHubAuthError,
    GitHubForbidden,
    GitHubRateLimited,
    GitHubServerError,
    GraphQLError,
    MergeConflict,
    NfuError,
    NotMergeable,
)
from nfu_tui.models import CIVerdict
from nfu_tui.sim.github import FakeGitHub
from nfu_tui.sim.scenario import PRSpec, default_scenario


class Sleeper:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    server = FakeGitHub(default_scenario())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


@pytest.fixture
async def make_client(fake: FakeGitHub, sleeper: Sleeper) -> AsyncIterator[Callable[..., GitHubClient]]:
    clients: list[GitHubClient] = []

    def factory(**kw: Any) -> GitHubClient:
        options: dict[str, Any] = {
            "api_url": fake.url,
            "repo": fake.repo,
            "token": fake.token,
            "sleep": sleeper,
            "rand": lambda: 0.5,
        }
        options.update(kw)
        client = GitHubClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: Callable[..., GitHubClient]) -> GitHubClient:
    return make_client()


def statuses_since(fake: FakeGitHub, start: int) -> list[int]:
    return [r.status for r in fake.request_log[start:]]


def assert_token_free(err: BaseException, *tokens: str) -> None:
    for text in (str(err), repr(err), getattr(err, "hint", "")):
        for token in tokens:
            assert token not in text


# --- detection and idle polling -----------------------------------------------------


async def test_detects_the_scenario_update_pr(client: GitHubClient, fake: FakeGitHub) -> None:
    prs = await client.list_update_prs()
    assert [pr.number for pr in prs] == [42]
    pr = prs[0]
    assert pr.files == ("flake.lock",) and pr.lock_only is True
    assert pr.head_ref == "update_flake_lock_action" and len(pr.head_sha) == 40
    assert pr.labels == ("dependencies",) and pr.created_at is not None
    assert client.rate.limit == 5000 and client.rate.remaining is not None


async def test_idle_polling_costs_one_free_request_per_poll(client: GitHubClient, fake: FakeGitHub) -> None:
    """Polling every 5 minutes on an unchanged repo: 12 requests an hour, 304s, no budget used."""
    first = await client.list_update_prs()
    assert statuses_since(fake, 0) == [200, 200]  # the listing and #42's files, once
    for _ in range(11):
        assert await client.list_update_prs() == first
    assert len(fake.request_log) == 13 and statuses_since(fake, 0).count(304) == 11  # first hour, incl. warm-up
    remaining = client.rate.remaining
    start = len(fake.request_log)
    for _ in range(12):  # every later hour
        assert await client.list_update_prs() == first
    log = fake.request_log[start:]
    assert len(log) == 12 and {(r.method, r.path, r.status) for r in log} == {("GET", f"/repos/{fake.repo}/pulls", 304)}
    assert client.rate.remaining == remaining  # 304s are free


async def test_new_head_is_picked_up_and_files_refetched(client: GitHubClient, fake: FakeGitHub) -> None:
    before = (await client.list_update_prs())[0]
    new_sha = fake.push_pr_head(42)
    start = len(fake.request_log)
    after = (await client.list_update_prs())[0]
    assert after.head_sha == new_sha != before.head_sha
    assert [(r.path, r.status) for r in fake.request_log[start:]] == [
        (f"/repos/{fake.repo}/pulls", 200),
        (f"/repos/{fake.repo}/pulls/42/files", 200),
    ]


async def test_newer_update_pr_supersedes_the_older(client: GitHubClient, fake: FakeGitHub) -> None:
    newer = fake.open_update_pr(PRSpec(number=0, age_hours=1, labels=[]))  # title "flake.lock: Update"
    fake.open_update_pr(PRSpec(number=0, title="Add host web-02", extra_files=["hosts/web-02.nix"], head_ref="web-02"))
    prs = await client.list_update_prs()
    assert [pr.number for pr in prs] == [newer, 42]
    assert prs[0].superseded_by is None and prs[1].superseded_by == newer


# --- detail, CI ---------------------------------------------------------------------------


async def test_get_pull_waits_for_mergeability(client: GitHubClient, fake: FakeGitHub, sleeper: Sleeper) -> None:
    fake.mergeable_null_reads = 2
    fake.push_pr_head(42)
    pr = await client.get_pull(42)
    assert pr.mergeable is True and pr.mergeable_state in ("clean", "unstable")
    assert sleeper.calls == [1, 2]


async def test_get_pull_gives_up_as_unknown(client: GitHubClient, fake: FakeGitHub, sleeper: Sleeper) -> None:
    fake.mergeable_null_reads = 100
    fake.push_pr_head(42)
    pr = await client.get_pull(42)
    assert pr.mergeable is None and pr.mergeable_state == "unknown"
    assert sum(sleeper.calls) == 30


@pytest.mark.parametrize(
    ("state", "verdict"),
    [
        ("success", CIVerdict.GREEN),
        ("pending", CIVerdict.PENDING),
        ("failure", CIVerdict.RED),
        ("none", CIVerdict.NO_CI),
    ],
)
async def test_ci_verdicts(client: GitHubClient, fake: FakeGitHub, state: str, verdict: CIVerdict) -> None:
    fake.set_ci(42, state)
    pr = await client.get_pull(42, wait_mergeable=False)
    ci = await client.ci_status(pr.head_sha)
    assert ci.verdict is verdict, ci.summary


# --- explain --------------------------------------------------------------------------------


async def test_explain_against_the_fake(
    make_client: Callable[..., GitHubClient], fake: FakeGitHub, tmp_path: Path
) -> None:
    client = make_client(cache_dir=tmp_path)
    pr = (await client.list_update_prs())[0]
    expl = await client.explain(pr)
    assert expl.errors == [] and expl.lock_only is True
    base, head = fake.file_at(pr.base_sha, "flake.lock"), fake.file_at(pr.head_sha, "flake.lock")
    old, new = flakelock.parse_lock(base), flakelock.parse_lock(head)
    changes = flakelock.diff(old, new)
    assert expl.summary_text == flakelock.render_summary(changes, "determinate") != ""
    assert expl.headline == flakelock.headline(changes, old, new)
    assert expl.nixpkgs_headline is not None and ", 180 commits over 7 days" in expl.nixpkgs_headline
    assert expl.changelog is not None and expl.changelog.commits == 180 and expl.changelog.lines(5)
    assert all(c.comparison is not None for c in expl.compares)
    # A second process with the same cache explains the same head without any request.
    again = make_client(cache_dir=tmp_path)
    repeat = await again.explain(pr)
    assert again.requests_made == 0
    assert repeat.summary_text == expl.summary_text and repeat.nixpkgs_headline == expl.nixpkgs_headline


# --- merge ------------------------------------------------------------------------------------


async def test_merge_flow_with_sha_guard(client: GitHubClient, fake: FakeGitHub) -> None:
    reviewed = await client.get_pull(42)
    fake.push_pr_head(42)  # the action force-pushes between review and merge
    start = len(fake.request_log)
    with pytest.raises(MergeConflict):
        await client.merge(42, reviewed.head_sha)
    assert [(r.method, r.status) for r in fake.request_log[start:]] == [("PUT", 409)]
    fresh = await client.get_pull(42)
    merge_sha = await client.merge(42, fresh.head_sha, title="flake.lock: Update (#42)")
    await client.wait_for_branch_contains("main", merge_sha)
    assert await client.branch_head("main") == merge_sha
    assert fake.file_at("main", "flake.lock") == fake.file_at(fresh.head_sha, "flake.lock")
    merged = await client.get_pull(42)
    assert merged.merged and merged.state == "closed" and merged.merge_commit_sha == merge_sha
    assert await client.list_update_prs() == []


async def test_merge_retries_base_branch_modified(client: GitHubClient, fake: FakeGitHub, sleeper: Sleeper) -> None:
    pr = await client.get_pull(42)
    sleeper.calls.clear()
    fake.faults.base_modified_next = 2
    assert await client.merge(42, pr.head_sha)
    assert [r.status for r in fake.request_log if r.method == "PUT"] == [405, 405, 200]
    assert len(sleeper.calls) == 2 and all(1 <= s <= 3 for s in sleeper.calls)


async def test_merge_gives_up_on_persistent_base_modified(client: GitHubClient, fake: FakeGitHub) -> None:
    pr = await client.get_pull(42)
    fake.faults.base_modified_next = 10
    with pytest.raises(NotMergeable) as info:
        await client.merge(42, pr.head_sha)
    assert info.value.transient and info.value.message.startswith("Base branch was modified")
    assert len([r for r in fake.request_log if r.method == "PUT"]) == 4


async def test_merge_is_not_repeated_after_a_server_error(client: GitHubClient, fake: FakeGitHub) -> None:
    pr = await client.get_pull(42)
    fake.faults.server_error_next = 1
    fake.faults.server_error_status = 502
    with pytest.raises(GitHubServerError):
        await client.merge(42, pr.head_sha)
    assert [r.method for r in fake.request_log if r.method == "PUT"] == ["PUT"]
    assert not (await client.get_pull(42)).merged


async def test_least_privilege_tokens(make_client: Callable[..., GitHubClient], fake: FakeGitHub) -> None:
    read_only = "ghp_readonly0000000000000000000000000000"
    fake.add_token(read_only, write=False)
    reader = make_client(token=read_only)
    pr = await reader.get_pull(42)
    with pytest.raises(GitHubForbidden) as info:
        await reader.merge(42, pr.head_sha)
    assert_token_free(info.value, read_only, fake.token)
    both = make_client(token=read_only, write_token=fake.token)
    assert await both.merge(42, pr.head_sha)


async def test_bad_token(make_client: Callable[..., GitHubClient]) -> None:
    bad = "ghp_wrong00000000000000000000000000000000"
    with pytest.raises(GitHubAuthError) as info:
        await make_client(token=bad).list_update_prs()
    assert_token_free(info.value, bad)


# --- rate limits and server trouble -----------------------------------------------------------


async def test_secondary_rate_limit_is_waited_out(client: GitHubClient, fake: FakeGitHub, sleeper: Sleeper) -> None:
    fake.faults.secondary_limit_next = 1
    fake.faults.retry_after = 42
    assert [pr.number for pr in await client.list_update_prs()] == [42]
    assert sleeper.calls == [42.5]
    assert statuses_since(fake, 0)[:2] == [403, 200]


async def test_server_errors_are_retried_for_reads(client: GitHubClient, fake: FakeGitHub, sleeper: Sleeper) -> None:
    fake.faults.server_error_next = 3  # rotates through HTML 502, 500, 503, 504
    assert [pr.number for pr in await client.list_update_prs()] == [42]
    assert len(sleeper.calls) == 3 and sleeper.calls == sorted(sleeper.calls)


async def test_primary_exhaustion_raises_with_the_wait(
    client: GitHubClient, fake: FakeGitHub, sleeper: Sleeper
) -> None:
    fake.faults.exhaust(reset_in=600)
    with pytest.raises(GitHubRateLimited) as info:
        await client.list_update_prs()
    assert 590 <= info.value.wait_seconds <= 603
    assert sleeper.calls == [] and client.rate.remaining == 0
    assert_token_free(info.value, fake.token)


# --- revert, comments ---------------------------------------------------------------------------


async def test_revert_after_merge(client: GitHubClient, fake: FakeGitHub) -> None:
    pr = await client.get_pull(42)
    with pytest.raises(GraphQLError) as info:
        await client.revert_pull(pr.node_id)  # not merged yet
    assert_token_free(info.value, fake.token)
    await client.merge(42, pr.head_sha)
    revert = await client.revert_pull(pr.node_id, title='Revert "flake.lock: Update"', body="deploy failed on web-01")
    assert revert.number != 42 and revert.state == "open"
    assert revert.head_ref.startswith("revert-42-")
    assert fake.file_at(revert.head_sha, "flake.lock") == fake.file_at(pr.base_sha, "flake.lock")
    assert await client.list_update_prs() == []  # a revert is not an update
    await client.comment(42, f"nfu-tui: reverted in #{revert.number}")
    await client.close_pull(revert.number)
    assert (await client.get_pull(revert.number, wait_mergeable=False)).state == "closed"
    assert await client.viewer_login() == fake.repo.split("/")[0]


async def test_no_error_leaks_a_token(make_client: Callable[..., GitHubClient], fake: FakeGitHub) -> None:
    client = make_client(write_token=fake.token)
    errors: list[NfuError] = []
    for call in (
        lambda: client.get_pull(999),
        lambda: client.file_at("missing.nix", "main"),
        lambda: client.compare_commits("NixOS", "nixpkgs", "0" * 40, "1" * 40),
        lambda: client.merge(42, "0" * 40),
        lambda: client.revert_pull("PR_nonexistent"),
        lambda: client.branch_head("no-such-branch"),
    ):
        with pytest.raises(NfuError) as info:
            await call()
        errors.append(info.value)
    for err in errors:
        assert_token_free(err, fake.token)
    assert fake.token not in repr(client)
