"""``sfd bench``: speed against the peers, measured side by side in one invocation.

Absolute times drift on shared machines, so every comparison alternates its contenders (one
repeat of each, then the next round) and reports medians and ratios. Each result carries the
machine and the command that produced it; ``--json`` prints the same numbers as JSON.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch

__all__ = [
    "machine",
    "interleaved",
    "step_runs",
    "bench_step",
    "bench_data",
    "bench_chroma",
    "chroma_statistic",
    "bench_sr",
    "bench_iqa",
    "bench_sweep",
]


def machine(device: str = "cpu") -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores, threads = len(os.sched_getaffinity(0)), torch.get_num_threads()
    text = f"{cpu}, {cores} cores, {threads} torch threads, torch {torch.__version__}"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()} x{torch.cuda.device_count()}"
    return text


def command() -> str:
    if sys.argv and sys.argv[0].endswith(("sfd", "__main__.py")):
        return "sfd " + " ".join(sys.argv[1:])
    return " ".join(sys.argv)


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, device="cpu"
) -> dict[str, list[float]]:
    """Seconds per call of each function, alternating them round by round (after ``warmup`` calls each)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def _quiet():
    """Random CLIP/VGG weights are fine for timing: their notices would only clutter the tables."""
    import logging

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)


# ---------------------------------------------------------------- training step

_ESRGAN = ["feat_d.enabled=false", "tg_d.enabled=false", "image_d.type=vgg", "loss.gan_type=ragan"]
STEP_RUNS = {
    "G only (L1)": ["feat_d.enabled=false", "tg_d.enabled=false", "loss.perceptual=0", "loss.l1=1.0"],
    "ESRGAN": _ESRGAN,
    "SFD": [],
    "SFD Feat-D only": ["tg_d.enabled=false"],
    "SFD TG-D only": ["feat_d.enabled=false"],
    # Supp. Table 1's other systems (configs ldl/sed_p/dualformer_rrdb_x4: their Ds and loss terms; same
    # L1 and conv5_4 perceptual as ESRGAN here); measured with --only, not by default
    "LDL": [*_ESRGAN, "loss.ldl.weight=1.0"],
    "SeD-P": ["feat_d.enabled=false", "tg_d.enabled=false", "sed_d.enabled=true", "loss.gan_type=vanilla"],
    "DualFormer": [*_ESRGAN[:2], "image_d.type=transformer", "spectral_d.enabled=true", "loss.gan_type=ragan"],
}
DEFAULT_STEP_RUNS = ["G only (L1)", "ESRGAN", "SFD", "SFD Feat-D only", "SFD TG-D only"]


def step_runs(
    blocks: int, patch: int, device: str, precision: str = "fp32", extra: list[str] | None = None, names=None
) -> dict:
    """Training runs that differ only in their losses and discriminators: same generator, patch and
    precision. ESRGAN = L1 + VGG19 perceptual + VGG-style pixel D (RaGAN); SFD = the same L1 and
    perceptual + Feat-D + TG-D (N=5, L=32)."""
    from sfd.config import load_config
    from sfd.train import build_run

    common = [
        f"generator.num_blocks={blocks}",
        "generator.pretrained=random",
        "clip.weights=random",
        "loss.vgg_weights=random",
        f"data.patch_size={patch}",
        f"image_d.input_size={patch}",
        f"train.device={device}",
        f"train.precision={precision}",
        *(extra or []),
    ]
    return {name: build_run(load_config(None, common + STEP_RUNS[name])) for name in names or DEFAULT_STEP_RUNS}


