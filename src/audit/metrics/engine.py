"""The one engine behind every per-group FaceAge metric: the ``accuracy`` table, the
``fairness`` table and :func:`audit.faceage_metrics` all take their values from here.

A group's value is fairlearn's ``MetricFrame`` result (one plain metric callable per metric,
as fairlearn intends); its interval comes from the vectorised subject bootstrap
(:mod:`audit.stats.bootstrap`): every metric is a function of per-photo totals, so one draw
of subject counts gives every resample of every group at once, and the same resamples give
the overall value, so a difference to overall accounts for the group being part of the
whole. Written by hand because fairlearn's own ``n_boot`` refits every metric on every
resample (about 70 ms each on a 2-core machine) and resamples photos, not subjects.

Metrics (error = FaceAge - age): ``mae``, ``mean_error``, ``pearson_r``, ``within_5y``, and
the error corrected for regression to the mean (age estimators over-predict the young and
under-predict the old): ``mean_error_age_adjusted``, a group's mean residual of the error on
its overall trend in age (the trend refitted in every resample), and ``mae_age_adjusted``,
the mean absolute residual (the trend fitted once). The trend is a restricted cubic spline
of age (Harrell's four knots) where the ages allow one, else a line; how far it bends away
from a line is :meth:`FaceAgeEngine.curvature`.

References
----------
Weerts H et al. Fairlearn: assessing and improving fairness of AI systems. JMLR 24, 2023.
Smith SM et al. Estimation of brain age delta from brain imaging. NeuroImage 200, 2019.
Harrell FE. Regression modeling strategies, 2nd ed. Springer, 2015 (2.4.5: restricted cubic
splines, knots at the 5th, 35th, 65th and 95th percentiles).
Field CA, Welsh AH. Bootstrapping clustered data. JRSS B 69(3), 2007.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.stats.bootstrap import SubjectBootstrap
from audit.stats.groups import label_codes

FACEAGE_METRICS = [
    "mae",
    "mean_error",
    "pearson_r",
    "within_5y",
    "mae_age_adjusted",
    "mean_error_age_adjusted",
]


def spline_knots(age: np.ndarray) -> np.ndarray | None:
    """Harrell's four knots for a restricted cubic spline of age (the 5th, 35th, 65th and
    95th percentiles), or None when the ages take too few values for one (a line only)."""
    age = np.asarray(age, float)
    if len(np.unique(age)) < 8:
        return None
    knots = np.quantile(age, [0.05, 0.35, 0.65, 0.95])
    return knots if np.all(np.diff(knots) > 0) else None


def age_basis(age: np.ndarray, knots: np.ndarray | None, center: float) -> np.ndarray:
    """``(n, k)`` design of the error's trend in age: 1, centred age and, with ``knots``,
    the restricted cubic spline terms (linear beyond the outer knots; Harrell 2015, 2.4.5),
    scaled by the squared knot span so that every column is in years."""
    x = np.asarray(age, float)
    cols = [np.ones_like(x), x - center]
    if knots is not None:
        t = knots
        k = len(t)

        def p3(u):
            return np.maximum(u, 0.0) ** 3

        span = (t[-1] - t[0]) ** 2
        for j in range(k - 2):
            cols.append(
                (
                    p3(x - t[j])
                    - p3(x - t[k - 2]) * (t[k - 1] - t[j]) / (t[k - 1] - t[k - 2])
                    + p3(x - t[k - 1]) * (t[k - 2] - t[j]) / (t[k - 1] - t[k - 2])
                )
                / span
            )
    return np.column_stack(cols)


_N_BASE = 10  # [1, e, |e|, |e|<=5, xc, yc, xc^2, yc^2, xc*yc, |e - fit|]


def _faceage_columns(
    x: np.ndarray, y: np.ndarray, basis: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """Per-photo columns whose group totals give every FaceAge metric and refit the error's
    age trend in any resample: [1, e, |e|, |e|<=5, xc, yc, xc^2, yc^2, xc*yc, |e - B beta|],
    then the basis B (k), its products B_i B_j (i <= j) and B_i e."""
    xc, yc = x - x.mean(), y - y.mean()
    e = y - x
    k = basis.shape[1]
    iu = np.triu_indices(k)
    products = (basis[:, :, None] * basis[:, None, :])[:, iu[0], iu[1]]
    return np.column_stack(
        [
            np.ones_like(x),
            e,
            np.abs(e),
            (np.abs(e) <= 5).astype(float),
            xc,
            yc,
            xc * xc,
            yc * yc,
            xc * yc,
            np.abs(e - basis @ beta),
            basis,
            products,
            basis * e[:, None],
        ]
    )


def _basis_moments(t: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sum B B', sum B e)``, shapes (..., k, k) and (..., k), from totals (..., K) of
    :func:`_faceage_columns`."""
    iu = np.triu_indices(k)
    start = _N_BASE + k
    products = t[..., start : start + len(iu[0])]
    bb = np.zeros(t.shape[:-1] + (k, k))
    bb[..., iu[0], iu[1]] = products
    bb[..., iu[1], iu[0]] = products
    return bb, t[..., start + len(iu[0]) : start + len(iu[0]) + k]


