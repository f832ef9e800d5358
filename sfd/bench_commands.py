"""``sfd bench step|data|chroma|sr|iqa|sweep``: the tables of docs/benchmarks.md (see ``sfd.bench``)."""

from __future__ import annotations

import argparse
import json

from sfd.inference.commands import CUDA_GRAPH, add_speed_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure speed against the peers, side by side (docs/benchmarks.md)")
    bench = p.add_subparsers(dest="bench", metavar="WHAT", required=True)

    def add(name: str, help: str, fn) -> argparse.ArgumentParser:
        q = bench.add_parser(name, help=help)
        q.add_argument("--json", action="store_true", help="print JSON instead of a table")
        q.add_argument("--device", default="cpu")
        q.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians reported)")
        q.set_defaults(func=fn)
        return q

    q = add(
        "step",
        "seconds per training iteration: G only, ESRGAN, SFD and each SFD branch (--only LDL SeD-P DualFormer too)",
        cmd_step,
    )
    q.add_argument("--blocks", type=int, default=23, help="RRDB blocks (default 23)")
    q.add_argument("--batch", type=int, default=2)
    q.add_argument("--patch", type=int, default=128, help="HR patch size")
    q.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    q.add_argument("--only", nargs="+", metavar="RUN", help="a subset of the runs, e.g. --only ESRGAN SFD")
    q.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. train.channels_last=true",
    )
    q.add_argument("--profile", type=int, default=0, metavar="ROWS", help="also profile one SFD step (top ROWS ops)")
    q.add_argument(
        "--no-measures",
        dest="measures",
        action="store_false",
        help="skip FLOPs, operators and tiny-input host time per iteration (they cost two more steps and a tiny run)",
    )
    q.add_argument("--no-tiny", dest="tiny", action="store_false", help="skip the tiny-input host time (two more runs)")
    q.add_argument("--peak-tflops", type=float, help="the device's peak (e.g. bf16 matrix) rate, for the share")
    q.add_argument(
        "--arch",
        metavar="NAME[,NAME]",
        help="per generator architecture (sfd archs): SFD vs the pixel discriminator, time and FLOP ratios",
    )

    q = add("data", "patches/s of the loaders (0, 1, 2 workers) and of the degradations on --device", cmd_data)
    q.add_argument("folders", nargs="+", help="HR image folders")
    q.add_argument("--batch", type=int, default=2)
    q.add_argument("--patch", type=int, default=128)
    q.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--batches", type=int, default=10, help="batches per round and loader")
    q.add_argument("--cache-mb", type=float, default=512)
    q.add_argument("--step-s", type=float, default=None, help="SFD step time to compare with (default: measured)")
    q.add_argument("--blocks", type=int, default=23, help="RRDB blocks of the measured step")
    q.add_argument("--crop-pad-size", type=int, default=None, help="Real-ESRGAN's crop structure (recipes: 400)")
    q.add_argument("--jpeg-backend", choices=["diffjpeg", "pillow", "torch"], default="diffjpeg")

    q = add("chroma", "colour artefacts and PSNR of real-world LR images through each JPEG codec", cmd_chroma)
    q.add_argument("folders", nargs="+", help="HR image folders (e.g. B100 and Set14)")
    q.add_argument("--patch", type=int, default=256)
    q.add_argument("--per-image", type=int, default=2, help="random patches per image")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--backends", nargs="+", default=["diffjpeg", "pillow", "torch"])
    q.add_argument("--reference", metavar="PY", help="BasicSR's diffjpeg.py: measure its codec too")

    q = add("sr", "sfd sr tiled vs untiled: MP/s and peak memory as the input grows", cmd_sr)
    q.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    q.add_argument("--tile", type=int, default=512)
    q.add_argument("--tile-pad", type=int, default=32, help="default: sfd sr's")
    q.add_argument("--blocks", type=int, default=23)
    q.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    add_speed_options(q)

    q = add("iqa", "images/s of SFD-IQA, CLIP-IQA (same RN50) and NIQE", cmd_iqa)
    q.add_argument("--size", type=int, default=500)
    q.add_argument("--images", type=int, default=4)

    q = add("sweep", "SFD step time and peak memory vs patch size and batch (optionally a PNG)", cmd_sweep)
    q.add_argument("--patches", type=int, nargs="+", default=[64, 128, 192, 256])
    q.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    q.add_argument("--blocks", type=int, default=23)
    q.add_argument("--plot", help="write the plot to this PNG")


