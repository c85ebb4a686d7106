"""The fake GitHub of the embedded simulator: an aiohttp server over in-memory repo state.

Faithful to ``shared/contracts/github-api.md`` (§1.4–1.9 headers, errors, pagination,
conditional requests, rate limits; §2 endpoint shapes; §3 GraphQL; §4 merges and
reverts; §8 the fake-server checklist). It serves one configuration repository (the
scenario's ``repo``) backed by a real commit DAG (:mod:`nfu_tui.sim.gitrepo`) whose
``flake.lock`` files come from :mod:`nfu_tui.sim.lockgen`, and — for the compare
endpoint only — every upstream repository those lock files point at (``NixOS/nixpkgs``
with nixpkgs-style commits from :mod:`nfu_tui.sim.nixpkgs`, other inputs with plainer
ones). Commit ranges are derived from the two revs and the seed, so they are stable.

Deterministic for a scenario seed: SHAs, lock contents and commit subjects replay
identically; timestamps visible through the API are relative to the construction time.

Binds to loopback only by default (``start()`` uses ``127.0.0.1`` and an ephemeral port).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import json
import logging
import random
import re
from pathlib import Path
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import quote

from aiohttp import web

from nfu_tui.sim import lockgen, nixpkgs
from nfu_tui.sim.gitrepo import Commit, FileDiff, GitRepo, Person, blob_sha, diff_trees, merge_trees, tree_sha
from nfu_tui.sim.graphql_mini import FieldDef, FieldError, Schema, execute
from nfu_tui.sim.scenario import CI_STATES, PRSpec, Scenario

__all__ = ["FakeGitHub", "GitHubFaults", "RepoSettings", "LoggedRequest"]

log = logging.getLogger(__name__)
_sleep = asyncio.sleep  # the delay fault's clock (tests replace it)

API_VERSIONS = ("2022-11-28", "2026-03-10")
DEFAULT_API_VERSION = "2022-11-28"
DOCS = "https://docs.github.com/rest"
JSON_TYPE = "application/json; charset=utf-8"
WEB = "https://github.com"
ACTIONS_BOT = "github-actions[bot]"
ACTIONS_BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
_BOT_IDS = {ACTIONS_BOT: 41898282, "web-flow": 19864447, "r-ryantm": 3451429}
NIXPKGS_COMMITS_PER_DAY = 26.0
UPSTREAM_COMMITS_PER_DAY = 1.3

UNICORN_502 = """<!DOCTYPE html>
<html>
  <head>
    <meta http-equiv="Content-Type" content="text/html; charset=utf-8">
    <title>Unicorn! &middot; GitHub</title>
  </head>
  <body>
    <div class="container">
      <p><strong>We had issues producing the response to your request.</strong></p>
      <p>Sorry about that. Please try refreshing and contact us if the problem persists.</p>
    </div>
  </body>
