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
import re
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


# Characters that end an id inside free text ("image S01/P01.jpg: byte-identical to photo P02").
_DELIMITERS = re.compile(r"([\s/\\,;:()\[\]{}'\"=<>|]+)")


def id_scrubber(ids, show_ids: bool = False):
    """A function that replaces every id of ``ids`` found in a text by its pseudonym.

    Quarantine reasons and stage notes quote ids and image paths (which usually contain the
    ids); this keeps them out of anything that leaves the site. Text is split at delimiters
    and each piece checked against the id set (with a file extension or a trailing full stop
    allowed), so a million ids cost a set, not a million-way regex; ids that themselves
    contain a delimiter are replaced as plain substrings, longest first."""
    if show_ids:
        return lambda text: text
    plain, odd = set(), []
    for v in ids:
        if v is None or v != v or str(v) == "":
            continue
        s = str(v)
        (odd.append(s) if _DELIMITERS.search(s) else plain.add(s))
    odd.sort(key=len, reverse=True)

    def token(tok: str) -> str:
        if tok in plain:
            return pseudonym(tok)
        core = tok.rstrip(".")
        if core in plain:
            return pseudonym(core) + tok[len(core) :]
        stem, dot, ext = core.rpartition(".")
        if dot and stem in plain and ext.isalnum():
            return pseudonym(stem) + "." + ext + tok[len(core) :]
        return tok

    def scrub(text):
        if not isinstance(text, str) or not text:
            return text
        for s in odd:
            if s in text:
                text = text.replace(s, pseudonym(s))
        return "".join(token(p) if i % 2 == 0 else p for i, p in enumerate(_DELIMITERS.split(text)))

    return scrub
