"""Image files in and out, and conversions between user image types and model tensors.

Reading (:func:`read_image`)
    PNG, JPEG, TIFF, BMP and WebP are decoded with OpenCV from bytes read by Python (so a missing,
    empty, unreadable or folder path gives a precise :class:`ImageReadError`, and non-ASCII paths
    work on every OS). Samples keep their stored depth: 8-bit → ``uint8``, 16-bit PNG/TIFF →
    ``uint16``. Channels come back as RGB; stored grey is replicated to three channels with
    ``was_gray=True``; an alpha channel is returned separately.

    EXIF orientation is applied on every path. Why this needs care: OpenCV applies it itself only for
    some flag/format combinations. Measured with OpenCV 5.0 on crafted files (see tests/test_io.py):
    with ``IMREAD_COLOR``/``IMREAD_GRAYSCALE``/``IMREAD_ANYDEPTH|IMREAD_ANYCOLOR`` it rotates JPEG,
    PNG (eXIf), WebP (EXIF chunk) and TIFF; with ``IMREAD_UNCHANGED`` (the only flag that keeps
    alpha, grey *and* 16 bits together) it rotates TIFF but **not** JPEG, PNG or WebP. Older OpenCV
    releases differ again. So this module decodes with ``IMREAD_UNCHANGED``, parses the Orientation
    tag itself (JPEG APP1, PNG eXIf, WebP EXIF, TIFF IFD0) and rotates/flips with numpy — but only
    for formats where a one-time probe (decoding a tiny crafted Orientation=6 image of that format)
    shows that the installed OpenCV did not already do it. That keeps the result right, and never
    rotated twice, whatever the OpenCV version.

Writing (:func:`write_image`)
    The format comes from the extension. 16 bits are written only to PNG and TIFF; 16-bit data
    written to JPEG, BMP or WebP is converted to 8 bits with rounding (``round(v / 257)``). JPEG has
    no alpha channel, so alpha is dropped there. Writes are atomic: the encoded bytes go to a hidden
    temporary file in the destination folder which is then renamed over the target, so a failure
    never leaves a truncated output (and never damages an existing file).

Grey conversion
    Wherever three channels must become one (``write_image(gray=True)``, :func:`to_tensor`'s
    ``restore`` for grey inputs) the ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` is used: it
    is the usual perceptual grey (and OpenCV's ``cvtColor`` rule), and for a model output whose
    channels are nearly equal it differs from the channel mean only by the colour cast.
"""
from __future__ import annotations

import codecs
import contextlib
import functools
import glob
import os
import secrets
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from .preprocess import to_uint8

__all__ = [
    "IMAGE_EXTENSIONS",
    "Image",
    "ImageListError",
    "ImageReadError",
    "ImageWriteError",
    "list_images",
    "read_image",
    "to_tensor",
    "write_image",
]

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


class ImageListError(Exception):
    """An input given to :func:`list_images` is missing, unreadable or matched nothing."""


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

    if fmt == "jpeg" and not _jpeg_is_complete(data):
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

    orientation = _exif_orientation(data, fmt)
    if orientation != 1 and not _opencv_applies_orientation(fmt):
        decoded = _apply_orientation(decoded, orientation)

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