</html>
"""

UA_MISSING = (
    "Request forbidden by administrative rules. Please make sure your request has a User-Agent header "
    "(https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). "
    "Check https://developer.github.com for other possible causes.\n"
)


# --- public knobs ------------------------------------------------------------------------


@dataclass
class GitHubFaults:
    """Mutable fault switches; tests and the demo flip them at any time."""

    secondary_limit_next: int = 0  # next N requests hit a secondary rate limit
    secondary_status: int = 403  # 403 or 429
    retry_after: int = 60  # seconds, sent as retry-after on secondary limits
    server_error_next: int = 0  # next N requests fail with 5xx
    server_error_status: int | None = None  # None: rotate 502 (HTML body), 500, 503, 504
    delay_seconds: float = 0.0  # added latency per request
    base_modified_next: int = 0  # next N merges: 405 "Base branch was modified…"
    primary_status: int = 403  # status when the primary budget is exhausted (403 or 429)
    exhausted: dict[str, float] = field(default_factory=dict)  # bucket -> epoch when it resets
    # next N requests whose path contains echo_token_path fail with an error body that repeats
    # the request's token: in the Authorization header, as "token …", and base64 in Basic auth
    echo_token_next: int = 0
    echo_token_path: str = ""
    echo_token_status: int = 422  # 422 "Validation failed: …" or 500 "Internal error while handling Bearer …"

    def exhaust(self, reset_in: float = 60.0, *, bucket: str = "core") -> None:
        """Drop the primary budget of ``bucket`` to 0 until ``reset_in`` seconds from now."""
        self.exhausted[bucket] = time.time() + reset_in

    def clear(self) -> None:
        """Switch every fault off."""
        self.secondary_limit_next = self.server_error_next = self.base_modified_next = self.echo_token_next = 0
        self.delay_seconds = 0.0
        self.exhausted.clear()


@dataclass
class RepoSettings:
    """Repository settings and branch protection of the fake repository."""

    allow_merge_commit: bool = True
    allow_squash_merge: bool = True
    allow_rebase_merge: bool = True
    delete_branch_on_merge: bool = False
    required_checks: tuple[str, ...] = ()  # check-run names / status contexts that must pass
    require_up_to_date: bool = False
    private: bool = True


class LoggedRequest(NamedTuple):
    method: str
    path: str
    status: int


# --- internal state -------------------------------------------------------------------


@dataclass
class _Token:
    login: str
    write: bool
    deployments: bool = True  # fine-grained "Deployments: write"


@dataclass
class _Deployment:
    id: int
    sha: str
    ref: str
    task: str
    payload: Any
    environment: str
    description: str | None
    creator: str
    created_at: float
    transient: bool
    production: bool
    statuses: list[dict[str, Any]] = field(default_factory=list)  # oldest first

    @property
    def state(self) -> str:
        return self.statuses[-1]["state"] if self.statuses else "pending"


@dataclass
class _Budget:
    used: int = 0
    window_start: float = field(default_factory=time.time)


@dataclass
class _CheckRun:
    id: int
    name: str
    head_sha: str
    status: str
    conclusion: str | None
    started_at: float
    completed_at: float | None
    suite_id: int


@dataclass
class _Status:
    id: int
    context: str
    state: str
    description: str
    created_at: float


@dataclass
class _PR:
    number: int
    node_id: str
    title: str
    body: str
    user: str
    head_ref: str
    head_sha: str
    base_ref: str
    created_at: float
    updated_at: float
    draft: bool = False
    labels: list[str] = field(default_factory=list)
    state: str = "open"
    closed_at: float | None = None
    merged_at: float | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None  # test merge while open, the real one once merged
    frozen_base_sha: str | None = None  # base tip when closed/merged
    merge_base_sha: str | None = None  # merge base at merge time (for files/commits)
    maintainer_can_modify: bool = False
    days: float = 7.0
    # mergeability computation: (head, base tip) it is valid for, and reads still returning null
    mkey: tuple[str, str] | None = None
    null_reads_left: int = 0
    conflict: bool | None = None

    @property
    def merged(self) -> bool:
        return self.merged_at is not None


@dataclass
class _Comment:
    id: int
    issue: int
    body: str
    user: str
    created_at: float


@dataclass(frozen=True)
class _UpstreamRev:
    ts: int
    ref: str


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, *, errors: list[dict[str, Any]] | None = None,
                 doc: str = DOCS, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.doc = status, message, errors, doc
        self.headers = headers or {}


class _MergeRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Reply:
    status: int
    body: Any = None  # JSON-serialisable, or bytes with ``raw``
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_TYPE
    raw: bool = False

    def payload(self) -> bytes:
        if self.status in (204, 304) or self.body is None:
            return b""
        if self.raw:
            return self.body if isinstance(self.body, bytes) else str(self.body).encode()
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: bytes
    token: str
    login: str
    write: bool
    url: Any  # yarl.URL of the request (absolute, on the host the client used)

    @property
    def accept(self) -> str:
        return str(self.headers.get("Accept", "")).lower()

    def json(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise _HTTPError(400, "Problems parsing JSON") from None
        if not isinstance(data, dict):
            raise _HTTPError(400, "Body should be a JSON object")
        return data


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64id(*parts: int) -> str:
    return base64.urlsafe_b64encode(struct.pack(f">{len(parts)}Q", *parts)).decode().rstrip("=")


def _validation(message: str, **error: Any) -> _HTTPError:
    return _HTTPError(422, "Validation Failed", errors=[{"message": message, **error} if message else error])


# --- the fake --------------------------------------------------------------------------


class FakeGitHub:
    """GitHub REST + GraphQL for one scenario, served over HTTP on loopback."""

    def __init__(self, scenario: Scenario, *, settings: RepoSettings | None = None, rate_limit: int = 5000,
                 now: float | None = None) -> None:
        self._scn = scenario
        self.repo: str = scenario.repo
        self.token: str = scenario.token
        self.owner, self.name = scenario.repo.split("/", 1)
        self.default_branch: str = scenario.default_branch
        self.faults = GitHubFaults()
        self.settings = settings or RepoSettings()
        self.rate_limit = rate_limit
        self.mergeable_null_reads = 1  # GETs answering mergeable=null after a head/base change
        self._now0 = float(int(now if now is not None else time.time()))
        self._repo_id = int(hashlib.sha1(self.repo.lower().encode()).hexdigest()[:7], 16) + 10_000_000
        self._git = GitRepo(salt=f"{scenario.seed}:{self.repo}")
        self._prs: dict[int, _PR] = {}
        self._node_ids: dict[str, Any] = {}
        self._checks: dict[str, list[_CheckRun]] = {}
        self._statuses: dict[str, list[_Status]] = {}
        self._comments: list[_Comment] = []
        self._deployments: dict[int, _Deployment] = {}
        self._deployment_ids = 1_200_000_000  # real ids are large: never equal to a local run number
        self._label_colors: dict[str, str] = {"dependencies": "0366d6", "automated": "ededed",
                                              "nfu:merged": "0e8a16", "revert": "d93f0b"}
        self._tokens: dict[str, _Token] = {scenario.token: _Token(self.owner, True)}
        self._budgets: dict[tuple[str, str], _Budget] = {}
        self._log: list[LoggedRequest] = []
        self._callbacks: list[Callable[[str, str], None]] = []
        self._upstream: dict[str, dict[str, _UpstreamRev]] = {}
        self._upstream_names: dict[str, str] = {}
        self._pair_counts: dict[tuple[str, str, str], int] = {}
        self._range_cache: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self._seq = 0
        self._pushes = 0
        self._ci_ids = 0
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._schema = self._graphql_schema()
        self._route_table = self._routes()
        self._build()

    def __repr__(self) -> str:
        return f"FakeGitHub(repo={self.repo!r}, url={self._url or None!r})"

    # -- public hooks -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL once started (``http://127.0.0.1:PORT``), else an empty string."""
        return self._url

    @property
    def request_log(self) -> list[LoggedRequest]:
        """Every request served so far: (method, path, status)."""
        return list(self._log)

    def request_count(self, path_prefix: str | None = None) -> int:
        """Requests served so far, optionally only those whose path starts with ``path_prefix``."""
        return sum(1 for r in self._log if path_prefix is None or r.path.startswith(path_prefix))

    def default_branch_head(self) -> tuple[str, str]:
        """(commit SHA, subject of its message) of the default branch."""
        c = self._git.commits[self._git.refs[self.default_branch]]
        return c.sha, c.subject

    def file_at(self, ref: str, path: str) -> bytes | None:
        """File contents at a branch or commit SHA, None if the ref or the path is unknown."""
        sha = self._git.resolve(ref)
        return None if sha is None else self._git.commits[sha].tree.get(path)

    def export_git(self, bare_dir: Path) -> None:
        """Write the repository's commits and branches into the bare git repository ``bare_dir`` (same SHAs:
        hosts reached over SSH fetch the commits this fake GitHub reports)."""
        self._git.export(bare_dir)

    def on_branch_moved(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(branch, new_sha)`` after merges, pushes and ref updates."""
        self._callbacks.append(callback)

    def pr_head(self, number: int) -> str:
        """The current head SHA of PR ``number``."""
        return self._pr(number).head_sha

    def pr_node_id(self, number: int) -> str:
        """The GraphQL node id of PR ``number``."""
        return self._pr(number).node_id

    def add_token(self, token: str, *, write: bool = True, login: str | None = None, deployments: bool = True) -> None:
        """Accept another token; read-only tokens get 403 on every write, tokens without
        ``deployments`` 403 on every Deployments API call."""
        self._tokens[token] = _Token(login or self.owner, write, deployments)

    def set_deployments_permission(self, token: str, allowed: bool) -> None:
        """Give or take a token's "Deployments: write" (403 on the Deployments API without it)."""
        self._tokens[token].deployments = allowed

    def deployments(self) -> list[dict[str, Any]]:
        """Every deployment (newest first) with its state and statuses, as the tests judge them."""
        return [{**self._deployment_obj(d), "state": d.state, "statuses": list(d.statuses)}
                for d in sorted(self._deployments.values(), key=lambda d: d.id, reverse=True)]

    def set_ci(self, number_or_sha: int | str, state: str) -> None:
        """Replace the CI of a PR head (by PR number) or commit (SHA/branch): success | pending | failure | none."""
        if state not in CI_STATES:
            raise ValueError(f"CI state must be one of {sorted(CI_STATES)}")
        if isinstance(number_or_sha, int):
            sha = self._pr(number_or_sha).head_sha
        else:
            resolved = self._git.resolve(number_or_sha)
            if resolved is None:
                raise KeyError(f"unknown commit {number_or_sha!r}")
            sha = resolved
        self._set_ci(sha, state, time.time())

    def push_pr_head(self, number: int, lock_bytes: bytes | None = None) -> str:
        """Force-push a new head onto an open PR, like update-flake-lock's next run.

        The new commit sits on the current base tip with ``lock_bytes`` (default: a fresh
        update) as ``flake.lock``; mergeability goes back to null and CI restarts.
        """
        pr = self._pr(number)
        if pr.state != "open":
            raise ValueError(f"PR #{number} is not open")
        self._pushes += 1
        base_tip = self._git.refs[pr.base_ref]
        base_tree = self._git.commits[base_tip].tree
        old_head = self._git.commits[pr.head_sha]
        mb = self._git.merge_base(base_tip, pr.head_sha) or base_tip
        tree = dict(base_tree)
        for d in diff_trees(self._git.commits[mb].tree, old_head.tree):
            if d.filename != "flake.lock":
                if d.status == "removed":
                    tree.pop(d.filename, None)
                else:
                    tree[d.filename] = old_head.tree[d.filename]
        base_lock = lockgen.parse_lock(base_tree["flake.lock"])
        if lock_bytes is None:
            rng = self._scn.rng(f"github:push:{number}:{self._pushes}")
            lock_bytes = lockgen.dump_lock(lockgen.advance_lock(base_lock, rng, pr.days + self._pushes))
        new_lock = lockgen.parse_lock(lock_bytes)
        self._register_lock(base_lock, new_lock)
        tree["flake.lock"] = lock_bytes
        now = time.time()
        summary = lockgen.render_summary(base_lock, new_lock)
        commit = self._git.commit(tree, [base_tip], _update_message(summary),
                                  self._person(pr.user, now))
        had_ci = bool(self._checks.get(pr.head_sha) or self._statuses.get(pr.head_sha))
        pr.body = _update_body(summary)
        self._move_branch(pr.head_ref, commit.sha)
        self._set_ci(commit.sha, "pending" if had_ci else "none", now)
        return commit.sha

    def open_update_pr(self, spec: PRSpec) -> int:
        """Open another update PR now (``spec.number <= 0`` picks the next free number)."""
        number = spec.number if spec.number > 0 else self._next_number()
        if number in self._prs:
            raise ValueError(f"PR #{number} already exists")
        head_ref = spec.head_ref
        if head_ref in self._git.refs:
            head_ref = f"{spec.head_ref}-{number}"
        spec = copy.copy(spec)
        spec.number = number
        self._create_update_pr(spec, head_ref, time.time() - spec.age_hours * 3600)
        return number

    # -- server ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (port 0 = ephemeral); returns the base URL."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self._url = f"http://{host}:{sock.getsockname()[1]}"
        return self._url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        reply = await self._respond(request)
        self._log.append(LoggedRequest(request.method, request.path, reply.status))
        headers = dict(reply.headers)
        body = reply.payload()
        if reply.status not in (204, 304) and (body or reply.body is not None):
            headers["Content-Type"] = reply.content_type
        return web.Response(status=reply.status, body=None if request.method == "HEAD" else (body or None),
                            headers=headers)

    async def _respond(self, request: web.Request) -> _Reply:
        if self.faults.delay_seconds > 0:
            await _sleep(self.faults.delay_seconds)
        self._seq += 1
        rid = f"C0DE:{self._seq:04X}:{self._repo_id:06X}:{self._seq * 7919 % 0xFFFFFF:06X}:{int(self._now0):08X}"
        path = request.path.rstrip("/") or "/"
        bucket = "graphql" if path == "/graphql" else "core"
        version = request.headers.get("X-GitHub-Api-Version", DEFAULT_API_VERSION)
        base = {"x-github-request-id": rid, "x-github-media-type": "github.v3; format=json",
                "x-github-api-version-selected": version if version in API_VERSIONS else DEFAULT_API_VERSION,
                "vary": "Accept, Authorization, Cookie, X-GitHub-OTP, Accept-Encoding",
                "server": "github.com"}

        def finish(reply: _Reply, token: str | None, *, charge: bool) -> _Reply:
            reply.headers = {**base, **self._rate_headers(token, bucket, charge=charge), **reply.headers}
            return reply

        if not request.headers.get("User-Agent"):
            return finish(_Reply(403, UA_MISSING, content_type="text/plain; charset=utf-8", raw=True), None,
                          charge=False)
        if version not in API_VERSIONS:
            return finish(self._error(_HTTPError(400, f"API version {version} is not supported.")), None, charge=False)
        if self.faults.server_error_next > 0:
            self.faults.server_error_next -= 1
            return finish(self._server_error(), None, charge=False)
        if self.faults.echo_token_next > 0 and self.faults.echo_token_path in path:
            self.faults.echo_token_next -= 1
            return finish(self._echo_token(request.headers.get("Authorization", "")), None, charge=False)
        token = _bearer(request.headers.get("Authorization", ""))
        if token is None or token not in self._tokens:
            message = "Requires authentication" if token is None else "Bad credentials"
            return finish(self._error(_HTTPError(401, message)), None, charge=True)
        info = self._tokens[token]
        if path != "/rate_limit" and self._remaining(token, bucket) <= 0:
            return finish(self._exhausted(bucket, token), token, charge=False)
        if self.faults.secondary_limit_next > 0:
            self.faults.secondary_limit_next -= 1
            msg = ("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                   f"If you reach out to GitHub Support for help, please include the request ID {rid}.")
            err = _HTTPError(self.faults.secondary_status, msg,
                             doc="https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
                                 "#about-secondary-rate-limits",
                             headers={"retry-after": str(self.faults.retry_after)})
            return finish(self._error(err), token, charge=True)
        req = _Request(request.method.upper(), path, dict(request.query), request.headers, await request.read(),
                       token, info.login, info.write, request.url)
        try:
            reply = self._dispatch(req)
        except _HTTPError as exc:
            reply = self._error(exc)
        if info.write:
            reply.headers.setdefault("x-oauth-scopes", "repo, workflow")
        if req.method in ("GET", "HEAD") and reply.status == 200:
            etag = '"' + hashlib.sha256(
                b"\0".join((token.encode(), req.accept.encode(), reply.payload()))).hexdigest()[:40] + '"'
            reply.headers["etag"] = etag
            reply.headers["cache-control"] = "private, max-age=60, s-maxage=60"
            if _etag_matches(request.headers.get("If-None-Match", ""), etag):
                return finish(_Reply(304, None, headers={"etag": etag,
                                                         "cache-control": "private, max-age=60, s-maxage=60"}),
                              token, charge=False)
        return finish(reply, token, charge=path != "/rate_limit")

    def _server_error(self) -> _Reply:
        status = self.faults.server_error_status
        if status is None:
            status = (502, 500, 503, 504)[self._seq % 4]
        if status == 502:
            return _Reply(502, UNICORN_502, content_type="text/html; charset=utf-8", raw=True)
        messages = {500: "Server Error", 503: "Service Unavailable",
                    504: "We couldn't respond to your request in time. Sorry about that. Please try resubmitting "
                         "your request and contact us if the problem persists."}
        body = {"message": messages.get(status, "Server Error"), "documentation_url": DOCS}
        if status == 503:
            body["code"] = "service_unavailable"
        return _Reply(status, body)

    def _echo_token(self, authorization: str) -> _Reply:
        """The ``echo_token`` fault: a careless error body that repeats the credentials."""
        token = _bearer(authorization) or ""
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        if self.faults.echo_token_status >= 500:
            return _Reply(self.faults.echo_token_status,
                          {"message": f"Internal error while handling Bearer {token}", "documentation_url": DOCS})
        return self._error(_HTTPError(422, f"Validation failed: request had Authorization: {authorization}",
                                      errors=[{"resource": "Request", "code": "custom",
                                               "message": f"token {token} (as Basic {basic}) is not allowed here"}]))

    def _exhausted(self, bucket: str, token: str) -> _Reply:
        uid = self._user_id(self._tokens[token].login)
        message = f"API rate limit exceeded for user ID {uid}."
        if bucket == "graphql":
            return _Reply(200, {"errors": [{"type": "RATE_LIMITED", "code": "graphql_rate_limit", "message": message}]})
        return self._error(_HTTPError(self.faults.primary_status, message,
                                      doc="https://docs.github.com/rest/using-the-rest-api/"
                                          "rate-limits-for-the-rest-api#about-primary-rate-limits"))

    def _error(self, exc: _HTTPError) -> _Reply:
        body: dict[str, Any] = {"message": exc.message}
        if exc.errors:
            body["errors"] = exc.errors
        body["documentation_url"] = exc.doc
        body["status"] = str(exc.status)
        return _Reply(exc.status, body, headers=dict(exc.headers))

    # -- rate limits -------------------------------------------------------------------

    def _budget(self, token: str | None, bucket: str) -> _Budget:
        key = (token or "", bucket)
        budget = self._budgets.setdefault(key, _Budget())
        if time.time() >= budget.window_start + 3600:
            budget.used, budget.window_start = 0, time.time()
        return budget

    def _limit(self, token: str | None, bucket: str) -> int:
        return 60 if token is None else self.rate_limit

    def _remaining(self, token: str | None, bucket: str) -> int:
        until = self.faults.exhausted.get(bucket)
        if token is not None and until is not None:
            if time.time() < until:
                return 0
            del self.faults.exhausted[bucket]
            for (tok, b), budget in self._budgets.items():
                if b == bucket:
                    budget.used, budget.window_start = 0, time.time()
        return max(0, self._limit(token, bucket) - self._budget(token, bucket).used)

    def _rate_headers(self, token: str | None, bucket: str, *, charge: bool) -> dict[str, str]:
        budget = self._budget(token, bucket)
        limit = self._limit(token, bucket)
        if charge and self._remaining(token, bucket) > 0:
            budget.used += 1
        remaining = self._remaining(token, bucket)
        until = self.faults.exhausted.get(bucket) if token is not None else None
        reset = int(until) + 1 if until is not None else int(budget.window_start + 3600)
        return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining),
                "x-ratelimit-used": str(limit - remaining), "x-ratelimit-reset": str(reset),
                "x-ratelimit-resource": bucket}

    # -- routing -------------------------------------------------------------------------

    def _dispatch(self, req: _Request) -> _Reply:
        method = "GET" if req.method == "HEAD" else req.method
        for verb, pattern, handler, perm, write in self._route_table:
            if verb != method:
                continue
            m = pattern.fullmatch(req.path)
            if not m:
                continue
            groups = m.groupdict()
            owner, name = groups.pop("owner", None), groups.pop("name", None)
            if owner is not None and handler != self._compare:
                if f"{owner}/{name}".lower() != self.repo.lower():
                    raise _HTTPError(404, "Not Found")
            if write and not req.write:
                raise _HTTPError(403, "Resource not accessible by personal access token",
                                 headers={"x-accepted-github-permissions": perm})
            reply = handler(req, **({"owner": owner, "name": name} if handler == self._compare else {}), **groups)
            if perm:
                reply.headers.setdefault("x-accepted-github-permissions", perm)
            return reply
        raise _HTTPError(404, "Not Found")

    def _routes(self) -> list[tuple[str, re.Pattern[str], Callable[..., _Reply], str, bool]]:
        r = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
        table: list[tuple[str, str, Callable[..., _Reply], str, bool]] = [
            ("GET", r"/user", self._get_user, "", False),
            ("GET", r"/rate_limit", self._get_rate_limit, "", False),
            ("POST", r"/graphql", self._graphql, "", False),
            ("GET", r, self._get_repo, "metadata=read", False),
            ("GET", r + r"/pulls", self._list_pulls, "pull_requests=read", False),
            ("POST", r + r"/pulls", self._create_pull, "pull_requests=write", True),
            ("GET", r + r"/pulls/(?P<number>\d+)", self._get_pull, "pull_requests=read; contents=read", False),
            ("PATCH", r + r"/pulls/(?P<number>\d+)", self._update_pull, "pull_requests=write", True),
            ("GET", r + r"/pulls/(?P<number>\d+)/files", self._pull_files, "pull_requests=read", False),
            ("GET", r + r"/pulls/(?P<number>\d+)/commits", self._pull_commits, "pull_requests=read", False),
            ("GET", r + r"/pulls/(?P<number>\d+)/merge", self._check_merged, "pull_requests=read", False),
            ("PUT", r + r"/pulls/(?P<number>\d+)/merge", self._merge_pull, "contents=write", True),
            ("GET", r + r"/commits/(?P<ref>.+?)/status", self._combined_status, "statuses=read", False),
            ("GET", r + r"/commits/(?P<ref>.+?)/check-runs", self._check_runs, "checks=read", False),
            ("GET", r + r"/commits/(?P<ref>.+?)/pulls", self._commit_pulls, "pull_requests=read", False),
            ("GET", r + r"/commits/(?P<ref>.+)", self._get_commit, "contents=read", False),
            ("GET", r + r"/contents(?:/(?P<path>.*))?", self._get_contents, "contents=read", False),
            ("PUT", r + r"/contents/(?P<path>.+)", self._put_contents, "contents=write", True),
            ("GET", r + r"/compare/(?P<basehead>.+)", self._compare, "contents=read", False),
            ("GET", r + r"/git/refs?/(?P<ref>.+)", self._get_ref, "contents=read", False),
            ("GET", r + r"/git/matching-refs/(?P<ref>.*)", self._matching_refs, "contents=read", False),
            ("POST", r + r"/git/refs", self._create_ref, "contents=write", True),
            ("PATCH", r + r"/git/refs/(?P<ref>.+)", self._update_ref, "contents=write", True),
            ("DELETE", r + r"/git/refs/(?P<ref>.+)", self._delete_ref, "contents=write", True),
            ("GET", r + r"/git/commits/(?P<sha>[0-9a-fA-F]{4,40})", self._get_git_commit, "contents=read", False),
            ("GET", r + r"/issues/(?P<number>\d+)/comments", self._list_comments,
             "issues=read; pull_requests=read", False),
            ("POST", r + r"/issues/(?P<number>\d+)/comments", self._create_comment,
             "issues=write; pull_requests=write", True),
            ("GET", r + r"/issues/(?P<number>\d+)/labels", self._list_labels, "issues=read; pull_requests=read", False),
            ("POST", r + r"/issues/(?P<number>\d+)/labels", self._add_labels,
             "issues=write; pull_requests=write", True),
            ("DELETE", r + r"/issues/(?P<number>\d+)/labels/(?P<label>.+)", self._remove_label,
             "issues=write; pull_requests=write", True),
            ("GET", r + r"/deployments", self._list_deployments, "deployments=read", False),
            ("POST", r + r"/deployments", self._create_deployment, "deployments=write", True),
            ("GET", r + r"/deployments/(?P<did>\d+)", self._get_deployment, "deployments=read", False),
            ("DELETE", r + r"/deployments/(?P<did>\d+)", self._delete_deployment, "deployments=write", True),
            ("GET", r + r"/deployments/(?P<did>\d+)/statuses", self._list_deployment_statuses,
             "deployments=read", False),
            ("POST", r + r"/deployments/(?P<did>\d+)/statuses", self._create_deployment_status,
             "deployments=write", True),
        ]
        return [(v, re.compile(p), h, perm, w) for v, p, h, perm, w in table]

    # -- pagination --------------------------------------------------------------------

    def _paginate(self, req: _Request, items: list[Any], *, default: int = 30) -> tuple[list[Any], dict[str, str]]:
        per_page = min(100, max(1, _int(req.query.get("per_page"), default)))
        page = max(1, _int(req.query.get("page"), 1))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        if last == 1:
            return chunk, {}
        rels = []
        if page < last:
            rels += [("next", page + 1), ("last", last)]
        if page > 1:
            rels += [("first", 1), ("prev", min(page - 1, last))]
        query = dict(req.query)
        query["per_page"] = str(per_page)
        links = ", ".join(f'<{req.url.with_query({**query, "page": str(n)})}>; rel="{rel}"' for rel, n in rels)
        return chunk, {"link": links}

    # -- repository construction ------------------------------------------------------------

    def _person(self, login: str, ts: float) -> Person:
        if login == ACTIONS_BOT:
            return Person(ACTIONS_BOT, ACTIONS_BOT_EMAIL, ts, ACTIONS_BOT)
        return Person(login.capitalize(), f"{login}@users.noreply.github.com", ts, login)

    def _github_person(self, ts: float) -> Person:
        return Person("GitHub", "noreply@github.com", ts, "web-flow")

    def _build(self) -> None:
        t0 = self._now0
        rng = self._scn.rng("github:repo")
        lock = lockgen.generate_lock(self._scn.rng("github:lock"), at=lockgen.ANCHOR - 28 * lockgen.DAY)
        self._register_lock(None, lock)
        hosts = [h.name for h in self._scn.hosts[:6]] or ["hsb0", "gpc0", "web-01"]
        tree = {
            "README.md": _readme(self.repo, hosts).encode(),
            "flake.nix": lockgen.render_flake_nix(lock).encode(),
            "flake.lock": lockgen.dump_lock(lock),
            "modules/common.nix": _COMMON_NIX.encode(),
            ".github/workflows/update-flake-lock.yml": _WORKFLOW.encode(),
        }
        me = self.owner
        c = self._git.commit(tree, [], "Initial commit", self._person(me, t0 - 60 * 86400))
        for host in hosts:
            tree[f"hosts/{host}/configuration.nix"] = _host_config(host, rng).encode()
        c = self._git.commit(tree, [c.sha], f"hosts: add {', '.join(hosts)}", self._person(me, t0 - 45 * 86400))
        self._git.refs[self.default_branch] = c.sha
        # Three weekly update PRs, already merged.
        first = min([p.number for p in self._scn.prs] or [42])
        for week in (3, 2, 1):
            number = first - week
            when = t0 - 7 * week * 86400
            spec = PRSpec(number=number, labels=[], ci="success", days=7, age_hours=0)
            head_ref = "update_flake_lock_action"
            if number < 1 or any(p.number == number for p in self._scn.prs):
                continue
            pr = self._create_update_pr(spec, head_ref, when)
            self._merge(pr, pr.head_sha, "merge", None, None, me, when=when + 3 * 3600, policy=False)
            self._git.refs.pop(head_ref, None)
        tip = self._git.commits[self._git.refs[self.default_branch]]
        tree = dict(tip.tree)
        tree["modules/common.nix"] = _COMMON_NIX.replace("services.fstrim.enable = false;",
                                                         "services.fstrim.enable = true;").encode()
        c = self._git.commit(tree, [tip.sha], "modules/common: enable fstrim", self._person(me, t0 - 3 * 86400))
        self._git.refs[self.default_branch] = c.sha
        # Scenario PRs, oldest first; the newest of each head branch keeps its plain name.
        specs = sorted(self._scn.prs, key=lambda p: (-p.age_hours, p.number))
        newest: dict[str, PRSpec] = {}
        for spec in specs:
            newest[spec.head_ref] = spec
        for spec in specs:
            head_ref = spec.head_ref if newest[spec.head_ref] is spec else f"{spec.head_ref}-{spec.number}"
            self._create_update_pr(spec, head_ref, t0 - spec.age_hours * 3600)

    def _create_update_pr(self, spec: PRSpec, head_ref: str, created: float) -> _PR:
        base_ref = self.default_branch
        base_sha = self._git.refs[base_ref]
        base_tree = self._git.commits[base_sha].tree
        rng = self._scn.rng(f"github:pr:{spec.number}")
        before = lockgen.parse_lock(base_tree["flake.lock"])
        after = lockgen.advance_lock(before, rng, spec.days)
        self._register_lock(before, after, nixpkgs_commits=spec.nixpkgs_commits)
        summary = lockgen.render_summary(before, after)
        tree = dict(base_tree)
        tree["flake.lock"] = lockgen.dump_lock(after)
        for path in spec.extra_files:
            tree[path] = _touch(path, tree.get(path), rng)
        commit = self._git.commit(tree, [base_sha], _update_message(summary),
                                  self._person(spec.author, created - 90))
        self._git.refs[head_ref] = commit.sha
        pr = _PR(number=spec.number, node_id=self._node_id("PR_kwDO", spec.number), title=spec.title,
                 body=_update_body(summary), user=spec.author, head_ref=head_ref, head_sha=commit.sha,
                 base_ref=base_ref, created_at=created, updated_at=created + 1, draft=spec.draft,
                 labels=list(spec.labels), days=spec.days)
        for label in spec.labels:
            self._label_colors.setdefault(label, _label_color(label))
        self._prs[pr.number] = pr
        self._node_ids[pr.node_id] = pr
        self._set_ci(commit.sha, spec.ci, created + 30)
        if spec.conflict:
            # Someone bumped nixpkgs by hand on the base branch: the PR's lock now conflicts.
            tip = self._git.commits[self._git.refs[base_ref]]
            base_lock = lockgen.parse_lock(tip.tree["flake.lock"])
            bumped = lockgen.bump_input(base_lock, self._scn.rng(f"github:conflict:{spec.number}"), "nixpkgs",
                                        max(1.0, spec.days / 2))
            self._register_lock(base_lock, bumped)
            conflict_tree = dict(tip.tree)
            conflict_tree["flake.lock"] = lockgen.dump_lock(bumped)
            msg = _update_message(lockgen.render_summary(base_lock, bumped), "flake.lock: update nixpkgs")
            c = self._git.commit(conflict_tree, [tip.sha], msg, self._person(self.owner, created + 600))
            self._git.refs[base_ref] = c.sha
        return pr

    def _register_lock(self, before: lockgen.LockNode | None, after: lockgen.LockNode,
                       *, nixpkgs_commits: int | None = None) -> None:
        """Make every GitHub rev of the lock comparable; remember commit counts of moves."""
        for owner, repo, rev, ts, ref in lockgen.all_revs(after):
            key = f"{owner}/{repo}".lower()
            self._upstream_names.setdefault(key, f"{owner}/{repo}" if key != "nixos/nixpkgs" else "NixOS/nixpkgs")
            self._upstream.setdefault(key, {})[rev] = _UpstreamRev(ts, ref)
        if before is None:
            return
        for owner, repo, rev, ts, ref in lockgen.all_revs(before):
            self._upstream.setdefault(f"{owner}/{repo}".lower(), {}).setdefault(rev, _UpstreamRev(ts, ref))
        for move in lockgen.rev_moves(before, after):
            if move.path == ("nixpkgs",) and nixpkgs_commits is not None:
                self._pair_counts[(f"{move.owner}/{move.repo}".lower(), move.old_rev, move.new_rev)] = nixpkgs_commits

    # -- state helpers -------------------------------------------------------------------

    def _node_id(self, prefix: str, n: int) -> str:
        return prefix + _b64id(self._repo_id, n)

    def _next_number(self) -> int:
        return max(self._prs, default=0) + 1

    def _pr(self, number: int | str) -> _PR:
        pr = self._prs.get(int(number))
        if pr is None:
            raise KeyError(f"no PR #{number}")
        return pr

    def _get_pr(self, number: str) -> _PR:
        pr = self._prs.get(int(number))
        if pr is None:
            raise _HTTPError(404, "Not Found")
        return pr

    def _user_id(self, login: str) -> int:
        return _BOT_IDS.get(login) or int(hashlib.sha1(login.lower().encode()).hexdigest()[:6], 16) + 1000

    def _set_ci(self, sha: str, state: str, ts: float) -> None:
        if state == "none":
            self._checks.pop(sha, None)
            self._statuses.pop(sha, None)
            return
        runs = self._checks.setdefault(sha, [])
        statuses = self._statuses.setdefault(sha, [])
        self._ci_ids += 3
        base_id = 28_000_000_000 + self._ci_ids
        outcome = {"success": ("completed", "success"), "pending": ("in_progress", None),
                   "failure": ("completed", "failure")}[state]
        suite = base_id // 1000
        runs.append(_CheckRun(base_id, "nix flake check", sha, "completed", "success", ts, ts + 240, suite))
        runs.append(_CheckRun(base_id + 1, "build hosts", sha, outcome[0], outcome[1], ts,
                              None if outcome[1] is None else ts + 900, suite))
        desc = {"success": "Build succeeded", "pending": "Build in progress", "failure": "Build failed"}[state]
        statuses.append(_Status(base_id + 2, "ci/hydra", state, desc, ts))

    def _move_branch(self, branch: str, sha: str) -> None:
        self._git.refs[branch] = sha
        now = time.time()
        for pr in self._prs.values():
            if pr.state == "open" and pr.head_ref == branch and pr.head_sha != sha:
                pr.head_sha, pr.updated_at = sha, now
        for cb in list(self._callbacks):
            try:
                cb(branch, sha)
            except Exception:  # a broken listener must not break the fake
                log.exception("on_branch_moved callback failed")

    def _ci_states(self, sha: str) -> dict[str, str]:
        """Latest state per check name / status context: success | pending | failure."""
        out: dict[str, str] = {}
        for run in self._checks.get(sha, []):
            if run.status != "completed":
                out[run.name] = "pending"
            else:
                out[run.name] = "success" if run.conclusion in ("success", "neutral", "skipped") else "failure"
        for st in self._statuses.get(sha, []):
            out[st.context] = {"success": "success", "pending": "pending"}.get(st.state, "failure")
        return out

    def _mergeability(self, pr: _PR, *, read: bool) -> tuple[bool | None, str]:
        """(mergeable, mergeable_state) as a reader sees it.

        After any head/base change the first ``mergeable_null_reads`` reads (``read``:
        GET of the PR, GraphQL ``mergeable``) see null/"unknown" while the test merge is
        "computed"; other views (list, create/update responses) see null until then.
        """
        if pr.state != "open":
            return None, "unknown"
        base_tip = self._git.refs.get(pr.base_ref)
        if base_tip is None:
            return None, "unknown"
        key = (pr.head_sha, base_tip)
        if pr.mkey != key:
            pr.mkey, pr.null_reads_left, pr.conflict = key, self.mergeable_null_reads, None
            pr.merge_commit_sha = None
        if pr.null_reads_left > 0:
            if read:
                pr.null_reads_left -= 1
            return None, "unknown"
        if pr.conflict is None:
            merged, conflicts = self._test_merge(pr, base_tip)
            pr.conflict = bool(conflicts)
            if merged is not None:
                pr.merge_commit_sha = merged
        return (not pr.conflict), self._merge_state(pr, base_tip)

    def _test_merge(self, pr: _PR, base_tip: str) -> tuple[str | None, list[str]]:
        mb = self._git.merge_base(base_tip, pr.head_sha)
        if mb is None:
            return None, ["*"]
        tree, conflicts = merge_trees(self._git.commits[mb].tree, self._git.commits[base_tip].tree,
                                      self._git.commits[pr.head_sha].tree)
        if conflicts:
            return None, conflicts
        c = self._git.commit(tree, [base_tip, pr.head_sha], f"Merge {pr.head_sha} into {base_tip}",
                             self._github_person(pr.updated_at), reuse=True)
        return c.sha, []

    def _merge_state(self, pr: _PR, base_tip: str) -> str:
        if pr.conflict:
            return "dirty"
        if pr.draft:
            return "draft"
        ci = self._ci_states(pr.head_sha)
        if any(ci.get(name) != "success" for name in self.settings.required_checks):
            return "blocked"
        if self.settings.require_up_to_date and not self._git.is_ancestor(base_tip, pr.head_sha):
            return "behind"
        if any(state != "success" for state in ci.values()):
            return "unstable"
        return "clean"

    def _merge(self, pr: _PR, sha: str | None, method: str, title: str | None, message: str | None,
               login: str, *, when: float | None = None, policy: bool = True) -> str:
        """Merge ``pr`` (REST and GraphQL share this); raises :class:`_MergeRefused`.

        ``policy=False`` (building the scenario's history) skips repository settings,
        branch protection and faults.
        """
        if sha is not None and sha != pr.head_sha:
            raise _MergeRefused(409, "Head branch was modified. Review and try the merge again.")
        if pr.state != "open":
            raise _MergeRefused(405, "Pull Request is not mergeable")
        if pr.draft:
            raise _MergeRefused(405, "Pull Request is still a draft")
        allowed = {"merge": self.settings.allow_merge_commit, "squash": self.settings.allow_squash_merge,
                   "rebase": self.settings.allow_rebase_merge}
        if policy and not allowed[method]:
            noun = {"merge": "Merge commits", "squash": "Squash merges", "rebase": "Rebase merges"}[method]
            raise _MergeRefused(405, f"{noun} are not allowed on this repository.")
        if policy and self.faults.base_modified_next > 0:
            self.faults.base_modified_next -= 1
            raise _MergeRefused(405, "Base branch was modified. Review and try the merge again.")
        base_tip = self._git.refs[pr.base_ref]
        mb = self._git.merge_base(base_tip, pr.head_sha)
        tree, conflicts = merge_trees(self._git.commits[mb].tree if mb else {}, self._git.commits[base_tip].tree,
                                      self._git.commits[pr.head_sha].tree)
        if conflicts or mb is None:
            raise _MergeRefused(405, "Pull Request is not mergeable")
        ci = self._ci_states(pr.head_sha)
        required = self.settings.required_checks if policy else ()
        failing = [n for n in required if ci.get(n) == "failure"]
        if failing:
            raise _MergeRefused(405, f'Required status check "{failing[0]}" is failing.')
        waiting = [n for n in required if ci.get(n) != "success"]
        if len(waiting) == 1:
            raise _MergeRefused(405, f'Required status check "{waiting[0]}" is expected.')
        if waiting:
            raise _MergeRefused(405, f"{len(waiting)} of {len(required)} required status checks are expected.")
        if policy and self.settings.require_up_to_date and not self._git.is_ancestor(base_tip, pr.head_sha):
            raise _MergeRefused(405, "Head branch is out of date. Review and try the merge again.")
        now = when if when is not None else time.time()
        merger = self._person(login, now)
        committer = self._github_person(now)
        range_commits = self._git.log_range(base_tip, pr.head_sha)
        if method == "merge":
            msg = (title or f"Merge pull request #{pr.number} from {self.owner}/{pr.head_ref}") + "\n\n" + (
                message if message is not None else pr.title)
            new = self._git.commit(tree, [base_tip, pr.head_sha], msg.rstrip("\n"), merger, committer)
        elif method == "squash":
            body = message if message is not None else "\n\n".join(f"* {c.message}" for c in range_commits)
            msg = (title or f"{pr.title} (#{pr.number})") + ("\n\n" + body if body else "")
            new = self._git.commit(tree, [base_tip], msg, self._person(pr.user, now), committer)
        else:
            current = base_tip
            for c in range_commits:
                if len(c.parents) > 1:
                    continue
                step, clash = merge_trees(self._git.commits[c.parents[0]].tree, self._git.commits[current].tree,
                                          c.tree)
                if clash:
                    raise _MergeRefused(405, "Pull Request is not mergeable")
                current = self._git.commit(step, [current], c.message, c.author, committer).sha
            new = self._git.commits[current]
        pr.state, pr.merged_at, pr.closed_at, pr.updated_at = "closed", now, now, now
        pr.merged_by, pr.merge_commit_sha = login, new.sha
        pr.frozen_base_sha, pr.merge_base_sha = base_tip, mb
        self._move_branch(pr.base_ref, new.sha)
        if policy and self.settings.delete_branch_on_merge and pr.head_ref in self._git.refs:
            self._delete_branch(pr.head_ref)
        return new.sha

    def _delete_branch(self, branch: str) -> None:
        """Delete a branch; open PRs from or into it are closed, as GitHub does."""
        old = self._git.refs.pop(branch)
        now = time.time()
        for pr in self._prs.values():
            if pr.state == "open" and branch in (pr.head_ref, pr.base_ref):
                pr.frozen_base_sha = old if pr.base_ref == branch else self._git.refs.get(pr.base_ref)
                pr.state, pr.closed_at, pr.updated_at = "closed", now, now

    def _pr_base_sha(self, pr: _PR) -> str:
        if pr.state != "open" and pr.frozen_base_sha:
            return pr.frozen_base_sha
        return self._git.refs.get(pr.base_ref) or pr.frozen_base_sha or ""

    def _pr_diff(self, pr: _PR) -> tuple[list[FileDiff], list[Commit]]:
        if pr.merged and pr.merge_base_sha:
            mb = pr.merge_base_sha
        else:
            mb = self._git.merge_base(self._pr_base_sha(pr), pr.head_sha) or pr.head_sha
        files = diff_trees(self._git.commits[mb].tree, self._git.commits[pr.head_sha].tree)
        return files, self._git.log_range(mb, pr.head_sha)

    # -- serialisers ---------------------------------------------------------------------

    def _api(self, path: str) -> str:
        return f"{self._url}{path}"

    def _user(self, login: str | None) -> dict[str, Any] | None:
        if login is None:
            return None
        uid = self._user_id(login)
        bot = login.endswith("[bot]")
        return {
            "login": login, "id": uid, "node_id": ("BOT_kgDO" if bot else "U_kgDO") + _b64id(uid),
            "avatar_url": f"https://avatars.githubusercontent.com/{'in/15368' if bot else 'u/' + str(uid)}?v=4",
            "gravatar_id": "", "url": self._api(f"/users/{quote(login)}"),
            "html_url": f"{WEB}/{'apps/github-actions' if bot else login}",
            "type": "Bot" if bot else "User", "user_view_type": "public", "site_admin": False,
        }

    def _repo_obj(self, write: bool = True) -> dict[str, Any]:
        api = self._api(f"/repos/{self.repo}")
        s = self.settings
        return {
            "id": self._repo_id, "node_id": "R_kgDO" + _b64id(self._repo_id), "name": self.name,
            "full_name": self.repo, "private": s.private, "owner": self._user(self.owner),
            "html_url": f"{WEB}/{self.repo}", "description": "NixOS configurations of the fleet", "fork": False,
            "url": api, "pulls_url": api + "/pulls{/number}", "contents_url": api + "/contents/{+path}",
            "compare_url": api + "/compare/{base}...{head}", "git_refs_url": api + "/git/refs{/sha}",
            "statuses_url": api + "/statuses/{sha}", "clone_url": f"{WEB}/{self.repo}.git",
            "created_at": _iso(self._now0 - 400 * 86400), "updated_at": _iso(self._now0 - 86400),
            "pushed_at": _iso(self._git.commits[self._git.refs[self.default_branch]].committer.date),
            "size": 412, "language": "Nix", "archived": False, "disabled": False,
            "visibility": "private" if s.private else "public", "default_branch": self.default_branch,
            "allow_merge_commit": s.allow_merge_commit, "allow_squash_merge": s.allow_squash_merge,
            "allow_rebase_merge": s.allow_rebase_merge, "allow_auto_merge": False,
            "delete_branch_on_merge": s.delete_branch_on_merge, "allow_update_branch": True,
            "merge_commit_title": "MERGE_MESSAGE", "merge_commit_message": "PR_TITLE",
            "squash_merge_commit_title": "COMMIT_OR_PR_TITLE", "squash_merge_commit_message": "COMMIT_MESSAGES",
            "permissions": {"admin": write, "maintain": write, "push": write, "triage": write, "pull": True},
        }

    def _label(self, name: str) -> dict[str, Any]:
        lid = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
        return {"id": lid, "node_id": "LA_kwDO" + _b64id(self._repo_id, lid),
                "url": self._api(f"/repos/{self.repo}/labels/{quote(name)}"), "name": name,
                "color": self._label_colors.get(name, _label_color(name)), "default": False,
                "description": {"dependencies": "Pull requests that update a dependency file"}.get(name)}

    def _branch_obj(self, ref: str, sha: str, write: bool) -> dict[str, Any]:
        return {"label": f"{self.owner}:{ref}", "ref": ref, "sha": sha, "user": self._user(self.owner),
                "repo": self._repo_obj(write)}

    def _pr_simple(self, pr: _PR, write: bool = True) -> dict[str, Any]:
        api = self._api(f"/repos/{self.repo}/pulls/{pr.number}")
        issue = self._api(f"/repos/{self.repo}/issues/{pr.number}")
        html = f"{WEB}/{self.repo}/pull/{pr.number}"
        statuses = self._api(f"/repos/{self.repo}/statuses/{pr.head_sha}")
        return {
            "url": api, "id": 2_000_000_000 + pr.number, "node_id": pr.node_id, "html_url": html,
            "diff_url": html + ".diff", "patch_url": html + ".patch", "issue_url": issue, "number": pr.number,
            "state": pr.state, "locked": False, "title": pr.title, "user": self._user(pr.user), "body": pr.body,
            "labels": [self._label(n) for n in pr.labels], "milestone": None, "active_lock_reason": None,
            "created_at": _iso(pr.created_at), "updated_at": _iso(pr.updated_at), "closed_at": _iso(pr.closed_at),
            "merged_at": _iso(pr.merged_at), "merge_commit_sha": pr.merge_commit_sha, "assignee": None,
            "assignees": [], "requested_reviewers": [], "requested_teams": [], "commits_url": api + "/commits",
            "review_comments_url": api + "/comments", "review_comment_url": api + "/comments{/number}",
            "comments_url": issue + "/comments", "statuses_url": statuses,
            "head": self._branch_obj(pr.head_ref, pr.head_sha, write),
            "base": self._branch_obj(pr.base_ref, self._pr_base_sha(pr), write),
            "_links": {"self": {"href": api}, "html": {"href": html}, "issue": {"href": issue},
                       "comments": {"href": issue + "/comments"}, "review_comments": {"href": api + "/comments"},
                       "review_comment": {"href": api + "/comments{/number}"}, "commits": {"href": api + "/commits"},
                       "statuses": {"href": statuses}},
            "author_association": "OWNER" if pr.user == self.owner else "CONTRIBUTOR",
            "auto_merge": None, "draft": pr.draft,
        }

    def _pr_full(self, pr: _PR, write: bool = True, *, read: bool = False) -> dict[str, Any]:
        mergeable, state = self._mergeability(pr, read=read)
        data = self._pr_simple(pr, write)
        files, commits = self._pr_diff(pr)
        data.update({
            "merged": pr.merged, "mergeable": mergeable,
            "rebaseable": None if mergeable is None else mergeable, "mergeable_state": state,
            "merged_by": self._user(pr.merged_by), "comments": sum(1 for c in self._comments if c.issue == pr.number),
            "review_comments": 0, "maintainer_can_modify": pr.maintainer_can_modify, "commits": len(commits),
            "additions": sum(f.additions for f in files), "deletions": sum(f.deletions for f in files),
            "changed_files": len(files),
        })
        if mergeable is None and pr.state == "open":
            data["merge_commit_sha"] = None
        return data

    def _file_obj(self, f: FileDiff, head: str) -> dict[str, Any]:
        path = quote(f.filename)
        obj: dict[str, Any] = {
            "sha": f.sha, "filename": f.filename, "status": f.status, "additions": f.additions,
            "deletions": f.deletions, "changes": f.changes,
            "blob_url": f"{WEB}/{self.repo}/blob/{head}/{path}", "raw_url": f"{WEB}/{self.repo}/raw/{head}/{path}",
            "contents_url": self._api(f"/repos/{self.repo}/contents/{path}?ref={head}"),
        }
        if f.patch is not None:
            obj["patch"] = f.patch
        return obj

    def _commit_obj(self, c: Commit, *, files: bool = False) -> dict[str, Any]:
        api = self._api(f"/repos/{self.repo}/commits/{c.sha}")
        data = {
            "sha": c.sha, "node_id": "C_kwDO" + _b64id(self._repo_id) + c.sha[:12],
            "commit": self._git_commit_inner(c), "url": api, "html_url": f"{WEB}/{self.repo}/commit/{c.sha}",
            "comments_url": api + "/comments", "author": self._user(c.author.login),
            "committer": self._user(c.committer.login),
            "parents": [{"sha": p, "url": self._api(f"/repos/{self.repo}/commits/{p}"),
                         "html_url": f"{WEB}/{self.repo}/commit/{p}"} for p in c.parents],
        }
        if files:
            diffs = diff_trees(self._git.commits[c.parents[0]].tree if c.parents else {}, c.tree)
            adds, dels = sum(d.additions for d in diffs), sum(d.deletions for d in diffs)
            data["stats"] = {"total": adds + dels, "additions": adds, "deletions": dels}
            data["files"] = [self._file_obj(d, c.sha) for d in diffs]
        return data

    def _git_commit_inner(self, c: Commit) -> dict[str, Any]:
        return {
            "author": {"name": c.author.name, "email": c.author.email, "date": _iso(c.author.date)},
            "committer": {"name": c.committer.name, "email": c.committer.email, "date": _iso(c.committer.date)},
            "message": c.message, "tree": {"sha": c.tree_sha, "url": self._api(f"/repos/{self.repo}/git/trees/{c.tree_sha}")},
            "url": self._api(f"/repos/{self.repo}/git/commits/{c.sha}"), "comment_count": 0,
            "verification": {"verified": c.committer.login == "web-flow",
                             "reason": "valid" if c.committer.login == "web-flow" else "unsigned",
                             "signature": None, "payload": None, "verified_at": None},
        }

    def _ref_obj(self, branch: str) -> dict[str, Any]:
        sha = self._git.refs[branch]
        return {"ref": f"refs/heads/{branch}",
                "node_id": "REF_kwDO" + _b64id(self._repo_id) + base64.urlsafe_b64encode(branch.encode()).decode(),
                "url": self._api(f"/repos/{self.repo}/git/refs/heads/{branch}"),
                "object": {"sha": sha, "type": "commit", "url": self._api(f"/repos/{self.repo}/git/commits/{sha}")}}

    def _content_obj(self, path: str, data: bytes, ref: str, *, content: bool = True) -> dict[str, Any]:
        sha = blob_sha(data)
        api = self._api(f"/repos/{self.repo}/contents/{quote(path)}?ref={quote(ref)}")
        html = f"{WEB}/{self.repo}/blob/{ref}/{quote(path)}"
        git = self._api(f"/repos/{self.repo}/git/blobs/{sha}")
        obj: dict[str, Any] = {
            "name": path.rsplit("/", 1)[-1], "path": path, "sha": sha, "size": len(data), "url": api,
            "html_url": html, "git_url": git,
            "download_url": f"https://raw.githubusercontent.com/{self.repo}/{ref}/{quote(path)}", "type": "file",
        }
        if content:
            encoded = base64.b64encode(data).decode()
            obj["content"] = "".join(encoded[i:i + 60] + "\n" for i in range(0, len(encoded), 60))
            obj["encoding"] = "base64"
        obj["_links"] = {"self": api, "git": git, "html": html}
        return obj

    def _comment_obj(self, c: _Comment) -> dict[str, Any]:
        return {"id": c.id, "node_id": "IC_kwDO" + _b64id(self._repo_id, c.id),
                "url": self._api(f"/repos/{self.repo}/issues/comments/{c.id}"),
                "html_url": f"{WEB}/{self.repo}/pull/{c.issue}#issuecomment-{c.id}", "body": c.body,
                "user": self._user(c.user), "created_at": _iso(c.created_at), "updated_at": _iso(c.created_at),
                "issue_url": self._api(f"/repos/{self.repo}/issues/{c.issue}"),
                "author_association": "OWNER" if c.user == self.owner else "CONTRIBUTOR"}

    def _check_run_obj(self, run: _CheckRun) -> dict[str, Any]:
        ok = run.conclusion == "success"
        title = {None: "Running", "success": "All good", "failure": "Build failed"}.get(run.conclusion, "")
        return {
            "id": run.id, "name": run.name, "node_id": "CR_kwDO" + _b64id(self._repo_id, run.id),
            "head_sha": run.head_sha, "external_id": "", "url": self._api(f"/repos/{self.repo}/check-runs/{run.id}"),
            "html_url": f"{WEB}/{self.repo}/actions/runs/{run.suite_id}/job/{run.id}",
            "details_url": f"{WEB}/{self.repo}/actions/runs/{run.suite_id}/job/{run.id}",
            "status": run.status, "conclusion": run.conclusion, "started_at": _iso(run.started_at),
            "completed_at": _iso(run.completed_at),
            "output": {"title": title, "summary": "" if ok else title, "text": None, "annotations_count": 0,
                       "annotations_url": self._api(f"/repos/{self.repo}/check-runs/{run.id}/annotations")},
            "check_suite": {"id": run.suite_id},
            "app": {"id": 15368, "slug": "github-actions", "name": "GitHub Actions",
                    "owner": {"login": "github", "id": 9919, "type": "Organization"}},
            "pull_requests": [{"number": pr.number, "id": 2_000_000_000 + pr.number,
                               "url": self._api(f"/repos/{self.repo}/pulls/{pr.number}"),
                               "head": {"ref": pr.head_ref, "sha": pr.head_sha},
                               "base": {"ref": pr.base_ref, "sha": self._pr_base_sha(pr)}}
                              for pr in self._prs.values() if pr.head_sha == run.head_sha and pr.state == "open"],
        }

    def _status_obj(self, st: _Status) -> dict[str, Any]:
        return {"url": self._api(f"/repos/{self.repo}/statuses/{st.id}"), "avatar_url": None, "id": st.id,
                "node_id": "SC_kwDO" + _b64id(self._repo_id, st.id), "state": st.state,
                "description": st.description, "target_url": f"https://hydra.example.org/build/{st.id % 10_000_000}",
                "context": st.context, "created_at": _iso(st.created_at), "updated_at": _iso(st.created_at),
                "creator": self._user(self.owner)}

    # -- REST handlers -------------------------------------------------------------------

    def _get_user(self, req: _Request) -> _Reply:
        user = self._user(req.login) or {}
        user.update({"name": req.login.capitalize(), "company": None, "blog": "", "location": None, "email": None,
                     "bio": None, "public_repos": 12, "followers": 3, "following": 1,
                     "created_at": "2016-03-14T09:26:53Z", "updated_at": _iso(self._now0 - 86400)})
        return _Reply(200, user)

    def _get_rate_limit(self, req: _Request) -> _Reply:
        def bucket(name: str, limit: int | None = None) -> dict[str, int]:
            lim = limit if limit is not None else self._limit(req.token, name)
            remaining = lim if limit is not None else self._remaining(req.token, name)
            budget = self._budget(req.token, name)
            until = self.faults.exhausted.get(name)
            reset = int(until) + 1 if until is not None else int(budget.window_start + 3600)
            return {"limit": lim, "used": lim - remaining, "remaining": remaining, "reset": reset, "resource": name}

        resources = {"core": bucket("core"), "search": bucket("search", 30), "graphql": bucket("graphql"),
                     "integration_manifest": bucket("integration_manifest", 5000),
                     "code_search": bucket("code_search", 10)}
        return _Reply(200, {"resources": resources, "rate": resources["core"]})

    def _get_repo(self, req: _Request) -> _Reply:
        return _Reply(200, self._repo_obj(req.write))

    def _list_pulls(self, req: _Request) -> _Reply:
        state = req.query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise _validation("", resource="Issue", field="state", code="invalid")
        prs = [p for p in self._prs.values() if state == "all" or p.state == state]
        if "head" in req.query:
            owner, _, branch = req.query["head"].rpartition(":")
            prs = [p for p in prs if p.head_ref == branch and (not owner or owner.lower() == self.owner.lower())]
        if "base" in req.query:
            prs = [p for p in prs if p.base_ref == req.query["base"]]
        sort = req.query.get("sort", "created")
        direction = req.query.get("direction", "desc" if sort == "created" else "asc")
        if sort not in ("created", "updated", "popularity", "long-running") or direction not in ("asc", "desc"):
            raise _validation("", resource="Issue", field="sort" if direction in ("asc", "desc") else "direction",
                              code="invalid")

        def key(p: _PR) -> tuple[float, int]:
            if sort == "updated":
                return p.updated_at, p.number
            if sort == "popularity":
                return float(sum(1 for c in self._comments if c.issue == p.number)), p.number
            return p.created_at, p.number

        prs.sort(key=key, reverse=direction == "desc")
        page, headers = self._paginate(req, prs)
        return _Reply(200, [self._pr_simple(p, req.write) for p in page], headers)

    def _get_pull(self, req: _Request, number: str) -> _Reply:
        pr = self._get_pr(number)
        if "diff" in req.accept or "patch" in req.accept:
            return self._pull_diff(pr)
        return _Reply(200, self._pr_full(pr, req.write, read=True))

    def _pull_diff(self, pr: _PR) -> _Reply:
        files, _ = self._pr_diff(pr)
        chunks = []
        for f in files:
            old, new = (f"a/{f.filename}", f"b/{f.filename}")
            head = f"diff --git {old} {new}\n"
            mode = {"added": "new file mode 100644\n", "removed": "deleted file mode 100644\n"}.get(f.status, "")
            before = "/dev/null" if f.status == "added" else old
            after = "/dev/null" if f.status == "removed" else new
            chunks.append(f"{head}{mode}--- {before}\n+++ {after}\n{f.patch or ''}\n")
        return _Reply(200, "".join(chunks).encode(), content_type="application/vnd.github.diff; charset=utf-8",
                      raw=True)

    def _create_pull(self, req: _Request) -> _Reply:
        body = req.json()
        for name in ("head", "base", "title"):
            if not isinstance(body.get(name), str) or not body.get(name):
                raise _validation("", resource="PullRequest", code="missing_field", field=name)
        owner, _, head = str(body["head"]).rpartition(":")
        base = str(body["base"])
        if (owner and owner.lower() != self.owner.lower()) or head not in self._git.refs:
            raise _validation("", resource="PullRequest", field="head", code="invalid")
        if base not in self._git.refs:
            raise _validation("", resource="PullRequest", field="base", code="invalid")
        for pr in self._prs.values():
            if pr.state == "open" and pr.head_ref == head and pr.base_ref == base:
                raise _validation(f"A pull request already exists for {self.owner}:{head}.",
                                  resource="PullRequest", code="custom")
        if self._git.is_ancestor(self._git.refs[head], self._git.refs[base]):
            raise _validation(f"No commits between {base} and {head}", resource="PullRequest", code="custom")
        pr = self._open_pr(str(body["title"]), str(body.get("body") or ""), req.login, head, base,
                           bool(body.get("draft", False)))
        pr.maintainer_can_modify = bool(body.get("maintainer_can_modify", False))
        return _Reply(201, self._pr_full(pr, req.write),
                      {"location": self._api(f"/repos/{self.repo}/pulls/{pr.number}")})

    def _open_pr(self, title: str, body: str, login: str, head: str, base: str, draft: bool) -> _PR:
        now = time.time()
        number = self._next_number()
        pr = _PR(number=number, node_id=self._node_id("PR_kwDO", number), title=title, body=body, user=login,
                 head_ref=head, head_sha=self._git.refs[head], base_ref=base, created_at=now, updated_at=now,
                 draft=draft)
        self._prs[number] = pr
        self._node_ids[pr.node_id] = pr
        return pr

    def _update_pull(self, req: _Request, number: str) -> _Reply:
        pr = self._get_pr(number)
        body = req.json()
        if "state" in body:
            state = body["state"]
            if state not in ("open", "closed"):
                raise _validation("", resource="PullRequest", field="state", code="invalid")
            if state != pr.state:
                if pr.merged:
                    raise _validation("State cannot be changed. The pull request has already been merged.",
                                      resource="PullRequest", code="custom", field="state")
                if state == "open" and pr.head_ref not in self._git.refs:
                    raise _validation("State cannot be changed. The head branch has been deleted.",
                                      resource="PullRequest", code="custom", field="state")
                pr.state = state
                pr.closed_at = time.time() if state == "closed" else None
                pr.frozen_base_sha = self._git.refs.get(pr.base_ref) if state == "closed" else None
                if state == "open":
                    pr.head_sha = self._git.refs[pr.head_ref]
        if "base" in body:
            if body["base"] not in self._git.refs:
                raise _validation("", resource="PullRequest", field="base", code="invalid")
            pr.base_ref = body["base"]
        if isinstance(body.get("title"), str):
            pr.title = body["title"]
        if "body" in body:
            pr.body = str(body["body"] or "")
        if "maintainer_can_modify" in body:
            pr.maintainer_can_modify = bool(body["maintainer_can_modify"])
        pr.updated_at = time.time()
        return _Reply(200, self._pr_full(pr, req.write))

    def _pull_files(self, req: _Request, number: str) -> _Reply:
        pr = self._get_pr(number)
        files, _ = self._pr_diff(pr)
        page, headers = self._paginate(req, files)
        return _Reply(200, [self._file_obj(f, pr.head_sha) for f in page], headers)

    def _pull_commits(self, req: _Request, number: str) -> _Reply:
        pr = self._get_pr(number)
        _, commits = self._pr_diff(pr)
        page, headers = self._paginate(req, commits)
        return _Reply(200, [self._commit_obj(c) for c in page], headers)

    def _check_merged(self, req: _Request, number: str) -> _Reply:
        if self._get_pr(number).merged:
            return _Reply(204)
        raise _HTTPError(404, "Not Found")

    def _merge_pull(self, req: _Request, number: str) -> _Reply:
        pr = self._get_pr(number)
        body = req.json()
        method = body.get("merge_method", "merge")
        if method not in ("merge", "squash", "rebase"):
            raise _HTTPError(422, f"Invalid request.\n\nFor 'properties/merge_method', {json.dumps(method)} is not "
                                  'one of ["merge", "squash", "rebase"].',
                             doc="https://docs.github.com/rest/pulls/pulls#merge-a-pull-request")
        sha = body.get("sha")
        if sha is not None and not isinstance(sha, str):
            raise _HTTPError(422, "Invalid request.\n\nFor 'properties/sha', it is not a string.",
                             doc="https://docs.github.com/rest/pulls/pulls#merge-a-pull-request")
        try:
            merged = self._merge(pr, sha, method, body.get("commit_title"), body.get("commit_message"), req.login)
        except _MergeRefused as exc:
            raise _HTTPError(exc.status, exc.message,
                             doc="https://docs.github.com/rest/pulls/pulls#merge-a-pull-request") from None
        return _Reply(200, {"sha": merged, "merged": True, "message": "Pull Request successfully merged"})

    def _resolve(self, ref: str) -> str:
        sha = self._git.resolve(ref)
        if sha is None:
            raise _HTTPError(422, f"No commit found for SHA: {ref}")
        return sha

    def _combined_status(self, req: _Request, ref: str) -> _Reply:
        sha = self._git.resolve(ref)
        if sha is None:
            raise _HTTPError(404, "Not Found")
        latest: dict[str, _Status] = {}
        for st in self._statuses.get(sha, []):
            latest[st.context] = st
        sts = sorted(latest.values(), key=lambda s: -s.created_at)
        states = {s.state for s in sts}
        state = ("failure" if states & {"failure", "error"} else
                 "pending" if not sts or "pending" in states else "success")
        page, headers = self._paginate(req, sts, default=100)
        return _Reply(200, {
            "state": state, "statuses": [self._status_obj(s) for s in page], "sha": sha, "total_count": len(sts),
            "repository": self._repo_obj(req.write),
            "commit_url": self._api(f"/repos/{self.repo}/commits/{sha}"),
            "url": self._api(f"/repos/{self.repo}/commits/{sha}/status"),
        }, headers)

    def _check_runs(self, req: _Request, ref: str) -> _Reply:
        sha = self._resolve(ref)
        runs = list(self._checks.get(sha, []))
        if req.query.get("filter", "latest") == "latest":
            latest: dict[str, _CheckRun] = {}
            for run in runs:
                latest[run.name] = run
            runs = list(latest.values())
        if "check_name" in req.query:
            runs = [r for r in runs if r.name == req.query["check_name"]]
        if "status" in req.query:
            runs = [r for r in runs if r.status == req.query["status"]]
        runs.sort(key=lambda r: -r.id)
        page, headers = self._paginate(req, runs)
        return _Reply(200, {"total_count": len(runs), "check_runs": [self._check_run_obj(r) for r in page]}, headers)

    def _commit_pulls(self, req: _Request, ref: str) -> _Reply:
        sha = self._resolve(ref)
        hits = [pr for pr in self._prs.values()
                if pr.head_sha == sha or pr.merge_commit_sha == sha and pr.merged
                or sha in {c.sha for c in self._pr_diff(pr)[1]}]
        page, headers = self._paginate(req, sorted(hits, key=lambda p: -p.number))
        return _Reply(200, [self._pr_simple(p, req.write) for p in page], headers)

    def _get_commit(self, req: _Request, ref: str) -> _Reply:
        sha = self._resolve(ref)
        if "vnd.github.sha" in req.accept or "vnd.github.v3.sha" in req.accept:
            return _Reply(200, sha.encode(), content_type="application/vnd.github.sha; charset=utf-8", raw=True)
        return _Reply(200, self._commit_obj(self._git.commits[sha], files=True))

    def _get_git_commit(self, req: _Request, sha: str) -> _Reply:
        c = self._git.commits.get(sha.lower())
        if c is None:
            raise _HTTPError(404, "Not Found")
        inner = self._git_commit_inner(c)
        inner.pop("comment_count")
        return _Reply(200, {"sha": c.sha, "node_id": "C_kwDO" + _b64id(self._repo_id) + c.sha[:12], **inner,
                            "html_url": f"{WEB}/{self.repo}/commit/{c.sha}",
                            "parents": [{"sha": p, "url": self._api(f"/repos/{self.repo}/git/commits/{p}"),
                                         "html_url": f"{WEB}/{self.repo}/commit/{p}"} for p in c.parents]})

    def _get_contents(self, req: _Request, path: str | None = None) -> _Reply:
        ref = req.query.get("ref") or self.default_branch
        sha = self._git.resolve(ref)
        if sha is None:
            raise _HTTPError(404, f"No commit found for the ref {ref}")
        tree = self._git.commits[sha].tree
        path = (path or "").strip("/")
        if path in tree:
            data = tree[path]
            if "raw" in req.accept:
                return _Reply(200, data, content_type="application/vnd.github.raw; charset=utf-8", raw=True,
                              headers={"x-github-media-type": "github.v3; param=raw"})
            return _Reply(200, self._content_obj(path, data, ref))
        prefix = f"{path}/" if path else ""
        children: dict[str, bool] = {}
        for p in tree:
            if p.startswith(prefix):
                rest = p[len(prefix):]
                children[rest.split("/", 1)[0]] = "/" in rest
        if not children:
            raise _HTTPError(404, "Not Found", doc="https://docs.github.com/rest/repos/contents#get-repository-content")
        listing = []
        for name, is_dir in sorted(children.items()):
            full = prefix + name
            if is_dir:
                sub = {p[len(full) + 1:]: d for p, d in tree.items() if p.startswith(full + "/")}
                tsha = tree_sha(sub)
                listing.append({"name": name, "path": full, "sha": tsha, "size": 0, "type": "dir",
                                "url": self._api(f"/repos/{self.repo}/contents/{quote(full)}?ref={quote(ref)}"),
                                "html_url": f"{WEB}/{self.repo}/tree/{ref}/{quote(full)}",
                                "git_url": self._api(f"/repos/{self.repo}/git/trees/{tsha}"), "download_url": None})
            else:
                listing.append(self._content_obj(full, tree[full], ref, content=False))
        return _Reply(200, listing)

    def _put_contents(self, req: _Request, path: str) -> _Reply:
        body = req.json()
        for name in ("message", "content"):
            if not isinstance(body.get(name), str):
                raise _validation("", resource="Content", code="missing_field", field=name)
        try:
            data = base64.b64decode(body["content"], validate=True)
        except (binascii.Error, ValueError):
            raise _HTTPError(422, "content is not valid Base64") from None
        branch = body.get("branch") or self.default_branch
        if branch not in self._git.refs:
            raise _HTTPError(404, f"Branch {branch} not found")
        tip = self._git.commits[self._git.refs[branch]]
        current = tip.tree.get(path)
        if current is not None:
            if not body.get("sha"):
                raise _HTTPError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
            if body["sha"] != blob_sha(current):
                raise _HTTPError(409, f"{path} does not match {body['sha']}")
        tree = dict(tip.tree)
        tree[path] = data
        now = time.time()
        who = body.get("committer") or body.get("author")
        author = (Person(str(who["name"]), str(who.get("email", "")), now, None) if isinstance(who, dict)
                  and who.get("name") else self._person(req.login, now))
        c = self._git.commit(tree, [tip.sha], str(body["message"]), author, self._github_person(now))
        self._move_branch(branch, c.sha)
        commit = {"sha": c.sha, "node_id": "C_kwDO" + _b64id(self._repo_id) + c.sha[:12], **self._git_commit_inner(c),
                  "html_url": f"{WEB}/{self.repo}/commit/{c.sha}",
                  "parents": [{"sha": p, "url": self._api(f"/repos/{self.repo}/git/commits/{p}"),
                               "html_url": f"{WEB}/{self.repo}/commit/{p}"} for p in c.parents]}
        content = self._content_obj(path, data, branch, content=False)
        return _Reply(201 if current is None else 200, {"content": content, "commit": commit})

    def _get_ref(self, req: _Request, ref: str) -> _Reply:
        if not ref.startswith("heads/") or ref[len("heads/"):] not in self._git.refs:
            raise _HTTPError(404, "Not Found", doc="https://docs.github.com/rest/git/refs#get-a-reference")
        return _Reply(200, self._ref_obj(ref[len("heads/"):]))

    def _matching_refs(self, req: _Request, ref: str) -> _Reply:
        prefix = ref[len("heads/"):] if ref.startswith("heads/") else None
        names = sorted(b for b in self._git.refs if prefix is not None and b.startswith(prefix))
        return _Reply(200, [self._ref_obj(b) for b in names])

    def _create_ref(self, req: _Request) -> _Reply:
        body = req.json()
        ref, sha = body.get("ref"), body.get("sha")
        if not isinstance(ref, str) or not isinstance(sha, str):
            raise _validation("", resource="Reference", code="missing_field", field="ref" if sha else "sha")
        if not ref.startswith("refs/") or ref.count("/") < 2:
            raise _HTTPError(422, "Reference name is invalid")
        if not ref.startswith("refs/heads/"):
            raise _HTTPError(422, "Reference update failed")
        branch = ref[len("refs/heads/"):]
        if branch in self._git.refs:
            raise _HTTPError(422, "Reference already exists")
        if sha.lower() not in self._git.commits:
            raise _HTTPError(422, "Object does not exist")
        if any(b.startswith(branch + "/") or branch.startswith(b + "/") for b in self._git.refs):
            raise _HTTPError(422, "Reference update failed")
        self._move_branch(branch, sha.lower())
        return _Reply(201, self._ref_obj(branch), {"location": self._api(f"/repos/{self.repo}/git/refs/{ref[5:]}")})

    def _update_ref(self, req: _Request, ref: str) -> _Reply:
        body = req.json()
        branch = ref[len("heads/"):] if ref.startswith("heads/") else None
        if branch is None or branch not in self._git.refs:
            raise _HTTPError(422, "Reference does not exist")
        sha = body.get("sha")
        if not isinstance(sha, str):
            raise _validation("", resource="Reference", code="missing_field", field="sha")
        sha = sha.lower()
        if sha not in self._git.commits:
            raise _HTTPError(422, "Object does not exist")
        if not body.get("force") and not self._git.is_ancestor(self._git.refs[branch], sha):
            raise _HTTPError(422, "Update is not a fast forward")
        self._move_branch(branch, sha)
        return _Reply(200, self._ref_obj(branch))

    def _delete_ref(self, req: _Request, ref: str) -> _Reply:
        branch = ref[len("heads/"):] if ref.startswith("heads/") else None
        if branch is None or branch not in self._git.refs:
            raise _HTTPError(422, "Reference does not exist")
        if branch == self.default_branch:
            raise _HTTPError(422, "Cannot delete the default branch of a repository")
        self._delete_branch(branch)
        return _Reply(204)

    def _issue(self, number: str) -> _PR:
        return self._get_pr(number)  # every issue of this repository is a pull request

    def _list_comments(self, req: _Request, number: str) -> _Reply:
        self._issue(number)
        comments = [c for c in self._comments if c.issue == int(number)]
        page, headers = self._paginate(req, comments)
        return _Reply(200, [self._comment_obj(c) for c in page], headers)

    def _create_comment(self, req: _Request, number: str) -> _Reply:
        self._issue(number)
        body = req.json()
        if not isinstance(body.get("body"), str) or not body["body"]:
            raise _validation("", resource="IssueComment", code="missing_field", field="body")
        c = _Comment(3_000_000_000 + len(self._comments) + 1, int(number), body["body"], req.login, time.time())
        self._comments.append(c)
        self._prs[int(number)].updated_at = c.created_at
        return _Reply(201, self._comment_obj(c), {"location": self._comment_obj(c)["url"]})

    def _list_labels(self, req: _Request, number: str) -> _Reply:
        pr = self._issue(number)
        return _Reply(200, [self._label(n) for n in pr.labels])

    def _add_labels(self, req: _Request, number: str) -> _Reply:
        pr = self._issue(number)
        try:
            raw: Any = json.loads(req.body or b"null")
        except ValueError:
            raise _HTTPError(400, "Problems parsing JSON") from None
        items = raw.get("labels") if isinstance(raw, dict) else raw
        if not isinstance(items, list) or not items:
            raise _validation("", resource="Label", code="missing_field", field="labels")
        for item in items:
            name = item.get("name") if isinstance(item, dict) else item
            if not isinstance(name, str) or not name:
                raise _validation("", resource="Label", code="invalid", field="labels")
            self._label_colors.setdefault(name, _label_color(name))
            if name not in pr.labels:
                pr.labels.append(name)
        pr.updated_at = time.time()
        return _Reply(200, [self._label(n) for n in pr.labels])

    def _remove_label(self, req: _Request, number: str, label: str) -> _Reply:
        pr = self._issue(number)
        if label not in pr.labels:
            raise _HTTPError(404, "Label does not exist")
        pr.labels.remove(label)
        return _Reply(200, [self._label(n) for n in pr.labels])

    # -- compare -------------------------------------------------------------------------

    # -- deployments (contract §7b) ------------------------------------------------------

    DEPLOYMENT_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")

    def _deployments_allowed(self, req: _Request, perm: str) -> None:
        if not self._tokens[req.token].deployments:
            raise _HTTPError(403, "Resource not accessible by personal access token",
                             headers={"x-accepted-github-permissions": perm})

    def _deployment(self, did: str) -> _Deployment:
        d = self._deployments.get(int(did))
        if d is None:
            raise _HTTPError(404, "Not Found")
        return d

    def _deployment_obj(self, d: _Deployment) -> dict[str, Any]:
        url = self._api(f"/repos/{self.repo}/deployments/{d.id}")
        updated = d.statuses[-1]["updated_ts"] if d.statuses else d.created_at
        return {
            "url": url, "id": d.id, "node_id": "DE_kwDO" + _b64id(self._repo_id, d.id), "sha": d.sha, "ref": d.ref,
            "task": d.task, "payload": d.payload, "original_environment": d.environment,
            "environment": d.environment, "description": d.description, "creator": self._user(d.creator),
            "created_at": _iso(d.created_at), "updated_at": _iso(updated), "statuses_url": url + "/statuses",
            "repository_url": self._api(f"/repos/{self.repo}"), "transient_environment": d.transient,
            "production_environment": d.production,
        }

    def _deployment_status_obj(self, d: _Deployment, st: dict[str, Any]) -> dict[str, Any]:
        url = self._api(f"/repos/{self.repo}/deployments/{d.id}")
        return {
            "url": f"{url}/statuses/{st['id']}", "id": st["id"], "node_id": "DES_kwDO" + _b64id(self._repo_id, st["id"]),
            "state": st["state"], "creator": self._user(st["creator"]), "description": st["description"],
            "environment": st["environment"], "target_url": st["log_url"], "log_url": st["log_url"],
            "environment_url": st["environment_url"], "created_at": _iso(st["created_ts"]),
            "updated_at": _iso(st["updated_ts"]), "deployment_url": url,
            "repository_url": self._api(f"/repos/{self.repo}"),
        }

    def _list_deployments(self, req: _Request) -> _Reply:
        self._deployments_allowed(req, "deployments=read")
        q = req.query
        items = [d for d in sorted(self._deployments.values(), key=lambda d: d.id, reverse=True)
                 if all(not q.get(k) or q[k] == getattr(d, k) for k in ("sha", "ref", "task", "environment"))]
        chunk, headers = self._paginate(req, items)
        return _Reply(200, [self._deployment_obj(d) for d in chunk], headers=headers)

    def _get_deployment(self, req: _Request, did: str) -> _Reply:
        self._deployments_allowed(req, "deployments=read")
        return _Reply(200, self._deployment_obj(self._deployment(did)))

    def _create_deployment(self, req: _Request) -> _Reply:
        self._deployments_allowed(req, "deployments=write")
        body = req.json()
        ref = body.get("ref")
        if not isinstance(ref, str) or not ref:
            raise _validation("", resource="Deployment", field="ref", code="missing_field")
        sha = self._git.resolve(ref)
        if sha is None:
            raise _HTTPError(422, f"No ref found for: {ref}")
        head, _ = self.default_branch_head()
        if body.get("auto_merge", True) is not False and sha != head and not self._git.is_ancestor(head, sha):
            return _Reply(202, {"message": f"Auto-merged {self.default_branch} into {ref} on deployment."})
        required = body.get("required_contexts")
        states = self._ci_states(sha)
        if required is None:
            failing = sorted(c for c, s in states.items() if s != "success")
        else:
            failing = sorted(c for c in required if states.get(c) != "success")
        if failing:
            return self._error(_HTTPError(409, f"Conflict: Commit status checks failed for {ref}.",
                                          errors=[{"contexts": [{"context": c, "state": states.get(c, "missing")}
                                                                for c in failing], "resource": "Deployment",
                                                   "field": "required_contexts", "code": "invalid"}]))
        payload = body.get("payload", {})
        if isinstance(payload, str):
            try:
                payload = json.loads(payload) if payload else {}
            except ValueError:
                pass
        environment = str(body.get("environment") or "production")
        self._deployment_ids += 1
        d = _Deployment(self._deployment_ids, sha, ref, str(body.get("task") or "deploy"), payload, environment,
                        body.get("description"), req.login, time.time(),
                        bool(body.get("transient_environment", False)),
                        bool(body.get("production_environment", environment == "production")))
        self._deployments[d.id] = d
        return _Reply(201, self._deployment_obj(d))

    def _delete_deployment(self, req: _Request, did: str) -> _Reply:
        self._deployments_allowed(req, "deployments=write")
        d = self._deployment(did)
        alone = all(o.id == d.id for o in self._deployments.values() if o.environment == d.environment)
        if d.state != "inactive" and not alone:
            raise _HTTPError(422, "We cannot delete an active deployment unless it is the only deployment in a "
                                  "given environment.")
        del self._deployments[d.id]
        return _Reply(204)

    def _list_deployment_statuses(self, req: _Request, did: str) -> _Reply:
        self._deployments_allowed(req, "deployments=read")
        d = self._deployment(did)
        chunk, headers = self._paginate(req, list(reversed(d.statuses)))
        return _Reply(200, [self._deployment_status_obj(d, st) for st in chunk], headers=headers)

    def _create_deployment_status(self, req: _Request, did: str) -> _Reply:
        self._deployments_allowed(req, "deployments=write")
        d = self._deployment(did)
        body = req.json()
        state = body.get("state")
        if state not in self.DEPLOYMENT_STATES:
            raise _validation("", resource="DeploymentStatus", field="state", code="invalid")
        description = body.get("description") or ""
        if len(description) > 140:
            raise _validation("description is too long (maximum is 140 characters)", resource="DeploymentStatus",
                              field="description", code="custom")
        st = self._add_deployment_status(d, state, description, req.login, body)
        if state == "success" and body.get("auto_inactive", True) is not False:
            for other in self._deployments.values():
                if (other.id < d.id and other.environment == d.environment and not other.transient
                        and not other.production and other.state != "inactive"):
                    self._add_deployment_status(other, "inactive", "", req.login, {})
        return _Reply(201, self._deployment_status_obj(d, st))

    def _add_deployment_status(self, d: _Deployment, state: str, description: str, login: str,
                               body: dict[str, Any]) -> dict[str, Any]:
        self._deployment_ids += 1
        now = time.time()
        st = {"id": self._deployment_ids, "state": state, "description": description, "creator": login,
              "environment": str(body.get("environment") or d.environment), "log_url": body.get("log_url") or "",
              "environment_url": body.get("environment_url") or "", "created_ts": now, "updated_ts": now}
        d.statuses.append(st)
        return st

    def _compare(self, req: _Request, owner: str, name: str, basehead: str) -> _Reply:
        if "..." not in basehead:
            raise _HTTPError(404, "Not Found")
        base_ref, head_ref = basehead.split("...", 1)
        key = f"{owner}/{name}".lower()
        if key == self.repo.lower():
            return self._compare_repo(req, base_ref, head_ref)
        if key not in self._upstream:
            raise _HTTPError(404, "Not Found")
        return self._compare_upstream(req, key, base_ref, head_ref)

    def _compare_reply(self, req: _Request, display: str, base: str, head: str, status: str, ahead: int,
                       behind: int, commits: list[dict[str, Any]], files: list[dict[str, Any]],
                       merge_base: dict[str, Any], base_commit: dict[str, Any]) -> _Reply:
        paged = "page" in req.query or "per_page" in req.query
        headers: dict[str, str] = {}
        if paged:
            page_commits, headers = self._paginate(req, commits)
            if _int(req.query.get("page"), 1) > 1:
                files = []
        else:
            page_commits = commits[-250:]
        files = files[:300]
        return _Reply(200, {
            "url": self._api(f"/repos/{display}/compare/{base}...{head}"),
            "html_url": f"{WEB}/{display}/compare/{base}...{head}",
            "permalink_url": f"{WEB}/{display}/compare/{display.split('/')[0]}:{base}...{display.split('/')[0]}:{head}",
            "diff_url": f"{WEB}/{display}/compare/{base}...{head}.diff",
            "patch_url": f"{WEB}/{display}/compare/{base}...{head}.patch",
            "base_commit": base_commit, "merge_base_commit": merge_base, "status": status, "ahead_by": ahead,
            "behind_by": behind, "total_commits": ahead, "commits": page_commits, "files": files,
        }, headers)

    def _compare_repo(self, req: _Request, base_ref: str, head_ref: str) -> _Reply:
        def resolve(ref: str) -> str:
            owner, _, plain = ref.rpartition(":")
            if owner and owner.lower() != self.owner.lower():
                raise _HTTPError(404, "Not Found")
            sha = self._git.resolve(plain)
            if sha is None:
                raise _HTTPError(404, "Not Found")
            return sha

        base, head = resolve(base_ref), resolve(head_ref)
        mb = self._git.merge_base(base, head)
        if mb is None:
            raise _HTTPError(404, f"No common ancestor between {base_ref} and {head_ref}.")
        ahead = self._git.log_range(base, head)
        behind = self._git.log_range(head, base)
        status = ("identical" if not ahead and not behind else "ahead" if not behind else
                  "behind" if not ahead else "diverged")
        files = [self._file_obj(d, head) for d in diff_trees(self._git.commits[mb].tree, self._git.commits[head].tree)]
        return self._compare_reply(req, self.repo, base_ref, head_ref, status, len(ahead), len(behind),
                                   [self._commit_obj(c) for c in ahead], files,
                                   self._commit_obj(self._git.commits[mb]), self._commit_obj(self._git.commits[base]))

    def _upstream_rev(self, key: str, ref: str) -> str:
        revs = self._upstream[key]
        low = ref.lower()
        if low in revs:
            return low
        if len(low) >= 7:
            hits = [r for r in revs if r.startswith(low)]
            if len(hits) == 1:
                return hits[0]
        raise _HTTPError(404, "Not Found")

    def _upstream_range(self, key: str, base: str, head: str) -> list[dict[str, Any]]:
        """Commits ``base..head`` of an upstream repo, oldest first; derived from the revs and the seed."""
        cached = self._range_cache.get((key, base, head))
        if cached is not None:
            return cached
        revs = self._upstream[key]
        t0, t1 = revs[base].ts, revs[head].ts
        count = self._pair_counts.get((key, base, head))
        rate = NIXPKGS_COMMITS_PER_DAY if key == "nixos/nixpkgs" else UPSTREAM_COMMITS_PER_DAY
        if count is None:
            count = max(1, round(abs(t1 - t0) / 86400 * rate))
        rng = random.Random(f"{self._scn.seed}:compare:{key}:{base}:{head}")
        if key == "nixos/nixpkgs":
            stable = revs[head].ref.startswith("nixos-2") or revs[head].ref.startswith("release-")
            commits = nixpkgs.generate_commits(rng, count, min(t0, t1), max(t0, t1), stable=stable)
        else:
            commits = nixpkgs.generate_upstream_commits(rng, count, min(t0, t1), max(t0, t1), repo=key)
        commits[-1]["sha"] = head
        parent = base
        for c in commits:
            c["parents"] = [parent] + ([f"{rng.getrandbits(160):040x}"] if c["merge"] else [])
            parent = c["sha"]
        self._range_cache[(key, base, head)] = commits
        return commits

    def _upstream_commit_obj(self, display: str, c: dict[str, Any]) -> dict[str, Any]:
        api = self._api(f"/repos/{display}/commits/{c['sha']}")
        return {
            "sha": c["sha"], "node_id": "C_kwDO" + c["sha"][:20], "url": api,
            "html_url": f"{WEB}/{display}/commit/{c['sha']}", "comments_url": api + "/comments",
            "commit": {"author": c["author"], "committer": c["committer"], "message": c["message"],
                       "tree": {"sha": hashlib.sha1(c["sha"].encode()).hexdigest(),
                                "url": self._api(f"/repos/{display}/git/trees/{c['sha']}")},
                       "url": self._api(f"/repos/{display}/git/commits/{c['sha']}"), "comment_count": 0,
                       "verification": {"verified": c["committer_login"] == "web-flow",
                                        "reason": "valid" if c["committer_login"] == "web-flow" else "unsigned",
                                        "signature": None, "payload": None, "verified_at": None}},
            "author": self._user(c["login"]), "committer": self._user(c["committer_login"]),
            "parents": [{"sha": p, "url": self._api(f"/repos/{display}/commits/{p}"),
                         "html_url": f"{WEB}/{display}/commit/{p}"} for p in c["parents"]],
        }

    def _compare_upstream(self, req: _Request, key: str, base_ref: str, head_ref: str) -> _Reply:
        display = self._upstream_names[key]
        base, head = self._upstream_rev(key, base_ref), self._upstream_rev(key, head_ref)
        revs = self._upstream[key]
        stub = {"sha": base, "message": "", "author": {}, "committer": {}, "login": None, "committer_login": None,
                "parents": []}
        base_obj = self._upstream_commit_obj(display, stub)
        if base == head:
            return self._compare_reply(req, display, base_ref, head_ref, "identical", 0, 0, [], [], base_obj, base_obj)
        same_line = revs[base].ref == revs[head].ref
        if same_line and revs[base].ts > revs[head].ts:
            behind = len(self._upstream_range(key, head, base))
            head_obj = self._upstream_commit_obj(display, {**stub, "sha": head})
            return self._compare_reply(req, display, base_ref, head_ref, "behind", 0, behind, [], [], head_obj,
                                       base_obj)
        commits = self._upstream_range(key, base, head)
        behind = 0 if same_line else max(1, round(abs(revs[base].ts - revs[head].ts) / 86400 * 4) + 17)
        status = "ahead" if same_line else "diverged"
        seen: dict[str, str] = {}
        for c in commits:
            for path in c["files"]:
                seen.setdefault(path, "added" if " init at " in c["message"] else "modified")
        files = []
        for path, fstatus in seen.items():
            digest = hashlib.sha1(f"{head}:{path}".encode()).hexdigest()
            adds, dels = int(digest[:2], 16) % 40 + 1, int(digest[2:4], 16) % 30
            files.append({"sha": digest, "filename": path, "status": fstatus, "additions": adds,
                          "deletions": 0 if fstatus == "added" else dels,
                          "changes": adds + (0 if fstatus == "added" else dels),
                          "blob_url": f"{WEB}/{display}/blob/{head}/{path}",
                          "raw_url": f"{WEB}/{display}/raw/{head}/{path}",
                          "contents_url": self._api(f"/repos/{display}/contents/{path}?ref={head}")})
        return self._compare_reply(req, display, base_ref, head_ref, status, len(commits), behind,
                                   [self._upstream_commit_obj(display, c) for c in commits], files, base_obj, base_obj)

    # -- GraphQL -------------------------------------------------------------------------

    def _graphql(self, req: _Request) -> _Reply:
        body = req.json()
        query = body.get("query")
        if not isinstance(query, str):
            return _Reply(200, {"errors": [{"message": "A query attribute must be specified and must be a string."}]})
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            return _Reply(200, {"errors": [{"message": "Variables are invalid JSON."}]})
        ctx = _GQLContext(req.login, req.write, {})
        result = execute(self._schema, query, variables, body.get("operationName"), ctx)
        return _Reply(200, result)

    def _graphql_schema(self) -> Schema:
        def pr_state(pr: _PR) -> str:
            return "MERGED" if pr.merged else pr.state.upper()

        def mergeable(pr: _PR, ctx: _GQLContext) -> tuple[bool | None, str]:
            key = (pr.number, pr.head_sha)
            if key not in ctx.read_prs:  # one read per PR and request, however many fields ask
                ctx.read_prs[key] = self._mergeability(pr, read=True)
            return ctx.read_prs[key]

        def connection(items: list[Any], args: dict[str, Any], what: str) -> dict[str, Any]:
            first, last = args.get("first"), args.get("last")
            if first is None and last is None:
                raise FieldError(f"You must provide a `first` or `last` value to properly paginate the `{what}` "
                                 "connection.", "MISSING_PAGINATION_BOUNDARIES")
            for name, val in (("first", first), ("last", last)):
                if val is not None and not 1 <= int(val) <= 100:
                    raise FieldError(f"Requesting {val} records on the `{what}` connection exceeds the `{name}` "
                                     "limit of 100 records.", "EXCESSIVE_PAGINATION")
            indexed = list(enumerate(items))
            if args.get("after"):
                start = _cursor_index(args["after"]) + 1
                indexed = [(i, x) for i, x in indexed if i >= start]
            if args.get("before"):
                stop = _cursor_index(args["before"])
                indexed = [(i, x) for i, x in indexed if i < stop]
            window = indexed[:int(first)] if first is not None else indexed
            if last is not None:
                window = window[-int(last):]
            cursors = [_cursor(i) for i, _ in window]
            return {"nodes": [x for _, x in window],
                    "edges": [{"node": x, "cursor": c} for (_, x), c in zip(window, cursors)],
                    "totalCount": len(items),
                    "pageInfo": {"hasNextPage": bool(window) and window[-1][0] < (indexed[-1][0] if indexed else -1),
                                 "hasPreviousPage": bool(window) and window[0][0] > 0,
                                 "startCursor": cursors[0] if cursors else None,
                                 "endCursor": cursors[-1] if cursors else None}}

        def pull_requests(_: Any, args: dict[str, Any], ctx: _GQLContext) -> dict[str, Any]:
            states = args.get("states")
            wanted = {states} if isinstance(states, str) else set(states or ())
            prs = [p for p in self._prs.values() if not wanted or pr_state(p) in wanted]
            if args.get("headRefName"):
                prs = [p for p in prs if p.head_ref == args["headRefName"]]
            if args.get("baseRefName"):
                prs = [p for p in prs if p.base_ref == args["baseRefName"]]
            if args.get("labels"):
                labels = set(args["labels"])
                prs = [p for p in prs if labels & set(p.labels)]
            order = args.get("orderBy") or {}
            field_name = order.get("field", "CREATED_AT")
            prs.sort(key=lambda p: (p.updated_at if field_name == "UPDATED_AT" else p.created_at, p.number),
                     reverse=order.get("direction", "ASC") == "DESC")
            return connection(prs, args, "pullRequests")

        def repository(_: Any, args: dict[str, Any], ctx: _GQLContext) -> str:
            if f"{args.get('owner')}/{args.get('name')}".lower() != self.repo.lower():
                raise FieldError(f"Could not resolve to a Repository with the name "
                                 f"'{args.get('owner')}/{args.get('name')}'.", "NOT_FOUND")
            return "repo"

        def node(_: Any, args: dict[str, Any], ctx: _GQLContext) -> Any:
            obj = self._node_ids.get(str(args.get("id")))
            if obj is None:
                raise FieldError(f"Could not resolve to a node with the global id of '{args.get('id')}'", "NOT_FOUND")
            return obj

        def pr_arg(ctx: _GQLContext, args: dict[str, Any]) -> tuple[_PR, dict[str, Any]]:
            data = args.get("input") or {}
            pr = self._node_ids.get(str(data.get("pullRequestId")))
            if not isinstance(pr, _PR):
                raise FieldError(f"Could not resolve to a node with the global id of '{data.get('pullRequestId')}'",
                                 "NOT_FOUND")
            if not ctx.write:
                raise FieldError("Resource not accessible by personal access token", "FORBIDDEN")
            return pr, data

        def revert(_: Any, args: dict[str, Any], ctx: _GQLContext) -> dict[str, Any]:
            pr, data = pr_arg(ctx, args)
            if not pr.merged or not pr.merge_commit_sha:
                raise FieldError("Pull request is not merged and cannot be reverted.", "UNPROCESSABLE")
            new = self._revert(pr, data.get("title"), data.get("body"), bool(data.get("draft", False)), ctx.login)
            return {"clientMutationId": data.get("clientMutationId"), "pullRequest": pr, "revertPullRequest": new}

        def merge(_: Any, args: dict[str, Any], ctx: _GQLContext) -> dict[str, Any]:
            pr, data = pr_arg(ctx, args)
            method = str(data.get("mergeMethod", "MERGE")).lower()
            if method not in ("merge", "squash", "rebase"):
                raise FieldError(f"Invalid merge method {data.get('mergeMethod')}", "UNPROCESSABLE")
            body = data.get("commitBody")
            try:
                self._merge(pr, data.get("expectedHeadOid"), method, data.get("commitHeadline"), body, ctx.login)
            except _MergeRefused as exc:
                raise FieldError(exc.message, "UNPROCESSABLE") from None
            return {"clientMutationId": data.get("clientMutationId"), "pullRequest": pr, "actor": _Actor(ctx.login)}

        def rollup(c: Commit, *_: Any) -> dict[str, str] | None:
            ci = self._ci_states(c.sha)
            if not ci:
                return None
            states = set(ci.values())
            return {"state": "FAILURE" if "failure" in states else "PENDING" if "pending" in states else "SUCCESS"}

        def commit_of(sha: str | None) -> Commit | None:
            return self._git.commits.get(sha) if sha else None

        def ref_obj(branch: str) -> dict[str, Any] | None:
            sha = self._git.refs.get(branch)
            return None if sha is None else {"name": branch, "prefix": "refs/heads/", "target": self._git.commits[sha],
                                             "id": "REF_kwDO" + _b64id(self._repo_id)
                                                   + base64.urlsafe_b64encode(branch.encode()).decode()}

        def url(pr: _PR, *_: Any) -> str:
            return f"{WEB}/{self.repo}/pull/{pr.number}"

        F = FieldDef
        conn_args = ("first", "last", "after", "before")
        actor = {"login": F("String!"), "url": F("URI!", lambda a, *_: f"{WEB}/{a.login}"),
                 "avatarUrl": F("URI!", lambda a, *_: f"https://avatars.githubusercontent.com/u/{self._user_id(a.login)}"),
                 "id": F("ID!", lambda a, *_: "U_kgDO" + _b64id(self._user_id(a.login)))}
        types: dict[str, dict[str, FieldDef]] = {
            "Query": {
                "repository": F("Repository", repository, ("owner", "name", "followRenames")),
                "node": F("Node", node, ("id",)),
                "nodes": F("[Node]", lambda _, a, c: [self._node_ids.get(i) for i in a.get("ids", [])], ("ids",)),
                "viewer": F("User!", lambda _, a, c: _Actor(c.login)),
                "rateLimit": F("RateLimit", lambda _, a, c: c, ("dryRun",)),
            },
            "Mutation": {
                "revertPullRequest": F("RevertPullRequestPayload", revert, ("input",)),
                "mergePullRequest": F("MergePullRequestPayload", merge, ("input",)),
            },
            "RateLimit": {
                "limit": F("Int!", lambda c, *_: self.rate_limit),
                "remaining": F("Int!", lambda c, *_: self._remaining(self._token_of(c.login), "graphql")),
                "used": F("Int!", lambda c, *_: self.rate_limit - self._remaining(self._token_of(c.login), "graphql")),
                "cost": F("Int!", lambda c, *_: 1),
                "resetAt": F("DateTime!", lambda c, *_: _iso(self._budget(self._token_of(c.login), "graphql")
                                                              .window_start + 3600)),
                "nodeCount": F("Int!", lambda c, *_: 1),
            },
            "Repository": {
                "id": F("ID!", lambda *_: "R_kgDO" + _b64id(self._repo_id)),
                "name": F("String!", lambda *_: self.name),
                "nameWithOwner": F("String!", lambda *_: self.repo),
                "url": F("URI!", lambda *_: f"{WEB}/{self.repo}"),
                "isPrivate": F("Boolean!", lambda *_: self.settings.private),
                "owner": F("User!", lambda *_: _Actor(self.owner)),
                "defaultBranchRef": F("Ref", lambda *_: ref_obj(self.default_branch)),
                "ref": F("Ref", lambda _, a, c: ref_obj(str(a.get("qualifiedName", "")).removeprefix("refs/heads/")),
                         ("qualifiedName",)),
                "object": F("Commit", lambda _, a, c: self._git.commits.get(
                    self._git.resolve(str(a.get("oid") or a.get("expression") or "")) or ""), ("oid", "expression")),
                "pullRequests": F("PullRequestConnection!", pull_requests,
                                  ("states", "labels", "headRefName", "baseRefName", "orderBy") + conn_args),
                "pullRequest": F("PullRequest", lambda _, a, c: self._prs.get(int(a.get("number", 0))), ("number",)),
                "mergeCommitAllowed": F("Boolean!", lambda *_: self.settings.allow_merge_commit),
                "squashMergeAllowed": F("Boolean!", lambda *_: self.settings.allow_squash_merge),
                "rebaseMergeAllowed": F("Boolean!", lambda *_: self.settings.allow_rebase_merge),
                "deleteBranchOnMerge": F("Boolean!", lambda *_: self.settings.delete_branch_on_merge),
            },
            "Ref": {"id": F("ID!"), "name": F("String!"), "prefix": F("String!"), "target": F("Commit")},
            "PullRequestConnection": {"nodes": F("[PullRequest]"), "edges": F("[PullRequestEdge]"),
                                      "totalCount": F("Int!"), "pageInfo": F("PageInfo!")},
            "PullRequestEdge": {"node": F("PullRequest"), "cursor": F("String!")},
            "PageInfo": {"hasNextPage": F("Boolean!"), "hasPreviousPage": F("Boolean!"),
                         "startCursor": F("String"), "endCursor": F("String")},
            "PullRequest": {
                "id": F("ID!", lambda p, *_: p.node_id),
                "number": F("Int!"),
                "title": F("String!"),
                "body": F("String!"),
                "url": F("URI!", url),
                "permalink": F("URI!", url),
                "state": F("PullRequestState!", lambda p, *_: pr_state(p)),
                "isDraft": F("Boolean!", lambda p, *_: p.draft),
                "merged": F("Boolean!", lambda p, *_: p.merged),
                "mergedAt": F("DateTime", lambda p, *_: _iso(p.merged_at)),
                "closed": F("Boolean!", lambda p, *_: p.state == "closed"),
                "closedAt": F("DateTime", lambda p, *_: _iso(p.closed_at)),
                "createdAt": F("DateTime!", lambda p, *_: _iso(p.created_at)),
                "updatedAt": F("DateTime!", lambda p, *_: _iso(p.updated_at)),
                "mergeable": F("MergeableState!", lambda p, a, c: {True: "MERGEABLE", False: "CONFLICTING",
                                                                   None: "UNKNOWN"}[mergeable(p, c)[0]]),
                "mergeStateStatus": F("MergeStateStatus!", lambda p, a, c: mergeable(p, c)[1].upper()),
                "headRefName": F("String!", lambda p, *_: p.head_ref),
                "headRefOid": F("GitObjectID!", lambda p, *_: p.head_sha),
                "baseRefName": F("String!", lambda p, *_: p.base_ref),
                "baseRefOid": F("GitObjectID!", lambda p, *_: self._pr_base_sha(p)),
                "headRef": F("Ref", lambda p, *_: ref_obj(p.head_ref) if p.state == "open" else None),
                "baseRef": F("Ref", lambda p, *_: ref_obj(p.base_ref)),
                "mergeCommit": F("Commit", lambda p, *_: commit_of(p.merge_commit_sha) if p.merged else None),
                "potentialMergeCommit": F("Commit", lambda p, *_: commit_of(p.merge_commit_sha)
                                          if p.state == "open" else None),
                "author": F("Actor", lambda p, *_: _Actor(p.user)),
                "mergedBy": F("Actor", lambda p, *_: _Actor(p.merged_by) if p.merged_by else None),
                "labels": F("LabelConnection", lambda p, a, c: connection(
                    [{"name": n, "color": self._label_colors.get(n, _label_color(n)), "id": self._label(n)["node_id"],
                      "description": self._label(n)["description"]} for n in p.labels], a, "labels"),
                    conn_args + ("orderBy",)),
                "commits": F("PullRequestCommitConnection!", lambda p, a, c: connection(
                    [{"commit": cm, "id": "PURC_" + cm.sha[:16]} for cm in self._pr_diff(p)[1]], a, "commits"),
                    conn_args),
                "files": F("PullRequestChangedFileConnection", lambda p, a, c: connection(
                    [{"path": f.filename, "additions": f.additions, "deletions": f.deletions,
                      "changeType": {"added": "ADDED", "removed": "DELETED"}.get(f.status, "MODIFIED")}
                     for f in self._pr_diff(p)[0]], a, "files"), conn_args),
                "changedFiles": F("Int!", lambda p, *_: len(self._pr_diff(p)[0])),
                "additions": F("Int!", lambda p, *_: sum(f.additions for f in self._pr_diff(p)[0])),
                "deletions": F("Int!", lambda p, *_: sum(f.deletions for f in self._pr_diff(p)[0])),
                "revertUrl": F("URI!", lambda p, *_: f"{WEB}/{self.repo}/pull/{p.number}/revert"),
                "repository": F("Repository!", lambda *_: "repo"),
            },
            "LabelConnection": {"nodes": F("[Label]"), "totalCount": F("Int!"), "pageInfo": F("PageInfo!"),
                                "edges": F("[LabelEdge]")},
            "LabelEdge": {"node": F("Label"), "cursor": F("String!")},
            "Label": {"name": F("String!"), "color": F("String!"), "id": F("ID!"), "description": F("String")},
            "PullRequestCommitConnection": {"nodes": F("[PullRequestCommit]"), "totalCount": F("Int!"),
                                            "pageInfo": F("PageInfo!"), "edges": F("[PullRequestCommitEdge]")},
            "PullRequestCommitEdge": {"node": F("PullRequestCommit"), "cursor": F("String!")},
            "PullRequestCommit": {"commit": F("Commit!"), "id": F("ID!")},
            "PullRequestChangedFileConnection": {"nodes": F("[PullRequestChangedFile]"), "totalCount": F("Int!"),
                                                 "pageInfo": F("PageInfo!")},
            "PullRequestChangedFile": {"path": F("String!"), "additions": F("Int!"), "deletions": F("Int!"),
                                       "changeType": F("PatchStatus!")},
            "Commit": {
                "id": F("ID!", lambda c, *_: "C_kwDO" + _b64id(self._repo_id) + c.sha[:12]),
                "oid": F("GitObjectID!", lambda c, *_: c.sha),
                "abbreviatedOid": F("String!", lambda c, *_: c.sha[:7]),
                "message": F("String!"),
                "messageHeadline": F("String!", lambda c, *_: c.subject),
                "messageBody": F("String!", lambda c, *_: c.message.partition("\n")[2].strip("\n")),
                "committedDate": F("DateTime!", lambda c, *_: _iso(c.committer.date)),
                "authoredDate": F("DateTime!", lambda c, *_: _iso(c.author.date)),
                "url": F("URI!", lambda c, *_: f"{WEB}/{self.repo}/commit/{c.sha}"),
                "statusCheckRollup": F("StatusCheckRollup", rollup),
                "parents": F("CommitConnection!", lambda c, a, ctx: connection(
                    [self._git.commits[p] for p in c.parents], a, "parents"), conn_args),
            },
            "CommitConnection": {"nodes": F("[Commit]"), "totalCount": F("Int!"), "pageInfo": F("PageInfo!")},
            "StatusCheckRollup": {"state": F("StatusState!")},
            "User": actor,
            "Bot": actor,
            "Actor": actor,
            "Node": {"id": F("ID!")},
            "RevertPullRequestPayload": {"clientMutationId": F("String"), "pullRequest": F("PullRequest"),
                                         "revertPullRequest": F("PullRequest")},
            "MergePullRequestPayload": {"clientMutationId": F("String"), "pullRequest": F("PullRequest"),
                                        "actor": F("Actor")},
        }

        def type_of(obj: Any) -> str:
            if isinstance(obj, _PR):
                return "PullRequest"
            if isinstance(obj, Commit):
                return "Commit"
            if isinstance(obj, _Actor):
                return "Bot" if obj.login.endswith("[bot]") else "User"
            return "Repository"

        return Schema(types=types, interfaces={"Node": {"PullRequest", "Commit", "User", "Bot", "Repository"},
                                               "Actor": {"User", "Bot"}},
                      type_of=type_of,
                      enums=frozenset({"PullRequestState", "MergeableState", "MergeStateStatus", "StatusState",
                                       "PatchStatus"}))

    def _token_of(self, login: str) -> str:
        return next((t for t, info in self._tokens.items() if info.login == login), self.token)

    def _revert(self, pr: _PR, title: str | None, body: str | None, draft: bool, login: str) -> _PR:
        """``revertPullRequest``: a branch with one commit undoing the merge, and a PR for it."""
        assert pr.merge_commit_sha is not None
        merge_commit = self._git.commits[pr.merge_commit_sha]
        parent = merge_commit.parents[0]
        base_tip = self._git.refs[pr.base_ref]
        tree, conflicts = merge_trees(merge_commit.tree, self._git.commits[base_tip].tree,
                                      self._git.commits[parent].tree)
        if conflicts:
            raise FieldError("This pull request cannot be reverted automatically (merge conflict).", "UNPROCESSABLE")
        branch = f"revert-{pr.number}-{pr.head_ref}"
        n = 2
        while branch in self._git.refs:
            branch = f"revert-{pr.number}-{pr.head_ref}-{n}"
            n += 1
        now = time.time()
        message = f'Revert "{pr.title}"\n\nThis reverts commit {merge_commit.sha}, reversing\nchanges made to {parent}.'
        c = self._git.commit(tree, [base_tip], message, self._person(login, now), self._github_person(now))
        self._move_branch(branch, c.sha)
        return self._open_pr(title or f'Revert "{pr.title}"', body or f"Reverts {self.repo}#{pr.number}", login,
                             branch, pr.base_ref, draft)


