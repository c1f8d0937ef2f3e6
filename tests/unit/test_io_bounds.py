"""Issue 17 probes at the reader: decode budgets, reduction on read, DICOM structural checks (each reproduced
the defect before the fix: a 1-bit 7745 px PNG allocated ~780 MiB, a preamble + zeros file took 22-35 s, a
PixelData length past the end of the file went unnoticed)."""

from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from pneumo.errors import ImageTooLargeError, InvalidImageError
from pneumo.io import probes, read_xray
from pneumo.io.budget import block_mean, reduce_stored, reduction_factor


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_block_mean_matches_a_reshape_mean_and_averages_partial_edges() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 65535, (37, 50), dtype=np.uint16)
    out = block_mean(array, 4)
    assert out.shape == (10, 13)
    np.testing.assert_allclose(out[:9, :12], array[:36, :48].reshape(9, 4, 12, 4).mean(axis=(1, 3)), rtol=1e-5)
    np.testing.assert_allclose(out[9, 12], array[36:, 48:].mean(), rtol=1e-5)  # a 1 x 2 corner block
    assert reduce_stored(array, 4).dtype == np.uint16
    rgb = rng.random((9, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(block_mean(rgb, 3)[1, 1], rgb[3:6, 3:6].mean(axis=(0, 1)), rtol=1e-5)


def test_reduction_factor_fits_the_working_budget() -> None:
    assert reduction_factor(1024, 1024, 2048 * 2048) == 1
    assert reduction_factor(7745, 7745, None) == 1
    for h, w in ((7745, 7745), (5000, 3000), (4097, 4096), (60000, 1000)):
        f = reduction_factor(h, w, 2048 * 2048)
        assert -(-h // f) * -(-w // f) <= 2048 * 2048 < -(-h // (f - 1)) * -(-w // (f - 1)) or f == 2


def test_one_bit_bomb_png_is_reduced_on_read_with_bounded_memory() -> None:
    data = probes.one_bit_png(7745)
    assert len(data) < 16_000
    tracemalloc.start()
    try:
        xray = read_xray(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert xray.full_size == (7745, 7745) and xray.stored_size == (7745, 7745)
    assert max(xray.pixels.shape) <= 2048 and xray.pixels.dtype == np.float32
    assert any("reduced" in w for w in xray.warnings)
    # numpy allocations (Pillow's own buffer of 60 MB is outside tracemalloc): no full-size float copy
    assert peak < 64 << 20, f"peak {peak / 1048576:.0f} MiB"


def test_reduced_image_keeps_content_and_orientation() -> None:
    big = np.zeros((4200, 2100), np.uint8)
    big[:2100] = 200  # top half bright
    xray = read_xray(_png(big))
    assert xray.full_size == (4200, 2100)
    assert xray.pixels.shape == (2100, 1050)  # factor 2
    assert xray.pixels[:1050].mean() == pytest.approx(200 / 255, abs=1e-3) and xray.pixels[1051:].max() == 0
    sixteen = np.full((3000, 3000), 40000, np.uint16)
    assert read_xray(_png(sixteen)).pixels.mean() == pytest.approx(40000 / 65535, abs=1e-4)


def test_small_images_are_untouched() -> None:
    array = np.random.default_rng(1).integers(0, 255, (300, 200), dtype=np.uint8)
    xray = read_xray(_png(array))
    assert xray.full_size is None and xray.stored_size == (300, 200)
    np.testing.assert_array_equal(np.rint(xray.pixels * 255).astype(np.uint8), array)


def test_decode_budget_is_checked_from_the_header() -> None:
    data = _png(np.zeros((1000, 1000, 3), np.uint8))
    with pytest.raises(ImageTooLargeError, match="decode budget"):
        read_xray(data, decode_bytes=1 << 20)
    assert read_xray(data).pixels.shape == (1000, 1000)


def test_large_jpeg_is_reduced_inside_the_decoder() -> None:
    buffer = io.BytesIO()
    Image.new("L", (6000, 5000), 128).save(buffer, format="JPEG", quality=90)
    xray = read_xray(buffer.getvalue())
    assert xray.full_size == (5000, 6000) and xray.pixels.shape[0] * xray.pixels.shape[1] <= 2048 * 2048
    assert xray.pixels.mean() == pytest.approx(128 / 255, abs=0.01)


def test_preamble_and_zeros_dicom_is_refused_in_milliseconds() -> None:
    read_xray(probes.pixel_data_overrun(extra=0))  # warm the pydicom import
    data = probes.preamble_and_zeros(60)
    start = time.perf_counter()
    with pytest.raises(InvalidImageError, match="zero bytes"):
        read_xray(data)
    assert time.perf_counter() - start < 2.0  # was 22-35 s; about 0.05 s here (bench/RESULTS.md)


def test_pixel_data_length_past_end_of_file_warns_or_refuses() -> None:
    xray = read_xray(probes.pixel_data_overrun(extra=200_000_000))
    assert any("PixelData length field claims" in w for w in xray.warnings)
    assert xray.pixels.shape == (64, 64)
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        read_xray(probes.pixel_data_overrun(extra=200_000_000, truncate=True))


def test_repeated_or_badly_disordered_elements_are_refused() -> None:
    from pneumo.io.dicom_structure import MAX_DISORDERED, StructureGuard

    guard = StructureGuard(io.BytesIO(b"x" * 100), 100)
    assert guard(0x00080016, "UI", 10) is False
    assert guard(0x00080016, "UI", 10) is True and "repeats" in guard.problem
    sloppy = StructureGuard(io.BytesIO(b"x" * 100), 100)
    assert sloppy(0x00100020, "LO", 4) is False and sloppy(0x00100010, "PN", 4) is False  # one swap: tolerated
    assert sloppy.disordered == 1 and sloppy.problem is None
    garbage = StructureGuard(io.BytesIO(b"x" * 100), 100)
    results = [garbage(tag, "UN", 0) for tag in [0x7000_0000 - k for k in range(MAX_DISORDERED + 2)]]
    assert results[-1] is True and "does not follow" in garbage.problem
