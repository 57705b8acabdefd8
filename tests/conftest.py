"""Shared test helpers: where ../shared lives (CI has it beside the checkout)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
