"""DICOM reading with in-memory files: header fields, frames, photometric cases, LUTs, typed errors.

Coverage of transfer syntaxes (all with in-memory files, see io_factories): implicit/explicit little endian,
explicit big endian, deflated, no preamble/meta, RLE, JPEG-LS lossless/near-lossless, JPEG 2000 lossless/lossy
(pydicom's encoders); JPEG Baseline (Pillow codestream, encapsulated); JPEG Lossless process 14 / SV1 (own
encoder in io_factories). 12-bit JPEG Extended has no encoder anywhere here: pydicom's bundled real file
JPGExtended.dcm covers it; real-world JPEG Baseline / JPEG 2000 / MONOCHROME1 are in
tests/integration/test_real_dicoms.py.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from io_factories import assert_typed_error_or_valid_image, damaged_variants, dicom_bytes, gradient_image, jpeg_bytes, make_dataset, save, to_bytes
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)

from pneumo.errors import (
    ImageTooLargeError,
    InvalidImageError,
    MissingPixelDataError,
    NotChestRadiographError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)
from pneumo.io import read_xray

BASE = gradient_image(40, 70)  # non-square on purpose: (H, W) = (40, 70)


# ------------------------------------------------------------------------------------------- fields
def test_every_xray_field_is_filled_from_the_header():
    data = dicom_bytes(
        BASE.astype(np.uint16) * 16, bits_stored=12, PixelSpacing=[0.2, 0.25], ViewPosition="AP",
        PatientID="P-42", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4", SOPInstanceUID="1.2.3.4.5",
    )
    xray = read_xray(data)
    assert xray.pixels.shape == (40, 70) and xray.pixels.dtype == np.float32
    assert xray.original_size == (40, 70)
    assert xray.source_format == "dicom" and xray.photometric_interpretation == "MONOCHROME2"
    assert xray.bits_stored == 12 and xray.number_of_frames == 1
    assert xray.pixel_spacing_mm == (0.2, 0.25)
    assert (xray.modality, xray.body_part, xray.view_position) == ("DX", "CHEST", "AP")
    assert (xray.patient_id, xray.study_uid, xray.series_uid, xray.sop_uid) == ("P-42", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert xray.transfer_syntax == ExplicitVRLittleEndian
    assert xray.warnings == ()


def test_orientation_is_rows_by_columns():
    stored = np.zeros((40, 70), dtype=np.uint8)
    stored[5, 60] = 255  # row 5, column 60
    pixels = read_xray(dicom_bytes(stored)).pixels
    assert np.argwhere(pixels == 1.0).tolist() == [[5, 60]]


def test_imager_pixel_spacing_is_the_fallback_and_zero_spacing_is_refused():
    assert read_xray(dicom_bytes(BASE, ImagerPixelSpacing=[0.1, 0.1])).pixel_spacing_mm == (0.1, 0.1)
    xray = read_xray(dicom_bytes(BASE, PixelSpacing=[0, 0]))
    assert xray.pixel_spacing_mm is None and any("PixelSpacing" in w for w in xray.warnings)
    assert read_xray(dicom_bytes(BASE)).pixel_spacing_mm is None


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEGLosslessSV1])
def test_multi_frame_takes_the_requested_frame_and_warns(syntax):
    frames = np.stack([np.full((16, 24), v, dtype=np.uint8) for v in (10, 128, 250)])
    data = dicom_bytes(frames, syntax)
    for index, value in enumerate((10, 128, 250)):
        xray = read_xray(data, frame=index)
        np.testing.assert_allclose(xray.pixels, value / 255, atol=1e-6)
        assert xray.number_of_frames == 3
        assert any(f"frame {index} (0-based) of 3" in w for w in xray.warnings)
    with pytest.raises(InvalidImageError, match="frame 3 requested"):
        read_xray(data, frame=3)
    with pytest.raises(InvalidImageError):
        read_xray(dicom_bytes(BASE), frame=1)


def test_monochrome1_comes_out_with_air_dark():
    stored = np.full((32, 32), 4000, dtype=np.uint16)  # MONOCHROME1: high stored value = dark display = air
    stored[8:24, 8:24] = 500  # dense body in the middle
    xray = read_xray(dicom_bytes(stored, bits_stored=12, photometric="MONOCHROME1"))
    assert xray.photometric_interpretation == "MONOCHROME1"
    assert xray.pixels[0, 0] < 0.1 and xray.pixels[16, 16] > 0.8


def test_window_is_applied_after_rescale_and_clips():
    stored = np.array([[0, 1000, 1024, 1100, 4095]], dtype=np.uint16)  # rescaled: -1024, -24, 0, 76, 3071
    data = dicom_bytes(stored, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=0,
                       WindowWidth=100, VOILUTFunction="LINEAR_EXACT")
    np.testing.assert_allclose(read_xray(data).pixels[0], [0, 0.26, 0.5, 1, 1], atol=1e-6)


def test_first_of_several_windows_is_used():
    stored = np.array([[0, 100, 200]], dtype=np.uint8)
    data = dicom_bytes(stored, WindowCenter=[100, 50], WindowWidth=[200, 20], VOILUTFunction="LINEAR_EXACT")
    np.testing.assert_allclose(read_xray(data).pixels[0], [0, 0.5, 1], atol=1e-6)


def test_sigmoid_window():
    stored = np.array([[0, 100, 200]], dtype=np.uint8)
    pixels = read_xray(dicom_bytes(stored, WindowCenter=100, WindowWidth=50, VOILUTFunction="SIGMOID")).pixels[0]
    assert pixels[1] == pytest.approx(0.5) and pixels[0] < 0.01 and pixels[2] > 0.99


def test_invalid_window_is_ignored_with_a_warning():
    xray = read_xray(dicom_bytes(BASE, WindowCenter=100, WindowWidth=0))
    np.testing.assert_allclose(xray.pixels, BASE / 255, atol=1e-6)
    assert any("invalid window" in w for w in xray.warnings)


def test_modality_lut_sequence_is_applied():
    ds = make_dataset(np.array([[0, 1, 2, 3]], dtype=np.uint16), bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]
    item.LUTData = [255, 128, 0, 64]  # a non-monotonic LUT proves it is used
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = Sequence([item])
    ds["ModalityLUTSequence"][0]["LUTData"].VR = "US"
    np.testing.assert_allclose(read_xray(save(ds)).pixels[0], [1, 128 / 255, 0, 64 / 255], atol=1e-6)


def test_voi_lut_with_more_than_256_entries_and_8_bit_output():
    ds = make_dataset(np.array([[0, 300, 4095]], dtype=np.uint16), bits_stored=12)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.LUTData = [i // 16 for i in range(4096)]
    ds.VOILUTSequence = Sequence([item])
    ds["VOILUTSequence"][0]["LUTData"].VR = "US"
    np.testing.assert_allclose(read_xray(save(ds)).pixels[0], [0, (300 // 16) / 255, 1], atol=1e-6)


def test_colour_dicom_becomes_luminance_with_a_warning():
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    xray = read_xray(dicom_bytes(rgb, photometric="RGB"))
    np.testing.assert_allclose(xray.pixels, 0.587, atol=1e-5)
    assert xray.photometric_interpretation == "RGB" and any("luminance" in w for w in xray.warnings)


def test_lateral_view_is_read_with_a_warning():
    xray = read_xray(dicom_bytes(BASE, ViewPosition="LL"))
    assert any("lateral" in w for w in xray.warnings)


def test_jpeg_extended_12_bit_real_file_from_pydicom():
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    path = get_testdata_file("JPGExtended.dcm")
    expected = dcmread(path).pixel_array / 4095.0
    xray = read_xray(path, check_chest=False)  # an NM test image
    assert xray.transfer_syntax == "1.2.840.10008.1.2.4.51" and xray.bits_stored == 12
    np.testing.assert_allclose(xray.pixels, expected, atol=1e-6)


def test_sources_path_bytes_bytearray_memoryview_and_file(tmp_path):
    data = dicom_bytes(BASE)
    path = tmp_path / "image.dcm"
    path.write_bytes(data)
    reference = read_xray(data).pixels
    for source in (path, str(path), bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(read_xray(source).pixels, reference)
    with path.open("rb") as handle:
        np.testing.assert_array_equal(read_xray(handle).pixels, reference)


# --------------------------------------------------------------------------------------------- errors
def test_empty_and_non_image_input():
    with pytest.raises(InvalidImageError, match="empty"):
        read_xray(b"")
    for junk in (b"hello world" * 50, b"%PDF-1.7\n" + bytes(500), b"GIF89a" + bytes(100), bytes(1000)):
        with pytest.raises(InvalidImageError, match="not a DICOM, PNG or JPEG"):
            read_xray(junk)


def test_missing_or_unreadable_path(tmp_path):
    with pytest.raises(InvalidImageError, match="cannot read"):
        read_xray(tmp_path / "missing.dcm")
    with pytest.raises(InvalidImageError, match="folder"):
        read_xray(tmp_path)
    with pytest.raises(InvalidImageError):
        read_xray(12345)  # type: ignore[arg-type]


def test_no_pixel_data():
    ds = make_dataset(BASE)
    del ds.PixelData
    with pytest.raises(MissingPixelDataError, match="no pixel data"):
        read_xray(save(ds))


@pytest.mark.parametrize("photometric", ["PALETTE COLOR", "YBR_PARTIAL_420", "HSV", "CMYK"])
def test_unsupported_photometric_interpretation(photometric):
    ds = make_dataset(BASE, photometric="MONOCHROME2")
    ds.PhotometricInterpretation = photometric
    with pytest.raises(UnsupportedImageError, match="photometric"):
        read_xray(save(ds))


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.100", "1.2.3.4.5.6"])  # MPEG-2; an unknown UID
def test_unsupported_transfer_syntax(uid):
    with pytest.raises(UnsupportedTransferSyntaxError, match="not supported"):
        read_xray(dicom_bytes(BASE, uid))


def test_missing_decoder_plugin_is_an_unsupported_transfer_syntax(monkeypatch):
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    with pytest.raises(UnsupportedTransferSyntaxError, match="not installed"):
        read_xray(dicom_bytes(BASE, RLELossless))


def test_header_size_beyond_limit_is_refused_before_decoding():
    ds = make_dataset(BASE)
    ds.Rows, ds.Columns = 20000, 20000  # pixel data are far too short: decoding would fail differently
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        read_xray(save(ds))
    with pytest.raises(ImageTooLargeError):
        read_xray(dicom_bytes(BASE), max_pixels=1000)


def _patch_sof(stream: bytes, height: int, width: int) -> bytes:
    i = stream.index(b"\xff\xc0")
    return stream[: i + 5] + struct.pack(">HH", height, width) + stream[i + 9 :]


def test_jpeg_frame_claiming_huge_size_is_refused_before_decoding():
    ds = make_dataset(BASE)
    ds.PixelData = encapsulate([_patch_sof(jpeg_bytes(BASE), 60000, 60000)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    with pytest.raises(ImageTooLargeError, match="compressed frame"):
        read_xray(save(ds))
    ds.PixelData = encapsulate([_patch_sof(jpeg_bytes(BASE), 20, 70)])
    with pytest.raises(InvalidImageError, match="header says"):
        read_xray(save(ds))


def test_deflate_bomb_is_refused():
    ds = make_dataset(np.zeros((8, 8), dtype=np.uint8))
    ds.add_new(0x00091010, "OB", bytes(24 << 20))  # private element: 24 MiB of zeros, deflates to ~24 KiB
    data = to_bytes(ds, DeflatedExplicitVRLittleEndian)
    assert len(data) < 200_000
    with pytest.raises(ImageTooLargeError, match="inflates"):
        read_xray(data, max_pixels=1000)


def test_truncated_native_pixel_data():
    data = dicom_bytes(BASE)
    with pytest.raises(InvalidImageError, match="truncated"):
        read_xray(data[: len(data) - 500])


def test_truncated_and_corrupt_jpeg_frames():
    ds = make_dataset(BASE)
    stream = jpeg_bytes(BASE)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    cases = {
        "no EOI": stream[: len(stream) // 2],
        "stray marker in scan": stream[:-40] + b"\xff\x3a" + stream[-38:],
        "damaged Huffman table": _flip(stream, stream.index(b"\xff\xc4") + 4, 40),
    }
    for name, damaged in cases.items():
        ds.PixelData = encapsulate([damaged])
        ds["PixelData"].VR = "OB"
        with pytest.raises(InvalidImageError, match="corrupt|truncated"):
            read_xray(save(ds))


def _flip(data: bytes, start: int, count: int) -> bytes:
    return data[:start] + bytes(b ^ 0xFF for b in data[start : start + count]) + data[start + count :]


def test_inconsistent_headers_are_invalid():
    ds = make_dataset(BASE)
    del ds.Rows
    with pytest.raises(InvalidImageError, match="Rows"):
        read_xray(save(ds))
    ds = make_dataset(BASE)
    ds.BitsStored = 12  # > BitsAllocated 8
    with pytest.raises(InvalidImageError, match="BitsStored"):
        read_xray(save(ds))
    ds = make_dataset(BASE)
    ds.SamplesPerPixel = 3
    with pytest.raises(InvalidImageError, match="SamplesPerPixel"):
        read_xray(save(ds))


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "NM", "PT", "MG"])
def test_non_radiograph_modality_is_refused(modality):
    data = dicom_bytes(BASE, modality=modality)
    with pytest.raises(NotChestRadiographError, match=modality):
        read_xray(data)
    assert read_xray(data, check_chest=False).modality == modality


@pytest.mark.parametrize("body_part", ["HAND", "KNEE", "HEAD", "ABDOMEN", "SKULL"])
def test_non_chest_body_part_is_refused(body_part):
    data = dicom_bytes(BASE, body_part=body_part)
    with pytest.raises(NotChestRadiographError, match=body_part):
        read_xray(data)
    assert read_xray(data, check_chest=False).body_part == body_part


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # lower-case "chest" is invalid CS, still read
@pytest.mark.parametrize("body_part", ["CHEST", "chest", "THORAX", "PORT CHEST", "CHEST_LAT", "LUNG", None, ""])
def test_chest_or_missing_body_part_is_accepted(body_part):
    assert read_xray(dicom_bytes(BASE, body_part=body_part)).pixels.shape == (40, 70)


@pytest.mark.parametrize("modality", ["CR", "DX", "OT", None])
def test_radiograph_or_missing_modality_is_accepted(modality):
    assert read_xray(dicom_bytes(BASE, modality=modality)).modality == modality


def test_no_pixel_data_wins_over_the_chest_check():
    ds = make_dataset(BASE, modality="SR")
    del ds.PixelData
    with pytest.raises(MissingPixelDataError):
        read_xray(save(ds))


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the damaged values it meets
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit])
def test_damaged_files_raise_only_typed_errors(syntax):
    """Fuzz: truncations and byte flips anywhere give a typed error or an image, never a bare exception."""
    data = dicom_bytes(gradient_image(24, 24), syntax)
    for variant in damaged_variants(data, np.random.default_rng(1), truncations=25, flips=40, max_bytes=8):
        assert_typed_error_or_valid_image(variant)


def test_corrupt_deflate_stream_is_invalid():
    """Damage at the start of the deflate stream is detectable (later damage is not: raw deflate has no checksum)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_preamble

    data = dicom_bytes(BASE, DeflatedExplicitVRLittleEndian)
    fp = DicomBytesIO(data)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    start = fp.tell()
    with pytest.raises(InvalidImageError, match="deflated"):
        read_xray(data[:start] + b"\xff" * 64 + data[start + 64 :])


def test_shipped_samples_decode_without_shared_data():
    import csv

    from pneumo.samples import sample_dir, sample_files

    files = sample_files()
    assert [path.suffix for path in files] == [".dcm"] * 3
    with (sample_dir() / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) == {"patientId", "x", "y", "width", "height", "Target"}
    assert {row["patientId"] for row in rows} == {path.stem for path in files}
    for path in files:
        xray = read_xray(path)
        assert xray.pixels.shape == (1024, 1024) and xray.patient_id == path.stem
        for row in rows:  # every box lies inside the image
            if row["patientId"] == path.stem and row["Target"] == "1":
                assert float(row["x"]) + float(row["width"]) <= 1024 and float(row["y"]) + float(row["height"]) <= 1024
