"""The terminal's account of a finished run, read from DuckDB alone.

``run``, ``validate`` and ``monitor`` end with it: how many rows came in, were audited and
were quarantined; every check that failed or could not be judged, with its value against its
threshold and the reason; the quarantined rows counted by kind of reason (ids left out); the
features that drifted (a monitor run); and where the pages and the database are. A user who
reads only the terminal knows what failed and where to look.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from audit.pipeline.store import Store

_LOCATION = re.compile(r"^[^:]*\brow \d+(, (column|image) [^:]*)?: ")
_NUMBER = re.compile(r"\d+(\.\d+)?")


@dataclass(frozen=True)
class Check:
    """One check that did not pass."""

    model: str | None
    name: str
    status: str  # fail, inconclusive
    value: float | None
    threshold: float | None
    details: str


@dataclass(frozen=True)
class RunSummary:
    """What a finished run found, for the terminal (see :func:`summarise`)."""

    run_id: str
    flow: str
    status: str
    verdict: str | None
    error: str | None
    n_rows: int
    n_included: int
    n_quarantined: int
    models: list[str]
    n_passed: int
    not_passed: list[Check] = field(default_factory=list)
    quarantine: list[tuple[int, str]] = field(default_factory=list)  # (rows, an example)
    drifted: list[str] = field(default_factory=list)
    n_drift_tests: int = 0
    cohort_name: str | None = None

    def lines(self) -> list[tuple[str, str]]:
        """``(style, text)`` lines: style ``pass``, ``fail``, ``warn`` or ``plain``."""
        head = self.verdict or self.status
        word = {"pass": "PASS", "fail": "FAIL"}.get(head or "", (head or "unknown").upper())
        if self.flow == "validate":
            word = {"pass": "CLEAN", "fail": "ERRORS FOUND"}.get(head or "", word)
        out = [
            (
                "pass" if head == "pass" else "fail",
                f"{'validation' if self.flow == 'validate' else 'verdict'}: {word}  "
                f"run {self.run_id}",
            ),
            (
                "plain",
                (
                    f"combined audit of {self.cohort_name}"  # no rows: the sites' bundles
                    if self.flow == "combine"
                    else f"{self.n_rows} manifest rows: {self.n_included} audited, "
                    f"{self.n_quarantined} quarantined"
                )
                + (f"; models: {', '.join(self.models)}" if self.models else ""),
            ),
        ]
        if self.error:
            out.append(("fail", f"the run failed: {self.error}"))
        n_checks = self.n_passed + len(self.not_passed)
        if n_checks:
            failed = [c for c in self.not_passed if c.status == "fail"]
            unsure = [c for c in self.not_passed if c.status != "fail"]
            out.append(
                (
                    "plain",
                    f"checks: {self.n_passed} passed, {len(failed)} failed, "
                    f"{len(unsure)} inconclusive",
                )
            )
            for c in failed + unsure:
                who = f"{c.model}: " if c.model else ""
                out.append(
                    (
                        "fail" if c.status == "fail" else "warn",
                        f"  {c.status.upper()} {who}{c.name}{_against(c)}: {c.details}",
                    )
                )
        if self.quarantine:
            out.append(("plain", "quarantined rows by reason:"))
            out += [("warn", f"  {n:>5}  {kind}") for n, kind in self.quarantine]
        if self.n_drift_tests:
            out.append(
                (
                    "warn" if self.drifted else "plain",
                    f"drift: {len(self.drifted)} of {self.n_drift_tests} tests drifted"
                    + (f" ({', '.join(self.drifted[:8])})" if self.drifted else ""),
                )
            )
        return out

    def text(self) -> str:
        return "\n".join(text for _, text in self.lines())


def _against(c: Check) -> str:
    if c.value is None or c.threshold is None:
        return ""
    return f" ({_num(c.value)} against {_num(c.threshold)})"


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def reason_text(reason: str, ids: set[str] = frozenset()) -> str:
    """A quarantine reason without its place (file, row, column or image) and with the
    cohort's ids replaced by ``<id>``: no id reaches the terminal."""
    text = _LOCATION.sub("", str(reason))
    if ids:
        text = " ".join("<id>" if word.strip(".,;:()'\"") in ids else word for word in text.split())
    return text


def reason_kind(text: str) -> str:
    """The kind of a reason: its text with every number replaced, so that rows quarantined
    for the same kind of reason count together."""
    return _NUMBER.sub("N", text)


def summarise(store: Store, run_id: str) -> RunSummary:
    """The summary of run ``run_id`` of ``store``."""
    run = store.run(run_id)
    rows = store.table("cohort_rows", run_id)
    verdicts = store.table("verdicts", run_id)
    quarantine = store.table("quarantine", run_id)
    drift = store.table("drift", run_id)
    models = [m.get("name", "") for m in _json_list(run.get("models"))]
    judged = verdicts[verdicts["status"].isin(["pass", "fail", "inconclusive"])]
    not_passed = [
        Check(
            model=r.model if isinstance(r.model, str) else None,
            name=r.check_name,
            status=r.status,
            value=None if pd.isna(r.value) else float(r.value),
            threshold=None if pd.isna(r.threshold) else float(r.threshold),
            details=str(r.details or ""),
        )
        for r in judged[judged["status"] != "pass"].itertuples()
    ]
    ids = set(rows["photo_id"].dropna().astype(str)) | set(rows["subject_id"].dropna().astype(str))
    ids |= set(quarantine["photo_id"].dropna().astype(str))
    quarantined = _reasons(quarantine, ids)
    drifted = drift[drift["drifted"].fillna(False).astype(bool)] if len(drift) else drift
    included = int(rows["included"].fillna(False).astype(bool).sum()) if len(rows) else 0
    return RunSummary(
        run_id=run_id,
        cohort_name=run.get("cohort_name"),
        flow=str(run.get("flow") or "audit"),
        status=str(run.get("status") or ""),
        verdict=run.get("verdict"),
        error=run.get("error"),
        n_rows=len(rows),
        n_included=included,
        n_quarantined=len(rows) - included,
        models=models,
        n_passed=int((judged["status"] == "pass").sum()),
        not_passed=not_passed,
        quarantine=quarantined,
        drifted=sorted(
            {f"{r.feature}" + (f" ({r.model})" if r.model else "") for r in drifted.itertuples()}
        ),
        n_drift_tests=len(drift),
    )


def _reasons(quarantine: pd.DataFrame, ids: set[str], most: int = 12) -> list[tuple[int, str]]:
    """``(rows, example)`` for the ``most`` commonest kinds of reason, commonest first: the
    distinct photos quarantined for each, and one of its reasons as the example."""
    if not len(quarantine):
        return []
    texts = [reason_text(r, ids) for r in quarantine["reason"]]
    q = quarantine.assign(text=texts, kind=[reason_kind(t) for t in texts])
    groups = q.groupby(["stage", "kind"], sort=False)
    counted = groups["photo_id"].nunique().sort_values(ascending=False, kind="stable")
    example = groups["text"].first()
    return [
        (int(n), f"{stage}: {example[(stage, kind)]}")
        for (stage, kind), n in counted.head(most).items()
    ]


def _json_list(text) -> list[dict]:
    try:
        value = json.loads(text or "[]")
    except (TypeError, ValueError):
        return []
    return [v for v in value if isinstance(v, dict)]


def terminal_summary(db: str | Path, run_id: str) -> RunSummary:
    """:func:`summarise` of a run in the DuckDB file ``db``."""
    return summarise(Store(Path(db)), run_id)
