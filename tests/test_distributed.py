"""Data-parallel training: 2 gloo processes under torchrun take the steps 1 process with their
global batch takes, and a checkpoint they write resumes in 1 process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from helpers import bundled_photo_dir, tiny_config, tiny_overrides

from sfd.distributed import ShardedIterationSampler
from sfd.train import train

REPO = Path(__file__).resolve().parents[1]


def test_sharded_sampler_cuts_one_global_stream():
    one = list(ShardedIterationSampler(8, 20, batch_size=4))
    two = [list(ShardedIterationSampler(8, 20, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    assert one == list(range(8, 20))
    # each global batch of 4 holds the same samples: rank 0 the first half, rank 1 the second
    assert two[0] == [8, 9, 12, 13, 16, 17] and two[1] == [10, 11, 14, 15, 18, 19]
    assert len(ShardedIterationSampler(0, 10, batch_size=2, rank=1, world_size=2)) == 4  # incomplete batch dropped


def _params(path):
    ckpt = torch.load(path, weights_only=True)
    flat = {f"g.{k}": v for k, v in ckpt["generator"].items()}
    for name, sd in ckpt["discriminators"].items():
        flat.update({f"{name}.{k}": v for k, v in sd.items()})
    return ckpt, {k: v.double() for k, v in flat.items() if v.is_floating_point()}


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_gloo_processes_match_one_process_and_resume_in_one(tmp_path, sfd_python):
    photos = bundled_photo_dir(tmp_path / "photos")
    sets = [o for o in tiny_overrides(photos, tmp_path / "two", iterations=2) if not o.startswith("data.batch_size")]
    config = tmp_path / "tiny.yml"
    config.write_text("name: tiny\n")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--no-python",  # each rank: `sfd_python -m sfd ...`, forked from tests/forkserver.py's server
        sfd_python,
        "-m",
        "sfd",
        "train",
        "--no-progress",
        "-c",
        str(config),
        "--set",
        "data.batch_size=2",
        # rank 0 validates; a new best is saved by all processes together (none waits in a collective)
        "--set",
        f"data.val={photos}",
        "--set",
        "data.val_max_images=1",
        "--set",
        "train.val_every=1",
    ]
    for o in sets:
        cmd += ["--set", o]
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_dir = tmp_path / "two" / "tiny"
    log = [json.loads(line) for line in (two_dir / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [1, 2] and all(r["global_batch"] == 4 for r in log)  # rank 0 alone logs
    assert {"it_per_s", "data_wait", "eta_s", "peak_mb", "val_psnr"} <= set(log[0])
    assert json.loads((two_dir / "checkpoints" / "best.json").read_text())["val_psnr"]["checkpoint"]

    # the same run in 1 process with the global batch, 4 iterations (checkpoints at 2 and 4)
    one = train(tiny_config(photos, tmp_path / "one", ["name=tiny", "data.batch_size=4"], iterations=4), progress=False)
    init, _ = build_initial(photos, tmp_path)
    _, p_one2 = _params(one.parent / "iter_00000002.pth")
    _, p_two2 = _params(two_dir / "checkpoints" / "iter_00000002.pth")
    change = _max_diff(p_one2, init)  # what two steps moved the parameters
    assert change > 1e-5
    assert _max_diff(p_two2, p_one2) < 1e-3 * change

    # the 2-process checkpoint resumes in 1 process (batch 4) and continues as the 1-process run did
    cfg = tiny_config(photos, tmp_path / "resumed", ["name=tiny", "data.batch_size=4"], iterations=4)
    resumed = train(cfg, resume=str(two_dir / "checkpoints" / "iter_00000002.pth"), progress=False)
    ckpt, p_res = _params(resumed)
    _, p_one4 = _params(one)
    assert ckpt["iteration"] == 4 and ckpt["samples_seen"] == 16
    assert _max_diff(p_res, p_one4) < 1e-3 * _max_diff(p_one4, p_one2)


def build_initial(photos, tmp_path):
    """The parameters every run starts from (same seeds)."""
    from sfd.train import build_run, save_checkpoint

    run = build_run(tiny_config(photos, tmp_path / "init", ["name=tiny"]))
    path = save_checkpoint(run, tmp_path / "init.pth")
    return _params(path)[1], run
