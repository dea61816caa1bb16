"""``timm``: a timm architecture with weights from a checkpoint (FAHR-Face style).

Spec fields (the README's model spec): ``arch``, ``arch_kwargs`` (e.g.
``{img_size: 112, num_classes: 1}`` for a ViT), ``checkpoint`` (``.safetensors``, or
``.pth``/``.pt`` read with ``torch.load(weights_only=True)``), ``state_dict_key`` (FAHR-Face:
``model_state_dict``), ``rename_keys`` (key prefixes renamed in order, ``{old: new}``, a null
``new`` dropping the keys: a fine-tuned checkpoint's ``backbone.`` or ``regressor.``, an MAE's
decoder), ``input_size``, ``normalize``, ``outputs`` (output name -> head index, or
a head mapping, :mod:`audit.models.heads`: ``{head: expectation, bins: ...}`` for a softmax
age classifier), ``sha256`` (expected digest of the checkpoint).

A checkpoint that holds pickled code is refused; one that does not fit the architecture
fails with the missing, unexpected and mis-shaped keys named, and with the ``rename_keys``
that would make it fit when prefixes explain the difference. Embeddings are the
features before the head (timm's ``forward_head(..., pre_logits=True)``).

Short form: ``timm:ARCH:CHECKPOINT`` (outputs default to ``faceage`` = head index 0).
"""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

from audit.errors import InputError
from audit.models.image_model import ImageModel
from audit.models.registry import ModelSpec, register_model


def _short(rest: str) -> dict:
    arch, sep, checkpoint = rest.partition(":")
    if not sep or not arch or not checkpoint:
        raise InputError(f"--model timm:{rest}: expected timm:ARCH:CHECKPOINT")
    return {
        "name": f"{arch}-{Path(checkpoint).stem}",
        "arch": arch,
        "checkpoint": checkpoint,
        "outputs": {"faceage": 0},
    }


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
            raise InputError(
                f"{path}: cannot read checkpoint: {type(exc).__name__}: {exc}"
            ) from exc
    if state_dict_key:
        if not isinstance(state, dict) or state_dict_key not in state:
            keys = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
            raise InputError(f"{path}: no `{state_dict_key}` in the checkpoint (it has {keys})")
        state = state[state_dict_key]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise InputError(
            f"{path}: expected a dict of tensors"
            + ("" if state_dict_key else "; set `state_dict_key` in the model spec")
        )
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def rename_state_keys(state: dict, renames: dict, path: Path) -> dict:
    """``state`` with key prefixes renamed, in the order given, each applied to what the
    previous left; a ``None`` target drops the keys. A rename that matches no key, or two keys
    renamed onto one, is an error naming them."""
    for old, new in renames.items():
        hits = [k for k in state if k.startswith(old)]
        if not hits:
            raise InputError(
                f"{path}: rename_keys {old!r}: no checkpoint key starts with it "
                f"(keys look like {', '.join(sorted(state)[:4])})"
            )
        out = {k: v for k, v in state.items() if not k.startswith(old)}
        if new is not None:
            for k in hits:
                target = new + k[len(old) :]
                if target in out:
                    raise InputError(
                        f"{path}: rename_keys {old!r} -> {new!r} renames {k} onto "
                        f"{target}, which the checkpoint already has"
                    )
                out[target] = state[k]
        state = out
    return state


def _split_points(key: str):
    """``(prefix, rest)`` for each split of a dotted key, the whole key as ``rest`` first."""
    parts = key.split(".")
    for i in range(len(parts)):
        yield "".join(p + "." for p in parts[:i]), ".".join(parts[i:])


def suggest_renames(state: dict, own: dict) -> dict:
    """Prefix renames (for ``rename_keys``) that turn the checkpoint's unexpected keys into
    the model's missing ones with the same shapes, found greedily: each step takes the
    rename that explains most keys, by the longest common ending of each key. Unexpected keys
    left over are dropped by their first component (an MAE's decoder, a training head)."""
    state = {k: tuple(v.shape) for k, v in state.items()}
    own = {k: tuple(v.shape) for k, v in own.items()}
    renames: dict[str, str | None] = {}
    while True:
        missing = set(own) - set(state)
        unexpected = set(state) - set(own)
        by_rest: dict[str, list[str]] = {}
        for m in missing:
            for prefix, rest in _split_points(m):
                by_rest.setdefault(rest, []).append(prefix)
        votes: Counter = Counter()
        for u in unexpected:
            for prefix, rest in _split_points(u):  # the longest ending that some key shares
                targets = [t for t in by_rest.get(rest, []) if own[t + rest] == state[u]]
                if targets:
                    votes.update((prefix, t) for t in targets if t != prefix)
                    break
        if not votes:
            break
        (old, new), _ = max(votes.items(), key=lambda kv: (kv[1], len(kv[0][0]), kv[0]))
        renames[old] = new
        state = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
    for first in sorted({k.split(".")[0] for k in set(state) - set(own)}):
        renames[first + ("." if any(k.startswith(first + ".") for k in state) else "")] = None
    return renames


