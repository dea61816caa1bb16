"""Procedural 112x112 face photos whose age and health cues are known.

Each subject has fixed traits (face shape, skin tone from its race group, eye spacing, hair
style, glasses); each photo adds what changes between photos (pose, lighting, background,
JPEG quality). The cues a model can read are tied to the simulated truth:

* biological age ``B``: grey hair, receding hairline (men), forehead wrinkles, crow's feet,
  eye bags, sagging jowls and nasolabial folds, age spots;
* health score ``H`` (higher = sicker): pallor (skin toward grey-yellow) and thinner cheeks
  (cheek hollows).

Chronological age has no cue of its own: a model can only read ``B``, as a real face-age
model reads the face and not the birth certificate. Rendering is deterministic for a seed:
every random draw comes from a Generator seeded by (seed, subject, photo).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 112
SKIN = {  # mean RGB of skin by race group (with per-subject jitter)
    "White": (228, 188, 160),
    "Black": (122, 84, 60),
    "Asian": (226, 186, 148),
    "Hispanic": (196, 148, 112),
    "Other": (172, 128, 98),
}
HAIR = {
    "White": [(70, 50, 35), (140, 100, 60), (200, 170, 110), (40, 30, 25)],
    "Black": [(25, 20, 18), (40, 30, 25)],
    "Asian": [(20, 18, 18), (35, 28, 25)],
    "Hispanic": [(30, 24, 20), (60, 42, 30)],
    "Other": [(30, 24, 20), (70, 50, 35)],
}


@dataclass
class SubjectLook:
    """What stays the same across a subject's photos."""

    skin: np.ndarray
    hair: np.ndarray
    face_w: float
    face_h: float
    eye_gap: float
    eye_y: float
    hair_style: int
    glasses: bool
    male: bool


@dataclass
class PhotoConditions:
    """What changes from photo to photo (and what a drifted site changes)."""

    angle: float
    dx: float
    dy: float
    scale: float
    gain: float
    side_light: float
    background: np.ndarray
    jpeg_quality: int
    warmth: float


@dataclass
class Appearance:
    """What a paired study changes about the person in one photo, never the biology (``B``
    and ``H`` stay as they are):

    * ``makeup`` (0-1): foundation evens the skin (at 1, 60% of the pallor, of the contrast
      of wrinkles and eye bags hidden; age spots covered), lipstick and eye shadow;
    * ``skin_age_shift`` (years): a facelift and blepharoplasty draw the wrinkles, crow's
      feet, eye bags, brows, sagging jowls, folds and mouth corners this many years younger
      (grey hair, hairline and age spots keep the biological age);
    * ``glasses``: with or without glasses (None: the subject's own).
    """

    makeup: float = 0.0
    skin_age_shift: float = 0.0
    glasses: bool | None = None


def subject_look(rng: np.random.Generator, sex: str, race: str) -> SubjectLook:
    base = np.array(SKIN.get(race, SKIN["Other"]), dtype=float)
    skin = np.clip(base * rng.normal(1.0, 0.05) + rng.normal(0, 6, 3), 30, 250)
    palette = HAIR.get(race, HAIR["Other"])
    hair = np.array(palette[rng.integers(len(palette))], dtype=float)
    male = sex == "male"
    return SubjectLook(
        skin=skin,
        hair=hair,
        face_w=rng.normal(30 if male else 28, 1.5),
        face_h=rng.normal(38, 1.8),
        eye_gap=rng.normal(11.5, 0.8),
        eye_y=rng.normal(-4, 1.0),
        hair_style=int(rng.integers(3)),
        glasses=bool(rng.random() < 0.2),
        male=male,
    )


def photo_conditions(
    rng: np.random.Generator, light: float = 1.0, jpeg: tuple[int, int] = (60, 95)
) -> PhotoConditions:
    return PhotoConditions(
        angle=rng.normal(0, 5),
        dx=rng.normal(0, 2.0),
        dy=rng.normal(0, 2.0),
        scale=rng.uniform(0.93, 1.07),
        gain=light * rng.uniform(0.8, 1.15),
        side_light=rng.normal(0, 0.12),
        background=rng.uniform(40, 220, 3),
        jpeg_quality=int(rng.integers(jpeg[0], jpeg[1] + 1)),
        warmth=rng.normal(0, 0.04),
    )


