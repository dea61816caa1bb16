"""Decision curves: the net benefit of acting on a survival score at a horizon.

A clinician acts (refers to palliative care, spares an aggressive treatment, ...) when a
patient's predicted risk of death by the horizon reaches a threshold probability ``p_t``. The
threshold states how the harm of acting on a patient who survives weighs against the benefit
of acting on one who dies: odds ``p_t / (1 - p_t)``. Net benefit counts true positives minus
false positives at that exchange rate, per patient:

    NB(p_t) = TP / n - FP / n * p_t / (1 - p_t)

With censored follow-up the outcome at the horizon is not seen for everyone, so ``TP / n`` is
``P(positive) * (1 - S_pos(h))`` and ``FP / n`` is ``P(positive) * S_pos(h)``, with ``S_pos``
the Kaplan-Meier survival of the test-positive patients (Vickers et al. 2008), as R's and
Python's ``dcurves`` compute it. Strategies: the model, whose probabilities come from a
cross-fitted Cox model of its score (:func:`audit.survival.metrics.crossfit_survival`: a score
is not a probability); chronological age, turned into probabilities the same way (the
yardstick a face model must beat); acting on everyone (``treat_all``); and on no one (net
benefit 0 by definition, not stored). Interventions avoided per 100 patients, against
treating all: ``(NB - NB_all) * (1 - p_t) / p_t * 100``.

Confidence intervals come from a subject bootstrap with the cross-fitted probabilities held
fixed (the model is judged, not refitted), with the same resamples for every strategy so
that differences are paired. All resamples of one threshold go through one vectorised
Kaplan-Meier pass. This is written by hand: ``dcurves`` fits one Kaplan-Meier curve per
threshold and has no intervals (200 resamples x 18 thresholds x 3 strategies would be over
10,000 fits); the point estimates are tested equal to ``dcurves`` on its own data.

References
----------
Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction
models. Med Decis Making 26:565-574, 2006.
Vickers AJ, Cronin AM, Elkin EB, Gonen M. Extensions to decision curve analysis, a novel
method for evaluating diagnostic tests, prediction models and molecular markers. BMC Med
Inform Decis Mak 8:53, 2008.
Vickers AJ, Van Calster B, Steyerberg EW. Net benefit approaches to the evaluation of
prediction models, molecular markers, and diagnostic tests. BMJ 352:i6, 2016.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.stats.bootstrap import bootstrap_weights, percentile_ci, resample_dot
from audit.survival.metrics import crossfit_survival, usable_horizons

COLUMNS = [
    "model",
    "model_id",
    "strategy",
    "horizon",
    "threshold",
    "n",
    "events",
    "positive_rate",
    "net_benefit",
    "ci_low",
    "ci_high",
    "diff_treat_all",
    "diff_treat_all_low",
    "diff_treat_all_high",
    "diff_age",
    "diff_age_low",
    "diff_age_high",
    "interventions_avoided",
    "compared_to",
    "diff_compared",
    "diff_compared_low",
    "diff_compared_high",
]


def default_thresholds(start: float = 0.05, stop: float = 0.9, step: float = 0.05) -> list[float]:
    """Threshold probabilities from ``start`` to ``stop`` inclusive."""
    n = int(round((stop - start) / step)) + 1
    return [round(start + i * step, 10) for i in range(n)]


def _complete(time, event, *columns):
    """``time``, ``event`` and each column (None stays None) as float arrays, on the subjects
    where all of them are finite, and that mask last."""
    arrays = [np.asarray(time, float), np.asarray(event, float)] + [
        None if c is None else np.asarray(c, float) for c in columns
    ]
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrays if a is not None])
    return [None if a is None else a[ok] for a in arrays] + [ok]


def _km_risk(t: np.ndarray, d: np.ndarray, horizon: float):
    """For follow-up ``t`` sorted ascending with deaths ``d``: the number ``m`` of leading
    subjects the curve needs (those followed no further than the horizon), and a function
    of their weights (B, m) and every subject's total weight (B,) giving ``1 - S(h)`` of each
    row's Kaplan-Meier curve; 1 where everyone still at risk died before the horizon; NaN
    where the curve stops short of the horizon above 0 (the last weighted subjects censored
    before it: S(h) is unknown). Subjects followed beyond the horizon only count as at risk,
    through the total, so the running sums stop at ``m``."""
    deaths = np.unique(t[(d == 1) & (t <= horizon)])
    left = np.searchsorted(t, deaths, side="left")  # first subject at risk at each death time
    right = np.searchsorted(t, deaths, side="right")
    first_followed = int(np.searchsorted(t, horizon, side="left"))
    m = max(first_followed, int(right.max()) if len(right) else 0)
    d_head = d[:m].astype(np.float32)

    def before(c: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Sum of the weights of subjects [0, idx) from the running sums ``c``."""
        if c.shape[1] == 0:
            return np.zeros((len(c), len(idx)))
        return np.where(idx > 0, c[:, np.maximum(idx - 1, 0)].astype(np.float64), 0.0)

    def risk(head: np.ndarray, total: np.ndarray) -> np.ndarray:
        # float32 running sums of integer counts are exact below 2**24 (16.7 million)
        c = np.cumsum(head, axis=1)
        cd = np.cumsum(head * d_head, axis=1)
        total = np.asarray(total, np.float64)[:, None]
        at_risk = total - before(c, left)
        dead = before(cd, right) - before(cd, left)
        with np.errstate(divide="ignore", invalid="ignore"):
            hazard = np.where(at_risk > 0, dead / np.where(at_risk > 0, at_risk, 1.0), 0.0)
            survival = np.exp(np.log1p(-np.minimum(hazard, 1.0)).sum(axis=1))
        reached = (total[:, 0] - before(c, np.array([first_followed]))[:, 0]) > 0
        # a curve that falls to 0 (everyone left at risk died) stays there: defined at h
        return np.where(reached | (survival <= 0.0), 1.0 - survival, np.nan)

    return m, risk


