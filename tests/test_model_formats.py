"""One network exported three ways (timm checkpoint, ONNX, TorchScript) predicts the same
through each adapter; bad exports fail clearly."""

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

OUTPUTS = {"faceage": {"index": 0, "scale": 10.0, "offset": 50.0}, "risk": 1}


class Exported(torch.nn.Module):
    """A timm network returning (head, pre-logit features), optionally NHWC in."""

    def __init__(self, net, nhwc=False):
        super().__init__()
        self.net, self.nhwc = net, nhwc

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        pre = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return self.net.get_classifier()(pre), pre


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    import timm

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(3)
    net = timm.create_model("test_resnet", num_classes=2, pretrained=False).eval()
    torch.save({"model_state_dict": net.state_dict()}, folder / "net.pth")
    x = torch.randn(2, 3, 112, 112)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Exported(net).eval(),
            (x,),
            folder / "net.onnx",
            input_names=["image"],
            output_names=["head", "features"],
            dynamic_axes={"image": {0: "n"}},
            dynamo=False,
        )
        torch.onnx.export(
            Exported(net, nhwc=True).eval(),
            (x.permute(0, 2, 3, 1),),
            folder / "net_nhwc.onnx",
            input_names=["image"],
            output_names=["head", "features"],
            dynamic_axes={"image": {0: "n"}},
            dynamo=False,
        )
        torch.jit.trace(Exported(net).eval(), x).save(str(folder / "net.pt"))
    specs = {
        "timm": {
            "kind": "timm",
            "arch": "test_resnet",
            "arch_kwargs": {"num_classes": 2},
            "checkpoint": "net.pth",
            "state_dict_key": "model_state_dict",
        },
        "onnx": {"kind": "onnx", "checkpoint": "net.onnx", "embeddings": "features"},
        "onnx_nhwc": {
            "kind": "onnx",
            "checkpoint": "net_nhwc.onnx",
            "layout": "nhwc",
            "embeddings": "features",
        },
        "torchscript": {"kind": "torchscript", "checkpoint": "net.pt"},
    }
    paths = {}
    for name, spec in specs.items():
        spec.update(name=name, input_size=112, normalize="imagenet", outputs=OUTPUTS)
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(spec))
    return folder, paths


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return load_cohort(write_cohort(tmp_path_factory.mktemp("c") / "c", 40, seed=90, photos=True))


def _predict(path, cohort):
    preds = create_model(parse_model_spec(path)).predict(cohort)
    wide = preds.frame.pivot(index="photo_id", columns="output", values="value")
    vectors = (
        preds.embeddings.set_index("photo_id")["vector"] if preds.embeddings is not None else None
    )
    return wide.loc[cohort.frame["photo_id"]], vectors


@pytest.mark.parametrize("fmt", ["onnx", "onnx_nhwc", "torchscript"])
def test_each_export_predicts_what_the_checkpoint_does(exports, cohort, fmt):
    _, paths = exports
    ref, ref_vec = _predict(paths["timm"], cohort)
    got, vec = _predict(paths[fmt], cohort)
    np.testing.assert_allclose(got["faceage"], ref["faceage"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got["risk"], ref["risk"], rtol=1e-4, atol=1e-4)
    assert vec is not None
    a = np.stack(vec.loc[cohort.frame["photo_id"]].to_list())
    b = np.stack(ref_vec.loc[cohort.frame["photo_id"]].to_list())
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_an_onnx_model_with_the_wrong_input_shape_is_refused(exports, cohort, tmp_path):
    folder, _ = exports
    spec = tmp_path / "wrong.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "wrong",
                "kind": "onnx",
                "input_size": 160,
                "checkpoint": str(folder / "net.onnx"),
                "outputs": OUTPUTS,
            }
        )
    )
    with pytest.raises(
        InputError, match=r"has shape \['n', 3, 112, 112\], the spec says nchw at 160x160"
    ):
        create_model(parse_model_spec(spec)).load()
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "wrong",
                "kind": "onnx",
                "layout": "nhwc",
                "checkpoint": str(folder / "net.onnx"),
                "outputs": OUTPUTS,
            }
        )
    )
    with pytest.raises(InputError, match="the spec says nhwc"):
        create_model(parse_model_spec(spec)).load()


