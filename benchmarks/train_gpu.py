"""Real `sfd train` runs through the real loader (workers, pinned memory): benchmarks/gpu.sh's part `train`.

1. quickstart, the defaults (on one GPU: CUDA graphs on) beside ``train.cuda_graph=false``: the graphed run is
   stopped by SIGTERM midway and continued by ``--resume auto``; the losses of the first iterations and of
   those after the resume against the eager run's (relative difference, tolerance below: after 150 adversarial
   steps float differences may have grown past it, which the summary reports), validation PSNR at the end;
2. classic_rrdb_x4 at its real size in bf16 for ``--seconds`` (60): it/s from log.jsonl beside
   ``sfd bench step``'s s/iteration for the same setting (they should agree within 10 %);
3. classic_swinir_x4 and realworld_rrdb_x4 (degradations batched on the GPU) for half that each: it/s, and
   whether the step was captured or fell back to the sync-free step (the one line the run prints).

Random CLIP and VGG weights (no pretrained ones on the GPU machine): the speed and the agreement of the modes
do not depend on them; the losses and PSNR are not SFD's. Writes ``OUT/train.json`` and ``OUT/train.md``.

    python benchmarks/train_gpu.py --data DIR --val DIR --out OUT            # on the GPU machine
    python benchmarks/train_gpu.py --tiny --data DIR --val DIR --out OUT     # the CPU (the suite): tiny models,
                                                                             # classic_rrdb_x4 alone of the timed runs
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TOLERANCE = 0.02  # relative, on each logged loss of the first iterations: float roundings, cuDNN's choices
RANDOM = ["generator.pretrained=random", "clip.weights=random", "loss.vgg_weights=random"]
TINY = [
    "generator.num_feat=8",
    "generator.num_blocks=1",
    "feat_d.widths=[16,8,8,8]",
    "tg_d.n_pairs=1",
    "tg_d.length=4",
    "loss.perceptual_layers={conv1_2: 1.0}",
    "data.patch_size=64",
    "data.batch_size=2",
]
# config: (its real-size overrides, its tiny ones)
TIMED = {
    "classic_rrdb_x4": ([], TINY),
    "classic_swinir_x4": ([], ["generator.embed_dim=12", "generator.depths=[1]", "generator.num_heads=[1]", *TINY[2:]]),
    "realworld_rrdb_x4": (
        ["data.degradation.device=cuda"],  # batched on the GPU
        [*TINY, "data.degradation.crop_pad_size=96", "data.degradation.queue_size=4", "data.num_workers=0"],
    ),
}


PYTHON = os.environ.get("PYTHON") or sys.executable  # the interpreter that runs sfd, as in gpu.sh


def sfd_train(config: str, sets: list[str], log: Path, resume: bool = False) -> subprocess.Popen:
    cmd = [PYTHON, "-m", "sfd", "train", "-c", config, "--no-progress"]
    cmd += [a for s in sets for a in ("--set", s)] + (["--resume", "auto"] if resume else [])
    return subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, limit: float) -> int:
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


def read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def compare_losses(a: list[dict], b: list[dict], first: int) -> dict:
    """The largest relative difference of the losses both logged, over their first ``first`` common lines."""
    rows_b = {r["iter"]: r for r in b}
    worst, compared = 0.0, 0
    for r in [r for r in a if r["iter"] in rows_b][:first]:
        for k, v in r.items():
            if k.startswith("l_") and k in rows_b[r["iter"]]:
                w = rows_b[r["iter"]][k]
                worst = max(worst, abs(v - w) / max(abs(v), abs(w), 1e-8))
                compared += 1
    return {"max_relative_difference": worst, "values_compared": compared, "agree": compared > 0 and worst < TOLERANCE}


def said(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text()


def quickstart(args, out: Path, device_sets: list[str]) -> dict:
    """``train.cuda_graph=false`` to the end; then the defaults, stopped by SIGTERM midway and continued by
    ``--resume auto``: its losses against the eager run's before and after the resume, PSNR at the end."""
    iters = 6 if args.tiny else 300
    sets = [f"data.train=[{args.data}]", f"data.val={args.val}", f"train.iterations={iters}", "train.log_every=1"]
    sets += [f"train.val_every={iters}", f"train.save_every={iters // 2}", *device_sets]
    sets += ["train.pixel_warmup=3", "data.num_workers=2", "data.val_max_images=1", *TINY] if args.tiny else []
    result: dict = {"iterations": iters}

    def ended(name: str, d: Path, log: Path, rc: int, t0: float) -> list[dict]:
        rows = read_log(d / "quickstart")
        val = [r["val_psnr"] for r in rows if "val_psnr" in r]
        result[name] = {
            "exit": rc,
            "seconds": time.perf_counter() - t0,
            "last_iteration": rows[-1]["iter"] if rows else 0,
            "val_psnr": val[-1] if val else None,
            "graph_fell_back": said(log, "could not be captured"),
        }
        return rows

    d, log = out / "quickstart_cuda_graph_false", out / "quickstart_cuda_graph_false.log"
    t0 = time.perf_counter()
    rc = finish(sfd_train("quickstart", sets + [f"train.output_dir={d}", "train.cuda_graph=false"], log), args.limit)
    eager = ended("cuda_graph=false", d, log, rc, t0)

    # The defaults: SIGTERM midway (early on the CPU, where the run must still be going), then --resume auto
    d, log = out / "quickstart_default", out / "quickstart_default.log"
    t0 = time.perf_counter()
    proc = sfd_train("quickstart", sets + [f"train.output_dir={d}"], log)
    stop_at = 2 if args.tiny else iters // 2 + 1
    deadline = time.monotonic() + args.limit
    while proc.poll() is None and time.monotonic() < deadline:
        rows = read_log(d / "quickstart")
        if rows and rows[-1]["iter"] >= stop_at:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.2)
    stopped = finish(proc, args.limit)
    stopped_at = read_log(d / "quickstart")[-1]["iter"] if read_log(d / "quickstart") else 0
    resumed = finish(sfd_train("quickstart", sets + [f"train.output_dir={d}"], log, resume=True), args.limit)
    graphed = ended("default", d, log, resumed, t0)
    result["sigterm_resume"] = {
        "stopped_exit": stopped,  # 143 = 128 + SIGTERM: a checkpoint was written
        "stopped_at": stopped_at,
        "resumed_exit": resumed,
        "ok": stopped == 128 + signal.SIGTERM and resumed == 0 and bool(graphed) and graphed[-1]["iter"] == iters,
    }
    result["losses"] = compare_losses(graphed, eager, first=20)
    result["losses_after_resume"] = compare_losses([r for r in graphed if r["iter"] > stopped_at], eager, first=20)
    return result


