"""Cohort folders: mapping, parsing, quarantine with file/row/column, hashing."""

from __future__ import annotations

import os
import textwrap

import pandas as pd
import pytest

from audit.data.cohort import load_cohort
from audit.data.hashing import HashCache, sha256_file
from audit.errors import InputError

YAML = textwrap.dedent("""\
    name: test-cohort
    columns: {photo_id: pid, subject_id: patient, time: fu_months, event: dead, sex: gender}
    values:
      sex: {1: male, 2: female}
    vocabulary:
      race: [White, Black, Asian]
    covariates:
      - {name: ecog, type: numeric}
      - {name: intent, type: categorical, reference: curative}
    time_unit: months
    """)

GOOD = textwrap.dedent("""\
    pid,patient,age,gender,race,fu_months,dead,ecog,intent,faceage,image_path
    007,0001,61.5,1,White,12,1,1,curative,66.1,a/007.jpg
    008,0001,62.0,1,White,24,0,1,curative,64.0,a/008.jpg
    009,0002,70,2,Black,6,1,2,palliative,75.2,b/009.jpg
    """)


def make(tmp_path, manifest: str, yaml: str = YAML, images: bool = True):
    (tmp_path / "cohort.yaml").write_text(yaml)
    (tmp_path / "manifest.csv").write_text(manifest)
    if images:
        for rel in ("a/007.jpg", "a/008.jpg", "b/009.jpg"):
            p = tmp_path / "images" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rel.encode() * 10)
    return tmp_path


def test_good_manifest_maps_columns_values_and_units(tmp_path):
    c = load_cohort(make(tmp_path, GOOD))
    f = c.frame
    assert c.quarantine.empty
    assert list(f["photo_id"]) == ["007", "008", "009"]  # ids are text: leading zeros kept
    assert list(f["subject_id"]) == ["0001", "0001", "0002"]
    assert list(f["sex"]) == ["male", "male", "female"]
    assert f["time"].tolist() == pytest.approx([1.0, 2.0, 0.5])  # months -> years
    assert f["event"].tolist() == [1, 0, 1]
    assert c.covariate_names == ["ecog", "intent"]
    assert len(c.image_sha256) == 3
    assert c.image_sha256["b/009.jpg"] == sha256_file(tmp_path / "images" / "b" / "009.jpg")
    # one row per subject for survival: the first photo of subject 0001
    assert list(c.subjects()["photo_id"]) == ["007", "009"]


def test_parquet_manifest_gives_the_same_cohort(tmp_path):
    (tmp_path / "csv").mkdir()
    csv = load_cohort(make(tmp_path / "csv", GOOD))
    pq_dir = tmp_path / "pq"
    pq_dir.mkdir()
    make(pq_dir, GOOD)
    pd.read_csv(pq_dir / "manifest.csv", dtype=str).to_parquet(pq_dir / "manifest.parquet")
    (pq_dir / "manifest.csv").unlink()
    pq = load_cohort(pq_dir)
    assert pq.manifest_path.name == "manifest.parquet"
    pd.testing.assert_frame_equal(csv.frame, pq.frame)


BAD_ROWS = [
    ("010,0003,abc,1,White,12,1,1,curative,60,a/007.jpg", "age", "cannot parse 'abc'"),
    ("010,0003,60,3,White,12,1,1,curative,60,a/007.jpg", "gender", "not in the value mapping"),
    ("010,0003,60,1,Martian,12,1,1,curative,60,a/007.jpg", "race", "not in the vocabulary"),
    ("010,0003,60,1,White,-5,1,1,curative,60,a/007.jpg", "fu_months", "negative follow-up"),
    ("010,0003,60,1,White,12,2,1,curative,60,a/007.jpg", "dead", "event must be 0"),
    ("010,0003,60,1,White,12,1,1,curative,60,/etc/passwd", "image_path", "absolute"),
    ("010,0003,60,1,White,12,1,1,curative,60,../../secret.jpg", "image_path", "escapes"),
    ("010,0003,60,1,White,12,1,1,curative,60,a/missing.jpg", "image_path", "not found"),
    (
        "007,0003,60,1,White,12,1,1,curative,60,a/007.jpg",
        "pid",
        "duplicate photo id (first seen at row 1)",
    ),
    ("010,0003,,1,White,12,1,1,curative,60,a/007.jpg", "age", "missing age"),
    ("010,0003,60,1,White,12,1,x,curative,60,a/007.jpg", "ecog", "cannot parse 'x'"),
]


@pytest.mark.parametrize(
    "line,column,reason", BAD_ROWS, ids=[f"{c}-{r.split()[0]}" for _, c, r in BAD_ROWS]
)
def test_bad_row_is_quarantined_with_file_row_and_column(tmp_path, line, column, reason):
    c = load_cohort(make(tmp_path, GOOD + line + "\n"))
    assert list(c.frame["photo_id"]) == ["007", "008", "009"]  # the good rows go on
    assert len(c.quarantine) == 1
    q = c.quarantine.iloc[0]
    assert q.source_file == str(tmp_path / "manifest.csv")
    assert q.row_number == 4 and q.column_name == column and q.stage == "load"
    assert reason in q.reason


