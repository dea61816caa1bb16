"""The combined audit's page, from its DuckDB tables alone: the verdict, the sites and the
models they audited, a forest plot of every judged quantity (each site, the pooled estimate
and the prediction interval for a new site), the pooled accuracy and survival estimates,
and the pooled subgroup differences."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy import stats

from audit.pipeline.combine import POOLED, judged_quantities
from audit.pipeline.store import Store
from audit.report import plots
from audit.report.records import records
from audit.report.regulatory import pooled_tripod, safe_name

LABELS = {
    "mae": "FaceAge MAE (years)",
    "mean_error": "FaceAge mean error (years)",
    "pearson_r": "FaceAge Pearson r",
    "c_index": "Harrell's C",
}
HEADLINE_TERMS = ("faceage_decade", "faceage_gap_decade", "risk_sd", "risk[Q4]")
COMBINED_TABLES = ("combined_sites", "combined_models", "combined_estimates", "combined_pooled")


def _shown(scale: str, x):
    """A value as the page shows it: hazard ratios (pooled as logs) as ratios."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return None
    return float(np.exp(x)) if scale == "log" else float(x)


def _display(rows: pd.DataFrame) -> list[dict]:
    out = []
    for r in records(rows):
        s = r["scale"]
        shown = {
            k: _shown(s, r.get(k))
            for k in (
                "estimate", "ci_low", "ci_high", "fixed", "fixed_low", "fixed_high", "pred_low",
                "pred_high", "band_low", "band_high",
            )
            if k in r
        }  # fmt: skip
        label = r["quantity"]
        if label.startswith("log_hr:"):
            label = f"HR {label[len('log_hr:') :]}"
        out.append({**r, **shown, "label": label})
    return out


def _forest(pooled_row: dict, sites: pd.DataFrame, title: str) -> dict:
    s = pooled_row["scale"]
    shown = sites.assign(
        value=[_shown(s, v) for v in sites["estimate"]],
        ci_low=[_shown(s, v) for v in sites["ci_low"]],
        ci_high=[_shown(s, v) for v in sites["ci_high"]],
    )
    pooled = {k: _shown(s, pooled_row[k]) for k in ("estimate", "ci_low", "ci_high")}
    pooled.update(
        pred_low=_shown(s, pooled_row["pred_low"]), pred_high=_shown(s, pooled_row["pred_high"])
    )
    hr = s == "log"
    xlabel = "hazard ratio (log scale)" if hr else "estimate"
    return {
        "uri": plots.to_uri(
            plots.meta_forest_plot(shown, pooled, title, xlabel, ref=1.0 if hr else None, log=hr)
        ),
        "alt": f"Forest plot of {title}: each site's estimate and 95% CI (square sized by its "
        "weight, red when it lies outside what the other sites predict), the pooled estimate "
        "(diamond) and the prediction interval for a new site (bar).",
    }


def _judged_view(pooled: pd.DataFrame, estimates: pd.DataFrame, model: str) -> list[dict]:
    blocks = []
    for output, quantity in judged_quantities(pooled, model):
        sel = (
            (pooled["model"] == model)
            & (pooled["output"] == output)
            & (pooled["quantity"] == quantity)
            & (pooled["attribute"] == "all")
        )
        row = _display(pooled[sel])[0]
        sites = estimates[
            (estimates["model"] == model)
            & (estimates["output"] == output)
            & (estimates["quantity"] == quantity)
            & (estimates["attribute"] == "all")
            & (estimates["status"] == POOLED)
        ].sort_values("site")
        title = f"{model}: {LABELS.get(quantity, row['label'])}" + (
            "" if output in ("faceage", "risk") else f" ({output})"
        )
        blocks.append(
            {
                **row,
                "title": title,
                "figure": _forest(pooled[sel].iloc[0].to_dict(), sites, title),
                "sites": _display(sites),
            }
        )
    return blocks


