"""Fuzzing the image loader (sfd/data/io.py) with hypothesis: any bytes, any size and mode give either
an image or one clean ``ImageReadError`` naming the file, never another exception."""

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sfd.data.io import ImageReadError, load_rgb, read_image

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK", "YCbCr"]
FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "tif": "TIFF", "webp": "WEBP"}


def _write(data: bytes, suffix: str) -> Path:
    f = tempfile.NamedTemporaryFile(suffix="." + suffix, delete=False, dir=_DIR)
    f.write(data)
    f.close()
    return Path(f.name)


_DIR = tempfile.mkdtemp(prefix="sfd_fuzz_")


def _check(path: Path) -> None:
    """Both readers: an image of the right shape and range, or ImageReadError naming the file."""
    for reader in (load_rgb, read_image):
        try:
            out = reader(path)
        except ImageReadError as err:
            assert str(path) in str(err)
            continue
        if reader is load_rgb:
            assert out.mode == "RGB" and min(out.size) >= 1
        else:
            assert out.rgb.shape[0] == 3 and out.rgb.min() >= 0 and out.rgb.max() <= 1


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(list(FORMATS) + ["PNG", "txt"]))
def test_random_bytes_give_an_image_or_a_clean_error(data, suffix):
    _check(_write(data, suffix))


def _encode(mode: str, w: int, h: int, fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    try:
        im.save(buf, FORMATS[fmt])
    except (OSError, ValueError, KeyError):  # this format cannot hold this mode
        return b""
    return buf.getvalue()


@FUZZ
@given(
    mode=st.sampled_from(MODES),
    w=st.integers(1, 40),
    h=st.integers(1, 40),
    fmt=st.sampled_from(list(FORMATS)),
    seed=st.integers(0, 2**16),
    cut=st.floats(0, 1),
)
def test_valid_truncated_and_corrupted_images_of_any_mode_and_size(mode, w, h, fmt, seed, cut):
    data = _encode(mode, w, h, fmt, seed)
    if not data:
        return
    _check(_write(data, fmt))  # intact: must read (or name why not)
    _check(_write(data[: int(len(data) * cut)], fmt))  # cut short
    flipped = bytearray(data)
    for i in np.random.default_rng(seed).integers(0, len(data), 4):
        flipped[i] ^= 0xFF
    _check(_write(bytes(flipped), fmt))  # bytes flipped


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_mode_that_a_format_holds_reads(fmt):
    for mode in MODES:
        data = _encode(mode, 7, 5, fmt, 0)
        if data:
            img = read_image(_write(data, fmt))
            assert img.rgb.shape == (3, 5, 7), (fmt, mode)


def test_a_zero_byte_file_and_a_truncated_png_are_named_with_a_reason():
    with pytest.raises(ImageReadError, match=r"empty\.png: empty file \(0 bytes\)"):
        read_image(_write_named(b"", "empty.png"))
    data = _encode("RGB", 64, 64, "png", 1)
    with pytest.raises(ImageReadError, match=r"cut\.png: truncated or corrupt"):
        load_rgb(_write_named(data[: len(data) // 2], "cut.png"))
    with pytest.raises(ImageReadError, match=r"notes\.png: not an image"):
        load_rgb(_write_named(b"hello, not an image", "notes.png"))
    with pytest.raises(FileNotFoundError):
        load_rgb(Path(_DIR) / "missing.png")


def _write_named(data: bytes, name: str) -> Path:
    path = Path(_DIR) / name
    path.write_bytes(data)
    return path


def test_pillows_pixel_limit_is_a_clear_error_and_can_be_raised(tmp_path, monkeypatch):
    """Pillow refuses images over ~179 MP as possible decompression bombs; sfd says how to allow a user's
    own large photo ($SFD_MAX_IMAGE_PIXELS), and restores Pillow's limit afterwards."""
    import warnings

    path = tmp_path / "wide.png"
    Image.new("RGB", (40, 30)).save(path)
    default = Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv("SFD_MAX_IMAGE_PIXELS", "500")  # 1200 pixels: over the limit
    with pytest.raises(ImageReadError, match=r"wide\.png: .*SFD_MAX_IMAGE_PIXELS=0 for no limit"):
        load_rgb(path)
    for allowed in ("1200", "0"):
        monkeypatch.setenv("SFD_MAX_IMAGE_PIXELS", allowed)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no decompression-bomb warning under the user's limit
            assert load_rgb(path).size == (40, 30) and read_image(path).rgb.shape == (3, 30, 40)
    monkeypatch.setenv("SFD_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="SFD_MAX_IMAGE_PIXELS must be a whole number"):
        load_rgb(path)
    assert Image.MAX_IMAGE_PIXELS == default
