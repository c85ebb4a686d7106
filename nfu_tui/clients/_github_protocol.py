"""Sans-I/O GitHub protocol: (status, headers, body) in, data or typed errors out.

Nothing here performs I/O or reads a clock; callers pass ``now`` (epoch seconds) and
a ``rand`` function where time or jitter matters. The async shell in
:mod:`nfu_tui.clients.github` sends the requests and feeds the responses through
these functions. Section numbers refer to ``shared/contracts/github-api.md``.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import http
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

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
from nfu_tui.models import CIStatus, CIVerdict, RateBudget, UpdatePR

API_VERSION = "2022-11-28"
MEDIA_JSON = "application/vnd.github+json"
MEDIA_RAW = "application/vnd.github.raw+json"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_MESSAGE_CHARS = 300

Headers = Mapping[str, str]

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def is_full_sha(value: str) -> bool:
    """True for a 40-hex (lower-case) commit SHA, i.e. an immutable ref."""
    return bool(_FULL_SHA.match(value or ""))


def header(headers: Headers, name: str) -> str | None:
    """Case-insensitive header lookup that works on plain dicts and httpx.Headers."""
    value = headers.get(name)
    if value is not None:
        return value
    lname = name.lower()
    for key, val in headers.items():
        if key.lower() == lname:
            return val
    return None


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


# --- bodies and errors (§1.5) ------------------------------------------------------


def decode_json(body: bytes | str | None) -> Any | None:
    """Parse a JSON body; None when empty or not JSON (e.g. an HTML gateway page)."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def error_message(status: int, body: bytes | str | None) -> str:
    """The human message of an error response, including 422 ``errors[]`` details.

    Non-JSON bodies (HTML 502 pages) are never echoed; the reason phrase stands in.
    """
    data = decode_json(body)
    message = ""
    details: list[str] = []
    if isinstance(data, dict):
        message = str(data.get("message") or "")
        for item in data.get("errors") or ():
            if isinstance(item, dict):
                text = item.get("message") or " ".join(
                    str(item[k]) for k in ("resource", "field", "code") if item.get(k)
                )
                if text:
                    details.append(str(text))
            elif isinstance(item, str):
                details.append(item)
    if not message:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unexpected response"
        message = f"HTTP {status} {phrase}"
    if details:
        message = f"{message}: {'; '.join(details)}"
    return _clip(message)


def error_for_response(
    status: int, headers: Headers, body: bytes | str | None, *, now: float, attempt: int = 0
) -> GitHubError:
    """Map a non-success response to the typed error of ``nfu_tui.errors``."""
    message = error_message(status, body)
    kw: dict[str, Any] = {"status": status, "request_id": header(headers, "x-github-request-id") or ""}
    wait = rate_limit_wait(status, headers, message, attempt, now)
    if wait is not None:
        return GitHubRateLimited(message, wait_seconds=float(wait), hint=f"retry in {wait:.0f} s", **kw)
    if status == 401:
        return GitHubAuthError(message, hint="the token is missing, wrong, expired or revoked", **kw)
    if status == 403:
        return GitHubForbidden(message, hint=_forbidden_hint(headers), **kw)
    if status == 404:
        return GitHubNotFound(message, hint="404 may also mean the token has no access to the repository", **kw)
    if status == 405:
        return NotMergeable(message, **kw)
    if status == 409:
        return MergeConflict(message, **kw)
    if status == 422:
        return ValidationFailed(message, **kw)
    if status == 429:
        return GitHubRateLimited(message, wait_seconds=60.0, **kw)
    if status >= 500:
        return GitHubServerError(message, **kw)
    return GitHubError(message, **kw)


def _forbidden_hint(headers: Headers) -> str:
    needed = header(headers, "x-accepted-github-permissions")
    if needed:
        return f"the token lacks a permission; GitHub accepts: {needed}"
    if header(headers, "x-github-sso"):
        return "the token must be authorised for the organisation's SAML SSO"
    return "the token may lack a permission or scope"


# --- rate limits (§1.8) ------------------------------------------------------------


