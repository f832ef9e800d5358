"""``FrozenModule``: the base of every fixed feature extractor (CLIP, VGG)."""

import torch.nn as nn


class FrozenModule(nn.Module):
    """A fixed feature extractor: stays in eval mode whatever ``.train()`` a parent calls.

    (BatchNorm must never switch to batch statistics; SeD's CLIP did.)
    """

    def train(self, mode: bool = True):
        return super().train(False)
