"""Finding input images and decoding them ahead of the model (used by ``pneumo predict`` and ``evaluate``).

``discover_inputs``: files and folders -> the image files to read. In folders (searched recursively, sorted,
hidden entries skipped) a file is taken when its suffix is ``.dcm``, ``.dicom``, ``.png``, ``.jpg`` or ``.jpeg``
(any case), or when it has no suffix and its first bytes say DICOM. A file named explicitly is always taken
(reading it tells whether it is an image).

``prefetch``: decodes upcoming files in a thread pool while the caller runs the model on earlier ones, yielding
results in input order. Decoding (pydicom / Pillow / the JPEG codecs) largely runs in C, so threads overlap it
with inference without copying pixels between processes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

IMAGE_SUFFIXES = frozenset({".dcm", ".dicom", ".png", ".jpg", ".jpeg"})
_SNIFF_BYTES = 512

T = TypeVar("T")


@dataclass(frozen=True)
class InputProblem:
    """An input that could not be used: the path as the user gave it (or found under their folder) and why."""

    path: str
    reason: str


def _sniffs_as_dicom(path: Path) -> bool:
    from pneumo.io.sniff import sniff_format

    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return False
    return sniff_format(head) == "dicom"


def _wanted(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    return suffix == "" and _sniffs_as_dicom(path)


def discover_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[InputProblem]]:
    """-> (image files in the order given, folders expanded in sorted order; problems: missing paths, empty
    folders). A file reached twice is listed once."""
    files: list[Path] = []
    problems: list[InputProblem] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [
                p for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts) and _wanted(p)
            ]
            if not found:
                problems.append(InputProblem(str(item), "folder holds no DICOM/PNG/JPEG files"))
            for p in found:
                add(p)
        elif path.is_file():
            add(path)
        else:
            problems.append(InputProblem(str(item), "no such file or folder"))
    return files, problems


class prefetch(Generic[T]):  # noqa: N801 - used like a function
    """Iterate ``(item, result, error)`` over ``items`` in order, computing ``fn(item)`` up to ``ahead`` items
    in advance on ``workers`` threads (``workers=0``: inline, no thread). ``error`` is the exception ``fn``
    raised (``result`` None) for the exception types in ``catch``; others propagate. Use as a context
    manager (or exhaust it) so the pool is shut down."""

    def __init__(self, fn: Callable[[Path], T], items: Iterable[Path], workers: int = 1, ahead: int = 8,
                 catch: tuple[type[BaseException], ...] = (Exception,)) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self._fn, self._items, self._catch = fn, iter(items), catch
        self._ahead = max(1, ahead)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pneumo-decode") if workers > 0 else None

    def _call(self, item: Path) -> tuple[T | None, BaseException | None]:
        try:
            return self._fn(item), None
        except self._catch as error:  # reported by the caller, item by item
            return None, error

    def __iter__(self) -> Iterator[tuple[Path, T | None, BaseException | None]]:
        if self._pool is None:
            for item in self._items:
                yield (item, *self._call(item))
            return
        queue: collections.deque[tuple[Path, Future]] = collections.deque()
        try:
            for item in self._items:
                queue.append((item, self._pool.submit(self._call, item)))
                if len(queue) >= self._ahead:
                    head, future = queue.popleft()
                    yield (head, *future.result())
            while queue:
                head, future = queue.popleft()
                yield (head, *future.result())
        finally:
            for _, future in queue:
                future.cancel()
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "prefetch[T]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
