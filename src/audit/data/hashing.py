"""Streamed SHA-256 of files, with a cache keyed by path, size and mtime.

The cache only speeds up repeated runs over the same cohort; ``verify`` never trusts it.
It is a small JSON file (``$FACEAGE_AUDIT_CACHE`` or ``~/.cache/faceage-audit``) written
atomically, so a run killed halfway leaves either the old or the new cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("FACEAGE_AUDIT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "faceage-audit"


class HashCache:
    """SHA-256 digests cached by (absolute path, size, mtime_ns).

    Parameters
    ----------
    path : path of the JSON cache file, or None for no cache at all.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, list] = {}
        self._dirty = False
        if self.path is not None and self.path.is_file():
            try:
                self._entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._entries = {}  # a damaged cache is only a slower run
        self.hits = 0
        self.misses = 0

    @classmethod
    def default(cls) -> "HashCache":
        return cls(default_cache_dir() / "sha256-cache.json")

    def sha256(self, path: str | Path) -> str:
        p = Path(path).resolve()
        st = p.stat()
        key = str(p)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            self.hits += 1
            return entry[2]
        digest = sha256_file(p)
        self.misses += 1
        self._entries[key] = [st.st_size, st.st_mtime_ns, digest]
        self._dirty = True
        return digest

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".sha256-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(self._entries, fh)
        os.replace(tmp, self.path)
        self._dirty = False
