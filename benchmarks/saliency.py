"""Saliency audit cost: seconds per photo of each attribution method on 112-px crops, in
clean forward passes (a photo's clean pass = 1), against the robustness suite.

    python benchmarks/saliency.py [--n 32] [--device cpu|cuda] [--model demo:faceage]

Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import device_args, machine_line


def main(argv=None) -> None:
    import numpy as np
    import torch

    from audit.data.cohort import load_cohort
    from audit.demo.world import write_cohort
    from audit.models import create_model
    from audit.models.inference import decode_image
    from audit.saliency import maps as sal

    args, device, cuda, batch = device_args(argv, 32, batch_cpu=16, batch_cuda=64)
    print(machine_line(device))
    with tempfile.TemporaryDirectory() as tmp:
        cohort = load_cohort(write_cohort(Path(tmp) / "c", args.n, seed=5, photos=True))
        x = torch.stack(
            [
                torch.from_numpy(np.array(decode_image(cohort.image_file(p), 112)))
                .permute(2, 0, 1)
                .float()
                / 255
                for p in cohort.frame["image_path"]
            ]
        )
    x = x.to(device)
    (target,) = sal.model_targets(create_model(args.model), device)

    def timed(fn) -> float:
        fn(x[:batch])  # warm up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            fn(x[i : i + batch])
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / len(x)

    with torch.no_grad():
        clean = timed(target.fn)
    print(f"\nclean pass: {1 / clean:,.0f} photos/s ({args.model}, batch {batch})\n")
    print("| method | settings | ms per photo | clean passes per photo |")
    print("| --- | --- | ---: | ---: |")
    runs = [
        ("occlusion", {"window": 16, "stride": 8}),
        ("occlusion", {"window": 16, "stride": 16}),
        ("gradient_x_input", {}),
        ("integrated_gradients", {"steps": 16}),
        ("grad_cam", {}),
        ("attention_rollout", {}),
    ]
    total = 0.0
    for name, kw in runs:
        if not sal.applicable(name, target):
            continue
        fn = sal.create_attribution(name, **kw)
        per = timed(lambda b, fn=fn: fn(target, b))
        if kw != {"window": 16, "stride": 16}:
            total += per
        settings = ", ".join(f"{k} {v}" for k, v in kw.items()) or "-"
        print(f"| {name} | {settings} | {1000 * per:,.1f} | {per / clean:,.0f} |")
    print(
        f"\nevery method at its default settings: {1000 * total:,.0f} ms per photo, "
        f"{total / clean:,.0f} clean passes (the robustness suite's default: 107)"
    )


if __name__ == "__main__":
    main()
