"""Presets: what each sets, that a config's own keys win, and a quick first run end to end
(no perturbed or saliency pass, smaller bootstraps, the summary in the terminal)."""

from __future__ import annotations

import pytest
from conftest import cli_run

from audit.errors import InputError
from audit.pipeline.config import PRESETS, AuditConfig, load_config
from audit.pipeline.store import Store


def test_standard_is_every_sections_defaults():
    standard = load_config(preset="standard").model_dump()
    defaults = AuditConfig().model_dump()
    assert standard == defaults and defaults["preset"] == "standard"


@pytest.mark.parametrize("name", sorted(PRESETS), ids=str)
def test_a_preset_sets_what_it_declares_and_nothing_else(name):
    chosen = load_config(preset=name).model_dump()
    defaults = AuditConfig().model_dump()
    for section in defaults:
        if section == "preset":
            continue
        declared = PRESETS[name].get(section, {})
        for key, value in defaults[section].items():
            assert chosen[section][key] == declared.get(key, value), (section, key)


def test_the_quick_preset_turns_off_the_costly_stages():
    quick = load_config(preset="quick")
    assert not quick.robustness.enabled and not quick.saliency.enabled
    assert quick.accuracy.n_boot == quick.fairness.n_boot == 200 and quick.survival.n_boot == 100
    full = load_config(preset="full")
    assert full.robustness.sample_subjects == 0 and full.saliency.enabled
    assert full.robustness.severities == [1, 2, 3, 4, 5]


def test_a_sections_own_keys_win_over_its_preset(tmp_path):
    path = tmp_path / "audit.toml"
    path.write_text('preset = "quick"\n[robustness]\nenabled = true\n[accuracy]\nn_boot = 50\n')
    config = load_config(path)
    assert config.robustness.enabled and config.accuracy.n_boot == 50
    assert not config.saliency.enabled and config.fairness.n_boot == 200  # still quick
    # the command line's preset wins over the file's
    assert load_config(path, preset="full").saliency.enabled


def test_an_unknown_preset_names_the_choices():
    with pytest.raises(InputError, match="preset.*'quick', 'standard', 'full' or 'light'"):
        load_config(preset="fast")


def test_a_quick_first_run_skips_perturbations_and_says_what_failed(
    prefect_harness, photo_cohort, tmp_path, capsys
):
    out = tmp_path / "out"
    code = cli_run(photo_cohort, "demo:faceage", out, "--preset", "quick")
    assert code in (0, 1)
    store = Store(out / "audit.duckdb")
    run_id = store.runs()["run_id"].iloc[-1]
    assert store.table("robustness", run_id).empty and store.table("saliency", run_id).empty
    assert len(store.table("accuracy", run_id)) > 0
    stages = store.table("run_stages", run_id).set_index("stage")["note"]
    assert "turned off" in stages["robustness"]
    said = " ".join(capsys.readouterr().err.split())
    assert ("verdict: PASS" if code == 0 else "verdict: FAIL") in said
    assert "quarantined rows by reason:" in said  # the photo cohort has planted defects
