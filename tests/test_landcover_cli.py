"""train-head and land-cover from the shell on real Landsat 8 band files with polygon labels, and bad labels."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from geodino.landcover import load_head
from tests import helpers
from tests.helpers import run
from tests.scenes import TRANSFORM, coordinate_raster, write_raster

one_line_error = functools.partial(helpers.one_line_error, alone=False)  # after the random-weights warning

TINY = ("--model", "geodino_tiny_mlp", "--weights", "random", "--layers", "-2,-1")


def test_landsat8_band_files_with_wgs84_polygons_train_and_map(tmp_path: Path, shared_data: Path) -> None:
    d = shared_data / "landsat8_labels"
    bands = [d / f"L8-B{b}-Elkton-VA.tiff" for b in range(1, 8)]
    head = tmp_path / "head.pt"
    r = run("train-head", *bands, d / "L8-Labels-Elkton-VA.geojson", "--out", head, "--sensor", "landsat8-c2l1", *TINY,
            "--tile", "128", "--overlap", "32", "--epochs", "100")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "3 classes (0, 1, 2)" in r.stdout and "loss" in r.stdout
    _, info = load_head(head)
    losses = info["loss_first_last"]
    assert losses[1] < losses[0] and info["class_column"] == "id" and info["model"] == "geodino_tiny_mlp" and info["layers"] == [1, 2]
    metrics = json.loads(head.with_suffix(".metrics.json").read_text())
    assert set(metrics) == {"train", "validation", "split"} and len(metrics["train"]["confusion"]) == 3
    out, vec = tmp_path / "lc.tif", tmp_path / "polygons" / "lc.gpkg"  # the polygons in a folder of their own
    vec.parent.mkdir()
    r = run("land-cover", *bands, out, "--head", head, "--weights", "random", "--sensor", "landsat8-c2l1", "--tile", "128",
            "--overlap", "32", "--vector", vec)  # fmt: skip
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as ds, rasterio.open(bands[0]) as scene:
        assert ds.transform == scene.transform and ds.crs == scene.crs and ds.shape == scene.shape
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and set(np.unique(ds.read(1))) <= {0, 1, 2}
        assert ds.colormap(1)[0][:3] == (31, 119, 180)
    polys = gpd.read_file(vec)
    assert polys.crs.to_epsg() == 32617 and len(polys) > 0 and set(polys["class"]) <= {0, 1, 2}
    assets = json.loads((tmp_path / "lc.tif.json").read_text())["assets"]  # the class raster's item lists the polygons
    assert assets["vector"]["href"] == "./polygons/lc.gpkg"  # relative to the item
    assert assets["vector"]["type"] == "application/geopackage+sqlite3" and (tmp_path / assets["vector"]["href"]).is_file()


def test_a_label_raster_on_the_scene_grid_trains_too(tmp_path: Path, shared_data: Path) -> None:
    d = shared_data / "landsat8_labels"
    bands = [d / f"L8-B{b}-Elkton-VA.tiff" for b in range(1, 8)]
    r = run("train-head", *bands, d / "L8-Labels-Elkton-VA.tiff", "--out", tmp_path / "h.pt", "--sensor", "landsat8-c2l1", *TINY,
            "--tile", "128", "--overlap", "32", "--epochs", "50")  # fmt: skip
    assert r.exit_code == 0, r.output
    _, info = load_head(tmp_path / "h.pt")
    assert info["classes"] == [0, 1, 2] and info["class_column"] is None and info["labels"].endswith("L8-Labels-Elkton-VA.tiff")


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "scene.tif", coordinate_raster(64, 64).astype(np.uint8), photometric="RGB")


def polygons(tmp_path: Path, name: str, gdf: gpd.GeoDataFrame) -> Path:
    path = tmp_path / name
    gdf.to_file(path)
    return path


def bad_labels(tmp_path: Path) -> dict[str, tuple[Path, tuple[str, ...], tuple[str, ...]]]:
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    inside = [box(x0 + 10, y0 - 300, x0 + 300, y0 - 10), box(x0 + 330, y0 - 600, x0 + 600, y0 - 330)]
    far = gpd.GeoDataFrame({"class": [1, 2]}, geometry=[box(0, 0, 10, 10), box(20, 20, 30, 30)], crs="EPSG:32633")
    two = gpd.GeoDataFrame({"kind": [1, 2]}, geometry=inside, crs="EPSG:32633")
    one = gpd.GeoDataFrame({"class": [3, 3]}, geometry=inside, crs="EPSG:32633")
    empty = tmp_path / "empty.geojson"
    empty.write_text("")
    return {
        "no overlap": (polygons(tmp_path, "far.gpkg", far), (), ("do not overlap the scene",)),
        "unknown column": (polygons(tmp_path, "two.gpkg", two), ("--class-column", "landuse"), ("no column 'landuse'", "kind")),
        "empty file": (empty, (), ("empty file",)),
        "single class": (polygons(tmp_path, "one.gpkg", one), (), ("a single class (3)",)),
    }


@pytest.mark.parametrize("case", ["no overlap", "unknown column", "empty file", "single class"])
def test_bad_labels_are_one_line_and_leave_nothing(tmp_path: Path, scene: Path, case: str) -> None:
    labels, extra, fragments = bad_labels(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line_error(run("train-head", scene, labels, "--out", tmp_path / "head.pt", *extra, *TINY), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_file_that_is_not_a_head_is_refused(tmp_path: Path, scene: Path) -> None:
    (tmp_path / "head.pt").write_bytes(b"not a head")
    one_line_error(run("land-cover", scene, tmp_path / "lc.tif", "--head", tmp_path / "head.pt"), "not a land-cover head")
    assert not (tmp_path / "lc.tif").exists()
