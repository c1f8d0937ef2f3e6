"""DICOM bytes -> XRay with pydicom (every transfer syntax pydicom has a decoder for).

Order of work: inflate guard (deflated syntax) -> header parse -> pixel-data presence -> chest check ->
header checks (size limit, photometric, bits) -> codestream dimension check (compressed syntaxes) ->
decode one frame -> intensity policy (``pneumo.io.intensity``). Every failure is a typed pneumo error.
"""

from __future__ import annotations

import io
import math
import zlib
from typing import Any

import numpy as np

from pneumo.errors import (
    ImageTooLargeError,
    InvalidImageError,
    MissingPixelDataError,
    UnsupportedImageError,
    UnsupportedTransferSyntaxError,
)
from pneumo.io import intensity
from pneumo.io.budget import (
    DEFAULT_DECODE_BYTES,
    DEFAULT_WORKING_PIXELS,
    check_decode_budget,
    reduce_stored,
    reduction_factor,
)
from pneumo.io.checks import check_chest_radiograph, check_pixel_limit
from pneumo.io.codestream import codestream_size, jpeg_structure_problem
from pneumo.io.dicom_structure import StructureGuard, command_group_problem
from pneumo.types import XRay

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
#: colour interpretations pydicom's decoders return as RGB (converted to luminance with a warning)
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
#: decoder plugin tried first per transfer syntax (faster); the others remain the fallback
PREFERRED_PLUGIN = {"1.2.840.10008.1.2.4.50": "pillow"}
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD")
_DEFLATED = "1.2.840.10008.1.2.1.99"
#: transfer syntaxes whose frames are JPEG (False) or JPEG-LS (True) streams: structure-checked before decoding
_JPEG_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": False,
    "1.2.840.10008.1.2.4.51": False,
    "1.2.840.10008.1.2.4.57": False,
    "1.2.840.10008.1.2.4.70": False,
    "1.2.840.10008.1.2.4.80": True,
    "1.2.840.10008.1.2.4.81": True,
}


