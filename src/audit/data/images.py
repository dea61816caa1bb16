"""Per-image properties, computed once per photo and kept for validation and drift.

For every photo: whether it decodes, its real format against its file name, size, colour
mode, EXIF orientation, brightness, contrast, sharpness (variance of the Laplacian), an
estimate of its JPEG quality, SHA-256 and a normalised 16x16 thumbnail (kept in memory only)
for near duplicates, and, for raw photos (cohorts not ``cropped``), the faces the cohort's
detector finds (:mod:`audit.data.faces`: dlib's HOG detector and 5-point landmarks by
default). Photos are streamed through a process pool (one worker a core), so memory
stays bounded whatever the cohort size.

Pillow's decompression-bomb limit stays on: an image over it is reported, never decoded.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from audit.data.faces import detect

PROPERTY_COLUMNS = [
    "photo_id",
    "width",
    "height",
    "mode",
    "format",
    "format_matches_name",
    "decodable",
    "error",
    "exif_orientation",
    "brightness",
    "contrast",
    "sharpness",
    "jpeg_quality",
    "face_count",
    "face_box_frac",
    "sha256",
]
FORMAT_OF_SUFFIX = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
# IJG standard luminance quantisation table (quality 50), in zigzag-free row order.
_IJG_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    dtype=float,
)


def estimate_jpeg_quality(quantization: dict | None) -> float | None:
    """IJG quality (1-100) that best explains a JPEG's luminance quantisation table."""
    if not quantization or 0 not in quantization:
        return None
    table = np.asarray(quantization[0], dtype=float)
    if table.size != 64:
        return None
    best, best_err = None, np.inf
    for q in range(1, 101):
        scale = 5000 / q if q < 50 else 200 - 2 * q
        expected = np.clip(np.floor((_IJG_LUMA * scale + 50) / 100), 1, 255)
        # Pillow gives the table in zigzag order for some versions: compare sorted values too.
        err = min(np.abs(np.sort(expected) - np.sort(table)).sum(), np.abs(expected - table).sum())
        if err < best_err:
            best, best_err = q, err
    return float(best)


def thumbnail(gray: np.ndarray, side: int = 16) -> np.ndarray:
    """A side x side greyscale thumbnail, zero-mean and unit-norm (float32), or zeros for a
    flat image. Re-encoded or re-edited copies of one photo have a cosine similarity above
    0.999; different people in one rendered cohort stayed under 0.99 (measured)."""
    import cv2

    small = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 1e-6 else np.zeros_like(small)


def decode_rgb(path: str | Path) -> np.ndarray:
    """A photo as uint8 RGB with its EXIF orientation applied (any mode converted).

    The file is read once. Pillow reads the header first (its decompression-bomb limit
    applies); colour JPEGs that end with their end-of-image marker are then decoded by
    OpenCV from the same bytes, about 1.6x faster here, which applies EXIF orientation
    itself. A truncated JPEG goes to Pillow, which refuses it: OpenCV would decode it
    without complaint, grey below the cut.
    """
    import io

    from PIL import Image, ImageOps

    data = Path(path).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG" and im.mode == "RGB" and data[-2:] == b"\xff\xd9":
                import cv2

                bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
                if bgr is not None:
                    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            im.load()
            if im.getexif().get(0x0112, 1) not in (None, 1):
                im = ImageOps.exif_transpose(im)
            if im.mode == "RGB":  # no conversion, no extra copy
                return np.asarray(im)
            return to_rgb8(im)


