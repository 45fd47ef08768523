"""A resumable Zarr output, written block by block by any number of workers.

While running, everything lives in ``.<name>.geodino-run/`` beside the output:

- ``run.json``: the run's fingerprint (scene, model and weights hash, layers, adapter, tile plan, chunk, dtype);
- ``features.zarr``: the store, created up front with its grid, coordinates, CRS and attributes; each
  block writes its own chunk-aligned region (no two blocks share a chunk, so no locks are needed);
- ``done/<i>_<j>``: a marker written after a block's region is on disk.

Re-running the same command skips the blocks with markers (a block killed half-way has none and is
written again in full; chunk temporaries it left are removed). When all blocks are done the store is
sealed (its completion record), handed to the run's :class:`~geodino.outputs.OutputSet` to be moved to
``out``, and the folder removed, so ``out`` never exists half-written. A different command, or input
files that changed in any way (:func:`file_identity`), on the same output is refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

from geodino.blocks import Block
from geodino.errors import InputError
from geodino.outputs import run_folder
from geodino.rowblocks import RowBlocks, TaskPool
from geodino.zarrstore import chunks_of, feature_dataset, remove_partials, seal_store


def _jsonable(value: object) -> Any:
    return json.loads(json.dumps(value, default=str))


def file_identity(paths: Sequence[str]) -> list[list[object]]:
    """``[path, size, mtime_ns, ctime_ns, inode]`` of each local file. The ctime changes on every write and
    every metadata change and cannot be set by ``cp -p``, ``rsync -a`` or ``touch -r``; the inode changes
    when a file is replaced. So a file rewritten in place, or replaced, with its size and mtime kept is
    seen as changed (as is a file merely chmod-ed or moved back: a safe false alarm)."""
    stamps: list[list[object]] = []
    for p in paths:
        if os.path.exists(p):
            st = os.stat(p)
            stamps.append([p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    return stamps


class ZarrRun:
    """The run folder of one Zarr output (``folder``); :meth:`prepare` creates or resumes it."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.folder = run_folder(self.out)
        self.store = self.folder / "features.zarr"
        self.done_dir = self.folder / "done"

    def previous_chunk(self) -> int | None:
        """The block side of an unfinished run in the folder, if any (a resume keeps it)."""
        record = self.folder / "run.json"
        if not record.exists():
            return None
        chunk = json.loads(record.read_text()).get("blocks", {}).get("chunk")
        return int(chunk) if chunk else None

    def done(self) -> set[str]:
        """Keys of the finished blocks."""
        return {p.name for p in self.done_dir.iterdir() if not p.name.startswith(".")} if self.done_dir.is_dir() else set()

    def prepare(
        self,
        fingerprint: dict[str, object],
        geobox: GeoBox,
        names: Sequence[str],
        dtype: str,
        chunk: int,
        attrs: dict[str, object],
        overwrite: bool,
    ) -> set[str]:
        """Create the run folder and an empty store, or resume a run with the same fingerprint (``overwrite``:
        start again whatever is there). Returns the finished blocks' keys."""
        fingerprint = _jsonable(fingerprint)
        record = self.folder / "run.json"
        if self.folder.exists():
            old = json.loads(record.read_text()) if record.exists() else None
            complete = old is not None and (self.store / ".zmetadata").exists()
            if complete and old == fingerprint and not overwrite:
                remove_partials(self.store)
                return self.done()
            if complete and not overwrite:  # (an incomplete folder was cut short while being set up: start again)
                raise InputError(
                    f"{self.folder} holds an unfinished run with other settings or input files: re-run that command to "
                    "finish it, or pass --overwrite to start again"
                )
            shutil.rmtree(self.folder)
        self.done_dir.mkdir(parents=True)
        try:
            _create_store(self.store, geobox, names, dtype, chunk, attrs)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        record.write_text(json.dumps(fingerprint, indent=1))
        return set()

    def discard(self) -> None:
        """Remove the run folder (a run that failed before finishing any block)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def seal(self, blocks: int) -> Path:
        """Record the finished store's completion (see :func:`~geodino.zarrstore.seal_store`); returns the store."""
        seal_store(self.store, blocks)
        return self.store


def write_block(run_folder: str, block: Block, data: np.ndarray, dtype: str) -> None:
    """Write ``data`` ``(D, rows, cols)`` into the block's region of the store, then mark the block done."""
    with BlockRows(run_folder, block, dtype, workers=0) as rows:
        rows.add(0, data)


class BlockRows:
    """A block's rows written into the store as they finish: staged into the store's chunk rows, each full chunk
    row compressed and written by ``workers`` threads (0: here) while the block goes on; :meth:`finish` (end of
    ``with``) writes the rest, waits, and marks the block done. An exception inside ``with`` leaves no marker."""

    def __init__(self, run_folder: str, block: Block, dtype: str, workers: int = 2) -> None:
        import zarr

        self.folder, self.block = Path(run_folder), block
        # every chunk written as it is (no scan for all-NaN chunks: seal_store records any chunk not written)
        self.array = zarr.open_array(store=str(self.folder / "features.zarr" / "features"), mode="r+", config={"write_empty_chunks": True})
        self._tasks = TaskPool(workers, 2 * workers, "geodino-chunks")
        # block starts are multiples of the chunk rows (they divide the block side)
        self._blocks = RowBlocks(int(self.array.chunks[1]), lambda start, data: self._tasks.submit(self._write, start, data), dtype)

    def add(self, row: int, data: np.ndarray) -> None:
        """Rows ``[row, row + r)`` of the block (counted from its first row), ``data`` ``(D, r, cols)``, in order."""
        self._blocks.add(data)

    def _write(self, start: int, data: np.ndarray) -> None:
        b = self.block
        self.array[:, b.row0 + start : b.row0 + start + data.shape[1], b.col0 : b.col1] = data

    def finish(self) -> None:
        self._blocks.flush()
        self._tasks.close()
        marker = self.folder / "done" / self.block.key
        tmp = marker.with_name(f".{self.block.key}.{os.getpid()}")
        tmp.write_text("")
        os.replace(tmp, marker)

    def __enter__(self) -> BlockRows:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self._tasks.abort()


def chunk_rows(chunk: int) -> int:
    """Rows of a store's chunks for blocks of ``chunk`` cells: 32 (a short chunk row is written as soon as it is
    final) when it divides the block side, else the block side."""
    return 32 if chunk % 32 == 0 else chunk


def _create_store(store: Path, geobox: GeoBox, names: Sequence[str], dtype: str, chunk: int, attrs: dict[str, object]) -> None:
    """An empty store in the layout of :func:`~geodino.zarrstore.feature_dataset`, chunked by blocks (metadata only)."""
    import dask.array as da

    h, w = geobox.shape.yx
    d = len(names)
    data = da.full((d, h, w), np.nan, dtype=dtype, chunks=chunks_of(d, chunk_rows(chunk), chunk))
    feature_dataset(data, geobox, names, attrs).to_zarr(store, mode="w", compute=False, consolidated=True, zarr_format=2)
