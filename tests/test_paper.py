"""``sfd eval --paper-table``: the supplement's tables, and datasets by name under a data root."""

import json
import re
from pathlib import Path

import pytest
import torch
from eval_helpers import sfd_checkpoint, tiny_rrdbnet
from helpers import BUNDLED_PHOTOS
from PIL import Image

from sfd.cli import main
from sfd.evaluate.datasets import DatasetNotFound, resolve_dataset
from sfd.evaluate.paper import load_paper_table, parse_method

pytestmark = pytest.mark.usefixtures("one_thread")

DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"


@pytest.fixture
def no_backbones(tmp_path, monkeypatch):
    """LPIPS/DISTS cannot find ImageNet backbones, whatever this machine's caches hold."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.delenv("SFD_ALEXNET_WEIGHTS", raising=False)
    monkeypatch.delenv("SFD_VGG16_WEIGHTS", raising=False)


def _cells(stdout: str, *first: str) -> list[str]:
    """The cells of the markdown row whose first cells are ``first``."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[: len(first)] == list(first):
            return cells
    raise AssertionError(f"no row {first} in:\n{stdout}")


def _photo_root(root: Path, name: str, n: int = 2, size: int = 96) -> Path:
    import skimage

    folder = root / name
    folder.mkdir(parents=True)
    for photo in BUNDLED_PHOTOS[:n]:
        Image.open(Path(skimage.__file__).parent / "data" / photo).convert("RGB").crop((0, 0, size, size)).save(
            folder / f"{Path(photo).stem}.png"
        )
    return folder


def test_supp1_bicubic_on_b100_beside_the_papers_columns(shared_data, no_backbones, tmp_path, capsys):
    root = shared_data("sr")
    code = main(
        ["eval", "--paper-table", "supp1", "--method", "bicubic", "--data-root", str(root), "-o", str(tmp_path / "out")]
    )
    out = capsys.readouterr().out
    assert code == 0
    header = _cells(out, "Benchmark")
    assert header[2:] == [
        "ESRGAN",
        "LDL",
        "DualFormer",
        "SeD-P",
        "RRDB + Ours",
        "SwinIR + L_GAN",
        "SwinIR + Ours",
        "bicubic (measured)",
    ]
    # published numbers (supplement Table 1), then bicubic measured here (reference: 25.96 dB / 0.6674)
    # (best bold, second italic, among the paper's columns; one measured system alone gets no mark)
    psnr = ["25.33", "25.97", "26.59", "26.38", "_26.90_", "25.58", "**27.06**"]
    ssim = ["0.653", "0.682", "0.696", "0.692", "_0.710_", "0.676", "**0.717**"]
    assert _cells(out, "BSDS100", "PSNR↑")[2:] == psnr + ["25.96"]
    assert _cells(out, "BSDS100", "SSIM↑")[2:] == ssim + ["0.667"]
    assert _cells(out, "BSDS100", "LPIPS↓")[-1] == "n/a" and _cells(out, "BSDS100", "DISTS↓")[-1] == "n/a"
    assert _cells(out, "Manga109")[1] == f"not found under {root}"
    assert "LPIPS: n/a here: ImageNet alexnet weights not found" in out
    # The convention (our choice: the supplement states none) is printed with the table, before its rows.
    convention = (
        "_convention [our choice; the supplement states none]: PSNR/SSIM on BT.601 Y rounded like MATLAB, "
        "4 px border shaved; LPIPS-alex (the lpips package's default) and DISTS on whole RGB images; "
        "EMA weights of sfd checkpoints; Δ = ours − paper_"
    )
    assert convention in out.splitlines() and out.index(convention) < out.index("| Benchmark")
    saved = json.loads((tmp_path / "out" / "paper_table.json").read_text())
    assert saved["convention"] == convention[1 : -len("; Δ = ours − paper_")]
    assert saved["ours"]["bicubic"]["values"]["BSDS100"]["psnr"] == pytest.approx(25.96, abs=0.005)
    assert "not_found" in saved["datasets"]["Manga109"] and saved["metrics"]["dists"]["available"] is False


