"""Low-light images synthesised from well-exposed references, for extra training pairs.

A reference image is "un-processed" to linear light, darkened, given the noise a camera sensor
would add at that exposure, and processed back with a camera-like tone curve:

1. **Linearise** with the inverse of a camera-like tone curve: inverse smoothstep
   (``3x² − 2x³``, an S-curve), then gamma 2.2 — the "unprocessing" of Brooks et al.,
   "Unprocessing images for learned raw denoising" (CVPR 2019).
2. **Expose**: multiply by a factor drawn log-uniformly from ``exposure``.
3. **Noise** (heteroscedastic Gaussian approximation of shot + read noise, Brooks et al.):
   variance ``λ_shot·x + λ_read`` in linear units with ``λ_shot`` log-uniform in ``shot_noise`` and
   ``log λ_read = 2.18·log λ_shot + 1.2 + N(0, 0.26²)`` (their fit over real sensors), drawn per
   colour channel and pixel (chroma noise, as in a demosaicked raw).
4. **Tone curve**: gamma 1/2.2, then smoothstep, then 8-bit quantisation (what a camera writes).
   At exposure 1 without noise this returns the reference.

Why this curve and these exposures (measured on ``sice-lowlight/train``, every 5th pair, fitting one
exposure factor per pair without noise): smoothstep + gamma 2.2 reproduces the real low images with
a mean absolute error of 7.3 grey levels (plain sRGB: 10.8, plain gamma 2.2: 9.8), and the fitted
factors span 0.032–0.176 (5th–95th percentile, median 0.108) — hence the default 0.03–0.2.

The pair is ``(synthesised low, original reference)``. Everything is a pure function of the
``numpy.random.Generator`` passed in, so training stays reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .preprocess import to_float32

__all__ = ["LowLightSynthesizer", "tone_curve", "inverse_tone_curve"]

GAMMA = 2.2


def inverse_tone_curve(y: np.ndarray) -> np.ndarray:
    """Display values in [0, 1] → linear light: inverse smoothstep, then gamma 2.2."""
    y = np.clip(y, 0.0, 1.0)
    return np.power(0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0), GAMMA)


def tone_curve(x: np.ndarray) -> np.ndarray:
    """Linear light → display values in [0, 1]: gamma 1/2.2, then smoothstep (clips to [0, 1])."""
    x = np.power(np.clip(x, 0.0, 1.0), 1.0 / GAMMA)
    return x * x * (3.0 - 2.0 * x)


def _log_uniform(rng: np.random.Generator, bounds: Tuple[float, float]) -> float:
    low, high = bounds
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


@dataclass(frozen=True)
class LowLightSynthesizer:
    """Darkens an sRGB image the way an underexposed camera shot looks (see module docstring).

    Args:
        exposure: range of the linear exposure factor (log-uniform).
        shot_noise: range of the shot-noise variance factor ``λ_shot`` (log-uniform); Brooks et al.
            use 1e-4…1.2e-2 for raw data of *normally* exposed photos; the SICE low images are
            tripod shots from good cameras, so the default upper end is lower.
    """

    exposure: Tuple[float, float] = (0.03, 0.2)
    shot_noise: Tuple[float, float] = (1e-4, 3e-3)

    def __post_init__(self) -> None:
        for name in ("exposure", "shot_noise"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be a range 0 < low <= high, got {(low, high)}")
        if self.exposure[1] > 1:
            raise ValueError(f"exposure must darken (at most 1), got {self.exposure}")

    def draw(self, rng: np.random.Generator) -> Tuple[float, float, float]:
        """One ``(exposure, λ_shot, λ_read)`` draw."""
        exposure = _log_uniform(rng, self.exposure)
        shot = _log_uniform(rng, self.shot_noise)
        read = float(np.exp(2.18 * np.log(shot) + 1.2 + rng.normal(0.0, 0.26)))
        return exposure, shot, read

    def __call__(self, reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An H×W×3 uint8/uint16/float [0, 1] sRGB reference → H×W×3 uint8 low-light image."""
        if reference.ndim != 3 or reference.shape[-1] != 3:
            raise ValueError(f"expected an H×W×3 image, got shape {reference.shape}")
        exposure, shot, read = self.draw(rng)
        linear = inverse_tone_curve(to_float32(reference)) * np.float32(exposure)
        std = np.sqrt(np.float32(shot) * linear + np.float32(read))
        noisy = linear + std * rng.standard_normal(linear.shape, dtype=np.float32)
        return np.round(tone_curve(noisy) * 255.0).astype(np.uint8)
