"""``predictions:COLUMN``: a cohort's own precomputed prediction columns.

Short forms:
``predictions:faceage`` (the cohort's ``faceage`` column as output ``faceage``),
``predictions:risk``, ``predictions:faceage,risk`` (both, one model). In a YAML spec,
``outputs`` maps output name -> cohort column, e.g. ``{faceage: faceage, risk: risk}``.
The columns are the cohort's standard columns (mapped through cohort.yaml) or raw ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.models.registry import (
    OUTPUT_NAMES,
    PREDICTION_COLUMNS,
    ModelAdapter,
    ModelSpec,
    Predictions,
    register_model,
)


def _short(rest: str) -> dict:
    columns = [c.strip() for c in rest.split(",") if c.strip()]
    if not columns:
        raise InputError("--model predictions:COLUMN needs at least one column")
    outputs = {}
    for col in columns:
        out = col if col in OUTPUT_NAMES else ("risk" if "risk" in col.lower() else "faceage")
        outputs[out] = col
    return {"name": "predictions-" + "-".join(columns), "outputs": outputs}


@register_model("predictions", short_form=_short)
class CohortPredictions(ModelAdapter):
    """Reads predictions the cohort already carries; no images, no embeddings."""

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        outputs = dict(spec.outputs)
        if not outputs and spec.column:
            outputs = {"faceage": spec.column}
        bad = set(outputs) - set(OUTPUT_NAMES)
        if bad or not outputs:
            raise InputError(
                f"model {spec.name!r}: outputs must map {list(OUTPUT_NAMES)} to cohort columns, "
                f"got {spec.outputs}"
            )
        self._columns = {out: str(col) for out, col in outputs.items()}

    @property
    def outputs(self) -> list[str]:
        return list(self._columns)

    @property
    def needs_images(self) -> bool:
        return False

    def predict(self, cohort) -> Predictions:
        df = cohort.frame
        frames, quarantined = [], []
        for out, col in self._columns.items():
            if col not in df.columns:
                raise InputError(
                    f"{cohort.manifest_path}: model {self.name!r} reads column `{col}` for "
                    f"`{out}`, which the cohort lacks (columns: "
                    f"{sorted(c for c in df.columns if not c.startswith('_'))})"
                )
            values = pd.to_numeric(df[col], errors="coerce").astype(float)
            ok = np.isfinite(values)
            for i in df.index[~ok]:
                quarantined.append(
                    {
                        "photo_id": df.at[i, "photo_id"],
                        "stage": "predictions",
                        "severity": "error",
                        "source_file": str(cohort.manifest_path),
                        "row_number": int(df.at[i, "_row"]),
                        "column_name": col,
                        "reason": f"model {self.name!r}: no finite `{out}` prediction",
                    }
                )
            frames.append(
                pd.DataFrame(
                    {
                        "photo_id": df.loc[ok, "photo_id"].values,
                        "subject_id": df.loc[ok, "subject_id"].values,
                        "model": self.name,
                        "output": out,
                        "perturbation": "none",
                        "severity": 0,
                        "value": values[ok].values,
                    }
                )
            )
        frame = pd.concat(frames, ignore_index=True).reindex(columns=PREDICTION_COLUMNS)
        q = pd.DataFrame(quarantined) if quarantined else None
        return Predictions(
            frame=frame,
            quarantine=q,
            notes=["precomputed predictions read from the cohort; no inference"],
        )
