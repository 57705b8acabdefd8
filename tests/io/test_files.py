"""Tests for llflow.io: reading/writing every format, EXIF orientation, errors, conversions, listing.

EXIF test files are crafted here byte by byte (independently of the library's own probe code),
and the expected display orientation is written out as explicit index formulas.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import llflow.io as lio
from llflow.io import (Image, ImageListError, ImageReadError, ImageWriteError, list_images,
                       read_image, to_tensor, write_image)

RNG = np.random.default_rng(1234)


def rand_rgb(h: int = 12, w: int = 20, dtype=np.uint8) -> np.ndarray:
    top = 65535 if dtype == np.uint16 else 255
    return RNG.integers(0, top + 1, (h, w, 3), dtype=np.int64).astype(dtype)


def blocky_rgb(h: int = 32, w: int = 48) -> np.ndarray:
    """Big flat colour blocks: survive JPEG compression, distinctive in every orientation."""
    img = np.zeros((h, w, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    bh, bw = h // 2, w // 3
    for i in range(2):
        for j in range(3):
            img[i * bh:(i + 1) * bh, j * bw:(j + 1) * bw] = colours[i * 3 + j]
    return img


# ------------------------------------------------------------------ EXIF crafting (test-side)

def exif_tiff_block(orientation: int, little_endian: bool = False) -> bytes:
    e = "<" if little_endian else ">"
    head = (b"II" if little_endian else b"MM") + struct.pack(e + "HI", 42, 8)
    # A Make entry (0x010F, ASCII "abc\0" stored inline) comes first so that the parser must walk
    # past a tag that is not the orientation.
    make = struct.pack(e + "HHI", 0x010F, 2, 4) + b"abc\x00"
    orient = struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
    return head + struct.pack(e + "H", 2) + make + orient + struct.pack(e + "I", 0)


def jpeg_with_exif(rgb: np.ndarray, orientation: int, little_endian: bool = False) -> bytes:
    ok, enc = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    raw = enc.tobytes()
    payload = b"Exif\x00\x00" + exif_tiff_block(orientation, little_endian)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return raw[:2] + app1 + raw[2:]


def png_with_exif(pixels_bgr: np.ndarray, orientation: int) -> bytes:
    ok, enc = cv2.imencode(".png", pixels_bgr)
    assert ok
    raw = enc.tobytes()
    data = exif_tiff_block(orientation)
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data))
    return raw[:33] + chunk + raw[33:]


def webp_with_exif(rgb: np.ndarray, orientation: int) -> bytes:
    ok, enc = cv2.imencode(".webp", rgb[..., ::-1], [cv2.IMWRITE_WEBP_QUALITY, 101])  # lossless
    assert ok
    raw = enc.tobytes()
    h, w = rgb.shape[:2]
    data = exif_tiff_block(orientation)
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0]) + (w - 1).to_bytes(3, "little") \
        + (h - 1).to_bytes(3, "little")
    exif = b"EXIF" + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    payload = b"WEBP" + vp8x + raw[12:] + exif
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def tiff_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    """Uncompressed big-endian RGB TIFF (8- or 16-bit) with an Orientation tag."""
    h, w, c = rgb.shape
    bits = rgb.dtype.itemsize * 8
    body = rgb.astype(rgb.dtype.newbyteorder(">")).tobytes()
    n = 11
    bps_offset = 8 + 2 + 12 * n + 4
    data_offset = bps_offset + 2 * c
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, bps_offset), (259, 3, 1, 1 << 16),
            (262, 3, 1, 2 << 16), (273, 4, 1, data_offset), (274, 3, 1, orientation << 16),
            (277, 3, 1, c << 16), (278, 4, 1, h), (279, 4, 1, len(body)), (284, 3, 1, 1 << 16)]
    out = b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", n)
    out += b"".join(struct.pack(">HHII", *t) for t in tags) + struct.pack(">I", 0)
    return out + struct.pack(">" + "H" * c, *([bits] * c)) + body


def expected_orientation(a: np.ndarray, o: int) -> np.ndarray:
    """Display image for EXIF orientation ``o``, by explicit index formulas (EXIF 2.3 spec)."""
    h, w = a.shape[:2]
    if o in (1, 2, 3, 4):
        out = np.empty_like(a)
        for r in range(h):
            for c in range(w):
                src = {1: (r, c), 2: (r, w - 1 - c), 3: (h - 1 - r, w - 1 - c), 4: (h - 1 - r, c)}[o]
                out[r, c] = a[src]
        return out
    out = np.empty((w, h) + a.shape[2:], a.dtype)
    for r in range(w):
        for c in range(h):
            src = {5: (c, r), 6: (h - 1 - c, r), 7: (h - 1 - c, w - 1 - r), 8: (c, w - 1 - r)}[o]
            out[r, c] = a[src]
    return out


# ------------------------------------------------------------------ round trips

@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff", ".bmp"])
def test_lossless_roundtrip_8bit(tmp_path, ext):
    rgb = rand_rgb()
    path = write_image(tmp_path / f"a{ext}", rgb)
    img = read_image(path)
    assert img.rgb.dtype == np.uint8 and img.bit_depth == 8 and not img.was_gray
    assert img.alpha is None and img.path == path
    np.testing.assert_array_equal(img.rgb, rgb)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".webp"])
def test_lossy_roundtrip_8bit(tmp_path, ext):
    rgb = blocky_rgb()
    img = read_image(write_image(tmp_path / f"a{ext}", rgb, quality=95))
    assert img.rgb.shape == rgb.shape and img.rgb.dtype == np.uint8
    # Compare away from block edges (chroma subsampling blurs them); RGB order must be right.
    assert np.abs(img.rgb[4, 4].astype(int) - rgb[4, 4]).max() <= 12
    assert np.abs(img.rgb.astype(int) - rgb).mean() < 12


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_roundtrip_exact(tmp_path, ext):
    rgb = rand_rgb(dtype=np.uint16)
    rgb[0, 0] = (0, 1, 65535)
    img = read_image(write_image(tmp_path / f"a{ext}", rgb, bit_depth=16))
    assert img.rgb.dtype == np.uint16 and img.bit_depth == 16
    np.testing.assert_array_equal(img.rgb, rgb)


@pytest.mark.parametrize("ext", [".bmp", ".jpg", ".webp"])
def test_16bit_to_8bit_formats_rounds(tmp_path, ext):
    rgb = np.full((8, 8, 3), 0, np.uint16)
    rgb[..., 0] = 257 * 100 + 129   # 100.502 → 101
    rgb[..., 1] = 257 * 200 + 128   # 200.498 → 200
    rgb[..., 2] = 65535
    img = read_image(write_image(tmp_path / f"a{ext}", rgb, bit_depth=16))
    assert img.rgb.dtype == np.uint8 and img.bit_depth == 8
    expected = np.array([101, 200, 255])
    tol = 0 if ext == ".bmp" else 3
    assert np.abs(img.rgb.astype(int) - expected).max() <= tol


def test_depth_conversion_on_write(tmp_path):
    rgb8 = rand_rgb()
    img = read_image(write_image(tmp_path / "up.png", rgb8, bit_depth=16))
    np.testing.assert_array_equal(img.rgb, rgb8.astype(np.uint16) * 257)
    floats = rgb8 / 255.0
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "f.png", floats)).rgb, rgb8)


@pytest.mark.parametrize("ext,dtype", [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint16),
                                       (".bmp", np.uint8), (".jpg", np.uint8)])
def test_grey_roundtrip(tmp_path, ext, dtype):
    grey = rand_rgb(dtype=dtype)[..., 0] if ext != ".jpg" else blocky_rgb()[..., 0]
    depth = 16 if dtype == np.uint16 else 8
    img = read_image(write_image(tmp_path / f"g{ext}", grey, bit_depth=depth))
    assert img.was_gray and img.rgb.shape == grey.shape + (3,) and img.rgb.dtype == dtype
    assert (img.rgb == img.rgb[..., :1]).all()  # the grey channel replicated
    if ext != ".jpg":
        np.testing.assert_array_equal(img.rgb[..., 0], grey)


def test_gray_flag_uses_bt601_luma(tmp_path):
    rgb = rand_rgb()
    img = read_image(write_image(tmp_path / "l.png", rgb, gray=True))
    assert img.was_gray
    luma = np.rint(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)
    np.testing.assert_array_equal(img.rgb[..., 0], luma.astype(np.uint8))


@pytest.mark.parametrize("ext,dtype", [(".png", np.uint8), (".png", np.uint16), (".tif", np.uint8),
                                       (".tif", np.uint16), (".bmp", np.uint8)])
def test_rgba_alpha_preserved(tmp_path, ext, dtype):
    rgb = rand_rgb(dtype=dtype)
    alpha = rand_rgb(dtype=dtype)[..., 1]
    depth = 16 if dtype == np.uint16 else 8
    img = read_image(write_image(tmp_path / f"a{ext}", rgb, alpha=alpha, bit_depth=depth))
    np.testing.assert_array_equal(img.rgb, rgb)
    np.testing.assert_array_equal(img.alpha, alpha)


def test_alpha_webp_kept_and_jpeg_dropped(tmp_path):
    rgb, alpha = blocky_rgb(), np.full((32, 48), 77, np.uint8)
    webp = read_image(write_image(tmp_path / "a.webp", rgb, alpha=alpha))
    assert webp.alpha is not None and np.abs(webp.alpha.astype(int) - 77).max() <= 2
    assert read_image(write_image(tmp_path / "a.jpg", rgb, alpha=alpha)).alpha is None


def test_grey_with_alpha(tmp_path):
    grey, alpha = rand_rgb()[..., 0], rand_rgb()[..., 0]
    img = read_image(write_image(tmp_path / "ga.png", grey, alpha=alpha))
    np.testing.assert_array_equal(img.rgb[..., 2], grey)
    np.testing.assert_array_equal(img.alpha, alpha)


def test_png_grey_alpha_file_reports_was_gray(tmp_path):
    # A real grey+alpha PNG (colour type 4) — crafted by hand since OpenCV cannot write one.
    h, w = 3, 4
    grey = rand_rgb(h, w)[..., 0]
    alpha = rand_rgb(h, w)[..., 1]
    raw = b"".join(b"\x00" + np.stack([grey[r], alpha[r]], 1).tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 4, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path = tmp_path / "la.png"
    path.write_bytes(png)
    img = read_image(path)
    assert img.was_gray
    np.testing.assert_array_equal(img.rgb[..., 0], grey)
    np.testing.assert_array_equal(img.alpha, alpha)


# ------------------------------------------------------------------ EXIF orientation

@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_jpeg_all_orientations(tmp_path, orientation):
    rgb = blocky_rgb()
    path = tmp_path / f"o{orientation}.jpg"
    data = jpeg_with_exif(rgb, orientation, little_endian=orientation % 2 == 0)
    path.write_bytes(data)
    img = read_image(path)
    stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]
    expected = expected_orientation(stored, orientation)
    assert img.rgb.shape == expected.shape
    np.testing.assert_array_equal(img.rgb, expected)
    if orientation in (5, 6, 7, 8):
        assert img.rgb.shape[:2] == (rgb.shape[1], rgb.shape[0])  # transposed


def test_exif_jpeg_orientation6_pixels(tmp_path):
    # Orientation 6 = the camera was turned 90° clockwise: the stored top-left goes top-right.
    rgb = blocky_rgb()  # top-left block red, bottom-left block yellow
    path = tmp_path / "r.jpg"
    path.write_bytes(jpeg_with_exif(rgb, 6))
    out = read_image(path).rgb
    assert out.shape == (48, 32, 3)
    assert tuple(out[2, -3]) > (200, 0, 0) and out[2, -3, 1] < 40 and out[2, -3, 2] < 40  # red top-right
    assert out[2, 2, 0] > 200 and out[2, 2, 1] > 200 and out[2, 2, 2] < 40  # yellow top-left


# PNG (eXIf chunk; BGR in, as OpenCV writes it) and TIFF (IFD0 Orientation tag), 8 and 16 bits.
@pytest.mark.parametrize("suffix, orientation", [("png", 3), ("png", 6), ("png", 8), ("tif", 2), ("tif", 6), ("tif", 7)])
@pytest.mark.parametrize("depth", [8, 16])
def test_exif_png_and_tiff_including_16bit(tmp_path, suffix, orientation, depth):
    dtype = np.uint16 if depth == 16 else np.uint8
    rgb = rand_rgb(5, 7, dtype)
    path = tmp_path / f"o.{suffix}"
    encoded = (png_with_exif(np.ascontiguousarray(rgb[..., ::-1]), orientation) if suffix == "png"
               else tiff_with_orientation(rgb, orientation))
    path.write_bytes(encoded)
    img = read_image(path)
    assert img.rgb.dtype == dtype
    np.testing.assert_array_equal(img.rgb, expected_orientation(rgb, orientation))


def test_exif_png_rgba_rotates_alpha_too(tmp_path):
    rgb, alpha = rand_rgb(5, 7), rand_rgb(5, 7)[..., 0]
    bgra = np.concatenate([rgb[..., ::-1], alpha[..., None]], axis=2)
    path = tmp_path / "o.png"
    path.write_bytes(png_with_exif(np.ascontiguousarray(bgra), 6))
    img = read_image(path)
    np.testing.assert_array_equal(img.rgb, expected_orientation(rgb, 6))
    np.testing.assert_array_equal(img.alpha, expected_orientation(alpha, 6))


def test_exif_webp(tmp_path):
    rgb = rand_rgb(6, 10)
    path = tmp_path / "o.webp"
    path.write_bytes(webp_with_exif(rgb, 8))
    np.testing.assert_array_equal(read_image(path).rgb, expected_orientation(rgb, 8))


def test_orientation_matches_opencv_own_rotation(tmp_path):
    """Cross-check against OpenCV's own EXIF handling (IMREAD_COLOR rotates) for every value."""
    rgb = rand_rgb(5, 7)
    for o in range(1, 9):
        data = png_with_exif(np.ascontiguousarray(rgb[..., ::-1]), o)
        path = tmp_path / f"o{o}.png"
        path.write_bytes(data)
        reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        np.testing.assert_array_equal(read_image(path).rgb, reference, err_msg=f"orientation {o}")


