"""Structural checks of a DICOM data set made while pydicom parses it, so a file whose elements cannot be
what they claim is refused in milliseconds (a 60 MiB preamble followed by zeros parses as millions of empty
(0000,0000) elements: tens of seconds in pydicom alone)."""

from __future__ import annotations

import io
from typing import Any

#: top-level data elements beyond which a "header" is refused (real files hold a few hundred)
MAX_TOP_LEVEL_ELEMENTS = 20_000
_PIXEL_DATA_TAG = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF


#: out-of-order top-level tags tolerated (with a warning) before the file is refused as garbage
MAX_DISORDERED = 8


class StructureGuard:
    """``stop_when`` callback for pydicom's parser: stops at the first top-level element that cannot be
    what it claims — a repeated tag, more than ``MAX_DISORDERED`` tags below their predecessor (DICOM requires
    ascending tags; garbage breaks the order at once), more than ``MAX_TOP_LEVEL_ELEMENTS`` elements — and
    records a PixelData whose length field runs past the end of the file. A few out-of-order tags (a sloppy
    writer) are tolerated and reported in ``disordered``. Costs microseconds per element."""

    def __init__(self, fp: io.BytesIO, size: int) -> None:
        self.fp, self.size = fp, size
        self.previous = -1
        self.count = 0
        self.disordered = 0
        self.problem: str | None = None
        self.pixel_overrun: tuple[int, int] | None = None  # (claimed, present) bytes

    def __call__(self, tag: Any, vr: str | None, length: int) -> bool:
        value = int(tag)
        self.count += 1
        if value <= self.previous:
            self.disordered += 1
            if value == self.previous or self.disordered > MAX_DISORDERED:
                self.problem = (
                    f"data element ({value >> 16:04X},{value & 0xFFFF:04X}) at byte {self.fp.tell():,} "
                    f"{'repeats' if value == self.previous else 'does not follow'} "
                    f"({self.previous >> 16:04X},{self.previous & 0xFFFF:04X}) in tag order"
                )
                return True
        if self.count > MAX_TOP_LEVEL_ELEMENTS:
            self.problem = f"more than {MAX_TOP_LEVEL_ELEMENTS:,} top-level data elements"
            return True
        self.previous = value
        if value == _PIXEL_DATA_TAG and length != _UNDEFINED:
            present = self.size - self.fp.tell()
            if length > present:
                self.pixel_overrun = (int(length), int(present))
        return False


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}


def command_group_problem(data: bytes) -> str | None:
    """A reason to refuse when the data set (after the preamble and the group 0002 file meta) starts with a
    command-group (0000,xxxx) element — never valid in a file, and what a run of zeros parses as; pydicom
    reads such elements before any ``stop_when`` callback sees them. None when the start looks sound."""
    import struct

    offset = 132 if data[128:132] == b"DICM" else (4 if data.startswith(b"DICM") else 0)
    for _ in range(1000):  # file meta: explicit VR little endian, a few elements
        if offset + 8 > len(data):
            return None
        group = struct.unpack_from("<H", data, offset)[0]
        if group != 0x0002:
            break
        vr = data[offset + 4:offset + 6]
        if vr in _LONG_VRS:
            if offset + 12 > len(data):
                return None
            offset += 12 + struct.unpack_from("<I", data, offset + 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", data, offset + 6)[0]
    if offset + 8 <= len(data) and data[offset:offset + 2] == b"\0\0":
        window = data[offset:offset + 4096]
        zeros = len(window) - len(window.lstrip(b"\0"))
        what = (f"{'at least ' if zeros == 4096 else ''}{zeros:,} zero bytes" if zeros >= 16
                else "a command-group (0000,xxxx) element")
        return f"the data set at byte {offset:,} starts with {what}, which no DICOM file holds"
    return None
