"""Batched image inference: decode in DataLoader workers, normalise, run on the best device.

Images are decoded once (PIL, EXIF orientation applied, RGB), resized to the model's input,
batched as uint8 and pinned when a GPU is used; normalisation happens on the device. On
CUDA the model runs under ``torch.inference_mode`` with bf16 autocast and channels_last; on
the CPU in float32. A photo that cannot be decoded is quarantined with its path and reason
and the rest go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from audit.data.faces import Crop, resize
from audit.data.images import decode_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_batch(x, normalize):
    """Normalise a float batch in [0, 1] (N, C, H, W).

    ``normalize``: ``imagenet``, ``per_image`` (each image to zero mean and unit standard
    deviation, as FaceAge does), ``none``/None, or ``{mean: [...], std: [...]}``.
    """
    import torch

    if normalize in (None, "none"):
        return x
    if normalize == "per_image":
        flat = x.flatten(1)
        mean = flat.mean(dim=1).view(-1, 1, 1, 1)
        std = flat.std(dim=1).clamp(min=1.0 / np.sqrt(flat.shape[1])).view(-1, 1, 1, 1)
        return (x - mean) / std
    if normalize == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif isinstance(normalize, dict) and {"mean", "std"} <= set(normalize):
        mean, std = normalize["mean"], normalize["std"]
    else:
        raise ValueError(
            f"unknown normalize {normalize!r}: use imagenet, per_image or {{mean, std}}"
        )
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def decode_image(path: str | Path, size: int, crop: Crop | None = None) -> np.ndarray:
    """One photo as uint8 RGB (size, size, 3), EXIF orientation applied, cut by ``crop``
    (:class:`audit.data.faces.Crop`: a raw photo's one face found, aligned and cropped as the
    model wants it; None: the whole photo resized). A raw photo without exactly one face
    raises ``ValueError`` with the reason."""
    rgb = decode_rgb(path)
    return resize(rgb, size) if crop is None else crop.apply(rgb, size)


class PhotoDataset:
    """A torch ``Dataset`` of (index, uint8 image, error) for the given paths; a photo that
    cannot be prepared comes back black, with its error, and is dropped from the results."""

    def __init__(self, paths: list[Path], size: int, crop: Crop | None = None):
        self.paths = paths
        self.size = size
        self.crop = crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, decode_image(self.paths[i], self.size, self.crop), ""
        except Exception as exc:  # any undecodable file or faceless photo: reported, never fatal
            return i, np.zeros((self.size, self.size, 3), np.uint8), f"{type(exc).__name__}: {exc}"


class PhotoBytes(PhotoDataset):
    """Like :class:`PhotoDataset`, but clean colour JPEGs come back as their file bytes, to be
    decoded as a batch on the model's device (nvJPEG on CUDA); other files are decoded here."""

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            data = Path(path).read_bytes()
            if data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9":
                return i, np.frombuffer(data, dtype=np.uint8), ""
            return i, decode_image(path, self.size, self.crop), ""
        except Exception as exc:
            return i, np.zeros((self.size, self.size, 3), np.uint8), f"{type(exc).__name__}: {exc}"


def _collate_mixed(items):
    import torch

    idx = torch.tensor([i for i, _, _ in items])
    return idx, [im for _, im, _ in items], [err for _, _, err in items]


def decode_on_device(items: list, size: int, device: str, errors: list[str]):
    """A uint8 NHWC batch on ``device`` from JPEG bytes (decoded there by torchvision, with
    EXIF orientation) and already decoded arrays; a JPEG that fails is marked in ``errors``."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    out = [None] * len(items)
    jpeg = [k for k, im in enumerate(items) if im.ndim == 1]
    if jpeg:
        data = [torch.from_numpy(items[k].copy()) for k in jpeg]
        try:
            decoded = decode_jpeg(
                data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
            )
        except RuntimeError:  # one bad file spoils a batch call: decode one by one
            decoded = []
            for k, d in zip(jpeg, data):
                try:
                    decoded.append(
                        decode_jpeg(
                            d, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
                        )
                    )
                except RuntimeError as exc:
                    errors[k] = f"cannot decode: {exc}"
                    decoded.append(torch.zeros((3, size, size), dtype=torch.uint8, device=device))
        for k, img in zip(jpeg, decoded):
            if img.shape[-2:] != (size, size):
                img = F.interpolate(
                    img[None].float(),
                    size=(size, size),
                    mode="bicubic",
                    antialias=True,
                    align_corners=False,
                )[0]
                img = img.round().clamp(0, 255).to(torch.uint8)
            out[k] = img.permute(1, 2, 0)
    for k, im in enumerate(items):
        if out[k] is None:
            out[k] = torch.from_numpy(np.array(im)).to(device)  # a writable copy
    return torch.stack(out)


_FORKSERVER = None


def _worker_context():
    """Decode workers start from a forkserver, never by forking this process: a process
    that forks while another of its threads holds a lock (Great Expectations' progress
    monitor, Prefect's event loop) can hand the child that lock forever, and a run hung in
    its first decode batch. The server preloads torch and this module once, so a worker
    still starts in milliseconds."""
    global _FORKSERVER
    if _FORKSERVER is None:
        import multiprocessing as mp

        _FORKSERVER = mp.get_context("forkserver")
        _FORKSERVER.set_forkserver_preload(["torch", "cv2", "PIL.Image", __name__])
    return _FORKSERVER


def _worker_init(_: int) -> None:
    """One thread per decode worker: the workers share the cores with the model."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _collate(items):
    import torch

    idx = torch.tensor([i for i, _, _ in items])
    images = torch.from_numpy(np.stack([im for _, im, _ in items]))
    errors = [err for _, _, err in items]
    return idx, images, errors


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError)
    )


