"""LDL, SeD-P and DualFormer (Supp. Table 1's other columns) train here: their configs with tiny settings,
what one step of each updates, and SeD-P's one CLIP forward per image."""

import json

import pytest
import torch
from helpers import bundled_photo_dir, random_batches, tiny_config

from sfd.config import ConfigError, load_config
from sfd.train import build_run, train, train_step

TINY = {
    "ldl_rrdb_x4": ["image_d.input_size=64"],
    "sed_p_rrdb_x4": ["sed_d.num_feat=8", "sed_d.head_dim=8", "loss.perceptual_layers={conv2_2: 1.0}"],
    "dualformer_rrdb_x4": [
        "image_d.input_size=64",
        "spectral_d.embed_dim=24",
        "spectral_d.depths=[1,1]",
        "spectral_d.heads=[2,4]",
    ],
}
NO_VAL = ["data.val=null"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"), max_side=200)


def _cfg(name, photos, tmp_path, extra=()):
    return tiny_config(photos, tmp_path, NO_VAL + TINY[name] + list(extra), path=name, iterations=2)


@pytest.mark.parametrize("name", sorted(TINY))
def test_each_compared_config_trains_and_checkpoints_its_discriminators(name, photos, tmp_path):
    cfg = _cfg(name, photos, tmp_path)
    last = train(cfg, progress=False)
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["iteration"] == 2
    expected = {"ldl_rrdb_x4": {"image_d"}, "sed_p_rrdb_x4": {"sed_d"}, "dualformer_rrdb_x4": {"image_d", "spectral_d"}}
    assert set(ckpt["discriminators"]) == expected[name]
    assert set(ckpt["optimizers"]) == {"g"} | expected[name]


def _changed(before: dict, module) -> bool:
    return any(not torch.equal(v, module.state_dict()[k]) for k, v in before.items() if v.is_floating_point())


def test_ldl_step_logs_its_term_and_uses_the_ema(photos, tmp_path):
    cfg = _cfg("ldl_rrdb_x4", photos, tmp_path)
    run = build_run(cfg)
    calls = []
    hook = run.generator_ema.register_forward_hook(lambda m, i, o: calls.append(1))
    logs = train_step(run, *random_batches(cfg)[0])
    hook.remove()
    assert calls == [1] and logs["l_g_ldl"] > 0
    off = build_run(_cfg("ldl_rrdb_x4", photos, tmp_path, ["loss.ldl.weight=0"]))
    assert "l_g_ldl" not in train_step(off, *random_batches(cfg)[0])


@pytest.mark.parametrize("semantics", ["self", "hr"])
def test_sed_step_one_clip_forward_per_image_and_what_it_updates(semantics, photos, tmp_path):
    cfg = _cfg("sed_p_rrdb_x4", photos, tmp_path, [f"sed_d.semantics={semantics}"])
    run = build_run(cfg)
    d_before = {k: v.clone() for k, v in run.discriminators["sed_d"].state_dict().items()}
    clip_before = [p.clone() for p in run.clip_image.parameters()]
    lr, hr = random_batches(cfg)[0]
    calls, seen = [], {}
    hook = run.clip_image.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    sed = run.discriminators["sed_d"]
    d_hook = sed.register_forward_hook(lambda m, i, o: seen.setdefault("sem", []).append(i[1]))
    logs = train_step(run, lr, hr)
    hook.remove()
    d_hook.remove()
    assert sum(calls) == 2 * lr.shape[0], "CLIP must see each SR and HR image exactly once per iteration"
    assert {"l_g_sed_d", "l_d_sed_d", "sed_d_real", "sed_d_fake"} <= logs.keys()
    assert _changed(d_before, sed)
    assert all(torch.equal(a, b) for a, b in zip(run.clip_image.parameters(), clip_before))
    assert not any(m.training for m in run.clip_image.modules())
    # G step's fake call, then the D step's real and fake calls: what semantics each saw
    g_fake, d_real, d_fake = seen["sem"]
    assert torch.equal(d_fake, d_real) == (semantics == "hr")
    assert torch.allclose(g_fake, d_fake)


def test_dualformer_step_updates_both_transformers(photos, tmp_path):
    cfg = _cfg("dualformer_rrdb_x4", photos, tmp_path)
    run = build_run(cfg)
    assert run.clip_image is None  # no CLIP in DualFormer
    before = {k: {n: v.clone() for n, v in run.discriminators[k].state_dict().items()} for k in run.discriminators}
    logs = train_step(run, *random_batches(cfg)[0])
    assert {"l_g_image_d", "l_g_spectral_d", "l_d_image_d", "l_d_spectral_d"} <= logs.keys()
    assert all(_changed(before[k], run.discriminators[k]) for k in ("image_d", "spectral_d"))


def test_config_mistakes_are_one_line_errors():
    with pytest.raises(ConfigError, match="sed_d needs CLIP RN50"):
        load_config("sed_p_rrdb_x4", ["clip.model=ViT-B-16"])
    with pytest.raises(ConfigError, match="loss.ldl needs the EMA"):
        load_config("ldl_rrdb_x4", ["optim.ema_decay=null"])
    with pytest.raises(ConfigError, match="image_d.input_size must equal data.patch_size"):
        load_config("dualformer_rrdb_x4", ["data.patch_size=96"])
    with pytest.raises(ConfigError, match="raise spectral_d.window to 8"):
        load_config("dualformer_rrdb_x4", ["data.patch_size=256", "image_d.input_size=256"])
    assert load_config("dualformer_rrdb_x4", ["data.patch_size=256", "image_d.input_size=256", "spectral_d.window=8"])


def test_bench_step_measures_each_compared_system_beside_esrgan(capsys):
    from sfd.cli import main

    args = ["bench", "step", "--blocks", "1", "--batch", "1", "--patch", "32", "--repeats", "1", "--no-tiny"]
    args += ["--only", "ESRGAN", "LDL", "SeD-P", "DualFormer", "--device", "cpu", "--json"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["seconds_per_iteration"]) == {"ESRGAN", "LDL", "SeD-P", "DualFormer"}
    flops = r["flop_ratio_to_esrgan"]
    assert flops["ESRGAN"] == 1.0
    assert flops["LDL"] > 1.0  # ESRGAN's step plus the EMA generator's forward and the map
    assert flops["SeD-P"] > flops["LDL"]  # a CLIP RN50 forward of SR and HR
    assert all(v > 0 for v in r["ratio_to_esrgan"].values())


@pytest.mark.slow  # bf16 convolutions are slow on a CPU (30 s for the three); the GPU's precision
@pytest.mark.parametrize("name", sorted(TINY))
def test_each_compared_step_runs_under_bf16_autocast(name, photos, tmp_path):
    cfg = _cfg(name, photos, tmp_path, ["train.precision=bf16"])
    logs = train_step(build_run(cfg), *random_batches(cfg)[0])
    losses = {k: float(v) for k, v in logs.items() if k.startswith("l_")}
    assert len(losses) >= 4 and all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
