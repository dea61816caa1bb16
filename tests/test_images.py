"""Rendered faces, the timm adapter's checkpoint handling, and batched inference."""

from __future__ import annotations

import hashlib
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from audit.data.cohort import load_cohort
from audit.demo.world import WorldParams, write_cohort
from audit.errors import InputError
from audit.models import create_model, parse_model_spec
from audit.stats.cox import fit_cox
from audit.survival.analysis import design_matrix


def _digest_tree(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_renderer_is_deterministic_for_a_seed(tmp_path):
    a = write_cohort(tmp_path / "a", 40, seed=9, photos=True, photos_per_subject=2)
    b = write_cohort(tmp_path / "b", 40, seed=9, photos=True, photos_per_subject=2)
    c = write_cohort(tmp_path / "c", 40, seed=10, photos=True)
    assert _digest_tree(a) == _digest_tree(b)
    assert _digest_tree(a / "images") != _digest_tree(c / "images")


def test_rendered_cohort_loads_with_longitudinal_photos(tmp_path):
    folder = write_cohort(tmp_path / "w", 60, seed=2, photos=True, photos_per_subject=3)
    c = load_cohort(folder)
    assert c.quarantine.empty and c.has_images and len(c.image_sha256) == len(c.frame)
    assert c.frame["subject_id"].nunique() == 60 and len(c.frame) > 60
    first = c.subjects()
    assert len(first) == 60 and first["photo_id"].str.fullmatch(r"P\d{6}").all()
    later = c.frame[c.frame["photo_id"].str.contains("-")]
    baseline_age = first.set_index("subject_id")["age"]
    assert (later["age"].to_numpy() > baseline_age.loc[later["subject_id"]].to_numpy()).all()
    assert (
        later["time"].to_numpy()
        < first.set_index("subject_id")["time"].loc[later["subject_id"]].to_numpy()
    ).all()  # follow-up counted from each photo
    from PIL import Image

    with Image.open(c.image_file(c.frame["image_path"].iloc[0])) as im:
        assert im.size == (112, 112) and im.mode == "RGB" and im.format == "JPEG"


def test_planted_biological_age_hr_is_recovered_from_a_rendered_cohort(tmp_path):
    p = WorldParams.make("cancer")
    folder = write_cohort(tmp_path / "w", 2000, seed=31, params=p, photos=True)
    c = load_cohort(folder)
    truth = pd.read_csv(folder / "truth.csv")
    df = c.subjects().merge(truth, on=["photo_id", "subject_id"])
    df["bio_decade"] = (df["biological_age"] - 62) / 10
    df["health_c"] = df["health"] - p.health_mean
    terms = design_matrix(df, ["bio_decade", "health_c"], {"cancer_type": "thoracic"})
    cph = fit_cox(df, terms).require().fitter
    s = cph.summary
    assert (
        s.at["bio_decade", "coef lower 95%"]
        < p.beta_bio_per_decade
        < s.at["bio_decade", "coef upper 95%"]
    )
    assert s.at["health_c", "coef lower 95%"] < p.beta_health < s.at["health_c", "coef upper 95%"]


def test_cancer_patients_look_older_than_the_healthy():
    from audit.demo.world import simulate

    cancer = simulate(4000, 1, WorldParams.make("cancer"))
    healthy = simulate(4000, 1, WorldParams.make("healthy"))
    assert (cancer.biological_age - cancer.age).mean() == pytest.approx(5.0, abs=0.3)
    assert abs((healthy.biological_age - healthy.age).mean()) < 0.3
    assert "cancer_type" not in healthy


def test_shifts_and_underserved_change_what_they_say():
    from audit.demo.world import simulate

    base = WorldParams.make("cancer")
    assert WorldParams.make("cancer", shifts=["dark"]).light < base.light
    assert WorldParams.make("cancer", shifts=["jpeg"]).jpeg_quality[1] < base.jpeg_quality[0]
    older = simulate(3000, 2, WorldParams.make("cancer", shifts=["older"]))
    assert older.age.mean() > simulate(3000, 2, base).age.mean() + 7
    rare = simulate(
        5000, 3, WorldParams.make("healthy", underserved="Asian", underserved_share=0.01)
    )
    assert (rare.race == "Asian").mean() < 0.02
    with pytest.raises(ValueError, match="unknown shift"):
        WorldParams.make("cancer", shifts=["sideways"])


# -- the timm adapter -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=2, pretrained=False).eval()


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    return load_cohort(write_cohort(tmp_path_factory.mktemp("c") / "c", 24, seed=4, photos=True))


def _spec(tmp_path, checkpoint, **extra):
    lines = {
        "name": "tiny",
        "kind": "timm",
        "arch": "test_resnet",
        "arch_kwargs": {"num_classes": 2},
        "checkpoint": str(checkpoint),
        "state_dict_key": "model_state_dict",
        "input_size": 112,
        "normalize": "imagenet",
        "outputs": {"faceage": {"index": 0, "scale": 10.0, "offset": 50.0}, "risk": 1},
    }
    lines.update(extra)
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(lines))
    return path


