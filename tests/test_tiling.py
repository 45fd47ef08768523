"""Tile plans: every cell covered, tiles on the patch grid, rows flushed only when finished (hypothesis)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox

from geodino.errors import InputError
from geodino.tiling import TilePlan, feature_geobox, tile_geobox


@st.composite
def plans(draw) -> TilePlan:
    tile_cells = draw(st.integers(1, 12))
    overlap_cells = draw(st.integers(0, tile_cells - 1))
    return TilePlan(
        height=draw(st.integers(1, 700)),
        width=draw(st.integers(1, 700)),
        tile=16 * tile_cells,
        overlap=16 * overlap_cells,
    )


@settings(max_examples=300, deadline=None)
@given(plans())
def test_tiles_cover_every_cell_on_the_patch_grid(plan: TilePlan) -> None:
    rows, cols = plan.grid_shape
    assert (rows, cols) == (-(-plan.height // 16), -(-plan.width // 16))
    cover = np.zeros((rows + plan.tile_cells, cols + plan.tile_cells), dtype=int)
    tiles = list(plan.tiles())
    assert len(tiles) == len(plan) == plan.shape[0] * plan.shape[1]
    for t in tiles:
        r, c, h, w = t.px_window
        assert r % 16 == 0 and c % 16 == 0 and h == w == plan.tile  # on the grid, never shifted or shrunk
        assert t.cell_row < rows and t.cell_col < cols  # no tile starts outside the scene
        cover[t.cell_row : t.cell_row + t.cells, t.cell_col : t.cell_col + t.cells] += 1
        vr, vc = plan.valid_cells(t)
        assert 1 <= vr <= t.cells and 1 <= vc <= t.cells
        assert (t.cell_row + vr == rows) or vr == t.cells
    assert (cover[:rows, :cols] >= 1).all()
    # Minimal: without the last origin of an axis the scene end would not be covered.
    for origins, n in ((plan.row_origins, rows), (plan.col_origins, cols)):
        assert origins[0] == 0
        assert all(b - a == plan.stride_cells for a, b in itertools.pairwise(origins))
        if len(origins) > 1:
            assert origins[-2] + plan.tile_cells < n


@settings(max_examples=200, deadline=None)
@given(plans())
def test_rows_are_flushed_only_when_no_later_tile_touches_them(plan: TilePlan) -> None:
    done = [plan.rows_done_after(i) for i in range(plan.shape[0])]
    assert done == sorted(done) and done[-1] == plan.grid_shape[0]
    for i, k in enumerate(done):
        later = plan.row_origins[i + 1 :]
        assert all(origin >= k for origin in later)
        # and every flushed row was covered by tile rows up to i
        assert k <= plan.row_origins[i] + plan.tile_cells


def test_small_scene_is_one_tile_reaching_past_the_edge() -> None:
    plan = TilePlan(height=300, width=300, tile=512, overlap=64)
    (t,) = plan.tiles()
    assert t.px_window == (0, 0, 512, 512)
    assert plan.grid_shape == (19, 19) and plan.valid_cells(t) == (19, 19)


def test_worked_example() -> None:
    plan = TilePlan(height=1000, width=600, tile=256, overlap=64)  # 16 cells, stride 12
    assert plan.grid_shape == (63, 38)
    assert plan.row_origins == [0, 12, 24, 36, 48]  # 48 + 16 = 64 >= 63
    assert plan.col_origins == [0, 12, 24]  # 24 + 16 = 40 >= 38
    assert [plan.rows_done_after(i) for i in range(5)] == [12, 24, 36, 48, 63]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile": 500}, "tile 500 must be a positive multiple of the patch size 16"),
        ({"overlap": 40}, "overlap 40 must be a multiple of the patch size 16"),
        ({"overlap": 512}, "overlap 512 must be smaller than the tile 512"),
        ({"height": 0}, "scene of 0x100 pixels is empty"),
    ],
)
def test_bad_plans_are_one_line_errors(kwargs: dict, message: str) -> None:
    args = {"height": 100, "width": 100, "tile": 512, "overlap": 64, **kwargs}
    with pytest.raises(InputError, match=message):
        TilePlan(**args)


def test_feature_and_tile_georeferencing_is_exact() -> None:
    scene = GeoBox((1000, 600), Affine(0.6, 0, 320000.0, 0, -0.6, 4881000.0), "EPSG:32619")
    features = feature_geobox(scene)
    assert features.shape == (63, 38)
    assert features.affine == Affine(9.6, 0, 320000.0, 0, -9.6, 4881000.0)
    assert features.crs == scene.crs
    plan = TilePlan(1000, 600, tile=256, overlap=64)
    last = list(plan.tiles())[-1]
    box = tile_geobox(scene, last)
    assert box.shape == (256, 256)
    assert box.affine == Affine(0.6, 0, 320000.0 + 24 * 16 * 0.6, 0, -0.6, 4881000.0 - 48 * 16 * 0.6)
    # the tile's first cell is the feature raster's cell (48, 24): same corner
    assert box.affine @ (0, 0) == features.affine @ (last.cell_col, last.cell_row)
