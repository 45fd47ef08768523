"""One feature layout from the CLI, the lazy API and block-wise runs, readable by xarray's, rioxarray's, odc-geo's
and GDAL's defaults; a COG and a Zarr store of the same run give the same record."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import odc.geo.xr  # noqa: F401  (registers .odc, as a user does)
import pytest
import rasterio
import rioxarray
import xarray as xr
from affine import Affine

from geodino.synthetic import write_scene
from geodino.zarrstore import FEATURES_PER_CHUNK
from tests.gdal import gdalinfo
from tests.helpers import cli

TINY = ("--model", "geodino_tiny_mlp", "--weights", "random", "--tile", "64", "--overlap", "16")
#: record entries on how a run went: they differ between runs, and between the streamed and the block-wise executor
PER_RUN = {"created", "seconds_before_finish", "tiles_skipped_empty", "blocks"}

LAZY = """
import sys
import geodino
feats = geodino.encode(sys.argv[1], model="geodino_tiny_mlp", weights="random", tile=64, overlap=16)
feats.to_dataset().to_zarr(sys.argv[2], zarr_format=2, consolidated=True)
"""


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same scene as a block-wise CLI store (one chunk, and 4-cell chunks), a streamed one (``--tokens`` streams),
    a lazy-API store (fresh processes) and a COG."""
    d = tmp_path_factory.mktemp("layout")
    scene = write_scene(d / "scene.tif", 160, 96)
    out = {"cli": d / "cli.zarr", "blocks": d / "blocks.zarr", "stream": d / "stream.zarr", "lazy": d / "lazy.zarr", "cog": d / "f.tif"}
    for key, extra in (("cli", ()), ("blocks", ("--chunk", "4")), ("stream", ("--tokens",)), ("cog", ())):
        r = cli("encode", scene, out[key], *TINY, *extra)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-c", LAZY, str(scene), str(out["lazy"])], capture_output=True, text=True, cwd=d)
    assert r.returncode == 0, r.stderr
    return out


def _transform(ds: xr.Dataset) -> Affine:
    return Affine(*ds.features.rio.transform()[:6])


@pytest.mark.slow
def test_cli_lazy_and_blockwise_stores_share_one_layout(stores: dict[str, Path]) -> None:
    with rasterio.open(stores["cog"]) as cog:
        transform, crs, names = cog.transform, cog.crs, list(cog.descriptions)
        values = cog.read()
    for key in ("cli", "blocks", "stream", "lazy"):
        ds = xr.open_zarr(stores[key])  # the defaults: no decode_coords="all"
        f = ds["features"]
        assert f.dims == ("feature", "y", "x") and list(ds.data_vars) == ["features"], (key, ds)
        assert set(ds.coords) == {"feature", "y", "x", "spatial_ref"}, (key, ds.coords)
        assert [str(n) for n in f["feature"].values] == names
        assert f.rio.crs == crs and _transform(ds) == transform, key
        assert f.odc.geobox.crs == crs and f.odc.geobox.affine == transform, key
        assert ds.x.attrs == {"axis": "X", "long_name": "x coordinate of projection", "standard_name": "projection_x_coordinate",
                              "units": "metre"}, key  # fmt: skip
        assert ds.y.attrs["standard_name"] == "projection_y_coordinate" and ds.y.attrs["axis"] == "Y"
        assert f.attrs["long_name"] == "DINOv3 patch features" and f.attrs["units"] == "1"
        assert f.attrs["_CRS"] == {"url": "http://www.opengis.net/def/crs/EPSG/0/32633"}
        assert f.attrs["grid_mapping"] == "spatial_ref" and np.isnan(f.encoding["_FillValue"])
        assert isinstance(f.attrs["adapter"], dict) and isinstance(f.attrs["layers"], list), key  # JSON values, not JSON text
        assert f.attrs["model"] == "geodino_tiny_mlp" and set(ds.attrs) <= {"completion"}, key  # the record is the array's
        assert f.encoding["chunks"][0] == FEATURES_PER_CHUNK or key == "lazy", (key, f.encoding["chunks"])
        np.testing.assert_array_equal(f.values, values)  # the same numbers, bit for bit, from every path


@pytest.mark.slow
def test_gdal_reads_the_crs_and_grid_of_a_store_with_and_without_cf(stores: dict[str, Path], tmp_path: Path) -> None:
    with rasterio.open(stores["cog"]) as cog:
        transform, crs, first = cog.transform, cog.crs, cog.read(1)
    bare = tmp_path / "bare.zarr"  # what GDAL before 3.9 sees: no CF grid mapping, only GDAL's _CRS
    shutil.copytree(stores["cli"], bare)
    attrs = json.loads((bare / "features" / ".zattrs").read_text())
    del attrs["grid_mapping"]
    (bare / "features" / ".zattrs").write_text(json.dumps(attrs))
    (bare / ".zmetadata").unlink()
    for store in (stores["cli"], stores["lazy"], bare):
        with rasterio.open(store) as ds:  # GDAL's own Zarr driver (3.8+: the features as bands)
            assert ds.driver == "Zarr" and ds.count == 64 and ds.crs == crs and ds.transform == transform, store
            assert ds.tags(1)["DIM_feature_VALUE"] == "L2_0000"
            np.testing.assert_array_equal(ds.read(1), first)
            assert np.isnan(ds.nodata)
        info = gdalinfo(store)  # gdalinfo -json itself
        assert 'ID["EPSG",32633]' in info["coordinateSystem"]["wkt"] and len(info["bands"]) == 64
        assert info["geoTransform"] == [transform.c, transform.a, transform.b, transform.f, transform.d, transform.e]
        # rioxarray's own opener goes through GDAL, which lists every array of a store (the coordinates too)
        opened = rioxarray.open_rasterio(store, variable="features")
        assert isinstance(opened, xr.Dataset)
        da = opened["features"]
        assert da.rio.crs == crs and da.rio.transform() == transform and da.shape == (64, 10, 6)


@pytest.mark.slow
def test_a_cog_and_a_zarr_store_of_one_run_give_the_same_attrs(stores: dict[str, Path], tmp_path: Path) -> None:
    import geodino

    cog, zarr = geodino.open_features(stores["cog"]), geodino.open_features(stores["cli"])
    for other in (zarr, geodino.open_features(stores["stream"])):
        assert {k: v for k, v in cog.attrs.items() if k not in PER_RUN} == {k: v for k, v in other.attrs.items() if k not in PER_RUN}
    assert cog.attrs["tile"] == 64 and cog.attrs["random_weights"] is True and cog.attrs["layers"] == [2]
    assert cog.dims == zarr.dims == ("feature", "y", "x") and cog.name == zarr.name == "features"
    exported = tmp_path / "exported.tif"
    r = cli("export", stores["cli"], exported)
    assert r.returncode == 0, r.stderr
    back = geodino.open_features(exported)
    assert back.attrs == {**zarr.attrs, "exported_from": str(stores["cli"])}  # the record goes through a COG unchanged
