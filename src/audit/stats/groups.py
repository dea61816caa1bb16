"""One rule for quantile groups of a score (quartiles, deciles), used everywhere.

A subject's group depends on its value alone, never on its row position, so a cohort whose
rows are shuffled gets the same groups and tied scores always share one group:

- the cut points are the sample quantiles ``j/k`` (``j = 1 .. k-1``) of the finite values,
  with numpy's default linear interpolation (R's ``quantile`` type 7);
- group ``j`` is the right-closed interval ``(c_{j-1}, c_j]``; the first group includes the
  minimum, the last is ``(c_{k-1}, max]`` (as ``pandas.qcut`` and R's ``cut(x,
  quantile(x), include.lowest = TRUE)``);
- a score with few distinct values has coinciding cut points and so empty groups: the groups
  present are used as they are (a note names the empty ones), never filled by splitting
  tied subjects.

Used by the risk quartiles of the survival stage (Cox models, Kaplan-Meier, log-rank), the
survival subgroups' Q4 vs Q1, the calibration deciles and the robustness quartile changes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.data.cohort import natural_order


def quantile_cuts(values, k: int) -> np.ndarray:
    """The ``k - 1`` inner cut points of the finite ``values`` (type 7 quantiles)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.full(k - 1, np.nan)
    return np.quantile(v, np.arange(1, k) / k)


def group_index(values, cuts: np.ndarray) -> np.ndarray:
    """0-based group of each value for the right-closed intervals between ``cuts``; -1 for a
    missing value."""
    v = np.asarray(values, float)
    idx = np.searchsorted(np.asarray(cuts, float), v, side="left")
    return np.where(np.isfinite(v), idx, -1)


def quantile_groups(values, k: int = 4, prefix: str = "Q") -> pd.Series:
    """Labels ``{prefix}1`` (lowest) .. ``{prefix}{k}`` of each value (None where missing)."""
    idx = group_index(values, quantile_cuts(values, k))
    labels = np.array([f"{prefix}{j + 1}" for j in range(k)] + [None], dtype=object)
    index = values.index if isinstance(values, pd.Series) else None
    return pd.Series(labels[idx], index=index, dtype=object)


def empty_groups_note(what: str, groups: pd.Series, k: int = 4, prefix: str = "Q") -> str | None:
    """A sentence naming the empty groups (a score with too few distinct values), or None."""
    present = set(groups.dropna())
    empty = [f"{prefix}{j}" for j in range(1, k + 1) if f"{prefix}{j}" not in present]
    if not empty:
        return None
    distinct = len(present)
    return (
        f"{what}: tied values leave {', '.join(empty)} empty (the cut points coincide), so "
        f"{distinct} group{'s' if distinct != 1 else ''} are used "
        f"({', '.join(sorted(present, key=lambda g: int(g[len(prefix) :])))}); tied subjects "
        "are never split between groups"
    )


ID_COLUMNS = ("subject_id", "photo_id", "image_path", "_row")


def canonical_rows(frame: pd.DataFrame, ignore=ID_COLUMNS) -> pd.DataFrame:
    """``frame`` with its rows in an order fixed by their values (every column but the ids),
    index reset.

    Bootstrap resamples and cross-fitting folds are drawn over row positions; putting the
    rows in this order first makes every number that depends on them the same for a cohort
    whose rows are shuffled or whose ids are renamed. Rows equal in every value are
    interchangeable, so their order among themselves changes nothing.
    """
    keys = [c for c in frame.columns if c not in ignore]
    if not keys or len(frame) < 2:
        return frame.reset_index(drop=True)
    view = pd.DataFrame(index=frame.index)
    for c in keys:
        col = frame[c]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            view[c] = pd.to_numeric(col, errors="coerce").astype(float)
        else:
            view[c] = col.map(lambda v: "" if v is None or v != v else f"{type(v).__name__}:{v}")
    order = view.sort_values(keys, kind="mergesort", na_position="last").index
    return frame.loc[order].reset_index(drop=True)


def label_codes(labels: pd.Series) -> tuple[list, np.ndarray]:
    """The groups of ``labels`` in their natural order, and each row's group code (-1 for a
    missing label): the coding every per-group metric shares."""
    names = natural_order(labels.dropna().unique())
    lookup = {v: i for i, v in enumerate(names)}
    codes = labels.astype(object).map(lambda v: lookup.get(v, -1) if v is not None else -1)
    return names, codes.fillna(-1).to_numpy(np.int64)
