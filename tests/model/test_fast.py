"""The fast inference engine (llflow.model.fast) equals the reference path.

Each check runs on the official ``tiny`` fixture from the repository and, when the shared data is
present (``shared`` mark), on the official LOL_smallNet fixture weights: fp32 against the reference
modules (≤ 1e-5 relative to max|ref|, measured ~2e-6), fp64 against the official float64 outputs
(≤ 1e-9), bf16 as a sanity check (relaxed tolerance: the fixture network has random weights and is
strongly expansive in reverse, so this is a worst case), and that preparing an engine never changes
training numerics.
"""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F

from llflow import LLFlow
from llflow.model.fast import (InferenceModel, PreparedCondition, _add_identity, _div_add, mkldnn_fusion_available,
                               squeeze_cl, unsqueeze_cl)
from llflow.model.flow import squeeze2d, unsqueeze2d

from ..official import Reference, official_io, official_state, source_param

FP32_TOL = 1e-5
PRESET = {"lol_smallnet": "LOL_smallNet", "tiny": "tiny"}
#: (fixture source, network): the repository's tiny fixture always, LOL_smallNet with ../shared.
CASES = [source_param("repo", "tiny"), source_param("shared", "lol_smallnet")]
NETWORK = {"repo": "tiny", "shared": "lol_smallnet"}


