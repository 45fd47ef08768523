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
from dataclasses import dataclass

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

    Held, band-major (as the model gives its outputs and the writer wants its rows): the tile row's output
    ``(D, t, W)`` float32, and float64 sums only where tiles overlap: ``(D, R, W)`` for the ``R`` rows shared
    with the tile row above or below, ``(D, t, M)`` for the ``M`` columns shared by two tile columns.
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
        self.device = dev = torch.device(device)
        self.window = torch.from_numpy(blend_window(t, floor)).to(dev)
        cols = self.grid_shape[1]
        rows_o = [plan.row_origins[i] * scale - self.origin[0] for i in plan.tile_rows]
        cols_o = [plan.col_origins[j] * scale - self.origin[1] for j in plan.tile_cols]
        # once per plan (not per tile): which of a tile's rows and columns it has to itself, which it shares
        row_cov = coverage(rows_o, t, 0, rows_o[-1] + t)
        shared = {top: row_cov[top : top + t] > 1 for top in rows_o}  # the first ones: the rows the tile row above left
        self._rows = {top: layout(s, np.cumsum(s) - 1) for top, s in shared.items()}
        col_multi = coverage(cols_o, t, 0, cols) > 1  # the grid's columns only: the overhang is never written
        slot = np.cumsum(col_multi) - 1  # a shared column's place in the column sums
        self._col_runs = [(a, b, int(slot[a])) for a, b in runs(col_multi)]
        self._cols = {c: layout(col_multi[c : c + t], slot[c : c + t]) for c in cols_o}
        shared_rows = max(int(s.sum()) for s in shared.values())
        self._out = torch.full((dim, t, cols), float("nan"), dtype=torch.float32, device=dev)
        self._racc = torch.zeros((dim, shared_rows, cols), dtype=torch.float64, device=dev)
        self._cacc = torch.zeros((dim, t, int(col_multi.sum())), dtype=torch.float64, device=dev)
        self._wsum = torch.zeros((t, cols), dtype=torch.float64, device=dev)
        self._prod = torch.empty(dim * t * t, dtype=torch.float64, device=dev)  # products of one piece of a tile
        self._added: set[int] = set()  # tile columns added in the open tile row
        self._base = 0  # row of the buffer's first row, counted from ``origin``
        self._tile_row = plan.tile_rows.start
        self.rows_written = 0

    @property
    def held_bytes(self) -> int:
        """Bytes of the buffers held for the open tile row (the same for every row, and any scene height)."""
        return sum(b.nbytes for b in (self._out, self._racc, self._cacc, self._wsum, self._prod))

    def add(self, tile: Tile, out: torch.Tensor | np.ndarray, cell_valid: torch.Tensor | np.ndarray) -> None:
        """Blend one tile: ``out`` ``(D, t, t)`` tensor (best on the device) or ``(t, t, D)`` array, ``cell_valid``
        ``(t, t)`` bool."""
        if tile.row != self._tile_row:
            raise ValueError(f"tile row {tile.row} added while row {self._tile_row} is open: call finish_row first")
        top = tile.cell_row * self.scale - self.origin[0]
        if top != self._base:
            raise ValueError(f"tile {tile.row},{tile.col} starts at row {top}, the open tile row at {self._base}")
        v = torch.from_numpy(out).permute(2, 0, 1) if isinstance(out, np.ndarray) else out.to(self.device)
        cv = torch.as_tensor(cell_valid, device=self.device)
        c = tile.cell_col * self.scale - self.origin[1]
        all_valid = bool(cv.all())
        w = self.window if all_valid else self.window * cv
        if not all_valid:  # cells with no valid pixel carry no weight, and may hold anything (0/0 of padding)
            v = torch.where(cv, v, 0.0)
        rows, cols = self._rows[top], self._cols[c]
        self._added.add(c)
        width = min(self.tile_out, self.grid_shape[1] - c)
        for i0, i1, s in rows.slots:  # rows shared with another tile row: summed across the tile's width
            self._sum(self._racc[:, s : s + i1 - i0, c : c + width], v, w, i0, i1, 0, width, c)
        for i0, i1 in rows.own:
            for j0, j1 in cols.own:  # seen by this tile only: its value (NaN where invalid)
                piece = v[:, i0:i1, j0:j1] if all_valid else torch.where(cv[i0:i1, j0:j1], v[:, i0:i1, j0:j1], float("nan"))
                torch.add(piece, 0.0, out=self._out[:, i0:i1, c + j0 : c + j1])  # + 0.0: -0.0 becomes 0.0, as in the blend
            for j0, j1, p in cols.slots:  # columns shared with the next or previous tile column
                self._sum(self._cacc[:, i0:i1, p : p + j1 - j0], v, w, i0, i1, j0, j1, c)

    def _sum(self, acc: torch.Tensor, v: torch.Tensor, w: torch.Tensor, i0: int, i1: int, j0: int, j1: int, c: int) -> None:
        """``acc += v * w`` over the tile's cells ``[i0, i1) x [j0, j1)``, in float64: the products and sums of the
        previous whole-tile blend, in the same order (two kernels, so no fused multiply-add)."""
        prod = self._prod[: v.shape[0] * (i1 - i0) * (j1 - j0)].view(v.shape[0], i1 - i0, j1 - j0)
        torch.mul(v[:, i0:i1, j0:j1], w[i0:i1, j0:j1], out=prod)
        acc += prod
        self._wsum[i0:i1, c + j0 : c + j1] += w[i0:i1, j0:j1]

    def _mean(self, acc: torch.Tensor, rows: slice, cols: slice) -> None:
        """``_out[:, rows, cols]`` = the weighted means ``acc / wsum`` (``acc`` is used up), NaN where no weight."""
        wsum = self._wsum[rows, cols]
        out = self._out[:, rows, cols]
        out.copy_(acc.div_(wsum))
        empty = wsum == 0
        if bool(empty.any()):
            out[:, empty] = float("nan")

    def finish_row(self) -> None:
        """Flush the rows no later tile touches and slide the shared rows down to the next tile row."""
        done = min(self.plan.rows_done_after(self._tile_row) * self.scale, self.full_rows) - self.origin[0]
        n = done - self._base
        rows = self._rows[self._base]  # every tile row starts where the previous one's finished rows ended
        if n > 0:
            for i0, i1 in rows.own:
                i1 = min(i1, n)
                if i1 <= i0:
                    continue
                for c, cols in self._cols.items():  # the part of an empty tile (not added) that no other tile sees
                    if c not in self._added:
                        for j0, j1 in cols.own:
                            self._out[:, i0:i1, c + j0 : c + j1] = float("nan")
                for a, b, p in self._col_runs:
                    self._mean(self._cacc[:, i0:i1, p : p + b - a], slice(i0, i1), slice(a, b))
            for i0, i1, s in rows.slots:
                if i0 < n:
                    i1 = min(i1, n)
                    self._mean(self._racc[:, s : s + i1 - i0], slice(i0, i1), slice(None))
            block = self._out[:, :n].cpu()  # on the CPU: a view of the buffer, read by the sink before it changes
            self.sink(self.origin[0] + self._base, block.numpy().transpose(1, 2, 0))
            self.rows_written += n
            # rows shared with the next tile row (rows n ..): the last ``keep`` shared ones, moved to the first places
            keep = sum(max(0, i1 - max(i0, n)) for i0, i1, _ in rows.slots)
            used = sum(i1 - i0 for i0, i1, _ in rows.slots)
            if keep:
                self._racc[:, :keep] = self._racc[:, used - keep : used].clone()
            self._racc[:, keep:] = 0.0
            self._cacc.zero_()
            self._wsum[:keep] = self._wsum[n : n + keep].clone()
            self._wsum[keep:] = 0.0
        self._added.clear()
        self._base = done
        self._tile_row += 1

    @property
    def done(self) -> bool:
        return self.rows_written >= self.grid_shape[0]


@dataclass(frozen=True)
class Layout:
    """A tile's cells along one axis: ``own`` runs ``[a, b)`` no other tile sees, ``slots`` runs ``(a, b, s)`` it
    shares with others, summed at places ``s ..`` of the float64 sums."""

    own: list[tuple[int, int]]
    slots: list[tuple[int, int, int]]


def layout(shared: np.ndarray, place: np.ndarray) -> Layout:
    """The layout of a tile's cells along one axis: ``shared`` ``(n,)`` bool, true where another tile covers them
    too; ``place`` ``(n,)`` where each shared cell is summed (consecutive along a run)."""
    return Layout(runs(~shared), [(a, b, int(place[a])) for a, b in runs(shared)])
