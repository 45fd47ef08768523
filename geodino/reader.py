"""Windowed reads of a scene, ahead of the model, in a background thread pool.

Each worker thread keeps its own open dataset handles (GDAL handles are not thread-safe). A tile
reaching past the scene edge is read for the part inside and padded; the padding is invalid.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import rasterio
from rasterio.windows import Window

from geodino.adapter import BandAdapter
from geodino.errors import InputError
from geodino.scene import Scene, open_source
from geodino.tiling import Tile

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class TileData:
    """One tile ready for the model: ``x`` ``(C, T, T)`` float32 in [0, 1] (0 where invalid), ``valid`` ``(T, T)``."""

    tile: Tile
    x: np.ndarray
    valid: np.ndarray
    empty: bool = field(init=False)  # no valid pixel (skipped): found where the tile is made, in a reader thread
    full: bool = field(init=False)  # every pixel valid

    def __post_init__(self) -> None:
        self.full = bool(self.valid.all())
        self.empty = not self.full and not self.valid.any()

    def cells(self, patch: int) -> np.ndarray:
        """``(T/p, T/p)`` cell validity (:func:`cell_valid`)."""
        n = self.valid.shape[0] // patch
        return np.ones((n, self.valid.shape[1] // patch), bool) if self.full else cell_valid(self.valid, patch)


def cell_valid(valid: np.ndarray, patch: int) -> np.ndarray:
    """``(H, W)`` pixel validity -> ``(H/p, W/p)`` cell validity: a cell is valid if any of its pixels is."""
    if patch == 1:
        return valid
    h, w = valid.shape
    return np.asarray(valid.reshape(h // patch, patch, w // patch, patch).any(axis=(1, 3)))  # asarray: for the type (numpy's stubs)


class SceneReader:
    """Reads tiles of one scene through per-thread dataset handles; ``close()`` closes them all."""

    def __init__(self, scene: Scene, adapter: BandAdapter) -> None:
        self.scene = scene
        self.adapter = adapter
        self._local = threading.local()
        self._lock = threading.Lock()
        self._handles: list[rasterio.DatasetReader] = []

    def _ds(self, path: str) -> rasterio.DatasetReader:
        cache = getattr(self._local, "ds", None)
        if cache is None:
            cache = self._local.ds = {}
        if path not in cache:
            ds, handles = open_source(self.scene, path)  # a warped VRT when the scene resamples this file
            cache[path] = ds
            with self._lock:
                self._handles.extend(handles)
        return cache[path]

    def _by_file(self) -> list[tuple[str, list[int], list[int]]]:
        """The adapter's bands grouped by file: ``(path, positions in the tile, band numbers in the file)``."""
        groups: dict[str, tuple[list[int], list[int]]] = {}
        for k, i in enumerate(self.adapter.indexes):
            path, b = self.scene.band_sources[i]
            ks, bands = groups.setdefault(path, ([], []))
            ks.append(k)
            bands.append(b)
        return [(path, ks, bands) for path, (ks, bands) in groups.items()]

    def read_raw(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(C, height, width)`` DNs of the adapter's bands and ``(height, width)`` validity; padding is invalid."""
        sh, sw = self.scene.shape
        r0, c0 = max(row_off, 0), max(col_off, 0)
        r1, c1 = min(row_off + height, sh), min(col_off + width, sw)
        fill = self.adapter.nodata if self.adapter.nodata is not None and not np.isnan(self.adapter.nodata) else 0
        inside = r0 == row_off and c0 == col_off and r1 == row_off + height and c1 == col_off + width
        shape = (len(self.adapter.indexes), height, width)
        raw = np.empty(shape, self.scene.dtype) if inside else np.full(shape, fill, dtype=self.scene.dtype)  # the read fills it
        valid = np.zeros((height, width), bool)
        if r1 <= r0 or c1 <= c0:
            return raw, valid
        oy, ox = self.scene.offset  # a cropped scene reads its part of the files
        win = Window(c0 + ox, r0 + oy, c1 - c0, r1 - r0)
        inner = (slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off))
        mask = None
        try:
            for path, ks, bands in self._by_file():  # one read per file: a pixel-interleaved block is decoded once
                ds = self._ds(path)
                raw[(ks, *inner)] = ds.read(bands, window=win)
                if self.scene.has_mask and mask is None:
                    mask = ds.dataset_mask(window=win) > 0
        except rasterio.errors.RasterioIOError as exc:
            detail = str(exc.__cause__ or exc).splitlines()[0]
            raise InputError(f"cannot read {self.scene.paths[0]} at rows {r0}-{r1}, cols {c0}-{c1}: {detail}") from None
        valid[inner] = self.adapter.valid(raw[(slice(None), *inner)], mask)
        return raw, valid

    def read_tile(self, tile: Tile) -> TileData:
        """The tile's pixels through the adapter (scene-fixed stretch), invalid pixels set to 0."""
        raw, valid = self.read_raw(*tile.px_window)
        x = self.adapter.to_unit(raw) if valid.any() else np.zeros(raw.shape, np.float32)
        if not valid.all():
            x[:, ~valid] = 0.0
        return TileData(tile, x, valid)

    def close(self) -> None:
        with self._lock:
            for ds in self._handles:
                ds.close()
            self._handles.clear()

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int = 2, ahead: int = 8) -> Generator[R, None, None]:
    """``map(fn, items)`` computed by ``workers`` threads up to ``ahead`` items ahead, yielded in order
    (``workers=0``: in the calling thread, one at a time)."""
    if workers == 0:
        yield from map(fn, items)
        return
    pending: deque[Future[R]] = deque()
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geodino-read") as pool:
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
