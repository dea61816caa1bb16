"""What the checked Cox layer (audit.stats.cox) costs over a bare lifelines fit; prints a Markdown
table for RESULTS.md.

- a well-behaved fit (10,000 simulated subjects x 10 terms): the checks only (one Efron
  score pass, an eigen-decomposition, the null likelihood);
- a heavy-tailed real one (scikit-survival's flchain, 7,874 subjects, kappa and age,
  censored at 5 years), where lifelines' default step ends at the wrong sign and the layer
  refits with a damped step;
- the survival stage of one model's FaceAge and risk on 10,000 simulated subjects.

Run with `.venv/bin/python benchmarks/cox.py`.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from lifelines import CoxPHFitter
    from sksurv.datasets import load_flchain

    from audit.demo.world import simulate
    from audit.pipeline.config import SurvivalConfig
    from audit.stats.cox import fit_cox

    rows = []
    rng = np.random.default_rng(0)
    n, p = 10_000, 10
    x = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"x{j}" for j in range(p)])
    t = rng.exponential(1.0, n) / np.exp(x.to_numpy() @ np.linspace(-0.3, 0.3, p))
    df = x.assign(time=np.minimum(t, 3.0), event=(t <= 3.0).astype(int))

    def bare(frame, terms, **options):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return CoxPHFitter().fit(
                frame[terms + ["time", "event"]], "time", "event", fit_options=options or None
            )

    terms = list(x.columns)
    rows.append(
        ("lifelines CoxPHFitter, 10,000 x 10, well-behaved", best_of(lambda: bare(df, terms)))
    )
    rows.append(
        (
            "audit.stats.cox.fit_cox, same (checks pass at the first attempt)",
            best_of(lambda: fit_cox(df, df[terms])),
        )
    )
    rows.append(
        (
            "audit.stats.cox.fit_cox, same, cross-checked with scikit-survival",
            best_of(lambda: fit_cox(df, df[terms], cross_check="always")),
        )
    )

    fx, fy = load_flchain()
    flc = pd.DataFrame(
        {
            "kappa": fx["kappa"].astype(float).to_numpy(),
            "age": fx["age"].astype(float).to_numpy(),
            "time": np.minimum(fy["futime"] / 365.25, 5.0),
            "event": np.where(fy["futime"] / 365.25 > 5, 0, fy["death"]),
        }
    )
    flc["event"] = flc["event"].astype(int)
    wrong = bare(flc, ["kappa", "age"]).params_["kappa"]
    rows.append(
        (
            f"lifelines CoxPHFitter, flchain kappa + age at 5 years (kappa coefficient "
            f"{wrong:+.3f}: wrong)",
            best_of(lambda: bare(flc, ["kappa", "age"])),
        )
    )
    fit = fit_cox(flc, flc[["kappa", "age"]])
    rows.append(
        (
            f"audit.stats.cox.fit_cox, same ({fit.method}; kappa {fit.fitter.params_['kappa']:+.3f}"
            ", cross-checked)",
            best_of(lambda: fit_cox(flc, flc[["kappa", "age"]])),
        )
    )

    from audit.survival.analysis import survival_analysis

    sim = simulate(10_000, 0)
    sim["time"] = sim["time_days"] / 365.25
    rows.append(
        (
            "survival stage of one model's FaceAge and risk, 10,000 subjects, 200 "
            "resamples, decision curves at 1 and 2 years",
            best_of(
                lambda: survival_analysis(
                    sim, "oracle", ["faceage", "risk"], [], SurvivalConfig(n_boot=200)
                ),
                repeats=1,
            ),
        )
    )
    print("| what | seconds |\n| --- | ---: |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
