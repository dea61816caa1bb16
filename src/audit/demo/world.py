"""A seeded synthetic clinical world whose truth is known (tabular for now).

Each subject has a chronological age ``A`` at the photo, sex, race, cancer type, a latent
health score ``H`` (higher = sicker, standard normal), ECOG 0-4 and treatment intent read
off ``H``, and a biological age ``B = A + 4 H + N(0, 2^2)``. Death follows a known
proportional-hazards model with an exponential baseline::

    log h(t) = log(lambda0) + beta_bio * (B - 62) / 10 + beta_health * H + gamma[cancer_type]

Follow-up ends at death, at administrative censoring at 5 years, or at random loss to
follow-up (exponential). Until photos exist (the next issue) the cohort carries the
predictions of an *oracle* model: FaceAge = B + N(0, sd^2) and risk = the true linear
predictor + N(0, sd^2); cohort.yaml says so. The truth (B, H, the linear predictor) goes to
``truth.csv`` and the planted parameters to ``truth.json``, never into the manifest.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

RACES = {"White": 0.68, "Black": 0.13, "Asian": 0.08, "Hispanic": 0.08, "Other": 0.03}
CANCERS = {
    "thoracic": 0.20, "gastrointestinal": 0.18, "genitourinary": 0.14, "breast": 0.14,
    "head_and_neck": 0.10, "cns": 0.05, "haematologic": 0.11, "other": 0.08,
}
# Share female per cancer type (breast almost all women, genitourinary mostly prostate).
FEMALE_SHARE = {"breast": 0.99, "genitourinary": 0.2}
# Log hazard ratios of cancer type against thoracic (the reference).
CANCER_LOG_HR = {
    "thoracic": 0.0, "gastrointestinal": -0.1, "genitourinary": -0.6, "breast": -0.7,
    "head_and_neck": -0.3, "cns": 0.2, "haematologic": -0.2, "other": -0.3,
}


@dataclass
class WorldParams:
    """The planted truth of the synthetic world (written to ``truth.json``)."""

    age_mean: float = 64.0
    age_sd: float = 12.0
    age_min: float = 20.0
    age_max: float = 95.0
    health_to_bio_years: float = 4.0
    bio_noise_sd: float = 2.0
    beta_bio_per_decade: float = 0.5  # planted HR per decade of biological age: e^0.5 = 1.65
    beta_health: float = 0.4
    baseline_hazard_per_year: float = 0.12
    admin_censor_years: float = 5.0
    loss_rate_per_year: float = 0.03
    oracle_faceage_sd: float = 3.0
    oracle_risk_sd: float = 0.3
    cancer_log_hr: dict = field(default_factory=lambda: dict(CANCER_LOG_HR))

    @property
    def hr_bio_per_decade(self) -> float:
        return float(np.exp(self.beta_bio_per_decade))


def _truncated_normal(rng, n, mean, sd, low, high) -> np.ndarray:
    out = rng.normal(mean, sd, n)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = rng.normal(mean, sd, bad.sum())
        bad = (out < low) | (out > high)
    return out


def simulate(n: int, seed: int, params: WorldParams | None = None) -> pd.DataFrame:
    """Simulate ``n`` subjects; every column, truth included (see module docstring)."""
    p = params or WorldParams()
    rng = np.random.default_rng(seed)
    age = np.round(_truncated_normal(rng, n, p.age_mean, p.age_sd, p.age_min, p.age_max), 1)
    cancer = rng.choice(list(CANCERS), size=n, p=np.array(list(CANCERS.values())))
    female_p = np.array([FEMALE_SHARE.get(c, 0.5) for c in cancer])
    sex = np.where(rng.random(n) < female_p, "female", "male")
    race = rng.choice(list(RACES), size=n, p=np.array(list(RACES.values())))
    health = rng.normal(0.0, 1.0, n)
    bio = age + p.health_to_bio_years * health + rng.normal(0.0, p.bio_noise_sd, n)
    ecog = np.clip(np.round(1.0 + 0.9 * health + rng.normal(0, 0.6, n)), 0, 4).astype(int)
    palliative_logit = -0.8 + 1.0 * health + np.where(np.isin(cancer, ["thoracic", "cns"]), 0.5, 0)
    intent = np.where(rng.random(n) < 1 / (1 + np.exp(-palliative_logit)), "palliative", "curative")
    lp = (p.beta_bio_per_decade * (bio - 62.0) / 10.0 + p.beta_health * health
          + np.array([p.cancer_log_hr[c] for c in cancer]))
    t_death = rng.exponential(1.0, n) / (p.baseline_hazard_per_year * np.exp(lp))
    t_loss = rng.exponential(1.0 / p.loss_rate_per_year, n)
    t_end = np.minimum(np.minimum(t_death, t_loss), p.admin_censor_years)
    event = (t_death <= t_end).astype(int)
    days = np.maximum(np.round(t_end * 365.25), 1).astype(int)
    ids = [f"{i + 1:06d}" for i in range(n)]
    return pd.DataFrame({
        "photo_id": [f"P{i}" for i in ids], "subject_id": [f"S{i}" for i in ids],
        "age": age, "sex": sex, "race": race, "cancer_type": cancer, "ecog": ecog,
        "treatment_intent": intent, "time_days": days, "event": event,
        "faceage": np.round(bio + rng.normal(0, p.oracle_faceage_sd, n), 2),
        "risk": np.round(lp + rng.normal(0, p.oracle_risk_sd, n), 4),
        "biological_age": bio, "health": health, "true_lp": lp,
    })


TRUTH_COLUMNS = ["photo_id", "subject_id", "biological_age", "health", "true_lp"]


def write_cohort(out: str | Path, n: int, seed: int, params: WorldParams | None = None,
                 name: str | None = None) -> Path:
    """Write a cohort folder of the synthetic world (manifest, cohort.yaml, truth).

    The manifest uses coded columns (``sex`` as M/F, follow-up in days under
    ``followup_days``) so that demo cohorts exercise cohort.yaml's column and value maps.
    """
    p = params or WorldParams()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = simulate(n, seed, p)
    manifest = pd.DataFrame({
        "photo_id": df["photo_id"], "subject_id": df["subject_id"], "age": df["age"],
        "sex": df["sex"].map({"female": "F", "male": "M"}), "race": df["race"],
        "cancer_type": df["cancer_type"], "ecog": df["ecog"],
        "treatment_intent": df["treatment_intent"], "followup_days": df["time_days"],
        "death": df["event"], "faceage": df["faceage"], "risk": df["risk"],
    })
    manifest.to_csv(out / "manifest.csv", index=False)
    df[TRUTH_COLUMNS].to_csv(out / "truth.csv", index=False)
    spec = {
        "name": name or f"synthetic-cancer-n{n}-seed{seed}",
        "site": "synthetic",
        "description": (
            "SYNTHETIC cohort from faceage-audit's demo world (no real patients). Predictions "
            "are those of an ORACLE model (FaceAge = true biological age + noise; risk = true "
            "log hazard + noise), not of a trained image model."),
        "synthetic": True,
        "manifest": "manifest.csv",
        "columns": {"time": "followup_days", "event": "death"},
        "values": {"sex": {"F": "female", "M": "male"}},
        "vocabulary": {"race": list(RACES), "cancer_type": list(CANCERS)},
        "covariates": [
            {"name": "ecog", "type": "numeric"},
            {"name": "treatment_intent", "type": "categorical", "reference": "curative"},
        ],
        "time_unit": "days",
        "cropped": True,
    }
    (out / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    truth = {"seed": seed, "n": n, "params": asdict(p),
             "hr_bio_per_decade": p.hr_bio_per_decade,
             "oracle": {"faceage_sd": p.oracle_faceage_sd, "risk_sd": p.oracle_risk_sd}}
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return out
