"""Model adapters behind one interface, in one registry (as timm's ``register_model``).

Every adapter turns a cohort into tidy predictions: one row per photo and named output
(``faceage`` in years, ``risk`` higher = worse), plus embeddings when the model has them.
Adapters register themselves in :mod:`audit.models.registry`; this package imports each
adapter module explicitly so that registering is never a side effect of a star import.
"""

# Each adapter module registers itself on import; import them explicitly, once.
from audit.models import builtin as _builtin  # noqa: F401,E402  (short form builtin:NAME)
from audit.models import demo as _demo  # noqa: F401,E402  (short forms demo:faceage, demo:survival)
from audit.models import onnx_adapter as _onnx  # noqa: F401,E402  (kind `onnx`)
from audit.models import predictions as _predictions  # noqa: F401,E402  (kind `predictions`)
from audit.models import timm_adapter as _timm  # noqa: F401,E402  (kind `timm`)
from audit.models import torchscript_adapter as _ts  # noqa: F401,E402  (kind `torchscript`)
from audit.models.registry import (
    ModelAdapter,
    ModelSpec,
    Predictions,
    create_model,
    list_models,
    parse_model_spec,
    register_model,
    register_short_form,
)

__all__ = [
    "ModelAdapter",
    "ModelSpec",
    "Predictions",
    "create_model",
    "list_models",
    "parse_model_spec",
    "register_model",
    "register_short_form",
]
