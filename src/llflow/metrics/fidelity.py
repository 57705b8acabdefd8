"""Full-reference fidelity metrics (PSNR, SSIM variants) and the LLFlow GT-mean post-processing.

Everything here works on RGB ``uint8`` images (H×W×3), which is what the official evaluation
(``test.py`` + ``Measure.py``, LLFLOW_DESIGN.md §9.1) measures. The SSIM implementations are plain
vectorised numpy and reproduce ``skimage.metrics.structural_similarity`` (scikit-image is *not* a
dependency; it is only used as the reference in the tests).

SSIM variants
-------------
``ssim_gray``
    2-D SSIM of the ``cv2.cvtColor(·, COLOR_RGB2GRAY)`` images, 7×7 uniform window, K1 = 0.01,
    K2 = 0.03, sample covariance (N/(N−1)), data range 255. This is what ``Measure.ssim`` returns
    with a modern scikit-image and what this project reports as "SSIM".
``ssim_gray_columnwise``
    The quirk behind the published LLFlow numbers: the pinned scikit-image 0.18.1 treated the last
    axis of the 2-D gray image as channels (``multichannel=True``), i.e. computed a 1-D SSIM
    (7-tap window) down every *column* and averaged. Use it only to reproduce paper numbers.
``ssim_rgb``
    SSIM on the three RGB channels, averaged. ``window="gaussian"`` (default) is the Wang et al.
    (2004) standard: 11×11 Gaussian, σ = 1.5, population covariance. ``window="uniform"`` is
    skimage's default (7×7 uniform, sample covariance) applied per channel — the value stored as
    ``ssim_rgb_channel_axis`` in the official evaluation fixture.

Border handling: skimage filters with reflection padding and then discards ``(win − 1) // 2`` pixels
on every side before averaging — exactly the pixels whose window touches the padding. So we only
ever compute "valid" windows; the padding never influences the result.
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

__all__ = [
    "psnr",
    "ssim_gray",
    "ssim_gray_columnwise",
    "ssim_rgb",
    "rgb_to_gray",
    "gt_mean_rescale",
    "float_to_uint8",
    "as_hwc",
    "gt_mean_factors",
]

K1 = 0.01
K2 = 0.03
DATA_RANGE = 255.0
UNIFORM_WIN = 7
GAUSSIAN_SIGMA = 1.5
# skimage uses scipy.ndimage.gaussian_filter(truncate=3.5): radius int(3.5·1.5 + 0.5) = 5 → 11 taps.
GAUSSIAN_TRUNCATE = 3.5


# ----------------------------------------------------------------------------- input handling
def as_hwc(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return an RGB image as H×W×3, accepting H×W×3 or 3×H×W (channel-first when the last axis isn't 3)."""
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected an RGB image of shape H×W×3 or 3×H×W, got shape {arr.shape}")
    if arr.shape[-1] == 3:
        return arr
    if arr.shape[0] == 3:
        return np.moveaxis(arr, 0, -1)
    raise ValueError(f"{name}: expected an RGB image of shape H×W×3 or 3×H×W, got shape {arr.shape}")


