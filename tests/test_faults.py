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
import torch
from helpers import bundled_photo_dir, tiny_config, tiny_overrides

from sfd import checkpoint
from sfd.config import parse_duration
from sfd.train import train
from sfd.train.guard import LoaderWorkerDied

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


def _start(cmd) -> subprocess.Popen:
    """``cmd`` running, its output (stdout and stderr) read as text when it ends."""
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _listening(port: int) -> bool:
    """Some process listens on ``port`` (read from /proc: no connection that the store would see)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


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


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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


def _two_nodes(photos, out, tmp_path, iterations, extra=(), torchrun_args=()):
    """Two launchers joined by c10d rendezvous; the first hosts the store (it starts first)."""
    port = _free_port()
    cmd = _torchrun(_train_args(photos, out, iterations, extra), nodes=2, port=port, torchrun_args=torchrun_args)
    logs = [open(tmp_path / f"node{i}.log", "w+") for i in range(2)]
    first = subprocess.Popen(cmd, env=_env(), stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True)
    _wait_for(lambda: _listening(port), [first])  # the first launcher hosts the rendezvous store
    second = subprocess.Popen(cmd, env=_env(), stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)
    return first, second, logs


@pytest.mark.parametrize(
    "how, dies, at",
    [
        ("SIGSTOP", "second", 2),  # stops answering without closing its connections: a power loss, a partition
        pytest.param("SIGKILL", "second", 5, marks=pytest.mark.slow),  # its processes end: sockets closed
        pytest.param("SIGSTOP", "first", 5, marks=pytest.mark.slow),  # the node that hosts torchrun's store
    ],
)
def test_a_node_that_dies_stops_the_others_within_dist_timeout(photos, tmp_path, how, dies, at):
    """The issue's setup: 2 launchers, a checkpoint every ``at`` iterations (5 in the issue; 2 in the
    default suite, for time); after the first, a whole node (launcher and worker) is stopped. Before the
    heartbeat, the other waited in a collective for the process group's timeout (an hour), with no message."""
    out, timeout = tmp_path / "out", "5s"
    nodes = _two_nodes(photos, out, tmp_path, 1000, [f"train.save_every={at}", f"train.dist_timeout={timeout}"])
    lost = 0 if dies == "first" else 1
    victim, survivor, log = nodes[lost], nodes[1 - lost], nodes[2][1 - lost]
    frozen = []
    try:
        _wait_for(_saved(out / RUN, at), nodes[:2])
        workers = _descendants(survivor.pid)
        frozen = [victim.pid, *_descendants(victim.pid)]
        _signal_all(frozen, getattr(signal, how))
        t0 = time.monotonic()
        _wait_for(lambda: not any(map(_running, workers)), [], timeout=300)
        worker_took = time.monotonic() - t0
        if dies == "second":
            survivor.wait(timeout=300)
        took = time.monotonic() - t0
    finally:
        _signal_all([survivor.pid, *_descendants(survivor.pid)] + frozen, signal.SIGKILL)
        survivor.wait()
        victim.wait()
    log.seek(0)
    text = log.read()
    lines = _error_lines(text)
    assert len(lines) == 1, text[-3000:]
    if how == "SIGKILL":  # gloo sees the closed connection first, or the heartbeat the silence
        assert "lost contact with another training process" in lines[0] or "lost rank" in lines[0], lines[0]
    elif dies == "second":
        assert re.search(r"lost rank \d \(host .*, pid \d+\): no heartbeat for \d+ s", lines[0]), lines[0]
    else:  # its store answers no more, or its worker's heartbeat stops: whichever the survivor sees first
        assert "lost torchrun's rendezvous store" in lines[0] or "no heartbeat" in lines[0], lines[0]
    named = _named_checkpoint(lines[0])
    assert named == checkpoint.find_latest(out / RUN) and checkpoint.load(named).iteration >= at
    launcher = f", its launcher {took:.1f} s" if dies == "second" else ""
    print(f"{how} of the {dies} node: the other's worker exited {worker_took:.1f} s later{launcher}")
    # bounded: the timeout, a step in flight (and for the launcher, torchrun's teardown)
    assert worker_took < parse_duration(timeout) + 20, worker_took
    if dies == "second":
        assert survivor.returncode != 0 and took < parse_duration(timeout) + 30, took
    # else torchrun's own agent waits on the lost store: more than 300 s here, with or without
    # --rdzv-conf=read_timeout=5 (measured); the devices are free once the worker has exited


