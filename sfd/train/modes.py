"""How a training step runs: eager, sync-free or replayed from a CUDA graph, decided once (``step_mode``)
into one object (``make_step``) that the loop calls and that ``step_core`` asks how to take each optimizer
step. The three give the same updates (tests/test_step_switches.py):

- ``EagerStep``: the NaN/Inf guard reads the losses and gradients on the host and skips a bad step there;
  after a bad generator step no discriminator step runs.
- ``SyncFreeStep`` (``train.sync_free``): the same decisions stay device tensors (no host sync inside a
  step); the fused Adam reads them to skip its update, and a discriminator step after a bad generator step
  runs its forwards but leaves every parameter and buffer (spectral norm's u/v, BatchNorm statistics) as
  it was, as the eager step does by not running.
- ``GraphedStep`` (``train.cuda_graph``): the sync-free step captured once per phase (pixel warm-up,
  adversarial) into a CUDA graph and replayed. Whether a step can be captured is found out: when a capture
  fails (a generator that copies from the host in its forward, as spandrel's SwinIR does for input sizes
  other than its ``img_size``), the run says so in one line and goes on with the sync-free step.
"""

from __future__ import annotations

import contextlib

import torch
from tqdm import tqdm

from sfd import distributed
from sfd.config import Config
from sfd.graphs import capture, on_side_stream
from sfd.train.bookkeeping import floats
from sfd.train.guard import BadStepCounter, DeviceBadSteps, bad_losses, grads_finite, grads_finite_on_device
from sfd.train.precision import autocast
from sfd.train.step import step_core
from sfd.yamlconfig import ConfigError

__all__ = ["step_mode", "make_step", "EagerStep", "SyncFreeStep", "GraphedStep"]


def step_mode(cfg: Config, device: torch.device) -> str:
    """``"eager"``, ``"sync_free"`` or ``"graphed"``: the one rule. ``train.cuda_graph: auto`` graphs where it
    was measured to pay and is supported (docs/benchmarks.md): CUDA, one process, fp32 or bf16, the fused
    Adam, no torch.compile. A switch set to true where it cannot work is a config error."""
    t = cfg.train
    on = [k for k in ("sync_free", "cuda_graph") if getattr(t, k) is True]
    if on and cfg.optim.impl not in ("auto", "fused"):
        raise ConfigError(f"train.{on[0]} needs the fused Adam (optim.impl auto or fused, not {cfg.optim.impl})")
    if on and t.precision == "fp16":
        raise ConfigError(f"train.{on[0]} works with precision fp32 or bf16, not fp16")
    if t.cuda_graph is True and device.type != "cuda":
        raise ConfigError(f"train.cuda_graph needs a CUDA device (train.device resolves to {device})")
    if t.cuda_graph is True and distributed.world_size() > 1:
        raise ConfigError("train.cuda_graph runs in one process: under torchrun set train.cuda_graph=false or auto")
    graphed = t.cuda_graph is True or (
        t.cuda_graph == "auto"
        and device.type == "cuda"
        and distributed.world_size() == 1
        and t.precision != "fp16"
        and cfg.optim.impl in ("auto", "fused")
        and not t.compile
    )
    return "graphed" if graphed else "sync_free" if t.sync_free else "eager"


def make_step(mode: str, device: torch.device):
    return {"eager": EagerStep, "sync_free": SyncFreeStep, "graphed": GraphedStep}[mode](device)


class EagerStep:
    name = "eager"

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, run, lr, hr, hr_real, adversarial: bool) -> dict:
        run.bad = []
        return floats(step_core(run, self, lr, hr, hr_real, adversarial))

    def uncaptured(self, run, lr, hr, hr_real, adversarial: bool) -> dict:
        """This step as it runs outside a CUDA graph."""
        return self(run, lr, hr, hr_real, adversarial)

    def autocast(self, run):
        return autocast(self.device, run.cfg.train.precision)

    def optimizer_step(self, run, name: str, loss, params, logs: dict, g_ok=None) -> bool:
        """One step of optimizer ``name``; False (and the update skipped) when the loss or a gradient is NaN/Inf.
        Gradients are averaged over processes first, so every process takes the same decision. With fp16 the
        gradient scaler skips overflowing steps itself (calibration, not a bad step)."""
        opt, scaler, clip = run.optimizers[name], run.scalers[name], run.cfg.optim.grad_clip
        opt.zero_grad(set_to_none=True)
        params = list(params)
        scaler.scale(loss).backward()
        distributed.average_gradients(params)  # the same step on every process (sfd.distributed)
        scaler.unscale_(opt)  # fp16: clip and step on the true gradients
        if not torch.isfinite(loss) or (not scaler.is_enabled() and not grads_finite(params)):
            opt.zero_grad(set_to_none=True)
            key = "l_g_total" if name == "g" else f"l_d_{name}"
            terms = floats(logs) if name == "g" else {key: float(logs[key])}  # which of G's terms went bad
            run.bad += bad_losses(terms) or [f"gradient of {key}"]
            return False
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(opt)  # fp16: skipped when a gradient overflowed
        scaler.update()
        return True

    def d_step_due(self, ok_g) -> bool:
        return ok_g  # no discriminator step after a bad generator step

    def unchanged_unless(self, ok, modules):
        return contextlib.nullcontext()

    def finish(self, run, ok) -> None:
        pass

    def check_bad_steps(self, run, counter: BadStepCounter, iteration: int, last_good, due: bool) -> str | None:
        return counter.update(iteration, run.bad, last_good)  # raises after too many in a row


