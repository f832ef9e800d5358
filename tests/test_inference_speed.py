"""``sfd sr``'s speed switches: channels-last and CUDA-graph replay (``sfd.inference.graphs``).

On the CPU: the switches reach the ``Upscaler`` from ``sfd sr`` and ``sfd bench sr``, give the default's
pixels, and are refused where they cannot work; the graph cache's logic (warm-up, capture, replay, the
bound) runs with stand-ins for the CUDA calls. With CUDA: replayed graphs give the eager pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import tiny_rrdbnet, tiny_swinir
from PIL import Image

from sfd.cli import main
from sfd.inference import InferenceSettings, Upscaler
from sfd.inference import graphs as inference_graphs
from sfd.inference.tiling import run_model, tiled_upscale
from sfd.models.loading import load_generator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "g.pth"
    torch.save(tiny_rrdbnet(4).state_dict(), path)
    return path


def test_sr_switches_reach_the_upscaler_and_change_no_pixel(tmp_path, model_file, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    common = ["sr", str(tmp_path / "in"), "--model", str(model_file), "--device", "cpu", "--no-progress"]
    assert main([*common, "-o", str(tmp_path / "plain"), "--tile", "12", "--tile-pad", "6"]) == 0
    switched = ["--channels-last", "--cuda-graph", "auto", "--tile", "12", "--tile-pad", "6"]
    assert main([*common, "-o", str(tmp_path / "fast"), *switched]) == 0
    # channels-last is on; "auto" leaves graphs off on the CPU
    assert "ESRGAN x4, fp32, channels-last on cpu" in capsys.readouterr().err
    plain, fast = (np.asarray(Image.open(tmp_path / d / "a.png"), dtype=int) for d in ("plain", "fast"))
    assert np.abs(plain - fast).max() <= 1  # float rounding may move a level


@pytest.mark.parametrize("command", [["sr", "x.png", "-o", "out", "--model", "g.pth"], ["bench", "sr"]])
def test_cuda_graph_on_a_cpu_is_a_usage_error(command, capsys):
    assert main([*command, "--device", "cpu", "--cuda-graph", "on"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("error: CUDA graphs (--cuda-graph on) need a CUDA device, not cpu") and "\n" not in err


def test_cuda_graph_setting_resolves_per_device_and_architecture(model_file, tmp_path):
    with pytest.raises(ValueError, match="cuda_graph must be auto, True or False"):
        InferenceSettings(cuda_graph="yes")
    gen = load_generator(model_file)
    up = Upscaler(gen, InferenceSettings(cuda_graph="auto"))
    assert not up.graphed and not isinstance(up._fn, inference_graphs.GraphedForward)
    assert "ESRGAN" in inference_graphs.GRAPH_SAFE and "SwinIR" not in inference_graphs.GRAPH_SAFE


class _FakeGraph:
    """A stand-in for ``torch.cuda.CUDAGraph``: replay runs the captured function on the static input."""

    def __init__(self, fn, static_in, static_out):
        self.fn, self.static_in, self.static_out = fn, static_in, static_out

    def replay(self):
        self.static_out.copy_(self.fn(self.static_in))

    def pool(self):
        return "the first graph's pool"


def test_graph_cache_warms_up_captures_replays_and_stays_bounded(monkeypatch, model_file):
    events = []

    def side(fn, x):
        events.append(("eager", tuple(x.shape), torch.backends.cudnn.benchmark))
        return fn(x)

    def capture(fn, static_in, pool=None):
        events.append(("capture", tuple(static_in.shape), pool, torch.backends.cudnn.benchmark))
        out = torch.full_like(fn(static_in), float("nan"))  # a capture records, it computes nothing
        return _FakeGraph(fn, static_in, out), out

    monkeypatch.setattr(inference_graphs, "on_side_stream", side)
    monkeypatch.setattr(inference_graphs, "capture", capture)
    gen = load_generator(model_file)
    fn = run_model(gen.model, gen.scale)
    graphed = inference_graphs.GraphedForward(fn, warmup=1, size=3)
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    eager = tiled_upscale(fn, x, 4, tile=12, tile_pad=6)
    for _ in range(3):  # 2 x 3 tiles of 3 shapes (the columns'): row 1 warms each up, row 2 captures it
        assert torch.equal(tiled_upscale(graphed._call, x, 4, tile=12, tile_pad=6), eager)
    kinds = [e[0] for e in events]
    assert kinds == ["eager"] * 3 + ["capture"] * 3  # then 12 replays
    assert events[3][2] is None and events[4][2] == events[5][2] == "the first graph's pool"
    assert all(e[2] for e in events if e[0] == "eager")  # cuDNN autotunes in the warm-up...
    assert not any(e[3] for e in events if e[0] == "capture")  # ...not in a capture (a search would break it)
    assert not torch.backends.cudnn.benchmark

    # a replay's result is a copy: the next replay of the same graph leaves it alone
    a, b = x[..., :8, :8].clone(), x[..., 8:16, :8].flip(-1)
    for _ in range(2):
        graphed._call(a)
    first, second = graphed._call(a), graphed._call(b)
    assert torch.equal(first, fn(a)) and torch.equal(second, fn(b))
    assert len(graphed.graphs) == 3  # the bound: the least recently used graph went


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


@cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_graph_replay_gives_the_eager_pixels(model_file, channels_last, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # both paths in plain fp32
    gen = load_generator(model_file)
    settings = dict(device="cuda", channels_last=channels_last)
    images = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in ((20, 28), (24, 16))]
    for tiles in (dict(tile=0), dict(tile=12, tile_pad=6)):
        eager = Upscaler(gen, InferenceSettings(**settings, **tiles))
        graphed = Upscaler(gen, InferenceSettings(**settings, **tiles, cuda_graph=True))
        assert graphed.graphed and "CUDA graphs" in graphed.describe()
        for _ in range(3):  # per shape: eager warm-up, capture, replay
            results = [graphed(x) for x in images]  # two shapes, interleaved
            for x, y in zip(images, results):
                torch.testing.assert_close(y, eager(x), atol=1e-4, rtol=0)
        assert len(graphed._fn.graphs) >= 2
        # a replay's result survives the next replay of the same graph
        other = images[0].flip(-1)
        first, second = graphed(images[0]), graphed(other)
        torch.testing.assert_close(first, eager(images[0]), atol=1e-4, rtol=0)
        torch.testing.assert_close(second, eager(other), atol=1e-4, rtol=0)


@cuda
def test_cuda_graph_auto_leaves_swinir_eager(tmp_path):
    from eval_helpers import sfd_checkpoint

    model = tiny_swinir(scale=2)
    torch.save(sfd_checkpoint(model, model, "swinir", 2), tmp_path / "s.pth")
    up = Upscaler(load_generator(tmp_path / "s.pth"), InferenceSettings(device="cuda", cuda_graph="auto"))
    assert not up.graphed
