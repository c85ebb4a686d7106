"""Compliance of the GitHub client with the contract, against a faithful-but-different server.

Each test answers the way GitHub, or an independent implementation of the contract,
may answer where our own simulator does not: recorded-style bodies and headers; the
docstrings cite sections of ``shared/contracts/github-api.md``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from nfu_tui.clients import _github_protocol as p
from nfu_tui.clients._github_protocol import DetectionRule
from nfu_tui.clients.github import GitHubClient
from nfu_tui.errors import GitHubError, GitHubRateLimited, GraphQLError
from nfu_tui.models import CIVerdict

API = "https://api.github.test"
GHE = "https://ghe.corp.test/api/v3"
REPO = "alice/nixos-config"
READ = "ghp_compatREADcompatREADcompatREAD0001"
WRITE = "ghp_compatWRITEcompatWRITEcompatWRI0002"
HEAD = "9f3c" + "1" * 36
BASE = "77aa" + "2" * 36
NOW = 1_780_000_000.0
SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."

Route = Callable[[httpx.Request], httpx.Response] | list[httpx.Response]


def rate(remaining: int = 4990, resource: str = "core") -> dict[str, str]:
    return {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-used": str(5000 - remaining),
        "x-ratelimit-reset": str(int(NOW) + 1800),
        "x-ratelimit-resource": resource,
    }


def ok(data: Any = None, *, status: int = 200, raw: bytes | None = None, **headers: str) -> httpx.Response:
    content = raw if raw is not None else (b"" if data is None else json.dumps(data).encode())
    h = rate() | {k.replace("_", "-"): v for k, v in headers.items()}
    if raw is None and data is not None:
        h.setdefault("content-type", "application/json; charset=utf-8")
    return httpx.Response(status, content=content, headers=h)


class Server:
    """(method, path) → a handler or a queue of responses (the last one repeats); records requests."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: Any) -> None:
        """Answer with ``answers`` in turn (the last repeats); a single callable handles every request."""
        self.routes[(method, path)] = answers[0] if len(answers) == 1 and callable(answers[0]) else list(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return ok({"message": "Not Found", "status": "404"}, status=404)
        if callable(route):
            return route(request)
        return route.pop(0) if len(route) > 1 else route[0]

    def seen(self, method: str | None = None) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests if method is None or r.method == method]


class Sleeper:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


@pytest.fixture
async def make(server: Server, sleeper: Sleeper):
    clients: list[GitHubClient] = []

    def factory(**kw: Any) -> GitHubClient:
        options: dict[str, Any] = {
            "api_url": API,
            "repo": REPO,
            "token": READ,
            "write_token": WRITE,
            "transport": httpx.MockTransport(server),
            "sleep": sleeper,
            "rand": lambda: 0.5,
            "clock": lambda: NOW,
        }
        options.update(kw)
        client = GitHubClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


def pr_item(
    number: int = 41, *, head_repo: Any = REPO, head_ref: str = "update_flake_lock_action", **over: Any
) -> dict:
    """A pull-request-simple item as GitHub sends it (§2.1), with a head/base repo."""
    head: dict[str, Any] = {"ref": head_ref, "sha": HEAD, "label": f"alice:{head_ref}"}
    if head_repo is not None:
        head["repo"] = {"full_name": head_repo}
    else:
        head["repo"] = None  # the fork was deleted
    data = {
        "number": number,
        "node_id": f"PR_kwDO{number}",
        "state": "open",
        "draft": False,
        "title": "flake.lock: Update",
        "body": "Automated changes by the update-flake-lock GitHub Action.",
        "user": {"login": "github-actions[bot]", "type": "Bot"},
        "labels": [],
        "head": head,
        "base": {"ref": "main", "sha": BASE, "repo": {"full_name": REPO}},
        "html_url": f"https://github.com/{REPO}/pull/{number}",
        "created_at": "2026-08-16T00:04:11Z",
        "updated_at": "2026-08-16T00:04:12Z",
        "merged_at": None,
        "merge_commit_sha": "feed" + "0" * 36,
    }
    data.update(over)
    return data


def lock_files(server: Server, *numbers: int) -> None:
    for n in numbers:
        server.on("GET", f"/repos/{REPO}/pulls/{n}/files", ok([{"filename": "flake.lock", "status": "modified"}]))


# --- §1.2 request headers, §1.9 redirects ----------------------------------------------


