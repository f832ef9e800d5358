"""Training guards: NaN/Inf steps, SIGINT/SIGTERM, the time limit, a killed loader worker, and the
errors that stop a run with a message.

The trainer stays a plain loop; these helpers decide when to skip a step, when to stop, and what
to tell the user (docs/reliability.md).
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import time

import torch

__all__ = [
    "TrainingDiverged",
    "TrainingInterrupted",
    "StopSignals",
    "grads_finite",
    "grads_finite_on_device",
    "bad_losses",
    "BadStepCounter",
    "DeviceBadSteps",
    "TimeLimit",
    "LoaderWorkerDied",
    "loader_worker_died",
    "batches",
    "named_fault",
    "process_age",
]


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a NaN/Inf loss or gradient (exit status 1)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: a checkpoint was written; ``signum`` gives the exit status 128 + signum.
    A KeyboardInterrupt, so that no ``except Exception`` swallows it (``sfd.cli`` prints its message)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def grads_finite(params) -> bool:
    """True when every gradient is finite. One fused norm per tensor first (a tenth of the time of
    checking tensor by tensor, over RRDBNet's 702 tensors); a norm can overflow to inf although
    every entry is finite, so a non-finite norm is confirmed entry by entry."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    if bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def grads_finite_on_device(params) -> torch.Tensor:
    """``grads_finite`` as a device bool, with no host sync: one fused max-abs per tensor (finite exactly
    when every entry is; unlike the 2-norm it cannot overflow)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool, device=params[0].device if params else "cpu")
    return torch.stack(torch._foreach_norm(grads, math.inf)).isfinite().all()


def bad_losses(logs: dict[str, float]) -> list[str]:
    """Names of the logged losses that are NaN or Inf, e.g. ["l_g_feat_d=nan"]."""
    return [f"{k}={v}" for k, v in logs.items() if isinstance(v, float) and not math.isfinite(v)]


class BadStepCounter:
    """Counts skipped steps; raises ``TrainingDiverged`` after ``limit`` in a row."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.total = limit, 0, 0

    def update(self, iteration: int, bad: list[str], last_good: str | None) -> str | None:
        """Record one iteration; returns the line to log for a bad one, raises when the limit is hit."""
        if not bad:
            self.in_a_row = 0
            return None
        self.in_a_row += 1
        self.total += 1
        what = ", ".join(bad)
        if self.in_a_row >= self.limit:
            raise TrainingDiverged(
                f"{self.in_a_row} steps in a row had a NaN/Inf loss or gradient (last, at iteration {iteration}: "
                f"{what}); stopped (train.max_bad_steps={self.limit}). "
                f"Last checkpoint (good weights): {last_good or 'none'}"
            )
        return (
            f"iteration {iteration}: skipped a step with a NaN/Inf {what} "
            f"({self.in_a_row} in a row, {self.total} in all)"
        )


class DeviceBadSteps:
    """Skipped steps counted on the device (``train.sync_free``): in a row, the most in a row since the
    last check, and in all. ``check`` reads them (one sync) when the loop logs or saves, so a run that
    diverges stops at the first line due after ``train.max_bad_steps`` skipped steps in a row."""

    def __init__(self, device: torch.device):
        self.in_a_row, self.worst, self.total = (torch.zeros((), dtype=torch.long, device=device) for _ in range(3))
        self.reported = 0

    def update(self, ok: torch.Tensor) -> None:
        bad = (~ok).long()
        self.in_a_row.add_(1).mul_(bad)  # in place: CUDA graphs replay these very tensors
        torch.maximum(self.worst, self.in_a_row, out=self.worst)
        self.total.add_(bad)

    def check(self, counter: BadStepCounter, iteration: int, last_good: str | None) -> str | None:
        worst, total = int(self.worst), int(self.total)
        self.worst.copy_(self.in_a_row)
        new, self.reported = total - self.reported, total
        counter.total = total
        if worst >= counter.limit:
            raise TrainingDiverged(
                f"{worst} steps in a row had a NaN/Inf loss or gradient (seen at iteration {iteration}); stopped "
                f"(train.max_bad_steps={counter.limit}). Last checkpoint (good weights): {last_good or 'none'}"
            )
        if new:
            return (
                f"iterations up to {iteration}: skipped {new} step(s) with a NaN/Inf loss or gradient ({total} in all)"
            )
        return None


class StopSignals:
    """While active, SIGINT/SIGTERM set ``signum`` instead of killing the process, so that the loop can
    write a checkpoint at the end of the current step. A second signal stops at once (the default handler)."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        for s, old in self._old.items():  # a second Ctrl-C is not ignored
            signal.signal(s, old)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal handlers only work there
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


class TimeLimit:
    """``train.max_time``: tells the loop when to stop so that the checkpoint it then writes is on disk
    before the limit. The margin is twice the slowest step seen plus the slowest checkpoint write seen
    (the run's own measurements: nothing to tune), so a run never overruns by more than a step's jitter."""

    def __init__(self, seconds: float | None, start: float | None = None):
        self.seconds = seconds
        self.start = time.monotonic() if start is None else start
        self.slowest_step = self.slowest_save = 0.0

    def step_took(self, seconds: float) -> None:
        self.slowest_step = max(self.slowest_step, seconds)

    def save_took(self, seconds: float) -> None:
        self.slowest_save = max(self.slowest_save, seconds)

    def up(self) -> bool:
        """True when one more step and a checkpoint might not fit in the time left."""
        if self.seconds is None:
            return False
        left = self.seconds - (time.monotonic() - self.start)
        return left < 2 * self.slowest_step + self.slowest_save


def named_fault(err: BaseException, iteration: int, last_good) -> RuntimeError | None:
    """The one-line error for a fault whose traceback would come from inside torch: a killed loader
    worker, a lost process (``sfd.distributed.ProcessLost``); None for any other error."""
    from sfd.distributed import ProcessLost

    if (died := loader_worker_died(err, iteration, last_good)) is not None:
        return died
    if isinstance(err, ProcessLost):
        return ProcessLost(
            f"{err}; stopped at iteration {iteration}. Last good checkpoint: {last_good or 'none'}; "
            "continue with --resume auto"
        )
    return None


def process_age() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere 0, i.e. from now): `sfd train` counts
    its time limit from there, so that the imports and start-up before the loop count too."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class LoaderWorkerDied(RuntimeError):
    """A ``DataLoader`` worker process was killed (the OOM killer, a SIGKILL) or crashed; exit status 1."""


# torch's messages: "DataLoader worker (pid 123) is killed by signal: Killed." (its SIGCHLD handler),
# "DataLoader worker (pid(s) 123, 456) exited unexpectedly" (the loader's own check).
_WORKER_DIED = re.compile(
    r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\) "
    r"(?:is killed by signal: ([^.]+)|exited unexpectedly(?: with exit code (-?\d+))?)"
)


def batches(loader):
    """``iter(loader)``, but a worker killed while it handed over a batch (the main process then sees the
    shared-memory connection reset before torch's own check runs) raises torch's "worker ... is killed by
    signal" error, which ``loader_worker_died`` turns into one line."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (ConnectionError, EOFError) as err:
            for w in getattr(it, "_workers", []):
                w.join(timeout=1)  # a killed worker is reaped at once
                if w.exitcode is not None and w.exitcode < 0:
                    sig = signal.strsignal(-w.exitcode) or f"signal {-w.exitcode}"
                    raise RuntimeError(f"DataLoader worker (pid {w.pid}) is killed by signal: {sig}.") from err
            raise
        yield batch


def loader_worker_died(err: BaseException, iteration: int, last_good: str | None) -> LoaderWorkerDied | None:
    """The one-line error for torch's "DataLoader worker ... is killed by signal" (None for any other error)."""
    m = _WORKER_DIED.search(str(err))
    if m is None:
        return None
    pids, sig, code = m.group(1).strip(), m.group(2), m.group(3)
    how = (
        f"was killed by signal {sig.strip()}"
        if sig
        else "exited unexpectedly" + (f" (exit code {code})" if code else "")
    )
    hint = " (the kernel's OOM killer does this when memory runs out: lower data.num_workers or data.cache_mb)"
    return LoaderWorkerDied(
        f"a data loader worker (pid {pids}) {how}{hint if sig == 'Killed' else ''}; training stopped at iteration "
        f"{iteration}. Last checkpoint: {last_good or 'none'}; continue with --resume auto"
    )
