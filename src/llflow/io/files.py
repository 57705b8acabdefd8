"""Image files: :func:`read_image` and :func:`write_image` (see :mod:`llflow.io` for what they keep:
depth, grey, alpha, EXIF orientation, atomic writes)."""
from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import cv2
import numpy as np

from ..preprocess import to_uint8
from .atomic import atomic_write
from .orientation import apply_orientation, exif_orientation, jpeg_is_complete, opencv_applies_orientation

__all__ = ["IMAGE_EXTENSIONS", "Image", "ImageReadError", "ImageWriteError", "read_image", "write_image"]

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions treated as images when listing folders and glob patterns (compared lower-case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

_SUPPORTED_NAMES = "PNG, JPEG, TIFF, BMP or WebP"
_FORMAT_LABEL = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "bmp": "BMP", "webp": "WebP"}
_EXT_TO_FORMAT = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
    ".bmp": "bmp", ".webp": "webp",
}
_FORMATS_16BIT = frozenset({"png", "tiff"})
_FORMATS_ALPHA = frozenset({"png", "tiff", "webp", "bmp"})
_LUMA_BT601 = (0.299, 0.587, 0.114)
# Float images are assumed to lie in [0, 1]; tiny overshoots (e.g. from resampling) are clipped,
# anything beyond this tolerance is almost certainly a 0..255 image passed as float.
_FLOAT_RANGE_TOLERANCE = 0.01


class ImageReadError(Exception):
    """An image file could not be read; the message names the file and says what to do."""


class ImageWriteError(Exception):
    """An image file could not be written; the message names the file and says what to do."""


@dataclass
class Image:
    """A decoded image file.

    Attributes:
        rgb: H×W×3 ``uint8`` or ``uint16`` array (as stored), RGB order, EXIF orientation applied.
        alpha: H×W array of the same dtype, or ``None`` when the file has no alpha channel.
        was_gray: the file stored a single grey channel (replicated into ``rgb``).
        bit_depth: 8 or 16 (bits per sample of ``rgb``).
        path: the file it was read from (``None`` for images built in memory).
    """

    rgb: np.ndarray
    alpha: Optional[np.ndarray]
    was_gray: bool
    bit_depth: int
    path: Optional[Path] = None



# --------------------------------------------------------------------------------------------------
# Reading


def read_image(path: PathLike) -> Image:
    """Read a PNG/JPEG/TIFF/BMP/WebP file as RGB (+ alpha), applying its EXIF orientation.

    Raises:
        ImageReadError: missing/empty/unreadable file, a folder, an unsupported format, data that
            is not an image, or corrupt/truncated image data.
    """
    path = Path(path)
    data = _read_file_bytes(path)
    fmt = _sniff_format(data)
    if fmt is None:
        raise ImageReadError(f"cannot read image '{path}': {_describe_unknown(data)}")
    label = _FORMAT_LABEL[fmt]

    if fmt == "jpeg" and not jpeg_is_complete(data):
        # Older OpenCV/libjpeg builds return a half-grey image for truncated JPEGs; refuse it.
        raise ImageReadError(f"cannot read image '{path}': the JPEG data is truncated "
                             "(no end-of-image marker); re-export or re-download the file")
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        decoded = None
    if decoded is None or decoded.size == 0:
        raise ImageReadError(f"cannot read image '{path}': the {label} data is corrupt or truncated "
                             "(OpenCV could not decode it); re-export or re-download the file")
    if decoded.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"cannot read image '{path}': {decoded.dtype} {label} samples are not "
                             "supported (only 8- and 16-bit integer images); convert it to 8 or 16 bits")

    orientation = exif_orientation(data) if fmt != "bmp" else 1
    if orientation != 1 and not opencv_applies_orientation(fmt):
        decoded = apply_orientation(decoded, orientation)

    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[..., 0]
    alpha: Optional[np.ndarray] = None
    if decoded.ndim == 2:
        was_gray = True
        rgb = np.repeat(decoded[..., None], 3, axis=2)
    elif decoded.shape[2] in (3, 4):
        # PNG grey+alpha decodes to BGRA with equal colour channels; the header tells it was grey.
        was_gray = fmt == "png" and _png_color_type(data) in (0, 4)
        rgb = np.ascontiguousarray(decoded[..., 2::-1])
        if decoded.shape[2] == 4:
            alpha = np.ascontiguousarray(decoded[..., 3])
    else:
        raise ImageReadError(f"cannot read image '{path}': {decoded.shape[2]}-channel {label} images "
                             "are not supported; convert it to grey, RGB or RGBA")
    bit_depth = 16 if rgb.dtype == np.uint16 else 8
    return Image(rgb=rgb, alpha=alpha, was_gray=was_gray, bit_depth=bit_depth, path=path)


