"""What every image model adapter shares: outputs, checkpoint digest, batched prediction.

An adapter subclasses :class:`ImageModel` and implements ``_load(device)`` (build the model
from ``self.checkpoint``) and ``sources(x)`` (a normalised batch -> ``(outputs, features)``:
the model's outputs by name or position, ``None`` for the first, and the embeddings or
None; a torch adapter implements ``name_outputs(module output)`` instead). ``forward(x)``
gathers the columns every output head reads into one (N, K) matrix; :meth:`ImageModel.read`
turns that matrix into values and spreads (:mod:`audit.models.heads`).
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np
import pandas as pd

from audit.data.faces import CROP_METHODS, Crop
from audit.data.hashing import sha256_file
from audit.errors import InputError
from audit.models.heads import Head, gather, gathered, parse_heads
from audit.models.inference import best_device, run_batched
from audit.models.registry import (
    OUTPUT_NAMES,
    PREDICTION_COLUMNS,
    ModelAdapter,
    ModelSpec,
    Predictions,
)
from audit.pipeline import progress as progress_mod


class ImageModel(ModelAdapter):
    """A model that reads photos: load once, predict in batches on the best device."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        if not spec.checkpoint:
            raise InputError(f"model {spec.name!r}: kind {spec.kind} needs `checkpoint`")
        self.heads: list[Head] = parse_heads(spec.name, spec.outputs, OUTPUT_NAMES)
        self.wide_heads: list[Head] = gathered(self.heads)
        self._crop = _crop_settings(spec)
        self.checkpoint = spec.resolve(spec.checkpoint)
        self._model = None
        self.device: str | None = None
        self.checkpoint_sha256: str | None = None

    @property
    def outputs(self) -> list[str]:
        return [h.output for h in self.heads]

    def read(self, wide, check: bool = True) -> dict:
        """``{output: (values, spreads or None)}`` from a matrix :meth:`forward` gave (or a
        stack of them, ``(..., N, K)``)."""
        return {h.output: h.reduce(wide, self.name, check) for h in self.wide_heads}

    @property
    def input_size(self) -> int:
        return int(self.spec.input_size or 112)

    @property
    def normalize(self):
        return self.spec.normalize or "imagenet"

    @property
    def input_layout(self) -> str:
        """The spec's layout, with ``:bgr`` for a BGR model (see ``model_input``)."""
        return self.spec.layout + (":bgr" if self.spec.channels == "bgr" else "")

    def crop_for(self, cohort) -> Crop:
        """How this model's input is cut from the cohort's photos (its spec's ``crop``; the
        cohort says whether photos are raw and which detector finds their faces)."""
        spec = cohort.spec if hasattr(cohort, "spec") else cohort
        return Crop(**self._crop, raw=not spec.cropped, detector=spec.detector)

    def checkpoint_digest(self) -> str:
        """SHA-256 of the checkpoint, hashed once per (size, mtime) of the file: a run asks
        for it three times (identity, cache key, load) and checkpoints can be large."""
        st = Path(self.checkpoint).stat()
        stamp = (st.st_size, st.st_mtime_ns)
        if getattr(self, "_digest_stamp", None) != stamp:
            self._digest, self._digest_stamp = sha256_file(self.checkpoint), stamp
        return self._digest

    def identity(self) -> dict:
        ident = self.spec.identity()
        if self.checkpoint.is_file():
            ident["checkpoint_sha256"] = self.checkpoint_digest()
        return ident

    def load(self, device: str | None = None):
        """Check the checkpoint's SHA-256 against the spec, then build the model once."""
        if self._model is not None:
            return self._model

        if not Path(self.checkpoint).is_file():
            raise InputError(f"{self.checkpoint}: model file not found (model {self.name!r})")
        digest = self.checkpoint_digest()
        if self.spec.sha256 and digest != self.spec.sha256:
            raise InputError(
                f"{self.checkpoint}: SHA-256 {digest} does not match the model "
                f"spec's {self.spec.sha256}"
            )
        self.checkpoint_sha256 = digest
        self.device = device or best_device()
        self._model = self._load(self.device)
        return self._model

    @abstractmethod
    def _load(self, device: str):
        """Build the model from ``self.checkpoint`` on ``device``."""

    def sources(self, x):
        """``(outputs, features)`` for a normalised batch on the model's device: the model's
        outputs as ``{name or position: (N, ...)}`` with ``None`` for the first."""
        return self.name_outputs(self._model(x))

    def name_outputs(self, out):
        """``(outputs, features)`` from what a torch module returned: a tensor (N, K); a
        tuple or list (its positions; features the spec's ``embeddings`` position, else the
        second element); or a dict of tensors (its keys; features the ``embeddings`` key)."""
        embeddings = self.spec.embeddings
        if isinstance(out, dict):
            feats = out.get(embeddings) if embeddings is not None else None
            return {None: next(iter(out.values())), **out}, _flat(feats)
        if isinstance(out, (tuple, list)):
            index = 1 if embeddings is None else int(embeddings)
            feats = out[index] if len(out) > index else None
            return {None: out[0], **dict(enumerate(out))}, _flat(feats)
        return {None: out, 0: out}, None

    def forward(self, x):
        """``(head, features)``: the columns every output reads, side by side (N, K)."""
        outputs, features = self.sources(x)
        return gather(self.heads, outputs, self.name), features

    def cache_key(self, cohort) -> str:
        """Digest of everything that decides a clean prediction: the checkpoint's bytes, the
        architecture, the preprocessing (size, normalisation, layout, face alignment) and the
        output mapping. Equal keys and equal image digests give equal predictions."""
        import hashlib
        import json

        spec = self.spec
        settings = {
            "checkpoint": self.checkpoint_digest(),
            "kind": spec.kind,
            "arch": spec.arch,
            "arch_kwargs": spec.arch_kwargs,
            "state_dict_key": spec.state_dict_key,
            "rename_keys": spec.rename_keys,
            "input_size": self.input_size,
            "normalize": self.normalize,
            "layout": self.input_layout,
            "crop": self.crop_for(cohort).settings(),
            "outputs": spec.outputs,
            "embeddings": spec.embeddings,
        }
        text = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def predict(self, cohort, progress=None, cached=None) -> Predictions:
        """Predictions (and embeddings) for every good photo of ``cohort``.

        ``cached``: ``(values, vectors)`` frames from the prediction cache (by
        ``image_sha256``); photos whose every output is there are not run again. Photos that
        do not decode, and outputs that are not finite, are quarantined (stage ``inference``)
        with the photo's file, manifest row and reason.
        """
        df = cohort.frame
        rows = df[df["image_path"].notna()]
        digests = rows["image_path"].map(cohort.image_sha256)
        have = self._cached_outputs(cached)
        hit = digests.isin(have.index).to_numpy()
        fresh = self._run(
            cohort,
            rows[~hit],
            progress
            or (lambda items, total: progress_mod.bar(items, total, f"{self.name}: inference")),
        )
        if hit.any():
            self._add_cached(fresh, rows[hit], digests[hit], have, cached[1])
        fresh.n_cached, fresh.n_computed = int(hit.sum()), int((~hit).sum())
        fresh.notes.append(
            f"{fresh.n_cached} photos from the prediction cache, {fresh.n_computed} computed"
        )
        _new_cache_entries(
            fresh, set(rows.loc[~hit, "photo_id"]), dict(zip(rows["photo_id"], digests))
        )
        return fresh

    def _cached_outputs(self, cached) -> pd.DataFrame:
        """The cached clean outputs by image digest (one column per output), for the photos
        that have every output of this model; empty without a cache."""
        if cached is None or not len(cached[0]):
            return pd.DataFrame()
        return cached_outputs(cached[0], "image_sha256", self.outputs)

    def _add_cached(self, fresh, old: pd.DataFrame, digests, have, vectors) -> None:
        """Add the cached photos' outputs (and embeddings, where cached) to ``fresh``."""
        frames = [fresh.frame] + [
            _prediction_frame(
                old,
                self.name,
                name,
                have.loc[digests, name].to_numpy(),
                have.loc[digests, f"{name}:spread"].to_numpy()
                if f"{name}:spread" in have
                else None,
            )
            for name in self.outputs
        ]
        fresh.frame = pd.concat([f for f in frames if len(f)], ignore_index=True)[
            PREDICTION_COLUMNS
        ]
        if not len(vectors):
            return
        vectors = vectors.set_index("image_sha256")["vector"]
        known = digests.isin(vectors.index).to_numpy()
        old_emb = pd.DataFrame(
            {
                "photo_id": old["photo_id"].values[known],
                "model": self.name,
                "vector": list(vectors.loc[digests[known]]),
            }
        )
        fresh.embeddings = pd.concat(
            [e for e in (fresh.embeddings, old_emb) if e is not None], ignore_index=True
        )

    def _run(self, cohort, rows: pd.DataFrame, progress) -> Predictions:
        """Run the model on ``rows`` of the cohort (all of them decoded and batched)."""
        if rows.empty:
            return Predictions(frame=pd.DataFrame(columns=PREDICTION_COLUMNS), notes=[])
        self.load()
        paths = [cohort.image_file(p) for p in rows["image_path"]]
        result = run_batched(
            self.forward,
            paths,
            self.input_size,
            self.normalize,
            layout=self.input_layout,
            device=self.device,
            progress=progress,
            crop=self.crop_for(cohort),
        )
        ok = result.ok
        bad: dict[int, str] = {
            int(i): f"cannot prepare the photo: {result.errors[i]}" for i in np.flatnonzero(~ok)
        }
        frames = []
        for name, (values, spread) in self.read(result.outputs[ok]).items():
            full = np.full(len(rows), np.nan)
            full[ok] = values
            finite = ok & np.isfinite(full)
            for i in np.flatnonzero(ok & ~finite):
                bad.setdefault(int(i), f"the model returned a non-finite {name} ({full[i]})")
            spreads = None
            if spread is not None:
                spreads = np.full(len(rows), np.nan)
                spreads[ok] = spread
                spreads = spreads[finite]
            frames.append(_prediction_frame(rows[finite], self.name, name, full[finite], spreads))
        embeddings = None
        if result.features is not None:
            keep = ok & np.isfinite(result.features).all(axis=1)
            embeddings = pd.DataFrame(
                {
                    "photo_id": rows["photo_id"].values[keep],
                    "model": self.name,
                    "vector": list(result.features[keep].astype(np.float32)),
                }
            )
        quarantine = [
            {
                "photo_id": rows["photo_id"].iat[i],
                "stage": "inference",
                "severity": "error",
                "source_file": str(paths[i]),
                "row_number": int(rows["_row"].iat[i]),
                "column_name": "image_path",
                "reason": f"model {self.name!r}: {reason}",
            }
            for i, reason in sorted(bad.items())
        ]
        return Predictions(
            frame=pd.concat(frames, ignore_index=True)[PREDICTION_COLUMNS],
            seconds=result.seconds,
            embeddings=embeddings,
            quarantine=pd.DataFrame(quarantine) if quarantine else None,
            notes=[
                f"{int(ok.sum())} photos in {result.seconds:.1f} s on {result.device} "
                f"({ok.sum() / max(result.seconds, 1e-9):.0f} img/s)"
            ],
        )


