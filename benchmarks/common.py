"""What the device benchmarks share: their command line and the machine line they print."""

from __future__ import annotations

import argparse
import platform


def device_args(argv, n: int, n_help: str = "photos", batch_cpu: int = 64, batch_cuda: int = 256):
    """Parse ``--n --device --model --batch --rounds``; return ``(args, device, cuda, batch)``."""
    from audit.models.inference import best_device

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=n, help=n_help)
    ap.add_argument("--device", default=None)
    ap.add_argument("--model", default="demo:faceage")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="repeats of the timed comparisons, alternated (median reported)",
    )
    args = ap.parse_args(argv)
    device = args.device or best_device()
    cuda = device.startswith("cuda")
    return args, device, cuda, args.batch or (batch_cuda if cuda else batch_cpu)


def machine_line(device: str) -> str:
    import torch

    return f"machine: {platform.machine()}, {torch.get_num_threads()} threads, device {device}" + (
        f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else ""
    )
