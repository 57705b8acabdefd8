"""Issue 18 on real photos with the bundled weights: the bright photos whose inverse used to explode
(DICM 53 and 54, and 49 and 58 that left [-0.5, 1.5]), bright saturated regions pasted into dark val
photos, and well-exposed val references used as inputs give raw outputs within [-0.5, 1.5] for at
least 99.9 % of values, all finite, in every engine; well-exposed inputs are not washed out."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llflow import LLFlow
from llflow.preprocess import image_condition

from ..conftest import REPO

pytestmark = pytest.mark.shared

sys.path.insert(0, str(REPO / "experiments" / "flow_stability"))
from bright_cases import load, pasted  # noqa: E402

MAX_OUT_OF_RANGE = 1e-3
MAX_ABS_GUARDED = 4.0


def out_of_range(x: torch.Tensor) -> float:
    return float((~torch.isfinite(x) | (x < -0.5) | (x > 1.5)).float().mean())


@pytest.fixture(scope="module")
def bundled() -> LLFlow:
    return LLFlow.from_pretrained()


@pytest.fixture(scope="module")
def bright_inputs(shared: Path) -> dict[str, torch.Tensor]:
    dicm = shared / "data" / "real-lowlight" / "dicm"
    cases = {f"dicm/{n}": load(str(dicm / f"{n}.jpg"), 400) for n in ("36", "49", "53", "54", "58")}
    cases.update(pasted(shared))
    highs = sorted((shared / "data" / "sice-lowlight" / "val" / "high").glob("*.jpg"))
    for path in highs[::6]:
        cases[f"val high {path.stem}"] = load(str(path), 400)
    return cases


def _engines(model: LLFlow, cache: Path):
    yield "reference", lambda low: model.enhance(low, clamp=False)
    fast = model.prepare_for_inference("fp32")
    yield "fast", lambda low: fast.enhance(low, clamp=False)
    try:
        import onnxruntime  # noqa: F401  (llflow[onnx]; .ci/run installs it)
    except ImportError:  # pragma: no cover
        return
    from llflow.ort_engine import OrtEngine

    engine = OrtEngine(model, directory=cache)
    yield "onnxruntime", lambda low: engine.enhance(low, clamp=False)


def test_bundled_weights_carry_measured_guard_ranges(bundled) -> None:
    assert bundled.inverse_guard is not None and bundled.inverse_guard.measured


@pytest.fixture(scope="module")
def raw_outputs(bundled, bright_inputs, tmp_path_factory) -> list[tuple[str, str, torch.Tensor]]:
    """(engine, case, raw τ = 0 output) for every engine and bright input, computed once."""
    outputs = []
    for engine, run in _engines(bundled, tmp_path_factory.mktemp("onnx")):
        for case, low in bright_inputs.items():
            with torch.no_grad():
                outputs.append((engine, case, run(low)))
    return outputs


def test_guarded_inverse_stays_finite_and_bounded_in_every_engine(raw_outputs) -> None:
    """What the guard itself guarantees, whatever the weights: no overflow, no non-finite value, and
    raw values of the order of an image (unguarded, DICM 36 exploded with the session 9 and 10 files,
    DICM 53 with the first one; every campaign file shipped since session 11 stays within about 1.6
    unguarded: the model card gives the bundled file's value)."""
    failures = [f"{engine} {case}: max |raw| {float(raw.abs().max()):.3g}"
                for engine, case, raw in raw_outputs
                if not bool(torch.isfinite(raw).all()) or float(raw.abs().max()) > MAX_ABS_GUARDED]
    assert not failures, failures


# Issue 18's bar for the *model*, not the guard: at most 0.1 % of raw values outside [-0.5, 1.5]. The
# campaign's bundled files since session 11 (20 % bright inputs in training) meet it on every case, DICM 36 (mean 0.39, a saturated blue sky) included: the session 10 file sent it 1.6 % out of
# range guarded (green sky; its unguarded inverse exploded), session 9's 2.0 %; the first file (dark
# pairs only) missed DICM 53/54 and a pasted region (6.6 / 2.4 / 1.6 %).
def test_bright_and_well_exposed_inputs_stay_in_range_in_every_engine(raw_outputs) -> None:
    failures = [f"{engine} {case}: {out_of_range(raw):.3%}"
                for engine, case, raw in raw_outputs
                if out_of_range(raw) > MAX_OUT_OF_RANGE]
    assert not failures, failures


def test_bf16_engine_keeps_the_bright_photos_in_range(bundled, shared) -> None:
    """The fast engine in bf16 (sub-networks in bf16, the guarded divisions in fp32) on the DICM
    photos, at 256 px: bf16 is emulated on CPUs without bf16 units (about 10x slower than fp32)."""
    engine = bundled.prepare_for_inference("bf16")
    dicm = shared / "data" / "real-lowlight" / "dicm"
    failures = []
    for name in ("36", "49", "53", "54", "58"):
        with torch.no_grad():
            raw = engine.enhance(load(str(dicm / f"{name}.jpg"), 256), clamp=False).float()
        if out_of_range(raw) > MAX_OUT_OF_RANGE or float(raw.abs().max()) > MAX_ABS_GUARDED:
            failures.append(f"dicm/{name}: {out_of_range(raw):.3%} out of range, max |raw| {float(raw.abs().max()):.3g}")
    assert not failures, failures


def test_well_exposed_inputs_are_not_washed_out(bundled, shared) -> None:
    """The bundled model's output for a well-exposed reference stays near its brightness (the previous
    file, trained on dark pairs only, brightened them by 0.20 on average)."""
    highs = sorted((shared / "data" / "sice-lowlight" / "val" / "high").glob("*.jpg"))[::3]
    gaps = []
    with torch.no_grad():
        for path in highs:
            low = load(str(path), 400)
            out = bundled.enhance(low)
            gaps.append(float(out.mean() - low.mean()))
    assert np.mean(np.abs(gaps)) < MAX_BRIGHTNESS_GAP, gaps


MAX_BRIGHTNESS_GAP = 0.15