def _error_fit(t: np.ndarray, k: int, columns: int | None = None) -> np.ndarray:
    """Least-squares coefficients (..., k) of error on the first ``columns`` (default all k)
    terms of the age basis, from totals (..., K) of :func:`_faceage_columns`; the unused
    terms get 0. NaN where the fit is not determined."""
    m = columns or k
    bb, be = _basis_moments(t, k)
    beta = np.full(t.shape[:-1] + (k,), np.nan)
    with np.errstate(all="ignore"):
        sub, rhs = bb[..., :m, :m], be[..., :m]
        ok = np.abs(np.linalg.det(sub)) > 1e-12 * np.maximum(
            np.prod(np.diagonal(sub, axis1=-2, axis2=-1), axis=-1), 1e-300
        )
        fill = np.where(ok[..., None, None], sub, np.eye(m))
        solved = np.linalg.solve(fill, rhs[..., None])[..., 0]
    beta[..., :m] = np.where(ok[..., None], solved, np.nan)
    beta[..., m:] = np.where(ok[..., None], 0.0, np.nan)
    return beta


def _faceage_from_totals(t: np.ndarray, beta: np.ndarray, k: int) -> dict[str, np.ndarray]:
    n = t[..., 0]
    with np.errstate(all="ignore"):
        sxx = t[..., 6] - t[..., 4] ** 2 / n
        syy = t[..., 7] - t[..., 5] ** 2 / n
        sxy = t[..., 8] - t[..., 4] * t[..., 5] / n
        trend = (beta * t[..., _N_BASE : _N_BASE + k]).sum(axis=-1)
        return {
            "mae": t[..., 2] / n,
            "mean_error": t[..., 1] / n,
            "pearson_r": sxy / np.sqrt(sxx * syy),
            "within_5y": t[..., 3] / n,
            "mae_age_adjusted": t[..., 9] / n,
            "mean_error_age_adjusted": (t[..., 1] - trend) / n,
        }


def _curvature(t: np.ndarray, k: int) -> np.ndarray:
    """Root mean square over photos of (spline trend - straight-line trend) of the error, in
    years, from totals (..., K): how far the error's dependence on age bends away from a line
    (0 without knots)."""
    if k <= 2:
        return np.zeros(t.shape[:-1])
    spline, line = _error_fit(t, k), _error_fit(t, k, 2)
    d = spline - line  # (..., k): the difference of the two fits as a combination of B
    bb, _ = _basis_moments(t, k)
    with np.errstate(all="ignore"):
        ms = np.einsum("...i,...ij,...j->...", d, bb, d) / t[..., 0]
    return np.sqrt(np.maximum(ms, 0.0))


def _faceage_metric_fns(basis_of, beta: np.ndarray) -> dict:
    """fairlearn metric callables ``f(y_true, y_pred)`` (age, FaceAge) for the group values;
    ``basis_of(age)`` gives the age basis the error's trend ``beta`` was fitted on."""

    def adjusted(y_true, y_pred):
        t = np.asarray(y_true, float)
        return (np.asarray(y_pred, float) - t) - basis_of(t) @ beta

    return {
        "mae": lambda t, p: float(np.mean(np.abs(np.asarray(p) - np.asarray(t)))),
        "mean_error": lambda t, p: float(np.mean(np.asarray(p) - np.asarray(t))),
        "pearson_r": lambda t, p: (
            float(np.corrcoef(t, p)[0, 1])
            if len(t) > 2 and np.std(t) > 0 and np.std(p) > 0
            else float("nan")
        ),
        "within_5y": lambda t, p: float(np.mean(np.abs(np.asarray(p) - np.asarray(t)) <= 5)),
        "mae_age_adjusted": lambda t, p: float(np.mean(np.abs(adjusted(t, p)))),
        "mean_error_age_adjusted": lambda t, p: float(np.mean(adjusted(t, p))),
    }


def metric_frame(
    metrics: dict, y_true, y_pred, codes: np.ndarray | None = None, sample_params=None
) -> tuple[pd.Series, pd.DataFrame | None]:
    """fairlearn's overall values and, with group ``codes`` (0..G-1, -1 left out), its values
    by group indexed by code (always a dict of metrics, so the shape never depends on the
    input)."""
    from fairlearn.metrics import MetricFrame

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    params = sample_params or {}
    keep = np.ones(len(y_true), bool) if codes is None else np.asarray(codes) >= 0
    sens = np.zeros(int(keep.sum()), np.int64) if codes is None else np.asarray(codes)[keep]
    mf = MetricFrame(
        metrics=metrics,
        y_true=y_true[keep],
        y_pred=y_pred[keep],
        sensitive_features=sens,
        sample_params={m: {k: np.asarray(v)[keep] for k, v in p.items()} for m, p in params.items()}
        or None,
    )
    return mf.overall, (mf.by_group if codes is not None else None)


