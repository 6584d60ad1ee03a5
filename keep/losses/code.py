"""Stage II losses on codebook indices and features (supplement Eq. 4, CodeFormer's recipe)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def code_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_CE of Eq. 4: cross-entropy between predicted code logits and the GT code indices.

    logits: (N, L, K) (N = B·T frames, L = 256 tokens, K = 1024 codes); target: (N, L) int64.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1))


def code_feature_loss(lq_feat: torch.Tensor, target_feat: torch.Tensor) -> torch.Tensor:
    """L2 feature loss of Eq. 4: ``mean((E_L(x) - sg(codebook[idx_gt]))²)``.

    As printed the supplement puts E_H(y) here; the LQ encoder output is the only term that can be
    trained by it (``spec/official-TRAINING.md`` §4), as in CodeFormer. Both (N, C, h, w).
    """
    return F.mse_loss(lq_feat.float(), target_feat.detach().float())
