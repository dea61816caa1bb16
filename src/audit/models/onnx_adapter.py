"""``onnx``: a model exported to ONNX (e.g. the original Keras FaceAge), via onnxruntime.

Spec fields: ``checkpoint`` (the ``.onnx`` file), ``input_size``, ``layout`` (``nhwc`` for
Keras exports), ``normalize`` (FaceAge: ``per_image``), ``outputs`` (output name -> column of
the head, or a head mapping, :mod:`audit.models.heads`, whose ``output`` names the graph
output to read; default the first),
``embeddings`` (the graph output holding features; default: none). The CUDA provider is used
when onnxruntime has it, else the CPU provider. A model whose input shape does not fit the
spec's size and layout is refused with both shapes named.

Short form: ``onnx:PATH`` (112 px, NCHW, imagenet normalisation, column 0 as ``faceage``).
"""

from __future__ import annotations

import numpy as np

from audit.errors import InputError
from audit.models.image_model import ImageModel
from audit.models.registry import register_model


def _short(rest: str) -> dict:
    from pathlib import Path

    if not rest:
        raise InputError("--model onnx:PATH needs a path")
    return {"name": Path(rest).stem, "checkpoint": rest, "outputs": {"faceage": 0}}


@register_model("onnx", short_form=_short)
class OnnxModel(ImageModel):
    """An ONNX graph run by onnxruntime; embeddings from a named graph output."""

    def _load(self, device: str):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = ort.InferenceSession(str(self.checkpoint), providers=providers)
        except Exception as exc:
            raise InputError(
                f"{self.checkpoint}: onnxruntime cannot load the model: {exc}"
            ) from exc
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise InputError(
                f"{self.checkpoint}: expected one image input, the model has "
                f"{[i.name for i in inputs]}"
            )
        shape = list(inputs[0].shape)
        s = self.input_size
        want = [None, 3, s, s] if self.spec.layout == "nchw" else [None, s, s, 3]
        fixed = [d if isinstance(d, int) else None for d in shape]
        if len(shape) != 4 or any(
            f is not None and w is not None and f != w for f, w in zip(fixed, want)
        ):
            raise InputError(
                f"{self.checkpoint}: the model's input {inputs[0].name!r} has shape {shape}, "
                f"the spec says {self.spec.layout} at {s}x{s} "
                f"({['N', *want[1:]]}); set `input_size` and `layout` to match"
            )
        names = [o.name for o in session.get_outputs()]
        for graph_output in [h.source for h in self.heads] + [self.spec.embeddings]:
            if graph_output is not None and graph_output not in names:
                raise InputError(
                    f"{self.checkpoint}: no graph output {graph_output!r}; it has {names}"
                )
        self._input_name = inputs[0].name
        self._output_names = names
        return session

    def sources(self, x):
        arrays = self._model.run(None, {self._input_name: x.float().cpu().numpy()})
        by_name = dict(zip(self._output_names, arrays))
        feats = by_name.get(self.spec.embeddings) if self.spec.embeddings else None
        if feats is not None:
            feats = np.asarray(feats, dtype=np.float32).reshape(len(feats), -1)
        return {None: arrays[0], **by_name}, feats
