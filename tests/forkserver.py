"""``python -m sfd ...`` for the tests, without paying the imports for every command.

On the 2-core test machine a fresh ``python -m sfd train`` spends 10-14 s of CPU importing torch, torchvision
(which loads torch._dynamo), open_clip and timm before it does anything, and the suite starts dozens of
commands. A server imports them once and forks one child per command, as multiprocessing's forkserver does.
The child is a new process: its own pid, working folder, environment, standard streams (the caller's own file
descriptors) and signal dispositions; it runs sfd's ``__main__`` as ``python -m sfd`` does, on modules imported
before any command ran (no thread was started: the fork copies one thread). What a fork cannot reproduce is
refused, and the client runs a real interpreter instead: an environment that differs from the server's in a
variable read at import time (thread counts, PYTHONPATH, locale, torch and Hugging Face settings).

    python tests/forkserver.py serve SOCKET            # conftest's ``sfd_python`` fixture starts it
    python tests/forkserver.py client SOCKET ARGS...   # what the fixture's ``python`` wrapper runs

The client forwards SIGINT, SIGTERM, SIGHUP and SIGUSR1 to the child and exits with its status (or dies by
its signal). Tests about processes themselves (``sfd --help`` imports no torch, process groups, torchrun,
SIGKILL) start real interpreters.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import sys

PRELOAD = [
    "torch",
    "torchvision",
    "open_clip",
    "spandrel",
    "sfd.cli",
    "sfd.train",
    "sfd.models.clip",
    "sfd.losses",
    "sfd.metrics",
    "sfd.inference",
    "sfd.evaluate",
    "sfd.bench",
]
# Read when a module is imported (or when the interpreter starts): a child with other values needs its own imports.
IMPORT_TIME = ("OMP_", "MKL_", "KMP_", "OPENBLAS_", "TORCH", "PYTORCH", "CUDA_", "HF_", "LC_", "LANG", "PYTHON")
NOT_IMPORT_TIME = {"PYTHON", "PYTHONUNBUFFERED"}  # gpu.sh's interpreter; the child sets its standard streams itself
RUNTIME = ("TORCHELASTIC_", "TORCH_NCCL_")  # torchrun's, for each rank: read when the process group starts
ADDED: dict[str, str] = {}  # environment variables the imports set
LOG = ""  # SOCKET.log: the commands refused (run by a real interpreter), and why
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


def _import_time_env(env: dict) -> dict:
    keep = {k: v for k, v in env.items() if k.startswith(IMPORT_TIME) and not k.startswith(RUNTIME)}
    keep = {k: v for k, v in keep.items() if k not in NOT_IMPORT_TIME}
    if "PYTHONPATH" in keep:
        keep["PYTHONPATH"] = os.pathsep.join(p for p in keep["PYTHONPATH"].split(os.pathsep) if p)
    return {k: v for k, v in keep.items() if v}


def serve(path: str) -> None:
    global ADDED, LOG
    LOG = path + ".log"
    before = dict(os.environ)
    for name in PRELOAD:
        __import__(name)
    # Set by the imports themselves (torch sets TORCHINDUCTOR_CACHE_DIR): a fresh process's imports would set them too.
    ADDED = {k: v for k, v in os.environ.items() if k not in before}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # the socket appears once the imports are done
    waiting: dict[int, socket.socket] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()
    try:
        while os.getppid() == parent:
            if select.select([listener], [], [], 0.05)[0]:
                conn, _ = listener.accept()
                _start(conn, listener, waiting)
            _reap(waiting)
    finally:
        for pid in waiting:  # the server stops: so do the commands it started
            os.kill(pid, signal.SIGKILL)


def _start(conn: socket.socket, listener: socket.socket, waiting: dict) -> None:
    msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    req = json.loads(msg)
    server, child = _import_time_env(dict(os.environ)), _import_time_env(ADDED | req["env"])
    if server != child:
        differ = sorted(k for k in server.keys() | child.keys() if server.get(k) != child.get(k))
        why = f"import-time environment differs: {differ}"
        with open(LOG, "a") as log:  # beside the socket: which commands ran in a real interpreter, and why
            print(f"refused {req['args'][:2]}: {why}", file=log)
        conn.send(json.dumps({"refused": why}).encode())
        conn.close()
        for fd in fds:
            os.close(fd)
        return
    pid = os.fork()
    if pid == 0:
        listener.close()
        conn.close()
        for other in waiting.values():
            other.close()
        waiting.clear()
        _run(req, fds)
    for fd in fds:
        os.close(fd)
    conn.send(json.dumps({"pid": pid}).encode())
    waiting[pid] = conn


def _run(req: dict, fds: list[int]) -> None:
    """In the forked child: be ``python -m sfd ARGS``, and end as its interpreter would (never returns)."""
    import atexit
    import runpy
    import threading

    import numpy as np

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(ADDED | req["env"])
    _standard_streams(bool(req["env"].get("PYTHONUNBUFFERED")))
    np.random.seed()  # a fresh process seeds numpy's global state from the OS; a fork would repeat the server's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.argv = ["-m", *req["args"]]
    code, interrupted = 0, False
    try:
        runpy.run_module("sfd", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt as e:
        sys.excepthook(type(e), e, e.__traceback__)
        interrupted = True
    except BaseException as e:
        sys.excepthook(type(e), e, e.__traceback__)
        code = 1
    # The interpreter's own shutdown, less the teardown of every module (2 s here, for nothing a command sees).
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # as CPython: an uncaught KeyboardInterrupt ends the process by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


def _standard_streams(unbuffered: bool) -> None:
    """sys.stdin/stdout/stderr on descriptors 0-2 as CPython makes them at start-up."""
    enc = sys.stdout.encoding
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        mode = "rb" if fd == 0 else "wb"
        raw = unbuffered and fd != 0
        binary = open(fd, mode, buffering=0 if raw else -1, closefd=False)  # noqa: SIM115
        tty = os.isatty(fd)
        stream = io.TextIOWrapper(
            binary,
            encoding=enc,
            errors="backslashreplace" if fd == 2 else "strict",
            line_buffering=not raw and (fd == 2 or tty),
            write_through=raw,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _reap(waiting: dict) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            try:
                conn.send(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode())
            except OSError:
                pass  # the client is gone
            conn.close()


def client(path: str, args: list[str]) -> None:
    real = [sys.executable, *args]
    if args[:2] != ["-m", "sfd"] or not os.path.exists(path):
        os.execv(sys.executable, real)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect(path)
    fds = [fd if _is_open(fd) else os.open(os.devnull, os.O_RDWR) for fd in (0, 1, 2)]
    req = {"args": args[2:], "cwd": os.getcwd(), "env": dict(os.environ)}
    socket.send_fds(conn, [json.dumps(req).encode()], fds)
    reply = json.loads(conn.recv(1 << 16))
    if "refused" in reply:
        os.execv(sys.executable, real)
    pid = reply["pid"]

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    data = b""
    while not data:
        data = conn.recv(1 << 16)  # a forwarded signal's handler runs, then recv resumes (PEP 475)
    code = json.loads(data)["status"]
    if code < 0:  # died by a signal: so does the client
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        client(sys.argv[2], sys.argv[3:])
