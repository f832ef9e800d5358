"""An exported ONNX file against its PyTorch model on whole images (``sfd export`` checks a crop).

    python benchmarks/onnx_whole_image.py MODEL IMAGE FILE.onnx [FILE.onnx ...]

MODEL is what ``sfd export`` was given (e.g. realesrgan-x4plus). Prints, per file, the largest and
mean |ONNX - PyTorch fp32| (outputs in [0, 1]) and how many 8-bit output values differ after rounding.
Both run on the CPU; a 23-block RRDBNet on a 280x280 image takes minutes on two cores.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import onnxruntime as ort
import torch

from sfd.data.io import load_rgb, to_tensor
from sfd.inference.tiling import run_model
from sfd.models.loading import load_generator


def main(spec: str, image: str, files: list[str]) -> None:
    x = to_tensor(load_rgb(image))[None]
    gen = load_generator(spec)
    start = time.perf_counter()
    ref = run_model(gen.model, gen.scale, gen.size_multiple, gen.min_size)(x).float()
    print(f"PyTorch fp32 on {image} {tuple(x.shape[-2:])}: {time.perf_counter() - start:.0f} s")
    ref8 = (ref.clamp(0, 1) * 255).round()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for path in files:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
        start = time.perf_counter()
        out = torch.from_numpy(session.run(None, {"input": x.numpy().astype(dtype)})[0]).float()
        diff = (out - ref).abs()
        changed = int(((out.clamp(0, 1) * 255).round() != ref8).sum())
        print(
            f"{path}: max {diff.max():.3g}, mean {diff.mean():.3g}; 8-bit values that differ: "
            f"{changed} of {out.numel()} ({time.perf_counter() - start:.0f} s)"
        )


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
