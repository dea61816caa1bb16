"""``timm``: a timm architecture with weights from a checkpoint (FAHR-Face style).

Spec fields (DESIGN.md): ``arch``, ``arch_kwargs`` (e.g. ``{img_size: 112, num_classes: 1}``
for a ViT), ``checkpoint`` (``.safetensors``, or ``.pth``/``.pt`` read with
``torch.load(weights_only=True)``), ``state_dict_key`` (FAHR-Face: ``model_state_dict``),
``input_size``, ``normalize``, ``outputs`` (output name -> head index, or
``{index, scale, offset}``), ``sha256`` (expected digest of the checkpoint).

A checkpoint that holds pickled code is refused; one that does not fit the architecture
fails with the missing, unexpected and mis-shaped keys named. Embeddings are the
features before the head (timm's ``forward_head(..., pre_logits=True)``).

Short form: ``timm:ARCH:CHECKPOINT`` (outputs default to ``faceage`` = head index 0).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.hashing import sha256_file
from audit.models.registry import (
    OUTPUT_NAMES, PREDICTION_COLUMNS, ModelAdapter, ModelSpec, Predictions, register_model,
)


def _short(rest: str) -> dict:
    arch, sep, checkpoint = rest.partition(":")
    if not sep or not arch or not checkpoint:
        raise InputError(f"--model timm:{rest}: expected timm:ARCH:CHECKPOINT")
    return {"name": f"{arch}-{Path(checkpoint).stem}", "arch": arch,
            "checkpoint": checkpoint, "outputs": {"faceage": 0}}


def load_state_dict(path: Path, state_dict_key: str | None = None) -> dict:
    """Tensors from a checkpoint, never unpickling code (safetensors or ``weights_only``)."""
    import torch

    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise InputError(f"{path}: not a readable safetensors file: {exc}") from exc
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(
                f"{path}: refused: the checkpoint holds pickled objects other than tensors "
                f"(code or classes), which faceage-audit never unpickles ({first}). Re-save "
                f"its state dict with torch.save(model.state_dict()) or as safetensors."
            ) from exc
        except Exception as exc:
            raise InputError(f"{path}: cannot read checkpoint: {type(exc).__name__}: {exc}") from exc
    if state_dict_key:
        if not isinstance(state, dict) or state_dict_key not in state:
            keys = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
            raise InputError(f"{path}: no `{state_dict_key}` in the checkpoint (it has {keys})")
        state = state[state_dict_key]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise InputError(f"{path}: expected a dict of tensors"
                         + ("" if state_dict_key else "; set `state_dict_key` in the model spec"))
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def fit_state_dict(model, state: dict, path: Path) -> None:
    """Load ``state`` strictly; name every missing, unexpected or mis-shaped key on failure."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        def few(items):
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {few(shapes)}")
        raise InputError(f"{path}: checkpoint does not fit the architecture; " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _output_map(spec: ModelSpec) -> dict[str, tuple[int, float, float]]:
    if not spec.outputs:
        raise InputError(f"model {spec.name!r}: `outputs` must map faceage/risk to head indices")
    out = {}
    for name, where in spec.outputs.items():
        if name not in OUTPUT_NAMES:
            raise InputError(f"model {spec.name!r}: unknown output {name!r}; use {OUTPUT_NAMES}")
        if isinstance(where, dict):
            out[name] = (int(where.get("index", 0)), float(where.get("scale", 1.0)),
                         float(where.get("offset", 0.0)))
        else:
            out[name] = (int(where), 1.0, 0.0)
    return out


@register_model("timm", short_form=_short)
class TimmModel(ModelAdapter):
    """A timm model with checkpoint weights; batched inference on the best device."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        if not spec.arch or not spec.checkpoint:
            raise InputError(f"model {spec.name!r}: kind timm needs `arch` and `checkpoint`")
        self._outputs = _output_map(spec)
        self.checkpoint = spec.resolve(spec.checkpoint)
        self._model = None
        self.device = None

    @property
    def outputs(self) -> list[str]:
        return list(self._outputs)

    @property
    def input_size(self) -> int:
        return int(self.spec.input_size or self.spec.arch_kwargs.get("img_size", 112))

    def load(self, device: str | None = None):
        """Build the architecture and load the checkpoint (after checking its SHA-256)."""
        if self._model is not None:
            return self._model
        import timm
        import torch

        from audit.inference import best_device

        digest = sha256_file(self.checkpoint) if self.checkpoint.is_file() else None
        if self.spec.sha256 and digest != self.spec.sha256:
            raise InputError(f"{self.checkpoint}: SHA-256 {digest} does not match the model "
                             f"spec's {self.spec.sha256}")
        self.checkpoint_sha256 = digest
        state = load_state_dict(self.checkpoint, self.spec.state_dict_key)
        try:
            model = timm.create_model(self.spec.arch, pretrained=False, **self.spec.arch_kwargs)
        except Exception as exc:
            raise InputError(f"model {self.name!r}: timm cannot build {self.spec.arch!r} with "
                             f"{self.spec.arch_kwargs}: {exc}") from exc
        fit_state_dict(model, state, self.checkpoint)
        self.device = device or best_device()
        model = model.eval().to(self.device)
        if self.device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        self._model = model
        return model

    def forward(self, x):
        """(head outputs, pre-logit features) for a normalised batch."""
        model = self._model
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        return model.get_classifier()(pre), pre

    def identity(self) -> dict:
        ident = self.spec.identity()
        if self.checkpoint.is_file():
            ident["checkpoint_sha256"] = sha256_file(self.checkpoint)
        return ident

    def predict(self, cohort, progress=None) -> Predictions:
        from audit import progress as progress_mod
        from audit.inference import run_batched

        if progress is None:
            def progress(items, total):
                return progress_mod.bar(items, total, f"{self.name}: inference")

        self.load()
        df = cohort.frame
        rows = df[df["image_path"].notna()]
        paths = [cohort.image_file(p) for p in rows["image_path"]]
        result = run_batched(self.forward, paths, self.input_size, self.spec.normalize or "imagenet",
                             layout=self.spec.layout, device=self.device, progress=progress)
        ok = result.ok
        frames = []
        for name, (index, scale, offset) in self._outputs.items():
            if index >= result.outputs.shape[1]:
                raise InputError(f"model {self.name!r}: output {name!r} reads head index {index}, "
                                 f"the head has {result.outputs.shape[1]} output(s)")
            frames.append(pd.DataFrame({
                "photo_id": rows["photo_id"].values[ok], "subject_id": rows["subject_id"].values[ok],
                "model": self.name, "output": name, "perturbation": "none", "severity": 0,
                "value": result.outputs[ok, index] * scale + offset}))
        embeddings = None
        if result.features is not None:
            embeddings = pd.DataFrame({"photo_id": rows["photo_id"].values[ok], "model": self.name,
                                       "vector": list(result.features[ok].astype(np.float32))})
        bad = [{"photo_id": rows["photo_id"].iat[i], "stage": "inference", "severity": "error",
                "source_file": str(paths[i]), "row_number": int(rows["_row"].iat[i]),
                "column_name": "image_path",
                "reason": f"model {self.name!r}: cannot decode image: {result.errors[i]}"}
               for i in np.flatnonzero(~ok)]
        return Predictions(
            frame=pd.concat(frames, ignore_index=True)[PREDICTION_COLUMNS], embeddings=embeddings,
            quarantine=pd.DataFrame(bad) if bad else None,
            notes=[f"{int(ok.sum())} photos in {result.seconds:.1f} s on {result.device} "
                   f"({ok.sum() / max(result.seconds, 1e-9):.0f} img/s)"])