def timed(args, out: Path, config: str, seconds: float, extra: list[str]) -> dict:
    """``config`` trained for ``seconds`` (``train.max_time``; ``--tiny``: 2 iterations): it/s over the lines after
    the first (warm-up)."""
    d = out / f"timed_{config}"
    log = out / f"{d.name}.log"
    sets = [f"data.train=[{args.data}]", "data.val=null", f"train.max_time={int(seconds)}s", *RANDOM, *extra]
    sets += [f"train.output_dir={d}"]
    rc = finish(sfd_train(config, sets, log), seconds + args.limit)
    rows = read_log(d / config)
    steady = rows[1:] or rows
    its = [r["it_per_s"] for r in steady]
    return {
        "exit": rc,
        "iterations": rows[-1]["iter"] if rows else 0,
        "it_per_s": sorted(its)[len(its) // 2] if its else None,  # median over the lines
        "graph_fell_back": said(log, "could not be captured"),
        "log": str(log),
    }


def bench_step(args, sets: list[str], precision: str) -> float | None:
    cmd = [PYTHON, "-m", "sfd", "bench", "step", "--only", "SFD", "--device", args.device]
    cmd += ["--precision", precision, "--json", "--no-tiny", "--repeats", "1" if args.tiny else "5"]
    cmd += ["--blocks", "1" if args.tiny else "23", "--batch", "2" if args.tiny else "32"]
    cmd += ["--patch", "64" if args.tiny else "128"] + [a for s in sets for a in ("--set", s)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.limit)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode:
        return None
    return json.loads(proc.stdout)["seconds_per_iteration"]["SFD"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="HR training photos")
    p.add_argument("--val", required=True, help="validation HR images (e.g. Set5)")
    p.add_argument("--out", default="bench_gpu")
    p.add_argument("--seconds", type=float, default=60, help="classic_rrdb_x4's timed run (half for the others)")
    p.add_argument("--limit", type=float, default=240, help="seconds before a run counts as hung")
    p.add_argument("--tiny", action="store_true", help="tiny models on the CPU, a few iterations (the suite)")
    args = p.parse_args()
    args.device = "cpu" if args.tiny else "cuda"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device_sets = [f"train.device={args.device}"]
    result = {"device": args.device, "quickstart": quickstart(args, out, device_sets)}

    seconds, precision = args.seconds, "fp32" if args.tiny else "bf16"  # bf16 is slow on CPUs
    for config, (real, tiny) in TIMED.items():
        if args.tiny and config != "classic_rrdb_x4":  # a process each (~10 s): tests/test_recipes.py trains them
            result[config] = {"skipped": "--tiny"}
            continue
        sets = [*device_sets, f"train.precision={precision}", *(tiny if args.tiny else real)]
        sets += ["train.log_every=1", "train.iterations=2"] if args.tiny else ["train.log_every=20"]
        result[config] = timed(args, out, config, args.limit if args.tiny else seconds, sets)
        seconds = args.seconds / 2  # the others: half as long
    c = result["classic_rrdb_x4"]
    c["bench_step_s_per_it"] = bench_step(args, ["train.cuda_graph=auto", *(TINY[:5] if args.tiny else [])], precision)
    its, s_per_it = c["it_per_s"], c["bench_step_s_per_it"]
    c["train_over_bench_s_per_it"] = (1 / its) / s_per_it if its and s_per_it else None

    (out / "train.json").write_text(json.dumps(result, indent=2))
    (out / "train.md").write_text(summary(result) + "\n")
    print(summary(result))
    return 0


def summary(r: dict) -> str:
    q = r["quickstart"]
    fmt = lambda v, f: format(v, f) if isinstance(v, (int, float)) else "-"  # noqa: E731
    lines = [
        f"train part on {r['device']}",
        "",
        "| quickstart run | exit | iterations | seconds | val PSNR | graph fell back |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("default", "cuda_graph=false"):
        x = q[name]
        lines.append(
            f"| {name} | {x['exit']} | {x['last_iteration']} | {x['seconds']:.1f} | {fmt(x['val_psnr'], '.2f')} "
            f"| {x['graph_fell_back']} |"
        )
    st = q["sigterm_resume"]
    lines += [""]
    for key, when in (("losses", "first 20 lines"), ("losses_after_resume", "20 lines after the resume")):
        lo = q[key]
        lines.append(
            f"losses, default vs cuda_graph=false, {when}: max relative difference "
            f"{lo['max_relative_difference']:.2e} over {lo['values_compared']} values "
            f"({'agree' if lo['agree'] else 'DIFFER'} within {TOLERANCE:.0%})"
        )
    lines += [
        f"default run: SIGTERM at iteration {st['stopped_at']} (exit {st['stopped_exit']}), --resume auto to "
        f"{q['default']['last_iteration']} (exit {st['resumed_exit']}): {'ok' if st['ok'] else 'FAILED'}",
        "",
        "| timed run | exit | iterations | it/s (median of lines) | graph fell back |",
        "|---|---|---|---|---|",
    ]
    for name in ("classic_rrdb_x4", "classic_swinir_x4", "realworld_rrdb_x4"):
        x = r[name]
        if "skipped" in x:
            lines.append(f"| {name} | not run ({x['skipped']}) | | | |")
            continue
        lines.append(
            f"| {name} | {x['exit']} | {x['iterations']} | {fmt(x['it_per_s'], '.2f')} | {x['graph_fell_back']} |"
        )
    c = r["classic_rrdb_x4"]
    precision = "fp32" if r["device"] == "cpu" else "bf16"
    lines += [
        "",
        f"classic_rrdb_x4 ({precision}): sfd train {fmt(1 / c['it_per_s'] if c['it_per_s'] else None, '.3f')} s/it, "
        f"sfd bench step {fmt(c['bench_step_s_per_it'], '.3f')} s/it, ratio "
        f"{fmt(c['train_over_bench_s_per_it'], '.2f')} (should be within 10 % of 1)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