def read_dicom(data: bytes, *, max_pixels: int, frame: int = 0, check_chest: bool = True,
               working_pixels: int | None = DEFAULT_WORKING_PIXELS, decode_bytes: int = DEFAULT_DECODE_BYTES) -> XRay:
    """Decode a DICOM file held in ``data`` (with or without the 128-byte preamble) to an XRay.

    ``frame`` selects the frame of a multi-frame object (0-based; a warning says which was used). The data
    elements are structure-checked while parsing (ascending tags, PixelData within the file: see
    ``StructureGuard``); ``decode_bytes`` bounds the decoded frame (from the header, before decoding) and
    frames above ``working_pixels`` are reduced right after decoding (``XRay.full_size`` keeps the size).
    Raises InvalidImageError, MissingPixelDataError, UnsupportedImageError, UnsupportedTransferSyntaxError,
    ImageTooLargeError or NotChestRadiographError.
    """
    import pydicom  # lazy: importing pneumo.io stays cheap

    _guard_deflated(data, max_pixels)
    warnings: list[str] = []
    ds, pixel_overrun, disordered = _parse(data)
    if disordered:
        warnings.append(f"{disordered} DICOM data element(s) out of tag order (a non-conformant writer); read anyway")
    transfer_syntax = _transfer_syntax(ds, warnings)

    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnsupportedImageError("DICOM has float pixel data (parametric map): not a radiograph pneumo can read")
        sop_class = _text(_get(ds, "SOPClassUID"))
        raise MissingPixelDataError(
            "DICOM file has no pixel data"
            + (f" (SOP class {pydicom.uid.UID(sop_class).name})" if sop_class else "")
            + ": send the image object, not a report or header-only file"
        )

    modality = _text(_get(ds, "Modality"))
    body_part = _text(_get(ds, "BodyPartExamined"))
    if check_chest:
        check_chest_radiograph(modality, body_part)

    rows, columns = _positive_int(ds, "Rows"), _positive_int(ds, "Columns")
    check_pixel_limit(rows, columns, max_pixels, "DICOM image")
    n_frames = _number_of_frames(ds)
    if not 0 <= frame < n_frames:
        raise InvalidImageError(f"frame {frame} requested, but the DICOM has {n_frames} frame(s) (0-based index)")
    photometric, samples = _photometric(ds, warnings)
    bits_allocated = _int(ds, "BitsAllocated", None)
    if bits_allocated not in (1, 8, 16, 32):
        raise InvalidImageError(f"BitsAllocated is {bits_allocated}; expected 1, 8, 16 or 32")
    bits_stored = _int(ds, "BitsStored", None)
    if bits_stored is None:
        bits_stored = bits_allocated
        warnings.append(f"BitsStored missing; assumed BitsAllocated ({bits_allocated})")
    if not 1 <= bits_stored <= bits_allocated:
        raise InvalidImageError(f"BitsStored {bits_stored} is outside 1..BitsAllocated ({bits_allocated})")
    signed = _int(ds, "PixelRepresentation", 0) == 1
    frame_bytes = rows * columns * samples * ((bits_allocated + 7) // 8)
    check_decode_budget(frame_bytes * (2 if samples == 3 else 1), decode_bytes, f"DICOM frame {columns}x{rows}")

    decoder = _decoder(transfer_syntax)
    if decoder.is_encapsulated:
        _check_codestream(ds, frame, n_frames, rows, columns, max_pixels, str(transfer_syntax))
    elif pixel_overrun is not None:
        claimed, present = pixel_overrun
        needed = frame_bytes * n_frames if bits_allocated != 1 else -(-rows * columns * n_frames // 8)
        if present < needed:
            raise InvalidImageError(
                f"DICOM PixelData claims {claimed:,} bytes but the file holds only {present:,}, fewer than the "
                f"{needed:,} its header needs: the file is truncated or corrupt"
            )
        warnings.append(
            f"DICOM PixelData length field claims {claimed:,} bytes but the file holds {present:,}: the header is "
            "corrupt; the image was decoded from the bytes present - check it against the original"
        )
    stored = _decode(decoder, ds, frame, transfer_syntax)
    expected = (rows, columns) if samples == 1 else (rows, columns, 3)
    if stored.shape != expected:
        raise InvalidImageError(f"decoded pixel data has shape {stored.shape}, header says {expected}")
    factor = reduction_factor(rows, columns, working_pixels)
    if factor > 1:
        stored = reduce_stored(stored, factor)
        warnings.append(f"large image ({columns}x{rows}) reduced to {stored.shape[1]}x{stored.shape[0]} on read "
                        "(box average); boxes are given in the original pixels")

    if stored.ndim == 3:
        pixels = _colour_to_unit(stored, bits_stored, photometric, warnings)
    else:
        pixels = _monochrome_to_unit(stored, ds, bits_stored, signed, photometric, warnings)

    if n_frames > 1:
        warnings.append(f"multi-frame DICOM: frame {frame} (0-based) of {n_frames} frames was used")
    view = _text(_get(ds, "ViewPosition"))
    if view and view.upper() in LATERAL_VIEWS:
        warnings.append(f"lateral view ({view}): pneumo's models are trained on frontal (PA/AP) radiographs")
    return XRay(
        pixels=pixels,
        source_format="dicom",
        photometric_interpretation=photometric,
        bits_stored=bits_stored,
        pixel_spacing_mm=_pixel_spacing(ds, warnings),
        modality=modality,
        body_part=body_part,
        view_position=view,
        patient_id=_text(_get(ds, "PatientID")),
        study_uid=_text(_get(ds, "StudyInstanceUID")),
        series_uid=_text(_get(ds, "SeriesInstanceUID")),
        sop_uid=_text(_get(ds, "SOPInstanceUID")),
        transfer_syntax=str(transfer_syntax),
        number_of_frames=n_frames,
        warnings=tuple(warnings),
        full_size=(rows, columns) if factor > 1 else None,
    )


# --------------------------------------------------------------------------------------------- parsing
def _parse(data: bytes) -> tuple[Any, tuple[int, int] | None, int]:
    """-> (pydicom data set, (claimed, present) PixelData bytes when its length runs past the file else None,
    number of top-level tags out of order)."""
    import pydicom
    from pydicom.filereader import read_partial

    problem = command_group_problem(data)
    if problem:
        raise InvalidImageError(f"not a valid DICOM data set: {problem} (file corrupt or not DICOM)")
    fp = io.BytesIO(data)
    guard = StructureGuard(fp, len(data))
    try:
        ds = read_partial(fp, stop_when=guard, force=True)
    except Exception as error:  # pydicom raises many types (InvalidDicomError, EOFError, struct.error, ...)
        raise InvalidImageError(f"cannot parse DICOM header: file truncated or corrupt ({_short(error)})") from error
    if guard.problem:
        raise InvalidImageError(f"not a valid DICOM data set: {guard.problem} (file corrupt or not DICOM)")
    ds = _parse_checked(pydicom, data, ds)
    overrun = guard.pixel_overrun
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:
        overrun = None  # the data set was inflated from a compressed stream: its positions are not the file's
    return ds, overrun, guard.disordered


def _parse_checked(pydicom: Any, data: bytes, ds: Any) -> Any:
    if len(ds) == 0:
        # pydicom drops every element when the data end inside one (e.g. a file cut short in transfer)
        try:
            header = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        except Exception:
            header = ()
        if len(header):
            raise InvalidImageError(
                "DICOM file is truncated: the pixel data end before the file does (cut short in transfer?)"
            )
        raise InvalidImageError("DICOM file holds no readable data elements (truncated, corrupt or not DICOM)")
    return ds


def _guard_deflated(data: bytes, max_pixels: int) -> None:
    """Refuse a Deflated Explicit VR file whose data set inflates beyond ``max_pixels * 4`` + 16 MiB bytes."""
    if _DEFLATED.encode() not in data[:8192]:
        return
    try:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filereader import _read_file_meta_info, read_preamble

        fp = DicomBytesIO(data)
        read_preamble(fp, True)
        meta = _read_file_meta_info(fp)
        if meta.get("TransferSyntaxUID") != _DEFLATED:
            return
        start = fp.tell()
    except Exception:  # the real parse reports malformed headers
        return
    limit = max_pixels * 4 + (16 << 20)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, pending = 0, data[start:]
    try:
        while pending and total <= limit:
            total += len(inflater.decompress(pending, 1 << 22))
            pending = inflater.unconsumed_tail
    except zlib.error as error:
        raise InvalidImageError(f"deflated DICOM data set is corrupt ({_short(error)})") from error
    if total > limit:
        raise ImageTooLargeError(
            f"deflated DICOM data set inflates beyond {limit:,} bytes (limit derived from max_pixels={max_pixels:,})"
        )


def _transfer_syntax(ds: Any, warnings: list[str]) -> Any:
    """The file's transfer syntax UID; inferred from the encoding (and set on ds) when the meta lacks it."""
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid:
        return UID(str(uid).strip())
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        implicit, little = True, True
    uid = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    ds.file_meta.TransferSyntaxUID = uid
    warnings.append(f"no transfer syntax in the file meta; assumed {uid.name} from the encoding")
    return uid


def _decoder(uid: Any) -> Any:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError) as error:
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {uid.name} ({uid}) is not supported: no pixel data decoder exists for it; "
            "convert the file (e.g. dcmdjpeg/gdcmconv to Explicit VR Little Endian)"
        ) from error
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {uid.name} ({uid}) needs a decoder that is not installed ({missing})"
        )
    return decoder


