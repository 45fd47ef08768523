"""Rows in, compressed COG tiles out while the run goes on: block rows per level and overviews on the fly.

Finished rows ``(D, r, W)`` arrive in order (:meth:`CogStream.push`). Each level of the pyramid gathers
them into block rows of the layout's tile height; a full block row goes to a thread pool that predicts and
compresses its tiles (:mod:`geodino.tiffcodec`) and writes them into the :class:`~geodino.cogfile.CogFile`
at once. Overview rows are NaN-aware 2x2 means of the level below (GDAL's ``AVERAGE`` over valid cells),
made as soon as two rows of that level exist, so the last block row of each level is all that remains
after the last rows: no pass over the raster after the run. Block rows in flight are bounded
(back-pressure: :meth:`push` waits), so memory does not grow with the scene.
"""

from __future__ import annotations

import functools

import numpy as np

from geodino.bandstats import BandStats
from geodino.cogfile import CogFile, CogLayout
from geodino.rowblocks import RowBlocks, TaskPool
from geodino.tiffcodec import compress_tiles, predicted_tiles

#: Compression tasks queued or running at once, at most, per worker thread.
IN_FLIGHT = 1
#: Bands per compression task.
BANDS_PER_TASK = 64
#: Statistics of a COG with no overviews are exact up to this many values (bands x cells; about 10 ms of work).
EXACT_STATS_VALUES = 1 << 22
#: Beyond that they come from at most 1 in ``STATS_SAMPLE**2`` cells of the full resolution (an overview's, or
#: every n-th row and column of the coarsest level), marked approximate: under 1% of a 1024-band run's work.
STATS_SAMPLE = 4