def parse_rate_budget(headers: Headers) -> RateBudget | None:
    """The primary budget from ``x-ratelimit-*`` headers; None when absent."""
    limit = _int(header(headers, "x-ratelimit-limit"))
    remaining = _int(header(headers, "x-ratelimit-remaining"))
    if limit is None and remaining is None:
        return None
    return RateBudget(
        limit=limit,
        remaining=remaining,
        reset_epoch=_int(header(headers, "x-ratelimit-reset")),
        resource=header(headers, "x-ratelimit-resource") or "core",
    )


def _retry_after_seconds(value: str, now: float) -> float | None:
    seconds = _int(value)
    if seconds is not None:
        return float(max(0, seconds))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def rate_limit_wait(status: int, headers: Headers, body_message: str, attempt: int, now: float) -> float | None:
    """Seconds to wait before retrying a rate-limited request, or None (§1.8).

    ``retry-after`` wins; else an exhausted primary budget waits until the reset;
    else a 429 or a "rate limit" message backs off ``60 * 2**attempt``; a plain 403
    (permission, User-Agent, SSO) is not a rate limit.
    """
    if status not in (403, 429):
        return None
    retry_after = header(headers, "retry-after")
    if retry_after is not None:
        wait = _retry_after_seconds(retry_after, now)
        if wait is not None:
            return wait
    if (header(headers, "x-ratelimit-remaining") or "").strip() == "0":
        reset = _int(header(headers, "x-ratelimit-reset"))
        if reset is not None:
            return max(0.0, reset - now) + 1
    if status == 429 or "rate limit" in (body_message or "").lower():
        return float(60 * 2**attempt)
    return None


def is_primary_exhausted(status: int, headers: Headers) -> bool:
    """A 403/429 caused by the hourly budget (not a secondary limit)."""
    return (
        status in (403, 429)
        and header(headers, "retry-after") is None
        and (header(headers, "x-ratelimit-remaining") or "").strip() == "0"
    )


def backoff_delay(attempt: int, rand: Callable[[], float], *, base: float = 1.0, cap: float = 30.0) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped."""
    ceiling = min(cap, base * 2**attempt)
    return ceiling / 2 + rand() * ceiling / 2


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float
    reason: str


def retry_decision(
    method: str,
    status: int,
    headers: Headers,
    body: bytes | str | None,
    attempt: int,
    *,
    now: float,
    rand: Callable[[], float],
    max_retries: int,
    max_rate_wait: float = 300.0,
) -> Retry | None:
    """Whether to repeat a failed request, and after how long.

    - Secondary rate limits (``retry-after`` or a rate-limit message): wait and retry,
      whatever the method — GitHub refused the request before acting on it.
    - An exhausted primary budget is never slept through here (the caller raises).
    - 5xx: jittered exponential backoff for idempotent methods only; a write that
      got a 5xx may have happened, so it is never repeated blindly.
    """
    if attempt >= max_retries:
        return None
    if status in (403, 429):
        if is_primary_exhausted(status, headers):
            return None
        wait = rate_limit_wait(status, headers, error_message(status, body), attempt, now)
        if wait is None or wait > max_rate_wait:
            return None
        return Retry(wait + rand(), "secondary rate limit")
    if status >= 500 and method.upper() in IDEMPOTENT_METHODS:
        return Retry(backoff_delay(attempt, rand), f"server error {status}")
    return None


# --- pagination (§1.6) -------------------------------------------------------------

_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]+)*)")
_REL = re.compile(r"""rel\s*=\s*"?([^";]+)"?""")


def parse_link_header(value: str | None) -> dict[str, str]:
    """``link`` header → {rel: url}. Tolerates spacing, unquoted rels and several rels."""
    links: dict[str, str] = {}
    for match in _LINK.finditer(value or ""):
        url, params = match.group(1).strip(), match.group(2)
        rel = _REL.search(params)
        if rel:
            for name in rel.group(1).split():
                links.setdefault(name, url)
    return links


