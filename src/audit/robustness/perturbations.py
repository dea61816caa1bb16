"""Graded image perturbations for the robustness suite, in a registry as timm keeps models.

Every perturbation works on a batch of decoded face crops already on the model's device:
a float tensor ``(N, 3, H, W)`` with values in [0, 1]. It is called as
``perturbation(x, severity, seeds)`` and returns a new tensor of the same shape, dtype and
device, clipped to [0, 1]:

- ``severity`` 0 is the identity; 1 to 5 are graded steps whose physical meaning is in the
  perturbation's docstring (``describe(severity)`` says it in words, for the report);
- ``seeds`` (one integer per image) fix whatever is random (noise, the side of a shadow, a
  patch's place), so the same image under the same seed is perturbed the same way whatever
  batch it travels in; the robustness stage derives each image's seed from its SHA-256.

Where a perturbation needs to know where the eyes and mouth are (make-up, sunglasses,
surgical mask), it reads a :class:`FaceLayout`: the landmarks of the cohort's crops as
fractions of the crop side. The default is the 112x112 ArcFace template that aligned-face
models such as FAHR-Face use; ``aligned`` is the layout of crops made by
:func:`audit.data.images.align_crop`; ``demo`` that of the demo world's rendered faces.

Geometric and colour operations are written here on torch tensors (they are a few lines
each and must run on the model's device in one batch); JPEG uses the real codec
(``torchvision.io.encode_jpeg``/``decode_jpeg``).

>>> from audit.robustness.perturbations import list_perturbations, create_perturbation
>>> blur = create_perturbation("gaussian_blur")
>>> blur.describe(3)
'gaussian blur, sigma 1.5 px at 112 px'
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)
PERTURBATION_VERSION = 1  # bump when any perturbation's definition changes (cache key)

FAMILIES = (
    "lighting",
    "contrast",
    "makeup",
    "pose",
    "blur",
    "noise",
    "compression",
    "resolution",
    "occlusion",
    "crop",
)


@dataclass(frozen=True)
class FaceLayout:
    """Where the face lies in a square crop, as fractions of its side (x from the left,
    y from the top): eye centres at ``0.5 -/+ eye_dx`` and ``eye_y``, nose tip at
    ``nose_y``, mouth centre at ``mouth_y`` with half-width ``mouth_dx``, chin at
    ``chin_y``, face half-width ``face_dx``."""

    eye_y: float = 0.46
    eye_dx: float = 0.157
    nose_y: float = 0.64
    mouth_y: float = 0.82
    mouth_dx: float = 0.13
    chin_y: float = 0.97
    face_dx: float = 0.36


LAYOUTS = {
    # ArcFace / InsightFace 112x112 template: eyes (38.3, 51.7) and (73.5, 51.5), nose
    # (56.0, 71.7), mouth corners (41.5, 92.4) and (70.7, 92.2).
    "arcface": FaceLayout(),
    # audit.data.faces.align_crop around dlib's HOG box (margin 0.25 a side), measured from
    # dlib's 5-point landmarks on skimage's astronaut photo: eyes at 0.32 and 0.5 -/+ 0.161,
    # the nose base at 0.56; mouth, chin and face width from the ArcFace template's
    # proportions to the eyes. The `box` crop (no rotation) matches it on a level face.
    "aligned": FaceLayout(
        eye_y=0.32,
        eye_dx=0.161,
        nose_y=0.54,
        mouth_y=0.69,
        mouth_dx=0.134,
        chin_y=0.88,
        face_dx=0.37,
    ),
    # the same crop around OpenCV's Haar box (eyes about 38% and mouth about 78% down the box)
    "aligned_opencv": FaceLayout(
        eye_y=0.42, eye_dx=0.12, nose_y=0.55, mouth_y=0.69, mouth_dx=0.09, chin_y=0.82, face_dx=0.30
    ),
    # dlib's get_face_chip with padding 0.2 (builtin:dlib-age), measured as `aligned` (the
    # same on the astronaut and on 34 lfw_subset faces, by construction): eyes at 0.30 and
    # 0.5 -/+ 0.19, the nose base at 0.58
    "dlib_chip": FaceLayout(
        eye_y=0.30, eye_dx=0.19, nose_y=0.55, mouth_y=0.73, mouth_dx=0.16, chin_y=0.95, face_dx=0.44
    ),
    # audit.demo.faces: 112 px canvas, face centre (56, 60), eyes 4 px above it and 11.5 px
    # to each side, mouth 16-18 px below, face half-height 38 px.
    "demo": FaceLayout(
        eye_y=0.50,
        eye_dx=0.103,
        nose_y=0.60,
        mouth_y=0.69,
        mouth_dx=0.08,
        chin_y=0.87,
        face_dx=0.27,
    ),
}


def crop_layout(crop, layout: FaceLayout) -> FaceLayout:
    """The face layout of the crops a model sees: ``layout`` (the cohort's) for face crops
    resized whole; for crops this tool cuts, the layout of its crop method and detector."""
    if crop is None or crop.resizes_only:
        return layout
    if crop.method == "chip":
        return LAYOUTS["dlib_chip"]
    return LAYOUTS["aligned" if crop.detector == "dlib" else "aligned_opencv"]


def face_layout(value: str | dict | FaceLayout | None) -> FaceLayout:
    """A :class:`FaceLayout` from a name in ``LAYOUTS``, a dict of its fields, or itself."""
    if value is None:
        return LAYOUTS["arcface"]
    if isinstance(value, FaceLayout):
        return value
    if isinstance(value, str):
        if value not in LAYOUTS:
            raise ValueError(
                f"unknown face layout {value!r}; use one of {sorted(LAYOUTS)} "
                "or a mapping of FaceLayout fields"
            )
        return LAYOUTS[value]
    return FaceLayout(**value)


# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class PerturbationInfo:
    name: str
    family: str
    fn: Callable
    describe: Callable[[int], str]
    levels: tuple[int, ...] = SEVERITIES
    # family `crop`: the photo is cut again, ``recrop(crop, severity) -> Crop``, instead of
    # the cut image being changed (``fn`` is then never called)
    recrop: Callable | None = None


_REGISTRY: dict[str, PerturbationInfo] = {}


def register_perturbation(
    name: str, family: str, describe: Callable[[int], str], levels: tuple[int, ...] = SEVERITIES
):
    """Decorator: register ``fn(x, severity, seeds, layout, **kw)`` under ``name``.

    Raises ``ValueError`` on a duplicate name or an unknown family."""
    if family not in FAMILIES:
        raise ValueError(f"unknown perturbation family {family!r}; use {FAMILIES}")

    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"perturbation {name!r} is already registered")
        _REGISTRY[name] = PerturbationInfo(name, family, fn, describe, tuple(levels))
        return fn

    return wrap


def register_crop_variant(
    name: str, describe: Callable[[int], str], levels: tuple[int, ...], recrop: Callable
) -> None:
    """Register a change of the face crop itself (family ``crop``): ``recrop(crop, severity)``
    gives the :class:`audit.data.faces.Crop` the photos are cut with at that severity."""
    if name in _REGISTRY:
        raise ValueError(f"perturbation {name!r} is already registered")

    def not_a_tensor_change(x, severity, seeds, layout, **_):
        raise ValueError(f"{name} changes the crop: it is applied while decoding the photo")

    _REGISTRY[name] = PerturbationInfo(
        name, "crop", not_a_tensor_change, describe, tuple(levels), recrop
    )


def list_perturbations(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered names matching a shell ``pattern`` (and ``family``), in registry order."""
    return [
        n
        for n, info in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern) and (family is None or info.family == family)
    ]


