"""The combined audit: several sites' bundles (:mod:`audit.pipeline.bundle`) verified, checked
for the same models, and pooled quantity by quantity, with no row of any site's data.

Sites
    Every bundle's digest and Ed25519 signature are checked (and, when ``[combine] site_keys``
    names each site's public key, that the bundle was signed with it). A bundle that fails is
    listed with its problems and not pooled; so are two different bundles that name the
    same site (the same bundle given twice is read once). Sites are named by the label each
    chose and handled in the order of their labels, so the result does not depend on the
    order the bundles were given.

Models
    For each model, the (checkpoint, spec) digests most sites audited are the model; a site
    that audited another checkpoint or spec of that name is named and not pooled for it
    (ties go to the digests that sort first; the check fails either way). A model supplied as
    predictions has no checkpoint digest: only its spec is compared, and the page says so.

Pooling
    Each quantity (model, output, quantity, attribute, group, horizon) is pooled over the
    sites that report it with a standard error, by :func:`audit.stats.meta.pool` (random
    effects, tau^2 by REML or DerSimonian-Laird, Hartung-Knapp CI; the fixed effect beside
    it). Log hazard ratios are pooled as they come; correlations on Fisher's z
    (``atanh r``, SE ``se / (1 - r^2)``), observed/expected ratios on the log scale (SE
    ``se / ratio``) and shares of photos as empirical logits of their counts, all turned
    back for the tables; the rest as they are. ``se``, ``tau2``
    and the deleted residuals are on the pooling scale. One site pools to itself: its own
    estimate and its own CI. A REML fit that does not converge pools nothing and says so.

Sites that stand out
    Each site's studentized deleted residual (its estimate against the pool of the others,
    Viechtbauer and Cheung 2010); a site is ``flagged`` when its estimate lies outside the
    ``ci_level`` interval the other sites predict for it (``|residual| > z``), and
    ``outside_prediction`` when it lies outside the pooled prediction interval for a new
    site. Needs three sites.

Subgroup differences
    For each fairness metric and grouping, every group's difference to the reference group
    (the group with the most subjects over all sites) is computed at each site from the
    two groups' values (standard error ``sqrt(se_g^2 + se_ref^2)``: the groups of one
    grouping hold different subjects) and pooled as above: is a bias consistent across
    sites (``I^2``, the flagged sites) and how large is it pooled? Its band is the pooled
    CI at a Bonferroni level over the groups of the grouping; a difference is ``flagged``
    when its band lies wholly beyond the metric's tolerance on the worse side (both sides
    for signed metrics) and the pooled group holds at least ``min_group_size`` subjects.

References
----------
Viechtbauer W, Cheung MW-L. Outlier and influence diagnostics for meta-analysis. Res Synth
Methods 1, 2010.
Riley RD et al. External validation of clinical prediction models using big datasets from
e-health records or IPD meta-analysis. BMJ 353, 2016 (pooling C and calibration across
clusters).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from audit.errors import InputError
from audit.metrics.fairness import is_flagged
from audit.pipeline.bundle import verify_bundle
from audit.pipeline.config import AuditConfig
from audit.pipeline.schema import columns
from audit.pipeline.verdict import Evidence, check_row, evaluate, sig3
from audit.stats.meta import MetaNotConverged, deleted_residuals, pool

FLOW = "combine"
KEY = ["model", "output", "quantity", "attribute", "group_name", "horizon", "scale"]
ENTRY_FIELDS = ("model", "output", "quantity", "attribute", "group", "scale")
# the checks of an audit run that judge pooled estimates as they judge a site's own
REUSED_CHECKS = (
    "faceage_accuracy",
    "faceage_adjusted_hr_per_decade",
    "risk_c_index",
    "risk_q4_vs_q1_hr",
)
POOLED = "pooled"
FIT_COLUMNS = [
    "model", "model_id", "n", "events", "concordance", "concordance_low", "concordance_high",
    "status", "note",
]  # fmt: skip


@dataclass
class SiteBundle:
    """One bundle file as read: its site label and key, and what is wrong with it."""

    file: str
    sha256: str
    site: str | None
    public_key: str | None
    bundle: dict | None
    problems: list[str] = field(default_factory=list)


def read_site(path: str | Path, keys: dict[str, str] | None = None) -> SiteBundle:
    """Read and verify one bundle (a missing file is bad input: :class:`InputError`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such bundle file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    problems = verify_bundle(path)
    try:  # a bundle that fails is still named by the site it claims, where it names one
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("bundle"), dict):
        doc = None
    if not problems:
        problems = _structure_problems(doc["bundle"], path)
    bundle = doc["bundle"] if doc is not None else None
    site = bundle.get("site") if bundle and isinstance(bundle.get("site"), str) else None
    key = doc.get("public_key") if doc and isinstance(doc.get("public_key"), str) else None
    if not problems and keys:
        expected = keys.get(site)
        if expected is None:
            problems.append(f"{path}: site {site!r} has no key in [combine] site_keys")
        elif expected.strip().lower() != key:
            problems.append(
                f"{path}: signed with key {key[:16]}..., not the key of site {site!r} "
                f"({expected[:16]}...)"
            )
    return SiteBundle(path.name, digest, site, key, bundle, problems)


