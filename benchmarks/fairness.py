"""Fairness audit speed: 1,000 subject resamples over 10,000 subjects for every group and
intersection, FaceAge metrics and per-group C-indices and O/E, against fairlearn's own
bootstrap of one grouping (timed on a few resamples and scaled).

    python benchmarks/fairness.py [--n 10000] [--n-boot 1000]

Targets (issue 7): FaceAge metrics under 10 s, per-group C-indices under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> None:
    import numpy as np
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import mean_absolute_error

    from audit.demo.world import simulate
    from audit.metrics.fairness import faceage_fairness, risk_fairness
    from audit.pipeline.config import load_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    cfg = load_config(fairness={"n_boot": args.n_boot})
    df = simulate(args.n, 1)
    df["time"] = df["time_days"] / 365.25
    cuts = cfg.accuracy.age_bands

    start = time.perf_counter()
    fa = faceage_fairness(df, "m", cfg.fairness, cuts)
    t_face = time.perf_counter() - start
    start = time.perf_counter()
    ri = risk_fairness(df, "m", cfg.fairness, cuts)
    t_risk = time.perf_counter() - start
    groupings = sorted(set(fa["attribute"]) - {"all"})
    n_groups = int((fa[fa["metric"] == "mae"]["attribute"] != "all").sum())

    probe = 20
    start = time.perf_counter()
    MetricFrame(
        metrics={"mae": mean_absolute_error},
        y_true=df["age"],
        y_pred=df["faceage"],
        sensitive_features=df["race"],
        n_boot=probe,
        ci_quantiles=[0.025, 0.975],
        random_state=0,
    )
    per = (time.perf_counter() - start) / probe
    print(
        f"{args.n:,} subjects, {args.n_boot:,} resamples, {len(groupings)} groupings "
        f"({', '.join(groupings)}), {n_groups} groups\n"
    )
    print("| what | seconds |")
    print("| --- | ---: |")
    print(f"| FaceAge: 6 metrics, every group, bands and flags | {t_face:.1f} |")
    print(f"| risk: C-index and O/E per group, bands and flags | {t_risk:.1f} |")
    print(
        f"| fairlearn's own bootstrap, MAE by race only ({per * 1000:.0f} ms a resample, "
        f"scaled to {args.n_boot:,}) | {per * args.n_boot:.0f} |"
    )
    assert len(ri) and np.isfinite(fa["value"]).any()


if __name__ == "__main__":
    main()