def _emit(args, result: dict, table: list[str]) -> int:
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"machine: {result['machine']}")
    print(f"command: {result['command']}")
    print("setting: " + ", ".join(f"{k} {v}" for k, v in result["setting"].items()))
    print("\n".join(table))
    return 0


def cmd_step(args) -> int:
    from sfd.bench import STEP_RUNS, bench_step
    from sfd.errors import UsageError

    if args.arch:
        return _cmd_step_archs(args)

    unknown = [n for n in args.only or [] if n not in STEP_RUNS]
    if unknown:
        raise UsageError(f"unknown runs {unknown}; choose from {list(STEP_RUNS)}")
    from sfd import distributed
    from sfd.device import resolve_device

    # Under torchrun: every process steps its own batch of --batch, gradients averaged (sfd.distributed).
    distributed.init(resolve_device("auto" if args.device == "cuda" else args.device))
    r = bench_step(
        args.blocks,
        args.batch,
        args.patch,
        args.device,
        args.precision,
        args.repeats,
        extra=args.overrides,
        names=args.only,
        profile_rows=args.profile,
        measures=args.measures,
        peak_tflops=args.peak_tflops,
        tiny=args.tiny,
    )
    r["setting"]["processes"] = distributed.world_size()
    main = distributed.is_main()
    distributed.shutdown()
    if not main:  # rank 0 alone reports
        return 0
    m = r["measures"] or {}
    table = ["| run | s / iteration | ratio to ESRGAN | GFLOP / it | ops / it | tiny-input s / it | s / TFLOP |"]
    table.append("|---|---|---|---|---|---|---|")
    flop_ratio = r.get("flop_ratio_to_esrgan")
    for name, s in r["seconds_per_iteration"].items():
        ratio = f"{r['ratio_to_esrgan'][name]:.2f}" if r["ratio_to_esrgan"] else "-"
        if flop_ratio:
            ratio += f" (FLOPs {flop_ratio[name]:.2f})"
        x = m.get(name)
        kernels = x.get("compiled_kernels") if x else None
        ops = f"{x['ops']} ({kernels} compiled kernels)" if kernels else f"{x['ops']}" if x else "-"
        extra = (
            f"{x['flops'] / 1e9:.1f} | {ops} | {x['tiny_host_s'] or float('nan'):.4f} | {x['s_per_tflop']:.3f}"
            if x
            else "- | - | - | -"
        )
        table.append(f"| {name} | {s:.3f} | {ratio} | {extra} |")
    for name, x in m.items():
        if "gpu_busy" in x:
            share = f" ({x['peak_share']:.1%} of peak)" if x.get("peak_share") else ""
            table.append(f"{name}: {x['tflop_per_s']:.1f} TFLOP/s{share}, GPU busy {x['gpu_busy']:.0%} of the step")
    for name, w in r["warmup_seconds"].items():
        line = f"{name}: {r['warmup_iterations']} warm-up iterations (compile, capture) took {w:.1f} s"
        if r["tiny_warmup_seconds"]:
            line += f"; on the tiny input {r['tiny_warmup_seconds'][name]:.1f} s"
        table.append(line)
    if "sfd_over_esrgan" in r:
        line = f"\nSFD / ESRGAN = {r['sfd_over_esrgan']:.2f}"
        if "sfd_over_esrgan_flops" in r:
            line += f" (FLOP ratio {r['sfd_over_esrgan_flops']:.2f})"
        table.append(line)
    if "profile" in r:
        table.append("\n" + r["profile"])
    return _emit(args, r, table)


