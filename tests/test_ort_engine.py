"""``engine="onnxruntime"``: the exported graph as an Enhancer engine — same outputs as the fast
engine, exported once per weights into the cache, no partial files, clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="optional extra llflow[onnx]")
pytest.importorskip("onnxruntime", reason="optional extra llflow[onnx]")

from llflow import cli  # noqa: E402
from llflow import ort_engine  # noqa: E402
from llflow.inference import load_model  # noqa: E402
from llflow.io import read_image, write_image  # noqa: E402
from llflow.ort_engine import OrtEngine, weights_key  # noqa: E402
from llflow.preprocess import equalize_histogram_tensor  # noqa: E402

from .conftest import tiny_llflow  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(ort_engine.CACHE_ENV, str(folder))
    return folder


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_matches_the_fast_engine_with_and_without_noise(cache: Path) -> None:
    model = tiny_llflow(perturb=0.05)
    fast = load_model(model, "cpu", "fp32", "fast")
    ort = load_model(model, "cpu", "fp32", "onnxruntime")
    gen = torch.Generator().manual_seed(0)
    low = torch.rand(2, 3, 37, 53, generator=gen) * 0.3  # batch of 2, sizes not multiples of 8
    histeq = equalize_histogram_tensor(low)
    eps = torch.randn(2, 192, 5, 7, generator=gen)
    for offsets in ([None], [0.8 * eps, None]):
        got = ort.decode_many(low, offsets, histeq, tile=0)
        want = fast.decode_many(low, offsets, histeq, tile=0)
        for g, w in zip(got, want):
            assert g.shape == (2, 3, 37, 53) and g.min() >= 0 and g.max() <= 1
            assert _rel(g, w) <= 1e-4  # the export check's tolerance; random tiny weights amplify rounding
    engine = ort.backend
    assert isinstance(engine, OrtEngine)
    same = engine.enhance(low, temperature=0.8, generator=torch.Generator().manual_seed(3))
    again = model.prepare_for_inference("fp32").enhance(low, temperature=0.8, generator=torch.Generator().manual_seed(3))
    assert _rel(same, again) <= 1e-4  # the same noise draw as the torch engines
    with pytest.raises(ValueError, match="eps has shape"):
        engine.enhance(low, eps=torch.zeros(1, 192, 5, 7))


def test_exported_once_per_weights_and_no_partial_files(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_llflow(perturb=0.05)
    first = OrtEngine(model)
    assert first.path.parent == cache / "onnx" and first.path.name == f"llflow-{weights_key(model)}.onnx"

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the graph is cached")

    monkeypatch.setattr("llflow.export.export_onnx", no_export)
    assert OrtEngine(model).path == first.path
    other = tiny_llflow(perturb=0.05, seed=1)
    assert weights_key(other) != weights_key(model)

    def failing_export(model, path, **kwargs):  # dies half-way through writing
        Path(path).write_bytes(b"\x08\x01truncated")
        raise RuntimeError("killed")

    monkeypatch.setattr("llflow.export.export_onnx", failing_export)
    with pytest.raises(RuntimeError, match="killed"):
        OrtEngine(other)
    assert sorted(p.name for p in (cache / "onnx").iterdir()) == [first.path.name]


def test_onnxruntime_engine_is_fp32_cpu_only() -> None:
    model = tiny_llflow()
    with pytest.raises(ValueError, match="onnxruntime runs fp32 on the CPU"):
        load_model(model, "cpu", "bf16", "onnxruntime")
    with pytest.raises(ValueError, match="unknown engine"):
        load_model(model, "cpu", "fp32", "tensorrt")


def test_cli_engine_onnxruntime(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tiny_llflow(perturb=0.05)
    weights = model.save_pretrained(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(0)
    write_image(tmp_path / "dark.png", (rng.random((21, 30, 3)) * 50).astype(np.uint8))
    outputs = {}
    for engine in ("onnxruntime", "fast"):
        code = cli.main(["enhance", str(tmp_path / "dark.png"), "-o", str(tmp_path / engine),
                         "--model", str(weights), "--device", "cpu", "--engine", engine])
        assert code == 0, capsys.readouterr().err
        capsys.readouterr()
        outputs[engine] = read_image(tmp_path / engine / "dark_llflow.png").rgb.astype(int)
    assert np.abs(outputs["onnxruntime"] - outputs["fast"]).max() <= 1  # 8-bit rounding of ~1e-6 differences
    code = cli.main(["enhance", str(tmp_path / "dark.png"), "-o", str(tmp_path / "x"),
                     "--model", str(weights), "--device", "cpu", "--engine", "onnxruntime", "--precision", "bf16"])
    err = capsys.readouterr().err
    assert code != 0 and "onnxruntime runs fp32 on the CPU" in err and len(err.strip().splitlines()) == 1