class SyncFreeStep(EagerStep):
    name = "sync_free"

    def __init__(self, device: torch.device):
        super().__init__(device)
        self.bad_steps = DeviceBadSteps(device)

    def __call__(self, run, lr, hr, hr_real, adversarial: bool) -> dict:
        return step_core(run, self, lr, hr, hr_real, adversarial)

    def optimizer_step(self, run, name: str, loss, params, logs: dict, g_ok=None) -> torch.Tensor:
        """``EagerStep.optimizer_step`` without a host sync: the decision (True: stepped) stays a device tensor,
        which the fused Adam reads to skip its update (its ``found_inf``, as GradScaler uses it). ``g_ok`` (a
        discriminator's step: whether the generator's step was good) skips it too when false."""
        opt, clip = run.optimizers[name], run.cfg.optim.grad_clip
        opt.zero_grad(set_to_none=True)
        params = list(params)
        loss.backward()
        distributed.average_gradients(params)
        ok = torch.isfinite(loss) & grads_finite_on_device(params)
        if g_ok is not None:
            ok = ok & g_ok
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        opt.found_inf = (~ok).float()
        opt.step()
        return ok

    def d_step_due(self, ok_g) -> bool:
        return True  # decided on the device: the D optimizers skip, ``unchanged_unless`` restores the buffers

    @contextlib.contextmanager
    def unchanged_unless(self, ok: torch.Tensor, modules):
        """Buffers of ``modules`` (spectral norm's u/v, BatchNorm's statistics) as they were before the block
        unless ``ok``: what an eager step that did not run leaves."""
        buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
        saved = [b.clone() for b in buffers]
        yield
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(torch.where(ok, b, s))

    def finish(self, run, ok) -> None:
        self.bad_steps.update(ok)

    def check_bad_steps(self, run, counter: BadStepCounter, iteration: int, last_good, due: bool) -> str | None:
        # read the device's count (one sync) only when a line is logged or a checkpoint written
        return self.bad_steps.check(counter, iteration, last_good) if due else None


class GraphedStep(SyncFreeStep):
    """Each phase (pixel warm-up, adversarial) runs its first ``warmup`` steps eagerly on a side stream
    (cuDNN's autotuning, Adam's states and the allocator settle), then one step is captured, not run, and
    replayed from then on with the batch copied into the graph's static inputs. The capture is
    ``thread_local``: the loader's pin-memory thread may call CUDA while it runs. A phase's graph (and its
    memory) is released when the next phase starts."""

    name = "graphed"

    def __init__(self, device: torch.device, warmup: int = 3, say=tqdm.write):
        super().__init__(device)
        self.warmup, self.say = warmup, say
        self.eager_left: dict[bool, int] = {}
        self.graphs: dict[bool, tuple] = {}  # phase -> (graph, static inputs, static logs)
        self.failed: str | None = None  # why a capture failed: the run goes on sync-free

    def autocast(self, run):  # autocast's weight-cast cache must not outlive the capture
        return autocast(self.device, run.cfg.train.precision, cache=False)

    def uncaptured(self, run, lr, hr, hr_real, adversarial: bool) -> dict:
        return super().__call__(run, lr, hr, hr_real, adversarial)

    def __call__(self, run, lr, hr, hr_real, adversarial: bool) -> dict:
        if self.failed:
            return self.uncaptured(run, lr, hr, hr_real, adversarial)
        if adversarial not in self.graphs:
            if (not adversarial) in self.graphs:  # the other phase is over: free its graph and memory
                graph, *_ = self.graphs.pop(not adversarial)
                graph.reset()
            left = self.eager_left.setdefault(adversarial, self.warmup)
            if left > 0:
                self.eager_left[adversarial] = left - 1
                return on_side_stream(self.uncaptured, run, lr, hr, hr_real, adversarial)
            static = tuple(x.clone() for x in (lr, hr, hr_real))
            try:
                graph, logs = capture(lambda *batch: self.uncaptured(run, *batch, adversarial), *static)
            except Exception as err:  # nothing ran during the failed capture: this step runs eagerly
                self.failed = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                self.say(
                    f"train.cuda_graph: the {'adversarial' if adversarial else 'pixel warm-up'} step could not be "
                    f"captured ({self.failed}); training goes on without CUDA graphs (sync-free)"
                )
                return self.uncaptured(run, lr, hr, hr_real, adversarial)
            self.graphs[adversarial] = (graph, static, logs)
        graph, static, logs = self.graphs[adversarial]
        for buf, x in zip(static, (lr, hr, hr_real)):
            if x.shape != buf.shape or x.dtype != buf.dtype:
                raise ValueError(
                    f"train.cuda_graph: a batch of shape {tuple(x.shape)} ({x.dtype}) does not fit the captured "
                    f"step's {tuple(buf.shape)} ({buf.dtype}); a graph replays fixed shapes (train.cuda_graph=false "
                    "for batches of varying size)"
                )
            buf.copy_(x, non_blocking=True)
        graph.replay()
        return {k: v.clone() for k, v in logs.items()}  # the next replay overwrites the graph's outputs