async def test_every_request_kind_carries_ua_version_and_token_only_in_authorization(make, server: Server) -> None:
    """§1.2: User-Agent (even when configured empty), pinned version; token only in Authorization."""
    client = make(user_agent="")
    server.on("GET", f"/repos/{REPO}/pulls/41", ok(pr_item(mergeable=True, mergeable_state="clean")))
    server.on("PUT", f"/repos/{REPO}/pulls/41/merge", ok({"sha": "5d1e" + "3" * 36, "merged": True}))
    server.on("POST", f"/repos/{REPO}/issues/41/comments", ok({"id": 1}, status=201))
    server.on("POST", "/graphql", ok({"data": {"revertPullRequest": {"revertPullRequest": {"number": 41}}}}))
    await client.get_pull(41)
    await client.merge(41, HEAD, method="squash")
    await client.comment(41, "merged")
    await client.revert_pull("PR_kwDO41")
    assert len(server.requests) == 5
    for request in server.requests:
        assert request.headers["user-agent"].startswith("nfu-tui/")
        assert request.headers["x-github-api-version"] == "2022-11-28"
        assert request.headers["authorization"] in (f"Bearer {READ}", f"Bearer {WRITE}")
        others = [v for k, v in request.headers.items() if k != "authorization"]
        for token in (READ, WRITE):
            assert token not in str(request.url) and token.encode() not in request.content
            assert not any(token in v for v in others)
    merge = next(r for r in server.requests if r.method == "PUT")
    assert json.loads(merge.content) == {"sha": HEAD, "merge_method": "squash"}  # §2.6: full sha + method


async def test_cross_origin_redirect_drops_the_token(make, server: Server) -> None:
    """§1.9/pitfall 14: httpx follows a redirect to another host (e.g. raw contents) without Authorization."""
    client = make()
    elsewhere = "https://objects.example.test/blob/flake.lock"
    server.on(
        "GET",
        f"/repos/{REPO}/contents/flake.lock",
        ok({"type": "file", "encoding": "none", "content": "", "size": 4}),
        ok(status=302, location=elsewhere),
    )
    server.on("GET", "/blob/flake.lock", ok(raw=b"{}\n\n"))
    assert await client.file_at("flake.lock", HEAD) == b"{}\n\n"
    hop = server.requests[-1]
    assert hop.url.host == "objects.example.test" and "authorization" not in hop.headers


async def test_https_to_http_downgrade_drops_the_token(make, server: Server) -> None:
    client = make()
    server.on(
        "GET", f"/repos/{REPO}/pulls/41", ok(status=301, location="http://api.github.test/repositories/7/pulls/41")
    )
    server.on("GET", "/repositories/7/pulls/41", ok(pr_item(mergeable=True)))
    await client.get_pull(41)
    assert server.requests[-1].url.scheme == "http" and "authorization" not in server.requests[-1].headers


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirected_write_is_repeated_with_its_method_and_body(make, server: Server, status: int) -> None:
    """§1.9: a renamed repository redirects writes too; httpx alone would turn 301/302 into a GET
    (a comment would silently not be posted, a merge would read ``GET …/merge``)."""
    client = make()
    moved = f"{API}/repositories/42"
    server.on("POST", f"/repos/{REPO}/issues/41/comments", ok(status=status, location=f"{moved}/issues/41/comments"))
    server.on("POST", "/repositories/42/issues/41/comments", ok({"id": 5551, "body": "hi"}, status=201))
    server.on("GET", "/repositories/42/issues/41/comments", ok([]))  # where httpx would wrongly land
    server.on("PUT", f"/repos/{REPO}/pulls/41/merge", ok(status=status, location=f"{moved}/pulls/41/merge"))
    server.on("PUT", "/repositories/42/pulls/41/merge", ok({"sha": "5d1e" + "3" * 36, "merged": True}))
    server.on("GET", "/repositories/42/pulls/41/merge", ok(status=204))
    await client.comment(41, "hi")
    assert await client.merge(41, HEAD) == "5d1e" + "3" * 36
    redirected = [r for r in server.requests if r.url.path.startswith("/repositories/42")]
    assert [r.method for r in redirected] == ["POST", "PUT"]
    assert json.loads(redirected[0].content) == {"body": "hi"}
    assert json.loads(redirected[1].content)["sha"] == HEAD
    assert all(r.headers["authorization"] == f"Bearer {WRITE}" for r in redirected)


