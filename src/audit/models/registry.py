"""The model registry, the model spec (as the README states it) and the adapter interface."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from audit.errors import InputError
from audit.models.spec_presets import with_preset
from audit.pipeline.schema import columns

OUTPUT_NAMES = ("faceage", "risk")
PREDICTION_COLUMNS = columns("predictions")


class ModelSpec(BaseModel):
    """A model as the user declares it (YAML file or short form)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    arch: str | None = None
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    state_dict_key: str | None = None
    # timm checkpoints: key prefixes renamed in order ({old: new}; new null drops the keys)
    rename_keys: dict[str, str | None] = Field(default_factory=dict)
    input_size: int | None = None
    layout: str = "nchw"
    channels: str = "rgb"  # rgb, or bgr for a model trained on OpenCV-decoded photos
    normalize: Any = None
    # raw photos: how the face is cut out ({method: aligned|box|chip, margin, padding})
    crop: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    embeddings: Any = None
    card: dict[str, Any] = Field(default_factory=dict)
    # golden photos and the outputs the model's own code gives on them (audit.models.parity)
    reference: dict[str, Any] | None = None
    sha256: str | None = None
    column: str | None = None  # kind `predictions`: the cohort column(s) holding the values
    compile: bool = False  # torch models: torch.compile the forward pass (worth it on GPUs)
    spec_dir: str | None = Field(None, exclude=True)  # where a YAML spec lives (relative paths)

    @field_validator("layout", "channels")
    @classmethod
    def _one_of(cls, value, info):
        allowed = {"layout": ("nchw", "nhwc"), "channels": ("rgb", "bgr")}[info.field_name]
        if value not in allowed:
            raise ValueError(f"{info.field_name} must be one of {allowed}, not {value!r}")
        return value

    def resolve(self, path: str) -> Path:
        """A path from the spec, relative to the spec file's folder when not absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.spec_dir is None else Path(self.spec_dir) / p

    def identity(self) -> dict:
        """What the run stores about the model: name, kind and a digest of the spec."""
        spec_json = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return {
            "name": self.name,
            "kind": self.kind,
            "spec_sha256": hashlib.sha256(spec_json.encode()).hexdigest(),
            "checkpoint_sha256": self.sha256,
            "arch": self.arch,
            "card": self.card,
            "input_size": self.input_size,
            "layout": self.layout,
            "normalize": self.normalize,
        }


@dataclass
class Predictions:
    """What an adapter returns: tidy predictions, optional embeddings, and skipped rows."""

    frame: pd.DataFrame
    embeddings: pd.DataFrame | None = None
    quarantine: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    # New entries for the prediction cache (image_sha256, output, value / vector).
    cache_values: pd.DataFrame | None = None
    cache_vectors: pd.DataFrame | None = None
    n_cached: int = 0  # photos whose predictions came from the cache
    n_computed: int = 0  # photos run through the model
    seconds: float | None = None  # wall time of the photos run through the model
    worker: str | None = None  # host:pid of the process that computed them


class ModelAdapter(ABC):
    """One model, ready to predict on a cohort."""

    kind: str = ""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    @abstractmethod
    def outputs(self) -> list[str]:
        """The named outputs this model produces (a subset of ``faceage``, ``risk``)."""

    @property
    def needs_images(self) -> bool:
        return True

    def identity(self) -> dict:
        """What a run records about this model (name, kind, digests)."""
        return self.spec.identity()

    @abstractmethod
    def predict(self, cohort) -> Predictions:
        """Predictions for every good row of ``cohort`` (an :class:`audit.data.cohort.Cohort`)."""


_REGISTRY: dict[str, Callable[[ModelSpec], ModelAdapter]] = {}
_SHORT_FORMS: dict[str, Callable[[str], dict]] = {}


def register_short_form(prefix: str, expand: Callable[[str], dict]) -> None:
    """``--model PREFIX:ARGS`` expands to the spec dict ``expand(ARGS)``."""
    if prefix in _SHORT_FORMS:
        raise ValueError(f"model short form {prefix!r} is already registered")
    _SHORT_FORMS[prefix] = expand


def register_model(kind: str, short_form: Callable[[str], dict] | None = None):
    """Class decorator: register an adapter for ``kind`` (duplicate names raise)."""

    def wrap(cls):
        if kind in _REGISTRY:
            raise ValueError(f"model kind {kind!r} is already registered")
        cls.kind = kind
        _REGISTRY[kind] = cls
        if short_form is not None:
            register_short_form(kind, short_form)
        return cls

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    return sorted(k for k in _REGISTRY if fnmatch.fnmatch(k, pattern))


def parse_model_spec(text: str | Path) -> ModelSpec:
    """A ``--model`` value: a YAML file, or a short form such as ``predictions:faceage``."""
    text = str(text)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise InputError(f"{path}: model spec not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML: {exc}") from exc
        source = str(path)
        if isinstance(data, dict):
            data.setdefault("spec_dir", str(path.resolve().parent))
    else:
        kind, sep, rest = text.partition(":")
        if not sep or kind not in _SHORT_FORMS:
            raise InputError(
                f"--model {text!r}: expected a YAML file or KIND:ARGS with KIND one of "
                f"{sorted(_SHORT_FORMS)}"
            )
        data = _SHORT_FORMS[kind](rest)
        data.setdefault("kind", kind)
        source = f"--model {text}"
    data = with_preset(data, source)
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"`{'.'.join(map(str, e['loc']))}`: {e['msg']}" for e in exc.errors())
        raise InputError(f"{source}: {problems}") from exc
    if spec.kind not in _REGISTRY:
        raise InputError(f"{source}: unknown model kind {spec.kind!r}; known: {list_models()}")
    return spec


def create_model(spec: ModelSpec | str) -> ModelAdapter:
    if not isinstance(spec, ModelSpec):
        spec = parse_model_spec(spec)
    return _REGISTRY[spec.kind](spec)
