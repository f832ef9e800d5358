"""``sfd demo``: a few minutes of SFD training on photos bundled with scikit-image, then a report.

The run: a small RRDBNet, an L1 warm-up (standing in for the supplement's PSNR-oriented
initialisation), then SFD (L1 + perceptual + Feat-D + TG-D). The report shows the held-out photo
as bicubic, the warm-up generator, the SFD generator and the original, with zoomed crops, loss
curves and PSNR/SSIM; it says whether CLIP and VGG were pretrained or random.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import skimage  # noqa: E402
import torch  # noqa: E402

from sfd import checkpoint  # noqa: E402
from sfd.config import load_config  # noqa: E402
from sfd.data.io import load_rgb, save_png, to_tensor  # noqa: E402
from sfd.data.resize import bicubic_lr, imresize, mod_crop  # noqa: E402
from sfd.device import resolve_device  # noqa: E402
from sfd.inference import Upscaler  # noqa: E402
from sfd.metrics.psnr_ssim import psnr, ssim  # noqa: E402
from sfd.train import train  # noqa: E402
from sfd.weights import describe_weights  # noqa: E402

TRAIN_PHOTOS = ["astronaut.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png"]
HELD_OUT = "chelsea.png"
WARMUP = 300  # L1 iterations (cheap: no CLIP, VGG or discriminators)
SFD_ITERATIONS = 200  # then SFD; each costs about 6 L1 iterations (VGG19 and CLIP RN50 forward/backward)

DEMO_SETTINGS = [
    "generator.num_feat=32",
    "generator.num_blocks=3",
    "generator.pretrained=random",  # the L1 warm-up below stands in for the fidelity-oriented first stage
    "clip.weights=auto",
    "feat_d.widths=[128,64,32,32]",
    "tg_d.n_pairs=1",
    "tg_d.length=16",
    "loss.vgg_weights=auto",
    "loss.perceptual_layers={conv3_4: 1.0, conv4_4: 1.0, conv5_4: 1.0}",
    "data.patch_size=64",
    "data.batch_size=4",
    "data.num_workers=0",  # 64-px patches from 6 cached photos: a loader process would only take a core from torch
    "optim.lr_g=2.0e-4",
    "optim.ema_decay=0.99",
    "train.log_every=10",
    "train.val_every=100000",
    "train.device=auto",
]


def demo_threads() -> int:
    """Torch threads for the demo: ``OMP_NUM_THREADS`` when set, else every core this process may run on
    (``os.sched_getaffinity``: a container's or ``taskset``'s limit, not the machine's count). On a busy
    machine fewer threads can be faster (threads wait on each other at every op): set OMP_NUM_THREADS=1."""
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    if hasattr(os, "sched_getaffinity"):  # not on macOS or Windows
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _sr(ckpt_path: Path, lr: torch.Tensor) -> torch.Tensor:
    """The checkpoint's EMA generator on ``lr``, as ``sfd sr`` runs it."""
    return Upscaler.load(ckpt_path)(lr)


def _loss_plot(log_path: Path, out: Path, warmup: int) -> None:
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    keys = [
        ("l_g_l1", "G: L1"),
        ("l_g_percep", "G: perceptual"),
        ("l_g_feat_d", "G: adv Feat-D"),
        ("l_g_tg_d", "G: adv TG-D"),
        ("l_d_feat_d", "D: Feat-D"),
        ("l_d_tg_d", "D: TG-D"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for key, label in keys:
        pts = [(r["iter"], r[key]) for r in rows if key in r]
        if pts:
            ax = axes[0] if key.startswith("l_g") else axes[1]
            ax.plot(*zip(*pts), label=label, lw=1.2)
    for ax, title in zip(axes, ("generator losses", "discriminator losses")):
        ax.axvline(warmup, color="gray", ls="--", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.set_yscale("log" if title.startswith("generator") else "linear")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _zoom(img: torch.Tensor, box: tuple[int, int, int], factor: int = 4) -> torch.Tensor:
    top, left, size = box
    crop = img[:, top : top + size, left : left + size]
    return crop.repeat_interleave(factor, 1).repeat_interleave(factor, 2)  # nearest: shows real pixels


def run_demo(out_dir: str | Path = "runs/demo", iterations: int | None = None) -> Path:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not (out / "report.html").exists() and not (out / "train_photos").exists():
            raise FileExistsError(f"{out} is not empty and is not an earlier demo folder: choose another -o")
        shutil.rmtree(out)  # an earlier demo: start fresh
    photos = Path(skimage.__file__).parent / "data"
    train_dir = out / "train_photos"
    train_dir.mkdir(parents=True)
    for name in TRAIN_PHOTOS:
        shutil.copy(photos / name, train_dir / name)
    began = time.perf_counter()
    total = iterations or WARMUP + SFD_ITERATIONS
    warmup = WARMUP if iterations is None else min(WARMUP, total // 2)
    cfg = load_config(
        None,
        DEMO_SETTINGS
        + [
            "name=run",
            f"data.train=[{train_dir}]",
            f"train.output_dir={out}",
            f"train.iterations={total}",
            f"train.pixel_warmup={warmup}",
            f"train.save_every={warmup}",
        ],
    )

    threads, n_threads = torch.get_num_threads(), demo_threads()
    torch.set_num_threads(n_threads)
    start = time.perf_counter()
    try:
        final = train(cfg)
    finally:
        torch.set_num_threads(threads)
    minutes = (time.perf_counter() - start) / 60
    run_dir = final.parent.parent
    warm_ckpt = run_dir / "checkpoints" / f"iter_{cfg.train.pixel_warmup:08d}.pth"
    meta = checkpoint.load(final).meta

    s = cfg.generator.scale
    hr = mod_crop(to_tensor(load_rgb(photos / HELD_OUT)), s)
    lr = bicubic_lr(hr, s)
    images = {
        "Bicubic": imresize(lr.double(), s).clamp(0, 1).float(),
        f"L1 warm-up (iter {cfg.train.pixel_warmup})": _sr(warm_ckpt, lr),
        f"SFD (iter {total}, EMA)": _sr(final, lr),
        "Original (HR)": hr,
    }
    h, w = hr.shape[-2:]
    boxes = [(h // 2 - 40, w // 2 - 60, 64), (h // 5, w // 8, 64)]  # the cat's face, and fur
    rows = []
    for i, (label, img) in enumerate(images.items()):
        save_png(img, out / f"img_{i}.png")
        for j, box in enumerate(boxes):
            save_png(_zoom(img, box), out / f"zoom_{i}_{j}.png")
        scores = (
            None if label.startswith("Original") else (float(psnr(img, hr, border=s)), float(ssim(img, hr, border=s)))
        )
        rows.append((i, label, scores))
    _loss_plot(run_dir / "log.jsonl", out / "losses.png", cfg.train.pixel_warmup)

    notes = describe_weights(meta)
    random_used = any("RANDOM" in n for n in notes)
    warning = (
        "<p class=warn><b>Random weights were used.</b> Without pretrained CLIP the Feat-D and TG-D judge "
        "features of a random network, and without ImageNet VGG19 the perceptual loss is not perceptual: this "
        "report shows that the pipeline runs end to end, not what SFD achieves. Provide the weights "
        "($SFD_CLIP_WEIGHTS, $SFD_VGG_WEIGHTS or the open_clip/torchvision caches) and run <code>make demo</code> "
        "again.</p>"
        if random_used
        else ""
    )
    cells = "".join(
        f"<figure><img src='img_{i}.png'><figcaption><b>{html.escape(label)}</b><br>"
        + (f"PSNR {m[0]:.2f} dB · SSIM {m[1]:.4f}" if m else "")
        + "</figcaption>"
        + "".join(f"<img class=zoom src='zoom_{i}_{j}.png'>" for j in range(len(boxes)))
        + "</figure>"
        for i, label, m in rows
    )
    page = f"""<!doctype html><meta charset=utf-8><title>SFD demo</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto}} figure{{display:inline-block;margin:6px;
vertical-align:top;text-align:center}} img{{display:block;margin:3px auto;max-width:330px}} img.zoom{{width:256px;
image-rendering:pixelated}} .warn{{background:#fee;border:1px solid #c00;padding:8px}} code{{background:#eee}}</style>
<h1>SFD demo: x{s} super-resolution of a held-out photo</h1>
<p>{"<br>".join(html.escape(n) for n in notes)}</p>{warning}
<p>Trained for {total} iterations ({cfg.train.pixel_warmup} L1 warm-up, then SFD: L1 + perceptual + Feat-D +
TG-D) on {len(TRAIN_PHOTOS)} photos bundled with scikit-image ({", ".join(TRAIN_PHOTOS)}), {minutes:.1f} minutes on
{resolve_device(cfg.train.device)} ({n_threads} torch threads).
Held out: <code>{HELD_OUT}</code>, LR made by MATLAB-compatible bicubic. PSNR/SSIM on the Y channel, border {s}.
Zoomed crops are nearest-neighbour x4.</p>
{cells}
<h2>Losses</h2><img src='losses.png' style='max-width:100%'>
<p>Run folder: <code>{html.escape(str(run_dir))}</code> (checkpoints, <code>log.jsonl</code>, TensorBoard).</p>
"""
    report = out / "report.html"
    report.write_text(page)
    # The same numbers on the terminal, as a Markdown table (README.md shows one run's output)
    print("| | PSNR | SSIM |\n|---|---|---|")
    for _, label, m in rows[:-1]:
        print(f"| {label} | {m[0]:.2f} dB | {m[1]:.4f} |")
    total_s = time.perf_counter() - began
    device = resolve_device(cfg.train.device)
    took = f"all {total_s // 60:.0f} min {total_s % 60:.0f} s"
    print(f"training {minutes * 60:.0f} s, {took} on {device}, {n_threads} torch threads")
    return report
