"""The docs: generated pages are current, the site builds with no broken link, and the
README is the short front page it promises (its links resolve, every subpackage has a line
in its architecture table)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import audit
from audit.pipeline import config, schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_generated_references_are_current():
    """`python -m audit.pipeline.schema > docs/database.md` (and config) after a change."""
    assert (DOCS / "database.md").read_text() == schema.markdown_reference()
    assert (DOCS / "configuration-reference.md").read_text() == config.markdown_reference()


def test_the_database_reference_lists_every_table_and_column():
    page = (DOCS / "database.md").read_text()
    for table in schema.TABLES:
        assert f"## `{table.name}`" in page
        for column, kind in table.columns:
            assert f"| `{column}` | {kind} |" in page


def test_the_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    assert mkdocs, "mkdocs is installed by `make install` (the test extra)"
    res = subprocess.run(
        [mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "site" / "python-api" / "index.html").is_file()


def test_the_readme_is_short_its_links_resolve_and_it_names_every_subpackage():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).is_file(), target
    packages = sorted(p.parent.name for p in (ROOT / "src" / "audit").glob("*/__init__.py"))
    assert len(packages) >= 14
    for name in packages:
        assert f"| `audit.{name}` |" in text, name
    assert "make test" in text and audit.__version__
