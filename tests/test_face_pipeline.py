"""The face-pipeline integrity audit: a planted detector bias (one site's photos darker and
smaller) is flagged for that site; a cohort without one is not; the rates equal a hand count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.data.cohort import load_cohort
from audit.data.validation import validate_cohort
from audit.metrics.face_pipeline import face_pipeline_table, photo_outcomes
from audit.pipeline.config import load_config
from audit.pipeline.verdict import face_pipeline_checks


def write_raw_cohort(folder, planted: bool, n: int = 120, seed: int = 0):
    """``n`` raw 300-px photos of real faces (lfw_subset, upscaled) on plain backgrounds,
    half at site-a and half at site-b; with ``planted``, site-b's faces are smaller (40-80
    px: dlib's HOG needs about 80) and darker."""
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    faces = data.lfw_subset()[:100]
    (folder / "images").mkdir(parents=True)
    lines = ["photo_id,subject_id,age,sex,site,image_path"]
    for i in range(n):
        site = "site-a" if i % 2 == 0 else "site-b"
        small_dark = planted and site == "site-b"
        side = int(rng.integers(40, 80) if small_dark else rng.integers(120, 200))
        gain = 0.3 if small_dark else 1.0
        grey = cv2.resize(
            (faces[i % 100] * 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_CUBIC
        )
        canvas = np.full((300, 300), int(rng.integers(90, 170)), np.uint8)
        x, y = (int(v) for v in rng.integers(0, 300 - side, 2))
        canvas[y : y + side, x : x + side] = grey
        canvas = np.clip(canvas * gain, 0, 255).astype(np.uint8)
        Image.fromarray(np.repeat(canvas[..., None], 3, axis=2)).save(
            folder / "images" / f"p{i:03d}.png"
        )
        sex = "female" if rng.random() < 0.5 else "male"
        lines.append(f"p{i:03d},s{i:03d},{int(rng.integers(40, 85))},{sex},{site},p{i:03d}.png")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    (folder / "cohort.yaml").write_text("name: raw-sites\ncropped: false\n")
    return folder


def _audit(folder):
    cohort = load_cohort(folder)
    report = validate_cohort(cohort, workers=1)
    config = load_config().faces
    outcomes = photo_outcomes(report.image_properties, cohort.frame, "dlib", config)
    return outcomes, face_pipeline_table(outcomes, "dlib", config)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, prefect_harness):
    """``faceage-audit validate`` of the planted cohort: its exit code and its run."""
    import audit
    from audit.cli import main

    folder = write_raw_cohort(tmp_path_factory.mktemp("planted") / "c", True)
    out = folder.parent / "out"
    rc = main(["validate", "--cohort", str(folder), "--out", str(out)])
    return rc, audit.open_run(out / "audit.duckdb")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _audit(write_raw_cohort(tmp_path_factory.mktemp("clean") / "c", False))


def test_a_planted_detector_bias_is_flagged_for_its_group(planted):
    rc, run = planted
    table = run.table("face_pipeline")
    rows = table.set_index(["metric", "attribute", "group_name"])
    b = rows.loc[("detection_failure", "site", "site-b")]
    a = rows.loc[("detection_failure", "site", "site-a")]
    assert b["status"] == "flagged" and a["status"] != "flagged"
    assert b["value"] > a["value"] + 0.3 and b["diff_ci_low"] > 0.05
    assert "simultaneous max-t" in b["diff_ci_method"]
    # the rates are counts of photos: a hand count from the run's per-image table
    photos = run.table("image_properties").merge(
        run.table("cohort_rows")[["photo_id", "site"]], on="photo_id"
    )
    photos = photos[photos["decodable"].astype(bool)]
    for site in ("site-a", "site-b"):
        want = (photos.loc[photos["site"] == site, "face_count"] == 0).mean()
        assert rows.loc[("detection_failure", "site", site), "value"] == pytest.approx(want)
    # the brightness band shows the same people: darker photos fail more
    dark = [g for g in table["group_name"] if str(g).startswith("dark")]
    assert dark and rows.loc[("detection_failure", "brightness_band", dark[0]), "value"] > 0.3
    # the face side reaching the crop is smaller where the faces were shrunk
    px = rows.xs("face_px", level="metric").loc[("site",)]
    assert px.loc["site-b", "value"] < px.loc["site-a", "value"]
    # judged, and shown: the run fails on it, its page has the section
    assert rc == 1
    verdicts = run.verdict.set_index("check_name")
    assert verdicts.at["face_pipeline", "status"] == "fail"
    assert "site = site-b" in verdicts.at["face_pipeline", "details"]
    page = run.report_path.read_text()
    assert "Face pipeline" in page and "group(s) flagged" in page


def test_a_cohort_without_a_planted_bias_is_not_flagged(clean):
    _, table = clean
    assert not (table["status"] == "flagged").any()
    overall = table[(table.metric == "detection_failure") & (table.attribute == "all")]
    assert overall["value"].iloc[0] < 0.3  # most faces are found
    (check,) = face_pipeline_checks(table, load_config().thresholds)
    assert check["status"] == "pass" and "detector dlib" in check["details"]


def test_rates_do_not_depend_on_row_order(clean):
    from audit.stats.groups import canonical_rows

    outcomes, table = clean
    shuffled = outcomes.sample(frac=1, random_state=3).reset_index(drop=True)
    again = face_pipeline_table(canonical_rows(shuffled), "dlib", load_config().faces)
    cols = ["metric", "attribute", "group_name"]
    a = table.sort_values(cols).reset_index(drop=True)
    b = again.sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=1e-12)
