"""The inference guard (llflow.model.guard): outputs it does not act on are bit-identical, an
exploding inverse stays bounded in every engine, and the ranges travel with the weights."""
from __future__ import annotations

import pytest
import torch

from llflow import LLFlow
from llflow.model.guard import FALLBACK_BOUND, InverseGuard, fallback_guard, measure_guard

from ..conftest import tiny_llflow

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(seed: int, n: int = 2, h: int = 32, w: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 3, h, w, generator=gen) * 0.6 + 0.2
    low = (gt * 0.1 + 0.01 * torch.rand(n, 3, h, w, generator=gen)).clamp(0, 1)
    return low, gt


def _exploding(model: LLFlow) -> LLFlow:
    """Push every coupling scale to its floor (sigmoid(-30 + 2) + 1e-4): each inverse divides by 1e-4."""
    with torch.no_grad():
        for layer in model.flowUpsamplerNet.layers:
            if getattr(layer, "affine", None) is not None:
                layer.affine.fAffine[4].bias[1::2] = -30.0
    return model


@pytest.fixture(scope="module")
def guarded_tiny() -> tuple[LLFlow, torch.Tensor]:
    model = tiny_llflow(perturb=0.05, seed=11)
    low, gt = _images(0)
    model.set_inverse_guard(measure_guard(model, [(low[i:i + 1], gt[i:i + 1]) for i in range(2)]))
    return model, low


def test_measured_ranges_cover_the_values_they_were_measured_on(guarded_tiny) -> None:
    model, low = guarded_tiny
    guard = model.inverse_guard
    assert guard is not None and guard.measured
    affine_layers = [i for i, l in enumerate(model.flowUpsamplerNet.layers) if getattr(l, "affine", None) is not None]
    assert sorted(guard.bounds) == affine_layers
    for index, terms in guard.bounds.items():
        affine = model.flowUpsamplerNet.layers[index].affine
        assert terms["coupling"][0].numel() == affine.channels_second
        assert terms["injector"][0].numel() == affine.channels_first + affine.channels_second
        for lo, hi in terms.values():
            assert (lo < hi).all()


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_guard_leaves_in_range_outputs_bit_identical(guarded_tiny, engine) -> None:
    model, low = guarded_tiny
    plain = tiny_llflow(perturb=0.05, seed=11)
    plain.set_inverse_guard(None)
    if engine == "reference":
        a, b = model.enhance(low, clamp=False), plain.enhance(low, clamp=False)
    else:
        a = model.prepare_for_inference("fp32").enhance(low, clamp=False)
        b = plain.prepare_for_inference("fp32").enhance(low, clamp=False)
    assert torch.equal(a, b)


def test_guard_bounds_an_exploding_inverse_in_every_engine(tmp_path) -> None:
    model = _exploding(tiny_llflow(perturb=0.05, seed=11))
    low, gt = _images(0)
    model.set_inverse_guard(None)
    raw = model.enhance(low, clamp=False)
    assert not torch.isfinite(raw).all() or raw.abs().max() > 1e6  # what the guard is for
    model.set_inverse_guard(measure_guard(tiny_llflow(perturb=0.05, seed=11), [(low[:1], gt[:1])]))
    outputs = {"reference": model.enhance(low, clamp=False),
               "fast": model.prepare_for_inference("fp32").enhance(low, clamp=False),
               "fast-fp64": model.double().prepare_for_inference("fp64").enhance(low.double(), clamp=False).float()}
    model.float()
    # bf16 runs the sub-networks in bf16 but the divisions (and the guard) in fp32: bounded too.
    bf16 = model.prepare_for_inference("bf16", fused=False).enhance(low, clamp=False)
    assert torch.isfinite(bf16).all() and bf16.abs().max() < 1e3
    pytest.importorskip("onnxruntime")
    from llflow.export import OnnxEnhancer, export_onnx

    from llflow.preprocess import image_condition

    path = tmp_path / "guarded.onnx"
    export_onnx(model, path, rtol=1e-2)  # dividing by 1e-4 at every step amplifies rounding differences
    lq = image_condition(low, None, 8, torch.float32)
    outputs["onnx"] = torch.as_tensor(OnnxEnhancer(path).run(lq.numpy()))
    for name, out in outputs.items():
        assert torch.isfinite(out).all(), name
        assert out.abs().max() < 1e3, (name, float(out.abs().max()))
    # Every step divides by 1e-4 here, so rounding differences between engines are amplified
    # before the guard bounds them: compare relative to the output's scale.
    for name in ("fast", "fast-fp64", "onnx"):
        diff = (outputs[name] - outputs["reference"]).abs().max() / outputs["reference"].abs().max()
        assert diff < 1e-3, (name, float(diff))


def test_guard_is_saved_with_the_weights_and_fallback_is_not(tmp_path, guarded_tiny) -> None:
    model, low = guarded_tiny
    path = model.save_pretrained(tmp_path / "guarded.safetensors")
    loaded = LLFlow.from_pretrained(path)
    assert loaded.inverse_guard is not None and loaded.inverse_guard.measured
    for index, terms in model.inverse_guard.bounds.items():
        for term, (lo, hi) in terms.items():
            assert torch.equal(loaded.inverse_guard.bounds[index][term][0], lo)
            assert torch.equal(loaded.inverse_guard.bounds[index][term][1], hi)
    assert torch.equal(loaded.enhance(low, clamp=False), model.enhance(low, clamp=False))
    # Weights without ranges (official releases) get the coarse fallback, which is never stored.
    bare = LLFlow.from_config("tiny")
    bare.load_state_dict(tiny_llflow(seed=3).state_dict())
    assert bare.inverse_guard is not None and not bare.inverse_guard.measured
    lo, hi = next(iter(bare.inverse_guard.bounds.values()))["coupling"]
    assert float(hi.max()) == FALLBACK_BOUND and float(lo.min()) == -FALLBACK_BOUND
    from safetensors import safe_open

    with safe_open(str(bare.save_pretrained(tmp_path / "bare.safetensors")), framework="pt") as fh:
        assert not [k for k in fh.keys() if k.startswith("inverse_guard.")]


def test_guard_round_trips_through_its_state() -> None:
    model = tiny_llflow()
    guard = fallback_guard(model)
    again = InverseGuard.from_state(guard.to_state())
    assert again is not None and sorted(again.bounds) == sorted(guard.bounds)
    assert InverseGuard.from_state({"other.weight": torch.zeros(1)}) is None
