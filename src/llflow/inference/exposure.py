"""Exposure control from the latent: the colour-neutral brightness direction of the model and the
amplitude along it that gives the requested change in EV stops (:func:`exposure_shift`).

The gradient that finds the direction needs the differentiable reference network; every other decode
of the search goes through the engine the caller runs (``engine``), so the shift is measured on the
numbers that engine will produce.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ..engines import Engine, FastEngine
from ..model import LLFlow
from ..preprocess import equalize_histogram_tensor, make_condition, pad_to_multiple

#: Longer side (pixels) of the downscaled copy on which the exposure shift is found.
EXPOSURE_PROXY = 192
#: Exposure search grid: first amplitude, growth per step, number of steps, and the smallest gain
#: (stops per step) that still counts as "rising" (below it the output is saturated).
EXPOSURE_FIRST_STEP, EXPOSURE_GROWTH, EXPOSURE_MAX_STEPS, EXPOSURE_MIN_GAIN = 0.05, math.sqrt(2), 16, 0.02
#: An exposure request missed by more than this many EV is reported to the user (the model's
#: brightness saturates there).
EXPOSURE_NOTE_EV = 0.25

_LUMA_REC709 = (0.2126, 0.7152, 0.0722)


@dataclass(frozen=True)
class ExposureShift:
    """A latent shift ``amplitude · direction`` (``direction`` 1×192×1×1: the same vector at every
    latent position) and the exposure change in stops it produced on the proxy image."""

    direction: Tensor
    amplitude: float
    achieved_ev: float

    def offset(self, height: int, width: int) -> Tensor:
        """The shift as a full latent for an H×W image (1×192×⌈H/8⌉×⌈W/8⌉)."""
        shape = (1, self.direction.shape[1], -(-height // 8), -(-width // 8))
        return (self.amplitude * self.direction).expand(shape).contiguous()

    def note(self, requested: float) -> Optional[str]:
        """One sentence when the requested EV was missed by more than :data:`EXPOSURE_NOTE_EV`."""
        if abs(self.achieved_ev - requested) <= EXPOSURE_NOTE_EV:
            return None
        return f"exposure {requested:+g} EV reached {self.achieved_ev:+.2f} EV (the model's brightness saturates there)"


def _linear_luminance(rgb: Tensor) -> Tensor:
    """Mean Rec.709 luminance of sRGB values in [0, 1], in linear light (what EV stops measure)."""
    x = rgb.clamp(0, 1).double()
    lin = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return (lin * torch.tensor(_LUMA_REC709, dtype=lin.dtype, device=lin.device).view(1, 3, 1, 1)).sum(1).mean()


def _proxy(low: Tensor, side: int) -> Tensor:
    """Area-downscaled copy with the longer side at most ``side`` (never upscaled)."""
    h, w = low.shape[-2:]
    scale = side / max(h, w)
    if scale >= 1:
        return low
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(low, size=size, mode="area")


def exposure_shift(net: LLFlow, low: Tensor, ev: float, proxy: int = EXPOSURE_PROXY,
                   steps: int = 10, engine: Optional[Engine] = None) -> Optional[ExposureShift]:
    """Find the latent shift that changes the exposure of ``low``'s enhancement by ``ev`` stops.

    How: on a small proxy of the image (longer side ≤ ``proxy`` px), take the model's own
    brightness directions in the latent — the gradients of the mean R, G and B output with respect
    to ``z`` at ``z = μ``, averaged over positions — and combine them so that, to first order, all
    three channel means scale by the same factor (a *colour-neutral* direction: brighter or darker,
    not bluer). Then walk along it (geometric grid) and bisect the amplitude until the output's mean
    linear luminance is ``2^ev`` times that of the official output. Clipped highlights make large
    ``ev`` unreachable: the amplitude is then capped where brightness stops rising by at least
    :data:`EXPOSURE_MIN_GAIN` stops per step (``achieved_ev`` tells how far it got), so the EV →
    amplitude map stays monotonic and larger EVs give the same, saturated, result.

    Why not a fixed direction: measured on the SICE val images (experiments/exposure_sweep.py),
    shifting all latent channels equally (``z = μ + c·EV·1``) changes brightness non-monotonically
    (and gives NaNs at ``|c·EV| ≳ 2``), and scaling the prior mean (``z = μ·2^{k·EV}``) moves
    brightness weakly and shifts colours; the gradient direction is monotonic and strong.
    The shift is the same vector at every latent position, so it works tile by tile.
    ``ev = 0`` returns ``None``: no shift at all, so the result is exactly the official output.
    ``engine`` decodes the search's latents (default: the network's fast engine in fp32).
    """
    if ev == 0:
        return None
    device = net.device
    small = _proxy(low.detach().to("cpu", torch.float32), proxy).to(device, net.dtype)
    h, w = small.shape[-2:]
    m = net.config.multiple
    lq = make_condition(pad_to_multiple(small, m), pad_to_multiple(equalize_histogram_tensor(small), m))
    with torch.no_grad():
        mean = net.prior_mean(net.encode(lq))
    if engine is None:
        engine = FastEngine(net, device, "fp32")
    prepared = engine.prepare(lq.to(engine.device, engine.dtype), uses=2)  # the encoder runs once
    with torch.enable_grad():
        z = mean.clone().requires_grad_(True)
        out = net.reverse(lq, z=z)[0][..., :h, :w]
        channel_means = out.mean(dim=(0, 2, 3))
        grads = [torch.autograd.grad(channel_means[c], z, retain_graph=c < 2)[0].sum(dim=(0, 2, 3)) for c in range(3)]
    basis = torch.stack(grads, dim=1).double()                 # 192×3: ∂m_c/∂(z + t·e_i), summed over positions
    jacobian = basis.T @ basis                                 # ∂m_c/∂a_k along direction k = grad_k
    target = channel_means.detach().double()                    # first-order change ∝ the means: neutral
    weights = torch.linalg.lstsq(jacobian, target[:, None]).solution[:, 0]
    direction = (basis @ weights)                               # a = 1 ⇒ channel means double (1st order)
    if not torch.isfinite(direction).all() or float(direction.abs().max()) == 0:
        raise ValueError("exposure: the model's output does not respond to the latent here (flat or black image)")
    direction = direction.to(mean.dtype).view(1, -1, 1, 1)

    def stops(amplitude: float) -> float:
        """log2 of the mean linear luminance at this amplitude (−inf for black, NaN if broken)."""
        offset = None if amplitude == 0 else (amplitude * direction).expand(mean.shape)
        with torch.no_grad():
            result = engine.decode(prepared, offset)[..., :h, :w].float()
        value = float(_linear_luminance(result))
        if not math.isfinite(value):
            return math.nan
        return math.log2(value) if value > 0 else -math.inf

    base = stops(0.0)
    if not math.isfinite(base):
        raise ValueError("exposure: the enhanced image is black; exposure cannot be measured")
    goal, sign = base + ev, (1.0 if ev > 0 else -1.0)

    # Walk outwards on a geometric grid while every step still moves the exposure the wanted way by
    # at least EXPOSURE_MIN_GAIN stops. The last such point is the cap: beyond it the output is
    # saturated (clipped, or the flow breaks down), where a small proxy no longer predicts the full
    # image and brightness could even turn back. Capping keeps EV → amplitude monotonic.
    grid = [(0.0, base)]
    amplitude = sign * EXPOSURE_FIRST_STEP
    for _ in range(EXPOSURE_MAX_STEPS):
        value = stops(amplitude)
        if not sign * (value - grid[-1][1]) >= EXPOSURE_MIN_GAIN:  # also False for NaN
            break
        grid.append((amplitude, value))
        if sign * (value - goal) >= 0:
            break                                               # goal bracketed
        amplitude *= EXPOSURE_GROWTH
    (inner, inner_stops), last = grid[max(len(grid) - 2, 0)], grid[-1]
    if sign * (last[1] - goal) < 0:                             # unreachable: as far as it safely goes
        return ExposureShift(direction, last[0], last[1] - base)
    outer, outer_stops = last
    for _ in range(steps):                                      # bisect on the monotonic bracket
        mid = 0.5 * (inner + outer)
        mid_stops = stops(mid)
        if not math.isfinite(mid_stops) and mid_stops != -math.inf:
            outer, outer_stops = mid, mid_stops
        elif sign * (mid_stops - goal) >= 0:
            outer, outer_stops = mid, mid_stops
        else:
            inner, inner_stops = mid, mid_stops
    if math.isfinite(outer_stops) and abs(outer_stops - goal) < abs(inner_stops - goal):
        return ExposureShift(direction, outer, outer_stops - base)
    return ExposureShift(direction, inner, inner_stops - base)
