"""The whole LLFlow metric set for one (model output, ground truth) pair."""
from __future__ import annotations

import numpy as np
import torch

from .fidelity import as_hwc, float_to_uint8, gt_mean_rescale, psnr, ssim_gray, ssim_rgb
from .lpips import lpips_alex_batch

__all__ = ["evaluate_pair", "METRIC_KEYS"]

METRIC_KEYS = ("psnr", "ssim", "ssim_rgb", "lpips")


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        if x.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16; float16 gains nothing
            x = x.to(torch.float32)
        return x.numpy()
    return np.asarray(x)


def _fidelity(out_u8: np.ndarray, gt_u8: np.ndarray) -> dict[str, float]:
    return {
        "psnr": psnr(out_u8, gt_u8),
        "ssim": ssim_gray(out_u8, gt_u8),
        "ssim_rgb": ssim_rgb(out_u8, gt_u8),
    }


def evaluate_pair(
    output: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    with_lpips: bool = True,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """All metrics for one enhanced image against its reference.

    ``output``: the model's raw float RGB output, H×W×3 or 3×H×W, nominally [0, 1] but unclamped.
    ``gt``: the reference, RGB uint8, H×W×3 or 3×H×W.

    Returns ``psnr`` (RGB, dB), ``ssim`` (= :func:`ssim_gray`, 2-D gray 7×7), ``ssim_rgb`` (Gaussian
    σ 1.5) and ``lpips`` (alex v0.1) on the output quantised with rounding
    (``float_to_uint8(mode="round")``), plus the same four with the suffix ``_gtmean`` on the
    official GT-mean brightness-aligned output (:func:`gt_mean_rescale`, which truncates).
    With ``with_lpips=False`` the two LPIPS keys are absent (never filled with a placeholder).
    """
    out = as_hwc(_to_numpy(output), "output")
    gt_u8 = as_hwc(_to_numpy(gt), "gt")
    if gt_u8.dtype != np.uint8:
        raise TypeError(f"evaluate_pair: gt must be uint8 RGB, got {gt_u8.dtype}")
    if not np.issubdtype(out.dtype, np.floating):
        raise TypeError(f"evaluate_pair: output must be the raw float image, got {out.dtype}")
    if out.shape != gt_u8.shape:
        raise ValueError(f"evaluate_pair: output shape {out.shape} != gt shape {gt_u8.shape}; crop the padding first")
    raw_u8 = float_to_uint8(out, mode="round")
    aligned_u8 = gt_mean_rescale(out, gt_u8)
    raw = _fidelity(raw_u8, gt_u8)
    aligned = _fidelity(aligned_u8, gt_u8)
    if with_lpips:
        # one forward for both versions of the output
        d_raw, d_aligned = lpips_alex_batch(np.stack([raw_u8, aligned_u8]), np.stack([gt_u8, gt_u8]), device=device)
        raw["lpips"], aligned["lpips"] = float(d_raw), float(d_aligned)
    return {**raw, **{f"{k}_gtmean": v for k, v in aligned.items()}}
