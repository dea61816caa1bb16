"""Drift of a new cohort against a reference run: metadata, image properties, predictions and
embeddings (evidently), with decisions whose false-alarm rate is controlled.

Per feature, evidently's ``ValueDrift`` computes a test (two-sample Kolmogorov-Smirnov for
numbers) and an effect size (normed Wasserstein distance for numbers, Jensen-Shannon
distance for categories); categories are tested with the two-sample chi-square test of the
2 x k table (evidently's own chi-square takes the reference shares as known). A feature has
``drifted`` when its Holm-adjusted p-value, over all features of the run, is below
``alpha`` *and* the effect is at least ``min_effect``: with 10,000 subjects a test alone calls
trivial differences drift, an effect size alone has no error rate. Embeddings: the unbiased MMD^2
of evidently's MMD drift method (RBF kernel, median-distance bandwidth) on at most
``embedding_max_n`` vectors per side, with a seeded permutation p-value in place of its fixed
threshold or unseeded bootstrap (measured here: those disagreed on the same data, and its report's
t-SNE plot takes most of a minute). evidently's HTML report of the per-feature drift is kept as an
artifact.

References
----------
Gretton A et al. A kernel two-sample test. JMLR 13, 2012 (MMD, unbiased statistic).
Holm S. A simple sequentially rejective multiple test procedure. Scand J Stat 6, 1979.
Rabanser S et al. Failing loudly: an empirical study of methods for detecting dataset
shift. NeurIPS 2019.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DRIFT_COLUMNS = [
    "model",
    "feature",
    "kind",
    "method",
    "statistic",
    "p_value",
    "effect",
    "effect_method",
    "drifted",
    "n_reference",
    "n_current",
]
METADATA_NUMERIC = ["age"]
METADATA_CATEGORICAL = ["sex", "race", "cancer_type", "site", "camera"]
IMAGE_NUMERIC = [
    "brightness",
    "contrast",
    "sharpness",
    "width",
    "height",
    "face_box_frac",
    "jpeg_quality",
]


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        return out
    order = ok[np.argsort(p[ok])]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, features: list[tuple[str, str, str, str | None]]
):
    """evidently ``ValueDrift`` test and effect size for each ``(column, kind, type, model)``
    (type ``num`` or ``cat``) present in both frames. Returns ``(rows, snapshot)``; the
    decision is taken later over all features (:func:`decide`)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    usable = [
        f
        for f in features
        if f[0] in reference.columns
        and f[0] in current.columns
        and reference[f[0]].notna().sum() > 1
        and current[f[0]].notna().sum() > 1
    ]
    if not usable:
        return [], None
    num = [c for c, _, t, _ in usable if t == "num"]
    cat = [c for c, _, t, _ in usable if t == "cat"]
    cols = num + cat

    def frame(df):
        out = df[cols].copy()
        for c in num:
            out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
        for c in cat:
            out[c] = out[c].astype(object).where(out[c].notna(), None).astype(str)
        return out

    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    metrics = []
    for c, _, t, _ in usable:
        metrics.append(ValueDrift(column=c, method="ks" if t == "num" else "chisquare"))
        metrics.append(
            ValueDrift(column=c, method="wasserstein" if t == "num" else "jensenshannon")
        )
    ref_frame, cur_frame = frame(reference), frame(current)
    snapshot = Report(metrics).run(
        Dataset.from_pandas(cur_frame, data_definition=definition),
        Dataset.from_pandas(ref_frame, data_definition=definition),
    )
    values = [m["value"] for m in snapshot.dict()["metrics"]]
    rows = []
    for i, (c, kind, t, model) in enumerate(usable):
        # evidently's chi-square compares the current counts with the reference *shares*
        # taken as known, which over-calls drift when the reference is small; categories
        # get the two-sample chi-square test of the 2 x k table instead (scipy).
        p = float(values[2 * i]) if t == "num" else _two_sample_chi2(ref_frame[c], cur_frame[c])
        rows.append(
            {
                "model": model,
                "feature": c,
                "kind": kind,
                "method": (
                    "Kolmogorov-Smirnov (evidently)" if t == "num" else "chi-square, two-sample"
                ),
                "statistic": None,
                "p_value": p,
                "effect": float(values[2 * i + 1]),
                "effect_method": (
                    "Wasserstein distance (normed)" if t == "num" else "Jensen-Shannon distance"
                ),
                "drifted": None,
                "n_reference": int(reference[c].notna().sum()),
                "n_current": int(current[c].notna().sum()),
                "_type": t,
            }
        )
        if t == "num":
            _constant_reference(rows[-1], ref_frame[c], cur_frame[c])
    return rows, snapshot


def _constant_reference(row: dict, reference: pd.Series, current: pd.Series) -> None:
    """A numeric feature constant in the reference has no spread to norm a distance by
    (evidently's normed Wasserstein divides by a floor and gave effects of 32,000 that
    flattened the chart): its effect becomes the share of current values that differ from
    the reference's one value, labelled as such (0 to 1, judged against the numeric floor)."""
    ref = reference.dropna()
    if ref.empty or ref.nunique() > 1:
        return
    value = float(ref.iloc[0])
    cur = current.dropna()
    row["effect"] = float((~np.isclose(cur.to_numpy(float), value)).mean()) if len(cur) else 0.0
    row["effect_method"] = f"share of values other than {value:.4g} (constant in the reference)"


def _two_sample_chi2(reference: pd.Series, current: pd.Series) -> float:
    from scipy.stats import chi2_contingency

    table = pd.crosstab(
        pd.concat([reference, current], ignore_index=True),
        np.r_[np.zeros(len(reference)), np.ones(len(current))],
    )
    if table.shape[0] < 2:
        return 1.0
    return float(chi2_contingency(table.to_numpy(), correction=False).pvalue)


