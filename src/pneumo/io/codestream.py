"""Cheap checks on compressed image data, run before decoding it.

``codestream_size`` reads the frame size from a JPEG / JPEG-LS SOF or a JPEG 2000 SIZ marker, so a
decompression bomb is refused before any pixel is decoded. ``jpeg_structure_problem`` walks the JPEG marker
structure (segments, entropy-coded data, restart markers, EOI): truncated data and bytes damaged into stray
markers are caught here, because common JPEG decoders (libjpeg-turbo behind Pillow) only *warn* about them
and return a garbled image. JPEG has no checksum: damage inside entropy-coded data that keeps the marker
structure valid cannot be detected by any reader.
"""

from __future__ import annotations

import struct

#: start-of-frame markers (JPEG processes 0-15 except DHT/JPG/DAC) and JPEG-LS SOF55
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_SOS, _EOI, _SOI = 0xDA, 0xD9, 0xD8
#: markers that may legally follow entropy-coded data before EOI (multi-scan / progressive JPEG, DNL)
_BETWEEN_SCANS = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xDA, 0xF8, 0xFE} | set(range(0xE0, 0xF0)))


def codestream_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG/JPEG-LS SOF or a JPEG 2000 SIZ marker; None when absent or not stated."""
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:
                i += 2
                continue
            if marker in SOF_MARKERS:
                if i + 9 > len(data):
                    return None
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return (height, width) if height and width else None
            if marker == _SOS:  # a scan before any frame header
                return None
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        return None
    j = data.find(b"\xff\x4f\xff\x51", 0, 4096)  # J2K SOC + SIZ (bare codestream or inside a JP2 box)
    if j >= 0 and j + 24 <= len(data):
        xsiz, ysiz, x0, y0 = struct.unpack(">IIII", data[j + 8 : j + 24])
        if xsiz > x0 and ysiz > y0:
            return ysiz - y0, xsiz - x0
    return None


def jpeg_structure_problem(data: bytes, jpeg_ls: bool = False) -> str | None:
    """A short description of what is wrong with a JPEG (or JPEG-LS) stream's structure, or None if sound.

    Checks: SOI first; marker segments fit in the data; a frame header before the first scan; inside
    entropy-coded data 0xFF is followed only by a stuffed 0x00 (JPEG-LS: a byte < 0x80) or the next restart
    marker in sequence; data ends with EOI. Bytes after EOI (DICOM padding) are allowed.
    """
    n = len(data)
    if data[:2] != b"\xff\xd8":
        return "does not start with a JPEG SOI marker"
    i, seen_frame = 2, False
    while True:
        while i < n and data[i] == 0xFF and i + 1 < n and data[i + 1] == 0xFF:  # fill bytes
            i += 1
        if i + 2 > n:
            return "ends before its EOI marker (truncated)"
        if data[i] != 0xFF:
            return f"expected a marker at byte {i}, found 0x{data[i]:02X}"
        marker = data[i + 1]
        if marker == _EOI:
            return None if seen_frame else "ends before any image frame"
        if marker in (_SOI, 0x00, 0x01) or 0xD0 <= marker <= 0xD7:
            return f"unexpected marker 0xFF{marker:02X} at byte {i}"
        if i + 4 > n:
            return "ends inside a marker segment (truncated)"
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2 or i + 2 + length > n:
            return f"marker segment 0xFF{marker:02X} at byte {i} runs past the end of the data (truncated or corrupt)"
        if marker in SOF_MARKERS:
            seen_frame = True
        i += 2 + length
        if marker != _SOS:
            continue
        if not seen_frame:
            return "scan data before the frame header"
        i, problem = _skip_entropy_data(data, i, jpeg_ls)
        if problem:
            return problem


def _skip_entropy_data(data: bytes, i: int, jpeg_ls: bool) -> tuple[int, str | None]:
    """Walk entropy-coded data from ``i``; returns (offset of the marker that ends it, problem or None)."""
    n, expected_rst = len(data), 0
    while True:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= n:
            return n, "entropy-coded data ends without an EOI marker (truncated)"
        following = data[j + 1]
        if following == 0x00 or (jpeg_ls and following < 0x80):
            i = j + 2
            continue
        if 0xD0 <= following <= 0xD7:
            if following - 0xD0 != expected_rst:
                return j, f"restart marker RST{following - 0xD0} out of sequence at byte {j} (corrupt data)"
            expected_rst = (expected_rst + 1) % 8
            i = j + 2
            continue
        if following == 0xFF:  # fill bytes before a marker
            k = j
            while k + 1 < n and data[k + 1] == 0xFF:
                k += 1
            if k + 1 >= n:
                return n, "entropy-coded data ends without an EOI marker (truncated)"
            j, following = k, data[k + 1]
        if following == _EOI or following in _BETWEEN_SCANS:
            return j, None
        return j, f"invalid marker 0xFF{following:02X} inside entropy-coded data at byte {j} (corrupt data)"
