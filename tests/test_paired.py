"""Agreement on real repeated photos (``audit.metrics.paired``): Bland and Altman's published
worked example, the equivalence tests against scipy's one-sided t-tests, weighted kappa against
scikit-learn, ICC through the robustness suite's code path, and planted studies: a retake study
of an ideal model is equivalent, a planted +3-year make-up effect is found and refused, eight
pairs are never enough, surgery months later is adjusted for the age between the photos."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from audit.data.cohort import Comparison
from audit.metrics.paired import (
    EQUIVALENT,
    INCONCLUSIVE,
    NOT_EQUIVALENT,
    agreement,
    limits_of_agreement,
    pair_photos,
    paired_tables,
    repeatability_coefficient,
    tost,
    weighted_kappa,
)
from audit.pipeline.config import load_config
from audit.robustness.suite import shift_metrics

# Bland and Altman (1986), Table 1: peak expiratory flow rate (l/min) of 17 people, first
# measurement with the Wright and with the mini Wright meter.
WRIGHT = [494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427]
MINI = [512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451]


def test_limits_of_agreement_reproduce_bland_and_altman_1986():
    d = np.array(WRIGHT, float) - np.array(MINI, float)
    # the paper: mean -2.1, SD 38.8, limits -79.7 and 75.5 (mean +- 2 SD), their 95% CIs
    # -114.3 to -45.1 and 40.9 to 110.1 (from the rounded mean and SD: within 0.25)
    loa = limits_of_agreement(d, z=2.0)
    assert d.mean() == pytest.approx(-2.1, abs=0.05)
    assert loa["sd_diff"] == pytest.approx(38.8, abs=0.05)
    assert loa["loa_low"] == pytest.approx(-79.7, abs=0.1)
    assert loa["loa_high"] == pytest.approx(75.5, abs=0.1)
    assert loa["loa_low_ci_low"] == pytest.approx(-114.3, abs=0.25)
    assert loa["loa_low_ci_high"] == pytest.approx(-45.1, abs=0.25)
    assert loa["loa_high_ci_low"] == pytest.approx(40.9, abs=0.25)
    assert loa["loa_high_ci_high"] == pytest.approx(110.1, abs=0.25)


def test_agreement_equals_a_hand_computation_on_a_small_table():
    ref = np.array([50.0, 61.0, 47.0, 72.0, 55.0, 66.0])
    cmp_ = np.array([51.0, 59.0, 50.0, 72.0, 57.0, 65.0])
    d = cmp_ - ref  # 1, -2, 3, 0, 2, -1: mean 0.5, sum of squares 19
    mean = 0.5
    sd = np.sqrt(sum((x - mean) ** 2 for x in d) / 5)  # sqrt(17.5 / 5)
    out = agreement(ref, cmp_, unit=1.0, tolerance=2.0, min_pairs=2)
    assert out["n_pairs"] == 6
    assert out["mean_shift"] == pytest.approx(0.5, abs=1e-12)
    assert out["sd_diff"] == pytest.approx(np.sqrt(3.5), abs=1e-12)
    assert out["loa_low"] == pytest.approx(0.5 - 1.96 * sd, abs=1e-12)
    assert out["loa_high"] == pytest.approx(0.5 + 1.96 * sd, abs=1e-12)
    half = stats.t.ppf(0.975, 5) * np.sqrt(3 * 3.5 / 6)
    assert out["loa_high_ci_high"] - out["loa_high"] == pytest.approx(half, abs=1e-12)
    # repeatability: 1.96 sqrt(2) s_w with s_w^2 = sum d^2 / 2n = 19 / 12
    assert out["repeatability"] == pytest.approx(1.96 * np.sqrt(2 * 19 / 12), abs=1e-12)
    assert repeatability_coefficient(d) == pytest.approx(out["repeatability"], abs=1e-12)
    # ICC(3,1) through the robustness suite's code path
    icc = shift_metrics(ref, cmp_, unit=1.0, tolerance=5.0)["icc"]
    assert out["icc"] == pytest.approx(icc, abs=1e-12)
    # and by hand: two-way ANOVA mean squares of the 6 x 2 table
    x = np.column_stack([ref, cmp_])
    grand = x.mean()
    msr = 2 * ((x.mean(axis=1) - grand) ** 2).sum() / 5
    ss_err = ((x - grand) ** 2).sum() - 2 * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_err -= 6 * ((x.mean(axis=0) - grand) ** 2).sum()
    mse = ss_err / 5
    assert out["icc"] == pytest.approx((msr - mse) / (msr + mse), abs=1e-12)


def test_tost_equals_two_one_sided_t_tests():
    rng = np.random.default_rng(3)
    for shift, margin in ((0.2, 1.0), (0.9, 1.0), (2.5, 1.0), (-1.6, 1.0)):
        d = rng.normal(shift, 1.0, 40)
        eq = tost(d, margin, alpha=0.05, min_pairs=20)
        p_low = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
        p_high = stats.ttest_1samp(d, margin, alternative="less").pvalue
        assert eq.p == pytest.approx(max(p_low, p_high), rel=1e-9)
        ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.90)
        assert (eq.ci_low, eq.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
        if eq.p < 0.05:
            assert eq.decision == EQUIVALENT and -margin < eq.ci_low < eq.ci_high < margin
        elif eq.ci_low > margin or eq.ci_high < -margin:
            assert eq.decision == NOT_EQUIVALENT
        else:
            assert eq.decision == INCONCLUSIVE


def test_weighted_kappa_equals_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(5)
    a = rng.integers(0, 4, 200)
    b = np.clip(a + rng.integers(-1, 2, 200), 0, 3)
    assert weighted_kappa(a, b, 4) == pytest.approx(
        cohen_kappa_score(a, b, weights="linear"), abs=1e-12
    )
    assert weighted_kappa(a, a, 4) == pytest.approx(1.0, abs=1e-12)


def _study(n: int, effect: float, seed: int, noise: float = 1.0, gap_years: float = 0.0):
    """``n`` subjects photographed at baseline and under `makeup`, read by an ideal FaceAge
    model (biological age + noise) plus ``effect`` years on the make-up photo; the second
    photo ``gap_years`` later (the face ages with it)."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(40, 80, n)
    bio = age + rng.normal(0, 4, n)
    rows = []
    for i in range(n):
        sex = "female" if i % 2 else "male"
        for condition, extra, gap in (("baseline", 0.0, 0.0), ("makeup", effect, gap_years)):
            rows.append(
                {
                    "photo_id": f"p{i}-{condition}",
                    "subject_id": f"s{i}",
                    "age": age[i] + gap,
                    "sex": sex,
                    "condition": condition,
                    "faceage": bio[i] + gap + extra + rng.normal(0, noise),
                    "risk": 0.05 * bio[i] + rng.normal(0, 0.3),
                    "_row": len(rows) + 1,
                }
            )
    return pd.DataFrame(rows)