def test_published_numbers_are_design_mds():
    if not DESIGN.is_file():
        pytest.skip(f"{DESIGN} is absent")
    text = DESIGN.read_text()
    t1 = load_paper_table("supp1")
    for dataset in t1.datasets:
        row = re.search(rf"^\| {dataset} \| (.+) \|$", text, re.M).group(1)
        columns = [[float(v) for v in cell.strip().split("/")] for cell in row.split("|")]
        for i, metric in enumerate(t1.metrics):
            assert t1.values[dataset][metric] == [c[i] for c in columns], (dataset, metric)
    t2 = load_paper_table("supp2")
    for key, label in (("rn50", "RN50"), ("vit_b16", "ViT-B/16")):
        for dataset in t2.datasets:
            found = re.search(rf"{re.escape(label)} (?:Set5 [\d./]+, )?{dataset} ([\d.]+)/([\d.]+)/([\d.]+)", text)
            assert [t2.published(key, dataset, m) for m in t2.metrics] == [float(v) for v in found.groups()]


def test_a_model_named_after_a_paper_column_gets_its_difference(no_backbones, tmp_path, capsys):
    root = tmp_path / "data"
    _photo_root(root, "set5")  # any letter case
    model = tmp_path / "g.pth"
    torch.save(tiny_rrdbnet(4).state_dict(), model)
    code = main(
        [
            "eval",
            "--paper-table",
            "supp2",
            "--model",
            f"rn50={model}",
            str(model),
            "--data-root",
            str(root),
            "--json",
            "--report",
            "-o",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    ours = data["ours"]["rn50"]
    assert ours["paper_column"] == "RN50"
    assert ours["difference"]["Set5"]["psnr"] == pytest.approx(ours["values"]["Set5"]["psnr"] - 31.63)
    assert ours["difference"]["Set5"]["lpips"] is None and data["metrics"]["lpips"]["available"] is False
    assert data["ours"]["g"]["paper_column"] is None and data["ours"]["g"]["difference"] is None
    assert "not_found" in data["datasets"]["DIV2K100"] and len(data["per_image"]) == 4
    table = (tmp_path / "out" / "paper_table.md").read_text()
    assert _cells(table, "Δ rn50 − RN50")[1] == f"{ours['values']['Set5']['psnr'] - 31.63:+.2f}"
    assert _cells(table, "rn50 (measured)")[4:] == ["not found"] * 3
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Supplement Table 2" in report and report.count("crops/Set5_") == 2 * 4  # LR, HR and two methods, 2 images


def test_eval_measures_the_ema_unless_no_ema_and_the_paper_table_says_which(no_backbones, tmp_path, capsys):
    root = tmp_path / "data"
    _photo_root(root, "Set5", n=1, size=64)
    ckpt = tmp_path / "c.pth"
    torch.save(sfd_checkpoint(tiny_rrdbnet(4, seed=0), tiny_rrdbnet(4, seed=1), "rrdbnet", 4), ckpt)
    runs = {}
    for flags in ([], ["--no-ema"]):
        common = ["--model", f"rn50={ckpt}", "--data-root", str(root), "--device", "cpu", "--json", *flags]
        assert main(["eval", "--paper-table", "supp2", "--metrics", "psnr", *common, "-o", str(tmp_path / "p")]) == 0
        paper = json.loads(capsys.readouterr().out)
        assert main(["eval", "--dataset", str(root / "Set5"), "--scale", "4", "--metrics", "psnr", "--model", str(ckpt)]
                    + common[4:] + ["-o", str(tmp_path / "e")]) == 0  # fmt: skip
        runs[bool(flags)] = (paper, json.loads(capsys.readouterr().out))
    (paper_ema, eval_ema), (paper_raw, eval_raw) = runs[False], runs[True]
    assert "(sfd checkpoint, generator_ema, iteration 1234)" in eval_ema["methods"]["c"]
    assert "(sfd checkpoint, generator, iteration 1234)" in eval_raw["methods"]["c"]
    ema, raw = (r["means"]["Set5"]["c"]["psnr"] for r in (eval_ema, eval_raw))
    assert ema != raw  # two different generators were measured
    assert paper_ema["ours"]["rn50"]["values"]["Set5"]["psnr"] == pytest.approx(ema)
    assert paper_raw["ours"]["rn50"]["values"]["Set5"]["psnr"] == pytest.approx(raw)
    assert "EMA weights" in paper_ema["convention"] and "raw (non-EMA) weights" in paper_raw["convention"]


def test_paper_table_usage_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SFD_DATA", raising=False)
    for args, expect in (
        (["--method", "bicubic"], "needs --data-root"),
        (["--method", "bicubic", "--data-root", str(tmp_path), "--backbone-weights", "random"], "random backbones"),
        (["--method", "bicubic", "--data-root", str(tmp_path), "--dataset", "Set5"], "drop --sr/--hr/--dataset"),
        (["--data-root", str(tmp_path)], "at least one --model"),
        (["--method", "bicubic", "--data-root", str(tmp_path), "--scale", "2"], "is x4"),
    ):
        assert main(["eval", "--paper-table", "supp1", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sfd eval: error: ") and expect in err and err.count("\n") == 1, err
    # nothing found: the table is still printed, the exit code says nothing was measured
    assert (
        main(
            [
                "eval",
                "--paper-table",
                "supp1",
                "--method",
                "bicubic",
                "--data-root",
                str(tmp_path),
                "-o",
                str(tmp_path / "out"),
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert "| BSDS100 | not found under" in captured.out and "error: none of BSDS100, Manga109" in captured.err


def test_parse_method():
    table = load_paper_table("supp1")
    assert parse_method("rrdb_sfd=runs/x/iter.pth", table).column == "rrdb_sfd"
    m = parse_method("runs/a=b/iter_1.pth", table)  # a path holding "=" is a path
    assert (m.name, m.spec, m.column) == ("iter_1", "runs/a=b/iter_1.pth", None)
    assert parse_method("mine=G.pth", table).column is None


def test_datasets_by_name_under_a_data_root(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    _photo_root(root / "B100", "HR", n=1)  # HR/ subfolder layout, BSDS100 found under its alias B100
    _photo_root(root / "DIV2K", "DIV2K_valid_HR", n=1)
    _photo_root(root, "Set5", n=2, size=64)
    assert resolve_dataset("BSDS100", root) == root / "B100" / "HR"
    assert resolve_dataset("b100", root) == root / "B100" / "HR"
    assert resolve_dataset("DIV2K100", root) == root / "DIV2K" / "DIV2K_valid_HR"
    monkeypatch.setenv("SFD_DATA", str(root))
    assert resolve_dataset("Set5") == root / "Set5"
    with pytest.raises(DatasetNotFound, match=r"Manga109 not found under .*expected its HR images in .*Manga109/"):
        resolve_dataset("Manga109", root)
    with pytest.raises(DatasetNotFound, match="unknown dataset 'Set6'"):
        resolve_dataset("Set6", root)

    # sfd eval --dataset takes names (through --data-root or $SFD_DATA) as well as folders
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "--dataset",
                "Set5",
                str(root / "B100" / "HR"),
                "--method",
                "bicubic",
                "--scale",
                "4",
                "--metrics",
                "psnr",
                "--data-root",
                str(root),
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert set(data["means"]) == {"Set5", "HR"} and len(data["per_image"]) == 3
    assert main(["eval", "--dataset", "Urban100", "--method", "bicubic", "--scale", "4", "-o", str(out)]) == 1
    assert "Urban100 not found under" in capsys.readouterr().err
