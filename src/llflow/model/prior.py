"""The encoder-conditioned Gaussian prior and the NLL normalisation (LLFLOW_DESIGN.md §4-5)."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from .encoder import color_map
from .flow import squeeze2d

PRIOR_SQUEEZE = 8
LOG_2PI = math.log(2 * math.pi)


def prior_mean(cmap: Tensor) -> Tensor:
    """Mean of z from a full-resolution 3-channel colour map: one factor-8 space-to-depth.

    The official code uses a single factor-8 squeeze (channel order ``c·64 + fy·8 + fx``), which
    differs from three successive factor-2 squeezes; released weights depend on it.
    """
    return squeeze2d(cmap, PRIOR_SQUEEZE)


def reference_prior_mean(gt: Tensor) -> Tensor:
    """The prior mean the training selector uses when it picks the reference image's colour map."""
    return prior_mean(color_map(gt))


def gaussian_log_prob(z: Tensor, mean: Tensor) -> Tensor:
    """``Σ −½[(z − μ)² + log 2π]`` per sample (unit variance)."""
    return (-0.5 * ((z - mean) ** 2 + LOG_2PI)).flatten(1).sum(dim=1)


def bits_per_pixel(log_likelihood: Tensor, height: int, width: int) -> Tensor:
    """Official NLL normalisation: ``−log p / (ln 2 · H · W)``, bits per *pixel* (3 values)."""
    return -log_likelihood / (math.log(2.0) * height * width)


def dequantize(gt: Tensor, quant: int = 32, generator: torch.Generator | None = None,
               noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Uniform dequantisation ``x + (u − ½)/quant`` and its log-det ``−ln(quant)·H·W`` per sample.

    ``u`` is ``noise`` when given, else ``torch.rand`` (optionally from ``generator``).
    """
    u = noise if noise is not None else torch.rand(gt.shape, generator=generator, dtype=gt.dtype, device=gt.device)
    h, w = gt.shape[-2:]
    logdet = gt.new_full((gt.shape[0],), -math.log(quant) * h * w)
    return gt + (u - 0.5) / quant, logdet


def latent_offset(shape: tuple[int, ...], temperature: float, eps: Optional[Tensor] = None,
                  generator: Optional[torch.Generator] = None, dtype: torch.dtype = torch.float32,
                  device: Union[str, torch.device] = "cpu") -> Optional[Tensor]:
    """``τ·ε`` for a latent of ``shape`` (``eps`` given, else drawn from ``generator``); ``None`` when
    ``z = μ`` exactly (no ``eps`` and ``τ = 0``)."""
    if eps is not None:
        if tuple(eps.shape) != tuple(shape):
            raise ValueError(f"eps has shape {tuple(eps.shape)}, expected {tuple(shape)} "
                             f"(N×192×ceil(H/8)×ceil(W/8))")
        return temperature * eps.to(device=device, dtype=dtype)
    if temperature == 0:
        return None
    noise = torch.randn(shape, generator=generator, dtype=dtype,
                        device=generator.device if generator is not None else device)
    return temperature * noise.to(device)
