"""What an image file's header says, read without decoding: the EXIF orientation (with Pillow),
the pixel size (:func:`image_size`, used to refuse decompression bombs before decoding), whether a
JPEG is complete, and whether the installed OpenCV already applies the orientation itself.

Why the orientation needs care: OpenCV applies it itself only for some flag/format combinations.
Measured with OpenCV 5.0 on crafted files (see tests/io/test_files.py): with ``IMREAD_COLOR``/
``IMREAD_GRAYSCALE``/``IMREAD_ANYDEPTH|IMREAD_ANYCOLOR`` it rotates JPEG, PNG (eXIf), WebP (EXIF
chunk) and TIFF; with ``IMREAD_UNCHANGED`` (the only flag that keeps alpha, grey *and* 16 bits
together) it rotates TIFF but **not** JPEG, PNG or WebP. Older OpenCV releases differ again. So
:func:`llflow.io.read_image` decodes with ``IMREAD_UNCHANGED``, reads the Orientation tag with
Pillow (``Image.getexif``: JPEG APP1, PNG eXIf, WebP EXIF, TIFF IFD0) and rotates/flips with numpy —
but only for formats where a one-time probe (decoding a tiny crafted Orientation=6 image of that
format) shows that the installed OpenCV did not already do it.

The two small hand-written header readers kept here (the pixel size of PNG/JPEG/BMP/WebP headers,
which Pillow refuses to report for a header without checksums or for a declared decompression
bomb, and the JPEG end-of-image check) are fuzzed in tests/io/test_orientation.py.
"""
from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib
from typing import Optional, Tuple

import cv2
import numpy as np

__all__ = ["apply_orientation", "exif_orientation", "image_size", "jpeg_is_complete", "opencv_applies_orientation"]

_ORIENTATION_TAG = 0x0112


def exif_orientation(data: bytes) -> int:
    """EXIF Orientation (1..8) of an encoded image, read by Pillow; 1 when there is none or the
    metadata cannot be read (the pixels are then shown as stored)."""
    from PIL import Image as PILImage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's decompression-bomb and metadata warnings
            with PILImage.open(io.BytesIO(data)) as picture:
                value = picture.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - any unreadable metadata means "as stored"
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from a PNG/JPEG/BMP/WebP header without decoding; None when unknown."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"BM" and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_scan(data)[0]
    except struct.error:
        return None
    return None


def _webp_size(data: bytes) -> Optional[Tuple[int, int]]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _jpeg_scan(data: bytes) -> Tuple[Optional[Tuple[int, int]], Optional[int]]:
    """Walk JPEG header segments: ((width, height) of the first frame header or None, offset of the
    first start-of-scan marker or None)."""
    size: Optional[Tuple[int, int]] = None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return size, None  # lost marker sync: malformed header
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            pos += 2
            continue
        if marker == 0xD9:
            return size, None
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker == 0xDA:
            return size, pos
        if size is None and 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and pos + 9 <= len(data):
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            size = (w, h)
        pos += 2 + length
    return size, None


def jpeg_is_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the first start-of-scan marker.

    The search starts at the scan so that the EOI of an embedded EXIF thumbnail does not count.
    """
    sos = _jpeg_scan(data)[1]
    if sos is None:
        return False
    return data.find(b"\xff\xd9", sos) != -1


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
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
def opencv_applies_orientation(fmt: str) -> bool:
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
