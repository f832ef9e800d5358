"""The trainer: one CLIP forward per image, what each step updates, checkpoints and exact resume."""

import json

import pytest
import torch
from helpers import bundled_photo_dir, random_batches, tiny_config

from sfd.commands import inspect_checkpoint
from sfd.config import load_config
from sfd.train import build_run, make_pair, train, train_step


def load_checkpoint(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"))


def _batch(cfg):
    return random_batches(cfg)[0]


def test_one_clip_forward_per_image_and_what_each_step_changes(photos, tmp_path):
    cfg = tiny_config(photos, tmp_path)
    run = build_run(cfg)
    clip_before = [p.clone() for p in run.clip_image.parameters()]
    text_before = [p.clone() for p in run.clip_text.parameters()]
    ctx_before = run.discriminators["tg_d"].ctx.detach().clone()
    featd_before = {k: v.clone() for k, v in run.discriminators["feat_d"].state_dict().items()}
    g_before = [p.clone() for p in run.generator.parameters()]

    lr, hr = _batch(cfg)
    calls = []
    hook = run.clip_image.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    logs = train_step(run, lr, hr)
    hook.remove()

    assert sum(calls) == 2 * lr.shape[0], "CLIP must see each SR and HR image exactly once per iteration"
    assert {"l_g_feat_d", "l_g_tg_d", "l_d_feat_d", "l_d_tg_d", "feat_d_real", "tg_d_fake"} <= logs.keys()
    assert not torch.equal(run.discriminators["tg_d"].ctx, ctx_before)
    after = run.discriminators["feat_d"].state_dict()
    assert any(not torch.equal(after[k], featd_before[k]) for k in featd_before if k.endswith("orig"))
    assert any(not torch.equal(a, b) for a, b in zip(run.generator.parameters(), g_before))
    assert all(torch.equal(a, b) for a, b in zip(run.clip_image.parameters(), clip_before))
    assert all(torch.equal(a, b) for a, b in zip(run.clip_text.parameters(), text_before))
    assert all(p.grad is None for p in run.clip_image.parameters())
    assert not any(m.training for m in run.clip_image.modules())


@pytest.mark.parametrize(
    "extra,expect",
    [
        (
            [
                "feat_d.enabled=false",
                "tg_d.enabled=false",
                "image_d.type=vgg",
                "image_d.input_size=64",
                "loss.gan_type=ragan",
            ],
            "l_d_image_d",
        ),
        (
            ["tg_d.enabled=false", "loss.clipiqa=0.005", "loss.clipiqa_loss.variant=match_hr", "loss.gan_type=hinge"],
            "l_g_clipiqa",
        ),
        (["clip.model=ViT-B-16", "feat_d.enabled=false", "loss.gan_type=lsgan"], "l_d_tg_d"),
    ],
    ids=["vgg-baseline", "clipiqa-loss", "vit-tgd-only"],
)
def test_baselines_and_ablations_run_from_config_alone(photos, tmp_path, extra, expect):
    cfg = tiny_config(photos, tmp_path, extra)
    run = build_run(cfg)
    lr, hr = _batch(cfg)
    logs = train_step(run, lr, hr)
    assert expect in logs and all(torch.isfinite(torch.tensor(v)) for v in logs.values())


def test_bf16_autocast_step_keeps_fp32_weights(photos, tmp_path):
    cfg = tiny_config(photos, tmp_path, ["train.precision=bf16"])
    run = build_run(cfg)
    before = [p.clone() for p in run.generator.parameters()]
    logs = train_step(run, *_batch(cfg))
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert all(p.dtype == torch.float32 for p in run.generator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(run.generator.parameters(), before))
    assert "l_d_feat_d" in logs and "l_d_tg_d" in logs


@pytest.mark.slow  # 22 s; tests/test_bench.py still runs a compiled step in the suite
def test_compiled_step_matches_the_eager_one_and_keeps_state_dict_names(photos, tmp_path):
    """train.compile (here torch.compile's "aot_eager" backend: the same graph capture as inductor,
    without its C++ build) trains like eager mode, and checkpoints keep their parameter names."""
    runs = {c: build_run(tiny_config(photos, tmp_path / c, [f"train.compile={c}"])) for c in ("null", "aot_eager")}
    cfg = runs["null"].cfg
    assert runs["aot_eager"].generator._compiled_call_impl is not None  # nn.Module.compile took effect
    assert runs["null"].generator._compiled_call_impl is None
    for run in runs.values():
        torch.manual_seed(0)
        train_step(run, *_batch(cfg))
    eager, compiled = (runs[c].generator.state_dict() for c in ("null", "aot_eager"))
    assert list(compiled) == list(eager)  # nn.Module.compile: no "_orig_mod." prefixes
    assert all(torch.allclose(compiled[k], eager[k], atol=1e-5) for k in eager)
    # The next steps reuse the compiled graphs: no module state that changes per call is traced (an int
    # counter on CLIP's image tower once recompiled it at every call, then ran it eagerly past dynamo's limit).
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    train_step(runs["aot_eager"], *_batch(cfg))
    assert counters["stats"]["unique_graphs"] == graphs


def test_swinir_generator_trains(photos, tmp_path):
    extra = [
        "generator.arch=swinir",
        "generator.embed_dim=12",
        "generator.depths=[1]",
        "generator.num_heads=[2]",
        "generator.img_size=16",
    ]
    cfg = tiny_config(photos, tmp_path, extra)
    run = build_run(cfg)
    lr, hr = _batch(cfg)
    assert run.generator(lr).shape == hr.shape
    train_step(run, lr, hr)


def _all_params(path):
    ckpt = load_checkpoint(path)
    flat = {f"g.{k}": v for k, v in ckpt["generator"].items()}
    flat.update({f"ema.{k}": v for k, v in ckpt["generator_ema"].items()})
    for name, sd in ckpt["discriminators"].items():
        flat.update({f"{name}.{k}": v for k, v in sd.items()})
    return ckpt, flat


def test_training_on_real_photos_writes_checkpoints_and_resumes_exactly(shared_data, tmp_path):
    photos = shared_data("train/BSDS400")
    cfg = tiny_config(photos, tmp_path / "a", ["data.val=" + str(photos), "data.val_max_images=1", "train.val_every=4"])
    final = train(cfg, progress=False)
    ckpt_dir = final.parent
    assert sorted(p.name for p in ckpt_dir.glob("*.pth")) == ["iter_00000002.pth", "iter_00000004.pth"]
    log = [json.loads(line) for line in (ckpt_dir.parent / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [1, 2, 3, 4] and "val_psnr" in log[-1]
    assert any((ckpt_dir.parent / "tensorboard").iterdir())
    meta = json.loads((ckpt_dir.parent / "meta.json").read_text())
    assert meta["clip"]["pretrained"] is False and any("RANDOM" in n for n in meta["notes"])

    cfg_b = tiny_config(
        photos, tmp_path / "b", ["data.val=" + str(photos), "data.val_max_images=1", "train.val_every=4"]
    )
    resumed = train(cfg_b, resume=str(ckpt_dir / "iter_00000002.pth"), progress=False)
    a_ckpt, a = _all_params(final)
    b_ckpt, b = _all_params(resumed)
    assert b_ckpt["iteration"] == a_ckpt["iteration"] == 4
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert a_ckpt["optimizers"]["g"]["state"][0]["step"] == b_ckpt["optimizers"]["g"]["state"][0]["step"]

    # --resume auto picks the newest checkpoint of the run folder: nothing left to do
    again = train(cfg, resume="auto", progress=False)
    assert load_checkpoint(again)["iteration"] == 4

    # the generator is saved in a layout spandrel loads back, with the right architecture and scale
    import spandrel

    desc = spandrel.ModelLoader().load_from_state_dict(a_ckpt["generator_ema"])
    assert desc.architecture.name == "ESRGAN" and desc.scale == 4
    lr = torch.rand(1, 3, 16, 16)
    g = build_run(cfg).generator.eval()
    g.load_state_dict(a_ckpt["generator_ema"])
    with torch.no_grad():
        assert torch.allclose(desc.model.eval()(lr), g(lr), atol=1e-6)

    info = inspect_checkpoint(final)
    assert info["iteration"] == 4 and info["clip"]["pretrained"] is False
    assert info["vgg"]["weights"].startswith("random")
    assert (
        len(info["generator_sha256"]) == 64
        and info["generator_sha256"] == inspect_checkpoint(resumed)["generator_sha256"]
    )


def test_cli_inspect_and_config_errors(photos, tmp_path, capsys):
    from sfd.cli import main
    from sfd.train import save_checkpoint

    cfg = tiny_config(photos, tmp_path, ["tg_d.enabled=false"])
    run = build_run(cfg)
    path = save_checkpoint(run, tmp_path / "c.pth")
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["iteration"] == 0 and "discriminator.feat_d" in info["parameters"]
    assert main(["inspect", str(path)]) == 0
    assert "RANDOM" in capsys.readouterr().out
    assert main(["train", "-c", str(tmp_path / "missing.yml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_realworld_config_trains_a_few_iterations_with_degradations(shared_data, tmp_path):
    from pathlib import Path

    photos = shared_data("train/BSDS400")
    path = Path(__file__).parents[1] / "configs" / "realworld_rrdb_x4.yml"
    extra = ["generator.pretrained=random", "tg_d.length=8", "data.degradation.queue_size=4", "data.patch_size=64"]
    full = load_config(path)
    assert full.data.degradation is not None and (full.tg_d.n_pairs, full.tg_d.length) == (1, 64)
    assert (full.loss.l1, full.loss.perceptual, full.loss.feat_d, full.loss.tg_d) == (1.0, 1.0, 0.1, 0.005)
    cfg = tiny_config(photos, tmp_path, extra + ["tg_d.n_pairs=1"], path=str(path), iterations=3)
    final = train(cfg, progress=False)
    ckpt = load_checkpoint(final)
    assert ckpt["iteration"] == 3 and ckpt["config"]["data"]["degradation"]["use_usm"] is True
    log = [json.loads(line) for line in (final.parents[1] / "log.jsonl").read_text().splitlines()]
    assert all("l_d_feat_d" in r and "l_d_tg_d" in r for r in log)


def test_degraded_pairs_keep_the_plain_hr_for_the_discriminators(photos, tmp_path):
    from sfd.data.datasets import HRPatches

    cfg = tiny_config(photos, tmp_path, ["data.degradation={queue_size: 0}"])
    run = build_run(cfg)
    ds = HRPatches([photos], 64, 4, bicubic=False)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    lr, target, real = make_pair(run, batch)
    assert lr.shape == (2, 3, 16, 16) and torch.equal(real, batch["hr"])
    assert not torch.equal(target, real)  # unsharp-masked target (use_usm defaults to true)
    lr2, _, _ = make_pair(run, batch)
    assert torch.equal(lr, lr2)  # degradations come from each sample's seed


def test_generator_initialises_from_the_authors_rrdbnet_layout(photos, tmp_path):
    """generator.pretrained accepts the key layout of the authors' released rrdbnet_arch.py."""
    nf, gc, nb = 8, 32, 1
    g = torch.Generator().manual_seed(0)

    def conv(c_out, c_in):
        return {
            "weight": torch.randn(c_out, c_in, 3, 3, generator=g) * 0.05,
            "bias": torch.randn(c_out, generator=g) * 0.01,
        }

    layers = {
        "conv_first": conv(nf, 3),
        "trunk_conv": conv(nf, nf),
        "upconv1": conv(nf, nf),
        "upconv2": conv(nf, nf),
        "HRconv": conv(nf, nf),
        "conv_last": conv(3, nf),
    }
    for b in range(nb):
        for r in (1, 2, 3):
            for i in range(1, 6):
                c_out = nf if i == 5 else gc
                layers[f"RRDB_trunk.{b}.RDB{r}.conv{i}"] = conv(c_out, nf + (i - 1) * gc)
    state = {f"{name}.{k}": v for name, p in layers.items() for k, v in p.items()}
    path = tmp_path / "RRDB_authors_layout.pth"
    torch.save(state, path)

    cfg = tiny_config(photos, tmp_path, [f"generator.pretrained={path}"])
    run = build_run(cfg)
    assert str(path) in run.meta["generator"]["init"]
    import spandrel

    ref = spandrel.ModelLoader().load_from_file(path).model.eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(run.generator.eval()(x), ref(x))
    assert torch.equal(run.generator.state_dict()["model.0.weight"], state["conv_first.weight"])

    with pytest.raises(ValueError, match="does not fit"):
        build_run(tiny_config(photos, tmp_path, [f"generator.pretrained={path}", "generator.num_feat=16"]))


def test_log_lines_show_speed_and_memory_and_the_best_checkpoints_survive_retention(photos, tmp_path, capsys):
    from sfd.checkpoint import read_best

    cfg = tiny_config(
        photos,
        tmp_path,
        ["data.val=" + str(photos), "data.val_max_images=1", "train.val_every=1", "train.keep_checkpoints=1"],
        iterations=3,
    )
    cfg.train.save_every = 100  # only the end is due: every other checkpoint is there because it was best
    final = train(cfg, progress=False)
    run_dir = final.parent.parent
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert all(r["it_per_s"] > 0 and 0 <= r["data_wait"] <= 1 and r["peak_mb"] > 0 for r in log)
    assert log[-1]["eta_s"] == 0 and log[0]["eta_s"] > 0
    out = "".join(capsys.readouterr())
    assert "iter 3/3" in out and "it/s" in out and "GB" in out and "3 iterations in" in out

    best = read_best(run_dir)
    psnrs = {r["iter"]: r["val_psnr"] for r in log}
    it = max(psnrs, key=psnrs.get)
    assert best["val_psnr"]["iteration"] == it and best["val_psnr"]["value"] == pytest.approx(psnrs[it])
    assert best["val_psnr"]["higher_is_better"] and "val_ssim" in best
    kept = sorted(p.name for p in final.parent.glob("*.pth"))  # retention kept the newest and the best
    assert kept == sorted({final.name, best["val_psnr"]["checkpoint"], best["val_ssim"]["checkpoint"]})
    assert inspect_checkpoint(final)["best"] == best
    diff = (run_dir / "config_diff.txt").read_text().splitlines()  # written at start: the run's --set values
    assert diff[0].startswith("config 'sfd'") and any(line.startswith("train.keep_checkpoints: ") for line in diff)


def test_wandb_mirrors_the_log_offline_and_a_missing_package_is_one_line(photos, tmp_path, monkeypatch):
    import sys

    from sfd.train import bookkeeping
    from sfd.yamlconfig import ConfigError

    cfg = tiny_config(photos, tmp_path / "none", ["train.wandb=sfd-test"], iterations=1)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match="wandb package is not installed"):
        train(cfg, progress=False)
    monkeypatch.undo()

    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged, real = [], bookkeeping._wandb_run

    class Spy:  # the real offline W&B run, with its log calls recorded
        def __init__(self, run):
            self.run = run

        def log(self, data, step):
            logged.append((step, dict(data)))
            self.run.log(data, step=step)

        def finish(self):
            self.run.finish()

    monkeypatch.setattr(bookkeeping, "_wandb_run", lambda out, cfg: Spy(real(out, cfg)))
    final = train(tiny_config(photos, tmp_path / "w", ["train.wandb=sfd-test"], iterations=2), progress=False)
    run_dir = final.parent.parent
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [s for s, _ in logged] == [r["iter"] for r in log]
    assert all(d[k] == pytest.approx(r[k]) for (_, d), r in zip(logged, log) for k in d)  # what TensorBoard got
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B's own offline record
