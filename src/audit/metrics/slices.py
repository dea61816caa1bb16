"""Slice discovery: where a model fails that nobody declared a subgroup for, with false
discoveries controlled by confirming on held-out subjects.

Fairness is judged on the groups the config names; real failures also hide in combinations
(dim photos of older women, one camera at one site). Candidate slices are conjunctions of up
to ``max_order`` conditions ``feature = value`` over the cohort's categorical columns and
banded numeric ones (image properties, covariates, embedding clusters). The unit is the
subject: each subject's loss is the mean of its photos' losses, and a subject belongs to a
slice by its first photo's features.

The search is a lattice search over the one-hot matrix ``X`` (subjects x conditions): for
conjunctions of two conditions the counts, sums and sums of squares of every pair come from
``X' X``, ``X' (X * loss)`` and ``X' (X * loss^2)`` at once. Slices smaller than
``min_size`` subjects (and ``min_share`` of them) are pruned. Each is scored by Welch's t of
its mean loss against the rest; for a signed loss (a bias) both directions count.

False discoveries: the subjects are split in two halves at random (seeded, in an order fixed
by the data); the search runs on the first half, its ``top_k`` slices (no two the same set of
subjects) are tested again on the second, one-sided in the direction found, with Holm's
correction over the ``top_k``; a slice is *confirmed* when its corrected p-value is below
``alpha`` and its effect on the second half reaches ``min_effect``. Only confirmed slices are
findings; the effect and its CI reported are the confirmation half's (unbiased by the
search).

References
----------
Sagadeeva S, Boehm M. SliceLine: fast, linear-algebra-based slice finding for ML model
debugging. SIGMOD 2021 (the lattice, the pair enumeration by matrix products, size pruning).
Chung Y, Kraska T, Polyzotis N, Tae KH, Whang SE. Slice Finder: automated data slicing for
model validation. ICDE 2019 (significance testing of slices; a held-out confirmation).
Holm S. A simple sequentially rejective multiple test procedure. Scand J Stat 1979;6:65-70.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from audit.stats.cox import fit_cox
from audit.stats.groups import group_index, quantile_cuts


@dataclass(frozen=True)
class SliceSettings:
    """The search's knobs (the ``[slices]`` config section)."""

    max_order: int = 3
    beam: int = 50  # order 3: the best this many pairs are extended by a third condition
    min_size: int = 30  # subjects in a slice (in each half)
    min_share: float = 0.02  # of the subjects (in each half)
    top_k: int = 10
    alpha: float = 0.05
    min_effect: float = 2.0  # in the loss's unit (years for FaceAge): smaller is no finding
    bands: int = 3  # numeric features: quantile bands
    seed: int = 0

    @classmethod
    def from_config(cls, cfg, loss: str | None = None) -> SliceSettings:
        """From the ``[slices]`` config section, with the minimum effect of ``loss``."""
        return cls(
            max_order=cfg.max_order,
            beam=cfg.beam,
            min_size=cfg.min_size,
            min_share=cfg.min_share,
            top_k=cfg.top_k,
            alpha=cfg.alpha,
            min_effect=cfg.min_effect.get(loss, 0.0) if loss else 0.0,
            bands=cfg.bands,
            seed=cfg.seed,
        )


# ---------------------------------------------------------------------------- features


def band_labels(values: pd.Series, name: str, k: int) -> pd.Series:
    """A numeric feature as ``k`` quantile bands labelled by their range (``31 to 88``);
    missing values stay missing."""
    x = pd.to_numeric(values, errors="coerce").to_numpy(float)
    finite = x[np.isfinite(x)]
    if len(finite) == 0 or np.ptp(finite) == 0:
        return pd.Series(np.where(np.isfinite(x), "all", None), index=values.index)
    cuts = np.unique(quantile_cuts(finite, k))
    edges = np.r_[finite.min(), cuts, finite.max()]
    codes = group_index(x, cuts)
    labels = [f"{_num(edges[i])} to {_num(edges[i + 1])}" for i in range(len(edges) - 1)]
    out = [labels[c] if np.isfinite(v) and 0 <= c < len(labels) else None for c, v in zip(codes, x)]
    return pd.Series(out, index=values.index, dtype=object)


def _num(v: float) -> str:
    return f"{v:.3g}"


