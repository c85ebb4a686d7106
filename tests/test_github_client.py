"""GitHubClient over httpx.MockTransport with recorded-style GitHub bodies."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from nfu_tui.clients._github_protocol import CommitInfo as CI
from nfu_tui.clients._github_protocol import Comparison as Cmp
from nfu_tui.clients._github_protocol import pr_from_json
from nfu_tui.clients.cache import CachedResponse, DiskCache, ETagCache
from nfu_tui.clients.github import GitHubClient, PRExplanation, nixpkgs_headline
from nfu_tui.domain import flakelock
from nfu_tui.errors import (
    ConfigError,
    GitHubAuthError,
    GitHubError,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubServerError,
    GitHubUnavailable,
    GraphQLError,
    MergeConflict,
    NotMergeable,
)
from nfu_tui.models import CIVerdict, UpdatePR

API = "https://api.github.test"
REPO = "alice/nixos-config"
READ = "ghp_readTOKENreadTOKENreadTOKEN0000001"
WRITE = "ghp_writeTOKENwriteTOKENwriteTOKEN00002"
HEAD = "9f3c" + "1" * 36
BASE = "77aa" + "2" * 36
MERGE_SHA = "5d1e" + "3" * 36
NOW = 1_780_000_000.0
HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

Handler = Callable[[httpx.Request], httpx.Response]


def rate_headers(remaining: int = 4990, resource: str = "core") -> dict[str, str]:
    return {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-used": str(5000 - remaining),
        "x-ratelimit-reset": str(int(NOW) + 1800),
        "x-ratelimit-resource": resource,
        "x-github-request-id": "C0DE:1:2:3",
    }


def reply(
    status: int = 200, data: Any = None, *, raw: bytes | None = None, headers: dict | None = None, etag: bool = False
) -> httpx.Response:
    content = raw if raw is not None else (b"" if data is None else json.dumps(data).encode())
    h = rate_headers() | (headers or {})
    if etag:
        h["etag"] = '"' + hashlib.sha1(content).hexdigest() + '"'
    if raw is None and data is not None:
        h.setdefault("content-type", "application/json; charset=utf-8")
    return httpx.Response(status, content=content, headers=h)


def pr_item(
    number: int = 41,
    *,
    head: str = HEAD,
    head_ref: str = "update_flake_lock_action",
    created: str = "2026-08-16T00:04:11Z",
    **over: Any,
) -> dict:
    data = {
        "number": number,
        "node_id": f"PR_node{number}",
        "state": "open",
        "draft": False,
        "title": "flake.lock: Update",
        "body": "Automated changes by the update-flake-lock GitHub Action.",
        "user": {"login": "github-actions[bot]", "type": "Bot"},
        "labels": [],
        "head": {"ref": head_ref, "sha": head},
        "base": {"ref": "main", "sha": BASE},
        "html_url": f"https://github.com/{REPO}/pull/{number}",
        "created_at": created,
        "updated_at": created,
        "merged_at": None,
        "merge_commit_sha": "feed" + "0" * 36,
    }
    data.update(over)
    return data


class FakeAPI:
    """A tiny router: (method, path) → handler or a queue of responses; records requests."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler | list[httpx.Response]] = {}
        self.matchers: list[tuple[Callable[[httpx.Request], bool], Handler]] = []
        self.requests: list[httpx.Request] = []

    def add(self, method: str, path: str, handler: Handler | list[httpx.Response] | httpx.Response) -> None:
        self.routes[(method, path)] = [handler] if isinstance(handler, httpx.Response) else handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            route = next((handler for match, handler in self.matchers if match(request)), None)
        if route is None:
            return reply(404, {"message": "Not Found", "status": "404"})
        if callable(route):
            return route(request)
        return route.pop(0) if len(route) > 1 else route[0]

    def paths(self, method: str | None = None) -> list[str]:
        return [r.url.path for r in self.requests if method is None or r.method == method]


class Sleeper:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


@pytest.fixture
async def make_client(api: FakeAPI, sleeper: Sleeper):
    clients: list[GitHubClient] = []

    def factory(**kw: Any) -> GitHubClient:
        options: dict[str, Any] = dict(
            api_url=API,
            repo=REPO,
            token=READ,
            write_token=WRITE,
            transport=httpx.MockTransport(api),
            sleep=sleeper,
            rand=lambda: 0.5,
            clock=lambda: NOW,
        )
        options.update(kw)
        client = GitHubClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(make_client) -> GitHubClient:
    return make_client()


def assert_no_secret(err: BaseException) -> None:
    for text in (str(err), repr(err), getattr(err, "message", ""), getattr(err, "hint", "")):
        assert READ not in text and WRITE not in text


# --- basics -------------------------------------------------------------------------


async def test_headers_and_token_placement(client: GitHubClient, api: FakeAPI) -> None:
    api.add("GET", "/user", reply(200, {"login": "alice"}))
    api.add("GET", f"/repos/{REPO}/pulls/41", reply(200, pr_item(mergeable=True, mergeable_state="clean")))
    await client.get_pull(41)
    await client.viewer_login()
    read, user = api.requests
    assert read.headers["accept"] == "application/vnd.github+json"
    assert read.headers["x-github-api-version"] == "2022-11-28"
    assert read.headers["user-agent"].startswith("nfu-tui/")
    assert read.headers["authorization"] == f"Bearer {READ}"
    assert user.headers["authorization"] == f"Bearer {WRITE}"  # who performs writes
    for request in api.requests:
        assert READ not in str(request.url) and WRITE not in str(request.url)


async def test_repr_and_vars_hide_tokens(client: GitHubClient) -> None:
    assert READ not in repr(client) and WRITE not in repr(client)
    assert REPO in repr(client)
    assert READ not in repr(vars(client)) and WRITE not in repr(vars(client))


async def test_anonymous_client_sends_no_authorization(make_client, api: FakeAPI) -> None:
    client = make_client(token=None, write_token=None)
    api.add("GET", f"/repos/{REPO}/pulls/41", reply(200, pr_item(mergeable=True)))
    await client.get_pull(41)
    assert "authorization" not in api.requests[0].headers
    assert "anonymous" in repr(client)


def test_bad_repo_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        GitHubClient(api_url=API, repo="just-a-name", token=READ)


async def test_rate_budget_is_exposed(client: GitHubClient, api: FakeAPI) -> None:
    api.add("GET", f"/repos/{REPO}/pulls/41", reply(200, pr_item(mergeable=True), headers=rate_headers(1234)))
    await client.get_pull(41)
    assert client.rate.remaining == 1234 and client.rate.limit == 5000 and client.rate.resource == "core"
    assert client.requests_made == 1


