"""Inference throughput, side by side in one run: decode only, model only, end to end, and
the naive loop of the original FaceAge code (one image at a time, one predict call each).

    python benchmarks/inference.py [--n 2000] [--device cpu|cuda] [--model demo:faceage]

Target (issue 5): for pre-cropped 112-px faces, end to end at least 85% of the model-only
batched throughput on this CPU; on a GPU at least 80% of model-only and 50x the naive loop.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from common import device_args


def main(argv=None) -> None:
    import torch
    from torch.utils.data import DataLoader

    from audit.cohort import load_cohort
    from audit.demo.world import write_cohort
    from audit.inference import PhotoDataset, _collate, decode_image, normalize_batch, run_batched
    from audit.models import create_model

    args, device, cuda, batch = device_args(argv, 2000)
    tmp = Path(tempfile.mkdtemp(prefix="faceage-infer-"))
    cohort = load_cohort(write_cohort(tmp / "c", args.n, 3, photos=True))
    paths = [cohort.image_file(p) for p in cohort.frame["image_path"]]
    model = create_model(args.model)
    model.load(device)
    size, norm = model.input_size, model.normalize
    rows = []

    # decode only: the DataLoader alone
    start = time.perf_counter()
    loader = DataLoader(PhotoDataset(paths, size), batch_size=batch, num_workers=2,
                        collate_fn=_collate, pin_memory=cuda)
    for _ in loader:
        pass
    rows.append(("decode only (DataLoader, 2 workers)", len(paths) / (time.perf_counter() - start)))

    # model only: decoded batches already in memory
    images = torch.from_numpy(np.stack([decode_image(p, size) for p in paths]))
    batches = [images[i:i + batch] for i in range(0, len(images), batch)]
    with torch.inference_mode():
        for b in batches[:2]:  # warm-up
            model.forward(normalize_batch(b.to(device).permute(0, 3, 1, 2).float() / 255, norm))
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in batches:
            x = normalize_batch(b.to(device).permute(0, 3, 1, 2).float() / 255, norm)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                model.forward(x)
        if cuda:
            torch.cuda.synchronize()
    model_only = len(paths) / (time.perf_counter() - start)
    rows.append((f"model only (batch {batch}, decoded in memory)", model_only))

    # end to end: what an audit runs
    result = run_batched(model.forward, paths, size, norm, device=device, batch_size=batch)
    end_to_end = result.ok.sum() / result.seconds
    rows.append(("end to end (run_batched)", end_to_end))

    # the naive loop: decode one image, one predict call, as the original FaceAge code does
    k = min(len(paths), 300)
    start = time.perf_counter()
    with torch.inference_mode():
        for p in paths[:k]:
            x = torch.from_numpy(decode_image(p, size))[None].to(device).permute(0, 3, 1, 2)
            model.forward(normalize_batch(x.float() / 255, norm))
    naive = k / (time.perf_counter() - start)
    rows.append((f"naive loop (one image per call, {k} photos)", naive))

    print(f"Machine: {platform.machine()}, device {device}"
          + (f" ({torch.cuda.get_device_name(0)})" if cuda else "")
          + f", torch {torch.__version__}, model {args.model}, {len(paths)} photos of 112 px\n")
    print("| what | images/s |\n| --- | ---: |")
    for label, rate in rows:
        print(f"| {label} | {rate:,.0f} |")
    print(f"\nend to end / model only: {end_to_end / model_only:.0%}; "
          f"end to end / naive loop: {end_to_end / naive:.1f}x")


if __name__ == "__main__":
    main()
