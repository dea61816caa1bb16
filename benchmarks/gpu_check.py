"""GPU checks, for a session that is lent a device: one script, one call.

    python benchmarks/gpu_check.py [--n 4000]   # prints a Markdown report for RESULTS.md

1. The demo models give the same predictions on CUDA (bf16 autocast, channels_last) as on
   the CPU (float32), within bf16 tolerance.
2. Inference throughput on CUDA for a rendered cohort, by batch size, against the CPU: with
   the JPEGs decoded on the GPU (nvJPEG, the default for cropped cohorts on CUDA) and with
   them decoded in DataLoader workers (pinned memory).
3. The two decoders' pixels side by side (nvJPEG's IDCT may differ from libjpeg-turbo's by a
   level or two), and what that does to the predictions.
Exits 2 when no CUDA device is present (``--device cpu`` runs the same on the CPU, as a dry
run of the script).
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

    from audit.data.cohort import load_cohort
    from audit.demo.world import write_cohort
    from audit.models import create_model
    from audit.models.inference import iter_decoded, run_batched

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000, help="rendered photos")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    n, device = args.n, args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="faceage-gpu-"))
    t0 = time.perf_counter()
    cohort = load_cohort(write_cohort(tmp / "c", n, seed=77, photos=True))
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"rendered and loaded {n:,} photos in {time.perf_counter() - t0:.1f} s\n")
    paths = [cohort.image_file(p) for p in cohort.frame["image_path"]]
    print(
        "| model | device | decode | batch | img/s | max abs diff vs CPU |\n"
        "| --- | --- | --- | ---: | ---: | ---: |"
    )
    for spec in ("demo:faceage", "demo:survival"):
        cpu = create_model(spec)
        cpu.load("cpu")
        ref = run_batched(cpu.forward, paths, 112, "imagenet", device="cpu", decode="workers")
        print(f"| {cpu.name} | cpu | workers | 64 | {ref.ok.sum() / ref.seconds:.0f} | 0 |")
        gpu = create_model(spec)
        gpu.load(device)
        for decode, batch in (("device", 64), ("device", 256), ("device", 1024), ("workers", 256)):
            res = run_batched(
                gpu.forward, paths, 112, "imagenet", device=device, batch_size=batch, decode=decode
            )
            diff = float(np.nanmax(np.abs(res.outputs - ref.outputs)))
            print(
                f"| {gpu.name} | {device} | {decode} | {batch} | "
                f"{res.ok.sum() / res.seconds:.0f} | {diff:.4f} |",
                flush=True,
            )

    # the decoders side by side, on the same 256 photos
    first = paths[:256]
    by_workers = next(
        iter_decoded(first, 112, device=device, batch_size=256, workers=0, decode="workers")
    )[1]
    on_device = next(
        iter_decoded(first, 112, device=device, batch_size=256, workers=0, decode="device")
    )[1]
    pixel = (by_workers.int() - on_device.int()).abs()
    print(
        f"\ndecoders on {len(first)} photos: libjpeg-turbo (workers) vs torchvision on "
        f"{device}: max pixel difference {int(pixel.max())}, "
        f"mean {float(pixel.float().mean()):.3f}, "
        f"share of values more than 2 levels apart {float((pixel > 2).float().mean()):.4%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
