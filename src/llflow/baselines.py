"""Classical (non-learned) low-light enhancers used as reference rows in evaluations.

Every baseline maps an RGB uint8 H×W×3 image to an RGB uint8 H×W×3 image. The exact definitions
below reproduce the baseline numbers quoted in the shared data README for ``sice-lowlight/val``
(PSNR RGB / SSIM gray 7×7 / LPIPS-alex, no GT-mean rescale):

* ``input``  — the low-light image unchanged: 8.81 / 0.293 / 0.440;
* ``histeq`` — ``cv2.equalizeHist`` on R, G and B independently: 16.79 / 0.750 / 0.339;
* ``gamma``  — ``round(255·(x/255)^γ)`` with γ = ln 0.45 / ln mean(x/255): 18.59 / 0.762 / 0.243;
* ``clahe``  — CLAHE (clipLimit 3.0, 8×8 tiles) on L of OpenCV's 8-bit Lab: 11.23 / 0.543 / 0.347.

Notes on the definitions that were pinned down by reproducing those numbers:

* gamma: the closed form with the mean over all pixels *and* channels of the input in [0, 1]. It makes
  ``mean(x)^γ = 0.45``, i.e. it maps the *mean* to 0.45; since x^γ is concave for γ < 1 (Jensen), the
  output's actual mean comes out below 0.45 (0.36–0.43 on val). Solving instead for an output mean of exactly 0.45 by
  bisection gives 18.62 / 0.752 on val (SSIM 0.01 off), so it is not the quoted baseline.
* clahe: OpenCV's default-looking clipLimit 2.0 gives 10.56 / 0.493 on val; the quoted numbers need
  clipLimit 3.0 (with the usual 8×8 grid).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

__all__ = ["identity", "histeq", "gamma_to_mean", "clahe_lab", "BASELINES", "enhance"]

Enhancer = Callable[[np.ndarray], np.ndarray]

GAMMA_TARGET_MEAN = 0.45
CLAHE_CLIP_LIMIT = 3.0
CLAHE_TILE_GRID = (8, 8)


def _check_rgb_u8(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"baselines expect an RGB uint8 H×W×3 image, got {arr.dtype} array of shape {arr.shape}")
    return np.ascontiguousarray(arr)


def identity(image: np.ndarray) -> np.ndarray:
    """The "input" baseline: a copy of the low-light image itself."""
    return _check_rgb_u8(image).copy()


def histeq(image: np.ndarray) -> np.ndarray:
    """Global histogram equalisation of each RGB channel independently (``cv2.equalizeHist``)."""
    img = _check_rgb_u8(image)
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(img[..., c])) for c in range(3)], axis=-1)


def gamma_to_mean(image: np.ndarray, target: float = GAMMA_TARGET_MEAN) -> np.ndarray:
    """Global gamma curve that maps the image's mean brightness to ``target`` (default 0.45).

    γ = ln(target) / ln(m), m = mean of ``image / 255`` over all pixels and channels; output
    ``round(255 · (x/255)^γ)`` through a 256-entry lookup table. When brightening, the output mean
    ends up ≤ ``target`` (see the module notes); this closed form is what the reference numbers use.
    A constant black or white image (m = 0 or 1, where γ is undefined) is returned unchanged.
    """
    img = _check_rgb_u8(image)
    if not 0.0 < target < 1.0:
        raise ValueError(f"gamma_to_mean: target mean must lie in (0, 1), got {target}")
    m = float(img.mean(dtype=np.float64)) / 255.0
    if m <= 0.0 or m >= 1.0:
        return img.copy()
    g = np.log(target) / np.log(m)
    lut = np.rint((np.arange(256, dtype=np.float64) / 255.0) ** g * 255.0)
    return cv2.LUT(img, np.clip(lut, 0, 255).astype(np.uint8))


def clahe_lab(
    image: np.ndarray,
    clip_limit: float = CLAHE_CLIP_LIMIT,
    tile_grid: tuple[int, int] = CLAHE_TILE_GRID,
) -> np.ndarray:
    """CLAHE on the lightness channel of OpenCV's 8-bit Lab (RGB2LAB), colour channels untouched."""
    img = _check_rgb_u8(image)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tile_grid)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


BASELINES: dict[str, Enhancer] = {
    "input": identity,
    "histeq": histeq,
    "gamma": gamma_to_mean,
    "clahe": clahe_lab,
}


def enhance(name: str, image: np.ndarray) -> np.ndarray:
    """Run the baseline registered under ``name`` (one of :data:`BASELINES`) on an RGB uint8 image."""
    try:
        fn = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}") from None
    return fn(image)