def _jpeg_is_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the first start-of-scan marker.

    The search starts at the scan so that the EOI of an embedded EXIF thumbnail does not count.
    """
    sos = _jpeg_walk(data)[1]
    if sos is None:
        return False
    return data.find(b"\xff\xd9", sos) != -1


def _jpeg_walk(data: bytes) -> Tuple[Optional[bytes], Optional[int]]:
    """Walk JPEG header segments: return (EXIF TIFF block or None, offset of the first SOS or None)."""
    exif: Optional[bytes] = None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return exif, None  # lost marker sync: malformed header
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            pos += 2
            continue
        if marker == 0xD9:
            return exif, None
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker == 0xDA:
            return exif, pos
        if marker == 0xE1 and exif is None and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            exif = data[pos + 10:pos + 2 + length]
        pos += 2 + length
    return exif, None


def _png_exif(data: bytes) -> Optional[bytes]:
    """Return the TIFF block of a PNG eXIf chunk, or None."""
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        if ctype == b"eXIf":
            return data[pos + 8:pos + 8 + length]
        if ctype == b"IEND":
            break
        pos += 12 + length
    return None


def _webp_exif(data: bytes) -> Optional[bytes]:
    """Return the TIFF block of a WebP (RIFF) EXIF chunk, or None."""
    pos = 12
    while pos + 8 <= len(data):
        fourcc = data[pos:pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4:pos + 8])
        if fourcc == b"EXIF":
            block = data[pos + 8:pos + 8 + length]
            # Some writers keep the JPEG-style "Exif\0\0" prefix inside the chunk.
            return block[6:] if block.startswith(b"Exif\x00\x00") else block
        pos += 8 + length + (length & 1)  # RIFF chunks are padded to an even size
    return None


def _tiff_orientation(block: Optional[bytes]) -> int:
    """Orientation (tag 0x0112) from IFD0 of a TIFF-structured block; 1 when absent or malformed."""
    if block is None or len(block) < 8:
        return 1
    if block[:2] == b"II":
        endian = "<"
    elif block[:2] == b"MM":
        endian = ">"
    else:
        return 1
    magic, ifd = struct.unpack(endian + "HI", block[2:8])
    if magic != 42 or ifd + 2 > len(block):  # BigTIFF (43) is left to OpenCV
        return 1
    (count,) = struct.unpack(endian + "H", block[ifd:ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(block):
            break
        tag, typ = struct.unpack(endian + "HH", block[entry:entry + 4])
        if tag != 0x0112:
            continue
        if typ == 3:  # SHORT, left-justified in the 4-byte value field
            (value,) = struct.unpack(endian + "H", block[entry + 8:entry + 10])
        elif typ == 4:  # LONG (non-standard but seen in the wild)
            (value,) = struct.unpack(endian + "I", block[entry + 8:entry + 12])
        else:
            return 1
        return value if 1 <= value <= 8 else 1
    return 1


def _exif_orientation(data: bytes, fmt: str) -> int:
    """EXIF Orientation (1..8) stored in an encoded image; 1 when there is none."""
    if fmt == "jpeg":
        return _tiff_orientation(_jpeg_walk(data)[0])
    if fmt == "png":
        return _tiff_orientation(_png_exif(data))
    if fmt == "webp":
        return _tiff_orientation(_webp_exif(data))
    if fmt == "tiff":
        return _tiff_orientation(data)
    return 1


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (H×W or H×W×C) into display orientation for EXIF values 1..8."""
    if orientation == 2:
        out = array[:, ::-1]                       # mirror left-right
    elif orientation == 3:
        out = array[::-1, ::-1]                    # rotate 180°
    elif orientation == 4:
        out = array[::-1]                          # mirror top-bottom
    elif orientation == 5:
        out = array.swapaxes(0, 1)                 # transpose (mirror about the main diagonal)
    elif orientation == 6:
        out = np.rot90(array, k=-1, axes=(0, 1))   # rotate 90° clockwise
    elif orientation == 7:
        out = np.rot90(array, k=-1, axes=(0, 1))[::-1]  # transverse (mirror about the anti-diagonal)
    elif orientation == 8:
        out = np.rot90(array, k=1, axes=(0, 1))    # rotate 90° counter-clockwise
    else:
        return array
    return np.ascontiguousarray(out)


