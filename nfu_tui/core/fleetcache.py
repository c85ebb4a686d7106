"""The last known fleet, so that the TUI's first frame shows hosts before anything is connected.

The TUI saves what it showed live — hosts, their deploy badges (held, canary, priority,
no-auto) and a summary of the open update PRs — to ``state_dir()/fleet-cache.json``
(every minute while something changed, and at quit). The next start draws it in the
first frame, marked stale ("last seen 12:03 · connecting…"), until the dashboard's
fleet and the first GitHub poll replace it.

What it never holds: tokens, passwords, the dashboard URL, command output. The cache
belongs to one configuration through :func:`identity` (a hash of the dashboard URL and
the repository); another configuration ignores it.

Bounded: at most :data:`MAX_HOSTS` hosts and :data:`MAX_PRS` PRs, every text cut to
:data:`MAX_TEXT` characters. Robust: written atomically (as ``state.json``); a missing,
unreadable, corrupt or other-version file is simply not used (logged), never an error.

:func:`config_digest` hashes the configuration file's bytes, the ``NIXFLEET_*``
environment (values of secret variables only as present/absent) and the flags. The
cache stores the digest of the last configuration that validated, so ``nfu-tui`` can
paint an unchanged configuration's fleet before validating it again (which it then does
right after the first frame; a failure still exits 2 with its message).

Pure: no Textual, no pydantic, no HTTP (it sits on the first frame's path).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from nfu_tui import __version__
from nfu_tui.models import CIStatus, CIVerdict, CompartmentState, Host, StatusCheck, UpdatePR
from nfu_tui.paths import FileTooLarge, config_path, ensure_dir, read_bounded, state_dir

log = logging.getLogger(__name__)

CACHE_NAME = "fleet-cache.json"
FORMAT_VERSION = 1
MAX_HOSTS = 10_000
MAX_PRS = 20
MAX_TEXT = 300
MAX_FILES = 20
MAX_BYTES = 32 << 20  # a cache file larger than this is not read (10,000 hosts take ~6 MiB)
CONFIG_MAX_BYTES = 1 << 20  # hashed up to this size (a bigger "configuration" is hashed as such)

_HOST_FIELDS = (
    "hostname", "host_type", "device_type", "location", "status", "last_seen", "generation",
    "agent_version", "theme_color", "os_version", "nixpkgs_version",
)  # fmt: skip
_CHECKS = ("git", "lock", "system", "tests", "agent_check")  # agent_check: the SSH backend's own (else None)
_SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "TOTP")


class HostSettings(NamedTuple):
    """A host's deploy badges as they were last shown (config + UI overrides)."""

    canary: bool = False
    priority: int | None = None
    auto_update: bool = True


DEFAULT_SETTINGS = HostSettings()


@dataclass(frozen=True, slots=True)
class CachedPR:
    """An update PR as last polled; shaped like the service's ``PRState`` (explanation still loading)."""

    pr: UpdatePR
    headline: str = ""
    explanation: Any = None
    loading: bool = True
    error: str = ""


@dataclass(frozen=True)
class FleetCache:
    identity: str
    hosts: tuple[Host, ...] = ()
    hosts_at: datetime | None = None  # when the hosts were last seen live
    prs: tuple[CachedPR, ...] = ()
    prs_at: datetime | None = None  # when GitHub was last polled
    held: frozenset[str] = frozenset()
    settings: Mapping[str, HostSettings] = field(default_factory=dict)
    config_digest: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {h.id: h for h in self.hosts})

    def host(self, host_id: str) -> Host | None:
        return self._by_id.get(host_id)  # type: ignore[attr-defined]

    def host_settings(self, host_id: str) -> HostSettings:
        return self.settings.get(host_id, DEFAULT_SETTINGS)


def identity(dashboard_url: str, repo: str) -> str:
    """Which fleet a cache belongs to, without writing the URL down."""
    return hashlib.sha256(f"{dashboard_url}\n{repo}".encode()).hexdigest()[:32]


def config_digest(path: str | Path | None, *, insecure: bool = False, env: Mapping[str, str] | None = None) -> str:
    """A hash of everything that decides whether a configuration validates (see the module docs)."""
    env = os.environ if env is None else env
    file = Path(path).expanduser() if path is not None else config_path()
    h = hashlib.sha256(f"nfu-tui {__version__}\n{file.absolute()}\ninsecure={insecure}\n".encode())
    try:
        h.update(read_bounded(file, CONFIG_MAX_BYTES))
    except (OSError, FileTooLarge) as exc:
        h.update(f"unreadable: {type(exc).__name__}".encode())
    for name in sorted(n for n in env if n.startswith("NIXFLEET_")):
        secret = any(word in name for word in _SECRET_WORDS)
        h.update(f"\n{name}={'set' if secret else env[name]}".encode())
    return h.hexdigest()


def cache_path() -> Path:
    return state_dir() / CACHE_NAME


