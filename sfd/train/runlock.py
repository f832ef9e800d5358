"""One training process per run folder.

``RunLock`` takes an exclusive ``fcntl.flock`` on ``RUN/.lock``. The OS releases it when the process
ends, however it ends (SIGKILL, a crash), so a dead run never leaves the folder locked; the pid
written into the file only serves the message. Where ``fcntl`` does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["RunLock", "RunLocked"]


class RunLocked(RuntimeError):
    """Another live process trains in the same run folder."""


class RunLock:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None or int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 locks for all
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLocked(
                f"{self.path.parent} is in use by another sfd train (pid {holder}): wait for it to finish, "
                "or stop it and continue with --resume auto"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
