"""Cohort folders: read ``cohort.yaml`` and the manifest into the standard columns.

A cohort folder (the README's contract) holds ``cohort.yaml``, a manifest (CSV or Parquet,
one row per photo) and optionally ``images/``. :func:`load_cohort` maps the manifest's
columns and codes to the standard ones, parses every value, and splits the rows into

* ``frame``: rows that parsed, with the standard columns (ids as strings, ``time`` in
  years, ``event`` 0/1), and
* ``quarantine``: rows that did not, each with the file, row, column and reason.

Quarantined rows never reach a model or a statistic. Whole-cohort problems (no
``cohort.yaml``, a mapped column that the manifest lacks) raise :class:`InputError`.
Row numbers are the manifest's 1-based data rows, so for a CSV ``row_number`` N is line
N + 1 of the file (line 1 is the header).
"""

from __future__ import annotations

import csv
import hashlib
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from audit.data.hashing import HashCache, sha256_file
from audit.errors import InputError
from audit.pipeline.schema import columns

STANDARD_COLUMNS = [
    "photo_id",
    "subject_id",
    "image_path",
    "age",
    "sex",
    "race",
    "cancer_type",
    "site",
    "camera",
    "time",
    "event",
    "photo_date",
    "faceage",
    "risk",
    "condition",
    "pair",
]
NUMERIC_COLUMNS = ["age", "time", "faceage", "risk"]
CATEGORICAL_COLUMNS = ["sex", "race", "cancer_type", "site", "camera"]
QUARANTINE_COLUMNS = columns("quarantine")
TIME_UNITS_IN_YEARS = {"days": 365.25, "weeks": 365.25 / 7, "months": 12.0, "years": 1.0}


class Covariate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: Literal["numeric", "categorical"] = "numeric"
    reference: str | None = None


class Comparison(BaseModel):
    """One comparison of a paired study: photos under ``condition`` against the same
    subjects' photos under ``reference``."""

    model_config = ConfigDict(extra="forbid")

    condition: str
    reference: str
    adjust_age: bool | None = None  # None: when the photos are a month or more apart

    @property
    def label(self) -> str:
        return f"{self.condition} vs {self.reference}"