def _clip01(x: float) -> float:
    return float(min(max(x, 0.0), 1.0))


def _rgb(c) -> tuple[int, int, int]:
    c = np.clip(np.asarray(c, dtype=float), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def render_face(
    look: SubjectLook,
    cond: PhotoConditions,
    bio_age: float,
    health: float,
    rng: np.random.Generator,
    appearance: Appearance | None = None,
) -> Image.Image:
    """One face photo (RGB, 112x112) before JPEG encoding; ``appearance``: make-up, surgery or
    glasses of a paired study's photo (None: as the subject is)."""
    app = appearance or Appearance()
    face = _Face.of(look, bio_age, health, rng, app)
    img = Image.new("RGB", (SIZE, SIZE), _rgb(cond.background))
    d = ImageDraw.Draw(img)
    fringe_low = _draw_head(d, face, look, cond)
    _draw_forehead_lines(d, face, look, fringe_low, rng)
    _draw_eyes(d, face, look)
    _draw_nose_and_mouth(d, face)
    for _ in range(int(rng.poisson(4 * max(face.a - 0.4, 0)))):  # age spots
        sx = face.cx + rng.uniform(-face.fw + 4, face.fw - 4)
        sy = face.cy + rng.uniform(-face.fh + 10, face.fh - 10)
        if app.makeup == 0:  # foundation covers them
            d.ellipse([sx - 1, sy - 1, sx + 1, sy + 1], fill=_rgb(face.skin * 0.8))
    if app.makeup > 0:
        _draw_makeup(d, face, look, app.makeup)
    if look.glasses if app.glasses is None else app.glasses:
        ey = face.ey
        for side in (-1, 1):
            ex = face.cx + side * look.eye_gap
            d.ellipse([ex - 7, ey - 5, ex + 7, ey + 5], outline=(30, 30, 30), width=1)
        d.line([face.cx - look.eye_gap + 7, ey, face.cx + look.eye_gap - 7, ey], fill=(30, 30, 30))
    return _photograph(img, cond, rng)


@dataclass
class _Face:
    """One face's age and illness (``a``: 0 at 25 years, 1 at 85; ``s``: the same for the
    skin's cues, younger after surgery; ``sick``: 0 to 1), its colours and its geometry
    (centre, half width and height, eye line); ``cover``: how much of the skin's contrast
    make-up hides (0 to 0.6)."""

    a: float
    s: float
    cover: float
    sick: float
    skin: np.ndarray
    hair: np.ndarray
    line: tuple
    dark: tuple
    cx: float
    cy: float
    fw: float
    fh: float
    ey: float

    @classmethod
    def of(cls, look: SubjectLook, bio_age: float, health: float, rng, app: Appearance) -> _Face:
        a = _clip01((bio_age - 25.0) / 60.0)
        s = _clip01((bio_age + app.skin_age_shift - 25.0) / 60.0)
        cover = 0.6 * _clip01(app.makeup)
        sick = _clip01(health / 2.5)
        grey = _clip01(1 / (1 + np.exp(-(bio_age - 55.0) / 7.0)) + rng.normal(0, 0.05))
        pale = 0.25 * sick * (1 - cover)  # foundation hides part of the pallor
        skin = look.skin * (1 - pale) + np.array([205, 200, 170]) * pale
        skin = skin * (1 - 0.08 * s)  # older skin a little duller
        cy = SIZE / 2 + 4
        return cls(
            a=a,
            s=s,
            cover=cover,
            sick=sick,
            skin=skin,
            hair=look.hair * (1 - grey) + np.array([200, 200, 205]) * grey,
            line=_rgb(
                skin * (0.82 - 0.12 * s)
                if cover == 0
                else skin * (1 - (0.18 + 0.12 * s) * (1 - cover))  # fainter under foundation
            ),
            dark=_rgb(skin * 0.6),
            cx=SIZE / 2,
            cy=cy,
            fw=look.face_w * (1 - 0.06 * sick) * (1 + 0.04 * s),
            fh=look.face_h,
            ey=cy + look.eye_y,
        )


def _draw_head(d, f: _Face, look: SubjectLook, cond: PhotoConditions) -> float:
    """Hair, neck, shoulders, the face with its jowls and cheek hollows, and the fringe;
    returns the fringe's lowest line."""
    cx, cy, fw, fh, a = f.cx, f.cy, f.fw, f.fh, f.a
    hair_top = cy - fh - 6 + (8 * a if look.male else 0)  # recession for men
    d.ellipse(
        [cx - fw - 5, hair_top, cx + fw + 5, cy + (10 if look.hair_style == 2 else -5)],
        fill=_rgb(f.hair),
    )
    d.rectangle([cx - 12, cy + fh - 8, cx + 12, SIZE], fill=_rgb(f.skin * 0.9))
    d.ellipse([cx - 45, cy + fh + 2, cx + 45, cy + fh + 60], fill=_rgb(cond.background * 0.5))
    # face, with jowls that widen the lower face as it sags
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=_rgb(f.skin))
    sag = 4 * f.s
    d.ellipse([cx - fw + 2 - sag, cy + 6, cx - fw + 14, cy + fh - 4 + sag], fill=_rgb(f.skin))
    d.ellipse([cx + fw - 14, cy + 6, cx + fw - 2 + sag, cy + fh - 4 + sag], fill=_rgb(f.skin))
    fringe_low = cy - fh + 10 - (7 * a if look.male else 0)
    hair = _rgb(f.hair)
    if look.hair_style == 0:
        d.chord([cx - fw, cy - fh - 4, cx + fw, fringe_low + 6], 180, 360, fill=hair)
    elif look.hair_style == 1:
        d.pieslice([cx - fw, cy - fh - 4, cx + fw, fringe_low + 10], 190, 350, fill=hair)
    else:
        d.chord([cx - fw - 2, cy - fh - 6, cx + fw + 2, fringe_low + 2], 180, 360, fill=hair)
    if f.sick > 0.05:  # cheek hollows (thin cheeks with illness)
        hollow = _rgb(f.skin * (1 - 0.22 * f.sick))
        d.ellipse([cx - fw + 4, cy + 2, cx - fw + 12, cy + 16], fill=hollow)
        d.ellipse([cx + fw - 12, cy + 2, cx + fw - 4, cy + 16], fill=hollow)
    return fringe_low


