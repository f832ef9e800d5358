"""Data-parallel training over the processes ``torchrun`` starts (one node or several).

    torchrun --nproc_per_node=N -m sfd train -c CONFIG ...

Each process holds a full copy of the generator, the discriminators and the frozen CLIP/VGG;
``data.batch_size`` is per process, so the global batch is N x batch_size. After every backward
the gradients of the trained modules (generator, Feat-D, TG-D's contexts, a pixel D) are averaged
over the processes by one bucketed all-reduce, before clipping and the optimizer step, so every
process takes the same step and the parameters stay identical (what DDP does, written out: the
trainer calls models through methods such as ``text_features`` that a DDP wrapper would not see).
Frozen CLIP and VGG get no gradients and are not synchronised. Spectral norm's power-iteration
vectors ``u`` depend on the weights alone, so they stay equal too; they are broadcast from rank 0
at the start with everything else.

Losses are means over each process's batch; averaging the gradients over processes gives the
gradient of the mean over the global batch, as one process with the whole batch would. The one
exception is RaGAN (the ESRGAN baseline), whose relativistic terms subtract the mean logit of the
process's own batch, as every DDP ESRGAN trainer does.

Faults (docs/reliability.md, "Training at scale"). A process that dies on another node, or whose
node stops answering, would leave the others waiting in a collective until the process group's
timeout (an hour here). So every process runs a ``Heartbeat``: a thread that counts up a key of its
own in torchrun's TCP store every ``timeout / 6`` seconds and reads everybody's; when another's count
has not moved for ``train.dist_timeout`` seconds, or the store stops answering, it prints one line
naming the lost process and the last good checkpoint and ends its own process (the main thread may
be blocked in a collective that nothing else would end). The heartbeat keeps beating while rank 0
validates or writes a long checkpoint, so ``dist_timeout`` bounds the detection of a dead node without
bounding legitimate work; the collectives keep their long timeout as a backstop for a process that
is alive but stuck. A collective that fails at once (a peer's connection closed) raises ``ProcessLost``.

Without torchrun's environment (``WORLD_SIZE`` unset or 1) every function here is a no-op.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "init",
    "shutdown",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "barrier",
    "average_gradients",
    "broadcast_modules",
    "mean_logs",
    "ShardedIterationSampler",
    "ProcessLost",
    "Heartbeat",
    "restarted",
    "any_flag",
    "max_over_processes",
    "from_main",
]

# The process group's own timeout: a backstop for a process that is alive but stuck (the heartbeat,
# not this, detects a dead one). Long, because rank 0 validates and writes checkpoints while the
# others wait in a collective.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


class ProcessLost(RuntimeError):
    """Another process of the group died or stopped answering (a collective failed)."""


def _collective(fn, *args):
    """Run one collective; a failure (gloo: "Connection closed by peer", a timeout) becomes ``ProcessLost``."""
    try:
        return fn(*args)
    except RuntimeError as err:  # DistBackendError and gloo's errors are RuntimeErrors
        text = re.sub(r"^\[[^\]]*\] ", "", " ".join(str(err).split()))  # gloo's source location
        first = text.split(". ")[0][:200]  # "Connection closed by peer [ADDR]:PORT", "Timed out waiting ..."
        raise ProcessLost(f"lost contact with another training process ({first})") from err


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: torch.device) -> bool:
    """Join torchrun's process group (NCCL for CUDA, gloo for the CPU); False when not under torchrun."""
    if env_world_size() <= 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, store=_attempt_store(), rank=rank_from_env(), world_size=env_world_size(), timeout=COLLECTIVE_TIMEOUT
    )
    return True


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def _attempt_store() -> dist.Store:
    """torchrun's store (its agent's, or one rank 0 hosts), under a prefix of its own for each attempt.
    After a restart (``--max-restarts``) the agent's store still holds the previous attempt's keys, and
    the new group read the dead processes' gloo addresses from them (``connectFullMesh failed ...
    Connection refused``, measured with torch 2.14)."""
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    host = rank_from_env() == 0 and not agent_hosts
    store = dist.TCPStore(addr, port, env_world_size(), is_master=host, timeout=COLLECTIVE_TIMEOUT, multi_tenant=True)
    return dist.PrefixStore(f"sfd/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the one process that logs, validates and writes files."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        _collective(dist.barrier)


_BUCKET_ELEMENTS = 8 * 1024 * 1024  # 32 MB of fp32 per all-reduce: few calls, bounded extra memory


def average_gradients(params) -> None:
    """Replace each gradient by its mean over the processes (parameters without a gradient are skipped:
    the same ones on every process, since all run the same code)."""
    if not is_distributed():
        return
    buckets: list[list[torch.Tensor]] = [[]]
    size = 0
    for g in (p.grad for p in params if p.grad is not None):
        if buckets[-1] and (g.dtype != buckets[-1][0].dtype or size + g.numel() > _BUCKET_ELEMENTS):
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += g.numel()
    for bucket in buckets:
        if not bucket:
            continue
        flat = torch.cat([g.reshape(-1) for g in bucket])
        _collective(dist.all_reduce, flat)
        flat /= world_size()
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


@torch.no_grad()
def broadcast_modules(*modules: torch.nn.Module | None) -> None:
    """Rank 0's parameters and buffers to every process (same seeds make them equal already; this
    makes sure, e.g. after a restore)."""
    if not is_distributed():
        return
    for m in modules:
        if m is None:
            continue
        for t in list(m.parameters()) + list(m.buffers()):
            _collective(dist.broadcast, t.data, 0)


def mean_logs(logs: dict[str, float], device: torch.device) -> dict[str, float]:
    """The logged scalars averaged over the processes (every process must call it, with the same keys)."""
    if not is_distributed():
        return logs
    keys = sorted(logs)
    values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=device)
    _collective(dist.all_reduce, values)
    values /= world_size()
    return dict(zip(keys, values.tolist()))