def _same(a: Path, b: Path) -> None:
    """Bit-identical training state: G, EMA, Ds and their Adam states."""
    ra, rb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)

    def flat(raw):
        out = {f"g.{k}": v for k, v in raw["generator"].items()}
        out.update({f"ema.{k}": v for k, v in raw["generator_ema"].items()})
        for name, sd in raw["discriminators"].items():
            out.update({f"{name}.{k}": v for k, v in sd.items()})
        for name, opt in raw["optimizers"].items():
            for i, st in opt["state"].items():
                out.update({f"opt.{name}.{i}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
        return out

    fa, fb = flat(ra), flat(rb)
    assert fa.keys() == fb.keys()
    differ = [k for k in fa if not torch.equal(fa[k], fb[k])]
    assert not differ, differ[:5]
    assert ra["iteration"] == rb["iteration"] and ra["samples_seen"] == rb["samples_seen"]


def _resume_in_one_process(photos, out, iterations, extra=()):
    """Item 6: what a fault left behind resumes with another number of processes (here 1) to the end."""
    final = train(
        tiny_config(photos, out, ["data.val=null", "data.batch_size=1", *extra], path=RUN, iterations=iterations),
        resume="auto",
        progress=False,
    )
    ckpt = checkpoint.load(final)
    assert ckpt.iteration == iterations
    return ckpt


# ---------------------------------------------------------------- 2. automatic restarts


def test_a_restarted_job_resumes_by_itself_and_a_first_start_starts_fresh(
    photos, tmp_path, monkeypatch, capsys, one_thread
):
    """No change to the command line: the restart count that torchrun or SLURM sets is enough. A restart
    before the first checkpoint starts fresh; a later one resumes (even with --overwrite, which would delete
    the run) and ends as an uninterrupted run does, bit for bit."""
    ref = train(tiny_config(photos, tmp_path / "ref", ["train.save_every=1"], iterations=3), progress=False)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    train(tiny_config(photos, tmp_path / "run", ["train.save_every=1"], iterations=1), progress=False)
    said = capsys.readouterr().out
    assert "torchrun restart 1" in said and "starting from scratch" in said, said
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    cfg = tiny_config(photos, tmp_path / "run", ["train.save_every=1"], iterations=3)
    final = train(cfg, progress=False, overwrite=True)
    said = capsys.readouterr().out
    assert "SLURM requeue 2" in said and "resuming from" in said and "iter_00000001.pth" in said, said
    _same(ref, final)
    monkeypatch.delenv("SLURM_RESTART_COUNT")  # a first start finds the run: it is not silently continued
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, progress=False)


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    for pid in _descendants(launcher.pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"-m" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError(f"no process of rank {rank}")


@pytest.mark.slow
def test_torchrun_max_restarts_resumes_from_the_newest_checkpoint_bit_exactly(photos, tmp_path):
    """2 processes with --max-restarts=1; rank 1 is SIGKILLed after checkpoint 2; torchrun restarts both,
    which resume from the newest good checkpoint and end as an uninterrupted 2-process run, bit for bit."""
    n, extra = 6, ["train.save_every=1", "data.batch_size=1"]
    ref = subprocess.run(
        _torchrun(_train_args(photos, tmp_path / "ref", n, extra), nproc=2),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "run"
    cmd = _torchrun(_train_args(photos, out, n, extra), nproc=2, torchrun_args=["--max-restarts=1"])
    proc = _start(cmd)
    _wait_for(_saved(out / RUN, 2), [proc])
    os.kill(_rank_pid(proc, 1), signal.SIGKILL)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text[-3000:]
    assert "torchrun restart 1" in text and "resuming from" in text, text[-3000:]
    name = f"iter_{n:08d}.pth"
    _same(tmp_path / "ref" / RUN / "checkpoints" / name, out / RUN / "checkpoints" / name)


# ---------------------------------------------------------------- 3. a wall-clock limit


def test_max_time_stops_with_a_checkpoint_before_the_limit(photos, tmp_path, capsys, one_thread):
    limit = 8.0
    cfg = tiny_config(photos, tmp_path, ["train.save_every=1000", f"train.max_time={limit:g}s"], iterations=1000)
    t0 = time.monotonic()
    final = train(cfg, progress=False)
    took = time.monotonic() - t0
    ckpt = checkpoint.load(final)
    assert 1 <= ckpt.iteration < 1000
    said = capsys.readouterr().out
    assert f"train.max_time={limit:g}s is nearly up: stopped at iteration {ckpt.iteration} of 1000" in said, said
    print(f"max_time {limit:g} s: stopped at iteration {ckpt.iteration}, {took:.2f} s after train() began")
    assert took < limit + 1.0  # the margin (twice the slowest step, plus the slowest save) held


@pytest.mark.slow
def test_max_time_under_torchrun_stops_every_rank_at_one_iteration_then_resumes_in_one(photos, tmp_path):
    out = tmp_path / "out"
    args = _train_args(photos, out, 1000, ["train.save_every=1000", "train.max_time=25s"])
    t0 = time.monotonic()
    proc = subprocess.run(_torchrun(args, nproc=2), env=_env(), capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    # a rank that went on alone would wait in the next collective, or fail it: exit 0 means they agreed
    assert proc.returncode == 0, proc.stderr[-3000:]
    stops = re.findall(r"stopped at iteration (\d+) of 1000", proc.stdout + proc.stderr)
    assert len(stops) == 1, proc.stderr[-3000:]  # rank 0 says it
    ckpt = checkpoint.load(checkpoint.find_latest(out / RUN))
    assert ckpt.iteration == int(stops[0]) and ckpt.extra["samples_seen"] == 2 * ckpt.iteration
    print(f"max_time 25 s under torchrun: iteration {ckpt.iteration}, launcher ran {took:.1f} s")
    assert took < 25 + 15  # the limit counts from each process's start; torchrun's own start-up and exit add
    resumed = _resume_in_one_process(photos, out, ckpt.iteration + 2)
    assert resumed.extra["samples_seen"] == 2 * ckpt.iteration + 2


# ---------------------------------------------------------------- 4. a loader worker is killed


def _loader_workers(pid: int) -> list[int]:
    """``pid``'s forked DataLoader workers (children with its command line)."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [k for k in _descendants(pid) if Path(f"/proc/{k}/cmdline").read_bytes() == cmdline]


def test_a_killed_loader_worker_is_one_line_and_resume_auto_is_bit_exact(photos, tmp_path, one_thread):
    """SIGKILL to a DataLoader worker, as the kernel's OOM killer sends, in one process."""
    import threading

    n, extra = 5, ["train.save_every=1", "data.num_workers=1", "data.val=null"]
    ref = train(tiny_config(photos, tmp_path / "ref", extra, iterations=n), progress=False)
    cfg = tiny_config(photos, tmp_path / "run", extra, iterations=n)
    killed = []

    def kill_after_checkpoint_2():
        t0 = time.monotonic()
        while not _saved(tmp_path / "run" / cfg.name, 2)() and time.monotonic() - t0 < 120:
            time.sleep(0.01)
        for pid in _loader_workers(os.getpid()):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_after_checkpoint_2)
    killer.start()
    with pytest.raises(LoaderWorkerDied) as caught:
        train(cfg, progress=False)
    killer.join()
    message = str(caught.value)
    # torch names the signal when its SIGCHLD handler sees the death first; when its own liveness check
    # does (the worker already reaped), it can only say that the worker exited
    worker = f"a data loader worker (pid {killed[0]})" if killed else "?"
    if f"{worker} was killed by signal Killed" in message:
        assert "OOM killer" in message
    else:
        assert f"{worker} exited unexpectedly" in message, message
    assert "continue with --resume auto" in message and "\n" not in message
    named = _named_checkpoint(message)
    assert named == checkpoint.find_latest(tmp_path / "run" / cfg.name) and checkpoint.load(named).iteration >= 2
    final = train(cfg, resume="auto", progress=False)
    _same(ref, final)


@pytest.mark.slow
def test_a_killed_loader_worker_under_torchrun_stops_every_rank_then_resumes_in_one(photos, tmp_path):
    out = tmp_path / "out"
    cmd = _torchrun(_train_args(photos, out, 1000, ["train.save_every=2", "data.num_workers=1"]), nproc=2)
    proc = _start(cmd)
    _wait_for(_saved(out / RUN, 2), [proc])
    rank0 = _rank_pid(proc, 0)
    victim = _loader_workers(rank0)[0]
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    text, _ = proc.communicate(timeout=300)
    took = time.monotonic() - t0
    assert proc.returncode != 0
    lines = [x for x in _error_lines(text) if "data loader worker" in x]
    assert len(lines) == 1 and f"(pid {victim}) was killed by signal Killed" in lines[0], text[-3000:]
    assert "_MultiProcessingDataLoaderIter" not in text  # no traceback from inside torch's loader
    print(f"loader worker killed under torchrun: every rank gone {took:.1f} s later")
    named = _named_checkpoint(lines[0])
    _resume_in_one_process(photos, out, checkpoint.load(named).iteration + 2, ["data.num_workers=1"])


# ---------------------------------------------------------------- 5. rank 0 cannot write


@pytest.mark.slow
def test_rank_0_that_cannot_write_stops_every_rank_and_keeps_the_previous_checkpoint(photos, tmp_path):
    out = tmp_path / "out"
    args = _train_args(photos, out, 1000, ["train.save_every=1"])
    cmd = _torchrun(args, nproc=2, launcher=[str(REPO / "tests" / "fault_entry.py")])
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=_env(SFD_TEST_ENOSPC_ON_SAVE="2"), capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = _error_lines(text)
    assert len(lines) == 1 and "No space left on device" in lines[0] and "iter_00000001.pth" in lines[0], text[-3000:]
    ckpts = out / RUN / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["iter_00000001.pth", "iter_00000001.pth.sha256"]
    assert checkpoint.load(ckpts / "iter_00000001.pth").iteration == 1
    print(f"rank 0 cannot write: torchrun ended {took:.1f} s after it started")
    _resume_in_one_process(photos, out, 3)


# ---------------------------------------------------------------- 6. a dead node's run resumes with fewer processes


@pytest.mark.slow
def test_after_a_node_died_the_run_resumes_in_one_process(photos, tmp_path):
    out = tmp_path / "out"
    first, second, logs = _two_nodes(photos, out, tmp_path, 1000, ["train.save_every=2", "train.dist_timeout=5s"])
    stopped = []
    try:
        _wait_for(_saved(out / RUN, 2), [first, second])
        stopped = [second.pid, *_descendants(second.pid)]
        _signal_all(stopped, signal.SIGKILL)
        first.wait(timeout=120)
    finally:
        _signal_all([first.pid, *_descendants(first.pid)] + stopped, signal.SIGKILL)
        first.wait()
        second.wait()
    newest = checkpoint.load(checkpoint.find_latest(out / RUN))
    resumed = _resume_in_one_process(photos, out, newest.iteration + 2)
    assert resumed.extra["samples_seen"] == 2 * newest.iteration + 2


@pytest.mark.parametrize("key", ["train.max_time", "train.dist_timeout"])
@pytest.mark.parametrize("value", ["soon", "'10'", "0s", "-5m"])  # '10': no unit
def test_durations_that_do_not_parse_name_their_key(key, value):
    from sfd.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=rf"{key}=.* (is not a duration|must be longer than zero)"):
        load_config(None, [f"{key}={value}"])
    assert parse_duration("23h30m") == 23.5 * 3600 and parse_duration("1d 2h 3m 4.5s") == 93784.5


# ---------------------------------------------------------------- one node: torchrun's own handling


@pytest.mark.slow
def test_one_node_sigkill_of_a_rank_ends_the_group_and_sigterm_stops_every_rank_at_one_iteration(photos, tmp_path):
    """On one node torchrun itself notices a dead worker and ends the others; SIGTERM to the launcher
    reaches every worker, and they stop at the same iteration with one checkpoint and the resume command."""
    out = tmp_path / "kill"
    proc = _start(_torchrun(_train_args(photos, out, 1000, ["train.save_every=2"]), nproc=2))
    _wait_for(_saved(out / RUN, 2), [proc])
    os.kill(_rank_pid(proc, 1), signal.SIGKILL)
    t0 = time.monotonic()
    proc.communicate(timeout=300)
    print(f"one node, SIGKILL of rank 1: torchrun ended the group {time.monotonic() - t0:.1f} s later")
    assert proc.returncode != 0

    out = tmp_path / "term"
    proc = _start(_torchrun(_train_args(photos, out, 1000, ["train.save_every=1000"]), nproc=2))
    _wait_for(
        lambda: (out / RUN / "log.jsonl").exists() and len((out / RUN / "log.jsonl").read_text().split()) >= 2, [proc]
    )
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    text, _ = proc.communicate(timeout=300)
    print(f"one node, SIGTERM to the launcher: every rank stopped {time.monotonic() - t0:.1f} s later")
    stops = re.findall(r"stopped by SIGTERM at iteration (\d+); wrote (\S+)\.", text)
    assert len(stops) == 2 and stops[0] == stops[1], text[-3000:]  # both ranks, the same iteration
    assert [p.name for p in checkpoint.list_checkpoints(out / RUN)] == [f"iter_{int(stops[0][0]):08d}.pth"]