def _check_codestream(
    ds: Any, frame: int, n_frames: int, rows: int, columns: int, max_pixels: int, uid: str
) -> None:
    """Before decoding: the frame's JPEG / JPEG-LS / JPEG 2000 size must equal Rows x Columns (and fit the
    limit); JPEG / JPEG-LS frames must have a sound marker structure (see ``pneumo.io.codestream``)."""
    from pydicom.encaps import get_frame

    try:
        extended = None
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        data = get_frame(ds.PixelData, frame, extended_offsets=extended, number_of_frames=n_frames)
    except Exception as error:
        raise InvalidImageError(
            f"encapsulated pixel data is truncated or corrupt: cannot find frame {frame} ({_short(error)})"
        ) from error
    height, width = codestream_size(data) or (rows, columns)
    check_pixel_limit(height, width, max_pixels, "compressed frame")
    if (height, width) != (rows, columns):
        raise InvalidImageError(
            f"compressed frame is {width}x{height} pixels but the DICOM header says {columns}x{rows}: corrupt file"
        )
    if uid in _JPEG_SYNTAXES:
        problem = jpeg_structure_problem(data, jpeg_ls=_JPEG_SYNTAXES[uid])
        if problem:
            raise InvalidImageError(f"JPEG data of frame {frame} is corrupt ({problem})")


