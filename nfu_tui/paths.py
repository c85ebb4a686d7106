"""Where nfu-tui keeps its files (XDG base directories).

``XDG_CONFIG_HOME``, ``XDG_STATE_HOME`` and ``XDG_CACHE_HOME`` win when set to an
absolute path (the XDG spec says relative values must be ignored); otherwise
platformdirs decides (``~/.config``, ``~/.local/state``, ``~/.cache`` on Linux).
``NFU_TUI_STATE_DIR`` replaces the state directory outright, e.g. for the demo's
throw-away state. Nothing here creates directories except :func:`ensure_dir`.
:func:`read_bounded` reads a file the user named without trusting its size.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "nfu-tui"
STATE_DIR_ENV = "NFU_TUI_STATE_DIR"


def _xdg_base(var: str) -> Path | None:
    value = os.environ.get(var, "")
    return Path(value) if value and os.path.isabs(value) else None


def config_dir() -> Path:
    """Directory of the user's configuration (never written by nfu-tui)."""
    base = _xdg_base("XDG_CONFIG_HOME")
    return base / APP_NAME if base else platformdirs.user_config_path(APP_NAME, appauthor=False)


def config_path() -> Path:
    """The user's ``config.toml``."""
    return config_dir() / "config.toml"


def state_dir() -> Path:
    """Directory of the app's own state: journal/audit database, state.json, deploy lock."""
    override = os.environ.get(STATE_DIR_ENV, "")
    if override:
        return Path(override).expanduser().absolute()
    base = _xdg_base("XDG_STATE_HOME")
    return base / APP_NAME if base else platformdirs.user_state_path(APP_NAME, appauthor=False)


def cache_dir() -> Path:
    """Directory of disposable caches (HTTP responses)."""
    base = _xdg_base("XDG_CACHE_HOME")
    return base / APP_NAME if base else platformdirs.user_cache_path(APP_NAME, appauthor=False)


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if needed; the leaf gets mode 0700.

    An existing directory keeps its mode: the user may have chosen otherwise.
    """
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            if not path.is_dir():
                raise
    return path


def unwritable_state_dir() -> str | None:
    """Why the state directory cannot be used (created and written), or None when it can.

    A cheap check for the TUI, which opens its journal only after the first frame."""
    directory = state_dir()
    try:
        ensure_dir(directory)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(directory) else ""
        return f"cannot create the state directory {directory}: {exc.strerror or exc}{where}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the state directory {directory} is not writable (or set {STATE_DIR_ENV})"
    return None


class FileTooLarge(ValueError):
    """A file passed the size limit of :func:`read_bounded` (``limit`` bytes)."""

    def __init__(self, path: Path | str, limit: int) -> None:
        size = f"{limit // (1 << 20)} MiB" if limit >= 1 << 20 else f"{limit // 1024} KiB"
        super().__init__(f"{path} is larger than {size}")
        self.limit_text = size


def read_bounded(path: Path | str, limit: int) -> bytes:
    """The bytes of ``path``, read in chunks and refused (:class:`FileTooLarge`) as soon as
    more than ``limit`` arrived: ``/dev/zero``, a device or a huge file by mistake fails
    fast in constant memory instead of being read whole. OSError as ``open``/``read`` raise it.
    """
    chunks: list[bytes] = []
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise FileTooLarge(path, limit)
    return b"".join(chunks)
