"""Invertible layers of the conditional flow (LLFLOW_DESIGN.md §3).

Every layer follows one convention (as in normflows): ``forward(x, cond) -> (y, logdet)`` maps an
image towards the latent, ``inverse(y, cond) -> (x, logdet)`` maps back, and the two log-dets are
per-sample tensors of shape ``(N,)`` that sum to zero for a round trip. ``cond`` is the conditional
feature map of the layer's level and is ignored by layers that do not need it.

Parameter names follow the official checkpoints (``actnorm.bias``, ``invconv.weight``,
``affine.fAffine.0.weight`` ...) so released weights load strictly.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LogDet = Tensor


def squeeze2d(x: Tensor, factor: int) -> Tensor:
    """Space-to-depth: ``(N, C, H, W) -> (N, C·f², H/f, W/f)`` with channel index ``c·f² + fy·f + fx``.

    This is the official ordering (channel-major), which differs from ``pixel_unshuffle`` only in
    naming; the prior mean relies on it (one factor-8 squeeze, not three factor-2 ones).
    """
    n, c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"squeeze2d: spatial size {h}×{w} is not divisible by {factor}")
    x = x.reshape(n, c, h // factor, factor, w // factor, factor)
    x = x.permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * factor * factor, h // factor, w // factor)


def unsqueeze2d(x: Tensor, factor: int) -> Tensor:
    """Exact inverse of :func:`squeeze2d`."""
    n, c, h, w = x.shape
    f2 = factor * factor
    if c % f2:
        raise ValueError(f"unsqueeze2d: {c} channels are not divisible by {f2}")
    x = x.reshape(n, c // f2, factor, factor, h, w)
    x = x.permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // f2, h * factor, w * factor)


def _zero_logdet(x: Tensor) -> LogDet:
    return x.new_zeros(x.shape[0])


class FlowLayer(nn.Module):
    """Base class: an invertible map with log-determinant."""

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:  # noqa: D401
        raise NotImplementedError

    def inverse(self, y: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        raise NotImplementedError


class Squeeze(FlowLayer):
    """Factor-2 space-to-depth; volume preserving."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        return squeeze2d(x, self.factor), _zero_logdet(x)

    def inverse(self, y: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        return unsqueeze2d(y, self.factor), _zero_logdet(y)


class ActNorm2d(FlowLayer):
    """Per-channel affine normalisation ``y = (x + bias) · exp(logs)``.

    Data-dependent initialisation (Glow): on the first forward pass in training mode, if ``bias`` is
    still all zero (a fresh model, not loaded weights), bias and scale are set so that this batch
    comes out with zero mean and unit standard deviation per channel. The flag is not part of the
    state dict (as in the official code); loading weights with a non-zero bias skips the init.
    """

    def __init__(self, num_channels: int, scale: float = 1.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.scale = scale
        self.initialized = False

    @torch.no_grad()
    def initialize_from(self, x: Tensor) -> None:
        """Set bias/logs from the statistics of ``x`` (over N, H, W)."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(torch.log(self.scale / (std + 1e-6)))
        self.initialized = True

    def _maybe_initialize(self, x: Tensor) -> None:
        if self.initialized or not self.training:
            return
        if torch.count_nonzero(self.bias) == 0:
            self.initialize_from(x)
        self.initialized = True

    def _logdet(self, x: Tensor) -> LogDet:
        h, w = x.shape[-2:]
        return (self.logs.sum() * (h * w)).to(x.dtype).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        self._maybe_initialize(x)
        return (x + self.bias) * torch.exp(self.logs), self._logdet(x)

    def inverse(self, y: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        return y * torch.exp(-self.logs) - self.bias, -self._logdet(y)


class InvertibleConv1x1(FlowLayer):
    """Learned invertible channel mixing ``y = W x`` with a full C×C matrix (no LU, as released).

    The inverse is computed in float64 (as the official code does) and, outside autograd, cached
    until the weight changes, so inference does not re-invert the matrix at every call.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        # Random rotation: QR of a Gaussian matrix (Glow). Uses torch's RNG so seeding is uniform.
        q, _ = torch.linalg.qr(torch.randn(num_channels, num_channels, dtype=torch.float64))
        self.weight = nn.Parameter(q.to(torch.get_default_dtype()))
        self._cache_key: Optional[tuple] = None
        self._cached_inverse: Optional[Tensor] = None
        self._cached_logabsdet: Optional[Tensor] = None

    def _weight_key(self, dtype: torch.dtype) -> tuple:
        w = self.weight
        return (w._version, w.data_ptr(), w.device, w.dtype, dtype)

    def _use_cache(self) -> bool:
        return not (torch.is_grad_enabled() and self.weight.requires_grad)

    def _fill_cache(self, dtype: torch.dtype) -> None:
        key = self._weight_key(dtype)
        if self._cache_key == key:
            return
        w64 = self.weight.detach().to(torch.float64)
        self._cached_inverse = torch.linalg.inv(w64).to(dtype)
        self._cached_logabsdet = torch.linalg.slogdet(self.weight.detach().to(dtype))[1]
        self._cache_key = key

    def logabsdet(self, dtype: torch.dtype) -> Tensor:
        if self._use_cache():
            self._fill_cache(dtype)
            assert self._cached_logabsdet is not None
            return self._cached_logabsdet
        return torch.linalg.slogdet(self.weight.to(dtype))[1]

    def inverse_weight(self, dtype: torch.dtype) -> Tensor:
        if self._use_cache():
            self._fill_cache(dtype)
            assert self._cached_inverse is not None
            return self._cached_inverse
        return torch.linalg.inv(self.weight.to(torch.float64)).to(dtype)

    def _logdet(self, x: Tensor) -> LogDet:
        h, w = x.shape[-2:]
        return (self.logabsdet(x.dtype) * (h * w)).expand(x.shape[0])

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        weight = self.weight.to(x.dtype)
        return F.conv2d(x, weight[:, :, None, None]), self._logdet(x)

    def inverse(self, y: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        inv = self.inverse_weight(y.dtype)
        return F.conv2d(y, inv[:, :, None, None]), -self._logdet(y)


class ConvActNorm(nn.Module):
    """Bias-free "same" convolution followed by an ActNorm whose log-det is discarded (official
    ``Conv2d`` of the coupling sub-networks). Weight init N(0, 0.05²)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) * 0.05)
        self.actnorm = ActNorm2d(out_channels)
        self.padding = kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight, padding=self.padding)
        return self.actnorm(y)[0]


class Conv2dZeros(nn.Module):
    """Zero-initialised 3×3 convolution with a learned output gain ``exp(3·logs)`` (Glow)."""

    def __init__(self, in_channels: int, out_channels: int, logscale_factor: float = 3.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))
        self.logscale_factor = logscale_factor

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.weight, self.bias, padding=1)
        return y * torch.exp(self.logs * self.logscale_factor)


def coupling_subnet(in_channels: int, out_channels: int, hidden: int) -> nn.Sequential:
    """conv3×3+ActNorm → ReLU → conv1×1+ActNorm → ReLU → zero-init conv3×3 (indices match the
    official ``fAffine``/``fFeatures`` keys 0, 2, 4)."""
    return nn.Sequential(
        ConvActNorm(in_channels, hidden, 3),
        nn.ReLU(inplace=False),
        ConvActNorm(hidden, hidden, 1),
        nn.ReLU(inplace=False),
        Conv2dZeros(hidden, out_channels),
    )


def _shift_and_scale(h: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Split a sub-network output into shift (even channels) and a positive scale (odd channels).

    ``scale = sigmoid(raw + 2) + eps`` keeps the scale in (eps, 1 + eps): the coupling can only
    contract in the forward direction, which keeps training stable.
    """
    shift = h[:, 0::2]
    scale = torch.sigmoid(h[:, 1::2] + 2.0) + eps
    return shift, scale


def _bounded(x: Tensor, low: Optional[Tensor], high: Optional[Tensor], active: bool = True) -> Tensor:
    """``clamp(x, low, high)`` when a guard is set (bit-identical where ``x`` is inside), else ``x``."""
    if not active or low is None or high is None:
        return x
    return torch.clamp(x, low.to(x.dtype), high.to(x.dtype))


def _sum_log(scale: Tensor) -> LogDet:
    return torch.log(scale).flatten(1).sum(dim=1)


class CondAffineSeparatedAndCond(FlowLayer):
    """Affine injector driven by the condition only, then an affine coupling on half the channels.

    Forward: ``z ← (z + shiftF(c))·scaleF(c)``; ``z2 ← (z2 + shift(z1, c))·scale(z1, c)``.
    Note the add-then-multiply order of the official code.
    """

    def __init__(self, in_channels: int, cond_channels: int, hidden_channels: int = 64, eps: float = 1e-4) -> None:
        super().__init__()
        self.channels_first = in_channels // 2
        self.channels_second = in_channels - self.channels_first
        self.eps = eps
        self.fAffine = coupling_subnet(self.channels_first + cond_channels, 2 * self.channels_second, hidden_channels)
        self.fFeatures = coupling_subnet(cond_channels, 2 * in_channels, hidden_channels)
        # Inference guard (llflow.model.guard): per-channel ranges of the two division terms of the
        # inverse, z2/scale (coupling) and z/scale_f (injector), as 1×C×1×1 low/high buffers. Not
        # part of the official state dict; set with set_guard().
        for name in ("guard_coupling_low", "guard_coupling_high", "guard_injector_low", "guard_injector_high"):
            self.register_buffer(name, None, persistent=False)

    def set_guard(self, coupling: Optional[tuple[Tensor, Tensor]], injector: Optional[tuple[Tensor, Tensor]]) -> None:
        """Bound the inverse's division terms to ``(low, high)`` per channel (None: no guard)."""
        ref = self.fAffine[0].weight

        def shaped(bound: Optional[Tensor]) -> Optional[Tensor]:
            return None if bound is None else bound.reshape(1, -1, 1, 1).to(device=ref.device, dtype=ref.dtype)

        self.guard_coupling_low, self.guard_coupling_high = (shaped(b) for b in (coupling or (None, None)))
        self.guard_injector_low, self.guard_injector_high = (shaped(b) for b in (injector or (None, None)))

    def injector(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        return _shift_and_scale(self.fFeatures(cond), self.eps)

    def coupling(self, z1: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        return _shift_and_scale(self.fAffine(torch.cat([z1, cond], dim=1)), self.eps)

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        assert cond is not None, "the coupling needs its level's condition"
        shift_f, scale_f = self.injector(cond)
        z = (x + shift_f) * scale_f
        logdet = _sum_log(scale_f)
        z1, z2 = z[:, : self.channels_first], z[:, self.channels_first :]
        shift, scale = self.coupling(z1, cond)
        z2 = (z2 + shift) * scale
        return torch.cat([z1, z2], dim=1), logdet + _sum_log(scale)

    def inverse(self, y: Tensor, cond: Optional[Tensor] = None, guarded: bool = True) -> tuple[Tensor, LogDet]:
        """``guarded``: bound the two division terms to the guard's ranges when set (values inside
        them are unchanged): dividing by a scale near its floor is where the inverse can explode."""
        assert cond is not None, "the coupling needs its level's condition"
        z1, z2 = y[:, : self.channels_first], y[:, self.channels_first :]
        shift, scale = self.coupling(z1, cond)
        z2 = _bounded(z2 / scale, self.guard_coupling_low, self.guard_coupling_high, guarded) - shift
        logdet = -_sum_log(scale)
        shift_f, scale_f = self.injector(cond)
        z = _bounded(torch.cat([z1, z2], dim=1) / scale_f, self.guard_injector_low, self.guard_injector_high,
                     guarded) - shift_f
        return z, logdet - _sum_log(scale_f)


class FlowStep(FlowLayer):
    """ActNorm → invertible 1×1 conv → (optional) conditional affine coupling."""

    def __init__(self, channels: int, cond_channels: Optional[int] = None, hidden_channels: int = 64,
                 affine_eps: float = 1e-4) -> None:
        super().__init__()
        self.actnorm = ActNorm2d(channels)
        self.invconv = InvertibleConv1x1(channels)
        self.affine: Optional[CondAffineSeparatedAndCond] = None
        if cond_channels is not None:
            self.affine = CondAffineSeparatedAndCond(channels, cond_channels, hidden_channels, affine_eps)

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        x, logdet = self.actnorm(x)
        x, ld = self.invconv(x)
        logdet = logdet + ld
        if self.affine is not None:
            x, ld = self.affine(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, LogDet]:
        logdet = _zero_logdet(y)
        if self.affine is not None:
            y, logdet = self.affine.inverse(y, cond)
        y, ld = self.invconv.inverse(y)
        y, ld2 = self.actnorm.inverse(y)
        return y, logdet + ld + ld2


class ConditionalFlow(nn.Module):
    """The flow of LLFlow (official ``FlowUpsamplerNet``): for each of ``L`` levels a 2× squeeze,
    ``n_plain`` ActNorm+1×1 steps and ``K`` conditional steps; no split, so the latent is
    ``3·4^L`` channels at ``1/2^L`` resolution.

    ``conds[level]`` (level 1..L) is the conditional feature map at that level's resolution.
    ``f`` is the official dead convolution, kept only so released checkpoints load strictly.
    """

    def __init__(self, K: int, L: int = 3, n_plain: int = 2, cond_channels: int = 64,
                 hidden_channels: int = 64, affine_eps: float = 1e-4, in_channels: int = 3,
                 dead_f_in_channels: int = 128) -> None:
        super().__init__()
        self.L = L
        self.layers = nn.ModuleList()
        self.level_of_layer: list[int] = []
        channels = in_channels
        for level in range(1, L + 1):
            channels *= 4
            steps: list[nn.Module] = [Squeeze(2)]
            steps += [FlowStep(channels) for _ in range(n_plain)]
            steps += [FlowStep(channels, cond_channels, hidden_channels, affine_eps) for _ in range(K)]
            self.layers.extend(steps)
            self.level_of_layer += [level] * len(steps)
        self.latent_channels = channels
        self.f = nn.Sequential(nn.Conv2d(dead_f_in_channels, 2 * 3 * 64, 3, padding=1))
        self.f.requires_grad_(False)

    def forward(self, x: Tensor, conds: dict[int, Tensor]) -> tuple[Tensor, LogDet]:
        """Image → latent. Returns ``(z, logdet)``."""
        logdet = _zero_logdet(x)
        for layer, level in zip(self.layers, self.level_of_layer):
            x, ld = layer(x, conds.get(level))
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor, conds: dict[int, Tensor]) -> tuple[Tensor, LogDet]:
        """Latent → image. Returns ``(x, logdet)`` (log-det of the inverse map)."""
        logdet = _zero_logdet(z)
        for layer, level in zip(reversed(self.layers), reversed(self.level_of_layer)):
            z, ld = layer.inverse(z, conds.get(level))
            logdet = logdet + ld
        return z, logdet

