"""The one atomic write and the one to-JSON converter of the package.

``atomic_path`` is the mechanism (a temporary sibling, fsynced and ``os.replace``d onto the target only when
the block finishes); ``atomic_write`` opens a file on it, ``atomic_write_bytes`` writes bytes through it.
Readers never see half a file, and an error leaves an existing target untouched and no temporary behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "to_jsonable"]

DEFAULT_PERMISSIONS = 0o644


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, permissions: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; whatever the block writes there replaces ``path`` at its end.

    On normal exit the temporary file is fsynced, given ``permissions`` (default: those of the file it
    replaces, else 0o644) and ``os.replace``d onto ``path``; on an exception it is removed and an existing
    ``path`` is left as it was. The parent folder is created if missing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # the block may have replaced the file: sync what is there now
            os.fsync(handle.fileno())
        if permissions is None:
            permissions = target.stat().st_mode & 0o7777 if target.exists() else DEFAULT_PERMISSIONS
        os.chmod(tmp, permissions)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", *,
                 permissions: int | None = None) -> Iterator[IO]:
    """Write ``path`` all-or-nothing through an open file: ``mode`` ``"w"`` (text, ``encoding``, no newline
    translation) or ``"wb"``. See ``atomic_path`` for what happens on success and on error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": encoding, "newline": ""}
    with atomic_path(path, permissions=permissions) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (``atomic_write`` in binary mode); returns the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def to_jsonable(value: Any) -> Any:
    """A strict-JSON copy of ``value``: mappings -> dicts with str keys; lists, tuples, sets and numpy arrays ->
    lists; numpy scalars -> Python; NaN and infinities -> None; ``Path`` -> str; objects with a ``to_dict()`` (``Thresholds``, specs) -> its result; other dataclass
    instances -> dicts;
    anything else that JSON cannot hold -> ``str(value)``. ``json.dumps(..., allow_nan=False)`` accepts the result."""
    import numpy as np

    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if callable(getattr(value, "to_dict", None)) and not isinstance(value, type):  # its own stored form
        return to_jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    return str(value)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
