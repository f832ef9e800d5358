"""The supplement's feature analyses.

``tsne`` (supplement §3, Fig. 3): are a discriminator's features ordered by image quality?
Images of an IQA dataset are binned by MOS as the supplement does (5 fixed bins of 20 points,
0-20, ..., 80-100, with the MOS rescaled to 0-100 from the dataset's scale; or, as an option,
equal-width bins between the data's minimum and maximum), up to ``per_bin`` sampled per bin
(seeded), and three global-average-pooled features are embedded by t-SNE: ESRGAN's VGG-style
discriminator after its 2nd BatchNorm, CLIP after layer1, and Feat-D after its 3rd upsampling layer.
Each panel gets a separation score: the silhouette of the bins in the 2-D embedding and the 5-fold
kNN accuracy of the bin labels (in the embedding and in the features), next to the chance level
(the largest bin's share).

``feature_maps`` (supplement Fig. 2): feature maps of one conv layer before and one after the
upsampling of two or more generators, on the same input, side by side.

Every extractor sees the centre crop of each image (``crop``, default 256, reflect-padded if the
image is smaller); the VGG-style D sees the centre crop of its own input size [choice].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sfd.data.io import load_rgb, to_tensor
from sfd.data.pixels import pad_reflect
from sfd.inference import Upscaler
from sfd.iqa.evaluate import match_images, read_mos
from sfd.metrics import create_metric
from sfd.metrics.clip_iqa import SFDIQA
from sfd.models.discriminators import build_discriminators
from sfd.models.vgg_d import VGGStyleDiscriminator
from sfd.weights import seeded

__all__ = [
    "bin_by_mos",
    "describe_binning",
    "sample_per_bin",
    "load_vgg_d",
    "tsne_analysis",
    "feature_maps",
    "DEFAULT_LAYERS",
]


# ---------------------------------------------------------------- sampling


def bin_by_mos(
    mos: dict[str, float], n_bins: int = 5, mos_range: tuple[float, float] = (0.0, 100.0), from_data: bool = False
) -> tuple[dict[str, int], np.ndarray]:
    """Each image's bin (0..n_bins-1) and the bin edges, on a 0-100 scale.

    The MOS is rescaled linearly from ``mos_range`` (the dataset's scale, e.g. (1, 5) for KonIQ's
    raw MOS) to 0-100. Default, the supplement's bins: ``n_bins`` equal bins of 0-100 (0-20, ...,
    80-100). ``from_data``: equal bins between the data's minimum and maximum instead. A score on
    an inner edge goes to the upper bin; the top edge belongs to the last bin.
    """
    lo, hi = mos_range
    if not hi > lo:
        raise ValueError(f"MOS range {lo:g},{hi:g}: the maximum must be above the minimum")
    raw = np.array(list(mos.values()), dtype=np.float64)
    values = (raw - lo) / (hi - lo) * 100.0
    if from_data:
        edges = np.linspace(values.min(), values.max(), n_bins + 1)
    else:
        outside = int(((values < 0) | (values > 100)).sum())
        if outside:
            raise ValueError(
                f"{outside} MOS values lie outside the MOS range {lo:g},{hi:g} (data: {raw.min():g} to "
                f"{raw.max():g}); give the dataset's scale with --mos-range, or bin with --bins-from data"
            )
        edges = np.linspace(0.0, 100.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    return dict(zip(mos, bins.tolist())), edges


def describe_binning(edges: np.ndarray, mos_range: tuple[float, float], from_data: bool) -> str:
    """One line for outputs: which bins, on which scale, and whether the MOS was rescaled."""
    lo, hi = mos_range
    kind = "equal bins between the data's min and max" if from_data else "the supplement's fixed bins"
    scale = "MOS used as given" if (lo, hi) == (0.0, 100.0) else f"MOS rescaled from {lo:g}-{hi:g}"
    ranges = ", ".join(f"{a:.4g}-{b:.4g}" for a, b in zip(edges[:-1], edges[1:]))
    return f"{kind} on a 0-100 scale, {scale}: {ranges}"


def sample_per_bin(bins: dict[str, int], per_bin: int, seed: int = 0) -> list[str]:
    """Up to ``per_bin`` names from each bin, drawn without replacement with ``seed``; sorted by (bin, name)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for b in sorted(set(bins.values())):
        names = sorted(k for k, v in bins.items() if v == b)
        take = min(per_bin, len(names))
        chosen += sorted(rng.choice(names, size=take, replace=False).tolist())
    return chosen


