"""The comparison command: `sfd eval --paper-table supp1` given three runs writes Supp. Table 1's layout with
best and second best marked, beside the published values, and a crop sheet of the same regions."""

import json
from pathlib import Path

import pytest
from helpers import BUNDLED_PHOTOS, bundled_photo_dir, tiny_config
from PIL import Image

from sfd.cli import main
from sfd.evaluate.paper import rank_marks
from sfd.evaluate.report import ZOOM_TO
from sfd.train import build_run, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rank_marks_by_hand():
    values = {"a": 1.0, "b": 2.0, "c": 2.0004, "d": 0.5, "e": None}
    assert rank_marks(values, lower_better=False, decimals=2) == {"b": "best", "c": "best", "a": "second"}
    assert rank_marks(values, lower_better=True, decimals=2) == {"d": "best", "a": "second"}
    assert rank_marks(values, lower_better=False, decimals=4) == {"c": "best", "b": "second"}
    assert rank_marks({"a": 1.0, "e": None}, lower_better=False, decimals=2) == {}


def _cells(text: str, *first: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[: len(first)] == list(first):
            return cells
    raise AssertionError(f"no row {first} in:\n{text}")


def test_three_runs_give_the_table_with_marks_and_a_crop_sheet(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_backbones"))
    import skimage

    root = tmp_path / "data" / "BSDS100"
    root.mkdir(parents=True)
    for photo in BUNDLED_PHOTOS[:2]:
        im = Image.open(Path(skimage.__file__).parent / "data" / photo).convert("RGB")
        im.crop((40, 40, 136, 136)).save(root / f"{Path(photo).stem}.png")
    photos = bundled_photo_dir(tmp_path / "photos", max_side=160)
    runs = {}
    for column, config, extra in (
        ("ldl", "ldl_rrdb_x4", ["image_d.input_size=64"]),
        ("sed_p", "sed_p_rrdb_x4", ["sed_d.num_feat=8", "sed_d.head_dim=8"]),
        ("dualformer", "dualformer_rrdb_x4", ["image_d.input_size=64", "spectral_d.depths=[1,1]"]),
    ):
        seed = f"train.seed={len(runs)}"  # three different generators
        run = build_run(tiny_config(photos, tmp_path / "runs", ["data.val=null", seed, *extra], path=config))
        save_checkpoint(run, tmp_path / "runs" / config / "checkpoints" / "iter_00000001.pth")
        runs[column] = tmp_path / "runs" / config  # a run folder: its newest checkpoint is read
    out = tmp_path / "out"
    args = ["eval", "--paper-table", "supp1", "--data-root", str(tmp_path / "data"), "--metrics", "psnr,ssim"]
    args += ["--model", *(f"{k}={v}" for k, v in runs.items()), "-o", str(out), "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    table = (out / "paper_table.md").read_text()
    saved = json.loads((out / "paper_table.json").read_text())
    header = _cells(table, "Benchmark")
    assert [h for h in header if h.endswith("(measured)")] == [
        "ldl (measured)",
        "sed_p (measured)",
        "dualformer (measured)",
    ]
    assert "**bold**: best" in table
    for metric, label, decimals in (("psnr", "PSNR↑", 2), ("ssim", "SSIM↑", 3)):
        row = dict(zip(header, _cells(table, "BSDS100", label)))
        values = {k: round(saved["ours"][k]["values"]["BSDS100"][metric], decimals) for k in runs}
        order = sorted(set(values.values()), reverse=True)
        for k, v in values.items():
            cell = row[f"{k} (measured)"]
            if v == order[0]:
                assert cell == f"**{v:.{decimals}f}**"
            elif v == order[1]:
                assert cell == f"_{v:.{decimals}f}_"
            else:
                assert cell == f"{v:.{decimals}f}"
        assert row["LDL"] == {"psnr": "25.97", "ssim": "0.682"}[metric]  # published, unmarked there
        assert saved["marks"]["BSDS100"][metric]["paper"]["swinir_sfd"] == "best"
    sheet = Image.open(out / "crop_sheet.png")
    cell = max(1, ZOOM_TO // 24) * 24  # 96 px images: 24 px crops, zoomed
    assert sheet.size == (170 + 5 * (cell + 4), 22 + 2 * (cell + 4))  # LR, three runs, HR; two images
    columns = [sheet.crop((170 + j * (cell + 4), 22, 170 + j * (cell + 4) + cell, 22 + cell)) for j in range(5)]
    assert all(c.getextrema() != ((255, 255),) * 3 for c in columns)  # every column holds a crop
    assert columns[1].tobytes() != columns[2].tobytes()  # two different systems, two different crops
