"""A seeded synthetic clinical world whose truth is known, with rendered face photos.

Each subject has a chronological age ``A`` at the first photo, sex, race, a latent health
score ``H`` (higher = sicker) and a biological age ``B = A + 4 H + N(0, 2^2)``; the face
shows ``B`` and ``H`` (:mod:`audit.demo.faces`), never ``A`` itself. Two populations:

* ``cancer`` (default): ``H ~ N(1.25, 1)``, so patients look about 5 years older than they
  are, as in the FaceAge paper; cancer type, ECOG 0-4 and treatment intent (read off ``H``);
  death from a known proportional-hazards model with an exponential baseline::

      log h(t) = log(lambda0) + beta_bio (B - 62) / 10 + beta_health (H - mean H) + gamma[cancer]

  ended by administrative censoring at 5 years or random loss to follow-up;
* ``healthy``: a reference population (``H ~ N(0, 0.3)``, wider age range, a low hazard,
  no cancer columns), like the public photos face-age models are trained on.

Knobs plant known effects: ``shifts`` (``dark``, ``older``, ``jpeg``, ``site``) make a
drifted cohort; ``underserved`` raises one race group's share to 25% and makes the oracle
FaceAge 3 years too old and twice as noisy for it (the planted subgroup bias the fairness
audit must find); ``defects`` plants bad inputs (listed in ``defects.csv``); ``paired``
writes a paired study (:data:`PAIRED_CONDITIONS`: each subject photographed at baseline and
again with make-up, after surgery, with glasses, in another light and pose, and retaken).
The truth (B,
H, the linear predictor) goes to ``truth.csv`` and the planted parameters to
``truth.json``, never into the manifest.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from audit.demo.faces import (
    Appearance,
    jpeg_bytes,
    photo_conditions,
    render_face,
    subject_look,
)

RACES = {"White": 0.68, "Black": 0.13, "Asian": 0.08, "Hispanic": 0.08, "Other": 0.03}
SITE_RACES = {"White": 0.35, "Black": 0.30, "Asian": 0.10, "Hispanic": 0.22, "Other": 0.03}
CANCERS = {
    "thoracic": 0.20,
    "gastrointestinal": 0.18,
    "genitourinary": 0.14,
    "breast": 0.14,
    "head_and_neck": 0.10,
    "cns": 0.05,
    "haematologic": 0.11,
    "other": 0.08,
}
# Share female per cancer type (breast almost all women, genitourinary mostly prostate).
FEMALE_SHARE = {"breast": 0.99, "genitourinary": 0.2}
# Log hazard ratios of cancer type against thoracic (the reference).
CANCER_LOG_HR = {
    "thoracic": 0.0,
    "gastrointestinal": -0.1,
    "genitourinary": -0.6,
    "breast": -0.7,
    "head_and_neck": -0.3,
    "cns": 0.2,
    "haematologic": -0.2,
    "other": -0.3,
}
SHIFTS = ("dark", "older", "jpeg", "site")
DEFECTS = (
    "truncated",
    "empty",
    "tiny",
    "blank",
    "png_as_jpg",
    "duplicate_other_subject",
    "near_duplicate",
    "age_in_months",
    "missing_followup",
    "bad_event",
)
POPULATIONS = ("cancer", "healthy")


@dataclass
class WorldParams:
    """The planted truth of the synthetic world (written to ``truth.json``)."""

    population: str = "cancer"
    age_mean: float = 64.0
    age_sd: float = 12.0
    age_min: float = 20.0
    age_max: float = 95.0
    health_mean: float = 1.25
    health_sd: float = 1.0
    health_to_bio_years: float = 4.0
    bio_noise_sd: float = 2.0
    beta_bio_per_decade: float = 0.5  # planted HR per decade of biological age: e^0.5 = 1.65
    beta_health: float = 0.6
    baseline_hazard_per_year: float = 0.12
    admin_censor_years: float = 5.0
    loss_rate_per_year: float = 0.03
    oracle_faceage_sd: float = 3.0
    oracle_risk_sd: float = 0.3
    # race -> (bias in years, noise factor) of the oracle FaceAge: an under-served group
    oracle_bias: dict = field(default_factory=dict)
    races: dict = field(default_factory=lambda: dict(RACES))
    cancer_log_hr: dict = field(default_factory=lambda: dict(CANCER_LOG_HR))
    light: float = 1.0
    jpeg_quality: tuple = (60, 95)

    @property
    def hr_bio_per_decade(self) -> float:
        return float(np.exp(self.beta_bio_per_decade))

    @classmethod
    def make(
        cls,
        population: str = "cancer",
        shifts=(),
        underserved: str | None = None,
        underserved_share: float = 0.25,
    ) -> "WorldParams":
        """Parameters of a population, with drift ``shifts`` and an ``underserved`` group."""
        if population not in POPULATIONS:
            raise ValueError(f"population must be one of {POPULATIONS}, got {population!r}")
        p = cls(population=population)
        if population == "healthy":
            p.age_mean, p.age_sd, p.age_min, p.age_max = 50.0, 17.0, 18.0, 90.0
            p.health_mean, p.health_sd = 0.0, 0.3
            p.baseline_hazard_per_year = 0.01
        for shift in shifts:
            if shift not in SHIFTS:
                raise ValueError(f"unknown shift {shift!r}; known: {SHIFTS}")
            if shift == "dark":
                p.light = 0.6
            elif shift == "older":
                p.age_mean += 10.0
            elif shift == "jpeg":
                p.jpeg_quality = (12, 30)
            elif shift == "site":
                p.races = dict(SITE_RACES)
        if underserved is not None:
            if underserved not in p.races:
                raise ValueError(f"unknown group {underserved!r}; known: {list(p.races)}")
            rest = {k: v for k, v in p.races.items() if k != underserved}
            total = sum(rest.values())
            p.races = {k: (1 - underserved_share) * v / total for k, v in rest.items()}
            p.races[underserved] = underserved_share
            # The oracle model, like demo FaceAge, saw few faces of this group in training:
            # its FaceAge for them is 3 years too old and twice as noisy.
            p.oracle_bias = {underserved: (3.0, 2.0)}
        return p


def _truncated_normal(rng, n, mean, sd, low, high) -> np.ndarray:
    out = rng.normal(mean, sd, n)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = rng.normal(mean, sd, bad.sum())
        bad = (out < low) | (out > high)
    return out


def simulate(n: int, seed: int, params: WorldParams | None = None) -> pd.DataFrame:
    """Simulate ``n`` subjects; every column, truth included (see module docstring)."""
    p = params or WorldParams()
    rng = np.random.default_rng(seed)
    age = np.round(_truncated_normal(rng, n, p.age_mean, p.age_sd, p.age_min, p.age_max), 1)
    races = list(p.races)
    race = rng.choice(
        races, size=n, p=np.array([p.races[r] for r in races]) / sum(p.races.values())
    )
    health = rng.normal(p.health_mean, p.health_sd, n)
    bio = age + p.health_to_bio_years * health + rng.normal(0.0, p.bio_noise_sd, n)
    centred = health - p.health_mean
    lp = p.beta_bio_per_decade * (bio - 62.0) / 10.0 + p.beta_health * centred
    out = {"age": age, "race": race}
    if p.population == "cancer":
        cancer = rng.choice(list(CANCERS), size=n, p=np.array(list(CANCERS.values())))
        female_p = np.array([FEMALE_SHARE.get(c, 0.5) for c in cancer])
        ecog = np.clip(np.round(1.0 + 0.9 * centred + rng.normal(0, 0.6, n)), 0, 4).astype(int)
        logit = -0.8 + 1.0 * centred + np.where(np.isin(cancer, ["thoracic", "cns"]), 0.5, 0)
        intent = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "palliative", "curative")
        lp = lp + np.array([p.cancer_log_hr[c] for c in cancer])
        out.update(cancer_type=cancer, ecog=ecog, treatment_intent=intent)
    else:
        female_p = np.full(n, 0.5)
    sex = np.where(rng.random(n) < female_p, "female", "male")
    t_death = rng.exponential(1.0, n) / (p.baseline_hazard_per_year * np.exp(lp))
    t_loss = rng.exponential(1.0 / p.loss_rate_per_year, n)
    t_end = np.minimum(np.minimum(t_death, t_loss), p.admin_censor_years)
    event = (t_death <= t_end).astype(int)
    ids = [f"{i + 1:06d}" for i in range(n)]
    df = pd.DataFrame(
        {
            "photo_id": [f"P{i}" for i in ids],
            "subject_id": [f"S{i}" for i in ids],
            "sex": sex,
            **out,
        }
    )
    df["time_days"] = np.maximum(np.round(t_end * 365.25), 1).astype(int)
    df["event"] = event
    noise = rng.normal(0, p.oracle_faceage_sd, n)
    bias = np.array([p.oracle_bias.get(r, (0.0, 1.0))[0] for r in race])
    factor = np.array([p.oracle_bias.get(r, (0.0, 1.0))[1] for r in race])
    df["faceage"] = np.round(bio + noise * factor + bias, 2)
    df["risk"] = np.round(lp + rng.normal(0, p.oracle_risk_sd, n), 4)
    df["biological_age"] = bio
    df["health"] = health
    df["true_lp"] = lp
    return df


TRUTH_COLUMNS = ["photo_id", "subject_id", "biological_age", "health", "true_lp"]
AGING_PER_HEALTH = 0.5  # extra face-aging years per year per unit of (centred) illness


def expand_photos(
    subjects: pd.DataFrame, photos_per_subject: int, seed: int, interval_years: float = 1.5
) -> pd.DataFrame:
    """One row per photo: photo 0 at baseline, later ones every ~interval while followed.

    Age, biological age and remaining follow-up move with each photo; the subject's first
    photo (the earliest ``photo_date``) is the survival baseline.
    """
    rng = np.random.default_rng([seed, 7])
    base = pd.Timestamp("2020-01-01") + pd.to_timedelta(
        rng.integers(0, 3 * 365, len(subjects)), unit="D"
    )
    rows = []
    centre = float(subjects["health"].mean()) if "health" in subjects.columns else 0.0
    for k in range(photos_per_subject):
        offset = (
            np.zeros(len(subjects))
            if k == 0
            else k * interval_years + rng.uniform(-0.3, 0.3, len(subjects))
        )
        followed = subjects["time_days"].to_numpy() / 365.25 > offset
        part = subjects[followed].copy()
        off = offset[followed]
        part["photo_id"] = part["photo_id"] + ("" if k == 0 else f"-{k}")
        part["age"] = np.round(part["age"] + off, 1)
        # Illness ages the face faster: biological age advances 1 + 0.5 x (health - mean)
        # years per year, and FaceAge (and the photos) follow it.
        rate = (
            1.0 + AGING_PER_HEALTH * (part["health"].to_numpy() - centre)
            if "health" in part.columns
            else 1.0
        )
        part["biological_age"] = part["biological_age"] + off * rate
        part["faceage"] = np.round(part["faceage"] + off * rate, 2)
        part["time_days"] = np.maximum(part["time_days"] - np.round(off * 365.25), 1).astype(int)
        part["photo_date"] = (
            base[followed] + pd.to_timedelta(np.round(off * 365.25), unit="D")
        ).strftime("%Y-%m-%d")
        part["photo_index"] = k
        rows.append(part)
    out = pd.concat(rows).sort_values(["subject_id", "photo_index"], kind="stable")
    return out.reset_index(drop=True)


# The paired demo study: what each condition changes (never B or H), in the order written.
# Every second photo is a new photograph (the retake jitter), and the condition on top.
SURGERY_YEARS = 10.0  # the skin's age cues after a facelift and eyelid surgery: this younger
SURGERY_GAP_YEARS = 0.5  # the post-surgery photo: six months after the baseline one
PAIRED_CONDITIONS = {
    "makeup": "foundation (hides 60% of the pallor and of the wrinkles' and eye bags' "
    "contrast, covers age spots), lipstick and eye shadow",
    "post_surgery": f"facelift and eyelid surgery: wrinkles, eye bags, brows, jowls and folds "
    f"drawn {SURGERY_YEARS:g} years younger; photographed {12 * SURGERY_GAP_YEARS:g} months "
    "later (grey hair, hairline and age spots keep the biological age)",
    "glasses": "the same person wearing glasses",
    "lighting_b": "another room: 30% less light and a strong side light",
    "pose_b": "head tilted 12 degrees in plane and moved 3 px",
    "retake": "a second photo minutes later (small pose and light jitter only)",
}


def _retake(base, rng):
    """The same session photographed again: small pose and light jitter."""
    from dataclasses import replace

    return replace(
        base,
        angle=base.angle + rng.normal(0, 1.5),
        dx=base.dx + rng.normal(0, 0.7),
        dy=base.dy + rng.normal(0, 0.7),
        gain=base.gain * rng.uniform(0.97, 1.03),
        side_light=base.side_light + rng.normal(0, 0.03),
    )


def study_photo(condition: str, base, rng) -> tuple[object, Appearance]:
    """The photo conditions and appearance of a paired study's ``condition`` photo, from the
    baseline photo's conditions ``base`` (baseline: as it is, without glasses)."""
    from dataclasses import replace

    if condition == "baseline":
        return base, Appearance(glasses=False)
    cond = _retake(base, rng)
    if condition == "lighting_b":
        cond = replace(cond, gain=cond.gain * 0.7, side_light=cond.side_light + 0.35)
    elif condition == "pose_b":
        cond = replace(cond, angle=cond.angle + 12.0, dx=cond.dx + 3.0)
    appearance = {
        "makeup": Appearance(makeup=1.0, glasses=False),
        "post_surgery": Appearance(skin_age_shift=-SURGERY_YEARS, glasses=False),
        "glasses": Appearance(glasses=True),
    }.get(condition, Appearance(glasses=False))
    return cond, appearance


