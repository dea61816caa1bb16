"""Spec presets for the published layouts: a FAHR-Face checkpoint (timm ViT at 112 px, weights
under ``model_state_dict``) and a FaceAge ONNX export (160 px, NHWC, per-image
standardisation), each with random weights in that layout, predict through the audit as the
network itself does on the same input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import yaml

from audit.data.cohort import load_cohort
from audit.demo.world import write_cohort
from audit.errors import InputError
from audit.models import create_model, parse_model_spec
from audit.models.inference import decode_image


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return load_cohort(write_cohort(tmp_path_factory.mktemp("p") / "c", 12, seed=31, photos=True))


def _batch(cohort, size):
    files = [cohort.image_file(p) for p in cohort.frame["image_path"]]
    x = np.stack([decode_image(f, size) for f in files]).astype(np.float32) / 255
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def _predicted(spec_path, cohort):
    preds = create_model(parse_model_spec(spec_path)).predict(cohort).frame
    return preds.set_index("photo_id").loc[cohort.frame["photo_id"], "value"].to_numpy()


@pytest.mark.parametrize(
    "arch", ["vit_tiny_patch16_224", pytest.param("vit_base_patch16_224", marks=pytest.mark.slow)]
)
def test_a_fahr_face_checkpoint_needs_only_its_path(tmp_path, cohort, arch):
    import timm

    torch.manual_seed(0)
    net = timm.create_model(arch, img_size=112, num_classes=1, pretrained=False).eval()
    torch.save({"model_state_dict": net.state_dict(), "epoch": 3}, tmp_path / "fahr.pth")
    spec = {"name": "fahr", "preset": "fahr-face", "checkpoint": "fahr.pth"}
    if arch != "vit_base_patch16_224":
        spec["arch"] = arch  # the preset's ViT-B/16 in the slow case; a tiny ViT here
    path = tmp_path / "fahr.yaml"
    path.write_text(yaml.safe_dump(spec))
    parsed = parse_model_spec(path)
    assert parsed.kind == "timm" and parsed.input_size == 112
    assert parsed.arch_kwargs == {"img_size": 112, "num_classes": 1}
    assert parsed.crop == {"method": "aligned", "margin": 0.25}
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = net((_batch(cohort, 112) - mean) / std)[:, 0].numpy()
    np.testing.assert_allclose(_predicted(path, cohort), want, rtol=1e-4, atol=1e-4)


class KerasLike(torch.nn.Module):
    """A small network taking NHWC input, as a Keras export does."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x):
        h = torch.relu(self.conv(x.permute(0, 3, 1, 2)))
        return self.head(h.mean(dim=(2, 3)))


def test_a_faceage_onnx_export_needs_only_its_path(tmp_path, cohort):
    torch.manual_seed(1)
    net = KerasLike().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, 160, 160, 3),),
            tmp_path / "faceage.onnx",
            input_names=["input_1"],
            dynamic_axes={"input_1": {0: "n"}},
            dynamo=False,
        )
    path = tmp_path / "faceage.yaml"
    path.write_text(
        yaml.safe_dump({"name": "faceage", "preset": "faceage", "checkpoint": "faceage.onnx"})
    )
    parsed = parse_model_spec(path)
    assert (parsed.kind, parsed.input_size, parsed.layout, parsed.normalize) == (
        "onnx",
        160,
        "nhwc",
        "per_image",
    )
    assert parsed.crop == {"method": "box", "margin": 0.2}
    x = _batch(cohort, 160)
    flat = x.flatten(1)
    std = flat.std(dim=1).clamp(min=1 / np.sqrt(flat.shape[1]))
    x = (x - flat.mean(dim=1).view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)
    with torch.no_grad():
        want = net(x.permute(0, 2, 3, 1))[:, 0].numpy()
    np.testing.assert_allclose(_predicted(path, cohort), want, rtol=1e-4, atol=1e-4)


def test_a_specs_own_keys_win_and_an_unknown_preset_is_named(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "surv",
                "preset": "fahr-face",
                "checkpoint": "x.pth",
                "arch_kwargs": {"num_classes": 2},
                "outputs": {"risk": 1},
            }
        )
    )
    spec = parse_model_spec(path)
    assert spec.arch_kwargs == {"img_size": 112, "num_classes": 2}  # merged key by key
    assert spec.outputs == {"risk": 1}  # replaced whole
    path.write_text(yaml.safe_dump({"name": "x", "preset": "fahrface", "checkpoint": "x.pth"}))
    with pytest.raises(InputError, match="unknown preset 'fahrface'"):
        parse_model_spec(path)
