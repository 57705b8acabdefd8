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
    ``z = μ + τ·ε + a(EV)·d``: ``ε`` is standard-normal noise drawn for the *whole* image from a CPU
    generator (so a seed gives the same result on every device, tiled or not) and the last term is
    the exposure shift: a colour-neutral brightness direction of the model, scaled so that the
    result has ``2^EV`` times the linear luminance of the official output (:func:`exposure_shift`).

Devices and precision
    ``device``: ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda[:N]``, ``mps``; ``precision``:
    ``fp32`` (default), ``bf16`` (CPU and GPU) or ``fp16`` (GPU only). ``engine``: ``fast`` (default;
    the model's inference engine, ``LLFlow.prepare_for_inference``: ~1.4× faster in fp32 and within
    ~1e-6 relative of the reference; reduced precision inside), ``reference`` (``LLFlow.enhance``,
    bit-for-bit the official module structure; autocast for bf16/fp16) or ``onnxruntime`` (the
    fast engine's graph in onnxruntime; fp32 CPU only) — all decided in :meth:`Enhancer._forward_many`.

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
from typing import Any, Callable, ContextManager, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .io import to_tensor
from .model import LLFlow, LLFlowConfig, PRESETS
from .model.llflow import pad_to_multiple
from .preprocess import equalize_histogram_tensor, make_condition

__all__ = [
    "DEFAULT_TILE_PAD", "EXPOSURE_PROXY", "ExposureShift", "SAMPLE_TEMPERATURE", "UNCERTAINTY_SAMPLES", "PRECISIONS",
    "UNCERTAINTY_FULL_SCALE", "EXPOSURE_NOTE_EV",
    "Enhancer", "Tile", "enhance", "sample", "uncertainty", "load_model", "resolve_device",
    "check_precision", "precision_context", "plan_tiles", "estimate_bytes_per_pixel", "memory_budget",
    "auto_tile_size", "exposure_shift", "latent_shape",
]

PRECISIONS = ("fp32", "bf16", "fp16")
ENGINES = ("fast", "reference", "onnxruntime")

#: Temperature used for samples and uncertainty maps when none is given (the paper's sampling τ).
SAMPLE_TEMPERATURE = 0.8
#: Number of samples an uncertainty map averages over by default.
UNCERTAINTY_SAMPLES = 8
#: Standard deviation stored as white in 16-bit uncertainty PNGs (``llflow enhance``, the demo): value
#: v (0..65535) means std = v / 65535 × 0.25 (output intensity on the [0, 1] scale). Fixed, so maps
#: can be compared.
UNCERTAINTY_FULL_SCALE = 0.25
#: An exposure request missed by more than this many EV is reported to the user (the model's
#: brightness saturates there).
EXPOSURE_NOTE_EV = 0.25
#: Context pixels around each tile (rounded up to a multiple of 8). Chosen from measurements
#: with the real model (see experiments/tiling_psnr.py): 32 keeps tiled vs untiled above 40 dB.
DEFAULT_TILE_PAD = 32
#: Smallest tile the automatic tiler uses (smaller tiles spend most of their time on context).
MIN_AUTO_TILE = 64
#: Longer side (pixels) of the downscaled copy on which the exposure shift is found.
EXPOSURE_PROXY = 192
#: Exposure search grid: first amplitude, growth per step, number of steps, and the smallest gain
#: (stops per step) that still counts as "rising" (below it the output is saturated).
EXPOSURE_FIRST_STEP, EXPOSURE_GROWTH, EXPOSURE_MAX_STEPS, EXPOSURE_MIN_GAIN = 0.05, math.sqrt(2), 16, 0.02
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
    """Autocast around the plain network call: weights stay fp32 and convolutions/matmuls run in
    bf16/fp16 while precision-sensitive ops (exp, log, reductions) stay fp32. Used only when the
    model has no fast inference engine (see :meth:`Enhancer._forward_many`)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# ================================================================================================
# Memory estimate and automatic tiling


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


def latent_shape(height: int, width: int, batch: int = 1) -> Tuple[int, int, int, int]:
    """Shape of the latent for an H×W image: N×192×⌈H/8⌉×⌈W/8⌉."""
    return (batch, 192, -(-height // 8), -(-width // 8))


# ================================================================================================
# Exposure


_LUMA_REC709 = (0.2126, 0.7152, 0.0722)


@dataclass(frozen=True)
class ExposureShift:
    """A latent shift ``amplitude · direction`` (``direction`` 1×192×1×1: the same vector at every
    latent position) and the exposure change in stops it produced on the proxy image."""

    direction: Tensor
    amplitude: float
    achieved_ev: float

    def offset(self, height: int, width: int) -> Tensor:
        """The shift as a full latent for an H×W image (N×192×⌈H/8⌉×⌈W/8⌉)."""
        return (self.amplitude * self.direction).expand(latent_shape(height, width)).contiguous()


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
                   steps: int = 10) -> Optional[ExposureShift]:
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
        # Decoding many latents: with the model's fast engine the encoder runs once for all of them.
        prepared = net.prepare_condition(lq) if hasattr(net, "prepare_condition") else None
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
        z = mean + amplitude * direction
        with torch.no_grad():
            result = (net.decode(prepared, z=z) if prepared is not None else net.reverse(lq, z=z)[0])[..., :h, :w]
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
    #: ``"fast"``: the model's inference engine (folded layers, fused kernels; fp32 within ~1e-6
    #: relative of the reference). ``"reference"``: ``LLFlow.enhance`` itself (bit-for-bit the
    #: official module structure; autocast for bf16/fp16). ``"onnxruntime"``: the fast engine's
    #: graph exported to ONNX (once per weights, cached) and run by onnxruntime — fp32 on the CPU
    #: only, 5–9 % faster there; several latents (samples, uncertainty) cost one whole pass each,
    #: where ``"fast"`` encodes once (:mod:`llflow.ort_engine`; needs ``llflow[onnx]``).
    engine: str = "fast"
    #: The exposure shift found by the last call with ``exposure != 0`` (``achieved_ev`` tells how
    #: much of the requested change was reachable); ``None`` otherwise.
    last_exposure: Optional["ExposureShift"] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.precision = check_precision(self.precision, self.device)
        check_engine(self.engine, self.device, self.precision)
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

    # -------------------------------------------------------------------------- core
    def prepare_engine(self) -> None:
        """Build the inference engine now rather than on the first image (for ``onnxruntime``: the
        export, or its failure, happens here)."""
        if self.engine != "reference":
            self._fast_engine()

    def _fast_engine(self) -> Any:
        """The model's fast inference engine (``LLFlow.prepare_for_inference``, or the onnxruntime
        one), built once; ``None`` for networks without one. A snapshot: weights changed later are
        not seen."""
        if "_fast" not in self.__dict__:
            if self.engine == "onnxruntime":
                from .ort_engine import OrtEngine

                self.__dict__["_fast"] = OrtEngine(self.net)
            else:
                prepare = getattr(self.net, "prepare_for_inference", None)
                self.__dict__["_fast"] = prepare(precision=self.precision, device=self.device) if prepare else None
        return self.__dict__["_fast"]

    def _forward_many(self, low: Tensor, histeq: Tensor, offsets: Sequence[Optional[Tensor]]) -> List[Tensor]:
        """Network calls on one 1×3×h×w crop, one output per latent ``z = μ + offset`` (``None``:
        ``z = μ`` exactly). The one place where device and precision are applied:

        * ``engine="fast"`` (default): the model's fast engine when it has one (reduced precision
          inside; for several latents the encoder runs once: ``prepare_condition`` + ``decode``);
        * ``engine="reference"``, or a network without an engine: ``LLFlow.enhance`` per latent
          under :func:`precision_context` (autocast for bf16/fp16);
        * ``engine="onnxruntime"``: the exported graph, one whole pass per latent (fp32, CPU).
        """
        low, histeq = low.to(self.device), histeq.to(self.device)
        fast = self._fast_engine() if self.engine != "reference" else None
        if fast is None:
            with precision_context(self.device, self.precision):
                return [self.net.enhance(low, temperature=0.0 if off is None else 1.0,
                                         eps=None if off is None else off.to(self.device), histeq=histeq).float().cpu()
                        for off in offsets]
        if len(offsets) == 1 or not hasattr(fast, "prepare_condition"):  # onnxruntime: a whole pass per latent
            return [fast.enhance(low, temperature=0.0 if off is None else 1.0,
                                 eps=None if off is None else off.to(self.device), histeq=histeq).float().cpu()
                    for off in offsets]
        h, w = low.shape[-2:]
        m = self.config.multiple
        prepared = fast.prepare_condition(make_condition(pad_to_multiple(low, m), pad_to_multiple(histeq, m)))
        return [fast.decode(prepared, temperature=0.0 if off is None else 1.0,
                            eps=None if off is None else off.to(self.device))[..., :h, :w].clamp(0, 1).float().cpu()
                for off in offsets]

    def decode_many(self, low: Tensor, offsets: Sequence[Optional[Tensor]], histeq: Optional[Tensor] = None,
                    tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD,
                    progress: Optional[Progress] = None) -> List[Tensor]:
        """Enhance one 1×3×H×W image once per latent ``z = μ + offset`` (each ``offset``
        1×192×⌈H/8⌉×⌈W/8⌉ for the whole image, or ``None``), tiled when asked or when it would not
        fit in memory. Tiles are the outer loop, so the encoder runs once per tile for all latents."""
        low = low.detach().to("cpu", torch.float32)
        h, w = low.shape[-2:]
        if histeq is None:
            histeq = equalize_histogram_tensor(low)  # once, on the whole unpadded image
        size = self.tile_for(h, w, tile, tile_pad, len(offsets))
        if size is None or (size >= h and size >= w):
            return self._forward_many(low, histeq, offsets)
        tiles = plan_tiles(h, w, size, tile_pad)
        outs = [torch.zeros(1, 3, h, w) for _ in offsets]
        total = torch.zeros(1, 1, h, w)
        bar = progress(len(tiles), "tiles") if progress is not None else None
        try:
            for t in tiles:
                crop = (Ellipsis, slice(t.ey0, t.ey1), slice(t.ex0, t.ex1))
                # Origins are multiples of 8: each tile's latent is an exact slice of the image's.
                lat = (Ellipsis, slice(t.ey0 // 8, -(-t.ey1 // 8)), slice(t.ex0 // 8, -(-t.ex1 // 8)))
                results = self._forward_many(low[crop], histeq[crop],
                                             [None if off is None else off[lat] for off in offsets])
                weight = _blend_weights(t, h, w, tile_pad)
                for out, result in zip(outs, results):
                    out[crop] += result * weight
                total[crop] += weight
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return [(out / total).clamp_(0.0, 1.0) for out in outs]

    def decode(self, low: Tensor, offset: Optional[Tensor] = None, histeq: Optional[Tensor] = None,
               tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD,
               progress: Optional[Progress] = None) -> Tensor:
        """:meth:`decode_many` for one latent."""
        return self.decode_many(low, [offset], histeq, tile, tile_pad, progress)[0]

    def latent_offsets(self, low: Tensor, n: int, temperature: float, exposure: float,
                       generator: Optional[torch.Generator]) -> List[Optional[Tensor]]:
        """``n`` latent offsets ``τ·ε_i + shift(EV)`` for the 1×3×H×W image ``low``; ``ε_i`` drawn one
        after another from ``generator`` on the CPU (identical on every device, tiled or not)."""
        h, w = low.shape[-2:]
        found = None
        if exposure != 0:
            last = self.last_exposure  # the same image and EV again (e.g. samples after the output): reuse
            key = (tuple(low.shape), float(exposure), float(low.double().sum()),  # content, not identity
                   float(low[..., ::7, ::5].double().sum()))
            found = last if last is not None and self.__dict__.get("_exposure_key") == key else None
            if found is None:
                found = exposure_shift(self.net, low, exposure)
                self.__dict__["_exposure_key"] = key
        self.last_exposure = found
        shift = found.offset(h, w) if found is not None else None
        offsets: List[Optional[Tensor]] = []
        for _ in range(n):
            off = shift
            if temperature != 0:
                eps = torch.randn(latent_shape(h, w), generator=generator, dtype=torch.float32)
                off = temperature * eps if shift is None else shift + temperature * eps
            offsets.append(off)
        return offsets

    def enhance_tensor(self, low: Tensor, temperature: float = 0.0, exposure: float = 0.0,
                       generator: Optional[torch.Generator] = None, tile: Optional[int] = None,
                       tile_pad: int = DEFAULT_TILE_PAD, progress: Optional[Progress] = None) -> Tensor:
        """Enhance N×3×H×W float images; each image uses fresh noise from ``generator``."""
        return torch.cat([self.decode(img[None], self.latent_offsets(img[None], 1, temperature, exposure, generator)[0],
                                      None, tile, tile_pad, progress) for img in low])

    def sample_tensors(self, low: Tensor, n: int, temperature: float = SAMPLE_TEMPERATURE,
                       exposure: float = 0.0, generator: Optional[torch.Generator] = None,
                       tile: Optional[int] = None, tile_pad: int = DEFAULT_TILE_PAD,
                       progress: Optional[Progress] = None) -> List[Tensor]:
        """``n`` samples (1×3×H×W each) of one 1×3×H×W image at ``temperature``; the encoder runs
        once (per tile) for all of them when the model has a fast engine."""
        if n < 1:
            raise ValueError(f"number of samples must be >= 1, got {n}")
        return self.decode_many(low, self.latent_offsets(low, n, temperature, exposure, generator),
                                None, tile, tile_pad, progress)


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


def check_engine(engine: str, device: torch.device, precision: str) -> None:
    """``ValueError`` with what to change when ``engine`` cannot run ``precision`` on ``device``."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine == "onnxruntime" and (device.type != "cpu" or precision != "fp32"):
        raise ValueError(f"engine onnxruntime runs fp32 on the CPU, not {precision} on {device}: "
                         "use device cpu and precision fp32, or engine fast")


