"""Fast inference engine for LLFlow (opt-in; the training modules are not touched). The weight
folding is in :mod:`llflow.model.folding`, the kernels in :mod:`llflow.model.kernels`. (About 510
lines, just past the ~500-line guideline: what is left is one class, the reverse program and its
prepared conditions, whose steps share the snapshot's state.)

``model.prepare_for_inference(precision)`` returns an :class:`InferenceModel`: a snapshot of the
network's weights, re-arranged once for the reverse (image-producing) direction:

* every ActNorm is folded into the convolution before it (``(conv(x) + b)·e^s`` →
  ``conv(x; W·e^s) + b·e^s``), the ``Conv2dZeros`` gain ``e^{3·logs}``, the RDB/RRDB ``0.2`` residual
  scales and the ``+2`` before the coupling sigmoids are folded into weights and biases;
* the inverse of each invertible 1×1 convolution and the inverse ActNorm after it are one 1×1
  convolution whose matrix ``diag(e^{-s})·W⁻¹`` is computed in float64; consecutive ones (the
  last coupling step of a level and the two plain steps after it) are composed into one, also in
  float64;
* the condition-only parts of every coupling step — the injector ``fFeatures`` and the condition half
  of ``fAffine``'s first convolution (``conv(cat[z1, c]) = conv(z1; W_z) + conv(c; W_c)``) — are
  computed without ``z``; :meth:`InferenceModel.prepare_condition` caches them so several latents
  can be decoded for one image (:meth:`InferenceModel.decode`);
* the encoder's colour-map head runs before the nearest-neighbour upsampling (a 1×1 convolution
  commutes with it) and the RRDB dense blocks use fused convolution + activation/residual kernels;
* tensors are channels-last; on the CPU the convolutions call oneDNN's fused
  ``mkldnn._convolution_pointwise`` (bias, LeakyReLU/ReLU/sigmoid and residual additions in the
  convolution's epilogue); elsewhere plain ``F.conv2d`` followed by the same element-wise ops.

Precision (``"fp32"``, ``"bf16"``, ``"fp16"``): the encoder and the coupling sub-networks run in the
chosen type; the latent ``z``, the prior mean, the colour-map head, the injector/coupling affine
arithmetic (sigmoid, division by the scale, log) and the 1×1 inverses always run in float32
(float64 with ``"fp64"``, for exactness checks).
fp32 reproduces :meth:`LLFlow.reverse` to ~1e-6 relative (only rounding order differs).

The snapshot does not follow later changes of the network's weights: call
``prepare_for_inference`` again after training or loading new weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import runtime
from ..preprocess import image_condition
from .encoder import ConditionEncoder, ResidualDenseBlock
from .flow import FlowStep, Squeeze, squeeze2d, unsqueeze2d
from .folding import _add_identity, _f64, _fold_conv_actnorm, _fold_conv_zeros
from .kernels import (CHANNELS_LAST, FusedConv, _div_add, _sigmoid_scale, _to_layout, mkldnn_fusion_available,
                      squeeze_cl, unsqueeze_cl)
from .prior import latent_offset

if TYPE_CHECKING:  # pragma: no cover
    from .llflow import LLFlow

#: The engine's compute types: the runtime's precisions plus fp64, used only for exactness checks.
ENGINE_DTYPES = {**runtime.DTYPES, "fp64": torch.float64}


def engine_dtype(precision: str | torch.dtype) -> torch.dtype:
    """``"fp32"|"bf16"|"fp16"|"fp64"`` (or such a dtype) → dtype. ``auto`` is decided before this,
    by :func:`llflow.runtime.resolve_precision`."""
    if isinstance(precision, torch.dtype):
        if precision not in ENGINE_DTYPES.values():
            raise ValueError(f"unsupported precision {precision}; use float32, bfloat16, float16 or float64")
        return precision
    name = str(precision).lower()
    if name not in ENGINE_DTYPES:
        raise ValueError(f"unknown precision '{precision}'; use fp32, bf16, fp16 (GPU) or fp64")
    return ENGINE_DTYPES[name]


# ------------------------------------------------------------------------------------------------
# The prepared (condition-only) state


@dataclass
class StepCondition:
    """Condition-only tensors of one coupling step: the condition half of ``fAffine``'s first
    convolution (bias included) and the injector's negated shift and its scale (float32)."""

    affine_cond: Tensor
    injector_neg_shift: Tensor
    injector_scale: Tensor
    injector_logdet: Optional[Tensor] = None


