"""The hostile inputs of issue 17, built in memory: small files that used to cost far more than they should.

Used by the regression tests and by ``bench/hardening.py`` (which measures peak memory and time per probe).
"""

from __future__ import annotations

import io
import struct

import numpy as np


def one_bit_png(side: int = 7745) -> bytes:
    """A 1-bit black PNG of ``side`` x ``side`` px: about 7.5 KB on disk, 60 M pixels decoded."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (side, side), 0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def preamble_and_zeros(megabytes: int = 60) -> bytes:
    """A 128-byte preamble, ``DICM`` and ``megabytes`` MiB of zeros: parses as millions of empty elements."""
    return b"\0" * 128 + b"DICM" + b"\0" * (megabytes << 20)


def pixel_data_overrun(extra: int = 200_000_000, rows: int = 64, columns: int = 64, truncate: bool = False) -> bytes:
    """A valid 8-bit DICOM whose PixelData length field claims ``extra`` bytes more than the file holds
    (``truncate``: and whose pixel bytes are cut to half of what the header needs)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    pixels = np.linspace(0, 255, rows * columns).astype(np.uint8).tobytes()
    ds.PixelData = pixels
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = bytearray(buffer.getvalue())
    # explicit VR LE: (7FE0,0010) "OB" 00 00 <uint32 length>
    at = data.rfind(b"\xe0\x7f\x10\x00OB\x00\x00")
    struct.pack_into("<I", data, at + 8, len(pixels) + extra)
    if truncate:
        del data[len(data) - len(pixels) // 2:]
    return bytes(data)


def tiny_black_png(side: int = 1) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (side, side), 0).save(buffer, format="PNG")
    return buffer.getvalue()


def rgb_noise_png(side: int = 512, seed: int = 0) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
