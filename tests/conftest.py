"""Shared fixtures. Prefect runs against one temporary server per session (its harness).

The suite runs on two pytest-xdist workers (``make test``): each worker has its own
``PREFECT_HOME`` (so the CLI's temporary Prefect servers never share a database) and its own
temporary folder, and each test file runs whole on one worker (its module fixtures built
once); the files that share the ``cli_and_api`` session fixture (test_api, test_legacy)
run on the same one (:func:`pytest_xdist_make_scheduler`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="faceage-audit-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_TMP / "prefect"))
if os.environ.get("PYTEST_XDIST_WORKER"):  # one Prefect home (database) per worker
    os.environ["PREFECT_HOME"] = str(
        Path(os.environ["PREFECT_HOME"]) / os.environ["PYTEST_XDIST_WORKER"]
    )
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
os.environ["FACEAGE_AUDIT_CACHE"] = str(_TMP / "cache")
os.environ["FACEAGE_AUDIT_KEY_FILE"] = str(_TMP / "pseudonym.key")
os.environ["FACEAGE_AUDIT_SIGNING_KEY"] = str(_TMP / "signing.key")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
UTK_CSV = SHARED / "data" / "faceage_utk_predictions.csv"
# an audit config with small bootstraps and one decision horizon, for CLI runs in tests
QUICK_CONFIG = """
[accuracy]
n_boot = 100
[fairness]
n_boot = 100
[survival]
n_boot = 100
decision_horizons = [1.0]
"""


# test files that use the `cli_and_api` session fixture: one worker runs them all
SHARED_FIXTURE_FILES = {"test_api", "test_legacy"}


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: unknown when it is not loaded
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (each file whole on one worker, its module fixtures built once),
    with the files that share the costly ``cli_and_api`` fixture as one unit. (xdist's own
    ``loadgroup`` marks are not applied under pytest 9: its node-id suffix is ignored.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureFiles(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "cli_and_api" if Path(scope).stem in SHARED_FIXTURE_FILES else scope

    return SharedFixtureFiles(config, log)


def cli_run(cohort, models, out, *extra, config=None) -> int:
    """``faceage-audit run`` of ``models`` (one spec or a list) on ``cohort`` into ``out``,
    with an optional ``--config`` file and any ``extra`` arguments; its exit code."""
    from audit.cli import main

    args = ["run", "--cohort", str(cohort)]
    for model in [models] if isinstance(models, (str, Path)) else models:
        args += ["--model", str(model)]
    args += ["--out", str(out)] + (["--config", str(config)] if config is not None else [])
    return main(args + [str(e) for e in extra])


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def utk_cohort(tmp_path) -> Path:
    """The real FaceAge predictions on UTKFace as a predictions-only cohort folder."""
    if not UTK_CSV.is_file():
        pytest.fail(f"{UTK_CSV} is missing: ../shared must sit beside the project")
    folder = tmp_path / "utk"
    folder.mkdir()
    (folder / "cohort.yaml").write_text(
        "name: utkface-faceage\n"
        f"manifest: {UTK_CSV}\n"
        "columns: {photo_id: subj_id, sex: gender}\n"
        "values:\n"
        "  sex: {0: male, 1: female}\n"
        "  race: {0: White, 1: Black, 2: Asian, 3: Indian, 4: Others}\n"
    )
    return folder


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory) -> Path:
    from audit.demo.world import write_cohort

    return write_cohort(tmp_path_factory.mktemp("demo") / "cohort", n=400, seed=3)


def write_lung_cohort(folder: Path) -> Path:
    """lifelines' NCCTG lung data (R's survival::lung) as a cohort folder."""
    from lifelines.datasets import load_lung

    folder.mkdir(parents=True, exist_ok=True)
    df = load_lung()
    df.insert(0, "patient", [f"L{i:03d}" for i in range(len(df))])
    df.to_csv(folder / "lung.csv", index=False)
    (folder / "cohort.yaml").write_text(
        "name: ncctg-lung\nmanifest: lung.csv\n"
        "columns: {photo_id: patient, event: status}\n"
        "values:\n  sex: {1: male, 2: female}\n"
        "covariates: [ph.ecog]\n"
        "time_unit: days\n"
    )
    return folder


API_CONFIG = (
    QUICK_CONFIG
    + """
[robustness]
perturbations = ["brightness", "jpeg"]
severities = [1, 3]
sample_subjects = 30
"""
)


@pytest.fixture(scope="session")
def photo_cohort(tmp_path_factory) -> Path:
    """A synthetic cancer cohort with rendered faces (for image models) and planted bad
    inputs (unreadable rows and files, duplicates: ``defects.csv``)."""
    from audit.demo.world import write_cohort

    return write_cohort(
        tmp_path_factory.mktemp("photos") / "cohort", n=200, seed=5, photos=True, defects=True
    )


@pytest.fixture(scope="session")
def cli_and_api(tmp_path_factory, prefect_harness, photo_cohort):
    """The two demo models (image models: robustness runs) audited on the photo cohort once
    by the CLI (Prefect) and once by ``audit.run`` inline, with the same config."""
    import audit

    folder = tmp_path_factory.mktemp("api")
    config = folder / "audit.toml"
    config.write_text(API_CONFIG)
    models = ["demo:faceage", "demo:survival"]
    code = cli_run(photo_cohort, models, folder / "cli", config=config)
    run = audit.run(photo_cohort, models, config=config, out=folder / "api")
    return {"code": code, "cli": audit.open_run(folder / "cli" / "audit.duckdb"), "api": run}
