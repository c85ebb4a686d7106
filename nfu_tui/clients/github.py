"""Async GitHub client: a thin httpx shell around :mod:`._github_protocol`.

Detects flake.lock update PRs, reads PR details, CI, files and compares, merges
(sha-guarded) and reverts. Every GET is conditional (ETag), so idle polling is
free; results addressed by full commit SHAs are also cached on disk. Transport
errors become :class:`~nfu_tui.errors.GitHubUnavailable`; HTTP errors become the
typed errors of :mod:`nfu_tui.errors`. Tokens live only in the ``Authorization``
header of outgoing requests — never in reprs, logs or exceptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from nfu_tui import __version__
from nfu_tui.clients import _github_protocol as proto
from nfu_tui.clients._github_protocol import CommitInfo, Comparison, DetectionRule
from nfu_tui.clients._limits import body_cap
from nfu_tui.clients.cache import CachedResponse, DiskCache, ETagCache
from nfu_tui.domain import changelog as changelog_mod
from nfu_tui.domain import flakelock
from nfu_tui.domain.changelog import Changelog
from nfu_tui.domain.flakelock import CompareTarget, LockChange, LockedRef, LockFile
from nfu_tui.errors import (
    ConfigError,
    GitHubError,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubServerError,
    GitHubUnavailable,
    LockFileError,
    NotMergeable,
)
from nfu_tui.models import CIStatus, RateBudget, UpdatePR
from nfu_tui.sanitize import add_secret

__all__ = [
    "CommitInfo",
    "CompareResult",
    "Comparison",
    "DetectionRule",
    "GitHubClient",
    "PRExplanation",
    "nixpkgs_headline",
]

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = f"nfu-tui/{__version__}"
_DEFAULT_RULE = DetectionRule()
_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
_MERGE_RETRIES = 3  # for 405 "Base branch was modified" only
_MAX_FILES = 3000  # GitHub's cap for a PR's file list (§2.4)
MAX_BODY_BYTES = flakelock.MAX_LOCK_BYTES + 8 * 1024 * 1024  # a raw flake.lock at its cap, plus headroom
_MAX_REDIRECTS = 5
_REPEAT_REDIRECTS = frozenset({301, 302, 307, 308})  # writes repeat method and body at the new location
_PERMANENT_REDIRECTS = frozenset({301, 308})

_REVERT_MUTATION = (
    "mutation($id: ID!, $title: String, $body: String) { "
    "revertPullRequest(input: {pullRequestId: $id, title: $title, body: $body}) { "
    "revertPullRequest { id number url headRefName headRefOid baseRefName } } }"
)


def _secret(value: SecretStr | str | None) -> SecretStr | None:
    if value is None:
        return None
    secret = value if isinstance(value, SecretStr) else SecretStr(value)
    return secret if secret.get_secret_value() else None


def _quote_path(path: str) -> str:
    """Multi-segment path parameter: each segment encoded, ``/`` kept (§1.9)."""
    return "/".join(quote(seg, safe="") for seg in path.strip("/").split("/"))


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port); the loopback names are one host (a local server may link with either)."""
    parsed = httpx.URL(url)
    return parsed.scheme, "loopback" if parsed.host in _LOOPBACK else parsed.host, parsed.port


def _graphql_url(api_url: str) -> str:
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):  # GitHub Enterprise Server
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


_EMPTY_LOCK = {"nodes": {"root": {"inputs": {}}}, "root": "root", "version": 7}
NIXPKGS_MAX_COMMITS = 2500
OTHER_MAX_COMMITS = 100  # other inputs: one page is enough for a count and a glance


@dataclass(frozen=True)
class CompareResult:
    """One compare target of a lock diff with its GitHub comparison, or why there is none."""

    target: CompareTarget
    comparison: Comparison | None = None
    error: str = ""


@dataclass(frozen=True)
class PRExplanation:
    """Everything the UI shows about an update PR: lock diff, compares, changelog.

    ``summary_text`` is the lock diff as Determinate Nix prints it (the entries after
    ``Flake lock file updates:``); ``errors`` lists partial failures (a compare that
    failed, a truncated changelog, an unparsable lock) as display strings.
    """

    pr: UpdatePR
    lock_only: bool | None
    files: tuple[str, ...]
    lock_path: str | None
    changes: list[LockChange]
    summary_text: str
    headline: str | None
    compares: list[CompareResult]
    changelog: Changelog | None
    nixpkgs_headline: str | None
    errors: list[str]
    old_lock: LockFile | None = None
    new_lock: LockFile | None = None


