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
