"""Compute kernels of the fast engine (:mod:`llflow.model.fast`): a convolution with folded
parameters and a fused epilogue (oneDNN ``_convolution_pointwise`` on the CPU, ``F.conv2d`` plus
element-wise ops elsewhere), channels-last space-to-depth, and the coupling's division and sigmoid."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

CHANNELS_LAST = torch.channels_last

__all__ = ["CHANNELS_LAST", "FusedConv", "mkldnn_fusion_available", "squeeze_cl", "unsqueeze_cl"]


def mkldnn_fusion_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused convolution op can be used for ``dtype`` on ``device``."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return False
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return False
    if dtype == torch.bfloat16:
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # pragma: no cover - very old builds
            return False
    return True


def _to_layout(x: Tensor, dtype: torch.dtype, channels_last: bool) -> Tensor:
    fmt = CHANNELS_LAST if channels_last else torch.contiguous_format
    return x.to(dtype=dtype).contiguous(memory_format=fmt)


def squeeze_cl(x: Tensor, factor: int) -> Tensor:
    """:func:`~llflow.model.flow.squeeze2d` (channel ``c·f² + fy·f + fx``) producing a
    channels-last tensor with one copy."""
    n, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1).reshape(n, h // factor, factor, w // factor, factor, c)
    out = nhwc.permute(0, 1, 3, 5, 2, 4).reshape(n, h // factor, w // factor, c * factor * factor)
    return out.permute(0, 3, 1, 2)


def unsqueeze_cl(x: Tensor, factor: int) -> Tensor:
    """Exact inverse of :func:`squeeze_cl` (any input layout, channels-last output)."""
    n, c, h, w = x.shape
    f2 = factor * factor
    nhwc = x.permute(0, 2, 3, 1).reshape(n, h, w, c // f2, factor, factor)
    out = nhwc.permute(0, 1, 4, 2, 5, 3).reshape(n, h * factor, w * factor, c // f2)
    return out.permute(0, 3, 1, 2)


class FusedConv:
    """A 2-D convolution (stride 1, "same" padding) with weights folded in float64 and cast once.

    ``conv(x, act=..., add=...)`` computes ``act(conv(x) + bias + add)``; on the CPU with oneDNN
    this is one kernel (bias, residual and activation in the epilogue).
    """

    __slots__ = ("weight", "bias", "bias_binary", "padding", "groups", "use_mkldnn", "out_channels")

    def __init__(self, weight: Tensor, bias: Optional[Tensor], *, dtype: torch.dtype, device: torch.device,
                 channels_last: bool, use_mkldnn: bool, groups: int = 1) -> None:
        k = weight.shape[-1]
        self.padding = [k // 2, k // 2]
        self.groups = groups
        self.use_mkldnn = use_mkldnn
        self.out_channels = weight.shape[0]
        self.weight = _to_layout(weight.to(device), dtype, channels_last)
        # oneDNN takes an fp32 bias with bf16 data (more accurate), except in its binary-fusion
        # variant; other back-ends want one dtype.
        bias_dtype = torch.float32 if use_mkldnn and dtype == torch.bfloat16 else dtype
        self.bias = None if bias is None else bias.to(device=device, dtype=bias_dtype).contiguous()
        self.bias_binary = None if bias is None else bias.to(device=device, dtype=dtype).contiguous()

    def __call__(self, x: Tensor, act: Optional[str] = None, add: Optional[Tensor] = None) -> Tensor:
        if self.use_mkldnn:
            ops = torch.ops.mkldnn
            if add is None:
                scalars = [0.2] if act == "leaky_relu" else []
                return ops._convolution_pointwise(x, self.weight, self.bias, self.padding, [1, 1], [1, 1],
                                                  self.groups, act or "none", scalars, "")
            if act in (None, "relu"):
                return ops._convolution_pointwise.binary(x, add, self.weight, self.bias_binary, self.padding, [1, 1],
                                                         [1, 1], self.groups, "add", None, act, [], None)
            y = ops._convolution_pointwise.binary(x, add, self.weight, self.bias_binary, self.padding, [1, 1], [1, 1],
                                                  self.groups, "add", None, None, [], None)
            return _activation(y, act)
        y = F.conv2d(x, self.weight, self.bias, padding=self.padding, groups=self.groups)
        if add is not None:
            y = y + add
        return _activation(y, act)


def _activation(y: Tensor, act: Optional[str]) -> Tensor:
    if act is None or act == "none":
        return y
    if act == "relu":
        return F.relu(y)
    if act == "leaky_relu":
        return F.leaky_relu(y, 0.2)
    if act == "sigmoid":
        return torch.sigmoid(y)
    raise ValueError(f"unknown activation {act!r}")


def _div_add(z: Tensor, scale: Tensor, neg_shift: Tensor, bounds: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """``z / scale + neg_shift`` in one pass (``addcdiv`` computes ``self + 1·t1/t2``: the same
    rounding as the two-pass form, which tracing keeps because ONNX has no ``addcdiv``). With the
    inference guard's ``bounds`` the quotient is clamped first (in place: one pass more than
    ``addcdiv``, and bit-identical to it where the clamp does not act)."""
    if bounds is not None:
        quotient = z / scale
        return torch.clamp(quotient, *bounds, out=quotient if not torch.jit.is_tracing() else None) + neg_shift
    if torch.jit.is_tracing():
        return z / scale + neg_shift
    return torch.addcdiv(neg_shift, z, scale)


def _sigmoid_scale(raw: Tensor, eps: float) -> Tensor:
    """``sigmoid(raw) + eps`` as a new tensor.

    ``raw`` is the second half of a channels-last convolution output: element-wise kernels on such
    a slice stride through memory in runs of its channel count, so narrow slices are copied to a
    dense tensor first (12 of 24 channels at 200×300, 2 threads: 1.23 ms on the slice against
    0.43 ms for copy + in-place sigmoid and add; from 192 channels on, the slice is faster)."""
    dense = raw.is_contiguous() or raw.is_contiguous(memory_format=CHANNELS_LAST)
    if dense or raw.shape[1] >= 64:
        return torch.sigmoid(raw).add_(eps)
    layout = CHANNELS_LAST if raw.stride(1) == 1 else torch.contiguous_format
    return raw.contiguous(memory_format=layout).sigmoid_().add_(eps)