def next_link(headers: Headers) -> str | None:
    return parse_link_header(header(headers, "link")).get("next")


# --- pull requests (§2.1, §2.3, §5.6) ----------------------------------------------

MERGEABLE_STATES = frozenset({"clean", "unstable", "blocked", "behind", "dirty", "has_hooks", "unknown", "draft"})

_MERGEABLE_TEXT = {
    "clean": "ready to merge",
    "unstable": "mergeable; a non-required check is failing or pending",
    "blocked": "blocked: required checks, reviews or rules are not satisfied",
    "behind": "head branch is behind the base branch",
    "dirty": "merge conflict",
    "has_hooks": "mergeable (pre-receive hooks will run)",
    "draft": "draft pull request",
    "unknown": "GitHub is still computing mergeability",
}


def normalize_mergeable_state(value: Any) -> str:
    """The REST ``mergeable_state`` lower-cased; anything unrecognised → ``unknown``."""
    text = str(value or "").strip().lower()
    return text if text in MERGEABLE_STATES else "unknown"


def describe_mergeability(mergeable: bool | None, state: str) -> str:
    """One line for the UI from ``mergeable`` and ``mergeable_state``."""
    state = normalize_mergeable_state(state)
    if mergeable is None:
        return _MERGEABLE_TEXT["unknown"]
    if mergeable is False and state not in ("dirty", "draft", "blocked", "behind"):
        return "not mergeable"
    return _MERGEABLE_TEXT[state]


@dataclass(frozen=True, slots=True)
class DetectionRule:
    """Which open PRs count as flake.lock update PRs (configurable, case-insensitive).

    ``repo`` is the repository being watched; ``fork_repos`` lists other repositories
    whose branches are trusted as PR heads (update-flake-lock's ``push-to-fork``).
    """

    labels: tuple[str, ...] = ("automated", "dependencies")
    title_patterns: tuple[str, ...] = ("flake.lock", "update flake", "bump flake")
    update_branch: str = "update_flake_lock_action"
    repo: str = ""
    fork_repos: tuple[str, ...] = ()


_REVERT_TITLE = re.compile(r'^revert\s+"', re.I)
_REVERT_BRANCH = re.compile(r"^revert-\d+-")


def _ref(pr: Mapping[str, Any], side: str, key: str) -> str:
    part = pr.get(side)
    return str(part.get(key) or "") if isinstance(part, Mapping) else ""


def _label_names(pr: Mapping[str, Any]) -> tuple[str, ...]:
    names = []
    for label in pr.get("labels") or ():
        name = label.get("name") if isinstance(label, Mapping) else label
        if isinstance(name, str) and name:
            names.append(name)
    return tuple(names)


def _full_name(repo: Any) -> str | None:
    name = repo.get("full_name") if isinstance(repo, Mapping) else None
    return name.lower() if isinstance(name, str) and name else None


def head_is_trusted(pr: Mapping[str, Any], rule: DetectionRule) -> bool:
    """True unless the PR's head lives outside the watched repository (and the trusted forks).

    ``head.repo`` is ``null`` when the fork was deleted: not trusted. Bodies without
    ``head.repo`` fall back to the owner in ``head.label`` (``owner:branch``); with
    neither, or nothing to compare with, the head is trusted.
    """
    head, base = pr.get("head"), pr.get("base")
    if not isinstance(head, Mapping):
        return True
    trusted = {r.lower() for r in (rule.repo, *rule.fork_repos) if r}
    base_repo = _full_name(base.get("repo")) if isinstance(base, Mapping) else None
    if base_repo:
        trusted.add(base_repo)
    if not trusted:
        return True
    if "repo" in head:
        return _full_name(head["repo"]) in trusted
    label = head.get("label")
    if isinstance(label, str) and ":" in label:
        return label.partition(":")[0].lower() in {t.partition("/")[0] for t in trusted}
    return True