def _structure_problems(bundle: dict, path: Path) -> list[str]:
    """What a signed bundle lacks to be pooled (a site may sign a malformed one)."""
    problems = []
    if not isinstance(bundle.get("site"), str) or not bundle["site"].strip():
        problems.append(f"{path}: the bundle names no site")
    models = bundle.get("models")
    if not isinstance(models, list) or not all(
        isinstance(m, dict) and isinstance(m.get("name"), str) for m in models
    ):
        problems.append(f"{path}: `models` is not a list of named models")
    quantities = bundle.get("quantities")
    if not isinstance(quantities, list):
        return problems + [f"{path}: `quantities` is not a list"]
    for i, q in enumerate(quantities):
        missing = [k for k in ENTRY_FIELDS if not isinstance(q, dict) or k not in q]
        if missing:
            problems.append(f"{path}: quantities[{i}] lacks {', '.join(missing)}")
            break
        bad = [
            k
            for k in ("estimate", "se", "ci_low", "ci_high", "n", "events", "horizon")
            if q.get(k) is not None and not isinstance(q[k], (int, float))
        ]
        if bad:
            problems.append(f"{path}: quantities[{i}] has a {bad[0]} that is not a number")
            break
    return problems


# ------------------------------------------------------------------------------- sites


def _sites(sites: list[SiteBundle]) -> tuple[pd.DataFrame, list[SiteBundle]]:
    """The ``combined_sites`` rows and the bundles that will be pooled, by site label."""
    order = sorted(sites, key=lambda s: (s.site or "", s.sha256))
    seen: dict[str, list[SiteBundle]] = {}
    for s in order:
        if not s.problems:
            seen.setdefault(s.site, []).append(s)
    rows, usable, done = [], [], set()
    for s in order:
        if (s.site, s.sha256) in done:
            continue  # the same bundle given twice: read once
        done.add((s.site, s.sha256))
        problems = list(s.problems)
        twins = {t.sha256 for t in seen.get(s.site, [])}
        if not problems and len(twins) > 1:
            problems.append(
                f"{len(twins)} different bundles name site {s.site!r}: none of them is pooled"
            )
        b = (s.bundle or {}) if not s.problems else {}  # nothing unverified is shown
        comp = b.get("composition") if isinstance(b.get("composition"), dict) else None
        rows.append(
            {
                "site": s.site or f"(unread: {s.file})",
                "bundle_file": s.file,
                "bundle_sha256": s.sha256,
                "public_key": s.public_key,
                "source_run": b.get("run_id"),
                "source_flow": b.get("flow"),
                "synthetic": bool(b.get("synthetic")) if b else None,
                "subjects": comp.get("subjects") if comp else None,
                "config_sha256": b.get("config_sha256"),
                "code_version": b.get("code_version"),
                "composition": json.dumps(comp, sort_keys=True) if comp else None,
                "status": "not pooled" if problems else POOLED,
                "problems": "; ".join(problems) or None,
            }
        )
        if not problems:
            usable.append(s)
    return pd.DataFrame(rows, columns=columns("combined_sites")), usable