def paired_study(photos: pd.DataFrame, n_study: int | None = None) -> pd.DataFrame:
    """``photos`` (one baseline photo a subject, as :func:`expand_photos` writes them) with a
    paired study added for the first ``n_study`` subjects (None: all): their baseline photo
    labelled ``baseline`` and one photo per :data:`PAIRED_CONDITIONS` entry, the same day
    except the post-surgery photo (six months later, taken only of subjects still followed
    then; the face ages with the time). The other subjects' photos are left as they are."""
    photos = photos.assign(condition=None, skin_age=photos["biological_age"])
    study = photos.iloc[: len(photos) if n_study is None else n_study]
    photos.loc[study.index, "condition"] = "baseline"
    centre = float(photos["health"].mean())
    rows = [photos]
    for k, condition in enumerate(PAIRED_CONDITIONS, start=1):
        gap = SURGERY_GAP_YEARS if condition == "post_surgery" else 0.0
        part = study[study["time_days"].to_numpy() / 365.25 > gap].copy()
        part["photo_id"] = part["photo_id"] + f"-{condition}"
        part["age"] = np.round(part["age"] + gap, 1)
        rate = 1.0 + AGING_PER_HEALTH * (part["health"].to_numpy() - centre)
        part["biological_age"] = part["biological_age"] + gap * rate
        part["faceage"] = np.round(part["faceage"] + gap * rate, 2)
        part["time_days"] = np.maximum(part["time_days"] - round(gap * 365.25), 1).astype(int)
        part["photo_date"] = (
            pd.to_datetime(part["photo_date"]) + pd.Timedelta(days=round(gap * 365.25))
        ).dt.strftime("%Y-%m-%d")
        part["photo_index"] = k
        part["condition"] = condition
        part["skin_age"] = part["biological_age"] - (
            SURGERY_YEARS if condition == "post_surgery" else 0.0
        )
        rows.append(part)
    out = pd.concat(rows).sort_values(["subject_id", "photo_index"], kind="stable")
    return out.reset_index(drop=True)


