"""pneumo.io on real files from ../shared/data (rsna-mini, dicom-samples) and the shipped samples.

Real-file coverage: JPEG Baseline 8-bit MONOCHROME2 (rsna-mini, SIIM), JPEG 2000 + uncompressed 15-bit
MONOCHROME1 with a VOI window (RG1_J2KI / RG1_UNCI); every typed error on damaged or re-labelled real files.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pneumo.errors import (
    ImageTooLargeError,
    InvalidImageError,
    MissingPixelDataError,
    NotChestRadiographError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)
from pneumo.io import read_xray
from pneumo.samples import sample_dir, sample_files


def _rsna_files(rsna_mini: Path) -> list[Path]:
    return sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))


def _edited(path: Path, **changes: object) -> bytes:
    """The real file re-written with header changes (None deletes the element)."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        elif keyword == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = value
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    private = {} if pydicom.uid.UID(str(ds.file_meta.TransferSyntaxUID)).is_transfer_syntax else {
        "implicit_vr": False, "little_endian": True}
    ds.save_as(buffer, enforce_file_format=True, **private)
    return buffer.getvalue()


def test_all_rsna_mini_dicoms_decode(rsna_mini):
    files = _rsna_files(rsna_mini)
    assert len(files) == 210
    means = []
    for path in files:
        xray = read_xray(path.read_bytes())
        assert xray.pixels.shape == (1024, 1024) and xray.pixels.dtype == np.float32
        assert xray.patient_id == path.stem
        assert xray.source_format == "dicom" and xray.transfer_syntax == pydicom.uid.JPEGBaseline8Bit
        assert xray.photometric_interpretation == "MONOCHROME2" and xray.bits_stored == 8
        assert xray.modality == "CR" and xray.view_position in ("PA", "AP")
        assert xray.pixel_spacing_mm is not None and 0.1 < xray.pixel_spacing_mm[0] < 0.2
        assert xray.warnings == ()
        means.append(float(xray.pixels.mean()))
    assert 0.25 < min(means) and max(means) < 0.8  # chest films: neither blank nor saturated
    assert np.std(means) > 0.02  # and not all the same image


def test_rsna_mini_is_read_as_stored_values_over_255(rsna_mini):
    path = _rsna_files(rsna_mini)[0]
    stored = pydicom.dcmread(path).pixel_array.astype(np.float32) / 255
    # Pillow (libjpeg-turbo) and pylibjpeg IDCTs may differ by one grey level
    assert np.abs(read_xray(path).pixels - stored).max() <= 1 / 255 + 1e-6


def test_jpeg2000_and_uncompressed_rg1_agree(dicom_samples):
    uncompressed = read_xray(dicom_samples / "RG1_UNCI.dcm")
    j2k = read_xray(dicom_samples / "RG1_J2KI.dcm")
    assert uncompressed.pixels.shape == j2k.pixels.shape == (1955, 1841)
    assert j2k.transfer_syntax == pydicom.uid.JPEG2000
    assert np.abs(uncompressed.pixels - j2k.pixels).mean() < 0.02


