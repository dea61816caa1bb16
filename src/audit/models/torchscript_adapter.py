"""``torchscript``: a model saved with ``torch.jit.save`` (a user's own export).

The module takes a normalised batch and returns a tensor (N, K), or a tuple / list whose
first element is that tensor; ``embeddings`` names the tuple element holding features
(default: the second element when there is one). ``outputs`` maps names to head columns.
TorchScript archives hold code, but only TorchScript (no Python pickles), and
``torch.jit.load`` runs no arbitrary Python.

Short form: ``torchscript:PATH`` (112 px, imagenet normalisation, column 0 as ``faceage``).
"""

from __future__ import annotations

from pathlib import Path

from audit.errors import InputError
from audit.models.image_model import ImageModel
from audit.models.registry import register_model


def _short(rest: str) -> dict:
    if not rest:
        raise InputError("--model torchscript:PATH needs a path")
    return {"name": Path(rest).stem, "checkpoint": rest, "outputs": {"faceage": 0}}


@register_model("torchscript", short_form=_short)
class TorchScriptModel(ImageModel):
    """A TorchScript module on the best device."""

    def _load(self, device: str):
        import torch

        try:
            module = torch.jit.load(str(self.checkpoint), map_location=device)
        except Exception as exc:
            raise InputError(
                f"{self.checkpoint}: not a TorchScript archive: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc
        module = module.eval()
        if self.spec.compile:
            module = torch.compile(module)
        return module

    def forward(self, x):
        out = self._model(x)
        if isinstance(out, (tuple, list)):
            head = out[0]
            index = 1 if self.spec.embeddings is None else int(self.spec.embeddings)
            feats = out[index] if len(out) > index else None
        else:
            head, feats = out, None
        return head.reshape(head.shape[0], -1), (
            None if feats is None else feats.reshape(feats.shape[0], -1)
        )
