"""Paired (training/evaluation) and unpaired (inference) low-light datasets.

Pair discovery (:func:`find_pairs`) understands three layouts:

* plain ``<root>/low`` + ``<root>/high`` folders (e.g. ``sice-lowlight/train``);
* LOL-v1: ``<root>/our485/{low,high}`` (train) and ``<root>/eval15/{low,high}`` (test);
* LOL-v2: ``<root>/{Train,Test}/{Low,Normal}`` in any letter case; a root whose sub-folders are
  several such datasets (``LOL-v2/{Real_captured,Synthetic}``) yields the union of all of them,
  as the official LOL-v2 training does.

Items follow the official recipe (LLFLOW_DESIGN.md §1.1): hist-eq of the **full** low image,
then one random crop window shared by low, GT and hist-eq, then a shared random horizontal flip.
Randomness is a pure function of ``(seed, epoch, index)`` so a resumed run sees the same crops.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from .preprocess import equalize_histogram, to_float32
from .synthetic import LowLightSynthesizer

__all__ = ["DatasetError", "MixedPairs", "Pair", "PairedDataset", "UnpairedDataset", "find_pairs", "identity_pairs"]

PathLike = Union[str, "os.PathLike[str]"]

# Folder names (compared lower-case). "normal" is LOL-v2's name for the references.
LOW_DIR_NAMES = ("low",)
HIGH_DIR_NAMES = ("high", "normal", "gt")
# Split name → folder names tried in order (compared lower-case). LOL-v1 has no separate
# validation set: its test set eval15 serves as both.
SPLIT_ALIASES: Dict[str, Tuple[str, ...]] = {
    "train": ("train", "our485"),
    "val": ("val", "eval15", "test"),
    "test": ("test", "eval15", "val"),
}
_PREFIX = re.compile(r"^(low|normal|high)[_\- ]?", re.IGNORECASE)
_MAX_NAMES_IN_MESSAGE = 10


class DatasetError(ValueError):
    """A dataset folder or item is unusable; the message names the files and what to do."""


@dataclass(frozen=True)
class Pair:
    """One low-light input and its reference. ``name`` is the low image's stem, prefixed by the
    sub-dataset folder (``Real_captured/low00690``) when several sub-datasets are combined."""

    low: Path
    high: Path
    name: str


# --------------------------------------------------------------------------------------------------
# Pair discovery


def find_pairs(root: PathLike, split: Optional[str] = None, on_unmatched: str = "warn") -> List[Pair]:
    """Find (low, high) pairs under ``root``, sorted by name.

    Layouts, tried in this order:

    1. ``root`` has a ``low`` folder and a ``high``/``normal``/``gt`` folder (any letter case):
       those are paired (``split`` is ignored).
    2. ``split`` is given and ``root`` has a split folder: ``train`` → ``train``/``our485``,
       ``val`` → ``val``/``eval15``/``test``, ``test`` → ``test``/``eval15``/``val`` (any case), or a
       folder named exactly like ``split``; its ``low``/``high`` folders are paired.
    3. ``split`` is given and several sub-folders of ``root`` hold such a split folder (LOL-v2's
       ``Real_captured`` and ``Synthetic``): all are paired and combined; names get the sub-folder
       as prefix.

    Matching rules inside one low/high folder pair (image extensions only, hidden files ignored):

    1. Identical file stems are paired (``s1_f2.jpg`` ↔ ``s1_f2.jpg``; extensions may differ).
    2. Remaining files are paired on the stem with a leading ``low``/``normal``/``high`` prefix
       (any case, optionally followed by ``_``, ``-`` or a space) removed: ``low00690.png`` ↔
       ``normal00690.png``.
    3. Nothing is ever paired by sorted position. Files left without a partner, and keys claimed
       by several files (``a.png`` and ``a.jpg``), are reported and left out.

    Args:
        root: dataset folder (see layouts).
        split: ``train``/``val``/``test`` or a split folder name; needed for layouts 2 and 3.
        on_unmatched: ``"warn"`` (default: one warning listing the unmatched names), ``"error"``
            (raise :class:`DatasetError`) or ``"ignore"``.

    Raises:
        DatasetError: no recognised layout, or no pairs at all.
    """
    if on_unmatched not in ("warn", "error", "ignore"):
        raise ValueError(f"on_unmatched must be 'warn', 'error' or 'ignore', got {on_unmatched!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder '{root}' does not exist; check the path")
    sources = _pair_folders(root, split)
    pairs: List[Pair] = []
    problems: List[str] = []
    for prefix, low_dir, high_dir in sources:
        found, unmatched = _match_folder(low_dir, high_dir)
        pairs.extend(Pair(p.low, p.high, f"{prefix}/{p.name}" if prefix else p.name) for p in found)
        problems.extend(unmatched)
    if problems and on_unmatched != "ignore":
        shown = ", ".join(problems[:_MAX_NAMES_IN_MESSAGE])
        more = len(problems) - _MAX_NAMES_IN_MESSAGE
        message = (f"{len(problems)} unpaired file(s) under '{root}' left out: {shown}"
                   + (f" and {more} more" if more > 0 else "")
                   + "; give each low image a high image with the same name (or low/normal prefix)")
        if on_unmatched == "error":
            raise DatasetError(message)
        warnings.warn(message, stacklevel=2)
    if not pairs:
        raise DatasetError(f"no image pairs found under '{root}'"
                           + (f" (split '{split}')" if split else "")
                           + "; expected low/ and high/ (or normal/) folders with matching file names")
    return sorted(pairs, key=lambda p: p.name)


def _subdirs(folder: Path) -> Dict[str, Path]:
    """Visible sub-folders of ``folder`` by lower-case name (first in sorted order wins)."""
    result: Dict[str, Path] = {}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"cannot list dataset folder '{folder}': {exc.strerror or exc}; check its "
                           "permissions") from None
    for entry in entries:
        if not entry.name.startswith(".") and entry.is_dir():
            result.setdefault(entry.name.lower(), Path(entry.path))
    return result


def _low_high(folder: Path) -> Optional[Tuple[Path, Path]]:
    """The (low, high) folders directly inside ``folder``, or None."""
    subs = _subdirs(folder)
    low = next((subs[n] for n in LOW_DIR_NAMES if n in subs), None)
    high = next((subs[n] for n in HIGH_DIR_NAMES if n in subs), None)
    return (low, high) if low is not None and high is not None else None


def _split_folder(folder: Path, split: str) -> Optional[Path]:
    """The folder for ``split`` inside ``folder`` (aliases, then the literal name), or None."""
    subs = _subdirs(folder)
    names = SPLIT_ALIASES.get(split.lower(), ()) + (split.lower(),)
    return next((subs[n] for n in names if n in subs), None)


def _pair_folders(root: Path, split: Optional[str]) -> List[Tuple[str, Path, Path]]:
    """Resolve the layout into (name prefix, low folder, high folder) triples."""
    direct = _low_high(root)
    if direct is not None:
        return [("", *direct)]
    children = sorted(_subdirs(root).values())
    if split is None:
        names = ", ".join(p.name for p in children) or "none"
        raise DatasetError(f"'{root}' has no low/ and high/ folders (sub-folders: {names}); point at "
                           "a folder that has them or pass split='train'/'val'/'test'")
    folder = _split_folder(root, split)
    if folder is not None:
        inner = _low_high(folder)
        if inner is None:
            raise DatasetError(f"split folder '{folder}' has no low/ and high/ (or normal/) folders")
        return [("", *inner)]
    combined: List[Tuple[str, Path, Path]] = []
    for child in children:  # e.g. LOL-v2/{Real_captured,Synthetic}/{Train,Test}
        folder = _split_folder(child, split)
        inner = _low_high(folder) if folder is not None else None
        if inner is not None:
            combined.append((child.name, *inner))
    if not combined:
        names = ", ".join(p.name for p in children) or "none"
        raise DatasetError(f"no '{split}' split found under '{root}' (sub-folders: {names}); expected "
                           "our485/eval15 (LOL-v1), Train/Test (LOL-v2) or low/ and high/ folders")
    return combined


def _image_files(folder: Path) -> List[Path]:
    """Visible files with an image extension directly inside ``folder``."""
    try:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries
                          if not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
                          and e.is_file())
    except OSError as exc:
        raise DatasetError(f"cannot list folder '{folder}': {exc.strerror or exc}; check its "
                           "permissions") from None


def _unique_index(files: Sequence[Path], key) -> Tuple[Dict[str, Path], List[Path]]:
    """Map key(file) → file for keys held by exactly one file; return the rest as ambiguous."""
    groups: Dict[str, List[Path]] = {}
    for f in files:
        groups.setdefault(key(f), []).append(f)
    unique = {k: v[0] for k, v in groups.items() if len(v) == 1}
    ambiguous = [f for v in groups.values() if len(v) > 1 for f in v]
    return unique, ambiguous


def _strip_prefix(path: Path) -> str:
    """Stem without a leading low/normal/high prefix (the LOL-v2 Real_captured naming)."""
    return _PREFIX.sub("", path.stem, count=1)


def _match_folder(low_dir: Path, high_dir: Path) -> Tuple[List[Pair], List[str]]:
    """Pair the files of one low/high folder pair by the rules in :func:`find_pairs`."""
    lows, highs = _image_files(low_dir), _image_files(high_dir)
    pairs: List[Pair] = []
    problems: List[str] = []

    # Rule 1: identical stems.
    low_by_stem, low_amb = _unique_index(lows, lambda p: p.stem)
    high_by_stem, high_amb = _unique_index(highs, lambda p: p.stem)
    for stem in sorted(low_by_stem.keys() & high_by_stem.keys()):
        pairs.append(Pair(low_by_stem.pop(stem), high_by_stem.pop(stem), stem))
    problems.extend(f"{f.parent.name}/{f.name} (several files share its stem)" for f in low_amb + high_amb)

    # Rule 2: stems with the low/normal/high prefix removed, among what is left.
    low_by_key, low_amb = _unique_index(list(low_by_stem.values()), _strip_prefix)
    high_by_key, high_amb = _unique_index(list(high_by_stem.values()), _strip_prefix)
    for key in sorted(low_by_key.keys() & high_by_key.keys()):
        low = low_by_key.pop(key)
        pairs.append(Pair(low, high_by_key.pop(key), low.stem))
    problems.extend(f"{f.parent.name}/{f.name} (ambiguous after removing the low/normal/high prefix)"
                    for f in low_amb + high_amb)
    problems.extend(f"{f.parent.name}/{f.name} (no match in '{high_dir.name}/')"
                    for f in sorted(low_by_key.values()))
    problems.extend(f"{f.parent.name}/{f.name} (no match in '{low_dir.name}/')"
                    for f in sorted(high_by_key.values()))
    return pairs, problems


# --------------------------------------------------------------------------------------------------
# Datasets


def _chw(array: np.ndarray) -> torch.Tensor:
    """H×W×3 numpy (any dtype) → contiguous 3×H×W float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(to_float32(array).transpose(2, 0, 1)))


