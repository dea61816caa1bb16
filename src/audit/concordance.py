"""Harrell's C for many bootstrap resamples at once, as weights on subjects.

A bootstrap resample of subjects is the original sample with integer weights (how often
each subject was drawn). Harrell's C of the resample equals a weighted C on the original
subjects, where a pair (i, j) counts ``w_i * w_j`` times. Comparable pairs follow lifelines'
``concordance_index`` exactly: i died, and j left later (``T_j > T_i``) or was censored at
the same time; two deaths at the same time are not compared; tied scores count one half.
So one pass over the subjects gives C for every resample, instead of one lifelines call per
resample (MEASURED.md: about 0.06 s each at 10,000 subjects). Written by hand because
neither lifelines nor scikit-survival computes C for a batch of weight vectors.

The pass sorts subjects by time and cuts them into blocks at distinct times. Pairs across
blocks only need the risk ranks of later subjects (a running weight histogram by rank);
pairs within a block are counted with a small comparison matrix.

References
----------
Harrell FE, Lee KL, Mark DB. Multivariable prognostic models. Stat Med 15, 1996.
"""

from __future__ import annotations

import numpy as np


def weighted_concordance(time, event, risk, weights, block: int | None = None,
                         event_weight=None, tau: float | None = None) -> np.ndarray:
    """Harrell's C of ``risk`` (higher = earlier death) under each row of ``weights``.

    Parameters
    ----------
    time, event, risk : one value per subject (event 1 = death).
    weights : (B, n) non-negative weights; ones for the plain C, bootstrap counts for
        resamples.
    block : subjects per block (default grows with the square root of n).
    event_weight : an extra weight on each pair by its earlier subject (Uno's C: the squared
        inverse probability of remaining uncensored, ``1 / G(T_i)^2``).
    tau : pairs whose earlier death is after ``tau`` do not count (Uno's truncation).

    Returns
    -------
    (B,) C per weight row; NaN where no pair is comparable.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    if tau is not None:
        event = event & (time < tau)
    risk = np.asarray(risk, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    ew = np.ones(len(time)) if event_weight is None else np.asarray(event_weight, dtype=float)
    n = len(time)
    n_boot = w.shape[0]
    if n == 0:
        return np.full(n_boot, np.nan)
    _, rank = np.unique(risk, return_inverse=True)
    n_ranks = int(rank.max()) + 1
    order = np.argsort(time, kind="stable")
    t_sorted = time[order]
    starts = np.r_[0, np.flatnonzero(np.diff(t_sorted)) + 1]
    size = block or int(max(256, 2 * np.sqrt(n)))
    cuts = [0]
    for s in starts[1:]:
        if s - cuts[-1] >= size:
            cuts.append(int(s))
    cuts.append(n)

    later = np.zeros((n_boot, n_ranks))  # weight of subjects in later blocks, by risk rank
    concordant = np.zeros(n_boot)
    tied = np.zeros(n_boot)
    pairs = np.zeros(n_boot)
    for k in range(len(cuts) - 2, -1, -1):
        idx = order[cuts[k]:cuts[k + 1]]
        deaths = idx[event[idx]]
        if len(deaths):
            wd = w[:, deaths] * ew[deaths]
            rd = rank[deaths]
            if k < len(cuts) - 2:
                cum = np.concatenate([np.zeros((n_boot, 1)), np.cumsum(later, axis=1)], axis=1)
                less = cum[:, rd]  # later subjects with a lower risk: concordant
                leq = cum[:, rd + 1]
                concordant += (wd * less).sum(axis=1)
                tied += (wd * (leq - less)).sum(axis=1)
                pairs += wd.sum(axis=1) * cum[:, -1]
            ti, tj = time[deaths][:, None], time[idx][None, :]
            comparable = (ti < tj) | ((ti == tj) & ~event[idx][None, :])
            ri, rj = rd[:, None], rank[idx][None, :]
            wj = w[:, idx]
            for matrix, total in ((comparable & (rj < ri), concordant),
                                  (comparable & (rj == ri), tied), (comparable, pairs)):
                total += ((wd @ matrix.astype(float)) * wj).sum(axis=1)
        uniq, inverse = np.unique(rank[idx], return_inverse=True)
        onehot = np.zeros((len(idx), len(uniq)))
        onehot[np.arange(len(idx)), inverse] = 1.0
        later[:, uniq] += w[:, idx] @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (concordant + 0.5 * tied) / pairs, np.nan)
