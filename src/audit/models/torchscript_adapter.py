"""``torchscript``: a model saved with ``torch.jit.save`` (a user's own export).

The module takes a normalised batch and returns a tensor (N, K), a tuple / list whose
first element is that tensor, or a dict of tensors; ``embeddings`` names the tuple element
(position) or dict key holding features (default: the second tuple element when there is
one). ``outputs`` maps names to head columns or heads (:mod:`audit.models.heads`), whose
``output`` names the tuple position or dict key to read (default the first).
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
