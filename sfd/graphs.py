"""CUDA graphs: ``train.cuda_graph`` (``GraphedStep``) and the two steps every capture shares.

An SFD step dispatches some 11,000 small operators; on a fast GPU the host cannot issue them as fast as
the GPU runs them (docs/benchmarks.md). A CUDA graph issues them all with one call. Each phase of
training (pixel warm-up, adversarial) runs its first ``warmup`` steps eagerly on a side stream
(cuDNN's autotuning, Adam's states and the allocator settle), then one step is captured, not run, and
replayed from then on with the batch copied into the graph's static inputs. The step must be
sync-free (``train.sync_free``): no host reads, fused Adam with the learning rate as a tensor.
``sfd.inference.graphs`` replays a generator's forward the same way (``on_side_stream``, ``capture``).
"""

from __future__ import annotations

import torch

__all__ = ["GraphedStep", "on_side_stream", "capture"]


def on_side_stream(fn, *args):
    """``fn(*args)`` eagerly on a side stream, ordered after and before the current stream's work: the
    warm-up a capture needs (PyTorch's CUDA-graph notes), so that lazy initialisation stays out of it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = fn(*args)
    current = torch.cuda.current_stream()
    current.wait_stream(side)
    for t in out.values() if isinstance(out, dict) else [out]:
        if isinstance(t, torch.Tensor):  # made on the side stream, read on this one: keep its memory till then
            t.record_stream(current)
    return out


def capture(fn, *static, pool=None) -> tuple[torch.cuda.CUDAGraph, object]:
    """``fn(*static)`` captured, not run: the graph and the outputs its replays overwrite. ``pool``: a memory
    pool shared with other graphs (``graph.pool()``), for graphs that are never replayed concurrently."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn(*static)
    return graph, out


class GraphedStep:
    def __init__(self, core, warmup: int = 3):
        self.core, self.warmup = core, warmup
        self.eager_left: dict[bool, int] = {}
        self.graphs: dict[bool, tuple[torch.cuda.CUDAGraph, tuple, dict]] = {}

    def __call__(self, run, lr, hr, hr_real, adversarial: bool) -> dict:
        if adversarial not in self.graphs:
            left = self.eager_left.setdefault(adversarial, self.warmup)
            if left > 0:
                self.eager_left[adversarial] = left - 1
                return on_side_stream(self.core, run, lr, hr, hr_real, adversarial)
            static = tuple(x.clone() for x in (lr, hr, hr_real))
            graph, logs = capture(lambda *batch: self.core(run, *batch, adversarial), *static)
            self.graphs[adversarial] = (graph, static, logs)
        graph, static, logs = self.graphs[adversarial]
        for buf, x in zip(static, (lr, hr, hr_real)):
            buf.copy_(x, non_blocking=True)
        graph.replay()
        return {k: v.clone() for k, v in logs.items()}  # the next replay overwrites the graph's outputs
