"""The Python API (re-exported as ``llflow.enhance`` etc.)::

    import llflow
    out = llflow.enhance(image)                          # the official deterministic result (τ = 0)
    out = llflow.enhance(image, exposure=+1)             # one stop brighter, from the latent
    outs = llflow.sample(image, n=4, temperature=0.8, seed=0)   # 4 plausible enhancements
    std = llflow.uncertainty(image, n=8, temperature=0.8, seed=0)  # where the model is unsure
    model = llflow.load_model("default" | "path.pth|.safetensors", device="auto", precision="auto")

``image`` may be numpy (uint8, uint16 or float in [0, 1]; H×W×3, H×W×4 with alpha, H×W grey), a
PIL image or a torch float tensor (3×H×W, N×3×H×W, grey layouts); results come back as the same kind,
dtype and layout (see :func:`llflow.io.to_tensor`). 16-bit data is converted to float without any
8-bit step; only the histogram-equalised half of the network's condition is 8-bit, as in the
official model. A result whose raw output left the valid range on more than 0.1 % of its pixels
is clamped and reported with an :class:`~llflow.inference.OutOfRangeWarning`.

Devices and precision: ``device`` ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda[:N]``,
``mps``; ``precision`` ``auto`` (default: bf16 where it is native, fp16 on other GPUs, fp32
otherwise; :mod:`llflow.runtime`), ``fp32``, ``bf16`` or ``fp16`` (GPU only); ``engine`` ``fast``
(default), ``reference`` or ``onnxruntime`` (:mod:`llflow.engines`).
"""
from __future__ import annotations

import collections
import os
import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import torch

from .. import runtime
from ..engines import check_engine
from ..io import to_tensor
from ..model import LLFlow
from .enhancer import (SAMPLE_TEMPERATURE, UNCERTAINTY_SAMPLES, Enhancement, Enhancer, OutOfRangeWarning,
                       choose_precision, uncertainty_from_samples)
from .tiling import DEFAULT_TILE_PAD

ModelLike = Union[None, str, "os.PathLike[str]", LLFlow, Enhancer]


def _as_path_key(model: Union[str, "os.PathLike[str]", None]) -> Tuple[str, float]:
    """Cache key of a model reference: resolved path plus modification time (reload when changed)."""
    from ..model.checkpoint import default_weights_path

    path = default_weights_path() if model is None or str(model) == "default" else Path(model)
    try:
        return str(path.resolve()), path.stat().st_mtime
    except OSError:
        return str(path), 0.0


_LOADED: "collections.OrderedDict[tuple, Enhancer]" = collections.OrderedDict()
_LOADED_MAX = 4


def _load_cached(key: Tuple[str, float], device: str, choice: runtime.PrecisionChoice, engine: str) -> Enhancer:
    """One enhancer per (file, modification time, device, precision name, engine); the last four kept."""
    cache_key = (key, device, choice.name, engine)
    if cache_key not in _LOADED:
        net = LLFlow.from_pretrained(key[0])
        _LOADED[cache_key] = Enhancer(net, torch.device(device), choice, source=key[0], engine=engine)
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    _LOADED.move_to_end(cache_key)
    return _LOADED[cache_key]


def load_model(model: ModelLike = "default", device: Union[str, torch.device] = "auto",
               precision: str = "auto", engine: str = "fast") -> Enhancer:
    """Load a model for inference.

    ``model``: ``"default"``/``None`` (the bundled weights), a path to an official ``.pth`` or an
    llflow ``.safetensors`` (architecture detected from the file), an :class:`~llflow.LLFlow`
    network, or an :class:`Enhancer` (returned as is when device, precision and engine match).
    ``device``: ``auto|cpu|cuda|cuda:N|mps``; ``precision``: ``auto|fp32|bf16|fp16`` (``auto``:
    bf16 only where it is native, see :mod:`llflow.runtime`; fp16 GPU only); ``engine``: ``fast``
    (default), ``reference`` or ``onnxruntime`` (see :attr:`Enhancer.engine`). Files are loaded
    once per (file, device, precision, engine) and cached.

    Raises:
        CheckpointError: no default model installed, or an unreadable/incompatible checkpoint.
        ValueError: unavailable device or unsupported precision.
    """
    dev = runtime.resolve_device(device)
    choice = choose_precision(precision, dev, engine)
    check_engine(engine, dev, choice.name)
    if isinstance(model, Enhancer):
        if model.device == dev and model.precision == choice.name and model.engine == engine:
            return model
        return Enhancer(model.net, dev, choice, model.source, model.memory_budget, engine=engine)
    if isinstance(model, LLFlow):
        model.mark_initialized()  # weights came from the caller: no ActNorm data-dependent init
        return Enhancer(model, dev, choice, engine=engine)
    return _load_cached(_as_path_key(model), str(dev), choice, engine)


def _resolve_model(model: ModelLike, device: Union[str, torch.device] = "auto",
                   precision: str = "auto") -> Enhancer:
    """The API functions' ``model=`` argument: an :class:`Enhancer` is used as it is."""
    if isinstance(model, Enhancer):
        return model
    return load_model(model if model is not None else "default", device, precision)


