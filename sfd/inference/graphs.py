"""``InferenceSettings.cuda_graph``: a generator's forward replayed from CUDA graphs, one per input shape.

Eagerly, the host issues a forward's operators one by one (about 1,100 for RRDBNet-23); a CUDA graph issues
their kernels with one call, which pays where the host, not the GPU, is the bottleneck (small inputs, fast GPUs).
A graph holds fixed shapes, so ``GraphedForward`` keeps one per input (shape, strides, dtype, device): the
first ``warmup`` calls with a shape run eagerly on a side stream (their results are real outputs), the next
one is captured, and every later one replays it, the input copied into the graph's static buffer and the
output copied out. The tiles of an image share a few shapes (corners, edges, interior), so a tiled image
is mostly replays, and an image size seen once never costs a capture. At most ``size`` graphs are kept
(the least recently used goes), all in one memory pool: each replay's output is copied before the next
replay, so the graphs can share their scratch memory. cuDNN autotunes (``cudnn.benchmark``) in the
warm-up only: the shapes repeat, so the search pays. The capture then finds the chosen plans in torch's
cuDNN cache, which is read whatever the flag says; on a miss it falls back to the heuristics, which a capture
allows, where a search (timed runs, syncs) would break it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from sfd.graphs import capture, on_side_stream

__all__ = ["GRAPH_SAFE", "GraphedForward"]

# Architectures whose forward is convolutions and element-wise ops only (no host copies or syncs that a
# capture refuses), so "auto" graphs them. Others, e.g. SwinIR (it copies a new attention mask from the
# host for each new size), are graphed only when asked (True), and a failed capture then says so.
GRAPH_SAFE = ("ESRGAN", "Compact")


@contextmanager
def cudnn_autotune() -> Iterator[None]:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


class GraphedForward:
    """``fn`` (N, C, h, w) -> output, replayed from a CUDA graph per input layout; see the module's notes."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], warmup: int = 1, size: int = 16):
        self.fn, self.warmup, self.size = fn, warmup, size
        self.seen: OrderedDict[tuple, int] = OrderedDict()  # eager calls so far, per layout not yet captured
        self.graphs: OrderedDict[tuple, tuple] = OrderedDict()  # layout -> (graph, static input, static output)
        self.pool = None  # the memory pool of the first capture, shared by the later ones

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            return self.fn(x)
        with torch.cuda.device(x.device):  # captures and side streams belong to the input's device
            return self._call(x)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.stride(), x.dtype, x.device)
        entry = self.graphs.get(key)
        if entry is None:
            calls = self.seen.pop(key, 0)
            if calls < self.warmup:
                self.seen[key] = calls + 1
                if len(self.seen) > 4 * self.size:  # sizes seen once (a folder of photos) are forgotten
                    self.seen.popitem(last=False)
                with cudnn_autotune():
                    return on_side_stream(self.fn, x)
            entry = self._capture(x, key)
        self.graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()  # the next replay of any graph may overwrite it (shared pool)

    def _capture(self, x: torch.Tensor, key: tuple) -> tuple:
        static_in = torch.empty_like(x)  # same strides, allocated outside the graph's pool
        try:
            graph, static_out = capture(self.fn, static_in, pool=self.pool)
        except RuntimeError as err:
            raise RuntimeError(
                f"CUDA graph capture of the generator failed for a {tuple(x.shape)} input ({err}); "
                "run without CUDA graphs (--cuda-graph off)"
            ) from err
        self.pool = graph.pool()
        self.graphs[key] = entry = (graph, static_in, static_out)
        if len(self.graphs) > self.size:
            self.graphs.popitem(last=False)
        return entry
