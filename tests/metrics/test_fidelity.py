"""PSNR / SSIM variants / GT-mean rescale against the official-protocol fixture and scikit-image."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from safetensors.numpy import load_file
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from llflow.metrics import (
    evaluate_pair,
    float_to_uint8,
    gt_mean_factors,
    gt_mean_rescale,
    psnr,
    ssim_gray,
    ssim_gray_columnwise,
    ssim_rgb,
)

from ..conftest import brighten, example_photos, read_rgb, shared_dir
from ..official import OFFICIAL, source_param


@pytest.fixture(scope="module")
def protocol() -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    """The official evaluation-protocol fixture (shared/fixtures/official/metrics, copied unchanged
    into tests/fixtures/official/metrics)."""
    base = OFFICIAL / "metrics"
    tensors = load_file(str(base / "eval_protocol.safetensors"))
    values = json.loads((base / "eval_protocol.json").read_text())
    return tensors, values


def _crop(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:200, :255])  # odd width on purpose


@pytest.fixture(scope="module", params=[source_param("repo"), source_param("shared")])
def real_pairs(request: pytest.FixtureRequest) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two real pairs (low, high), RGB uint8, cropped to keep the test fast: with ``repo``, two
    bundled example photos and a brightened copy of each; with ``shared``, two sice-lowlight val pairs."""
    if request.param == "repo":
        return [(_crop(low), _crop(brighten(low))) for low in map(read_rgb, example_photos()[:2])]
    val = shared_dir() / "data" / "sice-lowlight" / "val"
    names = sorted(p.name for p in (val / "low").glob("*.jpg"))[:2]
    assert names, f"no JPEGs in {val / 'low'}"
    pairs = []
    for name in names:
        low = cv2.imread(str(val / "low" / name), cv2.IMREAD_COLOR)[..., ::-1]
        high = cv2.imread(str(val / "high" / name), cv2.IMREAD_COLOR)[..., ::-1]
        pairs.append((_crop(low), _crop(high)))
    return pairs


def gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


# ----------------------------------------------------------------------------- official fixture
@pytest.mark.parametrize("b", [0, 1])
def test_gt_mean_rescale_bit_exact(protocol, b):
    tensors, values = protocol
    sr, gt = tensors["sr_float"][b], tensors["gt_u8"][b]  # both 3×H×W
    mean_out, mean_gt = gt_mean_factors(sr, gt)
    assert mean_out == pytest.approx(values[b]["mean_out"], abs=1e-7)
    assert mean_gt == pytest.approx(values[b]["mean_gt_swapped_gray"], abs=1e-7)
    out = gt_mean_rescale(sr, gt)
    assert out.dtype == np.uint8 and out.shape == (64, 96, 3)
    np.testing.assert_array_equal(out, tensors[f"metrics.{b}.sr_u8"].transpose(1, 2, 0))
    # layout-agnostic: H×W×3 inputs give the same result
    np.testing.assert_array_equal(gt_mean_rescale(sr.transpose(1, 2, 0), gt.transpose(1, 2, 0)), out)


@pytest.mark.parametrize("b", [0, 1])
def test_metrics_match_fixture(protocol, b):
    tensors, values = protocol
    sr_u8 = tensors[f"metrics.{b}.sr_u8"].transpose(1, 2, 0)
    gt = tensors["gt_u8"][b].transpose(1, 2, 0)
    v = values[b]
    assert psnr(sr_u8, gt) == pytest.approx(v["psnr"], abs=1e-9)
    assert ssim_gray(sr_u8, gt) == pytest.approx(v["ssim_gray_2d"], abs=1e-9)
    assert ssim_gray_columnwise(sr_u8, gt) == pytest.approx(v["ssim_gray_columnwise_skimage018"], abs=1e-9)
    # the fixture's RGB SSIM is skimage's default window per channel, not the Gaussian standard
    assert ssim_rgb(sr_u8, gt, window="uniform") == pytest.approx(v["ssim_rgb_channel_axis"], abs=1e-9)
    assert abs(ssim_rgb(sr_u8, gt) - v["ssim_rgb_channel_axis"]) > 1e-2
    # the fixture's no-alignment PSNR quantises like test.py: truncation
    raw = float_to_uint8(tensors["sr_float"][b].transpose(1, 2, 0), mode="truncate")
    assert psnr(raw, gt) == pytest.approx(v["psnr_no_gt_mean_alignment"], abs=1e-9)


