"""Face detection on raw 512-px photos: dlib's HOG detector (with its 5-point landmarks and
a 64-px chip) against OpenCV's Haar cascade, in one process; and the decoding pass a model
sees (decode, detect, crop in the DataLoader workers) against the model's own speed, to show
whether the model waits on the detector.

The photos: skimage's real astronaut photo and the first lfw_subset faces, placed at random
sizes and positions on 512 x 512 backgrounds (JPEG, quality 90): one face each, as raw.

    python benchmarks/faces.py [--n 120]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def raw_photos(folder: Path, n: int) -> list[Path]:
    """``n`` 512-px JPEGs, one real face each, at 120-260 px and random positions."""
    import cv2
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(0)
    faces = [data.astronaut()[40:260, 130:330]]
    for face in data.lfw_subset()[:30]:
        grey = (face * 255).astype(np.uint8)
        faces.append(np.repeat(grey[..., None], 3, axis=2))
    paths = []
    for i in range(n):
        face = faces[i % len(faces)]
        side = int(rng.integers(120, 260))
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((512, 512, 3), rng.integers(40, 200, 3), np.uint8)
        x, y = (int(v) for v in rng.integers(0, 512 - side, 2))
        canvas[y : y + side, x : x + side] = face
        paths.append(folder / f"p{i:04d}.jpg")
        Image.fromarray(canvas).save(paths[-1], quality=90)
    return paths


def main() -> None:
    from audit.data.faces import Crop, detect
    from audit.data.images import decode_rgb
    from audit.models import create_model
    from audit.models.inference import iter_decoded

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = raw_photos(Path(tmp), args.n)
        images = [decode_rgb(p) for p in paths]
        print(f"{len(paths)} raw photos of 512 x 512 px, one face each")
        for detector in ("dlib", "opencv"):
            detect(images[0], detector)  # models loaded before the clock starts
            start = time.perf_counter()
            found = [len(detect(im, detector)) for im in images]
            seconds = time.perf_counter() - start
            print(
                f"  {detector:6s} detect + landmarks, one process: {len(images) / seconds:6.1f} "
                f"photos/s ({1000 * seconds / len(images):.1f} ms each); exactly one face in "
                f"{sum(f == 1 for f in found)} of {len(found)}"
            )
        crop = Crop(method="chip", padding=0.2)
        start = time.perf_counter()
        for im in images:
            try:
                crop.apply(im, 64)
            except ValueError:
                pass
        seconds = time.perf_counter() - start
        print(f"  dlib detect + landmarks + 64-px chip:  {len(images) / seconds:6.1f} photos/s")

        model = create_model("builtin:dlib-age")
        model.load("cpu")
        batches = list(iter_decoded(paths, 64, device="cpu", batch_size=32, workers=0, crop=crop))
        start = time.perf_counter()
        for _, x, _ in batches:
            model.forward(x.permute(0, 3, 1, 2).float())
        model_rate = len(paths) / (time.perf_counter() - start)
        for workers in (0, 2):
            start = time.perf_counter()
            for _ in iter_decoded(
                paths, 64, device="cpu", batch_size=32, workers=workers, crop=crop
            ):
                pass
            rate = len(paths) / (time.perf_counter() - start)
            print(
                f"  decode + detect + chip in {workers} DataLoader worker(s): {rate:6.1f} "
                f"photos/s; the dlib-age model alone: {model_rate:6.1f} photos/s"
            )


if __name__ == "__main__":
    main()