def is_update_pr(pr: Mapping[str, Any], rule: DetectionRule) -> bool:
    """Candidate test on a list item: open, and a matching label, title fragment or head branch.

    Revert PRs (``Revert "…"`` titles, ``revert-<n>-…`` branches, as GitHub's revert
    button makes them) are excluded: they undo an update, they are not one. So are PRs
    whose head is in another repository (a fork's same-named branch, a deleted fork)
    unless that repository is in ``rule.fork_repos``. The caller confirms candidates
    with the changed files (:func:`touches_flake_lock`).
    """
    if str(pr.get("state") or "open") != "open" or not head_is_trusted(pr, rule):
        return False
    title = str(pr.get("title") or "")
    head_ref = _ref(pr, "head", "ref")
    if _REVERT_TITLE.match(title) or (_REVERT_BRANCH.match(head_ref) and head_ref != rule.update_branch):
        return False
    if rule.update_branch and head_ref == rule.update_branch:
        return True
    wanted = {label.lower() for label in rule.labels}
    if any(name.lower() in wanted for name in _label_names(pr)):
        return True
    lowered = title.lower()
    return any(p and p.lower() in lowered for p in rule.title_patterns)


def is_lock_path(path: str) -> bool:
    return path == "flake.lock" or path.endswith("/flake.lock")


def touches_flake_lock(files: Iterable[str]) -> bool:
    """True when any changed file is a flake.lock (in any directory)."""
    return any(is_lock_path(f) for f in files)


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 timestamp (``2026-08-16T00:04:11Z``) → aware datetime; None if unusable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pr_from_json(pr: Mapping[str, Any], *, files: tuple[str, ...] = ()) -> UpdatePR:
    """A pull-request(-simple) object → :class:`UpdatePR`. Tolerates missing fields."""
    user = pr.get("user")
    mergeable = pr.get("mergeable")
    mergeable_state = normalize_mergeable_state(pr.get("mergeable_state"))
    return UpdatePR(
        number=int(pr.get("number") or 0),
        title=str(pr.get("title") or ""),
        author=str(user.get("login") or "") if isinstance(user, Mapping) else "",
        html_url=str(pr.get("html_url") or ""),
        head_ref=_ref(pr, "head", "ref"),
        head_sha=_ref(pr, "head", "sha"),
        base_ref=_ref(pr, "base", "ref"),
        base_sha=_ref(pr, "base", "sha"),
        created_at=parse_time(pr.get("created_at")),
        updated_at=parse_time(pr.get("updated_at")),
        node_id=str(pr.get("node_id") or ""),
        labels=_label_names(pr),
        draft=bool(pr.get("draft")) or mergeable_state == "draft",  # older servers say it only here
        body=str(pr.get("body") or ""),
        files=files,
        mergeable=mergeable if isinstance(mergeable, bool) else None,
        mergeable_state=mergeable_state,
        state=str(pr.get("state") or "open"),
        merged=bool(pr.get("merged") or pr.get("merged_at")),
        merge_commit_sha=str(pr.get("merge_commit_sha") or "") if (pr.get("merged") or pr.get("merged_at")) else "",
    )


def order_update_prs(prs: Sequence[UpdatePR]) -> list[UpdatePR]:
    """Newest first (created_at, then number); older ones ``superseded_by`` the newest."""

    def key(pr: UpdatePR) -> tuple[float, int]:
        return (pr.created_at.timestamp() if pr.created_at else float("-inf"), pr.number)

    ordered = sorted(prs, key=key, reverse=True)
    if not ordered:
        return []
    newest = ordered[0].with_changes(superseded_by=None)
    return [newest] + [pr.with_changes(superseded_by=newest.number) for pr in ordered[1:]]


def file_names(items: Iterable[Any]) -> tuple[str, ...]:
    """Diff-entry objects (§2.4) → file paths, in order."""
    return tuple(str(i["filename"]) for i in items if isinstance(i, Mapping) and i.get("filename"))


# --- CI verdict (§2.7-2.9) ---------------------------------------------------------

RED_CONCLUSIONS = frozenset({"failure", "timed_out", "cancelled", "action_required", "startup_failure", "stale"})
GREEN_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})


