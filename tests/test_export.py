"""ONNX export of the inference path, checked with onnxruntime against torch (≤ 1e-4)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="optional extra llflow[onnx]")
pytest.importorskip("onnxruntime", reason="optional extra llflow[onnx]")

from llflow import LLFlow  # noqa: E402
from llflow.cli import main as cli_main  # noqa: E402
from llflow.export import OnnxEnhancer, check_onnx, export_onnx, prepare_condition_numpy  # noqa: E402
from llflow.preprocess import make_condition  # noqa: E402

from .conftest import tiny_llflow  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def perturbed_tiny_net() -> LLFlow:
    return tiny_llflow(perturb=0.05)


@pytest.fixture(scope="module")
def exported(perturbed_tiny_net: LLFlow, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    paths = {"plain": folder / "tiny.onnx", "eps": folder / "tiny_eps.onnx"}
    report = export_onnx(perturbed_tiny_net, paths["plain"])
    assert report["check_rel_err"] <= 1e-4 and report["inputs"] == ["lq"]
    report = export_onnx(perturbed_tiny_net, paths["eps"], with_eps=True)
    assert report["check_rel_err"] <= 1e-4 and report["inputs"] == ["lq", "eps"]
    return paths


@pytest.mark.parametrize("size", [(64, 96), (40, 128), (8, 8)])
def test_dynamic_sizes_match_torch(perturbed_tiny_net: LLFlow, exported: dict[str, Path], size: tuple[int, int]) -> None:
    res = check_onnx(perturbed_tiny_net, exported["plain"], size=size, rtol=1e-4)
    assert res["check_rel_err"] <= 1e-4
    res = check_onnx(perturbed_tiny_net, exported["eps"], with_eps=True, size=size, rtol=1e-4)
    assert res["check_rel_err"] <= 1e-4


def test_batch_of_two(perturbed_tiny_net: LLFlow, exported: dict[str, Path]) -> None:
    gen = torch.Generator().manual_seed(3)
    lq = make_condition(torch.rand(2, 3, 32, 48, generator=gen) * 0.3, torch.rand(2, 3, 32, 48, generator=gen))
    out = OnnxEnhancer(exported["plain"]).run(lq.numpy())
    with torch.no_grad():
        ref, _ = perturbed_tiny_net.reverse(lq)
    assert np.abs(out - ref.numpy()).max() <= 1e-4 * ref.abs().max().item()


def test_numpy_pipeline_matches_enhance(perturbed_tiny_net: LLFlow, exported: dict[str, Path]) -> None:
    """Hist-eq, padding and log outside the graph give LLFlow.enhance's result (odd size)."""
    rng = np.random.default_rng(0)
    image = (rng.random((37, 61, 3)) * 60).astype(np.uint8)
    lq, (h, w) = prepare_condition_numpy(image)
    assert lq.shape == (1, 6, 40, 64) and (h, w) == (37, 61)
    out = OnnxEnhancer(exported["plain"], threads=1).enhance(image)
    low = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    ref = perturbed_tiny_net.enhance(low)[0].permute(1, 2, 0).numpy()
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-4
    # Sampling needs the eps input; with it, τ = 0 is the mean.
    with pytest.raises(ValueError, match="--eps"):
        OnnxEnhancer(exported["plain"]).enhance(image, temperature=0.5)
    eps_model = OnnxEnhancer(exported["eps"])
    assert np.abs(eps_model.enhance(image) - ref).max() <= 1e-4
    s1, s2 = eps_model.enhance(image, 0.8, seed=1), eps_model.enhance(image, 0.8, seed=1)
    assert np.array_equal(s1, s2) and not np.allclose(s1, ref)


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    assert cli_main(["export-onnx", "preset:tiny", "-o", str(out)]) == 0
    assert out.is_file() and "onnxruntime vs torch" in capsys.readouterr().out
    assert cli_main(["export-onnx", str(tmp_path / "missing.pth"), "-o", str(out)]) == 1
