"""A disk cache of decoded, letterboxed images, so training epochs never decode a DICOM twice.

One cache = one folder ``ROOT/<name>-<size>px-<fingerprint[:16]>/`` holding

* ``images.npy``: uint8 ``(N, S, S)`` (``numpy.lib.format.open_memmap``; read back memory-mapped),
  image i = ``round(255 * Preprocessor(S)(read_xray(path).pixels)[0])``, records sorted by ``image_id``;
* ``meta.json``: format version, fingerprint, preprocessor settings, image ids, relative paths and one
  ``GeometryRecord`` per image (original size, scale, padding) to map boxes into the canvas.

Fingerprint = sha256 of the cache format version, the preprocessor settings and the sorted
(image_id, path relative to the images' common folder, size, mtime_ns) of every image: touching,
replacing, adding or removing an image, or changing the size, gives another folder (a rebuild).
Builds write into ``ROOT/.tmp-<host>-<pid>-<random>/`` and publish it with one atomic ``os.rename``; an
exception or Ctrl-C removes the temp folder, so a half-written cache is never visible. A stale cache of
the same image set (same ids, older content or settings) is removed after a successful build.

ROOT: the ``cache_dir`` argument, else ``$PNEUMO_CACHE_DIR`` (read at call time), else
``$XDG_CACHE_HOME/pneumo`` (default ``~/.cache/pneumo``). Never inside the data folder: data sets are
often read-only archives or shared between users.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pneumo.data.records import ImageRecord
from pneumo.errors import DataLayoutError
from pneumo.preprocess import GeometryRecord, Preprocessor

CACHE_FORMAT_VERSION = 1
ENV_CACHE_DIR = "PNEUMO_CACHE_DIR"
IMAGES_FILE = "images.npy"
META_FILE = "meta.json"

Decoder = Callable[[Path], np.ndarray]


def decode_pixels(path: Path) -> np.ndarray:
    """Default decoder: ``pneumo.io.read_xray(path).pixels`` (float32 (H, W) in [0, 1], MONOCHROME2)."""
    from pneumo.io import read_xray

    return read_xray(path).pixels


def default_cache_root(data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Where caches live: ``cache_dir`` > ``$PNEUMO_CACHE_DIR`` > ``$XDG_CACHE_HOME/pneumo`` > ``~/.cache/pneumo``.

    ``data_dir`` is accepted for call-site symmetry but never used as a location: pneumo does not write into
    data folders."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pneumo"


def fingerprint(records: Sequence[ImageRecord], preprocessor: Preprocessor) -> str:
    """Hex sha256 over format version, preprocessor settings and sorted (id, relative path, size, mtime_ns)."""
    _check_unique(records)
    base = _common_folder(records)
    entries = []
    for record in sorted(records, key=lambda r: r.image_id):
        try:
            stat = os.stat(record.path)
        except OSError as error:
            raise DataLayoutError(f"image file missing or unreadable: {error.strerror}") from error
        entries.append([record.image_id, os.path.relpath(record.path, base), stat.st_size, stat.st_mtime_ns])
    payload = json.dumps(
        {"version": CACHE_FORMAT_VERSION, "preprocessor": preprocessor.to_dict(), "files": entries},
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class ImageCache:
    """A built cache, opened read-only; the memory map opens lazily (and again after pickling)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        try:
            meta = json.loads((self.directory / META_FILE).read_text())
        except (OSError, ValueError) as error:
            raise DataLayoutError(f"not a pneumo image cache: {self.directory} ({error})") from error
        if meta.get("version") != CACHE_FORMAT_VERSION:
            raise DataLayoutError(f"cache {self.directory} has format {meta.get('version')}, need {CACHE_FORMAT_VERSION}")
        self.fingerprint: str = meta["fingerprint"]
        self.preprocessor = Preprocessor.from_dict(meta["preprocessor"])
        self.size: int = self.preprocessor.size
        self.image_ids: list[str] = list(meta["image_ids"])
        self.geometries: list[GeometryRecord] = [GeometryRecord(**g) for g in meta["geometries"]]
        self._index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def array(self) -> np.ndarray:
        """The uint8 (N, S, S) memory map."""
        if self._array is None:
            try:
                array = np.load(self.directory / IMAGES_FILE, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise DataLayoutError(f"cache {self.directory} has no readable {IMAGES_FILE}: {error}") from error
            if array.shape != (len(self), self.size, self.size) or array.dtype != np.uint8:
                raise DataLayoutError(f"cache {self.directory}: {IMAGES_FILE} does not match {META_FILE}; delete the folder")
            self._array = array
        return self._array

    def get_uint8(self, i: int) -> np.ndarray:
        """Image i as the stored read-only uint8 (S, S) view."""
        return self.array[self._check(i)]

    def get_image(self, i: int) -> np.ndarray:
        """Image i as a new float32 (S, S) array in [0, 1] (within 1/510 of direct preprocessing)."""
        return self.get_uint8(i).astype(np.float32) * np.float32(1.0 / 255.0)

    def geometry(self, i: int) -> GeometryRecord:
        """Original image <-> S x S canvas mapping of image i."""
        return self.geometries[self._check(i)]

    def index_of(self, image_id: str) -> int:
        """Position of ``image_id`` in the cache; ``DataLayoutError`` if it was not cached."""
        try:
            return self._index[image_id]
        except KeyError:
            raise DataLayoutError("an image is not in this cache; build the cache from these records") from None

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._index

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None  # each process / DataLoader worker maps the file itself
        return state

    def _check(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"cache index {i} out of range for {len(self)} images")
        return i


def cache_path(
    records: Sequence[ImageRecord],
    size: int,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> Path:
    """The folder the cache of these records at ``size`` px has (or would have)."""
    return _locate(records, Preprocessor(int(size)), data_dir, cache_dir, name)[0]


def _locate(
    records: Sequence[ImageRecord],
    preprocessor: Preprocessor,
    data_dir: str | Path | None,
    cache_dir: str | Path | None,
    name: str | None,
) -> tuple[Path, str]:
    data_dir = Path(data_dir) if data_dir is not None else _common_folder(records).parent
    root = default_cache_root(data_dir, cache_dir)
    digest = fingerprint(records, preprocessor)
    return root / f"{_cache_name(name, data_dir)}-{preprocessor.size}px-{digest[:16]}", digest


def ensure_cache(
    records: Sequence[ImageRecord],
    size: int = 256,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
    workers: int = 1,
    progress: bool = True,
    decode: Decoder = decode_pixels,
) -> ImageCache:
    """Open the up-to-date cache of ``records`` at ``size`` px, building it first if needed.

    data_dir: the data set folder (decides the default ROOT and the cache name; default: the folder
    above the images' common folder). workers: decoding processes (1 = in this process).
    decode: path -> float32 (H, W) in [0, 1] (default ``pneumo.io.read_xray``).
    """
    target = cache_path(records, size, data_dir, cache_dir, name)
    if (target / META_FILE).is_file():
        return ImageCache(target)
    return build_cache(records, size, data_dir, cache_dir, name, workers, progress, decode)


def build_cache(
    records: Sequence[ImageRecord],
    size: int = 256,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
    workers: int = 1,
    progress: bool = True,
    decode: Decoder = decode_pixels,
) -> ImageCache:
    """Decode + letterbox every record into a new cache folder (atomic; see the module docstring)."""
    if not records:
        raise DataLayoutError("no records to cache")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    preprocessor = Preprocessor(int(size))
    target, digest = _locate(records, preprocessor, data_dir, cache_dir, name)
    ordered = sorted(records, key=lambda r: r.image_id)
    base = _common_folder(ordered)
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_temp_folders(root)
    temp = root / f".tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    temp.mkdir()
    try:
        array = np.lib.format.open_memmap(
            temp / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=(len(ordered), preprocessor.size, preprocessor.size)
        )
        geometries: list[dict] = [{}] * len(ordered)
        jobs = [(i, r.path, preprocessor, decode) for i, r in enumerate(ordered)]
        for i, image, geometry in _run(jobs, workers, progress, f"caching {len(jobs)} images at {size}px"):
            array[i] = image
            geometries[i] = geometry.to_dict()
            if i % 1024 == 1023:
                array.flush()  # keep dirty mapped pages (resident memory) bounded on large builds
        array.flush()
        del array
        meta = {
            "version": CACHE_FORMAT_VERSION,
            "fingerprint": digest,
            "ids_hash": _ids_hash(ordered),
            "preprocessor": preprocessor.to_dict(),
            "image_ids": [r.image_id for r in ordered],
            "relative_paths": [os.path.relpath(r.path, base) for r in ordered],
            "geometries": geometries,
        }
        (temp / META_FILE).write_text(json.dumps(meta))
        try:
            os.rename(temp, target)
        except OSError:
            if not (target / META_FILE).is_file():
                raise
            shutil.rmtree(temp, ignore_errors=True)  # another process published the same cache first
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    cache = ImageCache(target)
    _remove_stale_siblings(target, meta["ids_hash"])
    return cache


# --- internals ------------------------------------------------------------------------------------------


def _load_one(job: tuple[int, Path, Preprocessor, Decoder]) -> tuple[int, np.ndarray, GeometryRecord]:
    index, path, preprocessor, decode = job
    pixels = decode(Path(path))
    canvas, geometry = preprocessor(np.asarray(pixels, dtype=np.float32))
    return index, np.rint(np.clip(canvas, 0.0, 1.0) * 255.0).astype(np.uint8), geometry


def _run(jobs: list, workers: int, progress: bool, description: str):
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=description, unit="img", disable=not progress, smoothing=0.05)
    try:
        if workers == 1:
            for job in jobs:
                yield _load_one(job)
                bar.update()
            return
        import multiprocessing

        # the platform default (fork on Linux): "spawn" would re-import an unguarded __main__ script
        context = multiprocessing.get_context()
        with context.Pool(workers) as pool:
            for result in pool.imap(_load_one, jobs, chunksize=8):
                yield result
                bar.update()
    finally:
        bar.close()


def _common_folder(records: Sequence[ImageRecord]) -> Path:
    if not records:
        raise DataLayoutError("no records")
    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(r.path)) for r in records]))


