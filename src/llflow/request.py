"""One enhancement request, as ``llflow enhance`` and ``llflow demo`` both run it: temperature
defaults, samples, the exposure shift (found once) and its note, the uncertainty map and the
out-of-range report. The callers only read and write files (:mod:`llflow.cli.enhance`,
:mod:`llflow.demo.server`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
import torch
from torch import Tensor

from .inference import (DEFAULT_TILE_PAD, SAMPLE_TEMPERATURE, UNCERTAINTY_FULL_SCALE, UNCERTAINTY_SAMPLES,
                        Enhancement, Enhancer, ExposureShift, uncertainty_from_samples)
from .inference.tiling import Progress

#: Called when a stage starts ("exposure", "samples", "enhancing", "uncertainty"); returns the
#: tile-progress factory for that stage, or None.
StageHook = Callable[[str], Optional[Progress]]


@dataclass(frozen=True)
class Request:
    """What to compute for one image.

    ``temperature``: τ of the main output (``None``/0: the official ``z = μ``); samples and
    uncertainty samples use it when it is positive, else :data:`SAMPLE_TEMPERATURE`. ``samples``:
    N > 1 draws N samples (the main output is then sample 0 when τ > 0, or a τ = 0 decode).
    ``main``: whether the main output is wanted. ``uncertainty``: the std map, over the samples
    when there are any, else over ``uncertainty_samples`` draws. Noise: ``seed``, per image.
    """

    temperature: Optional[float] = None
    samples: int = 1
    exposure: float = 0.0
    seed: int = 0
    main: bool = True
    uncertainty: bool = False
    uncertainty_samples: int = UNCERTAINTY_SAMPLES
    tile: Optional[int] = None
    tile_pad: int = DEFAULT_TILE_PAD

    @property
    def sample_temperature(self) -> float:
        return self.temperature if self.temperature else SAMPLE_TEMPERATURE


@dataclass
class Outcome:
    """The results of a :class:`Request` (1×3×H×W float32 tensors in [0, 1] on the CPU)."""

    main: Optional[Tensor] = None
    samples: List[Tensor] = field(default_factory=list)
    #: H×W float32 std over samples (output intensity units), when asked for.
    uncertainty: Optional[np.ndarray] = None
    exposure: Optional[ExposureShift] = None
    #: Largest share of out-of-range raw pixels over everything decoded.
    out_of_range: float = 0.0
    #: One sentence when the requested exposure was missed (the model's brightness saturates).
    exposure_note: Optional[str] = None
    #: One sentence when raw values left the valid range on more than 0.1 % of the pixels.
    out_of_range_note: Optional[str] = None

    @property
    def uncertainty16(self) -> np.ndarray:
        """The uncertainty map scaled for a 16-bit grey PNG: white = std :data:`UNCERTAINTY_FULL_SCALE`."""
        assert self.uncertainty is not None
        return np.clip(self.uncertainty / UNCERTAINTY_FULL_SCALE, 0, 1)


def run_request(enhancer: Enhancer, low: Tensor, request: Request, stage: Optional[StageHook] = None) -> Outcome:
    """Run ``request`` on the 1×3×H×W float image ``low``."""
    hook: StageHook = stage or (lambda _name: None)
    outcome = Outcome()
    results: List[Enhancement] = []

    def run(n: int, tau: float, name: str) -> List[Tensor]:
        progress = hook(name)
        result = enhancer.run(low, n, tau, outcome.exposure, torch.Generator().manual_seed(request.seed),
                              tile=request.tile, tile_pad=request.tile_pad, progress=progress)
        results.append(result)
        return result.images

    if request.exposure:
        hook("exposure")
        outcome.exposure = enhancer.find_exposure(low, request.exposure)
        outcome.exposure_note = outcome.exposure.note(request.exposure) if outcome.exposure is not None else None
    tau = request.temperature or 0.0
    if request.samples > 1:
        outcome.samples = run(request.samples, request.sample_temperature, "samples")
    if request.main:
        outcome.main = outcome.samples[0] if outcome.samples and tau > 0 else run(1, tau, "enhancing")[0]
    if request.uncertainty:
        draws = outcome.samples or run(request.uncertainty_samples, request.sample_temperature, "uncertainty")
        outcome.uncertainty = uncertainty_from_samples(draws)[0, 0].numpy()
    outcome.out_of_range = max((r.out_of_range for r in results), default=0.0)
    outcome.out_of_range_note = next((r.out_of_range_note for r in results if r.out_of_range_note), None)
    return outcome


__all__ = ["Outcome", "Request", "StageHook", "run_request"]
