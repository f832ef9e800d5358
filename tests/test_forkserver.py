"""tests/forkserver.py runs `python -m sfd` commands as a fresh interpreter would: same output, same exit code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

COMMANDS = [
    ["--version"],
    ["no-such-command"],  # a usage error: exit 2
    ["config", "diff", "lgan_rrdb_x4", "--base", "classic_rrdb_x4"],
    ["sr", "in", "-o", "out", "--model", "no/such/model"],  # an sfd error after torch is imported: exit 1
]


def _run(python, args, **env):
    env = dict(os.environ, PYTHONPATH=str(REPO), **env)
    return subprocess.run([python, "-m", "sfd", *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_forked_command_prints_and_exits_as_a_fresh_interpreter(sfd_python, tmp_path):
    for args in COMMANDS:
        real, forked = _run(sys.executable, args), _run(sfd_python, args)
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr), args
    assert [_run(sfd_python, a).returncode for a in COMMANDS] == [0, 2, 0, 1]


def test_an_import_time_variable_that_differs_runs_a_real_interpreter(sfd_python):
    if sfd_python == sys.executable:
        pytest.skip("SFD_TEST_FORKSERVER=0: no server")
    log = Path(sfd_python).with_name("sock.log")  # the server's, beside its socket and the wrapper
    before = log.read_text() if log.exists() else ""
    threads = str(int(os.environ.get("OMP_NUM_THREADS", "1")) + 1)
    done = _run(sfd_python, ["--version"], OMP_NUM_THREADS=threads)
    assert done.returncode == 0 and done.stdout.startswith("sfd ")
    assert "['OMP_NUM_THREADS']" in log.read_text()[len(before) :]
