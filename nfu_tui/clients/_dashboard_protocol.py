"""Sans-I/O protocol logic for the NixFleet dashboard (contract: nixfleet-dashboard-api.md).

Pure functions that turn (status, content type / Location, body) into data or a typed
error from :mod:`nfu_tui.errors`, interpret the 302-only login, scrape the CSRF token
and dashboard version from HTML, normalise the dashboard's several host / command /
event shapes (nulls, ``""`` vs ``null``, mixed time formats) and decide what to do
with each ``/ws`` message (:class:`SyncTracker`, §4.4). No httpx, no websockets, no
asyncio: the async shell in :mod:`nfu_tui.clients.dashboard` feeds it bytes.
"""

from __future__ import annotations

import enum
import html
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nfu_tui.domain.timeparse import normalize_time, parse_time
from nfu_tui.errors import (
    CsrfRejected,
    DashboardError,
    DashboardUnavailable,
    LoginFailed,
    SessionExpired,
)
from nfu_tui.models import UNKNOWN_CHECK, Command, Host, StatusCheck
from nfu_tui.sanitize import sanitize_line

SESSION_COOKIE = "nixfleet_session"
GET_STATE = '{"type":"get_state"}'
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the dashboard's event log (§3.15, ``event`` deltas)."""

    id: int | None
    timestamp: str = ""
    category: str = ""
    level: str = ""
    message: str = ""
    host_id: str = ""
    actor: str = ""
    action: str = ""
    details: Mapping[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Progress:
    """Coarse phase progress of one host (legacy ``operation_progress``/``test_progress``)."""

    phase: str  # pull | lock | system | tests
    current: int
    total: int
    status: str  # pending | in_progress | complete | error


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """Per-host outcome of ``/api/dispatch`` or the legacy ``/command``.

    ``outcome`` is ``started`` (``command_id`` set), ``blocked`` (validation
    ``code``/``message``, §6.2) or ``error`` (``message``, e.g. ``Host not found``).
    ``status`` is the word the dashboard used: the command status for ``/api/dispatch``
    (``EXECUTING`` for agent ops, ``SUCCESS`` for dashboard ops), ``queued`` for ``/command``.
    """

    host_id: str
    outcome: str
    status: str = ""
    command_id: str = ""
    code: str = ""
    message: str = ""

    @property
    def started(self) -> bool:
        return self.outcome == "started"

    @property
    def blocked(self) -> bool:
        return self.outcome == "blocked"


# --- stream events (what DashboardClient.stream() yields) ---


@dataclass(frozen=True, slots=True)
class Connected:
    """A ``/ws`` connection is open; an ``init`` message follows."""

    url: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection was lost or could not be opened; a retry follows after ``retry_in`` s."""

    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded ``/ws`` frame (always a JSON object with a ``type``)."""

    data: Mapping[str, Any]

    @property
    def type(self) -> str:
        return str(self.data.get("type") or "")


StreamEvent = Connected | Disconnected | Message

# ----------------------------------------------------------------- normalisation


def _str(value: Any) -> str:
    return "" if value is None else str(value)


_STR_FIELDS = (
    "hostname",
    "host_type",
    "device_type",
    "location",
    "generation",
    "agent_version",
    "theme_color",
    "os_version",
    "nixpkgs_version",
    "repo_url",
    "repo_dir",
)
_CHECK_KEYS = ("git", "lock", "system", "tests")


def normalize_status(value: Any) -> str:
    """Host status: lower-cased; ``online``/``offline``/``running`` (legacy)/``unknown``."""
    text = _str(value).strip().lower()
    return text or "unknown"


def _metrics(value: Any) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    out: dict[str, float] = {}
    for key, raw in value.items():
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            out[str(key)] = float(raw)
    return out


def host_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Map a (partial) dashboard host object to :class:`Host` attribute values.

    Only keys present in ``data`` appear in the result, so the result can be merged
    into a known host (delta semantics: absent = unchanged). Within ``update_status``
    an absent compartment is unchanged and ``null`` means unknown. ``pending_command``
    ``""``/``null`` both mean idle; ``last_seen`` is normalised (``""`` when never seen).
    """
    out: dict[str, Any] = {}
    get = data.get
    if "id" in data:
        out["id"] = _str(get("id"))
    for name in _STR_FIELDS:
        if name in data:
            out[name] = _str(get(name))
    if "status" in data:
        out["status"] = normalize_status(get("status"))
    if "last_seen" in data:
        out["last_seen"] = normalize_time(get("last_seen"))
    if "pending_command" in data:
        out["pending_command"] = _str(get("pending_command"))
    if "agent_outdated" in data:
        out["agent_outdated"] = bool(get("agent_outdated"))
    if "metrics" in data:
        out["metrics"] = _metrics(get("metrics"))
    if "reboot_needed" in data:
        needed = get("reboot_needed")
        out["reboot_needed"] = needed if isinstance(needed, bool) else None
    if "system_generation" in data:
        gen = get("system_generation")
        out["system_generation"] = gen if isinstance(gen, int) and not isinstance(gen, bool) and gen > 0 else None
    status = get("update_status")
    if isinstance(status, Mapping):
        for key in _CHECK_KEYS:
            if key in status:
                out[key] = StatusCheck.from_json(status[key]) or UNKNOWN_CHECK
        if "agent" in status:  # only the SSH backend reports an Agent compartment of its own
            out["agent_check"] = StatusCheck.from_json(status["agent"])
        for key in ("repo_url", "repo_dir"):
            if key in status:
                out[key] = _str(status[key])
    return out


def agent_outdated(agent_version: str, dashboard_version: str | None, previous: bool = False) -> bool:
    """``agent_outdated`` as the dashboard computes it (§5.1): exact compare, empty = not outdated.

    Without a known dashboard version the ``previous`` value is kept.
    """
    if not agent_version:
        return False
    if dashboard_version is None:
        return previous
    return agent_version != dashboard_version


def host_from_json(data: Mapping[str, Any], dashboard_version: str | None = None) -> Host | None:
    """A complete :class:`Host` from an init/full_state host, a ``/api/hosts`` row or a
    ``host_added`` payload; ``None`` when it has no ``id``/``hostname``."""
    fields = host_fields(data)
    host_id = fields.get("id") or fields.get("hostname")
    if not host_id:
        return None
    fields["id"] = host_id
    fields.setdefault("hostname", host_id)
    if "agent_outdated" not in fields:  # the server's own verdict (init hosts) wins
        fields["agent_outdated"] = agent_outdated(fields.get("agent_version", ""), dashboard_version)
    if not fields.get("host_type"):
        fields.pop("host_type", None)
    return Host(**fields)


def infer_dashboard_version(hosts: Iterable[Mapping[str, Any]]) -> str | None:
    """The dashboard version from init hosts: any agent it does not call outdated runs it."""
    for data in hosts:
        version = _str(data.get("agent_version"))
        if version and data.get("agent_outdated") is False:
            return version
    return None


def _exit_code(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def command_from_json(data: Any) -> Command | None:
    """A :class:`Command` from a command object (§6.3) or an init command row; ``None`` without id."""
    if not isinstance(data, Mapping) or not data.get("id"):
        return None
    return Command(
        id=_str(data["id"]),
        host_id=_str(data.get("host_id")),
        op=_str(data.get("op")),
        status=_str(data.get("status")).upper() or "PENDING",
        created_at=normalize_time(data.get("created_at")),
        started_at=normalize_time(data.get("started_at")),
        finished_at=normalize_time(data.get("finished_at")),
        exit_code=_exit_code(data.get("exit_code")),
        error=_str(data.get("error")),
        reconnect_deadline=normalize_time(data.get("reconnect_deadline")),
    )


def event_from_json(data: Any) -> Event | None:
    """An :class:`Event` from any of the event shapes (REST, init, delta, agent rejection)."""
    if not isinstance(data, Mapping):
        return None
    raw_id = data.get("id")
    event_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
    details = data.get("details")
    return Event(
        id=event_id,
        timestamp=normalize_time(data.get("timestamp")),
        category=_str(data.get("category")),
        level=_str(data.get("level")),
        message=_str(data.get("message")),
        host_id=_str(data.get("host_id")),
        actor=_str(data.get("actor")),
        action=_str(data.get("action")),
        details=details if isinstance(details, Mapping) else None,
    )


def progress_from_json(payload: Mapping[str, Any]) -> list[Progress]:
    """Phases of an ``operation_progress`` payload (``{"host_id", "progress": {phase: {...}}}``)."""
    phases = payload.get("progress")
    out: list[Progress] = []
    if isinstance(phases, Mapping):
        for phase, value in phases.items():
            if isinstance(value, Mapping):
                out.append(
                    Progress(
                        str(phase),
                        _exit_code(value.get("current")) or 0,
                        _exit_code(value.get("total")) or 0,
                        _str(value.get("status")),
                    )
                )
    return out


# ------------------------------------------------------------------ HTTP responses


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _location_path(location: str) -> tuple[str, str]:
    parts = urlsplit(location or "")
    return parts.path, parts.query


def is_login_redirect(status: int, location: str) -> bool:
    """True for the dashboard's "no session" answer: a redirect to ``/login`` (§2.5)."""
    return status in REDIRECT_STATUSES and _location_path(location)[0] == "/login"


def session_refused(status: int, location: str, body: bytes) -> bool:
    """The dashboard does not accept the session: a redirect to ``/login`` (§2.5), or the
    plain-text 401 ``Unauthorized`` of ``requireCSRF``'s missing-session branch (reachable
    when an implementation checks CSRF first). JSON 401s are TOTP refusals (§3.4, §3.12)."""
    return is_login_redirect(status, location) or (status == 401 and body.strip() == b"Unauthorized")


def interpret_login(status: int, location: str) -> None:
    """Check a ``POST /login`` answer (redirects not followed, §2.1).

    Success iff a redirect to exactly ``/`` (an absolute URL with that path is accepted,
    e.g. from a reverse proxy). Otherwise raises :class:`LoginFailed` carrying the
    dashboard's ``error`` text, with ``needs_totp``/``rate_limited`` set accordingly, or
    :class:`DashboardUnavailable` for the dashboard's own failures (``Server error``, 5xx).
    """
    if status in REDIRECT_STATUSES:
        path, query = _location_path(location)
        if path == "/" and not query:
            return
        if path == "/login":
            error = (parse_qs(query).get("error") or [""])[0]
            if error.startswith("Too many attempts"):
                raise LoginFailed(
                    "Too many login attempts; the dashboard allows 5 per minute. Wait a minute and retry.",
                    status=status,
                    rate_limited=True,
                )
            if "TOTP" in error:
                raise LoginFailed(
                    "The dashboard requires a valid TOTP code (missing or wrong).",
                    status=status,
                    needs_totp=True,
                )
            if error == "Invalid password":
                raise LoginFailed("Wrong dashboard password.", status=status)
            if error == "Server error":  # the session could not be stored: the dashboard's fault, retry later
                raise DashboardUnavailable("Login failed: the dashboard could not store the session.", status=status)
            raise LoginFailed(f"Login refused: {error or 'no reason given'}.", status=status)
        raise LoginFailed(f"Login answered with an unexpected redirect to {path or '?'}.", status=status)
    if status >= 500:
        raise DashboardUnavailable(f"Login failed: the dashboard answered HTTP {status}.", status=status)
    raise LoginFailed(
        f"Login answered HTTP {status} instead of a redirect; is the URL a NixFleet dashboard?",
        status=status,
    )


_MAX_AGE = re.compile(r";\s*max-age\s*=\s*(-?\d+)", re.IGNORECASE)


def session_cookie(set_cookie_headers: Iterable[str]) -> str | None:
    """The ``nixfleet_session`` value from ``Set-Cookie`` headers (``None`` if absent or cleared).

    The last header for the cookie wins, as in a browser: a server may clear an old
    session (empty value or ``Max-Age`` ≤ 0, §2.6) before setting the new one.
    """
    found: str | None = None
    for header in set_cookie_headers:
        first = header.split(";", 1)[0]
        name, sep, value = first.partition("=")
        if sep and name.strip() == SESSION_COOKIE:
            max_age = _MAX_AGE.search(header)
            cleared = max_age is not None and int(max_age.group(1)) <= 0
            found = None if cleared else (value.strip().strip('"') or None)
    return found


_CSRF_BODY = re.compile(r"""data-csrf-token\s*=\s*["']([^"']*)["']""")
_CSRF_INPUT = re.compile(r"""name\s*=\s*["']csrf_token["'][^>]*?value\s*=\s*["']([^"']*)["']""")
_TAGS = re.compile(r"<[^>]*>")
_FOOTER_VERSION = re.compile(r"NixFleet\s+v?(\d+\.\d+[\w.+-]*|dev)\s*\(")
_LOGIN_VERSION = re.compile(r"^\s*v(\d+\.\d+[\w.+-]*|dev)\s*$", re.MULTILINE)


def scrape_csrf(page: str) -> str | None:
    """The CSRF token of ``GET /`` (``<body data-csrf-token="…">``, else the logout form field)."""
    for pattern in (_CSRF_BODY, _CSRF_INPUT):
        match = pattern.search(page)
        if match and match.group(1):
            return html.unescape(match.group(1))  # a template may escape it (Go html/template: + → &#43;)
    return None


def scrape_version(page: str) -> str | None:
    """The dashboard version from its footer (``NixFleet 3.1.5 (abc1234)``) or login page (``v3.1.5``)."""
    text = _TAGS.sub("\n", page)
    match = _FOOTER_VERSION.search(text) or _LOGIN_VERSION.search(text)
    return match.group(1) if match else None


def error_message(status: int, content_type: str, body: bytes) -> str:
    """The human message of an error response in either body style (§1.1)."""
    text = body.decode("utf-8", "replace").strip()
    if "json" in content_type.lower() or text.startswith("{"):
        data = _json(body)
        if isinstance(data, Mapping):
            for key in ("error", "message"):
                if isinstance(data.get(key), str) and data[key]:
                    return sanitize_line(data[key], max_len=300)
            validation = data.get("validation")
            if isinstance(validation, Mapping) and validation.get("message"):
                return sanitize_line(_str(validation["message"]), max_len=300)
    if "html" in content_type.lower() or text.lstrip().startswith("<"):
        text = _TAGS.sub(" ", text)
    text = sanitize_line(" ".join(text.split()), max_len=300)
    return text or f"HTTP {status} with an empty body"


def check_response(method: str, path: str, status: int, content_type: str, location: str, body: bytes) -> None:
    """Raise the typed error for a non-2xx answer to ``method path``.

    302 → ``/login`` or a plain 401: :class:`SessionExpired`; 403 ``Forbidden`` on a mutating call:
    :class:`CsrfRejected`; 502/503/504: :class:`DashboardUnavailable`; 500 with an empty
    body: :class:`DashboardError` explaining that the handler crashed; other 4xx/5xx:
    :class:`DashboardError` with the server's message and ``status``.
    """
    if 200 <= status < 300:
        return
    where = f"{method} {path}"
    if session_refused(status, location, body):
        raise SessionExpired(f"{where}: the dashboard session has expired.", status=status)
    if status in REDIRECT_STATUSES:
        raise DashboardError(f"{where}: unexpected redirect to {location or '?'}.", status=status)
    text = body.decode("utf-8", "replace").strip()
    if status == 403 and method.upper() not in SAFE_METHODS and text == "Forbidden":
        raise CsrfRejected(f"{where}: the dashboard rejected the CSRF token.", status=status)
    if status in (502, 503, 504):
        raise DashboardUnavailable(
            f"{where}: the dashboard is unavailable (HTTP {status}).", status=status
        )
    if status >= 500 and not text:
        raise DashboardError(
            f"{where}: HTTP {status} with an empty body (the dashboard's handler crashed).",
            status=status,
        )
    raise DashboardError(f"{where}: {error_message(status, content_type, body)}", status=status)


def parse_json_body(body: bytes, what: str) -> Any:
    """Decode a 2xx JSON body or raise :class:`DashboardError` naming the endpoint."""
    data = _json(body)
    if data is None and body.strip() != b"null":
        raise DashboardError(f"{what}: the dashboard answered with invalid JSON.")
    return data


def _list(data: Any, key: str) -> list[Any]:
    """``data[key]`` as a list; the dashboard sends ``null`` for empty collections (§8 #8)."""
    value = data.get(key) if isinstance(data, Mapping) else None
    return list(value) if isinstance(value, list) else []


def parse_hosts(data: Any, dashboard_version: str | None = None) -> list[Host]:
    """``GET /api/hosts`` → hosts (``{"hosts": null}`` → ``[]``)."""
    hosts = (host_from_json(row, dashboard_version) for row in _list(data, "hosts") if isinstance(row, Mapping))
    return [h for h in hosts if h is not None]


def parse_events(data: Any) -> list[dict[str, Any]]:
    """``/api/events`` or ``/api/hosts/{id}/events`` → event dicts, newest first (null → [])."""
    return [dict(e) for e in _list(data, "events") if isinstance(e, Mapping)]


def parse_command_states(data: Any) -> dict[str, Command]:
    """``GET /api/command-states`` → host id → latest command the lifecycle holds (§3.6)."""
    states = data.get("states") if isinstance(data, Mapping) else None
    out: dict[str, Command] = {}
    if isinstance(states, Mapping):
        for host_id, raw in states.items():
            command = command_from_json(raw)
            if command is not None:
                out[str(host_id)] = command
    return out


def parse_dispatch(data: Any, hosts: list[str]) -> list[DispatchResult]:
    """``POST /api/dispatch`` 200 body → one result per requested host entry (§3.4).

    UPPERCASE statuses with a ``command_id`` are successes (``started``); lowercase
    ``blocked`` carries a validation code; ``error`` (or anything without a command id)
    is an error. Results come in request order, so an entry without ``host_id`` belongs
    to the host requested at its position.
    """
    out: list[DispatchResult] = []
    for index, raw in enumerate(_list(data, "results")):
        if not isinstance(raw, Mapping):
            continue
        status = _str(raw.get("status"))
        host_id = _str(raw.get("host_id")) or (hosts[index] if index < len(hosts) else "")
        command_id = _str(raw.get("command_id"))
        if status.lower() == "blocked":
            out.append(DispatchResult(host_id, "blocked", status, "", _str(raw.get("code")), _str(raw.get("message"))))
        elif status.lower() == "error" or not command_id:
            message = _str(raw.get("error") or raw.get("message")) or f"dispatch failed ({status or 'no status'})"
            out.append(DispatchResult(host_id, "error", status, "", _str(raw.get("code")), message))
        else:
            out.append(DispatchResult(host_id, "started", status, command_id))
    if not out and hosts:
        raise DashboardError("POST /api/dispatch: the dashboard returned no per-host results.")
    return out


def parse_command_response(host: str, status: int, content_type: str, location: str, body: bytes) -> DispatchResult:
    """Answer of the legacy ``POST /api/hosts/{id}/command`` (§3.5) as a :class:`DispatchResult`.

    200 → started; 409 structured ``{"status":"blocked","validation":{...}}`` → blocked;
    404 → error ``Host not found``; anything else raises via :func:`check_response`.
    """
    path = f"/api/hosts/{host}/command"
    if status == 200:
        data = parse_json_body(body, f"POST {path}")
        if not isinstance(data, Mapping):
            raise DashboardError(f"POST {path}: unexpected answer.")
        # The word is always "queued"; the command is really EXECUTING (or SUCCESS already).
        return DispatchResult(host, "started", _str(data.get("status")), _str(data.get("command_id")))
    if status == 409:
        data = _json(body)
        validation = data.get("validation") if isinstance(data, Mapping) else None
        if isinstance(validation, Mapping):
            return DispatchResult(
                host, "blocked", "blocked", "", _str(validation.get("code")), _str(validation.get("message"))
            )
    if status == 404:
        return DispatchResult(host, "error", "error", "", "", error_message(status, content_type, body))
    check_response("POST", path, status, content_type, location, body)
    raise DashboardError(f"POST {path}: unexpected HTTP {status}.", status=status)


_LOG_STAMP = re.compile(r"\[\d\d:\d\d:\d\d\] (?:\[ERR\] )?")


def parse_output(body: bytes, *, max_len: int = 4000, bare: bool = False) -> list[str]:
    """``GET /api/hosts/{id}/output`` text → sanitized lines (empty body → []).

    ``bare``: only the output lines as the agent sent them — the log file's ``# ...``
    header/footer dropped, the ``[HH:MM:SS] `` (and ``[ERR] ``) prefix removed before
    sanitizing, so they compare equal to the same lines from ``command_output`` (§3.9).
    """
    if not body:
        return []
    # Split on \n only: a \r inside a line is a progress overprint, not a line break.
    lines = body.decode("utf-8", "replace").split("\n")
    if lines[-1] == "":
        lines.pop()
    if bare:
        lines = [line[m.end():] for line in lines if (m := _LOG_STAMP.match(line))]
    return [sanitize_line(line, max_len=max_len) for line in lines]


# ---------------------------------------------------------------------- WebSocket


def parse_ws_message(frame: str | bytes) -> dict[str, Any] | None:
    """One ``/ws`` frame → a JSON object with a string ``type``, or ``None`` if it is not one."""
    try:
        data = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        return None
    return data


def message_version(data: Mapping[str, Any]) -> int | None:
    raw = data.get("version")
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        return None
    return raw


class SyncAction(enum.Enum):
    SNAPSHOT = "snapshot"  # init/full_state: replace everything
    APPLY = "apply"  # in-order delta
    IGNORE = "ignore"  # before init, or a gap while a get_state is outstanding
    RESYNC = "resync"  # send get_state now
    LEGACY = "legacy"  # a non-sync message (command_output, operation_progress, …)


SYNC_TYPES = frozenset({"init", "full_state", "delta", "sync"})


@dataclass(slots=True)
class SyncTracker:
    """The client side of the sync protocol (§4.4), as a pure state machine.

    * ``init``/``full_state`` are always accepted, whatever their version (also lower).
    * A ``delta`` before the first snapshot is ignored; ``version == local + 1`` applies;
      ``version <= local`` is ignored: a snapshot's version is read before its state is
      assembled and deltas apply strictly in order, so that change is already reflected
      (a late or duplicated delta, §4.4 races 1–3, must not cost a ``full_state``).
      Anything else is a gap → ``RESYNC`` once, then gaps are ignored until the
      ``full_state`` arrives (at most one outstanding ``get_state``).
    * A ``sync`` beacon ahead of the local version → ``RESYNC`` (one behind it was read
      before deltas that are already applied: ignored). If a requested ``full_state``
      never comes (lost in a full server buffer), the second mismatching beacon after
      the request asks again.
    """

    version: int | None = None
    synced: bool = False
    awaiting_full_state: bool = False
    _beacons_since_request: int = 0

    def reset(self) -> None:
        """A new connection: wait for its ``init``."""
        self.version = None
        self.synced = False
        self.awaiting_full_state = False
        self._beacons_since_request = 0

    def decide(self, msg_type: str, version: int | None) -> SyncAction:
        if msg_type in ("init", "full_state"):
            self.version = version
            self.synced = True
            self.awaiting_full_state = False
            return SyncAction.SNAPSHOT
        local = self.version
        if msg_type == "delta":
            if not self.synced:
                return SyncAction.IGNORE
            if version is not None and local is not None:
                if version == local + 1:
                    self.version = version
                    return SyncAction.APPLY
                if version <= local:  # already reflected (late, duplicated)
                    return SyncAction.IGNORE
            return self._gap()
        if msg_type == "sync":
            if not self.synced or (version is not None and local is not None and version <= local):
                return SyncAction.IGNORE
            if self.awaiting_full_state:
                self._beacons_since_request += 1
                if self._beacons_since_request >= 2:
                    self._beacons_since_request = 0
                    return SyncAction.RESYNC
                return SyncAction.IGNORE
            return self._gap()
        return SyncAction.LEGACY

    def request_resync(self) -> bool:
        """A model-level inconsistency (e.g. an unknown host): True if ``get_state`` must be sent."""
        return self.synced and self._gap() is SyncAction.RESYNC

    def _gap(self) -> SyncAction:
        if self.awaiting_full_state:
            return SyncAction.IGNORE
        self.awaiting_full_state = True
        self._beacons_since_request = 0
        return SyncAction.RESYNC
