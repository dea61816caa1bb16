"""Databases from earlier releases open and re-render; pages render from DuckDB alone.

``data/legacy/v12.duckdb.gz`` and ``v13.duckdb.gz`` are audit files written by the releases
with schema 12 and 13 (the demo models on an 80-subject synthetic cohort; each with the
pseudonym key it was written with). A page records its SHA-256 in ``artifacts`` when
published, so a re-render can be checked byte for byte without storing the page.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audit.data.hashing import sha256_file
from audit.pipeline.schema import RESULT_TABLES, SCHEMA_VERSION
from audit.pipeline.store import Store
from audit.report import render_all

LEGACY = Path(__file__).parent / "data" / "legacy"
PAGES = {
    "report_html",
    "verdict_json",
    "model_card_html",
    "model_card_json",
    "tripod_ai_html",
    "tripod_ai_json",
    "csv_export",
}


def _open_legacy(version: int, tmp_path: Path, monkeypatch) -> tuple[Path, Store]:
    db = tmp_path / "audit.duckdb"
    with gzip.open(LEGACY / f"v{version}.duckdb.gz") as src, open(db, "wb") as dst:
        shutil.copyfileobj(src, dst)
    monkeypatch.setenv("FACEAGE_AUDIT_KEY_FILE", str(LEGACY / f"v{version}.pseudonym.key"))
    return db, Store(db)


def _recorded_pages(store: Store, run_id: str):
    artifacts = store.table("artifacts", run_id)
    return artifacts[artifacts["kind"].isin(PAGES)]


def _mismatches(pages, out: Path) -> list[str]:
    return [r.path for r in pages.itertuples() if sha256_file(out / r.path) != r.sha256]


def test_a_schema_13_database_re_renders_its_data_byte_for_byte(tmp_path, monkeypatch):
    """Every document a v13 run published from its data (verdict.json, the model card's and
    the TRIPOD+AI map's JSON, every CSV) re-renders byte for byte. The HTML pages render
    too, from the same rows: their layout has changed since (issue 20: failed checks first,
    tables that fit), so they are held to their content, not their bytes. A page of a run
    made by this release re-renders byte for byte (test_flow, and the torch-free render
    below)."""
    db, store = _open_legacy(13, tmp_path, monkeypatch)
    assert store.schema_version() == SCHEMA_VERSION
    run_id = store.runs()["run_id"].item()
    assert store.table("figures", run_id).empty  # written before figures were stored
    render_all(db)
    pages = _recorded_pages(store, run_id)
    assert len(pages) >= 10 and "report_html" in set(pages["kind"])
    documents = pages[~pages["path"].str.endswith(".html")]
    assert {"verdict_json", "model_card_json", "tripod_ai_json", "csv_export"} <= set(
        documents["kind"]
    )
    assert _mismatches(documents, tmp_path) == []
    page = (tmp_path / "runs" / run_id / "index.html").read_text()
    verdict = store.run(run_id)["verdict"]
    assert f"{verdict.upper()}:" in page and run_id in page
    checks = store.table("verdicts", run_id)
    assert all(c in page for c in checks["check_name"])
    mae = store.table("accuracy", run_id).query("metric == 'mae' and attribute == 'all'")
    assert all(f"{v:.3f}" in page for v in mae["value"])


def test_a_schema_12_database_opens_upgraded_and_renders(tmp_path, monkeypatch):
    db, store = _open_legacy(12, tmp_path, monkeypatch)
    versions = store.query("SELECT version FROM schema_version ORDER BY version")["version"]
    assert versions.tolist() == list(range(1, 13)) + [SCHEMA_VERSION]
    run_id = store.runs()["run_id"].item()
    for name in RESULT_TABLES:  # every table reads, old ones with their rows
        store.table(name, run_id)
    verdicts = store.table("verdicts", run_id)
    assert len(verdicts) > 10 and verdicts["judged_value"].isna().all()  # added in v13
    assert len(store.table("accuracy", run_id)) > 0
    render_all(db)
    page = (tmp_path / "runs" / run_id / "index.html").read_text()
    assert "Kaplan-Meier" in page and "median follow-up" in page


BLOCK_TORCH = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm", "onnxruntime"):
            raise ImportError("made unimportable by the test: " + name)
sys.meta_path.insert(0, Blocked())
from audit.report import render_all
render_all(sys.argv[1], sys.argv[2])
assert not any(m.split(".")[0] == "torch" for m in sys.modules)
"""


def test_a_run_renders_with_torch_unimportable_and_equals_its_published_page(cli_and_api, tmp_path):
    run = cli_and_api["api"]
    store = run.store
    figures = store.table("figures", run.run_id)
    assert figures["figure"].tolist() == ["perturbation_examples"]
    summary = store.table("cohort_summary", run.run_id)
    assert summary["statistic"].tolist() == ["median_followup_years"]
    db = tmp_path / "audit.duckdb"
    shutil.copy(run.db, db)
    out = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, str(db), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    pages = _recorded_pages(store, run.run_id)
    assert "report_html" in set(pages["kind"])
    assert _mismatches(pages, out) == []


def test_the_stored_median_follow_up_equals_lifelines(cli_and_api):
    from lifelines import KaplanMeierFitter

    run = cli_and_api["api"]
    rows = run.cohort_rows
    subjects = rows[rows["included"]].drop_duplicates("subject_id")
    kmf = KaplanMeierFitter().fit(subjects["time"], 1 - subjects["event"])
    stored = run.cohort_summary.set_index("statistic").at["median_followup_years", "value"]
    assert stored == pytest.approx(kmf.median_survival_time_, rel=1e-12)
