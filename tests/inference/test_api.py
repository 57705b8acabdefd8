"""The Python API (llflow.enhance / sample / uncertainty / load_model), tiling, precision, exposure.

Fast tests use the ``tiny_enhancer`` architecture with random weights; the tests that judge image quality
(brightness, exposure monotonicity, tiling PSNR) need a trained model and use the bundled default
(``LLFlow.from_pretrained()``), which must be installed.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import pytest
import torch

import llflow
from llflow import LLFlow
from llflow.inference import (MEMORY_BUDGET_ENV, Enhancer, _linear_luminance, auto_tile_size,
                              estimate_bytes_per_pixel, exposure_shift, load_model, plan_tiles, resolve_device,
                              uncertainty_from_samples)
from llflow.runtime import resolve_precision
from llflow.io import read_image
from llflow.model import checkpoint
from llflow.preprocess import equalize_histogram_tensor

from ..conftest import EXAMPLES, shared_dir, tiny_llflow


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def tiny_enhancer(tiny_net: LLFlow) -> Enhancer:
    return load_model(tiny_net, device="cpu")


@pytest.fixture(scope="module")
def low_np() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((37, 45, 3)) * 60).astype(np.uint8)


@pytest.fixture(scope="module")
def default_model() -> Enhancer:
    """The bundled default model (a trained LOL_smallNet); these tests need it installed."""
    return load_model("default", device="cpu")


# --------------------------------------------------------------------------------------- loading
def test_no_default_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(llflow.CheckpointError, match="no default model is installed"):
        load_model()
    with pytest.raises(llflow.CheckpointError, match="no default model is installed"):
        llflow.enhance(np.zeros((8, 8, 3), np.uint8))


def test_load_model_from_file_is_cached(tmp_path: Path, tiny_net: LLFlow) -> None:
    path = tiny_net.save_pretrained(tmp_path / "m.safetensors")
    a = load_model(path, device="cpu")
    b = llflow.load_model(str(path), device="auto", precision="fp32")
    assert a is b and a.architecture == "tiny" and a.source == str(path.resolve())
    low = torch.rand(1, 3, 37, 45) * 0.3
    torch.testing.assert_close(a.enhance_tensor(low), tiny_net.enhance(low), atol=1e-5, rtol=0)  # fast engine
    exact = load_model(path, device="cpu", engine="reference")
    assert exact is not a and exact.engine == "reference"
    assert torch.equal(exact.enhance_tensor(low), tiny_net.enhance(low))
    with pytest.raises(ValueError, match="unknown engine"):
        load_model(path, device="cpu", engine="turbo")


def test_device_and_precision_checks() -> None:
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int8", torch.device("cpu"))


def test_bf16_on_cpu_is_close_to_fp32(tiny_net: LLFlow, tiny_enhancer: Enhancer) -> None:
    low = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1)) * 0.3
    bf16 = load_model(tiny_net, device="cpu", precision="bf16")
    assert bf16.precision == "bf16" and bf16.net is tiny_enhancer.net
    assert psnr(bf16.enhance_tensor(low), tiny_enhancer.enhance_tensor(low)) > 30


# --------------------------------------------------------------------------------------- API kinds
def test_enhance_is_the_official_output_at_tau0_ev0(tiny_enhancer: Enhancer, tiny_net: LLFlow, low_np: np.ndarray) -> None:
    ref = tiny_net.enhance(torch.from_numpy(low_np.astype(np.float32) / 255).permute(2, 0, 1)[None])
    ref = ref[0].permute(1, 2, 0).numpy()
    exact = load_model(tiny_net, device="cpu", engine="reference")
    assert np.array_equal(llflow.enhance(low_np.astype(np.float32) / 255, model=exact), ref)
    fast = llflow.enhance(low_np.astype(np.float32) / 255, model=tiny_enhancer)  # the default engine
    assert np.abs(fast - ref).max() <= 1e-5 * np.abs(ref).max()


def test_enhance_returns_the_same_kind(tiny_enhancer: Enhancer, low_np: np.ndarray) -> None:
    from PIL import Image as PILImage

    u8 = llflow.enhance(low_np, model=tiny_enhancer)
    assert u8.dtype == np.uint8 and u8.shape == low_np.shape
    u16 = llflow.enhance(low_np.astype(np.uint16) * 257, model=tiny_enhancer)
    assert u16.dtype == np.uint16 and u16.shape == low_np.shape
    grey = llflow.enhance(low_np[..., 0], model=tiny_enhancer)
    assert grey.shape == low_np.shape[:2] and grey.dtype == np.uint8
    alpha = np.arange(37 * 45, dtype=np.uint8).reshape(37, 45)
    rgba = llflow.enhance(np.dstack([low_np, alpha]), model=tiny_enhancer)
    assert rgba.shape == (37, 45, 4) and np.array_equal(rgba[..., 3], alpha)
    pil = llflow.enhance(PILImage.fromarray(low_np), model=tiny_enhancer)
    assert isinstance(pil, PILImage.Image) and pil.size == (45, 37) and pil.mode == "RGB"
    t = torch.from_numpy(low_np).permute(2, 0, 1).float() / 255
    assert llflow.enhance(t, model=tiny_enhancer).shape == t.shape
    batch = llflow.enhance(torch.stack([t, t.flip(-1)]), model=tiny_enhancer)
    assert batch.shape == (2, 3, 37, 45) and torch.allclose(batch[0], llflow.enhance(t, model=tiny_enhancer))


def test_model_argument_accepts_a_network_and_a_path(tiny_net: LLFlow, tmp_path: Path, low_np: np.ndarray) -> None:
    path = tiny_net.save_pretrained(tmp_path / "tiny.safetensors")
    a = llflow.enhance(low_np, model=tiny_net, device="cpu")
    b = llflow.enhance(low_np, model=str(path), device="cpu")
    assert np.array_equal(a, b)


def test_sampling_is_seeded_and_differs(tiny_enhancer: Enhancer, low_np: np.ndarray) -> None:
    s4 = llflow.sample(low_np.astype(np.float32) / 255, n=4, temperature=0.8, seed=3, model=tiny_enhancer)
    s2 = llflow.sample(low_np.astype(np.float32) / 255, n=2, temperature=0.8, seed=3, model=tiny_enhancer)
    assert len(s4) == 4 and all(s.shape == low_np.shape for s in s4)
    assert np.array_equal(s4[0], s2[0]) and np.array_equal(s4[1], s2[1])  # a stream: prefixes agree
    assert not np.allclose(s4[0], s4[1])
    one = llflow.enhance(low_np.astype(np.float32) / 255, temperature=0.8, seed=3, model=tiny_enhancer)
    np.testing.assert_allclose(one, s4[0], atol=1e-5)  # same noise (samples share one encoder pass)
    det = llflow.enhance(low_np.astype(np.float32) / 255, model=tiny_enhancer)
    assert not np.allclose(one, det)


def test_uncertainty_is_std_over_samples(tiny_enhancer: Enhancer, low_np: np.ndarray) -> None:
    x = low_np.astype(np.float32) / 255
    std = llflow.uncertainty(x, n=3, temperature=0.8, seed=1, model=tiny_enhancer)
    samples = llflow.sample(x, n=3, temperature=0.8, seed=1, model=tiny_enhancer)
    expected = np.stack(samples).astype(np.float64).std(axis=0).mean(axis=-1)
    assert std.shape == low_np.shape[:2] and std.dtype == np.float32
    np.testing.assert_allclose(std, expected, atol=1e-6)
    assert std.min() >= 0 and std.max() > 0
    t = llflow.uncertainty(torch.from_numpy(x).permute(2, 0, 1), n=2, seed=0, model=tiny_enhancer)
    assert t.shape == (1, 1, 37, 45)
    with pytest.raises(ValueError, match="n >= 2"):
        llflow.uncertainty(x, n=1, model=tiny_enhancer)
    zeros = uncertainty_from_samples([torch.ones(1, 3, 4, 4)] * 3)
    assert zeros.shape == (1, 1, 4, 4) and float(zeros.abs().max()) == 0


def test_exposure_zero_is_exact_and_shifts_the_latent(tiny_enhancer: Enhancer, low_np: np.ndarray) -> None:
    low = torch.from_numpy(low_np.astype(np.float32) / 255).permute(2, 0, 1)[None]
    assert exposure_shift(tiny_enhancer.net, low, 0.0) is None
    base = llflow.enhance(low_np, model=tiny_enhancer)
    assert np.array_equal(llflow.enhance(low_np, exposure=0.0, model=tiny_enhancer), base)
    # Random weights say nothing about brightness (see the trained-model test below); check the shape
    # of the shift: one 192-vector, the same at every latent position.
    small = low[..., :16, :24]
    shift = exposure_shift(tiny_enhancer.net, small, 0.5)
    assert shift is not None and shift.direction.shape == (1, 192, 1, 1) and math.isfinite(shift.achieved_ev)
    offset = shift.offset(37, 45)
    assert offset.shape == (1, 192, 5, 6) and torch.equal(offset[..., 2, 3], offset[..., 0, 0])
    assert llflow.enhance(small[0].permute(1, 2, 0).numpy(), exposure=0.5, model=tiny_enhancer).shape == (16, 24, 3)
    result = tiny_enhancer.run(small, exposure=0.5)  # the shift used is returned, not kept on the enhancer
    assert result.exposure is not None and result.exposure.amplitude == shift.amplitude
    assert "last_exposure" not in vars(tiny_enhancer)


# --------------------------------------------------------------------------------------- tiling
class PointwiseEngine:
    """A stand-in engine that is exactly pointwise in (low, histeq, latent offset), so tiled and
    untiled results must agree *exactly* when the slices of histeq and the latent line up."""

    name = "pointwise"
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self) -> None:
        self.calls = 0
        self.conditions: List[torch.Tensor] = []

    def prepare(self, condition: torch.Tensor, uses: int = 1) -> torch.Tensor:
        self.calls += 1
        self.conditions.append(condition)
        return condition

    def decode(self, prepared: torch.Tensor, offset: Optional[torch.Tensor] = None) -> torch.Tensor:
        low, histeq = torch.exp(prepared[:, :3]) - 1e-3, prepared[:, 3:]
        z = torch.zeros_like(low)
        if offset is not None:
            z = offset[:, :3].repeat_interleave(8, -2).repeat_interleave(8, -1)
        return torch.sigmoid(low * 3 + histeq - 0.5 + z)


def pointwise_enhancer(net: LLFlow) -> Enhancer:
    return Enhancer(net, torch.device("cpu"), engine=PointwiseEngine())


def test_plan_tiles_cover_with_origins_on_multiples_of_8() -> None:
    tiles = plan_tiles(100, 131, tile=30, pad=10)  # rounded up to 32 and 16
    cover = np.zeros((100, 131), int)
    for t in tiles:
        assert t.y0 % 32 == 0 and t.x0 % 32 == 0 and t.ey0 % 8 == 0 and t.ex0 % 8 == 0
        assert t.ey0 == max(0, t.y0 - 16) and t.ex1 == min(131, t.x1 + 16)
        cover[t.y0:t.y1, t.x0:t.x1] += 1
    assert (cover == 1).all()
    with pytest.raises(ValueError):
        plan_tiles(10, 10, 0, 8)


@pytest.mark.parametrize("tile,pad", [(32, 16), (48, 8), (24, 32)])
def test_tiled_equals_untiled_for_a_pointwise_network(tiny_net: LLFlow, tile: int, pad: int) -> None:
    fake = pointwise_enhancer(tiny_net)
    low = torch.rand(1, 3, 75, 101, generator=torch.Generator().manual_seed(0)) * 0.4
    for temperature, exposure in [(0.0, 0.0), (0.8, 0.5)]:
        whole = fake.enhance_tensor(low, temperature, exposure, torch.Generator().manual_seed(7), tile=0)
        tiled = fake.enhance_tensor(low, temperature, exposure, torch.Generator().manual_seed(7), tile=tile,
                                    tile_pad=pad)
        torch.testing.assert_close(tiled, whole, atol=2e-6, rtol=0)  # blending weights sum to 1
    many = fake.sample_tensors(low, 3, 0.8, 0.5, torch.Generator().manual_seed(7), tile=tile, tile_pad=pad)
    ref = fake.sample_tensors(low, 3, 0.8, 0.5, torch.Generator().manual_seed(7), tile=0)
    for a, b in zip(many, ref):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=0)


def test_histeq_is_taken_on_the_whole_image_when_tiling(tiny_net: LLFlow) -> None:
    engine = PointwiseEngine()
    low = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 0.3
    low[..., :32, :] *= 0.2  # tiles with very different histograms
    Enhancer(tiny_net, torch.device("cpu"), engine=engine).decode(low, tile=32, tile_pad=0)
    seen = [condition[:, 3:] for condition in engine.conditions]  # the condition's histeq half
    full = equalize_histogram_tensor(low)
    assert torch.equal(seen[0], full[..., :32, :32]) and torch.equal(seen[3], full[..., 32:, 32:])


def test_tiled_real_network_matches_untiled(tiny_enhancer: Enhancer) -> None:
    low = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(4)) * 0.3
    whole = tiny_enhancer.enhance_tensor(low, tile=0)
    tiled = tiny_enhancer.enhance_tensor(low, tile=48, tile_pad=16)  # 4 tiles of 64×64 (one kernel set-up)
    assert tiled.shape == whole.shape and psnr(tiled, whole) > 40


def test_automatic_tiling_under_a_small_memory_budget(tiny_net: LLFlow, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = pointwise_enhancer(tiny_net)
    engine = fake.engine
    bpp = fake.bytes_per_pixel()
    assert bpp == estimate_bytes_per_pixel(tiny_net.config) and 500 < bpp < 2000
    assert estimate_bytes_per_pixel(tiny_net.config, "bf16") == 2 * bpp
    assert auto_tile_size(100, 100, bpp, budget=10**12) is None
    assert auto_tile_size(4000, 3000, bpp, budget=int(bpp * 300**2), pad=32) == 232
    low = torch.rand(1, 3, 160, 160) * 0.3
    engine.calls = 0
    fake.decode(low)  # plenty of memory: one call
    assert engine.calls == 1
    monkeypatch.setenv(MEMORY_BUDGET_ENV, str(int(bpp * 140**2)))  # (64 + 2·32)² fits, 160² does not
    engine.calls = 0
    fake.decode(low, tile_pad=32)
    assert engine.calls == 9  # 64-pixel tiles, 3 × 3
    engine.calls = 0
    fake.decode(low, tile=0)  # 0: never tile
    assert engine.calls == 1
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match=MEMORY_BUDGET_ENV):
        fake.decode(low)


# --------------------------------------------------------------------------------------- trained model
def _val_pair(shared: Path, name: str, size: int = 96) -> torch.Tensor:
    image = read_image(shared / "data" / "sice-lowlight" / "val" / "low" / name)
    rgb = torch.from_numpy(image.rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(rgb, size=(size, size), mode="area")


@pytest.mark.shared
def test_exposure_is_monotonic_on_val_images(default_model: Enhancer, shared: Path) -> None:
    """Brightness rises with EV on real val images, by about EV stops, without a colour cast
    (full sweep over the val split: experiments/exposure_sweep.py)."""
    for name in ("s134_f131.jpg", "s30_f27.jpg"):
        low = _val_pair(shared, name)
        outs = {ev: default_model.enhance_tensor(low, exposure=ev) for ev in (-1.0, 0.0, 1.0)}
        means = [float(outs[ev].mean()) for ev in (-1.0, 0.0, 1.0)]
        assert means[0] < means[1] < means[2], (name, means)
        for ev in (-1.0, 1.0):
            stops = math.log2(float(_linear_luminance(outs[ev]) / _linear_luminance(outs[0.0])))
            assert abs(stops - ev) < 0.35, (name, ev, stops)
            chroma = [o.mean(dim=(0, 2, 3)) / o.mean(dim=(0, 2, 3)).sum() for o in (outs[ev], outs[0.0])]
            assert float((chroma[0] - chroma[1]).abs().max()) < 0.03, (name, ev, chroma)


@pytest.mark.parametrize("photo", [
    pytest.param(("examples", "sci_2015_02057.jpg"), id="bundled"),
    pytest.param(("shared", "data", "real-lowlight", "sci-easy", "0016.png"), marks=pytest.mark.shared, id="shared")])
def test_tiling_with_the_trained_model(default_model: Enhancer, photo: tuple) -> None:
    """PSNR(tiled, untiled) on a real photo (a bundled example, and one from ../shared); the 2-4 MP
    measurement is experiments/tiling_psnr.py."""
    root = EXAMPLES if photo[0] == "examples" else shared_dir()
    image = read_image(root.joinpath(*photo[1:]))
    low = torch.from_numpy(image.rgb.astype(np.float32) / 255).permute(2, 0, 1)[None][..., :160, :256]
    whole = default_model.enhance_tensor(low, tile=0)
    tiled = default_model.enhance_tensor(low, tile=96, tile_pad=32)
    assert psnr(tiled, whole) >= 40