def _as_numpy(value, dtype):
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def forward_halving(forward: Callable, x, cuda: bool = False):
    """``forward(x)`` as numpy ``(outputs, features)``; on out-of-memory, retry the batch in
    two halves (recursively, down to one image), so one oversized batch never ends a run."""
    import torch

    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out, feat = forward(x)
        return _as_numpy(out, np.float64), _as_numpy(feat, np.float32)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        if cuda:
            torch.cuda.empty_cache()
        if len(x) == 1:
            raise MemoryError(
                "the model ran out of memory on a single image; use a smaller "
                "model or a device with more memory"
            ) from exc
        half = len(x) // 2
        first, second = (
            forward_halving(forward, x[:half], cuda),
            forward_halving(forward, x[half:], cuda),
        )
        feats = None if first[1] is None else np.concatenate([first[1], second[1]])
        return np.concatenate([first[0], second[0]]), feats


def best_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class InferenceResult:
    """Model outputs (N, K) and features (N, D) for the photos that decoded."""

    outputs: np.ndarray
    features: np.ndarray | None
    ok: np.ndarray  # bool per input path
    errors: list[str]
    device: str
    seconds: float


def iter_decoded(
    paths: list[Path],
    size: int,
    *,
    device: str,
    batch_size: int,
    workers: int | None = None,
    progress: Callable | None = None,
    crop: Crop | None = None,
    decode: str = "auto",
):
    """Decode ``paths`` once, in batches: yields ``(indices, uint8 NHWC batch on device,
    errors)``; a photo that cannot be prepared is black in the batch, with its error.

    ``crop``: how each photo becomes the model's input (:class:`audit.data.faces.Crop`):
    raw photos are face-detected, aligned and cropped in the DataLoader workers before
    batching, so the model never waits on the detector.
    ``decode``: ``workers`` (decode in the DataLoader workers), ``device`` (the workers only
    read bytes; JPEGs are decoded as a batch on the model's device, nvJPEG on CUDA), or
    ``auto`` (``device`` on CUDA for photos that are only resized, else ``workers``).
    """
    from torch.utils.data import DataLoader

    cuda = device.startswith("cuda")
    if workers is None:
        workers = min(4 if cuda else 2, os.cpu_count() or 1) if len(paths) > 4 * batch_size else 0
    plain = crop is None or crop.resizes_only
    on_device = plain and (decode == "device" or (decode == "auto" and cuda))
    dataset = (PhotoBytes if on_device else PhotoDataset)(paths, size, crop)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate_mixed if on_device else _collate,
        pin_memory=cuda and not on_device,
        persistent_workers=False,
        worker_init_fn=_worker_init if workers else None,
        multiprocessing_context=_worker_context() if workers else None,
    )
    batches = progress(loader, total=len(loader)) if progress else loader
    for idx, images, errs in batches:
        if on_device:
            images = decode_on_device(images, size, device, errs)
        yield idx, images.to(device, non_blocking=True), errs


def to_unit(images):
    """A uint8 NHWC batch as float NCHW in [0, 1] on the same device."""
    return images.permute(0, 3, 1, 2).float().div_(255)


def model_input(x, normalize, layout: str = "nchw", cuda: bool = False):
    """A [0, 1] float NCHW RGB batch normalised and laid out as the model wants it.

    ``layout``: ``nchw`` or ``nhwc``, with ``:bgr`` appended for a model that reads its
    channels in BGR order (OpenCV-trained models); ``normalize``'s mean and SD are then in
    that order too."""
    import torch

    layout, _, channels = layout.partition(":")
    if channels == "bgr":
        x = x.flip(1)
    x = normalize_batch(x, normalize)
    if layout == "nhwc":
        return x.permute(0, 2, 3, 1).contiguous()
    if cuda:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _default_batch(cuda: bool) -> int:
    return 256 if cuda else 64


