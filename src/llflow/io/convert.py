"""Conversions between the user's image types (numpy, PIL, torch, :class:`~llflow.io.Image`) and
the model's N×3×H×W float tensors, with a function that restores the original kind (:func:`to_tensor`)."""
from __future__ import annotations

import sys
from typing import Any, Callable, Tuple

import numpy as np
import torch

from .files import _FLOAT_RANGE_TOLERANCE, _LUMA_BT601, Image, _luma

__all__ = ["Restore", "to_tensor"]



Restore = Callable[[torch.Tensor], Any]


def to_tensor(image: Any) -> Tuple[torch.Tensor, Restore]:
    """Convert a user image to an N×3×H×W float32 tensor in [0, 1] plus a function undoing it.

    Accepted inputs and what ``restore(out)`` returns for an N×3×H×W output tensor:

    * numpy ``uint8``/``uint16``/float (float assumed in [0, 1]), H×W×3, H×W×4 (RGBA), H×W or
      H×W×1 (grey) → numpy of the same dtype and layout (integers rounded, floats clipped to
      [0, 1]); grey via BT.601 luma; RGBA alpha passed through unchanged (N = 1).
    * ``PIL.Image.Image`` (when Pillow is installed) in mode RGB, RGBA, L, LA, I;16, I (values
      0..65535) or F → a PIL image of the same mode. Other modes (P, 1, CMYK, YCbCr, ...) are
      converted to RGB (or RGBA when they carry transparency) and come back in that mode. EXIF
      orientation of PIL images is not applied (use ``PIL.ImageOps.exif_transpose`` first).
    * torch float tensor, 3×H×W, N×3×H×W, H×W, 1×H×W or N×1×H×W, in [0, 1] → a tensor of the same
      dtype, device and layout, clipped to [0, 1]; one-channel layouts via BT.601 luma.
    * :class:`Image` (from :func:`read_image`) → an :class:`Image` with ``rgb`` of the same dtype and
      the original alpha/was_gray/bit_depth/path.

    The returned tensor is on the CPU for numpy/PIL/Image inputs and on the input's device for
    tensors.

    Raises:
        TypeError: unsupported type or dtype.
        ValueError: unsupported shape, NaN/Inf, or float values clearly outside [0, 1].
    """
    if isinstance(image, torch.Tensor):
        return _tensor_to_tensor(image)
    if isinstance(image, Image):
        return _image_to_tensor(image)
    if isinstance(image, np.ndarray):
        return _numpy_to_tensor(image)
    pil_module = sys.modules.get("PIL.Image")  # a PIL image can only exist if PIL is imported
    if pil_module is not None and isinstance(image, pil_module.Image):
        return _pil_to_tensor(image)
    raise TypeError(f"unsupported image type {type(image).__name__}; pass a numpy array, a torch "
                    "tensor or a PIL image")


def _check_float_range(minimum: float, maximum: float) -> None:
    """Reject NaN/Inf and float data that is not in [0, 1] (e.g. a 0..255 image stored as float)."""
    if not (np.isfinite(minimum) and np.isfinite(maximum)):
        raise ValueError("image contains NaN or infinite values")
    if minimum < -_FLOAT_RANGE_TOLERANCE or maximum > 1 + _FLOAT_RANGE_TOLERANCE:
        raise ValueError(f"float images must be in [0, 1], got values in [{minimum:.4g}, {maximum:.4g}]"
                         "; divide 8-bit data by 255 (16-bit by 65535) or pass an integer array")


def _check_output(out: torch.Tensor, batch: int, size: Tuple[int, int]) -> None:
    """Validate the model output handed to a ``restore`` function."""
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[1] != 3:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"restore expects an N×3×H×W tensor, got {shape}")
    if out.shape[0] != batch or tuple(out.shape[2:]) != tuple(size):
        raise ValueError(f"restore expects a {batch}×3×{size[0]}×{size[1]} tensor (the input's size), "
                         f"got {tuple(out.shape)}")


def _output_hwc(out: torch.Tensor) -> np.ndarray:
    """First image of an N×3×H×W tensor as H×W×3 float64 numpy clipped to [0, 1]."""
    return out[0].detach().to("cpu", torch.float64).clamp(0, 1).permute(1, 2, 0).numpy()


