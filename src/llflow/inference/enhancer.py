"""The enhancer: one network on a device with a precision and an engine, and the one place where
images are padded to the latent grid, cropped back, tiled, sampled, shifted in exposure and clamped.

The latent (what ``temperature``, ``seed`` and ``exposure`` act on)
    LLFlow decodes ``z`` of shape N×192×⌈H/8⌉×⌈W/8⌉ into the image, given features of the dark
    input. ``z = μ`` (the prior mean the encoder predicts) is the official output. Here
    ``z = μ + τ·ε + a(EV)·d``: ``ε`` is standard-normal noise drawn for the *whole* image from a CPU
    generator (so a seed gives the same result on every device, tiled or not) and the last term is
    the exposure shift (:mod:`llflow.inference.exposure`).

Engines (:mod:`llflow.engines`) only turn a padded condition and a latent offset into a raw image;
everything else is here, the same for all of them. Results come back in an :class:`Enhancement`
(the images, the exposure shift that was used, the share of out-of-range raw pixels): nothing about
a request is kept on the enhancer, which the CLI, the demo and the API share.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import runtime
from ..engines import Engine, build_engine, check_engine
from ..model import PRESETS, LLFlow, LLFlowConfig
from ..preprocess import equalize_histogram_tensor, make_condition, pad_to_multiple
from .exposure import ExposureShift, exposure_shift
from .tiling import DEFAULT_TILE_PAD, Progress, auto_tile_size, estimate_bytes_per_pixel, memory_budget, run_tiled

#: Temperature used for samples and uncertainty maps when none is given (the paper's sampling τ).
SAMPLE_TEMPERATURE = 0.8
#: Number of samples an uncertainty map averages over by default.
UNCERTAINTY_SAMPLES = 8
#: Raw outputs outside this range (or not finite) count as out of range: the flow broke down there.
OUT_OF_RANGE = (-0.5, 1.5)
#: Share of pixels with an out-of-range raw value above which a result is reported to the user.
OUT_OF_RANGE_SHARE = 0.001


class OutOfRangeWarning(UserWarning):
    """A result carried non-finite or far out-of-range raw values on more than
    :data:`OUT_OF_RANGE_SHARE` of its pixels (it was clamped to [0, 1])."""


def out_of_range_share(raw: Tensor) -> float:
    """Share of the pixels of an N×3×H×W raw output with a value that is not finite or lies outside
    :data:`OUT_OF_RANGE`."""
    low, high = OUT_OF_RANGE
    bad = ~torch.isfinite(raw) | (raw < low) | (raw > high)
    return float(bad.any(dim=1).float().mean()) if raw.numel() else 0.0


def out_of_range_message(share: float) -> str:
    low, high = OUT_OF_RANGE
    return (f"{share:.2%} of the pixels came out non-finite or outside [{low:g}, {high:g}] before clamping "
            "(the flow broke down there); the result is clamped")


def uncertainty_from_samples(samples: Sequence[Tensor]) -> Tensor:
    """Per-pixel uncertainty of 1×3×H×W samples: standard deviation over the samples (population,
    ``ddof=0``) of each colour value, averaged over R, G, B → 1×1×H×W, in output intensity units
    (the image's [0, 1] scale)."""
    stack = torch.cat(list(samples)).to(torch.float64)
    return stack.std(dim=0, unbiased=False).mean(dim=0, keepdim=True)[None].to(torch.float32)


@dataclass(frozen=True)
class Enhancement:
    """What :meth:`Enhancer.run` returns for one image: ``images`` (1×3×H×W float32 on the CPU, one
    per latent; clamped to [0, 1] unless asked otherwise), the ``exposure`` shift used (``None`` at
    0 EV) and ``out_of_range``, the largest share over the images of pixels whose raw value was not
    finite or outside :data:`OUT_OF_RANGE`."""

    images: List[Tensor]
    exposure: Optional[ExposureShift] = None
    out_of_range: float = 0.0

    @property
    def image(self) -> Tensor:
        return self.images[0]

    @property
    def out_of_range_note(self) -> Optional[str]:
        """One sentence when ``out_of_range`` exceeds :data:`OUT_OF_RANGE_SHARE`, else ``None``."""
        return out_of_range_message(self.out_of_range) if self.out_of_range > OUT_OF_RANGE_SHARE else None


def choose_precision(precision: Union[str, runtime.PrecisionChoice, None], device: torch.device,
                     engine: Union[str, Engine], warn: bool = True) -> runtime.PrecisionChoice:
    """:func:`llflow.runtime.resolve_precision`, except that ``auto`` is fp32 for onnxruntime."""
    if isinstance(precision, runtime.PrecisionChoice):
        return precision
    if engine == "onnxruntime" and (precision or "auto").lower() == "auto":
        return runtime.PrecisionChoice("fp32", "auto: engine onnxruntime runs fp32")
    return runtime.resolve_precision(precision, device, warn=warn)


@dataclass
class Enhancer:
    """An :class:`~llflow.model.LLFlow` network placed on a device with a precision and an engine.

    Build with :func:`llflow.load_model`. Methods take N×3×H×W float tensors in [0, 1] (on any
    device) and return float32 tensors on the CPU; see :func:`llflow.enhance` for numpy/PIL images.
    """

    net: LLFlow
    device: torch.device
    #: ``auto|fp32|bf16|fp16`` (or a :class:`~llflow.runtime.PrecisionChoice`); after construction
    #: the name that was chosen (:attr:`precision_choice` says why).
    precision: Any = "auto"
    source: str = "in-memory model"
    memory_budget: Union[int, str, None] = field(default=None, repr=False)
    #: ``"fast"``: the model's inference engine (folded layers, fused kernels; fp32 within ~1e-6
    #: relative of the reference). ``"reference"``: the network itself (bit-for-bit the official
    #: module structure; autocast for bf16/fp16). ``"onnxruntime"``: the fast engine's graph
    #: exported to ONNX (once per weights, cached) and run by onnxruntime — fp32 on the CPU only,
    #: 5–9 % faster there; several latents cost one whole pass each, where ``"fast"`` encodes once.
    #: Or any object with the contract of :class:`llflow.engines.Engine` (tests pass fakes).
    engine: Any = "fast"
    precision_choice: runtime.PrecisionChoice = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.precision_choice = choose_precision(self.precision, self.device, self.engine)
        self.precision = self.precision_choice.name
        if isinstance(self.engine, str):
            check_engine(self.engine, self.device, self.precision)
        self.net = self.net.to(self.device).eval()

    # -------------------------------------------------------------------------- descriptions
    @property
    def config(self) -> LLFlowConfig:
        return self.net.config

    @property
    def engine_name(self) -> str:
        return self.engine if isinstance(self.engine, str) else getattr(self.engine, "name", type(self.engine).__name__)

    @property
    def architecture(self) -> str:
        """The preset name the architecture matches, or ``custom``."""
        for name, preset in PRESETS.items():
            if preset.replace(train_gt_ratio=self.config.train_gt_ratio) == self.config:
                return name
        return "custom"

    def describe_runtime(self) -> str:
        """Device, CPU flags and precision with the reason for it (:func:`llflow.runtime.describe`)."""
        return runtime.describe(self.device, self.precision_choice)

    def bytes_per_pixel(self, latents: int = 1) -> float:
        return estimate_bytes_per_pixel(self.config, self.precision, latents)

    def max_untiled_pixels(self) -> int:
        """Largest image (in pixels) processed in one piece before automatic tiling starts."""
        return int(memory_budget(self.device, self.memory_budget) / self.bytes_per_pixel())

    def tile_for(self, height: int, width: int, tile: Optional[int], pad: int, latents: int = 1) -> Optional[int]:
        """The tile size to use: ``tile`` if positive; ``0`` → never tile; ``None`` → automatic."""
        if tile is not None:
            return tile if tile > 0 else None
        budget = memory_budget(self.device, self.memory_budget)
        return auto_tile_size(height, width, self.bytes_per_pixel(latents), budget, pad)

    # -------------------------------------------------------------------------- the engine
    @functools.cached_property
    def backend(self) -> Engine:
        """The engine object (built on first use; a snapshot: weights changed later are not seen)."""
        if not isinstance(self.engine, str):
            return self.engine
        return build_engine(self.engine, self.net, self.device, self.precision_choice)

    def prepare_engine(self) -> None:
        """Build the engine now rather than on the first image (for ``onnxruntime``: the export, or
        its failure, happens here)."""
        self.backend  # noqa: B018 (built and cached)

    def _forward_many(self, low: Tensor, histeq: Tensor, offsets: Sequence[Optional[Tensor]]) -> List[Tensor]:
        """The engine on one N×3×h×w crop: pad to the latent grid, prepare once, decode once per
        latent ``z = μ + offset`` (``None``: ``z = μ`` exactly), crop. Raw float32 on the CPU."""
        engine = self.backend
        h, w = low.shape[-2:]
        m = self.config.multiple
        x = low.detach().to(engine.device, engine.dtype)
        condition = make_condition(pad_to_multiple(x, m), pad_to_multiple(histeq.to(x), m))
        prepared = engine.prepare(condition, uses=len(offsets))
        return [engine.decode(prepared, None if off is None else off.to(engine.device))[..., :h, :w].float().cpu()
                for off in offsets]

    # -------------------------------------------------------------------------- requests
    def decode_raw(self, low: Tensor, offsets: Sequence[Optional[Tensor]], histeq: Optional[Tensor] = None,
                   tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD,
                   progress: Optional[Progress] = None) -> List[Tensor]:
        """Raw (unclamped) outputs of one 1×3×H×W image, one per latent offset (each for the whole
        image's latent grid, or ``None``), tiled when asked or when it would not fit in memory."""
        low = low.detach().to("cpu", torch.float32)
        h, w = low.shape[-2:]
        if histeq is None:
            histeq = equalize_histogram_tensor(low)  # once, on the whole unpadded image
        size = self.tile_for(h, w, tile, tile_pad, len(offsets))
        if size is None or (size >= h and size >= w):
            return self._forward_many(low, histeq, offsets)
        return run_tiled(low, histeq, offsets, size, tile_pad, self._forward_many, progress)

    def decode_many(self, low: Tensor, offsets: Sequence[Optional[Tensor]], histeq: Optional[Tensor] = None,
                    tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD,
                    progress: Optional[Progress] = None) -> List[Tensor]:
        """:meth:`decode_raw`, clamped to [0, 1]."""
        return [out.clamp_(0.0, 1.0) for out in self.decode_raw(low, offsets, histeq, tile, tile_pad, progress)]

    def decode(self, low: Tensor, offset: Optional[Tensor] = None, histeq: Optional[Tensor] = None,
               tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD,
               progress: Optional[Progress] = None) -> Tensor:
        """:meth:`decode_many` for one latent."""
        return self.decode_many(low, [offset], histeq, tile, tile_pad, progress)[0]

    def find_exposure(self, low: Tensor, ev: float) -> Optional[ExposureShift]:
        """The latent shift for ``ev`` stops on the 1×3×H×W image ``low``, measured through this
        enhancer's engine (``None`` at 0 EV)."""
        return exposure_shift(self.net, low, ev, engine=self.backend) if ev else None

    def latent_offsets(self, low: Tensor, n: int, temperature: float, shift: Optional[ExposureShift],
                       generator: Optional[torch.Generator]) -> List[Optional[Tensor]]:
        """``n`` latent offsets ``τ·ε_i + shift`` for the 1×3×H×W image ``low``; ``ε_i`` drawn one
        after another from ``generator`` on the CPU (identical on every device, tiled or not)."""
        h, w = low.shape[-2:]
        base = shift.offset(h, w) if shift is not None else None
        offsets: List[Optional[Tensor]] = []
        for _ in range(n):
            off = base
            if temperature != 0:
                eps = torch.randn(self.config.latent_shape(h, w), generator=generator, dtype=torch.float32)
                off = temperature * eps if base is None else base + temperature * eps
            offsets.append(off)
        return offsets

    def run(self, low: Tensor, n: int = 1, temperature: float = 0.0,
            exposure: Union[float, ExposureShift, None] = 0.0, generator: Optional[torch.Generator] = None,
            tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD, progress: Optional[Progress] = None,
            clamp: bool = True, histeq: Optional[Tensor] = None) -> Enhancement:
        """Enhance one 1×3×H×W image ``n`` times (``z = μ + τ·ε_i + shift``). ``exposure``: EV stops,
        or a shift found before (e.g. for the samples of an image whose output used it)."""
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        shift = exposure if isinstance(exposure, ExposureShift) or exposure is None else self.find_exposure(low, exposure)
        offsets = self.latent_offsets(low, n, temperature, shift, generator)
        raws = self.decode_raw(low, offsets, histeq, tile, tile_pad, progress)
        share = max(out_of_range_share(raw) for raw in raws)  # once, on the raw (blended) outputs
        images = [raw.clamp_(0.0, 1.0) for raw in raws] if clamp else raws
        return Enhancement(images, shift, share)

    def enhance_tensor(self, low: Tensor, temperature: float = 0.0, exposure: float = 0.0,
                       generator: Optional[torch.Generator] = None, tile: Optional[int] = None,
                       tile_pad: int = DEFAULT_TILE_PAD, progress: Optional[Progress] = None,
                       clamp: bool = True) -> Tensor:
        """Enhance N×3×H×W float images; each image uses fresh noise from ``generator``."""
        return torch.cat([self.run(img[None], 1, temperature, exposure, generator, tile, tile_pad, progress,
                                   clamp).image for img in low])

    def sample_tensors(self, low: Tensor, n: int, temperature: float = SAMPLE_TEMPERATURE,
                       exposure: float = 0.0, generator: Optional[torch.Generator] = None,
                       tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD,
                       progress: Optional[Progress] = None) -> List[Tensor]:
        """``n`` samples (1×3×H×W each) of one 1×3×H×W image at ``temperature``; the encoder runs
        once (per tile) for all of them when the engine can keep its condition."""
        return self.run(low, n, temperature, exposure, generator, tile, tile_pad, progress).images
