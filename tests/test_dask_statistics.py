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
        run_id = store.runs()["run_id"].iloc[-1]
        notes = store.table("run_stages", run_id).set_index("stage")["note"].fillna("")
        for stage in ("accuracy", "fairness", "survival"):
            said = re.search(
                r"(\d+) pieces on worker process\(es\) ((?:[\w.-]+:\d+(?:, )?)+) "
                r"\(([\d.]+) s of computing\)\.",
                notes[stage],
            )
            assert bool(said) == spread, (stage, notes[stage])
            if said:
                pids = {int(p) for p in re.findall(r":(\d+)", said.group(2))}
                assert pids and os.getpid() not in pids and float(said.group(3)) > 0


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
