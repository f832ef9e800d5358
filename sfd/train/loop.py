"""SFD training, top to bottom: build everything from a Config (``sfd.train.build``), then alternate G and D
steps (``sfd.train.step``) with the bookkeeping that is due.

Per iteration (docs/method.md):
  G step: SR = G(LR); loss = l1*L1 + perceptual*VGG + feat_d*adv(Feat-D) + tg_d*adv(TG-D)
          (or image_d*adv(pixel D) for the L_GAN baselines, + clipiqa*CLIPIQA-loss for that ablation)
  D step: Feat-D and the prompt contexts (or the pixel D) learn HR = real vs SR = fake.
Nothing here is global: all state lives in ``Run`` (``sfd.train.state``).
"""

from __future__ import annotations

import contextlib
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sfd import checkpoint, distributed
from sfd.config import Config
from sfd.data.io import ImageReadError, list_images, load_rgb, to_tensor
from sfd.data.pipeline import build_loader
from sfd.data.resize import bicubic_lr, mod_crop
from sfd.metrics.psnr_ssim import psnr, ssim
from sfd.train.bookkeeping import RunLogger, RunSaver
from sfd.train.build import open_run
from sfd.train.guard import BadStepCounter, StopSignals, TimeLimit, TrainingInterrupted, batches, named_fault
from sfd.train.state import Run, save_checkpoint
from sfd.train.step import make_pair, train_step

__all__ = ["train", "validate"]


@torch.no_grad()
def validate(run: Run) -> dict[str, float]:
    """Mean Y-channel PSNR/SSIM (border = scale) on the validation folder, bicubic LR."""
    s = run.cfg.generator.scale
    model = run.generator_ema or run.generator
    model.eval()
    psnrs, ssims = [], []
    for path in list_images(run.cfg.data.val)[: run.cfg.data.val_max_images]:
        try:
            hr = mod_crop(to_tensor(load_rgb(path)), s)
        except ImageReadError as err:  # one bad validation image must not stop a long run
            warnings.warn(f"validation: skipping {err}", stacklevel=2)
            continue
        lr = bicubic_lr(hr, s)
        sr = model(lr[None].to(run.device)).clamp(0, 1)[0].cpu()
        psnrs.append(float(psnr(sr, hr, border=s)))
        ssims.append(float(ssim(sr, hr, border=s)))
    if not psnrs:
        return {}
    return {"val_psnr": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims))}


def train(
    cfg: Config | None,
    resume: str | None = None,
    progress: bool = True,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    started: float | None = None,
) -> Path:
    """Train ``cfg`` (resuming from a checkpoint path, or "auto" for the newest in the run folder).

    ``overrides`` (``--set`` strings) apply to a resumed checkpoint's own config when ``cfg`` is None.
    A run folder that already holds checkpoints is continued only with ``resume`` and started over
    only with ``overwrite``. Returns the path of the final checkpoint. One process per run folder
    (``sfd.train.runlock``); SIGINT/SIGTERM write a checkpoint and raise ``TrainingInterrupted``.
    ``train.max_time`` counts from ``started`` (a ``time.monotonic()``; `sfd train` passes its process's
    start), else from this call.
    """
    started = time.monotonic() if started is None else started
    with contextlib.ExitStack() as held:  # the run lock, process group and signal handlers, however we leave
        run, out, last_good = open_run(cfg, resume, overrides, overwrite, held)
        try:
            return _loop(run, out, last_good, progress, held, started)
        except RuntimeError as err:  # a killed loader worker, a lost process: one line, not torch's traceback
            if (fault := named_fault(err, run.iteration, checkpoint.find_latest(out))) is None:
                raise
            raise fault from None


def _loop(run: Run, out: Path, last_good: str | None, progress: bool, held: contextlib.ExitStack, started) -> Path:
    """The training loop: a batch, a step, then the bookkeeping that is due (log, validation, checkpoint)."""
    cfg, main = run.cfg, distributed.is_main()
    global_batch = cfg.data.batch_size * distributed.world_size()
    if main and distributed.is_distributed():
        n = distributed.world_size()
        tqdm.write(f"{n} processes x data.batch_size {cfg.data.batch_size} = global batch {global_batch}")
    loader = build_loader(
        cfg,
        run.samples_seen,
        cfg.train.iterations - run.iteration,
        run.device,
        distributed.rank(),
        distributed.world_size(),
        run.degrader,  # its plan says what the loader does of the degradations
    )
    log = held.enter_context(contextlib.closing(RunLogger(out, cfg, run.iteration, run.device, main, progress)))
    saver = RunSaver(out, cfg, main, last_good)
    bad_steps = BadStepCounter(cfg.train.max_bad_steps)
    stop = held.enter_context(StopSignals())
    limit = TimeLimit(cfg.train.max_time_s, started)
    write = lambda path: save_checkpoint(run, path)  # noqa: E731
    last = None
    waited = time.perf_counter()
    for batch in batches(loader):  # a killed worker: one line (sfd.train.guard)
        log.step(time.perf_counter() - waited)  # how long this step waited for the loader
        logs = train_step(run, *make_pair(run, batch))
        run.samples_seen += global_batch
        it = run.iteration
        validate_now = cfg.data.val and (it % cfg.train.val_every == 0 or it == cfg.train.iterations)
        log_now = validate_now or it % cfg.train.log_every == 0 or it == cfg.train.iterations
        note = run.step.check_bad_steps(run, bad_steps, it, saver.last_good, due=log_now or saver.due(it))
        if note:
            tqdm.write(note)
            logs["bad_steps"] = float(bad_steps.total)
        if log_now:
            logs = distributed.mean_logs(logs, run.device)  # means over the global batch (all processes call)
            if validate_now and main:
                logs.update(validate(run))
            logs = log.write(it, logs, global_batch)
        best = saver.improved(it, logs) if validate_now else []
        limit.step_took(time.perf_counter() - waited)
        # every process stops (and saves) at the same iteration: a signal reached one of them, time is nearly
        # up, or rank 0's validation found a new best (every rank takes part in the save's agreement)
        agreed = distributed.max_over_processes([stop.signum or 0, limit.up(), bool(best)], run.device)
        signum, time_up, any_best = (int(v) for v in agreed)
        if saver.due(it) or signum or time_up or any_best:
            t0 = time.perf_counter()
            last = saver.save(write, it, best)
            limit.save_took(time.perf_counter() - t0)
        if time_up and it < cfg.train.iterations:
            if main:
                tqdm.write(
                    f"train.max_time={cfg.train.max_time} is nearly up: stopped at iteration {it} of "
                    f"{cfg.train.iterations}; wrote {last}. Continue with the same command and --resume auto "
                    "(a job restarted by torchrun or requeued by SLURM resumes by itself)"
                )
            break
        if signum:
            name = signal.Signals(signum).name
            raise TrainingInterrupted(
                f"stopped by {name} at iteration {it}; wrote {last}. Continue with: "
                f"sfd train --resume {last}  (or -c CONFIG --resume auto)",
                signum,
            )
        waited = time.perf_counter()
    if last is None:  # nothing left to train (resumed at the end)
        last = saver.save(write, run.iteration)
    if main:
        tqdm.write(log.summary(run.iteration, last))
    distributed.barrier()  # every process returns once rank 0's last checkpoint is on disk
    return last
