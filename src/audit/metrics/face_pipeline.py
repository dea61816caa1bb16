"""The face-pipeline integrity audit: who the face detector drops, by subgroup.

The detector decides who is audited at all: a photo without exactly one face is quarantined,
so a detector that misses older, darker-skinned or dimly lit faces removes exactly the
people a fairness audit exists for, before any accuracy or fairness table is computed. For
every decodable raw photo (a ``cropped`` cohort has no detection step) this module measures

- ``detection_failure``: no face found;
- ``multi_face``: two or more faces found;
- ``low_confidence``: one face, whose detector score is under the detector's
  ``low_confidence`` level (dlib's HOG score 0.5; OpenCV's level weight 4);
- ``face_px``: the side of the face's box in pixels, the resolution the crop starts from
  (reported, not judged);

overall and within each group of age band, sex, race, site, camera and brightness band, with
subject-bootstrap CIs and, for each group's difference to the overall rate, the same
simultaneous max-t bands as the fairness audit. A group is flagged when its band lies entirely
above ``tolerance`` (a rate that much higher than the cohort's).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.data.cohort import age_band
from audit.metrics.fairness import DifferenceBands, attribute_groupings
from audit.pipeline.schema import columns
from audit.stats.bootstrap import SubjectBootstrap, percentile_ci
from audit.stats.groups import canonical_rows

FACE_PIPELINE_COLUMNS = columns("face_pipeline")
RATES = ("detection_failure", "multi_face", "low_confidence")
METRICS = RATES + ("face_px",)


def brightness_band(brightness: pd.Series, cuts: list[float]) -> pd.Series:
    """Mean grey level in bands: ``dark (<85)``, ``85-170``, ``bright (>=170)`` by default."""
    cuts = sorted(cuts)
    labels = (
        [f"dark (<{cuts[0]:g})"]
        + [f"{a:g}-{b:g}" for a, b in zip(cuts, cuts[1:])]
        + [f"bright (>={cuts[-1]:g})"]
    )
    b = pd.to_numeric(brightness, errors="coerce")
    return pd.cut(b, bins=[-np.inf] + cuts + [np.inf], labels=labels, right=False).astype(object)


def photo_outcomes(props: pd.DataFrame, rows: pd.DataFrame, detector: str, config) -> pd.DataFrame:
    """One row per decodable photo: its subject, groups and detection outcomes.

    ``props``: the per-image table with each photo's faces (``_boxes``, largest first);
    ``rows``: the cohort's rows (``photo_id``, ``subject_id``, ``age`` and the attributes)."""
    props = props[props["decodable"].fillna(False).astype(bool)]
    keep = ["photo_id", "subject_id", "age", *[a for a in config.attributes if a in rows]]
    out = props[["photo_id", "brightness", "_boxes", "face_count"]].merge(
        rows[[c for c in dict.fromkeys(keep) if c in rows]], on="photo_id", how="inner"
    )
    count = pd.to_numeric(out["face_count"], errors="coerce").fillna(0).to_numpy()
    low = float(config.low_confidence.get(detector, 0.0))
    first = [b[0] if isinstance(b, list) and b else None for b in out["_boxes"]]
    score = np.array([f["confidence"] if f else np.nan for f in first], dtype=float)
    side = np.array([max(f["w"], f["h"]) if f else np.nan for f in first], dtype=float)
    out["detection_failure"] = (count == 0).astype(float)
    out["multi_face"] = (count >= 2).astype(float)
    out["low_confidence"] = np.where(count == 1, (score < low).astype(float), np.nan)
    out["face_px"] = np.where(count == 1, side, np.nan)
    if "age" in out:
        out["age_band"] = age_band(pd.to_numeric(out["age"], errors="coerce"), config.age_bands)
    out["brightness_band"] = brightness_band(out["brightness"], config.brightness_bands)
    return canonical_rows(out.drop(columns=["_boxes"]))