def test_opencv_probe_reports_current_behaviour():
    # The probe must agree with what IMREAD_UNCHANGED actually does on a crafted JPEG.
    data = jpeg_with_exif(blocky_rgb(), 6)
    shape = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape
    assert lio.orientation.opencv_applies_orientation("jpeg") == (shape[:2] == (48, 32))
    tiff = tiff_with_orientation(rand_rgb(5, 7), 6)
    shape = cv2.imdecode(np.frombuffer(tiff, np.uint8), cv2.IMREAD_UNCHANGED).shape
    assert lio.orientation.opencv_applies_orientation("tiff") == (shape[:2] == (7, 5))


# ------------------------------------------------------------------ read errors

def _assert_read_error(path: Path, *words: str) -> None:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    for word in words:
        assert word in message.lower(), message


def test_read_errors(tmp_path, monkeypatch):
    _assert_read_error(tmp_path / "missing.png", "no such file")
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_read_error(tmp_path / "empty.png", "empty")
    (tmp_path / "notes.png").write_text("just some text\nnot pixels\n")
    _assert_read_error(tmp_path / "notes.png", "not an image")
    (tmp_path / "folder.png").mkdir()
    _assert_read_error(tmp_path / "folder.png", "folder")
    (tmp_path / "anim.png").write_bytes(b"GIF89a" + bytes(100))
    _assert_read_error(tmp_path / "anim.png", "gif", "not supported")
    (tmp_path / "accents.jpg").write_bytes(("a" + "é" * 2000).encode("utf-8"))  # 1 KiB cut mid-character
    _assert_read_error(tmp_path / "accents.jpg", "not an image")
    (tmp_path / "noise.bin").write_bytes(bytes(range(256)) * 4)
    _assert_read_error(tmp_path / "noise.bin", "not a recognised image")


