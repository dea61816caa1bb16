"""Representativeness: the cohort's composition against the intended-use population.

For each attribute the config gives shares for (``fairness.intended_population``), one row
per group: subjects, the cohort share, the intended share, their ratio, and a chi-square
goodness-of-fit test of the cohort's counts against the intended shares (over the groups the
intended population lists; a cohort group it does not list is reported as
``not_in_intended`` and left out of the test). The report shows this before any metric: a
model can only be judged for the people the cohort holds.

References
----------
Collins GS et al. TRIPOD+AI statement. BMJ 385, 2024 (item 20: participants and their
representativeness of the intended population).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chisquare

from audit.metrics.fairness import add_fairness_groups
from audit.pipeline.schema import columns

REPRESENTATIVENESS_COLUMNS = columns("representativeness")


def representativeness(
    subjects: pd.DataFrame, intended: dict[str, dict[str, float]], age_cuts: list[float]
) -> pd.DataFrame:
    """Rows for each attribute of ``intended`` present in ``subjects`` (one row per
    subject)."""
    df = add_fairness_groups(subjects, age_cuts)
    rows = []
    for attribute, shares in intended.items():
        if attribute not in df.columns:
            rows.append(
                {
                    "attribute": attribute,
                    "group_name": None,
                    "n": 0,
                    "share": None,
                    "intended_share": None,
                    "ratio": None,
                    "chi2": None,
                    "df": None,
                    "p_value": None,
                    "status": "attribute_absent",
                }
            )
            continue
        values = df[attribute].dropna().astype(str)
        counts = values.value_counts()
        listed = [str(g) for g in shares]
        total = sum(shares.values())
        expected_share = np.array([shares[g] / total for g in shares])
        observed = np.array([int(counts.get(g, 0)) for g in listed])
        n_listed = observed.sum()
        stat = p = None
        if n_listed > 0 and len(listed) > 1:
            res = chisquare(observed, expected_share * n_listed)
            stat, p = float(res.statistic), float(res.pvalue)
        small = (expected_share * n_listed < 5).any()
        for g, obs, exp in zip(listed, observed, expected_share):
            share = obs / len(values) if len(values) else np.nan
            rows.append(
                {
                    "attribute": attribute,
                    "group_name": g,
                    "n": int(obs),
                    "share": float(share),
                    "intended_share": float(exp),
                    "ratio": float(share / exp) if exp > 0 else np.nan,
                    "chi2": stat,
                    "df": len(listed) - 1,
                    "p_value": p,
                    "status": "expected_under_5" if small else "ok",
                }
            )
        for g in sorted(set(counts.index) - set(listed)):
            rows.append(
                {
                    "attribute": attribute,
                    "group_name": g,
                    "n": int(counts[g]),
                    "share": float(counts[g] / len(values)),
                    "intended_share": 0.0,
                    "ratio": None,
                    "chi2": stat,
                    "df": len(listed) - 1,
                    "p_value": p,
                    "status": "not_in_intended",
                }
            )
    return pd.DataFrame(rows, columns=REPRESENTATIVENESS_COLUMNS)
