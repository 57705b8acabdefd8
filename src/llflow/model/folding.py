"""Weight folding for the fast engine (:mod:`llflow.model.fast`), in float64: ActNorms into the
convolution before them, the ``Conv2dZeros`` gain and the coupling's ``+2`` into weights and biases,
residual connections into a convolution's centre taps."""
from __future__ import annotations

import torch
from torch import Tensor

from .flow import ConvActNorm, Conv2dZeros

__all__ = ["_add_identity", "_f64", "_fold_conv_actnorm", "_fold_conv_zeros"]


def _f64(t: Tensor) -> Tensor:
    return t.detach().to(torch.float64)


def _fold_conv_actnorm(m: ConvActNorm) -> tuple[Tensor, Tensor]:
    """``(conv(x; W) + b)·e^s`` → weight, bias (float64)."""
    gain = torch.exp(_f64(m.actnorm.logs).flatten())
    return _f64(m.weight) * gain[:, None, None, None], _f64(m.actnorm.bias).flatten() * gain


def _add_identity(weight: Tensor, coef: float) -> Tensor:
    """``weight`` (out×in×k×k, float64) plus ``coef`` on the centre tap from input channel ``o`` to
    output ``o``, so that ``conv(x; W') = conv(x; W) + coef·x[:, :out]``: a residual connection
    from the first ``out`` input channels, computed inside the convolution."""
    out, k = weight.shape[0], weight.shape[-1]
    weight = weight.clone()
    idx = torch.arange(out)
    weight[idx, idx, k // 2, k // 2] += coef
    return weight


def _fold_conv_zeros(m: Conv2dZeros, add_to_odd: float = 0.0) -> tuple[Tensor, Tensor]:
    """``(conv(x; W) + b)·e^{3·logs}`` with output rows reordered to ``[even..., odd...]`` (shift
    channels first, scale channels second), the shift rows negated (the coupling then computes
    ``z/scale − shift`` as one ``addcdiv(−shift, z, scale)``; negation is exact) and ``add_to_odd``
    (the ``+2`` before the sigmoid) added to the bias of the scale rows (float64)."""
    gain = torch.exp(_f64(m.logs).flatten() * m.logscale_factor)
    w = _f64(m.weight) * gain[:, None, None, None]
    b = _f64(m.bias) * gain
    n = w.shape[0]
    order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)])
    w, b = w[order].clone(), b[order].clone()
    w[: n // 2].neg_()
    b[: n // 2].neg_()
    b[n // 2:] += add_to_odd
    return w, b