async def test_a_write_redirected_to_another_host_is_refused(make, server: Server) -> None:
    client = make()
    server.on("POST", f"/repos/{REPO}/issues/41/comments", ok(status=307, location="https://evil.example.test/c"))
    with pytest.raises(GitHubError, match="another host"):
        await client.comment(41, "hi")
    assert [r.url.host for r in server.requests] == ["api.github.test"]


@pytest.mark.parametrize("api_url", [API, GHE])
async def test_a_permanent_repo_redirect_is_remembered(make, server: Server, api_url: str) -> None:
    """§1.9 "301 = repeat at location, remember it": idle polling of a renamed repo stays one free 304."""
    client = make(api_url=api_url)
    prefix = httpx.URL(api_url).path.rstrip("/")
    etag = 'W/"a1b2c3"'

    def moved_pulls(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match") == etag:
            return ok(status=304, etag=etag)
        return ok([pr_item()], etag=etag)

    new_home = f"{api_url}/repositories/42"
    server.on(
        "GET", f"{prefix}/repos/{REPO}/pulls", ok(status=301, location=f"{new_home}/pulls?state=open&per_page=100")
    )
    server.on("GET", f"{prefix}/repositories/42/pulls", moved_pulls)
    server.on("GET", f"{prefix}/repositories/42/pulls/41/files", ok([{"filename": "flake.lock"}]))
    server.on("GET", "/user", ok(status=301, location=f"{api_url}/user/7"))  # not under the repo: not a move
    server.on("GET", "/user/7", ok({"login": "alice"}))
    server.on("GET", f"{prefix}/repositories/42/pulls/41", ok(pr_item()))
    first = await client.list_update_prs()
    assert [pr.number for pr in first] == [41]
    server.requests.clear()
    assert [pr.number for pr in await client.list_update_prs()] == [41]
    assert server.seen() == [f"GET {prefix}/repositories/42/pulls"]
    assert server.requests[0].headers["if-none-match"] == etag
    if api_url == API:
        await client.viewer_login()
        server.requests.clear()
        await client.get_pull(41, wait_mergeable=False)
        assert server.seen() == [f"GET {prefix}/repositories/42/pulls/41"]


async def test_a_temporary_redirect_is_not_remembered(make, server: Server) -> None:
    client = make()
    server.on("GET", f"/repos/{REPO}/pulls/41", ok(status=307, location=f"{API}/repositories/42/pulls/41"))
    server.on("GET", "/repositories/42/pulls/41", ok(pr_item(mergeable=True)))
    await client.get_pull(41)
    await client.get_pull(41)
    assert server.seen() == [f"GET /repos/{REPO}/pulls/41", "GET /repositories/42/pulls/41"] * 2


# --- §1.6 pagination, §1.7 conditional requests ------------------------------------------


async def test_relative_next_links_resolve_against_the_request_url(make, server: Server) -> None:
    """RFC 8288: a ``link`` target may be relative; on GHE (``/api/v3``) it must not be prefixed twice."""
    client = make(api_url=GHE)
    server.on(
        "GET",
        f"/api/v3/repos/{REPO}/pulls/41/files",
        ok(
            [{"filename": "flake.lock"}],
            link='</api/v3/repositories/42/pulls/41/files?per_page=100&page=2>; rel="next"',
        ),
    )
    server.on(
        "GET",
        "/api/v3/repositories/42/pulls/41/files",
        ok([{"filename": "hosts/web/flake.lock"}], link='<?per_page=100&page=3>; rel="next"'),
    )
    assert await client.pr_files(41) == ("flake.lock", "hosts/web/flake.lock", "hosts/web/flake.lock")
    assert [str(r.url) for r in server.requests][1:] == [
        "https://ghe.corp.test/api/v3/repositories/42/pulls/41/files?per_page=100&page=2",
        "https://ghe.corp.test/api/v3/repositories/42/pulls/41/files?per_page=100&page=3",
    ]


async def test_links_may_name_the_loopback_host_differently(make, server: Server) -> None:
    """A local server configured as ``localhost`` may write ``127.0.0.1`` in its links: same host."""
    client = make(api_url="http://localhost:8765")
    server.on(
        "GET",
        f"/repos/{REPO}/pulls/41/files",
        ok(
            [{"filename": "flake.lock"}],
            link='<http://127.0.0.1:8765/repositories/42/pulls/41/files?page=2>; rel="next"',
        ),
    )
    server.on("GET", "/repositories/42/pulls/41/files", ok([{"filename": "sub/flake.lock"}]))
    assert await client.pr_files(41) == ("flake.lock", "sub/flake.lock")
    assert server.requests[-1].headers["authorization"] == f"Bearer {READ}"


async def test_a_pr_that_moves_between_pages_is_listed_once(make, server: Server) -> None:
    """§1.6: a PR opened meanwhile pushes #41 from page 1 onto page 2; it must not supersede itself."""
    client = make()
    server.on(
        "GET",
        f"/repos/{REPO}/pulls",
        ok([pr_item(41)], link=f'<{API}/repositories/42/pulls?state=open&per_page=1&page=2>; rel="next"'),
    )
    server.on("GET", "/repositories/42/pulls", ok([pr_item(41)]))
    lock_files(server, 41)
    prs = await client.list_update_prs()
    assert [(pr.number, pr.superseded_by) for pr in prs] == [(41, None)]


async def test_weak_etag_and_last_modified_only_and_304_rate_headers(make, server: Server) -> None:
    """§1.7: validators are sent back verbatim; a bodyless 304 reuses the body and updates the budget."""
    client = make()
    modified = "Sun, 16 Aug 2026 00:04:12 GMT"
    server.on(
        "GET",
        f"/repos/{REPO}/pulls/41",
        ok(pr_item(mergeable=True), etag='W/"0b1c"'),
        ok(status=304, **rate(4321)),
    )
    server.on(
        "GET",
        f"/repos/{REPO}/commits/{HEAD}/check-runs",
        ok({"total_count": 0, "check_runs": []}, last_modified=modified),
        ok(status=304),
    )
    server.on("GET", f"/repos/{REPO}/commits/{HEAD}/status", ok({"state": "pending", "total_count": 0, "statuses": []}))
    await client.get_pull(41)
    await client.ci_status(HEAD)
    again = await client.get_pull(41)
    assert again.number == 41 and again.mergeable is True
    assert client.rate.remaining == 4321
    assert (await client.ci_status(HEAD)).verdict is CIVerdict.NO_CI
    pull_again = [r for r in server.requests if r.url.path.endswith("/pulls/41")][1]
    runs_again = [r for r in server.requests if r.url.path.endswith("/check-runs")][1]
    assert pull_again.headers["if-none-match"] == 'W/"0b1c"'
    assert runs_again.headers["if-modified-since"] == modified and "if-none-match" not in runs_again.headers


# --- §2.1, §5.2, §5.6 detection ----------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "detected"),
    [
        ({}, True),
        ({"head_repo": "mallory/nixos-config"}, False),  # a fork's branch with the same name
        ({"head_repo": None}, False),  # a deleted fork
        ({"head_repo": "mallory/nixos-config", "head_ref": "patch-1"}, False),  # title match from a fork
        ({"head_repo": "ALICE/NixOS-Config"}, True),  # case-insensitive
        ({"user": None, "body": None, "labels": None, "draft": None, "mergeable_state": "queued"}, True),
    ],
)
async def test_detection_only_trusts_heads_in_the_repository(make, server: Server, over: dict, detected: bool) -> None:
    """§5.2 ``push-to-fork`` is opt-in: by default a head outside the repository is not an update PR."""
    client = make()
    server.on("GET", f"/repos/{REPO}/pulls", ok([pr_item(**over)]))
    lock_files(server, 41)
    prs = await client.list_update_prs()
    assert [pr.number for pr in prs] == ([41] if detected else [])
    if detected and "user" in over:
        pr = prs[0]
        assert (pr.author, pr.body, pr.labels, pr.draft, pr.mergeable_state) == ("", "", (), False, "unknown")


