"""Faults where users train at scale (docs/reliability.md, "Training at scale"): a node that dies or
stops answering, automatic restarts, a wall-clock limit, a killed loader worker, a rank 0 that cannot
write; and resuming after each with another number of processes. torchrun with gloo on the CPU."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import bundled_photo_dir, tiny_overrides

from sfd import checkpoint
from sfd.config import parse_duration

REPO = Path(__file__).resolve().parents[1]
RUN = "classic_rrdb_x4"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return bundled_photo_dir(tmp_path_factory.mktemp("photos"))


def _env(**extra):
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(photos, out, iterations, extra=()):
    sets = tiny_overrides(photos, out, iterations) + ["data.val=null", "data.batch_size=1", *extra]
    return [a for s in sets for a in ("--set", s)]


def _train_args(photos, out, iterations, extra=()):
    return ["train", "--no-progress", "-c", RUN, *_sets(photos, out, iterations, extra)]


def _torchrun(args, nproc=1, nodes=None, port=None, launcher=("-m", "sfd"), torchrun_args=()):
    """``torchrun ... -m sfd ARGS``: one node (--standalone), or one of ``nodes`` launchers joined by
    c10d rendezvous on localhost at ``port``."""
    if nodes is None:
        where = ["--standalone"]
    else:
        where = [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=sfd"]
    run = [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={nproc}", *torchrun_args]
    return run + [*launcher, *args]


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... (torchrun starts its workers in sessions of their own)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            found += [k, *_descendants(k)]
    return found


def _signal_all(pids, sig) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _wait_for(pred, procs, timeout=240.0):
    t0 = time.monotonic()
    while not pred():
        for p in procs:
            assert p.poll() is None, (p.args[-40:], p.returncode)
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


def _saved(run_dir: Path, iteration: int):
    """True once checkpoint ``iteration`` is complete (its checksum file is written last)."""
    return lambda: (run_dir / "checkpoints" / f"iter_{iteration:08d}.pth.sha256").exists()


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("sfd train: error:")]


def _named_checkpoint(line: str) -> Path:
    return Path(re.search(r"[Ll]ast (?:good )?checkpoint: (\S+?\.pth)", line).group(1))


# ---------------------------------------------------------------- 1. a node dies


def _two_nodes(photos, out, tmp_path, iterations, extra=()):
    """Two launchers joined by c10d rendezvous; the first hosts the store (it starts first)."""
    port = _free_port()
    cmd = _torchrun(_train_args(photos, out, iterations, extra), nodes=2, port=port)
    logs = [open(tmp_path / f"node{i}.log", "w+") for i in range(2)]
    first = subprocess.Popen(cmd, env=_env(), stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(2)  # the first launcher binds the rendezvous port
    second = subprocess.Popen(cmd, env=_env(), stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)
    return first, second, logs


@pytest.mark.parametrize(
    "how",
    [
        "SIGSTOP",  # the node stops answering without closing its connections: a power loss, a partition
        pytest.param("SIGKILL", marks=pytest.mark.slow),  # its processes end: the kernel closes their sockets
    ],
)
def test_a_node_that_dies_stops_the_others_within_dist_timeout(photos, tmp_path, how):
    """The issue's setup: 2 launchers, checkpoint every 5 iterations; after checkpoint 5 the whole second
    node (launcher and worker) is stopped. Before the heartbeat, the first waited in a collective for the
    process group's timeout (an hour), with no message."""
    out, timeout = tmp_path / "out", "5s"
    first, second, logs = _two_nodes(
        photos, out, tmp_path, 1000, ["train.save_every=5", f"train.dist_timeout={timeout}"]
    )
    frozen = []
    try:
        _wait_for(_saved(out / RUN, 5), [first, second])
        frozen = [second.pid, *_descendants(second.pid)]
        _signal_all(frozen, getattr(signal, how))
        t0 = time.monotonic()
        first.wait(timeout=120)
        took = time.monotonic() - t0
    finally:
        _signal_all([first.pid, *_descendants(first.pid)] + frozen, signal.SIGKILL)
        first.wait()
        second.wait()
    logs[0].seek(0)
    text = logs[0].read()
    assert first.returncode != 0
    lines = _error_lines(text)
    assert len(lines) == 1, text[-3000:]
    if how == "SIGSTOP":
        assert re.search(r"lost rank 1 \(host .*, pid \d+\): no heartbeat for \d+ s", lines[0]), lines[0]
    else:  # gloo sees the closed connection first, or the heartbeat the silence
        assert "lost contact with another training process" in lines[0] or "lost rank 1" in lines[0], lines[0]
    named = _named_checkpoint(lines[0])
    assert named == checkpoint.find_latest(out / RUN) and checkpoint.load(named).iteration >= 5
    # bounded: the timeout, a step in flight, torchrun's teardown (measured ~7 s on an idle machine)
    assert took < parse_duration(timeout) + 30, took
    print(f"{how}: the surviving node exited {took:.1f} s after the other stopped")