def _read_file_bytes(path: Path) -> bytes:
    """Read a whole file, turning each OS failure into a one-line :class:`ImageReadError`."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ImageReadError(f"cannot read image '{path}': no such file; check the path") from None
    except OSError as exc:
        # Checked first: Windows reports opening a folder as PermissionError, not IsADirectoryError.
        if isinstance(exc, IsADirectoryError) or path.is_dir():
            raise ImageReadError(f"cannot read image '{path}': it is a folder, not a file; pass an "
                                 "image file (folders are expanded by list_images / the CLI)") from None
        if isinstance(exc, PermissionError):
            raise ImageReadError(f"cannot read image '{path}': permission denied; check the file's "
                                 "permissions") from None
        raise ImageReadError(f"cannot read image '{path}': {exc.strerror or exc}; check that the file "
                             "is accessible") from None
    if not data:
        raise ImageReadError(f"cannot read image '{path}': the file is empty (0 bytes); re-export or "
                             "re-download it")
    return data


def _sniff_format(data: bytes) -> Optional[str]:
    """Identify a supported format from the file's magic bytes (the extension is not trusted)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and BigTIFF
        return "tiff"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


_KNOWN_UNSUPPORTED = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"8BPS", "Photoshop PSD"), (b"%PDF", "PDF"),
    (b"\x76\x2f\x31\x01", "OpenEXR"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"\x00\x00\x01\x00", "ICO"), (b"qoif", "QOI"),
)


def _describe_unknown(data: bytes) -> str:
    """Explain why bytes that are not a supported image were rejected, for the error message."""
    for magic, name in _KNOWN_UNSUPPORTED:
        if data.startswith(magic):
            return f"{name} files are not supported; convert it to {_SUPPORTED_NAMES}"
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace").strip()
        return (f"HEIF/AVIF-family files (brand '{brand}') are not supported; convert it to "
                f"{_SUPPORTED_NAMES}")
    try:
        # Incremental decoding tolerates a multi-byte character cut at the 1 KiB boundary.
        text: Optional[str] = codecs.getincrementaldecoder("utf-8")().decode(data[:1024], final=False)
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return f"not an image (it looks like a text file); pass a {_SUPPORTED_NAMES} file"
    return f"not a recognised image format; pass a {_SUPPORTED_NAMES} file"


