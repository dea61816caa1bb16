"""A new user's first audit: ``faceage-audit run --preset quick`` with their own model on 100
real-size photos, timed end to end as they would run it (a fresh process, the temporary
Prefect server included).

The photos are the synthetic world's faces upscaled to 512 x 512 JPEGs (quality 90), as a
camera or a site's crop tool delivers them; the model is the one a user brought in issue 20's
trial: a timm resnet18 with a one-output head, saved as safetensors (random weights: the
timing, not the verdict, is measured). Prints the wall time and the terminal's summary.

    python benchmarks/first_run.py [--n 100] [--size 512] [--preset quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def user_photos(folder: Path, n: int, size: int) -> Path:
    """A cohort folder of ``n`` subjects with ``size`` px JPEG face photos (cropped)."""
    import pandas as pd
    from PIL import Image

    from audit.demo.world import write_cohort

    cohort = write_cohort(folder, n, seed=20, photos=True)
    manifest = pd.read_csv(cohort / "manifest.csv")
    for rel in manifest["image_path"]:
        path = cohort / "images" / rel
        Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC).save(path, quality=90)
    return cohort


def user_model(folder: Path) -> Path:
    """A timm resnet18 with one output, saved as safetensors, and its model spec."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=1)
    save_file(net.state_dict(), str(folder / "resnet18_age.safetensors"))
    spec = folder / "resnet18_age.yaml"
    spec.write_text(
        "name: resnet18-age\nkind: timm\narch: resnet18\narch_kwargs: {num_classes: 1}\n"
        "checkpoint: resnet18_age.safetensors\ninput_size: 224\nnormalize: imagenet\n"
        "outputs: {faceage: {index: 0, scale: 10.0, offset: 60.0}}\n"
    )
    return spec


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--preset", default="quick")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="first-run-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        cohort = user_photos(tmp / "cohort", args.n, args.size)
        spec = user_model(tmp)
        print(f"prepared {args.n} photos and the model in {time.perf_counter() - start:.1f} s")
        env = dict(os.environ, PREFECT_HOME=str(tmp / "prefect"))
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
        command = [
            *(sys.executable, "-m", "audit.cli", "run"),
            *("--cohort", str(cohort), "--model", str(spec)),
            *("--out", str(tmp / "out"), "--preset", args.preset),
        ]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        print(done.stderr[-4000:])
        print(
            f"faceage-audit run --preset {args.preset}: {args.n} photos of {args.size} px, "
            f"one timm resnet18 (224 px): {seconds:.1f} s wall, exit {done.returncode}"
        )


if __name__ == "__main__":
    main()