def test_draft_is_read_from_mergeable_state_when_the_flag_is_absent() -> None:
    """§2.3: ``mergeable_state: "draft"`` (older servers) marks a draft even without ``draft``."""
    item = pr_item(mergeable=False, mergeable_state="draft")
    del item["draft"]
    assert p.pr_from_json(item).draft is True
    assert p.pr_from_json(pr_item()).draft is False


def test_detection_rule_trusts_configured_fork_heads() -> None:
    item = pr_item(head_repo="alice-bot/nixos-config")
    assert not p.is_update_pr(item, DetectionRule(repo=REPO))
    assert p.is_update_pr(item, DetectionRule(repo=REPO, fork_repos=("Alice-Bot/NixOS-Config",)))
    bare = pr_item()
    del bare["head"]["repo"], bare["base"]["repo"]  # trimmed bodies: nothing says it is a fork
    assert p.is_update_pr(bare, DetectionRule(repo=REPO))
    bare["head"]["label"] = "mallory:update_flake_lock_action"
    assert not p.is_update_pr(bare, DetectionRule(repo=REPO))


async def test_fork_heads_can_be_trusted_through_the_client(make, server: Server) -> None:
    client = make(fork_repos=["alice-bot/nixos-config"])
    server.on("GET", f"/repos/{REPO}/pulls", ok([pr_item(head_repo="alice-bot/nixos-config")]))
    lock_files(server, 41)
    assert [pr.number for pr in await client.list_update_prs()] == [41]


