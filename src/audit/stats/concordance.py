"""Harrell's C for many bootstrap resamples at once, as weights on subjects.

A bootstrap resample of subjects is the original sample with integer weights (how often
each subject was drawn). Harrell's C of the resample equals a weighted C on the original
subjects, where a pair (i, j) counts ``w_i * w_j`` times. Comparable pairs follow lifelines'
``concordance_index`` exactly: i died, and j left later (``T_j > T_i``) or was censored at
the same time; two deaths at the same time are not compared; tied scores count one half.
So one pass over the subjects gives C for every resample, instead of one lifelines call per
resample (about 0.06 s each at 10,000 subjects on a 2-core machine). Written by hand because
neither lifelines nor scikit-survival computes C for a batch of weight vectors.

The subjects are put in one order: by time, deaths before the censored at the same time,
and by risk rank within a group of deaths at one time. Then a death's comparable partners
are exactly the subjects after it, less the later deaths of its own time, and none of those
has a lower rank. Each death needs the weight of the later subjects with a lower (and with
an equal) risk rank: a weighted dominance count, done as a bottom-up merge over the order
(offline divide and conquer): at each of the ``log2 n`` levels, every subject in the earlier
half of a block collects the weight of the later half's subjects of lower rank through one
sort by rank (shared by all resamples) and one running sum per resample. The cost is
``O(B n log n)`` for B resamples, where the block-and-histogram pass it replaces grew as
``B n^1.5`` (200 resamples of 100,000 subjects: 4.6 s against about 22 s; benchmarks/
RESULTS.md).

At registry scale the resamples need not be recomputed at all: C is a ratio of two
quadratic forms in the subject weights, so each resample's C is, to first order, the plain C
plus the resample's weights times each subject's empirical influence value (the derivative of
C in that subject's weight: the infinitesimal jackknife). :func:`concordance_influence` gives
the influence values from two dominance passes with unit weights, ``O(n log n)`` once;
:func:`concordance_resamples` then gives every resample as one matrix-vector product. The
linearised resamples' variance is the infinitesimal-jackknife variance, which the bootstrap
variance approaches as ``n`` grows (the terms left out are ``O(1/n^2)``); below a configured
number of subjects the exact resamples are used (``[survival] resamples`` and
``linear_from`` in the config).

References
----------
Harrell FE, Lee KL, Mark DB. Multivariable prognostic models. Stat Med 15, 1996.
Bentley JL. Multidimensional divide-and-conquer. Commun ACM 23, 1980 (dominance counting).
Efron B. The jackknife, the bootstrap and other resampling plans. SIAM, 1982 (ch. 6: the
infinitesimal jackknife). Davison AC, Hinkley DV. Bootstrap methods and their application.
Cambridge, 1997 (2.7.2-2.7.4: empirical influence values and the linear approximation
``t*_L = t + sum_j (f*_j - 1) l_j`` of a bootstrap statistic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.stats.bootstrap import resample_dot


def weighted_concordance(
    time,
    event,
    risk,
    weights,
    event_weight=None,
    tau: float | None = None,
    chunk_elements: int = 20_000_000,
) -> np.ndarray:
    """Harrell's C of ``risk`` (higher = earlier death) under each row of ``weights``.

    Parameters
    ----------
    time, event, risk : one value per subject (event 1 = death).
    weights : (B, n) non-negative weights; ones for the plain C, bootstrap counts for
        resamples.
    event_weight : an extra weight on each pair by its earlier subject (Uno's C: the squared
        inverse probability of remaining uncensored, ``1 / G(T_i)^2``).
    tau : pairs whose earlier death is after ``tau`` do not count (Uno's truncation).
    chunk_elements : resamples go through in chunks of about this many weights (memory).

    Returns
    -------
    (B,) C per weight row; NaN where no pair is comparable.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    if tau is not None:
        event = event & (time < tau)
    risk = np.asarray(risk, dtype=float)
    w = np.atleast_2d(np.asarray(weights))  # counts stay bytes: converted a chunk at a time
    ew = np.ones(len(time)) if event_weight is None else np.asarray(event_weight, dtype=float)
    n, n_boot = len(time), w.shape[0]
    if n == 0 or not event.any():
        return np.full(n_boot, np.nan)
    p = _PairOrder.of(time, event, risk)
    order, r, run_end, tie_end, deaths = p.order, p.r, p.run_end, p.tie_end, p.deaths
    plans = _merge_plan(r, deaths)
    step = max(1, int(chunk_elements // max(n, 1)))
    out = np.full(n_boot, np.nan)
    # bootstrap counts are exact in float32 (half the memory traffic) while sums stay < 2**24
    whole = w.dtype.kind in "ub" or bool(np.all(w == np.round(w)))
    exact = whole and float(w.sum(axis=1, dtype=np.float64).max(initial=0.0)) < 2**24
    dtype = np.float32 if exact else np.float64
    for lo in range(0, n_boot, step):
        wt = np.ascontiguousarray(w[lo : lo + step][:, order].T, dtype=dtype)  # (n, b)
        suffix = np.zeros((n + 1, wt.shape[1]))  # suffix[a] = weight of subjects a..n-1
        suffix[:n] = np.cumsum(wt[::-1], axis=0, dtype=np.float64)[::-1]
        pairs_i = suffix[run_end[deaths]]  # everyone after the death's own run
        less_i, leq_i = _dominance(wt, plans, len(deaths))
        # later subjects of rank <= the death's, less its later equal-rank ties of its time
        leq_i -= suffix[deaths + 1] - suffix[tie_end[deaths]]
        wi = wt[deaths] * ew[order][deaths][:, None]
        concordant = (wi * less_i).sum(axis=0)
        tied = (wi * (leq_i - less_i)).sum(axis=0)
        pairs = (wi * pairs_i).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo : lo + step] = np.where(pairs > 0, (concordant + 0.5 * tied) / pairs, np.nan)
    return out


def concordance_resamples(
    time,
    event,
    risk,
    weights,
    linear_from: int | None,
    event_weight=None,
    tau: float | None = None,
) -> np.ndarray:
    """C under each row of ``weights``: exact (:func:`weighted_concordance`) or, from
    ``linear_from`` subjects on (None: never), each row's first-order expansion around the
    plain C, ``C + (w - 1) @ U`` with ``U`` the influence values of
    :func:`concordance_influence`, kept within [0, 1] where C lives (the expansion can leave
    it only in small samples, where the exact resamples are the right choice anyway)."""
    if linear_from is None or len(np.asarray(time)) < linear_from:
        return weighted_concordance(time, event, risk, weights, event_weight, tau)
    w = np.atleast_2d(np.asarray(weights))
    point, influence = concordance_influence(time, event, risk, event_weight, tau)
    if np.isnan(point):
        return np.full(w.shape[0], np.nan)
    return np.clip(point + (resample_dot(w, influence) - influence.sum()), 0.0, 1.0)


def concordance_influence(
    time, event, risk, event_weight=None, tau: float | None = None
) -> tuple[float, np.ndarray]:
    """Harrell's (or, with ``event_weight`` and ``tau``, Uno's) C and each subject's
    empirical influence value: the derivative of C in the subject's weight at unit weights.

    With ``a_ij`` the concordance of a comparable pair (1, 1/2 for tied scores, 0) and
    ``p_ij`` its comparability, ``C(w) = A(w) / P(w)`` where ``A = sum w_i w_j e_i a_ij`` and
    ``P = sum w_i w_j e_i p_ij`` (``e``: the event weight of the earlier subject), so
    ``dC/dw_k = (dA_k - C dP_k) / P`` and ``dA_k`` is subject k's concordance as the earlier
    subject (a death; weighted by ``e_k``) plus as the later one. The influence values sum to
    zero (C does not change when every weight is scaled); the infinitesimal-jackknife
    variance of C is ``sum U_k^2``.

    Returns
    -------
    (C, U): NaN and zeros where no pair is comparable.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    if tau is not None:
        event = event & (time < tau)
    risk = np.asarray(risk, dtype=float)
    ew = np.ones(len(time)) if event_weight is None else np.asarray(event_weight, dtype=float)
    n = len(time)
    if n == 0 or not event.any():
        return float("nan"), np.zeros(n)
    p = _PairOrder.of(time, event, risk)
    order, d, r, e, deaths = p.order, p.d, p.r, ew[p.order], p.deaths
    run_start, run_end, tie_start, tie_end = p.run_start, p.run_end, p.tie_start, p.tie_end
    ones = np.ones((n, 1))
    # as the earlier subject (deaths): later subjects of lower / equal rank, as in the C
    less, leq = _dominance(ones, _merge_plan(r, deaths), len(deaths))
    later_ties = (tie_end[deaths] - deaths - 1)[:, None]  # its later equal-rank deaths
    leq -= later_ties
    early_a = np.zeros(n)
    early_p = np.zeros(n)
    early_a[deaths] = (less + 0.5 * (leq - less))[:, 0]
    early_p[deaths] = n - run_end[deaths]
    # as the later subject: earlier deaths outside its own run, of higher / equal rank; in
    # the reversed order with reversed ranks that is the same dominance count
    de = (d * e)[:, None]
    flip = n - 1 - np.arange(n)
    higher, geq = _dominance(de[::-1], _merge_plan((r.max() - r)[::-1], np.arange(n)), n)
    higher, geq = higher[flip, 0], geq[flip, 0]
    before = np.r_[0.0, np.cumsum(de[:, 0])]  # before[k]: event weight of deaths before k
    geq -= before[np.arange(n)] - before[tie_start]  # earlier equal-rank deaths of its run
    late_a = higher + 0.5 * (geq - higher)
    late_p = before[run_start]
    a_total = float(np.sum(e * early_a))
    p_total = float(np.sum(e * early_p))
    if p_total <= 0:
        return float("nan"), np.zeros(n)
    c = a_total / p_total
    u_sorted = (e * early_a + late_a - c * (e * early_p + late_p)) / p_total
    influence = np.empty(n)
    influence[order] = u_sorted
    return c, influence


@dataclass(frozen=True)
class _PairOrder:
    """The subjects in the order both passes use: by time, deaths before the censored at the
    same time, by risk rank within a group of deaths at one time; with each subject's run
    of deaths at its time (itself for the censored: ``run_start``, ``run_end`` exclusive)
    and its run of equal time and equal rank (``tie_start``, ``tie_end``)."""

    order: np.ndarray
    d: np.ndarray
    r: np.ndarray
    deaths: np.ndarray
    run_start: np.ndarray
    run_end: np.ndarray
    tie_start: np.ndarray
    tie_end: np.ndarray

    @classmethod
    def of(cls, time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> _PairOrder:
        n = len(time)
        rank = np.unique(risk, return_inverse=True)[1].ravel()
        order = np.lexsort((rank, ~event, time))
        t, d, r = time[order], event[order], rank[order]

        def runs(new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            starts, which = np.flatnonzero(new), np.cumsum(new) - 1
            return starts[which], np.r_[starts[1:], n][which]

        new_run = np.r_[True, (t[1:] != t[:-1]) | (d[1:] != d[:-1])]
        run_start, run_end = runs(new_run)
        tie_start, tie_end = runs(new_run | np.r_[True, r[1:] != r[:-1]])
        return cls(order, d, r, np.flatnonzero(d), run_start, run_end, tie_start, tie_end)


def _merge_plan(rank: np.ndarray, targets: np.ndarray) -> list[tuple]:
    """Per merge level, what :func:`_dominance` needs (independent of the weights): the
    subjects of the later halves sorted by (block, rank), and for each target in an earlier
    half where its block's sorted later half starts and where the target's rank would go
    in it (before equal ranks: lower only; after them: lower or equal)."""
    n = len(rank)
    pos = np.arange(n)
    span = int(rank.max()) + 2 if n else 1
    plans = []
    half = 1
    while half < n:
        block = pos // (2 * half)
        later = np.flatnonzero((pos // half) % 2 == 1)
        key = block[later] * span + rank[later]
        by_key = np.argsort(key, kind="stable")
        perm, sorted_key = later[by_key], key[by_key]
        early = targets[(targets // half) % 2 == 0]
        which = np.flatnonzero((targets // half) % 2 == 0)
        base = block[early] * span
        plans.append(
            (
                perm,
                np.searchsorted(sorted_key, base, side="left"),
                np.searchsorted(sorted_key, base + rank[early], side="left"),
                np.searchsorted(sorted_key, base + rank[early], side="right"),
                which,
            )
        )
        half *= 2
    return plans


def _dominance(wt: np.ndarray, plans: list[tuple], n_targets: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (n_targets, B) arrays: for each target subject, the weight of the subjects after
    it in the order whose rank is lower, and lower or equal, for every resample; ``wt`` holds
    the weights as (subjects, resamples), so that each gather moves whole rows."""
    less = np.zeros((n_targets, wt.shape[1]), dtype=np.float64)
    leq = np.zeros_like(less)
    for perm, first, at_less, at_leq, which in plans:
        running = np.zeros((len(perm) + 1, wt.shape[1]), dtype=wt.dtype)
        np.cumsum(wt[perm], axis=0, out=running[1:])
        start = running[first]
        less[which] += running[at_less] - start
        leq[which] += running[at_leq] - start
    return less, leq
