"""CUDA graphs: the two steps every capture shares (training's ``sfd.train.modes.GraphedStep`` and
inference's ``sfd.inference.graphs``).

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

__all__ = ["on_side_stream", "capture"]


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
    pool shared with other graphs (``graph.pool()``), for graphs that are never replayed concurrently.
    ``thread_local``: CUDA calls from other threads (a DataLoader's pin-memory thread allocating pinned
    memory) may run during the capture; in torch's default, global mode they would invalidate it."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        out = fn(*static)
    return graph, out
