"""Render the static report site from DuckDB alone.

``runs/<run_id>/index.html`` and ``verdict.json`` per run, ``index.html`` over runs. Pages
are self-contained (inline CSS and PNG plots, no scripts, no CDN) and show no photos and
no raw ids unless asked (:mod:`audit.data.privacy`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from audit.data.exclusions import exclusions_by_group
from audit.data.hashing import sha256_file
from audit.data.privacy import id_scrubber, pseudonym
from audit.metrics.slices import (
    DECLARED,
    FINDING,
    NOT_CONFIRMED,
    REFINES,
    conditions_of,
    judged,
)
from audit.pipeline.combine import FLOW as COMBINE_FLOW
from audit.pipeline.config import FairnessConfig, SlicesConfig, Thresholds
from audit.pipeline.store import Store
from audit.report import onsite, plots
from audit.report.card import model_cards
from audit.report.combined import COMBINED_TABLES, combined_context
from audit.report.decisions import decision_view, nested_view, subgroup_view
from audit.report.exports import export_frames, write_exports
from audit.report.records import records as _records
from audit.report.regulatory import combined_outputs, run_outputs
from audit.report.tripod import checklist
from audit.saliency.maps import REGIONS

TEMPLATES = Path(__file__).parent / "templates"
SECTIONS = ["verdict", "validation", "composition", "accuracy", "survival", "trail"]


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = _num
    env.filters["fixed"] = _fixed
    env.filters["pval"] = _pval
    return env


def _missing(value) -> bool:
    """None, NaN or infinite: printed as a dash."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _num(value, digits: int = 3) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    v = float(value)
    if v.is_integer() and abs(v) < 1e9:  # 40, not 40.000: an age, a count, a threshold
        return f"{int(v):,}"
    if 0.01 <= abs(v) < 1e4:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"


def _fixed(value, digits: int = 3) -> str:
    """A fixed number of decimals (net benefit: ``0.002``, not ``0.00196``), "–" for none."""
    if _missing(value):
        return "–"
    text = f"{float(value):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def _pval(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with (
        os.fdopen(fd, "wb") if isinstance(data, bytes) else os.fdopen(fd, "w", encoding="utf-8")
    ) as fh:
        fh.write(data)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600: pages are for reading, as any file here
    os.replace(tmp, path)


def _file_mode() -> int:
    """0666 less the process's umask: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


RUN_TABLES = (
    "cohort_rows",
    "validation_results",
    "quarantine",
    "predictions",
    "accuracy",
    "survival_models",
    "survival_terms",
    "survival_tests",
    "survival_metrics",
    "survival_curves",
    "verdicts",
    "run_stages",
    "robustness",
    "paired",
    "paired_pairs",
    "slices",
    "fairness",
    "survival_subgroups",
    "representativeness",
    "face_pipeline",
    "comparisons",
    "drift",
    "estimated_performance",
    "drift_case_mix",
    "artifacts",
    "saliency",
    "saliency_maps",
    "saliency_checks",
    "decision_curves",
    "decision_subgroups",
    "cohort_summary",
    "figures",
)


def run_tables(store: Store, run_id: str) -> dict[str, pd.DataFrame]:
    """The run's rows of every table its pages show."""
    return {name: store.table(name, run_id) for name in RUN_TABLES}


def _face_pipeline_view(table: pd.DataFrame) -> dict | None:
    """The face-pipeline audit for the page: the overall rates, then every group row
    (flagged ones first), or None for a cohort of face crops."""
    if table is None or not len(table):
        return None
    overall = table[table["attribute"] == "all"]
    groups = table[table["attribute"] != "all"].assign(
        _order=lambda d: (d["status"] != "flagged").astype(int)
    )
    groups = groups.sort_values(["_order", "metric", "attribute"], kind="stable")
    return {
        "detector": table["detector"].iloc[0],
        "overall": _records(overall),
        "rows": _records(groups.drop(columns="_order")),
        "flagged": int((table["status"] == "flagged").sum()),
        "tolerance": overall["tolerance"].dropna().iloc[0]
        if overall["tolerance"].notna().any()
        else None,
    }


def run_context(
    store: Store,
    run_id: str,
    show_ids: bool = False,
    final_verdict: str | None = None,
    show_faces: bool = False,
    tables: dict[str, pd.DataFrame] | None = None,
) -> dict:
    """Everything the run page shows, read from the store."""
    run = store.run(run_id)
    if final_verdict is not None:
        run["verdict"] = final_verdict
        run["status"] = "finished"
    t = tables if tables is not None else run_tables(store, run_id)
    models = json.loads(run["models"] or "[]")
    rows = t["cohort_rows"]
    included = rows[rows["included"]]
    # replaces the run's photo and subject ids in free text by their pseudonyms
    scrub = id_scrubber(
        pd.concat([rows["photo_id"], rows["subject_id"], t["quarantine"]["photo_id"]]).unique(),
        show_ids,
    )
    # a paired study's compared photos are analysed on their own (the paired section)
    paired_only = (
        included["paired_only"].fillna(False).astype(bool)
        if "paired_only" in included.columns  # a file written before schema 16
        else pd.Series(False, index=included.index)
    )
    cohort = _cohort_view(included[~paired_only], t["cohort_summary"])
    validation, q = _validation_view(t, scrub, show_ids, run.get("cohort_path"))
    stages = t["run_stages"].assign(note=t["run_stages"]["note"].map(scrub))
    stage_notes = {r["stage"]: r["note"] for r in _records(stages) if r["note"]}
    model_sections = [_model_section(m["name"], m, t, included) for m in models]
    config = json.loads(run["config"] or "{}")
    incremental = _incremental_view(t)
    exclusions = exclusions_by_group(rows)
    return {
        "incremental": incremental,
        **_analysis_views(t, config),
        **(
            _onsite_views(store, run_id, run, models, t, config, show_ids)
            if show_faces
            else {"saliency_faces": None, "moved_most": None}
        ),
        "representativeness": _records(t["representativeness"]),
        "n_paired_only": int(paired_only.sum()),
        "face_pipeline": _face_pipeline_view(t["face_pipeline"]),
        "exclusions": exclusions,
        "evaluation_sites": cohort["sites"],
        "run": run,
        "models": models,
        "sections": model_sections,
        "verdicts": _records(t["verdicts"]),
        "validation": validation,
        "quarantine": _records(q.head(200)),
        "n_quarantine": len(q),
        "n_rows": len(rows),
        "n_included": len(included),
        "composition": cohort["composition"],
        "age": cohort["age"],
        "outcomes": cohort["outcomes"],
        # The page is written by the publish stage, so it lists the stages before it; that
        # keeps a re-rendered page byte-identical to the one recorded in `artifacts`.
        "stages": _records(stages[stages["stage"] != "publish"]),
        "stage_notes": stage_notes,
        "environment": json.loads(run["environment"] or "{}"),
        "config": config,
        "show_ids": show_ids,
        "scrub": scrub,  # for the CSV exports of the same render
    }


