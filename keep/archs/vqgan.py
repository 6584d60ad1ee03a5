"""VQGAN parts: encoder (LQ encoder E_L and HQ encoder E_H), codebook quantizer, generator (decoder),
and the stage I autoencoder.

The block lists are flat ``blocks`` ModuleLists as in the release, because the state-dict keys
(``encoder.blocks.17.q.weight`` ...) and the tap / fuse points are defined by block index.
Tap and fuse points are found by spatial size (``"16"``, ``"32"``, ``"64"`` ...), so that tiny
configurations with the same structure and fewer channels work the same way.
"""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from keep.archs.layers import AttnBlock, Downsample, ResBlock, Upsample, group_norm
from keep.registry import ARCHS


@ARCHS.register()
class Encoder(nn.Module):
    """VQGAN encoder: (N, 3, S, S) in [-1, 1] -> latent (N, emb_dim, S / 2^(L-1), ...), L = len(ch_mult).

    ``tap_index[size]`` is the block after which the feature map of spatial size ``size`` is taken
    for CFT (the last ResBlock of each resolution level; 11/14/18 for 64/32/16 in the release).
    """

    def __init__(self, in_channels: int = 3, nf: int = 64, emb_dim: int = 256,
                 ch_mult: Sequence[int] = (1, 2, 2, 4, 4, 8), res_blocks: int = 2, img_size: int = 512,
                 attn_resolutions: Sequence[int] = (16,)):
        super().__init__()
        blocks = [nn.Conv2d(in_channels, nf, 3, 1, 1)]
        self.tap_index: Dict[str, int] = {}
        res = img_size
        in_mult = (1,) + tuple(ch_mult)
        for level, mult in enumerate(ch_mult):
            block_in, block_out = nf * in_mult[level], nf * mult
            for _ in range(res_blocks):
                blocks.append(ResBlock(block_in, block_out))
                self.tap_index[str(res)] = len(blocks) - 1
                block_in = block_out
                if res in attn_resolutions:
                    blocks.append(AttnBlock(block_in))
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(block_in))
                res //= 2
        blocks += [ResBlock(block_in, block_in), AttnBlock(block_in), ResBlock(block_in, block_in),
                   group_norm(block_in), nn.Conv2d(block_in, emb_dim, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)
        self.latent_size = res

    def forward(self, x: torch.Tensor, taps: Sequence[str] = ()) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Return the latent (N, emb_dim, h, w) and ``{size: feature map}`` for each size in ``taps``."""
        wanted = {self.tap_index[size]: size for size in taps}
        feats: Dict[str, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in wanted:
                feats[wanted[index]] = x
        return x, feats


@ARCHS.register()
class Generator(nn.Module):
    """VQGAN decoder: latent (N, emb_dim, h, w) -> image (N, 3, S, S), unbounded (no tanh, no clamp).

    ``fuse_index[size]`` is the block after which CFT/CFA act on the features of spatial size
    ``size`` (release: 6/9/12 for 16/32/64: the last ResBlock of the latent level, and the first
    ResBlock after each upsampling). ``channels[size]`` is the width there.
    """

    def __init__(self, nf: int = 64, emb_dim: int = 256, ch_mult: Sequence[int] = (1, 2, 2, 4, 4, 8),
                 res_blocks: int = 2, img_size: int = 512, attn_resolutions: Sequence[int] = (16,)):
        super().__init__()
        block_in = nf * ch_mult[-1]
        res = img_size // 2 ** (len(ch_mult) - 1)
        blocks = [nn.Conv2d(emb_dim, block_in, 3, 1, 1),
                  ResBlock(block_in, block_in), AttnBlock(block_in), ResBlock(block_in, block_in)]
        self.fuse_index: Dict[str, int] = {}
        self.channels: Dict[str, int] = {}
        for level in reversed(range(len(ch_mult))):
            block_out = nf * ch_mult[level]
            for i in range(res_blocks):
                blocks.append(ResBlock(block_in, block_out))
                block_in = block_out
                if level == len(ch_mult) - 1 or i == 0:
                    self.fuse_index[str(res)] = len(blocks) - 1
                    self.channels[str(res)] = block_out
                if res in attn_resolutions:
                    blocks.append(AttnBlock(block_in))
            if level != 0:
                blocks.append(Upsample(block_in))
                res *= 2
        blocks += [group_norm(block_in), nn.Conv2d(block_in, 3, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, z: torch.Tensor,
                fuse: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """Decode ``z``; ``fuse(size, x)`` (if given) replaces x after each fuse point."""
        points = {index: size for size, index in self.fuse_index.items()} if fuse is not None else {}
        x = z
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in points:
                x = fuse(points[index], x)
        return x


class QuantizerOutput(NamedTuple):
    """``quant`` (N, C, h, w) straight-through codes, ``loss`` scalar, ``indices`` (N, h*w) int64."""
    quant: torch.Tensor
    loss: torch.Tensor
    indices: torch.Tensor


@ARCHS.register()
class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook of ``codebook_size`` vectors of width ``emb_dim``.

    Only parameter: ``embedding.weight`` (codebook_size, emb_dim), initialised U(-1/K, 1/K).
    """

    def __init__(self, codebook_size: int = 1024, emb_dim: int = 256, beta: float = 0.25):
        super().__init__()
        self.codebook_size, self.emb_dim, self.beta = codebook_size, emb_dim, beta
        self.embedding = nn.Embedding(codebook_size, emb_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared L2) for each position of z (N, C, h, w) -> (N, h*w)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.emb_dim)
        codebook = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
        return dist.argmin(1).view(z.shape[0], -1)

    def lookup(self, indices: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Codebook vectors for ``indices`` (N, h*w) as a map (N, emb_dim, h, w).

        A row gather: bit-identical to the release's one-hot matmul in fp32.
        """
        codes = F.embedding(indices, self.embedding.weight)  # (N, h*w, C)
        return codes.transpose(1, 2).reshape(indices.shape[0], self.emb_dim, *size)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantise z (N, C, h, w) for stage I.

        loss = mean((sg(q) - z)^2) + beta * mean((q - sg(z))^2), the release's weighting (the weight-1
        term is the commitment term, beta weights the codebook term; supp. Eq. 3 writes both with 1).
        The returned codes pass gradients straight through to z: z + sg(q - z).
        """
        indices = self.nearest(z)
        quant = self.lookup(indices, z.shape[-2:])
        loss = F.mse_loss(quant.detach(), z) + self.beta * F.mse_loss(quant, z.detach())
        return QuantizerOutput(z + (quant - z).detach(), loss, indices)


class VQGANOutput(NamedTuple):
    """``recon`` (N, 3, S, S) unbounded, ``codebook_loss`` scalar, ``indices`` (N, h*w)."""
    recon: torch.Tensor
    codebook_loss: torch.Tensor
    indices: torch.Tensor


@ARCHS.register()
class VQGAN(nn.Module):
    """Stage I autoencoder (encoder = E_H, codebook, generator), key names ``encoder.*``, ``quantize.*``,
    ``generator.*`` as in KEEP, so its weights transfer to ``KEEP.hq_encoder``/``quantize``/``generator``.

    forward(x (N, 3, S, S) in [-1, 1]) -> :class:`VQGANOutput` (a tuple: recon, codebook_loss, indices).
    """

    def __init__(self, nf: int = 64, emb_dim: int = 256, ch_mult: Sequence[int] = (1, 2, 2, 4, 4, 8),
                 res_blocks: int = 2, img_size: int = 512, attn_resolutions: Sequence[int] = (16,),
                 codebook_size: int = 1024, beta: float = 0.25):
        super().__init__()
        shape = dict(nf=nf, emb_dim=emb_dim, ch_mult=ch_mult, res_blocks=res_blocks, img_size=img_size,
                     attn_resolutions=attn_resolutions)
        self.encoder = Encoder(**shape)
        self.quantize = VectorQuantizer(codebook_size, emb_dim, beta)
        self.generator = Generator(**shape)

    def forward(self, x: torch.Tensor) -> VQGANOutput:
        z, _ = self.encoder(x)
        quant, loss, indices = self.quantize(z)
        return VQGANOutput(self.generator(quant), loss, indices)