def _models(usable: list[SiteBundle]) -> tuple[pd.DataFrame, list[dict], set]:
    """``combined_models`` rows, the models as most sites audited them, and the
    ``(site, model)`` pairs left out for another checkpoint or spec."""
    held: dict[str, dict[str, dict]] = {}
    for s in usable:
        for m in s.bundle["models"]:
            held.setdefault(m["name"], {})[s.site] = m
    rows, models, other = [], [], set()
    for name in sorted(held):
        by_site = held[name]
        digests = {
            site: (m.get("checkpoint_sha256"), m.get("spec_sha256")) for site, m in by_site.items()
        }
        counts = pd.Series(list(digests.values())).value_counts()
        reference = sorted(counts.index, key=lambda d: (-counts[d], str(d)))[0]
        first = next(site for site in sorted(by_site) if digests[site] == reference)
        models.append(by_site[first])
        for site in sorted(by_site):
            checkpoint, spec = digests[site]
            if digests[site] == reference:
                status = "same as most sites" + (
                    "" if checkpoint else " (no checkpoint digest: predictions supplied)"
                )
            else:
                parts = [
                    what
                    for what, a, b in (
                        ("checkpoint", checkpoint, reference[0]),
                        ("spec", spec, reference[1]),
                    )
                    if a != b
                ]
                status = f"another {' and '.join(parts)} than most sites: not pooled"
                other.add((site, name))
            rows.append(
                {
                    "model": name,
                    "site": site,
                    "kind": by_site[site].get("kind"),
                    "checkpoint_sha256": checkpoint,
                    "spec_sha256": spec,
                    "status": status,
                }
            )
    return pd.DataFrame(rows, columns=columns("combined_models")), models, other


def models_of(sites: list[SiteBundle]) -> list[dict]:
    """The models as most of the pooled sites audited them."""
    return _models(_sites(sites)[1])[1]


# ---------------------------------------------------------------------------- scales


def pooling_scale(quantity: str) -> str:
    """How a quantity is pooled: ``fisher_z`` (correlations), ``log`` (O/E ratios),
    ``logit`` (shares of photos, from their counts) or ``identity`` (everything else; log
    hazard ratios come on the log scale already)."""
    if quantity.startswith("robustness_over_tolerance:"):
        return "logit"
    metric = quantity.split(":", 1)[1] if quantity.startswith("fairness:") else quantity
    return {"pearson_r": "fisher_z", "calibration_oe": "log"}.get(metric, "identity")