# --- writing ---------------------------------------------------------------------------


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _when(dt: datetime | None) -> str | None:
    return dt.astimezone(timezone.utc).isoformat() if dt is not None else None


def _host_json(host: Host) -> dict[str, Any]:
    data: dict[str, Any] = {"id": _cut(host.id)}
    for name in _HOST_FIELDS:
        value = getattr(host, name)
        if value:
            data[name] = _cut(str(value))
    if host.agent_outdated:
        data["agent_outdated"] = True
    for name in _CHECKS:
        check: StatusCheck | None = getattr(host, name)
        if check is not None and check != StatusCheck():
            data[name] = [check.state.value, _cut(check.message), _cut(check.checked_at)]
    return data


def _pr_json(state: Any, headline: str) -> dict[str, Any]:
    pr: UpdatePR = state.pr
    data: dict[str, Any] = {
        "number": pr.number, "title": _cut(pr.title), "author": _cut(pr.author), "html_url": _cut(pr.html_url),
        "head_ref": _cut(pr.head_ref), "head_sha": _cut(pr.head_sha), "base_ref": _cut(pr.base_ref),
        "base_sha": _cut(pr.base_sha), "created_at": _when(pr.created_at), "updated_at": _when(pr.updated_at),
        "labels": [_cut(label) for label in pr.labels[:MAX_FILES]], "draft": pr.draft,
        "files": [_cut(f) for f in pr.files[:MAX_FILES]], "mergeable": pr.mergeable,
        "superseded_by": pr.superseded_by, "headline": _cut(headline),
    }  # fmt: skip
    if pr.ci is not None:
        data["ci"] = [pr.ci.verdict.value, _cut(pr.ci.summary)]
    return data


def to_json(cache: FleetCache) -> dict[str, Any]:
    hosts = cache.hosts[:MAX_HOSTS]
    ids = {h.id for h in hosts}
    return {
        "version": FORMAT_VERSION,
        "identity": cache.identity,
        "config_digest": cache.config_digest,
        "hosts_at": _when(cache.hosts_at),
        "hosts": [_host_json(h) for h in hosts],
        "held": sorted(h for h in cache.held if h in ids),
        "settings": {h: list(s) for h, s in cache.settings.items() if h in ids and s != DEFAULT_SETTINGS},
        "prs_at": _when(cache.prs_at),
        "prs": [_pr_json(p, p.headline) for p in cache.prs[:MAX_PRS]],
    }


def summarize_prs(states: Iterable[Any]) -> tuple[CachedPR, ...]:
    """The service's ``PRState`` list as cache entries (number, title, CI, headline; no explanation)."""
    out = []
    for state in states:
        expl = state.explanation
        headline = (getattr(expl, "headline", "") or "") if expl is not None else getattr(state, "headline", "")
        out.append(CachedPR(state.pr, headline or ""))
    return tuple(out[:MAX_PRS])


def save(cache: FleetCache, path: Path | None = None) -> None:
    """Write the cache atomically (mode 0600); an I/O problem is logged, never raised."""
    from nfu_tui.core.state import atomic_write_text

    file = path if path is not None else cache_path()
    try:
        ensure_dir(file.parent)
        atomic_write_text(file, json.dumps(to_json(cache), ensure_ascii=False, separators=(",", ":")))
    except OSError as exc:
        log.warning("cannot write the fleet cache %s: %s", file, exc.strerror or exc)


# --- reading -----------------------------------------------------------------------------


class _Malformed(ValueError):
    pass


