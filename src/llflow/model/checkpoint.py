"""Reading and writing checkpoints without executing code.

Official checkpoints are ``torch.save(state_dict)`` pickles: they are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers. Ours are
safetensors files whose metadata holds the architecture as JSON.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..io.atomic import atomic_write as _atomic_write
from .config import LLFlowConfig, detect_config

if TYPE_CHECKING:
    from .llflow import LLFlow

CONFIG_METADATA_KEY = "llflow_config"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS_NAME = "llflow_default.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and the fix."""


def default_weights_path() -> Path:
    """The model bundled with the package; a clear error when this install has none."""
    path = WEIGHTS_DIR / DEFAULT_WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no default model is installed ({path} is missing): pass the path of a .pth or .safetensors "
            f"checkpoint, or reinstall llflow with its bundled weights")
    return path


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` prefix that DataParallel/DistributedDataParallel add."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside common wrappers ({'state_dict': ...}, {'params': ...})."""
    for key in ("state_dict", "params_ema", "params", "model", "net_G"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors; expected an LLFlow checkpoint "
                              f"(torch.save(model.state_dict()) or llflow .safetensors)")
    return strip_module_prefix(obj)


def _read_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint (truncated, corrupt or not "
                              f"weights-only: {first_line[:160]}); re-download or re-save it") from None
    return _unwrap(obj, path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], Optional[LLFlowConfig]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read as safetensors ({str(exc).strip()[:160]}); "
                              f"the file is truncated or not a safetensors file") from None
    config = None
    if CONFIG_METADATA_KEY in metadata:
        try:
            config = LLFlowConfig(**json.loads(metadata[CONFIG_METADATA_KEY]))
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: invalid '{CONFIG_METADATA_KEY}' metadata ({exc})") from None
    return strip_module_prefix(state), config


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], LLFlowConfig]:
    """Read weights and architecture from ``path`` (.pth/.pt/.ckpt or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found" + (" (it is a folder)" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty; re-download or re-save it")
    with path.open("rb") as fh:
        head = fh.read(8)
    # safetensors starts with a little-endian header length; zip/pickle files start with PK / 0x80.
    is_torch = head[:2] == b"PK" or head[:1] == b"\x80"
    if is_torch:
        state, config = _read_pth(path), None
    else:
        state, config = _read_safetensors(path)
    if config is None:
        config = config_from_state(state, path)
    return state, config


def config_from_state(state: Mapping[str, torch.Tensor], source: Any) -> LLFlowConfig:
    """Detect the architecture of an LLFlow state dict, or explain why it is not one."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    try:
        return detect_config(shapes)
    except (KeyError, ValueError, IndexError, StopIteration) as exc:
        sample = ", ".join(list(shapes)[:3]) or "none"
        raise CheckpointError(f"{source}: not an LLFlow checkpoint (cannot find {exc}; its first keys: {sample})") from None


def _summarise(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def check_state_dict(model: "LLFlow", state: Mapping[str, torch.Tensor], source: str) -> None:
    """Compare keys and shapes with the model; raise one line naming what differs."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_summarise(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_summarise(unexpected)}")
    if mismatched:
        detail = [f"{k} {tuple(state[k].shape)}≠{expected[k]}" for k in mismatched]
        problems.append(f"{len(mismatched)} shape mismatch(es): {_summarise(detail)}")
    if problems:
        raise CheckpointError(f"{source}: does not fit this LLFlow architecture: {'; '.join(problems)}")


def atomic_write(path: Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path`` (:func:`llflow.io.atomic_write`; the folder
    is created first), so no half-written file is ever left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _atomic_write(path, write)


def save_safetensors(model: "LLFlow", path: Path, metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Weights (float tensors as stored) + architecture JSON in the metadata."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    guard = model.inverse_guard
    if guard is not None and guard.measured:  # the fallback is rebuilt on load, never stored
        state.update(guard.to_state())
    meta = {CONFIG_METADATA_KEY: json.dumps(model.config.to_dict()), "format": "pt", "producer": "llflow"}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
