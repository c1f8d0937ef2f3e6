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
from pneumo.io.budget import (
    DEFAULT_DECODE_BYTES,
    DEFAULT_WORKING_PIXELS,
    check_decode_budget,
    reduce_stored,
    reduction_factor,
)
from pneumo.io.checks import check_pixel_limit
from pneumo.io.codestream import jpeg_structure_problem
from pneumo.types import XRay

_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg"}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_COLOUR = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")
#: bytes per pixel of Pillow's in-memory layout (multi-band modes use 32-bit pixels)
_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
#: extra bytes per pixel of the conversion copy made before reducing / converting a mode
_CONVERSION_BYTES = {"1": 1, "P": 4, "PA": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4}
_PILLOW_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "I", "F")
#: EXIF orientation -> the Pillow transpose that shows the image as a viewer would (as ImageOps.exif_transpose)
_TRANSPOSE = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}  # Image.Transpose values


def read_raster(data: bytes, *, max_pixels: int, frame: int = 0,
                working_pixels: int | None = DEFAULT_WORKING_PIXELS,
                decode_bytes: int = DEFAULT_DECODE_BYTES) -> XRay:
    """Decode PNG or JPEG ``data`` to an XRay (float32 (H, W) in [0, 1], MONOCHROME2).

    ``frame`` picks a frame of an animated PNG / multi-picture JPEG. Images above ``working_pixels`` are
    reduced on read (JPEG inside the decoder) and ``XRay.full_size`` keeps the stored size; ``decode_bytes``
    bounds the decoder's buffer, checked from the header (see ``pneumo.io.budget``). Raises
    InvalidImageError, UnsupportedImageError or ImageTooLargeError.
    """
    from PIL import Image, UnidentifiedImageError

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
        factor = reduction_factor(height, width, working_pixels)
        try:
            if frame:
                image.seek(frame)
            if factor > 1 and source_format == "jpeg":  # DCT scaling: decode at 1/2, 1/4 or 1/8 directly
                image.draft(image.mode, (-(-width // factor), -(-height // factor)))
            w, h = image.size
            mode = image.mode
            needed = w * h * (_PILLOW_BYTES.get(mode, 4) + (_CONVERSION_BYTES.get(mode, 0) if factor > 1 or mode in
                                                             ("P", "PA") else 0))
            check_decode_budget(needed, decode_bytes, f"{source_format.upper()} image {width}x{height} ({mode})")
            image.load()
            reduced = _reduce(image, reduction_factor(h, w, working_pixels))
            orientation = _orientation(image, warnings) if source_format == "jpeg" else 1
            if reduced is not image:
                image.close()
                image = reduced
            oriented = image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else image
        except ImageTooLargeError:
            raise
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
        pixels, photometric, bits, chroma = _to_unit(oriented, warnings)
        if mode == "1":
            bits = 1
    full_size = (width, height) if orientation in (5, 6, 7, 8) else (height, width)
    if pixels.shape != full_size:
        warnings.append(f"large image ({full_size[1]}x{full_size[0]}) reduced to {pixels.shape[1]}x"
                        f"{pixels.shape[0]} on read (box average); boxes are given in the original pixels")
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
        full_size=None if pixels.shape == full_size else full_size,
        chroma=chroma,
    )


def _reduce(image: "Image.Image", factor: int) -> "Image.Image":  # noqa: F821
    """``image`` box-averaged by ``factor`` (the same object when ``factor`` is 1)."""
    from PIL import Image

    if factor <= 1:
        return image
    if image.mode == "1":
        return image.convert("L").reduce(factor)
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB").reduce(factor)
    if image.mode in _PILLOW_REDUCIBLE:
        return image.reduce(factor)
    if image.mode in _SIXTEEN_BIT:
        return Image.fromarray(reduce_stored(np.asarray(image), factor))
    return image.convert("RGB").reduce(factor)


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


def _chroma(rgb: np.ndarray) -> float:
    """Mean of |R - G| and |G - B| in [0, 1] (on every 4th pixel: a statistic, not an image)."""
    sample = rgb[::4, ::4].astype(np.int16)
    return float((np.abs(sample[..., 0] - sample[..., 1]).mean() + np.abs(sample[..., 1] - sample[..., 2]).mean())
                 / 510.0)


def _to_unit(image: "Image.Image", warnings: list[str]) -> tuple[np.ndarray, str, int, float]:  # noqa: F821
    """Pillow image -> (float32 (H, W) in [0, 1], photometric as stored, bits per sample, chroma)."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.float32), "MONOCHROME2", 1, 0.0
    if mode == "L":
        return intensity.full_scale(np.asarray(image), 0, 255), "MONOCHROME2", 8, 0.0
    if mode == "LA":
        warnings.append("alpha channel ignored")
        return intensity.full_scale(np.asarray(image.getchannel("L")), 0, 255), "MONOCHROME2", 8, 0.0
    if mode in _SIXTEEN_BIT:
        return intensity.full_scale(np.asarray(image), 0, 65535), "MONOCHROME2", 16, 0.0
    if mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"))
        warnings.append("palette image converted to grayscale luminance (BT.601)")
        return intensity.full_scale(intensity.luminance(rgb), 0, 255), "PALETTE COLOR", 8, _chroma(rgb)
    if mode in _COLOUR:
        rgb = np.asarray(image.convert("RGB"))
        same = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
        alpha = " (alpha ignored)" if "A" in mode or "a" in mode else ""
        warnings.append(
            f"{mode} image converted to grayscale luminance (BT.601){alpha}"
            + ("; its channels were identical" if same else "")
        )
        return intensity.full_scale(intensity.luminance(rgb), 0, 255), "RGB", 8, _chroma(rgb)
    raise UnsupportedImageError(f"image mode {mode!r} is not supported; save the radiograph as 8/16-bit grayscale")