@pytest.mark.parametrize("ext,cut", [(".png", 0.5), (".png", 0.97), (".jpg", 0.6), (".jpg", -2),
                                     (".tif", 0.5), (".bmp", 0.5), (".webp", 0.5)])
def test_truncated_images(tmp_path, ext, cut):
    good = write_image(tmp_path / f"good{ext}", rand_rgb(64, 64))
    data = good.read_bytes()
    bad = tmp_path / f"bad{ext}"
    bad.write_bytes(data[:cut] if isinstance(cut, int) else data[:int(len(data) * cut)])
    _assert_read_error(bad, "truncated")


def test_truncated_jpeg_refused_even_if_decoder_accepts_it(tmp_path, monkeypatch):
    # Older OpenCV/libjpeg builds return a grey-filled image for truncated JPEGs; simulate that.
    data = jpeg_with_exif(blocky_rgb(), 1)
    assert lio.orientation.jpeg_is_complete(data)
    cut = data[:-2]  # no end-of-image marker
    assert not lio.orientation.jpeg_is_complete(cut)
    # An EOI inside the EXIF segment (as an embedded thumbnail has) must not count.
    payload = b"Exif\x00\x00" + exif_tiff_block(1) + b"\xff\xd8thumb\xff\xd9"
    with_thumb = data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    assert lio.orientation.jpeg_is_complete(with_thumb) and not lio.orientation.jpeg_is_complete(with_thumb[:-2])
    path = tmp_path / "cut.jpg"
    path.write_bytes(with_thumb[:-2])
    monkeypatch.setattr(lio.files.cv2, "imdecode", lambda buf, flags: np.zeros((32, 48, 3), np.uint8))
    _assert_read_error(path, "truncated")


