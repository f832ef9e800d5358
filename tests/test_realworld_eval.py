"""The one metric registry, and real-world evaluation: real LR images with and without HR partners.

Paired data: RealSR's and DRealSR's layouts built from Set5 in the test (LR by MATLAB bicubic, so the
bicubic method must give exactly the numbers of the classic pipeline). Unpaired data: CLIVE photos
(real camera images, centre crops to stay fast). Generators are tiny random RRDBNets; SFD-IQA and
CLIP-IQA run on random CLIP weights, which every output must say.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from eval_helpers import tiny_rrdbnet
from helpers import bundled_photo_dir, tiny_config
from PIL import Image

import sfd.iqa as iqa
import sfd.metrics.clip_iqa as iqa_metrics
from sfd import metrics as registry
from sfd.cli import main
from sfd.data.io import list_images, load_rgb, save_png, to_tensor
from sfd.data.resize import bicubic_lr, mod_crop
from sfd.evaluate import run
from sfd.evaluate.datasets import REAL_DATASETS as DATASETS
from sfd.evaluate.datasets import DatasetNotFound
from sfd.evaluate.datasets import resolve as resolve_dataset
from sfd.evaluate.pairing import PairPattern, pair_images, split_mixed_folder
from sfd.metrics.psnr_ssim import psnr
from sfd.train import build_run, save_checkpoint

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*RANDOM CLIP weights.*", "ignore:.*RANDOM weights.*"),
    pytest.mark.usefixtures("one_thread"),
]


@pytest.fixture(scope="module", autouse=True)
def shared_clip(cached_load_clip):
    """Each random CLIP is built once per session (conftest); frozen, metrics can share it."""
    original = iqa_metrics.load_clip
    iqa_metrics.load_clip = cached_load_clip
    yield
    iqa_metrics.load_clip = original


@pytest.fixture(scope="module")
def sfd_ckpt(tmp_path_factory):
    """A tiny SFD checkpoint (random CLIP, untrained Feat-D and prompts), as tests/test_iqa.py builds one."""
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = tiny_config(bundled_photo_dir(tmp / "photos"), tmp / "runs")
    return save_checkpoint(build_run(cfg), tmp / "sfd.pth")


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "tiny_x4.pth"
    torch.save(tiny_rrdbnet(scale=4, seed=3).state_dict(), path)
    return path


def _save(img: torch.Tensor, path: Path) -> Path:
    save_png(img, path)
    return path


def _rgb(path: Path) -> torch.Tensor:
    return to_tensor(load_rgb(path)).double()


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


# ---------------------------------------------------------------- the registry


def test_registry_lists_fr_and_nr_modes_with_pyiqa_attributes():
    fr, nr = registry.list_metrics("fr"), registry.list_metrics("nr")
    assert {"psnr", "ssim", "lpips", "lpips-vgg", "dists"} <= set(fr) and {"niqe", "sfd-iqa", "clipiqa"} <= set(nr)
    assert not set(fr) & set(nr) and sorted(fr + nr) == registry.list_metrics()
    with pytest.raises(ValueError, match="mode"):
        registry.list_metrics("both")
    built = {n: registry.create_metric(n, device="cpu", weights="random") for n in ("lpips", "dists")}
    built |= {n: registry.create_metric(n, device="cpu") for n in ("psnr", "ssim", "niqe")}
    for name, metric in built.items():
        entry = registry.metric_entry(name)
        assert isinstance(metric, torch.nn.Module) and metric.name == name
        assert metric.needs_reference == (entry.mode == "fr") and metric.lower_better == entry.lower_better
        assert metric.score_range == entry.score_range
    # Full-reference metrics take the image and its reference, pyiqa-style, and agree with the functions.
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 64, 48, generator=g)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    scores = registry.create_metric("psnr", border=4)(sr, hr)
    assert scores.shape == (2,) and torch.allclose(scores, psnr(sr, hr, border=4))
    assert built["lpips"].lower_better and built["lpips"](sr, sr).abs().max() < 1e-6
    with pytest.raises(ValueError, match="needs the reference"):
        built["ssim"].score_image(sr[0])
    # One NIQE: sfd.iqa's is the registry's, and sfd eval's adapter gives the same number.
    photo = torch.rand(3, 200, 200, generator=g)
    assert isinstance(iqa.create_metric("niqe"), type(built["niqe"]))
    niqe = built["niqe"].score_image(photo, border=4)
    assert registry.build("niqe").compute(photo, None, 4) == pytest.approx(niqe)
    # Names: any case, underscores, aliases; errors name the choices.
    assert registry.canonical_name("SFD_IQA") == "sfd-iqa" and registry.canonical_name("CLIP-IQA") == "clipiqa"
    with pytest.raises(ValueError, match="unknown metric 'brisque'; available: clipiqa, dists"):
        registry.create_metric("brisque")
    with pytest.raises(ValueError, match="psnr takes no checkpoint"):
        registry.create_metric("psnr", checkpoint="x.pth")
    with pytest.raises(ValueError, match="no as_loss mode"):
        registry.create_metric("ssim", as_loss=True)


def test_iqa_command_refuses_full_reference_metrics(tmp_path, capsys):
    _save(torch.rand(3, 200, 200, generator=torch.Generator().manual_seed(1)), tmp_path / "a.png")
    assert main(["iqa", str(tmp_path / "a.png"), "--metric", "psnr", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "psnr compares an image with its reference" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- pairing and named datasets


def test_pairing_follows_the_datasets_naming_conventions():
    p = Path
    # RealSR V3: LR and HR side by side; DRealSR: _x4 LR with _x1 HR; BasicSR LR_bicubic/X4: babyx4 <-> baby.
    lr, hr, problems = split_mixed_folder([p("C/Canon_001_HR.png"), p("C/Canon_001_LR4.png"), p("C/notes.png")])
    assert (lr, hr) == ([p("C/Canon_001_LR4.png")], [p("C/Canon_001_HR.png")]) and "notes.png" in problems[0]
    cases = [
        ([p("C/Canon_001_LR4.png")], [p("C/Canon_001_HR.png")], "Canon_001"),
        ([p("test_LR/DSC_1454_x4.png")], [p("test_HR/DSC_1454_x1.png")], "DSC_1454"),
        ([p("X4/babyx4.png")], [p("HR/baby.png")], "baby"),
        ([p("LR/0801.png")], [p("HR/0801.png")], "0801"),
        ([p("LR/img_x2.png")], [p("HR/img_x2.png")], "img_x2"),  # same names win over suffix rules
    ]
    for lrs, hrs, name in cases:
        pairs, problems = pair_images(lrs, hrs)
        assert problems == [] and [(q.name, q.lr, q.hr) for q in pairs] == [(name, lrs[0], hrs[0])]
    pattern = PairPattern.parse("low_{}:{}_gt")
    pairs, problems = pair_images([p("L/low_7.png"), p("L/other.png")], [p("H/7_gt.png")], pattern)
    assert [(q.name, q.hr.name) for q in pairs] == [("7", "7_gt.png")]
    assert problems == ["L/other.png: name does not fit --pair-pattern 'low_{}'; skipped"]
    with pytest.raises(ValueError, match="exactly one"):
        PairPattern.parse("{}_{}")
    # Missing partners either way and ambiguous claims: one line each, the good pair kept.
    pairs, problems = pair_images(
        [p("L/a_x4.png"), p("L/b_x4.png"), p("L/c_x4.png")],
        [p("H/a_x1.png"), p("H/c_x1.png"), p("H/c_x2.png"), p("H/d_x1.png")],
    )
    assert [q.name for q in pairs] == ["a"]
    assert problems == [
        "L/b_x4.png: no HR partner named like 'b' in H; skipped",
        "L/c_x4.png: 2 HR images claim it (c_x1.png, c_x2.png); skipped",
        "H/d_x1.png: no LR partner; skipped",
    ]


def test_named_datasets_resolve_or_name_their_layout(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SFD_DATA", raising=False)
    assert set(DATASETS) == {"RealSR-Canon", "RealSR-Nikon", "DRealSR"}
    with pytest.raises(DatasetNotFound, match="unknown dataset 'RealSR'.*RealSR-Canon, RealSR-Nikon, DRealSR"):
        resolve_dataset("RealSR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"--data-root DIR \(or \$SFD_DATA\)"):
        resolve_dataset("DRealSR")
    with pytest.raises(FileNotFoundError) as err:
        resolve_dataset("realsr-nikon", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "RealSR(V3)" / "Nikon" / "Test" / "4") in message and "Nikon_001_LR4.png" in message
    (tmp_path / "DRealSR" / "Test_x4" / "test_LR").mkdir(parents=True)
    (tmp_path / "DRealSR" / "Test_x4" / "test_HR").mkdir(parents=True)
    monkeypatch.setenv("SFD_DATA", str(tmp_path))
    found = resolve_dataset("drealsr")
    assert (found.name, found.lr.name, found.hr.name, found.scale) == ("DRealSR", "test_LR", "test_HR", 4)
    code = main(
        ["eval", "--dataset", "RealSR-Canon", "--method", "bicubic", "--device", "cpu", "-o", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert (
        code == 1 and err.startswith("sfd eval: error: dataset RealSR-Canon not found") and len(err.splitlines()) == 1
    )


# ---------------------------------------------------------------- paired real data


def _realsr_and_drealsr(set5: Path, root: Path) -> dict[str, torch.Tensor]:
    """Set5 in RealSR V3's and DRealSR's layouts (LR = MATLAB bicubic x4, 8 bits). The bird's HR keeps 2 extra
    columns and 3 extra rows beyond the mod-4 size, as real HR often does: it must be cropped, not refused."""
    realsr, drealsr = root / "RealSR(V3)" / "Canon" / "Test" / "4", root / "DRealSR" / "Test_x4"
    hrs = {}
    for path in list_images(set5):
        hr = _rgb(path)
        if path.stem == "bird":
            hr = torch.nn.functional.pad(hr[None], (0, 2, 0, 3), mode="reflect")[0]
        lr = bicubic_lr(mod_crop(hr, 4), 4)
        hrs[path.stem] = hr
        _save(hr, realsr / f"{path.stem}_HR.png")
        _save(lr, realsr / f"{path.stem}_LR4.png")
        _save(hr, drealsr / "test_HR" / f"{path.stem}_x1.png")
        _save(lr, drealsr / "test_LR" / f"{path.stem}_x4.png")
    return hrs


def test_realsr_and_drealsr_layouts_give_the_bicubic_pipelines_numbers(shared_data, tmp_path, generator, capsys):
    hrs = _realsr_and_drealsr(shared_data("sr/Set5"), tmp_path / "data")
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--dataset",
            "RealSR-Canon",
            "DRealSR",
            "--data-root",
            str(tmp_path / "data"),
            "--method",
            "bicubic",
            "--model",
            str(generator),
            "--metrics",
            "psnr,ssim",
            "--report",
            "--json",
            "--device",
            "cpu",
            "-o",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert data["scale"] == 4 and data["datasets"] == ["RealSR-Canon", "DRealSR"] and data["errors"] == []
    rows = {(r["dataset"], r["method"], r["image"]): r for r in data["per_image"]}
    assert len(rows) == 2 * 2 * 5
    # The same HR and LR through the classic bicubic runner: identical numbers, image by image.
    classic_dir = tmp_path / "classic"
    for name, hr in hrs.items():
        _save(hr, classic_dir / f"{name}.png")
    metrics = [registry.build(n) for n in ("psnr", "ssim")]
    classic = run.evaluate([run.bicubic_method(4)], [classic_dir], 4, metrics)
    for r in classic.records:
        for dataset in ("RealSR-Canon", "DRealSR"):
            ours = rows[(dataset, "bicubic", r["image"])]
            assert ours["psnr"] == pytest.approx(r["psnr"], abs=1e-9) and ours["ssim"] == pytest.approx(r["ssim"])
    # The tiny generator's outputs were measured at the HR's (cropped) size, and differ from bicubic.
    assert rows[("DRealSR", "tiny_x4", "bird")]["psnr"] != rows[("DRealSR", "bicubic", "bird")]["psnr"]
    assert any("never resized" in n for n in data["notes"])
    html = (out / "report.html").read_text()
    for column in ("LR", "bicubic", "tiny_x4", "HR"):
        assert html.count(f"crops/DRealSR_bird_{column}.png") == 1
    lr_crop = Image.open(out / "crops" / "DRealSR_bird_LR.png")
    assert lr_crop.size == Image.open(out / "crops" / "DRealSR_bird_HR.png").size


def test_bad_pairs_are_one_line_errors_and_the_rest_is_measured(shared_data, tmp_path, capsys):
    lr_dir, hr_dir = tmp_path / "LR", tmp_path / "HR"
    images = {p.stem: mod_crop(_rgb(p), 4) for p in list_images(shared_data("sr/Set5"))}
    for name in ("baby", "bird"):  # good pairs, BasicSR's naming
        _save(images[name], hr_dir / f"{name}.png")
        _save(bicubic_lr(images[name], 4), lr_dir / f"{name}x4.png")
    _save(bicubic_lr(images["butterfly"], 4), lr_dir / "butterflyx4.png")  # no HR partner
    _save(images["head"], hr_dir / "head.png")  # no LR partner
    _save(images["woman"], hr_dir / "woman.png")  # LR at half size: x4 cannot reach the HR's size
    _save(bicubic_lr(images["woman"], 2), lr_dir / "womanx4.png")
    (lr_dir / "brokenx4.png").write_bytes(b"not a png")  # unreadable
    _save(images["bird"], hr_dir / "broken.png")
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--lr",
            str(lr_dir),
            "--hr",
            str(hr_dir),
            "--method",
            "bicubic",
            "--scale",
            "4",
            "--metrics",
            "psnr",
            "--device",
            "cpu",
            "-o",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    errors = _errors(captured.err)
    assert len(errors) == 4, captured.err
    assert any("butterflyx4.png: no HR partner" in e for e in errors)
    assert any("head.png: no LR partner" in e for e in errors)
    size = next(e for e in errors if "womanx4.png" in e)
    w, h = images["woman"].shape[-1], images["woman"].shape[-2]
    assert f"is {w // 2}x{h // 2}, x4 gives {2 * w}x{2 * h}, but {hr_dir / 'woman.png'} is {w}x{h}" in size
    assert any("brokenx4.png" in e and "cannot read" in e for e in errors)
    with open(out / "per_image.csv") as f:
        measured = {r["image"]: float(r["psnr"]) for r in csv.DictReader(f)}
    assert set(measured) == {"baby", "bird"}
    assert (out / "table.md").read_text().count("\n- ERROR: ") == 4
    # An LR registered to the HR's size (RealSR v1/v2) is refused with the way out, which then works.
    reg_lr, reg_hr = tmp_path / "reg_LR", tmp_path / "reg_HR"
    _save(images["baby"], reg_hr / "baby_HR.png")
    _save(images["baby"], reg_lr / "baby_LR4.png")
    args = [
        "eval",
        "--lr",
        str(reg_lr),
        "--hr",
        str(reg_hr),
        "--method",
        "bicubic",
        "--scale",
        "4",
        "--metrics",
        "psnr",
        "--device",
        "cpu",
        "-o",
        str(tmp_path / "reg"),
    ]
    assert main(args) == 1 and "--shrink-lr" in _errors(capsys.readouterr().err)[0]
    assert main(args + ["--shrink-lr"]) == 0
    data = json.loads((tmp_path / "reg" / "results.json").read_text())
    assert data["per_image"][0]["psnr"] == pytest.approx(measured["baby"], abs=1e-9)


# ---------------------------------------------------------------- unpaired real photos


def _clive_crops(clive: Path, dest: Path, n: int = 3, size: int = 96) -> list[Path]:
    """Centre crops of the first ``n`` CLIVE photos (real camera images; crops keep the test fast)."""
    paths = []
    for path in sorted(list_images(clive))[:n]:
        img = _rgb(path)
        h, w = img.shape[-2:]
        y, x = (h - size) // 2, (w - size) // 2
        paths.append(_save(img[:, y : y + size, x : x + size], dest / f"{path.stem}.png"))
    return paths


def test_unpaired_photos_scored_with_no_reference_metrics(shared_data, tmp_path, generator, sfd_ckpt, capsys):
    photos = _clive_crops(shared_data("iqa/CLIVE/images"), tmp_path / "clive")
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--model",
            str(generator),
            "--lr",
            str(tmp_path / "clive"),
            "--metrics",
            "niqe,sfd-iqa,clipiqa",
            "--checkpoint",
            str(sfd_ckpt),
            "--save-sr",
            "--tile",
            "48",
            "--report",
            "--json",
            "--device",
            "cpu",
            "-o",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert data["scale"] == 4 and data["datasets"] == ["clive"] and len(data["per_image"]) == len(photos)
    for name in ("sfd-iqa", "clipiqa"):
        assert data["metrics"][name]["random_weights"] and "RANDOM CLIP" in data["metrics"][name]["warning"]
    assert any("real LR images without HR" in n for n in data["notes"])
    table = (out / "table.md").read_text()
    assert "SFD-IQA↑ (RANDOM CLIP)" in table and "CLIP-IQA↑ (RANDOM CLIP)" in table
    # The kept SR images are x4, and the registry's SFD-IQA scores them exactly as sfd eval did.
    metric = iqa.create_metric("sfd-iqa", checkpoint=sfd_ckpt, device="cpu")
    for record in data["per_image"]:
        sr_path = out / "sr" / "clive" / "tiny_x4" / f"{record['image']}.png"
        assert Image.open(sr_path).size == (384, 384)
        assert 0 <= record["sfd-iqa"] <= 1 and 0 <= record["clipiqa"] <= 1 and math.isfinite(record["niqe"])
        assert record["sfd-iqa"] == pytest.approx(float(metric(str(sr_path))[0]), abs=1e-5)
    html = (out / "report.html").read_text()
    stem = photos[0].stem
    assert f"crops/clive_{stem}_LR.png" in html and f"crops/clive_{stem}_tiny_x4.png" in html and "_HR.png" not in html
    # Reference metrics cannot run without HR: a usage error before any work.
    code = main(
        [
            "eval",
            "--model",
            str(generator),
            "--lr",
            str(tmp_path / "clive"),
            "--metrics",
            "psnr,niqe",
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "o2"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "psnr cannot be measured" in err and len(err.strip().splitlines()) == 1


def test_eval_scores_sr_folders_with_sfd_iqa_from_a_checkpoint(tmp_path, sfd_ckpt, capsys):
    g = torch.Generator().manual_seed(2)
    for i in range(2):
        _save(torch.rand(3, 64, 96, generator=g), tmp_path / "sr" / f"img{i}.png")
    code = main(
        [
            "eval",
            "--sr",
            str(tmp_path / "sr"),
            "--metrics",
            "sfd-iqa",
            "--checkpoint",
            str(sfd_ckpt),
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "out"),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    metric = registry.create_metric("sfd-iqa", checkpoint=sfd_ckpt, device="cpu")
    for record in data["per_image"]:
        assert record["sfd-iqa"] == pytest.approx(
            float(metric(str(tmp_path / "sr" / f"{record['image']}.png"))[0]), abs=1e-5
        )
    assert (
        main(
            [
                "eval",
                "--sr",
                str(tmp_path / "sr"),
                "--metrics",
                "sfd-iqa",
                "--device",
                "cpu",
                "-o",
                str(tmp_path / "out2"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("sfd eval: error: sfd-iqa needs --checkpoint CKPT") and len(err.strip().splitlines()) == 1
