"""Clinical utility by subgroup: does acting on a score help every group it is used on?

A score that is useful for the cohort as a whole can still harm a group: if it ranks that
group's patients badly, acting on it there does worse than the simple strategies. The
decision is taken with the same probabilities for everyone (the score's cross-fitted risk of
death by the horizon, held fixed), so each group's net benefit is that of the one decision
rule applied to the group's patients (:func:`audit.decisions.curves.net_benefit` on them).

Per group and threshold the row gives the group's net benefit, treat-all's in the group and
the **gain over the best default**, ``NB(model) - max(NB(treat all), 0)``: positive where
acting on the score beats both treating everyone and treating no one in that group. Each
group is bootstrapped on its own subjects. Over all groups and thresholds of an attribute the
gain gets max-t simultaneous bands (:func:`audit.metrics.fairness.maxt_band`), so that some
15 groups x 18 thresholds do not breed false alarms; a group is ``harmful`` at a threshold
when its band lies below 0, ``useful`` when above, ``uncertain`` otherwise, and ``too_small`` (not
judged) below ``min_group_size`` subjects or ``min_events`` deaths by the horizon. The fairness
concern is a group harmed where the score is useful overall (``overall_useful``).

References
----------
Vickers AJ, Van Calster B, Steyerberg EW. Net benefit approaches to the evaluation of
prediction models, molecular markers, and diagnostic tests. BMJ 352:i6, 2016.
Van Calster B et al. Reporting and interpreting decision curve analysis: a guide for
investigators. Eur Urol 74:796-804, 2018 (net benefit over the default strategies).
Westfall PH, Young SS. Resampling-based multiple testing. Wiley, 1993 (max-t bands).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.data.cohort import natural_order
from audit.decisions.curves import (
    COLUMNS as CURVE_COLUMNS,
)
from audit.decisions.curves import (
    net_benefit,
    score_curves,
    useful_thresholds,
    with_resamples,
)
from audit.metrics.fairness import maxt_band
from audit.stats.bootstrap import percentile_ci

COLUMNS = [
    "model",
    "model_id",
    "attribute",
    "group_name",
    "horizon",
    "threshold",
    "n",
    "events",
    "positive_rate",
    "net_benefit",
    "treat_all",
    "gain",
    "gain_low",
    "gain_high",
    "band_low",
    "band_high",
    "overall_useful",
    "status",
]


def subgroup_net_benefit(
    model: str,
    model_id: str,
    time,
    event,
    probability,
    horizon: float,
    thresholds,
    groups: list[tuple[str, np.ndarray]],
    *,
    overall_useful=(),
    min_group_size: int = 30,
    min_events: int = 10,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    linear_from: int | None = None,
) -> pd.DataFrame:
    """``decision_subgroups`` rows of one score at one horizon.

    Parameters
    ----------
    time, event, probability : array-like of shape (n,)
        Follow-up, death indicator and the predicted risk of death by ``horizon``.
    thresholds : threshold probabilities, in (0, 1).
    groups : ``(attribute, labels)`` pairs, labels of shape (n,) (None: not in a group).
    overall_useful : thresholds at which the score is useful for the whole cohort.
    min_group_size, min_events : smaller groups, or fewer deaths by the horizon: too_small.
    linear_from : groups of this many subjects or more get linearised resamples
        (:func:`audit.decisions.curves.net_benefit`).
    """
    time, event = np.asarray(time, float), np.asarray(event, float)
    prob = np.asarray(probability, float)
    thresholds = np.asarray(thresholds, float)
    useful = {round(float(v), 10) for v in overall_useful}
    frames = []
    for a, (attribute, labels) in enumerate(groups):
        labels = np.asarray(pd.Series(labels, dtype=object).where(pd.notna(labels), None))
        names = natural_order([v for v in pd.unique(labels) if v is not None])
        rows, points, boots = [], [], []
        for g, name in enumerate(names):
            idx = np.flatnonzero(labels == name)
            row, gain = _group_gain(
                time[idx], event[idx], prob[idx], thresholds, horizon, [seed, a, g], level,
                n_boot=n_boot, min_group_size=min_group_size, min_events=min_events,
                linear_from=linear_from,
            )  # fmt: skip
            rows.append(row.assign(attribute=attribute, group_name=str(name)))
            if gain is not None:
                points.append(gain[0])
                boots.append(gain[1:])
        if rows:
            frames.append(_judge(pd.concat(rows, ignore_index=True), points, boots, level))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames, ignore_index=True).assign(
        model=model, model_id=model_id, horizon=float(horizon)
    )
    out["overall_useful"] = out["threshold"].round(10).isin(useful)
    return out.reindex(columns=COLUMNS)


def _group_gain(
    t,
    e,
    p,
    thresholds,
    horizon,
    seed_path,
    level,
    *,
    n_boot,
    min_group_size,
    min_events,
    linear_from=None,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """One group's rows (one per threshold) and its net-benefit gain over the better of
    treating all or none, shape (1 + n_boot, thresholds): the point, then the resamples;
    None when the group is too small or has too few deaths by the horizon."""
    deaths = int(((e == 1) & (t <= horizon)).sum())
    row = pd.DataFrame({"threshold": thresholds}).assign(
        n=len(t),
        events=deaths,
        positive_rate=(p[:, None] >= thresholds[None, :]).mean(axis=0),
    )
    if len(t) < min_group_size or deaths < min_events:
        return row.assign(status="too_small"), None
    w = with_resamples(len(t), n_boot, seed_path)
    positive = p[:, None] >= thresholds[None, :]
    nb = net_benefit(t, e, positive, thresholds, horizon, w, linear_from)
    treat_all = np.ones((len(t), len(thresholds)), dtype=bool)
    nb_all = net_benefit(t, e, treat_all, thresholds, horizon, w, linear_from)
    gain = nb - np.maximum(nb_all, 0.0)
    low, high = percentile_ci(gain[1:], level)
    judged = row.assign(
        net_benefit=nb[0],
        treat_all=nb_all[0],
        gain=gain[0],
        gain_low=low,
        gain_high=high,
        status="judged",
    )
    return judged, gain


def _judge(frame: pd.DataFrame, points: list, boots: list, level: float) -> pd.DataFrame:
    """Simultaneous max-t bands over the judged groups' gains of one attribute, and each
    judged row's status: ``harmful`` (band below 0), ``useful`` (above), ``uncertain``, or
    ``undefined`` (no gain)."""
    judged = frame["status"] == "judged"
    if not judged.any():
        return frame
    point = np.concatenate(points)
    band_low, band_high, _ = maxt_band(point, np.hstack(boots), level, np.isfinite(point))
    frame.loc[judged, "band_low"] = band_low
    frame.loc[judged, "band_high"] = band_high
    status = np.where(band_high < 0, "harmful", np.where(band_low > 0, "useful", "uncertain"))
    frame.loc[judged, "status"] = np.where(np.isfinite(point), status, "undefined")
    return frame


def score_decision_analysis(
    model: str,
    model_id: str,
    time,
    event,
    score,
    age=None,
    *,
    groups=None,
    horizons=(1.0, 2.0),
    thresholds=None,
    n_boot: int = 200,
    seed: int = 0,
    k: int = 5,
    min_group_size: int = 30,
    min_events: int = 10,
    linear_from: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`audit.decisions.curves.score_decision_curves`, and with ``groups``
    (``(attribute, labels)`` pairs aligned with ``time``) the same cross-fitted risks judged
    within each group (:func:`subgroup_net_benefit`): ``(curves, subgroup rows)``."""
    parts = score_curves(
        model,
        model_id,
        time,
        event,
        score,
        age,
        horizons=horizons,
        thresholds=thresholds,
        n_boot=n_boot,
        seed=seed,
        k=k,
        linear_from=linear_from,
    )
    if not parts:
        return pd.DataFrame(columns=CURVE_COLUMNS), pd.DataFrame(columns=COLUMNS)
    subgroups = []
    for curve, at in parts:
        if groups:
            ok = at["complete"]
            labelled = [(a, np.asarray(labels, dtype=object)[ok]) for a, labels in groups]
            subgroups.append(
                subgroup_net_benefit(
                    model,
                    model_id,
                    at["time"],
                    at["event"],
                    at["risk"],
                    at["horizon"],
                    at["thresholds"],
                    labelled,
                    overall_useful=useful_thresholds(curve),
                    min_group_size=min_group_size,
                    min_events=min_events,
                    n_boot=n_boot,
                    seed=at["seed"],
                    linear_from=linear_from,
                )
            )
    return (
        pd.concat([curve for curve, _ in parts], ignore_index=True),
        pd.concat(subgroups, ignore_index=True) if subgroups else pd.DataFrame(columns=COLUMNS),
    )
