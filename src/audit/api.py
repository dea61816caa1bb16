"""The Python API: an audit from a notebook or a script, and its results as tidy frames.

>>> import audit
>>> run = audit.run("cohorts/site-a", ["predictions:faceage"], out="reports")
>>> run.verdict_status, run.accuracy.head()
>>> same = audit.open_run("reports/audit.duckdb", run.run_id)
>>> pooled = audit.combine(["a.bundle.json", "b.bundle.json", "c.bundle.json"], out="combined")

:func:`run` takes the same cohort folder, model specs and ``audit.toml`` as ``faceage-audit
run`` and writes the same DuckDB file and pages; with ``orchestrator="inline"`` (the default)
the stages run in this process in the order :mod:`audit.orchestrate.sequence` fixes, and
with ``"prefect"`` each stage is a task of the Prefect flow, exactly as the CLI runs them.
Either way every number is read back from DuckDB, so a notebook sees what the report shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from audit.data.cohort import Cohort
from audit.errors import InputError
from audit.orchestrate.combined import combine_sequence
from audit.orchestrate.sequence import preflight, resolve_reference, run_audit_inline
from audit.pipeline.config import AuditConfig, load_config
from audit.pipeline.store import RESULT_TABLES, Store
from audit.pipeline.verdict import overall
from audit.report.summary import RunSummary, summarise

ORCHESTRATORS = ("inline", "prefect")


def _config_arguments(config) -> tuple[str | None, dict]:
    """(an audit.toml path or None, section overrides) for ``config``: a path, an
    :class:`AuditConfig`, a dict of sections, or None (the defaults)."""
    if config is None:
        return None, {}
    if isinstance(config, AuditConfig):
        return None, config.model_dump(mode="json")
    if isinstance(config, dict):
        return None, dict(config)
    if isinstance(config, (str, Path)):
        return str(config), {}
    raise InputError(
        f"config: a path to audit.toml, an AuditConfig or a dict, not {type(config).__name__}"
    )


def run(
    cohort: str | Path | Cohort,
    models: str | Sequence[str],
    *,
    config=None,
    out: str | Path = "reports",
    orchestrator: str = "inline",
    reference: str | None = None,
    shards: int = 0,
    overrides: dict | None = None,
) -> AuditRun:
    """Audit ``models`` on ``cohort``; results go to ``out``/audit.duckdb and its pages.

    Parameters
    ----------
    cohort : a cohort folder, or a :class:`~audit.data.cohort.Cohort` (e.g. from
        :meth:`Cohort.from_frame <audit.data.cohort.Cohort.from_frame>`).
    models : model specs, as ``--model`` takes them (``predictions:faceage``, a YAML file).
    config : a path to ``audit.toml``, an :class:`~audit.pipeline.config.AuditConfig`, or a
        dict of sections (``{"accuracy": {"n_boot": 200}}``); None for the defaults.
    out : the output folder.
    orchestrator : ``"inline"`` (this process, no Prefect) or ``"prefect"`` (the Prefect flow
        the CLI runs; ``shards`` > 0 splits inference into that many tasks).
    reference : a finished run id in ``out``/audit.duckdb, or a cohort folder, to measure
        drift against (a monitor run).
    overrides : sections merged over ``config``.

    Returns the finished run as an :class:`AuditRun`. A check that fails is a result (see
    :attr:`AuditRun.verdict_status`), never an exception; unusable input raises
    :class:`~audit.errors.InputError` naming the file, row and column.
    """
    if orchestrator not in ORCHESTRATORS:
        raise InputError(f"orchestrator {orchestrator!r}: use one of {list(ORCHESTRATORS)}")
    folder = Path(cohort.root if isinstance(cohort, Cohort) else cohort)
    specs = [models] if isinstance(models, str) else list(models)
    config_path, sections = _config_arguments(config)
    sections.update(overrides or {})
    cfg = load_config(config_path, **sections)
    preflight(folder, specs)
    out = Path(out)
    if orchestrator == "prefect":
        # Prefect: imported only when asked for
        from audit.orchestrate.prefect_flows import audit_flow
        from audit.orchestrate.prefect_flows import resolve_reference as resolve

        if reference is not None:
            reference = resolve(reference, specs, str(out), config_path, sections)
        result = audit_flow(
            cohort=str(folder),
            models=specs,
            out=str(out),
            config=config_path,
            overrides=sections,
            shards=shards,
            reference=reference,
            flow_label="monitor" if reference else "audit",
        )
    else:
        if shards:
            raise InputError(
                "shards: the inline orchestrator runs in one process; use "
                "orchestrator='prefect' to shard"
            )
        if reference is not None:
            reference = resolve_reference(
                reference, specs, str(out), lambda ref: run_audit_inline(ref, specs, out, cfg)
            )
        result = run_audit_inline(
            folder, specs, out, cfg, reference=reference, flow="monitor" if reference else "audit"
        )
    return AuditRun(out / "audit.duckdb", result["run_id"])


def combine(
    bundles: Sequence[str | Path],
    *,
    out: str | Path = "combined",
    config=None,
    orchestrator: str = "inline",
) -> AuditRun:
    """Combine site bundles (:func:`audit.pipeline.bundle.write_bundle`, ``faceage-audit
    export-bundle``) into ``out``/audit.duckdb and its page: every signature verified, the
    models checked to agree, each quantity pooled across sites by random-effects
    meta-analysis, judged with the audit's thresholds. ``config``: as :func:`run` takes it
    (its ``[combine]`` section sets the pooling and the sites' keys). Returns the combined
    audit as an :class:`AuditRun` (its tables: ``combined_pooled``, ``combined_estimates``,
    ``combined_sites``, ``combined_models``, ``verdicts``)."""
    if orchestrator not in ORCHESTRATORS:
        raise InputError(f"orchestrator {orchestrator!r}: use one of {list(ORCHESTRATORS)}")
    config_path, sections = _config_arguments(config)
    paths = [str(p) for p in bundles]
    if orchestrator == "prefect":
        from audit.orchestrate.prefect_flows import combine_flow

        if sections:
            raise InputError("orchestrator='prefect' takes config as a path to audit.toml")
        result = combine_flow(bundles=paths, out=str(out), config=config_path)
    else:
        result = combine_sequence(paths, out, load_config(config_path, **sections))
    return AuditRun(Path(out) / "audit.duckdb", result["run_id"])


def open_run(db: str | Path, run_id: str | None = None) -> AuditRun:
    """A run of the DuckDB file ``db`` (its newest when ``run_id`` is None)."""
    if not Path(db).is_file():
        raise InputError(f"{db}: no such DuckDB file")
    store = Store(db)
    if run_id is None:
        runs = store.runs()
        if runs.empty:
            raise InputError(f"{db}: holds no run")
        run_id = str(runs["run_id"].iloc[-1])
    store.run(run_id)  # raises InputError naming the file when there is no such run
    return AuditRun(store.path, run_id)


@dataclass(frozen=True)
class AuditRun:
    """One run of an audit database, its results as tidy frames read from DuckDB.

    Each result table is an attribute (``run.accuracy``, ``run.fairness``,
    ``run.survival_terms``, ...; :attr:`tables` lists them); ``run.table(name)`` reads any
    of them. Rows come in a fixed order (sorted by every column but the value columns) so
    that two runs compare frame to frame.
    """

    db: Path
    run_id: str

    @cached_property
    def store(self) -> Store:
        """The run's store, opened once (opening checks the file's schema)."""
        return Store(self.db)

    @property
    def info(self) -> dict:
        """The run's row: flow, cohort, models, config, status, verdict, times."""
        return self.store.run(self.run_id)

    @property
    def verdict_status(self) -> str:
        """``pass`` or ``fail`` (as the CLI's exit status 0 or 1)."""
        verdict = self.info["verdict"]
        return verdict if isinstance(verdict, str) else overall(self.verdict)

    @property
    def passed(self) -> bool:
        return self.verdict_status == "pass"

    @property
    def verdict(self) -> pd.DataFrame:
        """Every check: category, name, model, status, value, threshold, detail."""
        return self.table("verdicts")

    @property
    def survival(self) -> pd.DataFrame:
        """The Cox models' terms (hazard ratios with CIs), one row per model and term."""
        return self.table("survival_terms")

    def summary(self) -> RunSummary:
        """What the CLI prints at the end of the run: counts, every check that failed or
        could not be judged, quarantined rows by reason; ``.text()`` for plain text."""
        return summarise(self.store, self.run_id)

    @property
    def report_path(self) -> Path:
        """The run's HTML page."""
        return self.db.parent / "runs" / self.run_id / "index.html"

    @property
    def tables(self) -> list[str]:
        return list(RESULT_TABLES) + ["run_stages"]

    def table(self, name: str) -> pd.DataFrame:
        """The run's rows of the result table ``name``, in a fixed order."""
        frame = self.store.table(name, self.run_id)
        keys = [
            c for c in frame.columns if frame[c].dtype == object and frame[c].map(_sortable).all()
        ]
        if keys and len(frame):
            frame = frame.sort_values(keys, kind="stable", na_position="last")
        return frame.reset_index(drop=True)

    def __getattr__(self, name: str) -> pd.DataFrame:
        if name in RESULT_TABLES:
            return self.table(name)
        raise AttributeError(f"AuditRun has no attribute {name!r}; tables: {self.tables}")

    def __repr__(self) -> str:
        return f"AuditRun(db={str(self.db)!r}, run_id={self.run_id!r})"


def _sortable(value) -> bool:
    return value is None or isinstance(value, str)
