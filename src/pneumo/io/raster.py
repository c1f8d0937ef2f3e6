"""PNG / JPEG bytes -> XRay with Pillow.

8-bit gray scales by 255, 16-bit gray by 65535 (the intensity policy's bit-depth full scale); colour and
palette images become BT.601 luminance with a warning; alpha is dropped with a warning. The image size is
checked against ``max_pixels`` from the header before any pixel is decoded. Pillow's global settings
(``MAX_IMAGE_PIXELS``, ``LOAD_TRUNCATED_IMAGES``) are never changed: Pillow's own bomb check still applies
and is reported as ImageTooLargeError.
"""

from __future__ import annotations

import io

import numpy as np

from pneumo.errors import ImageTooLargeError, InvalidImageError, UnsupportedImageError
from pneumo.io import intensity
from pneumo.io.checks import check_pixel_limit
from pneumo.io.codestream import jpeg_structure_problem
from pneumo.types import XRay

_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg"}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_COLOUR = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")


def read_raster(data: bytes, *, max_pixels: int, frame: int = 0) -> XRay:
    """Decode PNG or JPEG ``data`` to an XRay (float32 (H, W) in [0, 1], MONOCHROME2).

    ``frame`` picks a frame of an animated PNG / multi-picture JPEG. Raises InvalidImageError,
    UnsupportedImageError or ImageTooLargeError.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    warnings: list[str] = []
    if data[:3] == b"\xff\xd8\xff":
        problem = jpeg_structure_problem(data)
        if problem:
            raise InvalidImageError(f"JPEG file is corrupt ({problem})")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"image dimensions exceed Pillow's decompression-bomb limit ({error})") from error
    except UnidentifiedImageError as error:
        raise InvalidImageError("not a readable PNG or JPEG image (corrupt header)") from error
    except Exception as error:
        raise InvalidImageError(f"cannot read image header: truncated or corrupt ({_describe(error)})") from error
    with image:
        source_format = _FORMATS.get(image.format or "")
        if source_format is None:
            raise InvalidImageError(f"{image.format} images are not accepted; send DICOM, PNG or JPEG")
        width, height = image.size
        check_pixel_limit(height, width, max_pixels, f"{source_format.upper()} image")
        n_frames = int(getattr(image, "n_frames", 1) or 1)
        if not 0 <= frame < n_frames:
            raise InvalidImageError(f"frame {frame} requested, but the image has {n_frames} frame(s) (0-based index)")
        try:
            if frame:
                image.seek(frame)
            image.load()
            orientation = _orientation(image, warnings) if source_format == "jpeg" else 1
            oriented = ImageOps.exif_transpose(image) if orientation in (2, 3, 4, 5, 6, 7, 8) else image
        except Image.DecompressionBombError as error:
            raise ImageTooLargeError(f"image exceeds Pillow's decompression-bomb limit ({error})") from error
        except Exception as error:  # OSError (truncated), SyntaxError (broken PNG chunk), zlib.error, ...
            raise InvalidImageError(
                f"{source_format.upper()} pixel data cannot be decoded: truncated or corrupt ({_describe(error)})"
            ) from error
        if oriented is not image:
            warnings.append("EXIF orientation applied (image rotated/flipped as a viewer would show it)")
        if n_frames > 1:
            warnings.append(
                f"multi-frame {source_format.upper()}: frame {frame} (0-based) of {n_frames} frames was used"
            )
        pixels, photometric, bits = _to_unit(oriented, warnings)
    note = intensity.low_dynamic_range_warning(pixels)
    if note:
        warnings.append(note)
    return XRay(
        pixels=pixels,
        source_format=source_format,
        photometric_interpretation=photometric,
        bits_stored=bits,
        number_of_frames=n_frames,
        warnings=tuple(warnings),
    )


def _orientation(image: "Image.Image", warnings: list[str]) -> int:  # noqa: F821
    """EXIF orientation tag (1 = as stored); unreadable EXIF is ignored with a warning."""
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:
        warnings.append("unreadable EXIF data ignored (orientation assumed as stored)")
        return 1


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:297] + "..."


def _to_unit(image: "Image.Image", warnings: list[str]) -> tuple[np.ndarray, str, int]:  # noqa: F821
    """Pillow image -> (float32 (H, W) in [0, 1], photometric as stored, bits per sample)."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.float32), "MONOCHROME2", 1
    if mode == "L":
        return intensity.full_scale(np.asarray(image), 0, 255), "MONOCHROME2", 8
    if mode == "LA":
        warnings.append("alpha channel ignored")
        return intensity.full_scale(np.asarray(image.getchannel("L")), 0, 255), "MONOCHROME2", 8
    if mode in _SIXTEEN_BIT:
        return intensity.full_scale(np.asarray(image), 0, 65535), "MONOCHROME2", 16
    if mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"))
        warnings.append("palette image converted to grayscale luminance (BT.601)")
        return intensity.full_scale(intensity.luminance(rgb), 0, 255), "PALETTE COLOR", 8
    if mode in _COLOUR:
        rgb = np.asarray(image.convert("RGB"))
        same = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
        alpha = " (alpha ignored)" if "A" in mode or "a" in mode else ""
        warnings.append(
            f"{mode} image converted to grayscale luminance (BT.601){alpha}"
            + ("; its channels were identical" if same else "")
        )
        return intensity.full_scale(intensity.luminance(rgb), 0, 255), "RGB", 8
    raise UnsupportedImageError(f"image mode {mode!r} is not supported; save the radiograph as 8/16-bit grayscale")