def test_monochrome1_comes_out_air_dark(dicom_samples):
    xray = read_xray(dicom_samples / "RG1_UNCI.dcm")
    assert xray.photometric_interpretation == "MONOCHROME1" and xray.bits_stored == 15
    pixels = xray.pixels
    h, w = pixels.shape
    corners = np.mean([pixels[:100, :100].mean(), pixels[:100, -100:].mean()])
    centre = pixels[h // 2 - 100 : h // 2 + 100, w // 2 - 100 : w // 2 + 100].mean()  # mediastinum
    assert corners < 0.5 < centre and centre - corners > 0.3
    assert xray.pixel_spacing_mm is None  # the file says 0.0\0.0: refused with a warning
    assert any("PixelSpacing" in warning for warning in xray.warnings)


def test_siim_jpeg_baseline(dicom_samples):
    xray = read_xray(dicom_samples / "siim_cr_jpeg_baseline.dcm")
    assert xray.pixels.shape == (1024, 1024) and xray.body_part == "CHEST"
    assert xray.pixels[:64, :64].mean() < 0.2 < 0.6 < xray.pixels[448:576, 448:576].mean()


# ------------------------------------------------------------------------------- typed errors, real files
@pytest.fixture(scope="module")
def real_file(rsna_mini) -> Path:
    return _rsna_files(rsna_mini)[0]


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_real_dicom_cut_in_half_is_invalid(real_file):
    data = real_file.read_bytes()
    for fraction in (0.5, 0.9, 0.999):
        with pytest.raises(InvalidImageError, match="truncated"):
            read_xray(data[: int(len(data) * fraction)])


def test_real_dicom_with_damaged_jpeg_data_is_invalid(real_file):
    data = bytearray(real_file.read_bytes())
    start = data.index(b"\xff\xd8\xff")
    dht = data.index(b"\xff\xc4", start)
    for i in range(dht + 4, dht + 40):  # flip bytes of the Huffman table
        data[i] ^= 0xFF
    with pytest.raises(InvalidImageError, match="corrupt"):
        read_xray(bytes(data))
    data = bytearray(real_file.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2] = b"\xff\x3a"  # a stray marker inside the entropy-coded data
    with pytest.raises(InvalidImageError, match="corrupt"):
        read_xray(bytes(data))


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"Modality": "CT"}, NotChestRadiographError),
        ({"BodyPartExamined": "HAND"}, NotChestRadiographError),
        ({"PixelData": None}, MissingPixelDataError),
        ({"PhotometricInterpretation": "PALETTE COLOR"}, UnsupportedImageError),
        ({"TransferSyntaxUID": "1.2.840.10008.1.2.4.100"}, UnsupportedTransferSyntaxError),
        ({"TransferSyntaxUID": "1.2.3.4.5"}, UnsupportedTransferSyntaxError),
        ({"Rows": 30000, "Columns": 30000}, ImageTooLargeError),
    ],
)
def test_real_dicom_relabelled_gives_the_typed_error(real_file, changes, error):
    with pytest.raises(error):
        read_xray(_edited(real_file, **changes))


def test_real_dicom_beyond_max_pixels(real_file):
    with pytest.raises(ImageTooLargeError, match="1024x1024"):
        read_xray(real_file, max_pixels=1024 * 1023)


def test_non_chest_real_file_reads_when_the_check_is_off(real_file):
    data = _edited(real_file, BodyPartExamined="KNEE")
    assert read_xray(data, check_chest=False).pixels.shape == (1024, 1024)


# ------------------------------------------------------------------------------------ shipped samples
def test_shipped_samples_match_the_rsna_labels(rsna_mini):
    files = sample_files()
    assert len(files) == 3 and (sample_dir() / "LICENSE-NOTES.md").is_file()
    with (sample_dir() / "labels.csv").open(newline="") as handle:
        shipped = list(csv.DictReader(handle))
    with (rsna_mini / "stage_2_train_labels.csv").open(newline="") as handle:
        rsna = list(csv.DictReader(handle))
    ids = {path.stem for path in files}
    assert {row["patientId"] for row in shipped} == ids
    assert shipped == [row for row in rsna if row["patientId"] in ids]
    targets = {row["patientId"]: row["Target"] for row in shipped}
    assert sorted(targets.values()) == ["0", "1", "1"]
    assert all(sum(r["patientId"] == pid for r in shipped) == 2 for pid, t in targets.items() if t == "1")
    for path in files:
        assert read_xray(path).patient_id == path.stem
        assert path.read_bytes() == (rsna_mini / "stage_2_train_images" / path.name).read_bytes()


def test_pneumo_info_describes_real_files(dicom_samples, capsys, tmp_path):
    from pneumo.cli import main

    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not an image")
    code = main(["info", str(sample_files()[0]), str(dicom_samples / "RG1_J2KI.dcm"), str(bad)])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 1  # one file failed
    assert lines[0]["size_hw"] == [1024, 1024] and lines[0]["format"] == "dicom"
    assert lines[1]["photometric_interpretation"] == "MONOCHROME1" and lines[1]["size_hw"] == [1955, 1841]
    assert "InvalidImageError" in captured.err and "bad.dcm" in captured.err
    assert not any("patient" in key for line in lines for key in line)  # no patient identifiers printed