def _flat(feats):
    return None if feats is None else feats.reshape(feats.shape[0], -1)


def cached_outputs(cached: pd.DataFrame, index, outputs: list[str]) -> pd.DataFrame:
    """Prediction-cache rows as one row per ``index`` key with a column per output (and
    ``{output}:spread``), for the keys that have every one of ``outputs``; empty if none."""
    wide = cached.pivot_table(index=index, columns="output", values="value", aggfunc="first")
    if not set(outputs) <= set(wide.columns):
        return pd.DataFrame()
    wide = wide[list(outputs)].dropna()
    spread = (
        cached.pivot_table(index=index, columns="output", values="spread", aggfunc="first")
        if "spread" in cached
        else pd.DataFrame()
    )
    for name in outputs:
        wide[f"{name}:spread"] = spread[name].reindex(wide.index) if name in spread else np.nan
    return wide


def _crop_settings(spec: ModelSpec) -> dict:
    """The spec's ``crop`` checked: ``method`` (aligned, box, chip), ``margin``, ``padding``."""
    crop = dict(spec.crop)
    extra = set(crop) - {"method", "margin", "padding"}
    if extra:
        raise InputError(
            f"model {spec.name!r}: unknown crop key(s) {sorted(extra)}; use method, margin, padding"
        )
    if crop.get("method", "aligned") not in CROP_METHODS:
        raise InputError(
            f"model {spec.name!r}: unknown crop method {crop['method']!r}; use one of "
            f"{CROP_METHODS}"
        )
    for key in ("margin", "padding"):
        if key in crop and not (0 <= float(crop[key]) <= 2):
            raise InputError(f"model {spec.name!r}: crop {key} must be between 0 and 2")
        if key in crop:
            crop[key] = float(crop[key])
    return crop


