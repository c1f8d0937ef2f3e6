"""Recognise DICOM / PNG / JPEG from their first bytes (magic numbers), never from file names."""

from __future__ import annotations

import struct

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
#: tag groups a DICOM data set without the 128-byte preamble commonly starts with
_FIRST_GROUPS = {0x0002, 0x0008}
_VR_CODES = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
    b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
    b"UR", b"US", b"UT", b"UV",
}


def sniff_format(data: bytes) -> str | None:
    """``"dicom"``, ``"png"``, ``"jpeg"`` or None for the first bytes of a file.

    DICOM: the ``DICM`` prefix at offset 128 (Part 10 file), or a bare data set (no preamble) whose first
    element is in group 0002 or 0008, little or big endian, explicit VR (a valid VR code at offset 4) or
    implicit VR (a plausible 32-bit length).
    """
    if data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(b"DICM"):  # preamble stripped but prefix kept
        return "dicom"
    if len(data) >= 8:
        for endian in "<>":
            group, element = struct.unpack(endian + "HH", data[:4])
            if group not in _FIRST_GROUPS:
                continue
            if data[4:6] in _VR_CODES:
                return "dicom"
            (length,) = struct.unpack(endian + "I", data[4:8])
            if endian == "<" and (length == 0xFFFFFFFF or length <= 1 << 16) and element < 0x1000:
                return "dicom"
    return None
