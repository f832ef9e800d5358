#!/usr/bin/env bash
# One prepared GPU benchmark, meant to finish within 8 minutes on one GPU node:
#   - the classic setting (RRDBNet-23, batch 32, 128² HR), SFD and ESRGAN side by side, with each speed
#     switch of the step on and off (docs/benchmarks.md "The step on a GPU"): s/iteration, TFLOP/s and its
#     share of the device's bf16 peak, the GPU-busy share of a step (profiler), warm-up (compile, capture)
#     apart; bf16, and fp32 for the reference and the fastest;
#   - the same SFD step data-parallel over all visible GPUs, when there are several (torchrun);
#   - `sfd sr` throughput (MP/s) in fp16, tiled (512² tiles) and untiled, at 256² and 1024² input (1024² and
#     4096² output), eager, channels-last, CUDA graphs, and both (`sfd bench sr` once per case); `sfd bench iqa`;
#   - real-world data: loader patches/s beside the degradations batched on the GPU (`sfd bench data`);
#   - real `sfd train` runs through the real loader (benchmarks/train_gpu.py): quickstart with the defaults
#     (CUDA graphs) beside train.cuda_graph=false, a SIGTERM and --resume auto, classic_rrdb_x4 bf16 for 60 s
#     against `sfd bench step`, classic_swinir_x4 and realworld_rrdb_x4 for 30 s each (planned for under 5 minutes; not yet timed on a GPU);
#   - per generator architecture (`sfd bench step --arch`): SFD vs the pixel discriminator, time and FLOP
#     ratios and Feat-D + CLIP's share of the step, bf16, batch 32, 128²; and `sfd archs --json`, which
#     tries a CUDA-graph capture of each architecture's training forward+backward (docs/architectures.md).
# Each part has its own time limit, so that one slow part cannot take the others' time.
# Results: one JSON per part and a summary in $OUT (default bench_gpu/).
#
#   benchmarks/gpu.sh            # on the GPU machine
#   PARTS=sr benchmarks/gpu.sh   # only some parts (of: step sr iqa data train archs); all of them exceed one
#                                # 10-minute device call: run PARTS="train", PARTS="sr data" and PARTS=archs apart
#   benchmarks/gpu.sh --tiny     # a tiny setting on the CPU (seconds): how tests/test_bench.py runs it
set -uo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-bench_gpu}
PARTS=${PARTS:-step sr iqa data train archs}
want() { [[ " $PARTS " == *" $1 "* ]]; }
export PARTS
PEAK=${PEAK_TFLOPS:-788}  # bf16 matrix product measured on an H200 of this kind (8192³, random data)
mkdir -p "$OUT"

if [[ "${1:-}" == "--tiny" ]]; then
  DEVICE=cpu BLOCKS=1 BATCH=1 PATCH=32 REPEATS=1 SIZES="16" LIMIT=300 SR_TILE=8
  SETS=(--set generator.num_feat=8 --set "feat_d.widths=[16,8,8,8]" --set tg_d.n_pairs=1 --set tg_d.length=4
        --set "loss.perceptual_layers={conv1_2: 1.0}" --set image_d.num_feat=8)
  NPROC=${NPROC:-0}
  # CUDA graphs need CUDA: the tiny CPU run checks the plumbing (a case's overrides reach the step) with one case.
  CASES=("sync-free:train.sync_free=true")
  FP32_CASES=()
  PREC=fp32 SR_PREC=fp32  # bf16/fp16 have no fast CPU kernels here (2-3x the time): the tiny run checks the plumbing
  SR_CASES=("eager:" "channels-last:--channels-last")
  ARCHS=${ARCHS:-compact}
else
  DEVICE=cuda BLOCKS=23 BATCH=32 PATCH=128 REPEATS=${REPEATS:-5} SIZES=${SR_SIZES:-256 1024} LIMIT=${LIMIT:-150}
  SR_TILE=512
  SETS=()
  NPROC=${NPROC:-$($PY -c "import torch; print(torch.cuda.device_count())")}
  # name:overrides. "reference" is the eager step as it was (torch's foreach Adam on CUDA, F.interpolate);
  # each next case adds one switch; "default" is today's defaults (CUDA graphs on, train.cuda_graph=auto).
  CASES=(
    "reference:optim.impl=foreach feat_d.upsample=interpolate train.cuda_graph=false"
    "fused-adam:feat_d.upsample=interpolate train.cuda_graph=false"
    "separable-upsample:train.cuda_graph=false"
    "sync-free:train.cuda_graph=false train.sync_free=true"
    "default:"
    "default+channels-last:train.channels_last=true"
  )
  PREC=bf16 SR_PREC=fp16
  FP32_CASES=("default:")  # fp32's eager reference: ../shared/measurements/h200-2026-12-04 (0.240 s SFD)
  # name:flags of `sfd bench sr`; "eager" is `sfd sr`'s default (issue 18: 32.9 MP/s untiled at 1024² input)
  SR_CASES=("eager:" "channels-last:--channels-last" "cuda-graph:--cuda-graph on"
            "cuda-graph+channels-last:--cuda-graph on --channels-last")
  ARCHS=${ARCHS:-compact,span,safmn,realplksr,rrdbnet}
