"""Turning a low-light image into the network's 6-channel condition.

The official recipe (LLFLOW_DESIGN.md §1): the condition is
``cat[log(clamp(low + 1e-3, min=1e-3)), histeq(low) / 255]``, where the histogram equalisation is
computed per channel on the *whole, unpadded* uint8 image with OpenCV.
"""
from __future__ import annotations

from typing import Optional, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

LOG_EPS = 1e-3


def to_float32(image: np.ndarray) -> np.ndarray:
    """An 8-bit, 16-bit or float image → float32 in [0, 1] (integers scaled, floats clipped)."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0)
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise an 8-bit, 16-bit or float [0, 1] image to uint8 (rounding, clipping)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def equalize_histogram(image: np.ndarray) -> np.ndarray:
    """Per-channel ``cv2.equalizeHist`` of an H×W×C (or H×W) image; returns uint8 of the same shape.

    Accepts uint8, uint16 or float in [0, 1]; deeper inputs are quantised to 8 bits first because the
    official network was trained on 8-bit equalisation (and OpenCV only equalises 8-bit images).
    """
    u8 = to_uint8(image)
    if u8.ndim == 2:
        return cv2.equalizeHist(np.ascontiguousarray(u8))
    channels = [cv2.equalizeHist(np.ascontiguousarray(u8[..., c])) for c in range(u8.shape[-1])]
    return np.stack(channels, axis=-1)


def equalize_histogram_tensor(low: torch.Tensor) -> torch.Tensor:
    """Histogram-equalise each image of an N×3×H×W float tensor in [0, 1]; returns float in [0, 1]."""
    batch = low.detach().to("cpu", torch.float64).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    eq = np.stack([equalize_histogram(img) for img in batch])
    out = torch.from_numpy(eq).permute(0, 3, 1, 2).to(dtype=low.dtype, device=low.device)
    return out / 255.0


def log_low(low: torch.Tensor) -> torch.Tensor:
    """The official log transform of the low-light image."""
    return torch.log(torch.clamp(low + LOG_EPS, min=LOG_EPS))


def make_condition(low: torch.Tensor, histeq: torch.Tensor | None = None) -> torch.Tensor:
    """Build the 6-channel network input from an N×3×H×W low image in [0, 1].

    ``histeq`` (N×3×H×W in [0, 1]) may be given when it was computed elsewhere, e.g. on the full
    image before cropping during training; otherwise it is computed here on ``low`` as given.
    """
    if histeq is None:
        histeq = equalize_histogram_tensor(low)
    return torch.cat([log_low(low), histeq.to(low.dtype)], dim=1)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad bottom/right to a multiple of ``multiple`` by reflection (edge not repeated, as the
    official test script), falling back to edge replication where the image is too small to reflect."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def image_condition(low: Tensor, histeq: Optional[Tensor], multiple: int, dtype: torch.dtype,
                    device: Union[str, torch.device, None] = None) -> Tensor:
    """The condition of an N×3×H×W float image in [0, 1], padded to ``multiple`` (hist-eq of the
    unpadded image unless given) — the input side of the inference engines' ``enhance``."""
    if low.ndim != 4 or low.shape[1] != 3:
        raise ValueError(f"low must be N×3×H×W, got shape {tuple(low.shape)}")
    if not low.is_floating_point():
        raise TypeError(f"low must be a float tensor in [0, 1], got {low.dtype}")
    x = low.detach().to(device=device, dtype=dtype)
    if histeq is None:
        histeq = equalize_histogram_tensor(x)
    return make_condition(pad_to_multiple(x, multiple), pad_to_multiple(histeq.to(x), multiple))
