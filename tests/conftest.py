"""Shared test helpers: where ../shared lives (CI has it beside the checkout)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared data folder; a test that needs it fails loudly when it is missing."""
    path = Path(os.environ.get("LLFLOW_SHARED", REPO.parent / "shared"))
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}: put it beside the checkout or set LLFLOW_SHARED")
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_dir()


@pytest.fixture(scope="session")
def fixtures_dir(shared: Path) -> Path:
    return shared / "fixtures" / "official"


def tiny_llflow(perturb: float = 0.0, seed: int = 0):
    """The ``tiny`` preset in eval mode, ActNorms marked initialised. ``perturb`` adds Gaussian noise
    of that std to every parameter: at initialisation the couplings' last convolutions are zero, so
    they are identities, which would hide errors in a path that re-implements them (fast, ONNX)."""
    from llflow import LLFlow

    torch.manual_seed(seed)
    model = LLFlow.from_config("tiny").eval()
    model.mark_initialized()
    if perturb:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(perturb * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    small images gain nothing from more, and on a shared, busy CI machine two spinning OpenMP
    threads made the tiny-model calls ~100× slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