def test_a_path_that_goes_down_and_up_inside_the_root_is_fine(tmp_path):
    c = load_cohort(make(tmp_path, GOOD.replace("b/009.jpg", "a/../b/009.jpg")))
    assert c.quarantine.empty and c.frame["image_path"].iloc[2] == "b/009.jpg"


def test_missing_mapped_column_names_file_and_column(tmp_path):
    with pytest.raises(InputError) as err:
        load_cohort(make(tmp_path, GOOD.replace("fu_months", "followup")))
    assert "manifest.csv" in str(err.value) and "`fu_months`" in str(err.value)


def test_missing_covariate_column_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="covariate column `ecog`"):
        load_cohort(make(tmp_path, GOOD.replace("ecog", "ps")))


@pytest.mark.parametrize(
    "yaml,match",
    [
        ("columns: {}\n", "name"),
        ("name: x\ncolour: blue\n", "colour"),
        ("name: x\ntime_unit: fortnights\n", "time_unit"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: x\ncolumns: {shoe_size: s}\n", "unknown standard column"),
    ],
    ids=["no-name", "unknown-key", "bad-unit", "bad-yaml", "unknown-column"],
)
def test_bad_cohort_yaml_is_an_input_error_naming_the_file(tmp_path, yaml, match):
    with pytest.raises(InputError, match=match) as err:
        load_cohort(make(tmp_path, GOOD, yaml=yaml))
    assert "cohort.yaml" in str(err.value)


def test_no_cohort_yaml_or_manifest(tmp_path):
    with pytest.raises(InputError, match="no cohort.yaml"):
        load_cohort(tmp_path)
    (tmp_path / "cohort.yaml").write_text("name: x\n")
    with pytest.raises(InputError, match="no manifest"):
        load_cohort(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_cohort(tmp_path / "nowhere")


def test_time_without_event_is_an_input_error(tmp_path):
    yaml = "name: x\ncolumns: {photo_id: pid}\n"
    with pytest.raises(InputError, match="has `time` but no `event`"):
        load_cohort(make(tmp_path, "pid,age,time\n1,50,3\n", yaml=yaml, images=False))


def test_hash_cache_hits_by_path_size_mtime_and_sees_changes(tmp_path):
    f = tmp_path / "img.jpg"
    f.write_bytes(b"a" * 5000)
    cache = HashCache(tmp_path / "cache.json")
    first = cache.sha256(f)
    assert cache.misses == 1 and cache.sha256(f) == first and cache.hits == 1
    cache.save()
    reloaded = HashCache(tmp_path / "cache.json")
    assert reloaded.sha256(f) == first and reloaded.hits == 1
    f.write_bytes(b"b" * 5000)
    os.utime(f, ns=(1, 1_000_000_000))
    assert reloaded.sha256(f) == sha256_file(f) != first


def test_cohort_digest_changes_when_an_image_changes(tmp_path):
    make(tmp_path, GOOD)
    before = load_cohort(tmp_path).sha256
    (tmp_path / "images" / "a" / "007.jpg").write_bytes(b"changed")
    assert load_cohort(tmp_path).sha256 != before


def test_group_names_read_in_order():
    from audit.data.cohort import age_band, natural_order

    bands = age_band(pd.Series([50, 70, 80, 90]), [65, 75, 85])
    assert natural_order(set(bands)) == ["<=65", "65-75", "75-85", ">85"]
    assert natural_order(["Q3", "Q1", "Q4", "Q2"]) == ["Q1", "Q2", "Q3", "Q4"]
    assert natural_order(["White", "Asian", "Black"]) == ["Asian", "Black", "White"]


@pytest.mark.parametrize(
    "yaml_text, model, message",
    [
        ("name: [x\n", "predictions:faceage", "not valid YAML"),
        ("name: x\ncolumns: {age: AGE}\n", "predictions:faceage", "column `AGE`"),
        ("name: x\n", "predictions:risk", "reads column `risk`"),
        ("name: x\n", "nosuch:risk", "expected a YAML file or KIND:ARGS"),
    ],
    ids=["yaml", "mapped-column", "prediction-column", "model-kind"],
)
def test_a_broken_cohort_or_model_is_reported_before_prefect_starts(
    tmp_path, yaml_text, model, message
):
    """Exit 2 with the file named, and no Prefect server started (its home stays empty):
    the error comes in about 0.5 s instead of after the 7-13 s server start."""
    import os
    import subprocess
    import sys

    cohort = tmp_path / "c"
    cohort.mkdir()
    (cohort / "cohort.yaml").write_text(yaml_text)
    (cohort / "manifest.csv").write_text("photo_id,age\np1,50\n")
    home = tmp_path / "prefect-home"
    env = dict(os.environ, PREFECT_HOME=str(home), COLUMNS="200")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "audit.cli",
            "run",
            "--cohort",
            str(cohort),
            "--model",
            model,
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert not home.exists() or not any(home.iterdir())