def _tiff_exif_block(orientation: int) -> bytes:
    """A minimal big-endian TIFF/EXIF block holding only an Orientation entry (for the probe)."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    return b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)


def _probe_sample(fmt: str) -> Optional[bytes]:
    """Encode a 2×4 RGB image with EXIF Orientation=6 in ``fmt`` (None if OpenCV cannot encode it)."""
    pixels = np.zeros((2, 4, 3), np.uint8)
    pixels[0, 0] = 255
    if fmt == "tiff":
        # OpenCV's TIFF encoder cannot write an Orientation tag, so build an uncompressed TIFF by
        # hand; one grey channel keeps it trivial (8 bytes of 2×4 samples, one strip).
        body = pixels[..., 0].tobytes()
        offset = 8 + 2 + 12 * 10 + 4  # header + IFD with 10 entries + next-IFD pointer
        tags = [(256, 4, 1, 4), (257, 4, 1, 2), (258, 3, 1, 8 << 16), (259, 3, 1, 1 << 16),
                (262, 3, 1, 1 << 16), (273, 4, 1, offset), (274, 3, 1, 6 << 16),
                (277, 3, 1, 1 << 16), (278, 4, 1, 2), (279, 4, 1, len(body))]
        ifd = struct.pack(">H", len(tags)) + b"".join(struct.pack(">HHII", *t) for t in tags)
        return b"MM" + struct.pack(">HI", 42, 8) + ifd + struct.pack(">I", 0) + body
    ext = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}[fmt]
    try:
        ok, encoded = cv2.imencode(ext, pixels)
    except cv2.error:
        return None
    if not ok:
        return None
    raw = encoded.tobytes()
    exif = _tiff_exif_block(6)
    if fmt == "jpeg":
        payload = b"Exif\x00\x00" + exif
        return raw[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + raw[2:]
    if fmt == "png":
        crc = zlib.crc32(b"eXIf" + exif) & 0xFFFFFFFF
        chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif + struct.pack(">I", crc)
        return raw[:33] + chunk + raw[33:]  # right after the 8-byte signature and 25-byte IHDR
    # WebP: wrap the simple-format bitstream into the extended (VP8X) format with an EXIF chunk.
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0]) + (3).to_bytes(3, "little") \
        + (1).to_bytes(3, "little")
    exif_chunk = b"EXIF" + struct.pack("<I", len(exif)) + exif + (b"\x00" if len(exif) & 1 else b"")
    payload = b"WEBP" + vp8x + raw[12:] + exif_chunk
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


@functools.lru_cache(maxsize=None)
def _opencv_applies_orientation(fmt: str) -> bool:
    """Whether ``cv2.imdecode(..., IMREAD_UNCHANGED)`` already applies EXIF orientation for ``fmt``.

    Decided once per process by decoding a tiny Orientation=6 (90° clockwise) sample: a 2×4 image
    coming back as 4×2 means OpenCV rotated it. See the module docstring for why this is needed.
    """
    if fmt not in ("jpeg", "png", "webp", "tiff"):
        return False
    sample = _probe_sample(fmt)
    if sample is None:
        return False
    try:
        decoded = cv2.imdecode(np.frombuffer(sample, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return False
    return decoded is not None and decoded.shape[:2] == (4, 2)


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
    _atomic_write(path, encoded)
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


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file next to ``path`` and rename it over ``path``.

    The rename is atomic on POSIX and Windows (same folder, same file system), so readers see the
    old file or the complete new one, never a truncated file. The temporary name keeps the image
    extension (and is hidden, so :func:`list_images` never picks it up).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        with open(tmp, "xb") as handle:  # 'x': never clobber anything; mode follows the umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # incl. KeyboardInterrupt: clean up, then re-raise
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise ImageWriteError(f"cannot write image '{path}': {reason}; check free space and "
                                  "permissions of the folder") from None
        raise


# --------------------------------------------------------------------------------------------------
# Conversions for the Python API

Restore = Callable[[torch.Tensor], Any]


def to_tensor(image: Any) -> Tuple[torch.Tensor, Restore]:
    """Convert a user image to an N×3×H×W float32 tensor in [0, 1] plus a function undoing it.

    Accepted inputs and what ``restore(out)`` returns for an N×3×H×W output tensor:

    * numpy ``uint8``/``uint16``/float (float assumed in [0, 1]), H×W×3, H×W×4 (RGBA), H×W or
      H×W×1 (grey) → numpy of the same dtype and layout (integers rounded, floats clipped to
      [0, 1]); grey via BT.601 luma; RGBA alpha passed through unchanged (N = 1).
    * ``PIL.Image.Image`` (when Pillow is installed) in mode RGB, RGBA, L, LA, I;16, I (values
      0..65535) or F → a PIL image of the same mode. Other modes (P, 1, CMYK, YCbCr, ...) are
      converted to RGB (or RGBA when they carry transparency) and come back in that mode. EXIF
      orientation of PIL images is not applied (use ``PIL.ImageOps.exif_transpose`` first).
    * torch float tensor, 3×H×W, N×3×H×W, H×W, 1×H×W or N×1×H×W, in [0, 1] → a tensor of the same
      dtype, device and layout, clipped to [0, 1]; one-channel layouts via BT.601 luma.
    * :class:`Image` (from :func:`read_image`) → an :class:`Image` with ``rgb`` of the same dtype and
      the original alpha/was_gray/bit_depth/path.

    The returned tensor is on the CPU for numpy/PIL/Image inputs and on the input's device for
    tensors.

    Raises:
        TypeError: unsupported type or dtype.
        ValueError: unsupported shape, NaN/Inf, or float values clearly outside [0, 1].
    """
    if isinstance(image, torch.Tensor):
        return _tensor_to_tensor(image)
    if isinstance(image, Image):
        return _image_to_tensor(image)
    if isinstance(image, np.ndarray):
        return _numpy_to_tensor(image)
    pil_module = sys.modules.get("PIL.Image")  # a PIL image can only exist if PIL is imported
    if pil_module is not None and isinstance(image, pil_module.Image):
        return _pil_to_tensor(image)
    raise TypeError(f"unsupported image type {type(image).__name__}; pass a numpy array, a torch "
                    "tensor or a PIL image")


def _check_float_range(minimum: float, maximum: float) -> None:
    """Reject NaN/Inf and float data that is not in [0, 1] (e.g. a 0..255 image stored as float)."""
    if not (np.isfinite(minimum) and np.isfinite(maximum)):
        raise ValueError("image contains NaN or infinite values")
    if minimum < -_FLOAT_RANGE_TOLERANCE or maximum > 1 + _FLOAT_RANGE_TOLERANCE:
        raise ValueError(f"float images must be in [0, 1], got values in [{minimum:.4g}, {maximum:.4g}]"
                         "; divide 8-bit data by 255 (16-bit by 65535) or pass an integer array")


def _check_output(out: torch.Tensor, batch: int, size: Tuple[int, int]) -> None:
    """Validate the model output handed to a ``restore`` function."""
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[1] != 3:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"restore expects an N×3×H×W tensor, got {shape}")
    if out.shape[0] != batch or tuple(out.shape[2:]) != tuple(size):
        raise ValueError(f"restore expects a {batch}×3×{size[0]}×{size[1]} tensor (the input's size), "
                         f"got {tuple(out.shape)}")


def _output_hwc(out: torch.Tensor) -> np.ndarray:
    """First image of an N×3×H×W tensor as H×W×3 float64 numpy clipped to [0, 1]."""
    return out[0].detach().to("cpu", torch.float64).clamp(0, 1).permute(1, 2, 0).numpy()


def _from_unit(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert float [0, 1] values to ``dtype`` (integers rounded)."""
    if dtype == np.uint8:
        return np.rint(values * 255.0).astype(np.uint8)
    if dtype == np.uint16:
        return np.rint(values * 65535.0).astype(np.uint16)
    return values.astype(dtype)


