"""Small configs and photo folders for tests (CPU, seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import skimage
import torch
from PIL import Image

from sfd.config import load_config

# Real photographs that ship inside scikit-image (used when ../shared/data is absent).
BUNDLED_PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png"]


def bundled_photo_dir(dest: Path, max_side: int | None = None) -> Path:
    """The bundled photos in ``dest``; ``max_side`` shrinks them (Lanczos) for tests that only need
    commands to run on real photos, not on 0.3-megapixel ones (``sfd sr`` on them takes a minute)."""
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(skimage.__file__).parent / "data"
    for name in BUNDLED_PHOTOS:
        if max_side is None:
            shutil.copy(src / name, dest / name)
            continue
        with Image.open(src / name) as im:
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            im.save(dest / name)
    return dest


def tiny_overrides(train_dir: Path, out_dir: Path, iterations: int = 4) -> list[str]:
    return [
        "generator.num_feat=8",
        "generator.num_blocks=1",
        "generator.pretrained=random",  # tiny generators have no first stage
        "clip.weights=random",
        "feat_d.widths=[32,16,16,8]",
        "tg_d.n_pairs=2",
        "tg_d.length=4",
        "loss.vgg_weights=random",
        "loss.perceptual_layers={conv2_2: 1.0}",
        f"data.train=[{train_dir}]",
        "data.patch_size=64",
        "data.batch_size=2",
        "data.num_workers=0",
        f"train.iterations={iterations}",
        f"train.output_dir={out_dir}",
        "train.save_every=2",
        "train.log_every=1",
        "train.device=cpu",
        "optim.ema_decay=0.9",
        "optim.milestones=[3]",
    ]


def tiny_config(
    train_dir: Path, out_dir: Path, extra: list[str] | None = None, path: str | None = None, iterations: int = 4
):
    return load_config(path, tiny_overrides(train_dir, out_dir, iterations) + (extra or []))


def random_batches(cfg, n: int = 1, size: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` seeded random (LR, HR) batches of ``size`` at the config's patch size and scale."""
    p, s = cfg.data.patch_size, cfg.generator.scale
    g = torch.Generator().manual_seed(0)
    return [
        (torch.rand(size, 3, p // s, p // s, generator=g), torch.rand(size, 3, p, p, generator=g)) for _ in range(n)
    ]
