"""Everyday inference: loading a model on a device/precision, whole-image or tiled enhancement,
sampling, per-pixel uncertainty and exposure control — and the Python API built on them.

Python API (re-exported as ``llflow.enhance`` etc.)::

    import llflow
    out = llflow.enhance(image)                          # the official deterministic result (τ = 0)
    out = llflow.enhance(image, exposure=+1)             # one stop brighter, from the latent
    outs = llflow.sample(image, n=4, temperature=0.8, seed=0)   # 4 plausible enhancements
    std = llflow.uncertainty(image, n=8, temperature=0.8, seed=0)  # where the model is unsure
    model = llflow.load_model("default" | "path.pth|.safetensors", device="auto", precision="fp32")

``image`` may be numpy (uint8, uint16 or float in [0, 1]; H×W×3, H×W×4 with alpha, H×W grey), a
PIL image or a torch float tensor (3×H×W, N×3×H×W, grey layouts); results come back as the same kind,
dtype and layout (see :func:`llflow.io.to_tensor`). 16-bit data is converted to float without any
8-bit step; only the histogram-equalised half of the network's condition is 8-bit, as in the
official model.

The latent (what ``temperature``, ``seed`` and ``exposure`` act on)
    LLFlow decodes ``z`` of shape N×192×⌈H/8⌉×⌈W/8⌉ into the image, given features of the dark
    input. ``z = μ`` (the prior mean the encoder predicts) is the official output. Here
    ``z = μ + τ·ε + EV·c·1``: ``ε`` is standard-normal noise drawn for the *whole* image from a CPU
    generator (so a seed gives the same result on every device, tiled or not) and the last term is
    the exposure shift (:data:`EXPOSURE_STEP`; see :func:`exposure_offset` for why this form).

Tiling (bounded memory)
    Tiles have origins on multiples of 8 and are cut with ``pad`` extra pixels of context on every
    side (rounded up to a multiple of 8). Histogram equalisation is computed once on the whole image
    and each tile gets its slice, and each tile gets the matching slice of the whole image's ``ε``:
    so a tile sees exactly the inputs the untiled network would see there. Overlaps are blended with
    raised-cosine weights over the ``2·pad`` band, so tile borders, where context is missing, get
    almost no weight. Without an explicit tile size the image is tiled automatically when
    :func:`estimate_bytes_per_pixel` × pixels exceeds the memory budget (:func:`memory_budget`).
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .io import Image, to_tensor
from .model import LLFlow, LLFlowConfig, PRESETS
from .preprocess import equalize_histogram_tensor

__all__ = [
    "DEFAULT_TILE_PAD", "EXPOSURE_STEP", "SAMPLE_TEMPERATURE", "UNCERTAINTY_SAMPLES", "PRECISIONS",
    "Enhancer", "Tile", "enhance", "sample", "uncertainty", "load_model", "resolve_device",
    "check_precision", "precision_context", "plan_tiles", "estimate_bytes_per_pixel", "memory_budget",
    "auto_tile_size", "exposure_offset", "latent_shape",
]

PRECISIONS = ("fp32", "bf16", "fp16")

#: Temperature used for samples and uncertainty maps when none is given (the paper's sampling τ).
SAMPLE_TEMPERATURE = 0.8
#: Number of samples an uncertainty map averages over by default.
UNCERTAINTY_SAMPLES = 8
#: Context pixels around each tile (rounded up to a multiple of 8). Chosen from measurements
#: with the real model (see benchmarks/tiling_psnr.py): 32 keeps tiled vs untiled above 40 dB.
DEFAULT_TILE_PAD = 32
#: Smallest tile the automatic tiler uses (smaller tiles spend most of their time on context).
MIN_AUTO_TILE = 64
#: Latent shift per EV along the all-ones direction (see :func:`exposure_offset`).
EXPOSURE_STEP = 0.5
#: Environment variable overriding the memory budget used for automatic tiling ("512MB", "2GiB", bytes).
MEMORY_BUDGET_ENV = "LLFLOW_MEMORY_BUDGET"
#: Share of the free memory the automatic tiler allows itself (the rest is for the OS, other work
#: and the estimate's error).
MEMORY_FRACTION = 0.5

ModelLike = Union[None, str, "os.PathLike[str]", LLFlow, "Enhancer"]
Progress = Callable[[int, str], Any]  # (total, description) -> object with update(n) and close()


# ================================================================================================
# Device and precision


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``auto`` → CUDA (the ``LOCAL_RANK`` GPU under torchrun), else Apple MPS, else CPU.

    Raises ValueError when an explicitly requested device is not available to this PyTorch.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}': no CUDA GPU is available to PyTorch {torch.__version__}; "
                             "use --device cpu or auto")
        return torch.device(name) if ":" in name else torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps":
        if not mps_ok:
            raise ValueError("device 'mps': Apple MPS is not available to this PyTorch; use --device cpu or auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")


def check_precision(precision: str, device: torch.device) -> str:
    """Validate ``fp32|bf16|fp16`` for ``device``; fp16 is GPU-only (CPU half kernels are slow and
    missing for several ops), bf16 needs hardware support on CUDA."""
    name = (precision or "fp32").lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; use fp32, bf16 or fp16")
    if name == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 needs a GPU (cuda or mps); on the CPU use bf16 or fp32")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16 is not supported by {torch.cuda.get_device_name(device)}; "
                         "use fp16 or fp32")
    return name


def precision_context(device: torch.device, precision: str) -> ContextManager:
    """The one place reduced precision is applied: autocast around the network call.

    Weights stay fp32 and autocast runs convolutions/matmuls in bf16/fp16 while keeping
    precision-sensitive ops (exp, log, reductions) in fp32. A faster native bf16 path inside the
    model can replace this function without touching anything else.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# ================================================================================================
