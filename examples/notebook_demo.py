"""`faceage-audit demo`, cell by cell from Python: the same cohort, models, config and seed,
through ``audit.run`` (inline, no Prefect), so its numbers equal the CLI's.

    python examples/notebook_demo.py [OUT] [N] [SEED]

In a notebook, run the body of ``main`` cell by cell. In a script, keep the calls under
``if __name__ == "__main__":``: image checks and decoding run in worker processes that start
fresh (spawn or forkserver) and import the script again.
"""

import sys
from pathlib import Path

import audit
from audit.demo.preset import demo_config, demo_models, write_demo_cohort


def main(out: Path, n: int = 600, seed: int = 0) -> audit.AuditRun:
    # %% the synthetic cohort with rendered faces (known truth; see docs/synthetic-world.md)
    cohort = write_demo_cohort(out / "cohort", n=n, seed=seed)

    # %% the audit: the two demo models and the real dlib age model, the demo's config
    run = audit.run(cohort, demo_models(), config=demo_config(), out=out)
    print(f"verdict: {run.verdict_status}  run {run.run_id}\nreport: {run.report_path}")

    # %% the numbers, as tidy frames
    accuracy = run.accuracy
    print(accuracy.query("attribute == 'all'")[["model", "metric", "value", "ci_low", "ci_high"]])
    failed = run.verdict.query("status in ['fail', 'inconclusive']")
    print(failed[["model", "check_name", "status", "details"]].to_string(max_colwidth=80))
    return run


if __name__ == "__main__":
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path("reports/notebook-demo"),
        int(sys.argv[2]) if len(sys.argv) > 2 else 600,
        int(sys.argv[3]) if len(sys.argv) > 3 else 0,
    )