def _overall(table, output="faceage"):
    return table[(table["attribute"] == "all") & (table["output"] == output)].iloc[0]


CFG = load_config().paired
CUTS = load_config().accuracy.age_bands
MAKEUP = [Comparison(condition="makeup", reference="baseline")]


def test_a_retake_study_of_an_ideal_model_is_equivalent_and_a_planted_effect_is_found():
    same = _overall(paired_tables(_study(120, 0.0, 1), "m", ["faceage"], MAKEUP, CFG, CUTS)[0])
    assert same["mean_shift_low"] <= 0 <= same["mean_shift_high"]
    assert same["equivalence"] == EQUIVALENT and bool(same["passed"]) is True
    shifted = _overall(paired_tables(_study(120, 3.0, 1), "m", ["faceage"], MAKEUP, CFG, CUTS)[0])
    assert shifted["mean_shift_low"] <= 3.0 <= shifted["mean_shift_high"]
    assert shifted["mean_shift_low"] > 2.0  # the CI excludes the tolerance
    assert shifted["equivalence"] == NOT_EQUIVALENT and bool(shifted["passed"]) is False


def test_eight_pairs_are_inconclusive_never_equivalent():
    table, pairs, _ = paired_tables(
        _study(8, 0.0, 2, noise=0.01), "m", ["faceage"], MAKEUP, CFG, CUTS
    )
    row = _overall(table)
    assert row["n_pairs"] == 8 and abs(row["mean_shift"]) < 0.05
    assert row["equivalence"] == INCONCLUSIVE and pd.isna(row["passed"])
    assert "too few pairs" in row["reason"]
    assert len(pairs) == 8


