"""The public model API: enhance() on any size, sampling with temperature, nll()."""
from __future__ import annotations

import pytest
import torch

from llflow import LLFlow
from llflow.preprocess import equalize_histogram_tensor

from ..conftest import tiny_llflow



@pytest.mark.parametrize("size", [(37, 61), (1, 1), (8, 8), (600, 401), (2, 9), (15, 3)])
def test_any_size_enhances_to_input_size(tiny_net: LLFlow, size: tuple[int, int]) -> None:
    low = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1)) * 0.2
    out = tiny_net.enhance(low)
    assert out.shape == low.shape
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_smallnet_odd_size() -> None:
    model = LLFlow.from_config("LOL_smallNet").eval()
    low = torch.rand(2, 3, 37, 61) * 0.2
    assert model.enhance(low).shape == (2, 3, 37, 61)


def test_histeq_is_taken_on_the_unpadded_image(tiny_net: LLFlow) -> None:
    low = torch.rand(1, 3, 37, 61, generator=torch.Generator().manual_seed(2)) * 0.3
    default = tiny_net.enhance(low)
    explicit = tiny_net.enhance(low, histeq=equalize_histogram_tensor(low))
    assert torch.equal(default, explicit)
    padded_histeq = equalize_histogram_tensor(torch.nn.functional.pad(low, (0, 3, 0, 3), mode="reflect"))[..., :37, :61]
    assert not torch.equal(tiny_net.enhance(low, histeq=padded_histeq), default)


def test_temperature_sampling(tiny_net: LLFlow) -> None:
    low = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(3)) * 0.2
    mean = tiny_net.enhance(low, clamp=False)
    s1 = tiny_net.enhance(low, temperature=0.8, generator=torch.Generator().manual_seed(5), clamp=False)
    s1_again = tiny_net.enhance(low, temperature=0.8, generator=torch.Generator().manual_seed(5), clamp=False)
    s2 = tiny_net.enhance(low, temperature=0.8, generator=torch.Generator().manual_seed(6), clamp=False)
    assert torch.equal(s1, s1_again)
    assert not torch.allclose(s1, s2) and not torch.allclose(s1, mean)
    eps = torch.randn(1, 192, 4, 5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(tiny_net.enhance(low, temperature=0.8, eps=eps, clamp=False), s1)
    torch.testing.assert_close(tiny_net.enhance(low, temperature=0.0, eps=eps, clamp=False), mean)


def test_eps_shape_is_checked(tiny_net: LLFlow) -> None:
    low = torch.rand(1, 3, 37, 61)
    ok = torch.randn(1, 192, 5, 8)  # ceil(37/8) × ceil(61/8)
    assert tiny_net.enhance(low, temperature=0.5, eps=ok).shape == low.shape
    with pytest.raises(ValueError, match=r"N×192×ceil\(H/8\)×ceil\(W/8\)"):
        tiny_net.enhance(low, temperature=0.5, eps=torch.randn(1, 192, 4, 7))


def test_input_validation(tiny_net: LLFlow) -> None:
    with pytest.raises(ValueError, match="N×3×H×W"):
        tiny_net.enhance(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="float"):
        tiny_net.enhance(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="divisible by 8"):
        tiny_net.nll(torch.rand(1, 3, 12, 16), torch.rand(1, 3, 12, 16))


def test_nll_priors_and_gradients() -> None:
    torch.manual_seed(0)
    model = LLFlow.from_config("tiny").train()
    low, gt = torch.rand(2, 3, 16, 24) * 0.2, torch.rand(2, 3, 16, 24)
    nll = model.nll(low, gt)  # first training call initialises the ActNorms from data
    assert nll.shape == (2,) and torch.isfinite(nll).all()
    nll.mean().backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        picks = {float(model.nll(low, gt, prior="random", generator=gen)[0]) for _ in range(30)}
    assert len(picks) == 2  # both the encoder and the reference colour-map priors were selected
    deq = model.nll(low, gt, dequantize=True, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(deq).all()


def test_reverse_is_differentiable_for_l1_training() -> None:
    torch.manual_seed(0)
    model = LLFlow.from_config("tiny").train()
    model.mark_initialized()
    low = torch.rand(1, 3, 16, 16) * 0.2
    from llflow.preprocess import make_condition
    out, _ = model.reverse(make_condition(low))
    out.abs().mean().backward()
    assert model.RRDB.conv_first.weight.grad is not None
    assert model.flowUpsamplerNet.layers[3].invconv.weight.grad is not None
