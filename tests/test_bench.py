"""``sfd bench`` and benchmarks/gpu.sh run end to end in a tiny CPU setting (speeds are never asserted)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import bundled_photo_dir

from sfd.cli import main

REPO = Path(__file__).resolve().parents[1]


def _gpu_sh_env(tmp_path, parts: str, python: str) -> dict:
    return dict(
        os.environ,
        PARTS=parts,
        OUT=str(tmp_path / "out"),
        DATA=str(bundled_photo_dir(tmp_path / "photos")),
        PYTHON=python,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )


def test_gpu_script_runs_tiny_on_the_cpu(tmp_path, sfd_python):
    env = _gpu_sh_env(tmp_path, "step sr iqa data archs", sfd_python)
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), "--tiny"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    assert not (out / "failures.txt").exists()
    r = json.loads((out / "step_fp32_sync-free.json").read_text())  # the tiny run is fp32 (on a GPU: bf16 and fp32)
    assert r["setting"]["precision"] == "fp32" and set(r["seconds_per_iteration"]) == {"ESRGAN", "SFD"}
    assert r["sfd_over_esrgan"] > 0 and r["measures"]["SFD"]["flops"] > r["measures"]["ESRGAN"]["flops"] > 0
    assert "train.sync_free=true" in r["setting"]["overrides"] and [p.name for p in out.glob("step_*")] == [
        "step_fp32_sync-free.json"
    ]
    for case, nhwc in (("eager", False), ("channels-last", True)):  # the CUDA-graph cases need CUDA
        sr = json.loads((out / f"sr_fp32_{case}.json").read_text())  # on a GPU: fp16
        assert sr["setting"]["channels_last"] is nhwc and sr["setting"]["cuda_graph"] is False
        assert sr["rows"][0]["tiles"] == 4 and sr["rows"][0]["tiled"]["mp_per_s"] > 0
    assert not list(out.glob("sr_*cuda-graph*"))
    summary = (out / "summary.md").read_text()
    assert "| eager | 16² -> 64² | 4 |" in summary and "| channels-last | 16² -> 64² | 4 |" in summary
    assert "| sync-free | SFD | fp32 |" in summary and "400k iterations" in summary and "FLOP ratio" in summary
    assert "| degradations on cpu, batched |" in summary and "crop_pad_size 96" in summary
    assert "operators / patch" in summary and (out / "data_b2.json").exists()
    archs = json.loads((out / "archs_step.json").read_text())["archs"]  # the per-architecture part
    assert set(archs) == {"compact"} and archs["compact"]["sfd_over_pixel_d_flops"] > 1
    assert 0 < archs["compact"]["featd_clip_share_flops"] < 1 and "| compact | 0.62 M |" in summary


def test_gpu_script_train_part_runs_tiny_on_the_cpu(tmp_path, sfd_python):
    """PARTS=train: real `sfd train` processes (quickstart without graphs, then with the defaults stopped by SIGTERM
    and continued by --resume auto; classic_rrdb_x4 timed; `sfd bench step`) in their tiny CPU form. On a CPU both
    quickstart runs are eager: their losses must be equal, before the SIGTERM and after the resume."""
    env = _gpu_sh_env(tmp_path, "train", sfd_python)
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), "--tiny"], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    assert not (out / "failures.txt").exists(), (out / "train_stdout.txt").read_text()[-3000:]
    r = json.loads((out / "train.json").read_text())
    q = r["quickstart"]
    assert q["default"]["exit"] == 0 and q["cuda_graph=false"]["exit"] == 0
    assert q["default"]["last_iteration"] == q["iterations"] and q["default"]["val_psnr"] > 0
    assert q["sigterm_resume"]["ok"] and 0 < q["sigterm_resume"]["stopped_at"] < q["iterations"]
    for key in ("losses", "losses_after_resume"):
        assert q[key]["agree"] and q[key]["max_relative_difference"] == 0 and q[key]["values_compared"] > 0, key
    assert r["classic_rrdb_x4"]["exit"] == 0 and r["classic_rrdb_x4"]["iterations"] == 2
    assert r["classic_rrdb_x4"]["it_per_s"] > 0 and r["realworld_rrdb_x4"] == {"skipped": "--tiny"}
    assert r["classic_rrdb_x4"]["bench_step_s_per_it"] > 0 and r["classic_rrdb_x4"]["train_over_bench_s_per_it"] > 0
    summary = (out / "summary.md").read_text()
    assert "SIGTERM at iteration" in summary and "| classic_rrdb_x4 | 0 | 2 |" in summary
    assert "step: not run" in summary


def test_bench_data_compares_loaders_with_a_step(tmp_path, capsys):
    photos = bundled_photo_dir(tmp_path / "photos")
    args = [
        "bench",
        "data",
        str(photos),
        "--patch",
        "64",
        "--workers",
        "0",
        "1",
        "--batches",
        "2",
        "--repeats",
        "1",
        "--step-s",
        "2.0",
        "--crop-pad-size",
        "96",
        "--json",
    ]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["patches_per_second"]) == {
        "classic, 0 workers",
        "classic, 1 workers",
        "real-world, 0 workers",
        "real-world, 1 workers",
        "HR + draws loader, 1 workers",
        "degradations on cpu, per sample",
        "degradations on cpu, batched",
    }
    assert set(r["ops_per_patch"]) == {"degradations on cpu, per sample", "degradations on cpu, batched"}
    assert r["step_consumes_patches_per_second"] == 1.0 and all(v > 0 for v in r["patches_per_second"].values())
    assert r["setting"]["crop_pad_size"] == 96 and r["setting"]["jpeg_backend"] == "diffjpeg"


def test_bench_chroma_measures_every_codec_on_the_same_patches(tmp_path, capsys):
    photos = bundled_photo_dir(tmp_path / "photos")
    assert main(["bench", "chroma", str(photos), "--patch", "64", "--per-image", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    variants = {"diffjpeg", "pillow", "torch", "diffjpeg, first_resize=size"}
    assert r["setting"]["patches"] == 5 and set(r["chroma_statistic"]) == variants
    # DiffJPEG's 2x2-repeated chroma keeps more colour detail than libjpeg's interpolation
    assert r["chroma_statistic"]["diffjpeg"] > r["chroma_statistic"]["pillow"]


def test_bench_step_compiled_reports_compile_apart_and_counts_the_compiled_step(capsys):
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    args = ["bench", "step", "--blocks", "1", "--batch", "1", "--patch", "32", "--repeats", "1"]
    args += ["--only", "G only (L1)"]
    args += ["--set", "train.compile=aot_eager"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "5 warm-up iterations (compile, capture) took" in out and "on the tiny input" in out
    assert main(args + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["warmup_iterations"] == 5 and r["warmup_seconds"]["G only (L1)"] > 0
    assert r["tiny_warmup_seconds"]["G only (L1)"] > 0
    m = r["measures"]["G only (L1)"]
    assert m["ops"] > 0 and m["compiled_kernels"] == 0  # aot_eager runs aten operators, writes no kernels
    assert counters["stats"]["unique_graphs"] > graphs  # the generator was compiled


@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor's CPU kernels need a C++ compiler")
def test_operator_count_sees_inside_inductor_code():
    """Under a TorchDispatchMode torch.compile falls back to eager; the bench's counter lets compiled code run
    and counts what it launches: the aten operators it dispatches (extern kernels) and the kernels it wrote."""
    import torch

    from sfd.bench import _CountOps

    w = torch.rand(8, 8)

    def f(x):
        return (x.sin() + 1).relu() @ w  # inductor: one C++ kernel (sin, add, relu) and aten's mm

    compiled = torch.compile(f, backend="inductor")
    x = torch.rand(4, 8)
    compiled(x)
    with _CountOps() as eager:
        f(x)
    with _CountOps() as ops:
        y = compiled(x)
    torch.testing.assert_close(y, f(x))
    assert (eager.count, eager.kernels) == (4, 0)
    assert (ops.count, ops.kernels) == (1, 1)