fi
COMMON=(--device "$DEVICE" --blocks "$BLOCKS" --batch "$BATCH" --patch "$PATCH" --repeats "$REPEATS" --only ESRGAN SFD
        --peak-tflops "$PEAK" --no-tiny)

step() {  # step PRECISION NAME "OVERRIDES"
  local sets=("${SETS[@]}") o
  for o in $3; do sets+=(--set "$o"); done
  timeout "$LIMIT" $PY -m sfd bench step "${COMMON[@]}" --precision "$1" "${sets[@]}" --json > "$OUT/step_$1_$2.json" \
    || echo "step $1 $2: failed or timed out (exit $?)" | tee -a "$OUT/failures.txt"
}
# HR photos from $DATA (default $SFD_DATA_DIR/train/BSDS400), else the 21 photos of 256² and more that ship
# inside scikit-image; validation images from $VAL (default $SFD_DATA_DIR/sr/Set5, else $DATA).
SHARED=${SFD_DATA_DIR:-../shared/data}
DATA=${DATA:-$SHARED/train/BSDS400}
if [[ ! -d "$DATA" ]]; then
  DATA=$($PY -c "import os, skimage; print(os.path.join(os.path.dirname(skimage.__file__), 'data'))")
fi
VAL=${VAL:-$SHARED/sr/Set5}
[[ -d "$VAL" ]] || VAL=$DATA

if want step; then
  for case in "${CASES[@]}"; do step "$PREC" "${case%%:*}" "${case#*:}"; done
  for case in "${FP32_CASES[@]+"${FP32_CASES[@]}"}"; do step fp32 "${case%%:*}" "${case#*:}"; done
  if [[ "$NPROC" -gt 1 ]]; then  # data-parallel: --batch per process
    timeout "$LIMIT" $PY -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m sfd bench step \
      "${COMMON[@]}" --precision bf16 "${SETS[@]}" --json > "$OUT/step_ddp.json" \
      || echo "ddp: failed (exit $?)" >> "$OUT/failures.txt"
  fi
