"""``sfd export``: a generator as a ``.safetensors`` file that spandrel (so chaiNNer, ComfyUI) loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from sfd.models.loading import load_generator

__all__ = ["export_safetensors"]


def export_safetensors(
    spec: str | Path, output: str | Path, prefer_ema: bool = True, allow_pickle: bool = False
) -> dict:
    """Write the generator of ``spec`` (anything ``load_generator`` takes) to ``output``.

    The keys are those of spandrel's architecture class, which spandrel detects from the keys
    alone; metadata records architecture, scale, hyperparameters and source. The file is then
    loaded back through spandrel and must give the same architecture, scale and outputs.
    """
    import spandrel
    from safetensors.torch import save_file

    gen = load_generator(spec, prefer_ema=prefer_ema, allow_pickle=allow_pickle)
    state = {
        k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous().clone()
        for k, v in gen.model.state_dict().items()
    }
    info = {"architecture": gen.architecture, "scale": gen.scale, "source": gen.source}
    metadata = {
        **{k: str(v) for k, v in info.items()},
        "hyperparameters": json.dumps(gen.hyperparameters, default=str),
        "exporter": "sfd export",
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(output), metadata=metadata)
    _apply_umask(output)

    back = spandrel.ModelLoader().load_from_file(output)
    if back.architecture.id != gen.architecture or back.scale != gen.scale:
        output.unlink()
        raise ValueError(
            f"spandrel reads the export as {back.architecture.id} x{back.scale}, not "
            f"{gen.architecture} x{gen.scale}; nothing was written"
        )
    probe = torch.rand(1, 3, max(16, gen.min_size), max(16, gen.min_size), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        # a copy each: some architectures (RCAN) scale their input in place
        same = torch.allclose(back.model.float().eval()(probe.clone()), gen.model.float()(probe.clone()), atol=1e-6)
    if not same:
        output.unlink()
        raise ValueError("the exported generator's outputs differ from the original's; nothing was written")
    return info


def _apply_umask(path: Path) -> None:
    """safetensors writes 0600 files; give the mode any file the user creates gets (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
