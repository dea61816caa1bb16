"""Output heads: how a model's raw outputs become ``faceage`` (years) and ``risk``.

A model spec's ``outputs`` maps each named output to where and how it is read:

- ``faceage: 0``: the scalar in head column 0 (a regression head).
- ``faceage: {head: scalar, index: 0, scale: 1, offset: 0}``: the same with units,
  ``value = raw * scale + offset``.
- ``faceage: {head: expectation, bins: [...], index: 0}``: ``len(bins)`` columns from
  ``index`` hold probabilities over the bin values (a softmax age classifier, as DEX or the
  dlib age predictor); the value is the expected bin value and the distribution's standard
  deviation is kept as the photo's ``spread`` (an uncertainty in the output's units).
  Probabilities are renormalised to sum to one; rows that are not probabilities (negative,
  or summing more than 1 % away from one) stop the run: the head is probably ``logits``.
- ``faceage: {head: logits, bins: [...]}``: the same, with the softmax applied here.
- ``bins``: a list, or ``{from: 0, to: 100, step: 1}`` (both ends included).
- ``output``: which of the model's outputs holds the columns (an ONNX graph output's name,
  a TorchScript tuple element's position or dict key); default the first. One model can so
  give ``faceage`` from one head and ``risk`` from another.

Heads reduce numpy arrays (inference, robustness) and torch tensors (saliency: the gradient
of the expected value flows through the softmax).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.errors import InputError

HEAD_KINDS = ("scalar", "expectation", "logits")
PROBABILITY_TOLERANCE = 0.01


@dataclass(frozen=True)
class Head:
    """One named output read from ``width`` columns of a model output."""

    output: str
    kind: str = "scalar"
    source: str | int | None = None  # the model output holding the columns (None: the first)
    index: int = 0  # its first column
    bins: tuple[float, ...] | None = None
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        return 1 if self.bins is None else len(self.bins)

    def at(self, index: int) -> Head:
        """The same head reading from column ``index`` of the first output (a gathered
        matrix in which this head's columns start at ``index``)."""
        return Head(self.output, self.kind, None, index, self.bins, self.scale, self.offset)

    def reduce(self, raw, model: str = "", check: bool = True):
        """``(value, spread)`` from ``raw`` (``(..., K)``, numpy or torch): value in the
        output's units, spread the SD of the bin distribution (None for a scalar head).
        ``check``: refuse rows that are not probabilities (an ``expectation`` head)."""
        cols = raw[..., self.index : self.index + self.width]
        if self.kind == "scalar":
            return cols[..., 0] * self.scale + self.offset, None
        torch = _torch_of(cols)
        if torch is not None:
            cols = cols.float()
            bins = torch.as_tensor(self.bins, dtype=cols.dtype, device=cols.device)
            p = torch.softmax(cols, dim=-1) if self.kind == "logits" else cols
            p = p / p.sum(dim=-1, keepdim=True)
            mean = (p * bins).sum(dim=-1)
            sd = ((p * (bins - mean[..., None]) ** 2).sum(dim=-1)).clamp(min=0).sqrt()
        else:
            cols = np.asarray(cols, dtype=np.float64)
            bins = np.asarray(self.bins, dtype=np.float64)
            if self.kind == "logits":
                shifted = cols - np.nanmax(cols, axis=-1, keepdims=True)
                p = np.exp(shifted)
            else:
                if check:
                    self._check_probabilities(cols, model)
                p = cols
            p = p / p.sum(axis=-1, keepdims=True)
            mean = (p * bins).sum(axis=-1)
            sd = np.sqrt(np.clip((p * (bins - mean[..., None]) ** 2).sum(axis=-1), 0, None))
        return mean * self.scale + self.offset, sd * abs(self.scale)

    def _check_probabilities(self, cols: np.ndarray, model: str) -> None:
        finite = np.isfinite(cols).all(axis=-1)
        rows = cols[finite]
        if not rows.size:
            return
        sums = rows.sum(axis=-1)
        worst = float(np.abs(sums - 1).max())
        if rows.min() < -1e-6 or worst > PROBABILITY_TOLERANCE:
            raise InputError(
                f"model {model!r}: output {self.output!r} is declared `head: expectation` "
                f"(probabilities over {self.width} bins), but the model's columns "
                f"{self.index}..{self.index + self.width - 1} are not probabilities "
                f"(smallest value {rows.min():.3g}, row sums up to {worst:.3g} away from 1); "
                "if the model ends without a softmax, declare `head: logits`"
            )


def _torch_of(x):
    """The torch module when ``x`` is a tensor, else None (torch is imported late)."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return None


def parse_bins(value, where: str) -> tuple[float, ...]:
    """``bins``: a list of numbers, or ``{from, to, step}`` with both ends included."""
    if isinstance(value, dict):
        if not {"from", "to"} <= set(value):
            raise InputError(f"{where}: `bins` as a range needs `from` and `to` (and `step`)")
        start, stop = float(value["from"]), float(value["to"])
        step = float(value.get("step", 1))
        if step <= 0 or stop < start:
            raise InputError(f"{where}: `bins` range needs from <= to and step > 0")
        n = int(np.floor((stop - start) / step + 1e-9)) + 1
        return tuple(float(v) for v in start + step * np.arange(n))
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        try:
            bins = tuple(float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: `bins` must be numbers") from exc
        if not all(np.isfinite(bins)):
            raise InputError(f"{where}: `bins` must be finite numbers")
        return bins
    raise InputError(f"{where}: `bins` must be a list of at least two values or {{from, to, step}}")


def parse_heads(name: str, outputs: dict, known: tuple[str, ...]) -> list[Head]:
    """The heads of a model spec's ``outputs`` (see the module's docstring)."""
    if not outputs:
        raise InputError(f"model {name!r}: `outputs` must map faceage/risk to head columns")
    heads = []
    for output, where in outputs.items():
        at = f"model {name!r}, output {output!r}"
        if output not in known:
            raise InputError(f"model {name!r}: unknown output {output!r}; use {known}")
        if not isinstance(where, dict):
            try:
                heads.append(Head(output, index=int(where)))
            except (TypeError, ValueError) as exc:
                raise InputError(f"{at}: expected a head column or a mapping") from exc
            continue
        allowed = {"head", "index", "scale", "offset", "bins", "output"}
        extra = set(where) - allowed
        if extra:
            raise InputError(f"{at}: unknown key(s) {sorted(extra)}; use {sorted(allowed)}")
        kind = where.get("head", "scalar")
        if kind not in HEAD_KINDS:
            raise InputError(f"{at}: unknown head {kind!r}; use one of {HEAD_KINDS}")
        bins = None
        if kind != "scalar":
            if "bins" not in where:
                raise InputError(f"{at}: head {kind!r} needs `bins` (the value of each column)")
            bins = parse_bins(where["bins"], at)
        elif "bins" in where:
            raise InputError(f"{at}: `bins` is for heads expectation and logits")
        index = int(where.get("index", 0))
        if index < 0:
            raise InputError(f"{at}: `index` must be >= 0")
        heads.append(
            Head(
                output,
                kind,
                where.get("output"),
                index,
                bins,
                float(where.get("scale", 1.0)),
                float(where.get("offset", 0.0)),
            )
        )
    return heads


def gathered(heads: list[Head]) -> list[Head]:
    """The heads re-based onto the matrix :func:`gather` builds (their columns side by side)."""
    out, start = [], 0
    for h in heads:
        out.append(h.at(start))
        start += h.width
    return out


def gather(heads: list[Head], sources: dict, model: str = ""):
    """One ``(N, sum of widths)`` matrix of every head's columns, in the heads' order, from
    ``sources`` (the model's outputs by name or position; ``None`` the first). Numpy arrays
    or torch tensors (kept on their device, gradients flowing)."""
    cols = []
    for h in heads:
        if h.source not in sources:
            named = [k for k in sources if k is not None]
            raise InputError(
                f"model {model!r}: output {h.output!r} reads the model output {h.source!r}; "
                f"the model gives {named}"
            )
        src = sources[h.source]
        src = src.reshape(src.shape[0], -1)
        if h.index + h.width > src.shape[1]:
            raise InputError(
                f"model {model!r}: output {h.output!r} reads head column(s) "
                f"{h.index}..{h.index + h.width - 1}; the model gives {src.shape[1]}"
            )
        cols.append(src[:, h.index : h.index + h.width])
    torch = _torch_of(cols[0])
    if torch is not None:
        return torch.cat([c.float() for c in cols], dim=1)
    return np.concatenate([np.asarray(c, dtype=np.float64) for c in cols], axis=1)