def stats_step(layout: CogLayout) -> int:
    """Take every n-th row and column of the coarsest level for :class:`CogStream`'s statistics: 1 for a small COG
    without overviews (exact) or an overview coarse enough, else what keeps them to 1 in ``STATS_SAMPLE**2`` cells."""
    h, w = layout.shape(layout.levels - 1)
    if layout.levels == 1 and h * w * layout.count <= EXACT_STATS_VALUES:
        return 1
    factor = layout.factors[-1] if layout.factors else 1
    return max(1, STATS_SAMPLE // factor)


def halve(rows: np.ndarray) -> np.ndarray:
    """NaN-aware 2x2 means of ``rows`` ``(D, r, W)`` float32 -> ``(D, ceil(r/2), ceil(W/2))``: the mean of a
    window's valid (non-NaN) cells, NaN where it has none; an odd last row or column is a window of its own."""
    d, r, w = rows.shape
    if r % 2 or w % 2:
        padded = np.full((d, r + r % 2, w + w % 2), np.nan, np.float32)
        padded[:, :r, :w] = rows
        rows = padded
    pairs = rows[:, 0::2], rows[:, 1::2]
    s = pairs[0] + pairs[1]
    plain = np.asarray((s[..., 0::2] + s[..., 1::2]) * np.float32(0.25))
    if not np.isnan(plain).any():  # the common case: plain means, in float32 (a NaN cell makes its window's NaN)
        return plain
    quads = [p[..., k::2] for p in pairs for k in (0, 1)]
    valid = [~np.isnan(q) for q in quads]
    total = sum(np.where(v, q, np.float32(0)) for q, v in zip(quads, valid, strict=True))
    count = sum(v.astype(np.float32) for v in valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / count, dtype=np.float32)  # 0/0: NaN where no valid cell


class CogStream:
    """Feeds a :class:`~geodino.cogfile.CogFile` with ``layout``'s levels from rows pushed in order.

    ``dtype`` of the file: float32 or float16 (values rounded to the nearest half float). ``workers``:
    compression threads. :attr:`stats`: band statistics of the coarsest level, gathered by the compression tasks
    from the block rows they hold: exact for a small COG with no overviews, else (from an overview and/or every n-th
    row and column: :func:`stats_step`) marked approximate, as GDAL's own estimates are.
    """

    def __init__(self, cog: CogFile, layout: CogLayout, workers: int) -> None:
        self.cog, self.layout = cog, layout
        self._step = stats_step(layout)
        self.stats = BandStats(layout.count, approximate=layout.levels > 1 or self._step > 1)
        self.np_dtype = np.dtype(layout.dtype)
        self._tasks = TaskPool(max(1, workers), IN_FLIGHT * max(1, workers), "geodino-compress")
        self._tx0 = 0  # the current strip's first tile column (the same at every level: see CogLayout.halving)
        self._start_strip()

    def _start_strip(self) -> None:
        n = self.layout.levels
        self._blocks = [RowBlocks(self.layout.tile_rows(level), functools.partial(self._submit, level)) for level in range(n)]
        self._carry: list[np.ndarray | None] = [None] * n  # an odd row waiting for its pair (feeds level + 1)

    def strip(self, col0: int) -> None:
        """Start the column strip at ``col0`` (a multiple of the layout's ``block``; with ``halving`` tiles every level
        holds whole tiles of it): the previous strip's last rows are flushed, rows start again at the top."""
        if col0 % self.layout.block or (col0 and not self.layout.halving):
            raise ValueError(f"a strip starts on a tile column of every level: {col0} is not one")
        self._finish_levels()
        self._tx0 = col0 // self.layout.block
        self._start_strip()

    def push(self, rows: np.ndarray, level: int = 0) -> None:
        """Add the next rows ``(D, r, W_level)`` of ``level`` (float32; band-major; read only during the call)."""
        self._blocks[level].add(rows)
        if level + 1 < self.layout.levels:
            self._down(rows, level)

    def _down(self, rows: np.ndarray, level: int) -> None:
        """Overview rows of ``level + 1`` from rows of ``level`` (pairs; an odd row waits in the carry)."""
        carry = self._carry[level]
        if carry is not None:
            rows = np.concatenate([carry, rows], axis=1)
            self._carry[level] = None
        if rows.shape[1] % 2:
            self._carry[level] = rows[:, -1:].copy()
            rows = rows[:, :-1]
        if rows.shape[1]:
            self.push(halve(rows), level + 1)

    def _submit(self, level: int, start: int, block: np.ndarray) -> None:
        """Compress a block row of ``level`` in the pool, :data:`BANDS_PER_TASK` bands a task (waits while
        :data:`IN_FLIGHT` tasks per worker are queued: back-pressure)."""
        ty = start // self.layout.tile_rows(level)
        for b0 in range(0, block.shape[0], BANDS_PER_TASK):  # the strip's tile column as it is now, not when run
            self._tasks.submit(self._encode, level, ty, self._tx0, b0, block[b0 : b0 + BANDS_PER_TASK])

    def _encode(self, level: int, ty: int, tx0: int, b0: int, block: np.ndarray) -> None:
        """Predict, compress and write the tiles of bands ``b0 ..`` of block row ``ty`` of ``level``."""
        if self.np_dtype != np.float32:
            block = block.astype(self.np_dtype)
        if level == self.layout.levels - 1:
            # the values as stored; block rows and strips start on multiples of 16 cells at every level: a step of
            # 2 or 4 takes the same rows and columns of the level everywhere
            self.stats.add(block[:, :: self._step, :: self._step], b0)
        pred = np.asarray(predicted_tiles(block, self.layout.tile_width(level), self.layout.tile_rows(level)))  # numpy in: numpy out
        self.cog.write_tiles(level, ty, [(b0 + band, tx0 + tx, payload) for band, tx, payload in compress_tiles(pred)])

    def close(self) -> None:
        """Flush the last rows of every level (an odd last row makes an overview row of its own), wait for the pool."""
        self._finish_levels()
        self._tasks.close()

    def _finish_levels(self) -> None:
        """Submit the open block rows and odd carried rows of every level (the end of a strip)."""
        for level in range(self.layout.levels):
            carry = self._carry[level]
            if carry is not None:
                self._carry[level] = None
                self.push(halve(carry), level + 1)
            self._blocks[level].flush()

    def abort(self) -> None:
        """Stop: drop queued work and wait for the running tasks (the caller removes the file)."""
        self._tasks.abort()
