"""The official reference numbers, from the repository (tests/fixtures) or from ../shared.

``source="repo"``: the compact subset shipped in ``tests/fixtures/official`` (``tiny`` only; made by
``tests/fixtures/make_fixtures.py``, which only subsets and re-encodes). Reference outputs there are
kept on a grid of pixels: :meth:`Reference.take` restricts a tensor computed by the test to the same
grid, so a comparison reads ``ref.take(key, ours)`` against ``ref[key]``.

``source="shared"``: the full files in ``shared/fixtures/official`` (``tiny`` and ``lol_smallnet``),
whole tensors (``take`` returns its argument). Tests using it are marked ``shared``.
"""
from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Mapping, Optional

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from .conftest import REPO, shared_dir

FIXTURES = REPO / "tests" / "fixtures"
OFFICIAL = FIXTURES / "official"
SOURCES = ("repo", "shared")


def source_param(source: str, *ids: str):
    """A ``pytest.param`` for a fixture source; the ``shared`` one carries the ``shared`` mark."""
    marks = (pytest.mark.shared,) if source == "shared" else ()
    return pytest.param(source, marks=marks, id="-".join((source,) + ids))


def _load_gz(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(gzip.decompress(path.read_bytes()))


@lru_cache(maxsize=None)
def _layout() -> dict:
    return json.loads((OFFICIAL / "tiny_layout.json").read_text())


class Reference(Mapping[str, torch.Tensor]):
    """Official reference tensors, whole or on a pixel grid (``grids[key] = {rows, cols}``)."""

    def __init__(self, tensors: dict[str, torch.Tensor], grids: Optional[dict[str, dict]] = None) -> None:
        self._tensors = tensors
        self._grids = grids or {}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def is_subsampled(self, key: str) -> bool:
        return key in self._grids

    def take(self, key: str, ours: torch.Tensor) -> torch.Tensor:
        """``ours`` (a full tensor) restricted to the pixels the reference ``key`` holds."""
        grid = self._grids.get(key)
        if grid is None:
            return ours
        assert list(ours.shape) == grid["full_shape"], (key, list(ours.shape), grid["full_shape"])
        return ours[..., grid["rows"], :][..., grid["cols"]]


def official_state(name: str, source: str) -> dict[str, torch.Tensor]:
    """The official state dict of ``name`` (``tiny`` / ``lol_smallnet``), all 226 / 412 keys.

    From the repository the unused ("dead") tensors come back as zeros of the official shape: they
    influence no output, but strict loading needs them (tests/fixtures/README.md).
    """
    if source == "shared":
        return load_file(str(shared_dir() / "fixtures" / "official" / name / "state_dict.safetensors"))
    _repo_only(name)
    state = _load_gz(OFFICIAL / "tiny_state_dict.safetensors.gz")
    for key, shape in _layout()["state_dict"]["dead_shapes"].items():
        state[key] = torch.zeros(shape, dtype=torch.float32)
    return dict(sorted(state.items()))


def official_io(name: str, kind: str, source: str) -> Reference:
    """``kind`` = ``io_float64`` (inputs, outputs of the float64 run) or ``io_float32`` (inputs and
    the per-layer tensors of the float32 run, the only file that has them)."""
    if source == "shared":
        return Reference(load_file(str(shared_dir() / "fixtures" / "official" / name / f"{kind}.safetensors")))
    _repo_only(name)
    return _repo_io(kind)


@lru_cache(maxsize=None)
def _repo_stored() -> dict[str, torch.Tensor]:
    return _load_gz(OFFICIAL / "tiny_io.safetensors.gz")


def _repo_io(kind: str) -> Reference:
    layout = _layout()["io"]
    stored = _repo_stored()
    dtype = {"io_float64": torch.float64, "io_float32": torch.float32}[kind]
    prefix = {"io_float64": "f64.", "io_float32": "f32."}[kind]
    # Inputs, exactly as the official files hold them (make_fixtures.py asserts each identity):
    # float images = uint8/255 in float32, lq = [log part, hist-eq], float64 = float32 upcast.
    inputs = {f"input.{n}": stored[f"input.{n}_u8"].float() / 255 for n in ("low", "histeq", "gt")}
    inputs["input.lq"] = torch.cat([stored["input.lq_log"], inputs["input.histeq"]], dim=1)
    inputs.update({f"input.{n}_u8": stored[f"input.{n}_u8"] for n in ("low", "histeq", "gt")})
    inputs.update({"sample.eps": stored["sample.eps"], "dq.u": stored["dq.u"]})
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
    grids = {}
    for key, value in stored.items():
        if key.startswith(prefix):
            tensors[key[len(prefix):]] = value
            if key in layout["grids"]:
                grids[key[len(prefix):]] = layout["grids"][key]
    if kind == "io_float64":
        for alias, key in layout["aliases"].items():
            tensors[alias], grids[alias] = tensors[key], grids[key]
        # enc.input12 = [lq, colour map in, noise map] (fixture README §4), on the grid of its parts
        grid = grids["enc.color_map_in"]
        lq = tensors["input.lq"][..., grid["rows"], :][..., grid["cols"]]
        tensors["enc.input12"] = torch.cat([lq, tensors["enc.color_map_in"], tensors["enc.noise_map"]], dim=1)
        grids["enc.input12"] = {**grid, "full_shape": [2, 12] + grid["full_shape"][2:]}
    return Reference(tensors, grids)


def _repo_only(name: str) -> None:
    if name != "tiny":
        raise ValueError(f"the repository holds the 'tiny' fixtures only, not {name!r}: use source='shared'")
