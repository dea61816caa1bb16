"""Where a result came from: code version, package versions, host."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

KEY_PACKAGES = [
    "faceage-audit",
    "numpy",
    "pandas",
    "scipy",
    "duckdb",
    "lifelines",
    "scikit-survival",
    "fairlearn",
    "great-expectations",
    "evidently",
    "prefect",
    "torch",
    "timm",
]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``faceage-audit <version>`` plus the git commit (and ``+dirty``) when run from a clone."""
    try:
        version = metadata.version("faceage-audit")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[3]  # src/audit/pipeline/ -> the checkout
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{version}+g{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return version


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """Python, platform and the versions of the packages results depend on."""
    packages = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": packages,
    }
