"""Data validation with Great Expectations: manifest, image and prediction suites.

Suites live in ``expectations/`` as Great Expectations JSON (``manifest.json``,
``images.json``, ``predictions.json``); a cohort may add or override expectations with a
folder of its own (``expectations:`` in cohort.yaml), matched by expectation type and
column. Each expectation carries ``meta.severity``:

* ``critical``: the cohort cannot be audited; the flow stops before inference;
* ``error``: the offending rows are quarantined with a reason, the rest go on;
* ``warning``: reported only.

Rows are traced through the manifest's row numbers (GX's ``unexpected_index_list`` over the
``_row`` column), so a quarantine line reads "manifest.csv row 17, column age: 730 is not
an age in years; months?".
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import InputError

SEVERITIES = ("critical", "error", "warning")
SUITE_NAMES = ("manifest", "images", "predictions")
RESULT_COLUMNS = ["suite", "expectation", "column_name", "severity", "success",
                  "unexpected_count", "details"]
QUARANTINE_COLUMNS = ["photo_id", "stage", "severity", "source_file", "row_number",
                      "column_name", "reason"]


def default_suite_dir() -> Path:
    """``expectations/`` of the project (a source checkout) or of the installed package."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "expectations", here.parent / "expectations"):
        if candidate.is_dir():
            return candidate
    raise InputError("expectations/ not found beside the package")


def load_suite(name: str, override_dir: Path | None = None) -> dict:
    """A suite as a dict, with a cohort's overrides applied (same type and column: replaced)."""
    path = default_suite_dir() / f"{name}.json"
    suite = json.loads(path.read_text())
    if override_dir is not None:
        extra = Path(override_dir) / f"{name}.json"
        if extra.is_file():
            try:
                more = json.loads(extra.read_text())
            except json.JSONDecodeError as exc:
                raise InputError(f"{extra}: not valid JSON: {exc}") from exc
            index = {_key(e): i for i, e in enumerate(suite["expectations"])}
            for exp in more.get("expectations", []):
                if _key(exp) in index:
                    suite["expectations"][index[_key(exp)]] = exp
                else:
                    suite["expectations"].append(exp)
    for exp in suite["expectations"]:
        severity = exp.setdefault("meta", {}).setdefault("severity", "error")
        if severity not in SEVERITIES:
            raise InputError(f"{path}: expectation {exp['type']} has severity {severity!r}; "
                             f"use one of {SEVERITIES}")
    return suite


def _key(exp: dict) -> tuple:
    return exp["type"], exp.get("kwargs", {}).get("column")


@dataclass
class SuiteResult:
    """What a suite found: result rows, rows to quarantine, and critical failures."""

    results: pd.DataFrame
    quarantine: pd.DataFrame
    critical: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        r = self.results
        return int(((~r["success"].astype(bool)) & (r["severity"] != "warning")).sum()) if len(r) else 0


def _gx_context():
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # progress bars are cosmetic; older configs lack the switch
        pass
    return context


def run_suite(suite: dict, frame: pd.DataFrame, *, source_file: str, stage: str = "validate",
              reasons: dict | None = None) -> SuiteResult:
    """Validate ``frame`` (with ``photo_id`` and ``_row``) against a suite dict.

    ``reasons`` maps a column to ``f(value, row) -> str`` for a person-readable reason;
    otherwise the expectation's ``meta.reason`` (with ``{value}``) or its type is used.
    """
    import great_expectations as gx

    context = _gx_context()
    source = context.data_sources.add_pandas(f"src-{suite['name']}")
    asset = source.add_dataframe_asset(suite["name"])
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame})
    expectations = []
    skipped = []
    for exp in suite["expectations"]:
        col = exp.get("kwargs", {}).get("column")
        if col is not None and col not in frame.columns and exp["type"] != "expect_column_to_exist":
            skipped.append(exp)  # the column is optional and absent: nothing to check
            continue
        expectations.append(exp)
    gx_suite = gx.ExpectationSuite(name=suite["name"], expectations=copy.deepcopy(expectations))
    result = batch.validate(gx_suite, result_format={
        "result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]})
    by_row = frame.set_index("_row")
    rows, quarantine, critical = [], [], []
    for exp, res in zip(expectations, result.results):
        d = res.to_json_dict()
        meta = exp.get("meta", {})
        severity = meta.get("severity", "error")
        col = exp.get("kwargs", {}).get("column")
        r = d.get("result") or {}
        unexpected = r.get("unexpected_index_list") or []
        bad_rows = [u["_row"] for u in unexpected if isinstance(u, dict) and "_row" in u]
        examples = [_plain(v) for v in (r.get("partial_unexpected_list") or [])[:5]]
        details = {"kwargs": {k: _plain(v) for k, v in exp.get("kwargs", {}).items()},
                   "examples": examples, "observed": _plain(r.get("observed_value")),
                   "element_count": r.get("element_count"), "rule": meta.get("rule")}
        count = r.get("unexpected_count")
        rows.append({"suite": suite["name"], "expectation": exp["type"], "column_name": col,
                     "severity": severity, "success": bool(d["success"]),
                     "unexpected_count": int(count if count is not None else (0 if d["success"] else 1)),
                     "details": json.dumps(details, default=str)})
        if d["success"]:
            continue
        if severity == "critical":
            critical.append(f"{source_file}: {meta.get('rule') or exp['type']}"
                            + (f" (column {col})" if col else ""))
        if severity == "error" and bad_rows:
            for row_number in sorted(set(bad_rows)):
                value = by_row.at[row_number, col] if col in by_row.columns else None
                record = by_row.loc[row_number]
                if reasons and col in reasons:
                    reason = reasons[col](value, record)
                else:
                    reason = (meta.get("reason") or exp["type"]).format(value=_plain(value))
                quarantine.append({
                    "photo_id": record.get("photo_id"), "stage": stage, "severity": severity,
                    "source_file": source_file, "row_number": int(row_number),
                    "column_name": col, "reason": f"{Path(source_file).name} row {row_number}, "
                                                  f"column {col}: {reason}"})
    for exp in skipped:
        rows.append({"suite": suite["name"], "expectation": exp["type"],
                     "column_name": exp["kwargs"].get("column"),
                     "severity": exp["meta"].get("severity", "error"), "success": True,
                     "unexpected_count": 0,
                     "details": json.dumps({"skipped": "column absent (optional)"})})
    return SuiteResult(pd.DataFrame(rows, columns=RESULT_COLUMNS),
                       pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS), critical)


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def age_reason(value, row) -> str:
    """Why an age is not an age in years, with the likely unit when it looks like one."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"{value!r} is not a number"
    if 120 < v <= 120 * 12:
        return f"{v:g} is not an age in years; months? ({v / 12:.1f} years)"
    if 120 * 12 < v <= 120 * 366:
        return f"{v:g} is not an age in years; days? ({v / 365.25:.1f} years)"
    return f"{v:g} is not an age in years (0-120)"
