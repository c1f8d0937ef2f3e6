"""Policy checks shared by the readers: image-size limit and the chest-radiograph check.

See docs/decisions/0003-chest-radiograph-check.md.
"""

from __future__ import annotations

from pneumo.errors import ImageTooLargeError, NotChestRadiographError

#: projection radiography (and "other"/unspecified) modalities a chest radiograph can carry
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT"})
#: BodyPartExamined values (upper case, and common non-English spellings) accepted as chest
CHEST_BODY_PARTS = frozenset(
    {"CHEST", "THORAX", "LUNG", "LUNGS", "CHEST_LAT", "PORT CHEST", "TORAX", "TORACE", "BRUST", "POITRINE",
     "THORAX PA", "CHEST PA", "CHEST AP", "CHESTPA", "CHESTAP", "CHEST_PA", "CHEST_AP", "RIBS"}
)
_CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "TORAX", "THORAC")


def check_pixel_limit(rows: int, columns: int, max_pixels: int, what: str = "image") -> None:
    """Raise ImageTooLargeError when ``rows * columns`` exceeds ``max_pixels``."""
    if rows * columns > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {columns}x{rows} = {rows * columns:,} pixels, above the limit of {max_pixels:,} "
            "(a guard against decompression bombs); pass a larger max_pixels if the file is trusted"
        )


def is_chest_body_part(body_part: str) -> bool:
    """True for CHEST/THORAX-like values (exact list, or containing a chest word)."""
    value = body_part.strip().upper()
    return value in CHEST_BODY_PARTS or any(word in value for word in _CHEST_WORDS)


def check_chest_radiograph(modality: str | None, body_part: str | None) -> None:
    """Raise NotChestRadiographError for a non-radiograph modality or a non-chest body part.

    Missing (None/empty) modality or body part is accepted: PNG/JPEG files and many DICOMs carry neither.
    """
    if modality and modality.strip().upper() not in RADIOGRAPH_MODALITIES:
        raise NotChestRadiographError(
            f"modality {modality.strip()!r} is not projection radiography (expected CR or DX): pneumo reads chest "
            "radiographs only; pass check_chest=False to read it anyway"
        )
    if body_part and body_part.strip() and not is_chest_body_part(body_part):
        raise NotChestRadiographError(
            f"BodyPartExamined is {body_part.strip()!r}, not CHEST: pneumo reads chest radiographs only; if the tag "
            "is wrong, pass check_chest=False to read it anyway"
        )