def combined_context(store: Store, run_id: str, tables: dict, final_verdict=None) -> dict:
    """What ``combined.html`` shows."""
    run = store.run(run_id)
    if final_verdict is not None:  # rendered just before the run is marked finished
        run["verdict"] = final_verdict
        run["status"] = "finished"
    models = json.loads(run["models"] or "[]")
    pooled, estimates = tables["combined_pooled"], tables["combined_estimates"]
    sites = records(tables["combined_sites"])
    compositions = {}
    for s in sites:
        comp = json.loads(s["composition"]) if s["composition"] else {}
        for attribute in ("sex", "race", "age_band"):
            for group, count in (comp.get(attribute) or {}).items():
                compositions.setdefault((attribute, group), {})[s["site"]] = count
    composition = [
        {"attribute": a, "group": g, "counts": [counts.get(s["site"], "–") for s in sites]}
        for (a, g), counts in sorted(compositions.items())
    ]
    overall = pooled[
        (pooled["attribute"] == "all")
        & ~pooled["quantity"].str.startswith(("fairness:", "difference:"))
    ]
    unpooled = overall[overall["status"] != POOLED]
    overall = overall[overall["status"] == POOLED].sort_values(
        ["model", "output", "quantity", "horizon"]
    )
    headline = (
        overall["output"].isin(["faceage", "risk"]) & ~overall["quantity"].str.contains(":")
    ) | (  # the models adjusted for age and sex (the verdict's): their C and headline HR
        overall["output"].str.endswith("__age_sex")
        & overall["quantity"].isin(["c_index", *(f"log_hr:{t}" for t in HEADLINE_TERMS)])
    )
    diffs = pooled[pooled["quantity"].str.startswith("difference:")]
    shown_diffs = diffs[diffs["status"].isin(["flagged", "ok"])].copy()
    shown_diffs["order"] = (shown_diffs["status"] != "flagged").astype(int)
    flagged_rows = estimates[estimates["flagged"].fillna(False).astype(bool)]
    # forest plots of the differences that matter: flagged, or with a site that disagrees
    notable = shown_diffs[
        (shown_diffs["status"] == "flagged") | shown_diffs["flagged_sites"].notna()
    ]
    difference_plots = []
    for r in (
        notable.sort_values(["order", "i2"], ascending=[True, False]).head(6).to_dict("records")
    ):
        sel = estimates[
            (estimates["model"] == r["model"])
            & (estimates["output"] == r["output"])
            & (estimates["quantity"] == r["quantity"])
            & (estimates["attribute"] == r["attribute"])
            & (estimates["group_name"] == r["group_name"])
            & (estimates["status"] == POOLED)
        ].sort_values("site")
        title = (
            f"{r['model']}: {r['output']} {r['quantity'].split(':', 1)[1]}, "
            f"{r['group_name']} minus {r['reference_group']}"
        )
        difference_plots.append(_forest(r, sel, title))
    drift = estimates[estimates["quantity"].str.startswith("drift_effect:")]
    drift_rows = [
        {
            "model": model,
            "kind": kind,
            "feature": quantity.split(":", 1)[1],
            "effects": [g.set_index("site")["estimate"].get(s["site"]) for s in sites],
        }
        for (model, kind, quantity), g in drift.groupby(["model", "output", "quantity"], sort=True)
    ]
    verdicts = records(tables["verdicts"])
    config = json.loads(run["config"] or "{}")
    return {
        "run": run,
        "models": models,
        "verdicts": verdicts,
        "sites": sites,
        "composition": composition,
        "model_rows": records(tables["combined_models"]),
        "judged": {m["name"]: _judged_view(pooled, estimates, m["name"]) for m in models},
        "headline": _display(overall[headline]),
        "rest": _display(overall[~headline]),
        "differences": _display(
            shown_diffs.sort_values(
                ["order", "model", "output", "quantity", "attribute", "group_name"]
            )
        ),
        "n_differences": int(len(diffs)),
        "difference_plots": difference_plots,
        "n_unpooled": int(len(unpooled)),
        "drift": drift_rows,
        "n_flagged_estimates": int(len(flagged_rows)),
        "flagged_estimates": _display(
            flagged_rows.sort_values(["model", "output", "quantity", "site"]).head(60)
        ),
        "config": config,
        "z_flag": float(stats.norm.ppf(0.5 + config["combine"]["ci_level"] / 2)),
        "exports": [],
        "show_ids": False,  # a combined audit holds no id to show
        "regulatory": [
            *(
                {
                    "label": f"CHAI applied model card of {m['name']}",
                    "href": f"chai/{safe_name(m['name'])}.json",
                }
                for m in models
            ),
            {"label": "EU AI Act Art. 15(3) accuracy sheet", "href": "eu_ai_act_accuracy.json"},
            {"label": "TRIPOD+AI map of the pooled evaluation", "href": "tripod_ai.json"},
        ],  # fmt: skip
        "tripod": pooled_tripod(
            run,
            tables["combined_sites"][tables["combined_sites"]["status"] == POOLED],
            pooled,
            tables["verdicts"],
        ),  # fmt: skip
    }