def test_photos_months_apart_are_adjusted_for_the_age_between_them():
    photos = _study(150, 0.0, 4, gap_years=0.75)  # e.g. a facelift 9 months later
    table = paired_tables(photos, "m", ["faceage", "risk"], MAKEUP, CFG, CUTS)[0]
    row = _overall(table)
    assert bool(row["age_adjusted"]) and row["mean_age_gap"] == pytest.approx(0.75, abs=1e-9)
    assert row["mean_shift_low"] <= 0 <= row["mean_shift_high"]
    assert row["equivalence"] == EQUIVALENT
    raw = paired_tables(
        photos,
        "m",
        ["faceage"],
        [Comparison(condition="makeup", reference="baseline", adjust_age=False)],
        CFG,
        CUTS,
    )[0]
    assert _overall(raw)["mean_shift"] == pytest.approx(row["mean_shift"] + 0.75, abs=1e-9)
    risk = _overall(table, "risk")
    assert risk["unit"] == "SD" and 0 <= risk["quartile_change"] <= 1
    assert -1 <= risk["kappa"] <= 1


def test_subgroups_row_order_and_ids_do_not_change_the_answer():
    photos = _study(60, 1.0, 6)
    table = paired_tables(photos, "m", ["faceage"], MAKEUP, CFG, CUTS)[0]
    shuffled = photos.sample(frac=1.0, random_state=9).reset_index(drop=True)
    shuffled["_row"] = np.arange(1, len(shuffled) + 1)  # as a reordered manifest reads
    shuffled["photo_id"] = "x" + shuffled["photo_id"].str[::-1]  # and renamed
    shuffled["subject_id"] = "y" + shuffled["subject_id"].str[::-1]
    again = paired_tables(shuffled, "m", ["faceage"], MAKEUP, CFG, CUTS)[0]
    cols = ["mean_shift", "mean_shift_low", "mean_shift_high", "loa_low", "icc", "tost_p"]
    pd.testing.assert_frame_equal(table[cols], again[cols], rtol=1e-9, atol=1e-12)
    sexes = table[table["attribute"] == "sex"].set_index("group_name")
    assert set(sexes.index) == {"female", "male"}
    assert sexes["n_pairs"].sum() == 60


def test_pairs_follow_the_pair_ids_and_count_what_is_left_out():
    photos = pd.DataFrame(
        {
            "photo_id": ["a1", "a2", "a3", "a4", "b1", "c1"],
            "subject_id": ["A", "A", "A", "A", "B", "C"],
            "condition": ["baseline", "makeup", "baseline", "makeup", "baseline", "makeup"],
            "pair": ["v1", "v1", "v2", "v2", "v1", "v1"],
            "_row": [1, 2, 3, 4, 5, 6],
        }
    )
    pairs, notes = pair_photos(photos, "makeup", "baseline")
    assert pairs[["photo_ref", "photo_cmp"]].values.tolist() == [["a1", "a2"]]
    assert any("further pair" in n for n in notes)
    assert any("2 photo(s) without a partner" in n for n in notes)
    wrong = photos.assign(pair=["v1", "v2", "v3", "v4", "v1", "v1"])  # no pair matches
    assert pair_photos(wrong, "makeup", "baseline")[0].empty


