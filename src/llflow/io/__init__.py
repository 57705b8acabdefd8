"""Image files in and out, and conversions between user image types and model tensors:
:mod:`.files` (reading and writing), :mod:`.orientation` (what headers say: EXIF orientation with
Pillow, sizes), :mod:`.convert` (numpy/PIL/torch ↔ tensors), :mod:`.listing` (inputs → files) and
:mod:`.atomic` (the one atomic writer).

Reading (:func:`read_image`)
    PNG, JPEG, TIFF, BMP and WebP are decoded with OpenCV from bytes read by Python (so a missing,
    empty, unreadable or folder path gives a precise :class:`ImageReadError`, and non-ASCII paths
    work on every OS). Samples keep their stored depth: 8-bit → ``uint8``, 16-bit PNG/TIFF →
    ``uint16``. Channels come back as RGB; stored grey is replicated to three channels with
    ``was_gray=True``; an alpha channel is returned separately.

    EXIF orientation is applied on every path. Why this needs care: OpenCV applies it itself only for
    some flag/format combinations. Measured with OpenCV 5.0 on crafted files (see tests/io/test_files.py):
    with ``IMREAD_COLOR``/``IMREAD_GRAYSCALE``/``IMREAD_ANYDEPTH|IMREAD_ANYCOLOR`` it rotates JPEG,
    PNG (eXIf), WebP (EXIF chunk) and TIFF; with ``IMREAD_UNCHANGED`` (the only flag that keeps
    alpha, grey *and* 16 bits together) it rotates TIFF but **not** JPEG, PNG or WebP. Older OpenCV
    releases differ again. So this module decodes with ``IMREAD_UNCHANGED``, reads the Orientation
    tag with Pillow (JPEG APP1, PNG eXIf, WebP EXIF, TIFF IFD0) and rotates/flips with numpy — but only
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
from .atomic import atomic_write
from .convert import Restore, to_tensor
from .files import IMAGE_EXTENSIONS, Image, ImageReadError, ImageWriteError, read_image, write_image
from .listing import ImageListError, list_images
from .orientation import image_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "Image",
    "ImageListError",
    "ImageReadError",
    "ImageWriteError",
    "Restore",
    "atomic_write",
    "image_size",
    "list_images",
    "read_image",
    "to_tensor",
    "write_image",
]