def _draw_forehead_lines(d, f: _Face, look: SubjectLook, fringe_low: float, rng) -> None:
    n_lines = int(round(5 * f.s + rng.normal(0, 0.4)))
    top = max(fringe_low + 3, f.cy - f.fh + 8)
    for k in range(max(n_lines, 0)):
        y = top + 3 * k + 2
        if y > f.cy + look.eye_y - 7:
            break
        d.arc([f.cx - 14, y - 2, f.cx + 14, y + 4], 200, 340, fill=f.line, width=1)


def _draw_eyes(d, f: _Face, look: SubjectLook) -> None:
    """Eyes, brows, bags under the eyes (age and illness) and crow's feet."""
    a, ey = f.s, f.ey  # the skin's cues: younger after surgery
    for side in (-1, 1):
        ex = f.cx + side * look.eye_gap
        d.ellipse([ex - 5, ey - 2.5, ex + 5, ey + 2.5], fill=(245, 245, 240))
        d.ellipse([ex - 2, ey - 2, ex + 2, ey + 2], fill=(45, 35, 30))
        d.line([ex - 6, ey - 6 + a, ex + 6, ey - 6 - a * 0.5], fill=_rgb(f.hair * 0.7), width=2)
        bags = _clip01(a * 1.1 + 0.4 * f.sick - 0.15)
        if bags > 0:
            d.arc(
                [ex - 5, ey + 1, ex + 5, ey + 6 + 2 * bags],
                20,
                160,
                fill=_rgb(f.skin * (1 - 0.35 * bags * (1 - f.cover))),
                width=1 + int(bags > 0.6),
            )
        if a > 0.35:  # crow's feet
            for k in (-1, 0, 1):
                d.line(
                    [ex + side * 6, ey, ex + side * (9 + 2 * a), ey + k * (2 + 2 * a)],
                    fill=f.line,
                    width=1,
                )


