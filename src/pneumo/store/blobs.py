"""Content-addressed files on disk: ``<root>/<sha[:2]>/<sha><suffix>``, written atomically, verified on read.

The same bytes always land at the same path, so writing twice is harmless and a file left by a crash before
its database row committed is merely an orphan.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from pneumo.errors import StoreError
from pneumo.files import atomic_write


class BlobStore:
    """Put/get bytes by their sha256. PNG images (``.png``) and float32 arrays (``.npy``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha: str, suffix: str) -> Path:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise StoreError("a blob id must be 64 lower-case hex digits")
        return self.root / sha[:2] / f"{sha}{suffix}"

    def put(self, data: bytes, suffix: str) -> str:
        """Store ``data`` (fsynced, atomic) and return its sha256 hex."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha, suffix)
        if not path.exists():
            with atomic_write(path, "wb") as handle:
                handle.write(data)
        return sha

    def get(self, sha: str, suffix: str) -> bytes:
        """The stored bytes; ``StoreError`` if the file is missing or its content does not match its name."""
        path = self.path(sha, suffix)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise StoreError(f"stored file {sha[:12]}{suffix} is missing ({type(error).__name__})") from None
        if hashlib.sha256(data).hexdigest() != sha:
            raise StoreError(f"stored file {sha[:12]}{suffix} is corrupt (its hash does not match)")
        return data

    def exists(self, sha: str, suffix: str) -> bool:
        return self.path(sha, suffix).is_file()

    def put_array(self, array: np.ndarray) -> str:
        """A float32 array as ``.npy`` (exact round trip)."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
        return self.put(buffer.getvalue(), ".npy")

    def get_array(self, sha: str) -> np.ndarray:
        return np.load(io.BytesIO(self.get(sha, ".npy")), allow_pickle=False)
