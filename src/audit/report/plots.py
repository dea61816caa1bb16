"""Plots for the report: each returns a matplotlib ``Figure`` (a PIL image for the photo
grids), for a notebook to show; :func:`to_uri` turns one into the data URI a page embeds.

Every plot has its numbers in a table beside it in the page; plots are for looking.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # matplotlib and PIL load on first use
    from matplotlib.figure import Figure
    from PIL import Image


def _fig(width=6.0, height=4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return plt, fig, ax


def to_uri(figure) -> str:
    """A figure as the data URI a page embeds: a matplotlib ``Figure`` as PNG (laid out,
    then closed), a PIL image (:func:`image_grid`) as JPEG."""
    buf = io.BytesIO()
    if hasattr(figure, "savefig"):
        import matplotlib.pyplot as plt

        figure.tight_layout()
        figure.savefig(buf, format="png")
        plt.close(figure)
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    figure.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def faceage_scatter(age: np.ndarray, faceage: np.ndarray, title: str) -> Figure:
    """FaceAge against chronological age, with the identity line and a linear fit."""
    plt, fig, ax = _fig(5.0, 4.5)
    ax.scatter(age, faceage, s=6, alpha=0.35, color="#1f5f99", linewidths=0)
    lo = float(min(np.min(age), np.min(faceage)))
    hi = float(max(np.max(age), np.max(faceage)))
    ax.plot([lo, hi], [lo, hi], color="#555", lw=1, ls="--", label="FaceAge = age")
    if len(age) > 2:
        slope, intercept = np.polyfit(age, faceage, 1)
        xs = np.array([lo, hi])
        ax.plot(
            xs,
            intercept + slope * xs,
            color="#c0392b",
            lw=1.5,
            label=f"fit: {slope:.2f} x age + {intercept:.1f}",
        )
    ax.set_xlabel("chronological age (years)")
    ax.set_ylabel("FaceAge (years)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def km_plot(curves: pd.DataFrame, title: str) -> Figure:
    """Kaplan-Meier steps per group (time in years)."""
    plt, fig, ax = _fig(6.0, 4.0)
    for name, g in curves.groupby("group_name", sort=False):
        g = g.sort_values("time")
        t = np.concatenate([[0.0], g["time"].to_numpy()])
        s = np.concatenate([[1.0], g["survival"].to_numpy()])
        ax.step(t, s, where="post", label=f"{name} (n={int(g['at_risk'].max())})")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("years since photo")
    ax.set_ylabel("survival probability")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def forest_plot(
    rows: pd.DataFrame,
    label_col: str,
    title: str,
    xlabel: str,
    ref: float | None = None,
    bounds: tuple[float, float] | None = None,
    log: bool = False,
) -> Figure:
    """Point estimates with CIs per row (subgroups or hazard ratios); ``bounds``: dotted
    lines (a tolerance on either side of ``ref``)."""
    rows = rows.reset_index(drop=True)
    plt, fig, ax = _fig(6.0, max(1.8, 0.32 * len(rows) + 1.0))
    y = np.arange(len(rows))[::-1]
    value = rows["value"].to_numpy(dtype=float)
    ax.errorbar(
        value,
        y,
        xerr=[
            np.clip(value - rows["ci_low"].to_numpy(dtype=float), 0, None),
            np.clip(rows["ci_high"].to_numpy(dtype=float) - value, 0, None),
        ],
        fmt="o",
        color="#1f5f99",
        ecolor="#888",
        capsize=3,
        ms=4,
    )
    if ref is not None:
        ax.axvline(ref, color="#c0392b", lw=1, ls="--")
    for b in bounds or ():
        ax.axvline(b, color="#b45309", lw=1, ls=":")
    if log:
        ax.set_xscale("log")  # ratios: equal distances for equal factors
    ax.set_yticks(y)
    ax.set_yticklabels(rows[label_col], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def meta_forest_plot(
    sites: pd.DataFrame,
    pooled: dict,
    title: str,
    xlabel: str,
    ref: float | None = None,
    log: bool = False,
) -> Figure:
    """A meta-analysis forest plot: each site's estimate and CI (``site``, ``value``,
    ``ci_low``, ``ci_high``, ``weight``: the square's area; ``flagged`` sites in red), the
    pooled estimate as a diamond over its CI and, when there is one, the prediction interval
    for a new site as a bar beneath it. ``pooled``: ``estimate``, ``ci_low``, ``ci_high``,
    ``pred_low``, ``pred_high``."""
    sites = sites.reset_index(drop=True)
    plt, fig, ax = _fig(6.0, max(2.0, 0.34 * (len(sites) + 2) + 1.0))
    y = np.arange(len(sites))[::-1] + 2
    value = sites["value"].to_numpy(dtype=float)
    weight = sites["weight"].fillna(0).to_numpy(dtype=float)
    colour = np.where(sites["flagged"].fillna(False).astype(bool), "#b42318", "#1f5f99")
    ax.hlines(y, sites["ci_low"].astype(float), sites["ci_high"].astype(float), color="#888")
    ax.scatter(value, y, s=20 + 180 * weight, marker="s", c=list(colour), zorder=3)
    est, low, high = (float(pooled[k]) for k in ("estimate", "ci_low", "ci_high"))
    ax.fill([low, est, high, est], [0.9, 1.15, 0.9, 0.65], color="#111827", zorder=3)
    pred = (pooled.get("pred_low"), pooled.get("pred_high"))
    if all(v is not None and np.isfinite(v) for v in pred):
        ax.hlines(0.2, pred[0], pred[1], color="#b45309", lw=3)
    if ref is not None:
        ax.axvline(ref, color="#c0392b", lw=1, ls="--")
    ax.axvline(est, color="#111827", lw=0.6, ls=":")
    if log:
        ax.set_xscale("log")
    ax.set_yticks([0.2, 0.9, *y])
    ax.set_yticklabels(["prediction", "pooled", *sites["site"]], fontsize=8)
    ax.set_ylim(-0.4, len(sites) + 2.6)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def trend_plot(frame: pd.DataFrame, title: str, ylabel: str) -> Figure:
    """A metric over runs (x: run start), one line per cohort and model."""
    plt, fig, ax = _fig(6.5, 3.2)
    for name, g in frame.groupby("series", sort=True):
        g = g.sort_values("started_at")
        ax.plot(pd.to_datetime(g["started_at"]), g["value"], marker="o", ms=4, label=name)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return fig


def dose_response(
    rows: pd.DataFrame, title: str, ylabel: str, tolerance: float | None = None
) -> Figure:
    """Shift against severity, one panel per perturbation family and one line per
    perturbation; severity 0 (the clean photo) has no shift by definition."""
    families = list(dict.fromkeys(rows["family"]))
    ncols = min(3, len(families))
    nrows = int(np.ceil(len(families) / ncols))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.1 * ncols, 2.5 * nrows + 0.5),
        dpi=100,
        sharex=True,
        sharey=False,
        squeeze=False,
    )
    for ax, family in zip(axes.flat, families):
        for name, g in rows[rows["family"] == family].groupby("perturbation", sort=False):
            g = g.sort_values("severity")
            ax.plot(
                np.r_[0, g["severity"]],
                np.r_[0.0, g["mean_abs_shift"]],
                marker="o",
                ms=3,
                lw=1.3,
                label=name,
            )
        if tolerance is not None:
            ax.axhline(tolerance, color="#c0392b", lw=0.8, ls="--")
        ax.set_title(family, fontsize=9)
        ax.set_xticks(range(6))
        fam_top = float(np.nanmax(rows.loc[rows["family"] == family, "mean_abs_shift"]))
        ax.set_ylim(0, max(fam_top, tolerance or 0) * 1.1 + 1e-9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", frameon=False)
    for ax in list(axes.flat)[len(families) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("severity", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def bland_altman(pairs: pd.DataFrame, overall: pd.DataFrame, title: str, unit: str) -> Figure:
    """One Bland-Altman panel per comparison: each subject's difference (compared minus
    reference, less the change expected from the time between, in the comparison's unit)
    against the mean of its two outputs; the mean shift (solid) with its CI (shaded), the 95%
    limits of agreement (dashed) with their CIs (shaded) and the equivalence margins
    (dotted red)."""
    comparisons = list(dict.fromkeys(overall["comparison"]))
    ncols = min(3, len(comparisons))
    nrows = int(np.ceil(len(comparisons) / ncols))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows + 0.5), dpi=100, squeeze=False
    )
    for ax, label in zip(axes.flat, comparisons):
        p = pairs[pairs["comparison"] == label]
        r = overall[overall["comparison"] == label].iloc[0]
        x = (p["value_ref"] + p["value_cmp"] - p["expected_change"]) / 2
        ax.scatter(x, p["difference"], s=6, alpha=0.6, color="#34495e", lw=0)
        span = [float(x.min()), float(x.max())] if len(x) else [0.0, 1.0]
        bands = (
            ("mean_shift", "mean_shift_low", "mean_shift_high", "-"),
            ("loa_low", "loa_low_ci_low", "loa_low_ci_high", "--"),
            ("loa_high", "loa_high_ci_low", "loa_high_ci_high", "--"),
        )
        for mid, low, high, style in bands:
            if pd.notna(r[mid]):
                ax.axhline(r[mid], color="#2471a3", lw=1.0, ls=style)
            if pd.notna(r[low]) and pd.notna(r[high]):
                ax.fill_between(span, r[low], r[high], color="#2471a3", alpha=0.12, lw=0)
        if pd.notna(r["tolerance"]):
            for sign in (-1, 1):
                ax.axhline(sign * r["tolerance"], color="#c0392b", lw=0.8, ls=":")
        ax.axhline(0, color="#7f8c8d", lw=0.5)
        ax.set_title(f"{label} (n={int(r['n_pairs'])}): {r['equivalence']}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_xlabel("mean of the two photos", fontsize=7)
        ax.set_ylabel(f"difference ({unit})", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(comparisons) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return fig


def image_grid(
    tiles: list[list[np.ndarray]],
    row_labels: list[str],
    col_labels: list[str],
    tile: int = 72,
    label_width: int = 120,
) -> "Image.Image":
    """A labelled grid of uint8 RGB images as one PIL image (:func:`to_uri`: a JPEG with
    deterministic bytes)."""
    from PIL import Image, ImageDraw

    rows, cols = len(tiles), max(len(r) for r in tiles)
    head = 16
    canvas = Image.new(
        "RGB", (label_width + cols * (tile + 4), head + rows * (tile + 4)), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    for j, text in enumerate(col_labels):
        draw.text((label_width + j * (tile + 4) + 2, 2), text, fill=(40, 40, 40))
    for i, (label, row) in enumerate(zip(row_labels, tiles)):
        y = head + i * (tile + 4)
        draw.text((2, y + tile // 2 - 6), label, fill=(40, 40, 40))
        for j, im in enumerate(row):
            thumb = Image.fromarray(im).resize((tile, tile), Image.BILINEAR)
            canvas.paste(thumb, (label_width + j * (tile + 4), y))
    return canvas


def calibration_plot(points: pd.DataFrame, title: str) -> Figure:
    """Observed (Kaplan-Meier, 95% CI) against mean predicted survival by decile of risk,
    with the identity line."""
    plt, fig, ax = _fig(4.8, 4.5)
    for name, g in points.groupby("curve", sort=False):
        label = name.split(":", 1)[-1]
        ax.errorbar(
            g["predicted"],
            g["survival"],
            yerr=[
                (g["survival"] - g["survival_low"]).clip(lower=0),
                (g["survival_high"] - g["survival"]).clip(lower=0),
            ],
            fmt="o-",
            ms=4,
            lw=1,
            capsize=2,
            label=label,
        )
    ax.plot([0, 1], [0, 1], color="#555", lw=1, ls="--", label="perfect calibration")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("predicted survival (cross-fitted)")
    ax.set_ylabel("observed survival (Kaplan-Meier)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def drift_chart(rows: pd.DataFrame, title: str, floors: dict[str, float] | None = None) -> Figure:
    """Effect size of every compared feature against the reference, drifted ones in red;
    ``floors`` (effect method -> minimum effect) are drawn as ticks on each bar's row."""
    rows = rows[rows["effect"].notna()].sort_values(["kind", "effect"], ascending=[True, True])
    rows = rows.reset_index(drop=True)
    plt, fig, ax = _fig(6.5, max(1.8, 0.3 * len(rows) + 1.1))
    y = np.arange(len(rows))[::-1]
    colours = np.where(rows["drifted"].fillna(False).astype(bool), "#b42318", "#9ca3af")
    ax.barh(y, rows["effect"], color=colours, height=0.6)
    for yi, method in zip(y, rows["effect_method"]):
        floor = (floors or {}).get(method)
        if floor is not None:
            ax.plot([floor, floor], [yi - 0.4, yi + 0.4], color="#b45309", lw=1.5)
    labels = [
        f"{k}: {f}" + (f" ({m})" if isinstance(m, str) and m else "")
        for k, f, m in zip(rows["kind"], rows["feature"], rows["model"])
    ]
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("effect size (orange tick: the floor a drift must reach)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def saliency_grid(
    face: np.ndarray | None, template: np.ndarray, tiles: list[tuple[str, np.ndarray]], title: str
) -> Figure:
    """Cohort attribution maps, each over the average face of the sample (or grey), with the
    outline of the region template; one tile per (label, map)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tiles), figsize=(2.1 * len(tiles), 2.5), dpi=100, squeeze=False)
    back = face.mean(axis=2) if face is not None else np.full(template.shape, 128.0)
    for ax, (label, m) in zip(axes[0], tiles):
        ax.imshow(back, cmap="gray", vmin=0, vmax=255)
        top = np.quantile(m, 0.99) or 1.0
        ax.imshow(np.clip(m / top, 0, 1), cmap="inferno", alpha=0.55, vmin=0, vmax=1)
        ax.contour(
            template, levels=np.arange(template.max()) + 0.5, colors="#38bdf8", linewidths=0.5
        )
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return fig


def region_bars(rows: pd.DataFrame, title: str, area: dict[str, float] | None = None) -> Figure:
    """Share of attribution mass per region, one bar per method, with CIs; ``area``: each
    region's share of the pixels (the share a map with no preference would give), dotted."""
    regions = list(dict.fromkeys(rows["region"]))
    methods = list(dict.fromkeys(rows["method"]))
    plt, fig, ax = _fig(6.5, 0.13 * len(regions) * max(1, len(methods)) + 1.4)
    h = 0.8 / max(1, len(methods))
    y = np.arange(len(regions))[::-1]
    for k, method in enumerate(methods):
        r = rows[rows["method"] == method].set_index("region").reindex(regions)
        v = r["share"].to_numpy(dtype=float)
        err = [
            np.clip(v - r["ci_low"].to_numpy(dtype=float), 0, None),
            np.clip(r["ci_high"].to_numpy(dtype=float) - v, 0, None),
        ]
        ax.barh(
            y + (len(methods) / 2 - k - 0.5) * h,
            v,
            height=h,
            xerr=err,
            capsize=2,
            label=method,
            error_kw={"elinewidth": 0.8},
        )
    if area:
        for yi, region in zip(y, regions):
            ax.plot([area[region]] * 2, [yi - 0.45, yi + 0.45], color="#111", ls=":", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels(regions, fontsize=8)
    ax.set_xlabel("share of attribution mass (95% CI); dotted: share of the pixels")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def overlay(face: np.ndarray, attribution: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """A uint8 RGB face with an attribution map blended over it (inferno, scaled to the
    map's 99th percentile)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps

    top = np.quantile(attribution, 0.99) or 1.0
    heat = colormaps["inferno"](np.clip(attribution / top, 0, 1))[..., :3] * 255
    return (face * (1 - alpha) + heat * alpha).round().clip(0, 255).astype(np.uint8)


def decision_plot(rows: pd.DataFrame, title: str) -> Figure:
    """Net benefit against threshold probability: the model (95% CI band), chronological
    age, treat all and treat none, for one score at one horizon."""
    plt, fig, ax = _fig(5.6, 4.0)
    style = {
        "model": ("#1f5fa8", "-", "model"),
        "chronological_age": ("#c77d18", "--", "chronological age"),
    }
    for strategy, (colour, ls, label) in style.items():
        g = rows[rows["strategy"] == strategy].sort_values("threshold")
        if not g.empty:
            _net_benefit_line(ax, g, colour, ls, label, band=strategy == "model")
    return _decision_axes(plt, fig, ax, rows, title)


def nested_decision_plot(rows: pd.DataFrame, steps: list[tuple[str, str]], title: str) -> Figure:
    """Net benefit of nested models (``steps``: ``(model_id, label)``, smallest first), the
    largest with its 95% CI band, beside treat all and treat none, at one horizon."""
    plt, fig, ax = _fig(5.6, 4.0)
    colours = ["#777777", "#c77d18", "#1f5fa8", "#2a8a4a", "#8a2a6a"]
    for i, (model_id, label) in enumerate(steps):
        g = rows[(rows["strategy"] == "model") & (rows["model_id"] == model_id)]
        _net_benefit_line(
            ax,
            g.sort_values("threshold"),
            colours[(i + 1) % len(colours)],
            "-" if i == len(steps) - 1 else "--",
            label,
            band=i == len(steps) - 1,
        )
    return _decision_axes(plt, fig, ax, rows, title)


def _net_benefit_line(ax, g: pd.DataFrame, colour: str, ls: str, label: str, band: bool):
    ax.plot(g["threshold"], g["net_benefit"], color=colour, ls=ls, lw=1.6, label=label)
    if band:
        ax.fill_between(
            g["threshold"],
            g["ci_low"],
            g["ci_high"],
            color=colour,
            alpha=0.15,
            lw=0,
            label=f"{label}, 95% CI",
        )


def _decision_axes(plt, fig, ax, rows: pd.DataFrame, title: str) -> Figure:
    """Treat all (dotted) and treat none (zero) on a decision-curve plot; axes, legend."""
    g = rows[rows["strategy"] == "treat_all"].sort_values("threshold")
    if not g.empty:
        ax.plot(g["threshold"], g["net_benefit"], color="#777", ls=":", lw=1.6, label="treat all")
    ax.axhline(0, color="#222", lw=1, label="treat none")
    top = float(
        np.nanmax(
            np.r_[rows["net_benefit"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float)],
            initial=0.0,
        )
    )
    ax.set_ylim(-0.05 if top <= 0 else -0.25 * top, max(top * 1.15, 0.02))
    ax.set_xlim(float(rows["threshold"].min()), float(rows["threshold"].max()))
    ax.set_xlabel("threshold probability of death by the horizon")
    ax.set_ylabel("net benefit (per patient)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    return fig


def utility_map(rows: pd.DataFrame, title: str) -> Figure:
    """Subgroups (rows) by threshold (columns), coloured by ``decision_subgroups.status``;
    a dot above the columns where the score is useful for the whole cohort."""
    from matplotlib.colors import ListedColormap

    colours = {
        "harmful": "#c0392b",
        "uncertain": "#d9d9d9",
        "useful": "#2a8a4a",
        "undefined": "#ffffff",
        "too_small": "#ffffff",
    }
    codes = {k: i for i, k in enumerate(colours)}
    grid = sorted(rows["threshold"].unique())
    key = rows["attribute"] + ": " + rows["group_name"].astype(str)
    labels = list(dict.fromkeys(key))
    row_of, col_of = {k: i for i, k in enumerate(labels)}, {t: j for j, t in enumerate(grid)}
    cells = np.zeros((len(labels), len(grid)))
    for label, th, status in zip(key, rows["threshold"], rows["status"]):
        cells[row_of[label], col_of[th]] = codes.get(status, codes["undefined"])
    plt, fig, ax = _fig(6.4, 0.9 + 0.28 * len(labels))
    ax.imshow(
        cells,
        cmap=ListedColormap(list(colours.values())),
        vmin=-0.5,
        vmax=len(colours) - 0.5,
        aspect="auto",
        interpolation="nearest",
    )
    useful = sorted(rows.loc[rows["overall_useful"].astype(bool), "threshold"].unique())
    ax.scatter([col_of[t] for t in useful], [-0.9] * len(useful), s=10, color="#222", clip_on=False)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    step = max(1, len(grid) // 9)
    ax.set_xticks(range(0, len(grid), step), [f"{t * 100:g}%" for t in grid[::step]], fontsize=7)
    ax.set_xlabel("threshold probability of death by the horizon", fontsize=8)
    ax.set_title(title, fontsize=9, pad=12)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(color=colours[k], label=k) for k in ("useful", "uncertain", "harmful")],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    return fig