@dataclass(frozen=True, slots=True)
class _Check:
    name: str
    outcome: str  # "green" | "red" | "pending" | "unknown"


def _run_outcome(run: Mapping[str, Any]) -> str:
    if str(run.get("status") or "").lower() != "completed":
        return "pending"
    conclusion = str(run.get("conclusion") or "").lower()
    if conclusion in RED_CONCLUSIONS:
        return "red"
    if conclusion in GREEN_CONCLUSIONS:
        return "green"
    return "unknown"


def _status_outcome(state: Any) -> str:
    state = str(state or "").lower()
    return {"success": "green", "failure": "red", "error": "red", "pending": "pending"}.get(state, "unknown")


def _collect_checks(check_runs: Iterable[Mapping[str, Any]], combined: Mapping[str, Any] | None) -> list[_Check]:
    latest: dict[str, Mapping[str, Any]] = {}
    for run in check_runs:
        name = str(run.get("name") or "")
        prev = latest.get(name)
        if prev is None or (_int(str(run.get("id"))) or 0) > (_int(str(prev.get("id"))) or 0):
            latest[name] = run
    checks = [_Check(name, _run_outcome(run)) for name, run in latest.items()]
    if combined:
        seen: set[str] = set()
        for status in combined.get("statuses") or ():
            context = str(status.get("context") or "") if isinstance(status, Mapping) else ""
            if context in seen:  # the combined status lists the latest per context first
                continue
            seen.add(context)
            checks.append(_Check(context, _status_outcome(status.get("state"))))
    return checks


def ci_verdict(
    check_runs: Iterable[Mapping[str, Any]],
    combined: Mapping[str, Any] | None,
    required: Sequence[str] = (),
) -> CIStatus:
    """CI verdict for one head SHA per §2.9, from check runs plus the combined status.

    ``NO_CI`` (no runs, no statuses) is distinct from ``PENDING``. With ``required``
    check names, only those decide (a missing required check is pending, i.e.
    "expected"); other failures are still named in the summary.
    """
    checks = _collect_checks(check_runs, combined)
    if not checks:
        return CIStatus(CIVerdict.NO_CI, "no CI: no check runs or commit statuses for this commit")
    wanted = {r.lower() for r in required if r}
    if wanted:
        deciding = [c for c in checks if c.name.lower() in wanted]
        present = {c.name.lower() for c in deciding}
        missing = sorted(r for r in required if r and r.lower() not in present)
        deciding += [_Check(name, "pending") for name in missing]
        others = [c for c in checks if c.name.lower() not in wanted]
    else:
        deciding, others, missing = checks, [], []
    failing = tuple(c.name for c in deciding if c.outcome == "red")
    pending = tuple(c.name for c in deciding if c.outcome == "pending")
    unknown = [c.name for c in deciding if c.outcome == "unknown"]
    passed = sum(1 for c in deciding if c.outcome == "green")
    if failing:
        verdict = CIVerdict.RED
    elif pending:
        verdict = CIVerdict.PENDING
    elif unknown:
        verdict = CIVerdict.UNKNOWN
    else:
        verdict = CIVerdict.GREEN
    noun = "required checks" if wanted else "checks"
    parts = [f"{passed}/{len(deciding)} {noun} passed"]
    parts += [f"{_quote_names(failing)} failed"] if failing else []
    waiting = [n for n in pending if n not in missing]
    parts += [f"{_quote_names(waiting)} pending"] if waiting else []
    parts += [f"{_quote_names(missing)} expected but not reported"] if missing else []
    parts += [f"{_quote_names(unknown)} in an unknown state"] if unknown else []
    other_red = [c.name for c in others if c.outcome == "red"]
    parts += [f"non-required {_quote_names(other_red)} failed"] if other_red else []
    return CIStatus(verdict, "; ".join(parts), failing, pending)


