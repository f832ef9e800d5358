"""SFD: Semantic Feature Discrimination for perceptual super-resolution, and SFD-IQA.

The package face (each loads its module on first use, so ``import sfd`` stays light):

    cfg = sfd.load_config("classic_rrdb_x4", ["data.train=[DF2K/HR]"])   # a shipped name or a path
    sfd.train(cfg)                                                         # the training loop (sfd.train)
    gen = sfd.load_generator("runs/classic_rrdb_x4")                       # any generator, described
    metric = sfd.create_metric("sfd-iqa", checkpoint="runs/iqa")           # one metric registry (sfd.metrics)
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_config", "train", "load_generator", "create_metric"]

_FACE = {
    "load_config": ("sfd.config", "load_config"),
    "train": ("sfd.train", "train"),
    "load_generator": ("sfd.models.loading", "load_generator"),
    "create_metric": ("sfd.metrics", "create_metric"),
}


def __getattr__(name: str):
    if name in _FACE:
        import importlib

        module, attr = _FACE[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'sfd' has no attribute {name!r}")
