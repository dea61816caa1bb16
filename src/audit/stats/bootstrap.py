"""Subject-level bootstrap of additive statistics, vectorised.

fairlearn's ``MetricFrame(n_boot=...)`` refits every metric on every resample (about 70 ms a
resample on a 2-core machine) and resamples rows, not subjects. Every accuracy metric we
report is a function of per-photo sums (``n``, ``sum e``, ``sum |e|``, ``sum x``,
``sum x^2``, ...), so one draw of subject counts ``C`` (B x S) and per-subject, per-group sums
``M`` (G x S x K) give every resample's totals as ``C @ M``, a block of resamples and a
group at a time (bounded memory at a million subjects; the counts are held as bytes).
Written by hand because no library does subject-clustered bootstraps of grouped moments.

References
----------
Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall, 1993 (percentile
intervals). Field CA, Welsh AH. Bootstrapping clustered data. JRSS B 69(3), 2007 (resampling
clusters, here subjects, rather than observations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bootstrap_weights(
    n: int, n_boot: int, rng: np.random.Generator, compact: bool = False
) -> np.ndarray:
    """``(n_boot, n)`` counts of each subject in ``n_boot`` resamples of ``n`` subjects (one
    subject per row of the data: the weights of a subject bootstrap), as floats or, with
    ``compact``, one byte each (:func:`draw_counts`; products with them then go a block of
    resamples at a time, :func:`resample_dot`)."""
    dtype = np.uint8 if compact else np.float64
    if n_boot <= 0 or n == 0:
        return np.zeros((0, n), dtype=dtype)
    return draw_counts(rng, n, n_boot, dtype=dtype)


def draw_counts(
    rng: np.random.Generator, n: int, n_boot: int, chunk: int = 4_000_000, dtype=np.float64
):
    """``(n_boot, n)`` counts of each of ``n`` subjects in ``n_boot`` resamples, drawn a
    block of resamples at a time (about ``chunk`` draws each) and counted into one array:
    only the counts are held whole (1,000 resamples of 100,000 subjects: 0.8 GB as floats,
    0.1 GB as ``uint8``, where drawing them in one call and counting offset draws in one
    ``bincount`` held four float arrays). An integer ``dtype`` too narrow for a count (a
    subject drawn 256 times in one resample of ``n``: probability below 1e-500) widens the
    array. The draws are those of one ``rng.integers(0, n, size=(n_boot, n))`` call: the
    generator's stream of bounded 64-bit integers does not depend on how it is split
    (``tests/test_bootstrap_memory.py`` checks it), so the numbers do not change."""
    counts = np.empty((n_boot, n), dtype=dtype)
    rows = max(1, chunk // max(n, 1))
    for start in range(0, n_boot, rows):
        idx = rng.integers(0, n, size=(min(rows, n_boot - start), n))
        for i, row in enumerate(idx):
            drawn = np.bincount(row, minlength=n)
            if counts.dtype.kind == "u" and drawn.max() > np.iinfo(counts.dtype).max:
                counts = counts.astype(np.uint32)
            counts[start + i] = drawn
    return counts


def resample_dot(weights: np.ndarray, values: np.ndarray, elements: int = 4_000_000):
    """``weights @ values`` for resample weights ``(B, n)`` (counts of any dtype) and
    ``values`` ``(n,)`` or ``(n, k)``, in float64, a block of resamples (about ``elements``
    weights) at a time: never a float copy of all the weights."""
    w = np.atleast_2d(weights)
    v = np.asarray(values, dtype=np.float64)
    out = np.empty((w.shape[0],) + v.shape[1:])
    step = max(1, elements // max(w.shape[1], 1))
    for lo in range(0, w.shape[0], step):
        out[lo : lo + step] = w[lo : lo + step].astype(np.float64) @ v
    return out


@dataclass
class SubjectBootstrap:
    """Subject counts for ``n_boot`` resamples of ``n_subjects`` subjects.

    Parameters
    ----------
    subject_codes : integer code (0..S-1) of each photo's subject.
    n_boot : number of resamples (0: point estimates only).
    rng : a numpy Generator (seeded by the caller).
    """

    subject_codes: np.ndarray
    n_subjects: int
    counts: np.ndarray  # (B, S) how often each subject is drawn in each resample (bytes)

    @classmethod
    def draw(cls, subject_ids, n_boot: int, rng: np.random.Generator) -> "SubjectBootstrap":
        codes, uniques = _codes(subject_ids)
        s = len(uniques)
        if n_boot <= 0 or s == 0:
            counts = np.zeros((0, s), dtype=np.uint8)
        else:
            counts = draw_counts(rng, s, n_boot, dtype=np.uint8)
        return cls(subject_codes=codes, n_subjects=s, counts=counts)

    def totals(
        self,
        columns: np.ndarray,
        group_codes: np.ndarray | None = None,
        n_groups: int = 1,
        elements: int = 4_000_000,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Point and bootstrap totals of per-photo ``columns`` (n x K) within each group.

        Each group's photos are summed per subject (``M_g``, its subjects x K), and each
        resample's totals are its counts of those subjects times ``M_g``, a tile of subjects
        (all resamples, about ``elements`` counts as floats) at a time: every count and
        every ``M_g`` is read once, and memory stays at one tile and the per-subject sums,
        whatever the number of groups, resamples or subjects.

        Returns
        -------
        point : (G, K) totals on the original sample.
        boot : (B, G, K) totals on each resample.
        """
        columns = np.asarray(columns, dtype=np.float64)
        if columns.ndim == 1:
            columns = columns[:, None]
        n, k = columns.shape
        g = np.zeros(n, dtype=np.int64) if group_codes is None else np.asarray(group_codes)
        sums = []  # per group: its subjects (sorted) and their totals
        for group in range(n_groups):
            rows = np.flatnonzero(g == group)
            subjects, inverse = np.unique(self.subject_codes[rows], return_inverse=True)
            m = np.stack(
                [
                    np.bincount(inverse, weights=columns[rows, j], minlength=len(subjects))
                    for j in range(k)
                ],
                axis=-1,
            ).reshape(len(subjects), k)
            sums.append((subjects, m))
        point = np.stack([m.sum(axis=0) for _, m in sums]) if sums else np.zeros((0, k))
        b = self.counts.shape[0]
        boot = np.zeros((b, n_groups, k))
        if b == 0:
            return point, boot
        width = max(1, elements // b)
        for lo in range(0, self.n_subjects, width):
            hi = min(lo + width, self.n_subjects)
            tile = self.counts[:, lo:hi].astype(np.float64)
            for group, (subjects, m) in enumerate(sums):
                first, last = np.searchsorted(subjects, [lo, hi])
                if last > first:
                    boot[:, group] += tile[:, subjects[first:last] - lo] @ m[first:last]
        return point, boot

    def subjects_per_group(
        self, group_codes: np.ndarray | None = None, n_groups: int = 1
    ) -> np.ndarray:
        """Distinct subjects within each group (all photos when ``group_codes`` is None)."""
        if group_codes is None:
            return np.array([len(np.unique(self.subject_codes))])
        codes = np.asarray(group_codes)
        return np.array(
            [len(np.unique(self.subject_codes[codes == g])) for g in range(n_groups)],
            dtype=np.int64,
        )


def _codes(values) -> tuple[np.ndarray, np.ndarray]:
    """Subject codes in order of first appearance: with the rows in an order fixed by their
    values (:func:`audit.stats.groups.canonical_rows`), resamples do not depend on the ids'
    names."""
    import pandas as pd

    codes, uniques = pd.factorize(
        pd.Series(np.asarray(values, dtype=object).astype(str)), sort=False
    )
    return codes.astype(np.int64), np.asarray(uniques)


def percentile_ci(samples: np.ndarray, level: float = 0.95, axis: int = 0):
    """Percentile interval of bootstrap ``samples`` along ``axis`` (NaN-aware)."""
    alpha = (1 - level) / 2
    if samples.shape[axis] == 0:
        shape = np.delete(np.array(samples.shape), axis)
        nan = np.full(tuple(shape), np.nan)
        return nan, nan.copy()
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column gives NaN, as meant
        low = np.nanquantile(samples, alpha, axis=axis)
        high = np.nanquantile(samples, 1 - alpha, axis=axis)
    return low, high
