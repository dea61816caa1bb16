"""Pseudonyms for ids in anything that leaves the site (HTML, verdict.json, exports).

``audit.duckdb`` keeps ids as given so results link back to photos. Reports show an id only
as a keyed hash (HMAC-SHA256 with a per-install key kept outside the database, in
``$FACEAGE_AUDIT_KEY_FILE`` or ``~/.config/faceage-audit/pseudonym.key``), or the raw id when
the user asks with ``--show-ids``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def site_file(env_var: str, name: str) -> Path:
    """A per-install secret's path: ``$env_var``, else ``~/.config/faceage-audit/<name>``
    (outside the repository and the database)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "faceage-audit" / name


def key_file() -> Path:
    return site_file("FACEAGE_AUDIT_KEY_FILE", "pseudonym.key")


def _key() -> bytes:
    path = key_file()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def pseudonym(value: str | None, show_ids: bool = False) -> str:
    """The id itself when ``show_ids``, else ``id-`` plus 12 hex of its keyed hash."""
    if value is None:
        return ""
    if show_ids:
        return str(value)
    return "id-" + hmac.new(_key(), str(value).encode(), hashlib.sha256).hexdigest()[:12]
