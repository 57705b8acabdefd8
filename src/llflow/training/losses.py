"""Differentiable reconstruction terms for the τ = 0 output, added next to the NLL (``optim.aux_l1``,
``optim.aux_ssim``). Per-sample values, shape ``(N,)``, so the trainer can weigh and skip samples."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..metrics.fidelity import K1, K2, UNIFORM_WIN as _WINDOW

# ITU-R BT.601 luma, as OpenCV's COLOR_RGB2GRAY (llflow.metrics.fidelity.rgb_to_gray) without its
# rounding to uint8: the grey image the SSIM yardstick is computed on.
_LUMA = (0.299, 0.587, 0.114)
_C1, _C2 = K1 ** 2, K2 ** 2  # the val metric's (K·L)², here with data range L = 1


def l1_per_sample(out: Tensor, gt: Tensor) -> Tensor:
    return (out.float() - gt.float()).abs().flatten(1).mean(dim=1)


def gray_ssim_per_sample(out: Tensor, gt: Tensor) -> Tensor:
    """Mean SSIM of the grey versions of two ``(N, 3, H, W)`` batches in [0, 1]: the val metric
    (llflow.metrics.ssim_gray: 7 × 7 uniform window, sample covariance, 'valid' positions only),
    differentiable, in float32 (or float64) whatever the autocast precision (its variances are differences of
    nearly equal terms)."""
    dtype = torch.promote_types(out.dtype, torch.float32)  # float64 stays float64 (gradcheck)
    luma = out.new_tensor(_LUMA, dtype=dtype).view(1, 3, 1, 1)
    x = (out.to(dtype) * luma).sum(dim=1, keepdim=True)
    y = (gt.to(dtype) * luma).sum(dim=1, keepdim=True)
    if min(x.shape[-2:]) < _WINDOW:
        raise ValueError(f"crop of {tuple(x.shape[-2:])} is smaller than the SSIM window ({_WINDOW})")

    def mean(v: Tensor) -> Tensor:
        return F.avg_pool2d(v, _WINDOW, stride=1)

    n = _WINDOW * _WINDOW
    ux, uy = mean(x), mean(y)
    vx = (mean(x * x) - ux * ux) * (n / (n - 1))
    vy = (mean(y * y) - uy * uy) * (n / (n - 1))
    vxy = (mean(x * y) - ux * uy) * (n / (n - 1))
    ssim = ((2 * ux * uy + _C1) * (2 * vxy + _C2)) / ((ux * ux + uy * uy + _C1) * (vx + vy + _C2))
    return ssim.flatten(1).mean(dim=1)
