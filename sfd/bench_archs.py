"""``sfd bench step --arch NAME[,NAME]``: what SFD costs per generator architecture, side by side.

For each architecture (at its documented default size, sfd.models.archs) four training runs that differ
only in their discriminators are timed interleaved (``sfd.bench.interleaved``):

* ``G + VGG``: the generator with L1 and the VGG19 perceptual loss, no discriminator, no CLIP;
* ``pixel D``: the same plus ESRGAN's VGG-style pixel discriminator (RaGAN), i.e. ``sfd bench step``'s ESRGAN;
* ``SFD Feat-D only``: the same plus CLIP RN50 (SR with gradient, HR without) and Feat-D;
* ``SFD``: plus TG-D (N=5 prompt pairs of length 32), the classic SFD step.

The time ratio SFD / pixel D stands beside the FLOP ratio of the same two steps, and the share of the SFD
step that Feat-D and CLIP take is (``SFD Feat-D only`` - ``G + VGG``) / ``SFD``, in time and in FLOPs.
"""

from __future__ import annotations

import statistics

from sfd.bench import _quiet, _step_fn, _warm_up, command, interleaved, machine, step_runs

__all__ = ["ARCH_RUNS", "bench_archs"]

# run label -> (sfd.bench.STEP_RUNS entry, extra overrides)
ARCH_RUNS = {
    "G + VGG": ("SFD Feat-D only", ["feat_d.enabled=false"]),
    "pixel D": ("ESRGAN", []),
    "SFD Feat-D only": ("SFD Feat-D only", []),
    "SFD": ("SFD", []),
}


def _runs(arch: str, patch: int, device: str, precision: str, extra: list[str]) -> dict:
    out = {}
    for label, (name, more) in ARCH_RUNS.items():
        overrides = [f"generator.arch={arch}", *extra, *more]
        out[label] = step_runs(23, patch, device, precision, overrides, [name])[name]
    return out


def bench_archs(
    archs: list[str],
    batch: int = 2,
    patch: int = 128,
    device: str = "cpu",
    precision: str = "fp32",
    repeats: int = 3,
    warmup: int = 1,
    extra: list[str] | None = None,
) -> dict:
    """Seconds and FLOPs per iteration of the four runs above, for each architecture in ``archs``."""
    from sfd.models.archs import parameter_count

    _quiet()
    rows = {}
    for arch in archs:
        runs = _runs(arch, patch, device, precision, list(extra or []))
        fns = {k: _step_fn(r, batch, patch) for k, r in runs.items()}
        _warm_up(fns, warmup, device)
        med = {k: statistics.median(v) for k, v in interleaved(fns, repeats, 0, device).items()}
        flops = {k: _flops(r, batch, patch) for k, r in runs.items()}
        g, sfd, pixel, feat = med["G + VGG"], med["SFD"], med["pixel D"], med["SFD Feat-D only"]
        rows[arch] = {
            "generator_parameters": parameter_count(runs["SFD"].generator),
            "seconds_per_iteration": med,
            "gflops_per_iteration": {k: v / 1e9 for k, v in flops.items()},
            "sfd_over_pixel_d": sfd / pixel,
            "sfd_over_pixel_d_flops": flops["SFD"] / flops["pixel D"],
            "featd_clip_share": (feat - g) / sfd,
            "featd_clip_share_flops": (flops["SFD Feat-D only"] - flops["G + VGG"]) / flops["SFD"],
            "generator_vgg_share": g / sfd,
        }
    return {
        "machine": machine(device),
        "command": command(),
        "setting": {
            "batch": batch,
            "patch": patch,
            "device": device,
            "precision": precision,
            "repeats": repeats,
            "overrides": list(extra or []),
        },
        "archs": rows,
    }


def _flops(run, batch: int, patch: int) -> int:
    """FLOPs of one iteration, counted eagerly (``sfd.bench.step_measures`` without its operator count,
    which profiles every call and costs many steps' time on a CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as flops:
        _step_fn(run, batch, patch, eager=True)()
    return flops.get_total_flops()


def table(result: dict) -> list[str]:
    lines = [
        "| arch | G params | G + VGG s/it | pixel D s/it | SFD s/it | SFD / pixel D time | (FLOPs) "
        "| Feat-D + CLIP share of SFD: time | (FLOPs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, r in result["archs"].items():
        s = r["seconds_per_iteration"]
        lines.append(
            f"| {arch} | {r['generator_parameters'] / 1e6:.2f} M | {s['G + VGG']:.3f} | {s['pixel D']:.3f} "
            f"| {s['SFD']:.3f} | {r['sfd_over_pixel_d']:.2f} | {r['sfd_over_pixel_d_flops']:.2f} "
            f"| {r['featd_clip_share']:.0%} | {r['featd_clip_share_flops']:.0%} |"
        )
    return lines