def _analysis_views(t: dict, config: dict) -> dict:
    """The drift, robustness, saliency and fairness sections, from their stored tables."""
    return {
        "drift": _drift_view(t["drift"], t["artifacts"], config.get("drift") or {}),
        "estimate": _estimate_view(t["estimated_performance"]),
        "case_mix": _records(_case_mix_order(t["drift_case_mix"])),
        "robustness": _robustness_view(
            t["robustness"], config.get("robustness") or {}, t["figures"]
        ),
        "paired": _paired_view(
            t["paired"], t["paired_pairs"], t["robustness"], config.get("paired") or {}
        ),
        "saliency": _saliency_view(t["saliency"], t["saliency_maps"], t["saliency_checks"]),
        "slices": _slices_view(t["slices"], config, t["figures"]),
        "fairness": _fairness_view(
            t["fairness"],
            t["survival_subgroups"],
            t["comparisons"],
            config.get("fairness") or {},
            t["decision_subgroups"],
        ),
    }


def _onsite_views(store, run_id, run, models, t: dict, config: dict, show_ids: bool) -> dict:
    """What only ``--show-faces`` shows, computed on site (:mod:`audit.report.onsite`): the
    faces under their saliency maps and the photos the perturbations moved most."""
    faces = (
        onsite.saliency_faces(
            run, models, t["cohort_rows"], t["saliency"], config.get("saliency") or {}, show_ids
        )
        if len(t["saliency"])
        else None
    )
    moved = (
        onsite.moved_most(
            store,
            run_id,
            run,
            t["robustness"],
            t["predictions"],
            config.get("robustness") or {},
            show_ids,
            models=models,
        )
        if len(t["robustness"])
        else None
    )
    return {"saliency_faces": faces, "moved_most": moved}


def _cohort_view(included: pd.DataFrame, summary: pd.DataFrame) -> dict:
    """Who was audited: composition by attribute, evaluation sites, ages and outcomes."""
    composition = []
    for attribute in ["sex", "race", "cancer_type", "site"]:
        if attribute in included and included[attribute].notna().any():
            counts = included[attribute].fillna("(missing)").value_counts()
            composition.append(
                {
                    "attribute": attribute,
                    "groups": [
                        {"name": k, "n": int(v), "share": v / len(included)}
                        for k, v in counts.items()
                    ],
                }
            )
    ages = included["age"].dropna()
    age_summary = (
        {"mean": ages.mean(), "sd": ages.std(), "min": ages.min(), "max": ages.max()}
        if len(ages)
        else None
    )
    outcomes = None
    if included["event"].notna().any():
        subjects = included.drop_duplicates("subject_id")
        outcomes = {
            "subjects": len(subjects),
            "events": int(subjects["event"].sum()),
            "median_followup": _stored(
                summary, "median_followup_years", lambda: onsite.median_followup(subjects)
            ),
        }
    return {
        "composition": composition,
        "sites": sorted(str(v) for v in included["site"].dropna().unique()),
        "age": age_summary,
        "outcomes": outcomes,
    }


def _validation_view(
    t: dict, scrub, show_ids: bool, cohort_path: str | None = None
) -> tuple[list[dict], pd.DataFrame]:
    """The data checks with their examples (ids pseudonymised), and the quarantine: files by
    name (pseudonymised), or with ``show_ids`` by their path in the cohort folder."""
    validation = []
    for r in _records(t["validation_results"]):
        details = json.loads(r["details"] or "{}")
        examples = details.get("examples") or []
        if r["column_name"] in ("photo_id", "subject_id"):
            examples = [pseudonym(str(v), show_ids) for v in examples]
        else:  # image paths and free text quote ids too; measured values rounded
            examples = [_num(v) if isinstance(v, float) else scrub(str(v)) for v in examples]
        r.update(
            rule=details.get("rule") or details.get("skipped") or "",
            examples=", ".join(str(v) for v in examples[:5]),
            rows=", ".join(str(v) for v in list(details.get("rows") or [])[:10])
            if isinstance(details.get("rows"), list)
            else "",
        )
        validation.append(r)
    q = t["quarantine"].copy()
    if len(q):
        q["photo_id"] = q["photo_id"].map(lambda v: pseudonym(v, show_ids))
        q["reason"] = q["reason"].map(scrub)
        q["source_file"] = q["source_file"].map(
            lambda v: (_in_cohort(v, cohort_path) if show_ids else scrub(Path(v).name)) if v else v
        )
    return validation, q


def _in_cohort(path: str, cohort_path: str | None) -> str:
    """``path`` relative to the cohort folder when it lies inside it, as given otherwise."""
    if cohort_path:
        try:
            return Path(path).resolve().relative_to(Path(cohort_path).resolve()).as_posix()
        except (ValueError, OSError):
            pass
    return str(path)


def _model_section(name: str, m: dict, t: dict, included: pd.DataFrame) -> dict:
    """One model's section: accuracy with its plots, then its survival analyses."""
    acc = t["accuracy"][t["accuracy"]["model"] == name]
    section = {
        "name": name,
        "kind": m.get("kind"),
        "outputs": m.get("outputs", []),
        "overall": _records(acc[acc["attribute"] == "all"]),
        "groups": _records(acc[acc["attribute"] != "all"]),
        "plots": _accuracy_plots(name, acc, t["predictions"], included),
    }
    section.update(_survival_view(name, t))
    return section


def _accuracy_plots(
    name: str, acc: pd.DataFrame, preds: pd.DataFrame, included: pd.DataFrame
) -> list[dict]:
    """FaceAge against age (a scatter) and the MAE by subgroup (a forest plot)."""
    out = []
    p = preds[
        (preds["model"] == name)
        & (preds["output"] == "faceage")
        & (preds["perturbation"] == "none")
    ]
    if len(p) and len(included):
        joined = p.merge(included[["photo_id", "age"]], on="photo_id").dropna()
        if len(joined) > 1:
            out.append(
                {
                    "uri": plots.to_uri(
                        plots.faceage_scatter(
                            joined["age"].to_numpy(),
                            joined["value"].to_numpy(),
                            f"{name}: FaceAge against chronological age",
                        )
                    ),
                    "alt": "Scatter plot of FaceAge against chronological age for "
                    f"{len(joined)} photos, with the identity line and a linear fit.",
                }
            )
    mae = acc[(acc["metric"] == "mae") & (acc["attribute"] != "all")]
    if len(mae):
        lab = mae.assign(label=mae["attribute"] + ": " + mae["group_name"].astype(str))
        overall = acc[(acc["metric"] == "mae") & (acc["attribute"] == "all")]["value"].iloc[0]
        out.append(
            {
                "uri": plots.to_uri(
                    plots.forest_plot(
                        lab,
                        "label",
                        f"{name}: FaceAge MAE by subgroup",
                        "mean absolute error (years), 95% CI",
                        ref=float(overall),
                    )
                ),
                "alt": "Forest plot of FaceAge mean absolute error with 95% confidence "
                "intervals by subgroup; the dashed line is the overall MAE.",
            }
        )
    return out


