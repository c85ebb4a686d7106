"""State the app changes itself, in ``state_dir()/state.json`` (config.toml is never written).

Held hosts, per-host overrides made in the UI (priority, canary, auto_update, …), the
automation toggle (None = follow the config), the TUI's theme and notify-once marks.

Concurrency: the TUI and the headless mode may run at the same time. Every save
happens under an ``flock`` on ``state.json.lock``, re-reads the file and applies only
*this object's changes since it last read or wrote the file* (holds added/removed,
override keys set/cleared, notify marks set, the toggle and the theme if changed), so two processes
never lose each other's holds. The mutators (:meth:`AppState.hold`, …) save at once;
direct edits of the attributes are saved by :meth:`AppState.save`.

Robustness: writes are atomic (temp file in the same directory, fsync, rename, fsync
of the directory). An unparsable or malformed file is moved aside to
``state.json.corrupt-<UTC timestamp>`` and the app starts from empty state with a
warning in :attr:`AppState.warnings` (also logged). Unknown top-level keys are kept.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nfu_tui.errors import StateError
from nfu_tui.paths import ensure_dir, state_dir

log = logging.getLogger(__name__)

STATE_NAME = "state.json"
FORMAT_VERSION = 1
NOTIFIED_LIMIT = 500  # notify-once marks kept (the oldest are dropped first)
_KNOWN_KEYS = ("version", "held", "overrides", "automation_enabled", "notified", "theme")
_MISSING = object()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably (mode 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@dataclass(slots=True)
class _Snapshot:
    held: set[str] = field(default_factory=set)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    automation_enabled: bool | None = None
    notified: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    theme: str | None = None

    def copy(self) -> "_Snapshot":
        return copy.deepcopy(self)


class _Malformed(ValueError):
    pass


def _parse(text: str) -> _Snapshot:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise _Malformed(f"not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise _Malformed("not a JSON object")
    held = raw.get("held", [])
    if not isinstance(held, list) or not all(isinstance(h, str) for h in held):
        raise _Malformed("'held' is not a list of host names")
    overrides = raw.get("overrides", {})
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise _Malformed("'overrides' is not a table of per-host tables")
    automation = raw.get("automation_enabled")
    if automation is not None and not isinstance(automation, bool):
        raise _Malformed("'automation_enabled' is not true, false or null")
    notified = raw.get("notified", {})
    if not isinstance(notified, dict) or not all(isinstance(v, str) for v in notified.values()):
        raise _Malformed("'notified' is not a table of strings")
    theme = raw.get("theme")
    if theme is not None and not isinstance(theme, str):
        raise _Malformed("'theme' is not a string or null")
    extra = {k: v for k, v in raw.items() if k not in _KNOWN_KEYS}
    return _Snapshot(set(held), overrides, automation, notified, extra, theme)


def _merge_table(disk: dict[str, Any], base: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """Apply the keys that changed between ``base`` and ``mine`` onto ``disk``."""
    result = dict(disk)
    for key in [*base, *(k for k in mine if k not in base)]:
        old, new = base.get(key, _MISSING), mine.get(key, _MISSING)
        if old == new:
            continue
        result.pop(key, None)  # re-insert at the end: most recent last
        if new is not _MISSING:
            result[key] = new
    return result


class AppState:
    """The app-owned state file; see the module docs for the concurrency rules."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held: set[str] = set()
        self.overrides: dict[str, dict[str, Any]] = {}
        self.automation_enabled: bool | None = None
        self.notified: dict[str, str] = {}
        self.theme: str | None = None  # the TUI's theme (None = Textual's default)
        self.warnings: list[str] = []
        self._base = _Snapshot()  # the file's content when last read or written
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file when last read or written

    def __repr__(self) -> str:
        return f"AppState({str(self.path)!r}, held={sorted(self.held)})"

    @classmethod
    def load(cls, path: Path | str | None = None) -> "AppState":
        """Read the state file (missing = empty, corrupt = moved aside + empty + warning)."""
        file = Path(path) if path is not None else state_dir() / STATE_NAME
        try:
            ensure_dir(file.parent)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {file.parent}: {exc.strerror}") from exc
        state = cls(file)
        with state._locked():
            state._adopt(state._read_or_empty())
        return state

    def reload(self) -> None:
        """Re-read the file, dropping changes not saved yet."""
        with self._locked():
            self._adopt(self._read_or_empty())

    def save(self) -> None:
        """Merge this object's changes into the current file and write it atomically."""
        with self._locked():
            # A file damaged since we read it is replaced by what we last saw in it.
            disk = self._read()
            if disk is None:
                disk = self._base.copy()
            mine = self._mine()
            merged = _Snapshot(
                held=(disk.held | (mine.held - self._base.held)) - (self._base.held - mine.held),
                overrides=self._merge_overrides(disk.overrides, mine.overrides),
                automation_enabled=(
                    mine.automation_enabled
                    if mine.automation_enabled != self._base.automation_enabled
                    else disk.automation_enabled
                ),
                notified=_merge_table(disk.notified, self._base.notified, mine.notified),
                extra=disk.extra,
                theme=mine.theme if mine.theme != self._base.theme else disk.theme,
            )
            while len(merged.notified) > NOTIFIED_LIMIT:
                del merged.notified[next(iter(merged.notified))]
            self._write(merged)
            self._adopt(merged)

    # --- holds ----------------------------------------------------------------

    def is_held(self, host: str) -> bool:
        return host in self.held

    def held_now(self, host: str) -> bool:
        """Whether ``host`` is held now: re-reads the file when another process changed it.

        Cheap enough to ask before every host a deploy starts (one ``stat``); the file is
        re-read (under the lock) only when its size or modification time changed.
        """
        self.refresh()
        return host in self.held

    def refresh(self) -> None:
        """Re-read the file if it changed since this object last read or wrote it."""
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self.reload()

    def hold(self, host: str) -> None:
        """Hold ``host`` back from deploys (saved at once)."""
        self.held.add(host)
        self.save()

    def unhold(self, host: str) -> None:
        self.held.discard(host)
        self.save()

    # --- overrides and the automation toggle ------------------------------------

    def set_override(self, host: str, key: str, value: Any) -> None:
        """Override one host setting made in the UI; ``value`` None removes it (saved at once)."""
        if value is None:
            values = self.overrides.get(host, {})
            values.pop(key, None)
            if not values:
                self.overrides.pop(host, None)
        else:
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"override {host}.{key} must be a JSON value: {exc}") from None
            self.overrides.setdefault(host, {})[key] = value
        self.save()

    def set_automation(self, enabled: bool | None) -> None:
        """Turn automation on/off, or None to follow the config (saved at once)."""
        self.automation_enabled = enabled
        self.save()

    def set_theme(self, theme: str | None) -> None:
        """Remember the TUI's theme (saved at once)."""
        self.theme = theme
        self.save()

    # --- notify-once ----------------------------------------------------------

    def should_notify(self, key: str, value: str) -> bool:
        """True unless ``key`` was already marked with this ``value``."""
        return self.notified.get(key) != value

    def mark_notified(self, key: str, value: str) -> None:
        """Remember that ``key`` was notified for ``value`` (saved at once)."""
        self.notified.pop(key, None)
        self.notified[key] = value
        self.save()

    # --- plumbing -------------------------------------------------------------

    def _mine(self) -> _Snapshot:
        return _Snapshot(set(self.held), copy.deepcopy(self.overrides), self.automation_enabled, dict(self.notified),
                         theme=self.theme)

    def _merge_overrides(
        self, disk: dict[str, dict[str, Any]], mine: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        base = self._base.overrides
        result = {host: dict(values) for host, values in disk.items()}
        for host in {*base, *mine}:
            merged = _merge_table(result.get(host, {}), base.get(host, {}), mine.get(host, {}))
            if merged:
                result[host] = merged
            else:
                result.pop(host, None)
        return result

    def _adopt(self, snapshot: _Snapshot) -> None:
        try:
            st = self.path.stat()
            self._stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            self._stamp = None
        self._base = snapshot.copy()
        self.held = set(snapshot.held)
        self.overrides = copy.deepcopy(snapshot.overrides)
        self.automation_enabled = snapshot.automation_enabled
        self.notified = dict(snapshot.notified)
        self.theme = snapshot.theme

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open {lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_or_empty(self) -> _Snapshot:
        snapshot = self._read()
        return _Snapshot() if snapshot is None else snapshot

    def _read(self) -> _Snapshot | None:
        """The file's content; None when it was damaged (and has been moved aside)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _Snapshot()
        except UnicodeDecodeError as exc:
            return self._set_aside(f"not UTF-8 ({exc.reason})")
        except OSError as exc:
            raise StateError(f"cannot read the state file {self.path}: {exc.strerror}") from exc
        try:
            return _parse(text)
        except _Malformed as exc:
            return self._set_aside(str(exc))

    def _set_aside(self, problem: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while backup.exists():
            backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.replace(self.path, backup)
        except OSError as exc:
            raise StateError(f"the state file {self.path} is damaged ({problem}) and cannot be moved aside: {exc.strerror}") from exc
        message = f"state file {self.path} was damaged ({problem}); moved it to {backup.name} and started empty"
        log.warning("%s", message)
        self.warnings.append(message)

    def _write(self, snapshot: _Snapshot) -> None:
        data = {
            **snapshot.extra,
            "version": FORMAT_VERSION,
            "held": sorted(snapshot.held),
            "overrides": snapshot.overrides,
            "automation_enabled": snapshot.automation_enabled,
            "notified": snapshot.notified,
        }
        if snapshot.theme is not None:
            data["theme"] = snapshot.theme
        try:
            atomic_write_text(self.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise StateError(f"cannot write the state file {self.path}: {exc.strerror}") from exc
        except TypeError as exc:  # an override value that is not JSON
            raise ValueError(f"state cannot be saved: {exc}") from exc
