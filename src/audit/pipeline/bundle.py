"""A site bundle: what of a run may leave the site, signed, for a combined audit elsewhere.

Only aggregates leave: per model and output, each estimate with its standard error (given, or
from its 95% CI), CI and counts, from the run's own tables (accuracy overall and by group,
fairness per group, Cox terms with their coefficient and standard error, Harrell's C of each
Cox model, Uno's C, time-dependent AUC, Brier score, calibration in the large and by decile
of predicted risk; robustness: the share of photos each perturbation moves beyond tolerance,
and the mean shift; drift: each feature's effect size against the site's reference); the
cohort's composition (counts by sex, race and age band); the models' names, kinds and
checkpoint digests; the config digest and the code version. Never ids, photo paths, free
text about rows, or any row-level value.

Small cells: an estimate over fewer than ``min_subjects`` subjects, or a survival quantity
over fewer than ``min_events`` deaths, is withheld: the bundle keeps its name and marks it
``suppressed`` with the reason, never the number. A composition count under ``min_subjects``
is shown as ``"<min_subjects"``.

The bundle is signed with the site's Ed25519 key (:func:`audit.pipeline.dossier.sign_document`)
and names its public key; :func:`verify_bundle` checks it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from audit.pipeline.dossier import sign_document, signature_problems
from audit.pipeline.store import Store

FORMAT = "faceage-audit site bundle 1"
Z95 = 1.959963984540054


def _se(row: dict) -> float | None:
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return None
    return float((high - low) / (2 * Z95))


def _number(value) -> float | None:
    return None if value is None or not np.isfinite(float(value)) else float(value)


def _entry(
    model, output, quantity, estimate, *, se=None, low=None, high=None, n=None, events=None,
    attribute="all", group="all", horizon=None, scale="identity", limits=(10, 5),
) -> dict:  # fmt: skip
    """One quantity, or its suppression when its cell is too small."""
    entry = {
        "model": model,
        "output": output,
        "quantity": quantity,
        "attribute": attribute,
        "group": group,
        "horizon": _number(horizon) if horizon is not None else None,
        "scale": scale,
        "n": None if n is None else int(n),
        "events": None if events is None or pd.isna(events) else int(events),
    }
    min_subjects, min_events = limits
    if n is not None and n < min_subjects:
        return {**entry, "n": None, "suppressed": f"fewer than {min_subjects} subjects"}
    if events is not None and not pd.isna(events) and events < min_events:
        return {**entry, "events": None, "suppressed": f"fewer than {min_events} deaths"}
    return {
        **entry,
        "estimate": _number(estimate),
        "se": _number(se) if se is not None else None,
        "ci_low": _number(low) if low is not None else None,
        "ci_high": _number(high) if high is not None else None,
    }


def build_bundle(
    store: Store, run_id: str, site: str, min_subjects: int = 10, min_events: int = 5
) -> dict:
    """The unsigned contents of a run's bundle (see the module text)."""
    run = store.run(run_id)
    limits = (min_subjects, min_events)
    quantities = []
    for r in store.table("accuracy", run_id).to_dict("records"):
        n = r["n_subjects"] if pd.notna(r.get("n_subjects")) else r["n"]
        quantities.append(
            _entry(
                r["model"], r["output"], r["metric"], r["value"], se=_se(r), low=r["ci_low"],
                high=r["ci_high"], n=n, attribute=r["attribute"], group=r["group_name"],
                limits=limits,
            )
        )  # fmt: skip
    for r in store.table("fairness", run_id).to_dict("records"):
        if r["attribute"] == "all":
            continue  # the overall values are accuracy's
        n = r["n_subjects"] if pd.notna(r.get("n_subjects")) else r["n"]
        quantities.append(
            _entry(
                r["model"], r["output"], f"fairness:{r['metric']}", r["value"], se=_se(r),
                low=r["ci_low"], high=r["ci_high"], n=n, attribute=r["attribute"],
                group=r["group_name"], limits=limits,
            )
        )  # fmt: skip
    fits = store.table("survival_models", run_id).set_index("model_id")
    for r in store.table("survival_terms", run_id).to_dict("records"):
        fit = fits.loc[r["model_id"]] if r["model_id"] in fits.index else None
        quantities.append(
            _entry(
                r["model"], r["model_id"], f"log_hr:{r['term']}", r["coef"], se=r["se"],
                low=np.log(r["hr_low"]) if r["hr_low"] and r["hr_low"] > 0 else None,
                high=np.log(r["hr_high"]) if r["hr_high"] and r["hr_high"] > 0 else None,
                n=None if fit is None else fit["n"], events=None if fit is None else fit["events"],
                scale="log", limits=limits,
            )
        )  # fmt: skip
    for model_id, fit in fits.iterrows():
        if fit["status"] != "ok" or pd.isna(fit["concordance"]):
            continue
        quantities.append(
            _entry(
                fit["model"], model_id, "c_index", fit["concordance"],
                se=_se({"ci_low": fit["concordance_low"], "ci_high": fit["concordance_high"]}),
                low=fit["concordance_low"], high=fit["concordance_high"], n=fit["n"],
                events=fit["events"], limits=limits,
            )
        )  # fmt: skip
    for r in store.table("survival_metrics", run_id).to_dict("records"):
        fit = fits.loc[r["model_id"]] if r["model_id"] in fits.index else None
        quantities.append(
            _entry(
                r["model"], r["model_id"], r["metric"], r["value"], se=_se(r),
                low=r["ci_low"], high=r["ci_high"], horizon=r["horizon"],
                n=None if fit is None else fit["n"], events=None if fit is None else fit["events"],
                limits=limits,
            )
        )  # fmt: skip
    quantities += _calibration_deciles(store, run_id, limits)
    quantities += _robustness(store, run_id, limits)
    for r in store.table("drift", run_id).to_dict("records"):
        quantities.append(
            _entry(
                r["model"] or "cohort", r["kind"], f"drift_effect:{r['feature']}", r["effect"],
                n=r["n_current"], limits=limits,
            )
        )  # fmt: skip
    models = [
        {k: m.get(k) for k in ("name", "kind", "outputs", "checkpoint_sha256", "spec_sha256")}
        for m in json.loads(run["models"] or "[]")
    ]
    return {
        "format": FORMAT,
        "site": site,
        "run_id": run_id,
        "flow": run["flow"],
        "synthetic": bool(run.get("synthetic")),
        "models": models,
        "config_sha256": run["config_sha256"],
        "code_version": run["code_version"],
        "small_cells": {"min_subjects": min_subjects, "min_events": min_events},
        "composition": _composition(store, run_id, min_subjects),
        "quantities": quantities,
    }


