"""The saliency audit: known answers for each attribution method, the region template, the
sanity check, and the demo world's planted cues."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from audit.saliency import maps as sal
from audit.saliency.maps import REGIONS

SIZE = 112


def _target(module, name="m", output="faceage", net=None):
    def fn(x):
        head, _ = module(x)
        return head[:, 0]

    return sal.Target(
        model=name, output=output, fn=fn, size=SIZE, module=module, net=net, normalize=None
    )


# ---------------------------------------------------------------------------- regions


@pytest.mark.parametrize("layout", ["arcface", "aligned", "aligned_opencv", "dlib_chip", "demo"])
def test_region_template_puts_each_landmark_in_its_region(layout):
    from audit.robustness.perturbations import face_layout

    t = sal.region_template(layout, SIZE)
    L = face_layout(layout)
    at = lambda fx, fy: REGIONS[t[int(fy * SIZE), int(fx * SIZE)]]  # noqa: E731
    assert at(0.5 - L.eye_dx, L.eye_y) == "eyes" and at(0.5 + L.eye_dx, L.eye_y) == "eyes"
    assert at(0.5, L.mouth_y) == "mouth_chin"
    assert at(0.5, (L.eye_y + L.nose_y) / 2 + 0.02) == "nose"
    top = max(L.eye_y - 0.75 * (L.chin_y - L.eye_y), 0.0)  # a tight crop cuts the brow's top
    assert at(0.5, top + 0.06) == "forehead"
    assert at(0.5 + 0.85 * L.face_dx, (L.nose_y + L.mouth_y) / 2) == "cheeks"
    assert at(0.02, 0.98) == "background"  # a tight chip has hair in its top corners
    assert at(0.98, 0.02) == ("hair" if layout == "dlib_chip" else "background")
    assert set(np.unique(t)) == set(range(len(REGIONS)))  # every region is somewhere


def test_region_shares_sum_to_one_and_find_a_planted_region():
    t = sal.region_template("arcface", SIZE)
    maps = np.zeros((3, SIZE, SIZE))
    maps[0][t == REGIONS.index("nose")] = 1.0
    maps[1] = 1.0
    shares = sal.region_shares(maps, t)
    assert shares[0, REGIONS.index("nose")] == pytest.approx(1.0)
    np.testing.assert_allclose(shares[1], np.bincount(t.ravel(), minlength=7) / t.size)
    assert shares[2].sum() == 0  # an empty map has no shares, not NaN


# ---------------------------------------------------------------------------- methods


def test_occlusion_of_a_linear_model_is_exact():
    """For f(x) = sum(W * x), occluding window k with the mean colour m changes the output
    by exactly sum over k of W * (x - m); each pixel gets the mean over its windows."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(3, 32, 32, generator=gen)
    x = torch.rand(2, 3, 32, 32, generator=gen)

    class Linear(torch.nn.Module):
        def forward(self, x):
            return (x * w).sum(dim=(1, 2, 3)).unsqueeze(1), None

    t = sal.Target(
        model="lin", output="faceage", fn=lambda x: Linear()(x)[0][:, 0], size=32, module=None
    )
    got = sal.create_attribution("occlusion", window=8, stride=4)(t, x)
    expected = np.zeros((2, 32, 32))
    count = np.zeros((32, 32))
    starts = sal.occlusion_windows(32, 8, 4)
    assert starts == [0, 4, 8, 12, 16, 20, 24]
    for i in range(2):
        m = x[i].mean(dim=(1, 2), keepdim=True)
        for a in starts:
            for b in starts:
                d = abs(
                    float((w[:, a : a + 8, b : b + 8] * (x[i, :, a : a + 8, b : b + 8] - m)).sum())
                )
                expected[i, a : a + 8, b : b + 8] += d
                if i == 0:
                    count[a : a + 8, b : b + 8] += 1
    np.testing.assert_allclose(got, expected / count, rtol=1e-4, atol=1e-5)