@dataclass
class _Loaded:
    """Decoded pixels of one pair, kept in their stored dtype (uint8/uint16) to save memory."""

    low: np.ndarray
    high: np.ndarray
    histeq: np.ndarray  # uint8, of the full low image


class PairedDataset(Dataset):
    """Paired low/GT images for training (random crops) and validation (``crop=None``).

    Each item is ``{'low': 3×h×w, 'gt': 3×h×w, 'histeq': 3×h×w, 'name': str}``, float32 in [0, 1].
    ``histeq`` is the per-channel histogram equalisation of the **full** low image (computed before
    cropping, as the official code does), cropped and flipped with the same window as low and GT.

    Reproducibility: the crop window and flip of item ``index`` in epoch ``epoch`` come from
    ``numpy.random.default_rng([seed, epoch, index])`` — independent of workers, order or history,
    so a resumed run sees exactly the same crops. Call :meth:`set_epoch` at the start of every
    epoch. With ``persistent_workers=True`` DataLoader workers keep their own copy of the dataset
    and do not see ``set_epoch``; then index the dataset with ``(epoch, index)`` tuples from a
    custom sampler instead (``dataset[(epoch, index)]`` is supported).

    Caching: with ``cache=True`` decoded images and hist-eq are kept in memory in their stored
    dtype (about 0.8 MB per 512×512 image, ×3 per pair). Each DataLoader worker fills its own cache;
    call :meth:`preload` before creating the DataLoader so forked workers share one copy.

    Synthetic pairs: with ``synthetic_fraction > 0`` each item is, with that probability, a pair whose
    low image is synthesised from the reference by ``synthesizer`` (see :mod:`llflow.synthetic`) —
    drawn from its own ``(seed, epoch, index)`` stream, so the crops of real items stay the same.

    Args:
        source: dataset root (see :func:`find_pairs`) or a sequence of :class:`Pair`.
        crop: square crop size in pixels, or None for full images.
        flip: random horizontal flip (p = 0.5) of low, GT and hist-eq together.
        seed: base seed of the per-item RNG.
        cache: keep decoded images in memory.
        split: passed to :func:`find_pairs` when ``source`` is a folder.
        on_error: ``"raise"`` (default: a bad pair — unreadable, sizes differ, smaller than the
            crop — raises :class:`DatasetError` when it is loaded) or ``"skip"`` (every pair is
            checked now, bad ones are dropped with one warning naming them).
        synthetic_fraction: probability that an item's low image is synthesised.
        synthesizer: the synthesis (default :class:`~llflow.synthetic.LowLightSynthesizer()`).
    """

    def __init__(self, source: Union[PathLike, Sequence[Pair]], crop: Optional[int] = 160,
                 flip: bool = True, seed: int = 0, cache: bool = True, split: Optional[str] = None,
                 on_error: str = "raise", synthetic_fraction: float = 0.0,
                 synthesizer: Optional[LowLightSynthesizer] = None) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not 0.0 <= synthetic_fraction <= 1.0:
            raise ValueError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction!r}")
        if crop is not None and (not isinstance(crop, (int, np.integer)) or isinstance(crop, bool)
                                 or crop <= 0):
            raise ValueError(f"crop must be a positive int or None, got {crop!r}")
        if isinstance(source, (str, os.PathLike)):
            self.pairs: List[Pair] = find_pairs(source, split=split)
        else:
            self.pairs = list(source)
        self.crop = None if crop is None else int(crop)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.epoch = 0
        self.cache = bool(cache)
        self.on_error = on_error
        self.synthetic_fraction = float(synthetic_fraction)
        self.synthesizer = synthesizer or LowLightSynthesizer()
        self._cache: Dict[int, _Loaded] = {}
        if on_error == "skip":
            self._drop_bad_pairs()

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops/flips :meth:`__getitem__` draws (see class docstring)."""
        self.epoch = int(epoch)

    def preload(self) -> None:
        """Decode every pair now (fills the cache; raises on the first bad pair)."""
        for index in range(len(self.pairs)):
            self._load(index)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, object]:
        epoch, index = (key if isinstance(key, tuple) else (self.epoch, key))
        index = int(index)
        if index < 0:
            index += len(self.pairs)
        if not 0 <= index < len(self.pairs):
            raise IndexError(f"index {index} out of range for {len(self.pairs)} pairs")
        loaded = self._load(index)
        low, high, histeq = loaded.low, loaded.high, loaded.histeq
        name = self.pairs[index].name
        if self.synthetic_fraction > 0:
            synth_rng = np.random.default_rng([self.seed, int(epoch), index, 1])
            if synth_rng.random() < self.synthetic_fraction:
                # Synthesise the full image: hist-eq must see all of it, as for a real low image.
                low = self.synthesizer(high, synth_rng)
                histeq = equalize_histogram(low)
                name += "#synthetic"
        rng = np.random.default_rng([self.seed, int(epoch), index])
        if self.crop is not None:
            height, width = low.shape[:2]
            top = int(rng.integers(0, height - self.crop + 1))
            left = int(rng.integers(0, width - self.crop + 1))
            window = (slice(top, top + self.crop), slice(left, left + self.crop))
            low, high, histeq = low[window], high[window], histeq[window]
        # Always draw the flip so the crop stream does not depend on the flip setting.
        if rng.random() < 0.5 and self.flip:
            low, high, histeq = low[:, ::-1], high[:, ::-1], histeq[:, ::-1]
        return {"low": _chw(low), "gt": _chw(high), "histeq": _chw(histeq), "name": name}

    def _load(self, index: int) -> _Loaded:
        """Decode one pair (or fetch it from the cache) and check it is usable."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        pair = self.pairs[index]
        try:
            low = read_image(pair.low).rgb
            high = read_image(pair.high).rgb
        except ImageReadError as exc:
            raise DatasetError(f"pair '{pair.name}': {exc}") from None
        if low.shape[:2] != high.shape[:2]:
            raise DatasetError(f"pair '{pair.name}': sizes differ: '{pair.low}' is "
                               f"{low.shape[1]}×{low.shape[0]}, '{pair.high}' is "
                               f"{high.shape[1]}×{high.shape[0]}; resize or remove one of them")
        if self.crop is not None and min(low.shape[:2]) < self.crop:
            raise DatasetError(f"pair '{pair.name}': '{pair.low}' is {low.shape[1]}×{low.shape[0]}, "
                               f"smaller than the {self.crop}×{self.crop} crop; use a smaller crop "
                               "or remove the pair")
        loaded = _Loaded(low=low, high=high, histeq=equalize_histogram(low))
        if self.cache:
            self._cache[index] = loaded
        return loaded

    def _drop_bad_pairs(self) -> None:
        """``on_error='skip'``: load every pair once and drop the unusable ones with a warning."""
        good: List[Pair] = []
        kept: Dict[int, _Loaded] = {}
        reasons: List[str] = []
        for index, pair in enumerate(self.pairs):
            try:
                loaded = self._load(index)
            except DatasetError as exc:
                reasons.append(str(exc))
                continue
            if self.cache:
                kept[len(good)] = loaded
            good.append(pair)
        if reasons:
            shown = " | ".join(reasons[:_MAX_NAMES_IN_MESSAGE])
            more = len(reasons) - _MAX_NAMES_IN_MESSAGE
            warnings.warn(f"skipped {len(reasons)} unusable pair(s): {shown}"
                          + (f" | and {more} more" if more > 0 else ""), stacklevel=3)
        self.pairs, self._cache = good, kept