def test_rate_budget_only_goes_down_within_a_window() -> None:
    """Concurrent answers arrive out of order: an earlier (higher) count never replaces a later one, a new
    window (another reset time) does."""
    client = GitHubClient(api_url=API, repo="alice/nixcfg", token=READ)

    def seen(remaining: int, reset: int) -> int | None:
        client._note_headers(httpx.Headers({"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(remaining),
                                            "x-ratelimit-reset": str(reset), "x-ratelimit-resource": "core"}))
        return client.rate.remaining

    assert seen(4980, 100) == 4980
    assert seen(4995, 100) == 4980  # overtaken
    assert seen(4979, 100) == 4979
    assert seen(4999, 200) == 4999  # the next window


async def test_deprecation_is_logged_once(client: GitHubClient, api: FakeAPI, caplog: pytest.LogCaptureFixture) -> None:
    sunset = {"deprecation": "Sat, 01 Jan 2028 00:00:00 GMT", "sunset": "Fri, 10 Mar 2028 00:00:00 GMT"}
    api.add("GET", f"/repos/{REPO}/pulls/41", reply(200, pr_item(mergeable=True), headers=sunset))
    with caplog.at_level("WARNING", logger="nfu_tui.clients.github"):
        await client.get_pull(41)
        await client.get_pull(41)
    warnings = [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(warnings) == 1 and "2022-11-28" in warnings[0].getMessage()


# --- detection, ETags, pagination -----------------------------------------------------


def files_reply(*names: str) -> httpx.Response:
    return reply(200, [{"filename": n, "status": "modified"} for n in names], etag=True)


async def test_list_update_prs_detects_confirms_and_orders(client: GitHubClient, api: FakeAPI) -> None:
    pulls = [
        pr_item(40, head="a" * 40, created="2026-08-09T00:00:00Z"),
        pr_item(
            45,
            head="b" * 40,
            head_ref="flake-bot",
            created="2026-08-16T00:00:00Z",
            title="Update Nix flake inputs",
            labels=[{"name": "automated"}],
        ),
        pr_item(
            46,
            head="c" * 40,
            head_ref="dependabot/github_actions/x",
            title="Bump actions/checkout from 4 to 5",
            labels=[{"name": "dependencies"}],
        ),
        pr_item(47, head="d" * 40, head_ref="web-02", title="Add host web-02"),
        pr_item(48, head="e" * 40, head_ref="revert-39-update_flake_lock_action", title='Revert "flake.lock: Update"'),
    ]
    api.add("GET", f"/repos/{REPO}/pulls", reply(200, pulls, etag=True))
    api.add("GET", f"/repos/{REPO}/pulls/40/files", files_reply("flake.lock"))
    api.add("GET", f"/repos/{REPO}/pulls/45/files", files_reply("flake.lock", "flake.nix"))
    api.add("GET", f"/repos/{REPO}/pulls/46/files", files_reply(".github/workflows/ci.yml"))
    prs = await client.list_update_prs()
    assert [pr.number for pr in prs] == [45, 40]
    assert prs[0].superseded_by is None and prs[1].superseded_by == 45
    assert prs[0].files == ("flake.lock", "flake.nix") and prs[0].lock_only is False
    assert prs[1].lock_only is True
    listing = api.requests[0]
    assert listing.url.params["state"] == "open" and listing.url.params["per_page"] == "100"
    assert f"/repos/{REPO}/pulls/47/files" not in api.paths()  # not a candidate
    assert f"/repos/{REPO}/pulls/48/files" not in api.paths()  # revert PRs are not updates


async def test_idle_polling_is_one_conditional_request(client: GitHubClient, api: FakeAPI) -> None:
    listing = reply(200, [pr_item()], etag=True)
    etag = listing.headers["etag"]

    def pulls(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers=rate_headers() | {"etag": etag})
        return listing

    api.add("GET", f"/repos/{REPO}/pulls", pulls)
    api.add("GET", f"/repos/{REPO}/pulls/41/files", files_reply("flake.lock"))
    first = await client.list_update_prs()
    assert client.requests_made == 2
    for _ in range(11):
        assert await client.list_update_prs() == first
    assert client.requests_made == 13
    assert api.paths() == [f"/repos/{REPO}/pulls", f"/repos/{REPO}/pulls/41/files"] + [f"/repos/{REPO}/pulls"] * 11
    assert all(r.headers.get("if-none-match") == etag for r in api.requests[2:])


async def test_changed_list_reuses_files_by_head_sha_and_refetches_on_push(client: GitHubClient, api: FakeAPI) -> None:
    state = {"pulls": [pr_item()]}
    api.add("GET", f"/repos/{REPO}/pulls", lambda r: reply(200, state["pulls"], etag=True))
    api.add("GET", f"/repos/{REPO}/pulls/41/files", files_reply("flake.lock"))
    await client.list_update_prs()
    state["pulls"] = [pr_item(updated_at="2026-08-16T09:00:00Z")]  # list changed, head did not
    await client.list_update_prs()
    assert api.paths().count(f"/repos/{REPO}/pulls/41/files") == 1
    state["pulls"] = [pr_item(head="f" * 40)]  # force-pushed head
    prs = await client.list_update_prs()
    assert api.paths().count(f"/repos/{REPO}/pulls/41/files") == 2
    assert prs[0].head_sha == "f" * 40


async def test_failed_follow_up_does_not_pin_a_stale_list(client: GitHubClient, api: FakeAPI) -> None:
    state = {"pulls": [pr_item()]}

    def pulls(request: httpx.Request) -> httpx.Response:
        listing = reply(200, state["pulls"], etag=True)
        if request.headers.get("if-none-match") == listing.headers["etag"]:
            return httpx.Response(304, headers=rate_headers())
        return listing

    api.add("GET", f"/repos/{REPO}/pulls", pulls)
    api.add("GET", f"/repos/{REPO}/pulls/41/files", files_reply("flake.lock"))
    assert [pr.number for pr in await client.list_update_prs()] == [41]
    state["pulls"] = [pr_item(), pr_item(50, head="5" * 40, created="2026-08-23T00:00:00Z")]
    api.add("GET", f"/repos/{REPO}/pulls/50/files", reply(404, {"message": "Not Found"}))
    with pytest.raises(GitHubNotFound):
        await client.list_update_prs()
    api.add("GET", f"/repos/{REPO}/pulls/50/files", files_reply("flake.lock"))
    prs = await client.list_update_prs()  # the listing now answers 304, yet #50 is found
    assert [pr.number for pr in prs] == [50, 41]
    assert api.requests[-2].headers.get("if-none-match")


async def test_pagination_follows_next_links_verbatim(client: GitHubClient, api: FakeAPI) -> None:
    page2 = f"{API}/repositories/42/pulls?state=open&per_page=100&page=2"
    api.add(
        "GET",
        f"/repos/{REPO}/pulls",
        reply(200, [pr_item(41)], headers={"link": f'<{page2}>; rel="next", <{page2}>; rel="last"'}),
    )
    api.add("GET", "/repositories/42/pulls", reply(200, [pr_item(50, head="9" * 40, created="2026-08-17T00:00:00Z")]))
    api.add("GET", f"/repos/{REPO}/pulls/41/files", files_reply("flake.lock"))
    api.add("GET", f"/repos/{REPO}/pulls/50/files", files_reply("flake.lock"))
    prs = await client.list_update_prs()
    assert [pr.number for pr in prs] == [50, 41]
    assert str(api.requests[1].url) == page2


async def test_next_link_to_another_host_is_refused(client: GitHubClient, api: FakeAPI) -> None:
    evil = "https://evil.example/steal?page=2"
    api.add("GET", f"/repos/{REPO}/pulls", reply(200, [], headers={"link": f'<{evil}>; rel="next"'}))
    with pytest.raises(GitHubError, match="another host") as info:
        await client.list_update_prs()
    assert len(api.requests) == 1
    assert_no_secret(info.value)


async def test_pr_files_paginates(client: GitHubClient, api: FakeAPI) -> None:
    nxt = f"{API}/repos/{REPO}/pulls/41/files?per_page=100&page=2"
    first = [{"filename": f"hosts/h{i}.nix"} for i in range(100)]

    def files(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "2":
            return reply(200, [{"filename": "flake.lock"}])
        return reply(200, first, headers={"link": f'<{nxt}>; rel="next"'})

    api.add("GET", f"/repos/{REPO}/pulls/41/files", files)
    names = await client.pr_files(41)
    assert len(names) == 101 and names[-1] == "flake.lock"


# --- PR detail ------------------------------------------------------------------------


async def test_get_pull_polls_while_mergeable_is_null(client: GitHubClient, api: FakeAPI, sleeper: Sleeper) -> None:
    api.add(
        "GET",
        f"/repos/{REPO}/pulls/41",
        [
            reply(200, pr_item(mergeable=None, mergeable_state="unknown")),
            reply(200, pr_item(mergeable=None, mergeable_state="unknown")),
            reply(200, pr_item(mergeable=True, mergeable_state="clean")),
        ],
    )
    pr = await client.get_pull(41)
    assert pr.mergeable is True and pr.mergeable_state == "clean"
    assert sleeper.calls == [1, 2]


async def test_get_pull_gives_up_after_about_30_seconds(client: GitHubClient, api: FakeAPI, sleeper: Sleeper) -> None:
    api.add("GET", f"/repos/{REPO}/pulls/41", reply(200, pr_item(mergeable=None, mergeable_state="unknown")))
    pr = await client.get_pull(41)
    assert pr.mergeable is None and pr.mergeable_state == "unknown"
    assert sleeper.calls == [1, 2, 4, 8, 15] and len(api.requests) == 6


async def test_get_pull_does_not_wait_for_closed_or_when_told(
    client: GitHubClient, api: FakeAPI, sleeper: Sleeper
) -> None:
    api.add("GET", f"/repos/{REPO}/pulls/41", reply(200, pr_item(state="closed", merged=True, mergeable=None)))
    api.add("GET", f"/repos/{REPO}/pulls/42", reply(200, pr_item(42, mergeable=None)))
    merged = await client.get_pull(41)
    assert merged.merged and merged.state == "closed"
    await client.get_pull(42, wait_mergeable=False)
    assert sleeper.calls == []


async def test_ci_status_combines_check_runs_and_statuses(client: GitHubClient, api: FakeAPI) -> None:
    nxt = f"{API}/repos/{REPO}/commits/{HEAD}/check-runs?filter=latest&per_page=100&page=2"

    def runs(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "2":
            return reply(
                200,
                {
                    "total_count": 2,
                    "check_runs": [{"id": 902, "name": "build hosts", "status": "in_progress", "conclusion": None}],
                },
            )
        return reply(
            200,
            {
                "total_count": 2,
                "check_runs": [{"id": 901, "name": "nix flake check", "status": "completed", "conclusion": "success"}],
            },
            headers={"link": f'<{nxt}>; rel="next"'},
        )

    api.add("GET", f"/repos/{REPO}/commits/{HEAD}/check-runs", runs)
    api.add(
        "GET",
        f"/repos/{REPO}/commits/{HEAD}/status",
        reply(200, {"state": "pending", "sha": HEAD, "total_count": 0, "statuses": []}),
    )
    ci = await client.ci_status(HEAD)
    assert ci.verdict is CIVerdict.PENDING and ci.pending == ("build hosts",)
    assert api.requests[0].url.params["filter"] == "latest"


async def test_ci_status_no_ci_and_required_checks(make_client, api: FakeAPI) -> None:
    client = make_client(required_checks=["nix flake check"])
    api.add("GET", f"/repos/{REPO}/commits/{HEAD}/check-runs", reply(200, {"total_count": 0, "check_runs": []}))
    api.add(
        "GET",
        f"/repos/{REPO}/commits/{HEAD}/status",
        reply(200, {"state": "pending", "total_count": 0, "statuses": []}),
    )
    assert (await client.ci_status(HEAD)).verdict is CIVerdict.NO_CI
    api.add(
        "GET",
        f"/repos/{REPO}/commits/{BASE}/check-runs",
        reply(
            200,
            {
                "total_count": 1,
                "check_runs": [{"id": 1, "name": "lint", "status": "completed", "conclusion": "success"}],
            },
        ),
    )
    api.add(
        "GET",
        f"/repos/{REPO}/commits/{BASE}/status",
        reply(200, {"state": "pending", "total_count": 0, "statuses": []}),
    )
    ci = await client.ci_status(BASE)
    assert ci.verdict is CIVerdict.PENDING and "'nix flake check' expected" in ci.summary


# --- contents and compare -------------------------------------------------------------

LOCK = json.dumps({"nodes": {"root": {"inputs": {}}}, "root": "root", "version": 7}, indent=2).encode() + b"\n"


def contents_reply(data: bytes) -> httpx.Response:
    b64 = base64.b64encode(data).decode()
    wrapped = "\n".join(b64[i : i + 60] for i in range(0, len(b64), 60)) + "\n"
    return reply(
        200,
        {
            "type": "file",
            "name": "flake.lock",
            "path": "flake.lock",
            "size": len(data),
            "sha": "a4f0",
            "encoding": "base64",
            "content": wrapped,
        },
        etag=True,
    )


async def test_file_at_decodes_and_caches_by_sha_on_disk(make_client, api: FakeAPI, tmp_path: Path) -> None:
    api.add("GET", f"/repos/{REPO}/contents/flake.lock", contents_reply(LOCK))
    first = make_client(cache_dir=tmp_path)
    assert await first.file_at("flake.lock", HEAD) == LOCK
    assert api.requests[0].url.params["ref"] == HEAD
    second = make_client(cache_dir=tmp_path)  # a new process, same cache
    assert await second.file_at("flake.lock", HEAD) == LOCK
    assert second.requests_made == 0
    await second.file_at("flake.lock", "main")  # a branch is not immutable
    assert second.requests_made == 1


async def test_corrupt_disk_cache_is_ignored(make_client, api: FakeAPI, tmp_path: Path) -> None:
    api.add("GET", f"/repos/{REPO}/contents/flake.lock", contents_reply(LOCK))
    await make_client(cache_dir=tmp_path).file_at("flake.lock", HEAD)
    for f in tmp_path.rglob("*.json"):
        f.write_bytes(b"{not json")
    fresh = make_client(cache_dir=tmp_path)
    assert await fresh.file_at("flake.lock", HEAD) == LOCK
    assert fresh.requests_made == 1


async def test_file_at_nested_path_and_large_file(client: GitHubClient, api: FakeAPI) -> None:
    big = b"{" + b" " * 2_000_000 + b"}"

    def contents(request: httpx.Request) -> httpx.Response:
        if request.headers["accept"] == "application/vnd.github.raw+json":
            return reply(200, raw=big, headers={"content-type": "application/vnd.github.raw+json"})
        return reply(200, {"type": "file", "encoding": "none", "content": "", "size": len(big), "sha": "b1"})

    api.add("GET", f"/repos/{REPO}/contents/nix/dir x/flake.lock", contents)
    assert await client.file_at("nix/dir x/flake.lock", HEAD) == big
    assert api.requests[0].url.raw_path.startswith(f"/repos/{REPO}/contents/nix/dir%20x/flake.lock".encode())


async def test_file_at_missing_is_not_found(client: GitHubClient, api: FakeAPI) -> None:
    with pytest.raises(GitHubNotFound) as info:
        await client.file_at("flake.lock", BASE)
    assert_no_secret(info.value)


def compare_body(shas: list[str], total: int, status: str = "ahead") -> dict:
    return {
        "status": status,
        "ahead_by": total,
        "behind_by": 0,
        "total_commits": total,
        "html_url": "https://github.com/NixOS/nixpkgs/compare/x...y",
        "commits": [
            {
                "sha": s,
                "commit": {"message": f"pkg{s}: 1.0 -> 1.1\n\nbody {s}", "committer": {"date": "2026-02-05T10:00:00Z"}},
            }
            for s in shas
        ],
        "files": [],
    }


def paged_compare(total: int) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        per_page = int(request.url.params.get("per_page", "250"))
        page = int(request.url.params.get("page", "1"))
        shas = [f"{i:040x}" for i in range(total)][(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < total:
            headers["link"] = f'<{API}{request.url.path}?per_page={per_page}&page={page + 1}>; rel="next"'
        return reply(200, compare_body(shas, total), headers=headers)

    return handler


async def test_compare_collects_pages_and_is_bounded(make_client, api: FakeAPI, tmp_path: Path) -> None:
    old, new = "0" * 40, "f" * 40
    path = f"/repos/NixOS/nixpkgs/compare/{old}...{new}"
    api.add("GET", path, paged_compare(230))
    client = make_client(cache_dir=tmp_path)
    full = await client.compare_commits("NixOS", "nixpkgs", old, new)
    assert full.total_commits == 230 and len(full.commits) == 230 and not full.truncated
    assert full.commits[0].subject == f"pkg{0:040x}: 1.0 -> 1.1" and full.commits[0].body == f"body {0:040x}"
    assert client.requests_made == 3
    bounded = await client.compare_commits("NixOS", "nixpkgs", old, new, max_commits=150)
    assert len(bounded.commits) == 150 and bounded.truncated and bounded.ahead_by == 230
    assert client.requests_made == 5
    again = make_client(cache_dir=tmp_path)
    assert await again.compare_commits("nixos", "NIXPKGS", old, new) == full  # disk cache, owner case-insensitive
    assert again.requests_made == 0


async def test_compare_unknown_sha_is_not_found(client: GitHubClient) -> None:
    with pytest.raises(GitHubNotFound):
        await client.compare_commits("NixOS", "nixpkgs", "0" * 40, "1" * 40)


# --- errors, retries, rate limits -----------------------------------------------------


async def test_secondary_rate_limit_waits_retry_after(client: GitHubClient, api: FakeAPI, sleeper: Sleeper) -> None:
    limited = reply(
        403,
        {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."},
        headers={"retry-after": "7"},
    )
    api.add("GET", f"/repos/{REPO}/pulls/41", [limited, reply(200, pr_item(mergeable=True))])
    pr = await client.get_pull(41)
    assert pr.number == 41 and sleeper.calls == [7.5]


async def test_primary_exhaustion_raises_with_wait_instead_of_sleeping(
    client: GitHubClient, api: FakeAPI, sleeper: Sleeper
) -> None:
    headers = rate_headers(0) | {"x-ratelimit-reset": str(int(NOW) + 3000)}
    api.add(
        "GET",
        f"/repos/{REPO}/pulls",
        reply(403, {"message": "API rate limit exceeded for user ID 1."}, headers=headers),
    )
    with pytest.raises(GitHubRateLimited) as info:
        await client.list_update_prs()
    assert info.value.wait_seconds == 3001
    assert sleeper.calls == [] and len(api.requests) == 1
    assert client.rate.remaining == 0
    assert_no_secret(info.value)


async def test_5xx_backoff_for_gets(client: GitHubClient, api: FakeAPI, sleeper: Sleeper) -> None:
    api.add(
        "GET",
        f"/repos/{REPO}/pulls/41",
        [reply(502, raw=HTML_502), reply(503, {"message": "unavailable"}), reply(200, pr_item(mergeable=True))],
    )
    assert (await client.get_pull(41)).number == 41
    assert sleeper.calls == [0.75, 1.5]


async def test_5xx_gives_up_after_max_retries(make_client, api: FakeAPI, sleeper: Sleeper) -> None:
    client = make_client(max_retries=2)
    api.add("GET", f"/repos/{REPO}/pulls/41", reply(502, raw=HTML_502))
    with pytest.raises(GitHubServerError) as info:
        await client.get_pull(41)
    assert len(api.requests) == 3 and len(sleeper.calls) == 2
    assert "<html" not in str(info.value)


async def test_401_is_an_auth_error_without_the_token(client: GitHubClient, api: FakeAPI) -> None:
    api.add("GET", f"/repos/{REPO}/pulls", reply(401, {"message": "Bad credentials", "status": "401"}))
    with pytest.raises(GitHubAuthError) as info:
        await client.list_update_prs()
    assert_no_secret(info.value)
    assert len(api.requests) == 1


def failing_transport(exc_type: type[Exception], log: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        log.append(request)
        raise exc_type(f"boom while talking to {request.url.host}", request=request)

    return httpx.MockTransport(handler)


async def test_transport_errors_become_unavailable_after_retries(make_client, sleeper: Sleeper) -> None:
    seen: list[httpx.Request] = []
    client = make_client(transport=failing_transport(httpx.ConnectError, seen), max_retries=2)
    with pytest.raises(GitHubUnavailable) as info:
        await client.get_pull(41)
    assert len(seen) == 3 and len(sleeper.calls) == 2
    assert_no_secret(info.value)
    assert info.value.__cause__ is None


async def test_read_timeout_on_a_write_is_not_retried(make_client, sleeper: Sleeper) -> None:
    seen: list[httpx.Request] = []
    client = make_client(transport=failing_transport(httpx.ReadTimeout, seen))
    with pytest.raises(GitHubUnavailable, match="timed out") as info:
        await client.comment(41, "hello")
    assert len([r for r in seen if r.method == "POST"]) == 1
    assert_no_secret(info.value)


async def test_redirects_are_followed(client: GitHubClient, api: FakeAPI) -> None:
    api.add("GET", f"/repos/{REPO}/pulls/41", reply(301, headers={"location": f"{API}/repositories/42/pulls/41"}))
    api.add("GET", "/repositories/42/pulls/41", reply(200, pr_item(mergeable=True)))
    assert (await client.get_pull(41)).number == 41
    assert api.requests[1].headers["authorization"] == f"Bearer {READ}"  # same origin keeps auth


# --- merge ----------------------------------------------------------------------------


async def test_merge_sends_sha_guard_with_write_token(client: GitHubClient, api: FakeAPI) -> None:
    api.add(
        "PUT",
        f"/repos/{REPO}/pulls/41/merge",
        reply(200, {"sha": MERGE_SHA, "merged": True, "message": "Pull Request successfully merged"}),
    )
    sha = await client.merge(41, HEAD, method="squash", title="flake.lock: Update (#41)")
    assert sha == MERGE_SHA
    request = api.requests[0]
    assert request.headers["authorization"] == f"Bearer {WRITE}"
    assert json.loads(request.content) == {
        "sha": HEAD,
        "merge_method": "squash",
        "commit_title": "flake.lock: Update (#41)",
    }


async def test_merge_409_is_never_retried(client: GitHubClient, api: FakeAPI, sleeper: Sleeper) -> None:
    api.add(
        "PUT",
        f"/repos/{REPO}/pulls/41/merge",
        reply(409, {"message": "Head branch was modified. Review and try the merge again."}),
    )
    with pytest.raises(MergeConflict) as info:
        await client.merge(41, HEAD)
    assert len(api.requests) == 1 and sleeper.calls == []
    assert_no_secret(info.value)


async def test_merge_405_base_modified_is_retried(client: GitHubClient, api: FakeAPI, sleeper: Sleeper) -> None:
    base_moved = reply(405, {"message": "Base branch was modified. Review and try the merge again.", "status": "405"})
    api.add(
        "PUT", f"/repos/{REPO}/pulls/41/merge", [base_moved, base_moved, reply(200, {"sha": MERGE_SHA, "merged": True})]
    )
    assert await client.merge(41, HEAD) == MERGE_SHA
    assert sleeper.calls == [2.0, 2.0] and all(1 <= s <= 3 for s in sleeper.calls)


async def test_merge_405_base_modified_gives_up(client: GitHubClient, api: FakeAPI) -> None:
    api.add(
        "PUT",
        f"/repos/{REPO}/pulls/41/merge",
        reply(405, {"message": "Base branch was modified. Review and try the merge again."}),
    )
    with pytest.raises(NotMergeable) as info:
        await client.merge(41, HEAD)
    assert info.value.transient and len(api.requests) == 4


async def test_merge_other_405_surfaces_verbatim(client: GitHubClient, api: FakeAPI, sleeper: Sleeper) -> None:
    msg = 'Required status check "nix flake check" is expected.'
    api.add("PUT", f"/repos/{REPO}/pulls/41/merge", reply(405, {"message": msg}))
    with pytest.raises(NotMergeable) as info:
        await client.merge(41, HEAD)
    assert info.value.message == msg and len(api.requests) == 1 and sleeper.calls == []


async def test_merge_5xx_checks_the_outcome_instead_of_retrying(client: GitHubClient, api: FakeAPI) -> None:
    api.add("PUT", f"/repos/{REPO}/pulls/41/merge", reply(502, raw=HTML_502))
    api.add(
        "GET",
        f"/repos/{REPO}/pulls/41",
        reply(200, pr_item(state="closed", merged=True, merged_at="2026-08-16T02:00:00Z", merge_commit_sha=MERGE_SHA)),
    )
    assert await client.merge(41, HEAD) == MERGE_SHA
    assert api.paths("PUT") == [f"/repos/{REPO}/pulls/41/merge"]


async def test_merge_5xx_not_merged_raises(client: GitHubClient, api: FakeAPI) -> None:
    api.add("PUT", f"/repos/{REPO}/pulls/41/merge", reply(500, {"message": "Server Error"}))
    api.add("GET", f"/repos/{REPO}/pulls/41", reply(200, pr_item(mergeable=True)))
    with pytest.raises(GitHubServerError):
        await client.merge(41, HEAD)
    assert len(api.paths("PUT")) == 1


async def test_merge_requires_a_full_sha(client: GitHubClient) -> None:
    with pytest.raises(ValueError):
        await client.merge(41, "9f3c111")


# --- branches, revert, comments -------------------------------------------------------


def ref_reply(sha: str) -> httpx.Response:
    return reply(200, {"ref": "refs/heads/main", "object": {"type": "commit", "sha": sha}}, etag=True)


async def test_branch_head_and_wait_for_contains(client: GitHubClient, api: FakeAPI, sleeper: Sleeper) -> None:
    later = "c" * 40
    api.add("GET", f"/repos/{REPO}/git/ref/heads/main", [ref_reply(BASE), ref_reply(BASE), ref_reply(later)])
    api.add(
        "GET",
        f"/repos/{REPO}/compare/{MERGE_SHA}...{BASE}",
        reply(200, {"status": "behind", "ahead_by": 0, "behind_by": 1, "total_commits": 0, "commits": []}),
    )
    api.add(
        "GET",
        f"/repos/{REPO}/compare/{MERGE_SHA}...{later}",
        reply(200, {"status": "ahead", "ahead_by": 1, "behind_by": 0, "total_commits": 1, "commits": []}),
    )
    await client.wait_for_branch_contains("main", MERGE_SHA)
    assert sleeper.calls == [1.0, 2.0]
    assert await client.branch_head("main") == later


async def test_wait_for_branch_contains_times_out(client: GitHubClient, api: FakeAPI, sleeper: Sleeper) -> None:
    api.add("GET", f"/repos/{REPO}/git/ref/heads/main", ref_reply(BASE))
    with pytest.raises(GitHubError, match="does not contain"):
        await client.wait_for_branch_contains("main", MERGE_SHA, timeout=10)
    assert sum(sleeper.calls) == 10


async def test_branch_with_slash(client: GitHubClient, api: FakeAPI) -> None:
    api.add("GET", f"/repos/{REPO}/git/ref/heads/release/26.05", ref_reply(BASE))
    assert await client.branch_head("release/26.05") == BASE


async def test_revert_pull_uses_graphql_then_fetches_the_new_pr(client: GitHubClient, api: FakeAPI) -> None:
    payload = {
        "data": {
            "revertPullRequest": {
                "revertPullRequest": {
                    "id": "PR_new",
                    "number": 43,
                    "url": "https://github.com/x/pull/43",
                    "headRefName": "revert-41-update_flake_lock_action",
                    "headRefOid": "e" * 40,
                    "baseRefName": "main",
                }
            }
        }
    }
    api.add("POST", "/graphql", reply(200, payload, headers=rate_headers(resource="graphql")))
    api.add(
        "GET", f"/repos/{REPO}/pulls/43", reply(200, pr_item(43, head="e" * 40, title='Revert "flake.lock: Update"'))
    )
    pr = await client.revert_pull("PR_node41", title='Revert "flake.lock: Update"', body="deploy failed")
    assert pr.number == 43 and pr.head_sha == "e" * 40
    gql = api.requests[0]
    assert gql.headers["authorization"] == f"Bearer {WRITE}"
    sent = json.loads(gql.content)
    assert "revertPullRequest" in sent["query"]
    assert sent["variables"] == {"id": "PR_node41", "title": 'Revert "flake.lock: Update"', "body": "deploy failed"}
    assert client.rates["graphql"].resource == "graphql" and client.rate.resource == "core"


async def test_revert_pull_graphql_error_with_200(client: GitHubClient, api: FakeAPI) -> None:
    payload = {
        "data": {"revertPullRequest": None},
        "errors": [{"type": "UNPROCESSABLE", "path": ["revertPullRequest"], "message": "Pull request is not merged"}],
    }
    api.add("POST", "/graphql", reply(200, payload))
    with pytest.raises(GraphQLError, match="not merged") as info:
        await client.revert_pull("PR_node41")
    assert_no_secret(info.value)


async def test_configured_graphql_host_is_trusted(make_client, api: FakeAPI) -> None:
    client = make_client(graphql_url="https://graphql.github.test/graphql")
    payload = {"data": {"revertPullRequest": {"revertPullRequest": {"number": 43}}}}
    api.add("POST", "/graphql", reply(200, payload))
    api.add("GET", f"/repos/{REPO}/pulls/43", reply(200, pr_item(43)))
    assert (await client.revert_pull("PR_node41")).number == 43
    assert api.requests[0].url.host == "graphql.github.test"


async def test_graphql_url_defaults(make_client) -> None:
    assert make_client().graphql_url == f"{API}/graphql"
    assert make_client(api_url="https://ghe.corp/api/v3").graphql_url == "https://ghe.corp/api/graphql"
    assert make_client(graphql_url="http://127.0.0.1:9/gql").graphql_url == "http://127.0.0.1:9/gql"


async def test_comment_close_and_viewer(client: GitHubClient, api: FakeAPI) -> None:
    api.add("POST", f"/repos/{REPO}/issues/41/comments", reply(201, {"id": 5551, "body": "hi"}))
    api.add("PATCH", f"/repos/{REPO}/pulls/41", reply(200, pr_item(state="closed")))
    api.add("GET", "/user", reply(200, {"login": "alice"}))
    await client.comment(41, "nfu-tui: merged")
    await client.close_pull(41)
    assert await client.viewer_login() == "alice"
    assert await client.viewer_login() == "alice"
    comment, close, _user = api.requests
    assert json.loads(comment.content) == {"body": "nfu-tui: merged"}
    assert json.loads(close.content) == {"state": "closed"}
    assert comment.headers["authorization"] == close.headers["authorization"] == f"Bearer {WRITE}"
    assert len(api.requests) == 3


async def test_write_falls_back_to_read_token(make_client, api: FakeAPI) -> None:
    client = make_client(write_token=None)
    api.add("POST", f"/repos/{REPO}/issues/41/comments", reply(201, {"id": 1}))
    await client.comment(41, "x")
    assert api.requests[0].headers["authorization"] == f"Bearer {READ}"


async def test_context_manager_closes(api: FakeAPI) -> None:
    async with GitHubClient(api_url=API, repo=REPO, token=READ, transport=httpx.MockTransport(api)) as client:
        api.add("GET", "/user", reply(200, {"login": "alice"}))
        assert await client.viewer_login() == "alice"
    assert client._http.is_closed


# --- explain --------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "flake-lock-updates"
DAY = 86400
T0 = 1_780_000_000


def gh_node(owner: str, repo: str, rev: str, modified: int, ref: str | None = None) -> dict:
    node = {
        "locked": {
            "lastModified": modified,
            "narHash": "sha256-AAAA=",
            "owner": owner,
            "repo": repo,
            "rev": rev,
            "type": "github",
        },
        "original": {"owner": owner, "repo": repo, "type": "github"},
    }
    if ref:
        node["original"]["ref"] = ref
    return node


def lock_bytes(nixpkgs_rev: str, hm_rev: str, modified: int) -> bytes:
    data = {
        "nodes": {
            "home-manager": {
                **gh_node("nix-community", "home-manager", hm_rev, modified),
                "inputs": {"nixpkgs": ["nixpkgs"]},
            },
            "nixpkgs": gh_node("NixOS", "nixpkgs", nixpkgs_rev, modified, "nixos-unstable"),
            "root": {"inputs": {"home-manager": "home-manager", "nixpkgs": "nixpkgs"}},
        },
        "root": "root",
        "version": 7,
    }
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


OLD_NIX, NEW_NIX, OLD_HM, NEW_HM = "a" * 40, "b" * 40, "c" * 40, "d" * 40
SUBJECTS = ["ripgrep: 14.1.1 -> 15.0.0", "nginx: init at 2.0.1", "openssl: 3.0.14 -> 3.0.15"]


def serve_locks(api: FakeAPI, before: bytes | None, after: bytes, path: str = "flake.lock") -> None:
    def contents(request: httpx.Request) -> httpx.Response:
        ref = request.url.params["ref"]
        data = {BASE: before, HEAD: after}.get(ref)
        if data is None:
            return reply(404, {"message": "Not Found"})
        return contents_reply(data)

    api.add("GET", f"/repos/{REPO}/contents/{path}", contents)


def serve_compares(api: FakeAPI, totals: dict[str, int], failing: dict[str, httpx.Response] | None = None) -> None:
    """Every compare path answers from generated commits; ``totals`` by 'owner/repo' (lower-case)."""

    def handler(request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        slug = f"{parts[2]}/{parts[3]}".lower()
        if failing and slug in failing:
            return failing[slug]
        total = totals.get(slug, 3)
        per_page = int(request.url.params.get("per_page", "250"))
        page = int(request.url.params.get("page", "1"))
        idx = range((page - 1) * per_page, min(total, page * per_page))
        body = compare_body([f"{i:040x}" for i in idx], total)
        for i, commit in zip(idx, body["commits"], strict=True):
            commit["commit"]["message"] = SUBJECTS[i % len(SUBJECTS)] + (
                "\n\nFixes CVE-2026-12345" if "openssl" in SUBJECTS[i % len(SUBJECTS)] else ""
            )
        headers = {}
        if page * per_page < total:
            headers["link"] = f'<{API}{request.url.path}?per_page={per_page}&page={page + 1}>; rel="next"'
        return reply(200, body, headers=headers)

    api.matchers.append((lambda r: r.method == "GET" and "/compare/" in r.url.path, handler))


def update_pr(files: tuple[str, ...] = ("flake.lock",)) -> UpdatePR:
    return pr_from_json(pr_item()).with_changes(files=files)


async def test_explain_small_update(make_client, api: FakeAPI) -> None:
    serve_locks(api, lock_bytes(OLD_NIX, OLD_HM, T0), lock_bytes(NEW_NIX, NEW_HM, T0 + 7 * DAY))
    serve_compares(api, {"nixos/nixpkgs": 180, "nix-community/home-manager": 12})
    client = make_client()
    expl = await client.explain(update_pr())
    assert isinstance(expl, PRExplanation)
    assert expl.lock_only is True and expl.lock_path == "flake.lock" and expl.errors == []
    assert [c.name for c in expl.changes] == ["home-manager", "nixpkgs"]
    assert (
        "• Updated input 'nixpkgs':\n"
        "    'github:NixOS/nixpkgs/aaaaaaa' (2026-05-28)\n"
        "  → 'github:NixOS/nixpkgs/bbbbbbb' (2026-06-04)\n" in expl.summary_text
    )
    assert expl.headline == "nixpkgs aaaaaaa → bbbbbbb (+7 days) and 1 other input"
    assert expl.nixpkgs_headline == "nixpkgs aaaaaaa → bbbbbbb, 180 commits over 7 days"
    by_repo = {c.target.slug.lower(): c for c in expl.compares}
    assert by_repo["nixos/nixpkgs"].comparison.ahead_by == 180
    assert len(by_repo["nixos/nixpkgs"].comparison.commits) == 180
    assert by_repo["nix-community/home-manager"].comparison.ahead_by == 12
    lines = expl.changelog.lines(10)
    assert any("ripgrep" in line and "15.0.0" in line for line in lines)
    assert any("CVE-2026-12345" in line for line in lines)
    # files came with the PR; two lock reads, two compare pages for nixpkgs, one for home-manager
    assert client.requests_made == 5


async def test_explain_keeps_compare_failures_as_errors(make_client, api: FakeAPI) -> None:
    serve_locks(api, lock_bytes(OLD_NIX, OLD_HM, T0), lock_bytes(NEW_NIX, NEW_HM, T0 + 7 * DAY))
    serve_compares(
        api, {"nixos/nixpkgs": 5}, failing={"nix-community/home-manager": reply(404, {"message": "Not Found"})}
    )
    expl = await make_client().explain(update_pr())
    failed = [c for c in expl.compares if c.error]
    assert [c.target.repo for c in failed] == ["home-manager"]
    assert any("home-manager" in e and "Not Found" in e for e in expl.errors)
    assert expl.nixpkgs_headline == "nixpkgs aaaaaaa → bbbbbbb, 5 commits over 7 days"


async def test_explain_stops_comparing_when_rate_limited(make_client, api: FakeAPI, sleeper: Sleeper) -> None:
    serve_locks(api, lock_bytes(OLD_NIX, OLD_HM, T0), lock_bytes(NEW_NIX, NEW_HM, T0 + 7 * DAY))
    limited = reply(403, {"message": "API rate limit exceeded"}, headers=rate_headers(0))
    serve_compares(api, {}, failing={"nix-community/home-manager": limited, "nixos/nixpkgs": limited})
    expl = await make_client().explain(update_pr())
    assert len([r for r in api.requests if "/compare/" in r.url.path]) == 1
    assert all(c.error for c in expl.compares) and "skipped" in expl.compares[1].error
    assert expl.changelog is None and expl.nixpkgs_headline == "nixpkgs aaaaaaa → bbbbbbb, over 7 days"
    assert sleeper.calls == []


async def test_explain_reports_a_truncated_changelog(make_client, api: FakeAPI) -> None:
    serve_locks(api, lock_bytes(OLD_NIX, OLD_HM, T0), lock_bytes(NEW_NIX, OLD_HM, T0 + 2 * DAY))
    serve_compares(api, {"nixos/nixpkgs": 250})
    expl = await make_client().explain(update_pr(), max_commits=120)
    assert expl.compares[0].comparison.truncated
    assert "nixpkgs changelog covers the first 120 of 250 commits" in expl.errors
    assert expl.changelog.commits == 120


async def test_explain_fetches_files_and_handles_new_and_broken_locks(make_client, api: FakeAPI) -> None:
    api.add("GET", f"/repos/{REPO}/pulls/41/files", files_reply("nix/flake.lock", "nix/flake.nix"))
    serve_locks(api, None, lock_bytes(NEW_NIX, NEW_HM, T0), path="nix/flake.lock")
    serve_compares(api, {})
    expl = await make_client().explain(update_pr(files=()))
    assert expl.files == ("nix/flake.lock", "nix/flake.nix") and expl.lock_only is False
    assert expl.lock_path == "nix/flake.lock"
    assert {c.kind for c in expl.changes} == {flakelock.ChangeKind.ADDED}
    assert expl.compares == [] and expl.changelog is None

    broken = FakeAPI()
    serve_locks(broken, b"{}", b"not json at all")
    expl = await make_client(transport=httpx.MockTransport(broken)).explain(update_pr())
    assert expl.changes == [] and len(expl.errors) == 1 and "flake.lock" in expl.errors[0]


async def test_explain_pr_without_a_lock(make_client, api: FakeAPI) -> None:
    expl = await make_client().explain(update_pr(files=("README.md",)))
    assert expl.errors == ["this pull request does not change a flake.lock"] and expl.changes == []
    assert api.requests == []


def fixture_dirs() -> list[Path]:
    return sorted(d for d in FIXTURES.iterdir() if d.is_dir()) if FIXTURES.is_dir() else []


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="shared fixtures (../shared) are not available")
@pytest.mark.parametrize("case", fixture_dirs(), ids=lambda d: d.name)
async def test_explain_real_lock_updates(make_client, api: FakeAPI, case: Path) -> None:
    before, after = (case / "before.lock").read_bytes(), (case / "after.lock").read_bytes()
    serve_locks(api, before, after)
    serve_compares(api, {"nixos/nixpkgs": 130})
    client = make_client()
    expl = await client.explain(update_pr())
    expected = (case / "nix-summary.txt").read_text(encoding="utf-8").split("\n", 2)[2]
    if "?narHash=" not in expected:  # Determinate Nix produced it: byte-identical
        assert expl.summary_text == expected
    else:
        assert "?narHash=" not in expl.summary_text
        assert expl.summary_text.count("•") == expected.count("•")
    old, new = flakelock.parse_lock(before), flakelock.parse_lock(after)
    targets = flakelock.compare_targets(flakelock.diff(old, new), old, new)
    assert [c.target for c in expl.compares] == targets
    assert all(c.comparison is not None for c in expl.compares) and expl.errors == []
    compare_requests = [r for r in api.requests if "/compare/" in r.url.path]
    main = [t for t in targets if t.is_nixpkgs]
    assert len(compare_requests) == len(targets) + (1 if main else 0)  # 130 nixpkgs commits = 2 pages
    if main:
        assert expl.nixpkgs_headline.startswith("nixpkgs ") and "130 commits" in expl.nixpkgs_headline
        assert expl.changelog is not None and expl.changelog.commits == 130


def test_nixpkgs_headline_variants() -> None:
    target = flakelock.CompareTarget(
        "NixOS", "nixpkgs", "a" * 40, "b" * 40, (("nixpkgs",),), flakelock.UpdateKind.UPDATE
    )
    commits = [CI("1", "s", "", "2026-02-01T00:00:00Z"), CI("2", "s", "", "2026-02-03T12:00:00Z")]
    ahead = Cmp("ahead", 2, 0, 2, commits)
    assert nixpkgs_headline(target, ahead) == "nixpkgs aaaaaaa → bbbbbbb, 2 commits over 2 days"  # from commit dates
    one = Cmp("ahead", 1, 0, 1, commits[:1])
    assert nixpkgs_headline(target, one) == "nixpkgs aaaaaaa → bbbbbbb, 1 commit within a day"
    assert (
        nixpkgs_headline(target, Cmp("ahead", 2143, 0, 2143, [], truncated=True))
        == "nixpkgs aaaaaaa → bbbbbbb, 2,143 commits"
    )
    assert nixpkgs_headline(target, Cmp("identical", 0, 0, 0)) == "nixpkgs aaaaaaa → bbbbbbb, no new commits"
    assert nixpkgs_headline(target, Cmp("behind", 0, 4, 0)) == "nixpkgs aaaaaaa → bbbbbbb, moved back 4 commits"
    switch = flakelock.CompareTarget(
        "NixOS",
        "nixpkgs",
        "a" * 40,
        "b" * 40,
        (("nixpkgs",),),
        flakelock.UpdateKind.BRANCH_SWITCH,
        "nixos-25.05",
        "nixos-25.11",
    )
    assert nixpkgs_headline(switch, Cmp("diverged", 1200, 300, 1200)) == (
        "nixpkgs aaaaaaa → bbbbbbb (branch switch nixos-25.05 → nixos-25.11), diverged: 1,200 ahead, 300 behind"
    )
    assert nixpkgs_headline(target, None) == "nixpkgs aaaaaaa → bbbbbbb"


# --- caches -----------------------------------------------------------------------------


def test_etag_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = ETagCache(max_entries=3, max_bytes=100)
    for i in range(4):
        cache.put(f"k{i}", CachedResponse(f'"{i}"', None, b"x" * 10, None))
    assert len(cache) == 3 and cache.get("k0") is None and cache.get("k1") is not None
    cache.put("big", CachedResponse('"b"', None, b"y" * 80, None))
    assert cache.size_bytes <= 100 and cache.get("big") is not None
    assert cache.get("k2") is None  # least recently used went first; k1 was touched by get()
    cache.put("huge", CachedResponse('"h"', None, b"z" * 101, None))
    assert cache.get("huge") is None and cache.size_bytes <= 100
    cache.put("big", CachedResponse('"b2"', None, b"", None))
    assert cache.get("big").etag == '"b2"' and cache.size_bytes == sum(
        len(e.body) for e in (cache.get(k) for k in ("k1", "k3", "big")) if e
    )
    assert CachedResponse('"e"', "Mon, 01 Jan 2026 00:00:00 GMT", b"", None).validators() == {
        "If-None-Match": '"e"',
        "If-Modified-Since": "Mon, 01 Jan 2026 00:00:00 GMT",
    }


def test_disk_cache_round_trip_and_robustness(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c")
    key = ["https://api.github.com", "alice/x", "flake.lock", "a" * 40]
    assert cache.get_bytes("contents", key) is None
    cache.put_bytes("contents", key, b"\x00lock\xff")
    assert cache.get_bytes("contents", key) == b"\x00lock\xff"
    assert cache.get_bytes("contents", [*key[:3], "b" * 40]) is None
    (file,) = (tmp_path / "c" / "contents").glob("*.json")
    assert not list((tmp_path / "c" / "contents").glob(".tmp-*"))  # atomic write left no temp file
    record = json.loads(file.read_bytes())
    record["key"] = ["other"]
    file.write_text(json.dumps(record))
    assert cache.get_bytes("contents", key) is None  # a record for another key is not served
    file.write_bytes(b"\x00garbage")
    assert cache.get_bytes("contents", key) is None
    cache.put("compare", ["k"], {"v": 1})
    assert cache.get("compare", ["k"]) == {"v": 1}
    disabled = DiskCache(None)
    disabled.put("compare", ["k"], 1)
    assert disabled.get("compare", ["k"]) is None


def test_disk_cache_survives_an_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = DiskCache(blocker)
    cache.put("compare", ["k"], {"v": 1})  # swallowed: it is only a cache
    assert cache.get("compare", ["k"]) is None
