"""Shared by the app tests: a tiny run folder, and ``sfd app`` started in a subprocess with the network cut."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers import bundled_photo_dir, tiny_config

REPO = Path(__file__).resolve().parents[1]


def make_tiny_run(root: Path) -> Path:
    """``root/runs/tiny``: a run folder with one checkpoint of a tiny SFD model (seconds, random weights)."""
    from sfd.train import build_run, save_checkpoint

    photos = bundled_photo_dir(root / "photos", max_side=96)
    run = build_run(tiny_config(photos, root / "unused", extra=["loss.perceptual=0"]))
    run_dir = root / "runs" / "tiny"
    save_checkpoint(run, run_dir / "checkpoints" / "iter_00000004.pth")
    return run_dir


GUARD = """
import os, socket
_log = os.environ["SFD_TEST_NET_LOG"]
_real = socket.socket.connect
def _local(address):
    host = address[0] if isinstance(address, tuple) else ""
    return not isinstance(address, tuple) or host in ("127.0.0.1", "::1", "localhost", "0.0.0.0")
def connect(self, address):
    if not _local(address):
        with open(_log, "a") as f:
            f.write(repr(address) + "\\n")
        raise OSError(101, "Network is unreachable (test)")
    return _real(self, address)
socket.socket.connect = connect
_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if host not in (None, "127.0.0.1", "::1", "localhost", "0.0.0.0"):
        with open(_log, "a") as f:
            f.write(f"resolve {host!r}\\n")
        raise socket.gaierror(-3, "Temporary failure in name resolution (test)")
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(tiny: Path, tmp: Path, *extra: str, guard: bool = True, cwd: Path | None = None):
    """``sfd app`` in a subprocess; with ``guard``, every connection or name lookup beyond this machine fails
    and is written to ``tmp/net.log`` (the network is unreachable). Returns (process, url, seconds to start)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + ([str(tmp)] if guard else [])))
    env.update(SFD_TEST_NET_LOG=str(tmp / "net.log"), OMP_NUM_THREADS="1")
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # sfd app must switch it off itself
    if guard:
        (tmp / "sitecustomize.py").write_text(GUARD)
    port = free_port()
    cmd = [sys.executable, "-m", "sfd", "app", str(tiny), "--port", str(port), "--device", "cpu", *extra]
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd or tmp)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - began < 120:
        if proc.poll() is not None:
            raise AssertionError(f"sfd app ended: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, url, time.perf_counter() - began
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("sfd app did not answer within 120 s")


def stop(proc) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out
