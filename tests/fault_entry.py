"""``python tests/fault_entry.py ARGS`` runs ``sfd ARGS`` with a fault injected, for tests that need one
inside processes that torchrun starts (tests/test_faults.py):

SFD_TEST_ENOSPC_ON_SAVE=N  on rank 0, the N-th ``torch.save`` writes part of its file, then fails as on a full disk.
"""

import errno
import os
import sys

import torch

from sfd.cli import main

if (nth := os.environ.get("SFD_TEST_ENOSPC_ON_SAVE")) and os.environ.get("RANK", "0") == "0":
    real_save, calls = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == int(nth):
            f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    torch.save = save

sys.exit(main(sys.argv[1:]))