def _from_unit(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert float [0, 1] values to ``dtype`` (integers rounded)."""
    if dtype == np.uint8:
        return np.rint(values * 255.0).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(values * 65535.0).astype(np.uint16)
    return values.astype(dtype)


def _numpy_to_tensor(array: np.ndarray) -> Tuple[torch.Tensor, Restore]:
    """numpy H×W×{1,3,4} / H×W, uint8/uint16/float → tensor and restore."""
    if not array.dtype.isnative:  # e.g. big-endian '>u2' from a raw file: same values, native order
        array = array.astype(array.dtype.newbyteorder("="))
    dtype = array.dtype
    if dtype == np.uint8:
        scale = 255.0
    elif dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(dtype, np.floating):
        scale = 1.0
    else:
        raise TypeError(f"unsupported numpy dtype {dtype}; use uint8, uint16 or float in [0, 1]")
    layout = array.shape
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        grey, alpha, colour = True, None, array.reshape(layout[0], layout[1], 1)
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        grey, colour = False, array[..., :3]
        alpha = array[..., 3].copy() if array.shape[2] == 4 else None
    else:
        raise ValueError(f"unsupported image shape {layout}; expected H×W×3, H×W×4, H×W×1 or H×W")
    if layout[0] == 0 or layout[1] == 0:
        raise ValueError(f"image is empty (shape {layout})")
    if scale == 1.0:
        _check_float_range(float(np.min(colour)), float(np.max(colour)))
    values = torch.from_numpy(np.ascontiguousarray(colour, dtype=np.float32) / np.float32(scale))
    tensor = values.clamp_(0, 1).permute(2, 0, 1).unsqueeze(0).expand(1, 3, -1, -1).contiguous()
    size = (layout[0], layout[1])

    def restore(out: torch.Tensor) -> np.ndarray:
        _check_output(out, 1, size)
        hwc = _output_hwc(out)
        if grey:
            return _from_unit(np.clip(_luma(hwc), 0, 1), dtype).reshape(layout)
        result = _from_unit(hwc, dtype)
        if alpha is not None:
            result = np.concatenate([result, alpha[..., None]], axis=2)
        return result

    return tensor, restore


def _image_to_tensor(image: Image) -> Tuple[torch.Tensor, Restore]:
    """:class:`Image` → tensor; restore gives an :class:`Image` with the same metadata."""
    tensor, restore_rgb = _numpy_to_tensor(image.rgb)

    def restore(out: torch.Tensor) -> Image:
        return Image(rgb=restore_rgb(out), alpha=image.alpha, was_gray=image.was_gray,
                     bit_depth=image.bit_depth, path=image.path)

    return tensor, restore


def _pil_to_tensor(picture: Any) -> Tuple[torch.Tensor, Restore]:
    """PIL image → tensor; restore gives a PIL image of the same (or documented fallback) mode."""
    pil_image = sys.modules["PIL.Image"]
    mode = picture.mode
    if mode.startswith("I;16"):
        array = np.asarray(picture).astype(np.uint16)  # also normalises big-endian I;16B
    elif mode == "I":
        array = np.asarray(picture)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError("PIL mode 'I' images must hold values in 0..65535 (16-bit data)")
        array = array.astype(np.uint16)
    elif mode in ("RGB", "RGBA", "L", "LA", "F"):
        array = np.asarray(picture)
    else:
        has_alpha = "A" in mode or "a" in mode or "transparency" in picture.info
        mode = "RGBA" if has_alpha else "RGB"
        array = np.asarray(picture.convert(mode))
    alpha = None
    if mode == "LA":
        array, alpha = array[..., 0], array[..., 1].copy()
    tensor, restore_array = _numpy_to_tensor(array)

    def restore(out: torch.Tensor) -> Any:
        result = restore_array(out)
        if mode == "LA":
            result = np.stack([result, alpha], axis=2)
        elif mode == "I":
            result = result.astype(np.int32)
        elif mode.startswith("I;16"):
            result = result.astype(np.uint16)
        return pil_image.fromarray(result)

    return tensor, restore


def _tensor_to_tensor(image: torch.Tensor) -> Tuple[torch.Tensor, Restore]:
    """torch float 3×H×W / N×3×H×W / H×W / 1×H×W / N×1×H×W → N×3×H×W float32 and restore."""
    if not image.is_floating_point():
        raise TypeError(f"unsupported tensor dtype {image.dtype}; pass a float tensor in [0, 1] "
                        "(e.g. uint8 data divided by 255)")
    layout = tuple(image.shape)
    if image.ndim == 2:
        batch4 = image[None, None]
    elif image.ndim == 3 and layout[0] in (1, 3):
        batch4 = image[None]
    elif image.ndim == 4 and layout[1] in (1, 3):
        batch4 = image
    else:
        raise ValueError(f"unsupported tensor shape {layout}; expected 3×H×W, N×3×H×W, H×W, 1×H×W "
                         "or N×1×H×W")
    if batch4.numel() == 0:
        raise ValueError(f"image is empty (shape {layout})")
    grey = batch4.shape[1] == 1
    _check_float_range(float(batch4.amin()), float(batch4.amax()))
    tensor = batch4.to(torch.float32).clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
    batch, size = batch4.shape[0], (batch4.shape[2], batch4.shape[3])
    dtype, device = image.dtype, image.device

    def restore(out: torch.Tensor) -> torch.Tensor:
        _check_output(out, batch, size)
        result = out.clamp(0, 1)
        if grey:
            weights = torch.tensor(_LUMA_BT601, dtype=result.dtype, device=result.device)
            result = (result * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True).clamp(0, 1)
        return result.to(device=device, dtype=dtype).reshape(layout)

    return tensor, restore