def iter_jpegs(photos: pd.DataFrame, seed: int, params: WorldParams):
    """Yield ``(relative path, JPEG bytes)`` for every photo row, deterministically."""
    looks: dict[str, object] = {}
    jpeg = tuple(params.jpeg_quality)
    for row in photos.itertuples(index=False):
        sid = row.subject_id
        subject_no = int(sid[1:])
        if sid not in looks:
            looks[sid] = subject_look(
                np.random.default_rng([seed, subject_no, 0]), row.sex, row.race
            )
        rng = np.random.default_rng([seed, subject_no, 1 + int(row.photo_index)])
        cond = photo_conditions(rng, light=params.light, jpeg=jpeg)
        appearance = None
        condition = getattr(row, "condition", None)
        if isinstance(condition, str):  # a paired study: the baseline photo's, changed
            first = np.random.default_rng([seed, subject_no, 1])
            base = photo_conditions(first, light=params.light, jpeg=jpeg)
            cond, appearance = study_photo(condition, base, rng)
        img = render_face(looks[sid], cond, row.biological_age, row.health, rng, appearance)
        yield f"{sid}/{row.photo_id}.jpg", jpeg_bytes(img, cond.jpeg_quality)


def render_photos(
    photos: pd.DataFrame, images_dir: Path, seed: int, params: WorldParams, progress=None
) -> list[str]:
    """Render and write every photo as JPEG; return the image paths (relative)."""
    paths = []
    items = iter_jpegs(photos, seed, params)
    for rel, data in progress(items, total=len(photos)) if progress else items:
        path = images_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(rel)
    return paths


