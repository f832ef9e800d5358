"""The errors a command reports to its user as one line (``sfd.cli`` prints them; ``--debug`` shows the traceback).

Exit status 2 is for usage errors (a wrong option, a config that does not validate), 1 for
failures (a missing or unreadable file, missing weights, some inputs that could not be processed).
"""

from __future__ import annotations

__all__ = ["UsageError", "CommandFailed", "USER_ERRORS"]


class UsageError(ValueError):
    """The command line or config asks for something impossible; exit status 2."""


class CommandFailed(RuntimeError):
    """The command ran but could not do (all of) its work; exit status 1. Details were already printed."""


# Exceptions that describe a user's input, not a bug: printed as one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, KeyError, RuntimeError)
