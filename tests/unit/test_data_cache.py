"""Image cache: round trip vs direct preprocessing, invalidation, atomic builds, location policy."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pneumo.data import cache as cache_module
from pneumo.data.cache import (
    IMAGES_FILE,
    META_FILE,
    ImageCache,
    build_cache,
    cache_path,
    decode_pixels,
    default_cache_root,
    ensure_cache,
)
from pneumo.data.replica import replicate
from pneumo.data.rsna import read_rsna
from pneumo.errors import DataLayoutError
from pneumo.io import read_xray
from pneumo.preprocess import Preprocessor

SIZE = 64


@pytest.fixture(scope="module")
def four_records(rsna_mini, tmp_path_factory):
    """4 real DICOMs *copied* into a temp Kaggle layout (touching them must not touch shared data)."""
    root = replicate(read_rsna(rsna_mini, limit=4), tmp_path_factory.mktemp("kaggle") / "rsna", n=4, link=False)
    return root, read_rsna(root)


class CountingDecoder:
    def __init__(self, fail_at: int | None = None, error: type[BaseException] = RuntimeError):
        self.calls, self.fail_at, self.error = 0, fail_at, error

    def __call__(self, path: Path) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error("decoder failed on purpose")
        return decode_pixels(path)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_round_trip_equals_direct_preprocessing(four_records, tmp_path):
    root, records = four_records
    cache = build_cache(records, SIZE, data_dir=root, cache_dir=tmp_path, progress=False)
    assert len(cache) == 4 and cache.size == SIZE
    assert cache.array.shape == (4, SIZE, SIZE) and cache.array.dtype == np.uint8
    for record in records:
        i = cache.index_of(record.image_id)
        direct, geometry = Preprocessor(SIZE)(read_xray(record.path).pixels)
        image = cache.get_image(i)
        assert image.dtype == np.float32 and image.shape == (SIZE, SIZE)
        assert np.abs(image - direct).max() <= 1 / 255 + 1e-6
        assert cache.geometry(i) == geometry
    meta = json.loads((cache.directory / META_FILE).read_text())
    assert meta["image_ids"] == sorted(r.image_id for r in records)
    assert meta["relative_paths"][0].endswith(".dcm") and not meta["relative_paths"][0].startswith("/")
    with pytest.raises(DataLayoutError):
        cache.index_of("not-cached")
    with pytest.raises(IndexError):
        cache.get_image(4)


def test_second_call_reuses_the_cache_without_decoding(four_records, tmp_path):
    root, records = four_records
    decoder = CountingDecoder()
    first = ensure_cache(records, SIZE, data_dir=root, cache_dir=tmp_path, progress=False, decode=decoder)
    again = ensure_cache(list(reversed(records)), SIZE, data_dir=root, cache_dir=tmp_path, progress=False, decode=decoder)
    assert decoder.calls == 4 and again.directory == first.directory
    other_size = ensure_cache(records, 32, data_dir=root, cache_dir=tmp_path, progress=False, decode=decoder)
    assert decoder.calls == 8 and other_size.directory != first.directory and other_size.size == 32


def test_touch_or_modify_invalidates_and_replaces_the_stale_cache(four_records, tmp_path):
    root, records = four_records
    decoder = CountingDecoder()
    first = ensure_cache(records, SIZE, data_dir=root, cache_dir=tmp_path, progress=False, decode=decoder)
    stat = records[0].path.stat()
    os.utime(records[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touch
    second = ensure_cache(records, SIZE, data_dir=root, cache_dir=tmp_path, progress=False, decode=decoder)
    assert decoder.calls == 8 and second.directory != first.directory
    assert not first.directory.exists()  # same image set, older content: removed

    records[1].path.write_bytes(records[2].path.read_bytes())  # modify: image 1 becomes a copy of image 2
    third = ensure_cache(records, SIZE, data_dir=root, cache_dir=tmp_path, progress=False, decode=decoder)
    assert third.directory not in (first.directory, second.directory)
    np.testing.assert_array_equal(third.get_uint8(third.index_of(records[1].image_id)),
                                  third.get_uint8(third.index_of(records[2].image_id)))
    subset = ensure_cache(records[:2], SIZE, data_dir=root, cache_dir=tmp_path, progress=False, decode=decoder)
    assert third.directory.exists() and subset.directory.exists()  # another image set is not stale
    assert len([p for p in _entries(tmp_path) if not p.startswith(".")]) == 2


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_build_leaves_no_partial_cache(four_records, tmp_path, error):
    root, records = four_records
    with pytest.raises(error):
        build_cache(records, SIZE, data_dir=root, cache_dir=tmp_path, progress=False,
                    decode=CountingDecoder(fail_at=3, error=error))
    assert _entries(tmp_path) == []  # neither the final folder nor the temp folder
    assert not (cache_path(records, SIZE, root, tmp_path) / META_FILE).exists()
    decoder = CountingDecoder()
    ensure_cache(records, SIZE, data_dir=root, cache_dir=tmp_path, progress=False, decode=decoder)
    assert decoder.calls == 4  # the failed attempt left nothing that looks built


def test_temp_folder_of_a_killed_build_is_cleaned(four_records, tmp_path):
    root, records = four_records
    process = subprocess.Popen(["true"])
    process.wait()
    stale = tmp_path / f".tmp-{socket.gethostname()}-{process.pid}-dead"
    stale.mkdir()
    (stale / IMAGES_FILE).write_bytes(b"half written")
    alive = tmp_path / f".tmp-{socket.gethostname()}-{os.getpid()}-live"
    alive.mkdir()
    build_cache(records[:1], SIZE, data_dir=root, cache_dir=tmp_path, progress=False)
    assert not stale.exists() and alive.exists()


def test_two_workers_give_the_same_cache(four_records, tmp_path):
    root, records = four_records
    one = build_cache(records, SIZE, data_dir=root, cache_dir=tmp_path / "a", progress=False, workers=1)
    two = build_cache(records, SIZE, data_dir=root, cache_dir=tmp_path / "b", progress=False, workers=2)
    np.testing.assert_array_equal(np.asarray(one.array), np.asarray(two.array))
    assert one.geometries == two.geometries and one.fingerprint == two.fingerprint


def test_cache_pickles_without_its_pixels(four_records, tmp_path):
    root, records = four_records
    cache = build_cache(records, SIZE, data_dir=root, cache_dir=tmp_path, progress=False)
    _ = cache.array
    blob = pickle.dumps(cache)
    assert len(blob) < 4 * SIZE * SIZE
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.get_uint8(1), cache.get_uint8(1))


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("PNEUMO_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    data.mkdir()
    assert default_cache_root(data) == tmp_path / "home" / ".cache" / "pneumo"  # never inside the data folder
    assert not (data / ".pneumo-cache").exists()
    assert default_cache_root(data, cache_dir=tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("PNEUMO_CACHE_DIR", str(tmp_path / "env"))  # read at call time
    assert default_cache_root(data) == tmp_path / "env"
    monkeypatch.delenv("PNEUMO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root(data) == tmp_path / "xdg" / "pneumo"


def test_bad_inputs(four_records, tmp_path):
    root, records = four_records
    with pytest.raises(DataLayoutError):
        build_cache([], SIZE, cache_dir=tmp_path)
    with pytest.raises(DataLayoutError, match="duplicate"):
        build_cache([records[0], records[0]], SIZE, cache_dir=tmp_path, progress=False)
    with pytest.raises(DataLayoutError, match="not a pneumo image cache"):
        ImageCache(tmp_path)
    assert cache_module.CACHE_FORMAT_VERSION >= 1


def test_a_cache_whose_pixels_do_not_match_its_metadata_is_refused(four_records, tmp_path):
    root, records = four_records
    cache = build_cache(records, SIZE, data_dir=root, cache_dir=tmp_path, progress=False)
    np.save(cache.directory / IMAGES_FILE, np.zeros((3, SIZE, SIZE), np.uint8))
    with pytest.raises(DataLayoutError, match="does not match"):
        ImageCache(cache.directory).get_image(0)
