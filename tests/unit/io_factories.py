"""In-memory image files for the pneumo.io tests: DICOM in every transfer syntax we can encode, PNG, JPEG.

Encoders used: pydicom's own (RLE), pyjpegls (JPEG-LS lossless / near-lossless), pylibjpeg-openjpeg (JPEG 2000
lossless / lossy), Pillow (JPEG Baseline codestream wrapped in DICOM), and ``encode_jpeg_lossless`` below
(a minimal JPEG Lossless process-14 selection-value-1 encoder: pydicom has no JPEG Lossless encoder).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
PYDICOM_ENCODED = (RLELossless, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000)


def gradient_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 test image using the whole 0..255 range: a diagonal ramp, a bright block, some noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = (xx / max(width - 1, 1) * 200 + yy / max(height - 1, 1) * 55).astype(np.float64)
    ramp[height // 4 : height // 2, width // 4 : width // 2] = 250
    ramp += rng.normal(0, 3, size=ramp.shape)
    out = np.clip(np.round(ramp), 0, 255).astype(np.uint8)
    out[0, 0], out[-1, -1] = 0, 255
    return out


def make_dataset(
    stored: np.ndarray,
    *,
    bits_stored: int = 8,
    photometric: str = "MONOCHROME2",
    signed: bool = False,
    modality: str | None = "DX",
    body_part: str | None = "CHEST",
    **elements: object,
) -> Dataset:
    """A DX image Dataset (Explicit VR LE, native pixel data) holding ``stored`` ((H, W), (F, H, W) or (H, W, 3))."""
    stored = np.asarray(stored)
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    frames = stored.shape[0] if (stored.ndim == 3 and not colour) or stored.ndim == 4 else 1
    rows, columns = stored.shape[-3:-1] if colour else stored.shape[-2:]
    bits_allocated = 8 if bits_stored <= 8 else 16
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "TEST-0001"
    if modality is not None:
        ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = int(rows), int(columns)
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}[
        (bits_allocated, signed)
    ]
    ds.PixelData = np.ascontiguousarray(stored.astype(dtype)).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset, syntax: str = ExplicitVRLittleEndian, *, preamble: bool = True, **encoder_kwargs) -> bytes:
    """Write ``ds`` (native pixel data) in transfer syntax ``syntax``; ``preamble=False`` drops preamble + meta."""
    if syntax in PYDICOM_ENCODED:
        ds.compress(syntax, **encoder_kwargs)
    elif syntax in (JPEGBaseline8Bit, JPEGExtended12Bit):
        _encapsulate_frames(ds, syntax, [_pillow_jpeg(f, **encoder_kwargs) for f in _frames(ds)])
    elif syntax in (JPEGLossless, JPEGLosslessSV1):
        _encapsulate_frames(ds, syntax, [encode_jpeg_lossless(f, int(ds.BitsStored)) for f in _frames(ds)])
    elif syntax == ExplicitVRBigEndian:
        big = _native(ds).astype(_native(ds).dtype.newbyteorder(">"))
        ds.PixelData = big.tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax in NATIVE:
        ds.file_meta.TransferSyntaxUID = syntax
    else:  # an arbitrary UID label (unsupported-syntax tests); compressed kinds get the raw bytes encapsulated
        from pydicom.uid import UID

        if UID(syntax).is_transfer_syntax and UID(syntax).is_compressed:
            _encapsulate_frames(ds, syntax, [bytes(ds.PixelData)])
        ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    if preamble:
        from pydicom.uid import UID

        private = {} if UID(syntax).is_transfer_syntax else {"implicit_vr": False, "little_endian": True}
        ds.save_as(buffer, enforce_file_format=True, **private)
    else:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        fp = DicomBytesIO()
        fp.is_implicit_VR = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        fp.is_little_endian = ds.file_meta.TransferSyntaxUID != ExplicitVRBigEndian
        write_dataset(fp, ds)
        return fp.getvalue()
    return buffer.getvalue()


def save(ds: Dataset) -> bytes:
    """Write ``ds`` as it is (its pixel data already in its transfer syntax), with preamble and file meta."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_bytes(stored: np.ndarray, syntax: str = ExplicitVRLittleEndian, **kwargs) -> bytes:
    """``make_dataset`` + ``to_bytes`` in one call; encoder options go through ``encoder`` (a dict)."""
    encoder = kwargs.pop("encoder", {})
    return to_bytes(make_dataset(stored, **kwargs), syntax, **encoder)


