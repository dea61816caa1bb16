"""The statistics stages' pieces on the flow's Dask workers: the same rows as the inline run,
computed in worker processes, written by the flow alone; and the pieces, concatenated, hold
the rows of the whole survival analysis."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK_CONFIG, cli_run

from audit.demo.world import WorldParams, simulate, write_cohort
from audit.pipeline.config import load_config
from audit.pipeline.store import Store
from audit.survival.analysis import PARTS, survival_analysis

TABLES = {
    "accuracy": ["model", "output", "metric", "attribute", "group_name"],
    "fairness": ["model", "output", "metric", "attribute", "group_name"],
    "survival_subgroups": None,
    "survival_models": ["model", "model_id"],
    "survival_terms": ["model", "model_id", "term"],
    "survival_tests": None,
    "survival_metrics": ["model", "model_id", "metric", "horizon"],
    "survival_curves": None,
    "decision_curves": None,
    "decision_subgroups": None,
}


def _sorted(frame: pd.DataFrame, keys: list[str] | None) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in ("run_id",) if c in frame.columns])
    keys = keys or [c for c in frame.columns if frame[c].dtype == object]
    return frame.sort_values(keys, na_position="first", kind="stable").reset_index(drop=True)


def _assert_same_rows(a: pd.DataFrame, b: pd.DataFrame, keys, table: str) -> None:
    a, b = _sorted(a, keys), _sorted(b, keys)
    assert len(a) == len(b) and len(a) > 0, table
    # the same code on the same frames: equal to the last bits but for the order BLAS adds in
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12, obj=table)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("dask-statistics")
    cohort = write_cohort(root / "cohort", 700, seed=4242)
    config = root / "audit.toml"
    config.write_text(QUICK_CONFIG)
    local, dask = root / "local", root / "dask"
    assert cli_run(cohort, "predictions:faceage,risk", local, config=config) in (0, 1)
    os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # for the Dask workers
    try:
        code = cli_run(cohort, "predictions:faceage,risk", dask, "--runner", "dask", config=config)
    finally:
        os.environ.pop("PREFECT_API_URL", None)
    assert code in (0, 1)
    return Store(local / "audit.duckdb"), Store(dask / "audit.duckdb")


def test_dask_pieces_give_the_rows_of_the_inline_run(two_runs):
    local, dask = two_runs
    runs = [s.runs()["run_id"].iloc[-1] for s in (local, dask)]
    assert all(s.run(r)["status"] == "finished" for s, r in zip((local, dask), runs))
    for table, keys in TABLES.items():
        _assert_same_rows(local.table(table, runs[0]), dask.table(table, runs[1]), keys, table)
    verdicts = [
        s.table("verdicts", r).sort_values(["model", "check_name"]).reset_index(drop=True)
        for s, r in zip((local, dask), runs)
    ]
    assert len(verdicts[0]) > 5
    assert list(verdicts[0]["status"]) == list(verdicts[1]["status"])


def test_the_pieces_ran_in_worker_processes_and_the_notes_say_so(two_runs):
    local, dask = two_runs
    for store, spread in ((local, False), (dask, True)):
        counts, total = [], 0
        run_id = store.runs()["run_id"].iloc[-1]
        notes = store.table("run_stages", run_id).set_index("stage")["note"].fillna("")
        for stage in ("accuracy", "fairness", "survival"):
            said = re.search(
                r"(\d+) pieces on worker process\(es\) ((?:[\w.-]+:\d+(?:, )?)+) "
                r"\(([\d.]+) s of computing\)\.",
                notes[stage],
            )
            assert bool(said) == spread, (stage, notes[stage])
            together = re.search(
                r"the accuracy, fairness and survival pieces \((\d+)\) were computed "
                r"together, the longest first, in ([\d.]+) s",
                notes[stage],
            )
            assert bool(together) == spread, (stage, notes[stage])
            if said:
                pids = {int(p) for p in re.findall(r":(\d+)", said.group(2))}
                assert pids and os.getpid() not in pids and float(said.group(3)) > 0
                counts.append(int(said.group(1)))
                total = int(together.group(1))
        if spread:  # each stage's own pieces, out of all three stages' together
            assert sum(counts) == total and min(counts) >= 1, (counts, total)


def test_the_survival_parts_together_are_the_whole_analysis():
    """Each part alone, concatenated in the order of PARTS, holds exactly the rows (and the
    notes) of the whole analysis."""
    df = simulate(1500, 6, WorldParams.make("cancer"))
    df["time"] = df["time_days"] / 365.25
    cfg = load_config(survival={"n_boot": 30, "decision_horizons": [1.0]})
    args = (df, "m", ["faceage", "risk"], [], cfg.survival, cfg.accuracy.age_bands)
    kwargs = {"decision_groups": ["sex"], "min_group_size": 30}
    whole = survival_analysis(*args, **kwargs)
    parts = [survival_analysis(*args, **kwargs, part=p) for p in PARTS]
    assert sum((p.notes for p in parts), []) == whole.notes
    for name, frame in whole.tables().items():
        pieces = [p.tables()[name] for p in parts if len(p.tables()[name])]
        joined = pd.concat(pieces, ignore_index=True) if pieces else frame.iloc[:0]
        assert len(frame) == len(joined), name
        if len(frame):
            pd.testing.assert_frame_equal(frame, joined, check_dtype=False, obj=name)
    assert np.isfinite(whole.models["concordance"].astype(float)).any()


def test_survival_within_subgroups_attribute_by_attribute_is_the_whole():
    """The fairness stage runs survival within subgroups one attribute a piece: together,
    in the order of the attributes, the same rows as one call over all of them."""
    from audit.survival.subgroups import survival_subgroups

    df = simulate(1500, 7, WorldParams.make("cancer"))
    df["time"] = df["time_days"] / 365.25
    cfg = load_config().fairness
    cuts = load_config().accuracy.age_bands
    assert len(cfg.survival_attributes) >= 2
    whole = survival_subgroups(df, "m", ["faceage", "risk"], cfg, 10, cuts)
    parts = [
        survival_subgroups(
            df,
            "m",
            ["faceage", "risk"],
            cfg.model_copy(update={"survival_attributes": [a]}),
            10,
            cuts,
        )  # fmt: skip
        for a in cfg.survival_attributes
    ]
    for k in range(2):
        joined = pd.concat([p[k] for p in parts if len(p[k])], ignore_index=True)
        assert len(whole[k]) > 3
        pd.testing.assert_frame_equal(whole[k], joined, check_dtype=False)


def _worker_environment() -> dict:
    import dask

    return {
        "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "blas": os.environ.get("OMP_NUM_THREADS"),
        "profiler": dask.config.get("distributed.worker.profile.enabled"),
    }


def test_local_workers_compute_as_fast_as_the_flow_process():
    """Dask's default worker freezes glibc's mmap threshold (MALLOC_TRIM_THRESHOLD_) and
    samples its computing thread's stack every 10 ms; with both, the statistics computed
    30-40% slower in a worker than in the flow's process (benchmarks/RESULTS.md). The flow's
    LocalCluster spawns its workers without them, BLAS at one thread a worker, and its
    scheduler hands a worker one piece at a time (the longest first); Dask's own defaults
    are left as they were. Warmed, every worker imports the statistics and Prefect's task
    engine in the background, before any piece asks for them."""
    import time

    import dask
    import distributed

    from audit.orchestrate.prefect_flows import WORKER_IMPORTS, local_cluster, warm_workers

    # evaluated by a builtin: a function of this module would import it, and with it the
    # statistics, on the worker
    imported = f"[n in __import__('sys').modules for n in {list(WORKER_IMPORTS)!r}]"
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # else the workers would inherit it
    kwargs = {"n_workers": 2, "threads_per_worker": 1, "processes": True}
    with local_cluster(dashboard_address=None, **kwargs) as cluster:
        with distributed.Client(cluster) as client:
            bare = client.run(eval, imported)
            assert warm_workers(client) == 2
            deadline = time.monotonic() + 120
            while not all(all(w) for w in client.run(eval, imported).values()):
                assert time.monotonic() < deadline, "the workers did not import the statistics"
                time.sleep(0.5)
            envs = list(client.run(_worker_environment).values())
        saturation = cluster.scheduler.WORKER_SATURATION  # one task at a time a worker
    assert not any(any(w) for w in bare.values())  # they start bare
    assert envs == [{"trim": None, "blas": "1", "profiler": False}] * 2
    assert saturation == pytest.approx(1.0)
    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_")
    assert dask.config.get("distributed.worker.profile.enabled") is True


def test_the_statistics_stages_share_each_models_frames_while_they_plan(tmp_path):
    """Planned together, the three statistics stages build each model's wide predictions
    and first photos once (one frame held by pieces of three stages, not three); outside,
    every call builds its own; a frame's id() reused by another object is never mistaken."""
    from audit import stages
    from audit.stages.context import one_per_subject, wide_predictions

    cohort = write_cohort(tmp_path / "cohort", 120, seed=11)
    ctx = stages.start(cohort, ["predictions:faceage,risk"], tmp_path / "out", load_config())
    stages.validate_stage(ctx)
    stages.predict_stage(ctx, None)
    (model,) = ctx.models
    apart = wide_predictions(ctx, model)
    assert wide_predictions(ctx, model) is not apart
    with stages.shared_frames(ctx):
        wide = wide_predictions(ctx, model)
        assert wide_predictions(ctx, model) is wide
        first = one_per_subject(ctx, wide)
        assert one_per_subject(ctx, wide) is first
        pd.testing.assert_frame_equal(wide, apart)
        other = one_per_subject(ctx, apart)  # another frame: its own rows
        assert other is not first
        pd.testing.assert_frame_equal(other, first)
    assert ctx.shared is None and wide_predictions(ctx, model) is not wide
