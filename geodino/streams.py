"""Feature rasters written while the run goes on: compressed COG tiles or Zarr chunks, no pass after the run.

A stream takes finished rows ``(D, r, W)`` float32 (band-major, in order) from the writer thread, gathers
them into block rows and hands each full block row to a pool of compression threads that write it into
its place in the output at once. :meth:`finish` writes what only the end knows (the run's record, band
names) and leaves a finished COG or a sealed Zarr store; :meth:`abort` removes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from odc.geo.geobox import GeoBox

from geodino.bandstats import WIDEST
from geodino.cogfile import CogFile, CogLayout, overview_factors, template_tags
from geodino.cogstream import IN_FLIGHT, CogStream
from geodino.outputs import remove_path
from geodino.record import record_attrs
from geodino.rowblocks import RowBlocks, TaskPool
from geodino.tiling import grid_crs
from geodino.zarrstore import chunks_of, feature_dataset, seal_store

#: Streamed COG tiles are ``COG_BLOCK`` wide (``COG_BLOCK >> k`` at overview level k) and ``BLOCK_ROWS`` high: a
#: short block row, so little is left to compress after the last rows (a block row is compressed once all its rows
#: are final). A wide scene runs in column strips of ``COG_BLOCK`` cells (whole tiles at every level), so memory
#: grows with neither the scene's height nor its width: 128, the 2048-px scene's width in cells.
COG_BLOCK, COG_ROWS, BLOCK_ROWS = 128, 64, 32
#: Overviews of a streamed COG: GDAL's AUTO rule for ``OVERVIEW_BLOCK``-cell blocks, at most as many levels as keep
#: the coarsest tiles 16 wide (TIFF's least; 3 levels, 8x: a 32768-px scene's coarsest level is 256 cells).
OVERVIEW_BLOCK = 256
#: Zarr chunks are ``FEATURES_PER_CHUNK x BLOCK_ROWS x ZARR_BLOCK``; a Zarr stream runs in strips of ``ZARR_BLOCK`` cells.
ZARR_BLOCK = 256
#: Bytes kept free beside a streamed COG's IFDs for the run's record, known only at the end.
TAG_SPARE = 1 << 20


def stream_workers() -> int:
    """Compression threads: one per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def cog_factors(height: int, width: int) -> list[int]:
    """Overview factors of a streamed COG of ``height x width`` cells (see :data:`OVERVIEW_BLOCK`)."""
    return overview_factors(height, width, OVERVIEW_BLOCK)[: max(0, (COG_BLOCK // 16).bit_length() - 1)]


class FeatureStream(Protocol):
    strip_width: int  # a wide scene comes in column strips of this many cells

    def push(self, rows: np.ndarray, col0: int = 0) -> None: ...  # rows of the strip starting at column col0

    def finish(self, metadata: dict[str, object], tags: dict[str, str], band_names: Sequence[str]) -> None: ...

    def abort(self) -> None: ...


class CogFeatureStream:
    """A COG at ``dest`` written during the run (:class:`~geodino.cogstream.CogStream` into a
    :class:`~geodino.cogfile.CogFile`), with overviews (:func:`cog_factors`); ``dtype`` float32 or float16."""

    def __init__(self, dest: Path, geobox: GeoBox, dim: int, dtype: str, band_names: Sequence[str]) -> None:
        h, w = geobox.shape.yx
        self.geobox, self.dim, self.dtype, self.strip_width = geobox, dim, dtype, COG_BLOCK
        factors = tuple(cog_factors(h, w))
        self.layout = CogLayout(h, w, dim, dtype, block=COG_BLOCK, block_rows=COG_ROWS, factors=factors, halving=True)
        widest = [WIDEST] * dim  # the statistics' room, kept in the IFDs written at the end
        self.cog = CogFile(dest, self.layout, self._tags(band_names, {}, widest), spare=TAG_SPARE)
        self.stream = CogStream(self.cog, self.layout, stream_workers())
        self._col0 = 0

    def _tags(
        self, band_names: Sequence[str], tags: dict[str, str], band_tags: Sequence[dict[str, str]] = ()
    ) -> dict[int, tuple[int, int, bytes]]:
        crs = grid_crs(self.geobox).to_wkt()
        return template_tags(crs, self.geobox.affine, self.dim, self.dtype, float("nan"), list(band_names), tags, band_tags=band_tags)

    def push(self, rows: np.ndarray, col0: int = 0) -> None:
        if col0 != self._col0:  # the next column strip
            self.stream.strip(col0)
            self._col0 = col0
        self.stream.push(rows)

    def finish(self, metadata: dict[str, object], tags: dict[str, str], band_names: Sequence[str]) -> None:
        self.stream.close()
        self.cog.close(self._tags(band_names, tags, self.stream.stats.tags()))  # statistics: bandstats.py

    def abort(self) -> None:
        self.stream.abort()
        self.cog.abort()


class ZarrFeatureStream:
    """A Zarr store at ``dest`` (the layout of :func:`~geodino.zarrstore.feature_dataset`, chunks
    :data:`~geodino.zarrstore.FEATURES_PER_CHUNK` x :data:`BLOCK_ROWS` x :data:`ZARR_BLOCK`) whose chunks are
    compressed and written by a pool during the run."""

    def __init__(self, dest: Path, geobox: GeoBox, dim: int, dtype: str, band_names: Sequence[str]) -> None:
        import dask.array as da
        import zarr

        self.dest, self.geobox, self.band_names, self.strip_width = dest, geobox, list(band_names), ZARR_BLOCK
        h, w = geobox.shape.yx
        chunks = chunks_of(dim, BLOCK_ROWS, ZARR_BLOCK)
        data = da.full((dim, h, w), np.nan, dtype=dtype, chunks=chunks)
        feature_dataset(data, geobox, self.band_names, {}).to_zarr(dest, mode="w", compute=False, consolidated=True, zarr_format=2)
        self.array = zarr.open_array(store=str(dest / "features"), mode="r+", config={"write_empty_chunks": True})
        self.dtype = np.dtype(dtype)
        workers = stream_workers()
        self._tasks = TaskPool(workers, IN_FLIGHT * workers, "geodino-zarr")
        self._col0 = 0
        self._blocks = RowBlocks(BLOCK_ROWS, self._submit, self.dtype)

    def push(self, rows: np.ndarray, col0: int = 0) -> None:
        if col0 != self._col0:  # the next column strip: its rows start at the top again
            self._blocks.flush()
            self._col0, self._blocks = col0, RowBlocks(BLOCK_ROWS, self._submit, self.dtype)
        self._blocks.add(rows)

    def _submit(self, row0: int, block: np.ndarray) -> None:
        step = self.array.chunks[0]
        for b0 in range(0, block.shape[0], step):  # one task per chunk row of a band range
            self._tasks.submit(self._write, b0, row0, self._col0, block[b0 : b0 + step])

    def _write(self, b0: int, row0: int, col0: int, block: np.ndarray) -> None:
        self.array[b0 : b0 + block.shape[0], row0 : row0 + block.shape[1], col0 : col0 + block.shape[2]] = block

    def finish(self, metadata: dict[str, object], tags: dict[str, str], band_names: Sequence[str]) -> None:
        import zarr

        self._blocks.flush()
        self._tasks.close()
        attrs: dict[str, Any] = record_attrs(metadata)
        group = zarr.open_group(str(self.dest), mode="r+", zarr_format=2)
        group["features"].attrs.update(attrs)
        if list(band_names) != self.band_names:
            raise ValueError("a streamed Zarr store keeps the band names it was made with")
        seal_store(self.dest)

    def abort(self) -> None:
        self._tasks.abort()
        remove_path(self.dest)


def open_stream(dest: Path, geobox: GeoBox, dim: int, fmt: str, dtype: str, band_names: Sequence[str]) -> FeatureStream:
    """The stream writing ``fmt`` (``cog`` or ``zarr``) at ``dest``."""
    if fmt == "cog":
        return CogFeatureStream(dest, geobox, dim, dtype, band_names)
    return ZarrFeatureStream(dest, geobox, dim, dtype, band_names)