def _survival_view(name: str, t: dict) -> dict:
    """A model's Cox models and tests, hazard-ratio and calibration plots, decision curves
    and Kaplan-Meier curves with numbers at risk."""
    sm = t["survival_models"][t["survival_models"]["model"] == name]
    st = t["survival_terms"][t["survival_terms"]["model"] == name]
    curves = t["survival_curves"][t["survival_curves"]["model"] == name]
    return {
        "cox": [dict(r, terms=_records(st[st["model_id"] == r["model_id"]])) for r in _records(sm)],
        "tests": _records(t["survival_tests"][t["survival_tests"]["model"] == name]),
        "cindex": _records(t["survival_metrics"][t["survival_metrics"]["model"] == name]),
        "hr_plot": _hr_plot(name, st),
        "calibration": _calibration_view(name, curves),
        "decisions": decision_view(t["decision_curves"], name),
        "km": _km_views(name, curves),
    }


def _hr_plot(name: str, st: pd.DataFrame) -> dict | None:
    hr = st[
        ((st["model_id"].str.startswith("faceage_per_decade__")) & (st["term"] == "faceage_decade"))
        | ((st["model_id"].str.startswith("risk_quartiles__")) & (st["term"] == "risk[Q4]"))
        | ((st["model_id"].str.startswith("risk_per_sd__")) & (st["term"] == "risk_sd"))
    ]
    if not len(hr):
        return None
    lab = pd.DataFrame(
        {
            "label": hr["model_id"].str.replace("__", ": ") + " (" + hr["term"] + ")",
            "value": hr["hr"],
            "ci_low": hr["hr_low"],
            "ci_high": hr["hr_high"],
        }
    )
    return {
        "uri": plots.to_uri(
            plots.forest_plot(
                lab,
                "label",
                f"{name}: hazard ratios by adjustment",
                "hazard ratio (95% CI, log scale)",
                ref=1.0,
                log=True,
            )
        ),
        "alt": "Forest plot of the hazard ratio of FaceAge per decade, the risk score per "
        "SD and its top quartile against the bottom, unadjusted and adjusted.",
    }


CALIBRATION_COLUMNS = [
    "curve", "group_name", "at_risk", "predicted", "survival", "survival_low", "survival_high",
    "time",
]  # fmt: skip


def _calibration_view(name: str, curves: pd.DataFrame) -> dict | None:
    cal = curves[curves["curve"].str.startswith("calibration:")]
    if not len(cal):
        return None
    return {
        "rows": _records(cal[CALIBRATION_COLUMNS]),
        "uri": plots.to_uri(
            plots.calibration_plot(cal, f"{name}: calibration at {cal['time'].iloc[0]:g} years")
        ),
        "alt": "Observed Kaplan-Meier survival (95% CI) against the mean cross-fitted "
        "predicted survival in each decile of predicted risk; the dashed line is "
        "perfect calibration.",
    }


def _km_views(name: str, curves: pd.DataFrame) -> list[dict]:
    out = []
    km = curves[~curves["curve"].str.startswith("calibration:")]
    for curve, g in km.groupby("curve", sort=True):
        title = {"risk_quartile": "by risk quartile", "faceage_band": "by FaceAge band"}.get(
            curve, curve
        )
        out.append(
            {
                "title": title,
                "uri": plots.to_uri(plots.km_plot(g, f"{name}: Kaplan-Meier {title}")),
                "alt": f"Kaplan-Meier survival curves {title}; numbers at risk in the table below.",
                "at_risk": _at_risk_table(g),
            }
        )
    return out


def _incremental_view(t: dict) -> dict | None:
    """The nested models (clinical, + FaceAge, + risk): fits, tests, changes in C."""
    inc_models = t["survival_models"][
        t["survival_models"]["model_id"].str.startswith("incremental__")
    ]
    if not len(inc_models):
        return None
    label = inc_models["model"].iloc[0]
    tests = t["survival_tests"][
        (t["survival_tests"]["model"] == label)
        & t["survival_tests"]["test"].str.startswith("likelihood ratio")
    ]
    deltas = t["survival_metrics"][
        (t["survival_metrics"]["model"] == label) & (t["survival_metrics"]["metric"] == "delta_c")
    ]
    return {
        "label": label,
        "models": _records(inc_models),
        "tests": _records(tests),
        "deltas": _records(deltas),
        "decisions": nested_view(t["decision_curves"], label),
    }


def _map_grid(row) -> np.ndarray:
    """A stored map (a flat list) back to its height x width (x 3 for a colour face)."""
    values = np.asarray(row["map"], dtype=np.float64)
    h, w = int(row["height"]), int(row["width"])
    if values.size == h * w * 3:
        return values.reshape(h, w, 3)
    return values.reshape(h, w, -1).squeeze(-1)


def _saliency_view(shares: pd.DataFrame, maps: pd.DataFrame, checks: pd.DataFrame) -> dict | None:
    """The saliency section: per model and output, the cohort map of each method over the
    sample's average face, region shares with CIs, subgroup maps and shares; comparisons
    between models; the randomisation sanity checks."""
    if shares.empty:
        return None
    frames = {int(r["height"]): {} for r in _records(maps)}
    for r in _records(maps[maps["method"].isin(["mean_face", "region_template"])]):
        frames[int(r["height"])][r["method"]] = _map_grid(r)
    cohort = maps[maps["model"].notna()]
    blocks = []
    for (model, output), g in cohort.groupby(["model", "output"], sort=False):
        size = int(g["height"].iloc[0])
        template = frames.get(size, {}).get("region_template")
        if template is None:
            continue
        sh = shares[(shares["model"] == model) & (shares["output"] == output)]
        blocks.append(
            _saliency_block(
                model, output, g, sh, template.astype(int), frames[size].get("mean_face")
            )
        )
    compare = checks[checks["check_name"].str.startswith("compare_")] if len(checks) else checks
    sanity = (
        checks[checks["check_name"] == "randomized_weights_spearman"] if len(checks) else checks
    )
    return {"blocks": blocks, "compare": _records(compare), "sanity": _records(sanity)}