def _png_color_type(data: bytes) -> int:
    """PNG IHDR colour type (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA), -1 if unreadable."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        return -1
    return data[25]


# --------------------------------------------------------------------------------------------------
# Writing


def write_image(path: PathLike, rgb: np.ndarray, alpha: Optional[np.ndarray] = None,
                gray: bool = False, bit_depth: int = 8, quality: int = 95) -> Path:
    """Write an image atomically; the format is chosen by the file extension.

    Args:
        path: destination; its folder must exist (the caller decides whether to create it).
        rgb: H×W×3 RGB, or H×W (grey); ``uint8``, ``uint16`` or float in [0, 1].
        alpha: optional H×W alpha channel (same conventions); dropped for JPEG (no alpha there).
        gray: write a single grey channel (BT.601 luma of ``rgb`` when it has three channels).
            H×W input is always written grey. Grey with alpha is written as RGBA because OpenCV has
            no grey+alpha encoder.
        bit_depth: 8 or 16. 16 bits are kept only for PNG/TIFF; JPEG/BMP/WebP get 8-bit data
            (16-bit values rounded, ``round(v / 257)``). Input values are rescaled to the requested
            depth (uint8 → 16 bit multiplies by 257, exact).
        quality: JPEG/WebP quality 1..100 (ignored by lossless formats).

    Returns:
        The written path.

    Raises:
        ImageWriteError: unknown extension, missing folder, bad array, encoder or file-system failure.
    """
    path = Path(path)
    fmt = _EXT_TO_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise ImageWriteError(f"cannot write image '{path}': unsupported extension "
                              f"'{path.suffix}'; use one of {', '.join(IMAGE_EXTENSIONS)}")
    if bit_depth not in (8, 16):
        raise ImageWriteError(f"cannot write image '{path}': bit_depth must be 8 or 16, got {bit_depth!r}")
    folder = path.parent
    if not folder.is_dir():
        raise ImageWriteError(f"cannot write image '{path}': folder '{folder}' does not exist; create "
                              "it first")
    if path.is_dir():
        raise ImageWriteError(f"cannot write image '{path}': a folder with that name exists; choose "
                              "another output name")
    depth = bit_depth if fmt in _FORMATS_16BIT else 8
    try:
        pixels = _encode_layout(rgb, alpha if fmt in _FORMATS_ALPHA else None, gray, depth)
    except (TypeError, ValueError) as exc:
        raise ImageWriteError(f"cannot write image '{path}': {exc}") from None
    encoded = _encode(path, fmt, pixels, quality)
    try:
        atomic_write(path, encoded)
    except OSError as exc:
        raise ImageWriteError(f"cannot write image '{path}': {exc.strerror or exc}; check free space and "
                              "permissions of the folder") from None
    return path


def _to_depth(array: np.ndarray, depth: int, what: str) -> np.ndarray:
    """Convert uint8/uint16/float-[0,1] samples to ``uint8`` or ``uint16`` (rounding, clipping)."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array if depth == 8 else array.astype(np.uint16) * 257
    if array.dtype == np.uint16:
        return array if depth == 16 else to_uint8(array)
    if np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if depth == 8 else 65535.0
        clean = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        values = np.rint(np.clip(clean, 0.0, 1.0) * scale)
        return values.astype(np.uint8 if depth == 8 else np.uint16)
    raise TypeError(f"{what} has dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an H×W×3 array, as float64 (same value scale as the input)."""
    weights = np.asarray(_LUMA_BT601, dtype=np.float64)
    return np.asarray(rgb, dtype=np.float64) @ weights


def _encode_layout(rgb: np.ndarray, alpha: Optional[np.ndarray], gray: bool,
                   depth: int) -> np.ndarray:
    """Build the H×W / H×W×3 (BGR) / H×W×4 (BGRA) array OpenCV's encoders expect."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 3 and rgb.shape[2] == 1:
        rgb = rgb[..., 0]
    if rgb.ndim == 2:
        gray = True
    elif rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be H×W×3 or H×W, got shape {rgb.shape} (pass alpha separately)")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"image is empty (shape {rgb.shape})")
    if gray and rgb.ndim == 3:
        if rgb.dtype in (np.uint8, np.uint16):
            rgb = np.rint(_luma(rgb)).astype(rgb.dtype)  # stays in range: weights sum to 1
        elif np.issubdtype(rgb.dtype, np.floating):
            rgb = _luma(rgb)
        else:
            raise TypeError(f"rgb has dtype {rgb.dtype}; use uint8, uint16 or float in [0, 1]")
    pixels = _to_depth(rgb, depth, "rgb")
    if alpha is None:
        return pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels[..., ::-1])
    alpha = np.asarray(alpha)
    if alpha.shape != pixels.shape[:2]:
        raise ValueError(f"alpha shape {alpha.shape} does not match the image size {pixels.shape[:2]}")
    colour = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels[..., ::-1]
    return np.ascontiguousarray(np.concatenate([colour, _to_depth(alpha, depth, "alpha")[..., None]],
                                               axis=2))


def _encode(path: Path, fmt: str, pixels: np.ndarray, quality: int) -> bytes:
    """Encode in memory with OpenCV, raising :class:`ImageWriteError` on failure."""
    quality = int(min(max(quality, 1), 100))
    params: List[int] = []
    if fmt == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif fmt == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ext = path.suffix.lower()
    try:
        ok, buffer = cv2.imencode(ext, pixels, params)
    except cv2.error as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImageWriteError(f"cannot write image '{path}': the {_FORMAT_LABEL[fmt]} encoder failed "
                              f"({message})") from None
    if not ok:
        raise ImageWriteError(f"cannot write image '{path}': the {_FORMAT_LABEL[fmt]} encoder failed; "
                              "check the image size and format")
    return buffer.tobytes()
