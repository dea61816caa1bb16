"""The database schema, written once: every table of ``audit.duckdb`` with its columns and
what it holds. The DDL, the column lists the code builds frames with (:func:`columns`) and the
database reference of the docs (:func:`markdown_reference`) are generated from it.

Versions: a new file is created at :data:`SCHEMA_VERSION` directly. A file of an earlier
version (1 to 13 written by the forward migrations this module replaced, or 14 to 18) is
brought up
to date by :func:`reconcile`: every change since version 1 was additive (a table, or a column
appended at the end of one; 15 appended ``spread`` to ``predictions`` and
``prediction_cache`` and added ``face_pipeline``; 16 added ``paired`` and ``paired_pairs``
and appended ``condition``, ``pair`` and ``paired_only`` to ``cohort_rows``; 17 added
``slices``, 18 appended ``conditions`` and ``description`` to it, 19 added
``estimated_performance`` and ``drift_case_mix``, 20 the ``combined_*`` tables of a combined
audit), so creating the
missing tables and appending the missing columns in the order written here gives the same
tables, in the same column order, as a file created new. A change that is not additive needs
its own step in :data:`STEPS`.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 20


@dataclass(frozen=True)
class Table:
    """A table: its name, what it holds, and its columns as ``"name TYPE, ..."`` in order."""

    name: str
    doc: str
    spec: str

    @property
    def columns(self) -> list[tuple[str, str]]:
        """``(name, type)`` pairs in column order."""
        pairs = []
        for part in self.spec.split(","):
            name, _, kind = part.strip().partition(" ")
            pairs.append((name, kind.strip()))
        return pairs

    def ddl(self) -> str:
        cols = ", ".join(
            f"{n} {t}{' PRIMARY KEY' if (self.name, n) == ('runs', 'run_id') else ''}"
            for n, t in self.columns
        )
        return f"CREATE TABLE {self.name} ({cols})"


TABLES: tuple[Table, ...] = (
    Table(
        "runs",
        "One row per run: what was audited (cohort hashes and path, models, config), by which "
        "code and packages, its status, heartbeat and verdict.",
        "run_id VARCHAR, flow VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, "
        "status VARCHAR, cohort_name VARCHAR, cohort_sha256 VARCHAR, models JSON, "
        "config_sha256 VARCHAR, code_version VARCHAR, environment JSON, pid INTEGER, host "
        "VARCHAR, heartbeat_at TIMESTAMPTZ, verdict VARCHAR, error VARCHAR, config JSON, "
        "manifest_sha256 VARCHAR, synthetic BOOLEAN, cohort_path VARCHAR",
    ),
    Table(
        "cohort_rows",
        "One row per manifest row: the standard columns, whether the row was included, its "
        "1-based manifest row number.",
        "run_id VARCHAR, photo_id VARCHAR, subject_id VARCHAR, age DOUBLE, sex VARCHAR, race "
        "VARCHAR, cancer_type VARCHAR, site VARCHAR, time DOUBLE, event INTEGER, included "
        "BOOLEAN, camera VARCHAR, row_number BIGINT, condition VARCHAR, pair VARCHAR, "
        "paired_only BOOLEAN",
    ),
    Table(
        "validation_results",
        "Every data check: Great Expectations expectations and the loader's parse checks, "
        "with severity, success and examples.",
        "run_id VARCHAR, suite VARCHAR, expectation VARCHAR, column_name VARCHAR, severity "
        "VARCHAR, success BOOLEAN, unexpected_count BIGINT, details JSON",
    ),
    Table(
        "quarantine",
        "Every rejected row or image: file, row, column and reason; quarantined rows never "
        "reach a model.",
        "run_id VARCHAR, photo_id VARCHAR, stage VARCHAR, severity VARCHAR, source_file "
        "VARCHAR, row_number BIGINT, column_name VARCHAR, reason VARCHAR",
    ),
    Table(
        "image_properties",
        "Per image: size, brightness, contrast, sharpness, face count, JPEG quality, "
        "decodability, EXIF orientation, SHA-256 and duplicates.",
        "run_id VARCHAR, photo_id VARCHAR, width INTEGER, height INTEGER, brightness DOUBLE, "
        "contrast DOUBLE, sharpness DOUBLE, face_count INTEGER, face_box_frac DOUBLE, "
        "jpeg_quality DOUBLE, image_path VARCHAR, mode VARCHAR, format VARCHAR, "
        "format_matches_name BOOLEAN, decodable BOOLEAN, error VARCHAR, exif_orientation "
        "INTEGER, sha256 VARCHAR, exact_duplicate_of_other_subject BOOLEAN, duplicate_of "
        "VARCHAR, near_duplicate_of_other_subject BOOLEAN, near_duplicate_of VARCHAR",
    ),
    Table(
        "detections",
        "Faces found per image (box, confidence, landmarks).",
        "run_id VARCHAR, photo_id VARCHAR, x DOUBLE, y DOUBLE, w DOUBLE, h DOUBLE, confidence "
        "DOUBLE, landmarks JSON",
    ),
    Table(
        "face_pipeline",
        "The face detector's failures by subgroup (raw photos): detection failure, multi-face "
        "and low-confidence rates and the face box side in pixels, overall and per group, with "
        "subject-bootstrap CIs and simultaneous bands on the difference to overall.",
        "run_id VARCHAR, detector VARCHAR, metric VARCHAR, attribute VARCHAR, group_name "
        "VARCHAR, n BIGINT, n_subjects BIGINT, value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, "
        "diff_to_overall DOUBLE, diff_ci_low DOUBLE, diff_ci_high DOUBLE, diff_ci_method "
        "VARCHAR, tolerance DOUBLE, status VARCHAR",
    ),
    Table(
        "predictions",
        "Every model output per photo, clean (perturbation `none`) and perturbed; `spread` is "
        "the SD of a probability head's distribution (a per-photo uncertainty), else null.",
        "run_id VARCHAR, photo_id VARCHAR, subject_id VARCHAR, model VARCHAR, output VARCHAR, "
        "perturbation VARCHAR, severity INTEGER, value DOUBLE, spread DOUBLE",
    ),
    Table(
        "embeddings",
        "Image models' embeddings per photo (for embedding drift).",
        "run_id VARCHAR, photo_id VARCHAR, model VARCHAR, vector FLOAT[]",
    ),
    Table(
        "robustness",
        "Prediction shifts per model, output, perturbation, severity and subgroup: mean and "
        "95th-percentile shift, share over tolerance, Spearman, ICC, risk-quartile changes.",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, perturbation VARCHAR, severity "
        "INTEGER, attribute VARCHAR, group_name VARCHAR, n BIGINT, mean_abs_shift DOUBLE, "
        "p95_abs_shift DOUBLE, frac_over_tolerance DOUBLE, spearman DOUBLE, icc DOUBLE, "
        "quartile_change DOUBLE, passed BOOLEAN, family VARCHAR, description VARCHAR, "
        "mean_shift DOUBLE",
    ),
    Table(
        "paired",
        "Agreement on real repeated photos of the same person (make-up, surgery, glasses, "
        "light, pose, retakes): per model, output, comparison and subgroup the mean "
        "within-subject shift with its subject-bootstrap CI, Bland-Altman limits of agreement "
        "with CIs, repeatability coefficient, ICC(3,1), risk-quartile changes and weighted "
        "kappa, and the equivalence test (TOST) against the tolerance.",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, comparison VARCHAR, condition "
        "VARCHAR, reference VARCHAR, attribute VARCHAR, group_name VARCHAR, unit VARCHAR, "
        "unit_scale DOUBLE, age_adjusted BOOLEAN, age_slope DOUBLE, mean_age_gap DOUBLE, "
        "n_pairs BIGINT, mean_shift DOUBLE, mean_shift_low DOUBLE, mean_shift_high DOUBLE, "
        "sd_diff DOUBLE, loa_low DOUBLE, loa_low_ci_low DOUBLE, loa_low_ci_high DOUBLE, "
        "loa_high DOUBLE, loa_high_ci_low DOUBLE, loa_high_ci_high DOUBLE, repeatability "
        "DOUBLE, icc DOUBLE, quartile_change DOUBLE, kappa DOUBLE, tolerance DOUBLE, tost_p "
        "DOUBLE, equivalence_low DOUBLE, equivalence_high DOUBLE, equivalence VARCHAR, reason "
        "VARCHAR, passed BOOLEAN",
    ),
    Table(
        "paired_pairs",
        "The pairs behind `paired`: each subject's reference and compared photo, both "
        "outputs, the age gap between the photos, the change expected from it and the "
        "difference in the comparison's unit (the Bland-Altman plot's points).",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, comparison VARCHAR, subject_id "
        "VARCHAR, photo_ref VARCHAR, photo_cmp VARCHAR, value_ref DOUBLE, value_cmp DOUBLE, "
        "age_gap DOUBLE, expected_change DOUBLE, difference DOUBLE",
    ),
    Table(
        "slices",
        "Slices where a model fails that no declared subgroup names: conjunctions of up to "
        "three conditions (demographics, site, camera, covariates, banded image properties, "
        "embedding clusters) found on one half of the subjects and tested on the other; the "
        "confirmation half's effect on the loss with its 95% CI, Holm-corrected p and "
        "whether the slice is confirmed; its conditions as JSON ``[[feature, value], ...]`` "
        "and, for a slice of an embedding cluster, the metadata that distinguishes the "
        "cluster.",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, loss VARCHAR, unit VARCHAR, rank "
        "INTEGER, slice VARCHAR, n_conditions INTEGER, n_search BIGINT, n_confirm BIGINT, "
        "search_effect DOUBLE, search_t DOUBLE, effect DOUBLE, ci_low DOUBLE, ci_high DOUBLE, "
        "p DOUBLE, p_holm DOUBLE, min_effect DOUBLE, confirmed BOOLEAN, conditions VARCHAR, "
        "description VARCHAR",
    ),
    Table(
        "drift_case_mix",
        "Each feature's drift against the reference before and after reweighting the reference "
        "to this cohort's age, sex and race mix: mean shift (numbers) with the adjusted shift's "
        "bootstrap CI, normed Wasserstein or Jensen-Shannon distance before and after, the "
        "share the case mix explains, and whether the drift is explained by case mix, partly "
        "explained, not explained (acquisition, model behaviour) or no drift.",
        "run_id VARCHAR, reference VARCHAR, model VARCHAR, feature VARCHAR, kind VARCHAR, "
        "drifted BOOLEAN, raw_shift DOUBLE, adjusted_shift DOUBLE, adjusted_low DOUBLE, "
        "adjusted_high DOUBLE, raw_distance DOUBLE, adjusted_distance DOUBLE, distance_method "
        "VARCHAR, explained_share DOUBLE, status VARCHAR, ess DOUBLE, n_reference BIGINT, "
        "n_current BIGINT",
    ),
    Table(
        "estimated_performance",
        "Each model's performance on this cohort estimated from a reference run's outcomes "
        "reweighted to this cohort's case mix (covariate shift; cross-fitted classifier "
        "weights): the reference's own value, the estimate with its bootstrap CI and the "
        "range the realised value of this cohort's size should fall in, the weights' "
        "effective sample size (all subjects, deaths) and the classifier's AUC; with this "
        "cohort's outcomes the realised value and the gap (realised minus estimate) with CIs; "
        "an earlier run's estimate of this cohort; status estimated or poor overlap (why: "
        "note).",
        "run_id VARCHAR, reference VARCHAR, model VARCHAR, output VARCHAR, metric VARCHAR, "
        "horizon DOUBLE, reference_value DOUBLE, estimate DOUBLE, ci_low DOUBLE, ci_high "
        "DOUBLE, pred_low DOUBLE, pred_high DOUBLE, realised DOUBLE, realised_low DOUBLE, "
        "realised_high DOUBLE, gap DOUBLE, gap_low DOUBLE, gap_high DOUBLE, status VARCHAR, "
        "ess DOUBLE, ess_deaths DOUBLE, classifier_auc DOUBLE, n_reference BIGINT, n_current "
        "BIGINT, note VARCHAR, earlier_run VARCHAR, earlier_estimate DOUBLE, earlier_low "
        "DOUBLE, earlier_high DOUBLE",
    ),
    Table(
        "fairness",
        "Per-group metrics with subject-bootstrap CIs, differences to overall and to the "
        "reference group (max-t bands), tolerance and status.",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, metric VARCHAR, attribute VARCHAR, "
        "group_name VARCHAR, n BIGINT, value DOUBLE, ci_low DOUBLE, ci_high DOUBLE, "
        "diff_to_overall DOUBLE, diff_ci_low DOUBLE, diff_ci_high DOUBLE, status VARCHAR, "
        "n_subjects BIGINT, diff_ci_method VARCHAR, reference_group VARCHAR, "
        "diff_to_reference DOUBLE, ref_ci_low DOUBLE, ref_ci_high DOUBLE, tolerance DOUBLE",
    ),
    Table(
        "survival_models",
        "Cox models fitted: description, n, events, concordance with CI, log-likelihood, "
        "smallest PH-test p, status (a fit that did not converge says why).",
        "run_id VARCHAR, model VARCHAR, model_id VARCHAR, description VARCHAR, n BIGINT, "
        "events BIGINT, concordance DOUBLE, concordance_low DOUBLE, concordance_high DOUBLE, "
        "log_likelihood DOUBLE, ph_test_min_p DOUBLE, status VARCHAR, note VARCHAR",
    ),
    Table(
        "survival_terms",
        "Hazard ratios per model term with CI, p-value, coefficient and standard error.",
        "run_id VARCHAR, model VARCHAR, model_id VARCHAR, term VARCHAR, hr DOUBLE, hr_low "
        "DOUBLE, hr_high DOUBLE, p_value DOUBLE, coef DOUBLE, se DOUBLE",
    ),
    Table(
        "survival_tests",
        "Log-rank, likelihood-ratio and PH tests, with their notes.",
        "run_id VARCHAR, model VARCHAR, test VARCHAR, groups VARCHAR, statistic DOUBLE, df "
        "DOUBLE, p_value DOUBLE, note VARCHAR",
    ),
    Table(
        "survival_metrics",
        "Time-dependent discrimination and calibration (Uno's C, AUC(t), Brier, calibration "
        "slope, delta C) with CIs.",
        "run_id VARCHAR, model VARCHAR, model_id VARCHAR, metric VARCHAR, horizon DOUBLE, "
        "value DOUBLE, ci_low DOUBLE, ci_high DOUBLE",
    ),
    Table(
        "survival_curves",
        "Kaplan-Meier curves per group with numbers at risk and bands; predicted survival for "
        "calibration.",
        "run_id VARCHAR, model VARCHAR, curve VARCHAR, group_name VARCHAR, time DOUBLE, "
        "survival DOUBLE, at_risk BIGINT, predicted DOUBLE, survival_low DOUBLE, "
        "survival_high DOUBLE",
    ),
    Table(
        "drift",
        "Drift against the reference run per feature and model output: test, statistic, p, "
        "effect size and whether it drifted.",
        "run_id VARCHAR, reference VARCHAR, model VARCHAR, feature VARCHAR, kind VARCHAR, "
        "method VARCHAR, statistic DOUBLE, p_value DOUBLE, drifted BOOLEAN, effect DOUBLE, "
        "effect_method VARCHAR, n_reference BIGINT, n_current BIGINT",
    ),
    Table(
        "saliency",
        "Attribution share per face region, method, model and group, with CIs, region area "
        "and enrichment.",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, method VARCHAR, group_name VARCHAR, "
        "region VARCHAR, share DOUBLE, ci_low DOUBLE, ci_high DOUBLE, attribute VARCHAR, n "
        "BIGINT, n_subjects BIGINT, area DOUBLE, enrichment DOUBLE, enrichment_low DOUBLE, "
        "enrichment_high DOUBLE",
    ),
    Table(
        "verdicts",
        "Every check of the verdict: category, model, value judged, threshold, status (pass, "
        "fail, inconclusive, skipped) and details.",
        "run_id VARCHAR, model VARCHAR, check_name VARCHAR, threshold DOUBLE, value DOUBLE, "
        "passed BOOLEAN, details VARCHAR, status VARCHAR, category VARCHAR, judged_value "
        "DOUBLE",
    ),
    Table(
        "artifacts",
        "Files a run wrote (page, exports, dossier, manifest) with their SHA-256.",
        "run_id VARCHAR, kind VARCHAR, path VARCHAR, sha256 VARCHAR",
    ),
    Table(
        "run_stages",
        "Each stage of a run: start, end, rows written and a note.",
        "run_id VARCHAR, stage VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, "
        "rows_written BIGINT, note VARCHAR",
    ),
    Table(
        "accuracy",
        "Accuracy per model output overall and per group (MAE, mean error, Pearson r, within "
        "5 years; C-index) with subject-bootstrap CIs.",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, metric VARCHAR, attribute VARCHAR, "
        "group_name VARCHAR, n BIGINT, n_subjects BIGINT, value DOUBLE, ci_low DOUBLE, "
        "ci_high DOUBLE, status VARCHAR",
    ),
    Table(
        "prediction_cache",
        "Predictions by image SHA-256 and model key, reused by later runs on the same images.",
        "run_id VARCHAR, image_sha256 VARCHAR, model_key VARCHAR, perturbation VARCHAR, "
        "severity INTEGER, output VARCHAR, value DOUBLE, spread DOUBLE",
    ),
    Table(
        "embedding_cache",
        "Embeddings by image SHA-256 and model key, reused by later runs.",
        "run_id VARCHAR, image_sha256 VARCHAR, model_key VARCHAR, vector FLOAT[]",
    ),
    Table(
        "survival_subgroups",
        "Hazard ratios within each subgroup, with the adjustment used and a status.",
        "run_id VARCHAR, model VARCHAR, predictor VARCHAR, attribute VARCHAR, group_name "
        "VARCHAR, n BIGINT, events BIGINT, hr DOUBLE, hr_low DOUBLE, hr_high DOUBLE, p_value "
        "DOUBLE, adjustment VARCHAR, status VARCHAR, note VARCHAR",
    ),
    Table(
        "representativeness",
        "The cohort's shares against the intended-use population, with chi-square tests.",
        "run_id VARCHAR, attribute VARCHAR, group_name VARCHAR, n BIGINT, share DOUBLE, "
        "intended_share DOUBLE, ratio DOUBLE, chi2 DOUBLE, df INTEGER, p_value DOUBLE, status "
        "VARCHAR",
    ),
    Table(
        "comparisons",
        "Paired differences between two models on the same subjects, with CIs.",
        "run_id VARCHAR, output VARCHAR, metric VARCHAR, model_a VARCHAR, model_b VARCHAR, "
        "attribute VARCHAR, group_name VARCHAR, n BIGINT, value_a DOUBLE, value_b DOUBLE, "
        "diff DOUBLE, ci_low DOUBLE, ci_high DOUBLE, status VARCHAR",
    ),
    Table(
        "saliency_maps",
        "Mean attribution maps per model, output, method and group.",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, method VARCHAR, attribute VARCHAR, "
        "group_name VARCHAR, n BIGINT, height INTEGER, width INTEGER, map FLOAT[]",
    ),
    Table(
        "saliency_checks",
        "Saliency sanity checks (randomised weights) and comparisons between models or groups.",
        "run_id VARCHAR, check_name VARCHAR, model VARCHAR, output VARCHAR, method VARCHAR, "
        "other_model VARCHAR, other_output VARCHAR, value DOUBLE, ci_low DOUBLE, ci_high "
        "DOUBLE, threshold DOUBLE, passed BOOLEAN, n BIGINT, details VARCHAR",
    ),
    Table(
        "decision_curves",
        "Net benefit per score, horizon and threshold against treat-all, treat-none and "
        "chronological age, with CIs.",
        "run_id VARCHAR, model VARCHAR, model_id VARCHAR, strategy VARCHAR, horizon DOUBLE, "
        "threshold DOUBLE, n BIGINT, events BIGINT, positive_rate DOUBLE, net_benefit DOUBLE, "
        "ci_low DOUBLE, ci_high DOUBLE, diff_treat_all DOUBLE, diff_treat_all_low DOUBLE, "
        "diff_treat_all_high DOUBLE, diff_age DOUBLE, diff_age_low DOUBLE, diff_age_high "
        "DOUBLE, interventions_avoided DOUBLE, compared_to VARCHAR, diff_compared DOUBLE, "
        "diff_compared_low DOUBLE, diff_compared_high DOUBLE",
    ),
    Table(
        "decision_subgroups",
        "Net benefit of each score's decision rule within subgroups, with max-t bands.",
        "run_id VARCHAR, model VARCHAR, model_id VARCHAR, attribute VARCHAR, group_name "
        "VARCHAR, horizon DOUBLE, threshold DOUBLE, n BIGINT, events BIGINT, positive_rate "
        "DOUBLE, net_benefit DOUBLE, treat_all DOUBLE, gain DOUBLE, gain_low DOUBLE, "
        "gain_high DOUBLE, band_low DOUBLE, band_high DOUBLE, overall_useful BOOLEAN, status "
        "VARCHAR",
    ),
    Table(
        "cohort_summary",
        "Cohort-level statistics a page shows (median follow-up by reverse Kaplan-Meier), "
        "computed by the validate stage.",
        "run_id VARCHAR, statistic VARCHAR, value DOUBLE, method VARCHAR",
    ),
    Table(
        "figures",
        "Figures a stage drew from things no table holds (the perturbation examples on a "
        "synthetic face), as data URIs.",
        "run_id VARCHAR, figure VARCHAR, uri VARCHAR, alt VARCHAR",
    ),
    Table(
        "combined_sites",
        "A combined audit's site bundles: the label each site chose, the bundle's SHA-256 and "
        "signing key, the run it came from, its composition, and whether it was pooled (with "
        "the problems found when not).",
        "run_id VARCHAR, site VARCHAR, bundle_file VARCHAR, bundle_sha256 VARCHAR, public_key "
        "VARCHAR, source_run VARCHAR, source_flow VARCHAR, synthetic BOOLEAN, subjects BIGINT, "
        "config_sha256 VARCHAR, code_version VARCHAR, composition JSON, status VARCHAR, "
        "problems VARCHAR",
    ),
    Table(
        "combined_models",
        "Each site's digests of each model it audited, and whether they are those most sites "
        "audited (a site that audited another checkpoint or spec is not pooled for it).",
        "run_id VARCHAR, model VARCHAR, site VARCHAR, kind VARCHAR, checkpoint_sha256 VARCHAR, "
        "spec_sha256 VARCHAR, status VARCHAR",
    ),
    Table(
        "combined_estimates",
        "Each site's estimate of each pooled quantity (a subgroup difference computed from "
        "its group values) with its weight in the pool, studentized deleted residual, and "
        "whether it lies outside what the other sites predict; or why it was not pooled.",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, quantity VARCHAR, attribute VARCHAR, "
        "group_name VARCHAR, reference_group VARCHAR, horizon DOUBLE, scale VARCHAR, site "
        "VARCHAR, n BIGINT, events BIGINT, estimate DOUBLE, se DOUBLE, ci_low DOUBLE, ci_high "
        "DOUBLE, weight DOUBLE, deleted_residual DOUBLE, flagged BOOLEAN, outside_prediction "
        "BOOLEAN, status VARCHAR",
    ),
    Table(
        "combined_pooled",
        "Each quantity pooled across sites: fixed effect, random effects (tau^2 by REML or "
        "DerSimonian-Laird, Hartung-Knapp CI), Q, I^2, H^2, the prediction interval for a new "
        "site, the sites flagged; subgroup differences with their Bonferroni band, tolerance "
        "and status.",
        "run_id VARCHAR, model VARCHAR, output VARCHAR, quantity VARCHAR, attribute VARCHAR, "
        "group_name VARCHAR, reference_group VARCHAR, horizon DOUBLE, scale VARCHAR, pooling "
        "VARCHAR, k INTEGER, k_withheld INTEGER, n BIGINT, events BIGINT, method VARCHAR, "
        "fixed DOUBLE, fixed_low DOUBLE, fixed_high DOUBLE, estimate DOUBLE, se DOUBLE, ci_low "
        "DOUBLE, ci_high DOUBLE, ci_method VARCHAR, tau2 DOUBLE, q DOUBLE, q_p DOUBLE, i2 "
        "DOUBLE, h2 DOUBLE, pred_low DOUBLE, pred_high DOUBLE, band_low DOUBLE, band_high "
        "DOUBLE, tolerance DOUBLE, flagged_sites VARCHAR, status VARCHAR, note VARCHAR",
    ),
)

_BY_NAME = {t.name: t for t in TABLES}
# Tables keyed by run_id that stages write; `runs` and `run_stages` are the store's own.
RESULT_TABLES = [t.name for t in TABLES if t.name not in ("runs", "run_stages")]
# Steps that are not additive, by the version they bring a file to (none so far).
STEPS: dict[int, list[str]] = {}


def table(name: str) -> Table:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}") from None


def columns(name: str, run_id: bool = False) -> list[str]:
    """The columns of table ``name`` in order (without ``run_id`` unless asked)."""
    return [c for c, _ in table(name).columns if run_id or c != "run_id"]


def reconcile(con) -> list[str]:
    """Create the missing tables and append the missing columns; return the statements run.
    Runs inside the caller's transaction."""
    present: dict[str, list[str]] = {}
    for tname, cname in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall():
        present.setdefault(tname, []).append(cname)
    statements = []
    for t in TABLES:
        if t.name not in present:
            statements.append(t.ddl())
            continue
        for cname, kind in t.columns:
            if cname not in present[t.name]:
                statements.append(f"ALTER TABLE {t.name} ADD COLUMN {cname} {kind}")
    for sql in statements:
        con.execute(sql)
    return statements


def markdown_reference() -> str:
    """The database reference page: one section per table, its columns and types."""
    lines = [
        "# Database reference",
        "",
        f"Every run writes one DuckDB file, `audit.duckdb`, schema version {SCHEMA_VERSION}. "
        "Every result table has a `run_id` column; read a run's rows with "
        "`SELECT * FROM <table> WHERE run_id = ?`, or `audit.open_run(db, run_id)` in "
        "Python. This page is generated from `audit.pipeline.schema` "
        "(`python -m audit.pipeline.schema > docs/database.md`).",
        "",
    ]
    for t in TABLES:
        lines += [f"## `{t.name}`", "", t.doc, "", "| column | type |", "|---|---|"]
        lines += [f"| `{c}` | {k} |" for c, k in t.columns]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_reference(), end="")