# ---------------------------------------------------------------- extractors


def load_vgg_d(checkpoint: str | Path | None, input_size: int, seed: int = 0) -> tuple[VGGStyleDiscriminator, str]:
    """ESRGAN's VGG-style D from an lgan training checkpoint, else randomly initialised (seeded); and what it is."""
    if checkpoint is None:
        with seeded(seed):
            d = VGGStyleDiscriminator(num_feat=64, input_size=input_size)
        return d.eval().requires_grad_(False), f"RANDOM initialisation (seed {seed}), not trained"
    from sfd import checkpoint as ckpt_io

    ckpt = ckpt_io.load(checkpoint)
    if ckpt.config.image_d.type != "vgg" or "image_d" not in ckpt.discriminators:
        raise ValueError(f"{checkpoint} holds no VGG-style discriminator (train one with configs/lgan_rrdb_x4.yml)")
    d = build_discriminators(ckpt.config)["image_d"]
    d.load_state_dict(ckpt.discriminators["image_d"])
    return d.eval().requires_grad_(False), f"trained: {checkpoint} (iteration {ckpt.iteration})"


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (1, 3, size, size): centre crop, reflect-padded (replicate for tiny images) when smaller."""
    h, w = img.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    img = img[None, :, top : top + size, left : left + size]
    ph, pw = size - img.shape[-2], size - img.shape[-1]
    return pad_reflect(img, 0, pw, 0, ph)


@torch.no_grad()
def extract_features(
    paths: dict[str, Path], sfd: SFDIQA, vgg_d: VGGStyleDiscriminator, crop: int, progress: bool = True
) -> tuple[dict[str, np.ndarray], list[str], dict[str, str]]:
    """Global-average-pooled features per image: "vgg_d" (after its 2nd BN), "clip" (layer1), "feat_d"
    (3rd upsampling layer). Returns them, the names of the images used, and the unreadable ones (skipped)."""
    out: dict[str, list] = {"vgg_d": [], "clip": [], "feat_d": []}
    kept, failed = [], {}
    device = sfd.device
    vgg_d = vgg_d.to(device)
    for name, path in tqdm(paths.items(), desc="features", disable=not progress, dynamic_ncols=True, leave=False):
        try:
            img = to_tensor(load_rgb(path)).to(device)
        except Exception as err:  # unreadable file: skip it, say why
            failed[name] = str(err)
            continue
        feats = sfd.clip(center_crop(img, crop), ("m1", "m2", "m3"))
        out["clip"].append(feats["m1"].mean((2, 3)))
        out["feat_d"].append(sfd.feat_d.forward_features(feats)["up1"].mean((2, 3)))
        out["vgg_d"].append(vgg_d.forward_features(center_crop(img, vgg_d.input_size)).mean((2, 3)))
        kept.append(name)
    if len(kept) < 3:
        raise ValueError(f"only {len(kept)} images could be read; failures: {list(failed.items())[:3]}")
    return {k: torch.cat(v).cpu().double().numpy() for k, v in out.items()}, kept, failed


# ---------------------------------------------------------------- t-SNE


def separation(
    features: np.ndarray, embedding: np.ndarray, labels: np.ndarray, seed: int, k: int = 5
) -> dict[str, float]:
    """How well the MOS bins separate: silhouette (embedding), kNN accuracy (embedding, features), chance."""
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    n, classes = len(labels), np.unique(labels)
    result = {"chance": float(np.bincount(labels).max() / n)}
    if len(classes) < 2 or n < 10:
        return result | {
            "silhouette_tsne": float("nan"),
            "knn_accuracy_tsne": float("nan"),
            "knn_accuracy_features": float("nan"),
        }
    folds = KFold(n_splits=5, shuffle=True, random_state=seed)
    knn = KNeighborsClassifier(n_neighbors=min(k, n // 2))
    scaled = StandardScaler().fit_transform(features)
    return result | {
        "silhouette_tsne": float(silhouette_score(embedding, labels)),
        "knn_accuracy_tsne": float(cross_val_score(knn, embedding, labels, cv=folds).mean()),
        "knn_accuracy_features": float(cross_val_score(knn, scaled, labels, cv=folds).mean()),
    }


def embed(features: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of standardised features (PCA init, perplexity min(30, (n-1)/3))."""
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    n = len(features)
    perplexity = float(min(30.0, max((n - 1) / 3, 1.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        StandardScaler().fit_transform(features)
    )


PANELS = {
    "vgg_d": "VGG-style D (after 2nd BN)",
    "clip": "CLIP RN50 (after layer1)",
    "feat_d": "Feat-D (after 3rd upsampling layer)",
}


def tsne_analysis(
    images_dir: str | Path,
    mos_csv: str | Path,
    checkpoint: str | Path,
    out_dir: str | Path,
    vgg_d_checkpoint: str | Path | None = None,
    clip_weights: str | None = None,
    image_col: str = "image",
    mos_col: str = "mos",
    n_bins: int = 5,
    per_bin: int = 100,
    crop: int = 256,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    mos_range: tuple[float, float] = (0.0, 100.0),
    bins_from_data: bool = False,
) -> dict[str, Any]:
    """Writes ``tsne.png`` (three panels coloured by MOS bin) and ``tsne.json``; returns the JSON's content.

    Binning: see ``bin_by_mos`` (``mos_range`` is the dataset's MOS scale, rescaled to 0-100)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mos = read_mos(mos_csv, image_col, mos_col)
    paths, missing = match_images(images_dir, mos)
    mos = {k: mos[k] for k in paths}
    bins, edges = bin_by_mos(mos, n_bins, mos_range, bins_from_data)
    lo, hi = mos_range
    names = sample_per_bin(bins, per_bin, seed)

    sfd = create_metric("sfd-iqa", device=device, checkpoint=checkpoint, weights=clip_weights)
    if sfd.feat_d is None:
        raise ValueError(f"{checkpoint} has no Feat-D: the t-SNE's third panel needs an SFD checkpoint with feat_d")
    vgg_d, vgg_source = load_vgg_d(vgg_d_checkpoint, crop, seed)
    feats, names, failed = extract_features({k: paths[k] for k in names}, sfd, vgg_d, crop, progress)
    labels = np.array([bins[k] for k in names])

    clip = sfd.describe()["clip"]
    sources = {
        "vgg_d": vgg_source,
        "clip": f"{clip['weights']}" + ("" if clip["pretrained"] else " (RANDOM weights)"),
        "feat_d": f"{checkpoint} (iteration {sfd.iteration}), on CLIP {clip['weights']}",
    }
    panels = {}
    for key, title in PANELS.items():
        emb = embed(feats[key], seed)
        panels[key] = {
            "title": title,
            "source": sources[key],
            "dim": int(feats[key].shape[1]),
            **separation(feats[key], emb, labels, seed),
            "embedding": emb,
        }
    report = {
        "dataset": str(images_dir),
        "mos_csv": str(mos_csv),
        "binning": {
            "mode": "data" if bins_from_data else "fixed",
            "mos_range": [lo, hi],
            "rescaled_to_0_100": (lo, hi) != (0.0, 100.0),
            "description": describe_binning(edges, mos_range, bins_from_data),
        },
        "bins": [  # "range" on the 0-100 scale, "mos_range" on the dataset's own scale
            {
                "range": [float(edges[b]), float(edges[b + 1])],
                "mos_range": [float(lo + edges[b] * (hi - lo) / 100), float(lo + edges[b + 1] * (hi - lo) / 100)],
                "images": int((labels == b).sum()),
            }
            for b in range(n_bins)
        ],
        "per_bin": per_bin,
        "seed": seed,
        "crop": crop,
        "images_missing": len(missing),
        "images_unreadable": failed,
        "clip": clip,
        "panels": {k: {kk: vv for kk, vv in p.items() if kk != "embedding"} for k, p in panels.items()},
        "images": names,
    }
    if not clip["pretrained"]:
        report["note"] = "RANDOM CLIP weights: the CLIP and Feat-D panels show nothing about quality"
    _plot_tsne(panels, labels, edges, out_dir / "tsne.png", report.get("note"), report["binning"]["description"])
    (out_dir / "tsne.json").write_text(json.dumps(report, indent=2))
    return report


def _plot_tsne(panels: dict, labels: np.ndarray, edges: np.ndarray, path: Path, note: str | None, binning: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), dpi=110)
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, len(edges) - 1))
    for ax, p in zip(axes, panels.values()):
        for b, color in enumerate(colors):
            pts = p["embedding"][labels == b]
            ax.scatter(pts[:, 0], pts[:, 1], s=9, color=color, label=f"{edges[b]:.0f}–{edges[b + 1]:.0f}")
        ax.set_title(
            f"{p['title']}\n{_wrap(p['source'])}\nsilhouette {p['silhouette_tsne']:.3f}, "
            f"kNN acc. {p['knn_accuracy_tsne']:.2f} (chance {p['chance']:.2f})",
            fontsize=8,
        )
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=7, loc="best", title="MOS (0–100)", title_fontsize=7)
    fig.suptitle(f"bins: {binning}" + (f"\n{note}" if note else ""), color="C3" if note else "black", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _wrap(text: str, width: int = 60) -> str:
    return "\n".join(text[i : i + width] for i in range(0, len(text), width))


# ---------------------------------------------------------------- generator feature maps (Fig. 2)

# One conv before and one after the upsampling, per spandrel architecture (names in its modules).
DEFAULT_LAYERS = {
    "ESRGAN": ("model.1.sub.1", "model.8"),  # RRDBNet: trunk conv (conv_body) and HR conv (conv_hr)
    "SwinIR": ("conv_before_upsample.0", "upsample"),  # conv before, then the pixel-shuffle upsampler's output
}


def _capture(up: Upscaler, layers: tuple[str, str], x: torch.Tensor) -> list[torch.Tensor]:
    modules = dict(up.model.named_modules())
    for name in layers:
        if name not in modules:
            convs = [n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d)]
            raise ValueError(f"no layer {name!r}; conv layers: {', '.join(convs[:8])} ... {', '.join(convs[-4:])}")
    captured: dict[str, torch.Tensor] = {}
    # clone: an in-place activation right after the layer would otherwise change what was captured
    hooks = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o.detach().clone()))
        for n in layers
    ]
    try:
        up(x)  # padded as the architecture needs, like sfd sr
    finally:
        for h in hooks:
            h.remove()
    return [captured[n][0].cpu() for n in layers]


def feature_maps(
    generators: list[str],
    image: str | Path,
    out: str | Path,
    layers: tuple[str, str] | None = None,
    channels: list[int] | None = None,
    crop: int = 64,
    from_hr: bool = False,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """One PNG: per generator a row with the input, then ``channels`` of the layer before and after upsampling.

    ``image`` is the LR input (centre-cropped to ``crop``); with ``from_hr`` it is an HR image,
    downscaled by each generator's scale (MATLAB bicubic) first.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sfd.data.resize import bicubic_lr

    if len(generators) < 2:
        raise ValueError("give two or more generators to compare")
    channels = channels or [0, 1, 2]
    labels = labels or [Path(g).stem if Path(g).exists() else g for g in generators]
    img = to_tensor(load_rgb(image))
    rows = []
    for spec, label in zip(generators, labels):
        loaded = Upscaler.load(spec)
        lr = bicubic_lr(img, loaded.scale) if from_hr else img
        x = center_crop(lr, crop)
        names = layers or DEFAULT_LAYERS.get(loaded.architecture)
        if names is None:
            raise ValueError(f"no default layers for {loaded.architecture}: pass --layers BEFORE,AFTER")
        maps = _capture(loaded, tuple(names), x)
        for name, fmap in zip(names, maps):
            if max(channels) >= fmap.shape[0]:
                raise ValueError(f"{label}: layer {name} has {fmap.shape[0]} channels; channel {max(channels)} asked")
        rows.append({"label": label, "source": loaded.source, "input": x[0], "layers": list(names), "maps": maps})

    cols = 1 + 2 * len(channels)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.8 * cols, 1.9 * len(rows)), dpi=90, squeeze=False)
    for r, row in enumerate(rows):
        axes[r, 0].imshow(row["input"].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[r, 0].set_ylabel(row["label"], fontsize=8)
        axes[r, 0].set_title("input (LR)" if r == 0 else "", fontsize=8)
        for j, (name, fmap) in enumerate(zip(row["layers"], row["maps"])):
            for c_i, c in enumerate(channels):
                ax = axes[r, 1 + j * len(channels) + c_i]
                m = fmap[c].numpy()
                ax.imshow((m - m.min()) / (np.ptp(m) + 1e-12), cmap="viridis", interpolation="nearest")
                if r == 0:
                    ax.set_title(f"{'before' if j == 0 else 'after'} upsampling\n{name}, ch {c}", fontsize=6)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return {"out": str(out), "rows": [{k: row[k] for k in ("label", "source", "layers")} for row in rows]}