def _draw_nose_and_mouth(d, f: _Face) -> None:
    """Nose, nasolabial folds (from middle age) and a mouth whose corners drop with age."""
    cx, cy, a = f.cx, f.cy, f.s
    d.line([cx, f.ey + 2, cx - 2, cy + 9], fill=f.dark, width=1)
    d.line([cx - 2, cy + 9, cx + 3, cy + 9], fill=f.dark, width=1)
    if a > 0.25:
        fold = _rgb(f.skin * (1 - 0.25 * a))
        d.arc([cx - 14, cy + 5, cx - 4, cy + 22], 100, 200, fill=fold, width=1)
        d.arc([cx + 4, cy + 5, cx + 14, cy + 22], 340, 80, fill=fold, width=1)
    mouth_y = cy + 16 + 2 * a
    lip = _rgb(f.skin * np.array([0.85, 0.6, 0.6]))
    d.arc(
        [cx - 8, mouth_y - 4 - 2 * a, cx + 8, mouth_y + 3],
        20 + 10 * a,
        160 - 10 * a,
        fill=lip,
        width=2,
    )


def _draw_makeup(d, f: _Face, look: SubjectLook, strength: float) -> None:
    """Lipstick over the mouth and eye shadow on the lids, at ``strength`` (0-1)."""
    mouth_y = f.cy + 16 + 2 * f.s
    lip = _rgb(f.skin * (1 - strength) + np.array([170, 40, 70]) * strength)
    d.arc(
        [f.cx - 8, mouth_y - 4 - 2 * f.s, f.cx + 8, mouth_y + 3],
        20 + 10 * f.s,
        160 - 10 * f.s,
        fill=lip,
        width=3,
    )
    shadow = _rgb(f.skin * (1 - 0.5 * strength) + np.array([110, 70, 120]) * 0.5 * strength)
    for side in (-1, 1):
        ex = f.cx + side * look.eye_gap
        d.arc([ex - 5, f.ey - 5, ex + 5, f.ey + 1], 200, 340, fill=shadow, width=2)


def _photograph(img: Image.Image, cond: PhotoConditions, rng) -> Image.Image:
    """The drawing as a camera takes it: slight blur, pose (rotation, shift, scale), the
    light's gain, side ramp and colour temperature, and sensor noise."""
    img = img.filter(ImageFilter.GaussianBlur(0.5))
    img = img.rotate(
        cond.angle,
        resample=Image.BILINEAR,
        translate=(cond.dx, cond.dy),
        fillcolor=_rgb(cond.background),
    )
    if abs(cond.scale - 1) > 1e-3:
        s = int(round(SIZE * cond.scale))
        big = img.resize((s, s), Image.BILINEAR)
        off = (s - SIZE) // 2
        img = (
            big.crop((off, off, off + SIZE, off + SIZE))
            if s >= SIZE
            else _pad(big, SIZE, _rgb(cond.background))
        )
    arr = np.asarray(img, dtype=np.float32)
    ramp = 1 + cond.side_light * np.linspace(-1, 1, SIZE, dtype=np.float32)[None, :, None]
    tint = np.array([1 + cond.warmth, 1.0, 1 - cond.warmth], dtype=np.float32)
    arr = arr * cond.gain * ramp * tint + rng.normal(0, 2.0, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def example_face(seed: int = 7) -> np.ndarray:
    """A frontal, evenly lit synthetic face (uint8 RGB, 112x112) for illustrations: the
    report shows perturbations on it instead of on anybody's photo."""
    rng = np.random.default_rng(seed)
    look = subject_look(rng, "female", "White")
    look.glasses = False
    cond = PhotoConditions(
        angle=0.0,
        dx=0.0,
        dy=0.0,
        scale=1.0,
        gain=1.0,
        side_light=0.0,
        background=np.array([150.0, 160.0, 170.0]),
        jpeg_quality=95,
        warmth=0.0,
    )
    return np.asarray(render_face(look, cond, 60.0, 0.3, rng))


def _pad(img: Image.Image, size: int, fill) -> Image.Image:
    out = Image.new("RGB", (size, size), fill)
    off = (size - img.width) // 2
    out.paste(img, (off, off))
    return out


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()
