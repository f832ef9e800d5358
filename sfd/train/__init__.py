"""Training: one home for everything a run needs.

- ``state``: the run's state (``Run``) and its checkpoint I/O;
- ``build``: a run built from a config, and everything before the first step (``open_run``);
- ``modes``: how a step runs (eager, sync-free, CUDA graphs), decided once;
- ``step``: one iteration (the losses, the G and D steps, the schedules);
- ``loop``: the training loop (``train``) and validation;
- ``bookkeeping``, ``guard``, ``precision``, ``runlock``, ``schedulers``: what the loop leans on.

``sfd.train`` is also the function ``sfd.train(cfg)`` (this module is callable), as the package face says.
"""

import sys
import types

from sfd.train.build import build_run, open_run, run_dir_for
from sfd.train.loop import train, validate
from sfd.train.state import Run, restore, save_checkpoint
from sfd.train.step import make_pair, step_core, train_step

__all__ = [
    "Run",
    "build_run",
    "make_pair",
    "open_run",
    "restore",
    "run_dir_for",
    "save_checkpoint",
    "step_core",
    "train",
    "train_step",
    "validate",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