# ---------------------------------------------------------------------------- the demo world


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    """A paired demo study of 60 subjects read by both demo models, and the counterfactual:
    each subject's baseline photo drawn again, the same in every pixel but for surgery's
    skin cues (no retake jitter, no months between), read by the same models."""
    from audit.data.cohort import load_cohort
    from audit.demo.faces import Appearance, jpeg_bytes, photo_conditions, render_face, subject_look
    from audit.demo.world import SURGERY_YEARS, WorldParams, write_cohort
    from audit.models import create_model

    folder = write_cohort(
        tmp_path_factory.mktemp("p") / "study", 60, seed=4250, photos=True, paired=True
    )
    cohort = load_cohort(folder)
    photos = cohort.frame.copy()
    models = [create_model("demo:faceage"), create_model("demo:survival")]
    for model in models:
        preds = model.predict(cohort).frame
        for output, part in preds.groupby("output"):
            photos = photos.merge(
                part[["photo_id", "value"]].rename(columns={"value": output}), on="photo_id"
            )
    truth = pd.read_csv(folder / "truth.csv")
    base = photos[photos["condition"] == "baseline"].merge(
        truth[["photo_id", "biological_age", "health"]], on="photo_id"
    )
    params = WorldParams()
    study = folder
    folder = folder.parent / "counterfactual"
    shutil.copytree(study, folder)
    for row in base.itertuples():
        no = int(row.subject_id[1:])
        look = subject_look(np.random.default_rng([4250, no, 0]), row.sex, row.race)
        rng = np.random.default_rng([4250, no, 1])
        cond = photo_conditions(rng, light=params.light, jpeg=tuple(params.jpeg_quality))
        younger = Appearance(skin_age_shift=-SURGERY_YEARS, glasses=False)
        img = render_face(look, cond, row.biological_age, row.health, rng, younger)
        (folder / "images" / row.image_path).write_bytes(jpeg_bytes(img, cond.jpeg_quality))
    counter = load_cohort(folder)
    counter.frame = counter.frame[counter.frame["condition"] == "baseline"].reset_index(drop=True)
    effect = {}
    for model in models:
        preds = model.predict(counter).frame.set_index(["photo_id", "output"])["value"]
        for output in model.outputs:
            moved = preds.xs(output, level="output").reindex(base["photo_id"]).to_numpy()
            effect[output] = moved - base[output].to_numpy()
    return photos, effect, cohort, study


def test_demo_surgery_lowers_faceage_by_what_its_cue_change_implies(demo_study):
    photos, effect, cohort, _ = demo_study
    table, _, notes = paired_tables(
        photos, "demo", ["faceage", "risk"], cohort.spec.paired.comparisons, CFG, CUTS
    )
    rows = table[table["attribute"] == "all"].set_index(["output", "comparison"])
    surgery = rows.loc[("faceage", "post_surgery vs baseline")]
    implied = float(np.mean(effect["faceage"]))  # the skin cues 10 years younger, alone
    assert implied < -2.0  # the demo FaceAge reads wrinkles
    assert bool(surgery["age_adjusted"]) and surgery["mean_age_gap"] == pytest.approx(0.5, abs=0.05)
    # the study (retake jitter, six months between, adjusted) recovers the pure cue effect
    assert surgery["mean_shift_low"] - 0.3 <= implied <= surgery["mean_shift_high"] + 0.3
    assert surgery["equivalence"] == NOT_EQUIVALENT
    # the survival model moves less, in SDs of each model's reference scores
    ref_sd = photos.loc[photos["condition"] == "baseline", "faceage"].std(ddof=1)
    risk = rows.loc[("risk", "post_surgery vs baseline")]
    assert abs(risk["mean_shift"]) < abs(surgery["mean_shift"]) / ref_sd
    # a retake is equivalent for both; glasses and the retake keep risk quartiles (kappa)
    for output in ("faceage", "risk"):
        assert rows.loc[(output, "retake vs baseline"), "equivalence"] == EQUIVALENT
    assert rows.loc[("risk", "retake vs baseline"), "kappa"] > 0.8
    assert any("without a partner" in n for n in notes)  # died before the surgery photo


