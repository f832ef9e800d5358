"""SFD-IQA, CLIP-IQA, NIQE wrappers, the correlation statistics, iqa-eval and the t-SNE analysis.

Everything runs with random CLIP weights (seeded), so scores carry no quality information; the
tests check the machinery: ranges, direction, determinism, batch independence, gradients, the
statistics against SciPy, the outputs of the commands, and that a Feat-D trained on an artifact
ranks an image with that artifact lower (supplement Fig. 9), while one trained the other way round
does not.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch
from helpers import bundled_photo_dir, tiny_config
from PIL import Image

import sfd.iqa as iqa
import sfd.metrics.clip_iqa as metrics_module
from sfd.cli import main
from sfd.config import config_to_dict, load_config
from sfd.data.io import list_images, load_rgb, save_png, to_tensor
from sfd.iqa.correlation import correlations, fit_logistic4, krcc, logistic4, plcc, srcc
from sfd.iqa.tsne import load_vgg_d
from sfd.losses import d_adversarial_loss
from sfd.metrics.clip_iqa import SFDIQA, ImageProtocol, _starts
from sfd.models.clip import CLIPWeightsError
from sfd.models.feat_d import FeatD
from sfd.train import build_run, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*RANDOM CLIP weights.*", "ignore:.*RANDOM weights.*"),
    pytest.mark.usefixtures("one_thread"),
]


# ---------------------------------------------------------------- shared fixtures


def corrupt(img: torch.Tensor, gen: torch.Generator, size: int) -> torch.Tensor:
    """A copy with a ``size``-pixel square of saturated random colours (the "mode collapse" of Fig. 4/9)."""
    out = img.clone()
    _, h, w = img.shape
    y = int(torch.randint(0, h - size, (1,), generator=gen))
    x = int(torch.randint(0, w - size, (1,), generator=gen))
    out[:, y : y + size, x : x + size] = (torch.rand(3, size, size, generator=gen) > 0.5).float()
    return out


def train_feat_d(fd: FeatD, opt: torch.optim.Optimizer, real: dict, fake: dict, steps: int) -> None:
    """Feat-D's discriminator step of training, on cached CLIP features: ``real`` -> 1, ``fake`` -> 0."""
    fd.train()
    for _ in range(steps):
        loss = d_adversarial_loss(fd(real), fd(fake), "vanilla")
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module", autouse=True)
def shared_clip(cached_load_clip):
    """Each random CLIP is built once per session (conftest): frozen, it can be shared by metrics.
    Yields the real ``load_clip`` for the test that checks a rebuild from scratch."""
    original = metrics_module.load_clip
    metrics_module.load_clip = cached_load_clip
    yield original
    metrics_module.load_clip = original


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A checkpoint whose Feat-D learned clean photo patches (real) vs the same with an artifact (fake)."""
    tmp = tmp_path_factory.mktemp("iqa")
    photos = bundled_photo_dir(tmp / "photos")
    cfg = tiny_config(photos, tmp / "runs", extra=["loss.perceptual=0", "optim.lr_d=0.002"])
    run = build_run(cfg)
    images = [to_tensor(load_rgb(p)) for p in list_images(photos)]
    gen = torch.Generator().manual_seed(0)
    patches = []
    for img in images[:4]:  # the 5th photo is held out for testing
        for _ in range(2):
            y = int(torch.randint(0, img.shape[1] - 64, (1,), generator=gen))
            x = int(torch.randint(0, img.shape[2] - 64, (1,), generator=gen))
            patches.append(img[:, y : y + 64, x : x + 64])
    clean = torch.stack(patches)
    broken = torch.stack([corrupt(p, gen, 12) for p in patches])
    with torch.no_grad():
        f_clean = run.clip_image(clean, ("m1", "m2", "m3"))
        f_broken = run.clip_image(broken, ("m1", "m2", "m3"))
    init = (
        copy.deepcopy(run.discriminators["feat_d"].state_dict()),
        copy.deepcopy(run.optimizers["feat_d"].state_dict()),
    )
    train_feat_d(run.discriminators["feat_d"], run.optimizers["feat_d"], f_clean, f_broken, steps=15)
    ckpt = save_checkpoint(run, tmp / "artifact.pth")
    held_out = images[4][:, 100:228, 200:328]  # 128 x 128
    return SimpleNamespace(
        tmp=tmp,
        photos=photos,
        run=run,
        ckpt=ckpt,
        init=init,
        f_clean=f_clean,
        f_broken=f_broken,
        clean=held_out,
        broken=corrupt(held_out, torch.Generator().manual_seed(5), 16),
    )


@pytest.fixture(scope="module")
def metric(artifact):
    return iqa.create_metric("sfd-iqa", checkpoint=artifact.ckpt, device="cpu")


def images(n: int, seed: int = 0, size=(96, 80)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=g)


# ---------------------------------------------------------------- the metric


def test_registry_and_conventions(metric):
    assert iqa.list_metrics("nr") == [
        "clipiqa",
        "dualformer-iqa",
        "niqe",
        "sfd-iqa",
    ]  # the no-reference part of sfd.metrics
    assert isinstance(metric, torch.nn.Module)
    assert metric.lower_better is False and metric.score_range == "0, 1"
    assert iqa.create_metric("niqe").lower_better is True
    with pytest.raises(ValueError, match="unknown metric"):
        iqa.create_metric("brisque")
    with pytest.raises(ValueError, match="needs checkpoint"):
        iqa.create_metric("SFD_IQA")


def test_range_direction_and_parts(metric):
    x = torch.cat([images(3), torch.zeros(1, 3, 96, 80), torch.ones(1, 3, 96, 80)])
    scores = metric(x)
    assert scores.shape == (5,) and not scores.requires_grad
    assert ((scores >= 0) & (scores <= 1)).all()
    parts = metric.components(x[:2])
    for p, s in zip(parts, scores[:2]):  # score = 0.9 S_feat + 0.1 S_text (docs/iqa.md)
        assert p["score"] == pytest.approx(0.9 * p["s_feat"] + 0.1 * p["s_text"], abs=1e-6)
        assert p["score"] == pytest.approx(float(s), abs=1e-6)
    with pytest.raises(ValueError, match="0-255"):
        metric(x * 255)


def test_deterministic_and_batch_independent(metric, artifact, shared_clip, monkeypatch):
    x = images(2, seed=1)
    batch = metric(x)
    assert torch.equal(batch, torch.cat([metric(x[:1]), metric(x[1:])]))
    other = torch.cat([x[:1], images(1, seed=2)])  # same first image, another companion
    assert torch.equal(metric(other)[0], batch[0])
    monkeypatch.setattr(metrics_module, "load_clip", shared_clip)  # CLIP too rebuilt from the checkpoint's record
    again = iqa.create_metric("sfd-iqa", checkpoint=artifact.ckpt, device="cpu")
    assert again.clip.visual is not metric.clip.visual
    assert torch.equal(again(x), batch)


def test_path_inputs_match_tensors(metric, tmp_path):
    x = images(2, seed=3)
    paths = []
    for i, img in enumerate(x):
        save_png(img, tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    quantised = torch.stack([to_tensor(load_rgb(p)) for p in paths])
    assert torch.equal(metric([str(p) for p in paths]), metric(quantised))
    assert torch.equal(metric(paths[0]), metric(quantised[:1]))


def test_as_loss_is_differentiable_and_lower_is_better(artifact, metric):
    loss_fn = iqa.create_metric("sfd-iqa", checkpoint=artifact.ckpt, device="cpu", as_loss=True)
    x = images(2, seed=4).requires_grad_()
    loss = loss_fn(x)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(1 - metric(x.detach()).mean().item(), abs=1e-6)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.parameters())  # nothing but the input learns
    with torch.no_grad():  # a small step down the gradient lowers the loss (and raises the score)
        step = x - 1e-3 * x.grad / x.grad.abs().max()
    assert loss_fn(step).item() < loss.item()


def test_image_protocol():
    assert _starts(100, 256) == [0]
    assert _starts(512, 256) == [0, 256]
    starts = _starts(600, 256)
    assert starts[0] == 0 and starts[-1] == 600 - 256 and len(starts) == 3
    proto = ImageProtocol()
    img = torch.rand(3, 100, 70)
    ((view, valid),) = proto.views(img)
    assert view.shape == (1, 3, 128, 96) and valid == (100, 70)
    assert torch.equal(view[0, :, :100, :70], img)  # padded at the bottom/right only
    assert torch.equal(view[0, :, 100:, :70], img.flip(1)[:, 1:29])  # reflection
    ((view, valid),) = ImageProtocol(pad="crop").views(torch.rand(3, 100, 70))
    assert view.shape == (1, 3, 96, 64) and valid == (96, 64)
    grid = proto.views(torch.rand(3, 1100, 600))  # a side > max_side: a grid of 256 crops
    assert len(grid) == 5 * 3 and all(v.shape == (1, 3, 256, 256) for v, _ in grid)
    assert len(ImageProtocol(mode="grid").views(torch.rand(3, 300, 300))) == 4
    with pytest.raises(ValueError, match="multiple of 32"):
        ImageProtocol(crop=100)


def load_checkpoint(path):
    return torch.load(path, weights_only=True)


def test_checkpoint_parts_and_clip_weights(artifact):
    ckpt = load_checkpoint(artifact.ckpt)
    no_text = copy.deepcopy(ckpt)
    del no_text["discriminators"]["lpp" if "lpp" in no_text["discriminators"] else "tg_d"]
    with pytest.warns(UserWarning, match="no TG-D"):
        m = SFDIQA(no_text, device="cpu")
    assert m.alphas == {"feat": 1.0, "text": 0.0}
    assert set(m.components(images(1))[0]) == {"score", "s_feat"}

    none = copy.deepcopy(ckpt)
    none["discriminators"] = {"image_d": {}}
    with pytest.raises(ValueError, match="neither a Feat-D nor TG-D"):
        SFDIQA(none)

    missing = copy.deepcopy(ckpt)
    missing["meta"]["clip"]["weights"] = "file:/nonexistent/RN50.pt sha256:0123456789abcdef"
    with pytest.raises(CLIPWeightsError, match="needs those same weights"):
        SFDIQA(missing)


def test_fig9_trained_feat_d_ranks_the_artifact_lower(artifact, metric):
    """Supplement Fig. 9: after Feat-D learned the artifact, the corrupted copy scores lower."""
    clean, broken = metric.components(torch.stack([artifact.clean, artifact.broken]))
    assert broken["s_feat"] < clean["s_feat"]
    assert broken["score"] < clean["score"]

    # Control: the same training from the same start with the labels swapped reverses the ranking.
    cfg, (fd_state, opt_state) = artifact.run.cfg, artifact.init
    fd = FeatD(widths=cfg.feat_d.widths)
    fd.load_state_dict(fd_state)
    opt = torch.optim.Adam(fd.parameters())
    opt.load_state_dict(opt_state)
    train_feat_d(fd, opt, artifact.f_broken, artifact.f_clean, steps=15)
    trained = {k: v.clone() for k, v in metric.feat_d.state_dict().items()}
    try:
        metric.feat_d.load_state_dict(fd.state_dict())
        clean, broken = metric.components(torch.stack([artifact.clean, artifact.broken]))
    finally:
        metric.feat_d.load_state_dict(trained)
    assert broken["s_feat"] > clean["s_feat"]


def test_fig9_cli_shows_both_metrics(artifact, tmp_path, capsys):
    save_png(artifact.clean, tmp_path / "gt.png")
    save_png(artifact.broken, tmp_path / "collapse.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    out_csv = tmp_path / "scores.csv"
    rc = main(
        [
            "iqa",
            str(tmp_path),
            "--checkpoint",
            str(artifact.ckpt),
            "--metric",
            "sfd-iqa,clipiqa",
            "--json",
            "--csv",
            str(out_csv),
            "--no-progress",
        ]
    )
    assert rc == 1  # the others are scored, but a file failed (issue 11)
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "broken.png" in captured.err and "RANDOM CLIP" in captured.err
    rows = {Path(r["image"]).name: r for r in report["images"]}
    assert set(rows) == {"gt.png", "collapse.png"}
    assert rows["collapse.png"]["sfd-iqa"]["score"] < rows["gt.png"]["sfd-iqa"]["score"]
    assert 0 <= rows["gt.png"]["clipiqa"]["score"] <= 1
    assert report["metrics"]["clipiqa"]["clip"]["weights"] == "random(seed=0)"  # the checkpoint's CLIP
    assert report["mean"]["sfd-iqa"] == pytest.approx(np.mean([r["sfd-iqa"]["score"] for r in rows.values()]))
    assert len(list(csv.reader(out_csv.open()))) == 3


def test_quality_map_is_the_map_the_score_averages(artifact, metric):
    """docs/iqa.md: S_feat is the mean of the map (sides even, crops not overlapping), score = a1 S_feat + a2 S_text."""
    img = artifact.clean[:, :96, :128]
    parts, qmap = metric.quality_map(img)
    assert qmap.shape == img.shape[-2:] and qmap.dtype == torch.float32
    assert parts == pytest.approx(metric.components(img)[0], abs=1e-7)  # the very pass of the score
    assert float(qmap.double().mean()) == pytest.approx(parts["s_feat"], abs=1e-6)
    a = metric.alphas
    assert parts["score"] == pytest.approx(a["feat"] * float(qmap.double().mean()) + a["text"] * parts["s_text"])
    grid = ImageProtocol(mode="grid", crop=64)  # four crops that do not overlap
    saved, metric.protocol = metric.protocol, grid
    try:
        parts, qmap = metric.quality_map(artifact.clean)
    finally:
        metric.protocol = saved
    assert float(qmap.double().mean()) == pytest.approx(parts["s_feat"], abs=1e-6)
    odd = artifact.clean[:, :95, :97]  # odd sides: the last row/column of Feat-D's H/2 map covers one pixel
    parts, qmap = metric.quality_map(odd)
    assert qmap.shape == (95, 97) and float(qmap.mean()) == pytest.approx(parts["s_feat"], abs=0.01)


def test_quality_map_shows_where_the_image_was_damaged(artifact, metric):
    """A patch of the artifact Feat-D learned changes the map inside the patch more than outside it."""
    gen = torch.Generator().manual_seed(3)
    for y, x in ((16, 24), (80, 72)):
        broken = artifact.clean.clone()
        broken[:, y : y + 16, x : x + 16] = (torch.rand(3, 16, 16, generator=gen) > 0.5).float()
        change = (metric.quality_map(broken)[1] - metric.quality_map(artifact.clean)[1]).abs()
        inside = torch.zeros_like(change, dtype=torch.bool)
        inside[y : y + 16, x : x + 16] = True
        assert float(change[inside].mean()) > 10 * float(change[~inside].mean()), (y, x)


def test_iqa_map_cli(artifact, tmp_path, capsys):
    save_png(artifact.clean, tmp_path / "in" / "gt.png")
    broken = artifact.clean.clone()
    broken[:, 40:56, 40:56] = 1.0
    save_png(broken, tmp_path / "in" / "bad.png")
    base = ["iqa", str(tmp_path / "in"), "--checkpoint", str(artifact.ckpt), "--json", "--no-progress"]
    assert main([*base, "--map", str(tmp_path / "maps")]) == 0
    report = json.loads(capsys.readouterr().out)
    for row in report["images"]:
        stem = Path(row["image"]).stem
        qmap = np.load(tmp_path / "maps" / f"{stem}_map.npy")
        assert qmap.shape == (128, 128) and float(qmap.mean()) == pytest.approx(row["sfd-iqa"]["s_feat"], abs=1e-6)
        overlay = Image.open(tmp_path / "maps" / f"{stem}_overlay.png")
        assert overlay.size == (128, 128)
        assert Image.open(tmp_path / "maps" / f"{stem}_map.png").width > 128  # the figure with its legend
        assert report["maps"][row["image"]][0].endswith(f"{stem}_map.png")
    assert main([*base, "--map", str(tmp_path / "maps")]) == 2  # never replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*base, "--metric", "niqe", "--map", str(tmp_path / "m2")]) == 2
    assert "add sfd-iqa" in capsys.readouterr().err


def test_clipiqa_prompts():
    m = iqa.create_metric(
        "clipiqa",
        weights="random",
        device="cpu",
        prompts=[("Sharp photo.", "Blurry photo."), ("Good photo.", "Bad photo.")],
    )
    assert m.text_feats.shape[:2] == (2, 2)
    s = m(images(2))
    assert s.shape == (2,) and ((s > 0) & (s < 1)).all()
    with pytest.raises(ValueError, match="pairs"):
        iqa.create_metric("clipiqa", weights="random", prompts=[("only one",)])


# ---------------------------------------------------------------- correlation statistics

X = np.array([3.1, 2.0, 5.5, 5.5, 1.2, 8.9, 7.7, 2.0, 6.4, 4.4, 9.9, 0.3])
Y = np.array([40.0, 35.5, 61.0, 58.2, 20.1, 88.8, 70.0, 35.5, 72.3, 50.0, 80.0, 10.0])


@pytest.mark.parametrize("x, y", [(X, Y), (X, -Y[::-1]), (np.round(X), np.round(Y, -1))])
def test_correlations_match_scipy(x, y):
    assert srcc(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    assert krcc(x, y) == pytest.approx(scipy.stats.kendalltau(x, y)[0], abs=1e-12)  # tau-b, with ties
    assert krcc(x, y, chunk=5) == pytest.approx(krcc(x, y), abs=1e-12)
    assert plcc(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)


def test_logistic_fit_recovers_a_monotone_relation():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 4, 300)
    true = (90.0, 10.0, 1.0, 0.6)
    y = logistic4(x, *true) + rng.normal(0, 1.0, x.size)
    fit = fit_logistic4(x, y)
    assert fit.converged
    assert np.allclose(fit.params[:3], true[:3], atol=1.0) and abs(fit.params[3]) == pytest.approx(0.6, abs=0.1)
    stats = correlations(x, y)
    assert stats["plcc_fit"] > stats["plcc"] and stats["plcc_fit"] > 0.99
    down = fit_logistic4(-x, y)  # a decreasing relation (like NIQE's) is fitted as well
    assert down.converged and plcc(down(-x), y) == pytest.approx(stats["plcc_fit"], abs=1e-6)
    flat = fit_logistic4(np.ones(10), np.arange(10.0))
    assert not flat.converged


# ---------------------------------------------------------------- iqa-eval and t-SNE


def make_iqa_folder(tmp: Path, photos: Path, n: int = 8) -> tuple[Path, Path, dict]:
    """Blurred crops of the bundled photos, upper-case .JPG names, and a CSV with custom columns."""
    from PIL import ImageFilter

    folder = tmp / "dataset"
    folder.mkdir()
    sources = [load_rgb(p) for p in list_images(photos)]
    mos = {}
    for i in range(n):
        radius = (i % 4) * 1.5
        im = sources[i % len(sources)].crop((10 * i, 10, 10 * i + 192, 138)).filter(ImageFilter.GaussianBlur(radius))
        name = f"img{i:02d}.JPG"
        im.save(folder / name, quality=90)
        mos[name] = 80.0 - 12 * radius + i % 3  # a made-up opinion score, for the test only
    (folder / "corrupt.JPG").write_bytes(b"\xff\xd8 truncated")
    csv_path = tmp / "scores.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "score", "std"])
        for name, value in mos.items():
            w.writerow([name.lower().replace(".jpg", ".JPG"), value, 1.0])
        w.writerow(["corrupt.JPG", 50.0, 1.0])
        w.writerow(["not_there.JPG", 50.0, 1.0])
    return folder, csv_path, mos


def test_iqa_eval_small_folder(artifact, tmp_path, capsys):
    folder, csv_path, mos = make_iqa_folder(tmp_path, artifact.photos)
    out = tmp_path / "eval"
    with pytest.warns(UserWarning, match="not in"):
        rc = main(
            [
                "iqa-eval",
                "--images",
                str(folder),
                "--mos",
                str(csv_path),
                "--metrics",
                "sfd-iqa,clipiqa,niqe",
                "--checkpoint",
                str(artifact.ckpt),
                "--image-col",
                "filename",
                "--mos-col",
                "score",
                "-o",
                str(out),
                "--no-progress",
            ]
        )
    assert rc == 1  # the table is written, but one image was missing and one unreadable (issue 11)
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "corrupt.JPG" in captured.err
    assert "1 images of the MOS file not found" in captured.err
    table = captured.out.strip()
    assert table == (out / "table.md").read_text().strip()
    report = json.loads((out / "results.json").read_text())
    assert report["images_missing"] == ["not_there.JPG"]
    for name in ("sfd-iqa", "clipiqa", "niqe"):
        m = report["metrics"][name]
        assert m["n"] == len(mos) and list(m["failed"]) == ["corrupt.JPG"]
        assert f"| {name}" in table
        assert (out / f"scatter_{name}.png").stat().st_size > 1000
        Image.open(out / f"scatter_{name}.png").verify()
        # The table's numbers are those of the written per-image scores.
        with open(out / f"scores_{name}.csv") as f:
            rows = list(csv.DictReader(f))
        s = np.array([float(r[name]) for r in rows])
        y = np.array([mos[r["image"]] for r in rows])
        sign = -1 if name == "niqe" else 1
        assert m["srcc"] == pytest.approx(scipy.stats.spearmanr(sign * s, y)[0], abs=1e-4)
        assert m["plcc"] == pytest.approx(scipy.stats.pearsonr(sign * s, y)[0], abs=1e-4)
    assert "RANDOM" in table and "random(seed=0)" in table


def test_iqa_eval_on_clive(artifact, shared_data, tmp_path, capsys):
    clive = shared_data("iqa/CLIVE")
    rc = main(
        [
            "iqa-eval",
            "--images",
            str(clive / "images"),
            "--mos",
            str(clive / "mos.csv"),
            "--metrics",
            "niqe,sfd-iqa",
            "--checkpoint",
            str(artifact.ckpt),
            "--limit",
            "4",
            "-o",
            str(tmp_path),
            "--json",
            "--no-progress",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "CLIVE" and not report["images_missing"]
    assert report["metrics"]["niqe"]["n"] == 4 and report["metrics"]["sfd-iqa"]["n"] == 4


def test_tsne_outputs(artifact, tmp_path, capsys):
    folder, csv_path, mos = make_iqa_folder(tmp_path, artifact.photos, n=20)
    out = tmp_path / "tsne"
    tsne = ["tsne", "--images", str(folder), "--mos", str(csv_path), "--image-col", "filename"]
    tsne += ["--mos-col", "score", "--checkpoint", str(artifact.ckpt), "-o", str(out)]
    small = ["--per-bin", "3", "--crop", "64", "--no-progress"]
    rc = main(tsne + small)
    report = json.loads((out / "tsne.json").read_text())
    Image.open(out / "tsne.png").verify()
    counts = [b["images"] for b in report["bins"]]
    assert len(counts) == 5 and sum(counts) == len(report["images"]) and max(counts) <= 3
    assert [b["range"] for b in report["bins"]] == [[0, 20], [20, 40], [40, 60], [60, 80], [80, 100]]
    assert report["binning"]["mode"] == "fixed" and not report["binning"]["rescaled_to_0_100"]
    for key in ("vgg_d", "clip", "feat_d"):
        p = report["panels"][key]
        assert -1 <= p["silhouette_tsne"] <= 1 and 0 <= p["knn_accuracy_tsne"] <= 1
    assert "RANDOM" in report["panels"]["vgg_d"]["source"] and "RANDOM" in report["note"]
    assert list(report["images_unreadable"]) == ["corrupt.JPG"] or "corrupt.JPG" not in report["images"]
    captured = capsys.readouterr()
    assert "feat_d" in captured.out and "fixed bins on a 0-100 scale" in captured.err
    assert rc == 1 and "sfd tsne: 1 images of the MOS file not found" in captured.err  # not_there.JPG

    # the data-range bins stay available; a scale the data does not fit is one clear error
    rc = main(tsne + small + ["--overwrite", "--bins-from", "data"])  # the first tsne.png is replaced
    assert rc == 1  # not_there.JPG is still missing
    report = json.loads((out / "tsne.json").read_text())
    assert report["bins"][0]["range"][0] == min(mos.values()) and report["bins"][-1]["range"][1] == max(mos.values())
    assert report["binning"]["mode"] == "data"
    capsys.readouterr()
    rc = main(tsne + ["--overwrite", "--mos-range", "1,5"])
    assert rc != 0 and "outside the MOS range 1,5" in capsys.readouterr().err


def test_mos_bins_are_the_supplements_on_a_0_100_scale():
    from sfd.iqa.tsne import bin_by_mos

    mos = {"a": 0.0, "b": 19.9, "c": 20.0, "d": 55.0, "e": 80.0, "f": 100.0}
    bins, edges = bin_by_mos(mos)
    assert edges.tolist() == [0, 20, 40, 60, 80, 100]
    assert bins == {"a": 0, "b": 0, "c": 1, "d": 2, "e": 4, "f": 4}
    # KonIQ's raw MOS is on 1-5: rescaled to 0-100 first, so 1.8 -> 20 (second bin), 5 -> 100
    bins, _ = bin_by_mos({"x": 1.0, "y": 1.8, "z": 5.0}, mos_range=(1.0, 5.0))
    assert bins == {"x": 0, "y": 1, "z": 4}
    # data-range bins: five equal bins between 30 and 80
    bins, edges = bin_by_mos({"p": 30.0, "q": 41.0, "r": 80.0}, from_data=True)
    assert edges.tolist() == [30, 40, 50, 60, 70, 80] and bins == {"p": 0, "q": 1, "r": 4}
    with pytest.raises(ValueError, match="outside the MOS range"):
        bin_by_mos({"a": 3.0, "b": 70.0}, mos_range=(1.0, 5.0))


def test_vgg_d_from_an_lgan_checkpoint(artifact, tmp_path):
    lgan = ["feat_d.enabled=false", "tg_d.enabled=false", "image_d.type=vgg", "image_d.input_size=64"]
    cfg = tiny_config(artifact.photos, tmp_path, extra=lgan + ["loss.perceptual=0"])
    run = build_run(cfg)
    path = save_checkpoint(run, tmp_path / "lgan.pth")
    d, source = load_vgg_d(path, input_size=256)
    assert source.startswith("trained") and d.input_size == 64  # the checkpoint's size, not the crop
    for k, v in run.discriminators["image_d"].state_dict().items():
        assert torch.equal(d.state_dict()[k], v)
    assert "RANDOM" in load_vgg_d(None, 128)[1]
    with pytest.raises(ValueError, match="no VGG-style discriminator"):
        load_vgg_d(artifact.ckpt, 128)


def test_features_figure(artifact, tmp_path, capsys):
    other = copy.deepcopy(load_checkpoint(artifact.ckpt))
    other["generator_ema"] = {k: v + 0.01 for k, v in other["generator_ema"].items()}
    torch.save(other, tmp_path / "other.pth")
    src = list_images(artifact.photos)[0]
    rc = main(
        [
            "features",
            str(artifact.ckpt),
            str(tmp_path / "other.pth"),
            "--image",
            str(src),
            "--crop",
            "32",
            "--labels",
            "A,B",
            "-o",
            str(tmp_path / "f.png"),
        ]
    )
    assert rc == 0
    Image.open(tmp_path / "f.png").verify()
    assert "model.1.sub.1, model.8" in capsys.readouterr().out


# ---------------------------------------------------------------- the IQA training config


def test_iqa_config_is_the_supplement_recipe_and_reads_no_mos():
    cfg = load_config(REPO / "configs" / "iqa.yml")
    assert (cfg.tg_d.n_pairs, cfg.tg_d.length, cfg.data.patch_size) == (1, 64, 256)
    assert (cfg.loss.l1, cfg.loss.perceptual, cfg.loss.feat_d, cfg.loss.tg_d) == (1.0, 1.0, 0.1, 0.005)
    assert cfg.feat_d.enabled and cfg.data.degradation is not None
    # Opinion-unaware: no field of the training config names an opinion-score file.
    text = json.dumps(config_to_dict(cfg)).lower()
    assert "mos" not in text and ".csv" not in text
