"""Streaming stitching of tile outputs on the feature grid.

Overlapping tiles are blended with a window that is positive everywhere (a raised cosine with a
floor, so the scene border, seen by one tile only, keeps its value) and zero on invalid cells.
Only one row of tiles is held: rows are handed to ``sink`` as soon as no later tile touches them.
Sums are kept in float64 so a cell seen by several tiles with equal values gets exactly that value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from geodino.tiling import Tile, TilePlan

#: ``sink(row0, block)``: ``block`` ``(rows, cols, D)`` float32, NaN where no valid input reached.
Sink = Callable[[int, np.ndarray], None]


def blend_window(cells: int, floor: float = 0.1) -> np.ndarray:
    """``(cells, cells)`` weights: ``floor + (1 - floor) * sin^2(pi (i + 0.5) / cells)`` on each axis, outer product.

    Highest in the middle, never below ``floor**2`` > 0 at the corners.
    """
    i = np.arange(cells, dtype=np.float64)
    w1 = floor + (1.0 - floor) * np.sin(np.pi * (i + 0.5) / cells) ** 2
    return np.outer(w1, w1)


class Stitcher:
    """Accumulates ``(t, t, D)`` tile outputs of one tile row at a time and flushes finished rows.

    For a sub-plan (:meth:`TilePlan.for_cells`) the rows and columns cover the sub-plan's cells only,
    starting at ``origin``; ``sink`` still receives grid row numbers.

    ``stride`` is the output's cell size in pixels: the plan's patch (16, feature grid, ``t = tile/16``)
    or 1 (pixel grid, ``t = tile``; rows stop at the scene's last pixel row). Add tiles in the plan's
    row-major order (empty tiles may be skipped), then call :meth:`finish_row` after each tile row.
    """

    def __init__(self, plan: TilePlan, dim: int, sink: Sink, floor: float = 0.1, stride: int | None = None) -> None:
        self.plan = plan
        self.dim = dim
        self.sink = sink
        self.stride = stride = stride or plan.patch
        if plan.patch % stride:
            raise ValueError(f"stride {stride} must divide the patch size {plan.patch}")
        self.scale = scale = plan.patch // stride  # output cells per patch-grid cell
        full = (-(-plan.height // stride), -(-plan.width // stride))
        r0, r1, c0, c1 = plan.cell_bounds  # the whole grid, or a sub-plan's cells (a block with its halo)
        self.origin = (r0 * scale, c0 * scale)
        self.full_rows = full[0]
        self.grid_shape = (min(r1 * scale, full[0]) - r0 * scale, min(c1 * scale, full[1]) - c0 * scale)
        t = plan.tile // stride
        self.tile_out = t
        self.window = blend_window(t, floor)
        cols = self.grid_shape[1]
        # the buffer spans the current tile row's cells, and the last tile column's overhang
        self._acc = np.zeros((t, cols + t, dim), np.float64)
        self._wsum = np.zeros((t, cols + t), np.float64)
        self._product = np.empty((t, t, dim), np.float64) if dim > 1 else np.empty((0,))
        self._base = 0  # row of the buffer's first row, counted from ``origin``
        self._tile_row = plan.tile_rows.start
        self.rows_written = 0

    def add(self, tile: Tile, out: np.ndarray, cell_valid: np.ndarray) -> None:
        """Blend one tile: ``out`` ``(t, t, D)`` features, ``cell_valid`` ``(t, t)`` bool."""
        if tile.row != self._tile_row:
            raise ValueError(f"tile row {tile.row} added while row {self._tile_row} is open: call finish_row first")
        r = tile.cell_row * self.scale - self.origin[0] - self._base
        c = tile.cell_col * self.scale - self.origin[1]
        t = self.tile_out
        w = self.window if cell_valid.all() else self.window * cell_valid
        acc = self._acc[r : r + t, c : c + t]
        if self.dim == 1:  # pixel predictions: one channel, no broadcast temporaries
            acc[..., 0] += out[..., 0] * w
        else:  # the same float64 products as ``acc += out * w[:, :, None]``, into one buffer kept across tiles
            np.multiply(out, w[:, :, None], out=self._product)
            acc += self._product
        self._wsum[r : r + t, c : c + t] += w

    def finish_row(self) -> None:
        """Flush the rows no later tile touches and slide the buffer down to the next tile row."""
        done = min(self.plan.rows_done_after(self._tile_row) * self.scale, self.full_rows) - self.origin[0]
        n = done - self._base
        cols = self.grid_shape[1]
        if n > 0:
            acc, wsum = self._acc[:n, :cols], self._wsum[:n, :cols]
            with np.errstate(invalid="ignore", divide="ignore"):
                block = (acc / wsum[:, :, None]).astype(np.float32)
            block[wsum == 0] = np.nan
            self.sink(self.origin[0] + self._base, block)
            self.rows_written += n
            keep = self._acc.shape[0] - n
            self._acc[:keep] = self._acc[n:]
            self._wsum[:keep] = self._wsum[n:]
            self._acc[keep:] = 0.0
            self._wsum[keep:] = 0.0
        self._base = done
        self._tile_row += 1

    @property
    def done(self) -> bool:
        return self.rows_written >= self.grid_shape[0]