def test_an_audit_of_a_paired_study_writes_the_tables_the_verdict_and_the_pages(
    demo_study, tmp_path
):
    import audit

    _, _, _, study = demo_study
    run = audit.run(
        study, ["demo:faceage", "demo:survival"], out=tmp_path / "out", config={"preset": "quick"}
    )
    paired = run.table("paired")
    overall = paired[paired["attribute"] == "all"]
    assert len(overall) == 12  # 6 comparisons x (FaceAge, risk)
    assert set(overall["equivalence"]) <= {"equivalent", "not equivalent", "inconclusive"}
    assert len(run.table("paired_pairs")) == overall["n_pairs"].sum()
    rows = run.table("cohort_rows")
    compared = rows["condition"].isin(
        ["makeup", "post_surgery", "glasses", "lighting_b", "pose_b", "retake"]
    )
    assert (rows["paired_only"].astype(bool) == compared).all()
    # the one-photo statistics see the baseline photos only
    acc = run.table("accuracy")
    mae = acc[(acc["metric"] == "mae") & (acc["attribute"] == "all")]
    assert int(mae["n"].iloc[0]) == int((rows["condition"] == "baseline").sum())
    verdicts = run.table("verdicts").set_index(["model", "check_name"])
    face = verdicts.loc[("demo-faceage", "paired_faceage")]
    assert face["status"] == "fail" and "makeup vs baseline: not equivalent" in face["details"]
    page = run.report_path.read_text()
    assert 'id="paired"' in page and "Bland-Altman plots of demo-faceage" in page
    assert "analysed in <a" in page  # the composition says what it left out
    card = (run.report_path.parent / "model_card.html").read_text()
    assert "Real repeated photos" in card and "post_surgery vs baseline" in card


def test_the_synthetic_counterpart_is_set_beside_the_real_shift():
    from audit.report.render import _synthetic_beside_real

    overall = pd.DataFrame(
        {
            "condition": ["makeup", "pose_b"],
            "comparison": ["makeup vs baseline", "pose_b vs baseline"],
            "mean_shift": [-3.0, 1.1],
            "mean_shift_low": [-3.6, 0.5],
            "mean_shift_high": [-2.4, 1.7],
        }
    )
    rob = pd.DataFrame(
        {
            "model": "m",
            "output": "faceage",
            "attribute": "all",
            "family": ["makeup", "makeup", "pose", "pose"],
            "perturbation": ["skin_smoothing", "skin_smoothing", "rotation", "rotation"],
            "severity": [1, 5, 1, 5],
            "mean_shift": [-1.0, -4.0, -0.2, -1.5],
        }
    )
    cfg = {"synthetic": {"makeup": "makeup", "pose_b": "pose"}}
    out = {r["comparison"]: r for r in _synthetic_beside_real(overall, rob, "m", "faceage", cfg)}
    assert out["makeup vs baseline"]["nearest"] == "skin_smoothing at severity 5"
    assert not out["makeup vs baseline"]["outside"]  # -3 lies within 0 to -4
    # real pose moves FaceAge up; the synthetic pose family only down: not reproduced
    assert out["pose_b vs baseline"]["outside"]
    assert out["pose_b vs baseline"]["range"] == [-1.5, 0.0]


def test_the_cohort_contract_of_a_paired_study(tmp_path):
    import yaml

    from audit.data.cohort import load_cohort
    from audit.data.validation import validate_cohort
    from audit.errors import InputError

    rows = ["photo_id,subject_id,age,condition,taken_at"]
    for i in range(6):
        rows += [f"b{i},s{i},60,baseline,2024-01-0{i + 1}", f"m{i},s{i},60,makeup,2024-01-0{i + 1}"]
    rows.append("x0,s9,50,,2024-02-01")  # not in the study
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    spec = {"name": "p", "paired": {"comparisons": {"makeup": "baseline", "tattoo": "baseline"}}}
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(spec))
    cohort = load_cohort(tmp_path)
    assert str(cohort.frame["photo_date"].iloc[0].date()) == "2024-01-01"  # taken_at
    # the compared photos leave the one-photo statistics; references and the rest stay
    assert sorted(cohort.analysed["photo_id"]) == ["b0", "b1", "b2", "b3", "b4", "b5", "x0"]
    assert len(cohort.subjects()) == 7 and len(cohort.frame) == 13
    report = validate_cohort(cohort, images=False)
    check = report.results[report.results["suite"] == "paired"].iloc[0]
    assert not check["success"] and "none for: tattoo" in check["details"]
    spec["paired"]["in_main_statistics"] = True
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(spec))
    assert len(load_cohort(tmp_path).analysed) == 13
    (tmp_path / "manifest.csv").write_text("photo_id,age\np1,50\n")
    with pytest.raises(InputError, match="no `condition` column"):
        load_cohort(tmp_path)
    spec["paired"] = {"comparisons": {"makeup": "makeup"}}
    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError, match="compared with itself"):
        load_cohort(tmp_path)
