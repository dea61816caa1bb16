"""CPU benchmarks of the foundation stages; prints a Markdown table for RESULTS.md.

Run with `make bench`. Figures depend on the machine: compare ratios, re-measure before
relying on one.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from audit.data.cohort import load_cohort
from audit.demo.world import write_cohort
from audit.metrics.accuracy import faceage_accuracy, risk_accuracy
from audit.pipeline.config import AccuracyConfig, SurvivalConfig
from audit.pipeline.store import Store
from audit.survival.analysis import survival_analysis


def timed(label, fn, rows):
    start = time.perf_counter()
    out = fn()
    rows.append((label, time.perf_counter() - start))
    return out


def main() -> None:
    rows: list[tuple[str, float]] = []
    tmp = Path(tempfile.mkdtemp(prefix="faceage-bench-"))
    for n in (10_000, 100_000):
        folder = timed(f"make-cohort n={n:,}", lambda: write_cohort(tmp / f"c{n}", n, 0), rows)
        cohort = timed(f"load cohort n={n:,}", lambda: load_cohort(folder), rows)
        frame = cohort.frame
        timed(
            f"FaceAge accuracy, 1,000 subject resamples, 4 groupings, n={n:,}",
            lambda: faceage_accuracy(frame, "oracle", AccuracyConfig(n_boot=1000)),
            rows,
        )
        if n <= 10_000:
            timed(
                f"risk C-index, 200 resamples, overall + 4 groupings, n={n:,}",
                lambda: risk_accuracy(
                    cohort.subjects(), "oracle", AccuracyConfig(), SurvivalConfig(n_boot=200)
                ),
                rows,
            )
            timed(
                f"survival models of one model's FaceAge and risk (Cox by adjustment, "
                f"age gap, bands, quartiles, PH remedies, C with 200 resamples; Uno's C, AUC, "
                f"Brier, cross-fitted calibration, decision curves at 1 and 2 years), "
                f"n={n:,}",
                lambda: survival_analysis(
                    cohort.subjects(),
                    "oracle",
                    ["faceage", "risk"],
                    cohort.spec.covariates,
                    SurvivalConfig(n_boot=200),
                ),
                rows,
            )
            timed(
                f"the same with clinical utility within the groups of sex, race, cancer type "
                f"and age band (decision_subgroups), n={n:,}",
                lambda: survival_analysis(
                    cohort.subjects(),
                    "oracle",
                    ["faceage", "risk"],
                    cohort.spec.covariates,
                    SurvivalConfig(n_boot=200),
                    decision_groups=["sex", "race", "cancer_type", "age_band"],
                ),
                rows,
            )
            from audit.decisions.curves import score_decision_curves

            subjects = cohort.subjects()
            timed(
                f"decision curves of one score (2 horizons x 18 thresholds x 3 strategies, "
                f"200 resamples, cross-fitted), n={n:,}",
                lambda: score_decision_curves(
                    "o",
                    "risk",
                    subjects["time"],
                    subjects["event"],
                    subjects["risk"],
                    subjects["age"],
                    horizons=[1.0, 2.0],
                    n_boot=200,
                ),
                rows,
            )
            from audit.survival.incremental import incremental_value

            timed(
                f"incremental value (3 nested models, LR tests, change in C, 200 resamples), "
                f"n={n:,}",
                lambda: incremental_value(
                    cohort.subjects(),
                    cohort.spec.covariates,
                    faceage_model="o",
                    risk_model="o",
                    n_boot=200,
                ),
                rows,
            )
            timed(
                f"the same with the nested models' decision curves at 1 and 2 years "
                f"(3 x 5 cross-fitted Cox fits, 4 strategies x 18 thresholds), n={n:,}",
                lambda: incremental_value(
                    cohort.subjects(),
                    cohort.spec.covariates,
                    faceage_model="o",
                    risk_model="o",
                    n_boot=200,
                    decision_horizons=[1.0, 2.0],
                ),
                rows,
            )
        from audit.stats.bootstrap import bootstrap_weights
        from audit.stats.concordance import weighted_concordance

        subjects = cohort.subjects()
        w = bootstrap_weights(len(subjects), 200, np.random.default_rng(0))
        timed(
            f"Harrell's C under 200 subject resamples (one weighted pass), n={n:,}",
            lambda: weighted_concordance(subjects["time"], subjects["event"], subjects["risk"], w),
            rows,
        )
        store = Store(tmp / f"bench{n}.duckdb")
        run_id = store.start_run(flow="bench", cohort_name="b", cohort_sha256="0" * 64)
        preds = frame[["photo_id", "subject_id"]].assign(
            model="oracle",
            output="faceage",
            perturbation="none",
            severity=0,
            value=frame["faceage"].to_numpy(),
        )
        timed(
            f"write {len(preds):,} prediction rows in one stage transaction",
            lambda: store.write_stage(run_id, "predictions", {"predictions": preds}),
            rows,
        )
    from audit.models import create_model

    folder = timed(
        "render 2,000 face photos (make-cohort)",
        lambda: write_cohort(tmp / "faces", 2000, 0, photos=True),
        rows,
    )
    faces = load_cohort(folder)
    model = create_model("demo:faceage")
    timed("load demo FaceAge (test_resnet)", model.load, rows)
    timed(
        "inference, demo FaceAge, 2,000 photos (decode + batch 64, CPU)",
        lambda: model.predict(faces),
        rows,
    )
    from audit.data.validation import validate_cohort

    big = load_cohort(
        timed(
            "render 10,000 face photos with planted defects",
            lambda: write_cohort(tmp / "faces10k", 10_000, 1, photos=True, defects=True),
            rows,
        )
    )
    report = timed(
        "validate 10,000 photos: manifest + image suites, 2 worker processes",
        lambda: validate_cohort(big, workers=2),
        rows,
    )
    rows.append(
        ("  (images per second in that validation)", len(report.image_properties) / rows[-1][1])
    )
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}\n"
    )
    print("| what | seconds |\n| --- | ---: |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
