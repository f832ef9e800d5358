"""``train.cuda_graph``: the device work of a training step replayed from CUDA graphs.

An SFD step dispatches some 11,000 small operators; on a fast GPU the host cannot issue them as fast as
the GPU runs them (docs/benchmarks.md). A CUDA graph issues them all with one call. Each phase of
training (pixel warm-up, adversarial) runs its first ``warmup`` steps eagerly on a side stream
(cuDNN's autotuning, Adam's states and the allocator settle), then one step is captured, not run, and
replayed from then on with the batch copied into the graph's static inputs. The step must be
sync-free (``train.sync_free``): no host reads, fused Adam with the learning rate as a tensor.
"""

from __future__ import annotations

import torch

__all__ = ["GraphedStep"]


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
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    logs = self.core(run, lr, hr, hr_real, adversarial)
                torch.cuda.current_stream().wait_stream(side)
                return logs
            static = tuple(x.clone() for x in (lr, hr, hr_real))
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logs = self.core(run, *static, adversarial)
            self.graphs[adversarial] = (graph, static, logs)
        graph, static, logs = self.graphs[adversarial]
        for buf, x in zip(static, (lr, hr, hr_real)):
            buf.copy_(x, non_blocking=True)
        graph.replay()
        return {k: v.clone() for k, v in logs.items()}  # the next replay overwrites the graph's outputs