def condition_matrix(features: pd.DataFrame, bands: int) -> tuple[np.ndarray, list[tuple]]:
    """One-hot ``(n, C)`` matrix of every condition ``feature = value`` and the list of
    ``(feature, value)`` for its columns; numeric features are banded first."""
    columns, names = [], []
    for feature in features.columns:
        col = features[feature]
        if pd.api.types.is_numeric_dtype(col) and col.nunique(dropna=True) > bands:
            col = band_labels(col, feature, bands)
        col = col.astype(object).where(col.notna(), None)
        for value in sorted({v for v in col if v is not None}, key=str):
            columns.append((col == value).to_numpy())
            names.append((feature, value))
    matrix = np.column_stack(columns) if columns else np.zeros((len(features), 0), dtype=bool)
    return matrix.astype(float), names


# ---------------------------------------------------------------------------- the search


def _welch(n1, s1, q1, n0, s0, q0):
    """Welch's t of group 1 against group 0 from counts, sums and sums of squares
    (arrays); returns (effect, t, df, se)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        m1, m0 = s1 / n1, s0 / n0
        v1 = (q1 - n1 * m1**2) / (n1 - 1)
        v0 = (q0 - n0 * m0**2) / (n0 - 1)
        a, b = v1 / n1, v0 / n0
        se = np.sqrt(a + b)
        t = (m1 - m0) / se
        df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n0 - 1))
    return m1 - m0, t, df, se


def search(
    x: np.ndarray, names: list[tuple], loss: np.ndarray, settings: SliceSettings, signed: bool
) -> pd.DataFrame:
    """Every slice of one or two conditions (on different features) over the rows of ``x``
    with at least the minimum size, and for ``max_order`` 3 the best ``beam`` pairs extended
    by each third condition; with its size, effect (mean loss in the slice minus outside),
    Welch t and the conditions' column indices; sorted by score (t, or |t| when ``signed``),
    best first."""
    n = len(loss)
    floor = max(settings.min_size, int(np.ceil(settings.min_share * n)))
    total, total_sq = float(loss.sum()), float((loss**2).sum())
    xl, xq = x * loss[:, None], x * (loss**2)[:, None]
    parts = [
        (x.sum(0), xl.sum(0), xq.sum(0), [(i,) for i in range(x.shape[1])]),
    ]
    codes = {f: k for k, f in enumerate(dict.fromkeys(name[0] for name in names))}
    feature_of = np.array([codes[name[0]] for name in names])
    if settings.max_order >= 2 and x.shape[1] > 1:
        count, s, q = x.T @ x, x.T @ xl, x.T @ xq
        i, j = np.triu_indices(x.shape[1], k=1)
        keep = (feature_of[i] != feature_of[j]) & (count[i, j] >= floor)
        i, j = i[keep], j[keep]
        parts.append((count[i, j], s[i, j], q[i, j], list(zip(i.tolist(), j.tolist()))))
    rows = []
    for cnt, sm, sq, keys in parts:
        cnt, sm, sq = (np.asarray(a, float) for a in (cnt, sm, sq))
        ok = (cnt >= floor) & (n - cnt >= floor)
        effect, t, df, se = _welch(cnt, sm, sq, n - cnt, total - sm, total_sq - sq)
        for k in np.flatnonzero(ok & np.isfinite(t)):
            rows.append((keys[k], int(cnt[k]), float(effect[k]), float(t[k]), float(df[k])))
    frame = _ranked(rows, signed)
    if settings.max_order >= 3 and len(frame):
        pairs = frame[frame["conditions"].map(len) == 2].head(settings.beam)
        for conditions in pairs["conditions"]:
            members = _members(x, conditions)
            cnt, sm, sq = x[members].sum(0), xl[members].sum(0), xq[members].sum(0)
            ok = (cnt >= floor) & (n - cnt >= floor)
            ok &= ~np.isin(feature_of, feature_of[list(conditions)])
            effect, t, df, _ = _welch(cnt, sm, sq, n - cnt, total - sm, total_sq - sq)
            for k in np.flatnonzero(ok & np.isfinite(t)):
                key = tuple(sorted((*conditions, int(k))))
                rows.append((key, int(cnt[k]), float(effect[k]), float(t[k]), float(df[k])))
        frame = _ranked(rows, signed).drop_duplicates("conditions")
    return frame.reset_index(drop=True)


def _ranked(rows: list, signed: bool) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["conditions", "n", "effect", "t", "df"])
    frame["score"] = frame["t"].abs() if signed else frame["t"]
    return frame.sort_values(["score", "n"], ascending=[False, False], kind="stable")


def _members(x: np.ndarray, conditions: tuple) -> np.ndarray:
    return np.all(x[:, list(conditions)] > 0, axis=1)


def discover(
    features: pd.DataFrame,
    loss: np.ndarray,
    settings: SliceSettings,
    signed: bool = False,
) -> pd.DataFrame:
    """Slices found on one half of the rows (subjects) and tested on the other.

    Parameters
    ----------
    features : one row per subject (in an order fixed by the data), its feature columns.
    loss : each subject's loss (e.g. FaceAge absolute error, years).
    signed : the loss is a bias (either direction is a failure) rather than an error.

    Returns one row per slice tested (the search half's ``top_k``): ``slice`` (conditions
    joined by `` & ``), ``n_conditions``, size in each half, the search half's effect and t, the
    confirmation half's effect with its 95% Welch CI, one-sided p, Holm-corrected p, and
    ``confirmed``.
    """
    loss = np.asarray(loss, dtype=float)
    ok = np.isfinite(loss)
    features, loss = features[ok].reset_index(drop=True), loss[ok]
    x, names = condition_matrix(features, settings.bands)
    rng = np.random.default_rng(settings.seed)
    half = np.zeros(len(loss), dtype=bool)
    half[rng.permutation(len(loss))[: len(loss) // 2]] = True
    found = search(x[half], names, loss[half], settings, signed)
    chosen, seen = [], set()
    for row in found.itertuples():
        members = _members(x, row.conditions)
        key = members.tobytes()
        if key in seen:  # the same subjects under another description
            continue
        seen.add(key)
        chosen.append((row, members))
        if len(chosen) == settings.top_k:
            break
    out = []
    other = ~half
    for row, members in chosen:
        inside, outside = loss[other & members], loss[other & ~members]
        direction = np.sign(row.effect) if signed else 1.0
        if len(inside) >= 2 and len(outside) >= 2:
            test = stats.ttest_ind(inside, outside, equal_var=False)
            effect = float(inside.mean() - outside.mean())
            ci = test.confidence_interval(0.95)
            p = float(
                test.pvalue / 2 if np.sign(test.statistic) == direction else 1 - test.pvalue / 2
            )
            low, high = float(ci.low), float(ci.high)
        else:
            effect, p, low, high = np.nan, 1.0, np.nan, np.nan
        out.append(
            {
                "slice": " & ".join(f"{names[c][0]} = {names[c][1]}" for c in row.conditions),
                "conditions": json.dumps([[names[c][0], str(names[c][1])] for c in row.conditions]),
                "n_conditions": len(row.conditions),
                "n_search": int(row.n),
                "n_confirm": int(len(inside)),
                "search_effect": float(row.effect),
                "search_t": float(row.t),
                "effect": effect,
                "ci_low": low,
                "ci_high": high,
                "p": p,
            }
        )
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    frame["p_holm"] = holm(frame["p"].to_numpy())
    direction = np.sign(frame["search_effect"]) if signed else 1.0
    frame["confirmed"] = (frame["p_holm"] < settings.alpha) & (
        direction * frame["effect"] >= settings.min_effect
    )
    return frame


FINDING, DECLARED, REFINES, NOT_CONFIRMED = "finding", "declared", "refines", "not confirmed"


def conditions_of(table: pd.DataFrame) -> pd.Series:
    """Each slice's conditions as a list of ``(feature, value)``: from the ``conditions``
    JSON, or for a row written before it was stored (schema 17), from the slice's text."""
    stored = table["conditions"] if "conditions" in table.columns else pd.Series(None, table.index)

    def parse(text, slice_text):
        if isinstance(text, str):
            return [tuple(c) for c in json.loads(text)]
        return [tuple(part.split(" = ", 1)) for part in str(slice_text).split(" & ")]

    return pd.Series(
        [parse(c, t) for c, t in zip(stored, table["slice"])], index=table.index, dtype=object
    )