def to_pooling(scale: str, y, se, n=None) -> tuple[np.ndarray, np.ndarray]:
    """Estimates and SEs on the pooling scale (NaN where the scale does not reach). A share
    goes to the logit of its count with half a photo added to each side (``n`` photos: an
    empirical logit, finite at 0 and 1), SE ``sqrt(1 / (x + 1/2) + 1 / (n - x + 1/2))``."""
    y, se = np.asarray(y, float), np.asarray(se, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if scale == "fisher_z":
            ok = np.abs(y) < 1
            z = np.arctanh(np.clip(y, -0.999999, 0.999999))
            return np.where(ok, z, np.nan), np.where(ok, se / (1 - y**2), np.nan)
        if scale == "log":
            ok = y > 0
            return np.where(ok, np.log(np.where(ok, y, 1)), np.nan), np.where(ok, se / y, np.nan)
        if scale == "logit":
            n = np.asarray(n, float)
            ok = (n > 0) & (y >= 0) & (y <= 1)
            x = np.round(y * n)
            return (
                np.where(ok, np.log((x + 0.5) / (n - x + 0.5)), np.nan),
                np.where(ok, np.sqrt(1 / (x + 0.5) + 1 / (n - x + 0.5)), np.nan),
            )
    return y, se


def from_pooling(scale: str, x):
    """A value on the pooling scale turned back (NaN stays NaN)."""
    x = np.asarray(x, float)
    if scale == "fisher_z":
        out = np.tanh(x)
    elif scale == "log":
        out = np.exp(x)
    elif scale == "logit":
        out = 1 / (1 + np.exp(-x))
    else:
        out = x
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------- entries


def _entries(usable: list[SiteBundle], other: set) -> pd.DataFrame:
    """Every site's entries, one row each, with why it cannot be pooled (or ``pooled``)."""
    rows = []
    for s in usable:
        for q in s.bundle["quantities"]:
            entry = {
                "model": q["model"],
                "output": q["output"],
                "quantity": q["quantity"],
                "attribute": q["attribute"],
                "group_name": q["group"],
                "reference_group": None,
                "horizon": q.get("horizon"),
                "scale": q["scale"],
                "site": s.site,
                "n": q.get("n"),
                "events": q.get("events"),
                "estimate": q.get("estimate"),
                "se": q.get("se"),
                "ci_low": q.get("ci_low"),
                "ci_high": q.get("ci_high"),
            }
            if (s.site, q["model"]) in other:
                status = "not pooled: the site audited another checkpoint or spec of this model"
            elif "suppressed" in q:
                status = f"withheld at the site: {q['suppressed']}"
            elif not _finite(entry["estimate"]):
                status = "not pooled: no estimate"
            elif pooling_scale(q["quantity"]) == "logit":
                status = POOLED if _finite(entry["n"]) and entry["n"] > 0 else "not pooled: no n"
            elif not _finite(entry["se"]) or entry["se"] <= 0:
                status = "not pooled: no standard error"
            else:
                status = POOLED
            rows.append({**entry, "status": status})
    frame = pd.DataFrame(rows, columns=[c for c in columns("combined_estimates")])
    frame["horizon"] = frame["horizon"].astype(float)
    for name in ("estimate", "se", "ci_low", "ci_high"):
        frame[name] = frame[name].astype(float)
    scales = frame["quantity"].map(pooling_scale)
    for i in frame.index[frame["status"] == POOLED]:
        y, _ = to_pooling(scales[i], frame.at[i, "estimate"], frame.at[i, "se"], frame.at[i, "n"])
        if not np.isfinite(y):
            frame.at[i, "status"] = "not pooled: the value lies beyond its pooling scale"
    return frame


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


# ---------------------------------------------------------------------------- pooling


@dataclass
class _Columns:
    """The entries' columns as arrays, and the per-site results filled in while pooling."""

    site: np.ndarray
    status: np.ndarray
    estimate: np.ndarray
    se: np.ndarray
    n: np.ndarray
    events: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    weight: np.ndarray
    resid: np.ndarray
    flagged: np.ndarray
    outside: np.ndarray

    @classmethod
    def of(cls, entries: pd.DataFrame) -> "_Columns":
        def num(name):
            return pd.to_numeric(entries[name], errors="coerce").to_numpy(float)

        size = len(entries)
        return cls(
            entries["site"].to_numpy(object), entries["status"].to_numpy(object),
            num("estimate"), num("se"), num("n"), num("events"), num("ci_low"), num("ci_high"),
            np.full(size, np.nan), np.full(size, np.nan), np.full(size, None, object),
            np.full(size, None, object),
        )  # fmt: skip


def _pool_one(idx: np.ndarray, col: _Columns, scale: str, cfg: AuditConfig):
    """Pool the ``pooled`` sites among rows ``idx`` of one quantity; write each site's
    weight, deleted residual and flags into ``col``; return the pooled numbers and the
    pooling-scale inputs ``(y, v)`` (None when nothing pooled)."""
    c = cfg.combine
    idx = idx[np.argsort(col.site[idx].astype(str), kind="stable")]
    use = idx[col.status[idx] == POOLED]
    n, events = col.n[use], col.events[use]
    base = {
        "pooling": scale,
        "k": len(use),
        "k_withheld": int(sum(str(x).startswith("withheld") for x in col.status[idx])),
        "n": int(np.nansum(n)) if np.isfinite(n).any() else None,
        "events": int(np.nansum(events)) if np.isfinite(events).any() else None,
        "flagged_sites": None,
        "note": None,
    }
    if not len(use):
        reasons = sorted(set(map(str, col.status[idx])))
        return {**base, "status": "not pooled", "note": "; ".join(reasons)}, None
    y, se = to_pooling(scale, col.estimate[use], col.se[use], n)
    v = se**2
    try:
        p = pool(y, v, c.method, c.hartung_knapp, c.ci_level)
    except MetaNotConverged as exc:
        return {**base, "status": "not_converged", "note": str(exc)}, None
    back = lambda x: from_pooling(scale, x)  # noqa: E731
    if p.k == 1:  # one site pools to itself: its own estimate and CI
        i = use[0]
        low = col.ci_low[i] if np.isfinite(col.ci_low[i]) else back(p.low)
        high = col.ci_high[i] if np.isfinite(col.ci_high[i]) else back(p.high)
        own = float(col.estimate[i])
        numbers = {
            "method": p.method, "fixed": own, "fixed_low": low, "fixed_high": high,
            "estimate": own, "se": p.se, "ci_low": low, "ci_high": high,
            "ci_method": "the site's own",
        }  # fmt: skip
    else:
        numbers = {
            "method": p.method, "fixed": back(p.fixed), "fixed_low": back(p.fixed_low),
            "fixed_high": back(p.fixed_high), "estimate": back(p.estimate), "se": p.se,
            "ci_low": back(p.low), "ci_high": back(p.high), "ci_method": p.ci_method,
        }  # fmt: skip
    numbers.update(
        tau2=p.tau2, q=p.q, q_p=p.q_p, i2=p.i2, h2=p.h2, pred_low=back(p.pred_low),
        pred_high=back(p.pred_high),
    )  # fmt: skip
    weights = 1 / (v + p.tau2)
    try:
        resid = deleted_residuals(y, v, c.method)
    except MetaNotConverged:
        resid = np.full(len(y), np.nan)
    flagged = np.abs(resid) > _z(c.ci_level)
    outside = (y < p.pred_low) | (y > p.pred_high) if p.k >= 3 else np.zeros(len(y), bool)
    col.weight[use] = weights / weights.sum()
    col.resid[use] = resid
    col.flagged[use] = list(map(bool, flagged))
    col.outside[use] = list(map(bool, outside))
    names = col.site[use][flagged]
    base["flagged_sites"] = ", ".join(names) if len(names) else None
    return {**base, **numbers, "status": POOLED}, (y, v)


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2))


