"""Drift numbers for 10,000 vs 10,000 subjects: metadata, image-like properties, predictions
(evidently ValueDrift and the two-sample tests) and 96-dimensional embeddings (MMD with
2,000 permutations on 1,500 vectors a side), without evidently's HTML.

    python benchmarks/drift.py [--n 10000]

Target (issue 9): under 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> None:
    import numpy as np

    from audit.demo.world import simulate
    from audit.monitor.drift import decide, embedding_drift, feature_drift
    from audit.pipeline.config import load_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    args = ap.parse_args(argv)
    cfg = load_config().drift
    rng = np.random.default_rng(0)
    ref, cur = simulate(args.n, 1), simulate(args.n, 2)
    for df in (ref, cur):
        df["brightness"] = rng.normal(120, 20, len(df))
        df["sharpness"] = rng.lognormal(5, 0.5, len(df))
        df["jpeg_quality"] = rng.integers(60, 96, len(df))
    feats = (
        [("age", "metadata", "num", None)]
        + [(c, "metadata", "cat", None) for c in ("sex", "race", "cancer_type")]
        + [(c, "images", "num", None) for c in ("brightness", "sharpness", "jpeg_quality")]
        + [("faceage", "predictions", "num", "m"), ("risk", "predictions", "num", "m")]
    )
    emb_r = rng.normal(size=(args.n, 96)).astype(np.float32)
    emb_c = rng.normal(size=(args.n, 96)).astype(np.float32)
    start = time.perf_counter()
    rows, _ = feature_drift(ref, cur, feats)
    t_feat = time.perf_counter() - start
    start = time.perf_counter()
    rows.append(embedding_drift(emb_r, emb_c, "m", cfg))
    t_emb = time.perf_counter() - start
    table = decide(rows, cfg)
    print(f"{args.n:,} vs {args.n:,} subjects\n\n| what | seconds |\n| --- | ---: |")
    print(
        f"| {len(feats)} features: evidently ValueDrift (test and effect), two-sample "
        f"chi-square for categories | {t_feat:.1f} |"
    )
    print(
        f"| embeddings, 96 dimensions: MMD^2 and {cfg.n_permutations:,} permutations on "
        f"{cfg.embedding_max_n:,} a side | {t_emb:.1f} |"
    )
    print(f"| total | {t_feat + t_emb:.1f} |")
    print(f"\ndrifted (same population, so none expected): {int(table['drifted'].sum())}")


if __name__ == "__main__":
    main()