def _saliency_block(model, output, g: pd.DataFrame, sh: pd.DataFrame, template, face) -> dict:
    """One model output: cohort maps by method, region shares, subgroup maps."""
    overall = g[g["attribute"] == "all"]
    tiles = [(r["method"], _map_grid(r)) for r in _records(overall)]
    n = int(overall["n"].iloc[0]) if len(overall) else 0
    area = {reg: float((template == i).mean()) for i, reg in enumerate(REGIONS)}
    primary = "occlusion" if (g["method"] == "occlusion").any() else g["method"].iloc[0]
    sub = g[(g["attribute"] != "all") & (g["method"] == primary)]
    sub_tiles = [
        (f"{r['attribute']}: {r['group_name']} (n={r['n']})", _map_grid(r)) for r in _records(sub)
    ]
    return {
        "model": model,
        "output": output,
        "n": n,
        "primary": primary,
        "maps": {
            "uri": plots.to_uri(
                plots.saliency_grid(
                    face, template, tiles, f"{model}: {output}, cohort maps ({n} photos)"
                )
            ),
            "alt": f"Mean attribution maps of {model}'s {output} over {n} photos, one "
            "per method, over the average face of the sample; bright: where the "
            "output is most sensitive; blue lines: the face-region template.",
        },
        "bars": {
            "uri": plots.to_uri(
                plots.region_bars(
                    sh[sh["attribute"] == "all"], f"{model}: {output}, share by region", area
                )
            ),
            "alt": f"Share of {model}'s {output} attribution mass in each face region "
            "by method, with 95% bootstrap CIs; dotted: the region's share of "
            "the pixels.",
        },
        "subgroup_maps": (
            {
                "uri": plots.to_uri(
                    plots.saliency_grid(
                        face, template, sub_tiles, f"{model}: {output}, {primary} by subgroup"
                    )
                ),
                "alt": f"{primary} cohort maps of {model}'s {output} for each "
                "subgroup with enough photos.",
            }
            if sub_tiles
            else None
        ),
        "rows": _share_rows(sh),
        "regions": list(REGIONS),
        "area": area,
    }


def _share_rows(sh: pd.DataFrame) -> list[dict]:
    """Region shares (with CIs and enrichment) per method, attribute and group."""
    rows = []
    for (method, attribute, group), s_ in sh.groupby(
        ["method", "attribute", "group_name"], sort=False
    ):
        s_ = s_.set_index("region")
        rows.append(
            {
                "method": method,
                "attribute": attribute,
                "group": group,
                "n": int(s_["n"].iloc[0]),
                "cells": [
                    {
                        "share": s_.at[reg, "share"],
                        "lo": s_.at[reg, "ci_low"],
                        "hi": s_.at[reg, "ci_high"],
                        **_enrichment(s_, reg),
                    }
                    if reg in s_.index
                    else None
                    for reg in REGIONS
                ],
            }
        )
    return rows


DISTRIBUTION_EFFECTS = ("Wasserstein distance (normed)", "Jensen-Shannon distance")


def _drift_view(drift: pd.DataFrame, artifacts: pd.DataFrame, cfg: dict) -> dict | None:
    """The drift section: a chart of the distribution effects (on one scale: normed
    Wasserstein for numbers, Jensen-Shannon for categories) and every row as a table."""
    if drift.empty:
        return None
    dist = drift[drift["effect_method"].isin(DISTRIBUTION_EFFECTS)]
    chart = None
    if len(dist):
        floors = {
            DISTRIBUTION_EFFECTS[0]: cfg.get("min_effect_numeric"),
            DISTRIBUTION_EFFECTS[1]: cfg.get("min_effect_categorical"),
        }
        n_drifted = int(dist["drifted"].fillna(False).astype(bool).sum())
        chart = {
            "uri": plots.to_uri(
                plots.drift_chart(
                    dist, f"Distribution drift against run {drift['reference'].iloc[0]}", floors
                )
            ),
            "alt": f"Bar chart of the effect size of {len(dist)} metadata, image and "
            f"prediction features against the reference ({n_drifted} drifted, in "
            "red); orange ticks mark the effect a drift must reach. Embeddings and "
            "model quality are on other scales: see the table.",
        }
    return {
        "rows": _records(drift),
        "reference": drift["reference"].iloc[0],
        "chart": chart,
        "html": bool((artifacts["kind"] == "evidently_html").any()),
    }


def _fairness_view(
    fair: pd.DataFrame,
    subgroups: pd.DataFrame,
    comparisons: pd.DataFrame,
    cfg: dict,
    utility: pd.DataFrame,
) -> dict | None:
    """The fairness section: per model and output, forest plots of each verdict metric's
    difference to overall with its simultaneous band, the flagged rows, every row by
    attribute; subgroup hazard ratios; clinical utility by subgroup; paired model
    comparisons."""
    if fair.empty and subgroups.empty and comparisons.empty and utility.empty:
        return None
    verdict_metrics = cfg.get("verdict_metrics") or []
    blocks = [
        _fairness_block(model, output, g, verdict_metrics)
        for (model, output), g in fair.groupby(["model", "output"], sort=False)
    ]
    hr_plots = [
        _subgroup_hr_plot(model, predictor, g)
        for (model, predictor), g in subgroups.groupby(["model", "predictor"], sort=False)
        if (g["status"] == "ok").any()
    ]
    return {
        "blocks": blocks,
        "subgroups": hr_plots,
        "comparisons": _records(comparisons),
        "utility": subgroup_view(utility),
        "config": cfg,
    }


def _fairness_block(model: str, output: str, g: pd.DataFrame, verdict_metrics: list) -> dict:
    """One model output: a forest plot per verdict metric, the overall, flagged and
    by-attribute rows, and the error's curvature in age."""
    plots_ = [
        plot
        for metric in verdict_metrics
        if metric in set(g["metric"])
        for plot in [_difference_plot(model, metric, g)]
        if plot is not None
    ]
    by_attr = [
        {"attribute": a, "rows": _records(r)}
        for a, r in g[g["attribute"] != "all"].groupby("attribute", sort=False)
    ]
    bend = g[(g["metric"] == "error_age_curvature") & (g["attribute"] == "all")]
    return {
        "model": model,
        "output": output,
        "plots": plots_,
        "curvature": _records(bend)[0] if len(bend) else None,
        "overall": _records(g[g["attribute"] == "all"]),
        "flagged": _records(g[g["status"] == "flagged"]),
        "n_too_small": int((g["status"] == "too_small").sum()),
        "by_attribute": by_attr,
    }


def _difference_plot(model: str, metric: str, g: pd.DataFrame) -> dict | None:
    """Each single-attribute group's difference to overall with its simultaneous band."""
    rows = g[
        (g["metric"] == metric)
        & (g["attribute"] != "all")
        & (~g["attribute"].str.contains(" x "))
        & (g["status"] != "too_small")
    ]
    if rows.empty:
        return None
    lab = pd.DataFrame(
        {
            "label": rows["attribute"] + ": " + rows["group_name"].astype(str),
            "value": rows["diff_to_overall"],
            "ci_low": rows["diff_ci_low"],
            "ci_high": rows["diff_ci_high"],
        }
    )
    tol = rows["tolerance"].iloc[0]
    bounds = None if pd.isna(tol) else (-tol, tol)
    return {
        "uri": plots.to_uri(
            plots.forest_plot(
                lab,
                "label",
                f"{metric}: group minus overall",
                "difference to overall (simultaneous band)",
                ref=0.0,
                bounds=bounds,
            )
        ),
        "alt": f"{model}: forest plot of each subgroup's {metric} minus the "
        f"overall value with its simultaneous band; dotted lines: the "
        f"tolerance of {tol:g}.",
    }


