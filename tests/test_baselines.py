"""Classical baselines: behaviour, and the reference numbers on sice-lowlight/val (shared data README)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from llflow.baselines import BASELINES, clahe_lab, enhance, gamma_to_mean, histeq, identity
from llflow.metrics import lpips_against_reference, psnr, ssim_gray

# README: "PSNR RGB / SSIM grey 7×7 / LPIPS-alex; no GT-mean rescale", 22 val pairs.
EXPECTED = {
    "input": (8.81, 0.293, 0.440),
    "histeq": (16.79, 0.750, 0.339),
    "gamma": (18.59, 0.762, 0.243),
    "clahe": (11.23, 0.543, 0.347),
}
TOL = (0.05, 0.005, 0.005)


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        pytest.fail(f"cannot read image {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


@pytest.fixture(scope="module")
def val_pairs(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    """All 22 sice-lowlight val pairs as N×512×512×3 RGB uint8 (low, high)."""
    val = shared / "data" / "sice-lowlight" / "val"
    names = sorted(p.name for p in (val / "low").glob("*.jpg"))
    if len(names) != 22:
        pytest.fail(f"expected 22 val pairs in {val / 'low'}, found {len(names)}")
    low = np.stack([read_rgb(val / "low" / n) for n in names])
    high = np.stack([read_rgb(val / "high" / n) for n in names])
    return low, high


@pytest.fixture(scope="module")
def val_table(val_pairs) -> dict[str, tuple[float, float, float]]:
    """Mean (PSNR, SSIM gray, LPIPS) per baseline; each reference goes through AlexNet once."""
    low, high = val_pairs
    names = list(EXPECTED)
    scores = {n: [] for n in names}
    for x, gt in zip(low, high):
        outs = np.stack([enhance(n, x) for n in names])
        dists = lpips_against_reference(outs, gt, batch_size=len(names))
        for n, o, d in zip(names, outs, dists):
            scores[n].append((psnr(o, gt), ssim_gray(o, gt), d))
    return {n: tuple(float(v) for v in np.mean(scores[n], axis=0)) for n in names}


@pytest.mark.shared
@pytest.mark.parametrize("name", list(EXPECTED))
def test_reproduces_readme_numbers(val_table, name):
    got = val_table[name]
    for metric, g, e, tol in zip(("PSNR", "SSIM", "LPIPS"), got, EXPECTED[name], TOL):
        assert abs(g - e) <= tol, f"{name} {metric}: got {g:.4f}, README {e}"


def test_registry_and_contract():
    assert set(BASELINES) == {"input", "histeq", "gamma", "clahe"}
    rng = np.random.default_rng(0)
    img = (rng.random((40, 56, 3)) * 60).astype(np.uint8)
    for name, fn in BASELINES.items():
        out = fn(img)
        assert out.dtype == np.uint8 and out.shape == img.shape, name
    np.testing.assert_array_equal(identity(img), img)
    with pytest.raises(ValueError, match="unknown baseline"):
        enhance("retinex", img)
    with pytest.raises(ValueError, match="RGB uint8"):
        histeq(img.astype(np.float32))


def test_gamma_closed_form():
    rng = np.random.default_rng(1)
    img = (rng.random((32, 32, 3)) * 50).astype(np.uint8)
    m = img.mean() / 255
    g = np.log(0.45) / np.log(m)
    np.testing.assert_array_equal(gamma_to_mean(img), np.rint((img / 255.0) ** g * 255).astype(np.uint8))
    assert gamma_to_mean(img).mean() / 255 < 0.45 + 1e-3  # concave curve: output mean ≤ target
    black = np.zeros((8, 8, 3), np.uint8)
    np.testing.assert_array_equal(gamma_to_mean(black), black)


def test_clahe_only_changes_lightness():
    rng = np.random.default_rng(2)
    img = (rng.random((64, 64, 3)) * 80).astype(np.uint8)
    out = clahe_lab(img)
    lab_in = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(int)
    lab_out = cv2.cvtColor(out, cv2.COLOR_RGB2LAB).astype(int)
    assert lab_out[..., 0].mean() > lab_in[..., 0].mean()
    # a/b survive up to the 8-bit Lab↔RGB round trip (and gamut clipping)
    assert np.median(np.abs(lab_out[..., 1:] - lab_in[..., 1:])) <= 2