def max_over_processes(values: list[float], device: torch.device) -> list[float]:
    """The element-wise maximum over the processes: what every process needs to agree on, e.g. whether
    to stop now (a signal, the time limit) and why. One small all-reduce."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    _collective(dist.all_reduce, t, dist.ReduceOp.MAX)
    return t.tolist()


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every process when it is true on any."""
    return max_over_processes([float(flag)], device)[0] > 0


def from_main(obj):
    """Rank 0's ``obj`` (picklable) on every process, e.g. the outcome of a checkpoint only rank 0 writes,
    so that no process waits for a rank 0 that has stopped."""
    if not is_distributed():
        return obj
    box = [obj]
    _collective(dist.broadcast_object_list, box, 0)
    return box[0]


def restarted() -> str | None:
    """What restarted this job with the same command line: torchrun's ``--max-restarts`` (it sets
    ``TORCHELASTIC_RESTART_COUNT``), or a scheduler's requeue (SLURM sets ``SLURM_RESTART_COUNT``);
    None for a first start."""
    for var, what in (("TORCHELASTIC_RESTART_COUNT", "torchrun restart"), ("SLURM_RESTART_COUNT", "SLURM requeue")):
        n = os.environ.get(var, "").strip()
        if n.isdigit() and int(n) > 0:
            return f"{what} {int(n)} ({var}={n})"
    return None