# --- §2.7-2.9 CI ---------------------------------------------------------------------------


async def test_check_runs_and_statuses_are_read_across_pages(make, server: Server) -> None:
    """§2.8 ``check_runs`` wrapper over two pages (a ``stale`` run on page 2); §2.7 statuses paginated."""
    client = make()
    run = {"status": "completed", "conclusion": "success", "head_sha": HEAD}
    server.on(
        "GET",
        f"/repos/{REPO}/commits/{HEAD}/check-runs",
        ok(
            {"total_count": 2, "check_runs": [run | {"id": 1, "name": "build"}]},
            link=f'<{API}/repositories/42/commits/{HEAD}/check-runs?filter=latest&per_page=1&page=2>; rel="next"',
        ),
    )
    server.on(
        "GET",
        f"/repositories/42/commits/{HEAD}/check-runs",
        ok({"total_count": 2, "check_runs": [run | {"id": 2, "name": "eval", "conclusion": "stale"}]}),
    )
    server.on(
        "GET",
        f"/repos/{REPO}/commits/{HEAD}/status",
        ok(
            {"state": "failure", "total_count": 2, "statuses": [{"context": "ci/a", "state": "success"}]},
            link=f'</repositories/42/commits/{HEAD}/status?per_page=1&page=2>; rel="next"',
        ),
    )
    server.on(
        "GET",
        f"/repositories/42/commits/{HEAD}/status",
        ok({"state": "failure", "total_count": 2, "statuses": [{"context": "ci/b", "state": "error"}]}),
    )
    ci = await client.ci_status(HEAD)
    assert ci.verdict is CIVerdict.RED and set(ci.failing) == {"eval", "ci/b"}


# --- §2.10 contents --------------------------------------------------------------------------


async def test_truncated_base64_content_falls_back_to_the_raw_media_type(make, server: Server) -> None:
    """§2.10: for a large file a server may send an empty or partial ``content``; ``size`` tells."""
    client = make()
    full = b'{"nodes": {}, "root": "root", "version": 7}\n' * 3
    server.on(
        "GET",
        f"/repos/{REPO}/contents/flake.lock",
        lambda r: (
            ok(raw=full)
            if r.headers["accept"] == "application/vnd.github.raw+json"
            else ok({"type": "file", "encoding": "base64", "content": "", "size": len(full)})
        ),
    )
    assert await client.file_at("flake.lock", HEAD) == full
    assert server.requests[-1].headers["accept"] == "application/vnd.github.raw+json"


def test_contents_payload_checks_size() -> None:
    data = b"abc\n"
    good = {"type": "file", "encoding": "base64", "content": base64.b64encode(data).decode(), "size": 4}
    assert p.contents_payload(good, "flake.lock") == data
    assert p.contents_payload(good | {"size": 999}, "flake.lock") is None
    assert p.contents_payload(good | {"size": None}, "flake.lock") == data  # size unknown: trust content


