"""Robustness suite cost: each perturbation's throughput on a batch of 112-px crops, and
the full default suite (every perturbation at every severity, about 107 passes per photo)
against the clean pass, with the demo FaceAge model and photos decoded once.

    python benchmarks/robustness.py [--n 200] [--device cpu|cuda] [--model demo:faceage]

Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import device_args, machine_line


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> None:
    import torch

    from audit.data.cohort import load_cohort
    from audit.demo.world import write_cohort
    from audit.models import create_model
    from audit.robustness.perturbations import (
        create_perturbation,
        default_plan,
        face_layout,
        list_perturbations,
    )
    from audit.robustness.suite import run_suite

    args, device, cuda, batch = device_args(argv, 200, "photos in the suite run")
    print(machine_line(device))

    x = torch.rand(batch, 3, 112, 112, device=device)
    seeds = list(range(batch))
    print(f"\n| perturbation | family | images/s at severity 3 (batch {batch}, 112 px) |")
    print("| --- | --- | ---: |")
    for name in list_perturbations():
        p = create_perturbation(name)
        s = 3 if 3 in p.levels else p.levels[0]
        p(x, s, seeds)  # warm up
        _sync(device)
        reps = 0
        start = time.perf_counter()
        while time.perf_counter() - start < 0.5 or reps < 3:
            p(x, s, seeds)
            reps += 1
        _sync(device)
        rate = reps * batch / (time.perf_counter() - start)
        print(f"| {name} | {p.family} | {rate:,.0f} |")

    tmp = Path(tempfile.mkdtemp(prefix="faceage-robust-"))
    cohort = load_cohort(write_cohort(tmp / "c", args.n, 5, photos=True))
    model = create_model(args.model)
    model.load(device)
    layout = face_layout("demo")
    rows = cohort.frame
    run_suite([model], cohort, rows, [], layout=layout, seed=0, batch_size=batch)  # warm up
    timings = {}
    for label, plan in (("clean pass only", []), ("default suite", default_plan())):
        start = time.perf_counter()
        run_suite([model], cohort, rows, plan, layout=layout, seed=0, batch_size=batch)
        _sync(device)
        timings[label] = (time.perf_counter() - start, len(plan) + 1)
    clean_s = timings["clean pass only"][0]
    print(
        f"\n| run ({args.n} photos, {model.name}) | passes | seconds | images/s | "
        "cost vs clean pass |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, (seconds, passes) in timings.items():
        print(
            f"| {label} | {passes} | {seconds:.2f} | {passes * args.n / seconds:,.0f} | "
            f"{seconds / clean_s:.1f}x |"
        )


if __name__ == "__main__":
    main()