def _decode(decoder: Any, ds: Any, frame: int, uid: Any) -> np.ndarray:
    """Stored values of one frame: (rows, cols) or (rows, cols, 3) RGB; no modality/VOI applied."""
    plugin = PREFERRED_PLUGIN.get(str(uid), "")
    if plugin and plugin not in decoder.available_plugins:
        plugin = ""
    try:
        arr, _ = decoder.as_array(ds, index=frame, decoding_plugin=plugin, as_rgb=True)
    except Exception as first_error:
        if not plugin:
            raise _decode_error(first_error) from first_error
        try:  # the preferred plugin refused (e.g. 12-bit data): let pydicom try every plugin
            arr, _ = decoder.as_array(ds, index=frame, as_rgb=True)
        except Exception as error:
            raise _decode_error(error) from error
    return np.asarray(arr)


def _decode_error(error: Exception) -> InvalidImageError | UnsupportedTransferSyntaxError:
    text = _short(error)
    if "missing required dependencies" in text or "no plugins" in text.lower():
        return UnsupportedTransferSyntaxError(f"no installed decoder could read this pixel data ({text})")
    return InvalidImageError(f"pixel data cannot be decoded: truncated or corrupt ({text})")



# ------------------------------------------------------------------------------------------- intensity
def _monochrome_to_unit(
    stored: np.ndarray, ds: Any, bits_stored: int, signed: bool, photometric: str, warnings: list[str]
) -> np.ndarray:
    """Modality LUT -> VOI (if any) else bits-stored full scale -> MONOCHROME2 float32 in [0, 1]."""
    lo, hi = intensity.stored_range(bits_stored, signed)
    values, lo, hi = _modality(stored, ds, float(lo), float(hi), warnings)
    unit = _voi(values, ds, warnings)
    if unit is None:
        unit = intensity.full_scale(values, lo, hi)
        note = intensity.low_dynamic_range_warning(unit)
        if note:
            warnings.append(note)
    return intensity.to_monochrome2(unit, photometric)


def _modality(
    stored: np.ndarray, ds: Any, lo: float, hi: float, warnings: list[str]
) -> tuple[np.ndarray, float, float]:
    """Apply the modality transform; returns (values, new lo, new hi) of the possible output range."""
    if "ModalityLUTSequence" in ds:
        try:
            first, lut, out_bits = _lut(ds, ds.ModalityLUTSequence[0])
            return intensity.apply_lut(stored, first, lut), 0.0, float(2**out_bits - 1)
        except Exception as error:
            warnings.append(f"Modality LUT Sequence unusable and ignored ({_short(error)})")
            return stored, lo, hi
    slope = _float(ds, "RescaleSlope", 1.0)
    intercept = _float(ds, "RescaleIntercept", 0.0)
    if slope == 1.0 and intercept == 0.0:
        return stored, lo, hi
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0.0:
        warnings.append(f"invalid rescale slope/intercept ({slope}, {intercept}) ignored")
        return stored, lo, hi
    values = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return values, lo * slope + intercept, hi * slope + intercept


