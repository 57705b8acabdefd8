"""A bounded inverse for inference: the flow cannot explode on inputs unlike its training data.

Diagnosis (``experiments/flow_stability/``): on bright photos (DICM 53, a floodlit pool) the latent
drifts out of its training range over levels 3 and 2 (|z| 12–17 where dark photos stay below 3);
at level 1 a coupling's scale network, fed that out-of-range half, returns scales at their floor
(1e-4), and the inverse divides by them: 5.7e4 after one step, 1.5e8 after the next, 1e17 in the
worst photos. The division is the only operation that amplifies, so the guard sits right after it:
the output of every conditional affine inverse is clamped, per channel, to the range that layer's
values take on the training data (forward passes of the references and τ = 0 reverse passes of
the inputs), widened by a margin. Values inside the range pass unchanged (bit for bit), so outputs
that never needed the guard are identical with and without it.

The ranges are stored in llflow ``.safetensors`` files as ``inverse_guard.<layer>.low|high``
(float32, one value per channel), outside the official state dict; files without them (official
``.pth`` releases) get :data:`FALLBACK_BOUND` for every channel, which prevents overflow but not
garbage: measure ranges with :func:`measure_guard` for such weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Optional

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .llflow import LLFlow

GUARD_PREFIX = "inverse_guard."
#: Bound on |value| after each coupling for weights without measured ranges (official releases).
FALLBACK_BOUND = 100.0
#: Margin added on each side of a measured range, as a fraction of the range's width.
DEFAULT_MARGIN = 0.5


@dataclass
class InverseGuard:
    """Per-channel ``[low, high]`` for the output of each conditional affine inverse, keyed by the
    flow layer index (``flowUpsamplerNet.layers[i]``)."""

    bounds: dict[int, tuple[Tensor, Tensor]]
    measured: bool = True

    def to_state(self) -> dict[str, Tensor]:
        state = {}
        for index, (low, high) in sorted(self.bounds.items()):
            state[f"{GUARD_PREFIX}{index}.low"] = low.detach().float().cpu().contiguous()
            state[f"{GUARD_PREFIX}{index}.high"] = high.detach().float().cpu().contiguous()
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor]) -> Optional["InverseGuard"]:
        bounds: dict[int, tuple[Tensor, Tensor]] = {}
        for key in state:
            if key.startswith(GUARD_PREFIX) and key.endswith(".low"):
                index = int(key[len(GUARD_PREFIX):-len(".low")])
                bounds[index] = (state[key].float(), state[f"{GUARD_PREFIX}{index}.high"].float())
        return cls(bounds) if bounds else None


def split_guard_state(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], Optional[InverseGuard]]:
    """``(the network's state dict, the guard stored beside it or None)``."""
    network = {k: v for k, v in state.items() if not k.startswith(GUARD_PREFIX)}
    return network, InverseGuard.from_state(state)


def fallback_guard(model: "LLFlow") -> InverseGuard:
    bounds = {}
    for index, layer in enumerate(model.flowUpsamplerNet.layers):
        affine = getattr(layer, "affine", None)
        if affine is not None:
            c = affine.channels_first + affine.channels_second
            bounds[index] = (torch.full((c,), -FALLBACK_BOUND), torch.full((c,), FALLBACK_BOUND))
    return InverseGuard(bounds, measured=False)


class _RangeMeter:
    def __init__(self) -> None:
        self.low: dict[int, Tensor] = {}
        self.high: dict[int, Tensor] = {}

    def add(self, index: int, x: Tensor) -> None:
        x = x.detach().double()
        lo, hi = x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3))
        if index in self.low:
            lo, hi = torch.minimum(lo, self.low[index]), torch.maximum(hi, self.high[index])
        self.low[index], self.high[index] = lo, hi


@torch.no_grad()
def measure_guard(model: "LLFlow", pairs: Iterable[tuple[Tensor, Tensor]], margin: float = DEFAULT_MARGIN) -> InverseGuard:
    """Ranges of every conditional affine layer's input (= its inverse's output) on ``pairs`` of
    ``(low, gt)`` 1×3×H×W float tensors in [0, 1] (H, W multiples of 8): the forward pass of ``gt``
    and the τ = 0 reverse pass of ``low``, widened by ``margin`` × width on each side."""
    from .encoder import stack_conditions
    from .llflow import image_condition

    flow = model.flowUpsamplerNet
    meter = _RangeMeter()
    for low, gt in pairs:
        lq = image_condition(low, None, model.config.multiple, model.dtype, model.device)
        conds = stack_conditions(model.encode(lq))
        x = gt.to(lq)
        for index, (layer, level) in enumerate(zip(flow.layers, flow.level_of_layer)):
            affine = getattr(layer, "affine", None)
            if affine is None:
                x, _ = layer(x, conds.get(level))
                continue
            x, _ = layer.actnorm(x)
            x, _ = layer.invconv(x)
            meter.add(index, x)
            x, _ = affine(x, conds[level])
        z = model.prior_mean(model.encode(lq))
        for index in reversed(range(len(flow.layers))):
            layer, level = flow.layers[index], flow.level_of_layer[index]
            affine = getattr(layer, "affine", None)
            if affine is None:
                z, _ = layer.inverse(z, conds.get(level))
                continue
            z, _ = affine.inverse(z, conds[level], guarded=False)
            meter.add(index, z)
            z, _ = layer.invconv.inverse(z)
            z, _ = layer.actnorm.inverse(z)
    if not meter.low:
        raise ValueError("measure_guard: no pairs given")
    bounds = {}
    for index in meter.low:
        lo, hi = meter.low[index], meter.high[index]
        pad = margin * (hi - lo)
        bounds[index] = ((lo - pad).float(), (hi + pad).float())
    return InverseGuard(bounds)