def _differences(entries: pd.DataFrame, cfg: AuditConfig) -> pd.DataFrame:
    """Each site's difference of every group to the reference group, per fairness metric
    and grouping, as rows shaped like the entries (quantity ``difference:<metric>``)."""
    fair = entries[
        entries["quantity"].str.startswith("fairness:") & (entries["attribute"] != "all")
    ].assign(_h=lambda f: f["horizon"].astype(float).fillna(-1.0))
    keys = ["model", "output", "quantity", "attribute", "_h", "scale"]
    usable = fair[fair["status"] == POOLED]
    if usable.empty:
        return pd.DataFrame(columns=columns("combined_estimates"))
    # the reference: the group with most subjects over the sites (ties: its name)
    sizes = usable.groupby([*keys, "group_name"], as_index=False)["n"].sum()
    sizes = sizes.sort_values([*keys, "n", "group_name"], ascending=[*[True] * 6, False, True])
    ref = sizes.drop_duplicates(keys)[[*keys, "group_name"]]
    ref = ref.rename(columns={"group_name": "reference_group"})
    rows = fair.drop(columns="reference_group").merge(ref, on=keys)
    rows = rows[rows["group_name"] != rows["reference_group"]]
    values = usable.merge(ref, left_on=[*keys, "group_name"], right_on=[*keys, "reference_group"])
    values = values[[*keys, "site", "estimate", "se"]].rename(
        columns={"estimate": "ref_estimate", "se": "ref_se"}
    )
    rows = rows.merge(values, on=[*keys, "site"], how="left")
    ok = (rows["status"] == POOLED).to_numpy()
    has_ref = rows["ref_estimate"].notna().to_numpy()
    d = rows["estimate"].astype(float) - rows["ref_estimate"].astype(float)
    se = np.hypot(rows["se"].astype(float), rows["ref_se"].astype(float))
    z = _z(cfg.combine.ci_level)
    pooled = ok & has_ref
    status = np.where(
        pooled,
        POOLED,
        np.where(ok, "not pooled: no usable " + rows["reference_group"] + " at the site",
                 rows["status"]),
    )  # fmt: skip
    out = rows.assign(
        quantity="difference:" + rows["quantity"].str.split(":", n=1).str[1],
        estimate=np.where(pooled, d, np.nan),
        se=np.where(pooled, se, np.nan),
        ci_low=np.where(pooled, d - z * se, np.nan),
        ci_high=np.where(pooled, d + z * se, np.nan),
        status=status,
    )
    return out[columns("combined_estimates")].reset_index(drop=True)


