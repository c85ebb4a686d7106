"""Sans-I/O GitHub protocol: bytes and headers in, data or typed errors out."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from nfu_tui.clients import _github_protocol as p
from nfu_tui.errors import (
    GitHubAuthError,
    GitHubError,
    GitHubForbidden,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubServerError,
    GraphQLError,
    MergeConflict,
    NotMergeable,
    ValidationFailed,
)
from nfu_tui.models import CIVerdict, RateBudget, UpdatePR

NOW = 1_780_000_000.0
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Unicorn!</h1></body></html>"


def body(**data) -> bytes:
    return json.dumps(data).encode()


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "payload", "cls"),
    [
        (401, {}, body(message="Bad credentials", status="401"), GitHubAuthError),
        (403, {}, body(message="Resource not accessible by personal access token"), GitHubForbidden),
        (404, {}, body(message="Not Found", status="404"), GitHubNotFound),
        (405, {}, body(message="Pull Request is not mergeable"), NotMergeable),
        (409, {}, body(message="Head branch was modified. Review and try the merge again."), MergeConflict),
        (422, {}, body(message="Validation Failed"), ValidationFailed),
        (500, {}, body(message="Server Error"), GitHubServerError),
        (502, {"content-type": "text/html"}, HTML_502, GitHubServerError),
        (503, {}, body(code="unavailable", message="Service unavailable"), GitHubServerError),
        (410, {}, body(message="Issues are disabled for this repo"), GitHubError),
    ],
)
def test_status_maps_to_typed_error(status, headers, payload, cls) -> None:
    err = p.error_for_response(status, headers, payload, now=NOW)
    assert type(err) is cls
    assert err.status == status


def test_error_keeps_request_id_and_github_message_verbatim() -> None:
    msg = "Base branch was modified. Review and try the merge again."
    err = p.error_for_response(405, {"X-GitHub-Request-Id": "ABCD:1234"}, body(message=msg, status="405"), now=NOW)
    assert isinstance(err, NotMergeable)
    assert err.message == msg and err.request_id == "ABCD:1234"
    assert err.transient


@pytest.mark.parametrize(
    "msg",
    [
        "Pull Request is not mergeable",
        'Required status check "ci" is expected.',
        "6 of 6 required status checks are expected.",
        "At least 1 approving review is required by reviewers with write access.",
        "Merge commits are not allowed on this repository.",
    ],
)
def test_other_405s_are_not_transient(msg) -> None:
    err = p.error_for_response(405, {}, body(message=msg), now=NOW)
    assert isinstance(err, NotMergeable) and not err.transient and err.message == msg


def test_422_includes_error_item_messages() -> None:
    payload = body(
        message="Validation Failed",
        errors=[
            {"resource": "PullRequest", "code": "custom", "message": "A pull request already exists for alice:x."},
            {"resource": "PullRequest", "field": "head", "code": "invalid"},
        ],
        status="422",
    )
    err = p.error_for_response(422, {}, payload, now=NOW)
    assert isinstance(err, ValidationFailed)
    assert "A pull request already exists for alice:x." in err.message
    assert "PullRequest head invalid" in err.message


def test_html_bodies_are_not_echoed() -> None:
    err = p.error_for_response(502, {}, HTML_502, now=NOW)
    assert err.message == "HTTP 502 Bad Gateway"
    assert "<html" not in str(err)
    assert p.decode_json(HTML_502) is None
    assert p.decode_json(b"") is None


def test_404_says_it_may_mean_no_access() -> None:
    err = p.error_for_response(404, {}, body(message="Not Found"), now=NOW)
    assert "no access" in str(err)


def test_403_hint_names_the_missing_permission() -> None:
    headers = {"x-accepted-github-permissions": "pull_requests=write,contents=read"}
    err = p.error_for_response(403, headers, body(message="Resource not accessible by personal access token"), now=NOW)
    assert isinstance(err, GitHubForbidden)
    assert "pull_requests=write,contents=read" in str(err)


def test_long_messages_are_clipped() -> None:
    err = p.error_for_response(400, {}, body(message="x" * 5000), now=NOW)
    assert len(err.message) <= p.MAX_MESSAGE_CHARS


# --- rate limits --------------------------------------------------------------------


def test_primary_exhaustion_is_rate_limited_with_wait_until_reset() -> None:
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 1200), "x-ratelimit-limit": "5000"}
    msg = "API rate limit exceeded for user ID 1."
    for status in (403, 429):
        err = p.error_for_response(status, headers, body(message=msg), now=NOW)
        assert isinstance(err, GitHubRateLimited)
        assert err.wait_seconds == 1201
    assert p.is_primary_exhausted(403, headers)


@pytest.mark.parametrize(
    ("status", "headers", "message", "attempt", "expected"),
    [
        (200, {"retry-after": "5"}, "", 0, None),
        (404, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"}, "", 0, None),
        (403, {"retry-after": "30"}, "You have exceeded a secondary rate limit.", 0, 30),
        (429, {"Retry-After": "7"}, "", 3, 7),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 60)}, "", 0, 61),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) - 60)}, "", 0, 1),
        (403, {"x-ratelimit-remaining": "12"}, "You have exceeded a secondary rate limit.", 0, 60),
        (403, {"x-ratelimit-remaining": "12"}, "You have exceeded a secondary rate limit.", 2, 240),
        (429, {}, "", 1, 120),
        (403, {"x-ratelimit-remaining": "4999"}, "Resource not accessible by integration", 0, None),
    ],
)
def test_rate_limit_wait_follows_the_contract(status, headers, message, attempt, expected) -> None:
    assert p.rate_limit_wait(status, headers, message, attempt, NOW) == expected


def test_retry_after_as_http_date() -> None:
    when = datetime.fromtimestamp(NOW + 90, tz=UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert p.rate_limit_wait(429, {"retry-after": when}, "", 0, NOW) == pytest.approx(90, abs=1)


def test_parse_rate_budget() -> None:
    headers = {
        "X-RateLimit-Limit": "5000",
        "X-RateLimit-Remaining": "4987",
        "X-RateLimit-Reset": "1780003600",
        "X-RateLimit-Resource": "core",
    }
    assert p.parse_rate_budget(headers) == RateBudget(5000, 4987, 1780003600, "core")
    assert p.parse_rate_budget({}) is None
    assert p.parse_rate_budget({"x-ratelimit-remaining": "3"}).resource == "core"
    assert p.parse_rate_budget({"x-ratelimit-limit": "x", "x-ratelimit-remaining": "1"}).limit is None


# --- retries ------------------------------------------------------------------------


def decide(method, status, headers=None, payload=b"", attempt=0, max_retries=4):
    return p.retry_decision(
        method, status, headers or {}, payload, attempt, now=NOW, rand=lambda: 0.5, max_retries=max_retries
    )


def test_5xx_is_retried_for_gets_only() -> None:
    assert decide("GET", 502, payload=HTML_502) is not None
    assert decide("GET", 503) is not None
    for method in ("PUT", "POST", "PATCH", "DELETE"):
        assert decide(method, 502) is None


def test_retries_are_bounded() -> None:
    assert decide("GET", 500, attempt=3) is not None
    assert decide("GET", 500, attempt=4) is None


def test_secondary_limit_is_retried_after_retry_after_even_for_writes() -> None:
    headers = {"retry-after": "20", "x-ratelimit-remaining": "4000"}
    msg = body(message="You have exceeded a secondary rate limit.")
    for method in ("GET", "PUT"):
        retry = decide(method, 403, headers, msg)
        assert retry is not None and 20 <= retry.delay <= 21


def test_primary_exhaustion_and_long_waits_are_not_slept_through() -> None:
    exhausted = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 3000)}
    assert decide("GET", 403, exhausted) is None
    assert decide("GET", 429, {"retry-after": "3600"}) is None


def test_client_errors_are_not_retried() -> None:
    for status in (400, 401, 404, 405, 409, 422):
        assert decide("GET", status) is None
    assert decide("GET", 403, {"x-ratelimit-remaining": "4000"}, body(message="Must have admin rights")) is None


def test_backoff_grows_with_jitter_and_cap() -> None:
    assert p.backoff_delay(0, lambda: 0.0) == 0.5
    assert p.backoff_delay(0, lambda: 1.0) == 1.0
    assert p.backoff_delay(3, lambda: 0.0) == 4.0
    assert p.backoff_delay(3, lambda: 1.0) == 8.0
    assert p.backoff_delay(20, lambda: 1.0) == 30.0


def test_mergeable_poll_schedule() -> None:
    assert p.mergeable_poll_delays() == (1, 2, 4, 8, 15)
    assert sum(p.mergeable_poll_delays(10)) == 10


# --- pagination ---------------------------------------------------------------------


def test_parse_link_header() -> None:
    value = (
        '<https://api.github.com/repositories/42/pulls?per_page=100&page=2>; rel="next", '
        '<https://api.github.com/repositories/42/pulls?per_page=100&page=5>; rel="last"'
    )
    links = p.parse_link_header(value)
    assert links == {
        "next": "https://api.github.com/repositories/42/pulls?per_page=100&page=2",
        "last": "https://api.github.com/repositories/42/pulls?per_page=100&page=5",
    }
    assert p.next_link({"Link": value}) == links["next"]
    assert p.parse_link_header(None) == {}
    assert p.parse_link_header("garbage") == {}
    assert p.parse_link_header("<http://x/a?b=1,2>;rel=next") == {"next": "http://x/a?b=1,2"}
    assert p.parse_link_header('<http://x/p1>; rel="prev first"') == {"prev": "http://x/p1", "first": "http://x/p1"}


# --- pull requests ------------------------------------------------------------------

PR_ITEM = {
    "number": 41,
    "node_id": "PR_kwDOAbCd1M5xYz12",
    "state": "open",
    "draft": False,
    "title": "flake.lock: Update",
    "body": "Automated changes by the [update-flake-lock](…) GitHub Action.",
    "user": {"login": "github-actions[bot]", "type": "Bot"},
    "labels": [{"name": "dependencies", "color": "0366d6"}],
    "head": {"ref": "update_flake_lock_action", "sha": "9f3c" + "1" * 36, "label": "alice:update_flake_lock_action"},
    "base": {"ref": "main", "sha": "77aa" + "2" * 36},
    "html_url": "https://github.com/alice/nixos-config/pull/41",
    "created_at": "2026-08-16T00:04:11Z",
    "updated_at": "2026-08-16T00:04:12Z",
    "merged_at": None,
    "merge_commit_sha": "c0ffee" + "0" * 34,
    "auto_merge": None,
}


def item(**changes) -> dict:
    data = json.loads(json.dumps(PR_ITEM))
    for key, value in changes.items():
        if key in ("head_ref",):
            data["head"]["ref"] = value
        else:
            data[key] = value
    return data


def test_pr_from_list_item() -> None:
    pr = p.pr_from_json(PR_ITEM)
    assert pr.number == 41 and pr.author == "github-actions[bot]"
    assert pr.head_ref == "update_flake_lock_action" and pr.head_sha.startswith("9f3c")
    assert pr.base_ref == "main" and pr.base_sha.startswith("77aa")
    assert pr.created_at == datetime(2026, 8, 16, 0, 4, 11, tzinfo=UTC)
    assert pr.labels == ("dependencies",) and pr.node_id == "PR_kwDOAbCd1M5xYz12"
    assert pr.mergeable is None and pr.mergeable_state == "unknown"
    assert not pr.merged and pr.merge_commit_sha == ""  # the test-merge SHA is not what landed


def test_pr_detail_fields_and_nulls() -> None:
    pr = p.pr_from_json(item(body=None, mergeable=True, mergeable_state="clean", user=None, labels=None))
    assert pr.body == "" and pr.author == "" and pr.labels == ()
    assert pr.mergeable is True and pr.mergeable_state == "clean"
    merged = p.pr_from_json(item(state="closed", merged=True, merged_at="2026-08-16T01:00:00Z"))
    assert merged.merged and merged.state == "closed" and merged.merge_commit_sha.startswith("c0ffee")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("clean", "clean"), ("BLOCKED", "blocked"), ("has_hooks", "has_hooks"), ("weird", "unknown"), (None, "unknown")],
)
def test_mergeable_state_normalisation(value, expected) -> None:
    assert p.normalize_mergeable_state(value) == expected


def test_describe_mergeability() -> None:
    assert "computing" in p.describe_mergeability(None, "unknown")
    assert p.describe_mergeability(True, "clean") == "ready to merge"
    assert p.describe_mergeability(False, "dirty") == "merge conflict"
    assert p.describe_mergeability(True, "something-new") == p.describe_mergeability(None, "unknown")


RULE = p.DetectionRule()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, True),
        ({"labels": [], "title": "Update Nix flake inputs"}, True),  # head branch alone
        ({"labels": [], "head_ref": "bump", "title": "chore: Bump Flake inputs"}, True),
        ({"labels": [], "head_ref": "x", "title": "FLAKE.LOCK: update"}, True),
        ({"labels": [{"name": "Automated"}], "head_ref": "x", "title": "weekly"}, True),
        ({"labels": [], "head_ref": "feature", "title": "Add host web-02"}, False),
        ({"state": "closed"}, False),
        ({"title": 'Revert "flake.lock: Update"', "head_ref": "revert-41-update_flake_lock_action"}, False),
    ],
)
def test_update_pr_detection(changes, expected) -> None:
    assert p.is_update_pr(item(**changes), RULE) is expected


def test_detection_is_configurable() -> None:
    rule = p.DetectionRule(labels=("nix",), title_patterns=("inputs",), update_branch="flake-update")
    assert p.is_update_pr(item(labels=[{"name": "NIX"}], head_ref="x", title="t"), rule)
    assert p.is_update_pr(item(labels=[], head_ref="flake-update", title="t"), rule)
    assert p.is_update_pr(item(labels=[], head_ref="x", title="Update inputs"), rule)
    assert not p.is_update_pr(item(), rule)  # default label/title/branch no longer match


def test_touches_flake_lock() -> None:
    assert p.touches_flake_lock(["flake.lock"])
    assert p.touches_flake_lock(["README.md", "nix/flake.lock"])
    assert not p.touches_flake_lock([".github/workflows/ci.yml"])
    assert not p.touches_flake_lock(["flake.lock.bak"])


def test_order_update_prs_newest_first_and_superseded() -> None:
    def mk(number: int, created: str | None) -> UpdatePR:
        return p.pr_from_json(item(number=number, created_at=created))

    prs = [mk(40, "2026-08-09T00:00:00Z"), mk(45, "2026-08-16T00:00:00Z"), mk(41, "2026-08-09T00:00:00Z"), mk(7, None)]
    ordered = p.order_update_prs(prs)
    assert [pr.number for pr in ordered] == [45, 41, 40, 7]
    assert ordered[0].superseded_by is None
    assert all(pr.superseded_by == 45 for pr in ordered[1:])
    assert p.order_update_prs([]) == []


# --- CI verdict ---------------------------------------------------------------------


def run(name, status="completed", conclusion="success", id_=1):
    return {"id": id_, "name": name, "status": status, "conclusion": conclusion}


def combined(*statuses, state=None):
    st = [{"context": c, "state": s} for c, s in statuses]
    if state is None:
        state = "pending" if not st else "success"
    return {"state": state, "total_count": len(st), "statuses": st}


def test_no_checks_and_no_statuses_is_no_ci_not_pending() -> None:
    verdict = p.ci_verdict([], combined())
    assert verdict.verdict is CIVerdict.NO_CI
    assert p.ci_verdict([], None).verdict is CIVerdict.NO_CI


def test_actions_only_repo_ignores_the_empty_pending_combined_status() -> None:
    verdict = p.ci_verdict([run("nix flake check"), run("build hosts", conclusion="skipped")], combined())
    assert verdict.verdict is CIVerdict.GREEN
    assert verdict.summary == "2/2 checks passed"


@pytest.mark.parametrize("conclusion", sorted(p.RED_CONCLUSIONS))
def test_red_conclusions(conclusion) -> None:
    verdict = p.ci_verdict([run("a"), run("build hosts", conclusion=conclusion, id_=2)], combined())
    assert verdict.verdict is CIVerdict.RED
    assert verdict.failing == ("build hosts",)
    assert "'build hosts' failed" in verdict.summary


def test_pending_runs_and_statuses() -> None:
    verdict = p.ci_verdict([run("a"), run("b", status="in_progress", conclusion=None, id_=2)], combined())
    assert verdict.verdict is CIVerdict.PENDING and verdict.pending == ("b",)
    verdict = p.ci_verdict([], combined(("ci/hydra", "pending"), state="pending"))
    assert verdict.verdict is CIVerdict.PENDING


def test_red_wins_over_pending_and_status_failures_count() -> None:
    verdict = p.ci_verdict([run("b", status="queued", conclusion=None)], combined(("ci", "error"), state="failure"))
    assert verdict.verdict is CIVerdict.RED and verdict.failing == ("ci",)


def test_green_with_statuses() -> None:
    verdict = p.ci_verdict([run("a")], combined(("ci/hydra", "success")))
    assert verdict.verdict is CIVerdict.GREEN and verdict.summary == "2/2 checks passed"


def test_unknown_conclusion_is_not_green() -> None:
    verdict = p.ci_verdict([run("a", conclusion="brand_new_state")], combined())
    assert verdict.verdict is CIVerdict.UNKNOWN


def test_rerun_uses_the_latest_run_per_name() -> None:
    runs = [run("a", conclusion="failure", id_=1), run("a", conclusion="success", id_=5)]
    assert p.ci_verdict(runs, combined()).verdict is CIVerdict.GREEN
    assert p.ci_verdict(list(reversed(runs)), combined()).verdict is CIVerdict.GREEN


def test_required_checks_decide_and_missing_ones_are_expected() -> None:
    runs = [run("nix flake check"), run("lint", conclusion="failure", id_=2)]
    verdict = p.ci_verdict(runs, combined(), required=["nix flake check"])
    assert verdict.verdict is CIVerdict.GREEN
    assert "non-required 'lint' failed" in verdict.summary
    verdict = p.ci_verdict(runs, combined(), required=["nix flake check", "build hosts"])
    assert verdict.verdict is CIVerdict.PENDING and verdict.pending == ("build hosts",)
    assert "'build hosts' expected but not reported" in verdict.summary
    verdict = p.ci_verdict(runs, combined(), required=["LINT"])
    assert verdict.verdict is CIVerdict.RED


# --- contents / compare -------------------------------------------------------------


def test_contents_base64_with_newlines() -> None:
    raw = json.dumps({"nodes": {"root": {}}, "root": "root", "version": 7}, indent=2).encode() * 5
    b64 = base64.b64encode(raw).decode()
    wrapped = "\n".join(b64[i : i + 60] for i in range(0, len(b64), 60)) + "\n"
    payload = {"type": "file", "encoding": "base64", "content": wrapped, "sha": "a4f0"}
    assert p.contents_payload(payload, "flake.lock") == raw
    unpadded = {"type": "file", "encoding": "base64", "content": base64.b64encode(b"ab").decode().rstrip("=")}
    assert p.contents_payload(unpadded, "x") == b"ab"


def test_contents_edge_cases() -> None:
    assert p.contents_payload({"type": "file", "encoding": "none", "content": ""}, "big.lock") is None
    with pytest.raises(GitHubError, match="directory"):
        p.contents_payload([{"type": "file"}], "hosts")
    with pytest.raises(GitHubError, match="submodule"):
        p.contents_payload({"type": "submodule"}, "vendor/x")
    with pytest.raises(GitHubError, match="base64"):
        p.contents_payload({"type": "file", "encoding": "base64", "content": "@@@@"}, "x")


def compare_page(commits, total=3, status="ahead"):
    return {
        "status": status,
        "ahead_by": total,
        "behind_by": 0,
        "total_commits": total,
        "html_url": "https://github.com/NixOS/nixpkgs/compare/a...b",
        "commits": [
            {
                "sha": sha,
                "commit": {
                    "message": msg,
                    "author": {"date": "2026-02-01T00:00:00Z"},
                    "committer": {"date": "2026-02-05T10:00:00Z"},
                },
            }
            for sha, msg in commits
        ],
    }


def test_comparison_from_pages() -> None:
    pages = [
        compare_page([("a1", "ripgrep: 14.1.1 -> 15.0.0\r\n\r\nhttps://example/CHANGELOG.md\r\n")]),
        compare_page([("a2", "nginx: init at 2.0.1"), ("a3", "")]),
    ]
    cmp = p.comparison_from_pages(pages, max_commits=10)
    assert cmp.status == "ahead" and cmp.ahead_by == 3 and cmp.total_commits == 3
    assert cmp.commits[0] == p.CommitInfo(
        "a1", "ripgrep: 14.1.1 -> 15.0.0", "https://example/CHANGELOG.md", "2026-02-05T10:00:00Z"
    )
    assert [c.sha for c in cmp.commits] == ["a1", "a2", "a3"]
    assert not cmp.truncated
    short = p.comparison_from_pages(pages, max_commits=2)
    assert len(short.commits) == 2 and short.truncated
    assert p.Comparison.from_json(json.loads(json.dumps(cmp.to_json()))) == cmp


def test_split_message() -> None:
    assert p.split_message("subject") == ("subject", "")
    assert p.split_message("s\n\nbody line\n") == ("s", "body line")
    assert p.split_message("") == ("", "")


def test_branch_contains() -> None:
    assert p.branch_contains("ahead") and p.branch_contains("identical")
    assert not p.branch_contains("behind") and not p.branch_contains("diverged")


def test_is_full_sha() -> None:
    assert p.is_full_sha("a" * 40)
    assert not p.is_full_sha("a" * 7)
    assert not p.is_full_sha("main")
    assert not p.is_full_sha("A" * 40)


# --- GraphQL ------------------------------------------------------------------------


def test_graphql_success() -> None:
    payload = body(data={"revertPullRequest": {"revertPullRequest": {"number": 43, "id": "PR_x"}}})
    result = p.parse_graphql(200, {}, payload, now=NOW)
    assert result.get("revertPullRequest", "revertPullRequest", "number") == 43
    p.raise_graphql_errors(result)


def test_graphql_errors_with_200_and_partial_data() -> None:
    payload = body(
        data={"revertPullRequest": None, "viewer": {"login": "alice"}},
        errors=[{"type": "UNPROCESSABLE", "path": ["revertPullRequest"], "message": "Pull request is not merged"}],
    )
    result = p.parse_graphql(200, {}, payload, now=NOW)
    assert result.get("viewer", "login") == "alice"  # partial data stays usable
    with pytest.raises(GraphQLError, match="Pull request is not merged \\(UNPROCESSABLE\\)"):
        result.get("revertPullRequest", "revertPullRequest", "number")
    with pytest.raises(GraphQLError):
        p.raise_graphql_errors(result)


def test_graphql_rate_limit_comes_as_200() -> None:
    headers = {
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(int(NOW) + 100),
        "x-ratelimit-resource": "graphql",
    }
    payload = body(errors=[{"type": "RATE_LIMITED", "message": "API rate limit exceeded for user ID 1."}])
    with pytest.raises(GitHubRateLimited) as info:
        p.parse_graphql(200, headers, payload, now=NOW)
    assert info.value.wait_seconds == 101


def test_graphql_http_errors_and_garbage() -> None:
    with pytest.raises(GitHubAuthError):
        p.parse_graphql(401, {}, body(message="Bad credentials"), now=NOW)
    with pytest.raises(GitHubServerError):
        p.parse_graphql(502, {}, HTML_502, now=NOW)
    with pytest.raises(GraphQLError):
        p.parse_graphql(200, {}, b"<html>oops</html>", now=NOW)
    with pytest.raises(GraphQLError, match="lacks"):
        p.parse_graphql(200, {}, body(data={}), now=NOW).get("x")
