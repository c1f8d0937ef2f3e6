"""PNG / JPEG reading with Pillow: bit depths, colour handling, frames, size limits, damaged files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from io_factories import assert_typed_error_or_valid_image, damaged_variants, gradient_image, jpeg_bytes, png_bytes
from PIL import Image

from pneumo.errors import ImageTooLargeError, InvalidImageError
from pneumo.io import read_xray, sniff_format

BASE = gradient_image(40, 70)


def test_png_8_and_16_bit_scale_by_their_depth():
    eight = read_xray(png_bytes(BASE))
    assert (eight.source_format, eight.bits_stored, eight.photometric_interpretation) == ("png", 8, "MONOCHROME2")
    np.testing.assert_allclose(eight.pixels, BASE / 255, atol=1e-6)
    sixteen = read_xray(png_bytes(np.array([[0, 1000, 65535]], dtype=np.uint16)))
    assert sixteen.bits_stored == 16
    np.testing.assert_allclose(sixteen.pixels[0], [0, 1000 / 65535, 1], atol=1e-6)
    assert eight.pixels.shape == (40, 70) and eight.pixels.dtype == np.float32
    assert eight.modality is None and eight.pixel_spacing_mm is None and eight.warnings == ()


def test_rgb_png_becomes_luminance_with_a_warning():
    rgb = np.zeros((4, 3, 3), dtype=np.uint8)
    rgb[:, 0, 0] = rgb[:, 1, 1] = rgb[:, 2, 2] = 255
    xray = read_xray(png_bytes(rgb))
    np.testing.assert_allclose(xray.pixels[0], [0.299, 0.587, 0.114], atol=1e-5)
    assert xray.photometric_interpretation == "RGB"
    assert any("luminance" in w for w in xray.warnings)


def test_alpha_and_palette_are_reported():
    rgba = np.dstack([np.stack([BASE] * 3, axis=-1), np.full(BASE.shape, 128, dtype=np.uint8)])
    xray = read_xray(png_bytes(rgba))
    np.testing.assert_allclose(xray.pixels, BASE / 255, atol=1e-5)
    assert any("alpha" in w for w in xray.warnings)
    grey_alpha = read_xray(png_bytes(BASE, mode="LA"))
    assert any("alpha" in w for w in grey_alpha.warnings)
    palette = read_xray(png_bytes(np.stack([BASE] * 3, axis=-1), mode="P"))
    assert palette.photometric_interpretation == "PALETTE COLOR" and any("palette" in w for w in palette.warnings)


def test_one_bit_png():
    xray = read_xray(png_bytes((BASE > 128).astype(np.uint8) * 255, mode="1"))
    assert set(np.unique(xray.pixels).tolist()) == {0.0, 1.0} and xray.bits_stored == 1


def test_jpeg_grey_and_colour():
    grey = read_xray(jpeg_bytes(BASE, quality=95))
    assert grey.source_format == "jpeg" and grey.warnings == ()
    assert np.abs(grey.pixels - BASE / 255).mean() < 0.01
    colour = read_xray(jpeg_bytes(np.stack([BASE] * 3, axis=-1), quality=95))
    assert np.abs(colour.pixels - BASE / 255).mean() < 0.01 and colour.photometric_interpretation == "RGB"


def test_jpeg_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    xray = read_xray(jpeg_bytes(BASE, exif=exif.tobytes()))
    assert xray.pixels.shape == (70, 40) and any("EXIF" in w for w in xray.warnings)


def test_animated_png_frame_selection():
    frames = [Image.fromarray(np.full((8, 8), v, dtype=np.uint8)) for v in (0, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    xray = read_xray(buffer.getvalue(), frame=1)
    np.testing.assert_allclose(xray.pixels, 200 / 255, atol=1e-6)
    assert xray.number_of_frames == 2 and any("frame 1 (0-based) of 2" in w for w in xray.warnings)
    with pytest.raises(InvalidImageError, match="frame 2"):
        read_xray(buffer.getvalue(), frame=2)


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (with a valid CRC) but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = zlib.compress(b"\x00" * 10)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
        + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    )


@pytest.mark.parametrize("size", [(9000, 9000), (100_000, 100_000)])  # below / far above Pillow's own bomb limit
def test_png_bomb_is_refused_from_the_header(size):
    with pytest.raises(ImageTooLargeError):
        read_xray(_png_with_size(*size))


def test_max_pixels_applies_to_raster_images():
    with pytest.raises(ImageTooLargeError, match="limit"):
        read_xray(png_bytes(BASE), max_pixels=100)
    assert read_xray(png_bytes(BASE), max_pixels=40 * 70).pixels.shape == (40, 70)


def test_pillow_global_limits_are_untouched():
    before = (Image.MAX_IMAGE_PIXELS,)
    read_xray(png_bytes(BASE), max_pixels=10**9)
    assert (Image.MAX_IMAGE_PIXELS,) == before


def test_truncated_and_corrupt_raster_files():
    png, jpeg = png_bytes(BASE), jpeg_bytes(BASE)
    broken_crc = bytearray(png)
    broken_crc[png.index(b"IDAT") + 10] ^= 0xFF
    cases = {
        "png cut": png[: len(png) // 2],
        "png bad CRC": bytes(broken_crc),
        "png header only": png[:20],
        "jpeg cut": jpeg[: len(jpeg) // 2],
        "jpeg stray marker": jpeg[:-40] + b"\xff\x3a" + jpeg[-38:],
        "jpeg damaged Huffman table": jpeg[: jpeg.index(b"\xff\xc4") + 4] + bytes(30) + jpeg[jpeg.index(b"\xff\xc4") + 34 :],
        "jpeg magic only": b"\xff\xd8\xff",
    }
    for name, data in cases.items():
        with pytest.raises(InvalidImageError):
            read_xray(data)


def test_other_formats_are_not_accepted():
    buffer = io.BytesIO()
    Image.fromarray(BASE).save(buffer, format="BMP")
    with pytest.raises(InvalidImageError, match="not a DICOM, PNG or JPEG"):
        read_xray(buffer.getvalue())


def test_sniffing_uses_magic_bytes():
    assert sniff_format(png_bytes(BASE)) == "png"
    assert sniff_format(jpeg_bytes(BASE)) == "jpeg"
    assert sniff_format(b"\x00" * 128 + b"DICM" + b"\x00" * 10) == "dicom"
    assert sniff_format(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100") == "dicom"  # bare explicit VR data set
    assert sniff_format(b"\x08\x00\x05\x00\x0a\x00\x00\x00ISO_IR 100") == "dicom"  # bare implicit VR
    assert sniff_format(b"\x00\x08\x00\x05CS\x00\x0aISO_IR 100") == "dicom"  # bare big endian
    assert sniff_format(b"hello world, not an image") is None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_raster_files_raise_only_typed_errors():
    rng = np.random.default_rng(2)
    for data in (png_bytes(gradient_image(24, 24)), jpeg_bytes(gradient_image(24, 24))):
        for variant in damaged_variants(data, rng, truncations=20, flips=30, max_bytes=6):
            assert_typed_error_or_valid_image(variant)
