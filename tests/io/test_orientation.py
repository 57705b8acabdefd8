"""Fuzzing the hand-written header readers kept in :mod:`llflow.io.orientation` (the pixel size of
PNG/JPEG/BMP/WebP headers and the JPEG end-of-image check: Pillow refuses both for the damaged or
bomb headers they must handle) and :func:`llflow.io.read_image` on arbitrary bytes: they may only
answer or raise :class:`~llflow.io.ImageReadError` — no other exception, no hang.

The full runs (≥ 100,000 inputs each) are marked ``slow``; the default suite runs a few hundred.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llflow.io import ImageReadError, read_image
from llflow.io.orientation import exif_orientation, image_size, jpeg_is_complete

MAGICS = [b"", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xd8", b"\xff\xd8\xff", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8X",
          b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"II*\x00", b"MM\x00*", b"II+\x00"]
FULL = 100_000


def _jpeg_segments() -> st.SearchStrategy[bytes]:
    """SOI followed by marker segments with plausible and implausible lengths."""
    segment = st.tuples(st.integers(0xC0, 0xFF), st.integers(0, 40), st.binary(max_size=40)).map(
        lambda t: b"\xff" + bytes([t[0]]) + struct.pack(">H", t[1]) + t[2])
    return st.lists(segment, max_size=8).map(lambda segs: b"\xff\xd8" + b"".join(segs))


def _png_chunks() -> st.SearchStrategy[bytes]:
    chunk = st.tuples(st.sampled_from([b"IHDR", b"eXIf", b"IDAT", b"IEND", b"zzzz"]), st.binary(max_size=30)).map(
        lambda t: struct.pack(">I", len(t[1])) + t[0] + t[1] + struct.pack(">I", zlib.crc32(t[0] + t[1])))
    return st.lists(chunk, max_size=5).map(lambda cs: b"\x89PNG\r\n\x1a\n" + b"".join(cs))


DATA = st.one_of(st.tuples(st.sampled_from(MAGICS), st.binary(max_size=64)).map(lambda t: t[0] + t[1]),
                 _jpeg_segments(), _png_chunks())


def _check_headers(data: bytes) -> None:
    size = image_size(data)
    assert size is None or (len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size))
    assert isinstance(jpeg_is_complete(data), bool)
    assert 1 <= exif_orientation(data) <= 8


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(DATA)
def test_header_readers_never_raise(data: bytes) -> None:
    _check_headers(data)


@pytest.mark.slow
@settings(max_examples=FULL, deadline=None, suppress_health_check=list(HealthCheck))
@given(DATA)
def test_header_readers_never_raise_full(data: bytes) -> None:
    _check_headers(data)


def _check_read(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.img"
    path.write_bytes(data)
    try:
        image = read_image(path)
    except ImageReadError as exc:
        assert "\n" not in str(exc)
    else:
        assert image.rgb.ndim == 3 and image.rgb.shape[2] == 3


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(DATA)
def test_read_image_raises_only_image_read_error(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    _check_read(tmp_path_factory.mktemp("fuzz"), data)


@pytest.mark.slow
@settings(max_examples=FULL, deadline=None, suppress_health_check=list(HealthCheck))
@given(DATA)
def test_read_image_raises_only_image_read_error_full(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    _check_read(tmp_path_factory.mktemp("fuzz"), data)
