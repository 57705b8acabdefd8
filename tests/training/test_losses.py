"""The reconstruction terms next to the NLL: the SSIM term is the val metric, differentiable."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from llflow.metrics import ssim_gray
from llflow.training.losses import gray_ssim_per_sample, l1_per_sample


def _grey_rgb_u8(seed: int, size: int = 40) -> np.ndarray:
    """An RGB uint8 image with equal channels, so OpenCV's rounded grey equals the luma exactly."""
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(size, size)), axis=0), axis=1)
    grey = np.clip(128 + 50 * smooth / smooth.std(), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255


def test_gray_ssim_equals_the_val_metric() -> None:
    a, b = _grey_rgb_u8(0), _grey_rgb_u8(1)
    noisy = np.clip(a.astype(int) + np.random.default_rng(2).integers(-20, 21, a.shape[:2])[..., None], 0, 255)
    noisy = noisy.astype(np.uint8)
    for x, y in ((a, b), (a, noisy), (a, a)):
        got = float(gray_ssim_per_sample(_tensor(x), _tensor(y))[0])
        assert got == pytest.approx(ssim_gray(x, y), abs=1e-9)


def test_terms_are_per_sample_and_differentiable() -> None:
    torch.manual_seed(0)
    out = torch.rand(2, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    gt = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    assert gray_ssim_per_sample(out, gt).shape == (2,) and l1_per_sample(out, gt).shape == (2,)
    assert torch.autograd.gradcheck(lambda o: gray_ssim_per_sample(o, gt), (out,))
    same = gray_ssim_per_sample(gt, gt)
    assert torch.allclose(same, torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        gray_ssim_per_sample(out[..., :6, :6], gt[..., :6, :6])