def _bands(pooled: pd.DataFrame, inputs: dict, cfg: AuditConfig) -> pd.DataFrame:
    """The Bonferroni band, tolerance and status of each pooled subgroup difference
    (``inputs``: the pooling-scale estimates and variances by row of ``pooled``)."""
    c, fair = cfg.combine, cfg.fairness
    diff = pooled["quantity"].str.startswith("difference:") & (pooled["status"] == POOLED)
    keys = ["model", "output", "quantity", "attribute"]
    low, high = pooled["band_low"].to_numpy(float), pooled["band_high"].to_numpy(float)
    tolerance, status = pooled["tolerance"].to_numpy(float), pooled["status"].to_numpy(object)
    for _, g in pooled[diff].groupby(keys, dropna=False):
        level = 1 - (1 - c.ci_level) / len(g)
        for i, r in zip(g.index, g.to_dict("records")):
            metric = r["quantity"].split(":", 1)[1]
            y, v = inputs[i]
            p = pool(y, v, c.method, c.hartung_knapp, level)
            tol = fair.tolerances.get(metric)
            flaggable = not (metric == "pearson_r" and "age" in r["attribute"])
            big = r["n"] is not None and not pd.isna(r["n"]) and r["n"] >= fair.min_group_size
            flagged = bool(
                flaggable and big and tol is not None and is_flagged(metric, p.low, p.high, tol)
            )
            low[i], high[i], tolerance[i] = p.low, p.high, np.nan if tol is None else tol
            status[i] = "flagged" if flagged else ("ok" if big else "too_small")
    return pooled.assign(band_low=low, band_high=high, tolerance=tolerance, status=status)


def pool_entries(entries: pd.DataFrame, cfg: AuditConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``combined_pooled`` and ``combined_estimates`` from the sites' entries (and their
    subgroup differences), both in the order of their keys and sites."""
    differences = _differences(entries, cfg)
    if len(differences):
        entries = pd.concat([entries, differences.astype(entries.dtypes)], ignore_index=True)
    entries = entries.reset_index(drop=True)
    keys = KEY + ["reference_group"]
    filled = entries[keys].assign(
        horizon=entries["horizon"].astype(float).fillna(-1.0),
        reference_group=entries["reference_group"].fillna(""),
    )
    col = _Columns.of(entries)
    rows, inputs = [], {}
    groups = filled.groupby(keys, sort=True).indices
    for key in sorted(groups):
        numbers, pooled_inputs = _pool_one(groups[key], col, pooling_scale(key[2]), cfg)
        row = dict(zip(keys, key))
        row["horizon"] = None if row["horizon"] == -1.0 else row["horizon"]
        row["reference_group"] = row["reference_group"] or None
        if pooled_inputs is not None:
            inputs[len(rows)] = pooled_inputs
        rows.append({**row, **numbers})
    pooled = pd.DataFrame(rows, columns=columns("combined_pooled"))
    estimates = entries.assign(
        weight=col.weight, deleted_residual=col.resid, flagged=col.flagged,
        outside_prediction=col.outside,
    )[columns("combined_estimates")]  # fmt: skip
    order = filled.assign(site=entries["site"].astype(str))
    estimates = estimates.loc[order.sort_values([*keys, "site"], kind="stable").index].reset_index(
        drop=True
    )
    return _bands(pooled, inputs, cfg), estimates


def combine_tables(sites: list[SiteBundle], cfg: AuditConfig) -> tuple[dict, list[dict]]:
    """The combined audit's tables (``combined_sites``, ``combined_models``,
    ``combined_estimates``, ``combined_pooled``) and the models as most sites audited them."""
    site_rows, usable = _sites(sites)
    model_rows, models, other = _models(usable)
    entries = _entries(usable, other)
    pooled, estimates = pool_entries(entries, cfg)
    tables = {
        "combined_sites": site_rows,
        "combined_models": model_rows,
        "combined_estimates": estimates,
        "combined_pooled": pooled,
    }
    return tables, models


# ---------------------------------------------------------------------------- verdict


def run_shaped(pooled: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The pooled estimates as an audit run's ``accuracy``, ``survival_terms`` and
    ``survival_models``, so that the run's own checks judge them."""
    ok = pooled[pooled["status"] == POOLED]
    acc = ok[ok["output"].isin(["faceage", "risk"]) & ~ok["quantity"].str.contains(":")]
    accuracy = pd.DataFrame(
        {
            "model": acc["model"],
            "output": acc["output"],
            "metric": acc["quantity"],
            "attribute": acc["attribute"],
            "group_name": acc["group_name"],
            "n": acc["n"].astype("Int64"),
            "n_subjects": acc["n"].astype("Int64"),
            "value": acc["estimate"],
            "ci_low": acc["ci_low"],
            "ci_high": acc["ci_high"],
            "status": "ok",
        }
    )
    hr = ok[ok["quantity"].str.startswith("log_hr:")]
    terms = pd.DataFrame(
        {
            "model": hr["model"],
            "model_id": hr["output"],
            "term": hr["quantity"].str.slice(len("log_hr:")),
            "hr": np.exp(hr["estimate"].astype(float)),
            "hr_low": np.exp(hr["ci_low"].astype(float)),
            "hr_high": np.exp(hr["ci_high"].astype(float)),
            "p_value": np.nan,
            "coef": hr["estimate"],
            "se": hr["se"],
        }
    )
    fits = []
    all_hr = pooled[pooled["quantity"].str.startswith("log_hr:")]
    for (model, model_id), g in all_hr.groupby(["model", "output"], sort=True):
        broken = g[g["status"] == "not_converged"]
        c = ok[(ok["model"] == model) & (ok["output"] == model_id) & (ok["quantity"] == "c_index")]
        fits.append(
            {
                "model": model,
                "model_id": model_id,
                "n": g["n"].max(),
                "events": g["events"].max(),
                "concordance": c["estimate"].iloc[0] if len(c) else None,
                "concordance_low": c["ci_low"].iloc[0] if len(c) else None,
                "concordance_high": c["ci_high"].iloc[0] if len(c) else None,
                "status": "not_converged" if len(broken) else "ok",
                "note": (
                    f"pooling {broken['quantity'].iloc[0]} did not converge: "
                    f"{broken['note'].iloc[0]}"
                    if len(broken)
                    else None
                ),
            }
        )
    return {
        "accuracy": accuracy,
        "survival_terms": terms,
        "survival_models": pd.DataFrame(fits, columns=FIT_COLUMNS),
    }


