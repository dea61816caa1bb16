"""Slice discovery at scale (issue target: 10,000 subjects, search and confirmation under
30 s): the whole of :func:`audit.metrics.slices.discover` on synthetic subjects with 6
categorical features of 4 levels, 6 numeric ones (banded in thirds), an 8-cluster label and
a planted slice, and the features' k-means clustering of 256-dimensional embeddings.

    python benchmarks/slices.py [--n 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main() -> None:
    from audit.metrics.slices import SliceSettings, discover, slice_features

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    n = parser.parse_args().n
    rng = np.random.default_rng(0)
    features = pd.DataFrame({f"c{i}": rng.choice(list("abcd"), n) for i in range(6)})
    for i in range(6):
        features[f"x{i}"] = rng.normal(size=n)
    features["cluster"] = rng.integers(0, 8, n).astype(str)
    planted = (features["c0"] == "a") & (features["c1"] == "b") & (features["x0"] < -0.43)
    loss = rng.normal(0, 5, n) + 4.0 * planted.to_numpy()
    start = time.perf_counter()
    result = discover(features, loss, SliceSettings(), signed=True)
    search = time.perf_counter() - start
    subjects = pd.DataFrame({"photo_id": [f"p{i}" for i in range(n)], "sex": "x"})
    vectors = pd.DataFrame(
        {"photo_id": subjects["photo_id"], "vector": list(rng.normal(size=(n, 256)))}
    )
    start = time.perf_counter()
    slice_features(subjects, [], embeddings=vectors, clusters=8)
    clustering = time.perf_counter() - start
    top = result[result["confirmed"]]["slice"].head(1).tolist()
    print("| subjects | features | search + confirmation (s) | k-means of 256-d embeddings (s) |")
    print("|---|---|---|---|")
    print(f"| {n:,} | 13 | {search:.2f} | {clustering:.2f} |")
    print(f"confirmed first: {top}")


if __name__ == "__main__":
    main()