def _subgroup_hr_plot(model: str, predictor: str, g: pd.DataFrame) -> dict:
    """A predictor's hazard ratio within each subgroup (the fitted ones) as a forest plot."""
    ok = g[g["status"] == "ok"]
    lab = pd.DataFrame(
        {
            "label": ok["attribute"] + ": " + ok["group_name"].astype(str),
            "value": ok["hr"],
            "ci_low": ok["hr_low"],
            "ci_high": ok["hr_high"],
        }
    )
    return {
        "model": model,
        "predictor": predictor,
        "rows": _records(g),
        "uri": plots.to_uri(
            plots.forest_plot(
                lab,
                "label",
                f"{model}: {predictor} HR within subgroups",
                "hazard ratio (95% CI, log scale)",
                ref=1.0,
                log=True,
            )
        ),
        "alt": f"Forest plot of the hazard ratio of {predictor} within each "
        "subgroup with its 95% CI; the line marks HR 1.",
    }


def _robustness_view(rob: pd.DataFrame, cfg: dict, figures: pd.DataFrame) -> dict | None:
    """The robustness section: per model and output a dose-response plot, the worst judged
    rows, and subgroup tables at the highest judged severity."""
    if rob.empty:
        return None
    judged_max = int(cfg.get("judged_max_severity", 3))
    blocks = [
        _robustness_block(model, output, g, cfg, judged_max)
        for (model, output), g in rob.groupby(["model", "output"], sort=False)
    ]
    return {
        "blocks": blocks,
        "judged_max": judged_max,
        "config": cfg,
        "examples": _figure(
            figures,
            "perturbation_examples",
            lambda: onsite.perturbation_examples(
                sorted(set(rob["perturbation"])), cfg.get("severities") or [1, 3, 5]
            ),
        ),
    }


def _robustness_block(model: str, output: str, g: pd.DataFrame, cfg: dict, judged_max: int):
    """One model output: its dose-response plot, worst rows, subgroup tables and gaps."""
    overall = g[g["attribute"] == "all"]
    unit = "years" if output == "faceage" else "SD of clean risk"
    tol = cfg.get("tolerance_years", 5.0) if output == "faceage" else cfg.get("tolerance_sd", 0.5)
    judged = overall[overall["severity"] <= judged_max]
    worst = judged.sort_values(["frac_over_tolerance", "mean_abs_shift"], ascending=False)
    levels = sorted(s for s in g["severity"].unique() if s <= judged_max)
    at = levels[-1] if levels else int(g["severity"].max())
    sub = g[(g["attribute"] != "all") & (g["severity"] == at)]
    subgroups, gaps = [], []
    for attribute, a in sub.groupby("attribute", sort=False):
        subgroups.append(_subgroup_table(attribute, a, at))
        gaps.extend(_subgroup_gaps(attribute, a, at, int(cfg.get("min_group_size", 20))))
    return {
        "model": model,
        "output": output,
        "unit": unit,
        "tolerance": tol,
        "plot": {
            "uri": plots.to_uri(
                plots.dose_response(
                    overall, f"{model}: {output} shift by severity", f"mean |shift| ({unit})", tol
                )
            ),
            "alt": f"Dose-response of {model}'s {output}: mean absolute shift against "
            "severity, one line per perturbation, one panel per family; the "
            "dashed line is the tolerance.",
        },
        "worst": _records(worst.head(10)),
        "subgroups": subgroups,
        # ranked by ratio, among shifts that matter (a fifth of the tolerance or more)
        "gaps": sorted(
            (gp for gp in gaps if gp["worst_value"] >= 0.2 * tol), key=lambda gp: -gp["ratio"]
        )[:5],
        "rows": _records(overall.sort_values(["family", "perturbation", "severity"])),
    }


def _paired_view(
    paired: pd.DataFrame, pairs: pd.DataFrame, rob: pd.DataFrame, cfg: dict
) -> dict | None:
    """The paired-study section: per model and output a Bland-Altman plot, the comparisons
    with CIs and equivalence, the same by subgroup, and the synthetic perturbation that
    mimics each condition beside it (when the robustness suite ran)."""
    if paired is None or paired.empty:
        return None
    blocks = []
    for (model, output), g in paired.groupby(["model", "output"], sort=False):
        overall = g[g["attribute"] == "all"]
        unit = "years" if output == "faceage" else "SD of reference risk"
        p = pairs[(pairs["model"] == model) & (pairs["output"] == output)]
        subgroups = [
            {"attribute": attribute, "rows": _records(a)}
            for attribute, a in g[g["attribute"] != "all"].groupby("attribute", sort=False)
        ]
        blocks.append(
            {
                "model": model,
                "output": output,
                "unit": unit,
                "plot": {
                    "uri": plots.to_uri(
                        plots.bland_altman(
                            p, overall, f"{model}: {output}, real repeated photos", unit
                        )
                    ),
                    "alt": f"Bland-Altman plots of {model}'s {output}, one panel per "
                    "comparison: each subject's difference between the two photos against "
                    "their mean; solid line the mean shift, dashed the 95% limits of "
                    "agreement, shaded their confidence intervals, dotted red the "
                    "equivalence margins.",
                },
                "rows": _records(overall),
                "subgroups": subgroups,
                "synthetic": _synthetic_beside_real(overall, rob, model, output, cfg),
            }
        )
    return {"blocks": blocks, "config": cfg}


CASE_MIX_ORDER = {"not explained": 0, "partly explained": 1, "explained by case mix": 2}


def _case_mix_order(table: pd.DataFrame | None) -> pd.DataFrame:
    """The case-mix rows of the features that drift (before or after reweighting): what
    the case mix does not explain first."""
    if table is None or table.empty:
        return pd.DataFrame()
    kept = table[table["status"] != "no drift"]
    return (
        kept.assign(_o=kept["status"].map(CASE_MIX_ORDER))
        .sort_values(["_o", "kind", "feature"], kind="stable")
        .drop(columns="_o")
    )