def _str(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise _Malformed(f"expected text, got {type(value).__name__}")
    return _cut(str(value))


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(str(value))
    except ValueError:
        raise _Malformed(f"bad timestamp {value!r}") from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _check(value: Any) -> StatusCheck:
    if not isinstance(value, list) or len(value) != 3:
        raise _Malformed("a compartment is not [state, message, checked_at]")
    return StatusCheck(CompartmentState.parse(value[0]), _str(value[1]), _str(value[2]))


def _host(data: Any) -> Host:
    if not isinstance(data, dict) or not data.get("id"):
        raise _Malformed("a host has no id")
    kwargs: dict[str, Any] = {name: _str(data[name]) for name in _HOST_FIELDS if name in data}
    kwargs.update({name: _check(data[name]) for name in _CHECKS if name in data})
    return Host(id=_str(data["id"]), agent_outdated=bool(data.get("agent_outdated")), **kwargs)


def _pr(data: Any) -> CachedPR:
    if not isinstance(data, dict) or not isinstance(data.get("number"), int):
        raise _Malformed("a PR has no number")
    ci = data.get("ci")
    mergeable = data.get("mergeable")
    superseded = data.get("superseded_by")
    pr = UpdatePR(
        number=data["number"], title=_str(data.get("title")), author=_str(data.get("author")),
        html_url=_str(data.get("html_url")), head_ref=_str(data.get("head_ref")), head_sha=_str(data.get("head_sha")),
        base_ref=_str(data.get("base_ref")), base_sha=_str(data.get("base_sha")),
        created_at=_time(data.get("created_at")), updated_at=_time(data.get("updated_at")),
        labels=tuple(_str(x) for x in data.get("labels") or ())[:MAX_FILES], draft=bool(data.get("draft")),
        files=tuple(_str(x) for x in data.get("files") or ())[:MAX_FILES],
        mergeable=mergeable if isinstance(mergeable, bool) else None,
        ci=CIStatus(CIVerdict(ci[0]), _str(ci[1])) if isinstance(ci, list) and len(ci) == 2 else None,
        superseded_by=superseded if isinstance(superseded, int) else None,
    )  # fmt: skip
    return CachedPR(pr, _str(data.get("headline")))


def _settings(value: Any) -> HostSettings:
    if not isinstance(value, list) or len(value) != 3:
        raise _Malformed("host settings are not [canary, priority, auto_update]")
    canary, priority, auto = value
    return HostSettings(bool(canary), priority if isinstance(priority, int) else None, bool(auto))


def from_json(raw: Any) -> FleetCache:
    if not isinstance(raw, dict):
        raise _Malformed("not a JSON object")
    if raw.get("version") != FORMAT_VERSION:
        raise _Malformed(f"format version {raw.get('version')!r}, expected {FORMAT_VERSION}")
    hosts = raw.get("hosts") or []
    prs = raw.get("prs") or []
    held = raw.get("held") or []
    settings = raw.get("settings") or {}
    if not isinstance(hosts, list) or not isinstance(prs, list) or not isinstance(held, list) or not isinstance(settings, dict):
        raise _Malformed("hosts, prs, held or settings have the wrong type")
    try:
        return FleetCache(
            identity=_str(raw.get("identity")),
            config_digest=_str(raw.get("config_digest")),
            hosts=tuple(_host(h) for h in hosts[:MAX_HOSTS]),
            hosts_at=_time(raw.get("hosts_at")),
            prs=tuple(_pr(p) for p in prs[:MAX_PRS]),
            prs_at=_time(raw.get("prs_at")),
            held=frozenset(_str(h) for h in held),
            settings={_str(h): _settings(s) for h, s in settings.items()},
        )
    except (TypeError, ValueError) as exc:  # e.g. an unknown CI verdict
        raise _Malformed(str(exc)) from None


def load(path: Path | None = None) -> FleetCache | None:
    """The saved cache, or None when there is none or it cannot be used (logged)."""
    file = path if path is not None else cache_path()
    try:
        text = read_bounded(file, MAX_BYTES).decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, FileTooLarge) as exc:
        log.warning("ignoring the fleet cache %s: %s", file, exc)
        return None
    try:
        return from_json(json.loads(text))
    except ValueError as exc:  # JSON errors and _Malformed
        log.warning("ignoring the fleet cache %s: %s", file, exc)
        return None


def seen_label(cache_time: datetime | None, now: datetime) -> str:
    """``12:03`` today, ``Dec 04 12:03`` before (local time)."""
    if cache_time is None:
        return "earlier"
    local, today = cache_time.astimezone(), now.astimezone()
    return f"{local:%H:%M}" if local.date() == today.date() else f"{local:%b %d %H:%M}"


class CachedView:
    """What the main screen reads (the read side of ``FleetService``), answering from the cache
    for whatever has not arrived live yet: hosts until the dashboard's fleet, PRs until the first poll.

    ``service`` is None before the service exists (its status then reads None).
    """

    def __init__(self, cache: FleetCache, service: Any, *, hosts_live: bool, prs_live: bool) -> None:
        self.cache = cache
        self.service = service
        self.hosts_live = service is not None and (hosts_live or not cache.hosts)
        self.prs_live = service is not None and (prs_live or not cache.prs)

    @property
    def status(self) -> Any:
        return self.service.status if self.service is not None else None

    @property
    def prs(self) -> list[Any]:
        return list(self.service.prs) if self.prs_live else list(self.cache.prs)

    def hosts(self) -> list[Host]:
        return self.service.hosts() if self.hosts_live else list(self.cache.hosts)

    def host(self, host_id: str) -> Host | None:
        return self.service.host(host_id) if self.hosts_live else self.cache.host(host_id)

    def held(self) -> set[str]:
        return self.service.held() if self.service is not None else set(self.cache.held)

    def host_config(self, host_id: str) -> Any:
        return self.service.host_config(host_id) if self.service is not None else self.cache.host_settings(host_id)

    def pending_update(self) -> Any:
        if self.prs_live:
            return self.service.pending_update()
        return next((p for p in self.cache.prs if p.pr.superseded_by is None), None)

    def update_headline(self) -> str | None:
        if self.prs_live:
            return self.service.update_headline()
        pending = self.pending_update()
        return None if pending is None else pending.headline or f"PR #{pending.pr.number} {pending.pr.title}"
