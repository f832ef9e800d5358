"""TG-D: the text-guided discriminator on CLIP's F_out, with learnable prompt pairs.

Each of N pairs holds a positive and a negative prompt, [SOS] + L learnable context vectors +
[EOT], encoded by the frozen CLIP text tower (CoOp-style: only the contexts train). For pair i
the TG-D logit is d_i = s * (cos(v, t+_i) - cos(v, t-_i)) with s CLIP's logit scale, so that
sigmoid(d_i) is the softmax probability of the positive prompt [choice, docs/method.md].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from sfd.models.clip import TextEncoder

if TYPE_CHECKING:
    from sfd.config import TGDConfig

__all__ = ["TGD", "tg_d_logits"]


class TGD(nn.Module):
    """TG-D's trainable part, its learnable prompt pairs: ``ctx`` of shape (N, 2, L, width);
    [:, 0] positive, [:, 1] negative. The frozen CLIP text tower is passed in, never owned."""

    def __init__(
        self,
        text: TextEncoder,
        n_pairs: int = 5,
        length: int = 32,
        init_std: float = 0.02,
        init_words: list[str] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        ctx = torch.randn(n_pairs, 2, length, text.width, generator=gen) * init_std
        # Placeholder prompt "X X ... X": fixes SOS, EOT and their positions; the X slots become ctx.
        tokens = text.tokenize([" ".join(["X"] * length)])
        if int(tokens.argmax(-1)) != length + 1:
            raise ValueError(f"the tokenizer did not give [SOS] + {length} tokens + [EOT]")
        if init_words:
            if len(init_words) != 2:
                raise ValueError("init_words takes two phrases: [positive, negative]")
            with torch.no_grad():
                for j, phrase in enumerate(init_words):
                    ids = text.tokenize([phrase])[0]
                    n = min(int(ids.argmax()) - 1, length)  # words between SOS and EOT
                    ctx[:, j, :n] = text.token_embedding(ids[1 : 1 + n]).cpu().float()
        self.ctx = nn.Parameter(ctx)
        self.register_buffer("tokens", tokens.cpu(), persistent=False)

    @classmethod
    def from_config(cls, cfg: TGDConfig, text: TextEncoder) -> TGD:
        return cls(text, cfg.n_pairs, cfg.length, cfg.init_std, cfg.init_words, cfg.seed)

    @property
    def n_pairs(self) -> int:
        return self.ctx.shape[0]

    @property
    def length(self) -> int:
        return self.ctx.shape[2]

    def text_features(self, text: TextEncoder) -> torch.Tensor:
        """(N, 2, D) unit-norm text features of the N prompt pairs (gradient flows to ``ctx``)."""
        n, _, length, width = self.ctx.shape
        tokens = self.tokens.to(self.ctx.device).expand(2 * n, -1)
        embeddings = text.token_embedding(tokens).to(self.ctx.dtype)
        ctx = self.ctx.reshape(2 * n, length, width)
        embeddings = torch.cat([embeddings[:, :1], ctx, embeddings[:, 1 + length :]], dim=1)
        feats = text.encode_embeddings(embeddings, tokens, n=length + 2)  # [SOS] + ctx + [EOT], checked at init
        return F.normalize(feats, dim=-1).reshape(n, 2, -1)


def tg_d_logits(image_out: torch.Tensor, text_feats: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """(B, D) F_out and (N, 2, D) pair features -> (B, N) logits s*(cos+ - cos-).

    Always in float32, also under bf16/fp16 autocast: the scale (about 100) would magnify the
    rounding of a low-precision cosine gap into the logits.
    """
    with torch.autocast(image_out.device.type, enabled=False):
        v = F.normalize(image_out.float(), dim=-1)
        cos = torch.einsum("bd,npd->bnp", v, text_feats.float())
        return logit_scale.float().exp() * (cos[..., 0] - cos[..., 1])
