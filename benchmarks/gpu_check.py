"""GPU checks, for a session that is lent a device: one script, one call.

    python benchmarks/gpu_check.py [--n 4000]   # prints a Markdown report for RESULTS.md

1. The demo models give the same predictions on CUDA (bf16 autocast, channels_last) as on
   the CPU (float32), within bf16 tolerance.
2. Inference throughput on CUDA for a rendered cohort (decode in DataLoader workers,
   pinned memory), by batch size, against the CPU.
Exits 2 when no CUDA device is present.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    import argparse

    import torch

    from audit.cohort import load_cohort
    from audit.demo.world import write_cohort
    from audit.inference import run_batched
    from audit.models import create_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000, help="rendered photos")
    n = ap.parse_args(argv).n
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="faceage-gpu-"))
    t0 = time.perf_counter()
    cohort = load_cohort(write_cohort(tmp / "c", n, seed=77, photos=True))
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    print(f"rendered and loaded {n:,} photos in {time.perf_counter() - t0:.1f} s\n")
    paths = [cohort.image_file(p) for p in cohort.frame["image_path"]]
    print("| model | device | batch | img/s | max abs diff vs CPU |\n| --- | --- | ---: | ---: | ---: |")
    for spec in ("demo:faceage", "demo:survival"):
        cpu = create_model(spec)
        cpu.load("cpu")
        ref = run_batched(cpu.forward, paths, 112, "imagenet", device="cpu")
        print(f"| {cpu.name} | cpu | 64 | {ref.ok.sum() / ref.seconds:.0f} | 0 |")
        gpu = create_model(spec)
        gpu.load("cuda")
        for batch in (64, 256, 1024):
            res = run_batched(gpu.forward, paths, 112, "imagenet", device="cuda", batch_size=batch)
            diff = float(np.nanmax(np.abs(res.outputs - ref.outputs)))
            print(f"| {gpu.name} | cuda | {batch} | {res.ok.sum() / res.seconds:.0f} | {diff:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