@lru_cache(maxsize=None)
def _model(name: str, source: str) -> LLFlow:
    model = LLFlow.from_config(PRESET[name])
    model.load_state_dict(official_state(name, source))
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=CASES)
def source(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def name(source: str) -> str:
    return NETWORK[source]


@pytest.fixture(scope="module")
def io64(source: str, name: str) -> Reference:
    return official_io(name, "io_float64", source)


@pytest.mark.parametrize("options", [{}, {"fused": False}, {"fused": False, "channels_last": False}],
                         ids=["fused-channels-last", "aten-channels-last", "aten-nchw"])
def test_fp32_fast_path_equals_reference(io64: Reference, name: str, source: str, options: dict) -> None:
    model = _model(name, source)
    lq, eps = io64["input.lq"].float(), io64["sample.eps"].float()
    engine = model.prepare_for_inference("fp32", **options)
    with torch.no_grad():
        ref_x, ref_ld = model.reverse(lq)
        ref_s, ref_sld = model.reverse(lq, temperature=0.8, eps=eps)
    x, ld = engine.reverse(lq)
    s, sld = engine.reverse(lq, temperature=0.8, eps=eps)
    assert x.dtype == torch.float32 and x.shape == ref_x.shape and x.is_contiguous()
    assert _rel(x, ref_x) <= FP32_TOL
    assert _rel(s, ref_s) <= FP32_TOL
    torch.testing.assert_close(ld, ref_ld, rtol=FP32_TOL, atol=0)
    torch.testing.assert_close(sld, ref_sld, rtol=FP32_TOL, atol=0)
    # ... and therefore the official outputs, within the fixture tolerance
    assert _rel(io64.take("rev0.x", x), io64["rev0.x"]) <= FP32_TOL
    assert _rel(io64.take("sample.x", s), io64["sample.x"]) <= FP32_TOL


def test_fp64_engine_matches_official_float64(io64: Reference, name: str, source: str) -> None:
    model = LLFlow.from_config(PRESET[name])
    model.load_state_dict(official_state(name, source))
    model = model.double().eval()
    engine = model.prepare_for_inference("fp64")
    x, ld = engine.reverse(io64["input.lq"])
    s, _ = engine.reverse(io64["input.lq"], temperature=0.8, eps=io64["sample.eps"])
    assert _rel(io64.take("rev0.x", x), io64["rev0.x"]) <= 1e-9
    assert _rel(io64.take("sample.x", s), io64["sample.x"]) <= 1e-9
    torch.testing.assert_close(ld, io64["rev0.logdet"], rtol=1e-9, atol=0)


def test_prepare_condition_and_decode(io64: Reference, name: str, source: str) -> None:
    model = _model(name, source)
    lq, eps = io64["input.lq"].float(), io64["sample.eps"].float()
    engine = model.prepare_for_inference("fp32")
    prepared = engine.prepare_condition(lq, with_logdet=True)
    assert isinstance(prepared, PreparedCondition) and prepared.batch == 2 and prepared.size == (64, 96)
    assert prepared.nbytes() > 0
    x_mean = engine.decode(prepared)
    x_s, ld_s = engine.decode(prepared, temperature=0.8, eps=eps, return_logdet=True)
    x_z = engine.decode(prepared, z=prepared.mean + 0.8 * eps)
    ref_mean, _ = engine.reverse(lq)
    ref_s, ref_ld = engine.reverse(lq, temperature=0.8, eps=eps)
    assert torch.equal(x_mean, ref_mean)
    assert torch.equal(x_s, ref_s) and torch.equal(x_z, ref_s)
    torch.testing.assert_close(ld_s, ref_ld, rtol=1e-6, atol=0)
    # Generator draws are reproducible and differ from the mean.
    g1 = engine.decode(prepared, temperature=0.8, generator=torch.Generator().manual_seed(3))
    g2 = engine.decode(prepared, temperature=0.8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(g1, g2) and not torch.allclose(g1, x_mean)
    with pytest.raises(ValueError, match="with_logdet"):
        engine.decode(engine.prepare_condition(lq), return_logdet=True)
    with pytest.raises(ValueError, match="z has shape"):
        engine.decode(prepared, z=torch.zeros(1, 192, 8, 12))


def test_llflow_prepare_condition_api_follows_weight_changes(io64: Reference, source: str) -> None:
    model = LLFlow.from_config("tiny")
    model.load_state_dict(official_state("tiny", source))
    model.eval()
    lq = io64["input.lq"].float()
    with torch.no_grad():
        ref, _ = model.reverse(lq)
    prepared = model.prepare_condition(lq)
    assert _rel(model.decode(prepared), ref) <= FP32_TOL
    with torch.no_grad():  # a training step would do this: the cached engine must notice
        model.flowUpsamplerNet.layers[3].affine.fAffine[4].bias.add_(0.05)
        ref2, _ = model.reverse(lq)
    assert _rel(model.decode(model.prepare_condition(lq)), ref2) <= FP32_TOL
    assert not torch.allclose(ref, ref2)
    with pytest.raises(ValueError, match="divisible by 8"):
        model.prepare_condition(lq[..., :60, :])


def test_preparing_does_not_touch_training_numerics() -> None:
    torch.manual_seed(0)
    model = LLFlow.from_config("tiny").train()
    lq = torch.randn(2, 6, 32, 48)
    gt = torch.rand(2, 3, 32, 48)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nll_before = model.likelihood(lq, gt).nll  # initialises the ActNorms (training mode)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    grads_before = torch.autograd.grad(nll_before.sum(), params, allow_unused=True)
    model.prepare_for_inference("fp32")
    model.prepare_for_inference("bf16") if mkldnn_fusion_available(torch.device("cpu"), torch.bfloat16) else None
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith(("RRDB.downconv3", "RRDB.HRconv",
                                                                                        "RRDB.conv_last", "RRDB.awb_para",
                                                                                        "flowUpsamplerNet.f.")))
    nll_after = model.likelihood(lq, gt).nll
    grads_after = torch.autograd.grad(nll_after.sum(), params, allow_unused=True)
    assert torch.equal(nll_before, nll_after)
    for a, b in zip(grads_before, grads_after):
        assert (a is None and b is None) or torch.equal(a, b)
    assert len(before) == len(state)


def test_enhance_any_size_matches_reference(name: str, source: str) -> None:
    model = _model(name, source)
    low = torch.rand(1, 3, 37, 61, generator=torch.Generator().manual_seed(4)) * 0.3
    ref = model.enhance(low, clamp=False)
    out = model.prepare_for_inference("fp32").enhance(low, clamp=False)
    assert out.shape == low.shape
    assert _rel(out, ref) <= FP32_TOL
    clamped = model.prepare_for_inference("fp32").enhance(low)
    assert clamped.min() >= 0 and clamped.max() <= 1


def test_bf16_sanity(io64: Reference, name: str, source: str) -> None:
    if not mkldnn_fusion_available(torch.device("cpu"), torch.bfloat16):
        pytest.skip("this CPU/PyTorch has no oneDNN bf16 support")
    model = _model(name, source)
    lq = io64["input.lq"].float()
    with torch.no_grad():
        ref, ref_ld = model.reverse(lq)
    for options in ({}, {"fused": False}):  # fused oneDNN path and the generic path used on GPUs
        engine = model.prepare_for_inference("bf16", **options)
        x, ld = engine.reverse(lq)
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
        # random fixture weights amplify errors ~10× more than trained ones; measured ≈ 5e-3
        assert _rel(x, ref) <= 3e-2
        torch.testing.assert_close(ld, ref_ld, rtol=1e-3, atol=0)


def test_fp16_needs_a_gpu_and_bad_inputs_are_rejected() -> None:
    model = _model("tiny", "repo")
    with pytest.raises(ValueError, match="GPU"):
        InferenceModel(model, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        model.prepare_for_inference("int8")
    engine = model.prepare_for_inference()
    with pytest.raises(ValueError, match="N×6×H×W"):
        engine.reverse(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="divisible by 8"):
        engine.reverse(torch.zeros(1, 6, 12, 16))
    assert "InferenceModel(" in repr(engine)


@pytest.mark.parametrize("factor", [2, 8])
def test_channels_last_squeeze_matches_official_order(factor: int) -> None:
    x = torch.randn(2, 3 * 4, 16, 24)
    ref = squeeze2d(x, factor)
    out = squeeze_cl(x.contiguous(memory_format=torch.channels_last), factor)
    assert torch.equal(out, ref) and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(unsqueeze_cl(out, factor), unsqueeze2d(ref, factor))
    assert torch.equal(unsqueeze_cl(out, factor), x)


@pytest.mark.parametrize("coef", [1.0, 0.2])
def test_residual_folded_into_conv_weights(coef: float) -> None:
    """conv(x; W + coef·δ) = conv(x; W) + coef·x[:, :out] — how the dense blocks' skip connections
    are computed in full precision."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 20, 3, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 20, 9, 11, generator=gen, dtype=torch.float64)
    folded = F.conv2d(x, _add_identity(w, coef), padding=1)
    torch.testing.assert_close(folded, F.conv2d(x, w, padding=1) + coef * x[:, :8], rtol=0, atol=1e-12)


def test_one_pass_affine_is_bit_identical_to_two_passes() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 12, 40, 60, generator=gen).contiguous(memory_format=torch.channels_last)
    scale = torch.sigmoid(torch.randn(1, 12, 40, 60, generator=gen) + 2.0).add_(1e-4)
    shift = torch.randn(1, 12, 40, 60, generator=gen)
    assert torch.equal(_div_add(z, scale, -shift), z / scale - shift)
