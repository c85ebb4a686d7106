"""Contract tests of the simulator's fake GitHub, from the outside over real HTTP (httpx)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from nfu_tui.sim import lockgen
from nfu_tui.sim.github import FakeGitHub, RepoSettings
from nfu_tui.sim.scenario import PRSpec, Scenario

REPO = "/repos/alice/nixcfg"
BOT_BRANCH = "update_flake_lock_action"
RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-used", "x-ratelimit-reset",
                "x-ratelimit-resource")


def scenario(**extra: PRSpec) -> Scenario:
    prs = [
        PRSpec(number=42, labels=["dependencies"], ci="success", nixpkgs_commits=180, days=7, age_hours=20),
        PRSpec(number=43, ci="failure", age_hours=30, head_ref="update-stable"),
        PRSpec(number=44, ci="none", age_hours=50, conflict=True, head_ref="manual-bump"),
        PRSpec(number=45, ci="pending", age_hours=10, draft=True, head_ref="draft-bump", extra_files=["flake.nix"]),
    ]
    return Scenario(seed=11, hosts=[], prs=prs + list(extra.values()))


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "User-Agent": "nfu-tui-tests/1.0",
            "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


@pytest.fixture
async def gh() -> AsyncIterator[FakeGitHub]:
    fake = FakeGitHub(scenario())
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(gh: FakeGitHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gh.url, headers=headers(gh.token)) as c:
        yield c


def lock_of(gh: FakeGitHub, ref: str) -> lockgen.LockNode:
    data = gh.file_at(ref, "flake.lock")
    assert data is not None
    return lockgen.parse_lock(data)


async def mergeable(client: httpx.AsyncClient, number: int) -> dict:
    """GET the PR until mergeable is computed (the fake answers null exactly once)."""
    first = (await client.get(f"{REPO}/pulls/{number}")).json()
    assert first["mergeable"] is None and first["mergeable_state"] == "unknown"
    return (await client.get(f"{REPO}/pulls/{number}")).json()


# --- basics: server, auth, headers ---------------------------------------------------------------


async def test_starts_on_loopback_with_an_ephemeral_port(gh: FakeGitHub) -> None:
    assert gh.url.startswith("http://127.0.0.1:") and not gh.url.endswith(":0")
    assert gh.token not in repr(gh)


async def test_auth_failures(gh: FakeGitHub) -> None:
    async with httpx.AsyncClient(base_url=gh.url) as c:
        r = await c.get(f"{REPO}/pulls", headers={"User-Agent": "t", "Authorization": "Bearer nope"})
        assert r.status_code == 401
        body = r.json()
        assert body["message"] == "Bad credentials" and body["status"] == "401" and body["documentation_url"]
        assert all(h in r.headers for h in RATE_HEADERS)
        r = await c.get(f"{REPO}/pulls", headers={"User-Agent": "t"})
        assert r.status_code == 401 and r.json()["message"] == "Requires authentication"
        r = await c.get(f"{REPO}/pulls", headers={"User-Agent": "t", "Authorization": f"token {gh.token}"})
        assert r.status_code == 200
        req = c.build_request("GET", f"{REPO}/pulls", headers={"Authorization": f"Bearer {gh.token}"})
        del req.headers["User-Agent"]
        r = await c.send(req)
        assert r.status_code == 403 and "User-Agent" in r.text
        assert all(h in r.headers for h in RATE_HEADERS)


async def test_unknown_repo_route_and_api_version(client: httpx.AsyncClient) -> None:
    assert (await client.get("/repos/bob/other/pulls")).status_code == 404
    r = await client.get(f"{REPO}/nope")
    assert r.status_code == 404 and r.json()["message"] == "Not Found"
    r = await client.get(f"{REPO}/pulls", headers={"X-GitHub-Api-Version": "2020-01-01"})
    assert r.status_code == 400
    r = await client.get(f"{REPO}/pulls", headers={"X-GitHub-Api-Version": "2026-03-10"})
    assert r.headers["x-github-api-version-selected"] == "2026-03-10"


async def test_rate_headers_decrement_and_304_is_free(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    r1 = await client.get(f"{REPO}/pulls")
    assert r1.status_code == 200 and r1.headers["content-type"] == "application/json; charset=utf-8"
    for h in (*RATE_HEADERS, "x-github-request-id", "x-github-api-version-selected", "etag"):
        assert h in r1.headers
    assert r1.headers["x-ratelimit-resource"] == "core" and r1.headers["x-ratelimit-limit"] == "5000"
    assert r1.headers["etag"].startswith('"') and r1.headers["etag"].endswith('"')
    remaining = int(r1.headers["x-ratelimit-remaining"])
    r2 = await client.get(f"{REPO}/pulls", headers={"If-None-Match": r1.headers["etag"]})
    assert r2.status_code == 304 and r2.content == b""
    assert all(h in r2.headers for h in (*RATE_HEADERS, "etag", "x-github-request-id"))
    assert int(r2.headers["x-ratelimit-remaining"]) == remaining
    r3 = await client.get(f"{REPO}/pulls", headers={"If-None-Match": "W/" + r1.headers["etag"]})
    assert r3.status_code == 304
    r4 = await client.get(f"{REPO}/pulls/999")
    assert r4.status_code == 404 and int(r4.headers["x-ratelimit-remaining"]) == remaining - 1
    r5 = await client.get("/rate_limit")
    assert r5.json()["resources"]["core"]["remaining"] == remaining - 1
    assert int(r5.headers["x-ratelimit-remaining"]) == remaining - 1  # /rate_limit is free
    assert gh.request_count(f"{REPO}/pulls") == 4 and gh.request_log[1].status == 304


async def test_etag_depends_on_token_and_content(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    gh.add_token("ghp_other", write=True, login="alice")
    r1 = await client.get(f"{REPO}/pulls")
    r2 = await client.get(f"{REPO}/pulls", headers={"Authorization": "Bearer ghp_other"})
    assert r1.headers["etag"] != r2.headers["etag"]
    r3 = await client.get(f"{REPO}/pulls", headers={"If-None-Match": r2.headers["etag"]})
    assert r3.status_code == 200  # another token's validator does not match
    gh.push_pr_head(42)
    r4 = await client.get(f"{REPO}/pulls", headers={"If-None-Match": r1.headers["etag"]})
    assert r4.status_code == 200 and r4.headers["etag"] != r1.headers["etag"]


async def test_idle_polling_is_304_after_the_first_request(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    etag = (await client.get(f"{REPO}/pulls", params={"state": "open"})).headers["etag"]
    for _ in range(11):
        r = await client.get(f"{REPO}/pulls", params={"state": "open"}, headers={"If-None-Match": etag})
        assert r.status_code == 304
    statuses = [s for m, p, s in gh.request_log if p == f"{REPO}/pulls"]
    assert statuses == [200] + [304] * 11


# --- pulls --------------------------------------------------------------------------------------------


async def test_list_pulls_filters_sorting_and_shape(client: httpx.AsyncClient) -> None:
    prs = (await client.get(f"{REPO}/pulls")).json()
    assert [p["number"] for p in prs] == [45, 42, 43, 44]  # newest first
    p42 = next(p for p in prs if p["number"] == 42)
    assert p42["html_url"] == "https://github.com/alice/nixcfg/pull/42"
    assert p42["head"]["ref"] == BOT_BRANCH and p42["head"]["label"] == f"alice:{BOT_BRANCH}"
    assert p42["head"]["repo"]["full_name"] == "alice/nixcfg" and p42["base"]["ref"] == "main"
    assert p42["user"] == {**p42["user"], "login": "github-actions[bot]", "type": "Bot"}
    assert [lb["name"] for lb in p42["labels"]] == ["dependencies"] and p42["node_id"].startswith("PR_")
    assert "```\nFlake lock file updates:\n\n• " in p42["body"] and "• Updated input 'nixpkgs':\n" in p42["body"]
    assert "mergeable" not in p42 and "merged" not in p42
    assert next(p for p in prs if p["number"] == 45)["draft"] is True
    only = (await client.get(f"{REPO}/pulls", params={"head": f"alice:{BOT_BRANCH}"})).json()
    assert [p["number"] for p in only] == [42]
    assert (await client.get(f"{REPO}/pulls", params={"head": f"mallory:{BOT_BRANCH}"})).json() == []
    asc = (await client.get(f"{REPO}/pulls", params={"sort": "created", "direction": "asc"})).json()
    assert [p["number"] for p in asc] == [44, 43, 42, 45]
    closed = (await client.get(f"{REPO}/pulls", params={"state": "closed"})).json()
    assert [p["number"] for p in closed] == [41, 40, 39] and all(p["merged_at"] for p in closed)
    assert (await client.get(f"{REPO}/pulls", params={"base": "other"})).json() == []
    assert (await client.get(f"{REPO}/pulls", params={"state": "bogus"})).status_code == 422


async def test_pagination_links(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    r = await client.get(f"{REPO}/pulls", params={"state": "all", "per_page": 3})
    assert len(r.json()) == 3
    links = r.links
    assert set(links) == {"next", "last"}
    nxt = links["next"]["url"]
    assert nxt.startswith(gh.url + f"{REPO}/pulls?") and "per_page=3" in nxt and "state=all" in nxt
    assert "page=2" in nxt and "page=3" in links["last"]["url"]
    r2 = await client.get(nxt)
    assert set(r2.links) == {"next", "last", "first", "prev"}
    r3 = await client.get(r2.links["next"]["url"])
    assert len(r3.json()) == 1 and set(r3.links) == {"first", "prev"}
    seen = [p["number"] for p in r.json() + r2.json() + r3.json()]
    assert sorted(seen) == [39, 40, 41, 42, 43, 44, 45]
    assert "link" not in (await client.get(f"{REPO}/pulls", params={"per_page": 100})).headers


async def test_mergeable_is_null_first_then_computed(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    pr = await mergeable(client, 42)
    assert pr["mergeable"] is True and pr["mergeable_state"] == "clean"
    assert pr["merged"] is False and pr["changed_files"] == 1 and pr["commits"] == 1
    test_merge = pr["merge_commit_sha"]
    commit = (await client.get(f"{REPO}/commits/{test_merge}")).json()
    assert [p["sha"] for p in commit["parents"]] == [pr["base"]["sha"], pr["head"]["sha"]]
    assert (await mergeable(client, 43))["mergeable_state"] == "unstable"  # failing (non-required) check
    assert (await mergeable(client, 44))["mergeable_state"] == "dirty"
    assert (await mergeable(client, 45))["mergeable_state"] == "draft"
    gh.push_pr_head(42)
    again = await mergeable(client, 42)
    assert again["head"]["sha"] != pr["head"]["sha"] and again["mergeable_state"] == "unstable"  # CI restarted


async def test_required_checks_block(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    gh.settings.required_checks = ("build hosts",)
    assert (await mergeable(client, 42))["mergeable_state"] == "clean"
    assert (await mergeable(client, 43))["mergeable_state"] == "blocked"


async def test_behind_when_up_to_date_is_required(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    gh.settings.require_up_to_date = True
    assert (await mergeable(client, 42))["mergeable_state"] == "clean"
    readme = (await client.get(f"{REPO}/contents/README.md")).json()
    await client.put(f"{REPO}/contents/README.md", json={"message": "docs", "sha": readme["sha"],
                                                        "content": base64.b64encode(b"# docs\n").decode()})
    pr = await mergeable(client, 42)  # the base moved: null again, then behind (no conflict)
    assert pr["mergeable"] is True and pr["mergeable_state"] == "behind"
    r = await client.put(f"{REPO}/pulls/42/merge", json={"sha": pr["head"]["sha"]})
    assert r.status_code == 405 and r.json()["message"].startswith("Head branch is out of date.")


async def test_pull_files_with_patch(client: httpx.AsyncClient) -> None:
    files = (await client.get(f"{REPO}/pulls/42/files")).json()
    assert [f["filename"] for f in files] == ["flake.lock"]
    f = files[0]
    assert f["status"] == "modified" and f["patch"].startswith("@@ ") and f["additions"] > 0
    assert f["changes"] == f["additions"] + f["deletions"]
    files45 = (await client.get(f"{REPO}/pulls/45/files")).json()
    assert [f["filename"] for f in files45] == ["flake.lock", "flake.nix"]
    diff = await client.get(f"{REPO}/pulls/42", headers={"Accept": "application/vnd.github.diff"})
    assert diff.text.startswith("diff --git a/flake.lock b/flake.lock\n--- a/flake.lock\n+++ b/flake.lock\n@@ ")


async def test_pr_body_describes_the_head_lock(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    pr = (await client.get(f"{REPO}/pulls/42")).json()
    summary = lockgen.render_summary(lock_of(gh, pr["base"]["sha"]), lock_of(gh, pr["head"]["sha"]))
    assert f"```\nFlake lock file updates:\n\n{summary}```" in pr["body"]
    commit = (await client.get(f"{REPO}/commits/{pr['head']['sha']}")).json()
    assert commit["commit"]["message"].startswith("flake.lock: Update\n\nFlake lock file updates:\n\n• ")
    assert commit["author"]["login"] == "github-actions[bot]"


# --- merging ---------------------------------------------------------------------------------------


async def test_merge_success_and_its_effects(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    moved: list[tuple[str, str]] = []
    gh.on_branch_moved(lambda branch, sha: moved.append((branch, sha)))
    old_main, _ = gh.default_branch_head()
    pr = (await client.get(f"{REPO}/pulls/42")).json()
    head = pr["head"]["sha"]
    assert (await client.get(f"{REPO}/pulls/42/merge")).status_code == 404
    r = await client.put(f"{REPO}/pulls/42/merge", json={"sha": head, "merge_method": "merge"})
    assert r.status_code == 200
    assert r.json() == {"sha": r.json()["sha"], "merged": True, "message": "Pull Request successfully merged"}
    merge_sha = r.json()["sha"]
    assert gh.default_branch_head() == (merge_sha, f"Merge pull request #42 from alice/{BOT_BRANCH}")
    assert moved == [("main", merge_sha)]
    assert gh.file_at("main", "flake.lock") == gh.file_at(head, "flake.lock")
    commit = (await client.get(f"{REPO}/commits/{merge_sha}")).json()
    assert [p["sha"] for p in commit["parents"]] == [old_main, head]
    assert commit["commit"]["message"] == f"Merge pull request #42 from alice/{BOT_BRANCH}\n\nflake.lock: Update"
    after = (await client.get(f"{REPO}/pulls/42")).json()
    assert after["state"] == "closed" and after["merged"] is True and after["merged_at"]
    assert after["merged_by"]["login"] == "alice" and after["merge_commit_sha"] == merge_sha
    assert (await client.get(f"{REPO}/pulls/42/merge")).status_code == 204
    again = await client.put(f"{REPO}/pulls/42/merge", json={"sha": head})
    assert again.status_code == 405 and again.json()["message"] == "Pull Request is not mergeable"
    # PR 43 bumped nixpkgs from the same base: after 42 landed it conflicts.
    assert (await mergeable(client, 43))["mergeable_state"] == "dirty"
    r = await client.get(f"{REPO}/contents/flake.lock", params={"ref": "main"})
    assert base64.b64decode(r.json()["content"]) == gh.file_at(head, "flake.lock")


async def test_merge_refusals(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    head42 = (await client.get(f"{REPO}/pulls/42")).json()["head"]["sha"]
    r = await client.put(f"{REPO}/pulls/42/merge", json={"sha": "0" * 40})
    assert r.status_code == 409 and r.json()["message"] == "Head branch was modified. Review and try the merge again."
    r = await client.put(f"{REPO}/pulls/42/merge", json={"sha": head42, "merge_method": "fast-forward"})
    assert r.status_code == 422 and "merge_method" in r.json()["message"]
    r = await client.put(f"{REPO}/pulls/45/merge", json={})
    assert r.status_code == 405 and r.json()["message"] == "Pull Request is still a draft"
    r = await client.put(f"{REPO}/pulls/44/merge", json={})
    assert r.status_code == 405 and r.json()["message"] == "Pull Request is not mergeable"
    gh.settings.allow_merge_commit = False
    r = await client.put(f"{REPO}/pulls/42/merge", json={"sha": head42})
    assert r.status_code == 405 and r.json()["message"] == "Merge commits are not allowed on this repository."
    gh.settings.allow_merge_commit = True
    gh.faults.base_modified_next = 1
    r = await client.put(f"{REPO}/pulls/42/merge", json={"sha": head42})
    assert r.status_code == 405 and r.json()["message"].startswith("Base branch was modified.")
    gh.settings.required_checks = ("build hosts",)
    r = await client.put(f"{REPO}/pulls/43/merge", json={})
    assert r.status_code == 405 and r.json()["message"] == 'Required status check "build hosts" is failing.'
    gh.set_ci(43, "pending")
    r = await client.put(f"{REPO}/pulls/43/merge", json={})
    assert r.json()["message"] == 'Required status check "build hosts" is expected.'
    gh.settings.required_checks = ("build hosts", "lint")
    r = await client.put(f"{REPO}/pulls/43/merge", json={})
    assert r.json()["message"] == "2 of 2 required status checks are expected."
    assert gh.request_count(f"{REPO}/pulls/4") == 10 and (await client.get(f"{REPO}/pulls/42")).json()["state"] == "open"


async def test_force_push_between_review_and_merge_gives_409(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    reviewed = (await client.get(f"{REPO}/pulls/42")).json()["head"]["sha"]
    new = gh.push_pr_head(42)
    assert new != reviewed and len(new) == 40
    assert gh.file_at(BOT_BRANCH, "flake.lock") == gh.file_at(new, "flake.lock")
    r = await client.put(f"{REPO}/pulls/42/merge", json={"sha": reviewed})
    assert r.status_code == 409
    own = lockgen.dump_lock(lockgen.advance_lock(lock_of(gh, "main"), __import__("random").Random(1), 3))
    newer = gh.push_pr_head(42, own)
    assert gh.file_at(newer, "flake.lock") == own
    assert (await client.put(f"{REPO}/pulls/42/merge", json={"sha": newer})).status_code == 200


async def test_squash_and_rebase_and_branch_deletion(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    gh.settings.delete_branch_on_merge = True
    main_before, _ = gh.default_branch_head()
    r = await client.put(f"{REPO}/pulls/42/merge", json={"merge_method": "squash"})
    sha = r.json()["sha"]
    commit = (await client.get(f"{REPO}/commits/{sha}")).json()
    assert [p["sha"] for p in commit["parents"]] == [main_before]
    assert commit["commit"]["message"].startswith("flake.lock: Update (#42)\n\n* flake.lock: Update")
    assert (await client.get(f"{REPO}/git/ref/heads/{BOT_BRANCH}")).status_code == 404
    gh.push_pr_head(43)  # rebase it onto the new main so it merges cleanly
    r = await client.put(f"{REPO}/pulls/43/merge", json={"merge_method": "rebase"})
    assert r.status_code == 200
    rebased = (await client.get(f"{REPO}/commits/{r.json()['sha']}")).json()
    assert [p["sha"] for p in rebased["parents"]] == [sha]


# --- CI ----------------------------------------------------------------------------------------------


async def ci(client: httpx.AsyncClient, ref: str) -> tuple[dict, dict]:
    status = (await client.get(f"{REPO}/commits/{ref}/status")).json()
    runs = (await client.get(f"{REPO}/commits/{ref}/check-runs")).json()
    return status, runs


async def test_ci_variants(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    status, runs = await ci(client, BOT_BRANCH)
    assert status["state"] == "success" and status["total_count"] == 1
    assert runs["total_count"] == 2 and {(r["status"], r["conclusion"]) for r in runs["check_runs"]} == {
        ("completed", "success")}
    assert runs["check_runs"][0]["app"]["slug"] == "github-actions"
    heads = {n: (await client.get(f"{REPO}/pulls/{n}")).json()["head"]["sha"] for n in (43, 44, 45)}
    status, runs = await ci(client, heads[43])
    assert status["state"] == "failure" and ("completed", "failure") in {
        (r["status"], r["conclusion"]) for r in runs["check_runs"]}
    status, runs = await ci(client, heads[44])
    assert status == {**status, "state": "pending", "total_count": 0, "statuses": []}
    assert runs == {"total_count": 0, "check_runs": []}
    status, runs = await ci(client, heads[45])
    assert status["state"] == "pending" and any(r["status"] == "in_progress" and r["conclusion"] is None
                                                for r in runs["check_runs"])
    gh.set_ci(45, "success")
    status, runs = await ci(client, heads[45])
    assert status["state"] == "success" and len(runs["check_runs"]) == 2
    all_runs = (await client.get(f"{REPO}/commits/{heads[45]}/check-runs", params={"filter": "all"})).json()
    assert all_runs["total_count"] == 4
    named = (await client.get(f"{REPO}/commits/{heads[45]}/check-runs", params={"check_name": "build hosts"})).json()
    assert [r["name"] for r in named["check_runs"]] == ["build hosts"]
    gh.set_ci(heads[43], "none")
    assert (await ci(client, heads[43]))[1]["total_count"] == 0
    with pytest.raises(ValueError):
        gh.set_ci(42, "green")


# --- contents, commits, compare ---------------------------------------------------------------------


async def test_contents(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    r = await client.get(f"{REPO}/contents/flake.lock", params={"ref": "main"})
    body = r.json()
    data = gh.file_at("main", "flake.lock")
    assert data is not None and body["type"] == "file" and body["encoding"] == "base64"
    lines = body["content"].split("\n")
    assert lines[-1] == "" and all(len(line) == 60 for line in lines[:-2]) and 0 < len(lines[-2]) <= 60
    assert base64.b64decode(body["content"]) == data and body["size"] == len(data)
    assert body["sha"] == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    head, _ = gh.default_branch_head()
    assert (await client.get(f"{REPO}/contents/flake.lock", params={"ref": head})).json()["sha"] == body["sha"]
    assert (await client.get(f"{REPO}/contents/flake.lock")).json()["sha"] == body["sha"]
    raw = await client.get(f"{REPO}/contents/flake.lock", params={"ref": "main"},
                           headers={"Accept": "application/vnd.github.raw+json"})
    assert raw.status_code == 200 and raw.content == data
    assert (await client.get(f"{REPO}/contents/nope.nix")).status_code == 404
    assert (await client.get(f"{REPO}/contents/flake.lock", params={"ref": "no-such-branch"})).status_code == 404
    listing = (await client.get(f"{REPO}/contents/")).json()
    assert {e["name"]: e["type"] for e in listing}["hosts"] == "dir"
    assert {"flake.nix", "flake.lock", "README.md"} <= {e["name"] for e in listing}


async def test_put_contents(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    current = (await client.get(f"{REPO}/contents/README.md")).json()
    new = base64.b64encode(b"# hi\n").decode()
    r = await client.put(f"{REPO}/contents/README.md", json={"message": "docs", "content": new, "sha": "f" * 40})
    assert r.status_code == 409
    r = await client.put(f"{REPO}/contents/README.md", json={"message": "docs", "content": new})
    assert r.status_code == 422
    r = await client.put(f"{REPO}/contents/README.md", json={"message": "docs", "content": new,
                                                            "sha": current["sha"]})
    assert r.status_code == 200 and gh.file_at("main", "README.md") == b"# hi\n"
    assert gh.default_branch_head() == (r.json()["commit"]["sha"], "docs")
    r = await client.put(f"{REPO}/contents/docs/new.md", json={"message": "add", "content": new})
    assert r.status_code == 201


async def test_commits_and_git_commits(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    head, subject = gh.default_branch_head()
    c = (await client.get(f"{REPO}/commits/main")).json()
    assert c["sha"] == head and c["commit"]["message"].split("\n")[0] == subject
    assert (await client.get(f"{REPO}/commits/heads/main")).json()["sha"] == head
    sha = await client.get(f"{REPO}/commits/main", headers={"Accept": "application/vnd.github.sha"})
    assert sha.text == head
    assert c["commit"]["message"].startswith("flake.lock: update nixpkgs\n\nFlake lock file updates:")  # PR 44's
    merged = (await client.get(f"{REPO}/pulls/41")).json()["merge_commit_sha"]
    merge = (await client.get(f"{REPO}/git/commits/{merged}")).json()
    assert len(merge["parents"]) == 2 and merge["message"].startswith("Merge pull request #41 from alice/")
    assert merge["tree"]["sha"] and merge["committer"]["name"] == "GitHub"
    assert (await client.get(f"{REPO}/commits/deadbeef" + "0" * 32)).status_code == 422
    assert (await client.get(f"{REPO}/git/commits/{'0' * 40}")).status_code == 404


def nixpkgs_move(gh: FakeGitHub, pr_base: str, pr_head: str) -> tuple[str, str]:
    old, new = lock_of(gh, pr_base), lock_of(gh, pr_head)
    return old.inputs["nixpkgs"].locked["rev"], new.inputs["nixpkgs"].locked["rev"]


async def test_compare_nixpkgs(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    pr = (await client.get(f"{REPO}/pulls/42")).json()
    old, new = nixpkgs_move(gh, pr["base"]["sha"], pr["head"]["sha"])
    r = await client.get(f"/repos/NixOS/nixpkgs/compare/{old}...{new}")
    body = r.json()
    assert r.status_code == 200 and "link" not in r.headers
    assert (body["status"], body["ahead_by"], body["behind_by"], body["total_commits"]) == ("ahead", 180, 0, 180)
    commits = body["commits"]
    assert len(commits) == 180 and commits[-1]["sha"] == new
    assert commits[0]["parents"][0]["sha"] == old
    dates = [c["commit"]["committer"]["date"] for c in commits]
    assert dates == sorted(dates)
    assert body["html_url"] == f"https://github.com/NixOS/nixpkgs/compare/{old}...{new}"
    assert body["files"] and all("filename" in f for f in body["files"])
    lower = (await client.get(f"/repos/nixos/nixpkgs/compare/{old[:7]}...{new[:7]}")).json()
    assert [c["sha"] for c in lower["commits"]] == [c["sha"] for c in commits]
    p1 = await client.get(f"/repos/NixOS/nixpkgs/compare/{old}...{new}", params={"per_page": 100, "page": 1})
    assert len(p1.json()["commits"]) == 100 and p1.json()["files"] and "rel=\"next\"" in p1.headers["link"]
    assert p1.links["next"]["url"].startswith(gh.url) and "per_page=100" in p1.links["next"]["url"]
    p2 = await client.get(p1.links["next"]["url"])
    assert len(p2.json()["commits"]) == 80 and p2.json()["files"] == [] and p2.json()["ahead_by"] == 180
    assert [c["sha"] for c in p1.json()["commits"] + p2.json()["commits"]] == [c["sha"] for c in commits]
    back = (await client.get(f"/repos/NixOS/nixpkgs/compare/{new}...{old}")).json()
    assert (back["status"], back["ahead_by"], back["behind_by"], back["commits"]) == ("behind", 0, 180, [])
    same = (await client.get(f"/repos/NixOS/nixpkgs/compare/{new}...{new}")).json()
    assert same["status"] == "identical" and same["total_commits"] == 0
    assert (await client.get(f"/repos/NixOS/nixpkgs/compare/{old}...{'0' * 40}")).status_code == 404
    assert (await client.get(f"/repos/NixOS/nixpkgs/compare/{old}..{new}")).status_code == 404


async def test_compare_caps_at_250_without_paging() -> None:
    fake = FakeGitHub(Scenario(seed=3, hosts=[], prs=[PRSpec(number=7, nixpkgs_commits=2143, days=7)]))
    await fake.start()
    try:
        async with httpx.AsyncClient(base_url=fake.url, headers=headers(fake.token)) as c:
            pr = (await c.get(f"{REPO}/pulls/7")).json()
            old, new = nixpkgs_move(fake, pr["base"]["sha"], pr["head"]["sha"])
            body = (await c.get(f"/repos/NixOS/nixpkgs/compare/{old}...{new}")).json()
            assert body["total_commits"] == 2143 and len(body["commits"]) == 250
            assert body["commits"][-1]["sha"] == new  # the newest of the whole range is last
            last = await c.get(f"/repos/NixOS/nixpkgs/compare/{old}...{new}", params={"per_page": 100, "page": 22})
            assert len(last.json()["commits"]) == 43 and last.json()["commits"][-1]["sha"] == new
    finally:
        await fake.stop()


async def test_compare_other_inputs_and_the_repo_itself(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    pr = (await client.get(f"{REPO}/pulls/42")).json()
    moves = lockgen.rev_moves(lock_of(gh, pr["base"]["sha"]), lock_of(gh, pr["head"]["sha"]))
    other = next(m for m in moves if m.repo != "nixpkgs")
    r = await client.get(f"/repos/{other.owner}/{other.repo}/compare/{other.old_rev}...{other.new_rev}")
    assert r.status_code == 200 and r.json()["status"] == "ahead" and r.json()["commits"][-1]["sha"] == other.new_rev
    assert (await client.get(f"/repos/{other.owner}/{other.repo}/pulls")).status_code == 404
    own = (await client.get(f"{REPO}/compare/main...{BOT_BRANCH}")).json()
    assert (own["status"], own["ahead_by"], own["behind_by"]) == ("ahead", 1, 0)
    assert [f["filename"] for f in own["files"]] == ["flake.lock"] and own["files"][0]["patch"]
    diverged = (await client.get(f"{REPO}/compare/{BOT_BRANCH}...manual-bump")).json()
    assert diverged["status"] == "diverged"
    assert (await client.get(f"{REPO}/compare/main...nope")).status_code == 404


# --- refs, PR creation, comments, labels -------------------------------------------------------------


async def test_git_refs(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    moved: list[tuple[str, str]] = []
    gh.on_branch_moved(lambda b, s: moved.append((b, s)))
    head, _ = gh.default_branch_head()
    ref = (await client.get(f"{REPO}/git/ref/heads/main")).json()
    assert ref == {**ref, "ref": "refs/heads/main", "object": {**ref["object"], "sha": head, "type": "commit"}}
    assert (await client.get(f"{REPO}/git/ref/heads/nope")).status_code == 404
    r = await client.post(f"{REPO}/git/refs", json={"ref": "refs/heads/nfu/revert-41", "sha": head})
    assert r.status_code == 201 and r.json()["ref"] == "refs/heads/nfu/revert-41" and "location" in r.headers
    assert moved == [("nfu/revert-41", head)]
    r = await client.post(f"{REPO}/git/refs", json={"ref": "refs/heads/nfu/revert-41", "sha": head})
    assert r.status_code == 422 and r.json()["message"] == "Reference already exists"
    r = await client.post(f"{REPO}/git/refs", json={"ref": "refs/heads/x", "sha": "1" * 40})
    assert r.status_code == 422 and r.json()["message"] == "Object does not exist"
    r = await client.post(f"{REPO}/git/refs", json={"ref": "refs/heads/nfu", "sha": head})
    assert r.status_code == 422 and r.json()["message"] == "Reference update failed"
    pr_head = (await client.get(f"{REPO}/pulls/42")).json()["head"]["sha"]
    r = await client.patch(f"{REPO}/git/refs/heads/nfu/revert-41", json={"sha": pr_head})
    assert r.status_code == 200 and r.json()["object"]["sha"] == pr_head  # fast-forward
    r = await client.patch(f"{REPO}/git/refs/heads/nfu/revert-41", json={"sha": head})
    assert r.status_code == 422 and r.json()["message"] == "Update is not a fast forward"
    r = await client.patch(f"{REPO}/git/refs/heads/nfu/revert-41", json={"sha": head, "force": True})
    assert r.status_code == 200
    assert (await client.delete(f"{REPO}/git/refs/heads/nfu/revert-41")).status_code == 204
    r = await client.delete(f"{REPO}/git/refs/heads/nfu/revert-41")
    assert r.status_code == 422 and r.json()["message"] == "Reference does not exist"
    r = await client.patch(f"{REPO}/git/refs/heads/gone", json={"sha": head})
    assert r.status_code == 422 and r.json()["message"] == "Reference does not exist"
    assert (await client.delete(f"{REPO}/git/refs/heads/main")).status_code == 422
    assert (await client.delete(f"{REPO}/git/refs/heads/draft-bump")).status_code == 204
    closed = (await client.get(f"{REPO}/pulls/45")).json()  # its head branch is gone
    assert closed["state"] == "closed" and closed["merged"] is False


async def test_create_and_close_pull(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    head, _ = gh.default_branch_head()
    r = await client.post(f"{REPO}/pulls", json={"title": "t", "head": BOT_BRANCH, "base": "main"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["message"] == f"A pull request already exists for alice:{BOT_BRANCH}."
    await client.post(f"{REPO}/git/refs", json={"ref": "refs/heads/empty", "sha": head})
    r = await client.post(f"{REPO}/pulls", json={"title": "t", "head": "alice:empty", "base": "main"})
    assert r.status_code == 422 and r.json()["errors"][0]["message"] == "No commits between main and empty"
    r = await client.post(f"{REPO}/pulls", json={"title": "t", "head": "missing", "base": "main"})
    assert r.status_code == 422 and r.json()["errors"][0] == {"resource": "PullRequest", "field": "head",
                                                               "code": "invalid"}
    r = await client.post(f"{REPO}/pulls", json={"head": "missing", "base": "main"})
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "missing_field"
    r = await client.post(f"{REPO}/pulls", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"] == "Problems parsing JSON"
    await client.delete(f"{REPO}/pulls/42")  # no such route: 404, and nothing changes
    # Close 44 and reopen it.
    r = await client.patch(f"{REPO}/pulls/44", json={"state": "closed"})
    assert r.status_code == 200 and r.json()["state"] == "closed" and r.json()["merged"] is False
    assert (await client.patch(f"{REPO}/pulls/44", json={"state": "open"})).json()["state"] == "open"
    # A PR of a new branch.
    r = await client.post(f"{REPO}/pulls", json={"title": "Bump", "head": "manual-bump", "base": "main"})
    assert r.status_code == 422  # 44 is open for it again
    await client.patch(f"{REPO}/pulls/44", json={"state": "closed"})
    r = await client.post(f"{REPO}/pulls", json={"title": "Bump", "head": "manual-bump", "base": "main",
                                                 "body": "by hand"})
    assert r.status_code == 201 and r.json()["number"] == 46 and r.json()["mergeable"] is None
    assert r.headers["location"].endswith(f"{REPO}/pulls/46") and r.json()["user"]["login"] == "alice"


async def test_comments_labels_user_rate_limit(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    r = await client.post(f"{REPO}/issues/42/comments", json={"body": "nfu-tui: merged"})
    assert r.status_code == 201 and r.json()["body"] == "nfu-tui: merged" and r.json()["user"]["login"] == "alice"
    assert r.json()["html_url"].startswith("https://github.com/alice/nixcfg/pull/42#issuecomment-")
    assert [c["body"] for c in (await client.get(f"{REPO}/issues/42/comments")).json()] == ["nfu-tui: merged"]
    assert (await client.post(f"{REPO}/issues/999/comments", json={"body": "x"})).status_code == 404
    assert (await client.post(f"{REPO}/issues/42/comments", json={})).status_code == 422
    r = await client.post(f"{REPO}/issues/42/labels", json={"labels": ["nfu:merged"]})
    assert r.status_code == 200 and [lb["name"] for lb in r.json()] == ["dependencies", "nfu:merged"]
    r = await client.delete(f"{REPO}/issues/42/labels/dependencies")
    assert [lb["name"] for lb in r.json()] == ["nfu:merged"]
    user = (await client.get("/user")).json()
    assert user["login"] == "alice" and user["type"] == "User"
    rl = (await client.get("/rate_limit")).json()
    assert rl["rate"]["limit"] == 5000 and rl["resources"]["graphql"]["resource"] == "graphql"


async def test_read_only_token(gh: FakeGitHub) -> None:
    gh.add_token("github_pat_readonly", write=False)
    async with httpx.AsyncClient(base_url=gh.url, headers=headers("github_pat_readonly")) as c:
        assert (await c.get(f"{REPO}/pulls/42")).status_code == 200
        r = await c.put(f"{REPO}/pulls/42/merge", json={})
        assert r.status_code == 403
        assert r.json()["message"] == "Resource not accessible by personal access token"
        assert r.headers["x-accepted-github-permissions"] == "contents=write"
        r = await c.post("/graphql", json={"query": 'mutation { revertPullRequest(input: {pullRequestId: "x"}) '
                                                    "{ clientMutationId } }"})
        assert r.json()["errors"][0]["type"] == "NOT_FOUND"
    assert (await _gql(gh, "github_pat_readonly", MERGE_MUTATION,
                       {"id": gh.pr_node_id(42), "oid": None}))["errors"][0]["type"] == "FORBIDDEN"


# --- GraphQL -------------------------------------------------------------------------------------------

DETECT = """
query($owner: String!, $name: String!, $branch: String!) {
  repository(owner: $owner, name: $name) {
    pullRequests(states: OPEN, headRefName: $branch, first: 10) {
      nodes { id number title isDraft headRefOid mergeable mergeStateStatus
              labels(first: 20) { nodes { name } }
              commits(last: 1) { nodes { commit { statusCheckRollup { state } } } } } } } }
