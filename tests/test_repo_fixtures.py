"""The compact fixtures in tests/fixtures: small, and (with ../shared) exactly the official numbers.

The ``shared`` checks prove that every number the repository holds equals the official one it was
taken from (bit for bit, after undoing the lossless re-encoding), and that
tests/fixtures/make_fixtures.py still re-derives the same set.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import safetensors.torch
import torch

from .conftest import shared_dir
from .official import FIXTURES, OFFICIAL, official_io, official_state

#: The repository growth this fixture set may cost (README: "a few MB").
BUDGET_MB = 6.0


def _files(root: Path) -> list[Path]:
    return sorted(p for d in ("official", "lpips") for p in (root / d).rglob("*") if p.is_file())


def test_fixture_set_stays_small() -> None:
    total = sum(p.stat().st_size for p in _files(FIXTURES)) / 1e6
    assert total <= BUDGET_MB, f"tests/fixtures holds {total:.2f} MB (budget {BUDGET_MB} MB)"


def test_repo_fixtures_load() -> None:
    state = official_state("tiny", "repo")
    assert len(state) == 226
    io = official_io("tiny", "io_float64", "repo")
    assert io["input.lq"].dtype == torch.float64 and io["input.lq"].shape == (2, 6, 64, 96)
    assert io.is_subsampled("rev0.x") and not io.is_subsampled("fwd.nll_enc")
    assert len([k for k in official_io("tiny", "io_float32", "repo") if k.startswith("layers.")]) == 60


@pytest.mark.shared
def test_repo_state_dict_is_the_official_one() -> None:
    ours, official = official_state("tiny", "repo"), official_state("tiny", "shared")
    assert ours.keys() == official.keys()
    dead = json.loads((OFFICIAL / "tiny_layout.json").read_text())["state_dict"]["dead_shapes"]
    for key, value in official.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        if key not in dead:  # unused tensors are stored as shapes only
            assert torch.equal(ours[key], value), key


@pytest.mark.shared
@pytest.mark.parametrize("kind", ["io_float64", "io_float32"])
def test_repo_io_is_the_official_subset(kind: str) -> None:
    ours, official = official_io("tiny", kind, "repo"), official_io("tiny", kind, "shared")
    for key in ours:
        assert ours[key].dtype == official[key].dtype, key
        assert torch.equal(ours[key], ours.take(key, official[key])), key


@pytest.mark.shared
def test_repo_manifests_metrics_and_lpips_are_the_official_ones() -> None:
    shared = shared_dir() / "fixtures"
    for path in sorted((OFFICIAL / "manifests").glob("*.json.gz")):
        assert gzip.decompress(path.read_bytes()) == (shared / "official" / "manifests" / path.stem).read_bytes()
    assert len(list((OFFICIAL / "manifests").glob("*.json.gz"))) == 3
    for name in ("eval_protocol.safetensors", "eval_protocol.json"):
        assert (OFFICIAL / "metrics" / name).read_bytes() == (shared / "official" / "metrics" / name).read_bytes()
    ours = json.loads((FIXTURES / "lpips" / "expected.json").read_text())
    official = json.loads((shared / "lpips" / "expected.json").read_text())
    assert ours["tolerance"] == official["tolerance"] and len(ours["expected"]) >= 2
    for name, value in ours["expected"].items():
        assert value == official["expected"][name], name
        for kind in ("dist", "ref"):
            a = cv2.imread(str(FIXTURES / "lpips" / kind / f"{name}.webp"), cv2.IMREAD_UNCHANGED)
            b = cv2.imread(str(shared / "lpips" / kind / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            assert a is not None and np.array_equal(a, b), (kind, name)


@pytest.mark.shared
def test_make_fixtures_rederives_the_same_set(tmp_path: Path) -> None:
    script = FIXTURES / "make_fixtures.py"
    subprocess.run([sys.executable, str(script), "--shared", str(shared_dir()), "--out", str(tmp_path)],
                   check=True, capture_output=True, text=True)
    ours, again = _files(FIXTURES), _files(tmp_path)
    assert [p.relative_to(FIXTURES) for p in ours] == [p.relative_to(tmp_path) for p in again]
    for a, b in zip(ours, again):
        if a.name.endswith(".safetensors.gz"):  # compare contents: gzip bytes may vary with zlib
            x, y = (safetensors.torch.load(gzip.decompress(p.read_bytes())) for p in (a, b))
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), a.name
        elif a.suffix == ".gz":
            assert gzip.decompress(a.read_bytes()) == gzip.decompress(b.read_bytes()), a.name
        elif a.suffix == ".webp":  # lossless: compare pixels, not the encoder's bytes
            assert np.array_equal(cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED))
        else:
            assert a.read_bytes() == b.read_bytes(), a.name
