"""Tests for llflow.synthetic: the tone curve, the darkening and the noise model."""
from __future__ import annotations

import numpy as np
import pytest

from llflow.synthetic import LowLightSynthesizer, inverse_tone_curve, tone_curve


def test_tone_curve_is_monotone_and_inverted_exactly() -> None:
    x = np.linspace(0.0, 1.0, 2001)
    y = tone_curve(x)
    assert y[0] == 0.0 and y[-1] == 1.0
    assert np.all(np.diff(y) > 0)
    np.testing.assert_allclose(tone_curve(inverse_tone_curve(x)), x, atol=1e-12)
    np.testing.assert_allclose(inverse_tone_curve(tone_curve(x)), x, atol=1e-9)


def test_no_darkening_and_almost_no_noise_returns_the_reference() -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    identity = LowLightSynthesizer(exposure=(1.0, 1.0), shot_noise=(1e-12, 1e-12))
    out = identity(reference, np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.shape == reference.shape
    assert np.abs(out.astype(int) - reference).max() <= 1  # rounding only


def test_exposure_scales_linear_light() -> None:
    reference = np.full((64, 64, 3), 200, np.uint8)
    synth = LowLightSynthesizer(exposure=(0.1, 0.1), shot_noise=(1e-12, 1e-12))
    out = synth(reference, np.random.default_rng(2))
    ratio = inverse_tone_curve(out / 255.0).mean() / inverse_tone_curve(np.array(200 / 255.0))
    assert ratio == pytest.approx(0.1, rel=0.02)
    assert out.mean() < reference.mean() / 2  # visibly dark


def test_noise_variance_follows_shot_plus_read_model() -> None:
    synth = LowLightSynthesizer(exposure=(0.5, 0.5), shot_noise=(2e-3, 2e-3))
    rng = np.random.default_rng(5)
    _, shot, read = synth.draw(np.random.default_rng(5))  # the draw __call__ will make
    level = 0.3
    reference = np.full((256, 256, 3), tone_curve(np.array(level / 0.5)) * 65535, np.uint16)
    out = synth(reference, rng)
    linear = inverse_tone_curve(out / 255.0)
    expected = shot * level + read
    assert linear.mean() == pytest.approx(level, rel=0.02)
    # 8-bit quantisation adds a little variance of its own (slope of the curve at this level).
    assert linear.var() == pytest.approx(expected, rel=0.1)


def test_same_generator_same_image_and_read_noise_tied_to_shot_noise() -> None:
    reference = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    synth = LowLightSynthesizer()
    a = synth(reference, np.random.default_rng(9))
    b = synth(reference, np.random.default_rng(9))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, synth(reference, np.random.default_rng(10)))
    draws = np.array([synth.draw(np.random.default_rng(i)) for i in range(400)])
    assert draws[:, 0].min() >= 0.03 and draws[:, 0].max() <= 0.2
    slope = np.polyfit(np.log(draws[:, 1]), np.log(draws[:, 2]), 1)[0]
    assert slope == pytest.approx(2.18, abs=0.1)


@pytest.mark.parametrize("kwargs", [{"exposure": (0.0, 0.1)}, {"exposure": (0.2, 0.1)},
                                    {"exposure": (0.5, 2.0)}, {"shot_noise": (-1.0, 1e-3)}])
def test_bad_ranges_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        LowLightSynthesizer(**kwargs)


def test_grey_or_alpha_images_are_refused() -> None:
    with pytest.raises(ValueError, match="H×W×3"):
        LowLightSynthesizer()(np.zeros((8, 8), np.uint8), np.random.default_rng(0))
