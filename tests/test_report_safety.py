"""Every string a cohort provides is escaped in the report: a `<script>` in a cohort name,
a subject id or a category label never becomes markup."""

from __future__ import annotations

import pandas as pd
from conftest import cli_run


def test_cohort_strings_are_escaped_everywhere(prefect_harness, tmp_path):
    from audit.cli import main
    from audit.demo.world import write_cohort

    folder = write_cohort(tmp_path / "c", 120, seed=51)
    manifest = pd.read_csv(folder / "manifest.csv", dtype=str)
    evil = '<script>alert("x")</script>'
    manifest.loc[0, "subject_id"] = f"S{evil}"
    manifest.loc[1, "photo_id"] = f"P{evil}"
    manifest["cancer_type"] = manifest["cancer_type"].replace("breast", f"breast{evil}")
    manifest.to_csv(folder / "manifest.csv", index=False)
    import yaml

    spec = yaml.safe_load((folder / "cohort.yaml").read_text())
    spec["name"] = f"clinic {evil}"
    spec["site"] = f"site {evil}"
    (folder / "cohort.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    rc = cli_run(folder, "predictions:faceage,risk", out, config=_config(tmp_path))
    assert rc in (0, 1)  # the run went through; the out-of-vocabulary rows are quarantined
    pages = list(out.rglob("*.html"))
    assert pages
    for page in pages:
        text = page.read_text()
        assert "<script" not in text.lower(), page
    run_page = next(out.glob("runs/*/index.html"))
    assert "&lt;script&gt;" in run_page.read_text()  # shown, as text
    assert main(["report", "--db", str(out / "audit.duckdb"), "--show-ids"]) == 0
    for page in out.rglob("*.html"):
        assert "<script" not in page.read_text().lower(), page
    # raw ids go to site-only/, never over the shared pages: those still verify
    shown = list((out / "site-only").rglob("*.html"))
    assert shown and all("For this site only." in p.read_text() for p in shown)
    assert main(["verify", str(run_page.parent)]) == 0


def _config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[accuracy]\nn_boot = 20\n[survival]\nn_boot = 10\n[fairness]\nn_boot = 20\n")
    return path


def test_verify_finds_any_change_to_a_signed_run(prefect_harness, tmp_path):
    """A finished run re-hashes clean; a changed image, a changed report, an edited
    manifest or a foreign signature each make `verify` fail and say what."""
    import json

    from audit.cli import main
    from audit.demo.world import write_cohort
    from audit.pipeline.store import Store

    folder = write_cohort(tmp_path / "c", 40, seed=61, photos=True)
    config = tmp_path / "c.toml"
    config.write_text(
        "[robustness]\nenabled = false\n[accuracy]\nn_boot = 20\n"
        "[survival]\nn_boot = 10\n[fairness]\nn_boot = 20\n"
    )
    out = tmp_path / "out"
    cli_run(folder, "demo:faceage", out, config=config)
    run_id = Store(out / "audit.duckdb").runs()["run_id"].iloc[0]
    run_dir = out / "runs" / run_id
    assert main(["verify", str(run_dir)]) == 0
    doc = json.loads((run_dir / "manifest.json").read_text())
    assert len(doc["manifest"]["images"]) == 40 and doc["manifest"]["models"]

    image = next((folder / "images").rglob("*.jpg"))
    original = image.read_bytes()
    image.write_bytes(original[:-10] + b"0123456789")
    assert main(["verify", str(run_dir)]) == 1
    image.write_bytes(original)
    assert main(["verify", str(run_dir)]) == 0

    verdict = run_dir / "verdict.json"
    verdict.write_text(verdict.read_text().replace('"fail"', '"pass"').replace("  ", " "))
    assert main(["verify", str(run_dir)]) == 1

    from audit.pipeline.dossier import verify_run

    doc["manifest"]["config_sha256"] = "0" * 64
    (run_dir / "manifest.json").write_text(json.dumps(doc))
    problems = verify_run(run_dir)
    assert any("do not match its digest" in p for p in problems)


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised():
    import csv
    import io

    from audit.report.exports import to_csv

    df = pd.DataFrame(
        {
            "label": [
                '=HYPERLINK("http://x.example","click")',
                "+1+1",
                "-2+3",
                "@SUM(A1)",
                "\tx",
                "plain",
                None,
            ],
            "value": [-1.5, 2.0, -3.25, 0.0, 1.0, -0.5, 7.0],
        }
    )
    rows = list(csv.DictReader(io.StringIO(to_csv(df))))
    assert [r["label"] for r in rows] == [
        '\'=HYPERLINK("http://x.example","click")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "plain",
        "",
    ]
    assert [float(r["value"]) for r in rows] == df["value"].tolist()  # numbers stay numbers


def test_no_raw_id_leaves_the_site_and_exports_are_neutralised(prefect_harness, tmp_path):
    """Quarantine reasons and file names quote ids and image paths (`image S01/P01.jpg`):
    every page, JSON and CSV beside the report shows them only
    pseudonymised, the signed manifest names images by keyed hash, and a category label
    shaped like a formula is inert in the CSV exports. Ids planted as formulas, paths, HTML,
    quotes and non-ASCII leave in no encoding at all, and no page runs the cohort's markup."""
    import csv
    import html
    import json
    import re

    import yaml

    from audit.cli import main
    from audit.demo.world import write_cohort

    folder = write_cohort(tmp_path / "c", 40, seed=52, photos=True, oracle=True)
    manifest = pd.read_csv(folder / "manifest.csv", dtype=str)
    # ids that are spreadsheet formulas, paths, HTML, quotes and non-ASCII (rows 8-15)
    planted = [
        "=cmd|' /C calc'!A0",
        "../../etc/passwd",
        "<img src=x onerror=alert(1)>",
        'a"b\\c',
        "+SUM(A1)",
        "Zoë Ünicode",
        "@import",
        "C:\\Users\\p 7.jpg",
    ]
    for i, value in enumerate(planted, start=8):
        manifest.loc[i, "photo_id"] = value
        manifest.loc[i, "subject_id"] = f"S{value}"
    manifest.loc[20:25, "cancer_type"] = "<b>bold</b>"
    manifest.loc[5, "photo_id"] = manifest.loc[4, "photo_id"]  # a duplicate id: quarantined
    (folder / "images" / manifest.loc[7, "image_path"]).write_bytes(b"")  # an empty photo
    formula = '=HYPERLINK("http://evil.example","x")'
    manifest["race"] = manifest["race"].replace("White", formula)
    manifest.to_csv(folder / "manifest.csv", index=False)
    spec = yaml.safe_load((folder / "cohort.yaml").read_text())
    spec["vocabulary"]["race"] = [
        formula if r == "White" else r for r in spec["vocabulary"]["race"]
    ]
    (folder / "cohort.yaml").write_text(yaml.safe_dump(spec))
    config = tmp_path / "c.toml"
    config.write_text(
        "[robustness]\nenabled = false\n[accuracy]\nn_boot = 20\n"
        "[survival]\nn_boot = 10\n[fairness]\nn_boot = 20\n"
        "[thresholds]\nmax_quarantine_fraction = 0.5\n"
    )
    out = tmp_path / "out"
    assert cli_run(folder, "predictions:faceage,risk", out, config=config) in (0, 1)
    raw = re.compile(r"\b[PS]\d{6}\b")
    leaving = [p for p in out.rglob("*") if p.suffix in (".html", ".json", ".csv")]
    assert any(p.name == "manifest.json" for p in leaving)
    # every encoding a planted id could leave in: as is, JSON-escaped, HTML-escaped
    forms = set()
    for value in planted + [f"S{v}" for v in planted]:
        forms |= {
            value,
            json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1],
            html.escape(value),
            html.escape(value, quote=False),
        }
    for path in leaving:
        text = path.read_text(encoding="utf-8")
        found = raw.findall(text) + [f for f in forms if f in text]
        assert not found, (path.name, found[:5])
        if path.suffix == ".html":  # the cohort's markup is shown as text, never run
            assert "<img src=x" not in text and "<b>bold</b>" not in text, path.name
        if path.suffix == ".csv":  # no cell starts a formula
            with open(path, newline="", encoding="utf-8") as fh:
                bad = [c for row in csv.reader(fh) for c in row if c[:1] in ("=", "+", "@")]
            assert not bad, (path.name, bad)
    run_dir = next((out / "runs").iterdir())
    reasons = pd.read_csv(run_dir / "data" / "quarantine.csv")["reason"]
    assert reasons.str.contains("duplicate photo id").any()
    empty = reasons[reasons.str.contains("empty file")]
    assert len(empty) == 1 and re.search(r"image id-\w{12}/id-\w{12}\.jpg", empty.iloc[0])
    with open(run_dir / "data" / "accuracy.csv", newline="") as fh:
        labels = {r["group_name"] for r in csv.DictReader(fh)}
    assert "'" + formula in labels and formula not in labels
    # asked for, the ids come back (the scrubber replaces, it does not delete)
    shown = tmp_path / "shown"
    assert (
        main(["report", "--db", str(out / "audit.duckdb"), "--out", str(shown), "--show-ids"]) == 0
    )
    page = next(shown.glob("runs/*/index.html")).read_text()
    assert f"image {manifest.loc[7, 'image_path']}: empty file" in page
    # the signed manifest still verifies on site with pseudonymised image names
    assert main(["verify", str(run_dir)]) == 0


def test_the_index_shows_a_failed_runs_reason_without_its_ids(tmp_path):
    """A run that failed on a row quotes that row's photo id in its error; the shared index
    shows the reason with the id pseudonymised (and as given only with --show-ids)."""
    from audit.data.privacy import pseudonym
    from audit.pipeline.store import Store
    from audit.report import render_index

    store = Store(tmp_path / "audit.duckdb")
    run_id = store.start_run(flow="audit", cohort_name="clinic", cohort_sha256=None)
    rows = pd.DataFrame({"photo_id": ["MRN-0042-photo"], "subject_id": ["MRN-0042"]})
    store.write_stage(run_id, "validate", {"cohort_rows": rows.assign(included=True)})
    store.fail_run(run_id, "predictions: photo MRN-0042-photo of subject MRN-0042 is unreadable")
    shared = render_index(store, tmp_path / "shared").read_text()
    assert "MRN-0042" not in shared and pseudonym("MRN-0042-photo") in shared
    assert "is unreadable" in shared
    site = render_index(store, tmp_path / "site", show_ids=True).read_text()
    assert "photo MRN-0042-photo of subject MRN-0042" in site
