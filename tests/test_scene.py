"""Scenes, sensor presets and the channel adapter: band names, mapping, scaling, scene-fixed stretch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geodino.adapter import make_adapter
from geodino.engine import EncodeOptions, encode_scene
from geodino.errors import InputError
from geodino.scene import canonical_band, open_scene
from geodino.sensors import load_presets, sensors_dir
from tests.scenes import TRANSFORM, PatchProbe, coordinate_raster, write_raster

PRESETS = {"rgb8", "naip-rgbn", "sentinel2-l2a", "sentinel2-l2a-pb04", "sentinel2-l2a-legacy", "landsat-c2l2", "landsat8-c2l1", "pan"}


def test_presets_ship_for_every_sensor_family() -> None:
    presets = load_presets()
    assert PRESETS | {"landsat7-rgb", "generic", "landsat-tm-c2l2"} <= set(presets)
    assert sensors_dir().parts[-2:] == ("configs", "sensors")
    s2 = presets["sentinel2-l2a-pb04"]
    assert (
        s2.offset == pytest.approx(-0.1)
        and s2.scale == pytest.approx(1e-4)
        and s2.rgb == ("red", "green", "blue")
        and s2.family == "sentinel2"
    )
    l2 = presets["landsat-c2l2"]
    assert (l2.scale, l2.offset) == (pytest.approx(2.75e-5), pytest.approx(-0.2)) and l2.products == ("L[CO]0[89]_L2S[PR]",)


def test_canonical_band_names() -> None:
    assert canonical_band("B04") == canonical_band("b4") == canonical_band("SR_B4") == "B4"
    assert canonical_band("B8A") == "B8A" and canonical_band("Red") == "red"


def test_scene_reads_metadata_only_and_names_bands(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", coordinate_raster(40, 50), nodata=0)
    with rasterio.open(src, "r+") as ds:
        ds.descriptions = ("B04", "B03", "B02")
    scene = open_scene(src)
    assert scene.shape == (40, 50) and scene.count == 3 and scene.dtype == "uint16" and scene.nodata == 0
    assert scene.band_names == ("B04", "B03", "B02") and scene.transform == TRANSFORM and scene.crs == "EPSG:32633"
    assert scene.band_index("b3") == 1 and scene.band_index("3") == 2
    with pytest.raises(InputError, match="no band named 'B08'"):
        scene.band_index("B08")


def test_fixed_preset_scales_digital_numbers_to_reflectance_then_unit_range(tmp_path: Path) -> None:
    dn = np.array([[[1000, 2000, 4000, 0]], [[1500, 1500, 1500, 0]], [[1000, 1000, 1000, 0]], [[9, 9, 9, 9]]], np.uint16)
    src = write_raster(tmp_path / "s2.tif", dn)
    a = make_adapter(open_scene(src), sensor="sentinel2-l2a-pb04")
    assert a.indexes == (0, 1, 2) and a.names == ("B04", "B03", "B02")
    unit = a.to_unit(dn[list(a.indexes)])
    # (DN - 1000) / 10000 in 0-0.3 -> [0, 1]
    assert np.allclose(unit[0, 0], [0.0, 0.1 / 0.3, 0.3 / 0.3, 0.0], atol=1e-6)
    assert np.array_equal(a.valid(dn[:3]), np.array([[True, True, True, False]]))  # all-zero pixel = preset nodata 0
    legacy = make_adapter(open_scene(src), sensor="sentinel2-l2a-legacy")
    assert legacy.offset == 0.0 and np.allclose(legacy.to_unit(dn[:3])[0, 0, :3], [1 / 3, 2 / 3, 1.0], atol=1e-6)


def test_bands_override_by_name_and_by_index(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s2.tif", np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8) + 1000)
    s2 = "sentinel2-l2a-legacy"  # the unnamed 4-band stack gets the preset's B04, B03, B02, B08 layout
    assert make_adapter(open_scene(src), sensor=s2, bands="B08,B04,B03").indexes == (3, 0, 1)
    assert make_adapter(open_scene(src), sensor=s2, bands="nir,red,green").indexes == (3, 0, 1)
    assert make_adapter(open_scene(src), bands="4,3,2").indexes == (3, 2, 1)
    with pytest.raises(InputError, match=r"no band B11 in s2.tif \(sentinel2-l2a-legacy\): its bands are 1 B04 \(red, Sentinel-2"):
        make_adapter(open_scene(src), sensor=s2, bands="B11,B04,B03")
    with pytest.raises(InputError, match="takes 3 bands but 2"):
        make_adapter(open_scene(src), bands="1,2")


def test_unmappable_bands_name_the_bands_and_the_presets(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "five.tif", np.ones((5, 8, 8), np.float32))
    with pytest.raises(InputError) as err:
        make_adapter(open_scene(src))
    msg = str(err.value)
    assert "its 5 band(s), float32, are 1 (unknown)" in msg and all(p in msg for p in PRESETS) and "--bands 1,2,3" in msg


def test_percentile_stretch_comes_from_the_whole_scene_not_a_tile(tmp_path: Path) -> None:
    data = np.zeros((3, 200, 300), np.uint16)
    data[:] = np.linspace(100, 4000, 300, dtype=np.uint16)[None, None, :]  # brightness grows to the east
    src = write_raster(tmp_path / "ramp.tif", data)
    a = make_adapter(open_scene(src))
    assert a.preset == "generic"
    flat = data[0].ravel().astype(np.float64)
    assert a.lo[0] == pytest.approx(np.percentile(flat, 2)) and a.hi[0] == pytest.approx(np.percentile(flat, 98))
    records = []
    for tile, overlap in [(64, 16), (128, 32), (512, 64)]:
        res = encode_scene(src, tmp_path / f"f{tile}.tif", PatchProbe(), EncodeOptions(tile=tile, overlap=overlap))
        with rasterio.open(res.out) as ds:
            records.append(ds.tags()["GEODINO_ADAPTER"])
    assert records[0] == records[1] == records[2]
    assert a.to_json() == records[0]


def test_stretch_uses_a_decimated_read_of_large_scenes(tmp_path: Path) -> None:
    data = np.tile(np.arange(1, 3001, dtype=np.uint16), (3, 1100, 1))
    src = write_raster(tmp_path / "wide.tif", data)
    a = make_adapter(open_scene(src))
    assert "1024x375 decimated read" in a.stretch


def test_band_files_stack_by_name_on_one_or_several_grids_of_one_crs(tmp_path: Path) -> None:
    paths = []
    for b in range(1, 5):
        paths.append(write_raster(tmp_path / f"LC08_SR_B{b}.TIF", np.full((1, 20, 30), 100 * b, np.uint16)))
    scene = open_scene(paths)
    assert scene.band_names == ("B1", "B2", "B3", "B4") and scene.band_sources[2] == (str(paths[2]), 1)
    moved = write_raster(tmp_path / "LC08_SR_B5.TIF", np.ones((1, 20, 30), np.uint16), transform=TRANSFORM @ Affine.translation(1, 0))
    mixed = open_scene([*paths, moved])
    assert mixed.geobox.affine == TRANSFORM and len(mixed.band_grids) == 5 and mixed.band_grids[4].affine != TRANSFORM
    on_b1, notes = mixed.on_grid_of([0, 1, 2])
    assert on_b1.warp == () and notes == ("not read (bands not used): LC08_SR_B4.TIF, LC08_SR_B5.TIF",)
    other = write_raster(tmp_path / "LC08_SR_B6.TIF", np.ones((1, 20, 30), np.uint16), crs="EPSG:32634")
    with pytest.raises(InputError, match="not in the CRS of"):
        open_scene([*paths, other])
