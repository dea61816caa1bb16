"""Array functions in the style of fairlearn's metrics: the audit's core metrics on arrays,
overall and per sensitive group, with subject-bootstrap intervals, computed by the same
engine as a run's ``accuracy`` table (:mod:`audit.metrics.accuracy`).

>>> faceage_metrics(age, faceage, sensitive_features=df[["sex", "race"]], subjects=df.id)

Each returns a tidy frame: ``metric``, ``attribute`` (``all`` for the whole sample),
``group_name``, ``n`` (photos), ``n_subjects``, ``value``, ``ci_low``, ``ci_high``, and
``status`` (``too_small`` below ``min_group_size``: reported, not judged).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.metrics.accuracy import ACCURACY_COLUMNS, faceage_accuracy, risk_accuracy
from audit.pipeline.config import AccuracyConfig, SurvivalConfig

TIDY_COLUMNS = [c for c in ACCURACY_COLUMNS if c not in ("model", "output")]


def _sensitive_frame(sensitive_features, n: int) -> pd.DataFrame:
    """fairlearn's ``sensitive_features``: None, one array or Series, a dict of arrays, or a
    DataFrame; unnamed ones become ``sensitive_feature_0``, ``_1``, ..."""
    if sensitive_features is None:
        return pd.DataFrame(index=range(n))
    if isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features.reset_index(drop=True)
    elif isinstance(sensitive_features, dict):
        frame = pd.DataFrame({k: np.asarray(v) for k, v in sensitive_features.items()})
    elif isinstance(sensitive_features, pd.Series):
        frame = (
            sensitive_features.rename(sensitive_features.name or "sensitive_feature_0")
            .reset_index(drop=True)
            .to_frame()
        )
    else:
        values = np.asarray(sensitive_features)
        values = values.reshape(len(values), -1) if values.ndim > 1 else values[:, None]
        frame = pd.DataFrame(
            values, columns=[f"sensitive_feature_{i}" for i in range(values.shape[1])]
        )
    if len(frame) != n:
        raise InputError(f"sensitive_features has {len(frame)} rows; y has {n}")
    return (
        frame.astype(object).where(frame.notna(), None).map(lambda v: None if v is None else str(v))
    )


def _base(n: int, subjects, sensitive_features) -> tuple[pd.DataFrame, list[str]]:
    groups = _sensitive_frame(sensitive_features, n)
    ids = np.arange(n) if subjects is None else np.asarray(subjects)
    if len(ids) != n:
        raise InputError(f"subjects has {len(ids)} entries; y has {n}")
    frame = groups.copy()
    frame.insert(0, "subject_id", pd.Series(ids).astype(str).to_numpy())
    return frame, list(groups.columns)


def faceage_metrics(
    y_true,
    y_pred,
    *,
    sensitive_features=None,
    subjects=None,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
    min_group_size: int = 20,
) -> pd.DataFrame:
    """FaceAge accuracy (``mae``, ``mean_error`` = predicted - true, ``pearson_r``,
    ``within_5y``) overall and per group of each sensitive feature.

    ``subjects``: one id per photo; the bootstrap resamples subjects, so several photos of a
    person count once (default: every photo its own subject).
    """
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if y_true.shape != y_pred.shape:
        raise InputError(f"y_true has {y_true.shape} values, y_pred {y_pred.shape}")
    frame, attributes = _base(len(y_true), subjects, sensitive_features)
    frame["age"], frame["faceage"] = y_true, y_pred
    config = AccuracyConfig(
        n_boot=n_boot,
        ci_level=ci_level,
        seed=seed,
        groups=attributes,
        min_group_size=min_group_size,
    )
    return faceage_accuracy(frame, "", config)[TIDY_COLUMNS]


def risk_metrics(
    time,
    event,
    risk,
    *,
    sensitive_features=None,
    subjects=None,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
    min_group_size: int = 20,
    min_events: int = 10,
) -> pd.DataFrame:
    """Harrell's C of ``risk`` (higher = worse) for death, overall and per group, one row
    per subject (``time`` in any unit, ``event`` 1 = death)."""
    risk = np.asarray(risk, float)
    frame, attributes = _base(len(risk), subjects, sensitive_features)
    frame["time"], frame["event"], frame["risk"] = (
        np.asarray(time, float),
        np.asarray(event, float),
        risk,
    )
    acc = AccuracyConfig(ci_level=ci_level, groups=attributes, min_group_size=min_group_size)
    surv = SurvivalConfig(n_boot=n_boot, seed=seed, min_events=min_events)
    return risk_accuracy(frame, "", acc, surv)[TIDY_COLUMNS]
