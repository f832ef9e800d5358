"""Bad input for every command (docs/reliability.md): one line per bad file naming it and why, the
rest goes on, a summary, a non-zero exit status, never a traceback."""

import io

import numpy as np
import pytest
import torch
from eval_helpers import tiny_rrdbnet
from helpers import bundled_photo_dir, tiny_config
from PIL import Image

from sfd.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _photo(size=(200, 160), seed=0) -> Image.Image:
    """A smooth random image (NIQE needs some structure, not white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def _encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


BAD = {  # name -> the words its error line must hold
    "empty.png": "empty file (0 bytes)",
    "cut.png": "truncated or corrupt",
    "cutj.JPEG": "truncated or corrupt",
    "garbage.png": "not an image",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    good = root / "mixed"
    good.mkdir()
    _photo().save(good / "good.png")
    _photo(seed=1).save(good / "фото ümlaut.PNG")  # non-ASCII name, upper-case extension
    (good / "empty.png").write_bytes(b"")
    (good / "cut.png").write_bytes(_encoded(_photo(), "PNG")[:500])
    (good / "cutj.JPEG").write_bytes(_encoded(_photo(), "JPEG")[:400])
    flipped = bytearray(_encoded(_photo(), "PNG"))
    flipped[8:40] = b"\0" * 32  # IHDR destroyed
    (good / "garbage.png").write_bytes(bytes(flipped))
    (good / "notes.txt").write_text("not an image, not listed")  # other files are ignored
    (root / "no_images").mkdir()
    (root / "no_images" / "readme.md").write_text("x")
    torch.save(tiny_rrdbnet(scale=2, num_filters=8).state_dict(), root / "g_x2.pth")
    (root / "junk.pth").write_bytes(b"PK\x03\x04 not a zip")
    return root


def _run(capsys, args):
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def _assert_each_bad_named(err, folder):
    for name, why in BAD.items():
        lines = [line for line in err.splitlines() if str(folder / name) in line]
        assert lines and all(why in line for line in lines), (name, err)


def test_iqa_names_each_bad_file_scores_the_rest_and_exits_1(inputs, capsys):
    code, out, err = _run(capsys, ["iqa", str(inputs / "mixed"), "--metric", "niqe", "--no-progress"])
    assert code == 1
    _assert_each_bad_named(err, inputs / "mixed")
    assert "4 of 6 images could not be scored" in err
    assert "good.png" in out and "фото ümlaut.PNG" in out and "(2 images)" in out


@pytest.mark.parametrize("command", ["iqa", "sr"])
@pytest.mark.parametrize("where", ["missing", "no_images"])
def test_a_missing_path_or_a_folder_without_images_is_one_line(inputs, capsys, command, where):
    args = [command, str(inputs / where)]
    args += ["--metric", "niqe"] if command == "iqa" else ["-o", str(inputs / "o"), "--model", str(inputs / "g_x2.pth")]
    code, _, err = _run(capsys, args)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert ("no such file or folder" if where == "missing" else "no images") in err


def test_sr_names_each_bad_file_writes_the_rest_and_never_overwrites(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.png").write_bytes(b"the user's own file")
    args = ["sr", str(inputs / "mixed"), "-o", str(out), "--model", str(inputs / "g_x2.pth"), "--device", "cpu"]
    code, _, err = _run(capsys, args)
    assert code == 1
    _assert_each_bad_named(err, inputs / "mixed")
    assert "1 written" in err and "1 skipped (already there" in err and "4 failed" in err
    assert (out / "good.png").read_bytes() == b"the user's own file"  # not without --overwrite
    with Image.open(out / "фото ümlaut.png") as im:
        assert im.size == (400, 320)
    code, _, err = _run(capsys, args + ["--overwrite"])
    assert code == 1 and "2 written" in err
    with Image.open(out / "good.png") as im:
        assert im.size == (400, 320)


@pytest.mark.parametrize("mode", ["1x1", "L", "RGBA", "P", "I;16", "CMYK-JPEG", "EXIF-rotated"])
def test_sr_reads_every_kind_of_image(inputs, tmp_path, capsys, mode):
    folder = tmp_path / "in"
    folder.mkdir()
    im = _photo((24, 16))
    if mode == "1x1":
        im, name = im.resize((1, 1)), "tiny.png"
        expect = (2, 2)
    elif mode == "CMYK-JPEG":
        im, name = im.convert("CMYK"), "cmyk.jpg"
        expect = (48, 32)
    elif mode == "EXIF-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees on display
        im.save(folder / "rot.jpg", exif=exif)
        im, name, expect = None, None, (32, 48)
    else:
        im, name = im.convert(mode), f"{mode.replace(';', '')}.png"
        expect = (48, 32)
    if im is not None:
        im.save(folder / name)
    code, _, err = _run(
        capsys,
        [
            "sr",
            str(folder),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(inputs / "g_x2.pth"),
            "--device",
            "cpu",
            "--tile",
            "8",
        ],
    )
    assert code == 0, err
    (result,) = (tmp_path / "out").iterdir()
    with Image.open(result) as out:
        assert out.size == expect


@pytest.mark.parametrize("command", ["sr", "export", "inspect", "features"])
@pytest.mark.parametrize("model", ["junk.pth", "missing.pth", "g_x2.pth"])
def test_a_model_file_that_is_not_a_model_is_one_line(inputs, tmp_path, capsys, command, model):
    path = str(inputs / model)
    args = {
        "sr": ["sr", str(inputs / "mixed" / "good.png"), "-o", str(tmp_path), "--model", path],
        "export": ["export", path, "-o", str(tmp_path / "g.safetensors")],
        "inspect": ["inspect", path],
        "features": [
            "features",
            path,
            path,
            "--image",
            str(inputs / "mixed" / "good.png"),
            "--out",
            str(tmp_path / "f.png"),
        ],
    }[command]
    code, _, err = _run(capsys, args)
    if model == "g_x2.pth" and command != "inspect":
        return  # a real generator: these commands may accept it
    assert code in (1, 2) and len(err.strip().splitlines()) == 1, err
    assert model in err


def test_eval_refuses_a_model_of_another_scale(inputs, tmp_path, capsys):
    code, _, err = _run(
        capsys,
        [
            "eval",
            "--dataset",
            str(inputs / "mixed"),
            "--model",
            str(inputs / "g_x2.pth"),
            "--scale",
            "4",
            "--metrics",
            "psnr",
            "-o",
            str(tmp_path),
            "--device",
            "cpu",
        ],
    )
    assert code in (1, 2) and "x2" in err and "4" in err, err


def test_eval_names_the_bad_file(inputs, tmp_path, capsys):
    code, _, err = _run(
        capsys,
        [
            "eval",
            "--sr",
            str(inputs / "mixed"),
            "--hr",
            str(inputs / "mixed"),
            "--metrics",
            "psnr",
            "-o",
            str(tmp_path),
        ],
    )
    # Every bad file is named with its reason, the two good ones are still measured, the exit status is 1.
    assert code == 1 and "Traceback" not in err, err
    for name, reason in BAD.items():
        assert any(str(inputs / "mixed" / name) in line and reason in line for line in err.splitlines()), (name, err)
    assert "2 result(s) measured" in err, err


@pytest.mark.parametrize("name", list(BAD) + ["missing.png"])
def test_degrade_preview_names_the_bad_image(inputs, tmp_path, capsys, name):
    code, _, err = _run(capsys, ["degrade-preview", str(inputs / "mixed" / name), "-o", str(tmp_path / "s.png")])
    assert code == 1 and len(err.strip().splitlines()) == 1 and name in err, err


# ---------------------------------------------------------------- checkpoints of another kind, MOS files


@pytest.fixture(scope="module")
def lgan_checkpoint(tmp_path_factory):
    from sfd.train import build_run, save_checkpoint

    tmp = tmp_path_factory.mktemp("lgan")
    photos = bundled_photo_dir(tmp / "photos")
    cfg = tiny_config(
        photos,
        tmp,
        [
            "feat_d.enabled=false",
            "tg_d.enabled=false",
            "image_d.type=vgg",
            "image_d.input_size=64",
            "image_d.num_feat=8",
        ],
    )
    return save_checkpoint(build_run(cfg), tmp / "lgan.pth")


def test_an_lgan_checkpoint_where_sfd_iqa_needs_feat_d_and_tg_d(inputs, lgan_checkpoint, tmp_path, capsys):
    code, _, err = _run(
        capsys,
        [
            "iqa",
            str(inputs / "mixed" / "good.png"),
            "--metric",
            "sfd-iqa",
            "--checkpoint",
            str(lgan_checkpoint),
            "--no-progress",
        ],
    )
    assert code in (1, 2) and len(err.strip().splitlines()) == 1, err
    assert "lgan.pth" in err and ("Feat-D" in err or "feat_d" in err), err
    mos = tmp_path / "mos.csv"
    mos.write_text("image,mos\ngood.png,50\n")
    code, _, err = _run(
        capsys,
        [
            "tsne",
            "--images",
            str(inputs / "mixed"),
            "--mos",
            str(mos),
            "--checkpoint",
            str(lgan_checkpoint),
            "-o",
            str(tmp_path),
            "--no-progress",
        ],
    )
    assert code in (1, 2) and "lgan.pth has neither a Feat-D nor TG-D" in err, err


def _iqa_eval_args(inputs, mos, tmp_path) -> list[str]:
    images = ["--images", str(inputs / "mixed"), "--mos", str(mos), "--metrics", "niqe"]
    return ["iqa-eval", *images, "--output", str(tmp_path / "o"), "--no-progress"]


@pytest.mark.parametrize(
    "rows,why",
    [
        ("image,mos\ngood.png,50\ngood.png,60\n", ":3: good.png is listed twice (also on line 2)"),
        ("image,mos\ngood.png,fifty\n", ":2: bad score 'fifty'"),
        ("image,mos\ngood.png,\n", ":2: bad score ''"),
        ("image,mos\n,50\n", ":2: no image name"),
        ("image,mos\ngood.png,nan\n", "is not a finite number"),
        ("name,score\ngood.png,50\n", "has no column 'image'"),
        ("image,mos\n", "lists no images"),
    ],
    ids=["duplicate", "non-numeric", "missing-score", "missing-name", "nan", "wrong-columns", "empty"],
)
def test_a_bad_mos_file_is_one_line_naming_the_row(inputs, tmp_path, capsys, rows, why):
    mos = tmp_path / "mos.csv"
    mos.write_text(rows)
    code, _, err = _run(capsys, _iqa_eval_args(inputs, mos, tmp_path))
    assert code in (1, 2) and why in err and len(err.strip().splitlines()) == 1, err


def test_iqa_eval_exits_1_when_listed_images_are_missing_or_unreadable(inputs, tmp_path, capsys):
    mos = tmp_path / "mos.csv"
    names = ["good.png", "фото ümlaut.PNG", "cut.png", "not_there.png"]
    mos.write_text("image,mos\n" + "".join(f"{n},{i * 10}\n" for i, n in enumerate(names)))
    code, _, err = _run(capsys, _iqa_eval_args(inputs, mos, tmp_path))
    assert code == 1, err


# ---------------------------------------------------------------- very large images: tiles in bounded memory


def _rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status on this platform")


def test_tiling_keeps_memory_bounded_by_the_output(tmp_path):
    """An image's tiles go through the model one by one: peak memory grows by the (uint8) output and
    one tile's work, not by the full-size float result (x2: 4x the input's float size)."""
    from sfd.inference.tiling import tiled_upscale

    def fn(x):  # a stand-in generator with the memory profile of a real one's output
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    x = torch.rand(3, 2400, 2400)  # 66 MB as float32; the untiled float result would be 264 MB
    try:
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS counter (Linux >= 4.0)
    except OSError:
        pytest.skip("cannot reset the peak RSS counter here")
    before = _rss_mb("VmRSS")
    out = tiled_upscale(fn, x, 2, tile=256, tile_pad=16, out_dtype=torch.uint8)
    growth = _rss_mb("VmHWM") - before
    output_mb = out.numel() / 2**20  # 66 MB of uint8
    assert out.shape == (3, 4800, 4800)
    assert growth < output_mb + 48, f"peak grew by {growth:.0f} MB for a {output_mb:.0f} MB output"
    assert torch.equal(out[:, ::2, ::2], torch.floor(x * 255 + 0.5).to(torch.uint8))


@pytest.mark.slow
def test_sr_of_an_8000x8000_image_by_tiles(tmp_path):
    """Soak: `sfd sr --tile 512` on an 8000x8000 PNG with a tiny x2 generator (Real-ESRGAN's compact
    SRVGG architecture with 8 features: the test is about memory, not the network), in a subprocess
    whose peak RSS is measured (input and output alone are 0.77 GB each as float32/uint8)."""
    import resource
    import subprocess
    import sys
    from pathlib import Path

    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    torch.save(Compact(num_feat=8, num_conv=2, upscale=2).state_dict(), tmp_path / "g.pth")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8000, 8000, 3), dtype=np.uint8)).save(
        tmp_path / "big.png", compress_level=1
    )
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sfd",
            "sr",
            str(tmp_path / "big.png"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tmp_path / "g.pth"),
            "--tile",
            "512",
            "--device",
            "auto",
        ],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    Image.MAX_IMAGE_PIXELS, limit = None, Image.MAX_IMAGE_PIXELS  # 256 MP: over Pillow's bomb limit
    try:
        with Image.open(tmp_path / "out" / "big.png") as im:
            assert im.size == (16000, 16000)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    assert peak_gb < 4.0, f"peak RSS {peak_gb:.1f} GB"


def test_degrade_preview_never_overwrites_without_overwrite(inputs, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    out.write_bytes(b"the user's file")
    args = ["degrade-preview", str(inputs / "mixed" / "good.png"), "-o", str(out), "--n", "1", "--patch", "64"]
    code, _, err = _run(capsys, args)
    assert code == 2 and "already exists" in err and out.read_bytes() == b"the user's file"
    code, _, err = _run(capsys, args + ["--overwrite"])
    assert code == 0 and out.read_bytes() != b"the user's file", err


def test_export_never_overwrites_without_overwrite(inputs, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    out.write_bytes(b"the user's file")
    code, _, err = _run(capsys, ["export", str(inputs / "g_x2.pth"), "-o", str(out)])
    assert code == 2 and "already exists" in err and out.read_bytes() == b"the user's file"
    code, _, err = _run(capsys, ["export", str(inputs / "g_x2.pth"), "-o", str(out), "--overwrite"])
    assert code == 0 and out.read_bytes() != b"the user's file", err


def test_images_too_small_for_niqe_are_named_with_the_reason(tmp_path, capsys):
    Image.new("RGB", (1, 1)).save(tmp_path / "one.png")
    _photo((150, 90)).save(tmp_path / "small.png")  # under two 96x96 blocks
    _photo().save(tmp_path / "fine.png")
    code, out, err = _run(capsys, ["iqa", str(tmp_path), "--metric", "niqe", "--no-progress"])
    assert code == 1 and "fine.png" in out
    for name in ("one.png", "small.png"):
        assert any(name in line and "96x96 blocks" in line for line in err.splitlines()), err
