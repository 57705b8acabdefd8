"""Tests for llflow.data: pair discovery on real and synthetic layouts, crops, flips, determinism."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import llflow.data as ldata
from llflow.data import DatasetError, Pair, PairedDataset, UnpairedDataset, find_pairs
from llflow.io import write_image
from llflow.preprocess import equalize_histogram

from .conftest import EXAMPLES, example_photos, shared_dir


def write_flat_image(folder: Path, name: str, value: int, size=(8, 8)) -> Path:
    """Write a small PNG whose pixels all equal ``value`` (so a pair's identity can be checked)."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_image(folder / name, np.full(size + (3,), value, np.uint8))


def pixel(path: Path) -> int:
    from llflow.io import read_image
    return int(read_image(path).rgb[0, 0, 0])


# ------------------------------------------------------------------ pair discovery

@pytest.mark.shared
@pytest.mark.parametrize("split,count", [("train", 213), ("val", 22)])
def test_sice_pairs(split, count):
    root = shared_dir() / "data" / "sice-lowlight" / split
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real data must pair completely
        pairs = find_pairs(root)
    assert len(pairs) == count
    assert all(p.low.name == p.high.name and p.name == p.low.stem for p in pairs)
    assert all(p.low.parent.name == "low" and p.high.parent.name == "high" for p in pairs)
    assert [p.name for p in pairs] == sorted(p.name for p in pairs)
    # The split argument on the parent folder finds the same pairs.
    assert find_pairs(root.parent, split=split) == pairs


@pytest.mark.shared
def test_sice_dataset_item():
    root = shared_dir() / "data" / "sice-lowlight" / "val"
    pairs = find_pairs(root)[:2]
    item = PairedDataset(pairs, crop=160)[1]
    assert item["low"].shape == item["gt"].shape == item["histeq"].shape == (3, 160, 160)
    assert item["low"].dtype == torch.float32 and item["name"] == pairs[1].name
    assert float(item["gt"].mean()) > float(item["low"].mean())  # reference is brighter
    full = PairedDataset(pairs, crop=None)[0]
    assert full["low"].shape == (3, 512, 512)


def test_lol_v1_layout(tmp_path):
    for i in range(3):
        write_flat_image(tmp_path / "our485" / "low", f"{i + 10}.png", i + 10)
        write_flat_image(tmp_path / "our485" / "high", f"{i + 10}.png", i + 10)
    write_flat_image(tmp_path / "eval15" / "low", "1.png", 1)
    write_flat_image(tmp_path / "eval15" / "high", "1.png", 1)
    train = find_pairs(tmp_path, split="train")
    assert [p.name for p in train] == ["10", "11", "12"]
    assert all(pixel(p.low) == pixel(p.high) for p in train)
    assert [p.name for p in find_pairs(tmp_path, split="val")] == ["1"]
    assert [p.name for p in find_pairs(tmp_path, split="eval15")] == ["1"]
    assert find_pairs(tmp_path / "our485") == train
    with pytest.raises(DatasetError, match="split="):
        find_pairs(tmp_path)


def make_lol_v2(root: Path) -> None:
    """LOL-v2 in miniature: Real_captured (low/normal prefixes, mixed case), Synthetic (same names).

    The Real_captured Train split has an extra reference (normal00005) so that pairing by sorted
    position would pair low00010 with normal00005 — matching by name must not.
    """
    real = root / "Real_captured"
    for i in (2, 10, 690):
        write_flat_image(real / "Train" / "Low", f"low{i:05d}.png", i % 250)
        write_flat_image(real / "Train" / "Normal", f"normal{i:05d}.png", i % 250)
    write_flat_image(real / "Train" / "Normal", "normal00005.png", 5)
    for i in (3, 4):
        write_flat_image(real / "test" / "LOW", f"low{i:05d}.png", i)
        write_flat_image(real / "test" / "NORMAL", f"normal{i:05d}.png", i)
    synthetic = root / "Synthetic"
    for i, name in enumerate(["r000da4f2t", "r0a6dd0e2t"]):
        write_flat_image(synthetic / "Train" / "Low", f"{name}.png", 100 + i)
        write_flat_image(synthetic / "Train" / "Normal", f"{name}.png", 100 + i)
        write_flat_image(synthetic / "Test" / "Low", f"{name}.png", 120 + i)
        write_flat_image(synthetic / "Test" / "Normal", f"{name}.png", 120 + i)


def test_lol_v2_prefix_matching_and_unmatched_report(tmp_path):
    make_lol_v2(tmp_path)
    with pytest.warns(UserWarning, match="normal00005.png"):
        pairs = find_pairs(tmp_path / "Real_captured", split="train")
    assert [p.name for p in pairs] == ["low00002", "low00010", "low00690"]
    assert all(pixel(p.low) == pixel(p.high) for p in pairs)
    assert [p.high.name for p in pairs] == ["normal00002.png", "normal00010.png", "normal00690.png"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        test = find_pairs(tmp_path / "Real_captured", split="test")  # lower-case test/LOW/NORMAL
    assert [p.name for p in test] == ["low00003", "low00004"]
    with pytest.raises(DatasetError, match="normal00005"):
        find_pairs(tmp_path / "Real_captured", split="train", on_unmatched="error")


def test_lol_v2_combined_subsets(tmp_path):
    make_lol_v2(tmp_path)
    pairs = find_pairs(tmp_path, split="test")
    assert [p.name for p in pairs] == ["Real_captured/low00003", "Real_captured/low00004",
                                       "Synthetic/r000da4f2t", "Synthetic/r0a6dd0e2t"]
    assert all(pixel(p.low) == pixel(p.high) for p in pairs)


def test_unmatched_and_ambiguous_files_are_reported(tmp_path):
    write_flat_image(tmp_path / "low", "a.png", 1)
    write_flat_image(tmp_path / "high", "a.png", 1)
    write_flat_image(tmp_path / "low", "only_low.png", 2)
    write_flat_image(tmp_path / "high", "only_high.png", 3)
    write_flat_image(tmp_path / "low", "b.png", 4)
    write_flat_image(tmp_path / "low", "b.jpg", 4)
    write_flat_image(tmp_path / "high", "b.png", 4)
    (tmp_path / "low" / "readme.txt").write_text("not an image")
    with pytest.warns(UserWarning) as record:
        pairs = find_pairs(tmp_path)
    message = str(record[0].message)
    assert [p.name for p in pairs] == ["a"]
    for name in ("only_low.png", "only_high.png", "b.png", "b.jpg"):
        assert name in message
    assert "readme" not in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(find_pairs(tmp_path, on_unmatched="ignore")) == 1


def test_find_pairs_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        find_pairs(tmp_path / "nope")
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    with pytest.raises(DatasetError, match="no image pairs"):
        find_pairs(tmp_path)
    with pytest.raises(DatasetError, match="no 'train' split"):
        find_pairs(tmp_path / "low", split="train")


# ------------------------------------------------------------------ PairedDataset

def gradient_low(h: int = 48, w: int = 64, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Dark image brighter to the right plus noise: a crop's histogram differs from the whole's."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 0.5, w)[None, :, None] + rng.uniform(0, 0.2, (h, w, 3))
    top = 65535 if dtype == np.uint16 else 255
    return np.rint(ramp * top).astype(dtype)


def make_pairs(root: Path, n: int = 3, dtype=np.uint8, size=(48, 64)) -> list:
    """Pairs with gt = max - low, a relation that survives any shared crop and flip."""
    top = 65535 if dtype == np.uint16 else 255
    depth = 16 if dtype == np.uint16 else 8
    (root / "low").mkdir(parents=True)
    (root / "high").mkdir(parents=True)
    for i in range(n):
        low = gradient_low(*size, dtype=dtype, seed=i)
        write_image(root / "low" / f"{i}.png", low, bit_depth=depth)
        write_image(root / "high" / f"{i}.png", (top - low.astype(np.int64)).astype(dtype), bit_depth=depth)
    return find_pairs(root)


def locate(full: np.ndarray, crop: np.ndarray):
    """Find (top, left, flipped) of ``crop`` (h×w×3) inside ``full`` by exhaustive search."""
    h, w = crop.shape[:2]
    hits = []
    for flipped in (False, True):
        target = crop[:, ::-1] if flipped else crop
        for top in range(full.shape[0] - h + 1):
            for left in range(full.shape[1] - w + 1):
                if np.array_equal(full[top:top + h, left:left + w], target):
                    hits.append((top, left, flipped))
    assert len(hits) == 1, hits
    return hits[0]


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def test_crop_flip_consistency_and_full_image_histeq(tmp_path):
    pairs = make_pairs(tmp_path)
    ds = PairedDataset(pairs, crop=24, seed=3)
    full_low = gradient_low(seed=1)
    full_eq = equalize_histogram(full_low)
    flips = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[1]
        assert item["name"] == "1"
        low, gt, eq = hwc(item["low"]), hwc(item["gt"]), hwc(item["histeq"])
        assert low.shape == gt.shape == eq.shape == (24, 24, 3)
        np.testing.assert_allclose(gt, 1.0 - low, atol=1e-6)  # same window and flip for GT
        top, left, flipped = locate(full_low, np.rint(low * 255).astype(np.uint8))
        flips.add(flipped)
        window = full_eq[top:top + 24, left:left + 24]
        expected = window[:, ::-1] if flipped else window
        np.testing.assert_allclose(eq, expected / 255.0, atol=1e-7)  # crop of the FULL hist-eq
        own = equalize_histogram(np.rint(low * 255).astype(np.uint8)) / 255.0
        assert not np.allclose(eq, own)  # ... which is not the hist-eq of the crop
    assert flips == {False, True}


def test_no_flip_and_full_size(tmp_path):
    pairs = make_pairs(tmp_path)
    ds = PairedDataset(pairs, crop=None, flip=False)
    item = ds[0]
    np.testing.assert_allclose(hwc(item["low"]), gradient_low(seed=0) / 255.0, atol=1e-7)
    np.testing.assert_allclose(hwc(item["histeq"]), equalize_histogram(gradient_low(seed=0)) / 255.0,
                               atol=1e-7)
    crops = PairedDataset(pairs, crop=16, flip=False)
    for epoch in range(8):
        crops.set_epoch(epoch)
        assert not locate(gradient_low(seed=2), np.rint(hwc(crops[2]["low"]) * 255).astype(np.uint8))[2]


def test_determinism_and_resume(tmp_path):
    pairs = make_pairs(tmp_path)
    a = PairedDataset(pairs, crop=16, seed=7)
    b = PairedDataset(pairs, crop=16, seed=7, cache=False)
    a.set_epoch(4)
    b.set_epoch(4)
    for i in range(3):
        torch.testing.assert_close(a[i]["low"], b[i]["low"], rtol=0, atol=0)
        torch.testing.assert_close(a[i]["histeq"], b[i]["histeq"], rtol=0, atol=0)
    # A "resumed" dataset asked for epoch 4 directly sees the same crops (no hidden RNG state).
    resumed = PairedDataset(pairs, crop=16, seed=7)
    torch.testing.assert_close(resumed[(4, 2)]["low"], a[2]["low"], rtol=0, atol=0)
    # Different epochs / seeds give different crops.
    epochs = []
    for epoch in range(5):
        a.set_epoch(epoch)
        epochs.append(torch.cat([a[i]["low"] for i in range(3)]))
    assert all(not torch.equal(epochs[0], e) for e in epochs[1:])
    other = PairedDataset(pairs, crop=16, seed=8)
    other.set_epoch(4)
    a.set_epoch(4)
    assert not torch.equal(torch.cat([other[i]["low"] for i in range(3)]),
                           torch.cat([a[i]["low"] for i in range(3)]))
    # Access order does not matter.
    a.set_epoch(2)
    forward = [a[i]["low"] for i in range(3)]
    backward = [a[i]["low"] for i in reversed(range(3))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(forward, backward))


def test_dataloader_batches(tmp_path):
    ds = PairedDataset(make_pairs(tmp_path), crop=16)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False)))
    assert batch["low"].shape == (3, 3, 16, 16) and batch["name"] == ["0", "1", "2"]


