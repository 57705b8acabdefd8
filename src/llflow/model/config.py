"""Architecture configuration: plain keyword arguments, named presets, YAML files and detection from
a checkpoint's keys and shapes (no global option dicts)."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Union

import yaml


@dataclass(frozen=True)
class LLFlowConfig:
    """Everything that defines an LLFlow network.

    ``nf``/``nb``/``gc``: encoder width, RRDB count, dense growth; ``stack_blocks``: trunk blocks
    whose outputs are appended to every flow condition; ``K``: conditional steps per level;
    ``L``: levels; ``n_plain``: ActNorm+1×1 steps after each squeeze (official
    ``additionalFlowNoAffine``); ``hidden_channels``/``affine_eps``: coupling sub-network width and
    scale floor; ``train_gt_ratio``: probability of using the reference colour map as prior mean
    during training (official selector ``r``).
    """

    nf: int = 32
    nb: int = 4
    gc: int = 32
    stack_blocks: tuple[int, ...] = (1,)
    K: int = 4
    L: int = 3
    n_plain: int = 2
    hidden_channels: int = 64
    affine_eps: float = 1e-4
    train_gt_ratio: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "stack_blocks", tuple(int(b) for b in self.stack_blocks))
        if self.L != 3:
            raise ValueError(f"L={self.L}: LLFlow's prior is a factor-8 squeeze of a 3-channel map, so L must be 3")
        if not self.stack_blocks:
            raise ValueError("stack_blocks must name at least one trunk block")
        if any(not 0 <= b < self.nb for b in self.stack_blocks):
            raise ValueError(f"stack_blocks {list(self.stack_blocks)} must index RRDB blocks 0..{self.nb - 1}")

    @property
    def cond_channels(self) -> int:
        """Width of every flow condition (official ``conditionInFeaDim``)."""
        return self.nf * (1 + len(self.stack_blocks))

    @property
    def dead_f_in_channels(self) -> int:
        """Input width of the official unused conv ``flowUpsamplerNet.f`` (hard-coded 64 there)."""
        return 64 * (1 + len(self.stack_blocks))

    @property
    def multiple(self) -> int:
        """Spatial sizes the network needs (inputs are padded to it)."""
        return 2**self.L

    @property
    def latent_channels(self) -> int:
        """Channels of the latent ``z``: the image's 3 channels after ``L`` factor-2 squeezes."""
        return 3 * 4**self.L

    def latent_shape(self, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
        """Shape of the latent for an H×W image: N×192×⌈H/8⌉×⌈W/8⌉ (the image is padded to the grid)."""
        m = self.multiple
        return (batch, self.latent_channels, -(-height // m), -(-width // m))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stack_blocks"] = list(self.stack_blocks)
        return d

    def replace(self, **changes: Any) -> "LLFlowConfig":
        return LLFlowConfig(**{**self.to_dict(), **changes})


PRESETS: dict[str, LLFlowConfig] = {
    # The released configurations (LLFLOW_DESIGN.md §7).
    "LOL_smallNet": LLFlowConfig(nf=32, nb=4, stack_blocks=(1,), K=4, train_gt_ratio=0.2),
    "LOL-pc": LLFlowConfig(nf=64, nb=24, stack_blocks=(1, 3, 5, 7), K=12, train_gt_ratio=0.2),
    "LOLv2-pc": LLFlowConfig(nf=64, nb=24, stack_blocks=(1, 3, 5, 7), K=12, train_gt_ratio=0.5),
    # The small architecture of the official fixtures (tests, smoke runs).
    "tiny": LLFlowConfig(nf=16, nb=2, stack_blocks=(0, 1), K=2, hidden_channels=16, train_gt_ratio=0.2),
}

ConfigLike = Union[str, Path, Mapping[str, Any], LLFlowConfig]


def _preset(name: str) -> LLFlowConfig:
    for key, cfg in PRESETS.items():
        if key.lower() == name.lower():
            return cfg
    raise ValueError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)} or give a YAML file")


def _from_official_options(opt: Mapping[str, Any]) -> dict[str, Any]:
    """Translate an official LLFlow YAML (``network_G: {nf, nb, flow: {...}}``) to our fields."""
    net = opt["network_G"]
    flow = net.get("flow", {})
    coupling = flow.get("CondAffineSeparatedAndCond", {}) or {}
    kwargs: dict[str, Any] = {
        "nf": net.get("nf", 64), "nb": net.get("nb", 23), "gc": net.get("gc", 32),
        "K": flow.get("K", 4), "L": flow.get("L", 3),
        "n_plain": flow.get("additionalFlowNoAffine", 2),
        "hidden_channels": coupling.get("hidden_channels", 64),
        "affine_eps": coupling.get("eps", 1e-4),
    }
    blocks = flow.get("stackRRDB", {}).get("blocks")
    if blocks is not None:
        kwargs["stack_blocks"] = tuple(blocks)
    if "train_gt_ratio" in opt:
        kwargs["train_gt_ratio"] = opt["train_gt_ratio"]
    return kwargs


def config_from_mapping(mapping: Mapping[str, Any]) -> LLFlowConfig:
    """Our keyword form (optionally ``preset: NAME`` plus overrides) or an official options dict."""
    if "network_G" in mapping:
        return LLFlowConfig(**_from_official_options(mapping))
    data = dict(mapping)
    base = _preset(data.pop("preset")).to_dict() if "preset" in data else {}
    if "model" in data and isinstance(data["model"], Mapping):  # a training config: use its model part
        return config_from_mapping(data["model"])
    known = {f.name for f in fields(LLFlowConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; valid: {sorted(known)}")
    return LLFlowConfig(**{**base, **data})


def resolve_config(config: ConfigLike) -> LLFlowConfig:
    """A preset name, a YAML path, a mapping, or a config object → :class:`LLFlowConfig`."""
    if isinstance(config, LLFlowConfig):
        return config
    if isinstance(config, Mapping):
        return config_from_mapping(config)
    text = str(config)
    if text.endswith((".yml", ".yaml")) or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        with path.open() as fh:
            loaded = yaml.safe_load(fh)
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{path}: expected a YAML mapping of model options")
        return config_from_mapping(loaded)
    return _preset(text)


_TRUNK_RE = re.compile(r"^RRDB\.RRDB_trunk\.(\d+)\.")
_LAYER_RE = re.compile(r"^flowUpsamplerNet\.layers\.(\d+)\.")


def detect_config(shapes: Mapping[str, tuple[int, ...]]) -> LLFlowConfig:
    """Infer the architecture from a state dict's key names and tensor shapes.

    Which trunk blocks are stacked is not stored in a checkpoint, only how many: a released preset
    with the same sizes wins, otherwise the official pattern (every second block from 1) is used.
    Raises ``KeyError`` naming the first missing key when this is not an LLFlow state dict.
    """
    nf = shapes["RRDB.conv_first.weight"][0]
    gc = shapes["RRDB.RRDB_trunk.0.RDB1.conv1.weight"][0]
    nb = 1 + max(int(m.group(1)) for k in shapes if (m := _TRUNK_RE.match(k)))
    layer_ids = {int(m.group(1)) for k in shapes if (m := _LAYER_RE.match(k))}
    coupling_ids = sorted(i for i in layer_ids if f"flowUpsamplerNet.layers.{i}.affine.fAffine.0.weight" in shapes)
    level1 = [i for i in layer_ids if shapes[f"flowUpsamplerNet.layers.{i}.invconv.weight"][0] == 12]
    n_plain = len(level1) - sum(1 for i in coupling_ids if i in level1)
    K = sum(1 for i in coupling_ids if i in level1)
    first = coupling_ids[0]
    cond_channels = shapes[f"flowUpsamplerNet.layers.{first}.affine.fFeatures.0.weight"][1]
    hidden = shapes[f"flowUpsamplerNet.layers.{first}.affine.fFeatures.0.weight"][0]
    n_blocks = cond_channels // nf - 1
    if cond_channels != nf * (1 + n_blocks) or n_blocks < 1:
        raise ValueError(f"condition width {cond_channels} is not a multiple of the encoder width {nf}")
    sizes = dict(nf=nf, nb=nb, gc=gc, K=K, n_plain=n_plain, hidden_channels=hidden)
    for preset in PRESETS.values():
        if all(getattr(preset, k) == v for k, v in sizes.items()) and len(preset.stack_blocks) == n_blocks:
            return preset.replace(**sizes)
    blocks = tuple(range(1, 2 * n_blocks, 2))
    if blocks[-1] >= nb:
        blocks = tuple(range(nb - n_blocks, nb))
    return LLFlowConfig(stack_blocks=blocks, **sizes)


__all__ = ["LLFlowConfig", "PRESETS", "ConfigLike", "resolve_config", "detect_config", "config_from_mapping"]
