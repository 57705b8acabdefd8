"""A bounded inverse for inference: the flow cannot explode on inputs unlike its training data.

Diagnosis (``experiments/flow_stability/``): on bright photos (DICM 53, a floodlit pool) the latent
drifts out of its training range over levels 3 and 2 (|z| 12–17 where dark photos stay below 3);
at level 1 a coupling's scale network, fed that out-of-range half and conditions unlike any in
training, returns scales at their floor (1e-4), and the inverse divides by them: 5.7e4 after one
step, 1.5e8 after the next, 1e17 in the worst photos. The two divisions of each conditional step,
``z2 / scale`` (coupling) and ``z / scale_f`` (injector), are the only operations that amplify, so
the guard bounds exactly those two terms, per channel, to the range they take on the training data
(forward passes of the references and τ = 0 reverse passes of the inputs) widened by a margin. The
step's output is then ``bounded term − shift``: where the guard acts, the result follows the shift
the network predicts from the condition instead of an amplified error (measured: fewer out-of-range
values and no speckle, where clamping the step's output itself left 8 % of DICM 53 below −0.5).
Values inside the ranges pass unchanged, so outputs that never needed the guard are bit-identical.

The ranges are stored in llflow ``.safetensors`` files as ``inverse_guard.<layer>.<term>.low|high``
(float32, one value per channel), outside the official state dict; files without them (official
``.pth`` releases) get :data:`FALLBACK_BOUND` for every channel, which prevents overflow but not
garbage: measure ranges with :func:`measure_guard` for such weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Optional

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .llflow import LLFlow

GUARD_PREFIX = "inverse_guard."
#: Bound on |value| after each coupling for weights without measured ranges (official releases).
FALLBACK_BOUND = 100.0
#: Margin added on each side of a measured range, as a fraction of the range's width.
DEFAULT_MARGIN = 0.5


TERMS = ("coupling", "injector")
Bounds = tuple[Tensor, Tensor]


@dataclass
class InverseGuard:
    """Per-channel ``(low, high)`` of the two division terms of each conditional affine inverse,
    ``bounds[layer][term]`` with ``layer`` the flow layer index (``flowUpsamplerNet.layers[i]``) and
    ``term`` ``"coupling"`` (z2 / scale, C/2 channels) or ``"injector"`` (z / scale_f, C channels)."""

    bounds: dict[int, dict[str, Bounds]]
    measured: bool = True

    def to_state(self) -> dict[str, Tensor]:
        state = {}
        for index, terms in sorted(self.bounds.items()):
            for term, (low, high) in terms.items():
                state[f"{GUARD_PREFIX}{index}.{term}.low"] = low.detach().float().cpu().contiguous()
                state[f"{GUARD_PREFIX}{index}.{term}.high"] = high.detach().float().cpu().contiguous()
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor]) -> Optional["InverseGuard"]:
        bounds: dict[int, dict[str, Bounds]] = {}
        for key in state:
            if key.startswith(GUARD_PREFIX) and key.endswith(".low"):
                index, term = key[len(GUARD_PREFIX):-len(".low")].split(".")
                if term not in TERMS:
                    raise ValueError(f"unknown inverse guard term in '{key}'")
                high = state[key[:-len(".low")] + ".high"]
                bounds.setdefault(int(index), {})[term] = (state[key].float(), high.float())
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
            sizes = {"coupling": affine.channels_second, "injector": affine.channels_first + affine.channels_second}
            bounds[index] = {t: (torch.full((c,), -FALLBACK_BOUND), torch.full((c,), FALLBACK_BOUND))
                             for t, c in sizes.items()}
    return InverseGuard(bounds, measured=False)


class _RangeMeter:
    def __init__(self) -> None:
        self.low: dict[tuple[int, str], Tensor] = {}
        self.high: dict[tuple[int, str], Tensor] = {}

    def add(self, key: tuple[int, str], x: Tensor) -> None:
        x = x.detach().double()
        lo, hi = x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3))
        if key in self.low:
            lo, hi = torch.minimum(lo, self.low[key]), torch.maximum(hi, self.high[key])
        self.low[key], self.high[key] = lo, hi


def trace_division_terms(model: "LLFlow", conds: dict[int, Tensor], z: Tensor,
                         visit: Callable[[tuple[int, str], Tensor], None]) -> Tensor:
    """The unguarded reverse pass from the latent ``z`` with the level conditions ``conds``, calling
    ``visit((layer, term), quotient)`` for both division terms of every conditional step; returns
    the raw image."""
    flow = model.flowUpsamplerNet
    for index in reversed(range(len(flow.layers))):
        layer, level = flow.layers[index], flow.level_of_layer[index]
        affine = getattr(layer, "affine", None)
        if affine is None:
            z, _ = layer.inverse(z, conds.get(level))
            continue
        z1, z2 = z[:, :affine.channels_first], z[:, affine.channels_first:]
        shift, scale = affine.coupling(z1, conds[level])
        quotient = z2 / scale
        visit((index, "coupling"), quotient)
        shift_f, scale_f = affine.injector(conds[level])
        quotient = torch.cat([z1, quotient - shift], dim=1) / scale_f
        visit((index, "injector"), quotient)
        z, _ = layer.invconv.inverse(quotient - shift_f)
        z, _ = layer.actnorm.inverse(z)
    return z


@torch.no_grad()
def measure_guard(model: "LLFlow", pairs: Iterable[tuple[Tensor, Tensor]], margin: float = DEFAULT_MARGIN) -> InverseGuard:
    """Ranges of the division terms of every conditional affine layer on ``pairs`` of ``(low, gt)``
    1×3×H×W float tensors in [0, 1] (H, W multiples of 8), in the forward pass of ``gt`` (where the
    terms are ``x + shift_f`` and ``z2 + shift``) and the τ = 0 reverse pass of ``low``, widened by
    ``margin`` × width on each side."""
    from .encoder import stack_conditions
    from ..preprocess import image_condition

    flow = model.flowUpsamplerNet
    meter = _RangeMeter()
    for low, gt in pairs:
        lq = image_condition(low, None, model.config.multiple, model.dtype, model.device)
        enc = model.encode(lq)
        conds = stack_conditions(enc)
        x = gt.to(lq)
        for index, (layer, level) in enumerate(zip(flow.layers, flow.level_of_layer)):
            affine = getattr(layer, "affine", None)
            if affine is None:
                x, _ = layer(x, conds.get(level))
                continue
            x, _ = layer.actnorm(x)
            x, _ = layer.invconv(x)
            shift_f, scale_f = affine.injector(conds[level])
            meter.add((index, "injector"), x + shift_f)
            z = (x + shift_f) * scale_f
            z1, z2 = z[:, :affine.channels_first], z[:, affine.channels_first:]
            shift, scale = affine.coupling(z1, conds[level])
            meter.add((index, "coupling"), z2 + shift)
            x = torch.cat([z1, (z2 + shift) * scale], dim=1)
        trace_division_terms(model, conds, model.prior_mean(enc), meter.add)
    if not meter.low:
        raise ValueError("measure_guard: no pairs given")
    bounds: dict[int, dict[str, Bounds]] = {}
    for (index, term), lo in meter.low.items():
        hi = meter.high[(index, term)]
        pad = margin * (hi - lo)
        bounds.setdefault(index, {})[term] = ((lo - pad).float(), (hi + pad).float())
    return InverseGuard(bounds)
