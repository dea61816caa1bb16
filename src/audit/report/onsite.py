"""What a page can show only by computing on site, outside the plain renderer.

The renderer (:mod:`audit.report.render`) reads DuckDB alone. Two things it cannot read
there, and this module computes, where the cohort and the models are:

* with ``--show-faces``: cohort photos, namely individual attribution maps of a few photos
  (:func:`saliency_faces`) and the photos that moved most under the worst perturbation
  (:func:`moved_most`), read from the cohort folder the run audited;
* for a run written before schema 14, which did not store them: the perturbation examples
  figure (:func:`perturbation_examples`) and the median follow-up (:func:`median_followup`),
  computed the way that release's renderer did, so that its pages re-render byte for byte.

Torch is imported by these functions only, when called.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from audit.data.cohort import load_cohort, read_spec
from audit.data.faces import Crop
from audit.data.hashing import HashCache
from audit.data.privacy import pseudonym
from audit.models import create_model
from audit.models.inference import decode_image
from audit.models.registry import ModelSpec
from audit.pipeline.store import Store
from audit.report import plots
from audit.robustness import examples
from audit.robustness.perturbations import create_perturbation, crop_layout, face_layout
from audit.robustness.suite import image_seed
from audit.saliency import maps as sal
from audit.survival.analysis import median_followup as _median_followup


def saliency_faces(
    run: dict,
    models: list[dict],
    rows: pd.DataFrame,
    shares: pd.DataFrame,
    cfg: dict,
    show_ids: bool,
    k: int = 4,
) -> dict:
    """Only with ``--show-faces``: individual attribution maps of ``k`` cohort photos (drawn
    with the saliency seed among the included ones), for each image model and the methods
    the run used, recomputed from the cohort folder and the models' checkpoints on site."""
    root = Path(run.get("cohort_path") or "")
    try:
        cohort = load_cohort(root, hash_cache=HashCache.default())
        frame = cohort.frame.drop_duplicates("photo_id").set_index("photo_id")
    except Exception as exc:  # the folder moved or is gone: say so, render the rest
        return {
            "error": f"the cohort folder {root} cannot be read ({exc}); photos not shown",
            "blocks": [],
        }
    chosen = _sample_photos(rows, frame, int(cfg.get("seed", 0)), k)
    methods = sal.configured_methods(
        list(dict.fromkeys(shares["method"])),
        window=cfg.get("window", 16),
        stride=cfg.get("stride", 8),
        ig_steps=cfg.get("ig_steps", 16),
    )
    blocks = []
    for m in models:
        if "spec" not in m:
            continue
        try:
            model = create_model(ModelSpec(**m["spec"]))
            targets = sal.model_targets(model, "cpu")
        except Exception as exc:
            blocks.append({"model": m["name"], "error": f"cannot load the model ({exc})"})
            continue
        faces = [
            np.array(
                decode_image(
                    cohort.image_file(frame.at[p, "image_path"]),
                    model.input_size,
                    model.crop_for(cohort),
                )
            )
            for p in chosen
        ]
        if faces:
            labels = [pseudonym(str(p), show_ids)[:14] for p in chosen]
            blocks.extend(_map_grid(t, faces, labels, methods) for t in targets)
    return {"error": None, "blocks": blocks}


def _sample_photos(rows: pd.DataFrame, frame: pd.DataFrame, seed: int, k: int) -> list:
    """``k`` included photos with an image, drawn with the saliency seed, in cohort order."""
    included = rows[rows["included"].astype(bool)]["photo_id"]
    included = [p for p in included if p in frame.index and pd.notna(frame.at[p, "image_path"])]
    if not included:
        return []
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(included), size=min(k, len(included)), replace=False)
    return [included[i] for i in sorted(picks)]


def _map_grid(target, faces: list, labels: list[str], methods: dict) -> dict:
    """One output's block: each face beside its attribution map under every method that
    applies to the output."""
    import torch  # on site only: the plain renderer never loads it

    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 255
    cols, names = [], []
    for name, attribute in methods.items():
        if sal.applicable(name, target):
            cols.append(attribute(target, x))
            names.append(name)
    tiles = [[faces[i]] + [plots.overlay(faces[i], c[i]) for c in cols] for i in range(len(faces))]
    grid = plots.image_grid(tiles, labels, ["photo"] + names, tile=96, label_width=130)
    return {
        "model": target.model,
        "output": target.output,
        "error": None,
        "uri": plots.to_uri(grid),
    }


