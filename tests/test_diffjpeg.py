"""sfd.data.diffjpeg against BasicSR's own DiffJPEG (the codec of Real-ESRGAN's degradations), and its
behaviour where it departs from libjpeg: float qualities, 2x2-repeated chroma, padding to 16."""

import numpy as np
import pytest
import torch
from basicsr_reference import load, missing_reason
from PIL import Image

from sfd.data.degradations import DegradationConfig, RealESRGANDegradation, jpeg_pillow
from sfd.data.diffjpeg import diffjpeg, diffjpeg_steps
from sfd.data.io import list_images


@pytest.fixture(scope="module")
def reference():
    module = load("diffjpeg")
    if module is None:
        pytest.skip(missing_reason("diffjpeg"))
    return module.DiffJPEG(differentiable=False)


def _photos(folder, n: int, size: tuple[int, int]) -> torch.Tensor:
    imgs = []
    for path in list_images(folder)[:n]:
        arr = np.asarray(Image.open(path).convert("RGB"))[: size[0], : size[1]]
        imgs.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(imgs)


@pytest.mark.parametrize("quality", [30, 50, 70, 95])
def test_equals_basicsr_diffjpeg_on_real_images(reference, shared_data, quality):
    # 250 x 243: neither side a multiple of 16, so the zero padding is exercised; Set14 holds a grey image.
    imgs = torch.cat([_photos(shared_data("sr/Set14"), 6, (250, 243)), _photos(shared_data("sr/B100"), 4, (250, 243))])
    with torch.no_grad():
        ref = reference(imgs, quality=imgs.new_full((len(imgs),), float(quality)))
    ours = diffjpeg(imgs, [quality] * len(imgs))
    assert ours.shape == imgs.shape
    assert float((ours - ref).abs().max()) <= 1 / 255


def test_float_qualities_per_image_and_float64_input_equal_basicsr(reference, shared_data):
    imgs = _photos(shared_data("sr/B100"), 4, (256, 256))
    qualities = [31.7, 49.99, 50.5, 88.25]
    with torch.no_grad():
        ref = reference(imgs, quality=torch.tensor(qualities))
    ours = diffjpeg(imgs.double(), qualities)  # the pipeline's dtype: computed in float32 all the same
    assert ours.dtype == torch.float64 and float((ours.float() - ref).abs().max()) <= 1 / 255
    alone = torch.cat([diffjpeg(imgs[i : i + 1], [q]) for i, q in enumerate(qualities)])
    assert torch.equal(alone, diffjpeg(imgs, qualities))  # one image's result whatever its batch


def test_quality_scales_the_tables_without_rounding():
    luma, chroma = diffjpeg_steps([25.0, 50.0, 95.0])
    assert luma[1, 0, 0] == 16 and chroma[1, 0, 0] == 17  # factor 1 at 50
    assert torch.allclose(luma[0], 2 * luma[1]) and torch.allclose(luma[2], 0.1 * luma[1])  # 50/q, 2 - q/50
    assert luma[1, 0, 1] == 12 and luma[1, 1, 0] == 11  # the luma table is applied transposed, as BasicSR's
    assert luma[2, 2, 0] == pytest.approx(1.0, abs=1e-6)  # 10 x 0.1: not rounded, not clamped to >= 1


def _chroma(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb.double().unbind(1)
    return torch.stack([-0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b], 1)


def test_chroma_is_repeated_2x2_where_libjpeg_interpolates():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 64, 64, generator=g)
    ours = diffjpeg(img, [60.0])
    # Away from clipping, each 2x2 cell shares one chroma value (up to the float32 colour transforms).
    cells = _chroma(ours * 255).unfold(-2, 2, 2).unfold(-2, 2, 2).flatten(-2)
    inside = ((ours > 0.02) & (ours < 0.98)).all(1).unfold(-2, 2, 2).unfold(-2, 2, 2).flatten(-2).all(-1)
    spread = (cells.amax(-1) - cells.amin(-1))[:, :, inside[0]]
    assert inside.float().mean() > 0.5 and float(spread.max()) < 0.05
    libjpeg = _chroma(jpeg_pillow(img, [60]) * 255).unfold(-2, 2, 2).unfold(-2, 2, 2).flatten(-2)
    assert float((libjpeg.amax(-1) - libjpeg.amin(-1)).median()) > 1  # libjpeg's fancy upsampling


def test_odd_sizes_and_float_output():
    img = torch.rand(2, 3, 37, 21, generator=torch.Generator().manual_seed(1))
    out = diffjpeg(img, [40.5, 40.0])
    assert out.shape == img.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert not torch.equal(out * 255, (out * 255).round())  # not rounded to 8-bit levels
    assert not torch.equal(out[0], diffjpeg(img[:1], [40.0])[0])  # float qualities count


def test_pipeline_draws_float_qualities_for_diffjpeg_only():
    float_q = RealESRGANDegradation(DegradationConfig(jpeg_backend="diffjpeg")).sample(3)
    int_q = RealESRGANDegradation(DegradationConfig(jpeg_backend="pillow")).sample(3)
    assert isinstance(int_q.first.jpeg_quality, int) and isinstance(float_q.first.jpeg_quality, float)
    qs = [RealESRGANDegradation().sample(s).second.jpeg_quality for s in range(200)]
    assert 30 <= min(qs) and max(qs) <= 95 and len({round(q, 6) for q in qs}) == 200
