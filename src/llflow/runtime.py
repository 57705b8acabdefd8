"""Device and precision, decided in one place for inference and training.

``precision="auto"`` means: bf16 where it is *native* — a CPU with bf16 dot-product units
(``avx512_bf16`` or ``amx_bf16``), or a CUDA GPU that supports bf16 — fp16 on other GPUs, fp32
everywhere else. On a CPU without bf16 units PyTorch still runs bf16, but emulated: measured on an
AVX2-only EPYC, a 400×600 image took 27 s in bf16 against 2.6 s in fp32, and training ran at
0.03 it/s against 0.28. Forcing bf16 there is allowed (results are correct) but warns once.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import warnings
from dataclasses import dataclass
from typing import ContextManager, Optional, Union

import torch

__all__ = ["PRECISIONS", "PrecisionChoice", "autocast", "cpu_flags", "cpu_has_native_bf16",
           "describe", "resolve_device", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
EMULATED_BF16_WARNING = (
    "precision bf16 on this CPU is emulated (no avx512_bf16/amx_bf16 flag): about 10x slower than fp32 "
    "(measured 27 s vs 2.6 s for a 400x600 image, 0.03 vs 0.28 training it/s); use precision auto or fp32")


class BF16EmulatedWarning(UserWarning):
    """bf16 was forced on a CPU that emulates it."""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions, so that bf16 convolutions run at about
    twice the fp32 rate instead of being emulated. Apple silicon and other CPUs whose flags cannot be
    read count as not native (fp32 is the safe default there)."""
    return any(flag in cpu_flags() for flag in _BF16_FLAGS)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``auto`` → CUDA (the ``LOCAL_RANK`` GPU under torchrun), else Apple MPS, else CPU.

    Raises ValueError when an explicitly requested device is not available to this PyTorch.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device '{device}': no CUDA GPU is available to PyTorch {torch.__version__}; "
                             "use --device cpu or auto")
        return torch.device(name) if ":" in name else torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps":
        if not mps_ok:
            raise ValueError("device 'mps': Apple MPS is not available to this PyTorch; use --device cpu or auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``resolve_precision`` decided: ``name`` (fp32/bf16/fp16), its ``dtype`` and ``reason``."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def low_precision(self) -> bool:
        return self.name != "fp32"


def _cuda_bf16(device: torch.device) -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(precision: Optional[str], device: torch.device, warn: bool = True) -> PrecisionChoice:
    """``auto|fp32|bf16|fp16`` for ``device`` → :class:`PrecisionChoice`.

    Raises ValueError for an unknown name, fp16 on the CPU (half kernels are slow and missing there)
    and bf16 on a GPU without it. Forcing bf16 on a CPU without bf16 units warns
    (:class:`BF16EmulatedWarning`) and runs.
    """
    name = (precision or "auto").lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; use auto, fp32, bf16 or fp16")
    kind = device.type
    if name == "auto":
        if kind == "cpu":
            if cpu_has_native_bf16():
                return PrecisionChoice("bf16", "auto: the CPU has native bf16 (" +
                                       "/".join(f for f in _BF16_FLAGS if f in cpu_flags()) + ")")
            return PrecisionChoice("fp32", "auto: the CPU has no avx512_bf16/amx_bf16 (bf16 would be emulated)")
        if kind == "cuda" and _cuda_bf16(device):
            return PrecisionChoice("bf16", "auto: the GPU supports bf16")
        if kind in ("cuda", "mps"):
            return PrecisionChoice("fp16", f"auto: {kind} without bf16")
        return PrecisionChoice("fp32", f"auto: fp32 on {kind}")
    if name == "fp16" and kind == "cpu":
        raise ValueError("precision fp16 needs a GPU (cuda or mps); on the CPU use auto, bf16 or fp32")
    if name == "bf16" and kind == "cuda" and not _cuda_bf16(device):
        raise ValueError(f"precision bf16 is not supported by {torch.cuda.get_device_name(device)}; "
                         "use fp16 or fp32")
    if name == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
        if warn:
            warnings.warn(EMULATED_BF16_WARNING, BF16EmulatedWarning, stacklevel=2)
        return PrecisionChoice("bf16", "forced; emulated on this CPU")
    return PrecisionChoice(name, "requested")


def autocast(device: torch.device, choice: PrecisionChoice) -> ContextManager:
    """Autocast for a low precision (weights stay fp32; convolutions and matmuls run in bf16/fp16
    while exp, log and reductions stay fp32); a no-op for fp32."""
    if not choice.low_precision:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=choice.dtype)


def describe(device: torch.device, choice: PrecisionChoice) -> str:
    """One line for logs and ``llflow info``: device, CPU model and flags that decided, precision."""
    where = str(device)
    if device.type == "cpu":
        flags = sorted(f for f in cpu_flags() if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))
        where += f" ({cpu_name()}; flags: {' '.join(flags) or 'none of avx2/avx512f/avx512_bf16/amx'})"
    elif device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    return f"{where}; precision {choice.name} ({choice.reason}); {torch.get_num_threads()} thread(s)"