def _estimate_view(table: pd.DataFrame | None) -> dict | None:
    """Performance estimated without outcomes, per model: the overlap of the two cohorts
    (effective sample size, classifier AUC, or why it is too poor), and per measure the
    reference's value, the estimate with its CI and the range the realised value should fall
    in, the realised value and the gap once outcomes are known, and an earlier estimate."""
    if table is None or table.empty:
        return None
    blocks = []
    for model, g in table.groupby("model", sort=False):
        first = g.iloc[0]
        rows = g.assign(
            changed=(g["gap_low"] > 0) | (g["gap_high"] < 0),
            outside=(g["realised"] < g["pred_low"]) | (g["realised"] > g["pred_high"]),
        )
        blocks.append(
            {
                "model": model,
                "status": first["status"],
                "note": first["note"],
                "ess": first["ess"],
                "ess_deaths": first["ess_deaths"],
                "classifier_auc": first["classifier_auc"],
                "n_reference": int(first["n_reference"]),
                "n_current": int(first["n_current"]),
                "rows": _records(rows),
                "realised": bool(g["realised"].notna().any()),
                "earlier": bool(g["earlier_run"].notna().any()),
                "n_changed": int(rows["changed"].sum()),
            }
        )
    return {"blocks": blocks, "reference": table["reference"].iloc[0]}


STANDING_ORDER = {FINDING: 0, DECLARED: 1, REFINES: 2, NOT_CONFIRMED: 3}


def _slices_view(
    table: pd.DataFrame | None, config: dict, figures: pd.DataFrame | None = None
) -> dict | None:
    """The slice-discovery section: per model and output the confirmed slices (new findings
    first, then declared subgroups and narrowings), each with its confirmation-half effect,
    CI and Holm p, whether the verdict counts it, and an embedding cluster's description
    and average face (where the stage kept one); the slices tested but not confirmed folded
    away."""
    if table is None or table.empty:
        return None
    faces = (
        figures.set_index("figure")["uri"].to_dict() if figures is not None and len(figures) else {}
    )
    t = Thresholds(**(config.get("thresholds") or {}))
    declared = FairnessConfig(**(config.get("fairness") or {})).declared_groups()
    rows = judged(table, declared, t.slices_judged, t.slices_health_features)
    rows = rows.assign(
        face=[
            next(
                (
                    faces.get(f"slice_cluster_face:{m}:{v}")
                    for f, v in conds
                    if f == "embedding_cluster"
                ),
                None,
            )
            for m, conds in zip(rows["model"], conditions_of(rows))
        ],
        _order=rows["standing"].map(STANDING_ORDER),
        counted=rows["judged"] & (rows["standing"] == FINDING),
    ).sort_values(["model", "output", "_order", "loss", "rank"], kind="stable")
    blocks = []
    for (model, output), g in rows.groupby(["model", "output"], sort=False):
        confirmed = g[g["standing"] != NOT_CONFIRMED]
        blocks.append(
            {
                "model": model,
                "output": output,
                "confirmed": _records(confirmed.drop(columns="_order")),
                "tested": _records(g[g["standing"] == NOT_CONFIRMED].drop(columns="_order")),
                "n_counted": int(g["counted"].sum()),
                "losses": list(dict.fromkeys(g["loss"])),
            }
        )
    cfg = SlicesConfig(**(config.get("slices") or {}))
    return {
        "blocks": blocks,
        "config": cfg.model_dump(),
        "judged": t.slices_judged,
        "health": t.slices_health_features,
        "allowed": t.slices_confirmed_max,
    }


def _synthetic_beside_real(
    overall: pd.DataFrame, rob: pd.DataFrame, model: str, output: str, cfg: dict
) -> list[dict]:
    """For each comparison whose condition has a synthetic counterpart (``[paired]
    synthetic``: a robustness family or perturbation name), the suite's mean shifts of that
    counterpart by severity, the level nearest the real shift, and whether the real shift's
    CI meets the range the suite spans (0, the clean photo, to its extremes): when it does
    not, the synthetic suite does not reproduce what the real condition does."""
    mapping = cfg.get("synthetic") or {}
    if rob is None or rob.empty:
        return []
    mine = rob[(rob["model"] == model) & (rob["output"] == output) & (rob["attribute"] == "all")]
    out = []
    for r in overall.itertuples():
        name = mapping.get(r.condition)
        if not name:
            continue
        syn = mine[(mine["family"] == name) | (mine["perturbation"] == name)]
        if syn.empty:
            continue
        levels = [
            {
                "severity": int(sev),
                "low": float(h["mean_shift"].min()),
                "high": float(h["mean_shift"].max()),
            }
            for sev, h in syn.groupby("severity")
        ]
        nearest = syn.iloc[int(np.argmin(np.abs(syn["mean_shift"].to_numpy() - r.mean_shift)))]
        low, high = (
            min(0.0, float(syn["mean_shift"].min())),
            max(0.0, float(syn["mean_shift"].max())),
        )
        out.append(
            {
                "comparison": r.comparison,
                "synthetic": name,
                "real": r.mean_shift,
                "real_low": r.mean_shift_low,
                "real_high": r.mean_shift_high,
                "levels": levels,
                "nearest": f"{nearest['perturbation']} at severity {int(nearest['severity'])}",
                "nearest_shift": float(nearest["mean_shift"]),
                "range": [low, high],
                "outside": bool(r.mean_shift_low > high or r.mean_shift_high < low),
            }
        )
    return out


def _subgroup_table(attribute: str, a: pd.DataFrame, at) -> dict:
    """Mean shift per perturbation (rows) and group (columns) of one attribute."""
    names = list(dict.fromkeys(a["group_name"]))
    sizes = a.groupby("group_name", sort=False)["n"].max()
    table = []
    for pert, r in a.groupby("perturbation", sort=False):
        r = r.set_index("group_name")
        cells = [
            {
                "value": r.at[nm, "mean_abs_shift"] if nm in r.index else None,
                "frac": r.at[nm, "frac_over_tolerance"] if nm in r.index else None,
                "passed": (
                    None
                    if nm not in r.index or pd.isna(r.at[nm, "passed"])
                    else bool(r.at[nm, "passed"])
                ),
            }
            for nm in names
        ]
        vals = [c["value"] for c in cells if c["value"] is not None]
        table.append(
            {
                "perturbation": pert,
                "cells": cells,
                "spread": (max(vals) - min(vals)) if vals else None,
            }
        )
    return {
        "attribute": attribute,
        "severity": int(at),
        "groups": [{"name": nm, "n": int(sizes[nm])} for nm in names],
        "rows": table,
    }


def _subgroup_gaps(attribute: str, a: pd.DataFrame, at, min_n: int) -> list[dict]:
    """For each perturbation, the group it moves most against the one it moves least
    (groups of at least ``min_n``)."""
    gaps = []
    for pert, r in a[a["n"] >= min_n].groupby("perturbation", sort=False):
        if len(r) > 1:
            hi, lo = r.loc[r["mean_abs_shift"].idxmax()], r.loc[r["mean_abs_shift"].idxmin()]
            gaps.append(
                {
                    "perturbation": pert,
                    "attribute": attribute,
                    "severity": int(at),
                    "description": hi["description"],
                    "worst": hi["group_name"],
                    "worst_value": hi["mean_abs_shift"],
                    "best": lo["group_name"],
                    "best_value": lo["mean_abs_shift"],
                    "ratio": hi["mean_abs_shift"] / max(lo["mean_abs_shift"], 1e-9),
                }
            )
    return gaps


