"""Frames as the plain records the page templates read (NaN as None)."""

from __future__ import annotations

import pandas as pd


def records(df: pd.DataFrame) -> list[dict]:
    """``df``'s rows as dicts, missing values as None (what Jinja's tests expect)."""
    df = df.astype(object).where(df.notna(), None)
    return df.to_dict("records")