def standing(table: pd.DataFrame, declared: list[list[str]]) -> pd.Series:
    """What each slice of a ``slices`` table is: ``not confirmed``; ``declared`` (confirmed,
    but its features are exactly a declared subgroup or intersection, judged by the fairness
    audit already); ``refines`` (confirmed, and it holds every condition of a shorter
    confirmed slice of the same model, output and loss: the same finding narrowed); else a
    ``finding``."""
    out = pd.Series(NOT_CONFIRMED, index=table.index, dtype=object)
    if not len(table):
        return out
    sets = {frozenset(d) for d in declared}
    conditions = conditions_of(table).map(frozenset)
    confirmed = table["confirmed"].astype(bool)
    for _, g in table[confirmed].groupby(["model", "output", "loss"], sort=False):
        for i in g.index:
            mine = conditions[i]
            if frozenset(f for f, _ in mine) in sets:
                out[i] = DECLARED
            elif any(conditions[j] < mine for j in g.index if j != i):
                out[i] = REFINES
            else:
                out[i] = FINDING
    return out


def judged(
    table: pd.DataFrame,
    declared: list[list[str]],
    losses: list[str],
    health_features: list[str],
) -> pd.DataFrame:
    """The table with each slice's ``standing`` and whether a verdict ``judged`` it: its
    loss is one of ``losses``, and it is not a signed loss's slice on a feature of
    ``health_features`` (where a face-age model reading older is its signal)."""
    health = set(health_features)
    on_health = conditions_of(table).map(lambda c: any(f in health for f, _ in c))
    signed = table["loss"] != "abs_error"
    return table.assign(
        standing=standing(table, declared),
        judged=table["loss"].isin(losses) & ~(signed & on_health),
    )


