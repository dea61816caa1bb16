"""The regulatory dossier beside each report: the model card and the TRIPOD+AI map say
what this run measured (and what it could not), from DuckDB alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.cli import main
from audit.report.tripod import ITEMS

CONFIG = """
[thresholds]
faceage_mae_max = 0.5
[accuracy]
n_boot = 50
[survival]
n_boot = 20
[fairness]
n_boot = 50
[fairness.intended_population]
race = {White = 0.6, Black = 0.2, Asian = 0.1, Hispanic = 0.05, Other = 0.05}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_harness):
    """A reference run and a monitored run of a shifted cohort, with a strict MAE threshold."""
    from audit.demo.world import WorldParams, write_cohort

    tmp = tmp_path_factory.mktemp("dossier")
    config = tmp / "c.toml"
    config.write_text(CONFIG)
    reference = write_cohort(tmp / "ref", 300, seed=81)
    current = write_cohort(tmp / "cur", 300, seed=82, params=WorldParams.make(shifts=("older",)))
    out = tmp / "out"
    args = ["--model", "predictions:faceage,risk", "--out", str(out), "--config", str(config)]
    assert main(["run", "--cohort", str(reference), *args]) == 1  # the MAE check fails
    assert main(["run", "--cohort", str(current), "--reference", str(reference), *args]) == 1
    return sorted((out / "runs").iterdir())


def _items(run_dir: Path) -> dict:
    doc = json.loads((run_dir / "tripod_ai.json").read_text())
    return {it["item"]: it for it in doc["items"]}


def test_tripod_map_covers_every_item_and_follows_the_run(runs):
    first, second = (_items(r) for r in runs)
    assert list(first) == [i[0] for i in ITEMS] and len(ITEMS) == 52
    assert ITEMS[0][0] == "1" and ITEMS[-1][0] == "27c"
    allowed = {"answered", "partly", "not answered", "not applicable"}
    for it in first.values():
        assert it["status"] in allowed and it["note"], it
    # no reference cohort: the comparison with the development data is not answered ...
    assert first["20c"]["status"] == "not answered" and "--reference" in first["20c"]["note"]
    # ... and with one it is, pointing at the drift section
    assert second["20c"]["status"] == "answered"
    assert second["20c"]["where"][0]["href"] == "index.html#drift"
    assert second["16"]["status"] == "answered"
    # what only the study team knows is never claimed
    for item in ("17", "18a", "18b", "18d", "19"):
        assert first[item]["status"] == "not answered"
    assert first["12d"]["status"] == "not applicable"  # the demo cohort has one site
    # the intended-use population is configured, intended users are not declared: partly
    assert first["3b"]["status"] == "partly" and "users" in first["3b"]["note"]
    html = (runs[0] / "tripod_ai.html").read_text()
    for href in {w["href"].split("#")[0] for it in first.values() for w in it["where"]}:
        assert (runs[0] / href).exists(), href  # every link lands on a file of the dossier
    for it in first.values():
        for w in it["where"]:
            if "#" in w["href"]:
                anchor = w["href"].split("#")[1]
                page = (runs[0] / w["href"].split("#")[0]).read_text()
                if anchor not in ("fairness", "robustness", "drift"):
                    assert f'id="{anchor}"' in page, w
    assert 'id="item-27c"' in html


def test_model_card_reports_this_runs_numbers_and_limitations(runs):
    from audit.pipeline.store import Store

    card = json.loads((runs[0] / "model_card.json").read_text())
    (model,) = card["models"]
    assert model["name"] == "predictions-faceage-risk" and model["outputs"] == ["faceage", "risk"]
    store = Store(runs[0].parent.parent / "audit.duckdb")
    run_id = runs[0].name
    mae = store.query(
        "SELECT value, ci_low, ci_high FROM accuracy WHERE run_id = ? AND "
        "metric = 'mae' AND attribute = 'all'",
        [run_id],
    ).iloc[0]
    shown = next(m for m in model["metrics"] if m["metric"] == "mae")
    assert shown["value"] == pytest.approx(mae["value"])
    assert shown["ci_low"] < shown["value"] < shown["ci_high"]
    hr = {(h["term"], h["adjustment"]) for h in model["hazard_ratios"]}
    assert ("faceage_decade", "age_sex") in hr and ("risk[Q4]", "age_sex") in hr
    lims = " ".join(model["limitations"])
    assert "synthetic data only" in lims
    assert "declares no training data" in lims
    assert "Predictions were supplied in the cohort table" in lims
    assert "Failed check faceage_mae" in lims  # the strict threshold failed
    assert "One site only" in lims
    assert card["evaluation_data"]["subjects"] == 300
    # the drifted run names its drift among the limitations
    later = json.loads((runs[1] / "model_card.json").read_text())
    assert "drifted against reference run" in " ".join(later["models"][0]["limitations"])
    page = (runs[0] / "model_card.html").read_text()
    for heading in (
        "Intended use and training data",
        "Evaluation data",
        "Metrics",
        "Subgroup performance",
        "Robustness",
        "Limitations",
    ):
        assert heading in page


def test_run_page_links_its_dossier_and_drift_chart(runs):
    page = (runs[1] / "index.html").read_text()
    for target in (
        "model_card.html",
        "tripod_ai.html",
        "verdict.json",
        "manifest.json",
        "data/accuracy.csv",
        "data/drift.csv",
    ):
        assert f'href="{target}"' in page, target
        assert (runs[1] / target).is_file(), target
    assert "Bar chart of the effect size" in page  # the drift chart, with its alt text
