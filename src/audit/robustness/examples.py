"""What each perturbation does, drawn once per run by the robustness stage and stored (table
``figures``): every perturbation at the severities run, applied to a synthetic face from the
demo renderer, never a cohort photo, so that a reader of the page sees what a severity
means."""

from __future__ import annotations

import numpy as np

from audit.demo.faces import example_face
from audit.report import plots
from audit.robustness.perturbations import create_perturbation

ALT = (
    "Each perturbation at the severities run, applied to a synthetic face drawn by the demo "
    "renderer (not a cohort photo); the crop family, which cuts the raw photo again, is not "
    "drawn."
)


def perturbation_examples(names: list[str], severities: list[int]) -> dict:
    """``{"uri", "alt"}``: one row per perturbation, the clean face and up to three of the
    severities run (1, 3 and 5 when run)."""
    import torch  # heavy: loaded when the figure is drawn

    face = example_face()
    x = torch.from_numpy(np.array(face)).permute(2, 0, 1)[None].float() / 255
    shown = sorted(set(severities) & {1, 3, 5}) or sorted(severities)[:3]
    tiles, labels = [], []
    for name in names:
        p = create_perturbation(name, layout="demo")
        if p.recrops:  # a change of the cut from a raw photo: no image change to draw here
            continue
        row = [face]
        for s in shown:
            if s in p.levels:
                y = p(x, s, [0])
                row.append((y[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
            else:
                row.append(np.full_like(face, 255))
        tiles.append(row)
        labels.append(name)
    grid = plots.image_grid(tiles, labels, ["clean"] + [f"severity {s}" for s in shown])
    return {"uri": plots.to_uri(grid), "alt": ALT}
