"""Saliency audit: where on the face each model looks, averaged over the cohort.

FAHR-Face's authors showed with saliency maps that FAHR-FaceAge and FAHR-FaceSurvival rely
on different facial regions. This module gives an auditor the same evidence for any model on
any cohort, without ever keeping one person's map:

- **Attribution methods**, in a registry as timm keeps models (``register_attribution``,
  ``create_attribution``, ``list_attributions``). Each takes a :class:`Target` (one output
  of one model, as a function of a ``[0, 1]`` float batch ``(N, 3, H, W)`` of the aligned
  crops the model sees) and returns a non-negative map ``(N, H, W)``:

  ``occlusion`` (Zeiler & Fergus 2014; model-agnostic, so ONNX models too): a window of the
  crop is replaced by the image's mean colour and the output's absolute change is spread
  over the window's pixels, averaged over the windows covering each pixel;
  ``gradient_x_input`` (Shrikumar et al. 2016) and ``integrated_gradients`` (Sundararajan
  et al. 2017, black baseline, midpoint Riemann sum) for torch models;
  ``grad_cam`` (Selvaraju et al. 2017) for timm CNNs: the last feature map weighted by its
  mean gradient; the magnitude is kept, because for a regression output both directions
  are evidence; ``attention_rollout`` (Abnar & Zuidema 2020) for timm vision transformers:
  the attention of the class token through every block, heads averaged, residual added.
  Rollout does not depend on the output: both outputs of one ViT share it.

- **Region shares**: a fixed template of the aligned frame (:func:`region_template`, from the
  cohort's face layout) cuts the crop into forehead, eyes (and periorbital), nose, cheeks,
  mouth and chin, hair, background; each photo's map is normalised to sum 1 and its mass per
  region is its share. Cohort shares are means over subjects with bootstrap CIs; each is
  also reported as enrichment (share divided by the region's share of the pixels, with the
  CI divided alike), and regions are ranked by enrichment: by raw share the largest regions
  (background, cheeks) top every model's list for their size alone.

- **Model comparison**: Spearman correlation of two cohort maps, the overlap (intersection
  over union) of their top pixels, and the L1 distance of their region shares, each with a
  bootstrap CI over subjects.

- **Sanity checks** (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018): the
  maps of a copy of the model with randomised weights must not resemble the trained model's.

Only averages over at least ``min_faces`` photos leave this module.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from audit.models.heads import Head
from audit.models.inference import model_input
from audit.robustness.perturbations import face_layout
from audit.stats.bootstrap import bootstrap_weights

REGIONS = ("forehead", "eyes", "nose", "cheeks", "mouth_chin", "hair", "background")
METHODS_NEED = {
    "any": "every model",
    "torch": "torch models (timm, TorchScript)",
    "cnn": "timm CNNs",
    "vit": "timm vision transformers",
}


# ---------------------------------------------------------------------------- regions


def region_template(layout, size: int) -> np.ndarray:
    """``(size, size)`` region index (into :data:`REGIONS`) of each pixel of an aligned crop
    with the face :class:`~audit.robustness.perturbations.FaceLayout` ``layout``.

    The face is an ellipse from the brow line's forehead top (eyes minus 0.75 of the
    eye-to-chin distance) to the chin, ``face_dx`` wide each side. Inside it: eyes and
    periorbital (an ellipse around each eye, half the eye-to-nose distance high), forehead
    (above them), nose (between the eyes down to below the nose tip), mouth and chin (below
    the midpoint of nose and mouth, 1.6 mouth half-widths each side), cheeks (the rest:
    the sides of the face from the eyes down, jowls included). Outside it: hair (a head
    ellipse a third larger, above the nose tip) and background."""
    L = face_layout(layout)
    c = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(c, c, indexing="ij")
    top = L.eye_y - 0.75 * (L.chin_y - L.eye_y)
    cy, ry, rx = (top + L.chin_y) / 2, (L.chin_y - top) / 2, L.face_dx
    face = ((x - 0.5) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
    head = ((x - 0.5) / (1.33 * rx)) ** 2 + ((y - cy) / (1.15 * ry)) ** 2 <= 1
    band = max(0.5 * (L.nose_y - L.eye_y), 0.035)
    eyes = np.zeros_like(face)
    for ex in (0.5 - L.eye_dx, 0.5 + L.eye_dx):
        eyes |= ((x - ex) / (0.8 * L.eye_dx)) ** 2 + ((y - L.eye_y) / band) ** 2 <= 1
    nose_bottom = L.nose_y + 0.3 * (L.mouth_y - L.nose_y)
    nose = (np.abs(x - 0.5) <= 0.45 * L.eye_dx) & (y >= L.eye_y) & (y <= nose_bottom)
    mouth = (y >= (L.nose_y + L.mouth_y) / 2) & (np.abs(x - 0.5) <= 1.6 * L.mouth_dx)
    out = np.full((size, size), REGIONS.index("background"), dtype=np.int8)
    out[head & ~face & (y < L.nose_y)] = REGIONS.index("hair")
    out[face] = REGIONS.index("cheeks")
    out[face & (y < L.eye_y - band)] = REGIONS.index("forehead")
    out[face & mouth] = REGIONS.index("mouth_chin")
    out[face & nose & ~mouth] = REGIONS.index("nose")
    out[face & eyes] = REGIONS.index("eyes")
    return out


def region_shares(maps: np.ndarray, template: np.ndarray) -> np.ndarray:
    """``(N, len(REGIONS))`` share of each map's mass per region (rows sum to 1; a map with
    no mass gives zeros)."""
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    total = flat.sum(axis=1, keepdims=True)
    flat = np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)
    onehot = np.eye(len(REGIONS))[template.reshape(-1)]
    return flat @ onehot


def region_areas(template: np.ndarray) -> np.ndarray:
    """``(len(REGIONS),)`` each region's share of the frame's pixels: the share of
    attribution a map spread evenly over the frame would give it. A region's enrichment is
    its share of attribution divided by this (1: no more than its size; the background and
    cheeks hold a quarter to a third of any map for their size alone)."""
    return (
        np.bincount(template.reshape(-1).astype(np.int64), minlength=len(REGIONS)) / template.size
    )


def normalise(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to sum 1 (so every face weighs the same in a cohort mean)."""
    total = maps.reshape(len(maps), -1).sum(axis=1).reshape(-1, 1, 1)
    return np.divide(maps, total, out=np.zeros_like(maps, dtype=np.float64), where=total > 0)


