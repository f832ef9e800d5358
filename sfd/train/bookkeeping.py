"""What a training run records besides its step: the log (console, log.jsonl, TensorBoard), the
speed, memory and time left, and its checkpoints (periodic, best per validation metric, retention).

Only rank 0 writes; every rank calls the same methods, so that the loop reads the same everywhere.
Loss values may arrive as device tensors: they are read (one host sync) only when a line is written.
"""

from __future__ import annotations

import json
import resource
import time
import uuid
from pathlib import Path

import torch
from tqdm import tqdm

from sfd import checkpoint, distributed
from sfd.errors import CommandFailed

__all__ = ["RunLogger", "RunSaver", "floats", "peak_memory_mb", "format_duration", "METRIC_DIRECTIONS"]

# Loss terms shown in the progress bar, in this order.
_BAR_KEYS = ("l_g_l1", "l_g_percep", "l_g_feat_d", "l_g_tg_d", "l_g_image_d", "l_d_feat_d", "l_d_tg_d", "l_d_image_d")


def peak_memory_mb(device: torch.device) -> float:
    """CUDA's peak allocated memory on a GPU; the process's peak resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d}d " if d else "") + f"{h:d}:{m:02d}:{s:02d}"


def floats(logs: dict) -> dict[str, float]:
    """Logged values as floats: a device tensor's float() is the host sync, once per logged line."""
    return {k: float(v) for k, v in logs.items()}


class RunLogger:
    """Rank 0's log of a run. ``step`` records each iteration's timings; ``write`` a line when due, with
    iterations per second, the share of time spent waiting for data, the time left and peak memory
    (since the previous line), then the run's losses."""

    def __init__(self, out: Path, cfg, start: int, device: torch.device, main: bool, progress: bool):
        self.cfg, self.device, self.main = cfg, device, main
        self.start = self.last_it = start
        self.t0 = self.last_t = time.perf_counter()
        self.data_s = self.total_data_s = 0.0
        self.writer = self.file = self.wandb = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
            self.file = open(out / "log.jsonl", "a")
            if cfg.train.wandb:
                self.wandb = _wandb_run(out, cfg)
        self.bar = tqdm(
            total=cfg.train.iterations,
            initial=start,
            disable=not progress or not main,
            desc=cfg.name,
            dynamic_ncols=True,
        )

    def step(self, data_s: float) -> None:
        self.data_s += data_s
        self.total_data_s += data_s
        self.bar.update(1)

    def speed(self, it: int) -> dict[str, float]:
        """Speed since the previous line (and resets it): it/s, data-wait share, seconds left, peak MB."""
        now = time.perf_counter()
        wall = max(now - self.last_t, 1e-9)
        its = (it - self.last_it) / wall
        left = (self.cfg.train.iterations - it) / its if its > 0 else float("inf")
        out = {"it_per_s": its, "data_wait": min(self.data_s / wall, 1.0), "eta_s": left}
        out["peak_mb"] = peak_memory_mb(self.device)
        self.last_t, self.last_it, self.data_s = now, it, 0.0
        return out

    def write(self, it: int, logs: dict, global_batch: int) -> dict[str, float]:
        """One log line (rank 0): console, log.jsonl and TensorBoard. Returns the values written."""
        logs = {**floats(logs), **self.speed(it)}
        if not self.main:
            return logs
        self.file.write(json.dumps({"iter": it, "global_batch": global_batch, **logs}) + "\n")
        self.file.flush()
        for k, v in logs.items():
            self.writer.add_scalar(k, v, it)
        if self.wandb is not None:  # the same scalars as TensorBoard
            self.wandb.log(logs, step=it)
        self.bar.set_postfix({k.removeprefix("l_"): f"{v:.4g}" for k, v in logs.items() if k in _BAR_KEYS})
        losses = "  ".join(f"{k} {logs[k]:.4g}" for k in (*_BAR_KEYS, "val_psnr", "val_ssim") if k in logs)
        tqdm.write(
            f"iter {it}/{self.cfg.train.iterations}  {logs['it_per_s']:.2f} it/s  data {logs['data_wait']:.0%}  "
            f"eta {format_duration(logs['eta_s']) if logs['eta_s'] < float('inf') else '-'}  "
            f"mem {logs['peak_mb'] / 1024:.2f} GB  {losses}".rstrip()
        )
        return logs

    def summary(self, it: int, last: Path | None) -> str:
        wall = time.perf_counter() - self.t0
        n = it - self.start
        return (
            f"{self.cfg.name}: {n} iterations in {format_duration(wall)} ({n / max(wall, 1e-9):.2f} it/s, "
            f"data wait {self.total_data_s / max(wall, 1e-9):.0%}), peak memory "
            f"{peak_memory_mb(self.device) / 1024:.2f} GB; last checkpoint {last}"
        )

    def close(self) -> None:
        self.bar.close()
        if self.main:
            self.file.close()
            self.writer.close()
            if self.wandb is not None:
                self.wandb.finish()


