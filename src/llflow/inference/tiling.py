"""Bounded memory: the memory estimate, the automatic tile size, the tile plan and the blending.

Tiles have origins on multiples of 8 and are cut with ``pad`` extra pixels of context on every side
(rounded up to a multiple of 8). Histogram equalisation is computed once on the whole image and each
tile gets its slice, and each tile gets the matching slice of the whole image's latent offset: so a
tile sees exactly the inputs the untiled network would see there. Overlaps are blended with
raised-cosine weights over the ``2·pad`` band (on the raw, unclamped outputs), so tile borders,
where context is missing, get almost no weight. Without an explicit tile size the image is tiled
automatically when :func:`estimate_bytes_per_pixel` × pixels exceeds :func:`memory_budget`.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Union

import torch
from torch import Tensor

from ..model import LLFlowConfig

#: Context pixels around each tile (rounded up to a multiple of 8). Chosen from measurements
#: with the real model (see experiments/tiling_psnr.py): 32 keeps tiled vs untiled above 40 dB.
DEFAULT_TILE_PAD = 32
#: Smallest tile the automatic tiler uses (smaller tiles spend most of their time on context).
MIN_AUTO_TILE = 64
#: Environment variable overriding the memory budget used for automatic tiling ("512MB", "2GiB", bytes).
MEMORY_BUDGET_ENV = "LLFLOW_MEMORY_BUDGET"
#: Share of the free memory the automatic tiler allows itself (the rest is for the OS, other work
#: and the estimate's error).
MEMORY_FRACTION = 0.5

Progress = Callable[[int, str], Any]  # (total, description) -> object with update(n) and close()
#: One network pass on a crop: (low 1×3×h×w, histeq 1×3×h×w, offsets) → raw 1×3×h×w per offset.
CropForward = Callable[[Tensor, Tensor, Sequence[Optional[Tensor]]], List[Tensor]]


def estimate_bytes_per_pixel(config: LLFlowConfig, precision: str = "fp32", latents: int = 1) -> float:
    """Peak working memory per input pixel of one network call (no gradients), in bytes.

    A model of the live activations: ~40 full-resolution float channels (input, condition,
    hand-crafted maps, colour map, output), ``5·nf + gc`` for the full-resolution encoder features
    and the H/2 dense blocks, and the stacked flow conditions. Calibrated against the peak RSS
    measured on the CPU with ``LLFlow.enhance`` (tiny 612, LOL_smallNet 808, LOL-pc ~2200 B/px at
    1 MP) with a 1.25 safety factor; autocast keeps low-precision copies next to the fp32 tensors,
    hence ×2 (measured 2.0×). Decoding several latents of one image (samples, uncertainty) keeps the
    condition-only part of every coupling step: ``K·Σ_l (hidden + 4·3·4^l) / 4^l`` more floats.
    The fast engine (``prepare_for_inference``) measured less (LOL_smallNet 506 B/px single, 1077 B/px
    several latents), so this stays an upper bound.
    """
    floats = 40 + 5 * config.nf + config.gc + config.cond_channels / 4 + config.nf * len(config.stack_blocks) / 4
    if latents > 1:
        floats += config.K * sum((config.hidden_channels + 12 * 4**level) / 4**level for level in (1, 2, 3))
    factor = 2.0 if precision in ("bf16", "fp16") else 1.0
    return 4.0 * floats * factor * 1.25


def _parse_bytes(text: str) -> int:
    """``"512MB"``, ``"2GiB"``, ``"1.5g"``, ``"1048576"`` → bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not match:
        raise ValueError(f"{MEMORY_BUDGET_ENV}={text!r}: give bytes or a size like 512MB or 2GiB")
    number, unit, binary = float(match.group(1)), match.group(2), match.group(3).startswith("i")
    power = "kmgt".index(unit) + 1 if unit else 0
    return int(number * (1024 if binary else 1000) ** power)