def _generator(seed: Optional[int], generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
    if generator is not None:
        return generator
    return torch.Generator().manual_seed(int(seed)) if seed is not None else None


def _describe_input(image: Any, index: int, count: int) -> str:
    """How a warning names the caller's input: its kind, type and size (and which of a batch)."""
    if isinstance(image, torch.Tensor):
        name = f"tensor {tuple(image.shape)} {str(image.dtype).replace('torch.', '')}"
    elif hasattr(image, "shape") and hasattr(image, "dtype"):
        name = f"array {tuple(image.shape)} {image.dtype}"
    elif hasattr(image, "size") and hasattr(image, "mode"):
        name = f"PIL image {image.size[0]}×{image.size[1]} {image.mode}"
    else:
        name = type(image).__name__
    return f"{name}, image {index + 1} of {count}" if count > 1 else name


def _report(function: str, image: Any, index: int, count: int, result: Enhancement) -> None:
    note = result.out_of_range_note
    if note is not None:
        warnings.warn(f"llflow.{function}: input {_describe_input(image, index, count)}: {note}",
                      OutOfRangeWarning, stacklevel=4)


def _run_all(function: str, image: Any, enhancer: Enhancer, n: int, temperature: float, exposure: float,
             generator: Optional[torch.Generator], tile: Optional[int], tile_pad: int) -> List[Enhancement]:
    tensor, _restore = to_tensor(image)
    results = [enhancer.run(img[None], n, temperature, exposure, generator, tile, tile_pad) for img in tensor]
    for i, result in enumerate(results):
        _report(function, image, i, len(results), result)
    return results


# ================================================================================================
# The three calls


def enhance(image: Any, temperature: float = 0.0, exposure: float = 0.0, model: ModelLike = None,
            tile: Optional[int] = None, *, tile_pad: int = DEFAULT_TILE_PAD, seed: Optional[int] = None,
            generator: Optional[torch.Generator] = None, device: str = "auto", precision: str = "auto") -> Any:
    """Enhance a low-light image; returns the same kind of image (type, dtype, layout, alpha).

    Args:
        image: numpy (uint8/uint16/float in [0, 1]; H×W×3, H×W×4, H×W), PIL image, torch float
            tensor (3×H×W, N×3×H×W, H×W, 1×H×W, N×1×H×W) or :class:`llflow.io.Image`.
        temperature: 0 (default) is the official deterministic output; ``τ > 0`` draws one sample
            ``z = μ + τ·ε`` (reproducible with ``seed`` or ``generator``).
        exposure: EV stops, e.g. ``+1`` twice and ``-1`` half the (linear) light of the official
            output, by shifting the latent along the model's own colour-neutral brightness direction
            (see :func:`~llflow.inference.exposure_shift`); 0 leaves the output exactly the official one.
        model: ``None``/``"default"`` (bundled model, loaded once), a checkpoint path, an
            :class:`~llflow.LLFlow` or an :class:`Enhancer` from :func:`load_model`.
        tile: tile size in pixels for bounded memory; ``None`` tiles automatically only when the
            image would not fit in memory, ``0`` never tiles.
        tile_pad: context pixels around each tile (multiple of 8).
        device, precision: used when ``model`` is not already loaded (see :func:`load_model`).

    Warns:
        OutOfRangeWarning: the raw output left the valid range on more than 0.1 % of the pixels.
    """
    enhancer = _resolve_model(model, device, precision)
    _tensor, restore = to_tensor(image)
    results = _run_all("enhance", image, enhancer, 1, temperature, exposure, _generator(seed, generator),
                       tile, tile_pad)
    return restore(torch.cat([r.image for r in results]))


def sample(image: Any, n: int = 4, temperature: float = SAMPLE_TEMPERATURE, seed: Optional[int] = None, *,
           exposure: float = 0.0, model: ModelLike = None, tile: Optional[int] = None,
           tile_pad: int = DEFAULT_TILE_PAD, generator: Optional[torch.Generator] = None,
           device: str = "auto", precision: str = "auto") -> List[Any]:
    """``n`` different plausible enhancements of ``image`` (a list of the same kind as ``image``).

    Sample ``i`` decodes ``z = μ + τ·ε_i``; the ``ε_i`` come one after another from ``seed`` (or
    ``generator``), so ``sample(x, 4, seed=0)[:2] == sample(x, 2, seed=0)``. A batch tensor gives
    a list of batch tensors. Other arguments as in :func:`enhance`.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    enhancer = _resolve_model(model, device, precision)
    _tensor, restore = to_tensor(image)
    results = _run_all("sample", image, enhancer, n, temperature, exposure, _generator(seed, generator),
                       tile, tile_pad)
    return [restore(torch.cat([r.images[i] for r in results])) for i in range(n)]


def uncertainty(image: Any, n: int = UNCERTAINTY_SAMPLES, temperature: float = SAMPLE_TEMPERATURE,
                seed: Optional[int] = None, *, model: ModelLike = None, tile: Optional[int] = None,
                tile_pad: int = DEFAULT_TILE_PAD, generator: Optional[torch.Generator] = None,
                device: str = "auto", precision: str = "auto") -> Any:
    """Per-pixel uncertainty: the standard deviation over ``n`` samples at ``temperature`` of each
    output colour value, averaged over R, G, B, in output intensity units ([0, 1] scale).

    Returns float32: numpy H×W for numpy/PIL/Image inputs, a tensor N×1×H×W (on the input's
    device) for tensor inputs. Large values mark where the model is unsure (typically dark, noisy
    or saturated regions); values are comparable between images and models.
    """
    if n < 2:
        raise ValueError(f"an uncertainty map needs n >= 2 samples, got {n}")
    enhancer = _resolve_model(model, device, precision)
    results = _run_all("uncertainty", image, enhancer, n, temperature, 0.0, _generator(seed, generator),
                       tile, tile_pad)
    maps = torch.cat([uncertainty_from_samples(r.images) for r in results])
    if isinstance(image, torch.Tensor):
        return maps.to(image.device)
    return maps[0, 0].numpy()