def _calibration_deciles(store: Store, run_id: str, limits) -> list[dict]:
    """Calibration by decile of predicted risk at the calibration horizon: observed
    (Kaplan-Meier) minus mean predicted survival, its CI the Kaplan-Meier CI's less the
    prediction, its SE from that CI."""
    curves = store.table("survival_curves", run_id)
    curves = curves[curves["curve"].str.startswith("calibration:")]
    out = []
    for r in curves.to_dict("records"):
        gap = r["survival"] - r["predicted"]
        low, high = r["survival_low"] - r["predicted"], r["survival_high"] - r["predicted"]
        out.append(
            _entry(
                r["model"], r["curve"].split(":", 1)[1], "calibration_gap", gap,
                se=_se({"ci_low": low, "ci_high": high}), low=low, high=high, horizon=r["time"],
                n=r["at_risk"], attribute="predicted_risk_decile", group=r["group_name"],
                limits=limits,
            )
        )  # fmt: skip
    return out


def _robustness(store: Store, run_id: str, limits) -> list[dict]:
    """Per perturbation and severity (``<perturbation>@<severity>``), overall and by group:
    the share of photos moved beyond the tolerance (binomial SE; one photo a subject) and
    the mean absolute shift (no SE: reported, not pooled)."""
    out = []
    for r in store.table("robustness", run_id).to_dict("records"):
        label = f"{r['perturbation']}@{int(r['severity'])}"
        n, share = r["n"], r["frac_over_tolerance"]
        se = float(np.sqrt(share * (1 - share) / n)) if n and np.isfinite(share) else None
        where = {"attribute": r["attribute"], "group": r["group_name"], "limits": limits, "n": n}
        out.append(
            _entry(r["model"], r["output"], f"robustness_over_tolerance:{label}", share, se=se,
                   **where)
        )  # fmt: skip
        out.append(
            _entry(r["model"], r["output"], f"robustness_mean_abs_shift:{label}",
                   r["mean_abs_shift"], **where)
        )  # fmt: skip
    return out


def _composition(store: Store, run_id: str, min_subjects: int) -> dict:
    """Subjects by sex, race and age band (small counts shown as ``<min_subjects``)."""
    rows = store.table("cohort_rows", run_id)
    rows = rows[rows["included"].astype(bool)].drop_duplicates("subject_id")
    if "paired_only" in rows.columns:
        rows = rows[~rows["paired_only"].fillna(False).astype(bool)]
    out: dict = {"subjects": len(rows)}
    bands = pd.cut(
        rows["age"], [-np.inf, 65, 75, 85, np.inf], labels=["<=65", "65-75", "75-85", ">85"]
    )
    for name, values in (("sex", rows["sex"]), ("race", rows["race"]), ("age_band", bands)):
        counts = values.astype(object).fillna("(missing)").value_counts()
        out[name] = {
            str(k): (int(v) if v >= min_subjects else f"<{min_subjects}")
            for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))
        }
    return out


def write_bundle(store: Store, run_id: str, site: str, path: str | Path, **limits) -> Path:
    """Build, sign and write a run's bundle to ``path`` (JSON); return the path."""
    doc = sign_document(build_bundle(store, run_id, site, **limits), "bundle")
    path = Path(path)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
    return path


def verify_bundle(path: str | Path) -> list[str]:
    """What is wrong with a bundle file (empty: intact and signed by the key it names)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{path}: not a {FORMAT} (not JSON: {exc})"]
    if not isinstance(doc, dict) or not isinstance(doc.get("bundle"), dict):
        return [f"{path}: not a {FORMAT}"]
    if doc["bundle"].get("format") != FORMAT:
        return [f"{path}: not a {FORMAT}"]
    missing = [k for k in ("digest", "signature", "public_key") if not isinstance(doc.get(k), str)]
    if missing:
        return [f"{path}: not signed (no {', '.join(missing)})"]
    return signature_problems(doc, "bundle", str(path))