def _wandb_run(out: Path, cfg):
    """A Weights & Biases run mirroring TensorBoard (``train.wandb: PROJECT``). A resumed run continues the
    same W&B run (its id is kept in the run folder). WANDB_MODE=offline works without a network."""
    import wandb  # checked before the run starts (trainer._check_before_work)

    from sfd.config import config_to_dict

    id_file = out / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
    id_file.write_text(run_id)
    return wandb.init(
        project=cfg.train.wandb, name=cfg.name, id=run_id, resume="allow", dir=str(out), config=config_to_dict(cfg)
    )


# Which way is better for each validation metric the loop can report.
METRIC_DIRECTIONS = {"val_psnr": True, "val_ssim": True, "val_lpips": False, "val_dists": False, "val_niqe": False}


class RunSaver:
    """Checkpoints of a run: every ``save_every`` iterations and at the end, the best per validation
    metric (named in checkpoints/best.json, which retention never prunes), then retention."""

    def __init__(self, out: Path, cfg, main: bool, last_good: str | Path | None):
        self.out, self.cfg, self.main = out, cfg, main
        self.last_good = last_good
        self.best_path = out / "checkpoints" / checkpoint.BEST_FILE
        self.best = checkpoint.read_best(out)

    def path_for(self, it: int) -> Path:
        return self.out / "checkpoints" / f"iter_{it:08d}.pth"

    def due(self, it: int) -> bool:
        return it % self.cfg.train.save_every == 0 or it == self.cfg.train.iterations

    def save(self, write, it: int, best: list[str] = ()) -> Path:
        """``write(path)`` writes the checkpoint (rank 0), which then holds the ``best`` metrics (from
        ``improved``), before retention runs. A failed write (a full disk) stops the run with a message;
        ``checkpoint.save`` has left the previous checkpoints as they were. Every rank learns whether rank 0
        could write, so a failed write stops them all instead of leaving the others in the next collective."""
        path, error = self.path_for(it), None
        if self.main:
            try:
                write(path)
            except OSError as err:
                error = OSError(
                    f"could not write checkpoint {path} ({err.strerror or err}); training stopped. "
                    f"The previous checkpoint is intact: {self.last_good or 'none'}"
                )
                error.__cause__ = err
        failed = distributed.from_main(str(error) if error else None)
        if error is not None:
            raise error
        if failed:  # rank 0 says why, once
            raise CommandFailed("")
        self.last_good = path
        if self.main:
            self._record_best(best, path)
            checkpoint.prune(self.out, self.cfg.train.keep_checkpoints, self.cfg.train.keep_every)
        return path

    def improved(self, it: int, logs: dict) -> list[str]:
        """The validation metrics in ``logs`` that beat their best so far (recorded as of iteration ``it``)."""
        better = []
        for name, higher in METRIC_DIRECTIONS.items():
            if name not in logs:
                continue
            value, old = float(logs[name]), self.best.get(name)
            if old is None or (value > old["value"] if higher else value < old["value"]):
                self.best[name] = {"value": value, "iteration": it, "higher_is_better": higher}
                better.append(name)
        return better

    def _record_best(self, names: list[str], path: Path) -> None:
        for name in names:
            self.best[name]["checkpoint"] = path.name
        if names:  # rewritten whole, atomically
            tmp = self.best_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.best, indent=2))
            tmp.replace(self.best_path)