def _cmd_step_archs(args) -> int:
    from sfd.bench_archs import bench_archs, table
    from sfd.errors import UsageError
    from sfd.models.archs import ARCHS

    names = [n.strip() for n in args.arch.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARCHS]
    if unknown or not names:
        raise UsageError(f"--arch {args.arch}: unknown architecture {unknown[:1]}; known: {', '.join(ARCHS)}")
    r = bench_archs(names, args.batch, args.patch, args.device, args.precision, args.repeats, extra=args.overrides)
    return _emit(args, r, table(r))


def cmd_data(args) -> int:
    from sfd.bench import bench_data

    r = bench_data(
        args.folders,
        args.batch,
        args.patch,
        args.workers,
        args.batches,
        args.repeats,
        args.step_s,
        args.blocks,
        args.cache_mb,
        args.device,
        args.crop_pad_size,
        args.jpeg_backend,
    )
    need = r["step_consumes_patches_per_second"]
    ops = r["ops_per_patch"]
    table = ["| loader | patches / s | x what one step consumes | operators / patch |", "|---|---|---|---|"]
    table += [
        f"| {k} | {v:.1f} | {v / need:.1f} | {ops[k]:.0f} |" if k in ops else f"| {k} | {v:.1f} | {v / need:.1f} | |"
        for k, v in r["patches_per_second"].items()
    ]
    table.append(f"\none SFD step: {r['step_seconds']:.2f} s for {args.batch} patches = {need:.2f} patches/s")
    return _emit(args, r, table)


def cmd_chroma(args) -> int:
    from sfd.bench import bench_chroma

    r = bench_chroma(args.folders, args.patch, args.per_image, args.seed, args.backends, args.reference)
    table = ["| variant | chroma statistic | log10 RGB HF energy | upsampled-LR PSNR (dB) |", "|---|---|---|---|"]
    for k, v in r["chroma_statistic"].items():
        table.append(f"| {k} | {v:.3f} | {r['log10_rgb_hf_energy'][k]:.3f} | {r['upsampled_lr_psnr'][k]:.3f} |")
    table.append(f"\n{r['setting']['patches']} patches of {args.patch}², the same random parameters for every variant")
    return _emit(args, r, table)


def cmd_sr(args) -> int:
    from sfd.bench import bench_sr

    r = bench_sr(
        args.sizes,
        args.tile,
        args.tile_pad,
        args.blocks,
        args.device,
        args.precision,
        args.repeats,
        channels_last=args.channels_last,
        cuda_graph=CUDA_GRAPH[args.cuda_graph],
    )
    table = [
        "| input | tiles | untiled MP/s | tiled MP/s | tiled / untiled | untiled peak MB | tiled peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        u, t = row["untiled"], row["tiled"]
        ratio = row["tiled_over_untiled_speed"]
        table.append(
            f"| {row['size']}² | {row['tiles']} | {u['mp_per_s']:.3f} | {t['mp_per_s']:.3f} | {ratio:.2f} "
            f"| {u['peak_mb']:.0f} | {t['peak_mb']:.0f} |"
        )
    return _emit(args, r, table)


def cmd_iqa(args) -> int:
    from sfd.bench import bench_iqa

    r = bench_iqa(args.size, args.images, args.repeats, args.device)
    table = ["| metric | images / s |", "|---|---|"]
    table += [f"| {k} | {v:.2f} |" for k, v in r["images_per_second"].items()]
    table.append(f"\nSFD-IQA / CLIP-IQA = {r['sfd_iqa_over_clip_iqa']:.2f}")
    return _emit(args, r, table)


def cmd_sweep(args) -> int:
    from sfd.bench import bench_sweep

    r = bench_sweep(
        args.patches, args.batches, blocks=args.blocks, device=args.device, repeats=args.repeats, plot=args.plot
    )
    table = ["| batch | HR patch | s / iteration | peak MB |", "|---|---|---|---|"]
    table += [f"| {x['batch']} | {x['patch']} | {x['seconds']:.3f} | {x['peak_mb']:.0f} |" for x in r["rows"]]
    return _emit(args, r, table)
