"""ONNX Runtime as an fp32 CPU engine for :class:`~llflow.inference.Enhancer` (``engine="onnxruntime"``).

Why a second fp32 engine: on the CPUs measured here onnxruntime runs the exported graph 5–9 %
faster than the torch fast engine (its NCHWc-blocked convolutions, and concatenations that become
block copies: README, Performance). Same numbers: the graph is the fast engine's, traced in float32,
and checked against torch (1e-4 relative) when it is exported.

The graph is exported once per set of weights and kept in a cache directory
(``$LLFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/llflow``, else ``~/.cache/llflow``; a temporary
directory when that is not writable), named by a hash of the weights, the configuration and the
llflow/torch versions, written under a temporary name and renamed, so a killed export never leaves a
truncated graph behind. Needs the optional extra ``llflow[onnx]``.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .io.atomic import atomic_write
from .model import LLFlow
from .model.prior import latent_offset
from .preprocess import image_condition

CACHE_ENV = "LLFLOW_CACHE_DIR"
PathLike = Union[str, "os.PathLike[str]"]


def cache_dir(override: Optional[PathLike] = None) -> Path:
    """Where exported graphs are kept (created if missing)."""
    if override is not None:
        root = Path(override)
    elif os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llflow"
    path = root / "onnx"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:  # read-only home, full disk...: export into a fresh temporary directory
        path = Path(tempfile.mkdtemp(prefix="llflow-onnx-"))
    return path


def weights_key(model: LLFlow) -> str:
    """Hash of everything the exported graph depends on: weights, configuration, versions."""
    from . import __version__
    from .export import DEFAULT_OPSET

    h = hashlib.sha256(f"{__version__}|{torch.__version__}|{DEFAULT_OPSET}|{model.config!r}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def cached_export(model: LLFlow, directory: Optional[PathLike] = None) -> Path:
    """The exported graph (with an ``eps`` input) for ``model``: from the cache, else exported,
    checked against torch and stored."""
    from .export import export_onnx

    folder = cache_dir(directory)
    path = folder / f"llflow-{weights_key(model)}.onnx"
    if path.is_file():
        return path
    return atomic_write(path, lambda tmp: export_onnx(model, tmp, with_eps=True, check=True))


class OrtEngine:
    """fp32 CPU inference through onnxruntime: the engine contract of :mod:`llflow.engines`
    (``prepare``/``decode``: one whole pass per latent, μ is computed inside the graph) and the
    contract of :meth:`~llflow.model.fast.InferenceModel.enhance`.

    Args:
        model: the network (exported on first use, then read from the cache).
        threads: onnxruntime intra-op threads (default: ``torch.get_num_threads()``).
        directory: cache directory (default: see the module docstring).
    """

    def __init__(self, model: LLFlow, threads: Optional[int] = None, directory: Optional[PathLike] = None) -> None:
        from .export import ort_session

        self.config = model.config
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.path = cached_export(model, directory)  # export_onnx traces it in float32, eval mode
        # Idle workers sleep rather than spin: they would otherwise steal the cores from the rest
        # of the program (and from a second process sharing them). No memory arena: it keeps what
        # the largest tile needed and grows with fragmentation (4K in 1024 tiles: 2.53 GB peak with
        # it, 2.07–2.15 GB without, 64 vs 69–75 s), which would break --memory-budget; at 400×600
        # the two measured the same.
        self.session = ort_session(self.path, threads or torch.get_num_threads(), spinning=False, arena=False)

    name = "onnxruntime"

    def prepare(self, condition: Tensor, uses: int = 1) -> Tensor:
        """The graph takes the condition whole: nothing to do ahead of the latent."""
        return condition.to("cpu", torch.float32)

    def decode(self, prepared: Tensor, offset: Optional[Tensor] = None) -> Tensor:
        return self.forward_image(prepared, offset)

    def forward_image(self, lq: Tensor, eps: Optional[Tensor] = None) -> Tensor:
        """N×6×H×W condition (multiples of 8) → N×3×H×W raw image at ``z = μ + eps`` (``eps``
        defaults to zero: ``z = μ`` exactly)."""
        n, _, h, w = lq.shape
        offset = torch.zeros(self.config.latent_shape(h, w, n)) if eps is None else eps
        feeds = {"lq": _numpy32(lq), "eps": _numpy32(offset)}
        return torch.from_numpy(self.session.run(["image"], feeds)[0])

    @torch.no_grad()
    def enhance(self, low: Tensor, temperature: float = 0.0, eps: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None, clamp: bool = True,
                histeq: Optional[Tensor] = None) -> Tensor:
        """Same contract as :meth:`LLFlow.enhance` (any size; hist-eq on the unpadded image)."""
        lq = image_condition(low, histeq, self.config.multiple, torch.float32, "cpu")
        n, _, h, w = low.shape
        # z = μ + τ·ε exactly as LLFlow.sample_latent (same noise draw), μ added inside the graph
        offset = latent_offset(self.config.latent_shape(lq.shape[2], lq.shape[3], n), temperature, eps, generator)
        out = self.forward_image(lq, offset)[..., :h, :w]
        if clamp:
            out = out.clamp(0.0, 1.0)
        return out.to(device=low.device, dtype=low.dtype)

    def __repr__(self) -> str:
        return f"OrtEngine({self.path.name}, threads={self.session.get_session_options().intra_op_num_threads})"


def _numpy32(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())