fi
if want sr; then
  for case in "${SR_CASES[@]}"; do
    # shellcheck disable=SC2086
    timeout "$LIMIT" $PY -m sfd bench sr --device "$DEVICE" --blocks "$BLOCKS" --precision "$SR_PREC" --sizes $SIZES \
      --tile "$SR_TILE" --repeats "$REPEATS" ${case#*:} --json > "$OUT/sr_${SR_PREC}_${case%%:*}.json" \
      || echo "sr ${case%%:*}: failed (exit $?)" >> "$OUT/failures.txt"
  done
fi
if want iqa && [[ "${1:-}" != "--tiny" ]]; then
  timeout "$LIMIT" $PY -m sfd bench iqa --device "$DEVICE" --repeats "$REPEATS" --json > "$OUT/iqa.json" \
    || echo "iqa: failed (exit $?)" >> "$OUT/failures.txt"
fi

# Real-world data: the loaders (CPU workers) beside the degradations batched on the device, with
# the recipes' settings (DiffJPEG, crop_pad_size 400, 12 patches of 256² per GPU as Real-ESRGAN).
if want data && [[ -d "$DATA" ]]; then
  # Batches of 12 (Real-ESRGAN's per GPU) and 48 (its global batch on one GPU): the batched path's
  # launches hardly grow with the batch, the per-sample path's grow with it.
  if [[ "${1:-}" == "--tiny" ]]; then
    DATA_RUNS=("2:--patch 64 --crop-pad-size 96 --workers 0 --batches 1 --repeats 1 --step-s 1")
  else
    DATA_RUNS=("12:--patch 256 --crop-pad-size 400 --workers 4 --batches 4 --repeats 2 --blocks 23"
               "48:--patch 256 --crop-pad-size 400 --workers 4 --batches 2 --repeats 2 --step-s 1")
  fi
  for run in "${DATA_RUNS[@]}"; do
    # shellcheck disable=SC2086
    timeout "$LIMIT" $PY -m sfd bench data "$DATA" --device "$DEVICE" --batch "${run%%:*}" ${run#*:} --json \
      > "$OUT/data_b${run%%:*}.json" || echo "data (batch ${run%%:*}): failed (exit $?)" >> "$OUT/failures.txt"
  done
fi

if want archs; then
  timeout "$LIMIT" $PY -m sfd bench step --arch "$ARCHS" --device "$DEVICE" --batch "$BATCH" --patch "$PATCH" \
    --repeats "$REPEATS" --precision "$PREC" "${SETS[@]}" --json > "$OUT/archs_step.json" \
    || echo "archs step: failed or timed out (exit $?)" >> "$OUT/failures.txt"
  if [[ "${1:-}" != "--tiny" ]]; then  # CUDA-graph captures need CUDA
    timeout "$LIMIT" $PY -m sfd archs --json > "$OUT/archs.json" || echo "archs: failed (exit $?)" >> "$OUT/failures.txt"
  fi
fi
if want train; then
  TRAIN_FLAGS=(); [[ "${1:-}" == "--tiny" ]] && TRAIN_FLAGS=(--tiny)
  timeout $((LIMIT * 4)) $PY "$(dirname "$0")/train_gpu.py" --data "$DATA" --val "$VAL" --out "$OUT" "${TRAIN_FLAGS[@]}" \
    > "$OUT/train_stdout.txt" 2>&1 || echo "train: failed or timed out (exit $?)" >> "$OUT/failures.txt"
fi

$PY - "$OUT" <<'PY'
import json, os, sys
from pathlib import Path

out = Path(sys.argv[1])
parts = os.environ["PARTS"].split()
lines = ["| switches | run | precision | processes | s / it | it / s | TFLOP/s | of peak | GPU busy | warm-up s "
         "| peak MB | 400k iterations (h) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
if "step" not in parts:
    lines = ["step: not run"]
for path in sorted(out.glob("step_*.json")):
    try:
        r = json.loads(path.read_text())
    except ValueError:
        continue
    st = r["setting"]
    case = path.stem.split("_", 2)[-1]
    for name, s in r["seconds_per_iteration"].items():
        m = (r.get("measures") or {}).get(name) or {}
        peak = (r["peak_mb"] or {}).get(name)
        f = lambda key, fmt: format(m[key], fmt) if m.get(key) is not None else "-"  # noqa: E731
        lines.append(f"| {case} | {name} | {st['precision']} | {st['processes']} | {s:.3f} | {1 / s:.2f} "
                     f"| {f('tflop_per_s', '.1f')} | {f('peak_share', '.1%')} | {f('gpu_busy', '.0%')} "
                     f"| {r['warmup_seconds'][name]:.1f} | {f'{peak:.0f}' if peak else '-'} | {400_000 * s / 3600:.1f} |")
    if "sfd_over_esrgan_flops" in r:
        lines.append(f"| {case} | SFD / ESRGAN | {st['precision']} | | {r['sfd_over_esrgan']:.2f} | | "
                     f"FLOP ratio {r['sfd_over_esrgan_flops']:.2f} | | | | | |")
# `sfd sr` (issue 18's target: 80 output MP/s untiled at 1024², tiled >= 0.9x untiled): eager first
sr_lines, machine = [], None
for path in sorted(out.glob("sr_*.json"), key=lambda p: (not p.stem.endswith("_eager"), p.stem)):
    try:
        sr = json.loads(path.read_text())
    except ValueError:
        continue
    machine = sr["machine"]
    for row in sr["rows"]:
        u, t = row["untiled"], row["tiled"]
        graphs = "/".join("yes" if x.get("graphed") else "no" for x in (u, t))
        sr_lines.append(f"| {path.stem.split('_', 2)[-1]} | {row['size']}² -> {row['size'] * 4}² | {row['tiles']} "
                        f"| {u['mp_per_s']:.2f} | {t['mp_per_s']:.2f} | {row['tiled_over_untiled_speed']:.2f} "
                        f"| {u['peak_mb']:.0f} | {t['peak_mb']:.0f} | {graphs} "
                        f"| {u.get('warmup_seconds', 0):.1f} / {t.get('warmup_seconds', 0):.1f} |")
if sr_lines:
    lines += ["", f"| sr ({sr['setting']['precision']}) | input -> output | tiles | untiled MP/s | tiled MP/s | tiled / untiled "
              "| untiled peak MB | tiled peak MB | graphed (untiled/tiled) | warm-up s (untiled / tiled) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines += sr_lines + ["", f"machine: {machine}"]
else:
    lines += ["", "sr: no result" if "sr" in parts else "sr: not run"]
for path in sorted(out.glob("data_b*.json")) or [out / "data.json"]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        lines += ["", f"data: no result ({path.name})" if "data" in parts else "data: not run"]
        continue
    ops = data.get("ops_per_patch", {})
    lines += ["", f"| real-world data ({data['setting']['batch']} x {data['setting']['patch']}², "
              f"crop_pad_size {data['setting']['crop_pad_size']}) | patches / s | operators / patch |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {ops[k]:.0f} |" if k in ops else f"| {k} | {v:.1f} | |"
              for k, v in data["patches_per_second"].items()]
if (out / "train.md").exists():
    lines += ["", (out / "train.md").read_text()]
elif "train" in parts:
    lines += ["", "train: no result"]
try:
    archs = json.loads((out / "archs_step.json").read_text())
    from sfd.bench_archs import table

    lines += ["", f"per architecture ({archs['setting']['precision']}, batch {archs['setting']['batch']}, "
              f"{archs['setting']['patch']}²):", *table(archs)]
except (OSError, ValueError):
    lines += ["", "archs: no result" if "archs" in parts else "archs: not run"]
try:
    lines += ["", "| arch | CUDA graph (training forward+backward) |", "|---|---|"]
    lines += [f"| {r['arch']} | {r['cuda_graph']} |" for r in json.loads((out / "archs.json").read_text())]
except (OSError, ValueError):
    lines = lines[:-3]
if (out / "failures.txt").exists():
    lines += ["", "failures:", (out / "failures.txt").read_text()]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
