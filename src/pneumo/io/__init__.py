"""Image reading: DICOM / PNG / JPEG (a path or the raw bytes) -> ``pneumo.types.XRay``.

``read_xray`` is the one entry point used by training, the CLI and the API. The format is recognised from
magic bytes, never from a file name. Pixels follow one intensity policy (docs/decisions/0002-intensity-policy.md);
non-chest inputs are refused as described in docs/decisions/0003-chest-radiograph-check.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Union

from pneumo.errors import ImageTooLargeError, InvalidImageError
from pneumo.io.budget import DEFAULT_DECODE_BYTES, DEFAULT_WORKING_PIXELS
from pneumo.io.sniff import sniff_format
from pneumo.types import XRay

#: default limit on rows x columns of one image / frame (a decompression-bomb guard); 60 MP is ~4x a
#: 43 cm detector at 0.1 mm
DEFAULT_MAX_PIXELS = 60_000_000

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


def max_file_bytes(max_pixels: int) -> int:
    """Largest input accepted for ``max_pixels``: room for one uncompressed 32-bit frame plus 64 MiB of header."""
    return max_pixels * 4 + (64 << 20)


def read_xray(
    source: Source,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    frame: int = 0,
    check_chest: bool = True,
    working_pixels: int | None = DEFAULT_WORKING_PIXELS,
    decode_bytes: int = DEFAULT_DECODE_BYTES,
) -> XRay:
    """Decode a chest radiograph to an XRay: pixels float32 (H, W) in [0, 1], MONOCHROME2 (air dark).

    ``source``: a path (str / PathLike), the raw bytes of a DICOM, PNG or JPEG file, or a binary file object.
    ``max_pixels``: refuse images (per frame) with more rows x columns, checked from the header before decoding.
    ``frame``: 0-based frame of a multi-frame file (a warning in ``XRay.warnings`` names the frame used).
    ``check_chest``: refuse DICOMs whose Modality / BodyPartExamined say they are not a chest radiograph.
    ``working_pixels``: images with more pixels are reduced on read by an integer box average (None: never);
    ``XRay.full_size`` then holds the stored size. ``decode_bytes``: refuse a file whose decoded buffer would
    exceed it, checked from the header (see ``pneumo.io.budget``).

    Raises (all ``pneumo.errors``): InvalidImageError (empty, not an image, truncated, corrupt, missing file),
    MissingPixelDataError, UnsupportedImageError, UnsupportedTransferSyntaxError, ImageTooLargeError,
    NotChestRadiographError.
    """
    if max_pixels < 1:
        raise ImageTooLargeError(f"max_pixels must be positive, got {max_pixels}")
    data = _load(source, max_file_bytes(max_pixels))
    if not data:
        raise InvalidImageError("empty input: no bytes to decode")
    kind = sniff_format(data)
    if kind == "dicom":
        from pneumo.io.dicom import read_dicom

        return read_dicom(data, max_pixels=max_pixels, frame=frame, check_chest=check_chest,
                          working_pixels=working_pixels, decode_bytes=decode_bytes)
    if kind in ("png", "jpeg"):
        from pneumo.io.raster import read_raster

        return read_raster(data, max_pixels=max_pixels, frame=frame, working_pixels=working_pixels,
                           decode_bytes=decode_bytes)
    raise InvalidImageError(
        f"not a DICOM, PNG or JPEG file ({len(data):,} bytes starting {data[:8]!r}); send a chest radiograph"
    )


def _load(source: Source, limit: int) -> bytes:
    """The bytes of ``source``; InvalidImageError for unreadable paths, ImageTooLargeError beyond ``limit``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
            if path.is_dir():
                raise InvalidImageError(f"{path} is a folder, not an image file")
            if size > limit:
                raise ImageTooLargeError(f"{path} is {size:,} bytes, above the {limit:,}-byte limit for max_pixels")
            data = path.read_bytes()
        except OSError as error:
            raise InvalidImageError(f"cannot read {path}: {error.strerror or error}") from error
    elif hasattr(source, "read"):
        try:
            data = source.read(limit + 1)
        except OSError as error:
            raise InvalidImageError(f"cannot read the image stream: {error}") from error
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidImageError("the image stream must be opened in binary mode")
        data = bytes(data)
    else:
        raise InvalidImageError(f"cannot read an image from a {type(source).__name__}; pass a path or bytes")
    if len(data) > limit:
        raise ImageTooLargeError(f"input is {len(data):,} bytes, above the {limit:,}-byte limit for max_pixels")
    return data


__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_WORKING_PIXELS", "DEFAULT_DECODE_BYTES", "read_xray", "sniff_format",
           "max_file_bytes"]