# ---------------------------------------------------------------------------- targets


@dataclass
class Target:
    """One output of one model, made attributable.

    ``fn(x)`` maps a ``[0, 1]`` float batch ``(N, 3, H, W)`` on ``device`` to the output
    ``(N,)`` in its units (years, risk score), through the model's own normalisation and
    layout. ``module`` is the torch module when the model is one (gradients then flow);
    ``net`` the timm network inside it, for Grad-CAM and attention rollout."""

    model: str
    output: str
    fn: Callable
    size: int
    device: str = "cpu"
    module: object = None
    net: object = None
    head: Head = Head("faceage")
    name_outputs: Callable | None = None  # the module's output -> ({name: tensor}, features)
    normalize: object = "imagenet"
    layout: str = "nchw"

    def value(self, outputs) -> object:
        return head_value(self.head, outputs)

    @property
    def differentiable(self) -> bool:
        return self.module is not None

    @property
    def kind(self) -> str:
        """``vit``, ``cnn``, ``torch`` or ``any``: what the attribution methods can use."""
        if self.net is not None and hasattr(self.net, "blocks") and hasattr(self.net, "cls_token"):
            return "vit"
        if self.net is not None and hasattr(self.net, "forward_features"):
            return "cnn"
        return "torch" if self.differentiable else "any"


def head_value(head: Head, outputs: dict, device=None):
    """An output (N,) as a tensor from a model's named outputs: its head reduced (the
    expected value of a probability head, so gradients flow through the softmax)."""
    import torch

    src = outputs[head.source]
    if not isinstance(src, torch.Tensor):
        src = torch.as_tensor(np.asarray(src), device=device)
    return head.reduce(src.reshape(src.shape[0], -1).float(), check=False)[0].float()


def model_targets(model, device: str | None = None) -> list[Target]:
    """A :class:`Target` per output of an image model adapter (loaded on ``device``)."""
    import torch

    model.load(device)
    module = model._model
    module = getattr(module, "_orig_mod", module)  # torch.compile'd: the eager module
    is_torch = isinstance(module, torch.nn.Module)
    net = getattr(module, "net", None) if is_torch else None
    targets = []
    for head in model.heads:

        def fn(x, head=head):
            outputs, _ = model.sources(model_input(x, model.normalize, model.input_layout))
            return head_value(head, outputs, x.device)

        targets.append(
            Target(
                model=model.name,
                output=head.output,
                fn=fn,
                size=model.input_size,
                device=model.device,
                module=module if is_torch else None,
                net=net,
                head=head,
                name_outputs=model.name_outputs if is_torch else None,
                normalize=model.normalize,
                layout=model.input_layout,
            )
        )
    return targets


# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class AttributionInfo:
    name: str
    fn: Callable
    needs: str
    description: str


_REGISTRY: dict[str, AttributionInfo] = {}


def register_attribution(name: str, needs: str, description: str):
    """Decorator: register ``fn(target, x, **kw) -> (N, H, W)`` under ``name``; ``needs``
    says which models it works for (``any``, ``torch``, ``cnn``, ``vit``)."""
    if needs not in METHODS_NEED:
        raise ValueError(f"unknown requirement {needs!r}; use {sorted(METHODS_NEED)}")

    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"attribution method {name!r} is already registered")
        _REGISTRY[name] = AttributionInfo(name, fn, needs, description)
        return fn

    return wrap


def list_attributions(pattern: str = "*") -> list[str]:
    return [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]


def attribution_info(name: str) -> AttributionInfo:
    if name not in _REGISTRY:
        raise ValueError(f"unknown attribution method {name!r}; known: {list(_REGISTRY)}")
    return _REGISTRY[name]


def applicable(name: str, target: Target) -> bool:
    """Whether method ``name`` works for ``target``'s model."""
    needs, kind = attribution_info(name).needs, target.kind
    return needs == "any" or (needs == "torch" and kind in ("torch", "cnn", "vit")) or needs == kind


def create_attribution(name: str, **kw) -> Callable:
    """``attribute(target, x) -> (N, H, W)`` numpy maps with the method's keyword arguments."""
    info = attribution_info(name)

    def attribute(target: Target, x):
        if not applicable(name, target):
            raise ValueError(
                f"{name} needs {METHODS_NEED[info.needs]}; model {target.model!r} is not one"
            )
        return info.fn(target, x, **kw)

    attribute.__name__ = name
    return attribute


def configured_methods(
    names: list[str], *, window: int, stride: int, ig_steps: int
) -> dict[str, Callable]:
    """``{name: attribute}`` for ``names`` with the audit config's method settings."""
    kw = {
        "occlusion": {"window": window, "stride": stride},
        "integrated_gradients": {"steps": ig_steps},
    }
    return {n: create_attribution(n, **kw.get(n, {})) for n in names}


# ---------------------------------------------------------------------------- methods


def occlusion_windows(size: int, window: int, stride: int) -> list[int]:
    """Top-left offsets along one side: every ``stride`` pixels, the last flush with the edge."""
    starts = list(range(0, max(size - window, 0) + 1, stride))
    if starts[-1] != max(size - window, 0):
        starts.append(size - window)
    return starts


@register_attribution(
    "occlusion",
    "any",
    "occlusion sensitivity: |change of the output| when "
    "a window is replaced by the photo's mean colour",
)
def occlusion(target: Target, x, window: int = 16, stride: int = 8, batch_size: int = 256, **_):
    import torch

    n, _, h, w = x.shape
    ys, xs = occlusion_windows(h, window, stride), occlusion_windows(w, window, stride)
    cells = [(a, b) for a in ys for b in xs]
    out = np.zeros((n, h, w))
    count = np.zeros((h, w))
    for a, b in cells:
        count[a : a + window, b : b + window] += 1
    masks = torch.zeros(len(cells), 1, h, w, device=x.device, dtype=x.dtype)
    for k, (a, b) in enumerate(cells):
        masks[k, :, a : a + window, b : b + window] = 1
    image = np.repeat(np.arange(n), len(cells))
    cell = np.tile(np.arange(len(cells)), n)
    deltas = np.zeros((n, len(cells)))
    with torch.no_grad():
        base = target.fn(x).detach().cpu().numpy()
        fill = x.mean(dim=(2, 3), keepdim=True)
        for start in range(0, len(image), batch_size):
            i = torch.from_numpy(image[start : start + batch_size]).to(x.device)
            m = masks[torch.from_numpy(cell[start : start + batch_size]).to(x.device)]
            xo = x[i] * (1 - m) + fill[i] * m  # the window filled with the mean colour
            deltas[image[start : start + batch_size], cell[start : start + batch_size]] = np.abs(
                base[image[start : start + batch_size]] - target.fn(xo).detach().cpu().numpy()
            )
    for k, (a, b) in enumerate(cells):
        out[:, a : a + window, b : b + window] += deltas[:, k, None, None]
    return out / np.maximum(count, 1)


