"""Models: generators, the CLIP semantic extractor, Feat-D, learnable prompt pairs, baseline discriminators.

The package itself imports nothing heavy, so that ``sfd.models.commands`` can register ``sfd archs`` without
torch (``sfd --help`` stays light)."""