def nixpkgs_headline(
    target: CompareTarget,
    comparison: Comparison | None,
    old_ref: LockedRef | None = None,
    new_ref: LockedRef | None = None,
) -> str:
    """E.g. ``nixpkgs abc1234 → def5678, 180 commits over 7 days``.

    The span comes from the two locks' ``lastModified`` (else the commit dates); a
    branch switch or a non-forward move says so instead of pretending to be a range.
    """
    text = f"nixpkgs {target.old_rev[:7]} → {target.new_rev[:7]}"
    if target.old_branch and target.new_branch and target.old_branch != target.new_branch:
        text += f" (branch switch {target.old_branch} → {target.new_branch})"
    span = _span_text(old_ref, new_ref, comparison)
    if comparison is None:
        return f"{text}, {span}" if span else text
    if comparison.status == "ahead":
        count = f"{comparison.ahead_by:,} commit{'s' if comparison.ahead_by != 1 else ''}"
        return f"{text}, {count} {span}" if span else f"{text}, {count}"
    if comparison.status == "identical":
        return f"{text}, no new commits"
    if comparison.status == "behind":
        return f"{text}, moved back {comparison.behind_by:,} commit{'s' if comparison.behind_by != 1 else ''}"
    return f"{text}, diverged: {comparison.ahead_by:,} ahead, {comparison.behind_by:,} behind"


def _span_text(old_ref: LockedRef | None, new_ref: LockedRef | None, comparison: Comparison | None) -> str:
    seconds: float | None = None
    if old_ref and new_ref and old_ref.last_modified is not None and new_ref.last_modified is not None:
        seconds = new_ref.last_modified - old_ref.last_modified
    elif comparison and comparison.commits and not comparison.truncated:
        first, last = proto.parse_time(comparison.commits[0].date), proto.parse_time(comparison.commits[-1].date)
        if first and last:
            seconds = (last - first).total_seconds()
    if seconds is None or seconds < 0:
        return ""
    days = round(seconds / 86400)
    if days < 1:
        return "within a day"
    return f"over {days} day{'s' if days != 1 else ''}"


def _lock_path(files: Sequence[str]) -> str | None:
    if not files or "flake.lock" in files:
        return "flake.lock"
    return next((f for f in files if proto.is_lock_path(f)), None)


def _changelog_target(targets: Sequence[CompareTarget]) -> CompareTarget | None:
    """The nixpkgs range the changelog is built from: the root ``nixpkgs`` input, else the first one."""
    nixpkgs = [t for t in targets if t.is_nixpkgs]
    return next((t for t in nixpkgs if ("nixpkgs",) in t.paths), nixpkgs[0] if nixpkgs else None)


def _nixpkgs_part(
    compares: Sequence[CompareResult],
    main: CompareTarget | None,
    old_lock: LockFile,
    new_lock: LockFile,
    errors: list[str],
) -> tuple[Changelog | None, str | None]:
    chosen = next((c for c in compares if c.target is main), None)
    if chosen is None:
        return None, None
    path = ("nixpkgs",) if ("nixpkgs",) in chosen.target.paths else chosen.target.paths[0]
    headline = nixpkgs_headline(
        chosen.target, chosen.comparison, old_lock.resolve_ref(path), new_lock.resolve_ref(path)
    )
    cmp = chosen.comparison
    if cmp is None:
        return None, headline
    if cmp.truncated:
        total = max(cmp.total_commits, cmp.ahead_by)
        errors.append(f"nixpkgs changelog covers the first {len(cmp.commits):,} of {total:,} commits")
    return changelog_mod.build_changelog([(c.subject, c.body) for c in cmp.commits]), headline


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    link: str | None
    cached: bool  # answered 304 and served from the ETag cache
    url: httpx.URL  # where the answer came from (after redirects): the base of relative links

    def json(self) -> Any:
        data = proto.decode_json(self.body)
        if data is None:
            raise GitHubError("GitHub returned a response that is not JSON", status=self.status)
        return data

    def next_url(self) -> str | None:
        """The ``rel="next"`` link as an absolute URL (link targets may be relative, RFC 8288)."""
        target = proto.parse_link_header(self.link).get("next")
        return str(self.url.join(target)) if target else None