def test_16bit_inputs(tmp_path):
    pairs = make_pairs(tmp_path, n=1, dtype=np.uint16)
    item = PairedDataset(pairs, crop=None)[0]
    low16 = gradient_low(dtype=np.uint16, seed=0)
    np.testing.assert_array_equal(hwc(item["low"]), low16.astype(np.float32) / np.float32(65535))
    np.testing.assert_allclose(hwc(item["gt"]), 1.0 - low16 / 65535.0, atol=1e-6)
    np.testing.assert_allclose(hwc(item["histeq"]), equalize_histogram(low16) / 255.0, atol=1e-7)
    crop = PairedDataset(pairs, crop=20)[0]
    np.testing.assert_allclose(hwc(crop["gt"]), 1.0 - hwc(crop["low"]), atol=1e-6)


def test_cache_reads_each_file_once(tmp_path, monkeypatch):
    pairs = make_pairs(tmp_path, n=2)
    calls = []
    real = ldata.read_image
    monkeypatch.setattr(ldata, "read_image", lambda p: calls.append(p) or real(p))
    cached = PairedDataset(pairs, crop=16)
    for epoch in range(3):
        cached.set_epoch(epoch)
        cached[0], cached[1]
    assert len(calls) == 4
    calls.clear()
    uncached = PairedDataset(pairs, crop=16, cache=False)
    uncached[0], uncached[0]
    assert len(calls) == 4