def net_benefit(
    time,
    event,
    positive: np.ndarray,
    thresholds,
    horizon: float,
    weights: np.ndarray | None = None,
    linear_from: int | None = None,
) -> np.ndarray:
    """Net benefit at ``horizon`` of acting on the patients marked in ``positive``.

    Parameters
    ----------
    time, event : array-like of shape (n,)
        Follow-up and death indicator (1 death, 0 censored).
    positive : ndarray of shape (n, T) of bool
        Who is acted on at each of the ``T`` thresholds.
    thresholds : array-like of shape (T,)
        Threshold probabilities, in (0, 1).
    horizon : float
        Time of the outcome, in the follow-up's unit.
    weights : ndarray of shape (B, n), optional
        Subject weights (bootstrap counts); one row of ones when omitted.
    linear_from : int, optional
        From this many subjects on, each weight row's net benefit is its first-order
        expansion around unit weights (:func:`net_benefit_influence`), one matrix product
        for every row and threshold, instead of a Kaplan-Meier pass per threshold.

    Returns
    -------
    ndarray of shape (B, T)
        Net benefit; 0 where nobody is positive, NaN where the positives' follow-up stops
        before the horizon.
    """
    time = np.asarray(time, float)
    if weights is not None and linear_from is not None and len(time) >= linear_from:
        point, influence = net_benefit_influence(time, event, positive, thresholds, horizon)
        w = np.atleast_2d(np.asarray(weights))
        return point + (resample_dot(w, influence) - influence.sum(axis=0))
    order = np.argsort(time, kind="stable")
    t, d = time[order], np.asarray(event, float)[order]
    w = np.ones((1, len(t))) if weights is None else np.atleast_2d(np.asarray(weights, float))
    w = w[:, order].astype(np.float32)  # bootstrap counts: exact in float32, half the memory
    positive = np.asarray(positive, bool)[order]
    m, risk = _km_risk(t, d, horizon)
    thresholds = np.asarray(thresholds, float)
    total = w.sum(axis=1, dtype=np.float64)
    out = np.empty((w.shape[0], len(thresholds)))
    for j, pt in enumerate(thresholds):
        # the same patients acted on as at the previous threshold (always so for treat-all):
        # the same Kaplan-Meier risk
        if j == 0 or not np.array_equal(positive[:, j], positive[:, j - 1]):
            acted = positive[:, j]
            acted_total = w @ acted.astype(np.float32)  # exact: integer counts below 2**24
            share = acted_total.astype(np.float64) / total
            r = risk(w[:, :m] * acted[:m], acted_total) if acted.any() else np.zeros(len(w))
        nb = share * r - share * (1.0 - r) * pt / (1.0 - pt)
        out[:, j] = np.where(share > 0, nb, 0.0)
    return out