def _voi(values: np.ndarray, ds: Any, warnings: list[str]) -> np.ndarray | None:
    """Apply the first VOI LUT or window of the file, output in [0, 1]; None when the file has none usable."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        try:
            first, lut, out_bits = _lut(ds, ds.VOILUTSequence[0])
            top = float(2**out_bits - 1)
            if float(lut.max()) > top:  # the descriptor understates the output depth
                top = float(2 ** math.ceil(math.log2(float(lut.max()) + 1)) - 1)
            return np.clip(intensity.apply_lut(values, first, lut) / np.float32(top), 0.0, 1.0)
        except Exception as error:
            warnings.append(f"VOI LUT Sequence unusable and ignored ({_short(error)})")
    center, width = _first_value(ds, "WindowCenter"), _first_value(ds, "WindowWidth")
    if center is None or width is None:
        if (center is None) != (width is None):
            warnings.append("only one of WindowCenter/WindowWidth present; window ignored")
        return None
    function = (_text(_get(ds, "VOILUTFunction")) or "LINEAR").upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        warnings.append(f"unknown VOILUTFunction {function!r}; LINEAR used")
        function = "LINEAR"
    if not (math.isfinite(center) and intensity.valid_window(width, function)):
        warnings.append(f"invalid window (center {center}, width {width}) ignored; bit-depth scaling used")
        return None
    return intensity.window(values, center, width, function)


def _lut(ds: Any, item: Any) -> tuple[int, np.ndarray, int]:
    """(first mapped value, LUT entries as int array, output bits) of a Modality/VOI LUT item.

    Own implementation: pydicom 3.0's ``apply_voi`` indexes an 8-bit LUT with uint8 and wraps inputs > 255.
    """
    entries, first, out_bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    if first >= 32768 and _int(ds, "PixelRepresentation", 0) == 1:  # descriptor value stored as US
        first -= 65536
    element = item["LUTData"]
    if isinstance(element.value, (bytes, bytearray)):  # VR OW: raw 16-bit words
        little = ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2"
        lut = np.frombuffer(element.value, dtype="<u2" if little else ">u2")
    else:
        lut = np.asarray(element.value if isinstance(element.value, (list, tuple)) else [element.value], dtype=np.int64)
    if len(lut) < entries:
        raise ValueError(f"LUT has {len(lut)} entries, descriptor says {entries}")
    if not 1 <= out_bits <= 16:
        raise ValueError(f"LUT output depth {out_bits} bits")
    return first, lut[:entries].astype(np.int64), out_bits


def _colour_to_unit(rgb: np.ndarray, bits_stored: int, photometric: str, warnings: list[str]) -> np.ndarray:
    lo, hi = intensity.stored_range(bits_stored, False)
    unit = intensity.full_scale(intensity.luminance(rgb), lo, hi)
    warnings.append(f"colour DICOM ({photometric}) converted to grayscale luminance (BT.601)")
    return intensity.to_monochrome2(unit, "MONOCHROME2")


# -------------------------------------------------------------------------------------- header helpers
def _photometric(ds: Any, warnings: list[str]) -> tuple[str, int]:
    samples = _int(ds, "SamplesPerPixel", 1)
    photometric = (_text(_get(ds, "PhotometricInterpretation")) or "").upper()
    if not photometric:
        if samples != 1:
            raise InvalidImageError(f"PhotometricInterpretation missing with SamplesPerPixel {samples}")
        warnings.append("PhotometricInterpretation missing; MONOCHROME2 assumed")
        photometric = "MONOCHROME2"
    if photometric in MONOCHROME:
        if samples != 1:
            raise InvalidImageError(f"{photometric} with SamplesPerPixel {samples} (expected 1)")
        return photometric, 1
    if photometric in COLOUR:
        if samples != 3:
            raise InvalidImageError(f"{photometric} with SamplesPerPixel {samples} (expected 3)")
        return photometric, 3
    raise UnsupportedImageError(
        f"photometric interpretation {photometric!r} is not supported (pneumo reads MONOCHROME1/2 and RGB/YBR "
        "colour); convert the image to MONOCHROME2"
    )


def _number_of_frames(ds: Any) -> int:
    value = _get(ds, "NumberOfFrames")
    if value in (None, ""):
        return 1
    try:
        n = int(value)
    except (TypeError, ValueError) as error:
        raise InvalidImageError(f"NumberOfFrames {value!r} is not a number") from error
    if n < 1:
        raise InvalidImageError(f"NumberOfFrames is {n}")
    return n


def _pixel_spacing(ds: Any, warnings: list[str]) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, else ImagerPixelSpacing, else the functional groups."""
    candidates = [("PixelSpacing", _get(ds, "PixelSpacing")), ("ImagerPixelSpacing", _get(ds, "ImagerPixelSpacing"))]
    try:
        candidates.append(
            ("PixelMeasuresSequence", ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing)
        )
    except Exception:
        pass
    for name, value in candidates:
        if value is None or value == "":
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            warnings.append(f"{name} {value!r} unreadable; pixel spacing unknown")
            continue
        if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
            return row, col
        warnings.append(f"{name} ({row}, {col}) is not positive; ignored")
    return None


def _get(ds: Any, keyword: str) -> Any:
    """An element's value, or None when absent or unreadable (pydicom converts raw values lazily)."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("\x00").strip()
    return text or None


def _int(ds: Any, keyword: str, default: int | None) -> int | None:
    value = _get(ds, keyword)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise InvalidImageError(f"{keyword} {value!r} is not an integer") from error


def _positive_int(ds: Any, keyword: str) -> int:
    value = _int(ds, keyword, None)
    if value is None or value <= 0:
        raise InvalidImageError(
            f"DICOM {keyword} is {'missing' if value is None else value}; a positive image size is required"
        )
    return value


def _float(ds: Any, keyword: str, default: float) -> float:
    value = _get(ds, keyword)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _first_value(ds: Any, keyword: str) -> float | None:
    value = _get(ds, keyword)
    if value in (None, ""):
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:297] + "..."
