"""A cohort with its manifest rows shuffled and its ids renamed gives the same numbers in every
result table: groups by value (ties together), resamples and folds drawn over rows in an
order fixed by their values, subject codes by first appearance in that order.

Before this, risk quartiles ranked tied scores by row position: the lung cohort (risk =
ECOG) shuffled changed the Q4 vs Q1 HR from 2.326 to 2.276 and the log-rank chi-square from
18.48 to 15.39."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK_CONFIG as CONFIG
from conftest import cli_run, write_lung_cohort

# columns that name a row, a time or a file rather than a result
VOLATILE = {
    "run_id",
    "row_number",
    "source_file",
    "path",
    "sha256",
    "started_at",
    "finished_at",
    "applied_at",
    "heartbeat_at",
    "created_at",
    "image_sha256",
}
NOT_COMPARED = {"artifacts", "prediction_cache", "embedding_cache"}  # files and caches
# per table: text that names the files and manifest rows of the examples it quotes
TEXT_WITH_ROWS = {"validation_results": {"details"}}
ID_COLUMNS = ("photo_id", "subject_id", "image_path")


def _shuffled(folder: Path, manifest: str, out: Path, seed: int) -> dict[str, str]:
    """A copy of the cohort folder with its rows shuffled and its ids renamed; returns new id
    -> original id."""
    import shutil

    shutil.copytree(folder, out)
    df = pd.read_csv(folder / manifest, dtype=str, keep_default_na=False)
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    back = {}
    for col in [c for c in ("patient", "photo_id", "subject_id") if c in df.columns]:
        new = {
            old: f"{col[:1]}x{seed}-{i:05d}"
            for i, old in enumerate(np.random.default_rng(seed).permutation(df[col].unique()))
        }
        df[col] = df[col].map(new)
        back.update({v: k for k, v in new.items()})
    df.to_csv(out / manifest, index=False)
    return back


def _tables(out: Path, back: dict[str, str] | None = None) -> dict[str, pd.DataFrame]:
    import duckdb

    from audit.pipeline.store import RESULT_TABLES

    con = duckdb.connect(str(out / "audit.duckdb"), read_only=True)
    tables = {}
    for name in sorted(set(RESULT_TABLES) - NOT_COMPARED):
        df = con.execute(f"SELECT * FROM {name}").df()
        df = df.drop(
            columns=[c for c in df.columns if c in VOLATILE | TEXT_WITH_ROWS.get(name, set())]
        )
        for col in [c for c in ID_COLUMNS if c in df.columns and back]:
            df[col] = df[col].map(lambda v: back.get(v, v))
        tables[name] = _sorted(df)
    con.close()
    return tables


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    key = df.apply(lambda col: col.map(lambda v: f"{v:.9g}" if isinstance(v, float) else repr(v)))
    return df.loc[key.sort_values(list(key.columns), kind="mergesort").index].reset_index(drop=True)


def _assert_same(a: dict, b: dict) -> None:
    for name in a:
        left, right = a[name], b[name]
        assert left.shape == right.shape, (name, left.shape, right.shape)
        for col in left.columns:
            x, y = left[col], right[col]
            if pd.api.types.is_float_dtype(x) or pd.api.types.is_float_dtype(y):
                np.testing.assert_allclose(
                    x.to_numpy(float),
                    y.to_numpy(float),
                    rtol=1e-9,
                    atol=1e-12,
                    err_msg=f"{name}.{col}",
                )
            elif x.map(lambda v: isinstance(v, np.ndarray)).any():
                for u, v in zip(x, y):
                    np.testing.assert_allclose(
                        np.asarray(u, float),
                        np.asarray(v, float),
                        rtol=1e-6,
                        err_msg=f"{name}.{col}",
                    )
            else:
                assert x.astype(str).tolist() == y.astype(str).tolist(), f"{name}.{col}"


def _run(cohort: Path, model: str, out: Path, config: Path) -> None:

    assert cli_run(cohort, model, out, config=config) in (0, 1)


def test_a_shuffled_renamed_predictions_cohort_with_tied_scores(tmp_path, prefect_harness):
    folder = write_lung_cohort(tmp_path / "lung")
    # the ECOG score as the model's risk: 4 distinct values, so quartile ties everywhere
    df = pd.read_csv(folder / "lung.csv")
    df["risk"] = df["ph.ecog"]
    df.to_csv(folder / "lung.csv", index=False)
    config = tmp_path / "audit.toml"
    config.write_text(CONFIG)
    back = _shuffled(folder, "lung.csv", tmp_path / "shuffled", seed=5)
    _run(folder, "predictions:risk", tmp_path / "a", config)
    _run(tmp_path / "shuffled", "predictions:risk", tmp_path / "b", config)
    a, b = _tables(tmp_path / "a"), _tables(tmp_path / "b", back)
    assert len(a["survival_terms"]) and len(a["fairness"]) and len(a["decision_curves"])
    _assert_same(a, b)


@pytest.mark.slow
def test_a_shuffled_renamed_demo_cohort_with_photos(tmp_path, prefect_harness):
    from audit.demo.world import write_cohort

    folder = write_cohort(tmp_path / "demo", n=240, seed=8, photos=True)
    config = tmp_path / "audit.toml"
    config.write_text(CONFIG)
    back = _shuffled(folder, "manifest.csv", tmp_path / "shuffled", seed=6)
    for cohort, out in ((folder, "a"), (tmp_path / "shuffled", "b")):
        _run(cohort, "demo:faceage", tmp_path / out, config)
    a, b = _tables(tmp_path / "a"), _tables(tmp_path / "b", back)
    assert len(a["robustness"]) and len(a["predictions"])
    _assert_same(a, b)