def net_benefit_influence(
    time, event, positive: np.ndarray, thresholds, horizon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Net benefit at unit weights (T,) and each subject's empirical influence value on it
    (n, T): the derivative of :func:`net_benefit` in the subject's weight.

    ``NB = s (r (1 + k) - k)`` with ``s`` the share acted on, ``r = 1 - S(h)`` the
    Kaplan-Meier risk among them and ``k = p_t / (1 - p_t)``. ``ds/dw_j = (A_j - s) / W``,
    and ``d log S(h) / dw_j`` for an acted-on subject is Kaplan-Meier's influence:
    ``-[j died at t_k <= h] / (Y_k - d_k) + sum_{t_k <= min(t_j, h)} d_k / (Y_k (Y_k - d_k))``
    (``Y_k`` at risk and ``d_k`` deaths at death time ``t_k``; the second term is Greenwood's
    increment). Where the curve falls to 0 before the horizon its derivative is 0; where it
    stops short of the horizon the net benefit is NaN, as in :func:`net_benefit`. Tested
    equal to finite differences of the weighted :func:`net_benefit`.

    References: Reid N. Influence functions for censored data. Ann Stat 9, 1981; Efron B.
    Censored data and the bootstrap. JASA 76, 1981.
    """
    time = np.asarray(time, float)
    event = np.asarray(event, float)
    positive = np.asarray(positive, bool)
    thresholds = np.asarray(thresholds, float)
    n, n_t = positive.shape
    order = np.argsort(time, kind="stable")
    t, d, pos = time[order], event[order], positive[order]
    point = np.zeros(n_t)
    influence = np.zeros((n, n_t))
    done: dict[bytes, tuple[float, float, np.ndarray]] = {}
    for j, pt in enumerate(thresholds):
        acted = pos[:, j]
        key = np.packbits(acted).tobytes()
        if key not in done:  # the same patients as at a lower threshold: the same curve
            done[key] = _km_influence(t, d, acted, horizon)
        share_n = acted.sum()
        if share_n == 0:
            continue
        s_h, reached, dlog = done[key]
        share = share_n / n
        k = pt / (1.0 - pt)
        if not reached:
            point[j] = np.nan
            influence[:, j] = np.nan
            continue
        r = 1.0 - s_h
        point[j] = share * (r * (1.0 + k) - k)
        ds = (acted - share) / n
        dr = -s_h * dlog
        influence[order, j] = ds * (r * (1.0 + k) - k) + share * (1.0 + k) * dr
    return point, influence


def _km_influence(t: np.ndarray, d: np.ndarray, acted: np.ndarray, horizon: float):
    """Kaplan-Meier survival at ``horizon`` of the ``acted`` subjects (times ``t`` sorted),
    whether the curve reaches the horizon (someone acted on followed to it, or the curve at
    0), and each subject's derivative of ``log S(h)`` in its weight (0 for the others)."""
    ta, da = t[acted], d[acted]
    dead = (da == 1) & (ta <= horizon)
    death_times = np.unique(ta[dead])
    at_risk = len(ta) - np.searchsorted(ta, death_times, side="left")
    deaths = np.bincount(np.searchsorted(death_times, ta[dead]), minlength=len(death_times))
    left = at_risk - deaths
    with np.errstate(divide="ignore", invalid="ignore"):
        survival = float(np.prod(1.0 - deaths / at_risk)) if len(death_times) else 1.0
    followed = bool((ta >= horizon).any())
    dlog = np.zeros(len(t))
    if survival <= 0.0:  # everyone left at risk died: S(h) = 0 whatever the weights
        return 0.0, True, dlog
    greenwood = np.cumsum(deaths / (at_risk * left))  # left > 0 wherever S > 0
    upto = np.searchsorted(death_times, np.minimum(ta, horizon), side="right")
    own = np.zeros(len(ta))
    own[dead] = 1.0 / left[np.searchsorted(death_times, ta[dead])]
    dlog[acted] = np.where(upto > 0, greenwood[np.maximum(upto - 1, 0)], 0.0) - own
    return survival, followed, dlog


def _paired(a: np.ndarray, b: np.ndarray, level: float):
    """The sample's difference ``a - b`` (row 0) and its percentile CI over the resamples
    (the other rows), per threshold: paired, as both come from the same resamples."""
    diff = a - b
    low, high = percentile_ci(diff[1:], level)
    return diff[0], low, high


def _strategy_frame(
    strategy: str,
    model_id: str,
    value: np.ndarray,
    positive: np.ndarray,
    thresholds: np.ndarray,
    level: float,
    *,
    treat_all=None,
    age=None,
    compared=None,
) -> pd.DataFrame:
    """Rows of one strategy by threshold: its net benefit with CI (``value``: sample in row
    0, resamples below) and its paired differences to treat-all, to chronological age and
    to ``compared`` (a ``(model_id, value)`` pair: the previous nested model)."""
    low, high = percentile_ci(value[1:], level)
    row = {
        "net_benefit": value[0],
        "ci_low": low,
        "ci_high": high,
        "positive_rate": positive.mean(axis=0),
    }
    if treat_all is not None:
        d, dl, dh = _paired(value, treat_all, level)
        row.update(
            diff_treat_all=d,
            diff_treat_all_low=dl,
            diff_treat_all_high=dh,
            interventions_avoided=d * (1 - thresholds) / thresholds * 100,
        )
    if age is not None:
        d, dl, dh = _paired(value, age, level)
        row.update(diff_age=d, diff_age_low=dl, diff_age_high=dh)
    if compared is not None:
        d, dl, dh = _paired(value, compared[1], level)
        row.update(
            compared_to=compared[0], diff_compared=d, diff_compared_low=dl, diff_compared_high=dh
        )
    frame = pd.DataFrame(row)
    frame.insert(0, "threshold", thresholds)
    frame.insert(0, "strategy", strategy)
    frame.insert(0, "model_id", model_id)
    return frame


def with_resamples(n: int, n_boot: int, seed) -> np.ndarray:
    """Subject weights: row 0 the sample itself (ones), then ``n_boot`` bootstrap counts
    (``seed``: anything :func:`numpy.random.default_rng` takes)."""
    counts = bootstrap_weights(n, n_boot, np.random.default_rng(seed), compact=True)
    return np.vstack([np.ones((1, n), dtype=counts.dtype), counts])


def decision_curve(
    model: str,
    model_id: str,
    time,
    event,
    probability,
    horizon: float,
    thresholds,
    *,
    age_probability=None,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    linear_from: int | None = None,
) -> pd.DataFrame:
    """``decision_curves`` rows of one score at one horizon: the model, chronological age
    (when ``age_probability`` is given) and treat-all, each with a bootstrap CI, and the
    model's paired differences to treat-all and to age.

    ``probability`` and ``age_probability`` are predicted risks of death by ``horizon``
    (``1 - S(h)``), e.g. cross-fitted; subjects missing either are left out of every row.
    """
    time, event, prob, age, _ = _complete(time, event, probability, age_probability)
    thresholds = np.asarray(thresholds, float)
    n = len(time)
    w = with_resamples(n, n_boot, seed)
    positive = {
        "model": prob[:, None] >= thresholds[None, :],
        "treat_all": np.ones((n, len(thresholds)), dtype=bool),
    }
    if age is not None:
        positive["chronological_age"] = age[:, None] >= thresholds[None, :]
    nb = {
        name: net_benefit(time, event, pos, thresholds, horizon, w, linear_from)
        for name, pos in positive.items()
    }
    frames = [
        _strategy_frame(
            "model",
            model_id,
            nb["model"],
            positive["model"],
            thresholds,
            level,
            treat_all=nb["treat_all"],
            age=nb.get("chronological_age"),
        )
    ]
    if age is not None:
        frames.append(
            _strategy_frame(
                "chronological_age",
                model_id,
                nb["chronological_age"],
                positive["chronological_age"],
                thresholds,
                level,
                treat_all=nb["treat_all"],
            )
        )
    frames.append(
        _strategy_frame(
            "treat_all", model_id, nb["treat_all"], positive["treat_all"], thresholds, level
        )
    )
    return _finish(frames, model, horizon, time, event)


def _finish(frames: list[pd.DataFrame], model: str, horizon: float, time, event) -> pd.DataFrame:
    """Stack a horizon's strategy frames into ``decision_curves`` rows."""
    events = int(((event == 1) & (time <= horizon)).sum())
    out = pd.concat(frames, ignore_index=True).assign(
        model=model, horizon=float(horizon), n=len(time), events=events
    )
    return out.reindex(columns=COLUMNS)


def nested_decision_curves(
    label: str,
    steps: list[tuple[str, np.ndarray]],
    time,
    event,
    *,
    horizons=(1.0, 2.0),
    thresholds=None,
    n_boot: int = 200,
    seed: int = 0,
    k: int = 5,
    penalizer: float = 0.0,
    level: float = 0.95,
    linear_from: int | None = None,
) -> pd.DataFrame:
    """Decision curves of nested Cox models, e.g. the clinical model, then + FaceAge, then +
    the risk score: does a face model add clinical utility to what the clinic already knows?

    Each step's design (n, p) is cross-fitted on the same folds into a risk of death by each
    horizon (:func:`audit.survival.metrics.crossfit_survival`); every step's net benefit and
    treat-all's come from the same subject resamples, so that each step's gain over the step
    before (``compared_to``, ``diff_compared``) is paired. Treat-all's rows carry the first
    step's ``model_id``. The subjects are the common complete cases the nested models were
    fitted on.
    """
    time, event = np.asarray(time, float), np.asarray(event, float)
    hs = usable_horizons(time, event, horizons)
    if not hs or event.sum() < 5 or not steps:
        return pd.DataFrame(columns=COLUMNS)
    thresholds = np.asarray(default_thresholds() if thresholds is None else thresholds, float)
    risk = {
        mid: 1.0 - crossfit_survival(time, event, x, hs, k=k, seed=seed, penalizer=penalizer)
        for mid, x in steps
    }
    n = len(time)
    out = []
    for j, h in enumerate(hs):
        w = with_resamples(n, n_boot, seed + j)
        everyone = np.ones((n, len(thresholds)), dtype=bool)
        nb_all = net_benefit(time, event, everyone, thresholds, h, w, linear_from)
        frames, previous = [], None
        for mid, _ in steps:
            pos = risk[mid][:, j][:, None] >= thresholds[None, :]
            nb = net_benefit(time, event, pos, thresholds, h, w, linear_from)
            frames.append(
                _strategy_frame(
                    "model", mid, nb, pos, thresholds, level, treat_all=nb_all, compared=previous
                )
            )
            previous = (mid, nb)
        frames.append(
            _strategy_frame("treat_all", steps[0][0], nb_all, everyone, thresholds, level)
        )
        out.append(_finish(frames, label, h, time, event))
    return pd.concat(out, ignore_index=True)


def useful_thresholds(curve: pd.DataFrame, against: str = "treat_all") -> list[float]:
    """The thresholds of one decision curve (one score, one horizon) at which the model is
    useful: its net benefit's lower 95% bound is above 0 (treat none) and so is the lower
    bound of its paired difference to ``against``: ``treat_all``, ``chronological_age`` or
    ``compared`` (the nested model before it); against the last two it must beat treat-all
    too."""
    m = curve[curve["strategy"] == "model"]
    column = {
        "treat_all": "diff_treat_all_low",
        "chronological_age": "diff_age_low",
        "compared": "diff_compared_low",
    }[against]
    good = m[(m["ci_low"] > 0) & (m[column] > 0)]
    if against != "treat_all":  # better than the other model, and than the simple strategies
        good = good[good["diff_treat_all_low"] > 0]
    return sorted(float(v) for v in good["threshold"])


def years(horizon: float) -> str:
    """``1 year``, ``2 years``, ``1.5 years``."""
    return f"{horizon:g} year" + ("" if horizon == 1 else "s")


def threshold_runs(values: list[float], grid: list[float]) -> str:
    """``values`` (a subset of ``grid``) as runs of neighbouring grid points, in percent:
    ``"10-35%, 50%"``; ``"none"`` when empty."""
    if not values:
        return "none"
    grid = sorted(grid)
    pos = sorted(grid.index(v) for v in values)
    runs, first = [], pos[0]
    for a, b in zip(pos, pos[1:] + [None]):
        if b != a + 1:
            lo, hi = grid[first] * 100, grid[a] * 100
            runs.append(f"{lo:g}%" if first == a else f"{lo:g}-{hi:g}%")
            first = b
    return ", ".join(runs)


def score_decision_curves(
    model: str, model_id: str, time, event, score, age=None, **options
) -> pd.DataFrame:
    """Decision curves of a score (higher = worse) at each horizon inside the follow-up:
    its risk of death by the horizon from a cross-fitted Cox model of the score, the same
    for chronological age when ``age`` is given, and treat-all. ``options``: those of
    :func:`score_curves` (``horizons``, ``thresholds``, ``n_boot``, ``seed``, ``k``)."""
    parts = score_curves(model, model_id, time, event, score, age, **options)
    curves = [curve for curve, _ in parts]
    return pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=COLUMNS)