@dataclass
class PreparedCondition:
    """Everything the decoder needs that does not depend on ``z``, for one batch of conditions.

    Made by :meth:`InferenceModel.prepare_condition` (or :meth:`LLFlow.prepare_condition`); pass it
    to ``decode`` as many times as you like. ``mean`` is the prior mean μ (N×192×H/8×W/8, float32);
    ``steps`` maps a flow-layer index to its :class:`StepCondition`; ``size`` is the condition's
    H×W (multiples of 8); ``logdet_const`` the ``z``-independent part of the reverse log-det.
    """

    mean: Tensor
    steps: dict[int, StepCondition]
    size: tuple[int, int]
    logdet_const: Tensor
    precision: str = "fp32"
    extras: dict = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return self.mean.shape[0]

    def nbytes(self) -> int:
        """Memory held by the cache."""
        total = self.mean.numel() * self.mean.element_size()
        for s in self.steps.values():
            for t in (s.affine_cond, s.injector_neg_shift, s.injector_scale):
                total += t.numel() * t.element_size()
        return total


# ------------------------------------------------------------------------------------------------
# Engine


class _CouplingEngine:
    """One conditional flow step, reverse direction."""

    def __init__(self, step: FlowStep, index: int, level: int, mk, device: torch.device, acc: torch.dtype) -> None:
        affine = step.affine
        assert affine is not None
        self.index = index
        self.level = level
        self.c1 = affine.channels_first
        self.c2 = affine.channels_second
        self.channels = self.c1 + self.c2
        self.eps = affine.eps
        # fAffine: first conv split into its z1 part and its condition part.
        w0, b0 = _fold_conv_actnorm(affine.fAffine[0])
        self.aff_z = mk(w0[:, : self.c1], None)
        self.aff_c = mk(w0[:, self.c1:], b0)
        self.aff_1 = mk(*_fold_conv_actnorm(affine.fAffine[2]))
        self.aff_2 = mk(*_fold_conv_zeros(affine.fAffine[4], add_to_odd=2.0))
        # fFeatures: the injector, condition only.
        self.inj_0 = mk(*_fold_conv_actnorm(affine.fFeatures[0]))
        self.inj_1 = mk(*_fold_conv_actnorm(affine.fFeatures[2]))
        self.inj_2 = mk(*_fold_conv_zeros(affine.fFeatures[4], add_to_odd=2.0))
        # The inference guard's ranges of the two quotients (llflow.model.guard), accurate dtype.
        def bounds(low: Optional[Tensor], high: Optional[Tensor]) -> Optional[tuple[Tensor, Tensor]]:
            return None if low is None or high is None else (low.to(device, acc), high.to(device, acc))

        self.coupling_bounds = bounds(affine.guard_coupling_low, affine.guard_coupling_high)
        self.injector_bounds = bounds(affine.guard_injector_low, affine.guard_injector_high)

    def condition(self, cond: Tensor, with_logdet: bool, acc: torch.dtype) -> StepCondition:
        # Whole-tensor conversion first: converting the two strided halves separately measured
        # slower (12 of 24 channels at 200×300: 1.31 against 0.70 ms with the sigmoid's copy).
        h = self.inj_2(self.inj_1(self.inj_0(cond, act="relu"), act="relu")).to(acc)
        neg_shift, raw = h[:, : self.channels], h[:, self.channels:]
        scale = _sigmoid_scale(raw, self.eps)
        logdet = torch.log(scale).sum(dim=(1, 2, 3)) if with_logdet else None
        return StepCondition(self.aff_c(cond), neg_shift, scale, logdet)

    def inverse(self, z: Tensor, sc: StepCondition, dtype: torch.dtype, logdet: Optional[Tensor]
                ) -> tuple[Tensor, Optional[Tensor]]:
        z1, z2 = z[:, : self.c1], z[:, self.c1:]
        h = self.aff_z(z1.to(dtype), act="relu", add=sc.affine_cond)
        h = self.aff_1(h, act="relu")
        h = self.aff_2(h).to(z.dtype)
        neg_shift, raw = h[:, : self.c2], h[:, self.c2:]
        scale = _sigmoid_scale(raw, self.eps)
        z2 = _div_add(z2, scale, neg_shift, self.coupling_bounds)
        z = _div_add(torch.cat([z1, z2], dim=1), sc.injector_scale, sc.injector_neg_shift, self.injector_bounds)
        if logdet is not None:
            logdet = logdet - torch.log(scale).sum(dim=(1, 2, 3))
            if sc.injector_logdet is not None:
                logdet = logdet - sc.injector_logdet
        return z, logdet


