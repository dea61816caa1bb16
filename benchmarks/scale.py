"""A registry-sized audit, stage by stage: a predictions-only cohort of the demo world (one
photo a subject, the oracle model's FaceAge and risk score, outcomes), audited end to end
with the default config in this process; each stage's wall time (from the run's own
``run_stages`` rows) and the highest resident memory sampled while it ran (every 0.1 s),
the whole run's wall time and the peak resident memory of the process.

    python benchmarks/scale.py --n 100000
    python benchmarks/scale.py --n 1000000        # make bench-scale
    python benchmarks/scale.py --n 100000 --dask 1 2 --repeat 3

With ``--dask K ...`` the same audit also runs as the Prefect flow on a Dask LocalCluster of
K single-threaded worker processes (a temporary Prefect server for the flow and its workers),
once per K, and the statistics stages' time (accuracy + fairness + survival) is compared with
the in-process run's: the speed-up of spreading the statistics pieces over the workers. With
``--repeat R`` the in-process audit and each worker count run R times, interleaved (process,
each K, process, each K, ...), and the speed-ups are of the medians: a shared virtual
machine's speed drifts (the same piece took 9.6 to 15.3 s within an hour here), and one run
of each can put them in different weather.

The cohort is written once per size and seed under ``--work`` (default: a folder in the
system's temporary directory) and reused; the audit's output goes beside it and is replaced
each time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path


def peak_rss_gb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


class RssSampler(threading.Thread):
    """This process's resident set every ``interval`` seconds (Linux ``/proc``), with the
    time of each sample, until :meth:`stop`."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval, self.samples, self._done = interval, [], threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def run(self) -> None:
        with open("/proc/self/statm") as statm:
            while not self._done.is_set():
                statm.seek(0)
                rss = int(statm.read().split()[1]) * self._page
                self.samples.append((datetime.now(timezone.utc), rss))
                self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def peak_gb(self, start, end) -> float:
        """The highest sample from ``start`` to ``end`` (GB; NaN if none fell there)."""
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) / 1024**3 if inside else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000, help="subjects")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "faceage-scale")
    parser.add_argument("--dask", type=int, nargs="*", default=[], help="worker counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, interleaved")
    args = parser.parse_args()

    from audit.demo.world import write_cohort

    cohort = args.work / f"cohort-{args.n}-{args.seed}"
    t0 = time.perf_counter()
    if not (cohort / "cohort.yaml").is_file():
        write_cohort(cohort, args.n, args.seed)
    made = time.perf_counter() - t0
    out = args.work / f"out-{args.n}-{args.seed}"
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    run, stages = audit_in_process(cohort, out)
    wall = time.perf_counter() - t0
    sampler.stop()
    print(f"{args.n:,} subjects (cohort written in {made:.1f} s); verdict {run.verdict_status}")
    print("| stage | seconds | rows written | peak resident memory (GB) |")
    print("|---|---:|---:|---:|")
    for r in stages.itertuples():  # a stage is timed from the write before it to its commit
        seconds = (r.finished_at - r.started_at).total_seconds()
        peak = sampler.peak_gb(r.started_at, r.finished_at)
        print(f"| {r.stage} | {seconds:.1f} | {r.rows_written:,} | {peak:.2f} |")
    print(f"| whole run | {wall:.1f} | |")
    print(f"peak resident memory: {peak_rss_gb():.2f} GB")
    if args.dask:
        first = statistics_seconds(stages)
        dask_speedups(cohort, args.work, args.n, args.seed, first, args.dask, args.repeat)


STATISTICS = ("accuracy", "fairness", "survival")
MODELS = ["predictions:faceage,risk"]


def audit_in_process(cohort: Path, out: Path):
    """The audit of ``cohort`` in this process into ``out`` (replaced): the run and its
    ``run_stages`` rows in order."""
    import audit
    from audit.pipeline.store import Store

    shutil.rmtree(out, ignore_errors=True)
    run = audit.run(cohort, MODELS, out=out)
    stages = Store(out / "audit.duckdb").table("run_stages", run.run_id)
    return run, stages.sort_values("started_at")


def statistics_seconds(stages) -> float:
    """The statistics stages' wall time from a run's ``run_stages`` rows."""
    rows = stages[stages["stage"].isin(STATISTICS)]
    return float(sum((r.finished_at - r.started_at).total_seconds() for r in rows.itertuples()))


def dask_speedups(cohort, work, n, seed, in_process: float, workers: list[int], repeat: int):
    """The statistics stages' time on a Dask LocalCluster of each worker count, against the
    in-process audit's; ``repeat`` rounds of them all, interleaved, medians compared."""
    import statistics

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from audit.orchestrate.prefect_flows import audit_flow, dask_task_runner
    from audit.pipeline.store import Store

    times: dict = {0: [in_process], **{k: [] for k in workers}}  # 0: in one process
    with prefect_test_harness(server_startup_timeout=90):
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # for the workers
        for r in range(repeat):
            if r:
                _, rows = audit_in_process(cohort, work / f"out-{n}-{seed}")
                times[0].append(statistics_seconds(rows))
            for k in workers:
                out = work / f"out-{n}-{seed}-dask{k}"
                shutil.rmtree(out, ignore_errors=True)
                flow = audit_flow.with_options(task_runner=dask_task_runner(workers=k))
                result = flow(cohort=str(cohort), models=MODELS, out=str(out))
                rows = Store(out / "audit.duckdb").table("run_stages", result["run_id"])
                times[k].append(statistics_seconds(rows))
    base = statistics.median(times[0])
    print("| statistics (accuracy + fairness + survival) | median (s) | each run (s) | speed-up |")
    print("|---|---:|---|---:|")
    for k, runs in times.items():
        label = f"Dask, {k} worker(s)" if k else "in one process"
        each = ", ".join(f"{t:.1f}" for t in runs)
        mid = statistics.median(runs)
        print(f"| {label} | {mid:.1f} | {each} | {base / mid:.2f} |")


if __name__ == "__main__":
    main()