def _native(ds: Dataset) -> np.ndarray:
    bits, signed = int(ds.BitsAllocated), int(ds.PixelRepresentation) == 1
    dtype = np.dtype({8: "u1", 16: "u2"}[bits]).str.replace("u", "i" if signed else "u")
    return np.frombuffer(ds.PixelData, dtype=dtype)


def _frames(ds: Dataset) -> list[np.ndarray]:
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    arr = _native(ds).reshape(n, int(ds.Rows), int(ds.Columns), -1)
    return [f[..., 0] if f.shape[-1] == 1 else f for f in arr]


def _encapsulate_frames(ds: Dataset, syntax: str, frames: list[bytes]) -> None:
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    if int(ds.SamplesPerPixel) == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"


def _pillow_jpeg(frame: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_jpeg_lossless(image: np.ndarray, precision: int) -> bytes:
    """Grayscale JPEG Lossless (SOF3), predictor 1 (left), point transform 0, one scan, no restarts.

    Huffman table: the 17 difference categories 0..16 all get 5-bit codes (valid, not optimal).
    """
    x = np.asarray(image, dtype=np.int64)
    height, width = x.shape
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) % 65536
    diff[diff > 32768] -= 65536
    bits: list[str] = []
    for d in diff.ravel().tolist():
        ssss = 16 if d == 32768 else abs(d).bit_length()
        bits.append(format(ssss, "05b"))
        if 0 < ssss < 16:
            value = d if d > 0 else d + (1 << ssss) - 1
            bits.append(format(value, f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    entropy = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        entropy.append(byte)
        if byte == 0xFF:
            entropy.append(0x00)
    counts = [0, 0, 0, 0, 17] + [0] * 11
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xc3" + struct.pack(">HBHHB", 11, precision, height, width, 1) + bytes([1, 0x11, 0])
    out += b"\xff\xc4" + struct.pack(">H", 2 + 1 + 16 + 17) + bytes([0x00] + counts + list(range(17)))
    out += b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([1, 0x00, 1, 0, 0x00])
    out += entropy + b"\xff\xd9"
    return bytes(out)


def png_bytes(array: np.ndarray, mode: str | None = None, **save_kwargs) -> bytes:
    """PNG of ``array`` (uint8 (H, W) -> L, (H, W, 3|4) -> RGB/RGBA, uint16 -> 16-bit gray); ``mode`` converts first."""
    array = np.asarray(array)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_kwargs)
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 95, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="JPEG", quality=quality, **save_kwargs)
    return buffer.getvalue()


def damaged_variants(data: bytes, rng: "np.random.Generator", truncations: int, flips: int, max_bytes: int) -> list[bytes]:
    """``truncations`` random prefixes of ``data`` plus ``flips`` copies with 1..max_bytes-1 random bytes changed."""
    variants = [data[:cut] for cut in rng.integers(1, len(data), size=truncations)]
    for _ in range(flips):
        damaged = bytearray(data)
        for position in rng.integers(0, len(data), size=int(rng.integers(1, max_bytes))):
            damaged[position] = int(rng.integers(0, 256))
        variants.append(bytes(damaged))
    return variants


def assert_typed_error_or_valid_image(data: bytes) -> None:
    """Reading ``data`` either raises a PneumoError or gives float32 pixels in [0, 1]; nothing else."""
    from pneumo.errors import PneumoError
    from pneumo.io import read_xray

    try:
        xray = read_xray(data)
    except PneumoError:
        return
    assert xray.pixels.dtype == np.float32 and 0 <= xray.pixels.min() and xray.pixels.max() <= 1