def _image_size_hint(model, state: dict, own: dict) -> str:
    """When a ViT's position embedding differs from the checkpoint's, the input size the
    checkpoint was trained at (FAHR-Face: 112 px, 7 x 7 patches of 16), as ``arch_kwargs``."""
    import math

    key = "pos_embed"
    if key not in state or key not in own or tuple(state[key].shape) == tuple(own[key].shape):
        return ""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    if not patch or prefix < 0 or state[key].ndim != 3:
        return ""
    side = math.isqrt(int(state[key].shape[1]) - prefix)
    if side * side != int(state[key].shape[1]) - prefix:
        return ""
    size = side * int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    return (
        f". The checkpoint's position embedding holds {side} x {side} patches: it was "
        f"trained on {size}-px input; set arch_kwargs img_size: {size} and input_size: {size}"
    )


def _head_hint(model, state: dict, own: dict) -> str:
    """When the classifier head's size differs from the checkpoint's (a timm model built
    with its 1000 ImageNet classes for a one-output regression checkpoint), the
    ``arch_kwargs`` that build it to fit."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    heads = cfg.get("classifier")
    for head in [heads] if isinstance(heads, str) else list(heads or []):
        key = f"{head}.weight"
        if key in state and key in own and state[key].shape[0] != own[key].shape[0]:
            n, built = int(state[key].shape[0]), int(own[key].shape[0])
            return (
                f". The checkpoint's head ({head}) has {n} output(s) and the architecture was "
                f"built with {built}: set arch_kwargs: {{num_classes: {n}}} in a model spec "
                "file (the short form timm:ARCH:CHECKPOINT takes no arch_kwargs)"
            )
    return ""


def fit_state_dict(model, state: dict, path: Path) -> None:
    """Load ``state`` strictly; name every missing, unexpected or mis-shaped key on failure,
    and the ``rename_keys`` that would make the checkpoint fit, when prefixes explain it."""
    import json

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
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
        hint = ""
        if missing and unexpected:
            renames = suggest_renames(state, own)
            fixed = rename_state_keys(dict(state), renames, path) if renames else state
            if set(fixed) == set(own) and all(
                tuple(fixed[k].shape) == tuple(own[k].shape) for k in own
            ):
                hint = (
                    f". It fits with these key renames in the model spec: rename_keys: "
                    f"{json.dumps(renames)}"
                )
        hint += _head_hint(model, state, own) + _image_size_hint(model, state, own)
        raise InputError(
            f"{path}: checkpoint does not fit the architecture; " + "; ".join(parts) + hint
        )
    model.load_state_dict(state, strict=True)


@register_model("timm", short_form=_short)
class TimmModel(ImageModel):
    """A timm model with checkpoint weights; batched inference on the best device."""

    def __init__(self, spec: ModelSpec):
        if not spec.arch or not spec.checkpoint:
            raise InputError(f"model {spec.name!r}: kind timm needs `arch` and `checkpoint`")
        super().__init__(spec)
        named = [h.output for h in self.heads if h.source is not None]
        if named:
            raise InputError(
                f"model {spec.name!r}: a timm model has one head; output(s) {named} name "
                "another (`output:`): read them as columns of the one head (`index:`)"
            )

    @property
    def input_size(self) -> int:
        return int(self.spec.input_size or self.spec.arch_kwargs.get("img_size", 112))

    def _load(self, device: str):
        import timm
        import torch

        state = load_state_dict(self.checkpoint, self.spec.state_dict_key)
        state = rename_state_keys(state, self.spec.rename_keys, self.checkpoint)
        try:
            model = timm.create_model(self.spec.arch, pretrained=False, **self.spec.arch_kwargs)
        except Exception as exc:
            raise InputError(
                f"model {self.name!r}: timm cannot build {self.spec.arch!r} with "
                f"{self.spec.arch_kwargs}: {exc}"
            ) from exc
        fit_state_dict(model, state, self.checkpoint)
        model = HeadAndFeatures(model).eval().to(device)
        if device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        if self.spec.compile:
            model = torch.compile(model)
        return model

    def name_outputs(self, out):
        """The classifier head's outputs and the pre-logit features; a timm model has one
        head (``output`` in a head mapping is refused)."""
        head, pre = out
        return {None: head}, pre


def _head_and_features_class():
    import torch

    class HeadAndFeatures(torch.nn.Module):
        """A timm model returning (head outputs, pre-logit features) in one forward pass,
        so that ``torch.compile`` sees the whole computation."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            pre = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
            return self.net.get_classifier()(pre), pre

    return HeadAndFeatures


def HeadAndFeatures(net):  # noqa: N802 - builds the torch module lazily (torch imported late)
    return _head_and_features_class()(net)