def score_curves(
    model: str,
    model_id: str,
    time,
    event,
    score,
    age=None,
    *,
    horizons=(1.0, 2.0),
    thresholds=None,
    n_boot: int = 200,
    seed: int = 0,
    k: int = 5,
    linear_from: int | None = None,
) -> list[tuple[pd.DataFrame, dict]]:
    """Per usable horizon, the score's decision curve and what it was computed from
    (``{"horizon", "time", "event", "risk", "complete", "thresholds", "seed"}``: the complete
    cases' follow-up, their cross-fitted risk of death by the horizon, the mask of complete
    cases among the input rows), for judging the same risks within groups
    (:func:`audit.decisions.subgroups.score_decision_analysis`). Empty when no horizon lies
    inside the follow-up or there are under 5 deaths."""
    time, event, score, age, ok = _complete(time, event, score, age)
    hs = usable_horizons(time, event, horizons)
    if not hs or event.sum() < 5:
        return []
    thresholds = default_thresholds() if thresholds is None else list(thresholds)
    risk = 1.0 - crossfit_survival(time, event, score, hs, k=k, seed=seed)
    age_risk = (
        None if age is None else 1.0 - crossfit_survival(time, event, age, hs, k=k, seed=seed)
    )
    out = []
    for j, h in enumerate(hs):
        curve = decision_curve(
            model,
            model_id,
            time,
            event,
            risk[:, j],
            h,
            thresholds,
            age_probability=None if age_risk is None else age_risk[:, j],
            n_boot=n_boot,
            seed=seed + j,
            linear_from=linear_from,
        )
        out.append(
            (
                curve,
                {
                    "horizon": h,
                    "time": time,
                    "event": event,
                    "risk": risk[:, j],
                    "complete": ok,
                    "thresholds": thresholds,
                    "seed": seed + j,
                    "linear_from": linear_from,
                },
            )
        )
    return out
