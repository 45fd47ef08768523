"""Feature rasters written during the run: overviews made as rows arrive, COG and Zarr streams, nothing left on failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate

from geodino.cogfile import CogFile, CogLayout, template_tags
from geodino.cogstream import CogStream, halve
from geodino.engine import EncodeOptions, encode_scene
from geodino.writer import FeatureWriter
from tests.scenes import TRANSFORM, PatchProbe, coordinate_raster, write_raster


def nanmean2(x: np.ndarray) -> np.ndarray:
    """Reference: float64 mean of the valid cells of each 2x2 window (edge windows clipped), NaN where none."""
    d, r, w = x.shape
    out = np.full((d, -(-r // 2), -(-w // 2)), np.nan)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            win = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(d, -1).astype(np.float64)
            n = (~np.isnan(win)).sum(1)
            out[:, i, j] = np.where(n > 0, np.nansum(win, 1) / np.maximum(n, 1), np.nan)
    return out


def test_halve_is_the_mean_of_the_valid_cells_of_each_window() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 9)).astype(np.float32)
    assert np.allclose(halve(x), nanmean2(x), rtol=1e-6, atol=1e-7)  # no NaN: the fast path
    x[:, :2, :2] = np.nan  # a window with nothing valid
    x[0, 4, 5] = np.nan  # a window with three valid cells
    got, want = halve(x), nanmean2(x)
    assert got.shape == (3, 4, 5) and got.dtype == np.float32
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got[:, 0, 0]).all()
    assert np.allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_cog_stream_writes_every_level_as_rows_arrive(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(1)
    h, w, d = 150, 70, 5
    data = rng.standard_normal((d, h, w)).astype(np.float32)
    data[:, 40:50, 10:30] = np.nan
    layout = CogLayout(h, w, d, dtype, block=32, factors=(2, 4), block_rows=16)
    tags = template_tags(None, TRANSFORM, d, dtype, float("nan"), [f"b{i}" for i in range(d)], {"K": "v"})
    path = tmp_path / "s.tif"
    with CogFile(path, layout, tags, spare=4096) as cog:
        stream = CogStream(cog, layout, workers=2)
        r = 0
        for n in [1, 7, 16, 3, 29, 50, 44]:  # row pieces of any size, in order
            stream.push(data[:, r : r + n])
            r += n
        assert r == h
        stream.close()
    assert cog_validate(str(path))[0]
    want = data if dtype == "float32" else data.astype(np.float16).astype(np.float32)
    level1 = nanmean2(data)
    level2 = nanmean2(level1.astype(np.float32))
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4] and ds.block_shapes[0] == (16, 32) and ds.tags()["K"] == "v"
        assert np.array_equal(ds.read(), want, equal_nan=True)
        for level, ref in ((1, level1), (2, level2)):
            with rasterio.open(path, OVERVIEW_LEVEL=level - 1) as ov:
                got = ov.read()
            assert got.shape == ref.shape
            assert np.array_equal(np.isnan(got), np.isnan(ref))
            assert np.allclose(got[~np.isnan(got)], ref[~np.isnan(ref)], rtol=1e-3 if dtype == "float16" else 1e-6, atol=1e-6)


def test_streamed_cog_and_zarr_hold_the_same_values(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", coordinate_raster(200, 230))
    opts = dict(tile=64, overlap=16, overwrite=True)
    cog = encode_scene(src, tmp_path / "f.tif", PatchProbe(), EncodeOptions(**opts))  # type: ignore[arg-type]
    zarr_res = encode_scene(src, tmp_path / "f.zarr", PatchProbe(), EncodeOptions(fmt="zarr", **opts))  # type: ignore[arg-type]
    with rasterio.open(cog.out) as ds:
        a = ds.read()
        assert ds.profile["blockysize"] == 64 and ds.tags()["GEODINO_NODATA"] == "nan"
    b = xr.open_zarr(zarr_res.out).features.values
    assert a.shape == b.shape and a.shape[1:] == (13, 15) and not np.isnan(a).all()
    assert np.array_equal(a, b, equal_nan=True)


def test_a_failed_stream_leaves_nothing(tmp_path: Path) -> None:
    grid = GeoBox((40, 300), TRANSFORM, "EPSG:32633")
    for fmt in ("cog", "zarr"):
        dest = tmp_path / f"out.{fmt}"
        writer = FeatureWriter(dest, grid, 4, fmt, "float32", stream=["a", "b", "c", "d"])
        writer.write_rows(0, np.ones((33, 300, 4), np.float32))  # a block row is compressed and on disk already
        assert dest.exists()
        writer.abort()
        assert not dest.exists() and list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["cog", "zarr"])
def test_a_wide_scene_runs_in_column_strips_with_the_values_of_one_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    import geodino.streams
    from geodino.adapter import make_adapter
    from geodino.scene import open_scene
    from tests.scenes import expected_probe

    for name in ("COG_BLOCK", "COG_ROWS", "ZARR_BLOCK", "OVERVIEW_BLOCK"):
        monkeypatch.setattr(geodino.streams, name, 32)  # strips of 32 cells (tiles 32 x 32, 16 x 16 in the overview)
    raw = coordinate_raster(600, 1000)  # 38 x 63 cells: two strips (32 and 31 cells), one overview level
    src = write_raster(tmp_path / "wide.tif", raw)
    seen: list[tuple[int, int]] = []
    out = tmp_path / f"f.{fmt}"
    probe = PatchProbe()
    res = encode_scene(src, out, probe, EncodeOptions(tile=128, overlap=32, fmt=fmt), progress=lambda d, n: seen.append((d, n)))
    expected = expected_probe(make_adapter(open_scene(src)).to_unit(raw))
    if fmt == "cog":
        assert cog_validate(str(out))[0]
        with rasterio.open(out) as ds:
            got = ds.read()
            assert ds.block_shapes[0] == (32, 32) and ds.overviews(1) == [2]
            with rasterio.open(out, OVERVIEW_LEVEL=0) as ov:
                assert ov.block_shapes[0] == (16, 16)
                assert np.allclose(ov.read(), nanmean2(expected), rtol=1e-6, atol=1e-7)  # overviews across strip edges
    else:
        got = xr.open_zarr(out).features.values
    assert np.array_equal(got, expected)  # exact, as in one pass over the whole width
    assert probe.tiles == res.tiles - res.skipped  # every tile ran once: the next strip took the edge tiles from the spill
    total = seen[-1][1]
    assert total > res.tiles and seen[-1][0] == total  # progress counts the edge tiles in both strips
    assert [d for d, _ in seen] == list(range(1, total + 1))