def _sites_check(site_rows: pd.DataFrame) -> dict:
    bad = site_rows[site_rows["status"] != POOLED]
    listed = "; ".join(f"{r.site}: {r.problems}" for r in bad.itertuples())
    return check_row(
        None, "bundles_verified", "data", 0.0, float(len(bad)), bad.empty,
        f"{len(site_rows) - len(bad)} of {len(site_rows)} bundle(s) verified and pooled"
        + (f"; not pooled: {listed}" if listed else ""),
    )  # fmt: skip


def _models_check(model_rows: pd.DataFrame) -> dict:
    if model_rows.empty:
        return check_row(
            None, "same_models", "data", 0.0, None, False, "no verified bundle names a model"
        )
    other = model_rows[~model_rows["status"].str.startswith("same")]
    listed = "; ".join(
        f"{r.site} audited {r.model} with {r.status.split(' than')[0]} (checkpoint "
        f"{(r.checkpoint_sha256 or '-')[:12]}, spec {(r.spec_sha256 or '-')[:12]})"
        for r in other.itertuples()
    )
    unproven = model_rows[model_rows["checkpoint_sha256"].isna()]["model"].unique()
    return check_row(
        None, "same_models", "data", 0.0, float(len(other)), other.empty,
        f"{model_rows['model'].nunique()} model(s) at {model_rows['site'].nunique()} site(s); "
        f"{len(other)} site audit(s) of another checkpoint or spec"
        + (f": {listed}" if listed else "")
        + (
            f"; {', '.join(unproven)}: predictions supplied, so no checkpoint digest shows "
            "they came from one model" if len(unproven) else ""
        ),
    )  # fmt: skip


def judged_quantities(pooled: pd.DataFrame, model: str) -> list[tuple]:
    """The pooled quantities the verdict judges for a model (as the run's checks choose
    them): FaceAge MAE, mean error and r, the score's C, and the adjusted hazard ratios."""
    ok = pooled[(pooled["model"] == model) & (pooled["status"] == POOLED)]
    out = []
    for output, metric in (
        ("faceage", "mae"), ("faceage", "mean_error"), ("faceage", "pearson_r"),
        ("risk", "c_index"),
    ):  # fmt: skip
        if (
            (ok["output"] == output) & (ok["quantity"] == metric) & (ok["attribute"] == "all")
        ).any():
            out.append((output, metric))
    for ids, term in (
        (["faceage_per_decade__age_sex", "faceage_per_decade__age"], "faceage_decade"),
        (["risk_quartiles__age_sex", "risk_quartiles__unadjusted"], "risk[Q4]"),
    ):
        for model_id in ids:
            if ((ok["output"] == model_id) & (ok["quantity"] == f"log_hr:{term}")).any():
                out.append((model_id, f"log_hr:{term}"))
                break
    return out


