"""``demo:faceage`` and ``demo:survival``: the two small demo models shipped with the package.

Both are timm ``test_resnet`` networks trained on synthetic faces by
:mod:`audit.demo.train` (the recipe and validation metrics are in
``audit/demo/weights/recipe.json``); the short forms expand to full ``timm`` specs whose
``sha256`` pins the shipped weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from audit.errors import InputError
from audit.models.registry import register_short_form

WEIGHTS = Path(__file__).resolve().parents[1] / "demo" / "weights"

CARDS = {
    "faceage": {
        "version": "demo-1",
        "intended_use": "demonstrating faceage-audit on synthetic faces; never on real people",
        "training_data": "synthetic healthy reference population (faceage-audit demo world), "
        "chronological age as the target, the Black group kept to 1% (underserved on purpose)",
        "population": "synthetic",
    },
    "survival": {
        "version": "demo-1",
        "intended_use": "demonstrating faceage-audit on synthetic faces; never on real people",
        "training_data": "synthetic cancer population (faceage-audit demo world); the demo "
        "FaceAge backbone fine-tuned with the Cox partial likelihood",
        "population": "synthetic",
    },
}


def demo_spec(which: str) -> dict:
    """The full model spec of a shipped demo model."""
    if which not in CARDS:
        raise InputError(f"--model demo:{which}: expected demo:faceage or demo:survival")
    recipe_path = WEIGHTS / "recipe.json"
    if not recipe_path.is_file():
        raise InputError(
            f"{recipe_path}: the demo weights are missing; run "
            "`python -m audit.demo.train` to make them"
        )
    recipe = json.loads(recipe_path.read_text())
    entry = recipe["files"][f"demo_{which}"]
    output = (
        {"faceage": {"index": 0, "scale": recipe["age_scale"], "offset": recipe["age_offset"]}}
        if which == "faceage"
        else {"risk": 0}
    )
    return {
        "name": f"demo-{which}",
        "kind": "timm",
        "arch": recipe["arch"],
        "arch_kwargs": {"num_classes": 1},
        "checkpoint": str(WEIGHTS / entry["file"]),
        "input_size": 112,
        "normalize": "imagenet",
        "outputs": output,
        "sha256": entry["sha256"],
        "card": CARDS[which],
    }


register_short_form("demo", demo_spec)