@dataclass
class Perturbation:
    """A registered perturbation bound to a face layout and keyword arguments."""

    info: PerturbationInfo
    layout: FaceLayout = field(default_factory=FaceLayout)
    kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def family(self) -> str:
        return self.info.family

    @property
    def levels(self) -> tuple[int, ...]:
        return self.info.levels

    def describe(self, severity: int) -> str:
        return "identity" if severity == 0 else self.info.describe(severity)

    @property
    def recrops(self) -> bool:
        """Whether the photo is cut again (family ``crop``) instead of the crop changed."""
        return self.info.recrop is not None

    def recrop(self, crop, severity: int, seed: int = 0):
        """The crop of this perturbation at ``severity``, from the model's ``crop``."""
        if severity not in self.levels:
            raise ValueError(f"{self.name}: severity {severity} is not one of {self.levels}")
        return self.info.recrop(crop, severity).varied(seed=seed)

    def __call__(self, x, severity: int, seeds: Sequence[int] | None = None):
        import torch

        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected a (N, 3, H, W) batch, got {tuple(x.shape)}")
        if severity == 0:
            return x
        if severity not in self.levels:
            raise ValueError(f"{self.name}: severity {severity} is not one of {self.levels}")
        if seeds is None:
            seeds = range(x.shape[0])
        seeds = [int(s) for s in seeds]
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{self.name}: {len(seeds)} seeds for {x.shape[0]} images")
        out = self.info.fn(x, severity, seeds, self.layout, **self.kwargs)
        return out.clamp(0.0, 1.0).to(dtype=x.dtype).contiguous() if torch.is_tensor(out) else out