def describe_clusters(features: pd.DataFrame, bands: int, top: int = 3) -> dict[str, str]:
    """Each embedding cluster described by the metadata that distinguishes it: the
    ``top`` conditions (of the other features) whose share among the cluster's subjects
    exceeds their share among the rest the most, e.g. ``62% sex = female (vs 44%)``."""
    if "embedding_cluster" not in features.columns:
        return {}
    cluster = features["embedding_cluster"]
    x, names = condition_matrix(features.drop(columns="embedding_cluster"), bands)
    out = {}
    for label in sorted({c for c in cluster if c is not None}, key=str):
        inside = (cluster == label).to_numpy()
        if not inside.any() or inside.all():
            continue
        share_in, share_out = x[inside].mean(0), x[~inside].mean(0)
        lift = share_in - share_out
        best = [k for k in np.argsort(-lift, kind="stable")[:top] if lift[k] > 0]
        out[label] = f"{label} ({int(inside.sum())} subjects): " + (
            "; ".join(
                f"{share_in[k]:.0%} {names[k][0]} = {names[k][1]} (vs {share_out[k]:.0%})"
                for k in best
            )
            or "no metadata distinguishes it"
        )
    return out


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (monotone, capped at 1)."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


# ---------------------------------------------------------------------------- losses


@dataclass(frozen=True)
class Loss:
    """One per-subject loss of an output: its values (aligned with the subjects), whether
    it is signed (a bias: both directions are failures) and its unit."""

    name: str
    values: np.ndarray
    signed: bool
    unit: str


def output_losses(subjects: pd.DataFrame, output: str) -> tuple[list[Loss], list[str]]:
    """The losses slices are searched on, one row per subject.

    FaceAge (with chronological age): the absolute error ``|FaceAge - age|`` and the
    age-adjusted error (the residual of FaceAge on age by least squares: a bias that does
    not come from the age mix). A risk score (with outcomes): the deviance residuals of the
    Cox model of the score (Therneau, Grambsch and Fleming 1990), from the checked fit of
    :func:`audit.stats.cox.fit_cox`; positive where subjects died sooner than the score
    implies. A fit that does not converge gives no loss and a note."""
    notes: list[str] = []
    if output not in subjects.columns:
        return [], notes
    value = pd.to_numeric(subjects[output], errors="coerce").to_numpy(float)
    if output == "faceage":
        if "age" not in subjects.columns:
            return [], ["no chronological age: FaceAge slices not searched"]
        age = subjects["age"].to_numpy(float)
        ok = np.isfinite(value) & np.isfinite(age)
        adjusted = np.full(len(value), np.nan)
        if ok.sum() >= 3 and np.ptp(age[ok]) > 0:
            slope, intercept = np.polyfit(age[ok], value[ok], 1)
            adjusted[ok] = value[ok] - (intercept + slope * age[ok])
        return [
            Loss("abs_error", np.abs(value - age), False, "years"),
            Loss("age_adjusted_error", adjusted, True, "years"),
        ], notes
    if not {"time", "event"} <= set(subjects.columns) or subjects["event"].sum() == 0:
        return [], [f"{output}: no outcomes, no residuals to search"]
    frame = pd.DataFrame(
        {"time": subjects["time"].to_numpy(float), "event": subjects["event"].to_numpy(float)}
    )
    fit = fit_cox(frame, pd.DataFrame({output: value}))
    if not fit.ok:
        return [], [f"{output}: the Cox model of the score did not converge ({fit.reason})"]
    residuals = fit.fitter.compute_residuals(fit.data, "deviance")["deviance"]
    deviance = residuals.reindex(range(len(subjects))).to_numpy(float)
    return [Loss("deviance_residual", deviance, True, "deviance")], notes


