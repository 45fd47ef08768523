"""Block-wise encoding: sub-plans of the scene-wide tile plan stitch to exactly the whole-scene values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geodino
from geodino.adapter import make_adapter
from geodino.api import SCENE_ATTR
from geodino.blocks import BlockPlan, ModelRef, auto_chunk, loaded_models, run_block
from geodino.engine import EncodeOptions, encode_scene
from geodino.errors import InputError
from geodino.job import Tiling, job_of
from geodino.scene import open_scene
from geodino.tiling import TilePlan
from tests.scenes import TRANSFORM, PatchProbe, coordinate_raster, write_raster


def test_block_plan_partitions_the_grid_and_sub_plans_hold_every_touching_tile() -> None:
    plan = TilePlan(1000, 700, 128, 32)  # 63 x 44 cells, tiles of 8 cells every 6
    blocks = BlockPlan(plan, 10)
    assert blocks.shape == (7, 5) and len(blocks) == 35 and blocks.depth == 112
    cover = np.zeros(plan.grid_shape, int)
    for b in blocks.blocks():
        cover[b.row0 : b.row1, b.col0 : b.col1] += 1
        sub = plan.for_cells(b.row0, b.row1, b.col0, b.col1)
        touching = {
            (t.row, t.col)
            for t in plan.tiles()
            if t.cell_row < b.row1 and t.cell_row + t.cells > b.row0 and t.cell_col < b.col1 and t.cell_col + t.cells > b.col0
        }
        assert {(t.row, t.col) for t in sub.tiles()} == touching and len(sub) == len(touching)
        r0, r1, c0, c1 = sub.cell_bounds
        assert r0 <= b.row0 and r1 >= b.row1 and c0 <= b.col0 and c1 >= b.col1
    assert (cover == 1).all()
    assert blocks.tiles_run() > len(plan)  # halo tiles run once per block they touch
    assert BlockPlan(plan, 64).tiles_run() == len(plan)  # one block: the whole plan
    with pytest.raises(InputError, match="--chunk 0"):
        BlockPlan(plan, 0)
    with pytest.raises(ValueError, match="not inside"):
        plan.for_cells(0, 64, 0, 10)


def test_auto_chunk_is_256_cells_or_less_to_give_every_worker_two_blocks() -> None:
    plan = TilePlan(4096, 4096, 512, 64)  # 256 x 256 cells
    assert [auto_chunk(plan, n) for n in (1, 2, 4, 8, 64)] == [256, 128, 64, 64, 64]
    assert len(BlockPlan(plan, auto_chunk(plan, 2))) == 4 and auto_chunk(TilePlan(100, 100), 4) == 64


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 200),
    w=st.integers(1, 200),
    tile_cells=st.integers(2, 6),
    overlap_cells=st.integers(0, 5),
    chunk=st.integers(1, 9),
    batch=st.integers(1, 4),
)
def test_blocks_equal_the_whole_scene_bit_for_bit(tmp_path_factory, h, w, tile_cells, overlap_cells, chunk, batch) -> None:
    overlap_cells = min(overlap_cells, tile_cells - 1)
    d = tmp_path_factory.mktemp("blk")
    src = write_raster(d / "s.tif", coordinate_raster(h, w))
    options = EncodeOptions(tile=16 * tile_cells, overlap=16 * overlap_cells, batch_size=batch)
    res = encode_scene(src, d / "whole.tif", PatchProbe(), options)
    with rasterio.open(res.out) as ds:
        whole = ds.read()
    scene = open_scene(src)
    job = job_of(scene, make_adapter(scene, 3), PatchProbe(), Tiling(tile=options.tile, overlap=options.overlap, batch_size=1))
    blocks = BlockPlan(job.plan, chunk)
    out = np.full_like(whole, -1.0)
    for b in blocks.blocks():  # another batch size: tiles do not depend on their batch mates
        out[:, b.row0 : b.row1, b.col0 : b.col1] = run_block(job, PatchProbe(), b)
    np.testing.assert_array_equal(out, whole)


def test_lazy_encode_equals_encode_scene_and_builds_the_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_raster(tmp_path / "s.tif", coordinate_raster(300, 250))
    scene = geodino.open_scene(src)
    assert scene.dims == ("band", "y", "x") and scene.rio.crs == "EPSG:32633" and list(scene["band"].values) == ["1", "2", "3"]
    import geodino.models as models

    builds = []
    real = models.build_model
    monkeypatch.setattr(models, "build_model", lambda *a, **k: builds.append(a) or real(*a, **k))
    before = loaded_models()
    feats = geodino.encode(scene, model="geodino_tiny_swiglu", weights="random", tile=64, overlap=16, chunk=5)
    assert feats.dims == ("feature", "y", "x") and feats.shape == (64, 19, 16) and feats.chunks[1] == (5, 5, 5, 4)
    assert feats.rio.crs == "EPSG:32633" and feats.rio.transform() == scene.rio.transform() @ Affine.scale(16)
    values = feats.compute()
    assert len(builds) == 1 and loaded_models() == before + 1  # one build for the 16 blocks
    ref = ModelRef("geodino_tiny_swiglu", "random")
    res = encode_scene(src, tmp_path / "whole.tif", ref.extractor(), EncodeOptions(tile=64, overlap=16))
    with rasterio.open(res.out) as ds:
        np.testing.assert_array_equal(values.values, ds.read())
        np.testing.assert_allclose(values["x"].values[:2], [ds.xy(0, 0)[0], ds.xy(0, 1)[0]])
    assert len(builds) == 1


def test_lazy_encode_of_a_crop_equals_encoding_the_cropped_file(tmp_path: Path) -> None:
    data = coordinate_raster(300, 280)
    src = write_raster(tmp_path / "s.tif", data)
    part = geodino.open_scene(src).isel(y=slice(37, 237), x=slice(101, 270))  # offsets not on the 16-px grid
    feats = geodino.encode(part, model=PatchProbe(), tile=64, overlap=16, chunk=4).compute()
    crop = write_raster(tmp_path / "crop.tif", data[:, 37:237, 101:270], transform=TRANSFORM @ Affine.translation(101, 37))
    res = encode_scene(crop, tmp_path / "crop_f.tif", PatchProbe(), EncodeOptions(tile=64, overlap=16))
    with rasterio.open(res.out) as ds:
        np.testing.assert_array_equal(feats.values, ds.read())  # pixels, statistics and grid all from the crop
        assert feats.rio.transform() == ds.transform and feats.shape[1:] == (13, 11)
    assert feats.attrs["scene_grid"]["offset"] == [37, 101]
    assert repr(open_scene(src).crop(37, 101, 200, 169)).endswith("crop at row 37 col 101)")


def test_lazy_encode_refuses_resampled_arrays_and_takes_band_subsets(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", coordinate_raster(100, 100))
    scene = geodino.open_scene(src)
    with pytest.raises(InputError, match="resampled or shifted"):
        geodino.encode(scene.isel(x=slice(0, 50, 2)), model=PatchProbe())
    with pytest.raises(InputError, match=r"geodino\.open_scene"):
        geodino.encode(scene.copy(data=scene.values).drop_attrs(), model=PatchProbe())
    for changed in (scene * 0, scene.where(scene > 3, 0), scene.astype("float32")):  # values are read from the file
        # xarray before 2025.11 drops attrs in arithmetic: such an array no longer says it came from open_scene
        said = "values were changed" if SCENE_ATTR in changed.attrs else r"geodino\.open_scene"
        with pytest.raises(InputError, match=said):
            geodino.encode(changed, model=PatchProbe())
    with pytest.raises(InputError, match="not both"):
        geodino.encode(scene.isel(band=[2, 1, 0]), model=PatchProbe(), bands="1,2,3")
    with pytest.raises(InputError, match="keep band as a list"):
        geodino.encode(scene.isel(band=0), model=PatchProbe())
    feats = geodino.encode(scene.sel(band=["3", "2", "1"]), model=PatchProbe(), tile=64, overlap=16)
    assert feats.attrs["adapter"]["names"] == ["3", "2", "1"]
