"""Stitching: exact georeferencing with a patch-local stand-in model, blending weights, nodata cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geodino.adapter import make_adapter
from geodino.engine import EncodeOptions, encode_scene
from geodino.reader import cell_valid
from geodino.scene import open_scene
from geodino.stitch import Stitcher, blend_window
from geodino.tiling import TilePlan
from tests.scenes import TRANSFORM, PatchProbe, coordinate_raster, expected_probe, write_raster


def encode_probe(src: Path, out: Path, tile: int, overlap: int, batch: int = 3, **kw: object) -> np.ndarray:
    encode_scene(src, out, PatchProbe(), EncodeOptions(tile=tile, overlap=overlap, batch_size=batch, overwrite=True, **kw))
    with rasterio.open(out) as ds:
        return ds.read()


plans = st.integers(2, 6).flatmap(
    lambda t: st.tuples(st.integers(1, 230), st.integers(1, 230), st.just(16 * t), st.integers(0, t - 1).map(lambda o: 16 * o))
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans, batch=st.integers(1, 5))
def test_stitched_raster_equals_the_direct_per_patch_computation(tmp_path: Path, plan: tuple[int, int, int, int], batch: int) -> None:
    h, w, tile, overlap = plan
    raw = coordinate_raster(h, w)
    src = write_raster(tmp_path / "coords.tif", raw)
    got = encode_probe(src, tmp_path / "feat.tif", tile, overlap, batch)
    adapter = make_adapter(open_scene(src))  # generic preset: scene-wide percentile stretch
    expected = expected_probe(adapter.to_unit(raw))
    assert got.shape == expected.shape == (6, -(-h // 16), -(-w // 16))
    assert np.array_equal(got, expected)  # exact: every cell, the scene's last rows and columns included
    with rasterio.open(tmp_path / "feat.tif") as ds:
        assert ds.transform == TRANSFORM @ Affine.scale(16)
        assert ds.crs.to_epsg() == 32633


def test_feature_cells_line_up_with_map_coordinates(tmp_path: Path) -> None:
    raw = coordinate_raster(100, 75)
    src = write_raster(tmp_path / "coords.tif", raw)
    got = encode_probe(src, tmp_path / "feat.tif", 64, 32)
    with rasterio.open(src) as scene, rasterio.open(tmp_path / "feat.tif") as feat:
        for r, c in [(0, 0), (3, 2), (6, 4)]:  # the last row/column cells are partial (100 = 6*16 + 4)
            x, y = feat.xy(r, c, offset="ul")
            sr, sc = scene.index(x + 1e-6, y - 1e-6)
            assert (sr, sc) == (16 * r, 16 * c)
    unit = make_adapter(open_scene(src)).to_unit(raw)
    assert got[0, 6, 4] == unit[0, 96, 64] and got[1, 6, 4] == unit[1, 96, 64]


def test_blend_window_is_positive_everywhere_and_peaks_inside() -> None:
    for cells in (1, 2, 7, 32):
        w = blend_window(cells, floor=0.1)
        assert w.shape == (cells, cells)
        assert w.min() >= 0.1**2 - 1e-12
        assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    w = blend_window(32)
    assert w[16, 16] > w[0, 0] and w[0, 0] == pytest.approx((0.1 + 0.9 * np.sin(np.pi * 0.5 / 32) ** 2) ** 2)


@settings(max_examples=60, deadline=None)
@given(plan=plans)
def test_every_cell_inside_the_scene_gets_weight_and_rows_stream_in_order(plan: tuple[int, int, int, int]) -> None:
    h, w, tile, overlap = plan
    p = TilePlan(h, w, tile, overlap)
    rows, cols = p.grid_shape
    blocks: list[tuple[int, np.ndarray]] = []
    st_ = Stitcher(p, 2, lambda r0, b: blocks.append((r0, b.copy())))
    held = 0
    for t in p.tiles():
        vr, vc = p.valid_cells(t)
        valid = np.zeros((t.cells, t.cells), bool)
        valid[:vr, :vc] = True
        out = np.full((t.cells, t.cells, 2), 3.25, np.float32)
        st_.add(t, out, valid)
        if t.col == p.shape[1] - 1:
            st_.finish_row()
        held = max(held, st_.held_bytes)
    assert st_.done
    assert [r0 for r0, _ in blocks] == list(np.cumsum([0] + [b.shape[0] for _, b in blocks])[:-1])
    full = np.concatenate([b for _, b in blocks])
    assert full.shape == (rows, cols, 2)
    assert np.all(full == 3.25)  # weights sum > 0 everywhere, the outermost rows and columns too
    assert held == st_.held_bytes  # nothing grows during the run
    tall, taller = (Stitcher(TilePlan(h + k * tile, w, tile, overlap), 2, lambda r0, b: None) for k in (2, 9))
    assert tall.held_bytes == taller.held_bytes  # one row of tiles, whatever the height


def test_cells_without_valid_input_are_nodata_and_empty_tiles_are_skipped(tmp_path: Path) -> None:
    raw = coordinate_raster(160, 160)
    raw[:, :80, :] = 0  # the top half is nodata: tiles of 64 px over rows 0-63 see none of it
    raw[:, 100:103, 50] = 0  # three nodata pixels inside a cell: the cell keeps its other pixels
    src = write_raster(tmp_path / "holes.tif", raw, nodata=0)
    probe = PatchProbe()
    res = encode_scene(src, tmp_path / "feat.tif", probe, EncodeOptions(tile=64, overlap=16, overwrite=True))
    with rasterio.open(tmp_path / "feat.tif") as ds:
        got = ds.read()
        assert np.isnan(ds.nodata)
    invalid_cells = ~cell_valid((raw != 0).any(axis=0), 16)
    assert np.array_equal(np.isnan(got).all(axis=0), invalid_cells)
    assert not np.isnan(got[:, ~invalid_cells]).any()
    assert res.skipped == 3 and res.tiles == 9  # the first tile row lies wholly in the nodata half
    assert probe.calls == -(-(res.tiles - res.skipped) // 4)


def test_alpha_band_is_a_mask_not_a_band_and_nan_pixels_are_invalid(tmp_path: Path) -> None:
    rgba = np.concatenate([coordinate_raster(64, 64).astype(np.uint8), np.full((1, 64, 64), 255, np.uint8)])
    rgba[3, :, :16] = 0  # transparent first column of cells
    src = write_raster(tmp_path / "rgba.tif", rgba, photometric="RGB", alpha="YES")
    scene = open_scene(src)
    assert scene.band_names == ("red", "green", "blue") and scene.has_mask
    got = encode_probe(src, tmp_path / "a.tif", 32, 0)
    assert np.isnan(got[:, :, 0]).all() and np.isfinite(got[:, :, 1:]).all()
    floats = coordinate_raster(48, 48).astype(np.float32)
    floats[:, 16:32, 16:32] = np.nan  # the centre cell has no data in any band
    got = encode_probe(write_raster(tmp_path / "f.tif", floats), tmp_path / "f_out.tif", 32, 16)
    assert np.array_equal(np.isnan(got).all(axis=0), np.array([[False] * 3, [False, True, False], [False] * 3]))