def create_perturbation(
    name: str, layout: str | dict | FaceLayout | None = None, **kwargs
) -> Perturbation:
    """The perturbation registered as ``name``, bound to ``layout`` and ``kwargs``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown perturbation {name!r}; registered: {list_perturbations()}")
    return Perturbation(_REGISTRY[name], face_layout(layout), dict(kwargs))


# ---------------------------------------------------------------------------- helpers


def _generators(seeds: Sequence[int], device):
    import torch

    return [
        torch.Generator(device=device).manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF) for s in seeds
    ]


def _uniform(seeds: Sequence[int], k: int, device):
    """(N, k) uniforms in [0, 1), one independent stream per image seed (on the CPU: a few
    numbers per image, moved to the device)."""
    import torch

    rows = [torch.rand(k, generator=g) for g in _generators(seeds, "cpu")]
    return torch.stack(rows).to(device)


def _randn_like(x, seeds: Sequence[int]):
    """Standard normal noise shaped like ``x``, drawn per image from its seed on x's device."""
    import torch

    gens = _generators(seeds, x.device)
    return torch.stack(
        [torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in gens]
    )


def _px(x, at_112: float) -> float:
    """A length given in pixels of a 112-px crop, in pixels of this batch."""
    return at_112 * x.shape[-1] / 112.0


def srgb_to_linear(x):
    """IEC 61966-2-1 sRGB transfer function, inverted."""
    import torch

    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    import torch

    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def luminance(x):
    """Rec. 709 luma of an RGB batch, (N, 1, H, W)."""
    w = x.new_tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _coords(x):
    """Pixel-centre coordinates as fractions of the side: (1, 1, H, 1) and (1, 1, 1, W)."""
    import torch

    h, w = x.shape[-2:]
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
    return ys.view(1, 1, h, 1), xs.view(1, 1, 1, w)


