import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs 2 xdist workers on 2 cores: one torch thread each (and in the commands tests start),
    # or the workers' OpenMP threads wait on each other. One thread is also what most modules chose alone.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def shared_data_dir() -> Path:
    """``$SFD_DATA_DIR`` or ``../shared/data`` beside the repository (absent on users' machines)."""
    return Path(os.environ.get("SFD_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data():
    def get(sub: str) -> Path:
        path = shared_data_dir() / sub
        if not path.exists():
            pytest.skip(f"shared data folder {path} is absent (set SFD_DATA_DIR to run this test)")
        return path

    return get


@pytest.fixture(scope="session")
def cached_load_clip():
    """``load_clip`` building each (model, weights, seed) once per test session (seconds each). Frozen and
    in eval mode, one CLIP can be read by every test that only reads it; tests that check a fresh build
    call ``sfd.models.clip.load_clip`` itself."""
    from sfd.models.clip import load_clip

    cache = {}

    def cached(name: str = "RN50", weights: str = "openai", seed: int = 0):
        if (name, weights, seed) not in cache:
            cache[name, weights, seed] = load_clip(name, weights, seed)
        return cache[name, weights, seed]

    return cached


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for modules of many small CPU ops: on a busy 2-core machine two threads
    spend more on OpenMP hand-offs than they save (up to 40x slower for small RN50 forwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sfd_python(tmp_path_factory):
    """An executable to use as ``python`` for ``-m sfd`` commands: it runs them in processes forked from a server
    that imported torch, open_clip and sfd once (tests/forkserver.py: 10-14 s of CPU saved per command); any
    other use runs the real interpreter. ``SFD_TEST_FORKSERVER=0`` makes it the real interpreter."""
    if os.environ.get("SFD_TEST_FORKSERVER") == "0":
        yield sys.executable
        return
    folder = tmp_path_factory.mktemp("forkserver")
    sock = folder / "sock"
    script = REPO / "tests" / "forkserver.py"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen([sys.executable, str(script), "serve", str(sock)], env=env, stdin=subprocess.DEVNULL)
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" client "{sock}" "$@"\n')
    wrapper.chmod(0o755)
    deadline = time.monotonic() + 300
    while not sock.exists() and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    yield str(wrapper)
    server.terminate()
    server.wait(30)