def embedding_drift(reference: np.ndarray, current: np.ndarray, model: str, config) -> dict:
    """Unbiased MMD^2 (evidently's MMD2u, RBF kernel with the median-distance bandwidth its
    MMD method uses) with a permutation p-value; both samples capped at
    ``config.embedding_max_n`` vectors (seeded)."""
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import MMD2u
    from sklearn.metrics import pairwise_distances, pairwise_kernels

    rng = np.random.default_rng(config.seed)
    x = reference[rng.permutation(len(reference))[: config.embedding_max_n]].astype(np.float64)
    y = current[rng.permutation(len(current))[: config.embedding_max_n]].astype(np.float64)
    m, n = len(x), len(y)
    sample = np.vstack([x[:1000], y[:1000]])
    sigma2 = np.median(pairwise_distances(sample, metric="euclidean")) ** 2
    k = pairwise_kernels(np.vstack([x, y]), metric="rbf", gamma=1.0 / max(sigma2, 1e-12))
    observed = MMD2u(k, m, n)
    null = permuted_mmd2u(k, m, config.n_permutations, rng)
    p_value = (np.sum(null >= observed) + 1) / (config.n_permutations + 1)
    return {
        "model": model,
        "feature": "embeddings",
        "kind": "embeddings",
        "method": f"MMD^2 permutation test ({config.n_permutations} permutations)",
        "statistic": float(max(observed, 0.0)),
        "p_value": float(p_value),
        "effect": float(max(observed, 0.0)),
        "effect_method": "MMD^2 (unbiased)",
        "drifted": None,
        "n_reference": m,
        "n_current": n,
        "_type": "emb",
    }


def permuted_mmd2u(
    k: np.ndarray, m: int, n_perm: int, rng: np.random.Generator, chunk: int = 250
) -> np.ndarray:
    """MMD^2_u of ``n_perm`` random relabellings of the pooled sample (the first ``m`` of
    each permutation as "reference"), from one matrix product per chunk of permutations:
    with ``z`` a permutation's 0/1 membership, the block sums are ``z'Kz``,
    ``z'K(1 - z)`` and ``(1 - z)'K(1 - z)`` (written by hand: evidently's bootstrap loops
    one resample at a time)."""
    total_n = k.shape[0]
    n = total_n - m
    row = k.sum(axis=1)
    total = row.sum()
    diag = np.diag(k)
    out = []
    for start in range(0, n_perm, chunk):
        p = min(chunk, n_perm - start)
        z = np.zeros((total_n, p))
        idx = np.argsort(rng.random((p, total_n)), axis=1)[:, :m]
        z[idx.T, np.arange(p)] = 1.0
        kz = k @ z
        sxx = np.einsum("ij,ij->j", z, kz)
        sxy = z.T @ row - sxx
        syy = total - 2 * (z.T @ row) + sxx
        dx = z.T @ diag
        dy = diag.sum() - dx
        out.append(
            (sxx - dx) / (m * (m - 1.0)) + (syy - dy) / (n * (n - 1.0)) - 2.0 * sxy / (m * n)
        )
    return np.concatenate(out)


def decide(rows: list[dict], config) -> pd.DataFrame:
    """Holm-adjust every p-value of the run and mark ``drifted``: adjusted p below
    ``alpha`` and the effect at least the minimum for its type (embeddings: the test)."""
    if not rows:
        return pd.DataFrame(columns=DRIFT_COLUMNS)
    frame = pd.DataFrame(rows)
    adjusted = holm(frame["p_value"].to_numpy())
    minimum = frame["_type"].map(
        {"num": config.min_effect_numeric, "cat": config.min_effect_categorical, "emb": 0.0}
    )
    quality = frame["_type"] == "qual"
    minimum[quality] = [
        config.min_quality_change.get(
            f.rsplit("_", 1)[-1] if "c_index" not in f else "c_index", np.inf
        )
        for f in frame.loc[quality, "feature"]
    ]
    frame["drifted"] = (adjusted < config.alpha) & (frame["effect"] >= minimum)
    frame["statistic"] = frame["statistic"].where(frame["statistic"].notna(), adjusted)
    frame["method"] = np.where(
        frame["_type"] == "emb", frame["method"], frame["method"] + " (statistic: Holm-adjusted p)"
    )
    return frame[DRIFT_COLUMNS]


def quality_change(ref_acc: pd.DataFrame, cur_acc: pd.DataFrame) -> list[dict]:
    """Change of each model's overall MAE and C-index against the reference run, with a
    normal-approximation p-value from the two bootstrap CIs (independent cohorts)."""
    from scipy.stats import norm

    rows = []
    keys = ["model", "output", "metric"]
    ref = ref_acc[ref_acc["attribute"] == "all"].set_index(keys)
    cur = cur_acc[cur_acc["attribute"] == "all"].set_index(keys)
    for key in cur.index.intersection(ref.index):
        if key[2] not in ("mae", "c_index"):
            continue
        a, b = ref.loc[key], cur.loc[key]
        se = np.hypot((a["ci_high"] - a["ci_low"]) / 3.92, (b["ci_high"] - b["ci_low"]) / 3.92)
        diff = b["value"] - a["value"]
        p = float(2 * norm.sf(abs(diff) / se)) if se > 0 else float("nan")
        rows.append(
            {
                "model": key[0],
                "feature": f"{key[1]}_{key[2]}",
                "kind": "quality",
                "method": "change against the reference run (normal approximation)",
                "statistic": float(diff),
                "p_value": p,
                "effect": float(abs(diff)),
                "effect_method": "absolute change",
                "drifted": None,
                "n_reference": int(a["n"]),
                "n_current": int(b["n"]),
                "_type": "qual",
            }
        )
    return rows
