"""``Upscaler`` and ``InferenceSettings``: see ``sfd.inference``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from sfd.errors import UsageError
from sfd.inference.graphs import GRAPH_SAFE, GraphedForward
from sfd.inference.tiling import PRECISIONS, run_model, tiled_upscale

if TYPE_CHECKING:
    from sfd.models.loading import LoadedGenerator

__all__ = ["InferenceSettings", "Upscaler", "PRECISIONS"]


@dataclass(frozen=True)
class InferenceSettings:
    """How a generator runs: where, at which precision, and in tiles of how many input pixels."""

    device: str = "cpu"
    precision: str = "fp32"  # fp32, bf16 or fp16
    tile: int = 0  # tile size in input pixels; 0: the whole image at once
    tile_pad: int = 32  # context pixels around each tile
    channels_last: bool = False  # NHWC weights and tiles (faster convolutions on some GPUs)
    # Replay the forward from CUDA graphs, one per input shape (sfd.inference.graphs): True, False, or
    # "auto": on for CUDA devices and the architectures in GRAPH_SAFE. Off by default until measured on a
    # GPU (benchmarks/gpu.sh measures it; docs/benchmarks.md); eager is the reference.
    cuda_graph: Literal["auto", True, False] = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.tile < 0 or self.tile_pad < 0:
            raise UsageError(f"tile ({self.tile}) and tile pad ({self.tile_pad}) cannot be negative")
        if self.cuda_graph not in ("auto", True, False):
            raise UsageError(f"cuda_graph must be auto, True or False, not {self.cuda_graph!r}")
        if self.cuda_graph is True and not str(self.device).startswith("cuda"):
            raise UsageError(f"CUDA graphs (--cuda-graph on) need a CUDA device, not {self.device}")

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]


class Upscaler:
    """A loaded generator, checked, cast and wrapped for (tiled) upscaling: ``upscaler(image)``."""

    def __init__(self, generator: LoadedGenerator, settings: InferenceSettings | None = None):
        self.generator = generator
        self.settings = settings = settings or InferenceSettings()
        dtype = settings.dtype
        if (dtype == torch.float16 and not generator.supports_half) or (
            dtype == torch.bfloat16 and not generator.supports_bfloat16
        ):
            raise UsageError(f"{generator.architecture} does not support {settings.precision}; use fp32")
        model = generator.model.to(device=settings.device, dtype=dtype)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        fn = run_model(model, generator.scale, generator.size_multiple, generator.min_size)
        want = settings.cuda_graph
        auto = str(settings.device).startswith("cuda") and generator.architecture in GRAPH_SAFE
        self.graphed = auto if want == "auto" else want
        self._fn = GraphedForward(fn) if self.graphed else fn

    @classmethod
    def load(
        cls,
        spec: str | Path,
        settings: InferenceSettings | None = None,
        prefer_ema: bool = True,
        allow_pickle: bool = False,
    ) -> Upscaler:
        """``load_generator(spec)`` (an sfd checkpoint or run folder, a model file, a named model) made ready."""
        from sfd.models.loading import load_generator

        settings = settings or InferenceSettings()
        generator = load_generator(spec, device=settings.device, prefer_ema=prefer_ema, allow_pickle=allow_pickle)
        return cls(generator, settings)

    @property
    def scale(self) -> int:
        return self.generator.scale

    @property
    def architecture(self) -> str:
        return self.generator.architecture

    @property
    def source(self) -> str:
        return self.generator.source

    def describe(self) -> str:
        """One line for logs and reports: what runs, at which scale and precision."""
        switches = ", channels-last" * self.settings.channels_last + ", CUDA graphs" * self.graphed
        return f"{self.source}, {self.architecture} x{self.scale}, {self.settings.precision}{switches}"

    def __call__(
        self, image: torch.Tensor, out_dtype: torch.dtype = torch.float32, progress: bool | str = False
    ) -> torch.Tensor:
        """Upscale (C, H, W) or (1, C, H, W) ``image`` (CPU, [0, 1]); the result is on the CPU, clamped."""
        s = self.settings
        return tiled_upscale(
            self._fn,
            image,
            self.scale,
            s.tile,
            s.tile_pad,
            s.device,
            s.dtype,
            out_dtype=out_dtype,
            progress=progress if s.tile else False,
            memory_format=torch.channels_last if s.channels_last else torch.contiguous_format,
        )
