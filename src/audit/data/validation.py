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

from audit.data.faces import face_count_reason
from audit.data.images import image_properties, near_duplicate_pairs
from audit.errors import InputError
from audit.pipeline.schema import columns

SEVERITIES = ("critical", "error", "warning")
SUITE_NAMES = ("manifest", "images", "predictions")
RESULT_COLUMNS = columns("validation_results")
QUARANTINE_COLUMNS = columns("quarantine")


def default_suite_dir() -> Path:
    """``expectations/`` of the project (a source checkout) or of the installed package."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "expectations", here.parents[1] / "expectations"):
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
            raise InputError(
                f"{path}: expectation {exp['type']} has severity {severity!r}; "
                f"use one of {SEVERITIES}"
            )
    return suite


def _key(exp: dict) -> tuple:
    return exp["type"], exp.get("kwargs", {}).get("column")


@dataclass
class SuiteResult:
    """What a suite found: result rows, rows to quarantine, and critical failures."""

    results: pd.DataFrame
    quarantine: pd.DataFrame
    critical: list[str] = field(default_factory=list)


def _gx_context():
    import great_expectations as gx

    for name in ["great_expectations"] + [
        n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")
    ]:
        logging.getLogger(name).setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # progress bars are cosmetic; older configs lack the switch
        pass
    return context


@dataclass(frozen=True)
class _Quarantining:
    """How a failed row becomes a quarantine record (see :func:`run_suite`)."""

    source_file: str
    stage: str
    reasons: dict | None
    where: object
    quarantine_column: object
    quarantine_file: object

    def records(self, exp: dict, col, bad_rows: list, by_row: pd.DataFrame) -> list[dict]:
        meta = exp.get("meta") or {}
        out = []
        for row_number in sorted(set(bad_rows)):
            value = by_row.at[row_number, col] if col in by_row.columns else None
            record = by_row.loc[row_number]
            if self.reasons and col in self.reasons:
                reason = self.reasons[col](value, record)
            else:
                reason = (meta.get("reason") or meta.get("rule") or exp["type"]).format(
                    value=_fmt(value)
                )
            place = self.where(col, record) if self.where else f"column {col}"
            source = self.quarantine_file(record) if self.quarantine_file else self.source_file
            out.append(
                {
                    "photo_id": record.get("photo_id"),
                    "stage": self.stage,
                    "severity": meta.get("severity", "error"),
                    "source_file": source,
                    "row_number": int(row_number),
                    "column_name": self.quarantine_column(col) if self.quarantine_column else col,
                    "reason": f"{Path(self.source_file).name} row {row_number}, {place}: {reason}",
                }
            )
        return out


def _validate_with_gx(suite: dict, frame: pd.DataFrame, expectations: list) -> list:
    """Great Expectations' results, as ``(expectation, result dict)`` in the suite's order
    (GX may return them in another: they are matched by type and column)."""
    import great_expectations as gx

    context = _gx_context()
    source = context.data_sources.add_pandas(f"src-{suite['name']}")
    asset = source.add_dataframe_asset(suite["name"])
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": frame}
    )
    gx_suite = gx.ExpectationSuite(name=suite["name"], expectations=copy.deepcopy(expectations))
    result = batch.validate(
        gx_suite,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]},
    )
    order = {_key(e): i for i, e in enumerate(expectations)}
    pairs = []
    for res in result.results:
        d = res.to_json_dict()
        config = d["expectation_config"]
        key = (config["type"], (config.get("kwargs") or {}).get("column"))
        exp = expectations[order[key]] if key in order else config
        pairs.append((order.get(key, len(order)), exp, d))
    return [(exp, d) for _, exp, d in sorted(pairs, key=lambda t: t[0])]


def _result_row(suite_name: str, exp: dict, d: dict, bad_rows: list) -> dict:
    """One ``validation_results`` row: the expectation, its outcome, examples and rows."""
    meta = exp.get("meta") or {}
    r = d.get("result") or {}
    details = {
        "kwargs": {k: _plain(v) for k, v in exp.get("kwargs", {}).items()},
        "examples": [_plain(v) for v in (r.get("partial_unexpected_list") or [])[:5]],
        "observed": _plain(r.get("observed_value")),
        "element_count": r.get("element_count"),
        "rule": meta.get("rule"),
        "rows": sorted({int(x) for x in bad_rows})[:20],
    }
    count = r.get("unexpected_count")
    return {
        "suite": suite_name,
        "expectation": exp["type"],
        "column_name": exp.get("kwargs", {}).get("column"),
        "severity": meta.get("severity", "error"),
        "success": bool(d["success"]),
        "unexpected_count": int(count if count is not None else (0 if d["success"] else 1)),
        "details": json.dumps(details, default=str),
    }


def run_suite(
    suite: dict,
    frame: pd.DataFrame,
    *,
    source_file: str,
    stage: str = "validate",
    reasons: dict | None = None,
    where=None,
    quarantine_column=None,
    quarantine_file=None,
) -> SuiteResult:
    """Validate ``frame`` (with ``photo_id`` and ``_row``) against a suite dict.

    ``reasons`` maps a column to ``f(value, row) -> str`` for a person-readable reason;
    otherwise the expectation's ``meta.reason`` (with ``{value}``) or its rule is used.
    ``where(column, row)`` says where in the row the problem is (default ``column C``);
    ``quarantine_column(column)`` and ``quarantine_file(row)`` name the column and file of
    a quarantine record (default: the expectation's column, ``source_file``).
    """
    expectations, skipped = [], []
    for exp in suite["expectations"]:
        col = exp.get("kwargs", {}).get("column")
        if col is not None and col not in frame.columns and exp["type"] != "expect_column_to_exist":
            skipped.append(exp)  # the column is optional and absent: nothing to check
            continue
        expectations.append(exp)
    quarantining = _Quarantining(source_file, stage, reasons, where, quarantine_column,
                                 quarantine_file)  # fmt: skip
    by_row = frame.set_index("_row")
    rows, quarantine, critical = [], [], []
    for exp, d in _validate_with_gx(suite, frame, expectations):
        meta = exp.get("meta") or {}
        severity = meta.get("severity", "error")
        col = exp.get("kwargs", {}).get("column")
        unexpected = (d.get("result") or {}).get("unexpected_index_list") or []
        bad_rows = [u["_row"] for u in unexpected if isinstance(u, dict) and "_row" in u]
        rows.append(_result_row(suite["name"], exp, d, bad_rows))
        if d["success"]:
            continue
        if severity == "critical":
            critical.append(
                f"{source_file}: {meta.get('rule') or exp['type']}"
                + (f" (column {col})" if col else "")
            )
        if severity == "error" and bad_rows:
            quarantine.extend(quarantining.records(exp, col, bad_rows, by_row))
    for exp in skipped:
        rows.append(
            {
                "suite": suite["name"],
                "expectation": exp["type"],
                "column_name": exp["kwargs"].get("column"),
                "severity": exp["meta"].get("severity", "error"),
                "success": True,
                "unexpected_count": 0,
                "details": json.dumps({"skipped": "column absent (optional)"}),
            }
        )
    return SuiteResult(
        pd.DataFrame(rows, columns=RESULT_COLUMNS),
        pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS),
        critical,
    )


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


def _fmt(value):
    v = _plain(value)
    return f"{v:.4g}" if isinstance(v, float) else v


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


@dataclass
class ValidationReport:
    """Every suite's results on one cohort, and what they set aside."""

    results: pd.DataFrame
    quarantine: pd.DataFrame
    image_properties: pd.DataFrame | None
    critical: list[str]

    @property
    def errors(self) -> int:
        r = self.results
        return int(((~r["success"].astype(bool)) & (r["severity"] == "error")).sum())


IMAGE_REASONS = {
    "decodable": lambda v, r: r["error"] or "cannot decode",
    "format_matches_name": lambda v, r: (
        f"the file holds {r['format']} data, not what its "
        f"name {Path(r['image_path']).suffix!r} says"
    ),
    "exact_duplicate_of_other_subject": lambda v, r: (
        f"byte-identical to photo {r['duplicate_of']} of another subject (possible leakage: "
        "one photo filed under two patients)"
    ),
    "near_duplicate_of_other_subject": lambda v, r: (
        f"nearly identical to photo {r['near_duplicate_of']} of another subject (possible "
        "leakage: the same photo re-saved under a second patient)"
    ),
    "face_count": lambda v, r: face_count_reason(int(v)),
}


def image_table(cohort, workers: int | None = None, progress=None) -> pd.DataFrame:
    """The per-image table of a cohort's good rows, with duplicates across subjects marked."""
    rows = cohort.frame[cohort.frame["image_path"].notna()]
    items = [
        (pid, cohort.image_file(rel)) for pid, rel in zip(rows["photo_id"], rows["image_path"])
    ]
    props = image_properties(
        items,
        detector=None if cohort.spec.cropped else cohort.spec.detector,
        workers=workers,
        progress=progress,
    )
    props = (
        props.merge(
            rows[["photo_id", "subject_id", "_row", "image_path"]], on="photo_id", how="left"
        )
        .sort_values("_row", kind="stable")
        .reset_index(drop=True)
    )
    # Duplicates are looked for among photos with content: blank or broken files are
    # reported as such, not as copies of one another.
    content = props["decodable"].astype(bool) & (props["contrast"].astype(float) >= 5)
    first: dict[str, tuple[str, str]] = {}
    exact, dup_of = [], []
    for pid, sha, sid, ok in zip(props["photo_id"], props["sha256"], props["subject_id"], content):
        seen = first.get(sha) if (sha and ok) else None
        if not ok:
            exact.append(False)
            dup_of.append(None)
            continue
        if seen is None:
            if sha:
                first[sha] = (pid, sid)
            exact.append(False)
            dup_of.append(None)
        else:
            exact.append(seen[1] != sid)
            dup_of.append(seen[0] if seen[1] != sid else None)
    props["exact_duplicate_of_other_subject"] = exact
    props["duplicate_of"] = dup_of
    thumbs = [t if ok else None for t, ok in zip(props["_thumb"], content)]
    pairs = near_duplicate_pairs(props["photo_id"], thumbs, props["subject_id"])
    near = set(pairs["photo_b"]) - set(
        props.loc[props["exact_duplicate_of_other_subject"], "photo_id"]
    )
    props["near_duplicate_of_other_subject"] = props["photo_id"].isin(near)
    props["near_duplicate_of"] = props["photo_id"].map(
        dict(zip(pairs["photo_b"], pairs["photo_a"]))
    )
    return props.drop(columns=["_thumb"])


def validate_cohort(
    cohort, *, images: bool = True, workers: int | None = None, progress=None
) -> ValidationReport:
    """Run the manifest suite and (for cohorts with photos) the image suite."""
    override = (cohort.root / cohort.spec.expectations) if cohort.spec.expectations else None
    suite = load_suite("manifest", override)
    for cov in cohort.covariate_names:  # clinical covariates: mostly recorded
        if not any(
            _key(e) == ("expect_column_values_to_not_be_null", cov) for e in suite["expectations"]
        ):
            suite["expectations"].append(
                {
                    "type": "expect_column_values_to_not_be_null",
                    "kwargs": {"column": cov, "mostly": COVARIATE_MIN_RECORDED},
                    "meta": {
                        "severity": "warning",
                        "rule": f"covariate recorded for at least {COVARIATE_MIN_RECORDED:.0%} "
                        "of photos (the clinical Cox model uses complete cases)",
                    },
                }
            )
    manifest = run_suite(
        suite, cohort.frame, source_file=str(cohort.manifest_path), reasons={"age": age_reason}
    )
    parts = [manifest]
    if cohort.has_outcomes:
        parts.append(_events_per_term(cohort))
    if cohort.spec.paired is not None:
        parts.append(_paired_conditions(cohort))
    props = None
    if images and cohort.has_images:
        props = image_table(cohort, workers=workers, progress=progress)
        suite = load_suite("images", override)
        if cohort.spec.cropped:  # aligned crops: no face detection
            suite["expectations"] = [
                e
                for e in suite["expectations"]
                if e["kwargs"].get("column") not in ("face_count", "face_box_frac")
            ]
        parts.append(
            run_suite(
                suite,
                props,
                source_file=str(cohort.manifest_path),
                reasons=IMAGE_REASONS,
                where=lambda col, r: f"image {r['image_path']}",
                quarantine_column=lambda col: "image_path",
                quarantine_file=lambda r: str(cohort.image_file(r["image_path"])),
            )
        )
    results = pd.concat([p.results for p in parts], ignore_index=True)
    quarantine = pd.concat([p.quarantine for p in parts], ignore_index=True)
    # one record per photo and problem: a photo failing two checks keeps both reasons
    return ValidationReport(results, quarantine, props, [c for p in parts for c in p.critical])


COVARIATE_MIN_RECORDED = 0.8
EVENTS_PER_TERM = 10


def _events_per_term(cohort) -> SuiteResult:
    """At least 10 events per term of the fullest survival model (warning).

    The terms are FaceAge, age, sex and each covariate (a categorical one counts once per
    non-reference level); events are counted on one photo per subject.
    """
    subjects = cohort.subjects()
    terms = 3
    for cov in cohort.spec.covariates:
        if cov.type == "categorical" and cov.name in subjects:
            terms += max(subjects[cov.name].nunique() - 1, 1)
        else:
            terms += 1
    if "cancer_type" in subjects and subjects["cancer_type"].nunique() > 1:
        terms += subjects["cancer_type"].nunique() - 1
    suite = {
        "name": "survival",
        "expectations": [
            {
                "type": "expect_column_sum_to_be_between",
                "kwargs": {"column": "event", "min_value": EVENTS_PER_TERM * terms},
                "meta": {
                    "severity": "warning",
                    "rule": f"at least {EVENTS_PER_TERM} events per term of the clinical Cox model "
                    f"({terms} terms, one photo per subject)",
                },
            }
        ],
    }
    return run_suite(suite, subjects, source_file=str(cohort.manifest_path))


def _paired_conditions(cohort) -> SuiteResult:
    """A declared paired study: every condition and reference it names appears in the
    manifest's ``condition`` column (warning; a comparison without photos is noted, not run)."""
    named = sorted(
        {c.condition for c in cohort.spec.paired.comparisons}
        | {c.reference for c in cohort.spec.paired.comparisons}
    )
    missing = [c for c in named if c not in set(cohort.frame["condition"].dropna())]
    suite = {
        "name": "paired",
        "expectations": [
            {
                "type": "expect_column_distinct_values_to_contain_set",
                "kwargs": {"column": "condition", "value_set": named},
                "meta": {
                    "severity": "warning",
                    "rule": "every condition and reference cohort.yaml's `paired:` declares "
                    "has photos" + (f" (none for: {', '.join(missing)})" if missing else ""),
                },
            }
        ],
    }
    return run_suite(suite, cohort.frame, source_file=str(cohort.manifest_path))


def validate_predictions(
    wide: pd.DataFrame, model: str, source_file: str, override_dir: Path | None = None
) -> SuiteResult:
    """The predictions suite on one model's wide predictions (``photo_id``, ``_row``, outputs)."""
    suite = load_suite("predictions", override_dir)
    suite["name"] = "predictions"
    result = run_suite(
        suite,
        wide,
        source_file=source_file,
        stage="predictions",
        where=lambda col, r: f"model {model}, output {col}",
    )
    result.results["suite"] = f"predictions:{model}"
    return result
