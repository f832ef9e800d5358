"""The generator architectures ``generator.arch`` names: spandrel's single-image SR networks.

Each entry is one class of spandrel's main registry (``spandrel.MAIN_REGISTRY``), built with keyword
hyperparameters from ``generator.params``. spandrel's main package holds only permissively licensed
architectures (MIT, Apache-2.0, BSD-3-Clause, CC0; each ``__arch/LICENSE`` in spandrel's repository):
the non-commercial ones (SRFormer, Restormer, MPRNet, MIRNet2, CodeFormer, DDColor, FeMaSR, AdaCode,
M3SNet, MAT) live in ``spandrel_extra_arches`` and are not offered here (docs/architectures.md).

A generator is only useful if what it learned can be saved and loaded back as the same network, so
``build`` rebuilds every new generator from its own state dict through spandrel's loader and refuses
hyperparameters that spandrel would read back differently (e.g. SPAN's ``img_range``, which no weight
records): the saved model of a run then loads in ``sfd sr``, chaiNNer or ComfyUI as the network trained.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from sfd.config import GeneratorConfig
from sfd.errors import UsageError

__all__ = [
    "ARCHS",
    "AUTO",
    "Arch",
    "NON_COMMERCIAL",
    "build",
    "default_model",
    "documented_defaults",
    "listing",
    "check_params",
    "generator_kwargs",
    "parameter_count",
    "prepare_for_training",
    "protect_input",
    "same_value",
    "spec_of",
    "probe_cuda_graph",
    "trainable_copy",
    "trainable_parameters",
    "unused_parameters",
]

AUTO = "auto"  # generator.arch: take the architecture and its hyperparameters from generator.pretrained
# spandrel_extra_arches: non-commercial licences, so not offered (names as spandrel spells them)
NON_COMMERCIAL = ("AdaCode", "CodeFormer", "DDColor", "FeMaSR", "M3SNet", "MAT", "MIRNet2", "MPRNet", "Restormer")
NON_COMMERCIAL += ("SRFormer",)
# Hyperparameters that change training only (regularisation, memory), never the trained network's output,
# so the file need not record them and the round-trip check ignores them.
TRAINING_ONLY = {
    "drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
    "drop_path",
    "dropout",
    "use_checkpoint",
    "use_chk",
    "fairscale_checkpoint",
    "offload_to_cpu",
    "img_size",  # a nominal size: no weight depends on it in these classes (checked by the round trip)
}
TRANSFORMER = {"in_chans": 3, "img_range": 1.0}


@dataclass(frozen=True)
class Arch:
    name: str  # the value of generator.arch
    spandrel_id: str  # spandrel's architecture id (what ModelLoader reports)
    cls: str  # "Module.Class" under spandrel.architectures
    licence: str  # the licence of the original code (spandrel's __arch/LICENSE)
    scale_key: str  # the class's keyword for the upscaling factor
    fixed: dict[str, Any] = field(default_factory=dict)  # always passed: RGB in/out, an upsampler spandrel reads
    defaults: dict[str, Any] = field(default_factory=dict)  # the documented default size, beside the class's
    tiny: dict[str, Any] = field(default_factory=dict)  # a small instance for the tests
    # Parameters that do not learn (regular expressions on their names): re-parameterised copies the eval
    # forward rebuilds from the learned ones (SPAN), modules built but never applied, fixed normalisations.
    # Frozen at build time (DDP and fused optimisers want every trainable parameter to get a gradient).
    frozen: tuple[str, ...] = ()
    # The forward writes into its input (RCAN: x *= rgb_range): build() makes it work on a copy.
    mutates_input: bool = False
    # `sfd export --format onnx` (torch's TorchScript exporter, opset 17, checked in onnxruntime at another
    # size): "yes", or why not (tests/test_archs.py, marked slow, keeps this true)
    onnx: str = "yes"
    note: str = ""

    def load_class(self) -> type[nn.Module]:
        module, name = self.cls.split(".")
        return getattr(importlib.import_module(f"spandrel.architectures.{module}"), name)

    def valid_params(self) -> list[str]:
        """What ``generator.params`` may set: the class's keywords less the ones sfd fixes."""
        names = [p for p in inspect.signature(self.load_class().__init__).parameters if p != "self"]
        return [n for n in names if n not in self.fixed and n != self.scale_key]


