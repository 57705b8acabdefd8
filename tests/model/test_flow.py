"""Properties every flow layer must have: exact inverse, correct log-det (against the autograd
Jacobian), log-dets of forward and inverse cancelling, and ActNorm's data-dependent init."""
from __future__ import annotations

from typing import Callable, Optional

import pytest
import torch

from llflow.model.flow import (ActNorm2d, CondAffineSeparatedAndCond, ConditionalFlow, FlowStep,
                               InvertibleConv1x1, Squeeze, squeeze2d, unsqueeze2d)



@pytest.fixture(autouse=True)
def float64_default():
    """Jacobian checks need float64; restore the default so other test modules are unaffected."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _randomise(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Give every parameter a non-trivial value (zero-initialised convs would hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module.eval()


def _layers() -> list[tuple[str, Callable[[], torch.nn.Module], int, Optional[int]]]:
    # name, constructor, channels, condition channels
    return [
        ("squeeze", lambda: Squeeze(2), 3, None),
        ("actnorm", lambda: ActNorm2d(4), 4, None),
        ("invconv", lambda: InvertibleConv1x1(4), 4, None),
        ("coupling", lambda: CondAffineSeparatedAndCond(5, 3, hidden_channels=6), 5, 3),
        ("flowstep_plain", lambda: FlowStep(4), 4, None),
        ("flowstep_cond", lambda: FlowStep(4, 3, hidden_channels=6), 4, 3),
    ]


def _inputs(channels: int, cond_channels: Optional[int], size: int = 4, batch: int = 2):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, channels, size, size, generator=gen)
    cond = torch.randn(batch, cond_channels, size, size, generator=gen) if cond_channels else None
    return x, cond


@pytest.mark.parametrize("name,make,channels,cond_channels", _layers())
def test_inverse_of_forward_is_identity(name, make, channels, cond_channels) -> None:
    layer = _randomise(make())
    x, cond = _inputs(channels, cond_channels)
    y, ld_fwd = layer(x, cond)
    x_back, ld_inv = layer.inverse(y, cond)
    torch.testing.assert_close(x_back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ld_fwd + ld_inv, torch.zeros_like(ld_fwd), rtol=0, atol=1e-10)
    assert ld_fwd.shape == (x.shape[0],)


@pytest.mark.parametrize("name,make,channels,cond_channels", _layers())
def test_logdet_matches_autograd_jacobian(name, make, channels, cond_channels) -> None:
    layer = _randomise(make())
    x, cond = _inputs(channels, cond_channels, size=2, batch=1)
    _, logdet = layer(x, cond)

    def flat_forward(v: torch.Tensor) -> torch.Tensor:
        return layer(v.reshape(x.shape), cond)[0].reshape(-1)

    jac = torch.autograd.functional.jacobian(flat_forward, x.reshape(-1))
    expected = torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(logdet[0], expected, rtol=1e-9, atol=1e-9)

    # and the inverse's log-det is log|det| of the inverse map's Jacobian
    y = layer(x, cond)[0]
    jac_inv = torch.autograd.functional.jacobian(lambda v: layer.inverse(v.reshape(y.shape), cond)[0].reshape(-1),
                                                 y.reshape(-1))
    torch.testing.assert_close(layer.inverse(y, cond)[1][0], torch.linalg.slogdet(jac_inv)[1], rtol=1e-9, atol=1e-9)


def test_whole_flow_roundtrip_and_jacobian() -> None:
    # moderate weights: a strongly contracting random flow would make the inverse ill-conditioned
    flow = _randomise(ConditionalFlow(K=1, L=3, n_plain=1, cond_channels=2, hidden_channels=4, dead_f_in_channels=4),
                      std=0.05)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 8, 8, generator=gen)
    conds = {lvl: torch.randn(1, 2, 8 >> lvl, 8 >> lvl, generator=gen) for lvl in (1, 2, 3)}
    z, logdet = flow(x, conds)
    assert z.shape == (1, 192, 1, 1)
    x_back, ld_inv = flow.inverse(z, conds)
    torch.testing.assert_close(x_back, x, rtol=1e-9, atol=1e-9)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.reshape(x.shape), conds)[0].reshape(-1), x.reshape(-1))
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jac)[1], rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(logdet + ld_inv, torch.zeros_like(logdet), rtol=0, atol=1e-8)


def test_squeeze_channel_order_and_inverse() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float64).reshape(2, 3, 8, 8)
    y = squeeze2d(x, 2)
    # channel c·4 + fy·2 + fx holds pixel (2i + fy, 2j + fx) of channel c
    assert torch.equal(y[:, 1 * 4 + 1 * 2 + 0], x[:, 1, 1::2, 0::2])
    assert torch.equal(unsqueeze2d(squeeze2d(x, 8), 8), x)
    with pytest.raises(ValueError, match="divisible"):
        squeeze2d(torch.zeros(1, 3, 6, 8), 4)


def test_actnorm_data_dependent_init() -> None:
    layer = ActNorm2d(5).train()
    gen = torch.Generator().manual_seed(4)
    x = 3.0 + 2.5 * torch.randn(8, 5, 6, 7, generator=gen)
    y, _ = layer(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(5), rtol=0, atol=1e-10)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(5), rtol=0, atol=1e-5)
    # initialised once: a second batch does not re-initialise
    bias = layer.bias.detach().clone()
    layer(x * 10)
    assert torch.equal(layer.bias.detach(), bias)


def test_actnorm_no_init_in_eval_or_with_loaded_weights() -> None:
    layer = ActNorm2d(3).eval()
    layer(torch.randn(2, 3, 4, 4) + 5)
    assert torch.count_nonzero(layer.bias) == 0
    loaded = ActNorm2d(3).train()
    with torch.no_grad():
        loaded.bias.fill_(0.5)
    loaded(torch.randn(2, 3, 4, 4) + 5)
    assert torch.all(loaded.bias == 0.5)


def test_invconv_cached_inverse_follows_weight_updates() -> None:
    conv = InvertibleConv1x1(6).eval()
    y = torch.randn(1, 6, 3, 3)
    with torch.no_grad():
        first = conv.inverse(y)[0]
        again = conv.inverse(y)[0]
        assert torch.equal(first, again)
        conv.weight.mul_(2.0)  # in-place update bumps the tensor version: cache must refresh
        torch.testing.assert_close(conv.inverse(y)[0], first / 2.0)


def test_invconv_inverse_is_differentiable() -> None:
    conv = InvertibleConv1x1(4).train()
    y = torch.randn(1, 4, 2, 2)
    x, logdet = conv.inverse(y)
    (x.sum() + logdet.sum()).backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
