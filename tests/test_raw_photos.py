"""Raw photos: face detection, eye alignment and cropping, checked on real photos that
packages ship (skimage.data.astronaut, skimage.data.lfw_subset)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from audit.data.cohort import load_cohort
from audit.data.faces import Crop, align_crop, detect
from audit.models import create_model
from audit.models.inference import decode_image


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.mark.parametrize("detector", ["dlib", "opencv"])
def test_the_astronaut_has_one_face_with_two_eyes(astronaut, detector):
    faces = detect(astronaut, detector)
    assert len(faces) == 1
    f = faces[0]
    assert 150 < f["x"] < 200 and 40 < f["y"] < 90 and 80 < f["w"] < 120 and f["confidence"] > 0
    (rx, ry), (lx, ly) = f["landmarks"]["right_eye"], f["landmarks"]["left_eye"]
    assert rx < lx and f["x"] < rx < f["x"] + f["w"] and abs(ly - ry) < 10
    if detector == "dlib":  # dlib's five points: the eyes' corners and the base of the nose
        points = np.array(f["landmarks"]["points"])
        assert points.shape == (5, 2)
        nose = points[4]
        assert rx < nose[0] < lx and nose[1] > max(ry, ly) + 15


@pytest.mark.parametrize("detector", ["dlib", "opencv"])
@pytest.mark.parametrize("tilt", [-12.0, 12.0])
def test_alignment_levels_the_eyes_of_a_tilted_photo(astronaut, tilt, detector):
    h, w = astronaut.shape[:2]
    rot = cv2.getRotationMatrix2D((224, 113), tilt, 1.0)
    tilted = cv2.warpAffine(astronaut, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
    face = detect(tilted, detector)[0]
    crop = align_crop(tilted, face, 112)
    again = detect(np.ascontiguousarray(cv2.resize(crop, (224, 224))), detector)
    assert len(again) == 1 and again[0]["landmarks"]
    (rx, ry), (lx, ly) = again[0]["landmarks"]["right_eye"], again[0]["landmarks"]["left_eye"]
    assert abs(np.degrees(np.arctan2(ly - ry, lx - rx))) < 5  # levelled (was about +-8)


def test_a_raw_cohort_is_detected_aligned_and_predicted(tmp_path, astronaut):
    from skimage import data

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(astronaut).save(images / "astronaut.jpg", quality=92)
    Image.fromarray(data.coffee()).save(images / "coffee.jpg", quality=92)
    (tmp_path / "manifest.csv").write_text(
        "photo_id,age,image_path\nastronaut,53,astronaut.jpg\ncoffee,40,coffee.jpg\n"
    )
    (tmp_path / "cohort.yaml").write_text("name: raw\ncropped: false\n")
    cohort = load_cohort(tmp_path)
    preds = create_model("demo:faceage").predict(cohort)
    assert preds.frame["photo_id"].tolist() == ["astronaut"]
    assert 5 < preds.frame["value"].iloc[0] < 110
    q = preds.quarantine.iloc[0]
    assert q["photo_id"] == "coffee" and "0 faces found" in q["reason"] and q["row_number"] == 2
    crop = decode_image(images / "astronaut.jpg", 112, Crop())
    assert crop.shape == (112, 112, 3)


def test_lfw_faces_run_as_a_cropped_cohort(tmp_path):
    from skimage import data

    faces = data.lfw_subset()[:100]  # the first 100 are faces (25x25 greyscale)
    images = tmp_path / "images"
    images.mkdir()
    lines = ["photo_id,age,image_path"]
    for i, face in enumerate(faces):
        Image.fromarray((face * 255).astype(np.uint8)).save(images / f"lfw{i:03d}.png")
        lines.append(f"lfw{i:03d},40,lfw{i:03d}.png")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "cohort.yaml").write_text("name: lfw\ncropped: true\n")
    preds = create_model("demo:faceage").predict(load_cohort(tmp_path))
    assert len(preds.frame) == 100 and preds.quarantine is None
    assert np.isfinite(preds.frame["value"]).all() and preds.frame["value"].std() > 0


@pytest.mark.parametrize("method", ["aligned", "box", "chip"])
def test_crop_variants_cut_the_photo_again_more_as_severity_grows(astronaut, method):
    from audit.robustness.perturbations import create_perturbation

    crop = Crop(method=method)
    clean = crop.apply(astronaut, 112).astype(float)
    for name in ("landmark_jitter", "crop_margin"):
        p = create_perturbation(name)
        moved = [
            np.abs(p.recrop(crop, s, seed=1).apply(astronaut, 112) - clean).mean() for s in p.levels
        ]
        assert moved[0] > 0 and moved[-1] > moved[0], (name, moved)
        again = p.recrop(crop, p.levels[-1], seed=1).apply(astronaut, 112)
        assert np.array_equal(again, p.recrop(crop, p.levels[-1], seed=1).apply(astronaut, 112))
        if name == "landmark_jitter":  # the seed draws the moves (the margin: only its sign)
            other = p.recrop(crop, p.levels[-1], seed=2).apply(astronaut, 112)
            assert not np.array_equal(again, other)
    unaligned = create_perturbation("alignment").recrop(crop, 1)
    assert unaligned.method != method
    assert np.abs(unaligned.apply(astronaut, 112) - clean).mean() > 1


def test_the_crop_family_runs_in_the_robustness_suite(tmp_path, astronaut):
    from skimage import data

    from audit.robustness.perturbations import face_layout
    from audit.robustness.suite import run_suite

    images = tmp_path / "images"
    images.mkdir()
    lines = ["photo_id,age,image_path"]
    photos = {"astronaut": astronaut}
    for i, face in enumerate(data.lfw_subset()[:8]):
        grey = cv2.resize((face * 255).astype(np.uint8), (250, 250), interpolation=cv2.INTER_CUBIC)
        photos[f"lfw{i}"] = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    for name, rgb in photos.items():
        Image.fromarray(rgb).save(images / f"{name}.png")
        lines.append(f"{name},40,{name}.png")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "cohort.yaml").write_text("name: raw\ncropped: false\n")
    cohort = load_cohort(tmp_path)
    model = create_model("demo:faceage")
    found = model.predict(cohort).frame["photo_id"]
    rows = cohort.frame[cohort.frame["photo_id"].isin(found)].reset_index(drop=True)
    plan = [("landmark_jitter", 1), ("landmark_jitter", 5), ("alignment", 1), ("brightness", 3)]
    out = run_suite([model], cohort, rows, plan, layout=face_layout("aligned"), seed=0)
    frame = out[model.name].frame
    assert set(frame["perturbation"]) == {"none", "landmark_jitter", "alignment", "brightness"}
    assert len(frame) == len(rows) * (len(plan) + 1)
    wide = frame.pivot_table(index="photo_id", columns=["perturbation", "severity"], values="value")
    clean = wide[("none", 0)]
    shift1 = (wide[("landmark_jitter", 1)] - clean).abs().mean()
    shift5 = (wide[("landmark_jitter", 5)] - clean).abs().mean()
    assert 0 < shift1 < shift5
    # a cohort of face crops has no face step to vary: the crop family is left out
    crops = tmp_path / "crops"
    (crops / "images").mkdir(parents=True)
    for name in rows["photo_id"]:
        Image.fromarray(Crop().apply(photos[name], 112)).save(crops / "images" / f"{name}.png")
    (crops / "manifest.csv").write_text(
        "photo_id,age,image_path\n" + "".join(f"{n},40,{n}.png\n" for n in rows["photo_id"])
    )
    (crops / "cohort.yaml").write_text("name: crops\ncropped: true\n")
    cropped = load_cohort(crops)
    out = run_suite([model], cropped, cropped.frame, plan, layout=face_layout("aligned"), seed=0)
    assert set(out[model.name].frame["perturbation"]) == {"none", "brightness"}


@pytest.mark.parametrize("method", ["aligned", "box", "chip"])
def test_the_layout_of_each_crop_is_where_the_eyes_land(astronaut, method):
    """Each eye's landmarks, painted on a blank image and cut with the astronaut's crop, land
    where the crop's face layout says (the perturbations and saliency regions use it)."""
    from audit.data.faces import face_chip
    from audit.robustness.perturbations import crop_layout, face_layout

    crop = Crop(method=method)
    layout = crop_layout(crop, face_layout("arcface"))
    face = detect(astronaut, "dlib")[0]
    points = np.array(face["landmarks"]["points"])
    centres = []
    for eye in (points[0:2], points[2:4]):
        mask = np.zeros_like(astronaut)
        for x, y in eye:
            cv2.circle(mask, (int(x), int(y)), 2, (255, 255, 255), -1)
        if method == "chip":
            cut = face_chip(mask, face, 200, crop.padding)
        else:
            cut = align_crop(mask, face, 200, crop.margin, level=method == "aligned")
        ys, xs = np.nonzero(cut[..., 0] > 64)
        centres.append((xs.mean() / 200, ys.mean() / 200))
    (x1, y1), (x2, y2) = sorted(centres)
    assert abs((y1 + y2) / 2 - layout.eye_y) < 0.04, (method, y1, y2, layout.eye_y)
    assert abs((x2 - x1) / 2 - layout.eye_dx) < 0.03, (method, x1, x2, layout.eye_dx)