def available_memory(device: torch.device) -> int:
    """Free memory on ``device`` in bytes (GPU: free device memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        mps = getattr(torch, "mps", None)
        if mps is not None and hasattr(mps, "recommended_max_memory"):
            return int(mps.recommended_max_memory() - mps.current_allocated_memory())
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3  # unknown platform: assume a modest machine


def memory_budget(device: torch.device, budget: Union[int, str, None] = None) -> int:
    """Bytes one ``enhance`` call may use: ``budget`` if given, else ``$LLFLOW_MEMORY_BUDGET``, else
    :data:`MEMORY_FRACTION` of the free memory of ``device``."""
    if budget is not None:
        return _parse_bytes(budget) if isinstance(budget, str) else int(budget)
    env = os.environ.get(MEMORY_BUDGET_ENV)
    if env:
        return _parse_bytes(env)
    return int(available_memory(device) * MEMORY_FRACTION)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def auto_tile_size(height: int, width: int, bytes_per_pixel: float, budget: int,
                   pad: int = DEFAULT_TILE_PAD) -> Optional[int]:
    """``None`` when the whole (8-padded) image fits the budget, else the largest tile size (a
    multiple of 8, at least :data:`MIN_AUTO_TILE`) whose padded tile fits."""
    if _round_up(height, 8) * _round_up(width, 8) * bytes_per_pixel <= budget:
        return None
    side = int(math.sqrt(budget / bytes_per_pixel)) - 2 * _round_up(pad, 8)
    return max(MIN_AUTO_TILE, side // 8 * 8)


# ================================================================================================
# Tiles


@dataclass(frozen=True)
class Tile:
    """One tile: the core ``[y0, y1) × [x0, x1)`` it is responsible for and the extended region
    ``[ey0, ey1) × [ex0, ex1)`` (core plus context, clipped to the image) it is computed on."""

    y0: int
    y1: int
    x0: int
    x1: int
    ey0: int
    ey1: int
    ex0: int
    ex1: int


def plan_tiles(height: int, width: int, tile: int, pad: int) -> List[Tile]:
    """Cover an image with tiles of ``tile`` pixels (rounded up to a multiple of 8) plus ``pad``
    context (rounded up to a multiple of 8). All origins are multiples of 8, so each tile's latent is
    an exact slice of the whole image's latent grid."""
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    if pad < 0:
        raise ValueError(f"tile pad must be >= 0, got {pad}")
    tile, pad = _round_up(tile, 8), _round_up(pad, 8)
    tiles = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            tiles.append(Tile(y0, y1, x0, x1, max(0, y0 - pad), min(height, y1 + pad),
                              max(0, x0 - pad), min(width, x1 + pad)))
    return tiles


def _ramp_1d(start: int, end: int, size: int, pad: int) -> Tensor:
    """Blend weights along one axis of an extended tile ``[start, end)`` of an axis of ``size``.

    Each side that is not the image border ramps as a raised cosine from ~0 at the tile edge to 1
    at ``2·pad`` inside. Two neighbours' ramps over their shared ``2·pad`` band sum to exactly 1,
    and the pixels nearest a tile edge (least context) get the least weight.
    """
    n = end - start
    weight = torch.ones(n, dtype=torch.float64)
    if pad <= 0:
        return weight
    ramp_len = 2 * pad
    d = torch.arange(n, dtype=torch.float64) + 0.5  # pixel centres: never exactly zero weight

    def ramp(dist: Tensor) -> Tensor:
        return 0.5 - 0.5 * torch.cos(math.pi * torch.clamp(dist / ramp_len, 0.0, 1.0))

    if start > 0:
        weight = weight * ramp(d)
    if end < size:
        weight = weight * ramp(n - d)
    return weight


def _blend_weights(t: Tile, height: int, width: int, pad: int) -> Tensor:
    """1×1×h×w weights of an extended tile (outer product of the two axis ramps)."""
    pad = _round_up(pad, 8)
    wy = _ramp_1d(t.ey0, t.ey1, height, pad)
    wx = _ramp_1d(t.ex0, t.ex1, width, pad)
    return (wy[:, None] * wx[None, :]).to(torch.float32)[None, None]
def run_tiled(low: Tensor, histeq: Tensor, offsets: Sequence[Optional[Tensor]], size: int, pad: int,
              forward: CropForward, progress: Optional[Progress] = None) -> List[Tensor]:
    """``forward`` tile by tile over the 1×3×H×W image, blended: one raw 1×3×H×W result per latent
    offset (each offset for the whole image's latent grid, or ``None``). Tiles are the outer loop, so
    the encoder runs once per tile for all latents."""
    h, w = low.shape[-2:]
    tiles = plan_tiles(h, w, size, pad)
    outs = [torch.zeros(1, 3, h, w) for _ in offsets]
    total = torch.zeros(1, 1, h, w)
    bar = progress(len(tiles), "tiles") if progress is not None else None
    try:
        for t in tiles:
            crop = (Ellipsis, slice(t.ey0, t.ey1), slice(t.ex0, t.ex1))
            # Origins are multiples of 8: each tile's latent is an exact slice of the image's.
            lat = (Ellipsis, slice(t.ey0 // 8, -(-t.ey1 // 8)), slice(t.ex0 // 8, -(-t.ex1 // 8)))
            results = forward(low[crop], histeq[crop], [None if off is None else off[lat] for off in offsets])
            weight = _blend_weights(t, h, w, pad)
            for out, result in zip(outs, results):
                out[crop] += result * weight
            total[crop] += weight
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [out / total for out in outs]