def identity_pairs(pairs: Sequence[Pair]) -> List[Pair]:
    """Each distinct reference of ``pairs`` paired with itself: a well-exposed input whose right
    output is the input, so that a model learns to leave bright content alone."""
    seen: Dict[Path, Pair] = {}
    for pair in pairs:
        seen.setdefault(pair.high, Pair(pair.high, pair.high, f"{pair.high.stem}#identity"))
    return list(seen.values())


class MixedPairs(Dataset):
    """``main``'s items, each replaced with probability ``fraction`` by a random item of ``extra``.

    An epoch still walks ``main`` (its length is ``len(main)``); the replacement and the extra item
    are drawn from ``(seed, epoch, index)`` like the crops, so a resumed run sees the same items.
    Index with ``(epoch, index)`` keys (see :class:`PairedDataset`).
    """

    def __init__(self, main: PairedDataset, extra: PairedDataset, fraction: float, seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
        if fraction > 0 and len(extra) == 0:
            raise DatasetError("extra_fraction > 0 but the extra pairs are empty: give data.extra_train "
                               "folders or data.identity_pairs: true")
        self.main, self.extra, self.fraction, self.seed = main, extra, float(fraction), int(seed)

    def __len__(self) -> int:
        return len(self.main)

    def preload(self) -> None:
        self.main.preload()
        self.extra.preload()

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, object]:
        epoch, index = (key if isinstance(key, tuple) else (self.main.epoch, key))
        rng = np.random.default_rng([self.seed, int(epoch), int(index), 0xE7])
        if rng.random() < self.fraction:
            return self.extra[(int(epoch), int(rng.integers(len(self.extra))))]
        return self.main[(int(epoch), int(index))]


class UnpairedDataset(Dataset):
    """Low-light images without references, for inference: full size, no randomness.

    Each item is ``{'low': 3×H×W, 'histeq': 3×H×W, 'name': str, 'path': str}``, float32 in [0, 1];
    ``name`` is the file stem (``path`` disambiguates equal stems from different folders) and
    ``histeq`` is computed on the whole unpadded image, as the official test script does.

    Args:
        paths: files, folders or glob patterns (expanded by :func:`llflow.io.list_images`, which
            raises on missing inputs), or a sequence of paths.
        recursive: search sub-folders of folder inputs.
    """

    def __init__(self, paths: Union[PathLike, Sequence[PathLike]], recursive: bool = False) -> None:
        self.paths: List[Path] = list_images(paths, recursive=recursive)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Dict[str, object]:
        path = self.paths[index]
        rgb = read_image(path).rgb
        return {"low": _chw(rgb), "histeq": _chw(equalize_histogram(rgb)), "name": path.stem,
                "path": str(path)}
