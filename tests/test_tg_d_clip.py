"""TG-D on its own CLIP (``tg_d.clip_model``): Supp. Table 2's readings, configs, training, checkpoints, SFD-IQA."""

import json
from pathlib import Path

import pytest
import torch
from helpers import bundled_photo_dir, tiny_config

from sfd import checkpoint as ckpt_io
from sfd.config import ConfigError, load_config
from sfd.errors import UsageError
from sfd.evaluate.paper import READINGS, find_reading
from sfd.train import build_run, save_checkpoint, train_step
from sfd.weights import describe_weights

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = Path(__file__).parents[1] / "configs"
MIXED = ["tg_d.clip_model=ViT-B-16"]  # Feat-D on clip.model RN50, TG-D on ViT-B/16


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """One training step of the mixed reading on random CLIPs, the CLIP inputs each extractor saw, a checkpoint."""
    tmp = tmp_path_factory.mktemp("mixed")
    cfg = tiny_config(bundled_photo_dir(tmp / "photos"), tmp / "runs", MIXED)
    run = build_run(cfg)
    p, s = cfg.data.patch_size, cfg.generator.scale
    g = torch.Generator().manual_seed(0)
    lr, hr = torch.rand(2, 3, p // s, p // s, generator=g), torch.rand(2, 3, p, p, generator=g)
    seen = {"rn50": [], "vit": []}
    hooks = [
        run.clip_image.register_forward_hook(lambda m, i, o: seen["rn50"].append((i[0].shape[0], sorted(o)))),
        run.clip_image_tg_d.register_forward_hook(lambda m, i, o: seen["vit"].append((i[0].shape[0], sorted(o)))),
    ]
    ctx_before = run.discriminators["tg_d"].ctx.detach().clone()
    logs = train_step(run, lr, hr)
    for h in hooks:
        h.remove()
    path = save_checkpoint(run, tmp / "mixed.pth")
    return run, logs, seen, ctx_before, path


def test_config_validation_of_tg_ds_own_extractor():
    cfg = load_config(None, MIXED)
    assert cfg.tg_d_clip_model == "ViT-B-16" and cfg.separate_tg_d_clip
    plain = load_config(None, [])
    assert plain.tg_d_clip_model == "RN50" and not plain.separate_tg_d_clip
    assert not load_config(None, ["tg_d.clip_model=RN50"]).separate_tg_d_clip  # the same CLIP: one extractor
    for extra, match in (
        (["clip.model=ViT-B-16"], "feat_d needs CLIP RN50"),  # Feat-D still needs RN50 as the run's CLIP
        (["clip.model=ViT-B-16", "tg_d.clip_model=RN50"], "feat_d needs CLIP RN50"),
        (["tg_d.clip_model=ViT-B-16", "tg_d.enabled=false"], "tg_d.enabled is false"),
        (["tg_d.clip_model=ViT-B-16", "feat_d.enabled=false"], "set clip.model=ViT-B-16 instead"),
        (["tg_d.clip_model=ViT-B-16", "clip.weights=RN50.pt"], "tg_d.clip_weights"),
        (["tg_d.clip_model=ViT-L-14"], "tg_d.clip_model"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_config(None, extra)
    ok = load_config(None, ["tg_d.clip_model=ViT-B-16", "clip.weights=RN50.pt", "tg_d.clip_weights=ViT.pt"])
    assert ok.tg_d.clip_weights == "ViT.pt"


def test_shipped_configs_of_the_three_readings():
    setups = {}
    for name in ("classic_rrdb_x4", "vit_b16_rrdb_x4", "tgd_only_rn50_x4", "vit_b16_tgd_rn50_featd_x4"):
        cfg = load_config(CONFIGS / f"{name}.yml")
        parts = [f"Feat-D {cfg.clip.model}"] if cfg.feat_d.enabled else []
        setups[f"{name}.yml"] = " + ".join(parts + [f"TG-D {cfg.tg_d_clip_model}"] * cfg.tg_d.enabled)
        assert "Table 2" in (CONFIGS / f"{name}.yml").read_text() or name == "classic_rrdb_x4"
    for reading, want in READINGS.items():
        rn50, vit = (c.strip() for c in want["configs"].split(","))
        assert (setups[rn50], setups[vit]) == (want["rn50"], want["vit_b16"]), reading
        assert f'"{reading}"' in (CONFIGS / vit).read_text() or f'"{reading}"' in (CONFIGS / rn50).read_text()


def test_mixed_step_each_clip_sees_each_image_once(mixed_run):
    run, logs, seen, ctx_before, _ = mixed_run
    assert run.clip_image.name == "RN50" and run.clip_image_tg_d.name == "ViT-B-16"
    # RN50: pixel-wise features only (no attention pool); ViT-B/16: F_out only. SR then HR, once each.
    assert seen["rn50"] == [(2, ["m1", "m2", "m3"])] * 2
    assert seen["vit"] == [(2, ["out"])] * 2
    assert {"l_g_feat_d", "l_g_tg_d", "l_d_feat_d", "l_d_tg_d"} <= logs.keys()
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert not torch.equal(run.discriminators["tg_d"].ctx, ctx_before)  # TG-D trained on the ViT's F_out
    # TG-D's text tower is the ViT-B/16 CLIP's: its width matches the ViT's F_out, not RN50's (1024)
    with torch.no_grad():
        assert run.discriminators["tg_d"].text_features(run.clip_text).shape[-1] == 512


def test_mixed_checkpoint_records_both_clips(mixed_run):
    run, _, _, _, path = mixed_run
    ckpt = ckpt_io.load(path)
    assert ckpt.clip == {"model": "RN50", "weights": "random(seed=0)", "pretrained": False}
    assert ckpt.clip_tg_d == {"model": "ViT-B-16", "weights": "random(seed=0)", "pretrained": False}
    assert ckpt.meta["clip_tg_d"] == run.meta["clip_tg_d"]
    assert ckpt.clip_weights("clip_tg_d") == ("random", 0) and ckpt.config.tg_d.clip_model == "ViT-B-16"
    notes = describe_weights(ckpt.meta)
    assert any("CLIP RN50 (Feat-D) uses RANDOM weights" in n for n in notes)
    assert any("CLIP ViT-B-16 (TG-D) uses RANDOM weights" in n for n in notes)
    # one random CLIP is called out whichever it is
    pretrained = dict(ckpt.meta, clip=dict(ckpt.meta["clip"], pretrained=True, weights="openai"))
    assert [n for n in describe_weights(pretrained) if "RANDOM" in n and "CLIP" in n] == [
        n for n in notes if "ViT-B-16 (TG-D)" in n
    ]


def test_sfd_iqa_scores_each_discriminator_with_its_extractor(mixed_run):
    from sfd.metrics.clip_iqa import SFDIQA

    *_, path = mixed_run
    with pytest.warns(UserWarning, match="RANDOM"):
        metric = SFDIQA(path, device="cpu")
    assert metric.clip_model == "RN50" and metric.clip_tg_d.name == "ViT-B-16"
    assert metric.describe()["clip_tg_d"]["model"] == "ViT-B-16" and metric.weights().random
    assert metric.text_feats.shape[-1] == 512  # the ViT's text tower
    calls = {"rn50": 0, "vit": 0}
    metric.clip.register_forward_hook(lambda m, i, o: calls.__setitem__("rn50", calls["rn50"] + 1))
    metric.clip_tg_d.register_forward_hook(lambda m, i, o: calls.__setitem__("vit", calls["vit"] + 1))
    out = metric.score_one(torch.rand(3, 64, 64))
    assert calls == {"rn50": 1, "vit": 1} and 0 <= float(out["score"]) <= 1 and {"s_feat", "s_text"} <= out.keys()


def test_paper_table_reading_is_declared_or_found_from_the_checkpoints():
    sfd_rn50, tgd_vit, mixed = "Feat-D RN50 + TG-D RN50", "TG-D ViT-B-16", "Feat-D RN50 + TG-D ViT-B-16"
    assert find_reading(None, {"rn50": sfd_rn50, "vit_b16": tgd_vit})[0] == "sfd-vs-tgd"
    assert find_reading(None, {"rn50": "TG-D RN50", "vit_b16": tgd_vit})[0] == "tgd-vs-tgd"
    assert find_reading(None, {"vit_b16": mixed})[0] == "mixed"
    reading, how = find_reading(None, {"rn50": sfd_rn50})  # fits two readings: not guessed
    assert reading is None and "sfd-vs-tgd, mixed" in how and "--reading" in how
    assert find_reading(None, {})[0] is None  # released models: nothing to read
    assert find_reading("mixed", {})[:1] == ("mixed",)
    assert find_reading("mixed", {"rn50": sfd_rn50})[0] == "mixed"
    with pytest.raises(UsageError, match="--reading tgd-vs-tgd wants TG-D RN50"):
        find_reading("tgd-vs-tgd", {"rn50": sfd_rn50})
    with pytest.raises(UsageError, match="fit no reading"):
        find_reading(None, {"rn50": tgd_vit})


def test_paper_table_prints_the_reading_from_the_checkpoint(mixed_run, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from sfd.cli import build_parser, main

    *_, path = mixed_run
    (tmp_path / "data" / "Set5").mkdir(parents=True)
    Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(tmp_path / "data" / "Set5" / "a.png")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no LPIPS/DISTS backbones
    common = ["eval", "--paper-table", "supp2", "--metrics", "psnr", "--data-root", str(tmp_path / "data")]
    common += ["--model", f"vit_b16={path}", "--device", "cpu", "--no-progress", "-o", str(tmp_path / "o")]
    assert main([*common, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reading"]["name"] == "mixed" and "Feat-D RN50 + TG-D ViT-B-16" in data["reading"]["how"]
    assert data["reading"]["configs"] == READINGS["mixed"]["configs"]
    assert main(common) == 0
    assert "reading [our choice; the supplement does not say]: mixed (" in capsys.readouterr().out
    assert main([*common, "--reading", "tgd-vs-tgd"]) == 2  # the checkpoint says otherwise
    assert "--reading tgd-vs-tgd wants" in capsys.readouterr().err
    args = build_parser().parse_args(["eval", "--paper-table", "supp2", "--reading", "mixed"])
    reading_option = next(a for a in build_parser()._subparsers._group_actions[0].choices["eval"]._actions
                          if a.dest == "reading")  # fmt: skip
    assert args.reading == "mixed" and list(reading_option.choices) == list(READINGS)
