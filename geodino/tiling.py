"""Tile plans on the scene-wide patch grid: pure functions over values, no I/O.

Every tile starts on a multiple of the patch size, so each tile's ``(tile/p) x (tile/p)`` tokens land
exactly on cells of the feature raster (one cell per ``p x p`` pixel patch). Tiles are never shifted
to fit inside the scene: the last tile of a row or column may reach past the scene edge, and the
reader fills that part (boundless read) and marks it invalid.

Units: ``px`` are scene pixels, ``cells`` are feature-raster cells (patches).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox

from geodino.errors import InputError


def grid_crs(geobox: GeoBox) -> CRS:
    """The CRS of a scene or output grid: every grid geodino builds has one (scenes without are refused on opening)."""
    crs = geobox.crs
    if crs is None:
        raise InputError("the grid has no CRS: georeference the scene first")
    return crs


def axis_origins(n_cells: int, tile_cells: int, stride_cells: int) -> list[int]:
    """Tile starts (in cells) along one axis: ``0, s, 2s, ...``, as few as cover ``n_cells``."""
    if n_cells <= tile_cells:
        return [0]
    count = math.ceil((n_cells - tile_cells) / stride_cells) + 1
    return [i * stride_cells for i in range(count)]


@dataclass(frozen=True)
class Tile:
    """One tile: its place in the tile grid and its windows in cells and in pixels."""

    row: int
    col: int
    cell_row: int  # top-left cell on the feature grid
    cell_col: int
    cells: int  # side in cells
    patch: int

    @property
    def px_window(self) -> tuple[int, int, int, int]:
        """``(row_off, col_off, height, width)`` in scene pixels; may reach past the scene."""
        p = self.patch
        return self.cell_row * p, self.cell_col * p, self.cells * p, self.cells * p


@dataclass(frozen=True)
class TilePlan:
    """Tiles of ``tile x tile`` pixels overlapping by ``overlap`` pixels over a ``height x width`` scene.

    ``region`` ``(i0, i1, j0, j1)`` restricts the plan to tile rows ``[i0, i1)`` and columns ``[j0, j1)``
    of the scene-wide plan (same tiles, same places; see :meth:`for_cells`): a block of a distributed run.
    """

    height: int
    width: int
    tile: int = 512
    overlap: int = 64
    patch: int = 16
    region: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"scene of {self.height}x{self.width} pixels is empty")
        if self.tile <= 0 or self.tile % self.patch:
            raise InputError(f"tile {self.tile} must be a positive multiple of the patch size {self.patch}")
        if self.overlap < 0 or self.overlap % self.patch:
            raise InputError(f"overlap {self.overlap} must be a multiple of the patch size {self.patch}")
        if self.overlap >= self.tile:
            raise InputError(f"overlap {self.overlap} must be smaller than the tile {self.tile}")

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Shape of the feature raster in cells: ``ceil(scene / patch)`` on each axis."""
        return -(-self.height // self.patch), -(-self.width // self.patch)

    @property
    def tile_cells(self) -> int:
        return self.tile // self.patch

    @property
    def stride_cells(self) -> int:
        return (self.tile - self.overlap) // self.patch

    @property
    def row_origins(self) -> list[int]:
        return axis_origins(self.grid_shape[0], self.tile_cells, self.stride_cells)

    @property
    def col_origins(self) -> list[int]:
        return axis_origins(self.grid_shape[1], self.tile_cells, self.stride_cells)

    @property
    def tile_rows(self) -> range:
        """Indexes of the plan's tile rows (all of them unless ``region`` is set)."""
        return range(self.region[0], self.region[1]) if self.region else range(len(self.row_origins))

    @property
    def tile_cols(self) -> range:
        return range(self.region[2], self.region[3]) if self.region else range(len(self.col_origins))

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tiles ``(rows, cols)``."""
        return len(self.tile_rows), len(self.tile_cols)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def tiles(self) -> Iterator[Tile]:
        """The plan's tiles, row-major (the order in which stitched rows can be flushed)."""
        rows, cols = self.row_origins, self.col_origins
        for i in self.tile_rows:
            for j in self.tile_cols:
                yield Tile(i, j, rows[i], cols[j], self.tile_cells, self.patch)

    @property
    def cell_bounds(self) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)``: the feature cells the plan's tiles cover, clipped to the grid."""
        rows, cols = self.row_origins, self.col_origins
        ti, tj, t = self.tile_rows, self.tile_cols, self.tile_cells
        h, w = self.grid_shape
        return rows[ti.start], min(rows[ti.stop - 1] + t, h), cols[tj.start], min(cols[tj.stop - 1] + t, w)

    def rows_done_after(self, tile_row: int) -> int:
        """Feature rows up to ``k`` (exclusive) that no tile of the plan after tile-row ``tile_row`` touches."""
        return self.row_origins[tile_row + 1] if tile_row + 1 < self.tile_rows.stop else self.cell_bounds[1]

    def for_cells(self, row0: int, row1: int, col0: int, col1: int) -> TilePlan:
        """The sub-plan of every tile touching feature cells ``[row0, row1) x [col0, col1)``.

        Stitching the sub-plan gives those cells exactly the values of the whole plan: every tile that
        reaches them is in it, in the same order (dask's ``map_overlap`` with ``depth`` = tile - patch
        pixels, ``boundary`` none (past the scene is invalid), ``trim`` to the block).
        """
        t = self.tile_cells

        def span(origins: list[int], lo: int, hi: int) -> tuple[int, int]:
            hit = [k for k, o in enumerate(origins) if o < hi and o + t > lo]
            return hit[0], hit[-1] + 1

        h, w = self.grid_shape
        if not (0 <= row0 < row1 <= h and 0 <= col0 < col1 <= w):
            raise ValueError(f"cells [{row0}, {row1}) x [{col0}, {col1}) are not inside the {h}x{w} grid")
        return replace(self, region=(*span(self.row_origins, row0, row1), *span(self.col_origins, col0, col1)))

    def valid_cells(self, tile: Tile) -> tuple[int, int]:
        """How many of the tile's cell rows and columns lie (at least partly) inside the scene."""
        rows, cols = self.grid_shape
        return min(tile.cells, rows - tile.cell_row), min(tile.cells, cols - tile.cell_col)


def feature_geobox(scene: GeoBox, patch: int = 16) -> GeoBox:
    """Georeferencing of the feature raster: same CRS, transform ``scene x scale(patch)``,
    shape ``ceil(scene shape / patch)``."""
    return scene.zoom_out(patch)


def cell_centres(geobox: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` map coordinates of the cell centres of a north-up grid (xarray's coordinates)."""
    h, w = geobox.shape.yx
    a = geobox.affine
    return a.f + a.e * (np.arange(h) + 0.5), a.c + a.a * (np.arange(w) + 0.5)


def tile_geobox(scene: GeoBox, tile: Tile) -> GeoBox:
    """Georeferencing of a tile's pixels (the part past the scene edge included)."""
    row_off, col_off, h, w = tile.px_window
    return GeoBox((h, w), scene.affine @ Affine.translation(col_off, row_off), scene.crs)
