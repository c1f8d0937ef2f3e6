"""Typed errors raised by pneumo's library code.

Only the CLI and the API turn these into exit codes and HTTP statuses; every message should tell the user
what is wrong and, where possible, what to do about it.
"""

from __future__ import annotations


class PneumoError(Exception):
    """Base class of every error pneumo raises on purpose."""

    #: short machine-readable code, used by the API's JSON error bodies
    code: str = "pneumo_error"


class InvalidImageError(PneumoError):
    """The input is not a readable image: empty, not an image format, truncated or corrupt."""

    code = "invalid_image"


class UnsupportedImageError(PneumoError):
    """A readable file whose content pneumo does not support (e.g. an unknown photometric interpretation)."""

    code = "unsupported_image"


class UnsupportedTransferSyntaxError(UnsupportedImageError):
    """A DICOM transfer syntax no installed decoder can read."""

    code = "unsupported_transfer_syntax"


class MissingPixelDataError(InvalidImageError):
    """A DICOM file without pixel data (e.g. a structured report or a header-only file)."""

    code = "missing_pixel_data"


class ImageTooLargeError(PneumoError):
    """Image dimensions (or upload size) beyond the configured limit: a guard against decompression bombs."""

    code = "image_too_large"


class NotChestRadiographError(PneumoError):
    """The image is not a chest radiograph (e.g. CT or MR modality, or a non-chest body part)."""

    code = "not_chest_radiograph"


class DataLayoutError(PneumoError):
    """A dataset folder or label file does not follow the expected (Kaggle RSNA or NIH) layout."""

    code = "data_layout"


class CheckpointError(PneumoError):
    """A checkpoint is missing, corrupt, of another model family, or fails its integrity check."""

    code = "checkpoint"


class ConfigError(PneumoError):
    """A configuration value is unknown or of the wrong type."""

    code = "config"


class InvalidBoxesError(PneumoError, ValueError):
    """A box array has the wrong shape, non-finite values or negative width/height (x2 < x1 or y2 < y1)."""

    code = "invalid_boxes"


class MetricInputError(PneumoError, ValueError):
    """Inputs to a metric are malformed: lengths differ, scores are not finite, labels are not 0/1."""

    code = "metric_input"


class DuplicateNameError(PneumoError, ValueError):
    """A registry (model families, ...) already holds this name: pick another or unregister the old one."""

    code = "duplicate_name"


class UnknownModelError(ConfigError):
    """A model name that is neither a shipped model (``unet``, ``maskrcnn``, ``chexnet``, ``ensemble``) nor a
    checkpoint path; the message lists the available models."""

    code = "unknown_model"


class TrainingError(PneumoError):
    """Training cannot go on: the loss became NaN/infinite (lower the learning rate, check the data) or the
    distributed processes disagree."""

    code = "training"


class DicomOutputError(PneumoError):
    """A DICOM result (SR, secondary capture, presentation state) cannot be built: the source is not a DICOM
    image with the identifiers a result must reference (SOP Instance UID, Study Instance UID, SOP Class UID)."""

    code = "dicom_output"


class DicomNetworkError(PneumoError):
    """A DICOM network peer (PACS, DICOMweb server) cannot be reached or refused a request."""

    code = "dicom_network"


class StoreError(PneumoError):
    """The result database or its image folder cannot be used (unreachable, corrupt, a referenced file gone)."""

    code = "store"


class RecordNotFoundError(StoreError):
    """No stored result, user or review with this id or name."""

    code = "not_found"


class ConflictError(StoreError):
    """The record already exists (e.g. a user name that is taken)."""

    code = "conflict"


class InvalidReviewError(StoreError, ValueError):
    """A review that cannot be recorded: unknown decision, boxes missing for a correction or outside the image."""

    code = "invalid_review"


class AuthenticationError(PneumoError):
    """Missing, unknown, wrong or disabled API key."""

    code = "unauthorized"


class PermissionDeniedError(PneumoError):
    """The user is known but their role does not allow this action."""

    code = "forbidden"


class MissingExtraError(ConfigError):
    """A command needs an optional dependency group that is not installed (e.g. torch, in the ``train`` extra:
    training, export and the torch backend); serving ONNX exports does not need it."""

    code = "missing_extra"