def test_size_mismatch_and_small_images(tmp_path):
    write_flat_image(tmp_path / "low", "a.png", 10, size=(32, 32))
    write_flat_image(tmp_path / "high", "a.png", 10, size=(32, 32))
    write_flat_image(tmp_path / "low", "b.png", 10, size=(32, 32))
    write_flat_image(tmp_path / "high", "b.png", 10, size=(32, 40))
    write_flat_image(tmp_path / "low", "c.png", 10, size=(12, 40))
    write_flat_image(tmp_path / "high", "c.png", 10, size=(12, 40))
    ds = PairedDataset(tmp_path, crop=16)
    assert len(ds) == 3 and ds[0]["name"] == "a"
    with pytest.raises(DatasetError) as info:
        ds[1]
    message = str(info.value)
    assert "sizes differ" in message and str(tmp_path / "low" / "b.png") in message
    assert str(tmp_path / "high" / "b.png") in message
    with pytest.raises(DatasetError, match="smaller than the 16×16 crop"):
        ds[2]
    with pytest.warns(UserWarning, match="skipped 2 unusable pair"):
        skipping = PairedDataset(tmp_path, crop=16, on_error="skip")
    assert len(skipping) == 1 and skipping[0]["name"] == "a"
    with pytest.warns(UserWarning, match="skipped 1 unusable pair"):
        assert len(PairedDataset(tmp_path, crop=None, on_error="skip")) == 2  # no crop: c is fine