def test_integrated_gradients_are_complete():
    """Sundararajan et al.'s completeness: the attributions sum to f(x) - f(baseline)."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 1),
    )

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x) * 10, None

    m = M().eval()
    x = torch.rand(3, 3, 24, 24)
    t = sal.Target(model="m", output="risk", fn=lambda x: m(x)[0][:, 0], size=24, module=m)
    attr = sal.create_attribution("integrated_gradients", steps=64, signed=True)(t, x)
    with torch.no_grad():
        gap = (m(x)[0][:, 0] - m(torch.zeros_like(x))[0][:, 0]).numpy()
    np.testing.assert_allclose(attr.sum(axis=(1, 2, 3)), gap, rtol=0.01, atol=1e-3)


class MouthNet(torch.nn.Module):
    """A timm-shaped CNN whose output reads only the mouth-and-chin region of the crop."""

    def __init__(self, layout="arcface"):
        super().__init__()
        torch.manual_seed(2)
        self.conv = torch.nn.Conv2d(3, 8, 5, padding=2)
        self.fc = torch.nn.Linear(8, 1)
        mask = sal.region_template(layout, SIZE) == REGIONS.index("mouth_chin")
        self.register_buffer("mask", torch.from_numpy(mask).float()[None, None])

    def forward_features(self, x):
        return torch.tanh(self.conv(x)) * self.mask

    def forward_head(self, f, pre_logits=False):
        pooled = f.sum(dim=(2, 3)) / self.mask.sum()
        return pooled if pre_logits else self.fc(pooled)

    def get_classifier(self):
        return self.fc


def Exported(net):  # noqa: N802 - (head, pre-logit features), as the timm adapter runs it
    from audit.models.timm_adapter import HeadAndFeatures

    return HeadAndFeatures(net)


@pytest.fixture(scope="module")
def mouth_models(tmp_path_factory):
    """The mouth model as a torch module, and exported to TorchScript and ONNX (run through
    faceage-audit's own adapters)."""
    from audit.models import create_model, parse_model_spec

    folder = tmp_path_factory.mktemp("mouth")
    module = Exported(MouthNet()).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(module, x).save(str(folder / "mouth.pt"))
        torch.onnx.export(
            module,
            (x,),
            folder / "mouth.onnx",
            input_names=["image"],
            output_names=["head", "features"],
            dynamic_axes={"image": {0: "n"}},
            dynamo=False,
        )
    models = {"torch": [_target(module, "mouth", net=module.net)]}
    for kind, file in (("torchscript", "mouth.pt"), ("onnx", "mouth.onnx")):
        spec = {
            "name": f"mouth-{kind}",
            "kind": kind,
            "checkpoint": file,
            "input_size": SIZE,
            "normalize": "none",
            "outputs": {"faceage": 0},
        }
        (folder / f"{kind}.yaml").write_text(yaml.safe_dump(spec))
        models[kind] = sal.model_targets(
            create_model(parse_model_spec(folder / f"{kind}.yaml")), "cpu"
        )
    return models


@pytest.mark.parametrize("fmt", ["torch", "torchscript", "onnx"])
def test_a_model_that_reads_only_the_mouth_shows_the_mouth_under_every_method(mouth_models, fmt):
    (target,) = mouth_models[fmt]
    x = torch.rand(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    template = sal.region_template("arcface", SIZE)
    ran = []
    for name in sal.list_attributions():
        if not sal.applicable(name, target):
            continue
        maps = sal.create_attribution(name, stride=8)(target, x)
        shares = sal.region_shares(maps, template).mean(axis=0)
        top = REGIONS[int(np.argmax(shares))]
        assert top == "mouth_chin", (name, dict(zip(REGIONS, shares.round(3))))
        # most of the mass (occlusion's 16-pixel window spills over the region's edge)
        assert shares[REGIONS.index("mouth_chin")] > 0.5, name
        ran.append(name)
    expected = {
        "torch": {"occlusion", "gradient_x_input", "integrated_gradients", "grad_cam"},
        "torchscript": {"occlusion", "gradient_x_input", "integrated_gradients"},
        "onnx": {"occlusion"},
    }[fmt]
    assert set(ran) == expected


def test_attention_rollout_of_a_vision_transformer():
    """Rollout runs on a timm ViT (the FAHR-Face family): one finite, non-negative map per
    photo that varies over the patch grid, and the model is left as it was found."""
    import timm

    net = timm.create_model("test_vit", img_size=SIZE, num_classes=1, pretrained=False).eval()
    module = Exported(net).eval()
    t = _target(module, "vit", net=net)
    assert t.kind == "vit" and sal.applicable("attention_rollout", t)
    assert not sal.applicable("grad_cam", t)
    x = torch.rand(2, 3, SIZE, SIZE)
    before = [b.attn.fused_attn for b in net.blocks]
    with torch.no_grad():
        y = t.fn(x)
    maps = sal.create_attribution("attention_rollout")(t, x)
    assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all() and (maps >= 0).all()
    assert maps[0].std() > 0 and not np.allclose(maps[0], maps[1])
    assert [b.attn.fused_attn for b in net.blocks] == before
    with torch.no_grad():
        assert torch.allclose(t.fn(x), y, atol=1e-5)


def test_randomised_weights_change_the_maps_but_not_the_template():
    """Adebayo et al.'s model-randomisation check on the demo FaceAge model: redrawn weights
    change its outputs and its gradient maps (low Spearman), as a faithful method must."""
    from audit.demo.faces import example_face
    from audit.models import create_model

    (t,) = sal.model_targets(create_model("demo:faceage"), "cpu")
    face = torch.from_numpy(np.array(example_face())).permute(2, 0, 1).float()[None] / 255
    x = torch.cat([face, face.flip(-1)])
    r = sal.randomized_target(t, seed=0)
    with torch.no_grad():
        assert not torch.allclose(t.fn(x), r.fn(x))
    for name in ("gradient_x_input", "integrated_gradients"):
        fn = sal.create_attribution(name)
        trained, random = fn(t, x).mean(axis=0), fn(r, x).mean(axis=0)
        assert sal.spearman_maps(trained, random) < 0.5, name
        assert sal.spearman_maps(trained, trained) == pytest.approx(1.0)


def test_group_sample_fills_every_group_and_keeps_one_photo_per_subject():
    rng = np.random.default_rng(0)
    subjects = pd.DataFrame(
        {
            "photo_id": [f"p{i}" for i in range(300)],
            "sex": rng.choice(["f", "m"], 300),
            "race": rng.choice(["A", "B", "C"], 300, p=[0.8, 0.15, 0.05]),
        }
    )
    s = sal.group_sample(subjects, 30, ["sex", "race"], np.random.default_rng(1))
    assert s["photo_id"].is_unique and len(s) >= 30
    for attribute in ("sex", "race"):
        for name, size in subjects[attribute].value_counts().items():
            assert (s[attribute] == name).sum() >= min(30, size), (attribute, name)
    assert len(s) < 150  # topping up, not 30 per group of every attribute on top


# ---------------------------------------------------------------------------- the demo world


@pytest.fixture(scope="module")
def demo_maps(tmp_path_factory):
    """The two demo models' maps on 48 rendered faces (one per subject)."""
    from audit.data.cohort import load_cohort
    from audit.demo.world import write_cohort
    from audit.models import create_model
    from audit.models.inference import decode_image

    cohort = load_cohort(
        write_cohort(tmp_path_factory.mktemp("demo") / "c", 48, seed=93, photos=True)
    )
    x = torch.stack(
        [
            torch.from_numpy(np.array(decode_image(cohort.image_file(p), SIZE)))
            .permute(2, 0, 1)
            .float()
            / 255
            for p in cohort.frame["image_path"]
        ]
    )
    out = {}
    for which in ("faceage", "survival"):
        (t,) = sal.model_targets(create_model(f"demo:{which}"), "cpu")
        for name, kw in (
            ("occlusion", {"stride": 16}),
            ("gradient_x_input", {}),
            ("integrated_gradients", {"steps": 8}),
        ):
            out[(which, name)] = sal.normalise(sal.create_attribution(name, **kw)(t, x))
    return out, cohort.frame["subject_id"].to_numpy()


AGE_CUES = ("forehead", "eyes", "cheeks", "mouth_chin", "hair")  # wrinkles, bags, grey hair, jowls


@pytest.mark.slow  # the demo models' maps (make test-all); each method: the mouth model above
def test_demo_faceage_looks_at_the_planted_age_cues(demo_maps):
    maps, _ = demo_maps
    template = sal.region_template("demo", SIZE)
    area = np.bincount(template.ravel(), minlength=len(REGIONS)) / template.size
    for method in ("occlusion", "gradient_x_input", "integrated_gradients"):
        shares = sal.region_shares(maps[("faceage", method)], template).mean(axis=0)
        cue = sum(shares[REGIONS.index(r)] for r in AGE_CUES)
        assert cue > 0.6, (method, dict(zip(REGIONS, shares.round(3))))
        # the background is two thirds of the pixels but gets far less than its share
        assert shares[REGIONS.index("background")] < 0.5 * area[REGIONS.index("background")]


@pytest.mark.slow  # the demo models' maps (make test-all); each method: the mouth model above
def test_demo_survival_looks_more_at_frailty_cues_than_faceage(demo_maps):
    """Illness thins the cheeks and pales the skin; age greys the hair and lines the
    forehead. The survival model's map leans to the cheeks and away from forehead and hair
    more than the FaceAge model's (paired subject bootstrap, 95%), and the comparison
    between the two cohort maps says they differ."""
    maps, subjects = demo_maps
    template = sal.region_template("demo", SIZE)
    rng = np.random.default_rng(0)
    for method in ("occlusion", "gradient_x_input", "integrated_gradients"):
        contrast = {}
        for which in ("faceage", "survival"):
            s = sal.region_shares(maps[(which, method)], template)
            contrast[which] = (
                s[:, REGIONS.index("cheeks")]
                - s[:, REGIONS.index("forehead")]
                - s[:, REGIONS.index("hair")]
            )
        diff = contrast["survival"] - contrast["faceage"]
        boot = sal.bootstrap_weights(len(diff), 500, rng) @ diff
        assert np.quantile(boot, 0.025) > 0, (method, diff.mean())
        a = sal.MapSet(
            "demo-faceage",
            "faceage",
            method,
            maps[("faceage", method)],
            np.arange(len(subjects)),
            subjects,
        )
        b = sal.MapSet(
            "demo-survival",
            "risk",
            method,
            maps[("survival", method)],
            np.arange(len(subjects)),
            subjects,
        )
        rows = {
            r["check_name"]: r
            for r in sal.compare(a, b, template, n_boot=100, ci_level=0.95, fraction=0.2, rng=rng)
        }
        l1 = rows["compare_region_l1"]
        assert l1["ci_low"] > 0 and l1["ci_low"] <= l1["value"] <= l1["ci_high"]
        rho = rows["compare_spearman"]
        assert rho["ci_low"] <= rho["value"] <= rho["ci_high"] and rho["ci_high"] <= 1


# ---------------------------------------------------------------------------- the stage


@pytest.mark.slow  # a whole audit with saliency (make test-all)
def test_saliency_stage_in_the_audit_flow(prefect_harness, tmp_path):
    """`run --saliency` on rendered faces with both demo models: region shares, cohort maps
    and checks in DuckDB, never a map of fewer than min_faces photos; the report section and
    its PNG artifacts, re-rendered byte-identical from DuckDB alone."""
    from audit.cli import main
    from audit.data.hashing import sha256_file
    from audit.demo.world import write_cohort
    from audit.pipeline.store import Store

    folder = write_cohort(tmp_path / "c", 50, seed=94, photos=True)
    config = tmp_path / "c.toml"
    config.write_text(
        "[robustness]\nenabled = false\n[accuracy]\nn_boot = 20\n"
        "[survival]\nn_boot = 10\n[fairness]\nn_boot = 20\n"
        "[saliency]\nsample_per_group = 20\nmin_faces = 15\nstride = 16\n"
        "ig_steps = 4\nn_boot = 30\nsanity_photos = 4\n"
        'methods = ["occlusion", "gradient_x_input", "grad_cam"]\n'
    )
    out = tmp_path / "out"
    args = [
        "--model",
        "demo:faceage",
        "--model",
        "demo:survival",
        "--out",
        str(out),
        "--config",
        str(config),
    ]
    # (without --saliency the stage says it is off: tests/test_flow.py, the end-to-end run)
    assert main(["run", "--cohort", str(folder), "--saliency", *args]) in (0, 1)
    store = Store(out / "audit.duckdb")
    (on,) = store.runs()["run_id"].tolist()
    shares = store.table("saliency", on)
    assert set(shares["method"]) == {"occlusion", "gradient_x_input", "grad_cam"}
    assert set(shares["model"]) == {"demo-faceage", "demo-survival"}
    assert (shares["n"] >= 15).all() and "all" in set(shares["attribute"])
    sums = shares.groupby(["model", "method", "attribute", "group_name"])["share"].sum()
    np.testing.assert_allclose(sums, 1.0, atol=1e-6)
    assert (
        (shares["ci_low"] <= shares["share"] + 1e-12)
        & (shares["share"] <= shares["ci_high"] + 1e-12)
    ).all()
    maps = store.table("saliency_maps", on)
    cohort_maps = maps[maps["model"].notna()]
    assert (cohort_maps["n"] >= 15).all()  # never one person's map
    assert {"mean_face", "region_template"} <= set(maps["method"])
    checks = store.table("saliency_checks", on)
    assert {
        "compare_spearman",
        "compare_top_overlap",
        "compare_region_l1",
        "randomized_weights_spearman",
    } <= set(checks["check_name"])
    run_dir = out / "runs" / on
    page = (run_dir / "index.html").read_text()
    assert 'id="saliency"' in page and "Sanity check: randomised weights" in page
    pngs = store.table("artifacts", on)
    pngs = pngs[pngs["kind"] == "saliency_png"]
    assert len(pngs) >= 4
    elsewhere = tmp_path / "elsewhere"
    assert main(["report", "--db", str(out / "audit.duckdb"), "--out", str(elsewhere)]) == 0
    for a in pngs.itertuples():
        assert sha256_file(elsewhere / a.path) == a.sha256 == sha256_file(out / a.path)
    assert "Individual maps of cohort photos" not in page
    # asked for, on site: a few photos with their own maps, recomputed from the checkpoints
    faces = tmp_path / "faces"
    assert (
        main(["report", "--db", str(out / "audit.duckdb"), "--out", str(faces), "--show-faces"])
        == 0
    )
    shown = (faces / "runs" / on / "index.html").read_text()
    assert shown.count("Individual maps of cohort photos") == 2  # one per model and output
    assert "cannot load" not in shown and "cannot be read" not in shown


@pytest.mark.slow  # the demo models' maps (make test-all); each method: the mouth model above
def test_region_rows_rank_by_enrichment_not_size(demo_maps):
    """Enrichment is a region's share over its share of the pixels, its CI the share's CI
    scaled alike. By raw share the largest regions top any map; by enrichment the demo
    FaceAge model's top region is one of its planted age cues, and the background (two thirds
    of the pixels) falls to the bottom half."""
    maps, subjects = demo_maps
    template = sal.region_template("demo", SIZE)
    area = sal.region_areas(template)
    assert area.sum() == pytest.approx(1.0) and area[REGIONS.index("background")] > 0.5
    ms = sal.MapSet(
        "demo-faceage",
        "faceage",
        "occlusion",
        maps[("faceage", "occlusion")],
        np.arange(len(subjects)),
        subjects,
    )
    rows, _ = sal.cohort_rows(
        ms,
        pd.DataFrame(index=range(len(subjects))),
        template,
        min_faces=5,
        n_boot=200,
        ci_level=0.95,
        rng=np.random.default_rng(1),
    )
    frame = pd.DataFrame(rows).set_index("region")
    for region, r in frame.iterrows():
        a = area[REGIONS.index(region)]
        assert r["area"] == pytest.approx(a)
        assert r["enrichment"] == pytest.approx(r["share"] / a)
        assert r["enrichment_low"] == pytest.approx(r["ci_low"] / a)
        assert r["enrichment_high"] == pytest.approx(r["ci_high"] / a)
    ranked = frame.sort_values("enrichment", ascending=False).index.tolist()
    assert ranked[0] in AGE_CUES
    assert ranked.index("background") >= len(REGIONS) // 2
