"""Presets and configuration: each released preset builds exactly the official key/shape set."""
from __future__ import annotations

import gzip
import json

import pytest
import torch
import yaml

from llflow import PRESETS, LLFlow, LLFlowConfig
from llflow.model.config import detect_config, resolve_config

from ..official import OFFICIAL

MANIFESTS = {"LOL_smallNet": "LOL_smallNet", "LOL-pc": "LOL-pc", "LOLv2-pc": "LOLv2-pc"}


def _manifest(name: str) -> dict:
    """The official key/shape manifest (shared/fixtures/official/manifests, gzip'd unchanged in the repo)."""
    path = OFFICIAL / "manifests" / f"{name}.state_dict_manifest.json.gz"
    return json.loads(gzip.decompress(path.read_bytes()))


@pytest.mark.parametrize("preset", list(MANIFESTS))
def test_preset_matches_official_manifest(preset: str) -> None:
    manifest = _manifest(MANIFESTS[preset])
    with torch.device("meta"):  # no memory for the 38 M-parameter presets
        model = LLFlow.from_config(preset)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = {entry["key"]: entry["shape"] for entry in manifest["keys"]}
    assert set(ours) == set(official)
    assert ours == official
    assert len(ours) == manifest["n_keys"]
    assert model.num_parameters(used_only=False) == manifest["n_params_total"]
    assert model.num_parameters(used_only=True) == manifest["n_params_used"]
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith("RRDB.")) == manifest["n_params_encoder"]
    dead = {entry["key"] for entry in manifest["keys"] if not entry["used_in_forward"]}
    from llflow.model.llflow import DEAD_PARAMETER_PREFIXES
    assert dead == {k for k in ours if k.startswith(DEAD_PARAMETER_PREFIXES)}


@pytest.mark.parametrize("preset", list(MANIFESTS))
def test_architecture_detected_from_manifest_shapes(preset: str) -> None:
    shapes = {entry["key"]: tuple(entry["shape"]) for entry in _manifest(MANIFESTS[preset])["keys"]}
    detected = detect_config(shapes)
    expected = PRESETS[preset]
    for field in ("nf", "nb", "gc", "K", "L", "n_plain", "hidden_channels", "stack_blocks"):
        assert getattr(detected, field) == getattr(expected, field), field


def test_config_sources_agree(tmp_path) -> None:
    base = PRESETS["LOL_smallNet"]
    assert resolve_config("LOL_smallNet") == base
    assert resolve_config("lol_smallnet") == base
    assert resolve_config({"preset": "LOL_smallNet"}) == base
    assert resolve_config(base.to_dict()) == base
    ours = tmp_path / "model.yaml"
    ours.write_text(yaml.safe_dump({"preset": "tiny", "K": 3}))
    assert resolve_config(ours) == PRESETS["tiny"].replace(K=3)
    official = tmp_path / "LOL_smallNet.yml"  # the official option-file layout
    official.write_text(yaml.safe_dump({
        "train_gt_ratio": 0.2,
        "network_G": {"which_model_G": "LLFlow", "nf": 32, "nb": 4,
                      "flow": {"K": 4, "L": 3, "additionalFlowNoAffine": 2, "conditionInFeaDim": 64,
                               "stackRRDB": {"blocks": [1], "concat": True}}}}))
    assert resolve_config(official) == base
    assert LLFlow(nf=16, nb=2, stack_blocks=(0, 1), K=2, hidden_channels=16).config == PRESETS["tiny"]


def test_config_errors_are_clear(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        resolve_config("nope")
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['nff'\]"):
        resolve_config({"nff": 3})
    with pytest.raises(ValueError, match="stack_blocks"):
        LLFlowConfig(nb=2, stack_blocks=(5,))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        resolve_config(tmp_path / "missing.yaml")