def test_unreadable_pair(tmp_path):
    write_flat_image(tmp_path / "low", "a.png", 10)
    (tmp_path / "high").mkdir()
    (tmp_path / "high" / "a.png").write_text("not an image")
    with pytest.raises(DatasetError, match="not an image"):
        PairedDataset(tmp_path, crop=None)[0]


def test_bad_arguments(tmp_path):
    pairs = [Pair(tmp_path / "l.png", tmp_path / "h.png", "x")]
    for crop in (0, -8, 1.5, True):
        with pytest.raises(ValueError, match="crop"):
            PairedDataset(pairs, crop=crop)
    with pytest.raises(ValueError, match="on_error"):
        PairedDataset(pairs, on_error="ignore")
    with pytest.raises(IndexError):
        PairedDataset(pairs)[1]


# ------------------------------------------------------------------ UnpairedDataset

def test_unpaired_dataset(tmp_path):
    low = gradient_low(30, 44)
    write_image(tmp_path / "b.png", low)
    write_image(tmp_path / "a.jpg", low)
    (tmp_path / "skip.txt").write_text("x")
    ds = UnpairedDataset(tmp_path)
    assert len(ds) == 2
    item = ds[1]
    assert item["name"] == "b" and item["path"] == str(tmp_path / "b.png")
    np.testing.assert_allclose(hwc(item["low"]), low / 255.0, atol=1e-7)
    np.testing.assert_allclose(hwc(item["histeq"]), equalize_histogram(low) / 255.0, atol=1e-7)
    bundled = UnpairedDataset(EXAMPLES)  # real photos; CREDITS.md is not an image
    assert len(bundled) == len(example_photos()) and bundled[0]["low"].shape[0] == 3


@pytest.mark.shared
def test_unpaired_dataset_on_real_photos():
    real = UnpairedDataset(shared_dir() / "data" / "real-lowlight" / "lime")
    assert len(real) == 9 and real[0]["low"].shape[0] == 3


def test_synthetic_pairs(tmp_path):
    pairs = make_pairs(tmp_path, n=6)
    real = PairedDataset(pairs, crop=16, seed=4)
    mixed = PairedDataset(pairs, crop=16, seed=4, synthetic_fraction=0.5)
    names = []
    for epoch in range(3):
        real.set_epoch(epoch)
        mixed.set_epoch(epoch)
        for i in range(len(pairs)):
            a, b = real[i], mixed[i]
            torch.testing.assert_close(a["gt"], b["gt"], rtol=0, atol=0)  # same crop window and flip
            names.append(b["name"])
            if b["name"].endswith("#synthetic"):
                assert not torch.equal(a["low"], b["low"])
                low = np.rint(hwc(b["low"]) * 255).astype(np.uint8)
                assert low.mean() < np.rint(hwc(b["gt"]) * 255).mean()
                # hist-eq is computed on the full synthetic image, then cropped like the low image
                assert not np.allclose(hwc(b["histeq"]), equalize_histogram(low) / 255.0)
            else:
                torch.testing.assert_close(a["low"], b["low"], rtol=0, atol=0)
                torch.testing.assert_close(a["histeq"], b["histeq"], rtol=0, atol=0)
    synthetic = sum(n.endswith("#synthetic") for n in names)
    assert 3 <= synthetic <= len(names) - 3
    again = PairedDataset(pairs, crop=16, seed=4, synthetic_fraction=0.5)
    torch.testing.assert_close(again[(2, 1)]["low"], mixed[(2, 1)]["low"], rtol=0, atol=0)
    everything = PairedDataset(pairs, crop=16, seed=4, synthetic_fraction=1.0)
    assert all(everything[i]["name"].endswith("#synthetic") for i in range(len(pairs)))
    with pytest.raises(ValueError, match="synthetic_fraction"):
        PairedDataset(pairs, crop=16, synthetic_fraction=1.5)