class Heartbeat:
    """Declares a process lost when its heartbeat stops (see the module's docstring).

    Two daemon threads: one beats and reads the others' beats through the store (network I/O that can
    block for good when the store's node is gone: a stopped node still accepts connections, and a
    store client then waits past its own timeout); the other only watches the times, so it never
    blocks. ``last_checkpoint()`` names the newest good checkpoint for the message. On a loss the
    process ends with exit status 1 (``os._exit``: the main thread may be blocked in a collective
    forever). Start it after ``init``; every process must start it (it ends with a barrier).
    """

    def __init__(self, timeout: float, last_checkpoint: Callable[[], str | None], exit=os._exit):
        self.timeout, self.interval = float(timeout), max(0.2, float(timeout) / 6)
        self.last_checkpoint, self._exit = last_checkpoint, exit
        self._stop = threading.Event()
        self._store_error: str | None = None

    def start(self) -> Heartbeat:
        if not is_distributed():
            return self
        addr, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500"))
        self.where = f"{addr}:{port}"
        store = dist.TCPStore(addr, port, is_master=False, timeout=timedelta(seconds=self.timeout))
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.store = dist.PrefixStore(f"sfd_heartbeat/{restart}/", store)
        self.rank, self.n = rank(), world_size()
        self.store.set(f"who/{self.rank}", f"rank {self.rank} (host {socket.gethostname()}, pid {os.getpid()})")
        self.store.set(f"beat/{self.rank}", "0")
        barrier()  # every key exists: reads never wait for a missing one
        self.who = [w.decode() for w in self.store.multi_get([f"who/{r}" for r in range(self.n)])]
        now = time.monotonic()
        self._seen, self._since, self._answered = [b"0"] * self.n, [now] * self.n, now
        threading.Thread(target=self._beat, name="sfd-heartbeat", daemon=True).start()
        threading.Thread(target=self._watch, name="sfd-heartbeat-watch", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        keys, beat = [f"beat/{r}" for r in range(self.n)], 0
        while not self._stop.is_set():
            beat += 1
            try:
                self.store.set(keys[self.rank], str(beat))
                values = self.store.multi_get(keys)
            except Exception as err:  # the store's node died (its connection reset)
                text = re.sub(r"^\[[^\]]*\] ", "", " ".join(str(err).split()))
                self._store_error = text.split(". ")[0][:160]
                return
            now = time.monotonic()
            for r, v in enumerate(values):
                if v != self._seen[r]:
                    self._seen[r], self._since[r] = v, now
            self._answered = now
            self._stop.wait(self.interval)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            store = f"torchrun's rendezvous store at {self.where}"
            if self._store_error is not None:
                return self._lost(f"lost {store}: {self._store_error}")
            if now - self._answered > self.timeout:
                return self._lost(f"lost {store}: no answer for {now - self._answered:.0f} s (its node died or hangs)")
            for r in range(self.n):
                if now - self._since[r] > self.timeout:
                    silent = now - self._since[r]
                    return self._lost(f"lost {self.who[r]}: no heartbeat for {silent:.0f} s (its node died or hangs)")

    def _lost(self, what: str) -> None:
        if self._stop.is_set():  # the run ended meanwhile
            return
        if os.environ.get("LOCAL_RANK", "0") == "0":  # one line per node
            print(
                f"sfd train: error: {what}; stopped rank {self.rank} (train.dist_timeout={self.timeout:g}s). "
                f"Last good checkpoint: {self.last_checkpoint() or 'none'}; continue with --resume auto",
                file=sys.stderr,
                flush=True,
            )
        sys.stdout.flush()
        self._exit(1)


class ShardedIterationSampler(Sampler[int]):
    """This process's share of one global stream of sample indices ``start, start+1, ... < stop``.

    The stream is cut into global batches of ``batch_size * world_size`` samples; process r takes
    the r-th ``batch_size`` slice of each. So sample k (and its crop and degradation seed, which come
    from k alone) is the same whatever the number of processes, and one global batch holds the same
    samples as one process with the whole batch would draw. Incomplete global batches are dropped.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.rank, self.world_size = rank, world_size

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def __iter__(self):
        g = self.global_batch
        for first in range(self.start, self.stop - g + 1, g):
            own = first + self.rank * self.batch_size
            yield from range(own, own + self.batch_size)

    def __len__(self) -> int:
        return max(0, (self.stop - self.start) // self.global_batch) * self.batch_size
