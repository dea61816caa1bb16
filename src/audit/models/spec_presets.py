"""Model spec presets: the published models' layouts, so a spec names only what differs.

``preset: fahr-face`` (FAHR-FaceAge, FAHR-FaceSurvival): a timm ViT-B/16 built at 112 px
(7 x 7 patches) with a one-output head, weights under ``model_state_dict``, eye-aligned
112-px crops with a 25 % margin, ImageNet normalisation, head column 0 as ``faceage``.

``preset: faceage`` (the original FaceAge, Keras Inception-ResNet-v1 exported to ONNX):
160-px input in NHWC layout, each image standardised to zero mean and unit SD
(prewhitening), the detector's box with a 20 % margin and no rotation, head column 0 as
``faceage``.

The spec's own keys win over the preset's (a mapping such as ``arch_kwargs`` is merged key
by key); a FAHR-FaceSurvival spec sets ``outputs: {risk: 0}``.
"""

from __future__ import annotations

from audit.errors import InputError

SPEC_PRESETS: dict[str, dict] = {
    "fahr-face": {
        "kind": "timm",
        "arch": "vit_base_patch16_224",
        "arch_kwargs": {"img_size": 112, "num_classes": 1},
        "state_dict_key": "model_state_dict",
        "input_size": 112,
        "layout": "nchw",
        "normalize": "imagenet",
        "crop": {"method": "aligned", "margin": 0.25},
        "outputs": {"faceage": 0},
    },
    "faceage": {
        "kind": "onnx",
        "input_size": 160,
        "layout": "nhwc",
        "normalize": "per_image",
        "crop": {"method": "box", "margin": 0.2},
        "outputs": {"faceage": 0},
    },
}


def with_preset(data: dict, source: str) -> dict:
    """``data`` (a spec's keys) over its ``preset``'s, the preset key removed."""
    if not isinstance(data, dict) or "preset" not in data:
        return data
    data = dict(data)
    name = data.pop("preset")
    if name not in SPEC_PRESETS:
        raise InputError(f"{source}: unknown preset {name!r}; use one of {sorted(SPEC_PRESETS)}")
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SPEC_PRESETS[name].items()}
    for key, value in data.items():
        if key == "outputs" or not isinstance(value, dict) or key not in merged:
            merged[key] = value  # the outputs are replaced whole: a risk model has no faceage
        else:
            merged[key] = {**merged[key], **value}
    return merged