class GitHubClient:
    """Client for one repository (``owner/name``). Use as an async context manager or call :meth:`aclose`."""

    def __init__(
        self,
        *,
        api_url: str,
        repo: str,
        token: SecretStr | str | None,
        write_token: SecretStr | str | None = None,
        graphql_url: str | None = None,
        cache_dir: Path | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        transport: httpx.AsyncBaseTransport | None = None,
        labels: Iterable[str] = _DEFAULT_RULE.labels,
        title_patterns: Iterable[str] = _DEFAULT_RULE.title_patterns,
        update_branch: str = _DEFAULT_RULE.update_branch,
        fork_repos: Iterable[str] = (),
        required_checks: Sequence[str] = (),
        max_retries: int = 4,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        owner, _, name = repo.partition("/")
        if not owner or not name or "/" in name:
            raise ConfigError(f"GitHub repository must be 'owner/name', got {repo!r}")
        self.repo = repo
        self.api_url = api_url.rstrip("/")
        self.graphql_url = graphql_url or _graphql_url(self.api_url)
        self._origin = httpx.URL(self.api_url)
        self._trusted_origins = {_origin_of(self.api_url), _origin_of(self.graphql_url)}
        self._repo_path = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        self.__read_token = _secret(token)
        self.__write_token = _secret(write_token) or self.__read_token
        add_secret(self.__read_token, self.__write_token)  # never shown, whatever a server echoes
        self._rule = DetectionRule(
            labels=tuple(labels),
            title_patterns=tuple(title_patterns),
            update_branch=update_branch,
            repo=repo,
            fork_repos=tuple(fork_repos),
        )
        self._required = tuple(required_checks)
        self._max_retries = max_retries
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        self._etags = ETagCache()
        self._disk = DiskCache(cache_dir)
        self._files: OrderedDict[tuple[int, str], tuple[str, ...]] = OrderedDict()
        self._update_prs: list[UpdatePR] | None = None
        self._viewer: str | None = None
        self._deprecation_logged = False
        self.rate = RateBudget()
        self.rates: dict[str, RateBudget] = {}
        self.requests_made = 0
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=_TIMEOUT,
            follow_redirects=True,
            headers={
                "User-Agent": user_agent or DEFAULT_USER_AGENT,
                "Accept": proto.MEDIA_JSON,
                "X-GitHub-Api-Version": proto.API_VERSION,
            },
            event_hooks={"request": [self._count_request],
                         "response": [body_cap(MAX_BODY_BYTES, GitHubError, "GitHub")]},
        )

    def __repr__(self) -> str:
        auth = "anonymous" if self.__read_token is None else "token"
        return f"GitHubClient(api_url={self.api_url!r}, repo={self.repo!r}, auth={auth})"

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- transport ---------------------------------------------------------------

    async def _count_request(self, request: httpx.Request) -> None:
        self.requests_made += 1

    def _absolute(self, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            return self.api_url + url
        if _origin_of(url) not in self._trusted_origins:
            raise GitHubError(f"refusing to send the token to another host ({httpx.URL(url).host})")
        return url

    @staticmethod
    def _token_id(token: SecretStr | None) -> str:
        if token is None:
            return "anonymous"
        return hashlib.sha256(b"nfu-tui:" + token.get_secret_value().encode()).hexdigest()[:16]

    def _cache_key(self, url: str, accept: str, token: SecretStr | None) -> str:
        """ETag cache key: method, full URL, ``Accept`` and token identity (§1.7, ``vary``)."""
        return "\n".join(("GET", url, accept, self._token_id(token)))

    async def _exchange(
        self, method: str, url: str, params: Mapping[str, Any] | None, json_body: Any, headers: dict[str, str]
    ) -> tuple[httpx.Response, bool]:
        """One HTTP exchange and whether it was permanently redirected (§1.9).

        Reads follow redirects in httpx, which drops ``Authorization`` on the way to
        another origin. Writes follow 301/302/307/308 here with the same method and
        body (httpx would turn a 301/302 into a GET: a comment would silently not be
        posted), and only within the API's own origins.
        """
        if method in proto.IDEMPOTENT_METHODS:
            resp = await self._http.request(method, url, params=params, json=json_body, headers=headers)
            hops = [r.status_code for r in resp.history]
        else:
            resp = await self._http.request(
                method, url, params=params, json=json_body, headers=headers, follow_redirects=False
            )
            hops = []
            while resp.status_code in _REPEAT_REDIRECTS and resp.headers.get("location"):
                if len(hops) >= _MAX_REDIRECTS:
                    raise GitHubError(f"GitHub redirected {method} {httpx.URL(url).path} too many times")
                target = self._absolute(str(resp.url.join(resp.headers["location"])))
                hops.append(resp.status_code)
                resp = await self._http.request(method, target, json=json_body, headers=headers, follow_redirects=False)
        return resp, bool(hops) and all(code in _PERMANENT_REDIRECTS for code in hops)

    def _remember_move(self, requested: httpx.URL, final: httpx.URL) -> None:
        """After a permanent redirect of a path of this repository (renamed or transferred),
        address the repository by its new path from now on (§1.9 "remember it")."""
        base = self._origin.path.rstrip("/")
        prefix = base + self._repo_path
        path = requested.path
        if path != prefix and not path.startswith(prefix + "/"):
            return
        suffix = path[len(prefix) :]
        if _origin_of(str(final)) != _origin_of(self.api_url) or not final.path.endswith(suffix):
            return
        moved = final.path[: len(final.path) - len(suffix)]
        if moved.startswith(base + "/") and moved != prefix:
            log.info("GitHub moved %s to %s; using the new location", self.repo, moved[len(base) :])
            self._repo_path = moved[len(base) :]

    def _note_headers(self, headers: httpx.Headers) -> None:
        """Track the rate budget; warn once when the pinned API version nears its end (§1.1)."""
        sunset = headers.get("sunset") or headers.get("deprecation")
        if sunset and not self._deprecation_logged:
            self._deprecation_logged = True
            log.warning("GitHub API version %s is deprecated (sunset: %s)", proto.API_VERSION, sunset)
        budget = proto.parse_rate_budget(headers)
        if budget is None:
            return
        seen = self.rates.get(budget.resource)
        if (seen is not None and seen.reset_epoch is not None and seen.reset_epoch == budget.reset_epoch
                and seen.remaining is not None
                and budget.remaining is not None and budget.remaining > seen.remaining):
            return  # an answer overtaken by a later one: within one window the budget only goes down
        self.rates[budget.resource] = budget
        if budget.resource == "core":
            self.rate = budget

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        accept: str = proto.MEDIA_JSON,
        write: bool = False,
    ) -> _Reply:
        """One logical request: conditional GETs, rate-limit/5xx retries, typed errors."""
        full = self._absolute(url)
        token = self.__write_token if write else self.__read_token
        headers = {"Accept": accept}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        cache_key: str | None = None
        cached: CachedResponse | None = None
        requested = httpx.URL(full, params=params)
        if method == "GET":
            cache_key = self._cache_key(str(requested), accept, token)
            cached = self._etags.get(cache_key)
            if cached is not None:
                headers.update(cached.validators())
        attempt = 0
        while True:
            try:
                resp, moved = await self._exchange(method, full, params, json_body, headers)
            except httpx.TransportError as exc:
                # Connect failures never reached GitHub, so even writes may be repeated.
                safe = method in proto.IDEMPOTENT_METHODS or isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if safe and attempt < self._max_retries:
                    delay = proto.backoff_delay(attempt, self._rand)
                    log.info("GitHub %s %s: %s; retrying in %.1f s", method, url, type(exc).__name__, delay)
                    await self._sleep(delay)
                    attempt += 1
                    continue
                raise GitHubUnavailable(
                    f"cannot reach GitHub at {self._origin.host}: {_describe_transport_error(exc)}"
                ) from None
            except httpx.RequestError as exc:  # e.g. too many redirects
                raise GitHubError(f"GitHub request failed: {type(exc).__name__}") from None
            self._note_headers(resp.headers)
            status, body = resp.status_code, resp.content
            if moved and status < 400:
                self._remember_move(requested, resp.url)
            if status == 304 and cached is not None:
                return _Reply(200, resp.headers, cached.body, cached.link, True, resp.url)
            if 200 <= status < 300:
                etag, modified = resp.headers.get("etag"), resp.headers.get("last-modified")
                if cache_key is not None and (etag or modified):
                    entry = CachedResponse(etag, modified, body, resp.headers.get("link"))
                    self._etags.put(cache_key, entry)
                    if moved:  # the next request goes to the new location: keep it conditional
                        self._etags.put(self._cache_key(str(resp.url), accept, token), entry)
                return _Reply(status, resp.headers, body, resp.headers.get("link"), False, resp.url)
            now = self._clock()
            retry = proto.retry_decision(
                method, status, resp.headers, body, attempt, now=now, rand=self._rand, max_retries=self._max_retries
            )
            if retry is None:
                raise proto.error_for_response(status, resp.headers, body, now=now, attempt=attempt)
            log.info("GitHub %s %s → %d (%s); retrying in %.1f s", method, url, status, retry.reason, retry.delay)
            await self._sleep(retry.delay)
            attempt += 1

    async def _get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        return (await self._send("GET", url, params=params)).json()

    async def _get_pages(
        self, url: str, params: Mapping[str, Any] | None, *, key: str | None = None, limit: int | None = None,
        write: bool = False,
    ) -> tuple[list[Any], bool]:
        """All items of a paginated list (``key`` names the array inside an object body; ``write``: read
        with the write token).

        Returns (items, fresh) where ``fresh`` is False when every page was a 304.
        """
        items: list[Any] = []
        fresh = False
        seen: set[str] = set()
        next_url: str | None = url
        while next_url and next_url not in seen:
            seen.add(next_url)
            reply = await self._send("GET", next_url, params=params, write=write)
            fresh = fresh or not reply.cached
            data = reply.json() if reply.body else []
            page = data.get(key) if key and isinstance(data, Mapping) else data
            if not isinstance(page, list):
                raise GitHubError(f"unexpected response shape for {url}")
            items.extend(page)
            if limit is not None and len(items) >= limit:
                return items[:limit], fresh
            next_url = reply.next_url()
            params = None  # the next link carries the query verbatim
        return items, fresh

    # --- detection ---------------------------------------------------------------

    async def list_update_prs(self) -> list[UpdatePR]:
        """Open flake.lock update PRs, newest first, older ones marked ``superseded_by``.

        One conditional request per page; when every page is ``304`` the previous
        result is returned without further requests. Candidates (label, title or
        head branch) are confirmed by their changed files (they must touch a
        flake.lock); file lists are cached per (PR, head SHA).
        """
        items, fresh = await self._get_pages(f"{self._repo_path}/pulls", {"state": "open", "per_page": 100})
        if not fresh and self._update_prs is not None:
            return list(self._update_prs)
        self._update_prs = None  # until this listing is fully processed (a failure must not pin a stale result)
        found: list[UpdatePR] = []
        numbers: set[int] = set()
        for item in items:
            if not isinstance(item, Mapping) or not proto.is_update_pr(item, self._rule):
                continue
            pr = proto.pr_from_json(item)
            if pr.number in numbers:  # shifted onto the next page while we paged (§1.6)
                continue
            numbers.add(pr.number)
            files = await self._files_for(pr.number, pr.head_sha)
            if proto.touches_flake_lock(files):
                found.append(pr.with_changes(files=files))
        self._update_prs = proto.order_update_prs(found)
        return list(self._update_prs)

    async def _files_for(self, number: int, head_sha: str) -> tuple[str, ...]:
        key = (number, head_sha)
        files = self._files.get(key)
        if files is None:
            files = await self.pr_files(number)
            if head_sha:
                self._files[key] = files
                while len(self._files) > 256:
                    self._files.popitem(last=False)
        return files

    async def pr_files(self, number: int) -> tuple[str, ...]:
        """Paths changed by a PR (all pages, up to GitHub's 3,000)."""
        items, _ = await self._get_pages(f"{self._repo_path}/pulls/{number}/files", {"per_page": 100}, limit=_MAX_FILES)
        return proto.file_names(items)

    # --- PR detail -----------------------------------------------------------------

    async def _fetch_pull(self, number: int) -> UpdatePR:
        data = await self._get_json(f"{self._repo_path}/pulls/{number}")
        if not isinstance(data, Mapping):
            raise GitHubError(f"unexpected response for pull request #{number}")
        pr = proto.pr_from_json(data)
        return pr.with_changes(files=self._files.get((pr.number, pr.head_sha), ()))

    async def get_pull(self, number: int, *, wait_mergeable: bool = True) -> UpdatePR:
        """One PR with ``mergeable``; while GitHub computes it (null), poll 1, 2, 4, 8 … s.

        Gives up after ~30 s and returns ``mergeable=None`` / ``mergeable_state="unknown"``.
        """
        pr = await self._fetch_pull(number)
        if wait_mergeable:
            for delay in proto.mergeable_poll_delays():
                if pr.mergeable is not None or pr.state != "open" or pr.merged:
                    break
                await self._sleep(delay)
                pr = await self._fetch_pull(number)
        return pr

    async def ci_status(self, sha: str) -> CIStatus:
        """CI verdict for a commit from check runs and the combined status (§2.9)."""
        ref = quote(sha, safe="")
        runs, _ = await self._get_pages(
            f"{self._repo_path}/commits/{ref}/check-runs", {"filter": "latest", "per_page": 100}, key="check_runs"
        )
        reply = await self._send("GET", f"{self._repo_path}/commits/{ref}/status", params={"per_page": 100})
        combined = reply.json()
        if not isinstance(combined, dict):
            raise GitHubError(f"unexpected combined status for {sha[:12]}")
        statuses = list(combined.get("statuses") or ())
        next_url = reply.next_url()
        while next_url and len(statuses) < int(combined.get("total_count") or 0):
            reply = await self._send("GET", next_url)
            page = reply.json()
            statuses.extend((page.get("statuses") or ()) if isinstance(page, Mapping) else ())
            next_url = reply.next_url()
        combined = {**combined, "statuses": statuses}
        return proto.ci_verdict([r for r in runs if isinstance(r, Mapping)], combined, self._required)

    async def file_at(self, path: str, ref: str) -> bytes:
        """A file's bytes at a ref (contents API); cached on disk when ``ref`` is a full SHA."""
        immutable = proto.is_full_sha(ref)
        key = [self.api_url, self.repo.lower(), path, ref]
        if immutable and (hit := self._disk.get_bytes("contents", key)) is not None:
            return hit
        url = f"{self._repo_path}/contents/{_quote_path(path)}"
        data = proto.contents_payload((await self._send("GET", url, params={"ref": ref})).json(), path)
        if data is None:  # large file: the JSON form carries no content
            data = (await self._send("GET", url, params={"ref": ref}, accept=proto.MEDIA_RAW)).body
        if immutable:
            self._disk.put_bytes("contents", key, data)
        return data

    async def compare_commits(
        self, owner: str, repo: str, base: str, head: str, *, max_commits: int = 2500
    ) -> Comparison:
        """``base...head`` in ``owner/repo``: true totals and up to ``max_commits`` commits (oldest first).

        Cached on disk when both ends are full SHAs (such a comparison never changes).
        """
        if max_commits < 1:
            raise ValueError("max_commits must be at least 1")
        immutable = proto.is_full_sha(base) and proto.is_full_sha(head)
        key = [self.api_url, owner.lower(), repo.lower(), base, head, max_commits]
        if immutable and (hit := self._disk.get("compare", key)) is not None:
            try:
                return Comparison.from_json(hit)
            except (KeyError, TypeError, ValueError):
                pass  # corrupt entry: fetch again
        per_page = min(100, max_commits)
        basehead = f"{quote(base, safe='')}...{quote(head, safe='')}"
        url: str | None = f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}/compare/{basehead}"
        params: dict[str, Any] | None = {"per_page": per_page}
        pages: list[Mapping[str, Any]] = []
        fetched = 0
        seen: set[str] = set()
        while url and url not in seen and fetched < max_commits:
            seen.add(url)
            reply = await self._send("GET", url, params=params)
            page = reply.json()
            if not isinstance(page, Mapping):
                raise GitHubError(f"unexpected compare response for {owner}/{repo}")
            pages.append(page)
            fetched += len(page.get("commits") or ())
            url, params = reply.next_url(), None
        comparison = proto.comparison_from_pages(pages, max_commits=max_commits)
        if immutable:
            self._disk.put("compare", key, comparison.to_json())
        return comparison

    # --- explanation -----------------------------------------------------------------

    async def explain(self, pr: UpdatePR, *, max_commits: int = NIXPKGS_MAX_COMMITS) -> PRExplanation:
        """Explain an update PR: files, nix's lock diff (base.sha → head.sha), compares, changelog.

        Reading the PR's files and lock files may raise the client's typed errors;
        everything after that (compares, changelog) degrades into ``errors`` strings.
        """
        errors: list[str] = []
        files = pr.files or await self._files_for(pr.number, pr.head_sha)
        lock_only = pr.with_changes(files=files).lock_only
        lock_path = _lock_path(files)

        def result(**found: Any) -> PRExplanation:
            defaults: dict[str, Any] = {
                "changes": [],
                "summary_text": "",
                "headline": None,
                "compares": [],
                "changelog": None,
                "nixpkgs_headline": None,
            }
            return PRExplanation(
                pr=pr.with_changes(files=files),
                lock_only=lock_only,
                files=files,
                lock_path=lock_path,
                errors=errors,
                **(defaults | found),
            )

        if lock_path is None:
            errors.append("this pull request does not change a flake.lock")
            return result()
        try:
            old_bytes = await self.file_at(lock_path, pr.base_sha)
        except GitHubNotFound:
            old_bytes = None  # flake.lock added by this PR
        new_bytes = await self.file_at(lock_path, pr.head_sha)
        try:
            old_lock = flakelock.parse_lock(old_bytes if old_bytes is not None else _EMPTY_LOCK)
            new_lock = flakelock.parse_lock(new_bytes)
        except LockFileError as exc:
            errors.append(f"{lock_path}: {exc}")
            return result()
        changes = flakelock.diff(old_lock, new_lock)
        targets = flakelock.compare_targets(changes, old_lock, new_lock)
        main = _changelog_target(targets)
        compares = await self._run_compares(targets, main, max_commits, errors)
        changelog, nix_headline = _nixpkgs_part(compares, main, old_lock, new_lock, errors)
        return result(
            changes=changes,
            summary_text=flakelock.render_summary(changes, flakelock.Style.DETERMINATE),
            headline=flakelock.headline(changes, old_lock, new_lock),
            compares=compares,
            changelog=changelog,
            nixpkgs_headline=nix_headline,
            old_lock=old_lock,
            new_lock=new_lock,
        )

    async def _run_compares(
        self, targets: Sequence[CompareTarget], main: CompareTarget | None, max_commits: int, errors: list[str]
    ) -> list[CompareResult]:
        """Every compare target; only the changelog's nixpkgs range is fetched in depth."""
        results: list[CompareResult] = []
        limited: GitHubRateLimited | None = None
        for target in targets:
            if limited is not None:
                results.append(CompareResult(target, error=f"skipped: {limited}"))
                continue
            bound = max_commits if target is main else min(max_commits, OTHER_MAX_COMMITS)
            try:
                comparison = await self.compare_commits(
                    target.owner, target.repo, target.old_rev, target.new_rev, max_commits=bound
                )
            except GitHubError as exc:
                if isinstance(exc, GitHubRateLimited):
                    limited = exc
                errors.append(f"compare {target.slug} {target.old_rev[:7]}...{target.new_rev[:7]} failed: {exc}")
                results.append(CompareResult(target, error=str(exc)))
                continue
            results.append(CompareResult(target, comparison))
        return results

    # --- writes ----------------------------------------------------------------------

    async def merge(
        self, number: int, sha: str, *, method: str = "merge", title: str | None = None, message: str | None = None
    ) -> str:
        """Merge PR ``number`` only if its head is still ``sha``; returns the merge commit SHA.

        409 (head moved) and other 405s raise at once. 405 "Base branch was modified"
        is retried a few times after 1-3 s (safe thanks to the sha guard). After a
        5xx or a lost connection the outcome is checked by reading the PR, never by
        merging again.
        """
        if not proto.is_full_sha(sha):
            raise ValueError("merge needs the full 40-hex head SHA that was reviewed")
        body: dict[str, Any] = {"sha": sha, "merge_method": method}
        if title is not None:
            body["commit_title"] = title
        if message is not None:
            body["commit_message"] = message
        url = f"{self._repo_path}/pulls/{number}/merge"
        attempt = 0
        while True:
            try:
                reply = await self._send("PUT", url, json_body=body, write=True)
            except NotMergeable as exc:
                if not exc.transient or attempt >= _MERGE_RETRIES:
                    raise
                attempt += 1
                await self._sleep(1.0 + 2.0 * self._rand())
                continue
            except (GitHubUnavailable, GitHubServerError):
                pr = await self._fetch_pull(number)
                if pr.merged and pr.head_sha == sha and pr.merge_commit_sha:
                    return pr.merge_commit_sha
                raise
            data = reply.json()
            merged_sha = data.get("sha") if isinstance(data, Mapping) else None
            if not isinstance(merged_sha, str) or not merged_sha:
                raise GitHubError(f"GitHub merged #{number} but returned no merge commit SHA")
            return merged_sha

    async def default_branch(self) -> str:
        """The repository's default branch (``main`` when GitHub does not say)."""
        data = await self._get_json(self._repo_path)
        branch = data.get("default_branch") if isinstance(data, Mapping) else None
        return branch if isinstance(branch, str) and branch else "main"

    async def commits_between(self, base: str, head: str) -> Comparison:
        """GitHub's ``compare`` of ``base...head`` in this repository: status and counts only (one request)."""
        owner, _, name = self.repo.partition("/")
        return await self.compare_commits(owner, name, base, head, max_commits=1)

    async def branch_head(self, branch: str) -> str:
        """The commit SHA a branch points to."""
        data = await self._get_json(f"{self._repo_path}/git/ref/heads/{_quote_path(branch)}")
        obj = data.get("object") if isinstance(data, Mapping) else None
        sha = obj.get("sha") if isinstance(obj, Mapping) else None
        if not isinstance(sha, str) or not sha:
            raise GitHubError(f"unexpected ref response for branch {branch}")
        return sha

    async def wait_for_branch_contains(self, branch: str, sha: str, *, timeout: float = 60) -> None:
        """Poll until ``branch`` is at ``sha`` or has it as an ancestor; GitHubError after ``timeout`` s."""
        waited, delay = 0.0, 1.0
        while True:
            head = await self.branch_head(branch)
            if head == sha or await self._contains(sha, head):
                return
            if waited >= timeout:
                raise GitHubError(
                    f"branch {branch} does not contain {sha[:12]} after {timeout:g} s", title="Merge not visible yet"
                )
            step = min(delay, timeout - waited)
            await self._sleep(step)
            waited += step
            delay = min(delay * 2, 10.0)

    async def _contains(self, sha: str, head: str) -> bool:
        url = f"{self._repo_path}/compare/{quote(sha, safe='')}...{quote(head, safe='')}"
        try:
            data = await self._get_json(url, {"per_page": 1})
        except GitHubNotFound:
            return False  # not (yet) known to GitHub
        return isinstance(data, Mapping) and proto.branch_contains(str(data.get("status")))

    async def revert_pull(self, pr_node_id: str, *, title: str | None = None, body: str | None = None) -> UpdatePR:
        """GraphQL ``revertPullRequest`` on a merged PR; returns the new (unmerged) revert PR."""
        variables = {"id": pr_node_id, "title": title, "body": body}
        reply = await self._send(
            "POST",
            self.graphql_url,
            json_body={"query": _REVERT_MUTATION, "variables": variables},
            accept="application/json",
            write=True,
        )
        result = proto.parse_graphql(reply.status, reply.headers, reply.body, now=self._clock())
        number = result.get("revertPullRequest", "revertPullRequest", "number")
        if result.errors:
            log.warning("revertPullRequest created #%s with errors: %s", number, result.error_text())
        return await self.get_pull(int(number), wait_mergeable=False)

    async def open_pulls_into(self, base: str) -> list[UpdatePR]:
        """Every open pull request into branch ``base`` (all pages), as list items give them.

        No mergeability and no files (pull-request-simple, §2.1). Filter the result
        yourself too: ``base`` only narrows the listing (and keeps its ETag entry apart
        from the update-PR poll's, whose 304 handling relies on it).
        """
        items, _ = await self._get_pages(f"{self._repo_path}/pulls", {"state": "open", "base": base, "per_page": 100})
        return [proto.pr_from_json(item) for item in items if isinstance(item, Mapping)]

    async def comment(self, number: int, body: str) -> None:
        await self._send("POST", f"{self._repo_path}/issues/{number}/comments", json_body={"body": body}, write=True)

    async def close_pull(self, number: int) -> None:
        await self._send("PATCH", f"{self._repo_path}/pulls/{number}", json_body={"state": "closed"}, write=True)

    # --- deployments (contract §7b): the run record and the lock shared across admins ------

    async def create_deployment(self, sha: str, *, environment: str, description: str,
                                payload: Mapping[str, Any]) -> proto.DeploymentRecord:
        """A deployment of the already merged commit ``sha`` (no auto-merge, no required contexts)."""
        reply = await self._send("POST", f"{self._repo_path}/deployments", write=True, json_body={
            "ref": sha, "task": "deploy", "auto_merge": False, "required_contexts": [], "environment": environment,
            "description": description[:140], "payload": dict(payload), "transient_environment": False,
        })
        data = reply.json()
        if reply.status != 201 or not isinstance(data, Mapping) or "id" not in data:
            message = data.get("message") if isinstance(data, Mapping) else ""
            raise GitHubError(f"GitHub created no deployment ({reply.status}{': ' + str(message) if message else ''})")
        return proto.deployment_from_json(data)

    async def create_deployment_status(self, deployment_id: int, state: str, description: str = "") -> None:
        await self._send("POST", f"{self._repo_path}/deployments/{deployment_id}/statuses", write=True,
                         json_body={"state": state, "description": description[:140]})

    async def list_deployments(self, environment: str, *, limit: int = 20,
                               with_status: bool = True) -> list[proto.DeploymentRecord]:
        """The environment's newest deployments (newest first), each with its newest status."""
        items, _ = await self._get_pages(f"{self._repo_path}/deployments",
                                         {"environment": environment, "per_page": min(limit, 100)}, limit=limit,
                                         write=True)
        records = [proto.deployment_from_json(item) for item in items if isinstance(item, Mapping) and "id" in item]
        if not with_status:
            return records
        out = []
        for record in records:
            reply = await self._send("GET", f"{self._repo_path}/deployments/{record.id}/statuses",
                                     params={"per_page": 1}, write=True)
            statuses = reply.json() if reply.body else []
            out.append(proto.with_status(record, statuses[0] if isinstance(statuses, list) and statuses else None))
        return out

    async def viewer_login(self) -> str:
        """Login of the account that performs writes (the write token, else the read token); cached."""
        if self._viewer is None:
            reply = await self._send("GET", "/user", write=True)
            data = reply.json()
            login = data.get("login") if isinstance(data, Mapping) else None
            if not isinstance(login, str) or not login:
                raise GitHubError("GitHub /user returned no login")
            self._viewer = login
        return self._viewer


def _describe_transport_error(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
