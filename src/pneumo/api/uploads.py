"""Reading an upload with a hard size limit.

The limit is checked twice: on the declared ``Content-Length`` (refused before any byte is read) and on the
bytes actually received (a client that lies about, or omits, its length is cut off at the limit). The body
is either ``multipart/form-data`` with a ``file`` field, or the raw file with an image/DICOM content type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import PurePath

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from pneumo.api.errors import ApiError
from pneumo.io.sniff import sniff_format

FIELD = "file"
RAW_TYPES = ("application/dicom", "image/png", "image/jpeg", "application/octet-stream")

#: magic numbers of formats people upload by mistake: answered 415 rather than "corrupt"
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "GIF"), (b"%PDF", "PDF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"),
    (b"PK\x03\x04", "ZIP"), (b"\x1f\x8b", "gzip"), (b"RIFF", "RIFF/WebP"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
)


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None  # as the client named it (may hold a patient id: never log it)

    @property
    def stem(self) -> str | None:
        if not self.filename:
            return None
        return PurePath(self.filename.replace("\\", "/")).stem or None


def too_large(limit: int) -> ApiError:
    return ApiError(413, "upload_too_large", f"upload above the limit of {limit / 1048576:.4g} MiB")


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        yield chunk


async def read_upload(request: Request, limit: int) -> Upload:
    """The uploaded file's bytes, or ``ApiError`` 400/413/415."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if declared_bytes > limit:
            raise too_large(limit)
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    body = _limited(request.stream(), limit)
    if media_type == "multipart/form-data":
        return await _read_multipart(request, body)
    if media_type in RAW_TYPES:
        data = b"".join([chunk async for chunk in body])
        return Upload(check_format(data), None)
    raise ApiError(
        415, "unsupported_media_type",
        f"send multipart/form-data with a '{FIELD}' field (or a raw body of type {', '.join(RAW_TYPES)})",
    )


async def _read_multipart(request: Request, body: AsyncIterator[bytes]) -> Upload:
    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise ApiError(400, "bad_request", f"malformed multipart body: {error.message}") from None
    try:
        item = form.get(FIELD)
        if not isinstance(item, UploadFile):
            raise ApiError(400, "bad_request", f"no file in the multipart field '{FIELD}'")
        data = await item.read()
        return Upload(check_format(data), item.filename)
    finally:
        await form.close()


def check_format(data: bytes) -> bytes:
    """Refuse an empty body (400) and recognisable non-radiograph formats (415); pass everything else on
    to the image reader, which decides between readable and corrupt."""
    if not data:
        raise ApiError(400, "invalid_image", "the uploaded file is empty")
    if sniff_format(data) is None:
        for magic, name in _OTHER_FORMATS:
            if data.startswith(magic):
                raise ApiError(415, "unsupported_media_type", f"{name} files are not supported; send DICOM, PNG or JPEG")
    return data
