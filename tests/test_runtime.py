"""Device and precision choice (llflow.runtime): auto picks bf16 only where it is native."""
from __future__ import annotations

import warnings

import pytest
import torch

from llflow import runtime

CPU = torch.device("cpu")


def _fake_flags(monkeypatch, flags: set[str]) -> None:
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))


def test_auto_is_fp32_on_a_cpu_without_bf16_units(monkeypatch) -> None:
    _fake_flags(monkeypatch, {"avx2", "fma", "avx512f"})
    choice = runtime.resolve_precision("auto", CPU)
    assert choice.name == "fp32" and choice.dtype == torch.float32 and not choice.low_precision
    assert "avx512_bf16" in choice.reason


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_bf16_where_the_cpu_has_bf16_units(monkeypatch, flag) -> None:
    _fake_flags(monkeypatch, {"avx2", flag})
    choice = runtime.resolve_precision("auto", CPU)
    assert choice.name == "bf16" and choice.dtype == torch.bfloat16 and flag in choice.reason


def test_forced_bf16_on_an_emulating_cpu_runs_but_warns_once_per_call(monkeypatch) -> None:
    _fake_flags(monkeypatch, {"avx2"})
    with pytest.warns(runtime.BF16EmulatedWarning, match=r"emulated .* 10x slower than fp32"):
        choice = runtime.resolve_precision("bf16", CPU)
    assert choice.name == "bf16"
    _fake_flags(monkeypatch, {"avx2", "avx512_bf16"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runtime.resolve_precision("bf16", CPU).name == "bf16"  # native: no warning


def test_invalid_precisions_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        runtime.resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        runtime.resolve_precision("int8", CPU)
    assert runtime.resolve_precision("FP32", CPU).name == "fp32"


def test_autocast_only_for_low_precision(monkeypatch) -> None:
    _fake_flags(monkeypatch, {"avx512_bf16"})
    with runtime.autocast(CPU, runtime.resolve_precision("bf16", CPU)):
        assert torch.is_autocast_enabled("cpu")
    with runtime.autocast(CPU, runtime.resolve_precision("fp32", CPU)):
        assert not torch.is_autocast_enabled("cpu")


def test_describe_names_the_cpu_flags_and_the_choice(monkeypatch) -> None:
    _fake_flags(monkeypatch, {"avx2", "fma"})
    line = runtime.describe(CPU, runtime.resolve_precision("auto", CPU))
    assert line.startswith("cpu (") and "flags: avx2" in line and "precision fp32" in line


def test_devices() -> None:
    assert runtime.resolve_device("cpu") == CPU
    assert runtime.resolve_device(CPU) is CPU
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        runtime.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            runtime.resolve_device("cuda:0")


# ----------------------------------------------------------------- the inference side of auto
def test_load_model_defaults_to_auto(monkeypatch) -> None:
    from llflow import load_model

    from .conftest import tiny_llflow

    net = tiny_llflow()
    _fake_flags(monkeypatch, {"avx2", "fma"})
    enhancer = load_model(net, device="cpu")  # precision="auto" by default
    assert enhancer.precision == "fp32" and "avx512_bf16" in enhancer.precision_choice.reason
    assert "precision fp32 (auto" in enhancer.describe_runtime()
    _fake_flags(monkeypatch, {"avx2", "amx_bf16"})
    assert load_model(net, device="cpu").precision == "bf16"
    # onnxruntime runs fp32 only: auto is fp32 there whatever the CPU has
    from llflow.inference.enhancer import choose_precision

    assert choose_precision("auto", CPU, "onnxruntime").name == "fp32"


def test_forced_bf16_through_load_model_warns_on_an_emulating_cpu(monkeypatch) -> None:
    from llflow import load_model

    from .conftest import tiny_llflow

    _fake_flags(monkeypatch, {"avx2"})
    with pytest.warns(runtime.BF16EmulatedWarning, match="emulated"):
        enhancer = load_model(tiny_llflow(), device="cpu", precision="bf16")
    assert enhancer.precision == "bf16" and "emulated" in enhancer.precision_choice.reason


def test_cli_defaults_are_auto() -> None:
    from llflow.cli import build_parser

    parser = build_parser()
    for argv in (["enhance", "x.png"], ["demo"], ["info"]):
        assert parser.parse_args(argv).precision == "auto", argv