class DarkIsNaN(torch.nn.Module):
    """Returns NaN for dark photos: log of (mean brightness - threshold)."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([torch.log(m + 0.3), m], dim=1)


def test_nan_outputs_are_quarantined_not_kept(cohort, tmp_path):
    torch.jit.script(DarkIsNaN()).save(str(tmp_path / "nan.pt"))
    spec = tmp_path / "nan.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "nan",
                "kind": "torchscript",
                "checkpoint": "nan.pt",
                "outputs": {"faceage": 0},
            }
        )
    )
    preds = create_model(parse_model_spec(spec)).predict(cohort)
    assert preds.quarantine is not None and len(preds.quarantine) > 0
    assert np.isfinite(preds.frame["value"]).all()
    assert len(preds.frame) + len(preds.quarantine) == len(cohort.frame)
    assert preds.quarantine["reason"].str.contains("non-finite faceage").all()


def test_a_file_that_is_not_torchscript_is_refused(tmp_path, cohort):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    spec = tmp_path / "junk.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "junk",
                "kind": "torchscript",
                "checkpoint": "junk.pt",
                "outputs": {"faceage": 0},
            }
        )
    )
    with pytest.raises(InputError, match="not a TorchScript archive"):
        create_model(parse_model_spec(spec)).load()


def test_an_out_of_memory_batch_is_retried_in_halves():
    from audit.models.inference import forward_halving

    calls = []

    def forward(x):
        calls.append(len(x))
        if len(x) > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.mean(dim=(1, 2, 3), keepdim=False)[:, None] * 2, x.flatten(1)[:, :4]

    x = torch.randn(37, 3, 8, 8)
    out, feats = forward_halving(forward, x)
    np.testing.assert_allclose(out[:, 0], (x.mean(dim=(1, 2, 3)) * 2).numpy(), rtol=1e-6)
    assert feats.shape == (37, 4) and calls[:3] == [37, 18, 9]  # 37 -> 18 + 19 -> ...
    assert sum(c for c in calls if c <= 8) == 37  # every image ran once, at a size that fit

    def always(x):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(MemoryError, match="single image"):
        forward_halving(always, torch.randn(4, 3, 8, 8))
    with pytest.raises(ValueError, match="other"):  # other errors are not swallowed
        forward_halving(lambda x: (_ for _ in ()).throw(ValueError("other")), x)


@pytest.mark.slow
def test_torch_compile_gives_the_same_predictions(exports, cohort, tmp_path):
    _, paths = exports
    spec = yaml.safe_load(paths["timm"].read_text())
    spec.update(name="compiled", compile=True, checkpoint=str(paths["timm"].parent / "net.pth"))
    compiled = tmp_path / "compiled.yaml"
    compiled.write_text(yaml.safe_dump(spec))
    ref, _ = _predict(paths["timm"], cohort)
    got, _ = _predict(compiled, cohort)
    np.testing.assert_allclose(got["faceage"], ref["faceage"], rtol=1e-4, atol=1e-3)


def test_decoding_on_the_device_gives_the_same_predictions(exports, tmp_path):
    """The nvJPEG path (JPEG bytes decoded as a batch by torchvision) on the CPU here: the
    same predictions as decoding in the workers, broken files still reported."""
    from audit.models.inference import run_batched

    _, paths = exports
    folder = write_cohort(tmp_path / "d", 120, seed=91, photos=True, defects=True)
    cohort = load_cohort(folder)
    files = [cohort.image_file(p) for p in cohort.frame["image_path"]]
    model = create_model(parse_model_spec(paths["timm"]))
    model.load("cpu")
    a = run_batched(model.forward, files, 112, "imagenet", device="cpu", decode="workers")
    b = run_batched(model.forward, files, 112, "imagenet", device="cpu", decode="device")
    assert (a.ok == b.ok).all() and (~a.ok).sum() >= 2  # truncated and empty files
    # identical pixels for 112-px JPEGs; resampled ones (the tiny defects) differ slightly
    np.testing.assert_allclose(b.outputs[b.ok], a.outputs[a.ok], rtol=1e-4, atol=1e-3)


def test_the_robustness_suite_agrees_across_the_three_formats(exports, cohort):
    """Perturbed passes go through every adapter's forward: the same network exported three
    ways (and NHWC) gives the same perturbed predictions, all four models in one decode."""
    from audit.robustness.perturbations import face_layout
    from audit.robustness.suite import run_suite

    _, paths = exports
    models = [
        create_model(parse_model_spec(paths[k]))
        for k in ("timm", "onnx", "onnx_nhwc", "torchscript")
    ]
    plan = [("jpeg", 3), ("rotation", 2), ("surgical_mask", 4)]
    out = run_suite(models, cohort, cohort.frame, plan, layout=face_layout("demo"), seed=0)
    frames = {
        name: r.frame.sort_values(["output", "perturbation", "severity", "photo_id"]).reset_index(
            drop=True
        )
        for name, r in out.items()
    }
    ref = frames["timm"]
    assert len(ref) == 40 * 4 * 2 and set(out["timm"].shared_with) == set(frames)
    for name in ("onnx", "onnx_nhwc", "torchscript"):
        np.testing.assert_allclose(frames[name]["value"], ref["value"], rtol=1e-4, atol=1e-3)
        assert frames[name][["photo_id", "perturbation", "severity"]].equals(
            ref[["photo_id", "perturbation", "severity"]]
        )
    clean = ref[ref.perturbation == "none"]["value"].to_numpy()
    masked = ref[ref.perturbation == "surgical_mask"]["value"].to_numpy()
    assert np.abs(masked - clean).max() > 1e-3  # the perturbation reached the models
