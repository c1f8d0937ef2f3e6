"""Image dimensions from a file's header, without decoding its pixels."""

from __future__ import annotations

from pathlib import Path


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) in pixels from a DICOM header (Rows, Columns) or a PNG/JPEG header."""
    import pydicom
    from PIL import Image

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Rows), int(ds.Columns)
    except Exception:  # not DICOM (or no Rows/Columns): try a raster header
        with Image.open(path) as image:
            return image.height, image.width