def plant_defects(folder: Path, manifest: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Damage a few rows and files of a written cohort in known ways (``defects.csv``)."""
    from PIL import Image

    rng = np.random.default_rng([seed, 99])
    images = folder / "images"
    per_kind = max(1, len(manifest) // 100)
    n = len(manifest)
    order = [int(i) for i in rng.permutation(n)]
    copies = ("duplicate_other_subject", "near_duplicate")
    # Copies go to rows in the later half and come from distinct, clean, earlier rows of
    # other subjects, so the later row of each pair is the planted one.
    late = [i for i in order if i >= n // 2]
    targets = {kind: [] for kind in DEFECTS}
    taken: set[int] = set()
    for kind in copies:
        for i in late:
            if len(targets[kind]) == per_kind:
                break
            if i not in taken:
                targets[kind].append(i)
                taken.add(i)
    rest = iter(i for i in order if i not in taken)
    for kind in DEFECTS:
        while len(targets[kind]) < per_kind:
            i = next(rest)
            targets[kind].append(i)
            taken.add(i)
    sources = iter(j for j in order if j not in taken and j < n // 2)
    planted = []
    manifest = manifest.copy()
    for kind in DEFECTS:
        for i in targets[kind]:
            rel = manifest.at[i, "image_path"]
            path = images / rel
            other = None
            if kind in copies:
                j = next(sources)
                while manifest.at[j, "subject_id"] == manifest.at[i, "subject_id"]:
                    j = next(sources)
                other = images / manifest.at[j, "image_path"]
            if kind == "truncated":
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "tiny":
                Image.open(path).resize((24, 24)).save(path, format="JPEG", quality=90)
            elif kind == "blank":
                Image.new("RGB", (112, 112), (128, 128, 128)).save(path, format="JPEG")
            elif kind == "png_as_jpg":
                Image.open(path).save(path, format="PNG")
            elif kind == "duplicate_other_subject":
                shutil.copyfile(other, path)
            elif kind == "near_duplicate":  # the same photo, re-edited and re-encoded
                from PIL import ImageEnhance

                ImageEnhance.Brightness(Image.open(other).convert("RGB")).enhance(1.03).save(
                    path, format="JPEG", quality=72
                )
            elif kind == "age_in_months":
                manifest.at[i, "age"] = round(float(manifest.at[i, "age"]) * 12, 1)
            elif kind == "missing_followup" and "followup_days" in manifest:
                manifest.at[i, "followup_days"] = None
            elif kind == "bad_event" and "death" in manifest:
                manifest.at[i, "death"] = 2
            planted.append({"photo_id": manifest.at[i, "photo_id"], "defect": kind})
    pd.DataFrame(planted).to_csv(folder / "defects.csv", index=False)
    return manifest


def _manifest(df: pd.DataFrame, oracle: bool) -> pd.DataFrame:
    """The manifest as a site would send it: sex as F/M, follow-up in days, and the oracle
    model's predictions where asked."""
    cols = {
        "photo_id": df["photo_id"],
        "subject_id": df["subject_id"],
        "age": df["age"],
        "sex": df["sex"].map({"female": "F", "male": "M"}),
        "race": df["race"],
    }
    for extra in ("cancer_type", "ecog", "treatment_intent", "photo_date", "condition"):
        if extra in df:
            cols[extra] = df[extra]
    cols["followup_days"] = df["time_days"]
    cols["death"] = df["event"]
    if oracle:
        cols["faceage"] = df["faceage"]
        cols["risk"] = df["risk"]
    return pd.DataFrame(cols)


def _cohort_spec(p: WorldParams, name: str, photos: bool, oracle: bool) -> dict:
    """The cohort's ``cohort.yaml``: it says plainly that the cohort is synthetic."""
    kind = "rendered face photos" if photos else "no photos"
    description = (
        f"SYNTHETIC {p.population} cohort from faceage-audit's demo world (no real "
        f"patients; {kind})."
    )
    if oracle:
        description += (
            " Its faceage and risk columns are an ORACLE model's predictions "
            "(truth + noise), not a trained image model's."
        )
    spec = {
        "name": name,
        "site": "synthetic",
        "description": description,
        "synthetic": True,
        "manifest": "manifest.csv",
        "columns": {"time": "followup_days", "event": "death"},
        "values": {"sex": {"F": "female", "M": "male"}},
        "vocabulary": {"race": list(RACES)},
        "time_unit": "days",
        "cropped": True,
        "face_layout": "demo",
    }
    if p.population == "cancer":
        spec["vocabulary"]["cancer_type"] = list(CANCERS)
        spec["covariates"] = [
            {"name": "ecog", "type": "numeric"},
            {"name": "treatment_intent", "type": "categorical", "reference": "curative"},
        ]
    return spec


def write_cohort(
    out: str | Path,
    n: int,
    seed: int,
    params: WorldParams | None = None,
    name: str | None = None,
    photos: bool = False,
    photos_per_subject: int = 1,
    oracle: bool | None = None,
    defects: bool = False,
    progress=None,
    paired: bool | int = False,
) -> Path:
    """Write a cohort folder of the synthetic world (manifest, cohort.yaml, truth, photos).

    Parameters
    ----------
    photos : render face photos under ``images/`` (otherwise a tabular cohort).
    oracle : include an oracle model's predictions (``faceage`` = B + noise, ``risk`` = the
        true log hazard + noise); default: only for tabular cohorts.
    defects : plant known bad inputs (rows and files), listed in ``defects.csv``.
    paired : a paired study (:func:`paired_study`; photos only) of every subject (True) or
        of the first ``paired`` subjects: cohort.yaml declares each condition of
        :data:`PAIRED_CONDITIONS` against ``baseline``; truth.csv adds each photo's condition
        and the age its skin's cues show (``skin_age``).
    """
    if paired and (not photos or photos_per_subject > 1):
        raise ValueError("a paired study is rendered photos, one baseline photo a subject")
    p = params or WorldParams()
    oracle = (not photos) if oracle is None else oracle
    out = Path(out)
    if (out / "images").exists():
        shutil.rmtree(out / "images")
    out.mkdir(parents=True, exist_ok=True)
    subjects = simulate(n, seed, p)
    df = (
        expand_photos(subjects, photos_per_subject, seed)
        if (photos or photos_per_subject > 1)
        else subjects.assign(photo_index=0)
    )
    if paired:
        df = paired_study(df, None if paired is True else int(paired))
    manifest = _manifest(df, oracle)
    if photos:
        manifest.insert(2, "image_path", render_photos(df, out / "images", seed, p, progress))
        if defects:
            manifest = plant_defects(out, manifest, seed)
    manifest.to_csv(out / "manifest.csv", index=False)
    df[TRUTH_COLUMNS + (["condition", "skin_age"] if paired else [])].to_csv(
        out / "truth.csv", index=False
    )
    spec = _cohort_spec(p, name or f"synthetic-{p.population}-n{n}-seed{seed}", photos, oracle)
    if paired:
        spec["paired"] = {"comparisons": dict.fromkeys(PAIRED_CONDITIONS, "baseline")}
    (out / "cohort.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    truth = {
        "seed": seed,
        "n": n,
        "params": asdict(p),
        "hr_bio_per_decade": p.hr_bio_per_decade,
        "photos": photos,
        "photos_per_subject": photos_per_subject,
        "oracle": oracle,
        "defects": defects,
    }
    if paired:
        truth["paired"] = {
            "conditions": PAIRED_CONDITIONS,
            "reference": "baseline",
            "subjects": n if paired is True else min(int(paired), n),
            "surgery_years": SURGERY_YEARS,
            "surgery_gap_years": SURGERY_GAP_YEARS,
            "biology_changed": False,
        }
    (out / "truth.json").write_text(json.dumps(truth, indent=2))
    return out