def _consistency_check(estimates: pd.DataFrame, pooled: pd.DataFrame, model: str, cfg) -> dict:
    """Sites whose estimate of a judged quantity lies outside what the other sites predict,
    Bonferroni over every (site, quantity) judged."""
    judged = judged_quantities(pooled, model)
    parts = []
    for output, quantity in judged:
        sel = estimates[
            (estimates["model"] == model)
            & (estimates["output"] == output)
            & (estimates["quantity"] == quantity)
            & (estimates["attribute"] == "all")
            & estimates["deleted_residual"].notna()
        ]
        parts.append(sel)
    rows = pd.concat(parts) if parts else estimates.iloc[:0]
    name = "site_consistency"
    limit = cfg.thresholds.site_outliers_max
    if rows.empty:
        return check_row(
            model, name, "sites", float(limit), None, False,
            "fewer than three sites pooled a judged quantity: no site can be held against "
            "the others",
        )  # fmt: skip
    alpha = 1 - cfg.combine.ci_level
    crit = float(stats.norm.ppf(1 - alpha / (2 * len(rows))))
    out = rows[rows["deleted_residual"].abs() > crit]
    listed = "; ".join(
        f"{r.site}: {r.quantity} of {r.output} {sig3(r.estimate)} (deleted residual "
        f"{r.deleted_residual:+.2f})"
        for r in out.itertuples()
    )
    return check_row(
        model, name, "sites", float(limit), float(len(out)), len(out) <= limit,
        f"{len(out)} of {len(rows)} site estimates of the judged quantities lie outside what the "
        f"other sites predict (|deleted residual| > {crit:.2f}, Bonferroni over {len(rows)})"
        + (f": {listed}" if listed else ""),
    )  # fmt: skip


def _pooled_fairness_check(pooled: pd.DataFrame, model: str, output: str, cfg) -> dict:
    name = f"pooled_fairness_{output}"
    sel = pooled[
        (pooled["model"] == model)
        & (pooled["output"] == output)
        & pooled["quantity"].isin([f"difference:{m}" for m in cfg.fairness.verdict_metrics])
    ]
    limit = cfg.thresholds.fairness_flagged_max
    judged = sel[sel["status"].isin(["ok", "flagged"])]
    if judged.empty:
        return check_row(
            model, name, "fairness", float(limit), None, False,
            "no subgroup difference could be pooled for this output",
        )  # fmt: skip
    flagged = judged[judged["status"] == "flagged"]
    listed = "; ".join(
        f"{r.quantity.split(':', 1)[1]} {r.attribute} = {r.group_name} vs "
        f"{r.reference_group}: "
        f"{r.estimate:+.3g} (band {r.band_low:+.3g} to {r.band_high:+.3g}; I^2 "
        f"{0 if pd.isna(r.i2) else 100 * r.i2:.0f}%, {r.k} sites)"
        for r in flagged.head(6).itertuples()
    )
    return check_row(
        model, name, "fairness", float(limit), float(len(flagged)), len(flagged) <= limit,
        f"{len(flagged)} of {len(judged)} pooled subgroup differences of "
        f"{', '.join(sorted(set(judged['quantity'].str.slice(len('difference:')))))} lie beyond "
        "tolerance (Bonferroni band over each grouping)" + (f": {listed}" if listed else ""),
    )  # fmt: skip


def combined_verdicts(tables: dict, models: list[dict], cfg: AuditConfig) -> pd.DataFrame:
    """The combined audit's checks: every bundle verified, the same models, then per model
    the run's own accuracy and hazard-ratio checks on the pooled estimates, the pooled
    subgroup differences, and the sites' consistency."""
    pooled, estimates = tables["combined_pooled"], tables["combined_estimates"]
    rows = [_sites_check(tables["combined_sites"]), _models_check(tables["combined_models"])]
    shaped = run_shaped(pooled)
    has_outcomes = bool(pooled["quantity"].str.startswith("log_hr:").any())
    evidence = Evidence(
        models=[{"name": m["name"], "outputs": m.get("outputs") or []} for m in models],
        thresholds=cfg.thresholds,
        has_outcomes=has_outcomes,
        fairness_metrics=cfg.fairness.verdict_metrics,
        tables=shaped,
    )
    reused = evaluate(evidence, only=REUSED_CHECKS)
    for m in models:
        rows.extend(reused[reused["model"] == m["name"]].to_dict("records"))
        for output in m.get("outputs") or []:
            rows.append(_pooled_fairness_check(pooled, m["name"], output, cfg))
        rows.append(_consistency_check(estimates, pooled, m["name"], cfg))
    return pd.DataFrame(rows, columns=columns("verdicts"))
