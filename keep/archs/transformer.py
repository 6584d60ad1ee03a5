"""Codebook-lookup transformer (from CodeFormer): latent tokens -> logits over the codebook.

In the release its parameters sit at the top level of the KEEP network (``position_emb``,
``feat_emb``, ``ft_layers``, ``idx_pred_layer``), so the transformer is a mixin that adds those
attributes to its owner; :class:`CodeTransformer` is the same thing as a stand-alone module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from keep.archs.layers import split_heads, merge_heads
from keep.registry import ARCHS


class PosSelfAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s parameter names (``in_proj_weight`` (3D, D),
    ``in_proj_bias``, ``out_proj``), batch first, where the position embedding is added to the
    queries and keys only (CodeFormer / DETR style).

    forward(x (N, L, D), pos (L, D)) -> (N, L, D).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        w_qk, w_v = self.in_proj_weight.split([2 * x.shape[-1], x.shape[-1]])
        b_qk, b_v = self.in_proj_bias.split([2 * x.shape[-1], x.shape[-1]])
        q, k = F.linear(x + pos, w_qk, b_qk).chunk(2, dim=-1)
        v = F.linear(x, w_v, b_v)
        out = F.scaled_dot_product_attention(split_heads(q, self.heads), split_heads(k, self.heads),
                                             split_heads(v, self.heads))
        return self.out_proj(merge_heads(out))


@ARCHS.register()
class TransformerSALayer(nn.Module):
    """Pre-norm transformer layer: x += SA(LN1(x), pos); x += W2 GELU(W1 LN2(x)). Shapes (N, L, D)."""

    def __init__(self, embed_dim: int = 512, nhead: int = 8, dim_mlp: int = 1024):
        super().__init__()
        self.self_attn = PosSelfAttention(embed_dim, nhead)
        self.linear1 = nn.Linear(embed_dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), pos)
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class CodeTransformerMixin:
    """Adds ``position_emb`` (L, D), ``feat_emb`` (C -> D), ``ft_layers`` and ``idx_pred_layer``
    (LN + bias-free Linear D -> K) to an ``nn.Module`` and predicts code logits from latents."""

    def build_code_transformer(self, emb_dim: int, dim_embd: int, n_head: int, n_layers: int,
                               codebook_size: int, latent_tokens: int) -> None:
        self.position_emb = nn.Parameter(torch.zeros(latent_tokens, dim_embd))
        self.feat_emb = nn.Linear(emb_dim, dim_embd)
        self.ft_layers = nn.ModuleList([TransformerSALayer(dim_embd, n_head, 2 * dim_embd)
                                        for _ in range(n_layers)])
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(dim_embd), nn.Linear(dim_embd, codebook_size, bias=False))

    def code_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Latent z (N, C, h, w) -> logits (N, h*w, K); tokens in row-major (h, w) order."""
        x = self.feat_emb(z.flatten(2).transpose(1, 2))
        for layer in self.ft_layers:
            x = layer(x, self.position_emb)
        return self.idx_pred_layer(x)


@ARCHS.register()
class CodeTransformer(nn.Module, CodeTransformerMixin):
    """Stand-alone codebook-lookup transformer; forward(z (N, C, h, w)) -> logits (N, h*w, K).

    The top-1 code of each token is ``logits.argmax(-1)`` (the release takes top-1 of the softmax,
    the same index).
    """

    def __init__(self, emb_dim: int = 256, dim_embd: int = 512, n_head: int = 8, n_layers: int = 9,
                 codebook_size: int = 1024, latent_tokens: int = 256):
        super().__init__()
        self.build_code_transformer(emb_dim, dim_embd, n_head, n_layers, codebook_size, latent_tokens)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.code_logits(z)
