"""The engine contract: what every way of running the network provides to the enhancer.

An engine turns a *condition* — the N×6×H×W network input of :func:`llflow.preprocess.make_condition`,
already padded to the latent grid (multiples of 8) — into raw images::

    prepared = engine.prepare(condition, uses=n)   # encoder and condition-only work, once
    raw = engine.decode(prepared, offset)          # z = μ + offset (None: z = μ exactly) → N×3×H×W

``raw`` is the padded, unclamped flow output. Padding, cropping, clamping, tiling, sampling and the
exposure search live in :class:`llflow.inference.Enhancer`, once, for every engine (the way spandrel's
``ModelDescriptor`` wraps a bare network). ``uses`` says how many latents will be decoded: an engine
may stream a single decode (the fast engine frees each step's tensors as it goes) and cache the
condition-only work for several.

Engines (``name``): ``reference`` (:class:`ReferenceEngine`, the official module structure, autocast
for bf16/fp16), ``fast`` (:class:`FastEngine`, :class:`llflow.model.fast.InferenceModel`) and
``onnxruntime`` (:class:`llflow.ort_engine.OrtEngine`). Engines depend on the model and the runtime
only, never on the application layer (inference, CLI, demo). Tests pass their own (any object with
``name``, ``device``, ``dtype``, ``prepare`` and ``decode``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union, runtime_checkable

import torch
from torch import Tensor

from . import runtime
from .model import LLFlow
from .model.encoder import stack_conditions
from .model.fast import InferenceModel

ENGINES = ("fast", "reference", "onnxruntime")


@runtime_checkable
class Engine(Protocol):
    """What :class:`~llflow.inference.Enhancer` needs from a way of running the network."""

    name: str
    device: torch.device
    dtype: torch.dtype  # of the condition it takes

    def prepare(self, condition: Tensor, uses: int = 1) -> Any:
        """Work that does not depend on the latent, for an N×6×H×W condition (multiples of 8)."""

    def decode(self, prepared: Any, offset: Optional[Tensor] = None) -> Tensor:
        """Raw N×3×H×W image (padded size, unclamped) at ``z = μ + offset``."""


@dataclass
class _Encoded:
    mean: Tensor
    conditions: Any


class ReferenceEngine:
    """:class:`~llflow.model.LLFlow` itself (bit-for-bit the official module structure); bf16/fp16
    through autocast (weights stay fp32)."""

    name = "reference"

    def __init__(self, net: LLFlow, device: torch.device, precision: runtime.PrecisionChoice) -> None:
        self.net, self.device, self.precision = net, device, precision
        self.dtype = net.dtype

    @torch.no_grad()
    def prepare(self, condition: Tensor, uses: int = 1) -> _Encoded:
        with runtime.autocast(self.device, self.precision):
            enc = self.net.encode(condition.to(self.device, self.dtype))
            return _Encoded(self.net.prior_mean(enc), stack_conditions(enc))

    @torch.no_grad()
    def decode(self, prepared: _Encoded, offset: Optional[Tensor] = None) -> Tensor:
        with runtime.autocast(self.device, self.precision):
            z = self.net.sample_latent(prepared.mean, 0.0 if offset is None else 1.0, offset)
            return self.net.flowUpsamplerNet.inverse(z, prepared.conditions)[0]


@dataclass
class _Streamed:
    condition: Tensor


class FastEngine:
    """The fast inference engine (:class:`~llflow.model.fast.InferenceModel`: folded layers, fused
    kernels; fp32 within ~1e-6 relative of the reference; bf16/fp16 inside)."""

    name = "fast"

    def __init__(self, net: Union[LLFlow, InferenceModel], device: torch.device,
                 precision: Union[runtime.PrecisionChoice, str]) -> None:
        name = precision.name if isinstance(precision, runtime.PrecisionChoice) else precision
        self.model = net if isinstance(net, InferenceModel) else net.prepare_for_inference(precision=name, device=device)
        self.device, self.dtype = self.model.device, self.model.acc_dtype

    def prepare(self, condition: Tensor, uses: int = 1) -> Any:
        lq = condition.to(self.device, self.dtype)
        # One latent: one streaming pass (each step's condition tensors freed after the step);
        # several: the condition-only work once, kept for every decode.
        return _Streamed(lq) if uses <= 1 else self.model.prepare_condition(lq)

    def decode(self, prepared: Any, offset: Optional[Tensor] = None) -> Tensor:
        tau, eps = (0.0, None) if offset is None else (1.0, offset.to(self.device))
        if isinstance(prepared, _Streamed):
            return self.model.forward_image(prepared.condition, temperature=tau, eps=eps)
        return self.model.decode(prepared, temperature=tau, eps=eps)


def check_engine(engine: str, device: torch.device, precision: str) -> None:
    """``ValueError`` with what to change when ``engine`` cannot run ``precision`` on ``device``."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine == "onnxruntime" and (device.type != "cpu" or precision != "fp32"):
        raise ValueError(f"engine onnxruntime runs fp32 on the CPU, not {precision} on {device}: "
                         "use device cpu and precision fp32, or engine fast")


def build_engine(name: str, net: Any, device: torch.device, precision: runtime.PrecisionChoice) -> Engine:
    """The engine ``name`` for ``net`` on ``device``. A network without a fast engine (a bare
    :class:`InferenceModel` is its own) runs as the reference."""
    check_engine(name, device, precision.name)
    if name == "onnxruntime":
        from .ort_engine import OrtEngine

        return OrtEngine(net)
    if name == "fast" and (isinstance(net, InferenceModel) or hasattr(net, "prepare_for_inference")):
        return FastEngine(net, device, precision)
    return ReferenceEngine(net, device, precision)


__all__ = ["ENGINES", "Engine", "FastEngine", "ReferenceEngine", "build_engine", "check_engine"]
