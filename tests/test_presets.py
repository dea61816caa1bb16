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
    assert "plan (quick preset): " in said and "no robustness suite; no saliency" in said
    assert ("verdict: PASS" if code == 0 else "verdict: FAIL") in said
    assert "quarantined rows by reason:" in said  # the photo cohort has planted defects


def test_progress_writes_lines_where_the_output_is_not_a_terminal(monkeypatch):
    """A log file gets periodic lines with the count, the share and the time left, and a
    last line; a loop shorter than the interval stays quiet."""
    import io

    from rich.console import Console

    from audit.pipeline import progress

    buffer = io.StringIO()
    progress.use_console(Console(file=buffer, force_terminal=False, width=200))
    try:
        monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
        assert list(progress.bar(iter(range(4)), 4, "robustness")) == [0, 1, 2, 3]
        lines = [line for line in buffer.getvalue().splitlines() if "robustness" in line]
        assert "robustness: 1/4 (25%)" in lines[0] and "s left" in lines[0]
        assert "robustness: 4/4 (100%)" in lines[-1] and "left" not in lines[-1]
        monkeypatch.setattr(progress, "LOG_EVERY", 3600.0)
        buffer.truncate(0)
        assert list(progress.bar(range(3), 3, "quiet")) == [0, 1, 2]
        assert "quiet" not in buffer.getvalue()
        progress.note("plan: 3 photos")
        assert "plan: 3 photos" in buffer.getvalue()
    finally:
        progress.use_console(None)


def test_the_robustness_estimate_comes_from_the_measured_clean_pass():
    from types import SimpleNamespace

    from audit.stages.plan import robustness_estimate

    models = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
    ctx = SimpleNamespace(throughput={"a": 50.0, "b": 25.0})
    said = robustness_estimate(ctx, models, n_photos=100, n_levels=49)
    # 100 photos x 50 passes = 5,000 per model: 100 s at 50/s plus 200 s at 25/s
    assert "5000 passes per model" in said and "about 5 min" in said
    assert "a 50 photos/s" in said and "b 25 photos/s" in said
    cached = robustness_estimate(SimpleNamespace(throughput={"a": 50.0}), models, 100, 49)
    assert "no time estimate" in cached and "prediction cache" in cached


def test_every_help_text_is_printed_as_written(capsys):
    """`--help` of every command shows each option's help verbatim: no text lost to console
    markup (a "[saliency]" once vanished), defaults and ranges kept."""
    import click
    import typer

    from audit.cli import app, main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert main([name, "--help"]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        for param in command.params:
            text = getattr(param, "help", None)
            if isinstance(param, click.Option) and text:
                assert " ".join(text.split()) in shown, (name, param.name)
    assert main(["run", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "(0: none, or 8 with --runner dask)" in shown and "[default: 0" in shown


def test_numbers_on_pages_are_rounded_for_their_meaning():
    from audit.report.render import _num

    assert _num(40.0) == "40" and _num(90) == "90" and _num(8.0) == "8"
    assert _num(12.0952734375) == "12.095" and _num(0.8313) == "0.831"
    assert _num(1.5e-5) == "1.5e-05" and _num(float("nan")) == "–"