def to_rgb8(im) -> np.ndarray:
    """Any Pillow image as uint8 RGB: 16-bit scaled down, CMYK converted, alpha on white."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def inspect_image(path: str | Path, photo_id: str = "", detector: str | None = None) -> dict:
    """Every property of one photo (see :data:`PROPERTY_COLUMNS`), its faces found with
    ``detector`` (None: no detection); never raises."""
    from PIL import Image, ImageOps

    path = Path(path)
    row: dict = {c: None for c in PROPERTY_COLUMNS}
    row.update(photo_id=photo_id, decodable=False, format_matches_name=None)
    try:
        data = path.read_bytes()
    except OSError as exc:
        row["error"] = f"cannot read file: {exc.strerror or exc}"
        return row
    row["sha256"] = hashlib.sha256(data).hexdigest()
    if not data:
        row["error"] = "empty file (0 bytes)"
        return row
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                row["format"] = im.format
                row["width"], row["height"] = im.size
                row["mode"] = im.mode
                row["exif_orientation"] = int(im.getexif().get(0x0112, 1) or 1)
                if im.format == "JPEG":
                    row["jpeg_quality"] = estimate_jpeg_quality(getattr(im, "quantization", None))
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = to_rgb8(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        row["error"] = f"decompression bomb refused (Pillow's pixel limit): {exc}"
        return row
    except Exception as exc:  # Pillow raises many types for broken files
        row["error"] = f"cannot decode: {type(exc).__name__}: {exc}"
        return row
    expected = FORMAT_OF_SUFFIX.get(path.suffix.lower())
    row["format_matches_name"] = expected is None or expected == row["format"]
    row["width"], row["height"] = rgb.shape[1], rgb.shape[0]
    row["decodable"] = True
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    row["brightness"] = float(gray.mean())
    row["contrast"] = float(gray.std())
    row["sharpness"] = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    row["_thumb"] = thumbnail(gray)
    if detector:
        try:
            faces = detect(rgb, detector)
        except Exception as exc:  # a detector that cannot run is reported per photo
            row["error"] = f"face detection failed: {type(exc).__name__}: {exc}"
            return row
        row["face_count"] = len(faces)
        if faces:
            largest = faces[0]
            row["face_box_frac"] = float(
                largest["w"] * largest["h"] / (gray.shape[0] * gray.shape[1])
            )
            row["_boxes"] = faces
    return row


def _inspect_chunk(args) -> list[dict]:
    items, detector = args
    return [inspect_image(path, pid, detector) for pid, path in items]


def image_properties(
    items: Iterable[tuple[str, Path]],
    detector: str | None = None,
    workers: int | None = None,
    chunk: int = 64,
    progress: Callable | None = None,
    total: int | None = None,
) -> pd.DataFrame:
    """Properties of every ``(photo_id, path)``, streamed through ``workers`` processes."""
    workers = workers or os.cpu_count() or 1
    items = list(items)
    chunks = [(items[i : i + chunk], detector) for i in range(0, len(items), chunk)]
    rows: list[dict] = []
    if workers <= 1 or len(items) <= chunk:
        results = map(_inspect_chunk, chunks)
        for part in progress(results, len(chunks)) if progress else results:
            rows.extend(part)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            results = pool.map(_inspect_chunk, chunks)
            for part in progress(results, len(chunks)) if progress else results:
                rows.extend(part)
    frame = pd.DataFrame(rows)
    for col in PROPERTY_COLUMNS + ["_boxes", "_thumb"]:
        if col not in frame:
            frame[col] = None
    return frame


def near_duplicate_pairs(
    photo_ids, thumbs: list, subjects, min_similarity: float = 0.998, block: int = 2048
) -> pd.DataFrame:
    """Pairs of photos of *different* subjects whose thumbnails (:func:`thumbnail`) have a
    cosine similarity of at least ``min_similarity``: possible leakage, one photo filed under
    two patients. ``thumbs`` holds None for photos that are not compared."""
    keep = [i for i, t in enumerate(thumbs) if t is not None and np.any(t)]
    if not keep:
        return pd.DataFrame(columns=["photo_a", "photo_b", "similarity"])
    ids = np.asarray(photo_ids, dtype=object)[keep]
    subj = np.asarray(subjects, dtype=object)[keep]
    x = np.stack([thumbs[i] for i in keep]).astype(np.float32)
    out = []
    for start in range(0, len(x), block):
        sim = x[start : start + block] @ x.T
        ii, jj = np.nonzero(sim >= min_similarity)
        i_abs = ii + start
        mask = (jj > i_abs) & (subj[i_abs] != subj[jj])
        for i, j in zip(i_abs[mask], jj[mask]):
            out.append(
                {"photo_a": ids[i], "photo_b": ids[j], "similarity": float(sim[i - start, j])}
            )
    return pd.DataFrame(out, columns=["photo_a", "photo_b", "similarity"])