def _enrichment(shares: pd.DataFrame, region: str) -> dict:
    """A region's enrichment and its CI from a saliency frame indexed by region (None for
    rows written before schema 13)."""
    out = {}
    for key in ("enrichment", "enrichment_low", "enrichment_high"):
        v = shares.at[region, key] if key in shares.columns else None
        out[key] = None if v is None or pd.isna(v) else float(v)
    return out


def _stored(summary: pd.DataFrame, statistic: str, legacy):
    """A cohort statistic the validate stage stored; ``legacy()`` for a run from before
    schema 14, which did not store it."""
    rows = summary[summary["statistic"] == statistic] if len(summary) else summary
    return float(rows["value"].iloc[0]) if len(rows) else legacy()


def _figure(figures: pd.DataFrame, name: str, legacy) -> dict | None:
    """A figure a stage stored (``{"uri", "alt"}``); ``legacy()`` for a run from before
    schema 14."""
    rows = figures[figures["figure"] == name] if len(figures) else figures
    if len(rows):
        return {"uri": rows["uri"].iloc[0], "alt": rows["alt"].iloc[0]}
    return legacy()


def _at_risk_table(curves: pd.DataFrame, times=(0, 1, 2, 3, 4, 5)) -> dict:
    """Numbers at risk per group at whole years (the rows under a KM plot)."""
    out = {"times": list(times), "groups": []}
    for name, g in curves.groupby("group_name", sort=False):
        g = g.sort_values("time")
        counts = []
        for t in times:
            later = g[g["time"] >= t]
            counts.append(int(later["at_risk"].iloc[0]) if len(later) else 0)
        out["groups"].append({"name": name, "counts": counts})
    return out


def render_run(
    store: Store,
    run_id: str,
    out_dir: str | Path,
    *,
    show_ids: bool = False,
    final_verdict: str | None = None,
    show_faces: bool = False,
) -> pd.DataFrame:
    """Write the run's page and its dossier; return the artifact rows (kind, path, sha256).

    ``runs/<run_id>/``: ``index.html`` (the report), ``verdict.json``, ``model_card.html``
    and ``.json``, ``tripod_ai.html`` and ``.json``, and ``data/<table>.csv``. The signed
    ``manifest.json`` is written after them by the publish stage.

    ``show_faces``: add the cohort photos that moved most under each model's worst judged
    perturbation (read from the cohort folder the run audited), clean and perturbed."""
    out_dir = Path(out_dir)
    if store.run(run_id)["flow"] == COMBINE_FLOW:
        return render_combined(store, run_id, out_dir, final_verdict=final_verdict)
    tables = run_tables(store, run_id)
    ctx = run_context(
        store,
        run_id,
        show_ids=show_ids,
        final_verdict=final_verdict,
        show_faces=show_faces,
        tables=tables,
    )
    frames = export_frames(tables, ctx["scrub"])
    ctx["exports"] = list(frames)
    run_dir = out_dir / "runs" / run_id
    env = _env()
    _write_atomic(run_dir / "index.html", env.get_template("run.html").render(**ctx))
    _write_atomic(run_dir / "verdict.json", _json(_verdict_document(run_id, ctx)))
    written = [("report_html", "index.html"), ("verdict_json", "verdict.json")]
    if ctx["models"]:  # a validation run audits data, not a model: no card, no TRIPOD map
        written += _write_dossier_pages(run_id, ctx, tables, run_dir, env)
    csvs = write_exports(frames, run_dir, write=_write_atomic)
    pngs = _write_saliency_pngs(ctx["saliency"], run_dir)
    files = (
        [(kind, run_dir / name) for kind, name in written]
        + [("csv_export", p) for p in csvs]
        + [("saliency_png", p) for p in pngs]
    )
    return pd.DataFrame(
        [
            {"kind": kind, "path": str(path.relative_to(out_dir)), "sha256": sha256_file(path)}
            for kind, path in files
        ]
    )


def render_combined(
    store: Store, run_id: str, out_dir: str | Path, final_verdict: str | None = None
) -> pd.DataFrame:
    """Write a combined audit's page, ``verdict.json`` and CSV exports under
    ``runs/<run_id>/``; return the artifact rows."""
    out_dir = Path(out_dir)
    tables = {name: store.table(name, run_id) for name in (*COMBINED_TABLES, "verdicts")}
    ctx = combined_context(store, run_id, tables, final_verdict=final_verdict)
    frames = export_frames(tables, lambda v: v)  # aggregates only: no id to scrub
    ctx["exports"] = list(frames)
    run_dir = out_dir / "runs" / run_id
    _write_atomic(run_dir / "index.html", _env().get_template("combined.html").render(**ctx))
    _write_atomic(run_dir / "verdict.json", _json(_verdict_document(run_id, ctx)))
    files = [("report_html", run_dir / "index.html"), ("verdict_json", run_dir / "verdict.json")]
    for name, doc in combined_outputs(ctx["run"], ctx["models"], tables, ctx["tripod"]).items():
        _write_atomic(run_dir / name, _json(doc))
        files.append((REGULATORY_KIND[name.split("/")[0]], run_dir / name))
    files += [("csv_export", p) for p in write_exports(frames, run_dir, write=_write_atomic)]
    return pd.DataFrame(
        [
            {"kind": kind, "path": str(path.relative_to(out_dir)), "sha256": sha256_file(path)}
            for kind, path in files
        ]
    )


REGULATORY_KIND = {
    "chai": "chai_model_card_json",
    "eu_ai_act_accuracy.json": "eu_ai_act_accuracy_json",
    "tripod_ai.json": "tripod_ai_json",
}


VERDICT_CHECK_KEYS = (
    "model", "check_name", "category", "threshold", "value", "judged_value", "status", "details",
)  # fmt: skip


def _verdict_document(run_id: str, ctx: dict) -> dict:
    """``verdict.json``: the run, its models and every check, for CI pipelines."""
    run = ctx["run"]
    return {
        "run_id": run_id,
        "cohort": run["cohort_name"],
        "cohort_sha256": run["cohort_sha256"],
        "synthetic": bool(run["synthetic"]),
        "verdict": run["verdict"],
        "config_sha256": run["config_sha256"],
        "code_version": run["code_version"],
        "models": [
            {"name": m["name"], "kind": m.get("kind"), "outputs": m.get("outputs")}
            for m in ctx["models"]
        ],
        "checks": [{k: v.get(k) for k in VERDICT_CHECK_KEYS} for v in ctx["verdicts"]],
    }


