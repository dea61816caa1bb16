"""The combined audit at scale: signed bundles of the size a real audit writes (one model, two
outputs: accuracy overall, eight fairness metrics over 49 groups of six groupings, Cox terms;
about 850 entries a site), pooled across 5, 20 and 50 sites; then the whole command (verify,
pool, judge, page, regulatory files) for 20 sites.

    python benchmarks/combine.py [--sites 5 20 50]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

GROUPINGS = {
    "age_band": ["<=65", "65-75", "75-85", ">85"],
    "sex": ["female", "male"],
    "race": ["White", "Black", "Asian", "Hispanic", "Other"],
    "cancer_type": [f"c{i}" for i in range(8)],
}
GROUPINGS["sex x race"] = [f"{s} x {r}" for s in GROUPINGS["sex"] for r in GROUPINGS["race"]]
GROUPINGS["race x age_band"] = [
    f"{r} x {a}" for r in GROUPINGS["race"] for a in GROUPINGS["age_band"]
]
FAIRNESS = ["mae", "mean_error", "pearson_r", "within_5y", "mae_age_adjusted",
            "mean_error_age_adjusted", "c_index", "calibration_oe"]  # fmt: skip


def entries(rng: np.random.Generator) -> list[dict]:
    def q(output, quantity, value, se, attribute="all", group="all", n=800, scale="identity"):
        return {
            "model": "m", "output": output, "quantity": quantity, "attribute": attribute,
            "group": group, "horizon": None, "scale": scale, "n": n, "events": 300,
            "estimate": float(value), "se": float(se), "ci_low": float(value - 1.96 * se),
            "ci_high": float(value + 1.96 * se),
        }  # fmt: skip

    out = [
        q("faceage", "mae", 6 + rng.normal(0, 0.2), 0.2),
        q("faceage", "mean_error", 1 + rng.normal(0, 0.3), 0.3),
        q("faceage", "pearson_r", 0.9 + rng.normal(0, 0.01), 0.01),
        q("risk", "c_index", 0.72 + rng.normal(0, 0.02), 0.02),
    ]
    for output in ("faceage", "risk"):
        for metric in FAIRNESS:
            base = (
                0.9
                if metric in ("pearson_r", "calibration_oe")
                else 0.7
                if metric == "c_index"
                else 4.0
            )
            for attribute, groups in GROUPINGS.items():
                for g in groups:
                    out.append(
                        q(output, f"fairness:{metric}", base + rng.normal(0, 0.05), 0.05,
                          attribute, g, n=int(rng.integers(20, 300)))
                    )  # fmt: skip
    for model_id in ("faceage_per_decade__age_sex", "risk_quartiles__age_sex"):
        for term in ("faceage_decade", "age_decade", "sex[female]", "risk[Q2]", "risk[Q4]"):
            out.append(q(model_id, f"log_hr:{term}", 0.5 + rng.normal(0, 0.1), 0.1, scale="log"))
    return out


def write_sites(folder: Path, k: int) -> list[Path]:
    from audit.pipeline.bundle import FORMAT
    from audit.pipeline.dossier import sign_document

    paths = []
    for i in range(k):
        os.environ["FACEAGE_AUDIT_SIGNING_KEY"] = str(folder / f"s{i}.key")
        bundle = {
            "format": FORMAT, "site": f"site-{i:02d}", "run_id": f"r{i}", "flow": "audit",
            "synthetic": True,
            "models": [{"name": "m", "kind": "timm", "outputs": ["faceage", "risk"],
                        "checkpoint_sha256": "c" * 64, "spec_sha256": "s" * 64}],
            "config_sha256": "f" * 64, "code_version": "bench", "small_cells": {},
            "composition": {"subjects": 800}, "quantities": entries(np.random.default_rng(i)),
        }  # fmt: skip
        path = folder / f"s{i}.json"
        path.write_text(json.dumps(sign_document(bundle, "bundle")))
        paths.append(path)
    return paths


def main() -> None:
    import audit
    from audit.pipeline.combine import combine_tables, combined_verdicts, read_site
    from audit.pipeline.config import load_config

    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, nargs="+", default=[5, 20, 50])
    args = parser.parse_args()
    cfg = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_sites(folder, max(args.sites))
        print(f"{len(entries(np.random.default_rng(0)))} entries a site")
        for k in args.sites:
            t0 = time.perf_counter()
            sites = [read_site(p) for p in paths[:k]]
            t1 = time.perf_counter()
            tables, models = combine_tables(sites, cfg)
            t2 = time.perf_counter()
            combined_verdicts(tables, models, cfg)
            t3 = time.perf_counter()
            print(
                f"{k:3d} sites: read and verify {t1 - t0:5.2f} s, pool "
                f"{len(tables['combined_pooled'])} quantities {t2 - t1:5.2f} s, "
                f"judge {t3 - t2:5.2f} s"
            )
        t0 = time.perf_counter()
        audit.combine(paths[:20], out=folder / "out")
        print(f"audit.combine of 20 sites (with the page and regulatory files): "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
