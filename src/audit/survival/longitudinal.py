"""Longitudinal FaceAge: the Face Aging Rate and its prognostic value.

With two or more photos of a subject, taken at least ``min_span_years`` apart, the Face Aging
Rate (FAR) is the least-squares slope of FaceAge on the photo date: years of FaceAge per
calendar year (1 is ageing as the calendar does). Its prognostic value is estimated as a
landmark analysis from each subject's last photo (the follow-up recorded on that photo's
row), so that no subject contributes time before the photos that define its FAR (no
immortal-time bias): Cox HR per +1 year/year of FAR adjusted for age and sex at the last
photo, and also for FaceAge at the last photo.

References
----------
Anderson JR, Cain KC, Gelber RD. Analysis of survival by tumor response. J Clin Oncol 1(11),
1983 (landmark analysis).
Bontempi D et al. FaceAge. Lancet Digit Health 7(6), 2025, and the FAHR-Face follow-up work
(face aging rate from serial photos).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.stats.cox import design_matrix
from audit.survival.analysis import _cox_rows

RATE_COLUMNS = [
    "subject_id",
    "n_photos",
    "span_years",
    "far",
    "age",
    "sex",
    "faceage",
    "time",
    "event",
]


def face_aging_rates(photos: pd.DataFrame, min_span_years: float = 0.5) -> pd.DataFrame:
    """One row per subject with usable serial photos: its FAR and the landmark row (age,
    sex, FaceAge, time and event of its last photo)."""
    df = photos.dropna(subset=["photo_date", "faceage"]).copy()
    if df.empty:
        return pd.DataFrame(columns=RATE_COLUMNS)
    df["t"] = (pd.to_datetime(df["photo_date"]) - pd.Timestamp("1970-01-01")).dt.days / 365.25
    rows = []
    for subject, g in df.sort_values("t").groupby("subject_id", sort=False):
        if len(g) < 2 or g["t"].iloc[-1] - g["t"].iloc[0] < min_span_years:
            continue
        slope = float(np.polyfit(g["t"], g["faceage"].astype(float), 1)[0])
        last = g.iloc[-1]
        rows.append(
            {
                "subject_id": subject,
                "n_photos": len(g),
                "span_years": float(g["t"].iloc[-1] - g["t"].iloc[0]),
                "far": slope,
                "age": last.get("age"),
                "sex": last.get("sex"),
                "faceage": float(last["faceage"]),
                "time": last.get("time"),
                "event": last.get("event"),
            }
        )
    return pd.DataFrame(rows, columns=RATE_COLUMNS)


def far_models(
    photos: pd.DataFrame, model: str, config, min_subjects: int = 30, min_span_years: float = 0.5
) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """``survival_models``, ``survival_terms`` and ``survival_metrics`` rows of the Face
    Aging Rate, and notes; nothing (with a note) when too few subjects have serial photos."""
    rates = face_aging_rates(photos, min_span_years)
    if "time" not in photos.columns or photos["event"].isna().all():
        return [], [], [], []
    if len(rates) < min_subjects:
        note = (
            f"Face Aging Rate: {len(rates)} subjects with photos at least "
            f"{min_span_years:g} years apart (minimum {min_subjects}); not analysed"
        )
        return [], [], [], ([note] if photos["subject_id"].duplicated().any() else [])
    rates = rates.dropna(subset=["time", "event", "age"]).reset_index(drop=True)
    rates["age_decade"] = rates["age"].astype(float) / 10
    rates["faceage_decade"] = rates["faceage"].astype(float) / 10
    cat = {"sex": "male"} if "sex" in rates.columns and rates["sex"].nunique() > 1 else {}
    models, terms = [], []
    for model_id, description, numeric in (
        (
            "face_aging_rate__age_sex",
            "Face Aging Rate per +1 year/year, landmark at the "
            "last photo, adjusted for age and sex",
            ["far", "age_decade"],
        ),
        (
            "face_aging_rate__age_sex_faceage",
            "Face Aging Rate per +1 year/year, adjusted for age, sex and FaceAge at the last photo",
            ["far", "age_decade", "faceage_decade"],
        ),
    ):
        row, trs, _ = _cox_rows(
            model, model_id, description, rates, design_matrix(rates, numeric, cat), config
        )
        models.append(row)
        terms.extend(trs)
    metrics = [
        {
            "model": model,
            "model_id": "face_aging_rate",
            "metric": name,
            "horizon": None,
            "value": float(value),
            "ci_low": None,
            "ci_high": None,
        }
        for name, value in (
            ("subjects", len(rates)),
            ("median_photos", rates["n_photos"].median()),
            ("median_span_years", rates["span_years"].median()),
            ("median_far", rates["far"].median()),
        )
    ]
    return (
        models,
        terms,
        metrics,
        [
            f"Face Aging Rate from {len(rates)} subjects with serial "
            "photos (landmark at each subject's last photo)"
        ],
    )