def _numpy_to_tensor(array: np.ndarray) -> Tuple[torch.Tensor, Restore]:
    """numpy H×W×{1,3,4} / H×W, uint8/uint16/float → tensor and restore."""
    if not array.dtype.isnative:  # e.g. big-endian '>u2' from a raw file: same values, native order
        array = array.astype(array.dtype.newbyteorder("="))
    dtype = array.dtype
    if dtype == np.uint8:
        scale = 255.0
    elif dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(dtype, np.floating):
        scale = 1.0
    else:
        raise TypeError(f"unsupported numpy dtype {dtype}; use uint8, uint16 or float in [0, 1]")
    layout = array.shape
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        grey, alpha, colour = True, None, array.reshape(layout[0], layout[1], 1)
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        grey, colour = False, array[..., :3]
        alpha = array[..., 3].copy() if array.shape[2] == 4 else None
    else:
        raise ValueError(f"unsupported image shape {layout}; expected H×W×3, H×W×4, H×W×1 or H×W")
    if layout[0] == 0 or layout[1] == 0:
        raise ValueError(f"image is empty (shape {layout})")
    if scale == 1.0:
        _check_float_range(float(np.min(colour)), float(np.max(colour)))
    values = torch.from_numpy(np.ascontiguousarray(colour, dtype=np.float32) / np.float32(scale))
    tensor = values.clamp_(0, 1).permute(2, 0, 1).unsqueeze(0).expand(1, 3, -1, -1).contiguous()
    size = (layout[0], layout[1])

    def restore(out: torch.Tensor) -> np.ndarray:
        _check_output(out, 1, size)
        hwc = _output_hwc(out)
        if grey:
            return _from_unit(np.clip(_luma(hwc), 0, 1), dtype).reshape(layout)
        result = _from_unit(hwc, dtype)
        if alpha is not None:
            result = np.concatenate([result, alpha[..., None]], axis=2)
        return result

    return tensor, restore


