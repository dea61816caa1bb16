"""A drop folder of arriving cohorts: which are complete and not yet audited.

A scheduled monitor run looks at every folder under the drop folder. One is *ready* when it
has a ``cohort.yaml`` and either a ``.ready`` marker file or nothing in it has changed for
``settle_seconds`` (a folder still being copied is left for the next run). It is *done* when
the store already holds a finished run of the same folder with the same manifest SHA-256
(so each arrival is audited once, and a re-delivered, changed manifest is audited again).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from audit.data.cohort import _manifest_path, read_spec
from audit.data.hashing import sha256_file


@dataclass
class Arrival:
    path: Path
    status: str  # ready, done, settling, not_a_cohort
    reason: str


def _newest_mtime(folder: Path) -> float:
    return max(
        (p.stat().st_mtime for p in folder.rglob("*") if p.is_file()),
        default=folder.stat().st_mtime,
    )


def scan(
    inbox: str | Path, store, settle_seconds: float = 60.0, now: float | None = None
) -> list[Arrival]:
    """Every folder of ``inbox`` with its status, in name order."""
    now = time.time() if now is None else now
    runs = store.runs() if Path(store.path).is_file() else None
    out = []
    for folder in sorted(p for p in Path(inbox).iterdir() if p.is_dir()):
        if not (folder / "cohort.yaml").is_file():
            out.append(Arrival(folder, "not_a_cohort", "no cohort.yaml (yet)"))
            continue
        age = now - _newest_mtime(folder)
        if not (folder / ".ready").exists() and age < settle_seconds:
            out.append(
                Arrival(
                    folder,
                    "settling",
                    f"changed {age:.0f} s ago; waiting for {settle_seconds:g} s of quiet or .ready",
                )
            )
            continue
        try:
            spec, _ = read_spec(folder)
            manifest = _manifest_path(folder, spec)
            digest = sha256_file(manifest)
        except Exception as exc:  # an unreadable arrival is audited, and fails, visibly
            out.append(Arrival(folder, "ready", f"cannot read its manifest yet ({exc})"))
            continue
        done = (
            runs is not None
            and len(runs)
            and (
                (runs["cohort_path"] == str(folder.resolve()))
                & (runs["status"] == "finished")
                & (runs["manifest_sha256"] == digest)
            ).any()
        )
        out.append(
            Arrival(
                folder,
                "done" if done else "ready",
                "audited already (same manifest)" if done else "new or changed",
            )
        )
    return out
