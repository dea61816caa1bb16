"""CSV exports of a run's result tables, safe to open in a spreadsheet.

Each export is one table of ``audit.duckdb`` for one run, written beside the report as
``runs/<run_id>/data/<table>.csv``: the numbers behind every plot and table of the page.
Two rules keep them fit to leave the site:

- ids are pseudonymised (:func:`audit.data.privacy.pseudonym`) unless ``--show-ids``, and
  per-photo tables (predictions, cohort rows) are not exported at all;
- a text cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``,
  ``@``, a tab or a carriage return, OWASP's "CSV injection" list) is written with a leading
  apostrophe, so that it is shown as text. Numeric columns are written as numbers (a
  negative number is not a formula).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

# table -> columns holding ids that must be pseudonymised
EXPORTS: dict[str, tuple[str, ...]] = {
    "verdicts": (),
    "validation_results": (),
    "quarantine": ("photo_id",),
    "accuracy": (),
    "robustness": (),
    "paired": (),
    "slices": (),
    "fairness": (),
    "representativeness": (),
    "comparisons": (),
    "survival_models": (),
    "survival_terms": (),
    "survival_tests": (),
    "survival_metrics": (),
    "survival_subgroups": (),
    "survival_curves": (),
    "decision_curves": (),
    "decision_subgroups": (),
    "drift": (),
    "estimated_performance": (),
    "drift_case_mix": (),
    "saliency": (),
    "saliency_checks": (),
    "combined_sites": (),
    "combined_models": (),
    "combined_pooled": (),
    "combined_estimates": (),
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """A text cell a spreadsheet would evaluate, made inert with a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(df: pd.DataFrame) -> str:
    """The frame as CSV text with formula-like text cells neutralised (numbers untouched)."""
    df = df.copy()
    for col in df.columns:
        if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
            df[col] = df[col].map(neutralise)
    buf = io.StringIO()
    df.to_csv(
        buf,
        index=False,
        quoting=csv.QUOTE_MINIMAL,
        lineterminator="\n",
        float_format="%.10g",
        date_format="%Y-%m-%dT%H:%M:%S",
    )
    return buf.getvalue()


def export_frames(tables: dict[str, pd.DataFrame], scrub) -> dict[str, pd.DataFrame]:
    """The frames to export, keyed by table, from the run's ``tables``: empty tables left
    out, ``run_id`` dropped, id columns pseudonymised and free text scrubbed of ids by
    ``scrub`` (:func:`audit.data.privacy.id_scrubber`)."""
    out = {}
    for table, id_columns in EXPORTS.items():
        df = tables.get(table)
        if df is None or df.empty:
            continue
        df = df.drop(columns=["run_id"], errors="ignore").copy()
        for col in id_columns:
            df[col] = df[col].map(lambda v: scrub(v) if isinstance(v, str) else v)
        for col in ("reason", "details", "note"):
            if col in df:
                df[col] = df[col].map(scrub)
        if "source_file" in df:  # the site's folder layout stays on site; names carry ids
            df["source_file"] = df["source_file"].map(
                lambda v: scrub(Path(v).name) if isinstance(v, str) else v
            )
        out[table] = df
    return out


def write_exports(frames: dict[str, pd.DataFrame], run_dir: Path, write=None) -> list[Path]:
    """Write ``data/<table>.csv`` per frame; return the paths. ``write(path, text)`` writes
    one file (the renderer's is atomic)."""
    paths = []
    for table, df in frames.items():
        path = run_dir / "data" / f"{table}.csv"
        (write or _write)(path, to_csv(df))
        paths.append(path)
    return paths


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
