"""Streaming stitching of tile outputs on the output grid, on the model's device.

Overlapping tiles are blended with a window that is positive everywhere (a raised cosine with a
floor, so the scene border, seen by one tile only, keeps its value) and zero on invalid cells.
Only one row of tiles is held (on the model's device): rows are handed to ``sink`` as soon as no
later tile touches them. Where several tiles overlap, sums are kept in float64, so a cell seen by
several tiles with equal values gets exactly that value; a cell seen by one tile only is copied
(exactly what the blend gives there: ``float32((v * w) / w) == v``), which spares most of the work.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from geodino.tiling import Tile, TilePlan

#: ``sink(row0, block)``: ``block`` ``(rows, cols, D)`` float32, NaN where no valid input reached: a view of the
#: stitcher's band-major ``(D, rows, cols)`` buffer, valid only during the call (a sink that keeps it copies it).
Sink = Callable[[int, np.ndarray], None]


def blend_window(cells: int, floor: float = 0.1) -> np.ndarray:
    """``(cells, cells)`` weights: ``floor + (1 - floor) * sin^2(pi (i + 0.5) / cells)`` on each axis, outer product.

    Highest in the middle, never below ``floor**2`` > 0 at the corners.
    """
    i = np.arange(cells, dtype=np.float64)
    w1 = floor + (1.0 - floor) * np.sin(np.pi * (i + 0.5) / cells) ** 2
    return np.outer(w1, w1)


def coverage(origins: list[int], tile: int, start: int, n: int) -> np.ndarray:
    """How many tiles (``tile`` cells from each of ``origins``) cover each of cells ``[start, start + n)``."""
    count = np.zeros(n, np.int32)
    for o in origins:
        count[max(o - start, 0) : max(min(o + tile - start, n), 0)] += 1
    return count


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges where ``mask`` (1-D bool) is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


class Stitcher:
    """Accumulates ``(D, t, t)`` tile outputs of one tile row at a time and flushes finished rows.

    For a sub-plan (:meth:`TilePlan.for_cells`) the rows and columns cover the sub-plan's cells only,
    starting at ``origin``; ``sink`` still receives grid row numbers.

    ``stride`` is the output's cell size in pixels: the plan's patch (16, feature grid, ``t = tile/16``)
    or 1 (pixel grid, ``t = tile``; rows stop at the scene's last pixel row). Add tiles in the plan's
    row-major order (empty tiles may be skipped), then call :meth:`finish_row` after each tile row.
    ``device``: where the row of tiles is held and blended (the model's device); rows come back to the CPU.
    """

    def __init__(
        self, plan: TilePlan, dim: int, sink: Sink, floor: float = 0.1, stride: int | None = None, device: str | torch.device = "cpu"
    ) -> None:
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
        self.tile_out = t = plan.tile // stride
        self.device = torch.device(device)
        self.window = torch.from_numpy(blend_window(t, floor)).to(self.device)
        cols = self.grid_shape[1]
        # one tile per covered cell along each axis: those cells are copied, the others blended
        rows_o = [plan.row_origins[i] * scale - self.origin[0] for i in plan.tile_rows]
        cols_o = [plan.col_origins[j] * scale - self.origin[1] for j in plan.tile_cols]
        self._row_cov = coverage(rows_o, t, 0, rows_o[-1] + t)
        self._col_single = coverage(cols_o, t, 0, cols + t) == 1
        self._col_multi = torch.from_numpy(np.flatnonzero(~self._col_single[:cols])).to(self.device)
        # the rows and columns each tile has to itself, once per plan (not per tile)
        self._own_rows = {o: (runs(self._row_cov[o : o + t] == 1) or [(0, 0)])[0] for o in rows_o}
        self._own_cols = {o: (runs(self._col_single[o : o + t]) or [(0, 0)])[0] for o in cols_o}
        # the buffers span the current tile row's cells, and the last tile column's overhang; band-major, as the
        # model gives its outputs and the writer wants its rows (no transposes)
        self._out = torch.full((dim, t, cols + t), float("nan"), dtype=torch.float32, device=self.device)
        self._acc = torch.zeros((dim, t, cols + t), dtype=torch.float64, device=self.device)
        self._wsum = torch.zeros((t, cols + t), dtype=torch.float64, device=self.device)
        self._base = 0  # row of the buffer's first row, counted from ``origin``
        self._tile_row = plan.tile_rows.start
        self.rows_written = 0

    def add(self, tile: Tile, out: torch.Tensor | np.ndarray, cell_valid: torch.Tensor | np.ndarray) -> None:
        """Blend one tile: ``out`` ``(D, t, t)`` tensor (best on the device) or ``(t, t, D)`` array, ``cell_valid``
        ``(t, t)`` bool."""
        if tile.row != self._tile_row:
            raise ValueError(f"tile row {tile.row} added while row {self._tile_row} is open: call finish_row first")
        v = torch.from_numpy(out).permute(2, 0, 1) if isinstance(out, np.ndarray) else out.to(self.device)
        cv = torch.as_tensor(cell_valid, device=self.device)
        t = self.tile_out
        top = tile.cell_row * self.scale - self.origin[0]
        r = top - self._base
        c = tile.cell_col * self.scale - self.origin[1]
        all_valid = bool(cv.all())
        w = self.window if all_valid else self.window * cv
        if not all_valid:  # cells with no valid pixel carry no weight, and may hold anything (0/0 of padding)
            v = torch.where(cv, v, 0.0)
        (ra, rb), (ca, cb) = self._own_rows[top], self._own_cols[c]
        if rb > ra and cb > ca:  # seen by this tile only: its value (NaN where invalid)
            piece = v[:, ra:rb, ca:cb] if all_valid else torch.where(cv[ra:rb, ca:cb], v[:, ra:rb, ca:cb], float("nan"))
            torch.add(piece, 0.0, out=self._out[:, r + ra : r + rb, c + ca : c + cb])  # + 0.0: -0.0 becomes 0.0, as in the blend
            blend = [(0, ra, 0, t), (rb, t, 0, t), (ra, rb, 0, ca), (ra, rb, cb, t)]
        else:
            blend = [(0, t, 0, t)]
        for i0, i1, j0, j1 in blend:
            if i1 > i0 and j1 > j0:  # the same float64 products and sums as a whole-tile ``acc += out * w``
                prod = v[:, i0:i1, j0:j1].double().mul_(w[i0:i1, j0:j1])  # two kernels: no fused multiply-add
                self._acc[:, r + i0 : r + i1, c + j0 : c + j1] += prod
                self._wsum[r + i0 : r + i1, c + j0 : c + j1] += w[i0:i1, j0:j1]

    def _blend(self, rows: slice, cols: slice | torch.Tensor) -> torch.Tensor:
        """Weighted means of the accumulated cells ``(D, rows, cols)`` float32, NaN where no weight."""
        acc, wsum = self._acc[:, rows][:, :, cols], self._wsum[rows][:, cols]
        return torch.where(wsum > 0, acc / wsum, float("nan")).float()

    def finish_row(self) -> None:
        """Flush the rows no later tile touches and slide the buffer down to the next tile row."""
        done = min(self.plan.rows_done_after(self._tile_row) * self.scale, self.full_rows) - self.origin[0]
        n = done - self._base
        cols = self.grid_shape[1]
        if n > 0:
            multi = self._row_cov[self._base : done] > 1
            for a, b in runs(multi):  # rows shared with the tile row above or below: blended across the width
                self._out[:, a:b, :cols] = self._blend(slice(a, b), slice(0, cols))
            for a, b in runs(~multi):  # rows of this tile row only: blended where two tile columns overlap
                if len(self._col_multi):
                    self._out[:, a:b, self._col_multi] = self._blend(slice(a, b), self._col_multi)
            block = self._out[:, :n, :cols].cpu()  # on the CPU: a view of the buffer, read by the sink before it changes
            self.sink(self.origin[0] + self._base, block.numpy().transpose(1, 2, 0))
            self.rows_written += n
            keep = self._acc.shape[1] - n
            for buf in (self._out, self._acc):
                buf[:, :keep] = buf[:, n:].clone()
                buf[:, keep:] = float("nan") if buf is self._out else 0.0
            self._wsum[:keep] = self._wsum[n:].clone()
            self._wsum[keep:] = 0.0
        self._base = done
        self._tile_row += 1

    @property
    def done(self) -> bool:
        return self.rows_written >= self.grid_shape[0]