def _ellipse(x, cx: float, cy: float, rx: float, ry: float, soft: float = 0.25):
    """A soft elliptical mask (1, 1, H, W): 1 inside, falling to 0 over ``soft`` of a radius."""
    ys, xs = _coords(x)
    r = (((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2).sqrt()
    return ((1 + soft - r) / soft).clamp(0, 1)


def _conv_separable(x, kernel_1d):
    """Convolve each channel with a symmetric 1-D kernel along rows, then columns, with
    reflect padding: a sum of shifted copies, faster here than ``conv2d`` for short kernels
    on the CPU and as good on a GPU."""
    import torch.nn.functional as F

    k = kernel_1d.numel()
    pad = k // 2
    h, w = x.shape[-2:]
    y = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = sum(kernel_1d[i] * y[..., :, i : i + w] for i in range(k))
    return sum(kernel_1d[i] * rows[..., i : i + h, :] for i in range(k))


def _gaussian_kernel(sigma: float, x):
    import torch

    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, x.shape[-1] // 2 - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x, sigma_px: float):
    """Gaussian blur with standard deviation ``sigma_px`` pixels."""
    return _conv_separable(x, _gaussian_kernel(sigma_px, x))


def _warp(x, grid):
    """Sample ``x`` at ``grid`` (N, H, W, 2) in [-1, 1] coordinates, reflecting at the
    borders (the photo goes on beyond the crop)."""
    import torch.nn.functional as F

    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _affine(x, theta):
    import torch.nn.functional as F

    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return _warp(x, grid)


def _sign(seeds, device, k: int = 0):
    """+1 or -1 per image, from its seed."""
    return (_uniform(seeds, k + 1, device)[:, k] < 0.5).float() * 2 - 1


# ---------------------------------------------------------------------------- lighting


@register_perturbation(
    "brightness",
    "lighting",
    lambda s: f"underexposure by {s / 3:.2f} EV (light x{2 ** (-s / 3):.2f})",
)
def brightness(x, severity, seeds, layout):
    """Darker lighting: exposure lowered by severity/3 stops (EV), applied in linear light,
    so severity 3 is half the light and severity 5 about a third."""
    return linear_to_srgb(srgb_to_linear(x) * 2 ** (-severity / 3))


@register_perturbation(
    "gamma", "lighting", lambda s: f"tone curve gamma {1 / (1 + 0.2 * s):.2f} (midtones lifted)"
)
def gamma(x, severity, seeds, layout):
    """A mismatched tone curve: ``x ** (1 / (1 + 0.2 s))``, lifting midtones as an
    over-processed phone photo does (severity 5: gamma 0.5)."""
    return x.clamp(min=0) ** (1.0 / (1.0 + 0.2 * severity))


@register_perturbation(
    "shading",
    "lighting",
    lambda s: f"side light, the far side of the face gets {1 - 0.15 * s:.0%} of the light",
)
def shading(x, severity, seeds, layout):
    """Directional light: the illumination falls linearly across the face, from full on the
    lit side to ``1 - 0.15 s`` of it on the other (severity 5: a quarter), in linear light.
    Which side is darker comes from the image's seed."""
    _, xs = _coords(x)
    side = _sign(seeds, x.device).view(-1, 1, 1, 1)
    ramp = 0.5 + side * (xs - 0.5)  # 0 on the dark side, 1 on the lit side
    light = 1 - 0.15 * severity * (1 - ramp)
    return linear_to_srgb(srgb_to_linear(x) * light)


def _blackbody_rgb(kelvin: float) -> np.ndarray:
    """Approximate sRGB colour of a black body at ``kelvin`` (Tanner Helland's fit to
    Mitchell Charity's blackbody table, 1000-40000 K), in [0, 1]."""
    t = kelvin / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = (
        99.4708025861 * math.log(t) - 161.1195681661
        if t <= 66
        else 288.1221695283 * (t - 60) ** -0.0755148492
    )
    b = (
        255.0
        if t >= 66
        else (0.0 if t <= 19 else 138.5177312231 * math.log(t - 10) - 305.0447927307)
    )
    return np.clip(np.array([r, g, b]) / 255.0, 1e-3, 1.0)


@register_perturbation(
    "color_temperature",
    "lighting",
    lambda s: f"uncorrected {6500 - 700 * s} K light (white balance for 6500 K)",
)
def color_temperature(x, severity, seeds, layout):
    """Warm indoor light left uncorrected: the white balance expects 6500 K daylight, the
    room is lit at ``6500 - 700 s`` kelvin (severity 5: 3000 K, tungsten). Channel gains are
    the ratio of the two black bodies' colours (von Kries), applied in linear light and
    normalised to keep green."""
    ref, lit = _blackbody_rgb(6500), _blackbody_rgb(6500 - 700 * severity)
    gain = srgb_to_linear_np(lit) / srgb_to_linear_np(ref)
    gain = gain / gain[1]
    return linear_to_srgb(srgb_to_linear(x) * x.new_tensor(gain).view(1, 3, 1, 1))


def srgb_to_linear_np(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


# ---------------------------------------------------------------------------- contrast


@register_perturbation(
    "contrast", "contrast", lambda s: f"contrast reduced to {1 - 0.15 * s:.0%} (haze, flat light)"
)
def contrast(x, severity, seeds, layout):
    """Flat light or haze: every pixel pulled toward the image's mean luminance, keeping
    ``1 - 0.15 s`` of its contrast (severity 5: a quarter)."""
    mean = luminance(x).mean(dim=(2, 3), keepdim=True)
    return mean + (1 - 0.15 * severity) * (x - mean)


# ---------------------------------------------------------------------------- make-up, skin


@register_perturbation(
    "saturation", "makeup", lambda s: f"colour saturation x{1 + 0.25 * s:.2f} (vivid filter)"
)
def saturation(x, severity, seeds, layout):
    """A vivid filter or heavy foundation: chroma about the luma scaled by ``1 + 0.25 s``
    (severity 5: 2.25 times)."""
    y = luminance(x)
    return y + (1 + 0.25 * severity) * (x - y)


@register_perturbation("hue", "makeup", lambda s: f"hue rotated {5 * s} degrees (tinted filter)")
def hue(x, severity, seeds, layout):
    """A tinted filter or foundation of the wrong undertone: hue rotated by ``5 s`` degrees
    in YIQ space, luma kept (severity 5: 25 degrees)."""
    import torch

    a = math.radians(5 * severity)
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    rot = x.new_tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return torch.einsum("ij,njhw->nihw", m, x)


@register_perturbation(
    "skin_smoothing",
    "makeup",
    lambda s: f"beauty filter at {0.2 * s:.0%} strength (wrinkles smoothed)",
)
def skin_smoothing(x, severity, seeds, layout):
    """A beauty filter: skin is replaced by a blurred copy (sigma 2 px at 112 px) where the
    image is smooth, while edges (eyes, lips, face outline) are kept; the blend has strength
    ``0.2 s`` (severity 5: wrinkles and spots fully smoothed)."""
    blurred = gaussian_blur(x, _px(x, 2.0))
    y = luminance(x)
    gy = y[..., 1:, :] - y[..., :-1, :]
    gx = y[..., :, 1:] - y[..., :, :-1]
    import torch.nn.functional as F

    grad = (F.pad(gx, (0, 1, 0, 0)) ** 2 + F.pad(gy, (0, 0, 0, 1)) ** 2).sqrt()
    grad = gaussian_blur(grad, _px(x, 1.0))
    keep_edges = (-((grad / 0.08) ** 2)).exp()  # 1 on smooth skin, 0 on strong edges
    return x + (0.2 * severity) * keep_edges * (blurred - x)


@register_perturbation(
    "lip_eye_tint", "makeup", lambda s: f"lipstick and eye shadow at {0.12 * s:.0%} opacity"
)
def lip_eye_tint(x, severity, seeds, layout):
    """Make-up: red lipstick over the lips and dark eye shadow over the upper lids, blended
    multiplicatively at opacity ``0.12 s`` (severity 5: 60%)."""
    L = layout
    lips = _ellipse(x, 0.5, L.mouth_y, L.mouth_dx * 1.1, L.mouth_dx * 0.45)
    lids = sum(
        _ellipse(x, 0.5 + side * L.eye_dx, L.eye_y - 0.035, L.eye_dx * 0.55, 0.035)
        for side in (-1, 1)
    )
    red = x.new_tensor([0.75, 0.10, 0.18]).view(1, 3, 1, 1)
    shadow = x.new_tensor([0.35, 0.25, 0.40]).view(1, 3, 1, 1)
    a = 0.12 * severity
    x = x * (1 - a * lips) + (x * red) * (a * lips)
    return x * (1 - a * lids) + (x * shadow) * (a * lids)


# ---------------------------------------------------------------------------- pose


@register_perturbation("rotation", "pose", lambda s: f"head tilted {4 * s} degrees in plane")
def rotation(x, severity, seeds, layout):
    """In-plane head tilt (roll) of ``4 s`` degrees about the crop centre, clockwise or not
    from the image's seed (severity 5: 20 degrees, beyond what eye alignment removes)."""
    import torch

    a = math.radians(4 * severity) * _sign(seeds, x.device)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta.to(x.dtype))


@register_perturbation("yaw", "pose", lambda s: f"head turned about {6 * s} degrees (yaw)")
def yaw(x, severity, seeds, layout):
    """A head turned sideways by ``6 s`` degrees (severity 5: 30), approximated by rotating
    the face as a plane about its vertical axis in front of a camera at two face-widths
    (a perspective warp: one side foreshortened, the other enlarged)."""
    import torch

    theta = math.radians(6 * severity) * _sign(seeds, x.device).view(-1, 1, 1)
    f = 2.0
    n, _, h, w = x.shape
    v = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h * 2 - 1
    u = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w * 2 - 1
    uu, vv = u.view(1, 1, w).expand(n, h, w), v.view(1, h, 1).expand(n, h, w)
    # Output pixel (u, v) shows the face-plane point (X, Y) with u = f X cos/(f + X sin).
    big_x = uu * f / (f * torch.cos(theta) - uu * torch.sin(theta))
    big_y = vv * (f + big_x * torch.sin(theta)) / f
    return _warp(x, torch.stack([big_x, big_y], dim=-1))


@register_perturbation("flip", "pose", lambda s: "mirrored left to right", levels=(1,))
def flip(x, severity, seeds, layout):
    """Mirror image (a selfie camera's default): one level only."""
    return x.flip(-1)


@register_perturbation(
    "crop_jitter",
    "pose",
    lambda s: f"face box off by {3 * s}% of its side and scaled {4 * s}% (detector error)",
)
def crop_jitter(x, severity, seeds, layout):
    """A face detector's box error: the crop shifted by ``3 s`` % of its side in a random
    direction and zoomed in or out by ``4 s`` % (severity 5: 15% off, 20% zoom)."""
    import torch

    r = _uniform(seeds, 2, x.device).to(x.dtype)
    angle = r[:, 0] * 2 * math.pi
    shift = 0.03 * severity * 2  # affine_grid coordinates span 2 per side
    zoom = 1 + 0.04 * severity * torch.where(r[:, 1] < 0.5, -1.0, 1.0).to(x.dtype)
    zero = torch.zeros_like(zoom)
    theta = torch.stack(
        [
            torch.stack([zoom, zero, shift * torch.cos(angle)], 1),
            torch.stack([zero, zoom, shift * torch.sin(angle)], 1),
        ],
        1,
    )
    return _affine(x, theta)


# ---------------------------------------------------------------------------- crop
# The face pipeline's own variation: the crop cut again from the photo (raw photos, or a
# dlib chip's landmarks), not the cut image changed.

register_crop_variant(
    "crop_margin",
    lambda s: f"face crop margin {5 * s}% wider or narrower (direction per photo)",
    (1, 2, 3),
    lambda crop, s: crop.varied(margin_change=0.05 * s),
)
register_crop_variant(
    "landmark_jitter",
    lambda s: f"face box corners and landmarks moved by {s} px (SD, in the photo's pixels)",
    SEVERITIES,
    lambda crop, s: crop.varied(jitter=float(s)),
)


def _other_alignment(crop, _severity):
    """Eye alignment off (aligned -> box, chip -> box), or on (box -> aligned)."""
    if crop.method == "box":
        return crop.varied(method="aligned")
    if crop.method == "chip":
        return crop.varied(method="box", margin=crop.padding)
    return crop.varied(method="box")


register_crop_variant(
    "alignment",
    lambda s: "the face cut without (or, for a box crop, with) eye alignment",
    (1,),
    _other_alignment,
)


# ---------------------------------------------------------------------------- blur


@register_perturbation(
    "gaussian_blur", "blur", lambda s: f"gaussian blur, sigma {0.5 * s:.1f} px at 112 px"
)
def gaussian_blur_perturbation(x, severity, seeds, layout):
    """Defocus: gaussian blur with sigma ``0.5 s`` pixels of a 112-px crop (scaled with the
    crop; severity 5: 2.5 px, wrinkles gone)."""
    return gaussian_blur(x, _px(x, 0.5 * severity))


@register_perturbation(
    "motion_blur", "blur", lambda s: f"motion blur over {2 * s + 1} px at 112 px"
)
def motion_blur(x, severity, seeds, layout):
    """Camera shake: a straight streak of ``2 s + 1`` pixels of a 112-px crop (severity 5:
    11 px) at an angle drawn from the image's seed."""
    import torch
    import torch.nn.functional as F

    length = _px(x, 2 * severity + 1)
    k = int(math.ceil(length)) | 1
    n, c, h, w = x.shape
    angle = _uniform(seeds, 1, x.device)[:, 0].to(x.dtype) * math.pi
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    yy, xx = t.view(1, k, 1), t.view(1, 1, k)
    # distance of each kernel cell from the streak's line through the centre
    dist = (xx * torch.sin(angle).view(-1, 1, 1) - yy * torch.cos(angle).view(-1, 1, 1)).abs()
    along = (xx * torch.cos(angle).view(-1, 1, 1) + yy * torch.sin(angle).view(-1, 1, 1)).abs()
    kern = (1 - dist).clamp(min=0) * (along <= length / 2).to(x.dtype)
    kern = kern / kern.sum(dim=(1, 2), keepdim=True)
    weight = kern.repeat_interleave(c, dim=0).unsqueeze(1)  # (N*C, 1, k, k)
    pad = k // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(y, weight, groups=n * c).reshape(n, c, h, w)


# ---------------------------------------------------------------------------- noise


@register_perturbation(
    "gaussian_noise",
    "noise",
    lambda s: f"gaussian noise, sigma {0.02 * s:.2f} ({5 * s:.0f} of 255 levels)",
)
def gaussian_noise(x, severity, seeds, layout):
    """Read noise: independent gaussian noise of standard deviation ``0.02 s`` of the range
    on every pixel and channel (severity 5: 0.10, about 25 grey levels)."""
    return x + 0.02 * severity * _randn_like(x, seeds)


@register_perturbation(
    "poisson_noise",
    "noise",
    lambda s: f"shot noise, {200 / 2 ** (s - 1):.0f} photons at full white",
)
def poisson_noise(x, severity, seeds, layout):
    """Sensor shot noise in dim light: each pixel's linear intensity is a Poisson count with
    ``200 / 2^(s-1)`` photons at full white (severity 5: 12.5), then scaled back."""
    import torch

    peak = 200.0 / 2 ** (severity - 1)
    lam = srgb_to_linear(x) * peak
    gens = _generators(seeds, x.device)
    counts = torch.stack([torch.poisson(lam[i], generator=g) for i, g in enumerate(gens)])
    return linear_to_srgb(counts / peak)


# ---------------------------------------------------------------------------- compression

JPEG_QUALITY = {1: 60, 2: 40, 3: 25, 4: 15, 5: 8}


@register_perturbation("jpeg", "compression", lambda s: f"JPEG at quality {JPEG_QUALITY[s]}")
def jpeg(x, severity, seeds, layout):
    """Lossy re-compression, with the real codec: each image is encoded as a JPEG at quality
    60, 40, 25, 15 or 8 (severities 1-5; libjpeg's scale, 4:2:0 chroma) and decoded back.
    On CUDA both steps run on the GPU (nvJPEG) where torchvision supports it."""
    import torch
    from torchvision.io import decode_jpeg, encode_jpeg

    q = JPEG_QUALITY[severity]
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8)
    try:
        data = encode_jpeg(list(u8), quality=q)
        out = decode_jpeg(data, device=x.device)
    except RuntimeError:  # no GPU codec: round trip on the CPU
        data = encode_jpeg(list(u8.cpu()), quality=q)
        out = [im.to(x.device) for im in decode_jpeg(data)]
    return torch.stack(list(out)).to(x.dtype) / 255.0


# ---------------------------------------------------------------------------- resolution


@register_perturbation(
    "downscale",
    "resolution",
    lambda s: (
        f"captured at {2 ** (-s / 2):.0%} of the side "
        f"({round(112 * 2 ** (-s / 2))} px for 112), then upscaled"
    ),
)
def downscale(x, severity, seeds, layout):
    """A small face in a low-resolution photo: downscaled (area averaging) to
    ``2^(-s/2)`` of its side, then upscaled back (bicubic), as a pipeline upsampling a small
    crop does (severity 5: 20 px for a 112-px crop)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    f = 2 ** (-severity / 2)
    small = F.interpolate(x, size=(max(2, round(h * f)), max(2, round(w * f))), mode="area")
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)


# ---------------------------------------------------------------------------- occlusion


@register_perturbation(
    "sunglasses",
    "occlusion",
    lambda s: f"tinted glasses letting {1 - 0.2 * s:.0%} of the light through",
)
def sunglasses(x, severity, seeds, layout):
    """Tinted glasses: two lenses over the eyes and a bridge, passing ``1 - 0.2 s`` of the
    light (severity 5: opaque sunglasses)."""
    L = layout
    lens = sum(
        _ellipse(x, 0.5 + side * L.eye_dx, L.eye_y, L.eye_dx * 0.85, 0.07, soft=0.1)
        for side in (-1, 1)
    ).clamp(max=1)
    ys, xs = _coords(x)
    bridge = ((xs - 0.5).abs() < L.eye_dx * 0.3) & ((ys - (L.eye_y - 0.03)).abs() < 0.01)
    mask = (lens + bridge.to(x.dtype)).clamp(max=1)
    dark = x.new_tensor([0.05, 0.05, 0.06]).view(1, 3, 1, 1)
    t = 1 - 0.2 * severity
    return x * (1 - mask) + mask * (t * x + (1 - t) * dark)


@register_perturbation(
    "surgical_mask",
    "occlusion",
    lambda s: [
        "chin covered",
        "chin and lower lip covered",
        "mouth covered",
        "mouth and half the nose covered",
        "mouth and nose covered (a worn surgical mask)",
    ][s - 1],
)
def surgical_mask(x, severity, seeds, layout):
    """A light-blue surgical mask over the lower face, opaque; its top edge rises with
    severity from between mouth and chin (1) to just below the eyes (5)."""
    L = layout
    tops = np.linspace((L.mouth_y + L.chin_y) / 2, L.eye_y + 0.09, 5)
    top = float(tops[severity - 1])
    ys, xs = _coords(x)
    inside = ((ys >= top) & ((xs - 0.5).abs() <= L.face_dx * 1.05)).to(x.dtype)
    blue = x.new_tensor([0.62, 0.78, 0.88]).view(1, 3, 1, 1)
    shade = 1 - 0.15 * (ys - top).clamp(min=0) / max(1e-6, 1 - top)  # folds, a little shade
    return x * (1 - inside) + inside * blue * shade


@register_perturbation(
    "patch", "occlusion", lambda s: f"grey patch over {4 * s}% of the crop (hand, sticker)"
)
def patch(x, severity, seeds, layout):
    """Something in front of the face (a hand, a sticker, a dressing): a mid-grey square
    covering ``4 s`` % of the crop (severity 5: 20%) at a place drawn from the seed."""
    side = math.sqrt(0.04 * severity)
    r = _uniform(seeds, 2, x.device).to(x.dtype)
    x0, y0 = (r[:, 0] * (1 - side)).view(-1, 1, 1, 1), (r[:, 1] * (1 - side)).view(-1, 1, 1, 1)
    ys, xs = _coords(x)
    inside = ((xs >= x0) & (xs < x0 + side) & (ys >= y0) & (ys < y0 + side)).to(x.dtype)
    return x * (1 - inside) + 0.5 * inside


def default_plan(
    names: Sequence[str] | None = None, severities: Sequence[int] | None = None
) -> list[tuple[str, int]]:
    """``(name, severity)`` pairs to run: every registered perturbation (or ``names``) at
    each of its levels (or those of ``severities`` it has)."""
    plan = []
    for name in names or list_perturbations():
        levels = create_perturbation(name).levels
        chosen = [s for s in levels if severities is None or s in severities] or [levels[0]]
        plan.extend((name, s) for s in chosen)
    return plan
