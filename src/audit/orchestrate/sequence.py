"""The order of a run, written once for every orchestrator.

:func:`audit_sequence` and :func:`validation_sequence` call the stages of
:mod:`audit.stages` in order through two callables an orchestrator supplies: ``step(name, fn,
*args)`` runs one stage and returns its result; ``fan_out(name, fn, items)`` runs ``fn`` on
each shard and returns ``[(item, result), ...]`` in the order of ``items``; ``spread``, where
an orchestrator has workers to spread over, is handed every independent piece of the three
statistics stages at once (:func:`audit.stages.statistics_pieces`) and returns their results
the same way; each stage writes its pieces' rows in the order of its pieces. Without it
(None) each statistics stage plans and computes its own pieces when it runs. The inline
orchestrator (:func:`inline_step`, :func:`inline_fan_out`) calls them in this process; the
Prefect one (:mod:`audit.orchestrate.prefect_flows`) wraps each in a task, and spreads the
pieces over the Dask workers, the longest first, when the flow runs on Dask.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from audit import stages
from audit.data.cohort import check_cohort, load_cohort
from audit.data.hashing import HashCache
from audit.data.inbox import scan
from audit.errors import InputError
from audit.models import create_model, parse_model_spec
from audit.monitor.alerts import alert_arrival
from audit.pipeline import progress
from audit.pipeline.config import AuditConfig
from audit.pipeline.store import Store, is_run_id
from audit.stages.plan import run_plan

Step = Callable[..., Any]
FanOut = Callable[[str, Callable, Sequence], list]


def inline_step(name: str, fn: Callable, *args):
    """Run one stage here and now."""
    return fn(*args)


def inline_fan_out(name: str, fn: Callable, items: Sequence) -> list:
    """Run every shard here, one after another."""
    return [(item, fn(item)) for item in items]


STATISTICS = ("accuracy", "fairness", "survival")  # each runs stages.<name>_stage


def statistics_sequence(ctx: stages.RunContext, step: Step, spread: FanOut | None) -> None:
    """accuracy -> fairness -> survival. With ``spread``, the three stages' pieces are
    planned together (sharing their frames) and handed to it at once, so that a worker never
    waits for another stage's last piece; each stage then writes its own pieces' rows.
    Without, each stage plans and computes its pieces as it runs (its row timed by them, and
    only its own frames held)."""
    if spread is None:
        for name in STATISTICS:
            step(name, getattr(stages, f"{name}_stage"), ctx)
        return
    with stages.shared_frames(ctx):
        plans = [(name, stages.statistics_pieces(ctx, name)) for name in STATISTICS]
        every = [piece for _, pieces in plans for piece in pieces]
        start = time.perf_counter()
        done = spread("statistics piece", stages.run_piece, every)
        wall = time.perf_counter() - start
        for name, pieces in plans:
            if every:
                ctx.note(
                    name,
                    f"the accuracy, fairness and survival pieces ({len(every)}) were computed "
                    f"together, the longest first, in {wall:.1f} s; this stage's row is timed "
                    "from its write before, so the first stage's holds them all.",
                )
            mine = [(piece, result) for piece, result in done if piece.stage == name]
            step(name, getattr(stages, f"{name}_stage"), ctx, pieces, mine)


def preflight(cohort: Path, models: list[str]) -> None:
    """What can be checked in milliseconds, before the Prefect server starts (7-13 s the
    first time): cohort.yaml, the manifest's header against its column mapping, each model
    spec, and the columns a ``predictions`` model reads. Raises InputError (exit 2)."""
    mpath, available = check_cohort(cohort)
    for text in models:
        spec = parse_model_spec(text)
        if spec.kind != "predictions":
            continue
        wanted = dict(spec.outputs or {}) or ({"faceage": spec.column} if spec.column else {})
        for output, col in wanted.items():
            col = col if isinstance(col, str) else str(col)
            if col not in available:
                raise InputError(
                    f"{mpath}: model {spec.name!r} reads column `{col}` for "
                    f"output `{output}`, which the manifest lacks; it has "
                    f"{sorted(available)}"
                )


def audit_sequence(
    ctx: stages.RunContext,
    *,
    shards: int = 0,
    step: Step = inline_step,
    fan_out: FanOut = inline_fan_out,
    spread: FanOut | None = None,
) -> dict:
    """validate -> predict -> robustness -> paired -> saliency -> accuracy -> fairness ->
    survival -> slices -> drift -> estimate -> verdict -> publish. ``shards`` > 0 splits
    inference and the robustness sample into that many shards each. Returns
    ``{"run_id", "verdict", "report"}``."""
    with stages.running(ctx):
        step("validate", stages.validate_stage, ctx)
        progress.note(run_plan(ctx))
        results = (
            fan_out("predict shard", stages.run_shard, stages.plan_shards(ctx, shards))
            if shards
            else None
        )
        step("predictions", stages.predict_stage, ctx, results)
        robust = (
            fan_out(
                "robustness shard",
                stages.run_robustness_shard,
                stages.plan_robustness_shards(ctx, shards),
            )
            if shards
            else None
        )
        step("robustness", stages.robustness_stage, ctx, robust)
        step("paired", stages.paired_stage, ctx)
        step("saliency", stages.saliency_stage, ctx)
        statistics_sequence(ctx, step, spread)
        for name, fn in (
            ("slices", stages.slices_stage),
            ("drift", stages.drift_stage),
            ("estimate", stages.estimate_stage),
        ):
            step(name, fn, ctx)
        verdict = step("verdict", stages.verdict_stage, ctx)
        report = step("publish", stages.publish_stage, ctx, verdict)
    return {"run_id": ctx.run_id, "verdict": verdict, "report": str(report)}


def validation_sequence(ctx: stages.RunContext, *, step: Step = inline_step) -> dict:
    """validate -> validation verdict -> publish (no model)."""
    with stages.running(ctx):
        step("validate", stages.validate_stage, ctx)
        progress.note(run_plan(ctx))
        verdict = step("validation verdict", stages.validation_verdict, ctx)
        report = step("publish", stages.publish_stage, ctx, verdict)
    return {"run_id": ctx.run_id, "verdict": verdict, "report": str(report)}


def run_audit_inline(
    cohort: str | Path,
    models: list[str],
    out: str | Path,
    cfg: AuditConfig,
    *,
    reference: str | None = None,
    flow: str = "audit",
) -> dict:
    """One audit in this process, no Prefect: the same stages in the same order."""
    ctx = stages.start(str(cohort), list(models), str(out), cfg, flow=flow, reference=reference)
    return audit_sequence(ctx)


def resolve_reference(
    reference: str, models: list[str], out: str, audit_reference: Callable[[str], dict]
) -> str:
    """A finished run id for ``reference``: a run id in ``out``/audit.duckdb, or a cohort
    folder, whose newest finished run with the same content SHA-256 and the same models is
    reused; when there is none, ``audit_reference(folder)`` audits it first."""
    store = Store(Path(out) / "audit.duckdb")
    if is_run_id(reference):
        if store.run(reference)["status"] != "finished":
            raise InputError(f"--reference {reference}: that run did not finish")
        return reference
    if not Path(reference).is_dir():
        raise InputError(f"--reference {reference}: neither a run id nor a cohort folder")
    cohort = load_cohort(reference, hash_cache=HashCache.default())
    names = sorted(create_model(m).name for m in models)
    runs = store.runs() if store.path.is_file() else None
    if runs is not None and len(runs):
        same = runs[(runs["cohort_sha256"] == cohort.sha256) & (runs["status"] == "finished")]
        for r in same.sort_values("started_at", ascending=False).itertuples():
            if sorted(m["name"] for m in json.loads(r.models or "[]")) == names:
                return r.run_id
    return audit_reference(reference)["run_id"]


def process_inbox(
    inbox: str | Path, out: str | Path, cfg: AuditConfig, audit_one: Callable[[str], dict]
) -> list[dict]:
    """Audit every ready cohort folder in the drop folder ``inbox`` once, through
    ``audit_one(folder)``; one bad arrival never stops the others (its error is reported and
    alerted). Returns one dict a folder: ``folder``, ``error`` and the run's result."""
    store = Store(Path(out) / "audit.duckdb")
    done = []
    for arrival in scan(inbox, store, cfg.inbox.settle_seconds):
        if arrival.status != "ready":
            continue
        result, error = None, None
        try:
            result = audit_one(str(arrival.path))
        except Exception as exc:  # a failure the data causes: a reported result, never a stop
            error = f"{type(exc).__name__}: {exc}"
        done.append(
            {
                "folder": str(arrival.path),
                "error": error,
                **({k: str(v) for k, v in result.items()} if result else {}),
            }
        )
        alert_arrival(cfg, store, arrival.path, result, error)
    return done
