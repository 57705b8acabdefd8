"""The condition encoder (official ``ConEncoder1``, LLFLOW_DESIGN.md §2).

Input: the 6-channel condition ``[log(low + 1e-3), histeq(low)]`` at full resolution (H, W divisible
by 8). Output: multi-scale features that condition the flow, and the learned colour map ``g(x_l)``
that is the mean of the prior.

Quirks the released weights depend on are kept on purpose and marked ``OFFICIAL QUIRK``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COLOR_MAP_EPS = 1e-4


def color_map(rgb: Tensor) -> Tensor:
    """Illumination-invariant colour map ``x / (Σ_c x + 1e-4)``.

    OFFICIAL QUIRK: normalised by the channel *sum*, not the mean as in the paper (values sum to ≈1).
    Used both on the low input and, for the prior, on the reference image.
    """
    return rgb / (rgb.sum(dim=1, keepdim=True) + COLOR_MAP_EPS)


def _central_difference(x: Tensor, dim: int) -> Tensor:
    """``0.5·(x[i+1] − x[i−1])`` along ``dim`` with zeros outside the image."""
    pad = [0, 0, 0, 0]
    pad[2 * (3 - dim)] = pad[2 * (3 - dim) + 1] = 1  # F.pad lists the last dim first
    padded = F.pad(x, pad)
    n = x.shape[dim]
    return 0.5 * (padded.narrow(dim, 2, n) - padded.narrow(dim, 0, n))


def noise_map(cmap: Tensor) -> Tensor:
    """Per-channel ``max(|∂_H C|, |∂_W C|)`` of the colour map: large where noise lives."""
    return torch.maximum(_central_difference(cmap, 2).abs(), _central_difference(cmap, 3).abs())


class ResidualDenseBlock(nn.Module):
    """Five 3×3 convolutions with dense connections (growth ``gc``); output ``0.2·conv5 + x``."""

    def __init__(self, nf: int, gc: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and a 0.2-scaled skip."""

    def __init__(self, nf: int, gc: int = 32) -> None:
        super().__init__()
        self.RDB1 = ResidualDenseBlock(nf, gc)
        self.RDB2 = ResidualDenseBlock(nf, gc)
        self.RDB3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: Tensor) -> Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


@dataclass
class EncoderOutput:
    """What the encoder computes for one batch.

    ``fea_down2`` (H/2), ``fea_down4`` (H/4, after the LeakyReLU, see the quirk in
    :meth:`ConditionEncoder.forward`), ``fea_down8`` (H/8), ``fea_head`` (H/2, before the trunk),
    ``blocks`` (the trunk outputs listed in ``stack_blocks``, H/2) and ``color_map`` (full size).
    Official names: fea_up2, fea_up1 (= last_lr_fea), fea_up0, fea_up4, block_i.
    """

    fea_head: Tensor
    fea_down2: Tensor
    fea_down4: Tensor
    fea_down8: Tensor
    blocks: list[Tensor]
    color_map: Tensor


class ConditionEncoder(nn.Module):
    """RRDB encoder with Retinex-style hand-crafted inputs (official ``ConEncoder1``)."""

    def __init__(self, nf: int = 32, nb: int = 4, gc: int = 32, stack_blocks: tuple[int, ...] = (1,),
                 in_channels: int = 12) -> None:
        super().__init__()
        if any(not 0 <= b < nb for b in stack_blocks):
            raise ValueError(f"stack_blocks {list(stack_blocks)} must index trunk blocks 0..{nb - 1}")
        self.stack_blocks = tuple(stack_blocks)
        self.conv_first = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.conv_second = nn.Conv2d(nf, nf, 3, 1, 1)
        self.RRDB_trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.downconv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.downconv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.fine_tune_color_map = nn.Sequential(nn.Conv2d(nf, 3, 1, 1), nn.Sigmoid())
        self.lrelu = nn.LeakyReLU(negative_slope=0.2)
        # Never used in the forward pass; present in every official checkpoint (strict loading).
        self.downconv3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        self.awb_para = nn.Linear(nf, 3)
        for dead in (self.downconv3, self.HRconv, self.conv_last, self.awb_para):
            dead.requires_grad_(False)

    @staticmethod
    def handcrafted_inputs(lq: Tensor) -> Tensor:
        """``[lq (6), colour map (3), noise map (3)]``: the 12 channels entering ``conv_first``."""
        raw = torch.exp(lq[:, 0:3])  # undoes the log: max(low + 1e-3, 1e-3)
        cmap = color_map(raw)
        return torch.cat([lq, cmap, noise_map(cmap)], dim=1)

    def forward(self, lq: Tensor) -> EncoderOutput:
        x = self.handcrafted_inputs(lq)
        fea = self.conv_second(self.lrelu(self.conv_first(x)))
        fea_head = F.max_pool2d(fea, 2)

        fea = fea_head
        stacked: dict[int, Tensor] = {}
        for i, block in enumerate(self.RRDB_trunk):
            fea = block(fea)
            if i in self.stack_blocks:
                stacked[i] = fea
        fea_down2 = fea_head + self.trunk_conv(fea)

        # OFFICIAL QUIRK: the official LeakyReLU is in-place, so the tensor it returns as the H/4
        # feature is the *activated* downconv1 output. The released weights expect that.
        # Bilinear ½-downsampling of even sizes equals 2×2 average pooling.
        fea_down4 = self.lrelu(self.downconv1(F.avg_pool2d(fea_down2, 2)))
        fea_down8 = self.downconv2(F.avg_pool2d(fea_down4, 2))

        up = F.interpolate(fea_down2, scale_factor=2, mode="nearest")
        cmap = self.fine_tune_color_map(up)
        return EncoderOutput(fea_head, fea_down2, fea_down4, fea_down8,
                             [stacked[i] for i in self.stack_blocks], cmap)


def stack_conditions(enc: EncoderOutput) -> dict[int, Tensor]:
    """Per-level flow conditions: each level's feature concatenated with the selected trunk blocks
    resized (nearest) to that level's resolution. Level 1 = H/2, 2 = H/4, 3 = H/8."""
    blocks = torch.cat(enc.blocks, dim=1)

    def with_blocks(feature: Tensor) -> Tensor:
        resized = F.interpolate(blocks, size=feature.shape[-2:], mode="nearest")
        return torch.cat([feature, resized], dim=1)

    return {1: with_blocks(enc.fea_down2), 2: with_blocks(enc.fea_down4), 3: with_blocks(enc.fea_down8)}
