"""Output heads: a softmax age classifier's expected value and spread, logits, several named
heads, through every model format and through inference, robustness, saliency and the
prediction cache."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from audit.data.cohort import load_cohort
from audit.demo.world import write_cohort
from audit.errors import InputError
from audit.models import create_model, parse_model_spec
from audit.models.heads import Head, parse_bins, parse_heads

BINS = [20.0, 30.0, 40.0, 50.0, 60.0]


def _hand(probabilities, bins):
    """Expected value and SD of each row, by explicit sums."""
    means, sds = [], []
    for row in probabilities:
        total = sum(row)
        mean = sum(p * b for p, b in zip(row, bins)) / total
        var = sum(p * (b - mean) ** 2 for p, b in zip(row, bins)) / total
        means.append(mean)
        sds.append(math.sqrt(var))
    return np.array(means), np.array(sds)


def _softmax(row):
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def test_expected_value_of_a_probability_head_equals_a_hand_computation():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=7)
    head = Head("faceage", "expectation", bins=tuple(BINS), scale=1.0)
    value, spread = head.reduce(p)
    mean, sd = _hand(p.tolist(), BINS)
    np.testing.assert_allclose(value, mean, rtol=1e-12)
    np.testing.assert_allclose(spread, sd, rtol=1e-12)
    # a one-hot row is its bin, with no spread; the same in torch (float32)
    v, s = head.reduce(np.eye(5))
    np.testing.assert_allclose(v, BINS) and np.testing.assert_allclose(s, 0, atol=1e-12)
    tv, ts = head.reduce(torch.tensor(p, dtype=torch.float32))
    np.testing.assert_allclose(tv.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(ts.numpy(), sd, rtol=1e-4)
    # scale and offset move the value; the spread scales by |scale|
    v2, s2 = Head("risk", "expectation", bins=tuple(BINS), scale=-0.5, offset=3).reduce(p)
    np.testing.assert_allclose(v2, mean * -0.5 + 3) and np.testing.assert_allclose(s2, sd * 0.5)


def test_a_logits_head_is_softmax_then_expectation():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(6, 5)) + 400  # large values: a stable softmax is needed
    value, spread = Head("faceage", "logits", bins=tuple(BINS)).reduce(logits)
    mean, sd = _hand([_softmax(r) for r in logits.tolist()], BINS)
    np.testing.assert_allclose(value, mean, rtol=1e-10)
    np.testing.assert_allclose(spread, sd, rtol=1e-10)
    # columns after an offset: a head reading 5 of 7 columns
    wide = np.concatenate([np.zeros((6, 2)), logits], axis=1)
    v, _ = Head("faceage", "logits", index=2, bins=tuple(BINS)).reduce(wide)
    np.testing.assert_allclose(v, mean, rtol=1e-10)


def test_head_specs_are_parsed_and_mistakes_named():
    assert parse_bins({"from": 0, "to": 80, "step": 1}, "x") == tuple(float(v) for v in range(81))
    assert parse_bins([0.25, 1, 2], "x") == (0.25, 1.0, 2.0)
    heads = parse_heads(
        "m",
        {"faceage": {"head": "expectation", "bins": BINS, "output": "p"}, "risk": 2},
        ("faceage", "risk"),
    )
    assert heads[0].width == 5 and heads[0].source == "p" and heads[1] == Head("risk", index=2)
    for outputs, words in [
        ({"faceage": {"head": "expectation"}}, "needs `bins`"),
        ({"faceage": {"head": "softmax", "bins": BINS}}, "unknown head"),
        ({"faceage": {"head": "scalar", "bins": BINS}}, "`bins` is for"),
        ({"faceage": {"index": 0, "colums": 3}}, "unknown key"),
        ({"faceage": {"head": "logits", "bins": {"from": 5, "to": 1}}}, "from <= to"),
    ]:
        with pytest.raises(InputError, match=words):
            parse_heads("m", outputs, ("faceage", "risk"))
    # logits declared as probabilities: refused, with the fix
    with pytest.raises(InputError, match="declare `head: logits`"):
        Head("faceage", "expectation", bins=tuple(BINS)).reduce(np.array([[3.0, -1, 0, 2, 1]]))


# ---------------------------------------------------------------- through every format


class Classifier(torch.nn.Module):
    """A timm network whose head gives age logits over BINS; exported with the softmax
    in the graph, and a second output (a risk score) from the features."""

    def __init__(self, net, as_dict=False):
        super().__init__()
        self.net, self.as_dict = net, as_dict

    def forward(self, x):
        pre = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        probs = torch.softmax(self.net.get_classifier()(pre), dim=1)
        risk = pre.mean(dim=1, keepdim=True)
        if self.as_dict:
            return {"probabilities": probs, "risk": risk, "features": pre}
        return probs, risk, pre


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    import timm

    folder = tmp_path_factory.mktemp("heads")
    torch.manual_seed(5)
    net = timm.create_model("test_resnet", num_classes=5, pretrained=False).eval()
    torch.save(net.state_dict(), folder / "net.pth")
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Classifier(net).eval(),
            (x,),
            folder / "net.onnx",
            input_names=["image"],
            output_names=["probabilities", "risk", "features"],
            dynamic_axes={"image": {0: "n"}},
            dynamo=False,
        )
        torch.jit.trace(Classifier(net, as_dict=True).eval(), x, strict=False).save(
            str(folder / "net.pt")
        )
    two_heads = {  # softmax in the graph, and a second named output
        "embeddings": "features",
        "outputs": {
            "faceage": {"head": "expectation", "bins": BINS, "output": "probabilities"},
            "risk": {"output": "risk"},
        },
    }
    specs = {
        "timm": {
            "kind": "timm",
            "arch": "test_resnet",
            "arch_kwargs": {"num_classes": 5},
            "checkpoint": "net.pth",
            "outputs": {"faceage": {"head": "logits", "bins": {"from": 20, "to": 60, "step": 10}}},
        },
        "onnx": {"kind": "onnx", "checkpoint": "net.onnx", **two_heads},
        "torchscript": {"kind": "torchscript", "checkpoint": "net.pt", **two_heads},
    }
    paths = {}
    for name, spec in specs.items():
        spec.update(name=name, input_size=64, normalize="imagenet")
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(spec))
    cohort = load_cohort(write_cohort(folder / "c", 24, seed=77, photos=True))
    return paths, cohort, net


def _wide(preds, column="value"):
    return preds.frame.pivot(index="photo_id", columns="output", values=column).sort_index()


def test_probability_heads_give_the_hand_computed_expectation_in_every_format(formats):
    from audit.models.inference import run_batched

    paths, cohort, net = formats
    timm_model = create_model(parse_model_spec(paths["timm"]))
    got = {name: create_model(parse_model_spec(p)).predict(cohort) for name, p in paths.items()}
    # the hand computation, from the network's own logits on the same decoded photos
    timm_model.load()
    order = cohort.frame["photo_id"].to_numpy()
    files = [cohort.image_file(p) for p in cohort.frame["image_path"]]
    raw = run_batched(timm_model.forward, files, 64, "imagenet").outputs
    mean, sd = _hand([_softmax(r) for r in raw.tolist()], BINS)
    hand = pd.DataFrame({"value": mean, "spread": sd}, index=order).sort_index()
    for name, preds in got.items():
        values, spreads = _wide(preds), _wide(preds, "spread")
        np.testing.assert_allclose(values["faceage"], hand["value"], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(spreads["faceage"], hand["spread"], rtol=1e-4, err_msg=name)
        assert (values["faceage"].between(20, 60)).all()
    # a second named head in one model: the ONNX graph's and the TorchScript dict's risk agree
    np.testing.assert_allclose(
        _wide(got["onnx"])["risk"], _wide(got["torchscript"])["risk"], rtol=1e-5, atol=1e-6
    )
    assert _wide(got["onnx"], "spread")["risk"].isna().all()  # a scalar head has no spread
    # a timm model has one head: naming another is refused
    spec = yaml.safe_load(paths["timm"].read_text())
    spec["outputs"]["faceage"]["output"] = "probabilities"
    bad = paths["timm"].with_name("bad.yaml")
    bad.write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError, match="one head"):
        create_model(parse_model_spec(bad))


def test_spreads_survive_the_prediction_cache(formats):
    paths, cohort, _ = formats
    model = create_model(parse_model_spec(paths["onnx"]))
    first = model.predict(cohort)
    again = model.predict(cohort, cached=(first.cache_values, first.cache_vectors))
    assert again.n_computed == 0
    cols = ["photo_id", "output", "value", "spread"]
    a = first.frame[cols].sort_values(["photo_id", "output"]).reset_index(drop=True)
    b = again.frame[cols].sort_values(["photo_id", "output"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_robustness_and_saliency_read_the_expected_value(formats):
    from audit.models.inference import to_unit
    from audit.robustness.perturbations import face_layout
    from audit.robustness.suite import run_suite
    from audit.saliency.maps import create_attribution, model_targets

    paths, cohort, _ = formats
    model = create_model(parse_model_spec(paths["timm"]))
    clean = model.predict(cohort).frame.set_index("photo_id")
    out = run_suite(
        [model],
        cohort,
        cohort.frame,
        [("brightness", 3)],
        layout=face_layout("demo"),
        seed=0,
    )[model.name].frame
    none = out[out.perturbation == "none"].set_index("photo_id")
    np.testing.assert_allclose(none["value"].sort_index(), clean["value"].sort_index(), rtol=1e-5)
    np.testing.assert_allclose(none["spread"].sort_index(), clean["spread"].sort_index(), rtol=1e-4)
    bright = out[out.perturbation == "brightness"]
    assert bright["spread"].notna().all() and bright["value"].between(20, 60).all()

    (target,) = model_targets(model, "cpu")
    files = [cohort.image_file(p) for p in cohort.frame["image_path"][:4]]
    from audit.models.inference import decode_image

    x = to_unit(torch.from_numpy(np.stack([decode_image(f, 64) for f in files])))
    with torch.no_grad():
        y = target.fn(x).numpy()
    ids = cohort.frame["photo_id"][:4]
    np.testing.assert_allclose(y, clean.loc[ids, "value"], rtol=1e-4)
    maps = create_attribution("gradient_x_input")(target, x)
    assert maps.shape == (4, 64, 64) and np.abs(maps).sum() > 0
