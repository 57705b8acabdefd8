"""Test helpers, and the two layers of the suite.

The default suite needs only the repository (compact official fixtures in tests/fixtures, the
bundled example photos). Tests marked ``shared`` need the full shared data folder — ``../shared``
beside the checkout, or ``$LLFLOW_SHARED`` — and run whenever it is there. Without it they are
skipped with one summary line saying what they need; under ``CI=true``, or when ``LLFLOW_SHARED``
names a folder that does not exist, they fail instead: CI never silently runs less.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "src" / "llflow" / "examples"
SHARED_NEEDS = ("the shared data folder (official LOL_smallNet fixtures, sice-lowlight pairs, real-lowlight "
                "photos, LPIPS reference pairs)")
SKIP_REASON = f"needs {SHARED_NEEDS} at ../shared or $LLFLOW_SHARED"


def shared_path() -> Path:
    return Path(os.environ.get("LLFLOW_SHARED") or REPO.parent / "shared")


def shared_required() -> bool:
    """CI=true, or LLFLOW_SHARED set explicitly: a missing shared folder is an error, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or bool(os.environ.get("LLFLOW_SHARED"))


def shared_dir() -> Path:
    """The shared data folder; only tests marked ``shared`` may ask for it. Fails when it is missing."""
    path = shared_path()
    if not path.is_dir():
        why = "CI=true" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "LLFLOW_SHARED is set"
        pytest.fail(f"shared data not found at {path} ({why}): put it beside the checkout as ../shared or set "
                    "LLFLOW_SHARED to it", pytrace=False)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_dir()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items if "shared" in item.fixturenames
                and item.get_closest_marker("shared") is None]
    if unmarked:
        raise pytest.UsageError("tests using the 'shared' fixture must be marked @pytest.mark.shared: "
                                + ", ".join(unmarked))
    if shared_path().is_dir() or shared_required():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("shared") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _shared_gate(request: pytest.FixtureRequest) -> None:
    """A ``shared`` test that runs without the folder (CI=true) fails at set-up, with the reason."""
    if request.node.get_closest_marker("shared") is not None:
        shared_dir()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and r.longrepr[-1].endswith(SKIP_REASON)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} tests marked 'shared' skipped: no shared data at {shared_path()}; they need "
            f"{SHARED_NEEDS}. Put it beside the checkout or set LLFLOW_SHARED to run the full suite.")


# ------------------------------------------------------------------ bundled example photos
def example_photos() -> list[Path]:
    """The real low-light photos shipped with the package (credited in examples/CREDITS.md)."""
    photos = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    assert len(photos) >= 4, photos
    return photos


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return np.ascontiguousarray(bgr[..., ::-1])


def brighten(low: np.ndarray, gain: float = 6.0) -> np.ndarray:
    """A stand-in reference for a real low-light photo: ``gain``× its linear light along the camera
    curve of :mod:`llflow.synthetic` (for smoke tests that need a paired layout; not a ground truth)."""
    from llflow.synthetic import inverse_tone_curve, tone_curve

    linear = inverse_tone_curve(low.astype(np.float64) / 255.0) * gain
    return np.round(tone_curve(linear) * 255.0).astype(np.uint8)


def make_example_pairs(root: Path, size: int = 128) -> Path:
    """A small paired dataset in the LOL layout (``{train,val}/{low,high}``) from the bundled
    photos: ``low`` = a real size×size crop, ``high`` = :func:`brighten` of it. Per photo, the
    crops along the top row go to train and one from the bottom row to val."""
    import cv2

    for photo in example_photos():
        rgb = read_rgb(photo)
        h, w = rgb.shape[:2]
        crops = {"train": [(0, x) for x in range(0, w - size + 1, size)], "val": [(h - size, w - size)]}
        for split, corners in crops.items():
            for i, (y, x) in enumerate(corners):
                low = rgb[y:y + size, x:x + size]
                for kind, image in (("low", low), ("high", brighten(low))):
                    folder = root / split / kind
                    folder.mkdir(parents=True, exist_ok=True)
                    assert cv2.imwrite(str(folder / f"{photo.stem}_{i}.png"), image[..., ::-1])
    return root


@pytest.fixture(scope="session")
def example_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_example_pairs(tmp_path_factory.mktemp("example_pairs"))


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
def tiny_net():
    """The ``tiny`` network with its initial weights (:func:`tiny_llflow`), one per test module."""
    return tiny_llflow()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    small images gain nothing from more, and on a shared, busy CI machine two spinning OpenMP
    threads made the tiny-model calls ~100× slower (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
