"""Data validation: planted defects, a corpus of bad inputs, suites, overrides, faces."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audit.data.cohort import load_cohort
from audit.data.validation import age_reason, load_suite, run_suite, validate_cohort
from audit.demo.world import WorldParams, write_cohort
from audit.errors import InputError


def _flagged(cohort, report) -> set:
    flagged = set(cohort.quarantine["photo_id"]) | set(report.quarantine["photo_id"])
    by_row = cohort.frame.set_index("_row")["photo_id"]
    for _, r in report.results[~report.results["success"].astype(bool)].iterrows():
        flagged |= set(by_row.reindex(json.loads(r["details"]).get("rows") or []).dropna())
    return flagged


@pytest.mark.parametrize(
    "population,photos_per_subject,seed",
    [("cancer", 1, 11), ("healthy", 3, 12)],
    ids=["cancer", "healthy-x3"],
)
def test_every_planted_defect_is_reported_and_nothing_else(
    tmp_path, population, photos_per_subject, seed
):
    folder = write_cohort(
        tmp_path / "c",
        300,
        seed,
        WorldParams.make(population),
        photos=True,
        photos_per_subject=photos_per_subject,
        defects=True,
    )
    cohort = load_cohort(folder)
    report = validate_cohort(cohort, workers=1)
    planted = pd.read_csv(folder / "defects.csv")
    assert _flagged(cohort, report) == set(planted["photo_id"])
    assert not report.critical
    reasons = " | ".join(report.quarantine["reason"])
    assert "not an age in years; months?" in reasons
    assert "byte-identical to photo" in reasons and "empty file (0 bytes)" in reasons
    assert "holds PNG data" in reasons and "under the 64 px minimum" in reasons


def test_a_clean_cohort_passes_every_check(tmp_path):
    cohort = load_cohort(write_cohort(tmp_path / "c", 200, 13, photos=True))
    report = validate_cohort(cohort, workers=2)
    failed = report.results[~report.results["success"]]
    # 200 subjects have about 80 deaths: under 10 per term of the clinical model (a warning)
    assert failed[["suite", "severity"]].values.tolist() == [["survival", "warning"]]
    assert report.quarantine.empty
    props = report.image_properties
    assert len(props) == 200 and props["decodable"].all()
    assert props["jpeg_quality"].between(55, 100).all() and (props["width"] == 112).all()


# -- a corpus of bad files --------------------------------------------------------------


def _write_corpus(root):
    images = root / "images"
    images.mkdir(parents=True)

    def noise(seed):  # distinct content per file, so no two are near duplicates
        return Image.fromarray(
            np.random.default_rng(seed).integers(0, 255, (112, 112, 3), np.uint8)
        )

    good = noise(0)
    files = {}

    def add(name, writer):
        writer(images / name)
        files[name] = name

    add("good.jpg", lambda p: good.save(p, quality=90))
    add("zero.jpg", lambda p: p.write_bytes(b""))
    add("truncated.jpg", lambda p: (good.save(p, quality=90), p.write_bytes(p.read_bytes()[:900])))
    add("text.jpg", lambda p: p.write_text("this is not an image\n"))
    add("alpha.png", lambda p: noise(2).convert("RGBA").save(p))
    add(
        "sixteen.png",
        lambda p: Image.fromarray(
            (np.random.default_rng(1).integers(0, 65535, (112, 112))).astype(np.uint16)
        ).save(p),
    )
    add("cmyk.jpg", lambda p: noise(3).convert("CMYK").save(p, quality=90))
    add("bomb.png", lambda p: Image.new("1", (15000, 15000)).save(p))
    outside = root / "outside.jpg"
    noise(4).save(outside)
    os.symlink(outside, images / "link.jpg")
    rows = (
        ["photo_id,age,image_path"]
        + [f"{n.split('.')[0]},50,{n}" for n in files]
        + ["link,50,link.jpg", "dotdot,50,../outside.jpg", f"absolute,50,{outside}"]
    )
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "cohort.yaml").write_text("name: corpus\ncropped: true\n")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = _write_corpus(tmp_path_factory.mktemp("corpus") / "c")
    cohort = load_cohort(root)
    return cohort, validate_cohort(cohort, workers=1)


@pytest.mark.parametrize(
    "photo,stage,expected",
    [
        ("zero", "validate", "empty file (0 bytes)"),
        ("truncated", "validate", "cannot decode"),
        ("text", "validate", "cannot decode: UnidentifiedImageError"),
        ("bomb", "validate", "decompression bomb refused"),
        ("link", "load", "a link that escapes the images root"),
        ("dotdot", "load", "escapes the images root"),
        ("absolute", "load", "is absolute"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
def test_bad_files_are_quarantined_with_a_clear_reason(corpus, photo, stage, expected):
    cohort, report = corpus
    q = pd.concat([cohort.quarantine, report.quarantine])
    row = q[q["photo_id"] == photo]
    assert len(row) == 1, q
    row = row.iloc[0]
    assert row["stage"] == stage and expected in row["reason"]
    assert row["row_number"] >= 1 and row["column_name"] == "image_path"


@pytest.mark.parametrize(
    "photo,mode", [("good", "RGB"), ("alpha", "RGBA"), ("sixteen", "I;16"), ("cmyk", "CMYK")]
)
def test_unusual_but_valid_images_decode_and_pass(corpus, photo, mode):
    cohort, report = corpus
    props = report.image_properties.set_index("photo_id")
    assert props.at[photo, "decodable"] and props.at[photo, "mode"] == mode
    assert photo not in set(report.quarantine["photo_id"])


# -- manifests --------------------------------------------------------------------------


def _cohort(tmp_path, manifest: bytes | str, yaml="name: m\n"):
    (tmp_path / "cohort.yaml").write_text(yaml)
    data = manifest.encode() if isinstance(manifest, str) else manifest
    (tmp_path / "manifest.csv").write_bytes(data)
    return tmp_path


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbfphoto_id,age\n1,50\n2,60\n",
        b"photo_id;age\n1;50\n2;60\n",
        b"photo_id,age\r\n1,50\r\n2,60\r\n",
        b"photo_id\tage\n1\t50\n2\t60\n",
    ],
    ids=["bom", "semicolon", "crlf", "tab"],
)
def test_manifest_dialects_read_the_same(tmp_path, raw):
    c = load_cohort(_cohort(tmp_path, raw))
    assert list(c.frame.columns[:3]) == ["_row", "photo_id", "age"]
    assert c.frame["photo_id"].tolist() == ["1", "2"] and c.frame["age"].tolist() == [50, 60]


def test_duplicated_columns_and_empty_manifests_are_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"column `age` appears twice \(columns 2 and 3\)"):
        load_cohort(_cohort(tmp_path, "photo_id,age,age\n1,50,51\n"))
    with pytest.raises(InputError, match="the manifest is empty"):
        load_cohort(_cohort(tmp_path, ""))


def test_formula_like_ids_are_quarantined(tmp_path):
    c = load_cohort(_cohort(tmp_path, "photo_id,age\n=cmd|' /C calc'!A0,50\n+1,60\nok,70\n"))
    assert c.frame["photo_id"].tolist() == ["ok"]
    assert c.quarantine["reason"].str.contains("spreadsheet formula").all()
    assert c.quarantine["row_number"].tolist() == [1, 2]


def test_ages_in_months_get_a_hint_and_overrides_apply(tmp_path):
    folder = _cohort(
        tmp_path,
        "photo_id,age\na,50\nb,730\nc,95\nd,20000\n",
        yaml="name: m\nexpectations: checks\n",
    )
    (folder / "checks").mkdir()
    (folder / "checks" / "manifest.json").write_text(
        json.dumps(
            {
                "name": "manifest",
                "expectations": [
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "age", "min_value": 18, "max_value": 90},
                        "meta": {"severity": "error"},
                    }
                ],
            }
        )
    )
    c = load_cohort(folder)
    report = validate_cohort(c)
    reasons = dict(zip(report.quarantine["photo_id"], report.quarantine["reason"]))
    assert set(reasons) == {"b", "c", "d"}  # 95 is over the cohort's own maximum of 90
    assert "manifest.csv row 2, column age: 730 is not an age in years; months?" in reasons["b"]
    assert "days?" in reasons["d"]
    assert age_reason(130, None).endswith("months? (10.8 years)")


def test_a_missing_required_column_is_critical(tmp_path):
    c = load_cohort(_cohort(tmp_path, "photo_id,sex\na,male\n"))
    report = validate_cohort(c)
    assert report.critical and "age" in report.critical[0]


@pytest.mark.slow
def test_a_million_row_manifest_validates_in_bounded_memory(tmp_path):
    import resource

    n = 1_000_000
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "photo_id": np.arange(n),
            "age": rng.uniform(20, 90, n).round(1),
            "time": rng.uniform(0, 5, n).round(2),
            "event": rng.integers(0, 2, n),
        }
    ).to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "cohort.yaml").write_text("name: big\ntime_unit: years\n")
    c = load_cohort(tmp_path)
    report = validate_cohort(c)
    assert report.results["success"].all() and len(c.frame) == n
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert peak_gb < 8


# -- faces on real photos -----------------------------------------------------------------


def test_real_photos_pass_the_face_check_as_raw_photos(tmp_path):
    from skimage import data

    images = tmp_path / "images"
    images.mkdir()
    astronaut = data.astronaut()
    Image.fromarray(astronaut).save(images / "astronaut.jpg", quality=92)
    Image.fromarray(data.coffee()).save(images / "coffee.jpg", quality=92)  # no face
    face = astronaut[0:256, 96:352]  # her head and shoulders
    Image.fromarray(np.concatenate([face, face[:, ::-1]], axis=1)).save(images / "two.jpg")
    (tmp_path / "manifest.csv").write_text(
        "photo_id,age,image_path\nastronaut,53,astronaut.jpg\ncoffee,40,coffee.jpg\n"
        "two,53,two.jpg\n"
    )
    (tmp_path / "cohort.yaml").write_text("name: raw\ncropped: false\n")
    cohort = load_cohort(tmp_path)
    report = validate_cohort(cohort, workers=1)
    props = report.image_properties.set_index("photo_id")
    assert props.at["astronaut", "face_count"] == 1
    assert 0.01 < props.at["astronaut", "face_box_frac"] < 0.95
    q = report.quarantine.set_index("photo_id")
    assert "astronaut" not in q.index
    assert "0 faces found" in q.at["coffee", "reason"]
    assert "2 faces found" in q.at["two", "reason"]
    # each reason says what fixes it
    assert "declare `cropped: true`" in q.at["coffee", "reason"]
    assert "pad the photo" in q.at["coffee", "reason"]
    assert "crop the photo to the patient's face" in q.at["two", "reason"]


def test_run_suite_maps_rows_back_whatever_order_gx_returns():
    frame = pd.DataFrame(
        {"_row": [1, 2, 3], "photo_id": ["a", "b", "c"], "age": [50, 700, 60], "event": [0, 1, 5]}
    )
    suite = load_suite("manifest")
    res = run_suite(suite, frame, source_file="m.csv", reasons={"age": age_reason})
    q = res.quarantine.set_index("photo_id")
    assert q.at["b", "column_name"] == "age" and "months?" in q.at["b", "reason"]
    assert q.at["c", "column_name"] == "event" and "event 5 is not 0" in q.at["c", "reason"]
    assert not res.critical


def test_exif_orientation_is_applied(tmp_path):
    from audit.data.images import inspect_image

    img = Image.fromarray(np.random.default_rng(5).integers(0, 255, (60, 100, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    row = inspect_image(tmp_path / "rotated.jpg", "r")
    assert row["exif_orientation"] == 6 and (row["width"], row["height"]) == (60, 100)


def test_covariate_gaps_and_too_few_events_are_warnings(tmp_path):
    rows = ["photo_id,age,time,event,ecog"] + [
        f"p{i},{50 + i % 30},{1 + i % 5},{int(i % 10 == 0)},{'' if i % 3 == 0 else 1}"
        for i in range(120)
    ]
    folder = _cohort(
        tmp_path, "\n".join(rows) + "\n", yaml="name: m\ntime_unit: years\ncovariates: [ecog]\n"
    )
    report = validate_cohort(load_cohort(folder))
    r = report.results
    ecog = r[(r.suite == "manifest") & (r.column_name == "ecog")].iloc[0]
    assert not ecog.success and ecog.severity == "warning"  # a third missing: under 80%
    events = r[(r.suite == "survival") & (r.column_name == "event")].iloc[0]
    assert not events.success and events.severity == "warning"  # 12 events for 4 terms
    assert report.quarantine.empty  # warnings quarantine nothing