def _grad(target: Target, x):
    import torch

    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = target.fn(x)
        (g,) = torch.autograd.grad(y.sum(), x)
    return g, y.detach()


@register_attribution(
    "gradient_x_input",
    "torch",
    "gradient x input: |sum over colour channels of the output's gradient times the pixel|",
)
def gradient_x_input(target: Target, x, **_):
    g, _ = _grad(target, x)
    return (g * x).sum(dim=1).abs().detach().cpu().numpy()


@register_attribution(
    "integrated_gradients",
    "torch",
    "integrated gradients from a black image, midpoint Riemann sum; |sum over colour channels|",
)
def integrated_gradients(target: Target, x, steps: int = 16, signed: bool = False, **_):
    import torch

    baseline = torch.zeros_like(x)
    total = torch.zeros_like(x)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        g, _ = _grad(target, baseline + alpha * (x - baseline))
        total += g
    attr = (x - baseline) * total / steps
    if signed:  # (N, 3, H, W), for completeness checks: sums to f(x) - f(baseline)
        return attr.detach().cpu().numpy()
    return attr.sum(dim=1).abs().detach().cpu().numpy()


@register_attribution("grad_cam", "cnn", "Grad-CAM on the last feature map, magnitude")
def grad_cam(target: Target, x, **_):
    import torch
    import torch.nn.functional as F

    net = target.net
    with torch.enable_grad():
        feats = net.forward_features(model_input(x.detach(), target.normalize, target.layout))
        if feats.ndim != 4:
            raise ValueError(
                f"grad_cam needs a (N, C, h, w) feature map; {target.model!r} "
                f"gives {tuple(feats.shape)}"
            )
        pre = net.forward_head(feats, pre_logits=True)
        y = target.value({None: net.get_classifier()(pre)})
        (g,) = torch.autograd.grad(y.sum(), feats)
    cam = (g.mean(dim=(2, 3), keepdim=True) * feats).sum(dim=1, keepdim=True).abs()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return cam[:, 0].detach().cpu().numpy()


