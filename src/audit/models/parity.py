"""Parity with a model's reference implementation, checked before a cohort is scored.

A model spec may carry golden photos and the outputs the model's own code gives on them::

    reference:
      images: [golden/a.jpg, {path: golden/b.png, cropped: true}]  # raw photos unless cropped
      outputs: {faceage: [41.2, 63.0]}                              # one value per photo
      tolerance: 0.5                                                # in the output's units

The audit runs each photo through its own pipeline (decoding, face detection, the model's
crop, colour order, normalisation, head) and compares. The most common silent failure of a
face model at a new site is a preprocessing mismatch that no accuracy table reveals; so a
mismatch stops the run, naming the photo, the expected and the obtained value, and which
change of colour order, normalisation or crop would make the outputs agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from audit.data.faces import CROP_METHODS
from audit.data.images import decode_rgb
from audit.errors import InputError
from audit.models.inference import model_input, to_unit

# the usual normalisations a diagnosis tries: ImageNet, per image, [0, 1], [-1, 1], bytes
NORMALIZATIONS = (
    "imagenet",
    "per_image",
    "none",
    {"mean": [0.5] * 3, "std": [0.5] * 3},
    {"mean": [0.0] * 3, "std": [1 / 255] * 3},
)


@dataclass(frozen=True)
class Golden:
    """A model spec's ``reference`` block, resolved."""

    images: list[tuple[Path, bool]]  # (path, cropped)
    outputs: dict[str, np.ndarray]
    tolerance: float


def golden(model) -> Golden | None:
    """The spec's ``reference`` block checked, or None when the spec has none."""
    ref = model.spec.reference
    if not ref:
        return None
    where = f"model {model.name!r}: reference"
    extra = set(ref) - {"images", "outputs", "tolerance"}
    if extra:
        raise InputError(f"{where}: unknown key(s) {sorted(extra)}; use images, outputs, tolerance")
    images = []
    for item in ref.get("images") or []:
        path, cropped = (item, False) if isinstance(item, str) else (item["path"], item["cropped"])
        path = model.spec.resolve(path)
        if not path.is_file():
            raise InputError(f"{where}: golden photo {path} not found")
        images.append((path, bool(cropped)))
    if not images:
        raise InputError(f"{where}: `images` lists no golden photo")
    outputs = {}
    for name, values in (ref.get("outputs") or {}).items():
        if name not in model.outputs:
            raise InputError(f"{where}: output {name!r} is not one of the model's {model.outputs}")
        values = np.asarray(values, dtype=float)
        if values.shape != (len(images),):
            raise InputError(
                f"{where}: outputs.{name} has {values.size} value(s) for {len(images)} photo(s)"
            )
        outputs[name] = values
    if not outputs:
        raise InputError(f"{where}: `outputs` gives no expected value")
    tolerance = float(ref.get("tolerance", 0.5))
    if tolerance <= 0:
        raise InputError(f"{where}: tolerance must be > 0")
    return Golden(images, outputs, tolerance)


def reference_values(model, images, *, layout=None, normalize=None, crop=None) -> dict:
    """``{output: values}`` of the golden photos through this audit's pipeline (NaN where a
    photo cannot be prepared); ``layout``, ``normalize``, ``crop`` (a crop method) override
    the model's for the diagnosis."""
    import torch

    model.load()
    batch, ok = [], []
    for path, cropped in images:
        spec = SimpleNamespace(cropped=cropped, detector="dlib")
        cut = model.crop_for(spec)
        if crop is not None:
            cut = cut.varied(method=crop)
        try:
            batch.append(cut.apply(decode_rgb(path), model.input_size))
            ok.append(True)
        except ValueError:
            batch.append(np.zeros((model.input_size,) * 2 + (3,), np.uint8))
            ok.append(False)
    x = to_unit(torch.from_numpy(np.stack(batch)).to(model.device))
    with torch.inference_mode():
        x = model_input(x, normalize or model.normalize, layout or model.input_layout)
        head, _ = model.forward(x)
        head = head.detach().float().cpu().numpy() if hasattr(head, "detach") else head
    out = {}
    for name, (values, _) in model.read(np.asarray(head, dtype=np.float64), check=False).items():
        out[name] = np.where(ok, values, np.nan)
    return out


def _worst(gold: Golden, got: dict) -> tuple[float, str, int]:
    """The largest error (NaN counts as infinite), its output and photo."""
    worst = (0.0, "", -1)
    for name, want in gold.outputs.items():
        err = np.abs(np.asarray(got[name]) - want)
        err = np.where(np.isfinite(err), err, np.inf)
        i = int(np.argmax(err))
        if err[i] > worst[0]:
            worst = (float(err[i]), name, i)
    return worst


def _variants(model):
    """Preprocessing changes that explain a mismatch: ``(description, fix, overrides)``."""
    base, _, channels = model.input_layout.partition(":")
    other = "rgb" if channels == "bgr" else "bgr"
    yield (
        f"the photos fed in {other.upper()} order",
        f"set `channels: {other}`",
        {"layout": base + (":bgr" if other == "bgr" else "")},
    )
    for norm in NORMALIZATIONS:
        if norm != model.normalize:
            yield f"normalisation {norm}", f"set `normalize: {norm}`", {"normalize": norm}
    current = model.crop_for(SimpleNamespace(cropped=False, detector="dlib")).method
    for method in CROP_METHODS:
        if method != current:
            yield f"the {method} crop", f"set `crop: {{method: {method}}}`", {"crop": method}


def check_reference(model) -> str | None:
    """Compare the model's golden photos with their reference outputs. Returns a note when
    they agree (None without a reference); raises :class:`InputError` when they do not, with
    the photo, the values and the likely cause."""
    gold = golden(model)
    if gold is None:
        return None
    got = reference_values(model, gold.images)
    err, name, i = _worst(gold, got)
    n = len(gold.images)
    if err <= gold.tolerance:
        return (
            f"{model.name}: parity with its reference implementation on {n} golden photo(s): "
            f"largest difference {err:.3g} (tolerance {gold.tolerance:g})"
        )
    photo = gold.images[i][0]
    value = got[name][i]
    obtained = "no face found" if not np.isfinite(value) else f"{value:.3f}"
    fixes = []
    for description, fix, overrides in _variants(model):
        try:
            alt = reference_values(model, gold.images, **overrides)
        except Exception:  # a variant the model cannot take is not the explanation
            continue
        if _worst(gold, alt)[0] <= gold.tolerance:
            fixes.append(f"the outputs agree with {description}: {fix}")
    cause = (
        "; ".join(fixes)
        if fixes
        else "no single change of colour order (RGB/BGR), normalisation (ImageNet, per image, "
        "[0, 1], [-1, 1], bytes) or crop (aligned, box, chip) explains it: compare the "
        "model's own normalisation (mean and scale), crop, margin, alignment and input size "
        "with the spec"
    )
    raise InputError(
        f"model {model.name!r}: the audit's pipeline does not reproduce the model's reference "
        f"outputs. Golden photo {photo.name}: expected {name} {gold.outputs[name][i]:.3f}, "
        f"obtained {obtained} (tolerance {gold.tolerance:g}). Likely cause: {cause}"
    )
