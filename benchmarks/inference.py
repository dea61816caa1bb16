"""Inference throughput, side by side in one run: decode only, model only, end to end, and
the naive loop of the original FaceAge code (one image at a time, one predict call each).

    python benchmarks/inference.py [--n 2000] [--device cpu|cuda] [--model demo:faceage]
                                   [--rounds 3]

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

    from audit.data.cohort import load_cohort
    from audit.demo.world import write_cohort
    from audit.models import create_model
    from audit.models.inference import (
        PhotoDataset,
        _collate,
        decode_image,
        normalize_batch,
        run_batched,
    )

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
    loader = DataLoader(
        PhotoDataset(paths, size),
        batch_size=batch,
        num_workers=2,
        collate_fn=_collate,
        pin_memory=cuda,
    )
    for _ in loader:
        pass
    rows.append(
        (
            "decode only (DataLoader, 2 workers)",
            np.array([len(paths) / (time.perf_counter() - start)]),
        )
    )

    # model only (decoded batches already in memory) and end to end (what an audit runs),
    # in alternating rounds: on a shared machine the speed drifts by a fifth between minutes,
    # so the ratio is taken within each round and the median reported.
    images = torch.from_numpy(np.stack([decode_image(p, size) for p in paths]))
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]

    def model_only() -> float:
        with torch.inference_mode():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for b in batches:
                x = normalize_batch(b.to(device).permute(0, 3, 1, 2).float() / 255, norm)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    model.forward(x)
            if cuda:
                torch.cuda.synchronize()
        return len(paths) / (time.perf_counter() - start)

    def end_to_end() -> float:
        result = run_batched(model.forward, paths, size, norm, device=device, batch_size=batch)
        return result.ok.sum() / result.seconds

    with torch.inference_mode():
        for b in batches[:2]:  # warm-up
            model.forward(normalize_batch(b.to(device).permute(0, 3, 1, 2).float() / 255, norm))
    rounds = [(model_only(), end_to_end()) for _ in range(args.rounds)]
    model_rates, e2e_rates = np.array(rounds).T
    ratios = e2e_rates / model_rates
    model_rate, end_rate = float(np.median(model_rates)), float(np.median(e2e_rates))
    rows.append((f"model only (batch {batch}, decoded in memory)", model_rates))
    rows.append(("end to end (run_batched)", e2e_rates))

    # the naive loop: decode one image, one predict call, as the original FaceAge code does
    k = min(len(paths), 300)
    start = time.perf_counter()
    with torch.inference_mode():
        for p in paths[:k]:
            x = torch.from_numpy(decode_image(p, size))[None].to(device).permute(0, 3, 1, 2)
            model.forward(normalize_batch(x.float() / 255, norm))
    naive = k / (time.perf_counter() - start)
    rows.append((f"naive loop (one image per call, {k} photos)", np.array([naive])))

    print(
        f"Machine: {platform.machine()}, device {device}"
        + (f" ({torch.cuda.get_device_name(0)})" if cuda else "")
        + f", torch {torch.__version__}, model {args.model}, {len(paths)} photos of 112 px\n"
    )
    print(
        f"| what | images/s (median of {args.rounds} rounds where repeated) | range |\n"
        "| --- | ---: | --- |"
    )
    for label, rates in rows:
        spread = f"{rates.min():,.0f}-{rates.max():,.0f}" if len(rates) > 1 else ""
        print(f"| {label} | {np.median(rates):,.0f} | {spread} |")
    print(
        f"\nend to end / model only, within each round: median {np.median(ratios):.0%} "
        f"(rounds: {', '.join(f'{r:.0%}' for r in ratios)}); "
        f"end to end / naive loop: {end_rate / naive:.1f}x; model only / naive loop: "
        f"{model_rate / naive:.1f}x"
    )


if __name__ == "__main__":
    main()