def test_corrupt_png(tmp_path):
    data = bytearray(write_image(tmp_path / "good.png", rand_rgb(64, 64)).read_bytes())
    data[100:200] = bytes(100)  # breaks IDAT (CRC and zlib stream)
    (tmp_path / "bad.png").write_bytes(bytes(data))
    _assert_read_error(tmp_path / "bad.png", "corrupt")


def test_permission_denied(tmp_path, monkeypatch):
    path = write_image(tmp_path / "locked.png", rand_rgb())
    if os.name == "posix" and os.geteuid() != 0:  # real check where permissions apply
        path.chmod(0)
        try:
            _assert_read_error(path, "permission")
        finally:
            path.chmod(0o644)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(lio.files, "open", denied, raising=False)  # module-level lookup beats builtins
    _assert_read_error(path, "permission")


# ------------------------------------------------------------------ write errors and atomicity

def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_write_errors(tmp_path):
    with pytest.raises(ImageWriteError, match="does not exist"):
        write_image(tmp_path / "nope" / "a.png", rand_rgb())
    with pytest.raises(ImageWriteError, match="unsupported extension"):
        write_image(tmp_path / "a.gif", rand_rgb())
    with pytest.raises(ImageWriteError, match="H×W×3"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ImageWriteError, match="dtype"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.int32))
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageWriteError, match="folder"):
        write_image(tmp_path / "dir.png", rand_rgb())
    assert _leftovers(tmp_path) == []


