"""The demo models on fresh 600-subject cohorts made with unseen seeds (issue targets).

    python benchmarks/demo_models.py   # prints a Markdown table for RESULTS.md

Healthy cohorts: demo FaceAge MAE (target under 4 years). Cancer cohorts: mean age gap
(target positive), demo FaceSurvival C (target at least 0.68 and above chronological age's),
and the FaceAge HR per decade adjusted for age and sex (target: above 1, CI reported).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from audit.data.cohort import load_cohort
from audit.demo.world import WorldParams, write_cohort
from audit.metrics.accuracy import harrell_c
from audit.models import create_model
from audit.pipeline.config import SurvivalConfig
from audit.survival.analysis import survival_analysis


def predictions(cohort, spec):
    frame = create_model(spec).predict(cohort).frame
    return frame.set_index("photo_id")["value"]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="faceage-demo-models-"))
    print(
        "| cohort | seed | n | FaceAge MAE | mean gap (FaceAge - age) | C FaceSurvival | "
        "C chronological age | FaceAge HR/decade, age+sex adjusted (95% CI) | seconds |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for population, seeds in (("healthy", (101, 102, 103)), ("cancer", (201, 202, 203))):
        for seed in seeds:
            start = time.perf_counter()
            cohort = load_cohort(
                write_cohort(
                    tmp / f"{population}{seed}",
                    600,
                    seed,
                    WorldParams.make(population),
                    photos=True,
                )
            )
            df = cohort.frame.set_index("photo_id")
            df["faceage"] = predictions(cohort, "demo:faceage")
            mae = float(np.abs(df["faceage"] - df["age"]).mean())
            gap = float((df["faceage"] - df["age"]).mean())
            cells = ["–", "–", "–"]
            if population == "cancer":
                df["risk"] = predictions(cohort, "demo:survival")
                c = harrell_c(df["time"], df["event"], df["risk"])
                c_age = harrell_c(df["time"], df["event"], df["age"])
                res = survival_analysis(
                    df.reset_index(), "demo", ["faceage"], [], SurvivalConfig(n_boot=0)
                )
                t = res.terms.set_index(["model_id", "term"]).loc[
                    ("faceage_per_decade__age_sex", "faceage_decade")
                ]
                cells = [
                    f"{c:.3f}",
                    f"{c_age:.3f}",
                    f"{t['hr']:.2f} ({t['hr_low']:.2f} to {t['hr_high']:.2f})",
                ]
            print(
                f"| {population} | {seed} | 600 | {mae:.2f} | {gap:+.2f} | "
                + " | ".join(cells)
                + f" | {time.perf_counter() - start:.1f} |"
            )


if __name__ == "__main__":
    main()
