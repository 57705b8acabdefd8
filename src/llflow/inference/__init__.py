"""Everyday inference, by concern:

* :mod:`~llflow.inference.enhancer` — :class:`Enhancer`: one network on a device, with a precision
  and an engine; padding to the latent grid, cropping, clamping, sampling and the out-of-range
  report, once for every engine; results in an :class:`Enhancement`;
* :mod:`~llflow.inference.tiling` — memory estimate, automatic tile size, tile plan and blending;
* :mod:`~llflow.inference.exposure` — exposure control from the latent;
* :mod:`~llflow.inference.api` — ``load_model``, ``enhance``, ``sample``, ``uncertainty`` (re-exported
  as ``llflow.enhance`` etc.).
"""
from ..engines import ENGINES, check_engine
from ..model import LLFlowConfig
from ..runtime import PRECISIONS, resolve_device
from .api import enhance, load_model, sample, uncertainty
from .enhancer import (OUT_OF_RANGE, OUT_OF_RANGE_SHARE, SAMPLE_TEMPERATURE, UNCERTAINTY_SAMPLES, Enhancement,
                       Enhancer, OutOfRangeWarning, out_of_range_share, uncertainty_from_samples)
from .exposure import EXPOSURE_NOTE_EV, EXPOSURE_PROXY, ExposureShift, _linear_luminance, exposure_shift
from .tiling import (DEFAULT_TILE_PAD, MEMORY_BUDGET_ENV, MIN_AUTO_TILE, Tile, auto_tile_size,
                     estimate_bytes_per_pixel, memory_budget, plan_tiles)

#: Standard deviation stored as white in 16-bit uncertainty PNGs (``llflow enhance``, the demo): value
#: v (0..65535) means std = v / 65535 × 0.25 (output intensity on the [0, 1] scale). Fixed, so maps
#: can be compared.
UNCERTAINTY_FULL_SCALE = 0.25


def latent_shape(height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
    """Shape of the latent for an H×W image: N×192×⌈H/8⌉×⌈W/8⌉ (:meth:`LLFlowConfig.latent_shape`)."""
    return LLFlowConfig().latent_shape(height, width, batch)


__all__ = [
    "DEFAULT_TILE_PAD", "ENGINES", "EXPOSURE_NOTE_EV", "EXPOSURE_PROXY", "MEMORY_BUDGET_ENV", "MIN_AUTO_TILE",
    "OUT_OF_RANGE", "OUT_OF_RANGE_SHARE", "PRECISIONS", "SAMPLE_TEMPERATURE", "UNCERTAINTY_FULL_SCALE",
    "UNCERTAINTY_SAMPLES", "Enhancement", "Enhancer", "ExposureShift", "OutOfRangeWarning", "Tile",
    "auto_tile_size", "check_engine", "enhance", "estimate_bytes_per_pixel", "exposure_shift", "latent_shape",
    "load_model", "memory_budget", "out_of_range_share", "plan_tiles", "resolve_device", "sample", "uncertainty",
    "uncertainty_from_samples", "_linear_luminance",
]
