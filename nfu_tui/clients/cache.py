"""Caches for the GitHub client.

- :class:`ETagCache`: in-memory LRU of validated GET responses (ETag / Last-Modified
  plus the body and the headers needed to reuse it on ``304 Not Modified``).
- :class:`DiskCache`: JSON files for results that never change because they are
  addressed by full commit SHAs (a file at a commit, a compare of two commits).
  Writes are atomic (temp file + ``os.replace``); unreadable or corrupt files are
  ignored and overwritten on the next put.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class CachedResponse:
    etag: str | None
    last_modified: str | None
    body: bytes
    link: str | None  # pagination header of the stored page

    def validators(self) -> dict[str, str]:
        """Conditional request headers for this entry."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


class ETagCache:
    """LRU bounded by entry count and body bytes: key (method, URL, Accept, token identity) → entry."""

    def __init__(self, max_entries: int = 512, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._entries: OrderedDict[str, CachedResponse] = OrderedDict()
        self._max = max_entries
        self._max_bytes = max_bytes
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedResponse) -> None:
        """Store (or replace) an entry; a body larger than the whole budget is not kept."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.size_bytes -= len(old.body)
        if len(entry.body) > self._max_bytes:
            return
        self._entries[key] = entry
        self.size_bytes += len(entry.body)
        while len(self._entries) > self._max or self.size_bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size_bytes -= len(evicted.body)


def _digest(key: Any) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class DiskCache:
    """JSON-on-disk cache of immutable results; a ``None`` directory disables it."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def _path(self, namespace: str, key: Any) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / namespace / f"{_digest(key)}.json"

    def get(self, namespace: str, key: Any) -> Any | None:
        """The stored value, or None when absent, unreadable, corrupt or for another key."""
        path = self._path(namespace, key)
        if path is None:
            return None
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != json.loads(json.dumps(key)):
            return None
        return record.get("value")

    def put(self, namespace: str, key: Any, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) atomically; I/O errors are swallowed (it is a cache)."""
        path = self._path(namespace, key)
        if path is None:
            return
        data = json.dumps({"key": key, "value": value}, separators=(",", ":")).encode()
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError:
            pass
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def get_bytes(self, namespace: str, key: Any) -> bytes | None:
        value = self.get(namespace, key)
        if not isinstance(value, str):
            return None
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None

    def put_bytes(self, namespace: str, key: Any, value: bytes) -> None:
        self.put(namespace, key, base64.b64encode(value).decode())