def test_fahr_face_checkpoint_layout_gives_the_saved_models_outputs(
    tmp_path, tiny_model, small_cohort
):
    from audit.models.inference import decode_image, normalize_batch

    ckpt = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model_state_dict": tiny_model.state_dict()}, ckpt)
    model = create_model(parse_model_spec(_spec(tmp_path, ckpt.name)))  # relative to the spec
    preds = model.predict(small_cohort)
    assert len(preds.frame) == 2 * len(small_cohort.frame)
    paths = [small_cohort.image_file(p) for p in small_cohort.frame["image_path"]]
    x = torch.from_numpy(np.stack([decode_image(p, 112) for p in paths])).permute(0, 3, 1, 2)
    with torch.inference_mode():
        ref = tiny_model(normalize_batch(x.float() / 255, "imagenet")).numpy()
    got = preds.frame.pivot(index="photo_id", columns="output", values="value")
    got = got.loc[small_cohort.frame["photo_id"]]
    np.testing.assert_allclose(got["faceage"], ref[:, 0] * 10 + 50, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got["risk"], ref[:, 1], rtol=1e-5, atol=1e-5)
    vectors = np.stack(preds.embeddings["vector"].to_list())
    assert vectors.shape == (len(paths), tiny_model.num_features) and np.isfinite(vectors).all()
    assert model.identity()["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_safetensors_checkpoint_loads(tmp_path, tiny_model, small_cohort):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    spec = _spec(tmp_path, path, state_dict_key=None)
    preds = create_model(parse_model_spec(spec)).predict(small_cohort)
    assert np.isfinite(preds.frame["value"]).all()


class _Hostile:
    def __reduce__(self):
        return (os.system, ("touch /tmp/faceage-audit-pwned",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickled_code_payload_is_refused(tmp_path, tiny_model, writer):
    from audit.models.timm_adapter import load_state_dict

    path = tmp_path / "evil.pth"
    payload = {"model_state_dict": tiny_model.state_dict(), "x": _Hostile()}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    with pytest.raises(InputError, match="refused"):
        load_state_dict(path, "model_state_dict")
    assert not os.path.exists("/tmp/faceage-audit-pwned")


def test_a_checkpoint_that_does_not_fit_names_its_keys(tmp_path, tiny_model, small_cohort):
    state = dict(tiny_model.state_dict())
    state.pop("fc.weight")
    state["extra.weight"] = torch.zeros(3)
    state["fc.bias"] = torch.zeros(5)
    ckpt = tmp_path / "bad.pth"
    torch.save({"model_state_dict": state}, ckpt)
    model = create_model(parse_model_spec(_spec(tmp_path, ckpt)))
    with pytest.raises(InputError) as err:
        model.predict(small_cohort)
    msg = str(err.value)
    assert "missing keys: fc.weight" in msg and "unexpected keys: extra.weight" in msg
    assert "fc.bias (5,) vs (2,)" in msg


def test_a_fine_tuned_vit_checkpoint_fits_with_the_renames_its_error_suggests(
    tmp_path, small_cohort
):
    """A FAHR-Face style fine-tune: a 112-px ViT saved as ``backbone.*`` and ``regressor.*``,
    with the MAE decoder still in the checkpoint. The error names the renames; with them the
    predictions are the network's own."""
    import json
    import re

    import timm

    torch.manual_seed(1)
    net = timm.create_model(
        "vit_tiny_patch16_224", img_size=112, num_classes=1, global_pool="avg", pretrained=False
    ).eval()
    state = {
        ("regressor." + k[5:] if k.startswith("head.") else "backbone." + k): v
        for k, v in net.state_dict().items()
    }
    state.update(
        {
            "decoder_embed.weight": torch.zeros(64, 192),
            "mask_token": torch.zeros(1, 1, 192),
            "decoder_blocks.0.norm1.weight": torch.ones(64),
        }
    )
    ckpt = tmp_path / "fahr.pth"
    torch.save({"model_state_dict": state}, ckpt)
    base = {
        "arch": "vit_tiny_patch16_224",
        "arch_kwargs": {"img_size": 112, "num_classes": 1, "global_pool": "avg"},
        "outputs": {"faceage": 0},
    }
    with pytest.raises(InputError) as err:
        create_model(parse_model_spec(_spec(tmp_path, ckpt, **base))).load("cpu")
    renames = json.loads(re.search(r"rename_keys: (\{.*\})$", str(err.value)).group(1))
    assert renames == {
        "backbone.": "",
        "regressor.": "head.",
        "decoder_blocks.": None,
        "decoder_embed.": None,
        "mask_token": None,
    }

    model = create_model(parse_model_spec(_spec(tmp_path, ckpt, rename_keys=renames, **base)))
    preds = model.predict(small_cohort).frame.set_index("photo_id")["value"]
    paths = [small_cohort.image_file(p) for p in small_cohort.frame["image_path"]]
    from audit.models.inference import decode_image, normalize_batch

    x = torch.from_numpy(np.stack([decode_image(p, 112) for p in paths])).permute(0, 3, 1, 2)
    with torch.inference_mode():
        ref = net(normalize_batch(x.float() / 255, "imagenet")).numpy()[:, 0]
    np.testing.assert_allclose(preds.loc[small_cohort.frame["photo_id"]], ref, rtol=1e-4, atol=1e-4)
    # the renames are part of what decides a prediction: another spelling, another cache key
    other = create_model(
        parse_model_spec(
            _spec(
                tmp_path,
                ckpt,
                rename_keys={
                    "regressor.": "head.",
                    "backbone.": "",
                    "decoder_": None,
                    "mask_token": None,
                },
                **base,
            )
        )
    )
    assert other.cache_key(small_cohort) != model.cache_key(small_cohort)

    # the likeliest slip with a FAHR-Face checkpoint: the ViT built at timm's default 224 px
    at_224 = dict(base, arch_kwargs={"num_classes": 1, "global_pool": "avg"})
    with pytest.raises(
        InputError,
        match="7 x 7 patches: it was trained on 112-px input; set arch_kwargs img_size: 112",
    ):
        create_model(parse_model_spec(_spec(tmp_path, ckpt, rename_keys=renames, **at_224))).load(
            "cpu"
        )

    with pytest.raises(InputError, match="rename_keys 'encoder.': no checkpoint key starts"):
        create_model(
            parse_model_spec(_spec(tmp_path, ckpt, rename_keys={"encoder.": ""}, **base))
        ).load("cpu")


def test_wrong_key_and_wrong_digest_are_input_errors(tmp_path, tiny_model, small_cohort):
    ckpt = tmp_path / "ok.pth"
    torch.save({"model_state_dict": tiny_model.state_dict()}, ckpt)
    with pytest.raises(InputError, match="no `state_dict` in the checkpoint"):
        create_model(parse_model_spec(_spec(tmp_path, ckpt, state_dict_key="state_dict"))).load()
    with pytest.raises(InputError, match="does not match"):
        create_model(parse_model_spec(_spec(tmp_path, ckpt, sha256="0" * 64))).load()


def test_undecodable_photos_are_quarantined_and_the_rest_predicted(tmp_path, tiny_model):
    folder = write_cohort(tmp_path / "d", 300, seed=8, photos=True, defects=True)
    cohort = load_cohort(folder)
    ckpt = tmp_path / "ok.pth"
    torch.save({"model_state_dict": tiny_model.state_dict()}, ckpt)
    preds = create_model(parse_model_spec(_spec(tmp_path, ckpt))).predict(cohort)
    defects = pd.read_csv(folder / "defects.csv")
    broken = set(defects.loc[defects.defect.isin(["truncated", "empty"]), "photo_id"])
    q = preds.quarantine
    assert set(q["photo_id"]) == broken & set(cohort.frame["photo_id"])
    assert (q["stage"] == "inference").all() and (q["column_name"] == "image_path").all()
    predicted = set(preds.frame["photo_id"])
    assert predicted == set(cohort.frame["photo_id"]) - broken


def test_a_head_of_another_size_says_which_num_classes_fits(tmp_path, small_cohort):
    """A one-output regression checkpoint given as ``timm:ARCH:CHECKPOINT`` meets timm's
    1000-class head: the error names both sizes and the ``arch_kwargs`` that fit, before any
    run starts or any photo is validated; a spec with them loads."""
    import timm
    from safetensors.torch import save_file

    import audit

    net = timm.create_model("test_resnet", pretrained=False, num_classes=1)
    ckpt = tmp_path / "age.safetensors"
    save_file(net.state_dict(), str(ckpt))
    with pytest.raises(InputError) as err:
        create_model(parse_model_spec(f"timm:test_resnet:{ckpt}")).load("cpu")
    said = str(err.value)
    assert "head (fc) has 1 output(s)" in said and "built with 1000" in said
    assert "set arch_kwargs: {num_classes: 1}" in said
    out = tmp_path / "out"
    with pytest.raises(InputError, match="num_classes: 1"):
        audit.run(small_cohort, [f"timm:test_resnet:{ckpt}"], out=out)
    assert not (out / "audit.duckdb").exists()  # the models load before the run begins
    fixed = _spec(tmp_path, ckpt, arch_kwargs={"num_classes": 1}, outputs={"faceage": 0})
    fixed_text = fixed.read_text().replace("state_dict_key: model_state_dict\n", "")
    fixed.write_text(fixed_text)
    assert create_model(parse_model_spec(str(fixed))).load("cpu") is not None
