"""The run store: one DuckDB file per output folder, the only module that writes it.

* The schema is built by forward migrations (:data:`MIGRATIONS`); ``schema_version`` records
  each one applied, so an ``audit.duckdb`` written by an older release opens in a newer one.
* Every run is a ``runs`` row (hashes, config, code and package versions, pid, host,
  heartbeat). A stage's rows are written in one transaction (:meth:`Store.write_stage`): a
  run killed at any moment leaves either the whole stage or none of it, and the next run
  that opens the file marks the dead run ``abandoned``.
* Connections are short-lived, so two processes can share a file: a second process waits
  for DuckDB's file lock (``FACEAGE_AUDIT_LOCK_TIMEOUT`` seconds, default 120) and then stops
  with :class:`StoreBusyError` naming the file and the process that holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from audit.errors import InputError, StoreBusyError

SCHEMA_V1 = [
    """CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY, flow VARCHAR, started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ, status VARCHAR, cohort_name VARCHAR, cohort_sha256 VARCHAR,
        models JSON, config_sha256 VARCHAR, code_version VARCHAR, environment JSON,
        pid INTEGER, host VARCHAR, heartbeat_at TIMESTAMPTZ, verdict VARCHAR)""",
    """CREATE TABLE cohort_rows (
        run_id VARCHAR, photo_id VARCHAR, subject_id VARCHAR, age DOUBLE, sex VARCHAR,
        race VARCHAR, cancer_type VARCHAR, site VARCHAR, time DOUBLE, event INTEGER,
        included BOOLEAN)""",
    """CREATE TABLE validation_results (
        run_id VARCHAR, suite VARCHAR, expectation VARCHAR, column_name VARCHAR,
        severity VARCHAR, success BOOLEAN, unexpected_count BIGINT, details JSON)""",
    """CREATE TABLE quarantine (
        run_id VARCHAR, photo_id VARCHAR, stage VARCHAR, severity VARCHAR,
        source_file VARCHAR, row_number BIGINT, column_name VARCHAR, reason VARCHAR)""",
    """CREATE TABLE image_properties (
        run_id VARCHAR, photo_id VARCHAR, width INTEGER, height INTEGER, brightness DOUBLE,
        contrast DOUBLE, sharpness DOUBLE, face_count INTEGER, face_box_frac DOUBLE,
        jpeg_quality DOUBLE)""",
    """CREATE TABLE detections (
        run_id VARCHAR, photo_id VARCHAR, x DOUBLE, y DOUBLE, w DOUBLE, h DOUBLE,
        confidence DOUBLE, landmarks JSON)""",
    """CREATE TABLE predictions (
        run_id VARCHAR, photo_id VARCHAR, subject_id VARCHAR, model VARCHAR, output VARCHAR,
        perturbation VARCHAR, severity INTEGER, value DOUBLE)""",
    """CREATE TABLE embeddings (
        run_id VARCHAR, photo_id VARCHAR, model VARCHAR, vector FLOAT[])""",
    """CREATE TABLE robustness (
        run_id VARCHAR, model VARCHAR, output VARCHAR, perturbation VARCHAR, severity INTEGER,
        attribute VARCHAR, group_name VARCHAR, n BIGINT, mean_abs_shift DOUBLE,
        p95_abs_shift DOUBLE, frac_over_tolerance DOUBLE, spearman DOUBLE, icc DOUBLE,
        quartile_change DOUBLE, passed BOOLEAN)""",
    """CREATE TABLE fairness (
        run_id VARCHAR, model VARCHAR, output VARCHAR, metric VARCHAR, attribute VARCHAR,
        group_name VARCHAR, n BIGINT, value DOUBLE, ci_low DOUBLE, ci_high DOUBLE,
        diff_to_overall DOUBLE, diff_ci_low DOUBLE, diff_ci_high DOUBLE, status VARCHAR)""",
    """CREATE TABLE survival_models (
        run_id VARCHAR, model VARCHAR, model_id VARCHAR, description VARCHAR, n BIGINT,
        events BIGINT, concordance DOUBLE, concordance_low DOUBLE, concordance_high DOUBLE,
        log_likelihood DOUBLE, ph_test_min_p DOUBLE)""",
    """CREATE TABLE survival_terms (
        run_id VARCHAR, model VARCHAR, model_id VARCHAR, term VARCHAR, hr DOUBLE,
        hr_low DOUBLE, hr_high DOUBLE, p_value DOUBLE)""",
    """CREATE TABLE survival_tests (
        run_id VARCHAR, model VARCHAR, test VARCHAR, groups VARCHAR, statistic DOUBLE,
        df DOUBLE, p_value DOUBLE)""",
    """CREATE TABLE survival_metrics (
        run_id VARCHAR, model VARCHAR, model_id VARCHAR, metric VARCHAR, horizon DOUBLE,
        value DOUBLE, ci_low DOUBLE, ci_high DOUBLE)""",
    """CREATE TABLE survival_curves (
        run_id VARCHAR, model VARCHAR, curve VARCHAR, group_name VARCHAR, time DOUBLE,
        survival DOUBLE, at_risk BIGINT)""",
    """CREATE TABLE drift (
        run_id VARCHAR, reference VARCHAR, model VARCHAR, feature VARCHAR, kind VARCHAR,
        method VARCHAR, statistic DOUBLE, p_value DOUBLE, drifted BOOLEAN)""",
    """CREATE TABLE saliency (
        run_id VARCHAR, model VARCHAR, output VARCHAR, method VARCHAR, group_name VARCHAR,
        region VARCHAR, share DOUBLE, ci_low DOUBLE, ci_high DOUBLE)""",
    """CREATE TABLE verdicts (
        run_id VARCHAR, model VARCHAR, check_name VARCHAR, threshold DOUBLE, value DOUBLE,
        passed BOOLEAN, details VARCHAR)""",
    """CREATE TABLE artifacts (
        run_id VARCHAR, kind VARCHAR, path VARCHAR, sha256 VARCHAR)""",
]

# Version 2: what the foundation release added beyond the original table contract.
SCHEMA_V2 = [
    "ALTER TABLE runs ADD COLUMN error VARCHAR",
    "ALTER TABLE runs ADD COLUMN config JSON",
    "ALTER TABLE runs ADD COLUMN manifest_sha256 VARCHAR",
    "ALTER TABLE runs ADD COLUMN synthetic BOOLEAN",
    "ALTER TABLE runs ADD COLUMN cohort_path VARCHAR",
    "ALTER TABLE cohort_rows ADD COLUMN camera VARCHAR",
    "ALTER TABLE cohort_rows ADD COLUMN row_number BIGINT",
    "ALTER TABLE verdicts ADD COLUMN status VARCHAR",  # pass, fail, skipped
    "ALTER TABLE verdicts ADD COLUMN category VARCHAR",
    "ALTER TABLE survival_models ADD COLUMN status VARCHAR",
    "ALTER TABLE survival_models ADD COLUMN note VARCHAR",
    "ALTER TABLE survival_terms ADD COLUMN coef DOUBLE",
    "ALTER TABLE survival_terms ADD COLUMN se DOUBLE",
    """CREATE TABLE run_stages (
        run_id VARCHAR, stage VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
        rows_written BIGINT, note VARCHAR)""",
    """CREATE TABLE accuracy (
        run_id VARCHAR, model VARCHAR, output VARCHAR, metric VARCHAR, attribute VARCHAR,
        group_name VARCHAR, n BIGINT, n_subjects BIGINT, value DOUBLE, ci_low DOUBLE,
        ci_high DOUBLE, status VARCHAR)""",
]

# Version 3: the validation release's per-image table columns.
SCHEMA_V3 = [
    "ALTER TABLE image_properties ADD COLUMN image_path VARCHAR",
    "ALTER TABLE image_properties ADD COLUMN mode VARCHAR",
    "ALTER TABLE image_properties ADD COLUMN format VARCHAR",
    "ALTER TABLE image_properties ADD COLUMN format_matches_name BOOLEAN",
    "ALTER TABLE image_properties ADD COLUMN decodable BOOLEAN",
    "ALTER TABLE image_properties ADD COLUMN error VARCHAR",
    "ALTER TABLE image_properties ADD COLUMN exif_orientation INTEGER",
    "ALTER TABLE image_properties ADD COLUMN sha256 VARCHAR",
    "ALTER TABLE image_properties ADD COLUMN exact_duplicate_of_other_subject BOOLEAN",
    "ALTER TABLE image_properties ADD COLUMN duplicate_of VARCHAR",
    "ALTER TABLE image_properties ADD COLUMN near_duplicate_of_other_subject BOOLEAN",
    "ALTER TABLE image_properties ADD COLUMN near_duplicate_of VARCHAR",
]

# Version 4: the prediction cache (keyed by image and model+preprocessing digests).
SCHEMA_V4 = [
    """CREATE TABLE prediction_cache (
        run_id VARCHAR, image_sha256 VARCHAR, model_key VARCHAR, perturbation VARCHAR,
        severity INTEGER, output VARCHAR, value DOUBLE)""",
    """CREATE TABLE embedding_cache (
        run_id VARCHAR, image_sha256 VARCHAR, model_key VARCHAR, vector FLOAT[])""",
]

# Version 5: the robustness suite's extra columns (signed shift, family, severity in words).
SCHEMA_V5 = [
    "ALTER TABLE robustness ADD COLUMN family VARCHAR",
    "ALTER TABLE robustness ADD COLUMN description VARCHAR",
    "ALTER TABLE robustness ADD COLUMN mean_shift DOUBLE",
]

# Version 6: the fairness release: bands and reference groups, subgroup survival,
# representativeness, paired model comparisons.
SCHEMA_V6 = [
    "ALTER TABLE fairness ADD COLUMN n_subjects BIGINT",
    "ALTER TABLE fairness ADD COLUMN diff_ci_method VARCHAR",
    "ALTER TABLE fairness ADD COLUMN reference_group VARCHAR",
    "ALTER TABLE fairness ADD COLUMN diff_to_reference DOUBLE",
    "ALTER TABLE fairness ADD COLUMN ref_ci_low DOUBLE",
    "ALTER TABLE fairness ADD COLUMN ref_ci_high DOUBLE",
    "ALTER TABLE fairness ADD COLUMN tolerance DOUBLE",
    """CREATE TABLE survival_subgroups (
        run_id VARCHAR, model VARCHAR, predictor VARCHAR, attribute VARCHAR, group_name VARCHAR,
        n BIGINT, events BIGINT, hr DOUBLE, hr_low DOUBLE, hr_high DOUBLE, p_value DOUBLE,
        adjustment VARCHAR, status VARCHAR)""",
    """CREATE TABLE representativeness (
        run_id VARCHAR, attribute VARCHAR, group_name VARCHAR, n BIGINT, share DOUBLE,
        intended_share DOUBLE, ratio DOUBLE, chi2 DOUBLE, df INTEGER, p_value DOUBLE,
        status VARCHAR)""",
    """CREATE TABLE comparisons (
        run_id VARCHAR, output VARCHAR, metric VARCHAR, model_a VARCHAR, model_b VARCHAR,
        attribute VARCHAR, group_name VARCHAR, n BIGINT, value_a DOUBLE, value_b DOUBLE,
        diff DOUBLE, ci_low DOUBLE, ci_high DOUBLE, status VARCHAR)""",
]

# Version 7: calibration points in survival_curves (predicted survival and the observed
# Kaplan-Meier CI per decile).
SCHEMA_V7 = [
    "ALTER TABLE survival_curves ADD COLUMN predicted DOUBLE",
    "ALTER TABLE survival_curves ADD COLUMN survival_low DOUBLE",
    "ALTER TABLE survival_curves ADD COLUMN survival_high DOUBLE",
]

# Version 8: drift rows carry an effect size beside the test, and both sample sizes.
SCHEMA_V8 = [
    "ALTER TABLE drift ADD COLUMN effect DOUBLE",
    "ALTER TABLE drift ADD COLUMN effect_method VARCHAR",
    "ALTER TABLE drift ADD COLUMN n_reference BIGINT",
    "ALTER TABLE drift ADD COLUMN n_current BIGINT",
]

# Version 9: the saliency audit. Region shares name their attribute and sample sizes;
# cohort maps (means over at least min_faces photos, never one person's) and the
# comparisons and sanity checks get tables of their own.
SCHEMA_V9 = [
    "ALTER TABLE saliency ADD COLUMN attribute VARCHAR",
    "ALTER TABLE saliency ADD COLUMN n BIGINT",
    "ALTER TABLE saliency ADD COLUMN n_subjects BIGINT",
    """CREATE TABLE saliency_maps (
        run_id VARCHAR, model VARCHAR, output VARCHAR, method VARCHAR, attribute VARCHAR,
        group_name VARCHAR, n BIGINT, height INTEGER, width INTEGER, map FLOAT[])""",
    """CREATE TABLE saliency_checks (
        run_id VARCHAR, check_name VARCHAR, model VARCHAR, output VARCHAR, method VARCHAR,
        other_model VARCHAR, other_output VARCHAR, value DOUBLE, ci_low DOUBLE,
        ci_high DOUBLE, threshold DOUBLE, passed BOOLEAN, n BIGINT, details VARCHAR)""",
]

# Version 10: decision curves (net benefit of each score at a horizon, against treating all
# and against chronological age, with bootstrap CIs).
SCHEMA_V10 = [
    """CREATE TABLE decision_curves (
        run_id VARCHAR, model VARCHAR, model_id VARCHAR, strategy VARCHAR, horizon DOUBLE,
        threshold DOUBLE, n BIGINT, events BIGINT, positive_rate DOUBLE, net_benefit DOUBLE,
        ci_low DOUBLE, ci_high DOUBLE, diff_treat_all DOUBLE, diff_treat_all_low DOUBLE,
        diff_treat_all_high DOUBLE, diff_age DOUBLE, diff_age_low DOUBLE, diff_age_high DOUBLE,
        interventions_avoided DOUBLE)""",
]

# Version 11: decision curves of the nested incremental models, each step's paired gain in
# net benefit over the step before.
SCHEMA_V11 = [
    "ALTER TABLE decision_curves ADD COLUMN compared_to VARCHAR",
    "ALTER TABLE decision_curves ADD COLUMN diff_compared DOUBLE",
    "ALTER TABLE decision_curves ADD COLUMN diff_compared_low DOUBLE",
    "ALTER TABLE decision_curves ADD COLUMN diff_compared_high DOUBLE",
]

# Version 12: clinical utility by subgroup (each score's decision rule judged within groups).
SCHEMA_V12 = [
    """CREATE TABLE decision_subgroups (
        run_id VARCHAR, model VARCHAR, model_id VARCHAR, attribute VARCHAR,
        group_name VARCHAR, horizon DOUBLE, threshold DOUBLE, n BIGINT, events BIGINT,
        positive_rate DOUBLE, net_benefit DOUBLE, treat_all DOUBLE, gain DOUBLE,
        gain_low DOUBLE, gain_high DOUBLE, band_low DOUBLE, band_high DOUBLE,
        overall_useful BOOLEAN, status VARCHAR)""",
]

# Version 13: trustworthy statistics. A verdict keeps the estimate (value) and the number
# judged against the threshold (judged_value, e.g. a CI bound) apart; a survival test or
# subgroup row that could not be computed says why; saliency region shares come with their
# region's area and the enrichment (share / area) with its CI.
SCHEMA_V13 = [
    "ALTER TABLE verdicts ADD COLUMN judged_value DOUBLE",
    "ALTER TABLE survival_tests ADD COLUMN note VARCHAR",
    "ALTER TABLE survival_subgroups ADD COLUMN note VARCHAR",
    "ALTER TABLE saliency ADD COLUMN area DOUBLE",
    "ALTER TABLE saliency ADD COLUMN enrichment DOUBLE",
    "ALTER TABLE saliency ADD COLUMN enrichment_low DOUBLE",
    "ALTER TABLE saliency ADD COLUMN enrichment_high DOUBLE",
]

MIGRATIONS: list[tuple[int, list[str]]] = [(1, SCHEMA_V1), (2, SCHEMA_V2), (3, SCHEMA_V3),
                                           (4, SCHEMA_V4), (5, SCHEMA_V5), (6, SCHEMA_V6),
                                           (7, SCHEMA_V7), (8, SCHEMA_V8), (9, SCHEMA_V9),
                                           (10, SCHEMA_V10), (11, SCHEMA_V11),
                                           (12, SCHEMA_V12), (13, SCHEMA_V13)]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# Tables keyed by run_id that stages write; `runs`, `run_stages` are the store's own.
RESULT_TABLES = [
    "cohort_rows", "validation_results", "quarantine", "image_properties", "detections",
    "predictions", "embeddings", "robustness", "fairness", "accuracy", "survival_models",
    "survival_terms", "survival_tests", "survival_metrics", "survival_curves", "drift",
    "saliency", "verdicts", "artifacts", "prediction_cache", "embedding_cache",
    "survival_subgroups", "representativeness", "comparisons", "saliency_maps",
    "saliency_checks", "decision_curves", "decision_subgroups",
]

HEARTBEAT_SECONDS = 30.0
_ROW_LOCK = threading.RLock()  # one writer of a run's row at a time within this process
STALE_AFTER_SECONDS = 600.0
_RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def new_run_id(now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-`` plus 8 hex characters (the README's run id)."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(4)


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.match(text))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _fault_point(name: str) -> None:
    """Kill this process at a named point when a test asks (``FACEAGE_AUDIT_KILL_AT``).

    Used only by the crash-consistency tests, which run real audits in a subprocess and
    SIGKILL them at named moments (before, during and after a stage's transaction).
    """
    if os.environ.get("FACEAGE_AUDIT_KILL_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def _as_arrow_if_vectors(frame: pd.DataFrame):
    """``frame`` as an Arrow table when it holds a column of equal-length numeric vectors
    (embeddings, saliency maps): DuckDB takes a fixed-size list column about three times as
    fast as a pandas column of arrays. Other frames go as they are."""
    import pyarrow as pa

    columns = [c for c in frame.columns if frame[c].dtype == object and len(frame)
               and isinstance(frame[c].iat[0], np.ndarray)]
    if not columns:
        return frame
    vectors = {}
    for c in columns:
        values = frame[c].to_numpy()
        if not all(isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "fiub"
                   for v in values):
            return frame
        width = len(values[0])
        if width == 0 or any(len(v) != width for v in values):
            return frame
        flat = pa.array(np.concatenate(values).astype(np.float32, copy=False))
        vectors[c] = pa.FixedSizeListArray.from_arrays(flat, width)
    arrays = [vectors[c] if c in vectors else pa.Array.from_pandas(frame[c])
              for c in frame.columns]
    return pa.Table.from_arrays(arrays, names=[str(c) for c in frame.columns])


class Store:
    """The DuckDB file of one output folder.

    Parameters
    ----------
    path : the ``audit.duckdb`` file (created with its folder when absent).
    lock_timeout : seconds to wait for another process's lock before giving up.
    """

    def __init__(self, path: str | Path, lock_timeout: float | None = None):
        self.path = Path(path)
        self.lock_timeout = (
            float(os.environ.get("FACEAGE_AUDIT_LOCK_TIMEOUT", "120"))
            if lock_timeout is None else lock_timeout
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            migrate(con)

    # -- connections -------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                msg = str(exc)
                if "lock" not in msg.lower():
                    raise InputError(f"{self.path}: cannot open the DuckDB file: {msg}") from exc
                if time.monotonic() >= deadline:
                    holder = re.search(r"PID (\d+)", msg)
                    who = f"process {holder.group(1)}" if holder else "another process"
                    raise StoreBusyError(
                        f"{self.path}: busy, {who} holds its lock (waited "
                        f"{self.lock_timeout:g} s; raise FACEAGE_AUDIT_LOCK_TIMEOUT to wait longer, "
                        f"or use another --out)"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    # -- runs --------------------------------------------------------------------------
    def start_run(self, *, flow: str, cohort_name: str | None, cohort_sha256: str | None,
                  manifest_sha256: str | None = None, models: list[dict] | None = None,
                  config_json: str | None = None, config_sha256: str | None = None,
                  synthetic: bool = False, cohort_path: str | None = None,
                  run_id: str | None = None) -> str:
        """Insert a ``running`` row (after marking dead runs abandoned) and return its id."""
        from audit.provenance import code_version, environment

        self.mark_abandoned()
        run_id = run_id or new_run_id()
        now = _now()
        with self.connect() as con:
            con.execute(
                """INSERT INTO runs (run_id, flow, started_at, status, cohort_name,
                   cohort_sha256, manifest_sha256, models, config_sha256, config, code_version,
                   environment, pid, host, heartbeat_at, synthetic, cohort_path)
                   VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [run_id, flow, now, cohort_name, cohort_sha256, manifest_sha256,
                 json.dumps(models or []), config_sha256, config_json, code_version(),
                 json.dumps(environment()), os.getpid(), socket.gethostname(), now, synthetic,
                 cohort_path],
            )
        return run_id

    def heartbeat(self, run_id: str) -> None:
        # The heartbeat thread and a stage's transaction both update the run's row; DuckDB
        # would abort one of them ("Conflict on update"), so they take turns.
        with _ROW_LOCK, self.connect() as con:
            con.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'",
                        [_now(), run_id])

    @contextlib.contextmanager
    def heartbeating(self, run_id: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
        """Refresh the run's heartbeat from a background thread while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                with contextlib.suppress(Exception):
                    self.heartbeat(run_id)

        thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def finish_run(self, run_id: str, verdict: str | None) -> None:
        with self.connect() as con:
            con.execute(
                "UPDATE runs SET status = 'finished', finished_at = ?, heartbeat_at = ?, "
                "verdict = ? WHERE run_id = ?", [_now(), _now(), verdict, run_id])

    def fail_run(self, run_id: str, error: str) -> None:
        with self.connect() as con:
            con.execute(
                "UPDATE runs SET status = 'failed', finished_at = ?, error = ? WHERE run_id = ?",
                [_now(), error[:4000], run_id])

    def mark_abandoned(self) -> list[str]:
        """Mark ``running`` runs whose process is gone (or silent too long) ``abandoned``.

        A run on this host is dead when its pid no longer exists; any run is presumed dead
        when its heartbeat is older than ``STALE_AFTER_SECONDS``.
        """
        host = socket.gethostname()
        with self.connect() as con:
            rows = con.execute(
                "SELECT run_id, pid, host, heartbeat_at FROM runs WHERE status = 'running'"
            ).fetchall()
            dead = []
            for run_id, pid, run_host, beat in rows:
                age = (_now() - beat).total_seconds() if beat is not None else float("inf")
                gone = run_host == host and pid != os.getpid() and not _pid_alive(pid)
                if gone or age > STALE_AFTER_SECONDS:
                    dead.append(run_id)
            for run_id in dead:
                con.execute(
                    "UPDATE runs SET status = 'abandoned', finished_at = ?, error = "
                    "'process ended without finishing (found by a later run)' WHERE run_id = ?",
                    [_now(), run_id])
        return dead

    # -- stages ------------------------------------------------------------------------
    def write_stage(self, run_id: str, stage: str, tables: dict[str, pd.DataFrame],
                    note: str | None = None, started: datetime | None = None) -> int:
        """Write all of a stage's rows in one transaction; return the number of rows.

        Frames are matched to table columns by name (``INSERT ... BY NAME``); ``run_id`` is
        filled in. Either every table of the stage is written, or (on any error or a kill)
        none is.
        """
        unknown = set(tables) - set(RESULT_TABLES)
        if unknown:
            raise ValueError(f"unknown result tables {sorted(unknown)}")
        started = started or _now()
        total = 0
        with _ROW_LOCK, self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for i, (table, frame) in enumerate(tables.items()):
                    if frame is None or len(frame) == 0:
                        continue
                    frame = frame.copy()
                    frame.insert(0, "run_id", run_id)
                    con.register("_stage_frame", _as_arrow_if_vectors(frame))
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _stage_frame")
                    con.unregister("_stage_frame")
                    total += len(frame)
                    if i == 0:
                        _fault_point(f"{stage}:mid-transaction")
                con.execute(
                    "INSERT INTO run_stages VALUES (?, ?, ?, ?, ?, ?)",
                    [run_id, stage, started, _now(), total, note])
                con.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", [_now(), run_id])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        _fault_point(f"{stage}:after-commit")
        return total

    # -- reading -----------------------------------------------------------------------
    def run(self, run_id: str) -> dict:
        df = self.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if df.empty:
            raise InputError(f"{self.path}: no run {run_id}")
        return df.iloc[0].to_dict()

    def runs(self) -> pd.DataFrame:
        return self.query("SELECT * FROM runs ORDER BY started_at")

    def table(self, name: str, run_id: str) -> pd.DataFrame:
        if name not in RESULT_TABLES + ["run_stages"]:
            raise ValueError(f"unknown table {name}")
        return self.query(f"SELECT * EXCLUDE (run_id) FROM {name} WHERE run_id = ?", [run_id])

    def cached_predictions(self, model_key: str, image_sha256: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Cached clean predictions and embeddings of these images for this model key."""
        if not image_sha256:
            return pd.DataFrame(), pd.DataFrame()
        preds = self.cached_values(model_key, image_sha256, ["none"])
        preds = preds.loc[preds["severity"] == 0, ["image_sha256", "output", "value"]]
        keys = pd.DataFrame({"image_sha256": sorted(set(image_sha256))})
        with self.connect() as con:
            con.register("_keys", keys)
            vecs = con.execute(
                "SELECT DISTINCT ON (c.image_sha256) c.image_sha256, c.vector "
                "FROM embedding_cache c JOIN _keys USING (image_sha256) WHERE c.model_key = ?",
                [model_key]).df()
            con.unregister("_keys")
        return preds.reset_index(drop=True), vecs

    def cached_values(self, model_key: str, image_sha256: list[str],
                      perturbations: list[str]) -> pd.DataFrame:
        """Cached outputs of these images for this model key under these perturbation keys
        (``none`` for the clean pass): ``image_sha256, perturbation, severity, output, value``."""
        columns = ["image_sha256", "perturbation", "severity", "output", "value"]
        if not image_sha256 or not perturbations:
            return pd.DataFrame(columns=columns)
        keys = pd.DataFrame({"image_sha256": sorted(set(image_sha256))})
        kinds = pd.DataFrame({"perturbation": sorted(set(perturbations))})
        with self.connect() as con:
            con.register("_keys", keys)
            con.register("_kinds", kinds)
            frame = con.execute(
                "SELECT DISTINCT ON (c.image_sha256, c.perturbation, c.severity, c.output) "
                "c.image_sha256, c.perturbation, c.severity, c.output, c.value "
                "FROM prediction_cache c JOIN _keys USING (image_sha256) "
                "JOIN _kinds USING (perturbation) WHERE c.model_key = ?", [model_key]).df()
            con.unregister("_keys")
            con.unregister("_kinds")
        return frame[columns]

    def schema_version(self) -> int:
        with self.connect(read_only=False) as con:
            return current_version(con)


def current_version(con) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    value = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
    return int(value or 0)


def migrate(con, target: int | None = None) -> int:
    """Apply the forward migrations up to ``target`` (default: the newest); return the version.

    Each migration runs in its own transaction together with its ``schema_version`` row.
    """
    target = SCHEMA_VERSION if target is None else target
    version = current_version(con)
    if version > SCHEMA_VERSION:
        raise InputError(
            f"database schema version {version} is newer than this faceage-audit "
            f"({SCHEMA_VERSION}); upgrade faceage-audit to open it"
        )
    if version == 0:
        con.execute("CREATE TABLE IF NOT EXISTS schema_version "
                    "(version INTEGER, applied_at TIMESTAMPTZ)")
    for number, statements in MIGRATIONS:
        if number <= version or number > target:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in statements:
                con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, ?)", [number, _now()])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        version = number
    return version