def moved_most(
    store: Store,
    run_id: str,
    run: dict,
    rob: pd.DataFrame,
    preds: pd.DataFrame,
    cfg: dict,
    show_ids: bool,
    k: int = 4,
    models: list[dict] | None = None,
) -> dict:
    """Only with ``--show-faces``: for each model and output, the ``k`` sampled photos whose
    output moved most under the worst judged perturbation, clean beside perturbed (the same
    image seed as the run used), read from the cohort folder the run audited."""
    root = Path(run.get("cohort_path") or "")
    try:
        spec, _ = read_spec(root)
    except Exception as exc:  # the folder moved or is gone: say so, render the rest
        return {
            "error": f"the cohort folder {root} cannot be read ({exc}); photos not shown",
            "blocks": [],
        }
    images = store.table("image_properties", run_id).set_index("photo_id")
    layout = face_layout(
        cfg.get("face_layout") or spec.face_layout or ("arcface" if spec.cropped else "aligned")
    )
    judged_max = int(cfg.get("judged_max_severity", 3))
    blocks = []
    for (model, output), g in rob[
        (rob["attribute"] == "all") & (rob["severity"] <= judged_max)
    ].groupby(["model", "output"], sort=False):
        worst = g.sort_values(["frac_over_tolerance", "mean_abs_shift"], ascending=False).iloc[0]
        name, severity = worst["perturbation"], int(worst["severity"])
        shift = _shifts(preds, model, output, name, severity)
        top = shift.abs().sort_values(ascending=False, kind="stable").head(k).index
        crop = _model_crop(models, model, spec)
        p = create_perturbation(name, layout=crop_layout(crop, layout))
        tiles, labels = [], []
        for pid in top:
            if pid not in images.index:
                continue
            info = images.loc[pid]
            path = (root / spec.images).resolve() / info["image_path"]
            face = decode_image(path, 112, crop)
            if p.recrops:  # the photo cut again, as the run did
                run_seed = image_seed(int(cfg.get("seed", 0)), "crop", name, severity)
                moved = decode_image(path, 112, p.recrop(crop, severity, run_seed & 0x7FFFFFFF))
            else:
                seed = image_seed(int(cfg.get("seed", 0)), info["sha256"], name, severity)
                moved = _perturbed(p, face, severity, seed)
            tiles.append([face, moved])
            labels.append(f"{pseudonym(str(pid), show_ids)[:14]} {shift[pid]:+.1f}")
        if tiles:
            grid = plots.image_grid(tiles, labels, ["clean", "perturbed"], tile=96, label_width=150)
            blocks.append(
                {
                    "model": model,
                    "output": output,
                    "perturbation": name,
                    "severity": severity,
                    "description": worst["description"],
                    "uri": plots.to_uri(grid),
                }
            )
    return {"error": None, "blocks": blocks}


def _model_crop(models: list[dict] | None, name: str, spec) -> Crop:
    """How the run cut ``name``'s input from the cohort's photos (its spec's crop), or the
    default crop when the run did not record the model's spec."""
    for m in models or []:
        if m.get("name") == name and "spec" in m:
            try:
                return create_model(ModelSpec(**m["spec"])).crop_for(spec)
            except Exception:  # a spec this version cannot read: the default crop
                break
    return Crop(raw=not spec.cropped, detector=spec.detector)


def _shifts(preds: pd.DataFrame, model: str, output: str, name: str, severity: int) -> pd.Series:
    """Each photo's output under perturbation ``name`` at ``severity`` minus its clean output."""
    sel = preds[(preds["model"] == model) & (preds["output"] == output)]
    clean = sel[sel["perturbation"] == "none"].set_index("photo_id")["value"]
    pert = sel[(sel["perturbation"] == name) & (sel["severity"] == severity)]
    pert = pert.set_index("photo_id")["value"]
    return (pert - clean.reindex(pert.index)).dropna()


def _perturbed(perturbation, face, severity: int, seed: int) -> np.ndarray:
    """The face (uint8 RGB) under ``perturbation`` at ``severity`` with the run's image seed."""
    import torch  # on site only: the plain renderer never loads it

    x = torch.from_numpy(np.array(face)).permute(2, 0, 1)[None].float() / 255
    y = perturbation(x, severity, [seed])
    return (y[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def perturbation_examples(names: list[str], severities: list[int]) -> dict | None:
    """A run from before schema 14: its perturbation examples, drawn now (None without
    torch, as that release's renderer did)."""
    try:
        return examples.perturbation_examples(names, severities)
    except ImportError:
        return None


def median_followup(subjects: pd.DataFrame) -> float:
    """A run from before schema 14: its median follow-up (reverse Kaplan-Meier) from the
    stored cohort rows."""
    return _median_followup(subjects["time"], subjects["event"])