@register_attribution(
    "attention_rollout",
    "vit",
    "attention rollout of the class token "
    "(heads averaged, residual added); the same for every output",
)
def attention_rollout(target: Target, x, **_):
    import torch
    import torch.nn.functional as F

    net = target.net
    captured, hooks, fused = [], [], []
    for block in net.blocks:
        attn = block.attn
        fused.append(getattr(attn, "fused_attn", False))
        attn.fused_attn = False  # the explicit softmax path, whose weights we can see
        hooks.append(
            attn.attn_drop.register_forward_hook(
                lambda _m, inp, _out: captured.append(inp[0].detach())
            )
        )
    try:
        with torch.no_grad():
            net.forward_features(model_input(x, target.normalize, target.layout))
    finally:
        for h, f, block in zip(hooks, fused, net.blocks):
            h.remove()
            block.attn.fused_attn = f
    rollout = None
    for a in captured:
        a = a.mean(dim=1)
        a = a + torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    prefix = getattr(net, "num_prefix_tokens", 1)
    cls = rollout[:, 0, prefix:]
    side = int(round(cls.shape[-1] ** 0.5))
    grid = cls.reshape(len(x), 1, side, side)
    return (
        F.interpolate(grid, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        .cpu()
        .numpy()
    )


# ---------------------------------------------------------------------------- randomisation


def randomized_target(target: Target, seed: int = 0) -> Target:
    """The same output of a copy of the model whose every weight is redrawn (normal, with
    each tensor's own mean and SD), for the model-randomisation sanity check."""
    import torch

    module = copy.deepcopy(target.module)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            sd = float(p.std()) if p.numel() > 1 else 1.0
            p.copy_(
                (torch.randn(p.shape, generator=gen) * (sd or 1.0) + float(p.mean())).to(
                    p.device, p.dtype
                )
            )
    net = getattr(module, "net", None)

    def fn(x):
        outputs, _ = target.name_outputs(module(model_input(x, target.normalize, target.layout)))
        return target.value(outputs)

    return Target(
        model=target.model,
        output=target.output,
        fn=fn,
        size=target.size,
        device=target.device,
        module=module,
        net=net,
        head=target.head,
        name_outputs=target.name_outputs,
        normalize=target.normalize,
        layout=target.layout,
    )


# ---------------------------------------------------------------------------- statistics


def spearman_maps(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps over their pixels."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = 0.2) -> float:
    """Intersection over union of the ``fraction`` most salient pixels of two maps."""
    k = max(1, int(round(fraction * a.size)))
    ta = set(np.argsort(a.ravel(), kind="stable")[-k:])
    tb = set(np.argsort(b.ravel(), kind="stable")[-k:])
    return len(ta & tb) / len(ta | tb)


def subject_means(values: np.ndarray, subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``values`` averaged per subject (so a subject with two photos counts once)."""
    codes, uniq = pd.factorize(pd.Series(subjects), sort=True)
    sums = np.zeros((len(uniq),) + values.shape[1:])
    np.add.at(sums, codes, values)
    counts = np.bincount(codes, minlength=len(uniq)).reshape((-1,) + (1,) * (values.ndim - 1))
    return sums / counts, np.asarray(uniq)


@dataclass
class MapSet:
    """The per-photo maps of one (model, output, method) on the sample, kept in memory only
    while the stage aggregates them."""

    model: str
    output: str
    method: str
    maps: np.ndarray  # (N, H, W), normalised to sum 1
    photo_ids: np.ndarray
    subjects: np.ndarray
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def cohort_rows(
    ms: MapSet,
    groups: pd.DataFrame,
    template: np.ndarray,
    *,
    min_faces: int,
    n_boot: int,
    ci_level: float,
    rng: np.random.Generator,
):
    """Region shares (with bootstrap CIs over subjects) and mean maps of one map set,
    overall and per subgroup of at least ``min_faces`` photos. ``groups``: one row per
    photo of ``ms`` (same order), one column per attribute."""
    shares, maps_out = [], []
    alpha = (1 - ci_level) / 2
    per_photo = region_shares(ms.maps, template)
    area = region_areas(template)
    sets = [("all", "all", np.ones(len(ms.maps), dtype=bool))]
    for attribute in groups.columns:
        col = groups[attribute].astype(object)
        for name in sorted(col.dropna().unique(), key=str):
            sets.append((attribute, str(name), (col == name).to_numpy()))
    for attribute, name, mask in sets:
        n = int(mask.sum())
        if n < min_faces:
            continue
        subj_shares, _ = subject_means(per_photo[mask], ms.subjects[mask])
        w = bootstrap_weights(len(subj_shares), n_boot, rng) / len(subj_shares)
        boot = w @ subj_shares
        lo, hi = np.quantile(boot, [alpha, 1 - alpha], axis=0)
        mean = subj_shares.mean(axis=0)
        for r, region in enumerate(REGIONS):
            a = float(area[r])
            shares.append(
                {
                    "model": ms.model,
                    "output": ms.output,
                    "method": ms.method,
                    "attribute": attribute,
                    "group_name": name,
                    "region": region,
                    "share": float(mean[r]),
                    "ci_low": float(lo[r]),
                    "ci_high": float(hi[r]),
                    "n": n,
                    "n_subjects": len(subj_shares),
                    "area": a,
                    "enrichment": float(mean[r]) / a if a > 0 else float("nan"),
                    "enrichment_low": float(lo[r]) / a if a > 0 else float("nan"),
                    "enrichment_high": float(hi[r]) / a if a > 0 else float("nan"),
                }
            )
        subj_maps, _ = subject_means(ms.maps[mask], ms.subjects[mask])
        maps_out.append(
            {
                "model": ms.model,
                "output": ms.output,
                "method": ms.method,
                "attribute": attribute,
                "group_name": name,
                "n": n,
                "height": ms.maps.shape[1],
                "width": ms.maps.shape[2],
                "map": subj_maps.mean(axis=0).astype(np.float32).ravel().tolist(),
            }
        )
    return shares, maps_out


def compare(
    a: MapSet,
    b: MapSet,
    template: np.ndarray,
    *,
    n_boot: int,
    ci_level: float,
    fraction: float,
    rng: np.random.Generator,
) -> list[dict]:
    """Spearman correlation and top-pixel overlap of two cohort maps and the L1 distance of
    their region shares, on the photos both have, with subject-bootstrap CIs."""
    common = np.intersect1d(a.photo_ids, b.photo_ids)
    ia = pd.Index(a.photo_ids).get_indexer(common)
    ib = pd.Index(b.photo_ids).get_indexer(common)
    ma, subjects = subject_means(a.maps[ia], a.subjects[ia])
    mb, _ = subject_means(b.maps[ib], a.subjects[ia])
    sa, sb = region_shares(ma, template), region_shares(mb, template)
    fa, fb = ma.reshape(len(ma), -1), mb.reshape(len(mb), -1)
    w = bootstrap_weights(len(ma), n_boot, rng) / len(ma)
    boot_a, boot_b = w @ fa, w @ fb
    alpha = (1 - ci_level) / 2
    shape = ma.shape[1:]
    stats = {  # name: (statistic, its range)
        "spearman": (lambda x, y, s, t: spearman_maps(x, y), (-1.0, 1.0)),
        "top_overlap": (lambda x, y, s, t: top_overlap(x, y, fraction), (0.0, 1.0)),
        "region_l1": (lambda x, y, s, t: float(np.abs(s - t).sum()), (0.0, 2.0)),
    }
    rows = []
    for metric, (f, (low, high)) in stats.items():
        raw = f(fa.mean(0).reshape(shape), fb.mean(0).reshape(shape), sa.mean(0), sb.mean(0))
        boot = np.array(
            [
                f(boot_a[k].reshape(shape), boot_b[k].reshape(shape), w[k] @ sa, w[k] @ sb)
                for k in range(n_boot)
            ]
        )
        # A statistic of two noisy mean maps is biased (noise lowers a correlation, raises
        # a distance), and a resample, with its repeated subjects, is noisier still: the
        # percentile interval can miss the estimate. Bias-corrected estimate 2*raw - mean of
        # the bootstrap, with the basic (reflected) interval (Efron & Tibshirani 1993, 10.6
        # and 13.4), both clipped to the statistic's range.
        value = float(np.clip(2 * raw - boot.mean(), low, high))
        q_lo, q_hi = np.quantile(boot, [alpha, 1 - alpha])
        ci = np.clip([2 * raw - q_hi, 2 * raw - q_lo], low, high)
        rows.append(
            {
                "check_name": f"compare_{metric}",
                "model": a.model,
                "output": a.output,
                "method": a.method,
                "other_model": b.model,
                "other_output": b.output,
                "value": value,
                "ci_low": float(ci[0]),
                "ci_high": float(ci[1]),
                "threshold": None,
                "passed": None,
                "n": len(ma),
                "details": f"{len(ma)} subjects; bias-corrected (uncorrected {raw:.3f}), "
                f"basic bootstrap interval from {n_boot} resamples of subjects",
            }
        )
    return rows


# ---------------------------------------------------------------------------- sampling


def group_sample(
    subjects: pd.DataFrame, per_group: int, groups: list[str], rng: np.random.Generator
) -> pd.DataFrame:
    """Rows of ``subjects`` (one photo each) such that the sample has ``per_group`` photos
    overall and in every group of every attribute in ``groups`` (or all of a smaller
    group): a random draw overall, topped up group by group with members not yet drawn."""
    order = rng.permutation(len(subjects))
    chosen = np.zeros(len(subjects), dtype=bool)
    chosen[order[:per_group]] = True
    for attribute in groups:
        if attribute not in subjects.columns:
            continue
        col = subjects[attribute].astype(object).to_numpy()
        for name in sorted(pd.unique(col[pd.notna(col)]), key=str):
            members = order[col[order] == name]  # in the random order
            have = int(chosen[members].sum())
            extra = [i for i in members if not chosen[i]][: max(0, per_group - have)]
            chosen[extra] = True
    return subjects.iloc[np.flatnonzero(chosen)].copy()


def attribute_maps(
    targets: list[Target], methods: dict[str, Callable], batches, *, progress=None
) -> dict[tuple[str, str, str], tuple[list, float]]:
    """Run every applicable method on every target, batch by batch of ``[0, 1]`` crops
    ``(indices, x)``: ``{(model, output, method): (list of (indices, maps), seconds)}``.
    Each batch is decoded once for all targets."""
    import time

    out: dict[tuple[str, str, str], tuple[list, float]] = {}
    for idx, x in batches:
        for t in targets:
            for name, fn in methods.items():
                if not applicable(name, t):
                    continue
                start = time.perf_counter()
                maps = np.asarray(fn(t, x), dtype=np.float32)
                parts, seconds = out.get((t.model, t.output, name), ([], 0.0))
                parts.append((np.asarray(idx), maps))
                out[(t.model, t.output, name)] = (parts, seconds + time.perf_counter() - start)
        if progress:
            progress(len(idx))
    return out