def _check_unique(records: Sequence[ImageRecord]) -> None:
    if len({r.image_id for r in records}) != len(records):
        raise DataLayoutError("records with duplicate image_id cannot share a cache")


def _ids_hash(records: Sequence[ImageRecord]) -> str:
    return hashlib.sha256("\n".join(sorted(r.image_id for r in records)).encode()).hexdigest()


def _cache_name(name: str | None, data_dir: Path) -> str:
    raw = name or Path(os.path.abspath(data_dir)).name or "data"
    return re.sub(r"[^A-Za-z0-9_.]+", "_", raw).strip("._") or "data"


def _remove_dead_temp_folders(root: Path) -> None:
    """Remove ``.tmp-<this host>-<pid>-*`` folders left by killed builds (pid no longer running)."""
    prefix = f".tmp-{socket.gethostname()}-"
    for entry in root.glob(".tmp-*"):
        if not entry.name.startswith(prefix):
            continue
        try:
            pid = int(entry.name[len(prefix) :].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def _remove_stale_siblings(target: Path, ids_hash: str) -> None:
    """Delete older caches of the same image set and size (same name prefix, other fingerprint)."""
    prefix = target.name.rsplit("-", 1)[0] + "-"
    for sibling in target.parent.glob(prefix + "*"):
        if sibling == target or not sibling.is_dir():
            continue
        try:
            meta = json.loads((sibling / META_FILE).read_text())
        except (OSError, ValueError):
            continue
        if meta.get("ids_hash") == ids_hash:
            shutil.rmtree(sibling, ignore_errors=True)