"""
REVERT = """
mutation($id: ID!, $title: String, $body: String) {
  revertPullRequest(input: {pullRequestId: $id, title: $title, body: $body}) {
    revertPullRequest { id number url headRefName headRefOid baseRefName } } }
"""
MERGE_MUTATION = """
mutation($id: ID!, $oid: GitObjectID) {
  mergePullRequest(input: {pullRequestId: $id, expectedHeadOid: $oid}) {
    pullRequest { number state merged mergeCommit { oid } } } }
"""
NODE = "query($id: ID!) { node(id: $id) { ... on PullRequest { number state merged mergeCommit { oid } } } }"


async def _gql(gh: FakeGitHub, token: str, query: str, variables: dict | None = None) -> dict:
    async with httpx.AsyncClient(base_url=gh.url, headers=headers(token)) as c:
        r = await c.post("/graphql", json={"query": query, "variables": variables or {}})
        assert r.status_code == 200 and r.headers["x-ratelimit-resource"] == "graphql"
        return r.json()


async def test_graphql_detection_query(gh: FakeGitHub) -> None:
    variables = {"owner": "alice", "name": "nixcfg", "branch": BOT_BRANCH}
    first = await _gql(gh, gh.token, DETECT, variables)
    (node,) = first["data"]["repository"]["pullRequests"]["nodes"]
    assert node["number"] == 42 and node["id"] == gh.pr_node_id(42) and node["isDraft"] is False
    assert node["headRefOid"] == gh.pr_head(42)
    assert (node["mergeable"], node["mergeStateStatus"]) == ("UNKNOWN", "UNKNOWN")
    assert node["labels"] == {"nodes": [{"name": "dependencies"}]}
    assert node["commits"]["nodes"][0]["commit"]["statusCheckRollup"] == {"state": "SUCCESS"}
    second = await _gql(gh, gh.token, DETECT, variables)
    node = second["data"]["repository"]["pullRequests"]["nodes"][0]
    assert (node["mergeable"], node["mergeStateStatus"]) == ("MERGEABLE", "CLEAN")
    missing = await _gql(gh, gh.token, DETECT, {**variables, "name": "other"})
    assert missing["data"] == {"repository": None} and missing["errors"][0]["type"] == "NOT_FOUND"


async def test_graphql_revert(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    node_id = gh.pr_node_id(42)
    refused = await _gql(gh, gh.token, REVERT, {"id": node_id})
    assert refused["data"] == {"revertPullRequest": None}
    assert refused["errors"][0]["type"] == "UNPROCESSABLE" and refused["errors"][0]["path"] == ["revertPullRequest"]
    merged = (await client.put(f"{REPO}/pulls/42/merge", json={})).json()["sha"]
    parent = (await client.get(f"{REPO}/commits/{merged}")).json()["parents"][0]["sha"]
    out = await _gql(gh, gh.token, REVERT, {"id": node_id, "title": "Revert the update", "body": "deploy failed"})
    pr = out["data"]["revertPullRequest"]["revertPullRequest"]
    assert pr["headRefName"] == f"revert-42-{BOT_BRANCH}" and pr["baseRefName"] == "main"
    assert pr["url"] == f"https://github.com/alice/nixcfg/pull/{pr['number']}" and pr["number"] == 46
    assert gh.file_at(pr["headRefOid"], "flake.lock") == gh.file_at(parent, "flake.lock")
    rest = (await client.get(f"{REPO}/pulls/{pr['number']}")).json()
    assert rest["state"] == "open" and rest["title"] == "Revert the update" and rest["body"] == "deploy failed"
    assert rest["head"]["sha"] == pr["headRefOid"] and rest["node_id"] == pr["id"]
    node = await _gql(gh, gh.token, NODE, {"id": node_id})
    assert node["data"]["node"] == {"number": 42, "state": "MERGED", "merged": True, "mergeCommit": {"oid": merged}}
    # Merging the revert restores the old lock on main.
    assert (await client.put(f"{REPO}/pulls/{pr['number']}/merge", json={"sha": pr["headRefOid"]})).status_code == 200
    assert gh.file_at("main", "flake.lock") == gh.file_at(parent, "flake.lock")


async def test_graphql_merge_and_errors(gh: FakeGitHub) -> None:
    node_id = gh.pr_node_id(42)
    stale = await _gql(gh, gh.token, MERGE_MUTATION, {"id": node_id, "oid": "0" * 40})
    assert stale["errors"][0]["message"].startswith("Head branch was modified")
    out = await _gql(gh, gh.token, MERGE_MUTATION, {"id": node_id, "oid": gh.pr_head(42)})
    pr = out["data"]["mergePullRequest"]["pullRequest"]
    assert pr["state"] == "MERGED" and pr["mergeCommit"]["oid"] == gh.default_branch_head()[0]
    bad = await _gql(gh, gh.token, "{ repository(owner: \"alice\", name: \"nixcfg\") { nope } }")
    assert "data" not in bad and bad["errors"][0]["message"] == "Field 'nope' doesn't exist on type 'Repository'"
    assert "errors" in await _gql(gh, gh.token, "{ repository(")
    unknown = await _gql(gh, gh.token, NODE, {"id": "PR_nope"})
    assert unknown["data"] == {"node": None} and unknown["errors"][0]["type"] == "NOT_FOUND"


# --- faults --------------------------------------------------------------------------------------------


async def test_secondary_rate_limit(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    gh.faults.secondary_limit_next = 2
    r = await client.get(f"{REPO}/pulls")
    assert r.status_code == 403 and r.headers["retry-after"] == "60"
    assert r.json()["message"].startswith("You have exceeded a secondary rate limit.")
    assert int(r.headers["x-ratelimit-remaining"]) > 0
    gh.faults.secondary_status = 429
    assert (await client.get(f"{REPO}/pulls")).status_code == 429
    assert (await client.get(f"{REPO}/pulls")).status_code == 200


async def test_server_errors(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    gh.faults.server_error_next = 4
    seen = []
    for _ in range(4):
        r = await client.get(f"{REPO}/pulls")
        seen.append(r.status_code)
        assert all(h in r.headers for h in RATE_HEADERS)
        if r.status_code == 502:
            assert r.headers["content-type"].startswith("text/html") and "Unicorn!" in r.text
        else:
            assert r.json()["message"]
    assert sorted(seen) == [500, 502, 503, 504]
    gh.faults.server_error_next, gh.faults.server_error_status = 1, 502
    assert (await client.get(f"{REPO}/pulls")).status_code == 502
    assert (await client.get(f"{REPO}/pulls")).status_code == 200


async def test_delay(gh: FakeGitHub, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("nfu_tui.sim.github._sleep", sleep)
    await client.get(f"{REPO}/pulls")
    gh.faults.delay_seconds = 1.5
    assert (await client.get(f"{REPO}/pulls")).status_code == 200
    assert slept == [1.5]


async def test_primary_limit_exhausted_and_recovered(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    gh.faults.exhaust(reset_in=600)
    r = await client.get(f"{REPO}/pulls")
    assert r.status_code == 403 and r.headers["x-ratelimit-remaining"] == "0"
    assert r.json()["message"].startswith("API rate limit exceeded for user ID ")
    assert "retry-after" not in r.headers and int(r.headers["x-ratelimit-reset"]) > 0
    assert (await client.get("/rate_limit")).json()["resources"]["core"]["remaining"] == 0
    gql = await _gql(gh, gh.token, NODE, {"id": gh.pr_node_id(42)})  # other bucket: still fine
    assert gql["data"]["node"]["number"] == 42
    gh.faults.exhaust(reset_in=600, bucket="graphql")
    gql = await _gql(gh, gh.token, NODE, {"id": gh.pr_node_id(42)})
    assert gql["errors"][0]["type"] == "RATE_LIMITED" and "data" not in gql
    gh.faults.exhausted["core"] = 0.0  # the reset time has passed
    r = await client.get(f"{REPO}/pulls")
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining"] == "4999"


async def test_budget_runs_out_naturally() -> None:
    fake = FakeGitHub(scenario(), rate_limit=3)
    await fake.start()
    try:
        async with httpx.AsyncClient(base_url=fake.url, headers=headers(fake.token)) as c:
            remaining = [(await c.get("/user")).headers["x-ratelimit-remaining"] for _ in range(3)]
            assert remaining == ["2", "1", "0"]
            r = await c.get("/user")
            assert r.status_code == 403 and r.headers["x-ratelimit-used"] == "3"
    finally:
        await fake.stop()


# --- hooks and determinism -------------------------------------------------------------------------------


async def test_open_update_pr_hook(gh: FakeGitHub, client: httpx.AsyncClient) -> None:
    number = gh.open_update_pr(PRSpec(number=0, ci="pending", age_hours=0))
    assert number == 46
    pr = (await client.get(f"{REPO}/pulls/{number}")).json()
    assert pr["head"]["ref"] == f"{BOT_BRANCH}-46" and pr["state"] == "open"
    with pytest.raises(ValueError):
        gh.open_update_pr(PRSpec(number=42))


def test_scenario_is_deterministic_per_seed() -> None:
    a, b = FakeGitHub(scenario()), FakeGitHub(scenario())
    assert a.default_branch_head() == b.default_branch_head()
    for n in (42, 43, 44, 45):
        assert a.pr_head(n) == b.pr_head(n)
        assert a.file_at(a.pr_head(n), "flake.lock") == b.file_at(b.pr_head(n), "flake.lock")
    other = FakeGitHub(Scenario(seed=12, hosts=[], prs=scenario().prs))
    assert other.default_branch_head()[0] != a.default_branch_head()[0]


async def test_compare_ranges_are_reproducible_across_instances() -> None:
    shas = []
    for _ in range(2):
        fake = FakeGitHub(scenario())
        await fake.start()
        try:
            async with httpx.AsyncClient(base_url=fake.url, headers=headers(fake.token)) as c:
                pr = (await c.get(f"{REPO}/pulls/42")).json()
                old, new = nixpkgs_move(fake, pr["base"]["sha"], pr["head"]["sha"])
                body = (await c.get(f"/repos/NixOS/nixpkgs/compare/{old}...{new}")).json()
                shas.append([(x["sha"], x["commit"]["message"]) for x in body["commits"]])
        finally:
            await fake.stop()
    assert shas[0] == shas[1] and len(shas[0]) == 180


def test_default_scenario_shapes() -> None:
    from nfu_tui.sim.scenario import default_scenario

    fake = FakeGitHub(default_scenario())
    sha, subject = fake.default_branch_head()
    lock = json.loads(fake.file_at(sha, "flake.lock") or b"")
    assert lock["version"] == 7 and fake.file_at("main", "hosts/gpc0/configuration.nix")
    assert fake.file_at(BOT_BRANCH, "flake.lock") == fake.file_at(fake.pr_head(42), "flake.lock")
    strict = FakeGitHub(default_scenario(), settings=RepoSettings(allow_merge_commit=False, required_checks=("x",)))
    assert strict.default_branch_head() == (sha, subject)  # the merged history does not depend on policy
