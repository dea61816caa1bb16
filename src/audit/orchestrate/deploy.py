"""What ``faceage-audit deploy`` checks before it serves a schedule, so that a schedule
either runs or says why not.

- **A Prefect API that schedules.** A schedule fires only where a Prefect server's scheduler
  runs. Without ``PREFECT_API_URL`` Prefect starts a temporary server inside the serving
  process, which keeps no schedule and dies with it: ``deploy`` refuses that unless told
  ``--local`` (runs then happen only when triggered by hand, and the command says so), and
  refuses an API it cannot reach (``GET /health``).
- **Every input, now, not at 3 a.m.** The cohort folder (``cohort.yaml`` and the manifest's
  header), the drop folder, the config, each model spec (loaded: a checkpoint that does not
  fit fails now), and the reference (a finished run in the output's database, or a cohort
  folder); every problem is listed at once.
- **Absolute paths.** A deployment runs in another process, another working directory:
  folders, the config and the files a model spec names are stored absolute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audit.data.cohort import check_cohort
from audit.errors import InputError
from audit.models import create_model, parse_model_spec
from audit.pipeline.config import load_config
from audit.pipeline.store import Store, is_run_id

FILE_KINDS = ("timm", "onnx", "torchscript")  # short forms whose last part is a file


def absolute_spec(text: str) -> str:
    """``text`` with the file it names made absolute: a YAML spec's own path, or the
    checkpoint of a ``timm:ARCH:FILE``, ``onnx:FILE`` or ``torchscript:FILE`` short form."""
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return str(Path(text).resolve())
    kind, sep, rest = text.partition(":")
    if sep and kind in FILE_KINDS:
        head, colon, file = rest.rpartition(":") if kind == "timm" else ("", "", rest)
        return f"{kind}:{head}{colon}{Path(file).resolve()}"
    return text


@dataclass(frozen=True)
class Plan:
    """What a deployment will run, every path absolute."""

    models: list[str]
    out: str
    cohort: str | None
    inbox: str | None
    reference: str | None
    config: str | None


def check_deployment(
    *,
    models: list[str],
    out: str | Path,
    cohort: str | Path | None = None,
    inbox: str | Path | None = None,
    reference: str | None = None,
    config: str | Path | None = None,
) -> Plan:
    """The deployment's inputs checked and made absolute; every problem found is named in
    one :class:`InputError`."""
    problems: list[str] = []
    if cohort is None and inbox is None:
        problems.append(
            "deploy needs --cohort (scheduled validation) and/or --inbox (scheduled monitoring)"
        )
    if inbox is not None and not models:
        problems.append("--inbox needs at least one --model to audit arrivals with")
    _try(problems, lambda: load_config(config))
    if cohort is not None:
        _try(problems, lambda: check_cohort(Path(cohort)))
    if inbox is not None and not Path(inbox).is_dir():
        problems.append(f"--inbox {inbox}: no such folder")
    for text in models:
        _try(problems, lambda text=text: _loads(absolute_spec(text)))
    if reference is not None:
        _try(problems, lambda: _reference(reference, Path(out)))
    if problems:
        raise InputError("the deployment cannot run: " + "; ".join(problems))
    return Plan(
        models=[absolute_spec(m) for m in models],
        out=str(Path(out).resolve()),
        cohort=str(Path(cohort).resolve()) if cohort else None,
        inbox=str(Path(inbox).resolve()) if inbox else None,
        reference=reference if is_run_id(reference or "") else _folder(reference),
        config=str(Path(config).resolve()) if config else None,
    )


def _try(problems: list[str], check) -> None:
    try:
        check()
    except InputError as exc:
        problems.append(str(exc))


def _loads(spec: str) -> None:
    model = create_model(parse_model_spec(spec))
    if hasattr(model, "load"):
        model.load()


def _reference(reference: str, out: Path) -> None:
    if is_run_id(reference):
        db = out / "audit.duckdb"
        if not db.is_file():
            raise InputError(f"--reference {reference}: {db} does not exist yet")
        run = Store(db).run(reference)
        if run["status"] != "finished":
            raise InputError(f"--reference {reference}: that run did not finish")
    elif not Path(reference).is_dir():
        raise InputError(f"--reference {reference}: neither a run id nor a cohort folder")
    else:
        check_cohort(Path(reference))


def _folder(reference: str | None) -> str | None:
    return str(Path(reference).resolve()) if reference else None


def api_problem(url: str | None, local: bool) -> str | None:
    """Why serving schedules against ``url`` (Prefect's ``PREFECT_API_URL``) would not work,
    or None. ``local``: the user accepts a temporary server (runs only when triggered)."""
    if not url:
        if local:
            return None
        return (
            "no Prefect server: PREFECT_API_URL is not set, so Prefect would start a temporary "
            "server inside this process, which keeps no schedule (nothing would run at the "
            "cron times). Start one (`prefect server start`, then `export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api`), or pass --local to serve anyway "
            "and trigger runs by hand"
        )
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=5.0)
    except httpx.HTTPError as exc:
        return f"the Prefect API at {url} cannot be reached ({type(exc).__name__}: {exc})"
    if response.status_code != 200:
        return f"the Prefect API at {url} answered {response.status_code} to /health"
    return None