def _quote_names(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


# --- contents (§2.10) --------------------------------------------------------------


def decode_base64_content(content: str) -> bytes:
    """Lenient base64: GitHub wraps ``content`` with newlines; whitespace is dropped."""
    compact = "".join(content.split())
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GitHubError("GitHub returned file contents that are not valid base64") from exc


def contents_payload(payload: Any, path: str) -> bytes | None:
    """Bytes of a contents-API file object; None when the caller must fetch the raw media type."""
    if isinstance(payload, list):
        raise GitHubError(f"{path} is a directory, not a file")
    if not isinstance(payload, Mapping):
        raise GitHubError(f"unexpected contents response for {path}")
    kind = payload.get("type", "file")
    if kind != "file":
        raise GitHubError(f"{path} is a {kind}, not a file")
    encoding = payload.get("encoding")
    content = payload.get("content")
    if encoding == "base64" and isinstance(content, str):
        data = decode_base64_content(content)
        size = payload.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or len(data) == size:
            return data
    return None  # encoding "none" (1-100 MB files), no or truncated content: ask for the raw bytes


# --- compare (§2.11) ---------------------------------------------------------------


class CommitInfo(NamedTuple):
    sha: str
    subject: str
    body: str
    date: str  # ISO-8601 as GitHub sent it (committer date, else author date)


@dataclass(frozen=True)
class Comparison:
    """A ``compare`` result: GitHub's true totals plus the commits fetched (oldest first)."""

    status: str
    ahead_by: int
    behind_by: int
    total_commits: int
    commits: list[CommitInfo] = field(default_factory=list)
    truncated: bool = False
    html_url: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ahead_by": self.ahead_by,
            "behind_by": self.behind_by,
            "total_commits": self.total_commits,
            "commits": [list(c) for c in self.commits],
            "truncated": self.truncated,
            "html_url": self.html_url,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        return cls(
            status=str(data["status"]),
            ahead_by=int(data["ahead_by"]),
            behind_by=int(data["behind_by"]),
            total_commits=int(data["total_commits"]),
            commits=[CommitInfo(*map(str, c)) for c in data["commits"]],
            truncated=bool(data["truncated"]),
            html_url=str(data.get("html_url") or ""),
        )


def split_message(message: str) -> tuple[str, str]:
    """Commit message → (subject, body); CRLF normalised, body without surrounding blanks."""
    text = (message or "").replace("\r\n", "\n")
    subject, _, body = text.partition("\n")
    return subject.strip(), body.strip("\n")


def commit_info(item: Mapping[str, Any]) -> CommitInfo:
    commit = item.get("commit") if isinstance(item.get("commit"), Mapping) else {}
    subject, body = split_message(str(commit.get("message") or ""))
    date = ""
    for who in ("committer", "author"):
        person = commit.get(who)
        if isinstance(person, Mapping) and person.get("date"):
            date = str(person["date"])
            break
    return CommitInfo(str(item.get("sha") or ""), subject, body, date)


def comparison_from_pages(pages: Sequence[Mapping[str, Any]], *, max_commits: int) -> Comparison:
    """Merge compare pages (first page first) into one bounded :class:`Comparison`."""
    if not pages:
        raise GitHubError("empty compare response")
    first = pages[0]
    commits: list[CommitInfo] = []
    for page in pages:
        for item in page.get("commits") or ():
            if isinstance(item, Mapping):
                commits.append(commit_info(item))
    commits = commits[:max_commits]
    total = _int(str(first.get("total_commits"))) or 0
    ahead = _int(str(first.get("ahead_by"))) or 0
    return Comparison(
        status=str(first.get("status") or "unknown"),
        ahead_by=ahead,
        behind_by=_int(str(first.get("behind_by"))) or 0,
        total_commits=total,
        commits=commits,
        truncated=len(commits) < max(total, ahead),
        html_url=str(first.get("html_url") or ""),
    )


def branch_contains(compare_status: str) -> bool:
    """For ``compare/{sha}...{branch}``: the branch contains ``sha``."""
    return compare_status in ("ahead", "identical")


# --- GraphQL (§3.1) ----------------------------------------------------------------


@dataclass(frozen=True)
class GraphQLResponse:
    data: dict[str, Any] | None
    errors: tuple[dict[str, Any], ...] = ()

    def get(self, *path: str) -> Any:
        """Walk ``data`` along ``path``; raise :class:`GraphQLError` (with the errors) if absent."""
        node: Any = self.data
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            raise GraphQLError(self.error_text() or f"GraphQL response lacks {'.'.join(path)}")
        return node

    def error_text(self) -> str:
        parts = []
        for err in self.errors:
            text = str(err.get("message") or "error")
            kind = err.get("type")
            parts.append(f"{text} ({kind})" if kind else text)
        return _clip("; ".join(parts))


def parse_graphql(status: int, headers: Headers, body: bytes | str | None, *, now: float) -> GraphQLResponse:
    """GraphQL envelope: non-2xx → typed error; 200 with ``errors`` keeps partial data.

    Primary and secondary rate limits may arrive as HTTP 200 (§3.1): an error of
    ``type: RATE_LIMITED`` or one whose message names a rate limit → GitHubRateLimited,
    waiting as §1.8 says. A REST-shaped ``{"message": …}`` body counts as one error.
    """
    if not 200 <= status < 300:
        raise error_for_response(status, headers, body, now=now)
    payload = decode_json(body)
    if not isinstance(payload, Mapping):
        raise GraphQLError("GitHub GraphQL returned a non-JSON response", status=status)
    errors = tuple(e for e in payload.get("errors") or () if isinstance(e, dict))
    data = payload.get("data") if isinstance(payload.get("data"), dict) else None
    if not errors and data is None and payload.get("message"):
        errors = ({"message": str(payload["message"])},)
    result = GraphQLResponse(data, errors)
    limited = [
        e
        for e in errors
        if str(e.get("type") or "").upper() == "RATE_LIMITED" or "rate limit" in str(e.get("message") or "").lower()
    ]
    if limited:
        wait = rate_limit_wait(429, headers, "", 0, now)  # as a 429: retry-after, else the reset, else 60 s
        raise GitHubRateLimited(result.error_text(), wait_seconds=wait if wait is not None else 60.0, status=status)
    return result


def raise_graphql_errors(result: GraphQLResponse) -> None:
    """For mutations: any error is a failure, even with partial data."""
    if result.errors:
        raise GraphQLError(result.error_text())


def mergeable_poll_delays(total: float = 30.0) -> tuple[float, ...]:
    """Backoff while GitHub computes ``mergeable`` (§2.3): 1, 2, 4, 8 … s, ~``total`` s in all."""
    delays: list[float] = []
    delay, spent = 1.0, 0.0
    while spent < total:
        step = min(delay, total - spent)
        delays.append(step)
        spent += step
        delay *= 2
    return tuple(delays)


# --- deployments (contract §7b) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """A GitHub deployment; ``state``/``status_description``/``status_at`` from its newest status
    (``pending`` and empty when it has none yet)."""

    id: int
    sha: str
    ref: str
    environment: str
    description: str
    creator: str
    created_at: datetime | None
    payload: Mapping[str, Any]
    state: str = "pending"
    status_description: str = ""
    status_at: datetime | None = None


def deployment_from_json(data: Mapping[str, Any]) -> DeploymentRecord:
    creator = data.get("creator")
    payload = data.get("payload")
    return DeploymentRecord(
        id=int(data["id"]), sha=str(data.get("sha") or ""), ref=str(data.get("ref") or ""),
        environment=str(data.get("environment") or ""), description=str(data.get("description") or ""),
        creator=str(creator.get("login") or "") if isinstance(creator, Mapping) else "",
        created_at=parse_time(data.get("created_at")),
        payload=payload if isinstance(payload, Mapping) else {},
    )


def with_status(record: DeploymentRecord, status: Mapping[str, Any] | None) -> DeploymentRecord:
    """``record`` with the state of its newest status (``status`` None: none yet)."""
    if status is None:
        return record
    return replace(record, state=str(status.get("state") or "pending"),
                   status_description=str(status.get("description") or ""),
                   status_at=parse_time(status.get("updated_at") or status.get("created_at")))
