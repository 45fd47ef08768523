"""Prediction rasters with stand-in models: pixel-exact canopy height, coarser resolution, evaluation, land cover."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from geodino.adapter import make_adapter
from geodino.engine import EncodeOptions
from geodino.labels import load_labels
from geodino.landcover import colormap, load_head, save_head, train_head
from geodino.metrics import classification_metrics, evaluate_height, regression_metrics
from geodino.predict import CanopyPredictor, LandCoverPredictor, predict_scene
from geodino.scene import open_scene
from tests.scenes import TRANSFORM, ColourProbe, PixelProbe, coordinate_raster, write_raster


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 150), w=st.integers(1, 150), tile=st.sampled_from([32, 64]), overlap=st.sampled_from([0, 16]))
def test_canopy_raster_is_pixel_exact_and_on_the_scene_grid(tmp_path: Path, h: int, w: int, tile: int, overlap: int) -> None:
    raw = coordinate_raster(h, w)
    src = write_raster(tmp_path / "s.tif", raw)
    res = predict_scene(
        src, tmp_path / "chm.tif", CanopyPredictor(PixelProbe(), "cpu"), EncodeOptions(tile=tile, overlap=overlap, overwrite=True)
    )
    unit = make_adapter(open_scene(src)).to_unit(raw)
    with rasterio.open(res.out) as ds:
        assert ds.transform == TRANSFORM and ds.crs.to_epsg() == 32633 and ds.shape == (h, w) and ds.dtypes[0] == "float32"
        assert np.array_equal(ds.read(1), (10.0 * unit[0]).astype(np.float32))  # every pixel, edges included, exactly
        assert ds.tags()["GEODINO_PRODUCT"] == "canopy_height" and ds.descriptions == ("canopy_height_m",)


def test_invalid_pixels_are_nodata_and_coarser_resolution_is_an_area_mean(tmp_path: Path) -> None:
    raw = coordinate_raster(96, 128)
    raw[:, :8, :8] = 0
    src = write_raster(tmp_path / "s.tif", raw, nodata=0)
    fine = predict_scene(src, tmp_path / "fine.tif", CanopyPredictor(PixelProbe(), "cpu"), EncodeOptions(tile=64, overlap=16))
    coarse = predict_scene(
        src, tmp_path / "coarse.tif", CanopyPredictor(PixelProbe(), "cpu"), EncodeOptions(tile=64, overlap=16), resolution=40.0
    )
    with rasterio.open(fine.out) as f, rasterio.open(coarse.out) as c:
        a = f.read(1)
        assert np.isnan(a[:8, :8]).all() and np.isfinite(a[8:, 8:]).all() and np.isnan(f.nodata)
        assert c.transform == Affine(40.0, 0, TRANSFORM.c, 0, -40.0, TRANSFORM.f) and c.shape == (24, 32)
        b = c.read(1)
    blocks = a.reshape(24, 4, 32, 4).transpose(0, 2, 1, 3).reshape(24, 32, 16)  # 4x4 pixels of 10 m per 40 m pixel
    empty = np.isnan(blocks).all(axis=-1)
    means = np.where(empty, np.nan, np.nansum(blocks, axis=-1) / np.maximum((~np.isnan(blocks)).sum(-1), 1))
    assert empty[:2, :2].all() and empty.sum() == 4  # the 8x8 nodata corner
    assert np.allclose(b, means, rtol=1e-5, equal_nan=True)  # area mean of the valid pixels


def test_height_evaluation_of_a_reference_against_itself_and_a_known_offset(tmp_path: Path) -> None:
    ref = np.random.default_rng(0).uniform(0, 30, (1, 40, 50)).astype(np.float32)
    ref[0, :3, :3] = -9999
    ref_path = write_raster(tmp_path / "ref.tif", ref, nodata=-9999)
    same = evaluate_height(ref_path, ref_path, tmp_path / "self.json")
    assert same["mae"] == 0 and same["rmse"] == 0 and same["bias"] == 0 and same["r2"] == 1 and same["n"] == 40 * 50 - 9
    assert json.loads((tmp_path / "self.json").read_text())["mae"] == 0
    shifted = write_raster(tmp_path / "up.tif", np.where(ref == -9999, -9999, ref + 1.5).astype(np.float32), nodata=-9999)
    e = evaluate_height(shifted, ref_path)
    assert e["mae"] == pytest.approx(1.5) and e["rmse"] == pytest.approx(1.5) and e["bias"] == pytest.approx(1.5)
    fine = np.repeat(np.repeat(ref, 2, axis=1), 2, axis=2)  # the same heights at half the pixel size
    fine_path = write_raster(tmp_path / "fine.tif", fine, transform=TRANSFORM @ Affine.scale(0.5), nodata=-9999)
    assert evaluate_height(fine_path, ref_path)["mae"] == pytest.approx(0, abs=1e-5)


def test_regression_and_classification_metrics_by_hand() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 4.0, np.nan]), np.array([1.0, 3.0, 3.0, 5.0]))
    assert (m["mae"], m["bias"], m["n"]) == (pytest.approx(2 / 3), 0.0, 3) and m["rmse"] == pytest.approx(np.sqrt(2 / 3))
    c = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, -1]), 3, ["a", "b", "c"])
    assert c["confusion"] == [[1, 0, 0], [1, 2, 0], [0, 0, 0]] and c["overall_accuracy"] == 0.75
    assert c["iou"] == {"a": 0.5, "b": pytest.approx(2 / 3), "c": None} and c["miou"] == pytest.approx((0.5 + 2 / 3) / 2)


def two_class_scene(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    img = np.zeros((3, 128, 128), np.uint8)
    img[:, :, :64] = np.array([200, 40, 30])[:, None, None]
    img[:, :, 64:] = np.array([30, 60, 190])[:, None, None]
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    src = write_raster(tmp_path / "two.tif", img, photometric="RGB")
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    polys = [box(x0 + 80, y0 - 1200, x0 + 560, y0 - 80), box(x0 + 720, y0 - 1200, x0 + 1200, y0 - 80)]
    labels = gpd.GeoDataFrame({"kind": ["field", "water"]}, geometry=polys, crs="EPSG:32633").to_crs("EPSG:4326")
    labels.to_file(tmp_path / "labels.gpkg")
    return src, tmp_path / "labels.gpkg"


def test_a_linearly_separable_scene_is_learnt_exactly_and_mapped(tmp_path: Path) -> None:
    src, labels_path = two_class_scene(tmp_path)
    scene = open_scene(src)
    labels = load_labels(scene, labels_path, "kind")
    assert labels.names == ("field", "water") and (labels.pixels == 0).sum() == 48 * 112 and (labels.pixels == 1).sum() == 48 * 112
    res = train_head(scene, labels, ColourProbe(), EncodeOptions(tile=64, overlap=16), epochs=200)
    assert res.losses[-1] < 0.1 * res.losses[0]
    assert res.info["metrics"]["train"]["overall_accuracy"] == 1.0 and res.info["metrics"]["validation"]["overall_accuracy"] == 1.0
    head, info = load_head(save_head(tmp_path / "head.pt", res.head, res.info))
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), res.head.state_dict().values(), strict=True))
    assert json.loads(json.dumps(info)) == json.loads(json.dumps(res.info))  # the record round-trips
    assert info["names"] == ["field", "water"] and info["layers"] == [0] and info["adapter"]["preset"] == "rgb8"
    out = predict_scene(src, tmp_path / "lc.tif", LandCoverPredictor(ColourProbe(), head, info), EncodeOptions(tile=64, overlap=16),
                        "land_cover", colormap=colormap(2), class_names=["field", "water"], probabilities=tmp_path / "p.tif")  # fmt: skip
    with rasterio.open(out.out) as ds, rasterio.open(tmp_path / "p.tif") as p:
        cls = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.transform == TRANSFORM and ds.colormap(1)[1][:3] == (255, 127, 14)
        assert (cls[:, :56] == 0).all() and (cls[:, 72:] == 1).all()
        probs = p.read()
        assert p.count == 2 and np.allclose(probs.sum(0), 1, atol=1e-5) and p.descriptions == ("p_field", "p_water")