async def test_explain_reads_a_lock_in_a_flake_sub_directory(make, server: Server) -> None:
    """§5.2 ``path-to-flake-dir``: the lock is ``<dir>/flake.lock`` and keeps its literal ``/``."""
    client = make()

    def lock(rev: str) -> bytes:
        node = {
            "locked": {
                "type": "github",
                "owner": "NixOS",
                "repo": "nixpkgs",
                "rev": rev,
                "narHash": "sha256-A=",
                "lastModified": 1_780_000_000,
            },
            "original": {"type": "github", "owner": "NixOS", "repo": "nixpkgs"},
        }
        return json.dumps(
            {"nodes": {"nixpkgs": node, "root": {"inputs": {"nixpkgs": "nixpkgs"}}}, "root": "root", "version": 7}
        ).encode()

    locks = {BASE: lock("a" * 40), HEAD: lock("b" * 40)}
    server.on("GET", f"/repos/{REPO}/pulls/41/files", ok([{"filename": "hosts/fleet/flake.lock"}]))
    server.on(
        "GET",
        f"/repos/{REPO}/contents/hosts/fleet/flake.lock",
        lambda r: ok(
            {"type": "file", "encoding": "base64", "content": base64.b64encode(locks[r.url.params["ref"]]).decode()}
        ),
    )
    server.on(
        "GET",
        f"/repos/NixOS/nixpkgs/compare/{'a' * 40}...{'b' * 40}",
        ok({"status": "ahead", "ahead_by": 1, "behind_by": 0, "total_commits": 1, "commits": []}),
    )
    pr = p.pr_from_json(pr_item())
    explanation = await client.explain(pr)
    assert explanation.lock_path == "hosts/fleet/flake.lock" and explanation.lock_only is True
    assert [c.path for c in explanation.changes] == [("nixpkgs",)]
    assert f"/repos/{REPO}/contents/hosts/fleet/flake.lock" in {
        r.url.raw_path.decode().split("?")[0] for r in server.requests
    }


# --- §2.11 compare ------------------------------------------------------------------------


async def test_compare_from_a_server_that_ignores_per_page(make, server: Server) -> None:
    """§2.11: a server may answer with its 250-commit cap and no ``link``: truncated, true totals kept."""
    client = make()
    commits = [{"sha": f"{i:040x}", "commit": {"message": f"pkg{i}: 1 -> 2"}} for i in range(250)]
    server.on(
        "GET",
        f"/repos/NixOS/nixpkgs/compare/{'a' * 40}...{'b' * 40}",
        ok(
            {
                "status": "ahead",
                "ahead_by": 2143,
                "behind_by": 0,
                "total_commits": 2143,
                "commits": commits,
                "files": [{"filename": "x"}],
            }
        ),
    )
    cmp = await client.compare_commits("NixOS", "nixpkgs", "a" * 40, "b" * 40, max_commits=2500)
    assert (len(cmp.commits), cmp.total_commits, cmp.truncated) == (250, 2143, True)


# --- §2.13 refs -------------------------------------------------------------------------------


async def test_branch_head_with_a_null_object_is_a_typed_error(make, server: Server) -> None:
    client = make()
    server.on("GET", f"/repos/{REPO}/git/ref/heads/main", ok({"ref": "refs/heads/main", "object": None}))
    with pytest.raises(GitHubError, match="unexpected ref response"):
        await client.branch_head("main")


# --- §3.1 GraphQL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "headers"),
    [
        ({"errors": [{"message": "API rate limit exceeded for user ID 1234567."}]}, rate(0, "graphql")),
        (
            {"data": None, "errors": [{"type": "RATE_LIMITED", "message": "API rate limit already exceeded"}]},
            rate(0, "graphql"),
        ),
        (
            {
                "message": "API rate limit exceeded for user ID 1234567.",
                "documentation_url": "https://docs.github.com/graphql/overview/rate-limits",
            },
            rate(0, "graphql"),
        ),
        ({"errors": [{"message": SECONDARY}]}, rate(4000, "graphql")),
    ],
)
async def test_graphql_rate_limits_with_http_200(make, server: Server, payload: dict, headers: dict) -> None:
    """§3.1/pitfall 12: primary and secondary GraphQL limits may come back as HTTP 200 in several shapes."""
    client = make()
    server.on("POST", "/graphql", httpx.Response(200, json=payload, headers=headers))
    with pytest.raises(GitHubRateLimited) as info:
        await client.revert_pull("PR_kwDO41")
    assert info.value.wait_seconds >= 1
    assert client.rate.resource == "core" and client.rates["graphql"].remaining == int(headers["x-ratelimit-remaining"])


def test_graphql_message_only_body_is_an_error_not_a_missing_field() -> None:
    body = json.dumps({"message": "Bad credentials", "documentation_url": "https://docs.github.com/graphql"}).encode()
    with pytest.raises(GraphQLError, match="Bad credentials"):
        p.parse_graphql(200, {}, body, now=NOW).get("revertPullRequest")
