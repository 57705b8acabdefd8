"""The enhancer with a fake engine: padding/cropping/clamping once for every engine, the result
object (no state kept on the enhancer), and the out-of-range report of the raw output."""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import pytest
import torch

import llflow
from llflow.engines import Engine
from llflow.inference import OUT_OF_RANGE_SHARE, Enhancement, Enhancer, OutOfRangeWarning, out_of_range_share

from ..conftest import tiny_llflow


class ConstantEngine:
    """Returns ``value`` everywhere, except ``bad`` (a share of the pixels, from the top-left in
    row-major order of the *padded* grid) set to 3.0; records what it was given."""

    name = "constant"
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, value: float = 0.5, bad: float = 0.0) -> None:
        self.value, self.bad = value, bad
        self.conditions: list[torch.Tensor] = []
        self.offsets: list[Optional[torch.Tensor]] = []

    def prepare(self, condition: torch.Tensor, uses: int = 1) -> torch.Tensor:
        self.conditions.append(condition)
        return condition

    def decode(self, prepared: torch.Tensor, offset: Optional[torch.Tensor] = None) -> torch.Tensor:
        self.offsets.append(offset)
        n, _, h, w = prepared.shape
        out = torch.full((n, 3, h, w), self.value)
        flat = out.view(n, 3, h * w)
        flat[..., : int(round(self.bad * h * w))] = 3.0
        return out



def test_a_fake_engine_is_padded_cropped_and_clamped_by_the_enhancer(tiny_net: llflow.LLFlow) -> None:
    engine = ConstantEngine(value=1.25)
    assert isinstance(engine, Engine)
    enhancer = Enhancer(tiny_net, torch.device("cpu"), engine=engine)
    assert enhancer.engine_name == "constant" and enhancer.backend is engine
    low = torch.rand(1, 3, 37, 45) * 0.3
    result = enhancer.run(low)
    assert isinstance(result, Enhancement) and result.exposure is None
    assert engine.conditions[0].shape == (1, 6, 40, 48)  # padded to the latent grid
    assert result.image.shape == (1, 3, 37, 45)  # cropped back
    assert float(result.image.max()) == 1.0  # clamped
    raw = enhancer.run(low, clamp=False).image
    assert raw.shape == (1, 3, 37, 45) and float(raw.min()) == 1.25
    samples = enhancer.run(low, n=3, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert len(samples.images) == 3 and all(o is not None and o.shape == (1, 192, 5, 6) for o in engine.offsets[-3:])
    assert not any(k.startswith("_exposure") or k == "last_exposure" for k in vars(enhancer))


def test_out_of_range_share_counts_pixels() -> None:
    raw = torch.zeros(1, 3, 10, 10)
    raw[0, 1, 0, 0] = 1.6
    raw[0, 0, 0, 1] = float("nan")
    raw[0, 2, 0, 2] = -0.6
    raw[0, :, 0, 3] = 1.5  # the bounds themselves are in range
    assert out_of_range_share(raw) == pytest.approx(0.03)


@pytest.mark.parametrize("tile", [0, 24])
def test_out_of_range_is_measured_once_on_the_raw_result(tiny_net: llflow.LLFlow, tile: int) -> None:
    low = torch.rand(1, 3, 64, 64) * 0.3
    flagged = Enhancer(tiny_net, torch.device("cpu"), engine=ConstantEngine(bad=0.01)).run(low, tile=tile, tile_pad=8)
    assert flagged.out_of_range > OUT_OF_RANGE_SHARE and flagged.out_of_range_note is not None
    assert "before clamping" in flagged.out_of_range_note and "%" in flagged.out_of_range_note
    assert float(flagged.image.max()) <= 1.0
    fine = Enhancer(tiny_net, torch.device("cpu"), engine=ConstantEngine(bad=0.0)).run(low, tile=tile, tile_pad=8)
    assert fine.out_of_range == 0.0 and fine.out_of_range_note is None


def test_the_api_warns_once_naming_the_input(tiny_net: llflow.LLFlow) -> None:
    low = (np.random.default_rng(0).random((40, 48, 3)) * 60).astype(np.uint8)
    bad = Enhancer(tiny_net, torch.device("cpu"), engine=ConstantEngine(bad=0.02))
    with pytest.warns(OutOfRangeWarning) as caught:
        out = llflow.enhance(low, model=bad)
    assert out.shape == low.shape and out.dtype == np.uint8
    messages = [str(w.message) for w in caught if w.category is OutOfRangeWarning]
    assert len(messages) == 1 and "array (40, 48, 3) uint8" in messages[0] and "%" in messages[0]
    with pytest.warns(OutOfRangeWarning, match="image 2 of 2"):
        llflow.sample(torch.rand(2, 3, 16, 16), n=2, model=bad, seed=0)
    good = Enhancer(tiny_net, torch.device("cpu"), engine=ConstantEngine(bad=0.0005))  # under 0.1 %
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        llflow.enhance(low, model=good)
