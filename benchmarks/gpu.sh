#!/usr/bin/env bash
# One prepared GPU benchmark, meant to finish within 8 minutes on one GPU node:
#   - the classic setting (RRDBNet-23, batch 32, 128² HR) for SFD and ESRGAN in fp32, bf16 and fp16:
#     s/iteration, it/s, peak memory and the projected time of 400k iterations;
#   - the same SFD step data-parallel over all visible GPUs, when there are several (torchrun);
#   - `sfd sr` throughput (MP/s) in fp16, tiled and untiled;
#   - real-world data: loader patches/s beside the degradations batched on the GPU (`sfd bench data`).
# Results: one JSON per part and a summary in $OUT (default bench_gpu/).
#
#   benchmarks/gpu.sh            # on the GPU machine
#   benchmarks/gpu.sh --tiny     # a tiny setting on the CPU (seconds): how tests/test_bench.py runs it
set -euo pipefail
PY=${PYTHON:-python}
OUT=${OUT:-bench_gpu}
mkdir -p "$OUT"

if [[ "${1:-}" == "--tiny" ]]; then
  DEVICE=cpu BLOCKS=1 BATCH=1 PATCH=32 REPEATS=1 SIZES="16"
  SETS=(--set generator.num_feat=8 --set "feat_d.widths=[16,8,8,8]" --set tg_d.n_pairs=1 --set tg_d.length=4
        --set "loss.perceptual_layers={conv1_2: 1.0}" --set image_d.num_feat=8)
  NPROC=${NPROC:-0}
else
  DEVICE=cuda BLOCKS=23 BATCH=32 PATCH=128 REPEATS=5 SIZES="512 1024"
  SETS=()
  NPROC=${NPROC:-$($PY -c "import torch; print(torch.cuda.device_count())")}
fi
COMMON=(--device "$DEVICE" --blocks "$BLOCKS" --batch "$BATCH" --patch "$PATCH" --repeats "$REPEATS" --only ESRGAN SFD)

for precision in fp32 bf16 fp16; do
  $PY -m sfd bench step "${COMMON[@]}" --precision "$precision" "${SETS[@]}" --json > "$OUT/step_$precision.json"
done
if [[ "$NPROC" -gt 1 ]]; then  # data-parallel: --batch per process
  $PY -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m sfd bench step "${COMMON[@]}" \
    --precision bf16 "${SETS[@]}" --json > "$OUT/step_ddp.json"
fi
# shellcheck disable=SC2086
$PY -m sfd bench sr --device "$DEVICE" --blocks "$BLOCKS" --precision fp16 --sizes $SIZES --repeats "$REPEATS" \
  --json > "$OUT/sr_fp16.json"

# Real-world data: the loaders (CPU workers) beside the degradations batched on the device, with
# the recipes' settings (DiffJPEG, crop_pad_size 400, 12 patches of 256² per GPU as Real-ESRGAN).
# HR photos from $DATA (default ../shared/data/train/BSDS400), else the 21 photos of 256² and more
# that ship inside scikit-image.
DATA=${DATA:-../shared/data/train/BSDS400}
if [[ ! -d "$DATA" ]]; then
  DATA=$($PY -c "import os, skimage; print(os.path.join(os.path.dirname(skimage.__file__), 'data'))")
fi
if [[ -d "$DATA" ]]; then
  if [[ "${1:-}" == "--tiny" ]]; then
    DATA_ARGS=(--batch 2 --patch 64 --crop-pad-size 96 --workers 0 --batches 1 --repeats 1 --step-s 1)
  else
    DATA_ARGS=(--batch 12 --patch 256 --crop-pad-size 400 --workers 4 --batches 4 --repeats 2 --blocks 23)
  fi
  $PY -m sfd bench data "$DATA" --device "$DEVICE" "${DATA_ARGS[@]}" --json > "$OUT/data.json"
fi

$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
lines = ["| run | precision | processes | global batch | s / it | it / s | peak MB | 400k iterations (h) |",
         "|---|---|---|---|---|---|---|---|"]
for path in sorted(out.glob("step_*.json")):
    r = json.loads(path.read_text())
    st = r["setting"]
    for name, s in r["seconds_per_iteration"].items():
        peak = (r["peak_mb"] or {}).get(name)
        peak = f"{peak:.0f}" if peak else "-"
        lines.append(f"| {name} | {st['precision']} | {st['processes']} | {st['batch'] * st['processes']} "
                     f"| {s:.3f} | {1 / s:.2f} | {peak} | {400_000 * s / 3600:.1f} |")
sr = json.loads((out / "sr_fp16.json").read_text())
lines += ["", "| sr input (fp16) | untiled MP/s | tiled MP/s | untiled peak MB | tiled peak MB |",
          "|---|---|---|---|---|"]
for row in sr["rows"]:
    u, t = row["untiled"], row["tiled"]
    lines.append(f"| {row['size']}² | {u['mp_per_s']:.2f} | {t['mp_per_s']:.2f} | {u['peak_mb']:.0f} "
                 f"| {t['peak_mb']:.0f} |")
if (out / "data.json").is_file():
    data = json.loads((out / "data.json").read_text())
    lines += ["", f"| real-world data ({data['setting']['batch']} x {data['setting']['patch']}², "
              f"crop_pad_size {data['setting']['crop_pad_size']}) | patches / s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in data["patches_per_second"].items()]
lines += ["", f"machine: {sr['machine']}"]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