def face_pipeline_table(outcomes: pd.DataFrame, detector: str, config) -> pd.DataFrame:
    """The ``face_pipeline`` rows: each metric overall and by group (see the module)."""
    if outcomes.empty:
        return pd.DataFrame(columns=FACE_PIPELINE_COLUMNS)
    rng = np.random.default_rng(config.seed)
    boot = SubjectBootstrap.draw(outcomes["subject_id"].to_numpy(), config.n_boot, rng)
    groupings = attribute_groupings(outcomes, config.attributes)
    rows = []
    for metric in METRICS:
        x = outcomes[metric].to_numpy(dtype=float)
        has = np.isfinite(x)
        cols = np.column_stack([np.where(has, x, 0.0), has.astype(float)])
        point, sims = boot.totals(cols)
        overall, overall_boot = _ratio(point[0]), _ratio(sims[:, 0])
        n_subj = outcomes.loc[has, "subject_id"].nunique()
        rows.append(
            _overall_row(detector, metric, int(has.sum()), n_subj, overall, overall_boot, config)
        )
        for attribute, labels in groupings:
            names = sorted({v for v in labels if v is not None}, key=str)
            codes = labels.map({n: i for i, n in enumerate(names)}).fillna(-1).astype(int)
            codes = np.where(has, codes.to_numpy(), -1)
            point, sims = boot.totals(cols, codes, len(names))
            rows += _group_rows(
                detector,
                metric,
                attribute,
                names,
                point,
                sims,
                boot.subjects_per_group(codes, len(names)),
                overall,
                overall_boot,
                config,
            )
    return pd.DataFrame(rows).reindex(columns=FACE_PIPELINE_COLUMNS)


def _ratio(totals: np.ndarray) -> np.ndarray:
    """Sum over count along the last axis (NaN where a group has no photo)."""
    with np.errstate(all="ignore"):
        return np.where(totals[..., 1] > 0, totals[..., 0] / totals[..., 1], np.nan)


def _tolerance(metric: str, config) -> float | None:
    return config.tolerance if metric in RATES else None


def _overall_row(detector, metric, n, n_subjects, value, boot, config) -> dict:
    low, high = percentile_ci(np.asarray(boot, dtype=float).reshape(-1, 1), config.ci_level)
    return {
        "detector": detector,
        "metric": metric,
        "attribute": "all",
        "group_name": "all",
        "n": n,
        "n_subjects": int(n_subjects),
        "value": float(value),
        "ci_low": float(low[0]),
        "ci_high": float(high[0]),
        "tolerance": _tolerance(metric, config),
        "status": "ok" if n else "empty",
    }


def _group_rows(
    detector, metric, attribute, names, point, sims, subjects, overall, overall_boot, config
) -> list[dict]:
    values, boot = _ratio(point), _ratio(sims)  # (G,), (B, G)
    low, high = percentile_ci(boot, config.ci_level)
    d = DifferenceBands.of(values, boot, overall, overall_boot, subjects, config)
    tol = _tolerance(metric, config)
    out = []
    for g, name in enumerate(names):
        simultaneous = d.methods[g].startswith("simultaneous")
        flagged = tol is not None and simultaneous and d.low[g] > tol
        out.append(
            {
                "detector": detector,
                "metric": metric,
                "attribute": attribute,
                "group_name": name,
                "n": int(point[g, 1]),
                "n_subjects": int(subjects[g]),
                "value": float(values[g]),
                "ci_low": float(low[g]),
                "ci_high": float(high[g]),
                "diff_to_overall": float(d.diff[g]),
                "diff_ci_low": float(d.low[g]),
                "diff_ci_high": float(d.high[g]),
                "diff_ci_method": d.methods[g],
                "tolerance": tol,
                "status": (
                    "too_small"
                    if not (d.usable[g] and np.isfinite(values[g]))
                    else ("flagged" if flagged else "ok")
                ),
            }
        )
    return out