class PairedStudy(BaseModel):
    """cohort.yaml's ``paired:``: which condition is compared with which, and whether the
    compared photos also count in the one-photo statistics (accuracy, fairness, survival,
    drift, robustness)."""

    model_config = ConfigDict(extra="forbid")

    comparisons: list[Comparison] = Field(min_length=1)
    in_main_statistics: bool = False

    @field_validator("comparisons", mode="before")
    @classmethod
    def _shorthand(cls, value):
        # `comparisons: {makeup: baseline, retake: baseline}` for condition: reference
        if isinstance(value, dict):
            return [{"condition": k, "reference": v} for k, v in value.items()]
        return value

    @field_validator("comparisons")
    @classmethod
    def _distinct(cls, value: list[Comparison]) -> list[Comparison]:
        labels = [c.label for c in value]
        same = [c.label for c in value if c.condition == c.reference]
        if same:
            raise ValueError(f"a condition compared with itself: {same}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"a comparison is declared twice: {labels}")
        return value

    @property
    def compared(self) -> set[str]:
        """The conditions compared against a reference (kept out of the one-photo
        statistics unless ``in_main_statistics``)."""
        return {c.condition for c in self.comparisons}


class CohortSpec(BaseModel):
    """The keys of ``cohort.yaml`` (all optional but ``name``)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    site: str | None = None
    description: str | None = None
    manifest: str | None = None
    images: str = "images"
    columns: dict[str, str] = Field(default_factory=dict)
    values: dict[str, dict[str, Any]] = Field(default_factory=dict)
    vocabulary: dict[str, list[str]] = Field(default_factory=dict)
    covariates: list[Covariate] = Field(default_factory=list)
    time_unit: Literal["days", "weeks", "months", "years"] = "days"
    cropped: bool = False
    detector: Literal["dlib", "opencv"] = "dlib"  # raw photos: the face detector
    face_layout: str | dict[str, float] | None = None
    expectations: str | None = None
    synthetic: bool = False
    paired: PairedStudy | None = None  # a paired study (conditions, references)

    @field_validator("columns", mode="before")
    @classmethod
    def _taken_at(cls, value):
        # `taken_at` is another name of the standard `photo_date`
        if isinstance(value, dict) and "taken_at" in value and "photo_date" not in value:
            value = {("photo_date" if k == "taken_at" else k): v for k, v in value.items()}
        return value

    @field_validator("covariates", mode="before")
    @classmethod
    def _covariate_names(cls, value):
        if value is None:
            return []
        return [{"name": v} if isinstance(v, str) else v for v in value]

    @property
    def covariate_names(self) -> list[str]:
        return [c.name for c in self.covariates]

    @field_validator("values", mode="before")
    @classmethod
    def _string_codes(cls, value):
        # YAML reads `0: male` with an int key; the manifest is read as text.
        if value is None:
            return {}
        return {col: {str(k): v for k, v in (codes or {}).items()} for col, codes in value.items()}

    @field_validator("vocabulary", mode="before")
    @classmethod
    def _string_vocab(cls, value):
        if value is None:
            return {}
        return {col: [str(v) for v in vals] for col, vals in value.items()}


@dataclass
class Cohort:
    """A loaded cohort: the good rows, the quarantined ones, and the hashes."""

    root: Path
    spec: CohortSpec
    manifest_path: Path
    frame: pd.DataFrame
    quarantine: pd.DataFrame
    manifest_sha256: str
    spec_sha256: str
    image_sha256: dict[str, str] = field(default_factory=dict)
    n_manifest_rows: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def sha256(self) -> str:
        """One digest for the whole cohort: cohort.yaml, manifest and every image."""
        h = hashlib.sha256()
        h.update(self.spec_sha256.encode())
        h.update(self.manifest_sha256.encode())
        for path in sorted(self.image_sha256):
            h.update(f"{path}\0{self.image_sha256[path]}\n".encode())
        return h.hexdigest()

    @property
    def images_root(self) -> Path:
        return (self.root / self.spec.images).resolve()

    def image_file(self, relative: str) -> Path:
        """The file of a (validated, relative) ``image_path``."""
        return self.images_root / relative

    @property
    def has_outcomes(self) -> bool:
        return {"time", "event"} <= set(self.frame.columns) and self.frame["event"].notna().any()

    @property
    def has_images(self) -> bool:
        return "image_path" in self.frame.columns and self.frame["image_path"].notna().any()

    @property
    def covariate_names(self) -> list[str]:
        return [c.name for c in self.spec.covariates]

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        images: str | Path | None = None,
        *,
        name: str = "in-memory",
        folder: str | Path | None = None,
        **spec,
    ) -> Cohort:
        """A cohort built in memory: ``frame`` (one row per photo, the standard columns or
        others mapped by ``columns=``) is written as a cohort folder (``cohort.yaml`` and
        ``manifest.csv``) and loaded back, so an audit of it is an audit of that folder.

        ``images``: the folder that ``image_path`` is relative to. ``folder``: where to write
        (default: a new temporary folder). ``spec``: any other ``cohort.yaml`` key
        (``time_unit``, ``covariates``, ``values``, ``site``, ``cropped``, ...).
        """
        target = (
            Path(folder)
            if folder is not None
            else Path(tempfile.mkdtemp(prefix="faceage-audit-cohort-"))
        )
        target.mkdir(parents=True, exist_ok=True)
        keys = {"name": name, "manifest": "manifest.csv", **spec}
        if images is not None:
            keys["images"] = str(Path(images).resolve())
        try:
            CohortSpec.model_validate(keys)
        except Exception as exc:  # pydantic names the key
            raise InputError(f"Cohort.from_frame: {exc}") from exc
        (target / "cohort.yaml").write_text(yaml.safe_dump(keys, sort_keys=False))
        frame.to_csv(target / "manifest.csv", index=False)
        return load_cohort(target)

    @property
    def analysed(self) -> pd.DataFrame:
        """The good rows the one-photo statistics use: without the photos of a paired study's
        compared conditions (make-up, post-surgery, retakes, ...) unless cohort.yaml declares
        ``paired: {in_main_statistics: true}``. Every good row is still predicted."""
        study = self.spec.paired
        if study is None or study.in_main_statistics or "condition" not in self.frame.columns:
            return self.frame
        keep = ~self.frame["condition"].isin(study.compared)
        return self.frame[keep].reset_index(drop=True)

    @property
    def paired_study(self) -> bool:
        """Whether the cohort declares a paired study and has condition labels."""
        return (
            self.spec.paired is not None
            and "condition" in self.frame.columns
            and self.frame["condition"].notna().any()
        )

    def subjects(self) -> pd.DataFrame:
        """One row per subject (survival analysis): the first photo by date, else by row,
        among the analysed rows (:attr:`analysed`)."""
        df = self.analysed
        if "photo_date" in df.columns and df["photo_date"].notna().any():
            df = df.sort_values(["photo_date", "_row"], na_position="last", kind="stable")
        else:
            df = df.sort_values("_row", kind="stable")
        return (
            df.drop_duplicates("subject_id", keep="first")
            .sort_values("_row")
            .reset_index(drop=True)
        )


def read_spec(root: Path) -> tuple[CohortSpec, str]:
    path = root / "cohort.yaml"
    if not path.is_file():
        raise InputError(
            f"{path}: no cohort.yaml (a cohort folder needs one, with at least `name`)"
        )
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    try:
        spec = CohortSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"key `{'.'.join(str(p) for p in e['loc'])}`: {e['msg']}" for e in exc.errors()
        )
        raise InputError(f"{path}: {problems}") from exc
    return spec, hashlib.sha256(raw).hexdigest()


def _manifest_path(root: Path, spec: CohortSpec) -> Path:
    if spec.manifest:
        path = Path(spec.manifest)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise InputError(f"{root / 'cohort.yaml'}: manifest `{spec.manifest}` not found")
        return path
    for name in ("manifest.parquet", "manifest.csv"):
        if (root / name).is_file():
            return root / name
    raise InputError(
        f"{root}: no manifest.parquet or manifest.csv (or set `manifest:` in cohort.yaml)"
    )


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest with every value as text (ids keep their leading zeros)."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
            df = df.astype(object).where(df.notna(), None)
            df = df.map(lambda v: None if v is None else str(v))
        else:
            header = _first_line(path)
            if not header.strip():
                raise InputError(f"{path}: the manifest is empty (no header row)")
            names = next(csv.reader([header], delimiter=_delimiter(header)))
            _no_duplicate_columns(path, names)
            # utf-8-sig drops a byte-order mark; CRLF line ends are read as any others.
            df = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                sep=_delimiter(header),
                encoding="utf-8-sig",
            )
    except InputError:
        raise
    except Exception as exc:  # pandas raises many types for a broken file
        raise InputError(f"{path}: cannot read manifest: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    _no_duplicate_columns(path, list(df.columns))
    return df


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        return fh.readline().rstrip("\r\n")


def _delimiter(header: str) -> str:
    """The manifest's delimiter: whichever of , ; tab splits the header most."""
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _no_duplicate_columns(path: Path, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(n.strip() for n in names):
        if name in seen:
            raise InputError(
                f"{path}: column `{name}` appears twice (columns {seen[name] + 1} "
                f"and {i + 1}); rename one"
            )
        seen[name] = i


class _Quarantine:
    def __init__(self, source_file: str):
        self.source_file = source_file
        self.rows: list[dict] = []

    def add(
        self, row_number: int, photo_id, column: str | None, reason: str, severity: str = "error"
    ) -> None:
        self.rows.append(
            {
                "photo_id": photo_id,
                "stage": "load",
                "severity": severity,
                "source_file": self.source_file,
                "row_number": int(row_number),
                "column_name": column,
                "reason": reason,
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=QUARANTINE_COLUMNS)


def _safe_image_path(value: str) -> str | None:
    """The normalised relative path, or None when it is absolute or escapes the root."""
    if value.startswith(("/", "\\")) or (len(value) > 1 and value[1] == ":"):
        return None
    parts = PurePosixPath(value.replace("\\", "/")).parts
    depth = 0
    clean = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            depth -= 1
            if depth < 0:
                return None
            clean.pop()
        else:
            depth += 1
            clean.append(part)
    return "/".join(clean) if clean else None


def _column_sources(
    root: Path, spec: CohortSpec, mpath: Path, columns: list[str]
) -> dict[str, str]:
    """Standard name -> manifest column, or :class:`InputError` for a mapping the manifest's
    ``columns`` cannot satisfy (checked on the header alone)."""
    unknown = set(spec.columns) - set(STANDARD_COLUMNS) - set(spec.covariate_names)
    if unknown:
        raise InputError(
            f"{root / 'cohort.yaml'}: `columns` maps unknown standard column(s) {sorted(unknown)}; "
            f"known: {STANDARD_COLUMNS} and the covariates"
        )
    missing = {std: col for std, col in spec.columns.items() if col not in columns}
    if missing:
        std, col = next(iter(missing.items()))
        raise InputError(
            f"{mpath}: column `{col}` (mapped to `{std}` in cohort.yaml) is missing; "
            f"the manifest has {columns}"
        )
    # Standard name -> source column (mapped, else a column of the same name).
    wanted = STANDARD_COLUMNS + spec.covariate_names
    source_of = {std: spec.columns.get(std, std) for std in wanted}
    source_of = {std: col for std, col in source_of.items() if col in columns}
    if "photo_date" not in source_of and "taken_at" in columns:
        source_of["photo_date"] = "taken_at"  # another name of the photo's date
    for cov in spec.covariate_names:
        if cov not in source_of:
            raise InputError(f"{mpath}: covariate column `{cov}` named in cohort.yaml is missing")
    if "photo_id" not in source_of and "image_path" not in source_of:
        raise InputError(
            f"{mpath}: no `photo_id` or `image_path` column (map one in cohort.yaml `columns`)"
        )
    if ("time" in source_of) != ("event" in source_of):
        have, lack = ("time", "event") if "time" in source_of else ("event", "time")
        raise InputError(f"{mpath}: has `{have}` but no `{lack}` column; survival needs both")
    return source_of


def manifest_columns(path: Path) -> list[str]:
    """The manifest's column names, read from its header (CSV) or schema (Parquet) alone."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            names = list(pq.read_schema(path).names)
        else:
            header = _first_line(path)
            if not header.strip():
                raise InputError(f"{path}: the manifest is empty (no header row)")
            names = next(csv.reader([header], delimiter=_delimiter(header)))
    except InputError:
        raise
    except Exception as exc:  # a broken file: pyarrow and csv raise many types
        raise InputError(f"{path}: cannot read manifest: {exc}") from exc
    names = [str(c).strip() for c in names]
    _no_duplicate_columns(path, names)
    return names


def _open_folder(root: str | Path) -> tuple[Path, CohortSpec, str, Path]:
    """The folder, its parsed cohort.yaml and digest, and the manifest's path."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: cohort folder not found")
    spec, spec_sha = read_spec(root)
    return root, spec, spec_sha, _manifest_path(root, spec)


def check_cohort(root: str | Path) -> tuple[Path, set[str]]:
    """The checks of :func:`load_cohort` that need no row: the folder, cohort.yaml, the
    manifest's presence and the column mapping against its header. Milliseconds, so that the
    CLI reports a broken cohort before the Prefect server starts. Returns the manifest's path
    and the column names a model may read (standard names present, and the raw ones)."""
    root, spec, _, mpath = _open_folder(root)
    columns = manifest_columns(mpath)
    return mpath, set(_column_sources(root, spec, mpath, columns)) | set(columns)


class _Rows:
    """The manifest's rows under checking: the standard columns, the rows already rejected
    and the quarantine that records why (file, row, the manifest's column, reason)."""

    def __init__(self, raw: pd.DataFrame, source_of: dict[str, str], source: str):
        self.source_of = source_of
        self.q = _Quarantine(source)
        df = pd.DataFrame({"_row": np.arange(1, len(raw) + 1)})
        for std, col in source_of.items():
            df[std] = raw[col].astype(object).where(raw[col].notna(), None).values
            df[std] = df[std].map(lambda v: v.strip() if isinstance(v, str) else v)
            df.loc[df[std] == "", std] = None
        if "photo_id" not in df.columns:
            df["photo_id"] = df["image_path"]
        if "subject_id" not in df.columns:
            df["subject_id"] = df["photo_id"]
        df["subject_id"] = df["subject_id"].where(df["subject_id"].notna(), df["photo_id"])
        self.df = df
        self.bad = pd.Series(False, index=df.index)

    def reject(self, mask: pd.Series, column: str, reason_of) -> None:
        """Quarantine the rows of ``mask`` not rejected before, ``reason_of(i)`` each."""
        df = self.df
        for i in df.index[mask & ~self.bad]:
            self.q.add(
                df.at[i, "_row"],
                df.at[i, "photo_id"],
                self.source_of.get(column, column),
                reason_of(i),
            )
        self.bad |= mask


def _check_ids(rows: _Rows) -> None:
    """Photo ids present, not spreadsheet formulas, not repeated."""
    df, reject = rows.df, rows.reject
    reject(df["photo_id"].isna(), "photo_id", lambda i: "missing photo id")
    for col in ("photo_id", "subject_id"):
        formula = df[col].map(lambda v: isinstance(v, str) and v[:1] in ("=", "+", "-", "@"))
        reject(
            formula,
            col,
            lambda i, col=col: (
                f"id {df.at[i, col]!r} looks like a spreadsheet formula (it would run when a CSV "
                "export is opened); ids must not start with = + - @"
            ),
        )
    dup = df["photo_id"].notna() & df["photo_id"].duplicated(keep="first")
    first_row = df.drop_duplicates("photo_id").set_index("photo_id")["_row"]
    reject(
        dup,
        "photo_id",
        lambda i: f"duplicate photo id (first seen at row {first_row[df.at[i, 'photo_id']]})",
    )


def _map_values(rows: _Rows, spec: CohortSpec) -> None:
    """Value mapping (manifest code -> standard value), then the vocabulary."""
    df, reject = rows.df, rows.reject
    for std, codes in spec.values.items():
        if std not in df.columns:
            continue
        present = df[std].notna()
        known = df[std].isin(list(codes))
        reject(
            present & ~known,
            std,
            lambda i, std=std, codes=codes: (
                f"value {df.at[i, std]!r} not in the value mapping {sorted(codes)}"
            ),
        )
        df.loc[present & known, std] = df.loc[present & known, std].map(
            lambda v, codes=codes: None if codes[v] is None else str(codes[v])
        )
    for std, allowed in spec.vocabulary.items():
        if std not in df.columns:
            continue
        outside = df[std].notna() & ~df[std].isin(allowed)
        reject(
            outside,
            std,
            lambda i, std=std, allowed=allowed: (
                f"value {df.at[i, std]!r} not in the vocabulary {allowed}"
            ),
        )


def _parse_values(rows: _Rows, spec: CohortSpec) -> None:
    """Numbers (finite), age and follow-up (present, not negative; time in years), event
    (0 or 1), photo dates, and image paths (relative, inside the images root)."""
    df, reject = rows.df, rows.reject
    for std in NUMERIC_COLUMNS + [c.name for c in spec.covariates if c.type == "numeric"]:
        if std not in df.columns:
            continue
        text = df[std]
        num = pd.to_numeric(text, errors="coerce")
        unparsable = text.notna() & ~np.isfinite(num.astype(float))
        reject(
            unparsable, std, lambda i, std=std: f"cannot parse {df.at[i, std]!r} as a finite number"
        )
        df[std] = num.astype(float)
    if "age" in df.columns:
        reject(df["age"].isna(), "age", lambda i: "missing age")
        reject(df["age"] < 0, "age", lambda i: f"negative age {df.at[i, 'age']}")
    if "time" in df.columns:
        reject(df["time"] < 0, "time", lambda i: f"negative follow-up time {df.at[i, 'time']}")
        reject(df["time"].isna() & ~rows.bad, "time", lambda i: "missing follow-up time")
        df["time"] = df["time"] / TIME_UNITS_IN_YEARS[spec.time_unit]
    if "event" in df.columns:
        ev_text = df["event"]
        ev = pd.to_numeric(ev_text, errors="coerce")
        reject(
            ~ev.isin([0, 1]),
            "event",
            lambda i: f"event must be 0 (censored) or 1 (death), got {ev_text[i]!r}",
        )
        df["event"] = ev
    if "photo_date" in df.columns:
        dates = pd.to_datetime(df["photo_date"], errors="coerce")
        reject(
            df["photo_date"].notna() & dates.isna(),
            "photo_date",
            lambda i: f"cannot parse {df.at[i, 'photo_date']!r} as a date",
        )
        df["photo_date"] = dates
    if "image_path" in df.columns:
        safe = df["image_path"].map(lambda v: _safe_image_path(v) if isinstance(v, str) else None)
        reject(
            df["image_path"].notna() & safe.isna(),
            "image_path",
            lambda i: (
                f"image path {df.at[i, 'image_path']!r} is absolute or escapes the images root"
            ),
        )
        df["image_path"] = safe


def _hash_images(rows: _Rows, images_root: Path, cache: HashCache) -> dict[str, str]:
    """SHA-256 of every image a good row names; a missing file, or a link out of the images
    root, quarantines its row."""
    df, reject = rows.df, rows.reject
    image_sha: dict[str, str] = {}
    missing, escaping = [], []
    for i in df.index[df["image_path"].notna() & ~rows.bad]:
        rel = df.at[i, "image_path"]
        path = images_root / rel
        if not path.resolve().is_relative_to(images_root):
            escaping.append(i)  # a symlink that leads out of the images root
        elif not path.is_file():
            missing.append(i)
        else:
            image_sha[rel] = cache.sha256(path)
    cache.save()
    reject(
        df.index.isin(escaping),
        "image_path",
        lambda i: f"image {df.at[i, 'image_path']!r} is a link that escapes the images root",
    )
    reject(
        df.index.isin(missing),
        "image_path",
        lambda i: f"image {df.at[i, 'image_path']!r} not found under {images_root}",
    )
    return image_sha


def _typed(good: pd.DataFrame, spec: CohortSpec) -> pd.DataFrame:
    """Ids and categories as objects, event as int."""
    for col in ["photo_id", "subject_id", "condition", "pair"] + CATEGORICAL_COLUMNS:
        if col in good.columns:
            good[col] = good[col].astype(object)
    if "condition" in good.columns:
        text = good["condition"].where(good["condition"].isna(), good["condition"].astype(str))
        good["condition"] = text.str.strip()
    if "event" in good.columns:
        good["event"] = good["event"].astype(int)
    for cov in spec.covariates:
        if cov.type == "categorical" and cov.name in good.columns:
            good[cov.name] = good[cov.name].astype(object)
    return good


def load_cohort(
    root: str | Path, hash_cache: HashCache | None = None, hash_images: bool = True
) -> Cohort:
    """Load a cohort folder into the standard columns.

    Parameters
    ----------
    root : the cohort folder.
    hash_cache : cache of image digests (by path, size, mtime); None hashes every file.
    hash_images : compute SHA-256 of every image that a good row names.

    Returns
    -------
    Cohort
        ``frame`` holds the rows that parsed (plus ``_row``, the manifest row number);
        ``quarantine`` the others with file, row, column and reason.

    Raises
    ------
    InputError
        No cohort.yaml or manifest, invalid keys, or a mapped column the manifest lacks.
    """
    root, spec, spec_sha, mpath = _open_folder(root)
    raw = read_manifest(mpath)
    rows = _Rows(raw, _column_sources(root, spec, mpath, list(raw.columns)), str(mpath))
    if spec.paired is not None and "condition" not in rows.df.columns:
        raise InputError(
            f"{mpath}: cohort.yaml declares a paired study (`paired:`) but the manifest has no "
            "`condition` column (map one in cohort.yaml `columns`)"
        )
    _check_ids(rows)
    _map_values(rows, spec)
    _parse_values(rows, spec)
    image_sha: dict[str, str] = {}
    if "image_path" in rows.df.columns and hash_images:
        cache = hash_cache if hash_cache is not None else HashCache(None)
        image_sha = _hash_images(rows, (root / spec.images).resolve(), cache)
    good = _typed(rows.df[~rows.bad].reset_index(drop=True), spec)
    return Cohort(
        root=root,
        spec=spec,
        manifest_path=mpath,
        frame=good,
        quarantine=rows.q.frame(),
        manifest_sha256=sha256_file(mpath),
        spec_sha256=spec_sha,
        image_sha256=image_sha,
        n_manifest_rows=len(raw),
    )


def age_band(age: pd.Series, cuts: list[float]) -> pd.Series:
    """Age bands as in the FaceAge paper: ``<=65``, ``65-75``, ``75-85``, ``>85`` by default."""
    cuts = sorted(cuts)
    labels = (
        [f"<={cuts[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(cuts, cuts[1:])] + [f">{cuts[-1]:g}"]
    )
    bins = [-math.inf] + cuts + [math.inf]
    return pd.cut(age, bins=bins, labels=labels, right=True).astype(object)


def natural_order(values) -> list:
    """Group names in a reading order: Q1..Q4, age bands by their lower bound, else sorted."""

    def key(v):
        text = str(v)
        digits = "".join(ch if (ch.isdigit() or ch == ".") else " " for ch in text).split()
        try:
            first = float(digits[0]) if digits else float("inf")
        except ValueError:
            first = float("inf")
        # "<=65" reads before "65-75", and ">85" after "75-85"
        return (
            first + (0.5 if text.startswith(">") else -0.5 if text.startswith("<") else 0),
            text,
        )

    return sorted(values, key=key)
