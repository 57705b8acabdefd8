"""Training configuration: a YAML file of plain sections, overridable with ``--set a.b=value``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml


@dataclass
class DataConfig:
    train: str = "../shared/data/sice-lowlight/train"
    val: Optional[str] = "../shared/data/sice-lowlight/val"
    train_split: Optional[str] = None  # e.g. "train" for a LOL-v2 root (Real_captured + Synthetic)
    val_split: Optional[str] = None
    holdout: int = 0  # with no `val`: hold out this many training pairs for model selection
    crop: int = 160
    batch_size: int = 16  # global batch, split evenly over distributed processes
    num_workers: int = 1
    flip: bool = True
    val_max_images: Optional[int] = None
    # Training pairs (spread over the set) on which exported weights get their inference guard's
    # ranges measured (llflow.model.guard); 0 = export without a measured guard.
    guard_pairs: int = 12
    # Probability that a training item's low image is synthesised from its reference
    # (llflow.synthetic: exposure, shot/read noise, tone curve); 0 = real pairs only.
    synthetic_fraction: float = 0.0
    synthetic_exposure: tuple[float, float] = (0.03, 0.2)
    synthetic_shot_noise: tuple[float, float] = (1e-4, 3e-3)
    # Pairs with bright inputs, so the network learns to leave well-exposed content alone: folders of
    # pairs with mildly dark inputs (e.g. sice-lowlight/train-mild) and, with identity_pairs, every
    # training reference paired with itself. Each training item is replaced, with probability
    # extra_fraction, by one of these (the epoch still walks the main pairs).
    extra_train: tuple[str, ...] = ()
    identity_pairs: bool = False
    extra_fraction: float = 0.0


@dataclass
class OptimConfig:
    objective: str = "nll"  # "nll" (the method) or "l1" (the paper's RQ4 ablation, same network)
    iterations: int = 45000
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)  # the official configs' beta2=0.99 is never applied
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup: int = 0
    milestones: tuple[float, ...] = (0.5, 0.75, 0.9, 0.95)  # fractions of `iterations`
    gamma: float = 0.5
    dequantize: bool = False  # the official training never dequantises (add_gt_noise False)
    grad_clip: Optional[float] = None
    # auto: bf16 where native (CPU with avx512_bf16/amx_bf16, CUDA with bf16), fp16 on other GPUs,
    # fp32 otherwise (llflow.runtime); or fp32, bf16, fp16
    precision: str = "auto"
    max_nonfinite: int = 20  # consecutive non-finite losses before training stops
    # Exponential moving average of the weights (BasicSR's ema_decay); when set, validation, model
    # selection and the exported files use the averaged weights. None = off.
    ema_decay: Optional[float] = None
    # Weight of an auxiliary L1 term on the deterministic (τ = 0) output next to the NLL, as LLFlow's
    # successors add (0 = the method as published). The encoder pass is shared with the NLL.
    aux_l1: float = 0.0
    # Weight of 1 − SSIM (grey, 7 × 7 uniform window: the val metric) of the same τ = 0 output, the
    # other reconstruction term LLFlow's successors add. 0 = off.
    aux_ssim: float = 0.0
    seed: int = 10


@dataclass
class ScheduleConfig:
    log_every: int = 50
    val_every: int = 200
    ckpt_every: int = 1000
    select_metric: str = "psnr"  # chosen on the validation split only
    val_at_start: bool = True  # validate the starting weights (skip when they were already scored)
    # Stop (validate, save the state) once the run has used this many CPU-hours (all threads, over
    # every resume): recipes compared at equal compute. Resume later with a larger value. None = off.
    stop_after_cpu_h: Optional[float] = None
    tensorboard: bool = True


@dataclass
class TrainConfig:
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "LOL_smallNet"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    output: str = "runs/llflow"
    # Start from these weights (.safetensors/.pth of the same architecture) instead of a fresh
    # initialisation: fine-tuning. Optimiser and schedule start fresh (unlike --resume).
    init: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig}


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(where + '.' + u for u in unknown)}; valid: {sorted(names)}")
    defaults = cls()
    return cls(**{key: _coerce(getattr(defaults, key), value, f"{where}.{key}") for key, value in values.items()})


def _coerce(default: Any, value: Any, where: str) -> Any:
    """Match the default's type. PyYAML reads ``1e-4`` (no dot) as a string, so numbers are
    converted here rather than trusted; a value that does not convert is reported by name."""
    try:
        if isinstance(default, bool) or value is None:
            return value
        if isinstance(default, float) or (default is None and isinstance(value, str) and _is_number(value)):
            return float(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, tuple):
            if isinstance(value, str):  # one folder where a list is expected
                value = [value]
            return tuple(_coerce(default[0] if default else None, v, where) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: cannot use {value!r} here (expected {type(default).__name__})") from None
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def config_from_dict(raw: Mapping[str, Any]) -> TrainConfig:
    unknown = sorted(set(raw) - {"model", "data", "optim", "schedule", "output", "init"})
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; valid: model, data, optim, schedule, output, init")
    sections = {name: _build(cls, raw.get(name) or {}, name) for name, cls in _SECTIONS.items()}
    model = dict(raw.get("model") or {"preset": "LOL_smallNet"})
    init = raw.get("init")
    return TrainConfig(model=model, output=str(raw.get("output", "runs/llflow")),
                       init=None if init is None else str(init), **sections)


def _parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars/lists: 1e-4, true, [1, 3], null, strings."""
    return yaml.safe_load(text)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a raw config dict (in place, returned)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: '{part}' is not a section")
        node[parts[-1]] = _parse_value(value)
    return raw


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and key != "model":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(a: TrainConfig, b: TrainConfig, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every setting that differs, keys in ``ignore`` left out."""
    flat_a, flat_b = _flatten(a.to_dict()), _flatten(b.to_dict())
    return [(key, flat_a.get(key), flat_b.get(key)) for key in flat_a.keys() | flat_b.keys()
            if key not in ignore and flat_a.get(key) != flat_b.get(key)]


def load_config(path: Optional[str | Path], overrides: Optional[list[str]] = None) -> TrainConfig:
    """Read a training YAML (or start from defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: training config not found (see configs/ for examples)")
        loaded = yaml.safe_load(path.read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a YAML mapping with sections model/data/optim/schedule")
        raw = loaded
    return config_from_dict(apply_overrides(raw, overrides or []))