# ----------------------------------------------------------------------------- vs scikit-image
def _skimage_all(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    res = {
        "psnr": peak_signal_noise_ratio(a, b),
        "ssim_gray": structural_similarity(gray(a), gray(b), data_range=255),
        "ssim_gray_columnwise": structural_similarity(gray(a), gray(b), channel_axis=-1),
        "ssim_rgb_uniform": structural_similarity(a, b, channel_axis=-1),
    }
    if min(a.shape[:2]) >= 11:  # the Gaussian window is 11×11
        res["ssim_rgb"] = structural_similarity(
            a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
    return res


def _ours_all(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    res = {
        "psnr": psnr(a, b),
        "ssim_gray": ssim_gray(a, b),
        "ssim_gray_columnwise": ssim_gray_columnwise(a, b),
        "ssim_rgb_uniform": ssim_rgb(a, b, window="uniform"),
    }
    if min(a.shape[:2]) >= 11:
        res["ssim_rgb"] = ssim_rgb(a, b)
    return res


def test_matches_skimage_on_real_images(real_pairs):
    for low, high in real_pairs:
        for a, b in ((low, high), (high, low), (cv2.GaussianBlur(high, (5, 5), 1.0), high)):
            ref, ours = _skimage_all(a, b), _ours_all(a, b)
            for key in ref:
                assert ours[key] == pytest.approx(ref[key], abs=1e-6), key


@pytest.mark.parametrize("shape", [(7, 7, 3), (11, 11, 3), (13, 40, 3), (45, 12, 3)])
def test_matches_skimage_on_odd_sizes(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, shape), 0, 255).astype(np.uint8)
    ref, ours = _skimage_all(a, b), _ours_all(a, b)
    assert set(ref) == set(ours)
    if min(shape[:2]) < 11:
        with pytest.raises(ValueError, match="too small"):
            ssim_rgb(a, b)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


# ----------------------------------------------------------------------------- edge cases / API
def test_identical_images():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert psnr(img, img) == float("inf")
    assert ssim_gray(img, img) == pytest.approx(1.0)
    assert ssim_gray_columnwise(img, img) == pytest.approx(1.0)
    assert ssim_rgb(img, img) == pytest.approx(1.0)


def test_channel_first_accepted():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    chw = lambda x: np.ascontiguousarray(x.transpose(2, 0, 1))  # noqa: E731
    assert psnr(chw(a), chw(b)) == psnr(a, b)
    assert ssim_gray(chw(a), chw(b)) == ssim_gray(a, b)
    assert ssim_rgb(chw(a), chw(b)) == ssim_rgb(a, b)


def test_input_validation():
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        psnr(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim_gray(a, np.zeros((16, 17, 3), np.uint8))
    with pytest.raises(ValueError, match="window"):
        ssim_rgb(a, a, window="box")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="black"):
        gt_mean_rescale(np.zeros((16, 16, 3), np.float32), a)


def test_float_to_uint8_round_vs_truncate():
    x = np.array([-0.2, 0.0, 0.5, 0.999, 1.0, 1.7, 2.6 / 255])
    np.testing.assert_array_equal(float_to_uint8(x), [0, 0, 128, 255, 255, 255, 3])
    np.testing.assert_array_equal(float_to_uint8(x, mode="truncate"), [0, 0, 127, 254, 255, 255, 2])


def test_evaluate_pair_without_lpips(protocol):
    tensors, values = protocol
    sr, gt = tensors["sr_float"][0], tensors["gt_u8"][0]
    res = evaluate_pair(sr, gt, with_lpips=False)
    assert set(res) == {"psnr", "ssim", "ssim_rgb", "psnr_gtmean", "ssim_gtmean", "ssim_rgb_gtmean"}
    assert res["psnr_gtmean"] == pytest.approx(values[0]["psnr"], abs=1e-9)
    assert res["ssim_gtmean"] == pytest.approx(values[0]["ssim_gray_2d"], abs=1e-9)
    gt_hwc = gt.transpose(1, 2, 0)
    raw = float_to_uint8(sr.transpose(1, 2, 0))  # raw metrics use rounding
    assert res["psnr"] == psnr(raw, gt_hwc)
    assert res["ssim_rgb"] == ssim_rgb(raw, gt_hwc)