def _prediction_frame(
    rows: pd.DataFrame, model: str, output: str, values, spreads=None
) -> pd.DataFrame:
    """Clean predictions rows (``perturbation`` none) of ``rows``' photos."""
    return pd.DataFrame(
        {
            "photo_id": rows["photo_id"].values,
            "subject_id": rows["subject_id"].values,
            "model": model,
            "output": output,
            "perturbation": "none",
            "severity": 0,
            "value": values,
            "spread": np.nan if spreads is None else spreads,
        }
    )


def _new_cache_entries(fresh, computed_ids: set, sha_of: dict) -> None:
    """The prediction cache's new entries: the photos computed now, by image digest."""
    computed = fresh.frame[fresh.frame["photo_id"].isin(computed_ids)]
    fresh.cache_values = pd.DataFrame(
        {
            "image_sha256": computed["photo_id"].map(sha_of).values,
            "perturbation": "none",
            "severity": 0,
            "output": computed["output"].values,
            "value": computed["value"].values,
            "spread": computed["spread"].values,
        }
    )
    if fresh.embeddings is not None:
        emb = fresh.embeddings[fresh.embeddings["photo_id"].isin(set(computed["photo_id"]))]
        fresh.cache_vectors = pd.DataFrame(
            {"image_sha256": emb["photo_id"].map(sha_of).values, "vector": emb["vector"].values}
        )