def _write_dossier_pages(run_id: str, ctx: dict, tables: dict, run_dir: Path, env) -> list:
    """The model card and the TRIPOD+AI map, each as a page and as JSON; returns their
    ``(kind, file name)`` pairs."""
    cards = model_cards(ctx, tables)
    items = checklist(ctx, tables, cards)
    card_page = env.get_template("model_card.html").render(
        cards=cards, run=ctx["run"], verdicts=ctx["verdicts"], show_ids=ctx["show_ids"]
    )
    _write_atomic(run_dir / "model_card.html", card_page)
    card_doc = {
        "run_id": run_id,
        "verdict": ctx["run"]["verdict"],
        "models": [{k: v for k, v in c.items() if k != "evaluation"} for c in cards],
        "evaluation_data": cards[0]["evaluation"],
    }
    _write_atomic(run_dir / "model_card.json", _json(card_doc))
    tripod_page = env.get_template("tripod_ai.html").render(
        items=items, run=ctx["run"], counts=_status_counts(items), show_ids=ctx["show_ids"]
    )
    _write_atomic(run_dir / "tripod_ai.html", tripod_page)
    tripod_doc = {
        "run_id": run_id,
        "guideline": "TRIPOD+AI (Collins et al., BMJ 2024;385:e078378)",
        "study_type": "external evaluation",
        "items": items,
    }
    _write_atomic(run_dir / "tripod_ai.json", _json(tripod_doc))
    written = [
        ("model_card_html", "model_card.html"),
        ("model_card_json", "model_card.json"),
        ("tripod_ai_html", "tripod_ai.html"),
        ("tripod_ai_json", "tripod_ai.json"),
    ]
    for name, doc in run_outputs(cards, ctx["run"], ctx["models"]).items():
        _write_atomic(run_dir / name, _json(doc))
        written.append((REGULATORY_KIND[name.split("/")[0]], name))
    return written


def _write_saliency_pngs(view: dict | None, run_dir: Path) -> list[Path]:
    """The saliency section's cohort maps and region-share charts as PNG files
    (``saliency/<n>-<model>-<output>-maps.png``), the same bytes as the page shows."""
    import base64
    import re

    paths = []
    for i, b in enumerate((view or {}).get("blocks", []), start=1):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{b['model']}-{b['output']}")[:80]
        for part in ("maps", "bars", "subgroup_maps"):
            if not b.get(part):
                continue
            path = run_dir / "saliency" / f"{i}-{slug}-{part.replace('_', '-')}.png"
            _write_atomic(path, base64.b64decode(b[part]["uri"].split(",", 1)[1]))
            paths.append(path)
    return paths


def _json(obj) -> str:
    """Strict JSON (NaN and infinities as null) for registries and CI pipelines."""
    return json.dumps(_plain(obj), indent=2, default=str, allow_nan=False)


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _status_counts(items: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for it in items:
        counts[it["status"]] = counts.get(it["status"], 0) + 1
    return counts


def render_index(store: Store, out_dir: str | Path, show_ids: bool = False) -> Path:
    """Write ``index.html`` over every run in the store, with trends of key metrics."""
    out_dir = Path(out_dir)
    runs = store.runs()
    runs_view = []
    for r in _records(runs):
        models = json.loads(r["models"] or "[]")
        r["model_names"] = ", ".join(m["name"] for m in models)
        if r["error"] and not show_ids:  # an error may quote the ids of the rows it met
            r["error"] = _run_scrubber(store, r["run_id"])(r["error"])
        r["has_page"] = (out_dir / "runs" / r["run_id"] / "index.html").is_file()
        runs_view.append(r)
    trends = []
    acc = store.query(
        "SELECT r.started_at, r.cohort_name, a.model, a.output, a.metric, a.value "
        "FROM accuracy a JOIN runs r USING (run_id) WHERE a.attribute = 'all' "
        "AND r.status = 'finished' AND a.metric IN ('mae', 'c_index')"
    )
    for (output, metric), g in acc.groupby(["output", "metric"]):
        g = g.assign(series=g["cohort_name"] + " / " + g["model"])
        if g["started_at"].nunique() < 2:
            continue
        label = {"mae": "FaceAge MAE (years)", "c_index": "risk C-index"}[metric]
        trends.append(
            {
                "uri": plots.to_uri(plots.trend_plot(g, f"{label} over runs", label)),
                "alt": f"{label} of each finished run over time, per cohort and model.",
            }
        )
    drift = store.query(
        "SELECT r.started_at, r.cohort_name, d.kind, sum(CASE WHEN d.drifted THEN 1 ELSE 0 END)"
        " AS value FROM drift d JOIN runs r USING (run_id) WHERE r.status = 'finished' "
        "GROUP BY ALL"
    )
    if len(drift) and drift["started_at"].nunique() >= 2:
        g = drift.assign(series=drift["cohort_name"] + " / " + drift["kind"])
        trends.append(
            {
                "uri": plots.to_uri(
                    plots.trend_plot(g, "drifted features over monitor runs", "drifted features")
                ),
                "alt": "Number of drifted features of each kind (metadata, images, "
                "predictions, embeddings, quality) in each monitor run.",
            }
        )
    html = (
        _env()
        .get_template("index.html")
        .render(
            runs=list(reversed(runs_view)), trends=trends, db=store.path.name, show_ids=show_ids
        )
    )
    path = out_dir / "index.html"
    _write_atomic(path, html)
    return path


def _run_scrubber(store: Store, run_id: str):
    """The id scrubber of one run: its photo and subject ids, and those it quarantined."""
    ids = store.query(
        "SELECT photo_id AS id FROM cohort_rows WHERE run_id = ? UNION "
        "SELECT subject_id FROM cohort_rows WHERE run_id = ? UNION "
        "SELECT photo_id FROM quarantine WHERE run_id = ?",
        [run_id, run_id, run_id],
    )["id"]
    return id_scrubber(ids.dropna().unique(), False)


def render_all(
    db: str | Path,
    out_dir: str | Path | None = None,
    show_ids: bool = False,
    show_faces: bool = False,
) -> Path:
    """Re-render every finished run and the index from a DuckDB file alone (with
    ``show_faces``, also from the cohort folders the runs audited)."""
    store = Store(db)
    out_dir = Path(out_dir) if out_dir else store.path.parent
    for r in _records(store.runs()):
        if r["status"] == "finished":
            render_run(store, r["run_id"], out_dir, show_ids=show_ids, show_faces=show_faces)
    return render_index(store, out_dir, show_ids=show_ids)


SITE_ONLY = "site-only"  # the folder, beside a run's pages, of its pages with raw ids


def render_site_only(db: str | Path, run_id: str, show_faces: bool = False) -> Path:
    """The run's pages with raw ids, for the site's own operator, in ``site-only/`` beside
    the shared pages (which stay pseudonymised and signed); every page says so. Returns the
    run's page."""
    store = Store(db)
    out_dir = store.path.parent / SITE_ONLY
    render_run(store, run_id, out_dir, show_ids=True, show_faces=show_faces)
    return out_dir / "runs" / run_id / "index.html"