# Memory estimate and automatic tiling


def estimate_bytes_per_pixel(config: LLFlowConfig, precision: str = "fp32") -> float:
    """Peak working memory per input pixel of one ``enhance`` call (no gradients), in bytes.

    A model of the live activations: ~40 full-resolution float channels (input, condition,
    hand-crafted maps, colour map, output), ``5·nf + gc`` for the full-resolution encoder features
    and the H/2 dense blocks, and the stacked flow conditions. Calibrated against the peak RSS
    measured on the CPU (tiny 612, LOL_smallNet 808, LOL-pc ~2200 B/px at 1 MP) with a 1.25 safety
    factor; autocast keeps low-precision copies next to the fp32 tensors, hence ×2 (measured 2.0×).
    """
    floats = 40 + 5 * config.nf + config.gc + config.cond_channels / 4 + config.nf * len(config.stack_blocks) / 4
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
    ramp = lambda dist: 0.5 - 0.5 * torch.cos(math.pi * torch.clamp(dist / ramp_len, 0.0, 1.0))  # noqa: E731
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


def latent_shape(height: int, width: int, batch: int = 1) -> Tuple[int, int, int, int]:
    """Shape of the latent for an H×W image: N×192×⌈H/8⌉×⌈W/8⌉."""
    return (batch, 192, -(-height // 8), -(-width // 8))


# ================================================================================================
# Exposure


def exposure_offset(ev: float, height: int, width: int) -> Optional[Tensor]:
    """Latent shift for ``ev`` stops: ``EV · EXPOSURE_STEP · 1`` (all 192 latent channels equally).

    Why this direction: ``z`` is a squeezed colour map, i.e. 3 colour channels × 64 sub-pixel
    positions, so adding the same amount everywhere moves all colours together (no colour shift)
    and needs no knowledge of ``μ`` — it goes through the model's public ``enhance(eps=...)`` and
    works tile by tile. Measured on the SICE val pairs with the trained model
    (benchmarks/exposure_sweep.py): mean output brightness rises monotonically with EV for every
    image, while scaling ``μ`` (``z = μ·2^{k·EV}``) changed brightness weakly and shifted colours.
    ``ev = 0`` returns ``None``: no shift at all, so the result is exactly the official output.
    """
    if ev == 0:
        return None
    return torch.full(latent_shape(height, width), float(ev) * EXPOSURE_STEP, dtype=torch.float32)


# ================================================================================================
# The model wrapper


@dataclass
class Enhancer:
    """An :class:`~llflow.model.LLFlow` network placed on a device with a precision.

    Build with :func:`load_model`. Methods take and return N×3×H×W float tensors in [0, 1] on the
    CPU (inputs may be on any device); see :func:`enhance`/:func:`sample`/:func:`uncertainty` for
    the user-facing API on numpy/PIL/tensors.
    """

    net: LLFlow
    device: torch.device
    precision: str = "fp32"
    source: str = "in-memory model"
    memory_budget: Union[int, str, None] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.precision = check_precision(self.precision, self.device)
        self.net = self.net.to(self.device).eval()

    # -------------------------------------------------------------------------- descriptions
    @property
    def config(self) -> LLFlowConfig:
        return self.net.config

    @property
    def architecture(self) -> str:
        """The preset name the architecture matches, or ``custom``."""
        for name, preset in PRESETS.items():
            if preset.replace(train_gt_ratio=self.config.train_gt_ratio) == self.config:
                return name
        return "custom"

    def bytes_per_pixel(self) -> float:
        return estimate_bytes_per_pixel(self.config, self.precision)

    def max_untiled_pixels(self) -> int:
        """Largest image (in pixels) processed in one piece before automatic tiling starts."""
        return int(memory_budget(self.device, self.memory_budget) / self.bytes_per_pixel())

    def tile_for(self, height: int, width: int, tile: Optional[int], pad: int) -> Optional[int]:
        """The tile size to use: ``tile`` if positive; ``0`` → never tile; ``None`` → automatic."""
        if tile is not None:
            return tile if tile > 0 else None
        budget = memory_budget(self.device, self.memory_budget)
        return auto_tile_size(height, width, self.bytes_per_pixel(), budget, pad)

    # -------------------------------------------------------------------------- core
    def _forward(self, low: Tensor, histeq: Tensor, offset: Optional[Tensor]) -> Tensor:
        """One network call on a 1×3×h×w crop: ``z = μ + offset`` (``None``: ``z = μ`` exactly)."""
        low = low.to(self.device)
        histeq = histeq.to(self.device)
        with precision_context(self.device, self.precision):
            if offset is None:
                out = self.net.enhance(low, temperature=0.0, histeq=histeq)
            else:
                out = self.net.enhance(low, temperature=1.0, eps=offset.to(self.device), histeq=histeq)
        return out.float().cpu()

    def decode(self, low: Tensor, offset: Optional[Tensor] = None, histeq: Optional[Tensor] = None,
               tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD,
               progress: Optional[Progress] = None) -> Tensor:
        """Enhance one 1×3×H×W image with latent ``z = μ + offset`` (``offset`` 1×192×⌈H/8⌉×⌈W/8⌉
        for the whole image, or ``None``), tiled when asked or when it would not fit in memory."""
        low = low.detach().to("cpu", torch.float32)
        h, w = low.shape[-2:]
        if histeq is None:
            histeq = equalize_histogram_tensor(low)  # once, on the whole unpadded image
        size = self.tile_for(h, w, tile, tile_pad)
        if size is None or (size >= h and size >= w):
            return self._forward(low, histeq, offset)
        tiles = plan_tiles(h, w, size, tile_pad)
        out = torch.zeros(1, 3, h, w)
        total = torch.zeros(1, 1, h, w)
        bar = progress(len(tiles), "tiles") if progress is not None else None
        try:
            for t in tiles:
                crop = (Ellipsis, slice(t.ey0, t.ey1), slice(t.ex0, t.ex1))
                off = None
                if offset is not None:  # origins are multiples of 8: an exact slice of the latent grid
                    off = offset[..., t.ey0 // 8: -(-t.ey1 // 8), t.ex0 // 8: -(-t.ex1 // 8)]
                result = self._forward(low[crop], histeq[crop], off)
                weight = _blend_weights(t, h, w, tile_pad)
                out[crop] += result * weight
                total[crop] += weight
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return (out / total).clamp_(0.0, 1.0)

    def enhance_tensor(self, low: Tensor, temperature: float = 0.0, exposure: float = 0.0,
                       generator: Optional[torch.Generator] = None, tile: Optional[int] = None,
                       tile_pad: int = DEFAULT_TILE_PAD, progress: Optional[Progress] = None) -> Tensor:
        """Enhance N×3×H×W float images; each image uses fresh noise from ``generator``."""
        return torch.cat([self._one(img[None], temperature, exposure, generator, tile, tile_pad, progress)
                          for img in low])

    def _one(self, low: Tensor, temperature: float, exposure: float, generator: Optional[torch.Generator],
             tile: Optional[int], tile_pad: int, progress: Optional[Progress],
             histeq: Optional[Tensor] = None) -> Tensor:
        h, w = low.shape[-2:]
        offset = exposure_offset(exposure, h, w)
        if temperature != 0:
            # Noise for the whole image from a CPU generator: identical on every device, tiled or not.
            eps = torch.randn(latent_shape(h, w), generator=generator, dtype=torch.float32)
            offset = temperature * eps if offset is None else offset + temperature * eps
        return self.decode(low, offset, histeq, tile, tile_pad, progress)

    def sample_tensors(self, low: Tensor, n: int, temperature: float = SAMPLE_TEMPERATURE,
                       exposure: float = 0.0, generator: Optional[torch.Generator] = None,
                       tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD,
                       progress: Optional[Progress] = None) -> Iterator[Tensor]:
        """Yield ``n`` samples (1×3×H×W each) of one 1×3×H×W image at ``temperature``."""
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        low = low.detach().to("cpu", torch.float32)
        histeq = equalize_histogram_tensor(low)
        for _ in range(n):
            yield self._one(low, temperature, exposure, generator, tile, tile_pad, progress, histeq)


def uncertainty_from_samples(samples: Sequence[Tensor]) -> Tensor:
    """Per-pixel uncertainty of 1×3×H×W samples: standard deviation over the samples (population,
    ``ddof=0``) of each colour value, averaged over R, G, B → 1×1×H×W, in output intensity units
    (the image's [0, 1] scale)."""
    stack = torch.cat(list(samples)).to(torch.float64)
    return stack.std(dim=0, unbiased=False).mean(dim=0, keepdim=True)[None].to(torch.float32)


# ================================================================================================
# Loading


def _as_path_key(model: Union[str, "os.PathLike[str]", None]) -> Tuple[str, float]:
    """Cache key of a model reference: resolved path plus modification time (reload when changed)."""
    from .model.checkpoint import default_weights_path

    path = default_weights_path() if model is None or str(model) == "default" else Path(model)
    try:
        return str(path.resolve()), path.stat().st_mtime
    except OSError:
        return str(path), 0.0


@functools.lru_cache(maxsize=4)
def _load_cached(key: Tuple[str, float], device: str, precision: str) -> Enhancer:
    net = LLFlow.from_pretrained(key[0])
    return Enhancer(net, torch.device(device), precision, source=key[0])


def load_model(model: ModelLike = "default", device: Union[str, torch.device] = "auto",
               precision: str = "fp32") -> Enhancer:
    """Load a model for inference.

    ``model``: ``"default"``/``None`` (the bundled weights), a path to an official ``.pth`` or an
    llflow ``.safetensors`` (architecture detected from the file), an :class:`~llflow.LLFlow`
    network, or an :class:`Enhancer` (returned as is when device and precision match).
    ``device``: ``auto|cpu|cuda|cuda:N|mps``; ``precision``: ``fp32|bf16|fp16`` (fp16 GPU only).
    Files are loaded once per (file, device, precision) and cached.

    Raises:
        CheckpointError: no default model installed, or an unreadable/incompatible checkpoint.
        ValueError: unavailable device or unsupported precision.
    """
    dev = resolve_device(device)
    prec = check_precision(precision, dev)
    if isinstance(model, Enhancer):
        if model.device == dev and model.precision == prec:
            return model
        return Enhancer(model.net, dev, prec, model.source, model.memory_budget)
    if isinstance(model, LLFlow):
        model.mark_initialized()  # weights came from the caller: no ActNorm data-dependent init
        return Enhancer(model, dev, prec)
    return _load_cached(_as_path_key(model), str(dev), prec)


def _resolve_model(model: ModelLike, device: Union[str, torch.device] = "auto",
                   precision: str = "fp32") -> Enhancer:
    """The API functions' ``model=`` argument: an :class:`Enhancer` is used as it is."""
    if isinstance(model, Enhancer):
        return model
    return load_model(model if model is not None else "default", device, precision)


def _generator(seed: Optional[int], generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(int(seed)) if seed is not None else None


# ================================================================================================
# The Python API


def enhance(image: Any, temperature: float = 0.0, exposure: float = 0.0, model: ModelLike = None,
            tile: Optional[int] = None, *, tile_pad: int = DEFAULT_TILE_PAD, seed: Optional[int] = None,
            generator: Optional[torch.Generator] = None, device: str = "auto", precision: str = "fp32") -> Any:
    """Enhance a low-light image; returns the same kind of image (type, dtype, layout, alpha).

    Args:
        image: numpy (uint8/uint16/float in [0, 1]; H×W×3, H×W×4, H×W), PIL image, torch float
            tensor (3×H×W, N×3×H×W, H×W, 1×H×W, N×1×H×W) or :class:`llflow.io.Image`.
        temperature: 0 (default) is the official deterministic output; ``τ > 0`` draws one sample
            ``z = μ + τ·ε`` (reproducible with ``seed`` or ``generator``).
        exposure: EV stops, e.g. ``+1`` brighter, ``-1`` darker (a latent shift, see
            :func:`exposure_offset`); 0 leaves the output exactly as the official one.
        model: ``None``/``"default"`` (bundled model, loaded once), a checkpoint path, an
            :class:`~llflow.LLFlow` or an :class:`Enhancer` from :func:`load_model`.
        tile: tile size in pixels for bounded memory; ``None`` tiles automatically only when the
            image would not fit in memory, ``0`` never tiles.
        tile_pad: context pixels around each tile (multiple of 8).
        device, precision: used when ``model`` is not already loaded (see :func:`load_model`).
    """
    enhancer = _resolve_model(model, device, precision)
    tensor, restore = to_tensor(image)
    out = enhancer.enhance_tensor(tensor, temperature, exposure, _generator(seed, generator), tile, tile_pad)
    return restore(out)


def sample(image: Any, n: int = 4, temperature: float = SAMPLE_TEMPERATURE, seed: Optional[int] = None, *,
           exposure: float = 0.0, model: ModelLike = None, tile: Optional[int] = None,
           tile_pad: int = DEFAULT_TILE_PAD, generator: Optional[torch.Generator] = None,
           device: str = "auto", precision: str = "fp32") -> List[Any]:
    """``n`` different plausible enhancements of ``image`` (a list of the same kind as ``image``).

    Sample ``i`` decodes ``z = μ + τ·ε_i``; the ``ε_i`` come one after another from ``seed`` (or
    ``generator``), so ``sample(x, 4, seed=0)[:2] == sample(x, 2, seed=0)``. A batch tensor gives
    a list of batch tensors. Other arguments as in :func:`enhance`.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    enhancer = _resolve_model(model, device, precision)
    tensor, restore = to_tensor(image)
    gen = _generator(seed, generator)
    per_image = [list(enhancer.sample_tensors(img[None], n, temperature, exposure, gen, tile, tile_pad))
                 for img in tensor]
    return [restore(torch.cat([samples[i] for samples in per_image])) for i in range(n)]


def uncertainty(image: Any, n: int = UNCERTAINTY_SAMPLES, temperature: float = SAMPLE_TEMPERATURE,
                seed: Optional[int] = None, *, model: ModelLike = None, tile: Optional[int] = None,
                tile_pad: int = DEFAULT_TILE_PAD, generator: Optional[torch.Generator] = None,
                device: str = "auto", precision: str = "fp32") -> Any:
    """Per-pixel uncertainty: the standard deviation over ``n`` samples at ``temperature`` of each
    output colour value, averaged over R, G, B, in output intensity units ([0, 1] scale).

    Returns float32: numpy H×W for numpy/PIL/Image inputs, a tensor N×1×H×W (on the input's
    device) for tensor inputs. Large values mark where the model is unsure (typically dark, noisy
    or saturated regions); values are comparable between images and models.
    """
    if n < 2:
        raise ValueError(f"an uncertainty map needs n >= 2 samples, got {n}")
    enhancer = _resolve_model(model, device, precision)
    tensor, _restore = to_tensor(image)
    gen = _generator(seed, generator)
    maps = torch.cat([uncertainty_from_samples(list(enhancer.sample_tensors(img[None], n, temperature, 0.0,
                                                                             gen, tile, tile_pad)))
                      for img in tensor])
    if isinstance(image, torch.Tensor):
        return maps.to(image.device)
    return maps[0, 0].numpy()