def _check_pair_u8(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two uint8 RGB images of equal shape; return them as H×W×3."""
    a = as_hwc(a, "first image")
    b = as_hwc(b, "second image")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError(
            f"expected uint8 images, got {a.dtype} and {b.dtype}; convert floats with float_to_uint8() first"
        )
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}; crop/resize them to the same size")
    return a, b


def rgb_to_gray(image: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(image, COLOR_RGB2GRAY)`` on an RGB uint8 image (OpenCV's fixed-point rounding)."""
    return cv2.cvtColor(np.ascontiguousarray(as_hwc(image)), cv2.COLOR_RGB2GRAY)


# ----------------------------------------------------------------------------- PSNR
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two RGB uint8 images: MSE over all pixels and channels, data range 255.

    Same as ``skimage.metrics.peak_signal_noise_ratio(a, b)``. Identical images give ``inf``
    (zero MSE), as in skimage, without a divide-by-zero warning.
    """
    a, b = _check_pair_u8(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(DATA_RANGE**2 / mse))


# ----------------------------------------------------------------------------- SSIM core
def _valid_filter_1d(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Correlate ``x`` with a symmetric 1-D kernel along ``axis`` keeping only 'valid' positions.

    Implemented as a weighted sum of shifted views (len(taps) vectorised adds), which is
    numerically as good as scipy's running filters and needs no padding.
    """
    n = x.shape[axis] - taps.size + 1
    out = np.zeros(x.shape[:axis] + (n,) + x.shape[axis + 1 :], dtype=np.float64)
    index: list[slice] = [slice(None)] * x.ndim
    for k, w in enumerate(taps):
        index[axis] = slice(k, k + n)
        out += w * x[tuple(index)]
    return out


def _ssim_mean(
    x: np.ndarray,
    y: np.ndarray,
    taps: np.ndarray,
    axes: tuple[int, ...],
    sample_covariance: bool,
    data_range: float = DATA_RANGE,
) -> np.ndarray:
    """Mean SSIM over ``axes`` (the spatial axes) of float64 arrays; other axes are kept (batch/channel).

    ``taps`` is the normalised 1-D window applied separably along every spatial axis. Follows
    skimage: local means/variances/covariance through the window, optional N/(N−1) correction
    where N = taps**len(axes), C1 = (K1·L)², C2 = (K2·L)², and the mean of the valid SSIM map.
    """
    for ax in axes:
        if x.shape[ax] < taps.size:
            raise ValueError(
                f"image is too small for SSIM: axis of length {x.shape[ax]} < window {taps.size}"
            )

    def filt(v: np.ndarray) -> np.ndarray:
        for ax in axes:
            v = _valid_filter_1d(v, taps, ax)
        return v

    ux, uy = filt(x), filt(y)
    uxx, uyy, uxy = filt(x * x), filt(y * y), filt(x * y)
    n_pix = taps.size ** len(axes)
    cov_norm = n_pix / (n_pix - 1.0) if sample_covariance else 1.0
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return np.mean(num / den, axis=axes)


def _uniform_taps(size: int = UNIFORM_WIN) -> np.ndarray:
    return np.full(size, 1.0 / size)


def _gaussian_taps(sigma: float = GAUSSIAN_SIGMA, truncate: float = GAUSSIAN_TRUNCATE) -> np.ndarray:
    """scipy.ndimage's Gaussian kernel: radius int(truncate·σ + 0.5), normalised to sum 1."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


# ----------------------------------------------------------------------------- SSIM variants
def ssim_gray(a: np.ndarray, b: np.ndarray) -> float:
    """2-D SSIM of the gray (``COLOR_RGB2GRAY``) versions of two RGB uint8 images.

    7×7 uniform window, K1 0.01, K2 0.03, sample covariance, data range 255; equals
    ``skimage.metrics.structural_similarity(gray_a, gray_b, data_range=255)``.
    """
    a, b = _check_pair_u8(a, b)
    ga = rgb_to_gray(a).astype(np.float64)
    gb = rgb_to_gray(b).astype(np.float64)
    return float(_ssim_mean(ga, gb, _uniform_taps(), axes=(0, 1), sample_covariance=True))


def ssim_gray_columnwise(a: np.ndarray, b: np.ndarray) -> float:
    """The scikit-image 0.18.1 quirk behind the official LLFlow SSIM numbers.

    ``structural_similarity(gray, gray, multichannel=True)`` on a 2-D image looped over the last axis:
    a 1-D SSIM (7-tap uniform window, N = 7 for the sample covariance) down each column, averaged over
    columns. Equals modern ``structural_similarity(gray_a, gray_b, channel_axis=-1)``.
    Only for reproducing published numbers; prefer :func:`ssim_gray`.
    """
    a, b = _check_pair_u8(a, b)
    ga = rgb_to_gray(a).astype(np.float64)
    gb = rgb_to_gray(b).astype(np.float64)
    per_column = _ssim_mean(ga, gb, _uniform_taps(), axes=(0,), sample_covariance=True)
    return float(np.mean(per_column))


def ssim_rgb(a: np.ndarray, b: np.ndarray, window: Literal["gaussian", "uniform"] = "gaussian") -> float:
    """SSIM of two RGB uint8 images, computed per channel and averaged.

    ``window="gaussian"`` (default): Wang et al. standard, 11×11 Gaussian σ 1.5, population
    covariance; = ``structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)``.
    ``window="uniform"``: skimage defaults per channel (7×7 uniform, sample covariance); =
    ``structural_similarity(a, b, channel_axis=-1)`` — the fixture's ``ssim_rgb_channel_axis``.
    """
    a, b = _check_pair_u8(a, b)
    x = np.moveaxis(a.astype(np.float64), -1, 0)
    y = np.moveaxis(b.astype(np.float64), -1, 0)
    if window == "gaussian":
        per_channel = _ssim_mean(x, y, _gaussian_taps(), axes=(1, 2), sample_covariance=False)
    elif window == "uniform":
        per_channel = _ssim_mean(x, y, _uniform_taps(), axes=(1, 2), sample_covariance=True)
    else:
        raise ValueError(f"ssim_rgb: unknown window {window!r}; use 'gaussian' or 'uniform'")
    return float(np.mean(per_channel))


# ----------------------------------------------------------------------------- float → uint8
def float_to_uint8(image: np.ndarray, mode: Literal["round", "truncate"] = "round") -> np.ndarray:
    """Convert a float image in [0, 1] (values outside are clipped) to uint8.

    ``mode="round"`` (default, for raw metrics): ``round(clip(x, 0, 1)·255)`` — the unbiased
    quantisation. ``mode="truncate"``: ``uint8(clip(x, 0, 1)·255)``, which is what the official
    ``test.py`` / ``test_unpaired.py`` do (numpy ``astype`` floors positive values, biasing the image
    about half a level dark); the official fixture's ``psnr_no_gt_mean_alignment`` uses truncation.
    Channel order/layout is left unchanged.
    """
    x = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0) * 255.0
    if mode == "round":
        x = np.rint(x)
    elif mode != "truncate":
        raise ValueError(f"float_to_uint8: unknown mode {mode!r}; use 'round' or 'truncate'")
    return x.astype(np.uint8)


def gt_mean_rescale(output: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The official ``test.py`` brightness alignment (LLFLOW_DESIGN.md §9.1 step 3), quirks included.

    ``output``: the model's raw float RGB output (H×W×3 or 3×H×W, unclamped, may leave [0, 1]);
    ``gt``: RGB uint8 (H×W×3 or 3×H×W). Returns RGB uint8 H×W×3:

    * ``mean_out`` = plain mean over all channels and pixels of the raw output (no clamping);
    * ``mean_gt`` = mean of ``cv2.cvtColor(gt_float32, COLOR_BGR2GRAY)`` / 255 although ``gt`` is RGB,
      so the weights act as 0.114·R + 0.587·G + 0.299·B (the official channel-order slip);
    * ``uint8(trunc(clip(output · mean_gt / mean_out, 0, 1) · 255))`` — truncation, not rounding.

    Means are accumulated in float64 (the official code used a float32 torch mean; this only matters
    for values within ~1e-7 of a quantisation boundary).
    """
    out = as_hwc(np.asarray(output), "output").astype(np.float64)
    mean_out, mean_gt = gt_mean_factors(out, gt)
    return float_to_uint8(out * (mean_gt / mean_out), mode="truncate")


def gt_mean_factors(output: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """``(mean_out, mean_gt)`` of :func:`gt_mean_rescale` (both in [0, 1] units), quirks included."""
    out = as_hwc(np.asarray(output), "output")
    gt_hwc = as_hwc(np.asarray(gt), "gt")
    if gt_hwc.dtype != np.uint8:
        raise TypeError(f"gt_mean_rescale: gt must be uint8, got {gt_hwc.dtype}")
    if out.shape != gt_hwc.shape:
        raise ValueError(f"gt_mean_rescale: output shape {out.shape} != gt shape {gt_hwc.shape}")
    mean_out = float(out.mean(dtype=np.float64))
    if not np.isfinite(mean_out) or mean_out == 0.0:
        raise ValueError(f"gt_mean_rescale: output mean is {mean_out}; cannot rescale a black/non-finite output")
    # Quirk: BGR2GRAY on RGB data (float32 input, as the official code passes a float image).
    gray = cv2.cvtColor(np.ascontiguousarray(gt_hwc.astype(np.float32)), cv2.COLOR_BGR2GRAY)
    mean_gt = float(gray.mean(dtype=np.float64)) / 255.0
    return mean_out, mean_gt