class InferenceModel:
    """Fast, inference-only LLFlow built from a trained :class:`~llflow.model.LLFlow`.

    Args:
        model: the network (left unchanged; its weights are copied and re-arranged).
        precision: ``"fp32"`` (default), ``"bf16"`` (CPUs with bf16 units, recent GPUs) or
            ``"fp16"`` (GPU) for the encoder and coupling sub-networks; see the module docstring.
        device: where to run (default: the model's device).
        channels_last: NHWC activations (faster with oneDNN and on tensor cores).
        fused: use oneDNN's fused convolution kernels when available (CPU fp32/bf16).
        dense_workspace: write the dense blocks' concatenations into one reused buffer (CPU).
        fold_residuals: compute the dense blocks' skip connections inside their last convolution
            (identity added to its weights): fp32 outputs move by ~4e-7 relative; in bf16 the
            folded centre taps round to bf16 (steps of 2⁻⁷ near 1), which costs 0.1 dB of PSNR
            against fp32 on the val images (61.2 vs 61.3 dB) for 1–3 % less time.
    """

    def __init__(self, model: "LLFlow", precision: str | torch.dtype = "fp32",
                 device: Optional[torch.device | str] = None, channels_last: bool = True,
                 fused: bool = True, dense_workspace: bool = True, fold_residuals: bool = True) -> None:
        self.config = model.config
        self.dtype = engine_dtype(precision)
        self.precision = {v: k for k, v in ENGINE_DTYPES.items()}[self.dtype]
        self.device = torch.device(device) if device is not None else model.device
        if self.dtype == torch.float16 and self.device.type == "cpu":
            raise ValueError("precision fp16 needs a GPU; on the CPU use bf16 or fp32")
        self.channels_last = channels_last
        self.dense_workspace = dense_workspace
        self.use_mkldnn = fused and channels_last and mkldnn_fusion_available(self.device, self.dtype)
        # The dense blocks' residual connections go into conv5's weights: one plain convolution
        # instead of oneDNN's slower residual-add variant and, in RDB3, one pass less. In bf16 the
        # centre taps 1 + 0.2·w round to 1 ± 2⁻⁷ steps; measured on the 22 val images this moves
        # the PSNR against fp32 from 61.3 to 61.2 dB (its bf16 activations round as much already).
        self.residual_in_weights = fold_residuals
        # The "accurate" type of z, the affine arithmetic and the 1×1 inverses.
        self.acc_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        self._acc_mkldnn = fused and channels_last and mkldnn_fusion_available(self.device, self.acc_dtype)
        with torch.no_grad():
            self._build(model)

    # -------------------------------------------------------------------------- construction
    def _mk(self, weight: Tensor, bias: Optional[Tensor], fp32: bool = False, groups: int = 1) -> FusedConv:
        dtype = self.acc_dtype if fp32 else self.dtype
        use = self._acc_mkldnn if fp32 else self.use_mkldnn
        return FusedConv(weight, bias, dtype=dtype, device=self.device, channels_last=self.channels_last,
                         use_mkldnn=use, groups=groups)

    def _build(self, model: "LLFlow") -> None:
        enc: ConditionEncoder = model.RRDB
        mk = self._mk
        conv = lambda m, scale=1.0: mk(_f64(m.weight) * scale, _f64(m.bias) * scale)  # noqa: E731
        self.conv_first = conv(enc.conv_first)
        self.conv_second = conv(enc.conv_second)
        self.rrdbs: list[list[list[FusedConv]]] = []
        for rrdb in enc.RRDB_trunk:
            blocks = []
            for r, rdb in enumerate((rrdb.RDB1, rrdb.RDB2, rrdb.RDB3)):
                assert isinstance(rdb, ResidualDenseBlock)
                # RDB: 0.2·conv5 + x; for RDB3 the RRDB's own 0.2 multiplies it again.
                last_scale = 0.2 * (0.2 if r == 2 else 1.0)
                w5, b5 = _f64(rdb.conv5.weight) * last_scale, _f64(rdb.conv5.bias) * last_scale
                if self.residual_in_weights:  # + x (RDB1, RDB2) or + 0.2·x (RDB3): x is conv5's input prefix
                    w5 = _add_identity(w5, 1.0 if r < 2 else 0.2)
                blocks.append([conv(rdb.conv1), conv(rdb.conv2), conv(rdb.conv3), conv(rdb.conv4), mk(w5, b5)])
            self.rrdbs.append(blocks)
        self.stack_blocks = enc.stack_blocks
        self.trunk_conv = conv(enc.trunk_conv)
        self.downconv1 = conv(enc.downconv1)
        self.downconv2 = conv(enc.downconv2)
        head = enc.fine_tune_color_map[0]
        self.color_head = mk(_f64(head.weight), _f64(head.bias), fp32=True)

        flow = model.flowUpsamplerNet
        self.L = flow.L
        # Reverse program per level: ("coupling", engine) and ("linear", FusedConv) and ("unsqueeze",).
        self.program: dict[int, list[tuple]] = {}
        self.couplings: dict[int, _CouplingEngine] = {}
        logdet_terms: dict[int, float] = {}  # per level: Σ (sum(logs) + log|det W|), times h·w later
        for level in range(1, self.L + 1):
            ops: list[tuple] = []
            pending: Optional[tuple[Tensor, Tensor]] = None  # affine map y ↦ M y + c (float64)
            total = 0.0
            layers = [(i, layer) for i, (layer, lv) in enumerate(zip(flow.layers, flow.level_of_layer))
                      if lv == level]
            for i, layer in reversed(layers):
                if isinstance(layer, Squeeze):
                    if pending is not None:
                        ops.append(("linear", self._linear(*pending)))
                        pending = None
                    ops.append(("unsqueeze", layer.factor))
                    continue
                assert isinstance(layer, FlowStep)
                if layer.affine is not None:
                    if pending is not None:
                        ops.append(("linear", self._linear(*pending)))
                        pending = None
                    engine = _CouplingEngine(layer, i, level, mk, self.device, self.acc_dtype)
                    self.couplings[i] = engine
                    ops.append(("coupling", engine))
                w = _f64(layer.invconv.weight)
                s = _f64(layer.actnorm.logs).flatten()
                b = _f64(layer.actnorm.bias).flatten()
                m = torch.exp(-s)[:, None] * torch.linalg.inv(w)  # x = e^{-s}·W⁻¹y − b
                c = -b
                total += float(s.sum() + torch.linalg.slogdet(w)[1])
                if pending is None:
                    pending = (m, c)
                else:  # apply pending first, then this one
                    pm, pc = pending
                    pending = (m @ pm, m @ pc + c)
            if pending is not None:
                ops.append(("linear", self._linear(*pending)))
            self.program[level] = ops
            logdet_terms[level] = total
        self._logdet_terms = logdet_terms
        self.latent_channels = flow.latent_channels

    def _linear(self, m: Tensor, c: Tensor) -> FusedConv:
        return self._mk(m[:, :, None, None], c, fp32=True)

    # -------------------------------------------------------------------------- encoder
    def _layout(self, x: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
        return _to_layout(x, dtype or self.dtype, self.channels_last)

    def _cat(self, tensors: Sequence[Tensor], work: Optional[Tensor]) -> Tensor:
        """``torch.cat(tensors, 1)`` written into the front of the flat buffer ``work``.

        The dense blocks concatenate 64…160 channels five times per block; one buffer reused for
        all of them replaces ~50 large short-lived allocations per image — at megapixel sizes each
        one costs a page-fault storm (the kernel zeroes every fresh page: 28 % of the CPU time at
        1920×1080 before this change)."""
        if work is None:
            return torch.cat(tensors, 1)
        n, _, h, w = tensors[0].shape
        c = sum(t.shape[1] for t in tensors)
        if self.channels_last:
            out = work[: n * h * w * c].view(n, h, w, c).permute(0, 3, 1, 2)
        else:
            out = work[: n * c * h * w].view(n, c, h, w)
        return torch.cat(tensors, 1, out=out)

    def _rdb(self, x: Tensor, convs: Sequence[FusedConv], add: Optional[Tensor], work: Optional[Tensor]) -> Tensor:
        c1, c2, c3, c4, c5 = convs
        x1 = c1(x, act="leaky_relu")
        x2 = c2(self._cat((x, x1), work), act="leaky_relu")
        x3 = c3(self._cat((x, x1, x2), work), act="leaky_relu")
        x4 = c4(self._cat((x, x1, x2, x3), work), act="leaky_relu")
        return c5(self._cat((x, x1, x2, x3, x4), work), add=add)

    def encode(self, lq: Tensor) -> tuple[dict[int, Tensor], Tensor]:
        """Flow conditions per level (compute dtype, channels-last) and the prior mean (float32)."""
        x = self._layout(ConditionEncoder.handcrafted_inputs(lq.to(self.device, self.acc_dtype)))
        fea = self.conv_second(self.conv_first(x, act="leaky_relu"))
        fea_head = F.max_pool2d(fea, 2)
        del x, fea
        fea = fea_head
        stacked: dict[int, Tensor] = {}
        n, nf, h2, w2 = fea_head.shape
        dense_channels = self.rrdbs[0][0][4].weight.shape[1] if self.rrdbs else nf
        work = None  # GPUs have a caching allocator; tracing (ONNX) wants plain concatenations
        if self.dense_workspace and fea_head.device.type == "cpu" and not torch.jit.is_tracing():
            work = torch.empty(n * dense_channels * h2 * w2, dtype=fea_head.dtype, device=fea_head.device)
        for i, (r1, r2, r3) in enumerate(self.rrdbs):
            inp = fea
            if self.residual_in_weights:
                y = self._rdb(inp, r1, add=None, work=work)
                y = self._rdb(y, r2, add=None, work=work)
                fea = self._rdb(y, r3, add=inp, work=work)
            else:
                y = self._rdb(inp, r1, add=inp, work=work)
                y = self._rdb(y, r2, add=y, work=work)
                fea = self._rdb(y, r3, add=torch.add(inp, y, alpha=0.2), work=work)
            if i in self.stack_blocks:
                stacked[i] = fea
        del work
        fea_down2 = self.trunk_conv(fea, add=fea_head)
        del fea, fea_head
        fea_down4 = self.downconv1(F.avg_pool2d(fea_down2, 2), act="leaky_relu")
        fea_down8 = self.downconv2(F.avg_pool2d(fea_down4, 2))
        # Colour map: the 1×1 head commutes with the nearest ×2 upsampling, so run it at H/2.
        head = self.color_head(self._layout(fea_down2, self.acc_dtype), act="sigmoid")
        cmap = F.interpolate(head.contiguous(), scale_factor=2, mode="nearest")
        mean = squeeze_cl(cmap, 8) if self.channels_last else _squeeze_nchw(cmap, 8)
        blocks = [stacked[i] for i in self.stack_blocks]
        conds = {1: torch.cat([fea_down2, *blocks], 1),
                 2: torch.cat([fea_down4, *[b[:, :, ::2, ::2] for b in blocks]], 1),
                 3: torch.cat([fea_down8, *[b[:, :, ::4, ::4] for b in blocks]], 1)}
        if self.channels_last:
            conds = {k: v.contiguous(memory_format=CHANNELS_LAST) for k, v in conds.items()}
        return conds, mean

    # -------------------------------------------------------------------------- flow
    def _step_conditions(self, conds: dict[int, Tensor], with_logdet: bool) -> Iterator[tuple[int, StepCondition]]:
        for level in range(self.L, 0, -1):
            for op in self.program[level]:
                if op[0] == "coupling":
                    yield op[1].index, op[1].condition(conds[level], with_logdet, self.acc_dtype)

    def _logdet_const(self, h: int, w: int, n: int) -> Tensor:
        total = 0.0
        for level, term in self._logdet_terms.items():
            total += term * (h >> level) * (w >> level)
        return torch.full((n,), -total, dtype=self.acc_dtype, device=self.device)

    def _run_flow(self, z: Tensor, steps: Iterator[tuple[int, StepCondition]] | dict[int, StepCondition],
                  logdet: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        lazy = not isinstance(steps, dict)
        for level in range(self.L, 0, -1):
            for op in self.program[level]:
                kind = op[0]
                if kind == "coupling":
                    engine: _CouplingEngine = op[1]
                    if lazy:
                        index, sc = next(steps)  # type: ignore[arg-type]
                        assert index == engine.index
                    else:
                        sc = steps[engine.index]  # type: ignore[index]
                    z, logdet = engine.inverse(z, sc, self.dtype, logdet)
                    del sc
                elif kind == "linear":
                    z = op[1](z)
                else:
                    z = unsqueeze_cl(z, op[1]) if self.channels_last else _unsqueeze_nchw(z, op[1])
        return z, logdet

    def _latent(self, mean: Tensor, z: Optional[Tensor], temperature: float, eps: Optional[Tensor],
                generator: Optional[torch.Generator]) -> Tensor:
        if z is None:
            offset = latent_offset(tuple(mean.shape), temperature, eps, generator, mean.dtype, mean.device)
            z = mean if offset is None else mean + offset
        elif z.shape != mean.shape:
            raise ValueError(f"z has shape {tuple(z.shape)}, expected {tuple(mean.shape)}")
        return self._layout(z.to(self.device), self.acc_dtype)

    def _check(self, lq: Tensor) -> None:
        h, w = lq.shape[-2:]
        m = self.config.multiple
        if lq.ndim != 4 or lq.shape[1] != 6:
            raise ValueError(f"the condition must be N×6×H×W, got shape {tuple(lq.shape)}")
        if h % m or w % m:
            raise ValueError(f"the condition is {h}×{w}; sizes must be divisible by {m} (enhance() pads)")

    # -------------------------------------------------------------------------- public API
    @torch.no_grad()
    def prepare_condition(self, lq: Tensor, with_logdet: bool = False) -> PreparedCondition:
        """Run the encoder and every condition-only part of the flow once for the N×6×H×W
        condition ``lq`` (H, W multiples of 8). Memory: ``64`` values (compute precision) plus
        ``2·C`` float32 per coupling step and pixel of its level (C = 12, 48, 192) — e.g. 110 MB for
        LOL_smallNet at 400×600 in fp32; use it to decode several latents of one image."""
        self._check(lq)
        conds, mean = self.encode(lq)
        steps = dict(self._step_conditions(conds, with_logdet))
        for sc in steps.values():  # the shift is a view of the sub-network output: keep only itself
            sc.injector_neg_shift = sc.injector_neg_shift.clone(memory_format=torch.preserve_format)
        h, w = lq.shape[-2:]
        return PreparedCondition(mean, steps, (h, w), self._logdet_const(h, w, lq.shape[0]), self.precision,
                                 {"with_logdet": with_logdet})

    @torch.no_grad()
    def decode(self, prepared: PreparedCondition, z: Optional[Tensor] = None, temperature: float = 0.0,
               eps: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
               return_logdet: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Decode a latent with a prepared condition → N×3×H×W float32 image (unclamped).

        ``z`` defaults to ``μ + τ·ε`` (``eps`` given or drawn from ``generator``), as in
        :meth:`LLFlow.reverse`. ``return_logdet`` (needs ``prepare_condition(..., with_logdet=True)``)
        also returns the reverse log-determinant.
        """
        if return_logdet and not prepared.extras.get("with_logdet"):
            raise ValueError("return_logdet needs prepare_condition(lq, with_logdet=True)")
        zz = self._latent(prepared.mean, z, temperature, eps, generator)
        logdet = prepared.logdet_const.clone() if return_logdet else None
        x, logdet = self._run_flow(zz, prepared.steps, logdet)
        x = x.contiguous()
        return (x, logdet) if return_logdet else x  # type: ignore[return-value]

    @torch.no_grad()
    def reverse(self, lq: Tensor, z: Optional[Tensor] = None, temperature: float = 0.0,
                eps: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
                ) -> tuple[Tensor, Tensor]:
        """Same contract as :meth:`LLFlow.reverse` (``(x, logdet)``), one streaming pass: the
        condition-only tensors of each step are computed right before the step and freed after."""
        self._check(lq)
        conds, mean = self.encode(lq)
        zz = self._latent(mean, z, temperature, eps, generator)
        h, w = lq.shape[-2:]
        logdet = self._logdet_const(h, w, lq.shape[0])
        steps = self._step_conditions(conds, with_logdet=True)
        del mean
        x, logdet = self._run_flow(zz, steps, logdet)
        return x.contiguous(), logdet  # type: ignore[return-value]

    @torch.no_grad()
    def forward_image(self, lq: Tensor, z: Optional[Tensor] = None, temperature: float = 0.0,
                      eps: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """:meth:`reverse` without the log-determinant (skips the per-step logs)."""
        self._check(lq)
        conds, mean = self.encode(lq)
        zz = self._latent(mean, z, temperature, eps, generator)
        del mean
        x, _ = self._run_flow(zz, self._step_conditions(conds, with_logdet=False), None)
        return x.contiguous()

    @torch.no_grad()
    def enhance(self, low: Tensor, temperature: float = 0.0, eps: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None, clamp: bool = True,
                histeq: Optional[Tensor] = None) -> Tensor:
        """Same contract as :meth:`LLFlow.enhance` (any size; hist-eq on the unpadded image)."""
        lq = image_condition(low, histeq, self.config.multiple, self.acc_dtype, self.device)
        h, w = low.shape[-2:]
        out = self.forward_image(lq, temperature=temperature, eps=eps, generator=generator)[..., :h, :w]
        if clamp:
            out = out.clamp(0.0, 1.0)
        return out.to(device=low.device, dtype=low.dtype)

    # Duck-typing with LLFlow for code that only needs inference (e.g. tiling loops).
    def eval(self) -> "InferenceModel":
        return self

    def to(self, device: torch.device | str) -> "InferenceModel":
        want = torch.device(device)
        same = want.type == self.device.type and (want.index is None or self.device.index in (None, want.index))
        if not same:
            raise ValueError(f"this InferenceModel lives on {self.device}; prepare a new one for {device}")
        return self

    def __repr__(self) -> str:
        backend = "oneDNN fused" if self.use_mkldnn else "aten"
        return (f"InferenceModel(K={self.config.K}, nf={self.config.nf}, nb={self.config.nb}, "
                f"precision={self.precision}, device={self.device}, backend={backend}, "
                f"channels_last={self.channels_last})")


_squeeze_nchw, _unsqueeze_nchw = squeeze2d, unsqueeze2d


__all__ = ["InferenceModel", "PreparedCondition", "StepCondition", "FusedConv", "engine_dtype",
           "mkldnn_fusion_available", "squeeze_cl", "unsqueeze_cl"]
