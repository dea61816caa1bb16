"""Performance estimated without outcomes, and drift explained by case mix, at scale (issue
23's target: 10,000 subjects, label-free estimation with 200 resamples under 30 s): a
reference and a new cohort of 10,000 subjects each, shifted in age and site, with six image
properties and 64-dimensional embeddings (8 principal components) for the cohort classifier;
two outputs (a risk score and FaceAge); then the case-mix split of 8 features.

    python benchmarks/estimate.py [--n 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def cohort(n: int, seed: int, age_mean: float, site_b: float):
    rng = np.random.default_rng(seed)
    age = rng.normal(age_mean, 10, n)
    site = np.where(rng.random(n) < site_b, "b", "a")
    health = rng.normal(0, 1, n)
    eta = 0.05 * (age - 60) + 0.6 * health + 0.4 * (site == "b")
    death, censor = rng.exponential(1 / (0.15 * np.exp(eta))), rng.uniform(1, 8, n)
    frame = pd.DataFrame(
        {
            "age": age,
            "sex": rng.choice(["female", "male"], n),
            "race": rng.choice(["White", "Black", "Asian"], n),
            "site": site,
            "time": np.minimum(death, censor),
            "event": (death <= censor).astype(int),
            "risk": 0.05 * (age - 60) + 0.6 * health + rng.normal(0, 0.5, n),
            "faceage": age + 4 * health + rng.normal(0, 3, n),
        }
    )
    for k in range(6):
        frame[f"img{k}"] = rng.normal(0, 1, n)
    return frame, rng.normal(0, 1, (n, 64))


def main() -> None:
    from audit.monitor.casemix import explain_drift
    from audit.monitor.estimate import (
        EstimateSettings,
        design,
        estimate_performance,
        importance_weights,
    )

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    n = parser.parse_args().n
    (ref, emb_ref), (cur, emb_cur) = cohort(n, 1, 60, 0.3), cohort(n, 2, 68, 0.6)
    settings = EstimateSettings()
    images = [f"img{k}" for k in range(6)]
    start = time.perf_counter()
    x_ref, x_cur, names = design(
        ref, cur, ["age", *images], ["sex", "race", "site"], (emb_ref, emb_cur), 8
    )
    weights = importance_weights(x_ref, x_cur, settings)
    fitted = time.perf_counter() - start
    table, _ = estimate_performance(
        ref, cur, ["risk", "faceage"], weights, settings, (x_ref, x_cur)
    )
    estimated = time.perf_counter() - start
    features = [(c, "images", "num", None) for c in images] + [
        ("site", "metadata", "cat", None),
        ("risk", "predictions", "num", "m"),
    ]
    start = time.perf_counter()
    explain_drift(ref, cur, features, settings)
    case_mix = time.perf_counter() - start
    c = table[(table["output"] == "risk") & (table["metric"] == "c_index")].iloc[0]
    print(
        "| subjects (each cohort) | classifier features | weights (s) | estimate, 2 outputs, "
        "200 resamples (s) | case mix, 8 features (s) | ESS |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {n:,} | {len(names)} | {fitted:.1f} | {estimated:.1f} | {case_mix:.1f} | "
        f"{weights.ess:,.0f} |"
    )
    print(
        f"risk C: estimate {c['estimate']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}], "
        f"realised {c['realised']:.3f}, reference {c['reference_value']:.3f}"
    )


if __name__ == "__main__":
    main()