_PS = {"upsampler": "pixelshuffle"}
ARCHS: dict[str, Arch] = {
    a.name: a
    for a in [
        Arch(
            "rrdbnet",
            "ESRGAN",
            "ESRGAN.ESRGAN",
            "Apache-2.0",
            "scale",
            {"in_nc": 3, "out_nc": 3},
            tiny={"num_filters": 8, "num_blocks": 1},
            note="ESRGAN / Real-ESRGAN; generator.num_feat/num_blocks set its size",
        ),
        Arch(
            "swinir",
            "SwinIR",
            "SwinIR.SwinIR",
            "Apache-2.0",
            "upscale",
            {**TRANSFORMER, **_PS, "resi_connection": "1conv"},
            note="generator.embed_dim/depths/num_heads/window_size/... set its size",
        ),
        Arch(
            "compact",
            "Compact",
            "Compact.Compact",
            "BSD-3-Clause",
            "upscale",
            {"num_in_ch": 3, "num_out_ch": 3},
            tiny={"num_feat": 8, "num_conv": 2},
            note="Real-ESRGAN's SRVGGNetCompact",
        ),
        Arch(
            "span",
            "SPAN",
            "SPAN.SPAN",
            "Apache-2.0",
            "upscale",
            {"num_in_ch": 3, "num_out_ch": 3},
            tiny={"feature_channels": 8},
            frozen=(r"\.eval_conv\.",),
            note="eval_conv is rebuilt from the learned convolutions in eval mode",
        ),
        Arch(
            "plksr", "PLKSR", "PLKSR.PLKSR", "MIT", "upscaling_factor", tiny={"dim": 8, "n_blocks": 1, "kernel_size": 5}
        ),
        Arch(
            "realplksr",
            "PLKSR",
            "PLKSR.RealPLKSR",
            "MIT",
            "upscaling_factor",
            tiny={"dim": 8, "n_blocks": 1, "kernel_size": 5},
        ),
        Arch(
            "omnisr",
            "OmniSR",
            "OmniSR.OmniSR",
            "Apache-2.0",
            "up_scale",
            {"num_in_ch": 3, "num_out_ch": 3},
            defaults={"res_num": 5},  # OmniSR as published (spandrel's class default has 1 residual group)
            tiny={"num_feat": 8, "block_num": 1, "res_num": 1, "window_size": 4},
            onnx="no: the traced graph's outputs are wrong at sizes other than the traced one",
        ),
        Arch(
            "safmn",
            "SAFMN",
            "SAFMN.SAFMN",
            "Apache-2.0",
            "upscaling_factor",
            defaults={"dim": 36},
            tiny={"dim": 8, "n_blocks": 1},
            onnx="no: adaptive pooling to a size computed from the input (not exportable)",
        ),
        Arch(
            "dat",
            "DAT",
            "DAT.DAT",
            "Apache-2.0",
            "upscale",
            {**TRANSFORMER, **_PS, "resi_connection": "1conv"},
            defaults={
                "embed_dim": 180,
                "depth": [6] * 6,
                "num_heads": [6] * 6,
                "split_size": [8, 32],
                "expansion_factor": 2.0,
            },
            tiny={"embed_dim": 96, "depth": [1], "num_heads": [2], "split_size": [2, 4], "expansion_factor": 2.0},
        ),
        Arch(
            "hat",
            "HAT",
            "HAT.HAT",
            "MIT",
            "upscale",
            {**TRANSFORMER, **_PS, "resi_connection": "1conv"},
            defaults={"embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "window_size": 16, "mlp_ratio": 2.0},
            tiny={
                "embed_dim": 12,
                "depths": [1],
                "num_heads": [2],
                "window_size": 4,
                "squeeze_factor": 4,
                "num_feat": 8,
                "mlp_ratio": 2.0,
            },
        ),
        Arch(
            "swin2sr",
            "Swin2SR",
            "Swin2SR.Swin2SR",
            "Apache-2.0",
            "upscale",
            {**TRANSFORMER, **_PS, "resi_connection": "1conv"},
            defaults={"embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6, "window_size": 8, "mlp_ratio": 2.0},
            tiny={"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4, "mlp_ratio": 2.0},
        ),
        Arch(
            "rgt",
            "RGT",
            "RGT.RGT",
            "Apache-2.0",
            "upscale",
            {**TRANSFORMER, "resi_connection": "1conv"},
            defaults={
                "embed_dim": 180,
                "depth": [6] * 8,
                "num_heads": [6] * 8,
                "split_size": [8, 32],
                "mlp_ratio": 2.0,
            },
            tiny={"embed_dim": 96, "depth": [1], "num_heads": [2], "split_size": [4, 4], "mlp_ratio": 2.0},
        ),
        Arch(
            "atd",
            "ATD",
            "ATD.ATD",
            "Apache-2.0",
            "upscale",
            {**TRANSFORMER, **_PS, "resi_connection": "1conv"},
            defaults={
                "embed_dim": 210,
                "depths": [6] * 6,
                "num_heads": [6] * 6,
                "window_size": 16,
                "num_tokens": 128,
                "reducted_dim": 20,
            },
            tiny={
                "embed_dim": 12,
                "depths": [2],
                "num_heads": [2],
                "window_size": 4,
                "num_tokens": 8,
                "reducted_dim": 4,
                "convffn_kernel_size": 3,
            },
            onnx="no: the exporter has no Sort with an out= argument (ATD's token sort)",
        ),
        Arch(
            "drct",
            "DRCT",
            "DRCT.DRCT",
            "MIT",
            "upscale",
            {**TRANSFORMER, **_PS, "resi_connection": "1conv"},
            tiny={"embed_dim": 12, "depths": [6], "num_heads": [2], "window_size": 4, "gc": 8},
            note="spandrel reads depths back as 6 per layer (each layer has 5 fixed blocks)",
        ),
        Arch(
            "craft",
            "CRAFT",
            "CRAFT.CRAFT",
            "Apache-2.0",
            "upscale",
            {"in_chans": 3, "img_range": 1.0},
            tiny={"embed_dim": 96, "depths": [1], "num_heads": [2], "split_size_0": 2, "split_size_1": 8},
        ),
        Arch(
            "ditn",
            "DITN",
            "DITN.DITN",
            "Apache-2.0",
            "upscale",
            {"inp_channels": 3},
            tiny={"dim": 12, "ITL_blocks": 1, "SAL_blocks": 1, "UFONE_blocks": 1},
            onnx="no: a reshape fixed at the traced size fails at other sizes",
        ),
        Arch(
            "dctlsa",
            "DCTLSA",
            "DCTLSA.DCTLSA",
            "Apache-2.0",
            "upscale",
            {"in_nc": 3, "out_nc": 3, "num_modules": 6, "num_head": 5},
            tiny={"nf": 10},
        ),
        Arch(
            "seemore",
            "SeemoRe",
            "SeemoRe.SeemoRe",
            "Apache-2.0",
            "scale",
            {"in_chans": 3, "img_range": 1.0},
            tiny={"embedding_dim": 8, "num_layers": 1, "num_experts": 2, "global_kernel_size": 5},
        ),
        Arch(
            "mosr",
            "MoSR",
            "MoSR.MoSR",
            "MIT",
            "upscale",
            {"in_ch": 3, "out_ch": 3},
            tiny={"dim": 8, "n_block": 1, "kernel_size": 3},
        ),
        Arch(
            "rcan",
            "RCAN",
            "RCAN.RCAN",
            "MIT",
            "scale",
            {"n_colors": 3},
            tiny={"n_resgroups": 1, "n_resblocks": 1, "n_feats": 16, "reduction": 4},
            frozen=(r"^(sub|add)_mean\.",),
            mutates_input=True,
            note="the MeanShift convolutions are fixed normalisation; its forward scales its input in place",
        ),
        Arch(
            "grl",
            "GRL",
            "GRL.GRL",
            "MIT",
            "upscale",
            {"in_channels": 3, "out_channels": 3, "img_range": 1.0, **_PS},
            # what spandrel assumes for SR models (the official ones): it cannot read them from the weights
            defaults={"window_size": 32, "stripe_size": [64, 64], "stripe_shift": True, "anchor_window_down_factor": 4},
            tiny={"embed_dim": 12, "depths": [1], "num_heads_window": [1], "num_heads_stripe": [1], "mlp_ratio": 2.0},
        ),
        Arch(
            "swiftsrgan",
            "SwiftSRGAN",
            "SwiftSRGAN.SwiftSRGAN",
            "CC0-1.0",
            "upscale_factor",
            {"in_channels": 3},
            tiny={"num_channels": 8, "num_blocks": 1},
            frozen=(r"(block2|convblock)\.act\.",),
            note="the PReLUs of blocks built with use_act=False are never applied",
        ),
        Arch(
            "moesr",
            "MoESR",
            "MoESR.MoESR",
            "MIT",
            "scale",
            {"in_ch": 3, "out_ch": 3},
            tiny={"dim": 32, "n_blocks": 1, "n_block": 1, "upsample_dim": 8},
        ),
        Arch(
            "fdat",
            "FDAT",
            "FDAT.FDAT",
            "MIT",
            "scale",
            {"num_in_ch": 3, "num_out_ch": 3, "img_range": 1.0},
            frozen=(r"\.inter\.(sg|cg)\.",),
            note="each block applies one of its two interaction gates (spatial or channel); the other is frozen",
            tiny={
                "embed_dim": 16,
                "num_groups": 1,
                "depth_per_group": 1,
                "num_heads": 2,
                "window_size": 4,
                "mid_dim": 8,
            },
        ),
    ]
}


def _legacy_kwargs(cfg: GeneratorConfig) -> dict[str, Any]:
    """rrdbnet and swinir: their size comes from the named fields configs have always used."""
    if cfg.arch == "rrdbnet":
        return {"num_filters": cfg.num_feat, "num_blocks": cfg.num_blocks}
    if cfg.arch == "swinir":
        return {
            "img_size": cfg.img_size,
            "window_size": cfg.window_size,
            "depths": list(cfg.depths),
            "embed_dim": cfg.embed_dim,
            "num_heads": list(cfg.num_heads),
            "mlp_ratio": cfg.mlp_ratio,
            "drop_path_rate": cfg.drop_path_rate,
        }
    return {}


def check_params(arch: str, params: dict[str, Any]) -> Arch:
    """The ``Arch`` of ``arch``; a one-line ``UsageError`` for an unknown architecture or parameter."""
    if arch not in ARCHS:
        raise UsageError(
            f"generator.arch={arch!r} is not an architecture sfd builds; choose one of "
            f"{', '.join([*ARCHS, AUTO])} (sfd archs lists them)"
        )
    spec = ARCHS[arch]
    valid = spec.valid_params()
    unknown = [k for k in params if k not in valid]
    if unknown:
        fixed = [k for k in unknown if k in spec.fixed or k == spec.scale_key]
        why = " (fixed by sfd: RGB in and out, generator.scale sets the scale)" if fixed else ""
        raise UsageError(f"generator.params.{unknown[0]} is not a parameter of {arch}{why}; valid: {', '.join(valid)}")
    return spec


def generator_kwargs(cfg: GeneratorConfig, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments ``cfg`` builds its class with (``params`` replaces ``cfg.params``)."""
    params = dict(cfg.params if params is None else params)
    spec = check_params(cfg.arch, params)
    return {**spec.defaults, **_legacy_kwargs(cfg), **params, **spec.fixed, spec.scale_key: cfg.scale}


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters that learn (after ``prepare_for_training``)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def is_frozen(name: str, spec: Arch) -> bool:
    return any(re.search(pattern, name) for pattern in spec.frozen)


def unused_parameters(model: nn.Module, size: int = 32) -> list[str]:
    """Parameters that one train-mode forward and backward (a (2, 3, size, size) input) leaves without a
    gradient. BatchNorm statistics, gradients, ``requires_grad`` flags and the RNG are left as they were."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    was = model.training
    try:
        with torch.random.fork_rng(devices=[]):
            model.train().requires_grad_(True).zero_grad(set_to_none=True)
            model(torch.rand(2, 3, size, size)).float().mean().backward()
        return [n for n, p in model.named_parameters() if p.grad is None]
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        model.train(was)


def _roundtrip_differences(model: nn.Module, spec: Arch) -> list[str]:
    """Hyperparameters that spandrel would read back differently from ``model``'s state dict."""
    import spandrel

    desc = spandrel.ModelLoader().load_from_state_dict(model.state_dict())
    if desc.architecture.id != spec.spandrel_id:
        return [f"spandrel detects {desc.architecture.id}, not {spec.spandrel_id}"]
    mine = dict(getattr(model, "hyperparameters", {}) or {})
    back = dict(getattr(desc.model, "hyperparameters", {}) or {})
    out = []
    for key in sorted(set(mine) | set(back)):
        a, b = mine.get(key), back.get(key)
        if key in TRAINING_ONLY or same_value(a, b):
            continue
        out.append(f"{key}={a!r} is read back as {b!r}")
    return out


def same_value(a: Any, b: Any) -> bool:
    """Equal hyperparameter values (lists and tuples alike, 2 == 2.0)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b))


def build(cfg: GeneratorConfig, params: dict[str, Any] | None = None, check_roundtrip: bool = True) -> nn.Module:
    """A randomly initialised generator of ``cfg.arch`` with ``cfg.params`` (or ``params``).

    ``check_roundtrip``: rebuild it through spandrel's loader from its own state dict and refuse (one-line
    ``UsageError``) hyperparameters that a saved file cannot carry."""
    kwargs = generator_kwargs(cfg, params)
    spec = ARCHS[cfg.arch]
    try:
        model = spec.load_class()(**kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError, ZeroDivisionError, IndexError) as err:
        shown = {k: v for k, v in kwargs.items() if k not in spec.fixed}
        raise UsageError(f"generator {cfg.arch} cannot be built from {shown}: {err}".splitlines()[0]) from err
    prepare_for_training(model, spec)
    if check_roundtrip:
        diff = _roundtrip_differences(model, spec)
        if diff:
            raise UsageError(
                f"generator {cfg.arch}: a saved file cannot carry these parameters, spandrel reads them back "
                f"differently: {'; '.join(diff)}"
            )
    return model


def prepare_for_training(model: nn.Module, spec: Arch) -> nn.Module:
    """``model`` in train mode, its ``frozen`` parameters frozen, the others learning; an architecture that
    writes into its input gets a copy of it."""
    for name, p in model.named_parameters():
        p.requires_grad_(not is_frozen(name, spec))
    protect_input(model, spec)
    return model.train()


def spec_of(model: nn.Module) -> Arch | None:
    """The entry whose class ``model`` is, if any."""
    return next((a for a in ARCHS.values() if a.load_class() is type(model)), None)


def protect_input(model: nn.Module, spec: Arch | None = None) -> nn.Module:
    """Give an architecture that writes into its input (``mutates_input``) a copy of it, so that a caller's
    batch or image is never changed (the hook is no part of the state dict)."""
    spec = spec or spec_of(model)
    if spec is not None and spec.mutates_input:
        model.register_forward_pre_hook(_copy_input)
    return model


def _copy_input(module: nn.Module, args: tuple) -> tuple:
    return (args[0].clone(), *args[1:])


def trainable_copy(model: nn.Module) -> tuple[nn.Module, Arch]:
    """A loaded spandrel model (eval mode, frozen) as a fresh instance of its class with the same weights,
    ready for training; raises ``KeyError`` for an architecture sfd does not train."""
    spec = spec_of(model)
    if spec is None:
        raise KeyError(type(model).__name__)
    fresh = type(model)(**model.hyperparameters)
    fresh.load_state_dict(model.state_dict())
    return prepare_for_training(fresh, spec), spec


def documented_defaults(name: str) -> dict[str, Any]:
    """Every ``generator.params`` name of ``name`` with its value at the documented default size."""
    spec = ARCHS[name]
    signature = inspect.signature(spec.load_class().__init__).parameters
    kwargs = generator_kwargs(GeneratorConfig(arch=name), {})
    return {k: kwargs.get(k, signature[k].default) for k in spec.valid_params()}


def default_model(name: str, scale: int = 4, device: str = "meta") -> nn.Module:
    """The documented default size of ``name``, on the meta device (shapes only, no memory) by default."""
    cfg = GeneratorConfig(arch=name, scale=scale)
    with torch.device(device):
        return build(cfg, check_roundtrip=False)


def listing(probe: bool = True, names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per architecture: spandrel id, licence, parameters at the default size (x4), CUDA graph."""
    rows = []
    for name in names or ARCHS:
        spec = ARCHS[name]
        try:
            model = default_model(name)
        except (NotImplementedError, RuntimeError, UsageError):  # an initialiser the meta device cannot run
            model = default_model(name, device="cpu")
        if not torch.cuda.is_available():
            graph = "untested (no CUDA)"
        elif probe:
            graph = probe_cuda_graph(default_model(name, device="cpu"))
        else:
            graph = "not probed (--no-probe)"
        rows.append(
            {"arch": name, "spandrel_id": spec.spandrel_id, "licence": spec.licence}
            | {"parameters": parameter_count(model), "learning": parameter_count(model, trainable=True)}
            | {"cuda_graph": graph, "onnx": spec.onnx, "note": spec.note}
        )
    return rows


def parameter_count(model: nn.Module, trainable: bool = False) -> int:
    """All parameters (what a saved file holds), or only those that learn."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def probe_cuda_graph(model: nn.Module, size: int = 64, device: str = "cuda") -> str:
    """Whether one training forward and backward of ``model`` (L1 to a target) can be captured as a CUDA
    graph and replayed with the same result: "yes", "no: REASON", or "untested (no CUDA)"."""
    if not torch.cuda.is_available():
        return "untested (no CUDA)"
    from sfd.graphs import capture, on_side_stream

    model = model.to(device).train()
    scale = _output_scale(model, size, device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(2, 3, size, size, device=device, generator=gen)
    target = torch.rand(2, 3, size * scale, size * scale, device=device, generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(inp, tgt):
        for p in params:
            p.grad = None
        loss = (model(inp) - tgt).abs().mean()
        loss.backward()
        return loss.detach()

    try:
        torch.manual_seed(0)
        for _ in range(2):
            on_side_stream(step, x, target)
        torch.cuda.synchronize(device)
        eager = step(x, target).clone()
        graph, out = capture(step, x, target)
        graph.replay()
        torch.cuda.synchronize(device)
    except Exception as err:  # noqa: BLE001 -- any failure of the capture is the answer
        return f"no: {type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    same = torch.allclose(out, eager, rtol=1e-4, atol=1e-6)
    return "yes" if same else f"no: the replay gives {float(out):.6g}, eager {float(eager):.6g}"


@torch.no_grad()
def _output_scale(model: nn.Module, size: int, device: str) -> int:
    was = model.training
    y = model.eval()(torch.zeros(1, 3, size, size, device=device))
    model.train(was)
    return y.shape[-1] // size
