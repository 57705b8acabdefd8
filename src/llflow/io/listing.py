"""Expanding files, folders and glob patterns into the list of images to process (:func:`list_images`)."""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

from .files import IMAGE_EXTENSIONS, PathLike

__all__ = ["ImageListError", "list_images"]


class ImageListError(Exception):
    """An input given to :func:`list_images` is missing, unreadable or matched nothing."""



def list_images(inputs: Union[PathLike, Iterable[PathLike]], recursive: bool = False,
                errors: Optional[List[str]] = None) -> List[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of image paths.

    * A file that exists is kept whatever its extension (the user named it; :func:`read_image`
      decides from its content).
    * A folder contributes its files with an image extension (:data:`IMAGE_EXTENSIONS`,
      case-insensitive); sub-folders too when ``recursive``. Hidden files and folders (name starting
      with ``.``, e.g. the temporary files of :func:`write_image`) are skipped; symlinked folders
      are not followed when recursing (no loops).
    * Anything else containing ``*``, ``?`` or ``[`` is a glob pattern (``**`` matches across
      folders); matched files are filtered by extension and matched folders are expanded as above.

    Error handling: with ``errors=None`` (default) the first problem — a missing path, an unreadable
    folder, a pattern or folder that yields no image — raises :class:`ImageListError`. Pass a list
    to collect one-line messages instead and keep going with the other inputs (what a CLI wants).
    """
    items: Sequence[PathLike]
    if isinstance(inputs, (str, os.PathLike)):
        items = [inputs]
    else:
        items = list(inputs)
    found: set = set()

    def report(message: str) -> None:
        if errors is None:
            raise ImageListError(message)
        errors.append(message)

    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_file():
            found.add(path)
        elif path.is_dir():
            images = _images_in_folder(path, recursive, report)
            if images is not None and not images:
                report(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder '{path}'"
                       + ("" if recursive else "; use recursive=True/--recursive for sub-folders"))
            found.update(images or [])
        elif any(ch in text for ch in "*?["):
            matches = 0
            for match in sorted(glob.glob(text, recursive=True)):
                candidate = Path(match)
                if candidate.is_dir():
                    sub = _images_in_folder(candidate, recursive, report) or []
                    matches += len(sub)
                    found.update(sub)
                elif _has_image_extension(candidate):
                    matches += 1
                    found.add(candidate)
            if matches == 0:
                report(f"pattern '{text}' matched no images")
        elif os.path.lexists(path):
            report(f"'{path}' is neither a file nor a folder (broken link or special file)")
        else:
            report(f"'{path}' does not exist; check the path")
    return sorted(found, key=lambda p: (str(p.parent), p.name))


def _has_image_extension(path: Path) -> bool:
    """True when the extension is one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _images_in_folder(folder: Path, recursive: bool,
                      report: Callable[[str], None]) -> Optional[List[Path]]:
    """Image files in ``folder`` (optionally recursive); None when the folder itself is unreadable."""
    def unreadable(exc: OSError) -> None:
        where = exc.filename or folder
        report(f"cannot list folder '{where}': {exc.strerror or exc}; check its permissions")

    if not recursive:
        try:
            with os.scandir(folder) as entries:
                return [Path(e.path) for e in entries
                        if not e.name.startswith(".") and _has_image_extension(Path(e.name))
                        and e.is_file()]
        except OSError as exc:
            unreadable(exc)
            return None
    results: List[Path] = []
    failed = False

    def on_error(exc: OSError) -> None:
        nonlocal failed
        failed = failed or Path(exc.filename or "") == folder
        unreadable(exc)

    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        results.extend(Path(dirpath) / name for name in filenames
                       if not name.startswith(".") and _has_image_extension(Path(name)))
    return None if failed else results