@dataclass
class _GQLContext:
    login: str
    write: bool
    read_prs: dict[tuple[int, str], tuple[bool | None, str]]


@dataclass(frozen=True)
class _Actor:
    login: str


def _cursor(i: int) -> str:
    return base64.b64encode(f"cursor:v2:{i}".encode()).decode()


def _cursor_index(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor).decode().rsplit(":", 1)[1])
    except (ValueError, IndexError, binascii.Error):
        raise FieldError(f"`{cursor}` does not appear to be a valid cursor.", "INVALID_CURSOR_ARGUMENTS") from None


def _bearer(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def _etag_matches(header: str, etag: str) -> bool:
    if not header:
        return False
    wanted = etag.removeprefix("W/")
    return any(tag.strip() == "*" or tag.strip().removeprefix("W/") == wanted for tag in header.split(","))


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _label_color(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:6]


def _update_message(summary: str, title: str = "flake.lock: Update") -> str:
    return f"{title}\n\nFlake lock file updates:\n\n{summary}".rstrip("\n")


def _update_body(summary: str) -> str:
    """The PR body update-flake-lock's default template renders (v25+)."""
    return (
        "Automated changes by the [update-flake-lock](https://github.com/DeterminateSystems/update-flake-lock) "
        "GitHub Action.\n\n```\nFlake lock file updates:\n\n" + summary + "```\n\n"
        "### Running GitHub Actions on this PR\n\n"
        "GitHub Actions will not run workflows on pull requests which are opened by a GitHub Action.\n\n"
        "**To run GitHub Actions workflows on this PR, close and re-open this pull request.**\n"
    )


def _touch(path: str, current: bytes | None, rng: random.Random) -> bytes:
    """A plausible edit of an extra file changed alongside the lock."""
    text = (current or b"").decode("utf-8", "replace")
    if path.endswith(".nix"):
        if not text:
            return b"{ ... }:\n{\n  # added by the update\n}\n"
        line = f'  # pinned by the weekly update ({rng.randint(1000, 9999)})\n'
        head, sep, tail = text.rpartition("}")
        return (head + line + sep + tail).encode() if sep else (text + line).encode()
    return (text + f"updated {rng.randint(1000, 9999)}\n").encode()


def _readme(repo: str, hosts: list[str]) -> str:
    lines = [f"# {repo.split('/')[-1]}", "", "NixOS configurations of the fleet, one flake for every host.", "",
             "## Hosts", ""]
    lines += [f"- `{h}`" for h in hosts]
    lines += ["", "## Updating", "",
              "`flake.lock` is bumped weekly by the update-flake-lock action; nfu-tui merges and deploys it.", ""]
    return "\n".join(lines)


def _host_config(host: str, rng: random.Random) -> str:
    services = rng.sample(["openssh", "tailscale", "prometheus.exporters.node", "fwupd", "syncthing", "printing"], 3)
    body = "\n".join(f"  services.{s}.enable = true;" for s in sorted(services))
    return (f"{{ config, pkgs, ... }}:\n{{\n  networking.hostName = \"{host}\";\n{body}\n"
            f"  system.stateVersion = \"25.05\";\n}}\n")


_COMMON_NIX = """{ config, pkgs, lib, ... }:
{
  nix.settings.experimental-features = [ "nix-command" "flakes" ];
  nix.gc.automatic = true;
  time.timeZone = "Europe/Vienna";
  services.fstrim.enable = false;
  environment.systemPackages = with pkgs; [ git htop ripgrep ];
}
"""

_WORKFLOW = """name: update-flake-lock
on:
  workflow_dispatch:
  schedule:
    - cron: '0 0 * * 0'

jobs:
  lockfile:
    runs-on: ubuntu-latest
    permissions:
      contents: write
      pull-requests: write
    steps:
      - uses: actions/checkout@v5
      - uses: DeterminateSystems/determinate-nix-action@v3
      - uses: DeterminateSystems/update-flake-lock@main
        with:
          pr-title: "flake.lock: Update"
"""