def run_batched(
    forward: Callable,
    paths: list[Path],
    size: int,
    normalize,
    *,
    layout: str = "nchw",
    batch_size: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    progress: Callable | None = None,
    crop: Crop | None = None,
    decode: str = "auto",
) -> InferenceResult:
    """Decode ``paths`` (see :func:`iter_decoded`) and apply ``forward(x) -> (outputs,
    features)`` batch by batch.

    ``forward`` receives a normalised float tensor on ``device`` (NCHW, or NHWC when
    ``layout`` is ``nhwc``) and returns tensors or arrays.
    """
    import torch

    run = _Pass.open(device, batch_size)
    outputs, features = [None] * len(paths), [None] * len(paths)
    ok = np.zeros(len(paths), dtype=bool)
    errors = [""] * len(paths)
    with torch.inference_mode():
        for idx, images, errs in run.batches(
            paths, size, workers=workers, progress=progress, crop=crop, decode=decode
        ):
            x = model_input(to_unit(images), normalize, layout, run.cuda)
            out, feat = forward_halving(forward, x, run.cuda)
            for j, i in enumerate(idx.tolist()):
                if errs[j]:
                    errors[i] = errs[j]
                    continue
                ok[i] = True
                outputs[i] = out[j]
                if feat is not None:
                    features[i] = feat[j]
    return InferenceResult(
        outputs=_rows(outputs, np.float64, len(paths)),
        features=_rows(features, np.float32) if any(f is not None for f in features) else None,
        ok=ok,
        errors=errors,
        device=run.device,
        seconds=run.seconds,
    )


@dataclass
class _Pass:
    """One decoding pass over the photos: the device, its batch size and the clock."""

    device: str
    cuda: bool
    batch_size: int
    start: float

    @classmethod
    def open(cls, device: str | None, batch_size: int | None) -> _Pass:
        import time

        device = device or best_device()
        cuda = device.startswith("cuda")
        return cls(device, cuda, batch_size or _default_batch(cuda), time.perf_counter())

    def batches(self, paths: list[Path], size: int, **decoding):
        """:func:`iter_decoded` on this pass's device and batch size."""
        return iter_decoded(paths, size, device=self.device, batch_size=self.batch_size, **decoding)

    @property
    def seconds(self) -> float:
        import time

        return time.perf_counter() - self.start


def _rows(values: list, dtype, n: int | None = None) -> np.ndarray:
    """One row per photo from per-photo vectors (scalars count as length 1); NaN rows where
    a photo has none. Width 1 when no photo has one."""
    good = [v for v in values if v is not None]
    k = np.atleast_1d(good[0]).shape[-1] if good else 1
    out = np.full((len(values) if n is None else n, k), np.nan, dtype=dtype)
    for i, v in enumerate(values):
        if v is not None:
            out[i] = np.atleast_1d(v)
    return out


@dataclass
class PerturbedModel:
    """One model in a perturbed run: its forward, preprocessing, and which (plan item,
    photo) cells are still needed (``need``: bool (P, N); cached cells are False)."""

    name: str
    forward: Callable
    normalize: object
    layout: str
    need: np.ndarray


def run_perturbed(
    models: list[PerturbedModel],
    paths: list[Path],
    size: int,
    plan: list[tuple[str, int]],
    perturb: Callable,
    seeds: Callable,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: Callable | None = None,
    crop: Crop | None = None,
    decode: str = "auto",
):
    """Every model on every photo under every ``(name, severity)`` of ``plan``, each photo
    decoded once.

    ``perturb(name, severity, x, seeds)`` perturbs a [0, 1] float NCHW batch on the device;
    ``seeds(name, severity, indices)`` gives the images' seeds. A batch is perturbed only
    when some model still needs one of its photos at that plan item, and each model runs only
    on the photos it needs. Returns ``({model: (P, N, K) raw head outputs, NaN where not
    computed}, errors per photo, seconds)``.
    """
    import torch

    run = _Pass.open(device, batch_size)
    cuda = run.cuda
    n = len(paths)
    results: dict[str, np.ndarray | None] = {m.name: None for m in models}
    errors = [""] * n
    batches = run.batches(paths, size, workers=workers, crop=crop, decode=decode)
    # progress counts (batch, plan item) steps: one batch of many levels is a long wait
    steps = ((batch, p) for batch in batches for p in range(len(plan)))
    n_steps = -(-n // run.batch_size) * len(plan)
    with torch.inference_mode():
        for (idx, images, errs), p in progress(steps, n_steps) if progress else steps:
            if p == 0:
                rows = idx.numpy()
                good = np.array([not e for e in errs])
                for j, e in zip(rows, errs):
                    errors[j] = e
                x = to_unit(images)
            name, severity = plan[p]
            wanted = {m.name: good & m.need[p, rows] for m in models}
            if not any(w.any() for w in wanted.values()):
                continue
            xp = perturb(name, severity, x, seeds(name, severity, rows))
            for m in models:
                w = wanted[m.name]
                if not w.any():
                    continue
                sel = torch.from_numpy(np.flatnonzero(w)).to(xp.device)
                out, _ = forward_halving(
                    m.forward,
                    model_input(xp.index_select(0, sel), m.normalize, m.layout, cuda),
                    cuda,
                )
                out = out.reshape(len(sel), -1)
                if results[m.name] is None:
                    results[m.name] = np.full((len(plan), n, out.shape[1]), np.nan)
                results[m.name][p, rows[w]] = out
    return results, errors, run.seconds
