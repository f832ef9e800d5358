"""The input pipeline: bounded image cache, degradations in loader workers identical to the
trainer's, and the precision options (fp16 with loss scaling, bf16, channels-last)."""

import pytest
import torch
from helpers import bundled_photo_dir, tiny_config
from torch.utils.data import default_collate

from sfd.data.cache import LRUCache
from sfd.data.datasets import HRPatches
from sfd.data.pipeline import build_loader
from sfd.models.tg_d import TGD
from sfd.train import build_run, make_pair, train_step


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"))


def test_lru_cache_stays_under_its_bound():
    cache = LRUCache(max_mb=1)
    mb = torch.zeros(2**18)  # 1 MB of float32
    cache["a"] = (mb[: 2**17], None)  # 0.5 MB
    cache["b"] = (mb[: 2**17], None)
    assert "a" in cache and "b" in cache and cache.bytes == 2**20
    cache["a"]  # a is now the most recent
    cache["c"] = (mb[: 2**16],)  # evicts b, the least recently used
    assert "a" in cache and "c" in cache and "b" not in cache and cache.bytes <= 2**20
    cache["big"] = (torch.zeros(2**19),)  # larger than the whole cache: not kept
    assert "big" not in cache and cache.bytes <= 2**20
    assert len(LRUCache(0)) == 0


def test_patches_are_the_same_with_a_small_cache_or_none(photos):
    full = HRPatches([photos], 64, 4, cache_mb=10_000)
    small = HRPatches([photos], 64, 4, cache_mb=1)  # holds no whole photo: decodes every time
    for k in (0, 3, 7, 11):
        a, b = full[k], small[k]
        assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"]) and a["seed"] == b["seed"]
    assert small._cache.bytes <= 2**20 and len(full._cache) > 0


def test_degradations_in_loader_workers_equal_the_trainers(photos, tmp_path):
    deg = ["data.degradation={queue_size: 0}", "data.patch_size=64", "data.batch_size=2"]
    cfg = tiny_config(photos, tmp_path, deg + ["data.num_workers=2"])
    run = build_run(tiny_config(photos, tmp_path, deg))
    loader = build_loader(cfg, 6, 2, torch.device("cpu"), degrader=run.degrader)
    dataset = HRPatches([photos], 64, 4, cfg.train.seed, bicubic=False)
    for i, batch in enumerate(loader):  # degraded in 2 worker processes
        assert "target" in batch
        plain = default_collate([dataset[6 + 2 * i], dataset[7 + 2 * i]])  # the trainer's in-process path
        lr, target, real = make_pair(run, plain)
        w_lr, w_target, w_real = make_pair(run, batch)
        assert torch.equal(w_lr, lr) and torch.equal(w_target, target) and torch.equal(w_real, real)
    assert i == 1


def test_tg_d_text_tower_runs_once_per_iteration(photos, tmp_path, monkeypatch):
    calls = []
    original = TGD.text_features
    monkeypatch.setattr(TGD, "text_features", lambda self, text: calls.append(1) or original(self, text))
    run = build_run(tiny_config(photos, tmp_path))
    ctx = run.discriminators["tg_d"].ctx.detach().clone()
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64)
    train_step(run, lr, hr)
    assert len(calls) == 1 and not torch.equal(ctx, run.discriminators["tg_d"].ctx)


# bf16 has no fast CPU kernels here (twice fp16's time): -m slow; tests/test_train.py checks a bf16 step
@pytest.mark.parametrize("precision", ["fp16", pytest.param("bf16", marks=pytest.mark.slow)])
def test_low_precision_steps_train_with_fp32_weights(photos, tmp_path, precision):
    cfg = tiny_config(photos, tmp_path, [f"train.precision={precision}", "train.channels_last=true"])
    run = build_run(cfg)
    assert run.scalers["g"].is_enabled() == (precision == "fp16") and set(run.scalers) == {"g", "feat_d", "tg_d"}
    before = {k: [p.clone() for p in m.parameters()] for k, m in [("g", run.generator), *run.discriminators.items()]}
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64)
    for _ in range(2):
        logs = train_step(run, lr, hr)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    for k, m in [("g", run.generator), *run.discriminators.items()]:
        assert all(p.dtype == torch.float32 for p in m.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(m.parameters(), before[k])), f"{k} did not train"
    if precision == "fp16":
        assert run.scalers["feat_d"].get_scale() > 0 and run.scalers["g"].state_dict()["scale"] > 0


def test_tg_d_logits_stay_fp32_under_autocast():
    from sfd.models.tg_d import tg_d_logits

    v, t = torch.randn(2, 8), torch.nn.functional.normalize(torch.randn(3, 2, 8), dim=-1)
    scale = torch.tensor(4.6052)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tg_d_logits(v.bfloat16(), t.bfloat16(), scale)
    assert out.dtype == torch.float32
    ref = tg_d_logits(v.bfloat16().float(), t.bfloat16().float(), scale)
    assert torch.allclose(out, ref, atol=1e-5)


def test_prepare_cuts_sub_images_that_cover_each_image(photos, tmp_path):
    from PIL import Image

    from sfd.cli import main
    from sfd.data.prepare import crop_starts

    assert crop_starts(1000, 480, 240) == [0, 240, 480, 520] and crop_starts(400, 480, 240) == [0]
    assert main(["prepare", str(photos), "-o", str(tmp_path / "sub"), "--crop", "192", "--step", "96"]) == 0
    subs = sorted((tmp_path / "sub").glob("astronaut_s*.png"))
    assert len(subs) == len(crop_starts(512, 192, 96)) ** 2  # astronaut.png is 512x512
    assert all(Image.open(p).size == (192, 192) for p in subs)
    assert len(HRPatches([tmp_path / "sub"], 64, 4)) > len(HRPatches([photos], 64, 4))
