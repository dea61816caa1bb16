"""Train the two demo models on synthetic photos (the recipe behind the shipped weights).

    python -m audit.demo.train --out src/audit/demo/weights

* **Demo FaceAge**: timm ``test_resnet`` regressing *chronological* age on a healthy
  reference population (as FaceAge was trained on public photos of mostly healthy people),
  with the ``Black`` group kept rare (1%, against 13% in the cancer cohorts): the audit has
  a known underserved group, whose darker rendered skin also shows wrinkles with less
  contrast, as under-representation of darker skin hurts real face models.
  Applied to a cancer cohort its age gap carries the health signal.
* **Demo FaceSurvival**: the FaceAge backbone fine-tuned with the Cox partial likelihood
  (Breslow) on a cancer population, giving a risk score (higher = worse).

Training photos come from seeds 1,000,000 and up; audit cohorts use smaller seeds, so
training and audit photos never coincide. Fixed epochs and seeds make the run repeatable
(CPU, 2 threads). Writes ``demo_faceage.safetensors``, ``demo_survival.safetensors`` and
``recipe.json`` (arguments, timings, validation metrics, SHA-256 of each file).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np

TRAIN_SEED_BASE = 1_000_000
AGE_OFFSET, AGE_SCALE = 55.0, 15.0
ARCH = "test_resnet"


def render_arrays(n: int, seed: int, params) -> tuple[np.ndarray, "pd.DataFrame"]:  # noqa: F821
    """``n`` subjects of the world, one photo each, decoded from JPEG (uint8, NHWC)."""
    from PIL import Image

    from audit.demo.world import expand_photos, iter_jpegs, simulate

    df = expand_photos(simulate(n, seed, params), 1, seed)
    images = np.empty((len(df), 112, 112, 3), dtype=np.uint8)
    for i, (_, data) in enumerate(iter_jpegs(df, seed, params)):
        images[i] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return images, df


def _to_tensor(images: np.ndarray):
    import torch

    from audit.models.inference import normalize_batch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    return normalize_batch(x, "imagenet")


def cox_partial_likelihood(risk, time, event):
    """Negative Cox partial log-likelihood (Breslow), averaged over events in the batch."""
    import torch

    order = torch.argsort(time, descending=True)
    r, e = risk[order], event[order]
    return -((r - torch.logcumsumexp(r, dim=0)) * e).sum() / e.sum().clamp(min=1.0)


def _batches(n, size, rng):
    idx = rng.permutation(n)
    for start in range(0, n - size + 1, size):
        yield idx[start : start + size]


def _fit(model, images, epochs, batch, rng, opt, loss_of, log, label, sched=None):
    """Epochs of mini-batch training with random horizontal flips; ``loss_of(out, idx)``."""
    import torch

    model.train()
    for epoch in range(epochs):
        start, losses = time.time(), []
        for idx in _batches(len(images), batch, rng):
            x = _to_tensor(images[idx])
            if rng.random() < 0.5:
                x = torch.flip(x, dims=[3])
            loss = loss_of(model(x).squeeze(1), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
        log(
            f"{label} epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f} "
            f"({len(images) / (time.time() - start):.0f} img/s)"
        )
    return model.eval()


def train_faceage(images, ages, epochs, batch, lr, seed, log):
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(ARCH, num_classes=1, pretrained=False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    target = torch.from_numpy(((ages - AGE_OFFSET) / AGE_SCALE).astype(np.float32))
    return _fit(
        model,
        images,
        epochs,
        batch,
        np.random.default_rng(seed),
        opt,
        lambda out, idx: torch.nn.functional.smooth_l1_loss(out, target[idx], beta=0.1),
        log,
        "faceage",
        sched,
    )


def train_survival(backbone, images, time_years, events, epochs, batch, lr, seed, log):
    import copy

    import torch

    torch.manual_seed(seed)
    model = copy.deepcopy(backbone)
    model.reset_classifier(1)
    torch.nn.init.zeros_(model.get_classifier().weight)
    torch.nn.init.zeros_(model.get_classifier().bias)
    opt = torch.optim.AdamW(
        [
            {
                "params": [p for n, p in model.named_parameters() if not n.startswith("fc.")],
                "lr": lr / 5,
            },
            {"params": model.get_classifier().parameters(), "lr": lr},
        ],
        weight_decay=1e-4,
    )
    t = torch.from_numpy(time_years.astype(np.float32))
    e = torch.from_numpy(events.astype(np.float32))
    return _fit(
        model,
        images,
        epochs,
        batch,
        np.random.default_rng(seed),
        opt,
        lambda out, idx: cox_partial_likelihood(out, t[idx], e[idx]),
        log,
        "survival",
    )


def predict(model, images, batch=256) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            out.append(model(_to_tensor(images[start : start + batch])).squeeze(1).numpy())
    return np.concatenate(out)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "weights")
    ap.add_argument("--n-faceage", type=int, default=20000)
    ap.add_argument("--n-survival", type=int, default=12000)
    ap.add_argument("--epochs-faceage", type=int, default=6)
    ap.add_argument("--epochs-survival", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batch-survival", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-survival", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--underserved", default="Black")
    ap.add_argument("--underserved-share", type=float, default=0.01)
    return ap


def _save_weights(out: Path, models: dict) -> dict:
    """Each model's weights as ``{name}.safetensors`` with its SHA-256 and size."""
    from safetensors.torch import save_file

    from audit.data.hashing import sha256_file

    files = {}
    for name, model in models.items():
        path = out / f"{name}.safetensors"
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path), metadata={"arch": ARCH, "recipe": "audit.demo.train"})
        files[name] = {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def main(argv=None) -> None:
    import torch

    from audit.demo.world import WorldParams
    from audit.metrics.accuracy import harrell_c

    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:7.1f} s] {msg}", flush=True)

    healthy = WorldParams.make(
        "healthy", underserved=args.underserved, underserved_share=args.underserved_share
    )
    cancer = WorldParams.make("cancer")
    images, df = render_arrays(args.n_faceage, TRAIN_SEED_BASE + 1, healthy)
    val_images, val = render_arrays(2000, TRAIN_SEED_BASE + 2, WorldParams.make("healthy"))
    log(f"rendered {len(images)} healthy training and {len(val_images)} validation faces")
    faceage = train_faceage(
        images, df["age"].to_numpy(), args.epochs_faceage, args.batch, args.lr, 1, log
    )
    pred = predict(faceage, val_images) * AGE_SCALE + AGE_OFFSET
    mae = float(np.abs(pred - val["age"].to_numpy()).mean())
    log(f"demo FaceAge validation MAE (healthy, 2,000 fresh subjects): {mae:.2f} years")
    del images

    s_images, s_df = render_arrays(args.n_survival, TRAIN_SEED_BASE + 3, cancer)
    sv_images, sv = render_arrays(2000, TRAIN_SEED_BASE + 4, cancer)
    log(f"rendered {len(s_images)} cancer training and {len(sv_images)} validation faces")
    survival = train_survival(
        faceage,
        s_images,
        s_df["time_days"].to_numpy() / 365.25,
        s_df["event"].to_numpy(),
        args.epochs_survival,
        args.batch_survival,
        args.lr_survival,
        2,
        log,
    )
    risk = predict(survival, sv_images)
    c = harrell_c(sv["time_days"], sv["event"], risk)
    c_age = harrell_c(sv["time_days"], sv["event"], sv["age"])
    c_true = harrell_c(sv["time_days"], sv["event"], sv["true_lp"])
    gap = float((predict(faceage, sv_images) * AGE_SCALE + AGE_OFFSET - sv["age"]).mean())
    log(
        f"demo FaceSurvival validation C {c:.3f} (chronological age {c_age:.3f}, "
        f"truth {c_true:.3f}); "
        f"FaceAge gap on cancer patients {gap:+.2f} years"
    )

    files = _save_weights(args.out, {"demo_faceage": faceage, "demo_survival": survival})
    recipe = {
        "command": "python -m audit.demo.train " + " ".join(argv or []),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "arch": ARCH,
        "age_offset": AGE_OFFSET,
        "age_scale": AGE_SCALE,
        "torch": torch.__version__,
        "seconds": round(time.time() - t0, 1),
        "validation": {
            "faceage_mae_healthy": round(mae, 3),
            "survival_c": round(c, 4),
            "chronological_age_c": round(c_age, 4),
            "true_lp_c": round(c_true, 4),
            "faceage_gap_cancer": round(gap, 3),
        },
        "files": files,
    }
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=2))
    log(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
