"""The intensity policy (docs/decisions/0002): formulas, and the property that the same pixels in another
encoding (bit depth, MONOCHROME1, signed, rescale, window, VOI LUT, transfer syntax, PNG) give the same
array within 2/255."""

from __future__ import annotations

import numpy as np
import pytest
from io_factories import dicom_bytes, gradient_image, jpeg_bytes, make_dataset, png_bytes, save, to_bytes
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pneumo.io import intensity, read_xray

TOLERANCE = 2 / 255
BASE = gradient_image(48, 64)  # uint8, uses 0..255
REFERENCE = BASE.astype(np.float32) / 255
B16 = BASE.astype(np.uint16)


def _voi_lut_item(entries: int, first: int, out_bits: int, data: np.ndarray) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [entries, first, out_bits]
    item.LUTData = [int(v) for v in data]
    return item


def _with_voi_lut() -> bytes:
    """12-bit stored (v*16) with a VOI LUT mapping i -> i // 16 into 8 output bits."""
    ds = make_dataset(B16 * 16, bits_stored=12)
    ds.VOILUTSequence = Sequence([_voi_lut_item(4096, 0, 8, np.arange(4096) // 16)])
    ds["VOILUTSequence"][0]["LUTData"].VR = "US"
    return to_bytes(ds)


def _rescaled_window() -> bytes:
    """12-bit stored (v*16), rescale to v*8 - 1024 ("HU-like"), window exactly spanning the rescaled range."""
    lo, hi = -1024.0, 4095 * 0.5 - 1024.0
    return dicom_bytes(
        B16 * 16, bits_stored=12, RescaleSlope=0.5, RescaleIntercept=-1024, WindowCenter=(lo + hi) / 2,
        WindowWidth=hi - lo, VOILUTFunction="LINEAR_EXACT",
    )


# name -> bytes of the same picture in another encoding
LOSSLESS_ENCODINGS = {
    "png 8-bit": lambda: png_bytes(BASE),
    "png 16-bit (*257)": lambda: png_bytes(B16 * 257),
    "png 16-bit (*256)": lambda: png_bytes(B16 * 256),
    "png RGB equal channels": lambda: png_bytes(np.stack([BASE] * 3, axis=-1)),
    "png grey+alpha": lambda: png_bytes(BASE, mode="LA"),
    "dicom 8-bit": lambda: dicom_bytes(BASE),
    "dicom 12-bit (*16)": lambda: dicom_bytes(B16 * 16, bits_stored=12),
    "dicom 12-bit (*4095/255)": lambda: dicom_bytes(np.round(B16 * (4095 / 255)), bits_stored=12),
    "dicom 16-bit (*257)": lambda: dicom_bytes(B16 * 257, bits_stored=16),
    "dicom 16-bit (*256)": lambda: dicom_bytes(B16 * 256, bits_stored=16),
    "dicom 10-bit (*4)": lambda: dicom_bytes(B16 * 4, bits_stored=10),
    "MONOCHROME1 8-bit": lambda: dicom_bytes(255 - BASE, photometric="MONOCHROME1"),
    "MONOCHROME1 12-bit": lambda: dicom_bytes(4095 - B16 * 16, bits_stored=12, photometric="MONOCHROME1"),
    "signed 12-bit": lambda: dicom_bytes(B16.astype(np.int16) * 16 - 2048, bits_stored=12, signed=True),
    "signed 16-bit": lambda: dicom_bytes(B16.astype(np.int32) * 257 - 32768, bits_stored=16, signed=True),
    "rescale slope/intercept": lambda: dicom_bytes(B16 * 16, bits_stored=12, RescaleSlope=2.5, RescaleIntercept=-1000),
    "rescale + window in rescaled units": _rescaled_window,
    "window LINEAR_EXACT 8-bit": lambda: dicom_bytes(BASE, WindowCenter=127.5, WindowWidth=255, VOILUTFunction="LINEAR_EXACT"),
    "window LINEAR_EXACT 16-bit": lambda: dicom_bytes(
        B16 * 257, bits_stored=16, WindowCenter=127.5 * 257, WindowWidth=255 * 257, VOILUTFunction="LINEAR_EXACT"
    ),
    "window LINEAR (default) 12-bit": lambda: dicom_bytes(B16 * 16, bits_stored=12, WindowCenter=2040.5, WindowWidth=4081),
    "VOI LUT sequence": _with_voi_lut,
    "MONOCHROME1 + window": lambda: dicom_bytes(
        4095 - B16 * 16, bits_stored=12, photometric="MONOCHROME1", WindowCenter=2040.5, WindowWidth=4081
    ),
    "implicit VR": lambda: dicom_bytes(B16 * 16, ImplicitVRLittleEndian, bits_stored=12),
    "explicit VR big endian": lambda: dicom_bytes(B16 * 16, ExplicitVRBigEndian, bits_stored=12),
    "deflated": lambda: dicom_bytes(B16 * 16, DeflatedExplicitVRLittleEndian, bits_stored=12),
    "no preamble/meta": lambda: to_bytes(make_dataset(B16 * 16, bits_stored=12), preamble=False),
    "RLE": lambda: dicom_bytes(B16 * 16, RLELossless, bits_stored=12),
    "RLE MONOCHROME1 signed": lambda: dicom_bytes(
        2047 - B16.astype(np.int16) * 16, RLELossless, bits_stored=12, signed=True, photometric="MONOCHROME1"
    ),
    "JPEG-LS lossless": lambda: dicom_bytes(B16 * 16, JPEGLSLossless, bits_stored=12),
    "JPEG-LS near-lossless (error 1, 8-bit)": lambda: dicom_bytes(BASE, JPEGLSNearLossless, encoder={"jls_error": 1}),
    "JPEG 2000 lossless": lambda: dicom_bytes(B16 * 16, JPEG2000Lossless, bits_stored=12),
    "JPEG 2000 lossless 16-bit": lambda: dicom_bytes(B16 * 257, JPEG2000Lossless, bits_stored=16),
    "JPEG Lossless SV1 12-bit": lambda: dicom_bytes(B16 * 16, JPEGLosslessSV1, bits_stored=12),
    "JPEG Lossless process 14 16-bit": lambda: dicom_bytes(B16 * 257, JPEGLossless, bits_stored=16),
    "JPEG Lossless SV1 MONOCHROME1 8-bit": lambda: dicom_bytes(255 - BASE, JPEGLosslessSV1, photometric="MONOCHROME1"),
}


@pytest.mark.parametrize("name", sorted(LOSSLESS_ENCODINGS))
def test_same_pixels_in_another_encoding_give_the_same_array(name):
    xray = read_xray(LOSSLESS_ENCODINGS[name]())
    assert xray.pixels.dtype == np.float32 and xray.pixels.shape == BASE.shape
    difference = np.abs(xray.pixels - REFERENCE)
    assert difference.max() <= TOLERANCE, f"{name}: max difference {difference.max() * 255:.2f}/255"


LOSSY_ENCODINGS = {  # name -> (bytes, allowed mean abs difference)
    "JPEG baseline in DICOM (q95)": (lambda: dicom_bytes(BASE, JPEGBaseline8Bit), 0.01),
    "JPEG baseline 8-bit labelled JPEG Extended": (lambda: dicom_bytes(BASE, JPEGExtended12Bit), 0.01),
    "JPEG file (q95)": (lambda: jpeg_bytes(BASE), 0.01),
    "JPEG 2000 lossy (ratio 5)": (lambda: dicom_bytes(B16 * 16, JPEG2000, bits_stored=12, encoder={"j2k_cr": [5]}), 0.01),
    "JPEG-LS near-lossless (error 4)": (lambda: dicom_bytes(BASE, JPEGLSNearLossless, encoder={"jls_error": 4}), 4 / 255),
}


@pytest.mark.parametrize("name", sorted(LOSSY_ENCODINGS))
def test_lossy_encodings_stay_close(name):
    make, tolerance = LOSSY_ENCODINGS[name]
    pixels = read_xray(make()).pixels
    assert pixels.shape == BASE.shape
    assert np.abs(pixels - REFERENCE).mean() <= tolerance


def test_jpeg_codestream_reads_the_same_in_dicom_and_as_a_file():
    stream = jpeg_bytes(BASE, quality=80)
    ds = make_dataset(BASE)
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    np.testing.assert_array_equal(read_xray(save(ds)).pixels, read_xray(stream).pixels)


def test_full_scale_maps_the_possible_range_not_the_data_range():
    dark = dicom_bytes(np.full((8, 8), 100, dtype=np.uint16), bits_stored=12)
    pixels = read_xray(dark).pixels
    np.testing.assert_allclose(pixels, 100 / 4095, atol=1e-6)  # not stretched to 0 or 1


def test_low_contrast_warning_when_data_use_few_stored_bits():
    few_bits = dicom_bytes(B16 * 16, bits_stored=16)  # 12-bit data declared as 16 bits, no window
    xray = read_xray(few_bits)
    assert xray.pixels.max() < 0.07
    assert any("low contrast" in w for w in xray.warnings)
    assert not read_xray(dicom_bytes(B16 * 16, bits_stored=12)).warnings


def test_stored_range_signed_and_unsigned():
    assert intensity.stored_range(8, False) == (0, 255)
    assert intensity.stored_range(12, True) == (-2048, 2047)
    assert intensity.stored_range(16, False) == (0, 65535)


def test_full_scale_handles_negative_slope_and_flat_range():
    np.testing.assert_allclose(intensity.full_scale(np.array([0, 5, 10]), 10, 0), [0, 0.5, 1])
    assert intensity.full_scale(np.array([3, 3]), 3, 3).tolist() == [0, 0]


def test_linear_window_matches_dicom_formula():
    # PS3.3 C.11.2.1.2.1: c=2048, w=4096 -> x <= c - 0.5 - (w-1)/2 = 0 maps to 0, x > c - 0.5 + (w-1)/2 maps to 1
    values = np.array([0, 1, 2047.5, 4095, 5000], dtype=np.float32)
    out = intensity.window(values, 2048, 4096, "LINEAR")
    assert out[0] == pytest.approx(0.0, abs=1e-6) and out[-1] == 1.0 and out[-2] == pytest.approx(1.0, abs=1e-6)
    assert out[2] == pytest.approx(0.5, abs=1e-6)
    assert 0 < out[1] < 0.001


def test_linear_exact_and_sigmoid_windows():
    x = np.array([-10, 40, 50, 60, 110], dtype=np.float32)
    np.testing.assert_allclose(intensity.window(x, 50, 20, "LINEAR_EXACT"), [0, 0, 0.5, 1, 1], atol=1e-6)
    sig = intensity.window(x, 50, 20, "SIGMOID")
    assert sig[2] == pytest.approx(0.5) and np.all(np.diff(sig) > 0) and sig[0] < 0.01 and sig[-1] > 0.99


def test_window_width_validity():
    assert not intensity.valid_window(0.5, "LINEAR") and intensity.valid_window(1, "LINEAR")
    assert intensity.valid_window(0.5, "SIGMOID") and not intensity.valid_window(0, "LINEAR_EXACT")
    assert not intensity.valid_window(float("nan"))


def test_luminance_weights_and_monochrome1_inversion():
    rgb = np.zeros((1, 3, 3), dtype=np.uint8)
    rgb[0, 0, 0], rgb[0, 1, 1], rgb[0, 2, 2] = 255, 255, 255
    np.testing.assert_allclose(intensity.luminance(rgb)[0] / 255, [0.299, 0.587, 0.114], atol=1e-6)
    np.testing.assert_allclose(intensity.to_monochrome2(np.array([0.2]), "MONOCHROME1"), [0.8])
    np.testing.assert_allclose(intensity.to_monochrome2(np.array([0.2]), "MONOCHROME2"), [0.2])