def _image_to_tensor(image: Image) -> Tuple[torch.Tensor, Restore]:
    """:class:`Image` → tensor; restore gives an :class:`Image` with the same metadata."""
    tensor, restore_rgb = _numpy_to_tensor(image.rgb)

    def restore(out: torch.Tensor) -> Image:
        return Image(rgb=restore_rgb(out), alpha=image.alpha, was_gray=image.was_gray,
                     bit_depth=image.bit_depth, path=image.path)

    return tensor, restore


def _pil_to_tensor(picture: Any) -> Tuple[torch.Tensor, Restore]:
    """PIL image → tensor; restore gives a PIL image of the same (or documented fallback) mode."""
    pil_image = sys.modules["PIL.Image"]
    mode = picture.mode
    if mode.startswith("I;16"):
        array = np.asarray(picture).astype(np.uint16)  # also normalises big-endian I;16B
    elif mode == "I":
        array = np.asarray(picture)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError("PIL mode 'I' images must hold values in 0..65535 (16-bit data)")
        array = array.astype(np.uint16)
    elif mode in ("RGB", "RGBA", "L", "LA", "F"):
        array = np.asarray(picture)
    else:
        has_alpha = "A" in mode or "a" in mode or "transparency" in picture.info
        mode = "RGBA" if has_alpha else "RGB"
        array = np.asarray(picture.convert(mode))
    alpha = None
    if mode == "LA":
        array, alpha = array[..., 0], array[..., 1].copy()
    tensor, restore_array = _numpy_to_tensor(array)

    def restore(out: torch.Tensor) -> Any:
        result = restore_array(out)
        if mode == "LA":
            result = np.stack([result, alpha], axis=2)
        elif mode == "I":
            result = result.astype(np.int32)
        elif mode.startswith("I;16"):
            result = result.astype(np.uint16)
        return pil_image.fromarray(result)

    return tensor, restore


def _tensor_to_tensor(image: torch.Tensor) -> Tuple[torch.Tensor, Restore]:
    """torch float 3×H×W / N×3×H×W / H×W / 1×H×W / N×1×H×W → N×3×H×W float32 and restore."""
    if not image.is_floating_point():
        raise TypeError(f"unsupported tensor dtype {image.dtype}; pass a float tensor in [0, 1] "
                        "(e.g. uint8 data divided by 255)")
    layout = tuple(image.shape)
    if image.ndim == 2:
        batch4 = image[None, None]
    elif image.ndim == 3 and layout[0] in (1, 3):
        batch4 = image[None]
    elif image.ndim == 4 and layout[1] in (1, 3):
        batch4 = image
    else:
        raise ValueError(f"unsupported tensor shape {layout}; expected 3×H×W, N×3×H×W, H×W, 1×H×W "
                         "or N×1×H×W")
    if batch4.numel() == 0:
        raise ValueError(f"image is empty (shape {layout})")
    grey = batch4.shape[1] == 1
    _check_float_range(float(batch4.amin()), float(batch4.amax()))
    tensor = batch4.to(torch.float32).clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
    batch, size = batch4.shape[0], (batch4.shape[2], batch4.shape[3])
    dtype, device = image.dtype, image.device

    def restore(out: torch.Tensor) -> torch.Tensor:
        _check_output(out, batch, size)
        result = out.clamp(0, 1)
        if grey:
            weights = torch.tensor(_LUMA_BT601, dtype=result.dtype, device=result.device)
            result = (result * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True).clamp(0, 1)
        return result.to(device=device, dtype=dtype).reshape(layout)

    return tensor, restore


# --------------------------------------------------------------------------------------------------
# Listing inputs


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
