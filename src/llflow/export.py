"""ONNX export of LLFlow's inference path (condition → image) and a numpy/onnxruntime runner.

What is in the graph
    The reverse flow from the 6-channel condition ``lq`` (N×6×H×W, float32) to the raw image
    (N×3×H×W, float32, unclamped): encoder, prior mean μ, and the decoder at ``z = μ`` (τ = 0, the
    official output). With ``with_eps=True`` the graph has a second input ``eps``
    (N×192×H/8×W/8) and decodes ``z = μ + eps`` — pass ``τ·ε`` for temperature sampling.
    H and W are dynamic but **must be multiples of 8** (ONNX cannot state that constraint; other
    sizes fail inside the graph's reshapes).
    The graph is built from :class:`~llflow.model.fast.InferenceModel` in float32: ActNorms folded
    into the convolutions, and each invertible 1×1 convolution's inverse (composed with the inverse
    ActNorm and, where consecutive, with its neighbours) stored as a constant computed in float64.

What stays outside (numpy, :func:`prepare_condition_numpy`)
    The per-channel histogram equalisation of the unpadded uint8 image (OpenCV), reflect padding
    of image and hist-eq to a multiple of 8, and the log transform
    ``lq = cat[log(max(low + 1e-3, 1e-3)), histeq/255]`` — exactly :func:`llflow.preprocess.make_condition`;
    afterwards clamp to [0, 1] and crop the padding (:class:`OnnxEnhancer` does all of it).

Requires the optional extra ``llflow[onnx]`` (``onnx``, ``onnxruntime``; the exporter itself is
part of torch).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from .model import LLFlow
from .model.fast import InferenceModel

DEFAULT_OPSET = 17
PathLike = Union[str, Path]


class _ReverseGraph(nn.Module):
    """The traced function: ``lq → image`` (and ``eps`` when asked)."""

    def __init__(self, engine: InferenceModel, with_eps: bool) -> None:
        super().__init__()
        self.engine = engine
        self.with_eps = with_eps

    def forward(self, lq: Tensor, eps: Optional[Tensor] = None) -> Tensor:
        engine = self.engine
        conds, mean = engine.encode(lq)
        z = mean if eps is None else mean + eps
        x, _ = engine._run_flow(z, engine._step_conditions(conds, with_logdet=False), None)
        return x


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(f"{module} is not installed: pip install 'llflow[onnx]'") from exc


def export_onnx(model: LLFlow, path: PathLike, *, with_eps: bool = False, opset: int = DEFAULT_OPSET,
                example_size: tuple[int, int] = (64, 96), check: bool = True, rtol: float = 1e-4,
                check_size: Optional[tuple[int, int]] = (72, 104)) -> dict[str, Any]:
    """Export the inference path of ``model`` to ``path`` (see the module docstring).

    ``check`` runs onnxruntime on a random condition of ``check_size`` (deliberately not the traced
    size, to exercise the dynamic axes) and compares with torch: the maximum absolute difference
    relative to max|torch| must be ≤ ``rtol``, else ``RuntimeError``. Returns a report dict
    (path, inputs, size in bytes, check error and timings).
    """
    path = Path(path)
    h, w = example_size
    if h % 8 or w % 8:
        raise ValueError(f"example_size {h}×{w} must be multiples of 8")
    model = model.float().eval()
    engine = InferenceModel(model, precision="fp32", device="cpu", channels_last=False, fused=False)
    graph = _ReverseGraph(engine, with_eps).eval()
    gen = torch.Generator().manual_seed(0)
    lq = _random_condition(1, h, w, gen)
    args: tuple = (lq,)
    input_names = ["lq"]
    dynamic_axes: dict[str, dict[int, str]] = {"lq": {0: "batch", 2: "height", 3: "width"},
                                               "image": {0: "batch", 2: "height", 3: "width"}}
    if with_eps:
        args = (lq, torch.randn(1, 192, h // 8, w // 8, generator=gen))
        input_names.append("eps")
        dynamic_axes["eps"] = {0: "batch", 2: "height_8", 3: "width_8"}
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes
        torch.onnx.export(graph, args, str(path), input_names=input_names, output_names=["image"],
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
                          dynamo=False)
    report: dict[str, Any] = {"path": str(path), "inputs": input_names, "opset": opset,
                              "bytes": path.stat().st_size, "export_s": time.perf_counter() - started,
                              "multiple": 8}
    if check:
        report.update(check_onnx(model, path, with_eps=with_eps, size=check_size or example_size, rtol=rtol))
    return report


def _random_condition(n: int, h: int, w: int, gen: torch.Generator) -> Tensor:
    from .preprocess import make_condition

    low = torch.rand(n, 3, h, w, generator=gen) * 0.3
    histeq = torch.rand(n, 3, h, w, generator=gen)
    return make_condition(low, histeq)


def ort_session(path: PathLike, threads: Optional[int] = None, spinning: bool = True, arena: bool = True) -> Any:
    """An onnxruntime CPU session for an exported model (``threads``: intra-op threads;
    ``spinning=False`` lets idle worker threads sleep — use it when sharing the cores;
    ``arena=False`` allocates through malloc instead of onnxruntime's growing memory arena)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = arena
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(model: LLFlow, path: PathLike, *, with_eps: bool = False, size: tuple[int, int] = (72, 104),
               rtol: float = 1e-4, seed: int = 1) -> dict[str, Any]:
    """Compare onnxruntime with torch (:meth:`LLFlow.reverse`) on a random condition."""
    gen = torch.Generator().manual_seed(seed)
    lq = _random_condition(1, *size, gen)
    feeds = {"lq": lq.numpy()}
    eps = None
    if with_eps:
        eps = 0.7 * torch.randn(1, 192, size[0] // 8, size[1] // 8, generator=gen)
        feeds["eps"] = eps.numpy()
    with torch.no_grad():
        mean = model.prior_mean(model.encode(lq))
        ref, _ = model.reverse(lq, z=mean if eps is None else mean + eps)
    session = ort_session(path)
    started = time.perf_counter()
    (out,) = session.run(["image"], feeds)
    elapsed = time.perf_counter() - started
    err = float(np.abs(out - ref.numpy()).max() / max(float(ref.abs().max()), 1e-12))
    if not err <= rtol:
        raise RuntimeError(f"onnxruntime differs from torch by {err:.2e} (relative to max|torch|) > {rtol:g}")
    return {"check_size": list(size), "check_rel_err": err, "check_ort_s": elapsed}


# ------------------------------------------------------------------------------------------------
# numpy pre/post-processing around the graph


def prepare_condition_numpy(image: np.ndarray, multiple: int = 8) -> tuple[np.ndarray, tuple[int, int]]:
    """H×W×3 RGB image (uint8, uint16 or float in [0, 1]) → (1×6×H'×W' float32 condition, (H, W)).

    Hist-eq on the unpadded 8-bit image, then image and hist-eq reflect-padded bottom/right to a
    multiple of ``multiple`` (edge replication where too small to reflect), then the log transform —
    the same as :meth:`LLFlow.enhance`.
    """
    from .preprocess import LOG_EPS, equalize_histogram, to_float32

    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {image.shape}")
    low = to_float32(image)
    histeq = equalize_histogram(image if image.dtype in (np.uint8, np.uint16) else low).astype(np.float32) / 255.0
    h, w = low.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "edge"
        low = np.pad(low, ((0, ph), (0, pw), (0, 0)), mode=mode)
        histeq = np.pad(histeq, ((0, ph), (0, pw), (0, 0)), mode=mode)
    log_low = np.log(np.maximum(low + LOG_EPS, LOG_EPS))
    lq = np.concatenate([log_low, histeq], axis=2).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(lq, dtype=np.float32), (h, w)


class OnnxEnhancer:
    """Enhance images with an exported graph and onnxruntime only (no torch needed at run time
    apart from this package's import)::

        OnnxEnhancer("llflow.onnx").enhance(rgb_uint8)   # → H×W×3 float32 in [0, 1]
    """

    def __init__(self, path: PathLike, threads: Optional[int] = None) -> None:
        self.session = ort_session(path, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, lq: np.ndarray, eps: Optional[np.ndarray] = None) -> np.ndarray:
        """Raw graph call: 1×6×H×W condition (multiples of 8) → 1×3×H×W unclamped image."""
        feeds = {"lq": lq}
        if "eps" in self.inputs:
            feeds["eps"] = eps if eps is not None else np.zeros((lq.shape[0], 192, lq.shape[2] // 8, lq.shape[3] // 8),
                                                                 np.float32)
        elif eps is not None:
            raise ValueError("this graph was exported without an eps input (export with --eps)")
        return self.session.run(["image"], feeds)[0]

    def enhance(self, image: np.ndarray, temperature: float = 0.0, seed: Optional[int] = None) -> np.ndarray:
        """H×W×3 RGB → enhanced H×W×3 float32 in [0, 1]."""
        lq, (h, w) = prepare_condition_numpy(image)
        eps = None
        if temperature:
            if "eps" not in self.inputs:
                raise ValueError("temperature > 0 needs a graph exported with --eps")
            rng = np.random.default_rng(seed)
            eps = (temperature * rng.standard_normal((1, 192, lq.shape[2] // 8, lq.shape[3] // 8))).astype(np.float32)
        out = self.run(lq, eps)[0, :, :h, :w].transpose(1, 2, 0)
        return np.clip(out, 0.0, 1.0)


__all__ = ["export_onnx", "check_onnx", "ort_session", "prepare_condition_numpy", "OnnxEnhancer"]