# ---------------------------------------------------------------------------- features

CATEGORICAL = ("sex", "race", "site", "camera", "age_band")
IMAGE_FEATURES = ("brightness", "contrast", "sharpness", "face_box_frac", "jpeg_quality")


def slice_features(
    subjects: pd.DataFrame,
    covariates: list,
    image_properties: pd.DataFrame | None = None,
    confidence: pd.DataFrame | None = None,
    embeddings: pd.DataFrame | None = None,
    clusters: int = 8,
    seed: int = 0,
    clinical: bool = False,
) -> pd.DataFrame:
    """The candidate slices' features, one row per subject (its photo in ``subjects``): the
    demographic, site and camera columns, the photo's image properties and detection
    confidence (numeric: banded by :func:`condition_matrix`), from the model's embeddings a
    k-means cluster (``clusters``, seeded; on standardised vectors), and with ``clinical``
    the cancer type and the clinical covariates (off by default: a face-age model is meant to
    read health, so a sicker slice looking older is the signal, not a failure)."""
    features = pd.DataFrame(index=subjects.index)
    for col in CATEGORICAL + (("cancer_type",) if clinical else ()):
        if col in subjects.columns and subjects[col].nunique(dropna=True) > 1:
            features[col] = subjects[col].astype(object)
    for cov in covariates if clinical else []:
        if cov.name in subjects.columns and subjects[cov.name].nunique(dropna=True) > 1:
            features[cov.name] = subjects[cov.name]
    photo = subjects[["photo_id"]]
    if image_properties is not None and len(image_properties):
        keep = ["photo_id"] + [c for c in IMAGE_FEATURES if c in image_properties.columns]
        props = photo.merge(image_properties[keep].drop_duplicates("photo_id"), how="left")
        for col in keep[1:]:
            if props[col].notna().any() and props[col].nunique(dropna=True) > 1:
                features[col] = props[col].to_numpy()
    if confidence is not None and len(confidence):
        best = confidence.groupby("photo_id")["confidence"].max().rename("detection_confidence")
        values = photo.merge(best, left_on="photo_id", right_index=True, how="left")
        if values["detection_confidence"].nunique(dropna=True) > 1:
            features["detection_confidence"] = values["detection_confidence"].to_numpy()
    if embeddings is not None and len(embeddings) >= clusters > 1:
        features["embedding_cluster"] = _clusters(photo, embeddings, clusters, seed)
    return features.reset_index(drop=True)


def _clusters(photo: pd.DataFrame, embeddings: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """Each photo's k-means cluster of the model's embeddings (``c1`` .. ``ck``, numbered by
    size), None for a photo without one."""
    from sklearn.cluster import KMeans

    vectors = embeddings.drop_duplicates("photo_id").set_index("photo_id")["vector"]
    have = photo["photo_id"].isin(vectors.index).to_numpy()
    if have.sum() < k:
        return np.full(len(photo), None, dtype=object)
    x = np.stack(vectors.loc[photo["photo_id"][have]].map(np.asarray).to_numpy()).astype(float)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
    order = {c: i for i, c in enumerate(pd.Series(labels).value_counts().index)}
    out = np.full(len(photo), None, dtype=object)
    out[have] = [f"c{order[c] + 1}" for c in labels]
    return out