@functools.lru_cache(maxsize=4)
def _load_cached(key: Tuple[str, float], device: str, precision: str, engine: str) -> Enhancer:
    net = LLFlow.from_pretrained(key[0])
    return Enhancer(net, torch.device(device), precision, source=key[0], engine=engine)


def load_model(model: ModelLike = "default", device: Union[str, torch.device] = "auto",
               precision: str = "fp32", engine: str = "fast") -> Enhancer:
    """Load a model for inference.

    ``model``: ``"default"``/``None`` (the bundled weights), a path to an official ``.pth`` or an
    llflow ``.safetensors`` (architecture detected from the file), an :class:`~llflow.LLFlow`
    network, or an :class:`Enhancer` (returned as is when device and precision match).
    ``device``: ``auto|cpu|cuda|cuda:N|mps``; ``precision``: ``fp32|bf16|fp16`` (fp16 GPU only);
    ``engine``: ``fast`` (default), ``reference`` or ``onnxruntime`` (see :attr:`Enhancer.engine`).
    Files are loaded once per (file, device, precision) and cached.

    Raises:
        CheckpointError: no default model installed, or an unreadable/incompatible checkpoint.
        ValueError: unavailable device or unsupported precision.
    """
    dev = resolve_device(device)
    prec = check_precision(precision, dev)
    check_engine(engine, dev, prec)
    if isinstance(model, Enhancer):
        if model.device == dev and model.precision == prec and model.engine == engine:
            return model
        return Enhancer(model.net, dev, prec, model.source, model.memory_budget, engine=engine)
    if isinstance(model, LLFlow):
        model.mark_initialized()  # weights came from the caller: no ActNorm data-dependent init
        return Enhancer(model, dev, prec, engine=engine)
    return _load_cached(_as_path_key(model), str(dev), prec, engine)


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
        exposure: EV stops, e.g. ``+1`` twice and ``-1`` half the (linear) light of the official
            output, by shifting the latent along the model's own colour-neutral brightness direction
            (see :func:`exposure_shift`); 0 leaves the output exactly the official one.
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
    per_image = [enhancer.sample_tensors(img[None], n, temperature, exposure, gen, tile, tile_pad)
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
    maps = torch.cat([uncertainty_from_samples(enhancer.sample_tensors(img[None], n, temperature, 0.0,
                                                                       gen, tile, tile_pad))
                      for img in tensor])
    if isinstance(image, torch.Tensor):
        return maps.to(image.device)
    return maps[0, 0].numpy()
