"""``python -m sfd``: the same as the ``sfd`` command (and what ``torchrun -m sfd`` runs)."""

import sys

from sfd.cli import main

sys.exit(main())