def test_atomic_write_encoder_failure(tmp_path, monkeypatch):
    target = write_image(tmp_path / "out.png", rand_rgb())
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise cv2.error("simulated encoder failure")

    monkeypatch.setattr(lio.files.cv2, "imencode", broken)
    with pytest.raises(ImageWriteError, match="out.png"):
        write_image(target, rand_rgb())
    assert target.read_bytes() == before and _leftovers(tmp_path) == []


def test_atomic_write_failure_after_temp_file(tmp_path, monkeypatch):
    target = write_image(tmp_path / "out.tif", rand_rgb())
    before = target.read_bytes()
    seen = []

    def failing_replace(src, dst):
        seen.append(Path(src))
        assert Path(src).exists() and Path(src).suffix == ".tif"  # temp file has the right extension
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lio.atomic.os, "replace", failing_replace)
    with pytest.raises(ImageWriteError, match="No space left"):
        write_image(target, rand_rgb())
    monkeypatch.undo()
    assert seen and not seen[0].exists()
    assert target.read_bytes() == before and _leftovers(tmp_path) == []


def test_atomic_write_interrupted(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(lio.atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "x.png", rand_rgb())
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ to_tensor / restore

def _identity(tensor):
    return tensor.clone()


@pytest.mark.parametrize("array", [
    rand_rgb(),
    rand_rgb(dtype=np.uint16),
    rand_rgb() / 255.0,
    (rand_rgb() / 255.0).astype(np.float32),
    (rand_rgb() / 255.0).astype(np.float16),
    rand_rgb()[..., 0],
    rand_rgb(dtype=np.uint16)[..., :1],
    np.concatenate([rand_rgb(), rand_rgb()[..., :1]], axis=2),
], ids=["u8", "u16", "f64", "f32", "f16", "grey", "grey-hw1-u16", "rgba"])
def test_numpy_roundtrip(array):
    tensor, restore = to_tensor(array)
    assert tensor.dtype == torch.float32 and tensor.shape == (1, 3) + array.shape[:2]
    assert float(tensor.min()) >= 0 and float(tensor.max()) <= 1
    out = restore(_identity(tensor))
    assert isinstance(out, np.ndarray) and out.dtype == array.dtype and out.shape == array.shape
    if np.issubdtype(array.dtype, np.floating):
        np.testing.assert_allclose(out, array, atol=1e-6 if array.dtype != np.float16 else 1e-3)
    else:
        np.testing.assert_array_equal(out, array)


def test_numpy_big_endian_input():
    array = rand_rgb(dtype=np.uint16)
    tensor, restore = to_tensor(array.astype(">u2"))
    torch.testing.assert_close(tensor, to_tensor(array)[0], rtol=0, atol=0)
    np.testing.assert_array_equal(restore(tensor), array)


def test_numpy_restore_rounding_grey_and_alpha():
    rgba = np.concatenate([rand_rgb(), rand_rgb()[..., :1]], axis=2)
    tensor, restore = to_tensor(rgba)
    out = restore(torch.full_like(tensor, 0.5))
    assert (out[..., :3] == 128).all()  # 127.5 rounds (half to even → 128)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])  # alpha passed through unchanged
    _, restore = to_tensor(rand_rgb()[..., 0])
    colour = torch.zeros(1, 3, 12, 20)
    colour[:, 0] = 1.0
    assert (restore(colour) == round(0.299 * 255)).all()  # BT.601 luma of pure red
    _, restore = to_tensor(rand_rgb() / 255.0)
    assert restore(torch.full((1, 3, 12, 20), 1.5)).max() == 1.0  # float outputs clipped


def test_tensor_grey_restore_uses_luma():
    image = torch.rand(2, 1, 4, 5, dtype=torch.float64)
    tensor, restore = to_tensor(image)
    out = torch.zeros_like(tensor)
    out[:, 0], out[:, 1], out[:, 2] = 1.0, 0.5, 0.25
    expected = 0.299 + 0.587 * 0.5 + 0.114 * 0.25
    torch.testing.assert_close(restore(out), torch.full_like(image, expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(3, 6, 8), (2, 3, 6, 8), (6, 8), (1, 6, 8), (2, 1, 6, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensor_roundtrip(shape, dtype):
    image = torch.rand(shape, dtype=dtype)
    tensor, restore = to_tensor(image)
    assert tensor.dtype == torch.float32 and tensor.ndim == 4 and tensor.shape[1] == 3
    out = restore(tensor.clone())
    assert out.shape == image.shape and out.dtype == dtype and out.device == image.device
    torch.testing.assert_close(out, image, atol=1e-6, rtol=0)


def test_image_dataclass_roundtrip(tmp_path):
    img = read_image(write_image(tmp_path / "a.png", rand_rgb(dtype=np.uint16), bit_depth=16,
                                 alpha=rand_rgb(dtype=np.uint16)[..., 0]))
    tensor, restore = to_tensor(img)
    back = restore(tensor)
    assert isinstance(back, Image) and back.bit_depth == 16 and back.path == img.path
    np.testing.assert_array_equal(back.rgb, img.rgb)
    assert back.alpha is img.alpha


@pytest.mark.parametrize("bad,exc", [
    (np.zeros((4, 4, 3), np.int32), TypeError),
    (np.zeros((4, 4, 3), bool), TypeError),
    (np.zeros((4, 4, 2), np.uint8), ValueError),
    (np.zeros((2, 4, 4, 3), np.uint8), ValueError),
    (np.full((4, 4, 3), 255.0), ValueError),
    (np.full((4, 4, 3), np.nan), ValueError),
    (torch.zeros(3, 4, 4, dtype=torch.uint8), TypeError),
    (torch.zeros(2, 4, 4), ValueError),
    (torch.zeros(1, 2, 3, 4, 4), ValueError),
    ([[0.0]], TypeError),
])
def test_to_tensor_rejects(bad, exc):
    with pytest.raises(exc):
        to_tensor(bad)


def test_restore_rejects_wrong_shape():
    _, restore = to_tensor(rand_rgb())
    with pytest.raises(ValueError, match="restore expects"):
        restore(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="restore expects"):
        restore(torch.zeros(3, 12, 20))


def test_pil_roundtrip():
    pil = pytest.importorskip("PIL.Image", reason="Pillow is optional and not installed")
    cases = [
        pil.fromarray(rand_rgb()),                                               # RGB
        pil.fromarray(np.concatenate([rand_rgb(), rand_rgb()[..., :1]], 2)),     # RGBA
        pil.fromarray(rand_rgb()[..., 0]),                                       # L
        pil.fromarray(np.stack([rand_rgb()[..., 0], rand_rgb()[..., 1]], 2)),    # LA
        pil.fromarray(rand_rgb(dtype=np.uint16)[..., 0]),                        # I;16
        pil.fromarray((rand_rgb()[..., 0] / 255.0).astype(np.float32)),          # F
        pil.fromarray(rand_rgb()[..., 0].astype(np.int32) * 200),               # I
    ]
    for picture in cases:
        tensor, restore = to_tensor(picture)
        assert tensor.shape == (1, 3, 12, 20)
        back = restore(tensor)
        assert back.mode == picture.mode and back.size == picture.size, picture.mode
        if picture.mode == "F":
            np.testing.assert_allclose(np.asarray(back), np.asarray(picture), atol=1e-6)
        else:
            np.testing.assert_array_equal(np.asarray(back), np.asarray(picture), err_msg=picture.mode)
    palette = pil.fromarray(rand_rgb()).convert("P")
    tensor, restore = to_tensor(palette)
    back = restore(tensor)
    assert back.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(back), np.asarray(palette.convert("RGB")))


# ------------------------------------------------------------------ list_images

def test_list_images(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ["b.PNG", "a.jpg", "c.JpEg", "d.tif", "e.webp", "f.bmp", "notes.txt",
                 ".a.png.tmp-1-ab.png", "sub/x.png", "sub/deeper/y.TIFF", ".hidden/z.png"]:
        (tmp_path / name).write_bytes(b"x")
    top = list_images(tmp_path)
    assert [p.name for p in top] == ["a.jpg", "b.PNG", "c.JpEg", "d.tif", "e.webp", "f.bmp"]
    deep = list_images([str(tmp_path)], recursive=True)
    assert {p.name for p in deep} == {p.name for p in top} | {"x.png", "y.TIFF"}
    assert deep == sorted(deep, key=lambda p: (str(p.parent), p.name))
    # Glob patterns, explicit files (kept whatever the extension) and de-duplication.
    # (glob matching itself is case-sensitive where the file system is, as in the shell)
    mixed = list_images([tmp_path / "[ab].*", tmp_path / "notes.txt", tmp_path / "b.PNG",
                         str(tmp_path / "**" / "*.png")])
    assert sorted(p.name for p in mixed) == ["a.jpg", "b.PNG", "notes.txt", "x.png"]


def test_list_images_errors(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageListError, match="does not exist"):
        list_images([tmp_path / "a.png", tmp_path / "missing.png"])
    errors: list = []
    found = list_images([tmp_path / "missing", tmp_path / "a.png", tmp_path / "*.jpg",
                         tmp_path / "empty"], errors=errors)
    assert found == [tmp_path / "a.png"]
    assert len(errors) == 3 and "missing" in errors[0] and "matched no images" in errors[1]
    assert "no images" in errors[2]

    real_scandir = os.scandir

    def locked(path):
        if Path(path) == tmp_path / "empty":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(lio.listing.os, "scandir", locked)
    errors = []
    assert list_images([tmp_path / "empty", tmp_path / "a.png"], errors=errors) == [tmp_path / "a.png"]
    assert len(errors) == 1 and "cannot list folder" in errors[0] and "Permission denied" in errors[0]
    with pytest.raises(ImageListError, match="cannot list folder"):
        list_images(tmp_path / "empty", recursive=True)