def _step_fn(run, batch: int, patch: int, eager: bool = False):
    """One iteration of ``run`` on a seeded random batch; ``eager``: a graphed run's step run without its graph
    (a replay dispatches nothing to count)."""
    from sfd.train import train_step

    s = run.cfg.generator.scale
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(batch, 3, patch // s, patch // s, generator=gen).to(run.device)
    hr = torch.rand(batch, 3, patch, patch, generator=gen).to(run.device)
    return lambda: train_step(run, lr, hr, uncaptured=eager)


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts what one iteration launches: the aten operators that reach a backend kernel (below autograd),
    plus, under torch.compile, the kernels inductor generated (each fused kernel is one launch).

    A dispatch mode alone would not count compiled code honestly: torch.compile falls back to eager under a
    mode (dynamo skips every frame), so the eager operators would be counted. With ``ignore_compile_internals``
    the compiled artifacts run as compiled and the mode sees the aten operators they dispatch (inductor's
    extern kernels such as convolutions and matmuls, the runtime wrappers' copies); the kernels inductor wrote
    (C++ on the CPU, Triton on CUDA) dispatch nothing, so they are counted as the output code calls them
    (``sys.setprofile``; this slows the counted iteration, which is not timed). A step replayed from CUDA
    graphs (``train.cuda_graph``, ``compile_mode=reduce-overhead``) launches graphs, not kernels: not counted."""

    def __init__(self):
        super().__init__()
        self.count = 0  # aten operators
        self.kernels = 0  # inductor-generated kernels
        self._previous = None

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))

    def _profile(self, frame, event, arg):
        if event == "c_call":  # a C++ kernel (each is a module's ``kernel``), called from inductor's output code
            if getattr(arg, "__name__", None) == "kernel" and "AsyncCompile" in frame.f_globals:
                self.kernels += 1
        elif event == "call":  # a Triton kernel's launch (CachingAutotuner.run; not yet run on a GPU)
            code = frame.f_code
            if code.co_name == "run" and code.co_filename.endswith("triton_heuristics.py"):
                self.kernels += 1
        if self._previous is not None:
            self._previous(frame, event, arg)

    def __enter__(self):
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        return super().__enter__()

    def __exit__(self, *exc):
        sys.setprofile(self._previous)
        return super().__exit__(*exc)


def step_measures(run, batch: int, patch: int) -> dict:
    """FLOPs and launches of one iteration (the same whatever the machine's load). FLOPs are counted eagerly
    (torch.compile falls back to eager under the FLOP counter; the arithmetic is the same); ``ops`` are the
    aten operators that reach a kernel plus, compiled, the kernels inductor generated (``compiled_kernels``
    of them), counted in the compiled step as it runs (``_CountOps``). A run replayed from CUDA graphs is
    counted eagerly: a replay dispatches nothing to count."""
    from torch.utils.flop_counter import FlopCounterMode

    fn = _step_fn(run, batch, patch, eager=True)
    with FlopCounterMode(display=False) as flops:
        fn()
    with _CountOps() as ops:
        fn()
    return {"flops": flops.get_total_flops(), "ops": ops.count + ops.kernels, "compiled_kernels": ops.kernels}


def gpu_kernel_seconds(fn) -> float:
    """Seconds of GPU kernels (and copies) in one call of ``fn``, from the profiler's device trace."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(e.time_range.elapsed_us() for e in prof.events() if e.device_type == DeviceType.CUDA) / 1e6


TINY_PATCH = 32  # CLIP's stride: the smallest patch every run accepts; its arithmetic is negligible


def _warm_up(fns: dict, iterations: int, device, peak: dict | None = None) -> dict[str, float]:
    """Seconds of ``iterations`` calls of each function, timed apart from the steps (torch.compile's compile,
    a CUDA graph's capture); with ``peak`` (CUDA) also each run's peak memory."""
    seconds = {}
    for k, fn in fns.items():
        _sync(device)
        if peak is not None:  # a CUDA graph's memory is taken at its capture, in the warm-up
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        for _ in range(iterations):
            fn()
        _sync(device)
        seconds[k] = time.perf_counter() - t
        if peak is not None:
            peak[k] = torch.cuda.max_memory_allocated() / 2**20
    return seconds


def bench_step(*args, **kwargs) -> dict:
    """``_bench_step`` (below), with torch.compile set up as a training run meets it: a run compiles one patch
    shape; the bench compiles several runs and two shapes (the tiny input) in one process, so each shape is
    compiled static (not as dynamo's automatic dynamic shapes after the first change of shape) and past
    dynamo's default of 8 variants per function (ESRGAN and SFD share the generator's code, the CLIP runs
    its forward: with and without gradients, per shape)."""
    import torch._dynamo

    with torch._dynamo.config.patch(automatic_dynamic_shapes=False, recompile_limit=64):
        return _bench_step(*args, **kwargs)


def _bench_step(
    blocks=23,
    batch=2,
    patch=128,
    device="cpu",
    precision="fp32",
    repeats=3,
    warmup=1,
    extra=None,
    names=None,
    profile_rows: int = 0,
    measures: bool = True,
    peak_tflops: float | None = None,
    tiny: bool = True,
) -> dict:
    """Seconds per iteration of each run, interleaved, after ``warmup`` iterations timed apart (compile
    and CUDA-graph capture happen there: at least 5 when the config compiles or captures). With
    ``measures`` also, per run: FLOPs and operators per iteration, seconds per TFLOP, with ``tiny`` the
    host time of one iteration at batch 1 on a 32² patch (where time is per-operator overhead, not arithmetic);
    on CUDA the achieved TFLOP/s (and its share of ``peak_tflops``) and the GPU-busy share of a step."""
    _quiet()
    runs = step_runs(blocks, patch, device, precision, extra, names)
    fns = {k: _step_fn(r, batch, patch) for k, r in runs.items()}
    if any(r.cfg.train.compile or r.step.name == "graphed" for r in runs.values()):
        warmup = max(warmup, 5)
    cuda = str(device).startswith("cuda")
    peak = {} if cuda else None
    warmup_s = _warm_up(fns, warmup, device, peak)
    times = interleaved(fns, repeats, 0, device)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_run = None
    if measures:
        per_run = {k: step_measures(r, batch, patch) for k, r in runs.items()}
        if tiny:
            tiny_runs = step_runs(blocks, TINY_PATCH, device, precision, extra, list(runs))
            fns_tiny = {k: _step_fn(r, 1, TINY_PATCH) for k, r in tiny_runs.items()}
            tiny_warmup_s = _warm_up(fns_tiny, warmup, device)  # compiled: new shapes, another compile
            tiny_times = interleaved(fns_tiny, repeats, 0, device)
        for k, m in per_run.items():
            m["tiny_host_s"] = statistics.median(tiny_times[k]) if tiny else None
            m["s_per_tflop"] = med[k] / (m["flops"] / 1e12) if m["flops"] else None
            if str(device).startswith("cuda"):
                m["tflop_per_s"] = m["flops"] / 1e12 / med[k]
                m["peak_share"] = m["tflop_per_s"] / peak_tflops if peak_tflops else None
                m["gpu_busy"] = gpu_kernel_seconds(fns[k]) / med[k]
    if cuda:  # one more iteration of each run alone, for its peak memory
        for k, fn in fns.items():
            torch.cuda.reset_peak_memory_stats()
            fn()
            peak[k] = max(peak[k], torch.cuda.max_memory_allocated() / 2**20)
    base = med.get("ESRGAN")
    out = {
        "machine": machine(device),
        "command": command(),
        "setting": {
            "generator": f"RRDBNet {blocks} blocks",
            "batch": batch,
            "patch": patch,
            "device": device,
            "precision": precision,
            "repeats": repeats,
            "overrides": list(extra or []),
        },
        "seconds_per_iteration": med,
        "warmup_seconds": warmup_s,
        "warmup_iterations": warmup,
        "tiny_warmup_seconds": tiny_warmup_s if measures and tiny else None,
        "peak_mb": peak,
        "times": times,
        "ratio_to_esrgan": {k: v / base for k, v in med.items()} if base else None,
        "flop_ratio_to_esrgan": (
            {k: m["flops"] / per_run["ESRGAN"]["flops"] for k, m in per_run.items()}
            if per_run and base and per_run["ESRGAN"]["flops"]
            else None
        ),
        "measures": per_run,
    }
    if base and "SFD" in med:
        out["sfd_over_esrgan"] = med["SFD"] / base
        if per_run:  # the yardstick: the time ratio against what the arithmetic alone would give
            out["sfd_over_esrgan_flops"] = per_run["SFD"]["flops"] / per_run["ESRGAN"]["flops"]
    if profile_rows and "SFD" in runs:
        out["profile"] = profile_step(runs["SFD"], batch, patch, profile_rows)
    return out


def profile_step(run, batch: int, patch: int, rows: int = 20) -> str:
    """torch.profiler's top operators (by self time) over one SFD iteration."""
    from torch.profiler import ProfilerActivity, profile

    fn = _step_fn(run, batch, patch)
    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
    sort = "self_cuda_time_total" if run.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=40)


# ---------------------------------------------------------------- input pipeline


def bench_data(
    folders,
    batch=2,
    patch=128,
    workers=(0, 1, 2),
    batches=10,
    repeats=3,
    step_s: float | None = None,
    blocks: int = 23,
    cache_mb: float = 512,
    device: str = "cpu",
    crop_pad_size: int | None = None,
    jpeg_backend: str = "diffjpeg",
) -> dict:
    """Patches/s of the classic loader (bicubic LR) and of the real-world one (degradations in the
    loader), with each number of workers; and of the device path: the loader that only decodes and
    crops the HR, and the degradations of its batches run batched on ``device`` (``degrade_batch``),
    each measured alone. Against what one SFD training step consumes (measured on ``device``)."""
    from sfd.config import load_config
    from sfd.data.pipeline import DegradationPlan, build_degrader, build_loader, degrade_batch, plan_degradations

    _quiet()
    dev = torch.device(device)
    base = [
        f"data.train=[{','.join(map(str, folders))}]",
        f"data.patch_size={patch}",
        f"data.batch_size={batch}",
        f"data.cache_mb={cache_mb}",
    ]
    crop = "null" if crop_pad_size is None else crop_pad_size
    realworld = [f"data.degradation={{queue_size: 0, crop_pad_size: {crop}, jpeg_backend: {jpeg_backend}}}"]
    iters = {}
    for kind in ("classic", "real-world"):
        extra = realworld if kind == "real-world" else []
        for n in workers:
            cfg = load_config(None, base + extra + [f"data.num_workers={n}"])
            cpu = torch.device("cpu")
            degrader = build_degrader(cfg, plan_degradations(cfg, cpu)) if kind == "real-world" else None
            loader = build_loader(cfg, 0, 10**9, torch.device("cpu"), degrader=degrader)
            iters[f"{kind}, {n} workers"] = iter(loader)
    # The device path: the loader decodes and crops HR and draws the parameters and kernels (its rate
    # with the most workers), and the degradations run on the device from batches already in memory.
    cfg = load_config(None, base + realworld + [f"data.num_workers={max(workers)}"])
    drawing = build_degrader(cfg, DegradationPlan("draw", dev, batched=True))
    hr_only = iter(build_loader(cfg, 0, 10**9, torch.device("cpu"), degrader=drawing))
    iters[f"HR + draws loader, {max(workers)} workers"] = hr_only
    held = [next(hr_only) for _ in range(batches)]

    def take(it):
        return lambda: [next(it) for _ in range(batches)]

    def degrade_held(degrader):
        def fn():
            out = [degrade_batch(degrader, b, dev) for b in held]
            _sync(dev)
            return out

        return fn

    fns = {k: take(it) for k, it in iters.items()}
    # Both ways of running the stages after the first resize (data.degradation.batched), and the
    # operators each dispatches per patch: what a GPU pays a launch for, countable on a CPU.
    ops = {}
    for way, batched in (("per sample", False), ("batched", True)):
        degrader = build_degrader(cfg, DegradationPlan("draw", dev, batched))
        name = f"degradations on {device}, {way}"
        fns[name] = degrade_held(degrader)
        with _CountOps() as counted:
            degrade_batch(degrader, held[0], dev)
        ops[name] = counted.count / batch
    times = interleaved(fns, repeats, warmup=1, device=device)
    rates = {k: batch * batches / statistics.median(v) for k, v in times.items()}
    if step_s is None:
        step_s = statistics.median(
            bench_step(blocks, batch, patch, device=device, repeats=1, names=["SFD"])["times"]["SFD"]
        )
    return {
        "machine": machine(device),
        "command": command(),
        "setting": {
            "batch": batch,
            "patch": patch,
            "crop_pad_size": crop_pad_size,
            "jpeg_backend": jpeg_backend,
            "device": device,
            "batches_per_repeat": batches,
            "repeats": repeats,
            "cache_mb": cache_mb,
        },
        "patches_per_second": rates,
        "ops_per_patch": ops,
        "step_seconds": step_s,
        "step_consumes_patches_per_second": batch / step_s,
    }


# ---------------------------------------------------------------- JPEG codecs' colour artefacts


def chroma_statistic(lr: torch.Tensor) -> torch.Tensor:
    """Per image of (B, 3, H, W) in [0, 1]: log10 of the high-frequency energy of the chroma (Cb + Cr)
    over that of the luma (JFIF YCbCr, 0-255). High frequency: the 4-neighbour Laplacian, squared,
    averaged over the interior. DiffJPEG's 2x2-repeated chroma raises it; libjpeg's interpolation lowers it."""
    m = (
        torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
        .to(lr.device)
        .double()
    )
    ycc = torch.einsum("cd,bdhw->bchw", m, lr.double() * 255)
    c = ycc[..., 1:-1, 1:-1]
    lap = 4 * c - ycc[..., :-2, 1:-1] - ycc[..., 2:, 1:-1] - ycc[..., 1:-1, :-2] - ycc[..., 1:-1, 2:]
    energy = lap.pow(2).mean((-2, -1))  # (B, 3)
    return torch.log10((energy[:, 1] + energy[:, 2]) / energy[:, 0])


def _patches(folders, patch: int, per_image: int, seed: int) -> torch.Tensor:
    """``per_image`` random patches of every image at least ``patch`` on a side (mod-4 positions)."""
    import numpy as np

    from sfd.data.io import list_images, load_rgb

    out = []
    for i, path in enumerate(f for folder in folders for f in list_images(folder)):
        img = torch.from_numpy(np.asarray(load_rgb(path)).copy()).permute(2, 0, 1)
        h, w = img.shape[-2:]
        if min(h, w) < patch:
            continue
        rng = np.random.default_rng([seed, i])
        for _ in range(per_image):
            top, left = (int(rng.integers(0, (n - patch) // 4 + 1)) * 4 for n in (h, w))
            out.append(img[:, top : top + patch, left : left + patch].float() / 255)
    return torch.stack(out)


def bench_chroma(
    folders,
    patch: int = 256,
    per_image: int = 2,
    seed: int = 0,
    backends=("diffjpeg", "pillow", "torch"),
    reference=None,
) -> dict:
    """Statistics of real-world LR images made from the same HR patches with the same random
    parameters (Real-ESRGAN's float JPEG qualities; rounded for the integer codecs), through each
    JPEG codec, and with the first-order resize by size instead of by scale factor: the chroma
    statistic (``chroma_statistic``), log10 of the RGB Laplacian energy, and the PSNR of the LR
    upsampled x4 (bicubic) against the HR. ``reference``: BasicSR's ``diffjpeg.py``, whose codec is
    then measured too ("basicsr")."""
    import importlib.util

    import torch.nn.functional as F
    from tqdm import tqdm

    from sfd.data.degradations import DegradationConfig, RealESRGANDegradation

    hr = _patches(folders, patch, per_image, seed)
    params = [RealESRGANDegradation().sample(seed * 10**6 + k) for k in range(len(hr))]
    variants = {name: RealESRGANDegradation(DegradationConfig(jpeg_backend=name)) for name in backends}
    variants["diffjpeg, first_resize=size"] = RealESRGANDegradation(DegradationConfig(first_resize="size"))
    if reference is not None:
        spec = importlib.util.spec_from_file_location("basicsr_diffjpeg", reference)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        codec = module.DiffJPEG(differentiable=False)

        class BasicSRCodec(RealESRGANDegradation):
            def _jpeg(self, x, quality):
                return codec(x.clamp(0, 1).float(), quality=torch.tensor([float(quality)])).to(x.dtype)

        variants["basicsr"] = BasicSRCodec()
    rows = {name: {"chroma": [], "hf": [], "psnr": []} for name in variants}
    for k in tqdm(range(0, len(hr), 8), desc="degradation statistics", leave=False):
        x = hr[k : k + 8]
        for name, degrade in variants.items():
            lr = degrade.apply(x, params[k : k + 8])[0]
            rows[name]["chroma"].append(chroma_statistic(lr))
            d = lr.double() * 255
            lap = 4 * d[..., 1:-1, 1:-1] - d[..., :-2, 1:-1] - d[..., 2:, 1:-1] - d[..., 1:-1, :-2] - d[..., 1:-1, 2:]
            rows[name]["hf"].append(torch.log10(lap.pow(2).mean((-3, -2, -1))))
            up = F.interpolate(lr.double(), scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
            rows[name]["psnr"].append(-10 * torch.log10((up - x.double()).pow(2).mean((-3, -2, -1))))
    mean = {name: {k: float(torch.cat(v).mean()) for k, v in r.items()} for name, r in rows.items()}
    return {
        "machine": machine(),
        "command": command(),
        "setting": {"patches": len(hr), "patch": patch, "per_image": per_image, "seed": seed},
        "chroma_statistic": {name: m["chroma"] for name, m in mean.items()},
        "log10_rgb_hf_energy": {name: m["hf"] for name, m in mean.items()},
        "upsampled_lr_psnr": {name: m["psnr"] for name, m in mean.items()},
    }


# ---------------------------------------------------------------- sr (tiled vs untiled)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sr_case(
    blocks: int,
    size: int,
    tile: int,
    tile_pad: int,
    device: str,
    precision: str,
    repeats: int,
    channels_last: bool = False,
    cuda_graph: bool | str = False,
) -> dict:
    """One size and tiling in this process: seconds per image and peak memory."""
    from sfd.config import GeneratorConfig
    from sfd.inference import InferenceSettings, Upscaler
    from sfd.models.generators import build_generator
    from sfd.models.loading import LoadedGenerator

    torch.manual_seed(0)
    g = build_generator(GeneratorConfig(num_blocks=blocks)).eval()
    settings = InferenceSettings(
        device=device,
        precision=precision,
        tile=tile,
        tile_pad=tile_pad,
        channels_last=channels_last,
        cuda_graph=cuda_graph,
    )
    up = Upscaler(LoadedGenerator(g, 4, "ESRGAN", f"random RRDBNet {blocks} blocks"), settings)
    image = torch.rand(3, size, size)
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # With graphs a shape's first run is eager and its second is captured: both before the timed runs.
    t = time.perf_counter()
    times = interleaved({"sr": lambda: up(image)}, repeats, 2 if up.graphed else 1, device)
    warmup = time.perf_counter() - t - sum(times["sr"])
    peak = torch.cuda.max_memory_allocated() / 2**20 if str(device).startswith("cuda") else _peak_rss_mb()
    return {"seconds": statistics.median(times["sr"]), "peak_mb": peak, "warmup_seconds": warmup, "graphed": up.graphed}


def bench_sr(
    sizes=(128, 256, 512, 1024),
    tile=512,
    tile_pad=32,
    blocks=23,
    device="cpu",
    precision="fp32",
    repeats=2,
    channels_last=False,
    cuda_graph=False,
) -> dict:
    """``sfd sr``'s tiled path against the whole image at once, as the input grows. Each case runs in
    its own process (so that peak memory is the case's own), tiled and untiled alternating; the processes
    are forked from one that imported sfd once (multiprocessing's forkserver: it never touches CUDA).
    ``channels_last`` and ``cuda_graph`` are ``InferenceSettings``' switches."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from sfd.inference import InferenceSettings

    InferenceSettings(device=device, precision=precision, cuda_graph=cuda_graph)  # refuse bad switches here, once
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["sfd.bench", "sfd.inference", "sfd.models.generators"])
    rows = []
    for size in sizes:
        row = {"size": size, "tiles": math.ceil(size / tile) ** 2 if tile > 0 else 1}
        for name, t in (("untiled", 0), ("tiled", tile)):
            args = (blocks, size, t, tile_pad, device, precision, repeats, channels_last, cuda_graph)
            with ProcessPoolExecutor(1, mp_context=ctx) as one:  # a new process per case
                try:
                    res = one.submit(_sr_case, *args).result()
                except Exception as e:  # a benchmark runs once on a borrowed GPU: say why a case failed
                    raise RuntimeError(f"sr case {size}² {name} failed: {type(e).__name__}: {e}") from e
            mp_per_s = (size * 4) ** 2 / 1e6 / res["seconds"]
            row[name] = {"mp_per_s": mp_per_s, **{k: res[k] for k in ("peak_mb", "warmup_seconds", "graphed")}}
        row["tiled_over_untiled_speed"] = row["tiled"]["mp_per_s"] / row["untiled"]["mp_per_s"]
        rows.append(row)
    return {
        "machine": machine(device),
        "command": command(),
        "setting": {
            "generator": f"RRDBNet {blocks} blocks x4",
            "tile": tile,
            "tile_pad": tile_pad,
            "device": device,
            "precision": precision,
            "repeats": repeats,
            "channels_last": channels_last,
            "cuda_graph": cuda_graph,
        },
        "rows": rows,
    }


# ---------------------------------------------------------------- IQA


def bench_iqa(size=500, images=4, repeats=3, device="cpu") -> dict:
    """Images/s of SFD-IQA (from a random-weights checkpoint of the IQA config), CLIP-IQA (same RN50) and NIQE."""
    import tempfile

    from sfd.config import load_config
    from sfd.metrics import create_metric
    from sfd.train import build_run, save_checkpoint

    _quiet()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            "iqa", ["generator.pretrained=random", "clip.weights=random", "loss.vgg_weights=random", "train.device=cpu"]
        )
        ckpt = save_checkpoint(build_run(cfg), os.path.join(tmp, "iqa.pth"))
        metrics = {
            "SFD-IQA": create_metric("sfd-iqa", device=device, checkpoint=ckpt),
            "CLIP-IQA": create_metric("clipiqa", device=device, weights="random"),
        }
    try:
        metrics["NIQE"] = create_metric("niqe")
    except Exception as err:  # the pristine model file may be missing
        print(f"NIQE skipped: {err}", file=sys.stderr)
    gen = torch.Generator().manual_seed(0)
    batch = [torch.rand(3, size, size, generator=gen) for _ in range(images)]

    def score(m):
        def fn():
            with torch.no_grad():
                m(batch)

        return fn

    times = interleaved({k: score(m) for k, m in metrics.items()}, repeats, 1, device)
    rates = {k: images / statistics.median(v) for k, v in times.items()}
    return {
        "machine": machine(device),
        "command": command(),
        "setting": {"size": size, "images": images, "repeats": repeats, "device": device},
        "images_per_second": rates,
        "sfd_iqa_over_clip_iqa": rates["SFD-IQA"] / rates["CLIP-IQA"],
    }


# ---------------------------------------------------------------- step time vs patch and batch


def _sweep_case(blocks: int, batch: int, patch: int, device: str, repeats: int) -> dict:
    _quiet()
    run = step_runs(blocks, patch, device, names=["SFD"])["SFD"]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = interleaved({"SFD": _step_fn(run, batch, patch)}, repeats, 1, device)["SFD"]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else _peak_rss_mb()
    return {"seconds": statistics.median(t), "peak_mb": peak}


def bench_sweep(
    patches=(64, 128, 192, 256),
    batches=(1, 2, 4, 8),
    base_patch=128,
    base_batch=2,
    blocks=23,
    device="cpu",
    repeats=1,
    plot: str | None = None,
) -> dict:
    """SFD step time and peak memory vs the patch size (at ``base_batch``) and vs the batch (at ``base_patch``),
    each case in its own process; optionally a PNG plot."""
    import json
    import subprocess

    cases = [("patch", p, base_batch, p) for p in patches] + [("batch", b, b, base_patch) for b in batches]
    rows = []
    for axis, _value, b, p in cases:
        args = json.dumps([blocks, b, p, device, repeats])
        code = f"import json; from sfd.bench import _sweep_case; print(json.dumps(_sweep_case(*json.loads({args!r}))))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        rows.append({"axis": axis, "batch": b, "patch": p, **json.loads(out.strip().splitlines()[-1])})
    result = {
        "machine": machine(device),
        "command": command(),
        "setting": {"generator": f"RRDBNet {blocks} blocks", "device": device, "repeats": repeats},
        "rows": rows,
    }
    if plot:
        _plot_sweep(rows, plot, result["setting"])
    return result


def _plot_sweep(rows: list[dict], path: str, setting: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3), dpi=80)
    for ax, axis, label in ((axes[0], "patch", "HR patch (px)"), (axes[1], "batch", "batch")):
        pts = [r for r in rows if r["axis"] == axis]
        xs = [r[axis] for r in pts]
        ax.plot(xs, [r["seconds"] for r in pts], "o-", color="tab:blue")
        ax.set_xlabel(label)
        ax.set_ylabel("s / iteration", color="tab:blue")
        ax.set_ylim(bottom=0)
        twin = ax.twinx()
        twin.plot(xs, [r["peak_mb"] / 1024 for r in pts], "s--", color="tab:red")
        twin.set_ylabel("peak memory (GiB)", color="tab:red")
        twin.set_ylim(bottom=0)
    fig.suptitle(f"SFD step, {setting['generator']}, {setting['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