@dataclass(frozen=True)
class GroupValues:
    """One grouping's metrics: ``names`` (G groups in their natural order), photos ``n`` and
    distinct ``subjects`` per group (G,), fairlearn ``value`` (G,) and bootstrap ``boot``
    (B, G) per metric."""

    names: list
    n: np.ndarray
    subjects: np.ndarray
    value: dict[str, np.ndarray]
    boot: dict[str, np.ndarray]


class FaceAgeEngine:
    """FaceAge metrics of one model on one set of photos, overall and for any grouping.

    Parameters
    ----------
    age, faceage : chronological and predicted age per photo (finite).
    subject_ids : each photo's subject; resamples draw subjects.
    n_boot : number of resamples (0: values only).
    rng : a seeded numpy Generator.
    """

    def __init__(
        self,
        age,
        faceage,
        subject_ids,
        n_boot: int,
        rng: np.random.Generator,
        fairlearn_max_rows: int | None = None,
    ):
        self.x, self.y = np.asarray(age, float), np.asarray(faceage, float)
        self.by_fairlearn = fairlearn_max_rows is None or len(self.x) <= fairlearn_max_rows
        self.frame: pd.DataFrame | None = None  # the rows, when built by :meth:`of`
        x, y = self.x, self.y
        self.knots = spline_knots(x) if len(x) else None
        center = float(x.mean()) if len(x) else 0.0
        self._basis_of = lambda a: age_basis(a, self.knots, center)
        basis = self._basis_of(x)
        self.k = basis.shape[1]
        # the error's trend in age, fitted once; refitted on each resample below
        self.beta = (
            np.linalg.lstsq(basis, y - x, rcond=None)[0] if len(x) > self.k else np.zeros(self.k)
        )
        self.columns = _faceage_columns(x, y, basis, self.beta)
        self.bootstrap = SubjectBootstrap.draw(np.asarray(subject_ids), n_boot, rng)
        self._over_point, over_boot = self.bootstrap.totals(self.columns)
        self._over_boot = over_boot
        self.beta_boot = _error_fit(over_boot, self.k)  # (B, 1, k)
        self.metric_fns = _faceage_metric_fns(self._basis_of, self.beta)

    @classmethod
    def of(
        cls, frame: pd.DataFrame, n_boot: int, seed: int, fairlearn_max_rows: int | None = None
    ) -> FaceAgeEngine:
        """The engine on the rows of ``frame`` (``subject_id``, ``age``, ``faceage``) whose
        age and FaceAge are both finite; those rows, index reset, are its ``frame``. Group
        values come from fairlearn up to ``fairlearn_max_rows`` rows (None: always), above
        from the totals (:meth:`values`)."""
        finite = np.isfinite(pd.to_numeric(frame["age"], errors="coerce")) & np.isfinite(
            pd.to_numeric(frame["faceage"], errors="coerce")
        )
        rows = frame[finite.to_numpy()].reset_index(drop=True)
        engine = cls(
            rows["age"],
            rows["faceage"],
            rows["subject_id"],
            n_boot,
            np.random.default_rng(seed),
            fairlearn_max_rows,
        )
        engine.frame = rows
        return engine

    @property
    def n_subjects(self) -> int:
        return self.bootstrap.n_subjects

    def values(self, labels: pd.Series | None = None) -> GroupValues:
        """Metrics for each group of ``labels`` (one per photo; missing labels left out), or
        for all photos as the one group ``all`` when ``labels`` is None. The values are
        fairlearn's, or, above the engine's ``fairlearn_max_rows``, the same formulas on the
        group's totals (equal to fairlearn's to 1e-9, tested): fairlearn's ``MetricFrame``
        stacks every column element by element, about 20 s a fairness table at 100,000
        photos."""
        if labels is None:
            names, codes = ["all"], None
        else:
            names, codes = label_codes(pd.Series(np.asarray(labels, dtype=object)))
        g = len(names)
        point, samples = self.bootstrap.totals(self.columns, codes, g)
        boot = _faceage_from_totals(samples, self.beta_boot, self.k)
        if len(self.x) == 0:
            value = {m: np.full(g, np.nan) for m in FACEAGE_METRICS}
        elif not self.by_fairlearn:
            value = _faceage_from_totals(point, self.beta[None, :], self.k)
            # fairlearn's callable: no correlation from two photos or a constant column
            value["pearson_r"] = np.where(point[:, 0] > 2, value["pearson_r"], np.nan)
        else:
            overall, by_group = metric_frame(self.metric_fns, self.x, self.y, codes)
            value = {
                m: (
                    np.array([float(overall[m])])
                    if codes is None
                    else by_group[m].reindex(range(g)).to_numpy(float)
                )
                for m in FACEAGE_METRICS
            }
        return GroupValues(
            names=list(names),
            n=point[:, 0].astype(np.int64),
            subjects=self.bootstrap.subjects_per_group(codes, g),
            value=value,
            boot=boot,
        )

    def curvature(self) -> tuple[float, np.ndarray] | None:
        """The error's bend in age: the root mean square in years of the spline trend minus
        the straight-line trend, and its (B,) resamples; None without a spline."""
        if self.knots is None:
            return None
        return (
            float(_curvature(self._over_point, self.k)[0]),
            _curvature(self._over_boot, self.k)[:, 0],
        )
