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
from geodino.job import Tiling
from geodino.labels import colormap, load_labels
from geodino.landcover import load_head, save_head, train_head
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
        src, tmp_path / "chm.tif", CanopyPredictor(PixelProbe(), "cpu"), tiling=Tiling(tile=tile, overlap=overlap), overwrite=True
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
    fine = predict_scene(src, tmp_path / "fine.tif", CanopyPredictor(PixelProbe(), "cpu"), tiling=Tiling(tile=64, overlap=16))
    coarse = predict_scene(
        src, tmp_path / "coarse.tif", CanopyPredictor(PixelProbe(), "cpu"), tiling=Tiling(tile=64, overlap=16), resolution=40.0
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
    res = train_head(scene, labels, ColourProbe(), tiling=Tiling(tile=64, overlap=16), epochs=200)
    assert res.losses[-1] < 0.1 * res.losses[0]
    assert res.info["metrics"]["train"]["overall_accuracy"] == 1.0 and res.info["metrics"]["validation"]["overall_accuracy"] == 1.0
    head, info = load_head(save_head(tmp_path / "head.pt", res.head, res.info))
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), res.head.state_dict().values(), strict=True))
    assert json.loads(json.dumps(info)) == json.loads(json.dumps(res.info))  # the record round-trips
    assert info["names"] == ["field", "water"] and info["layers"] == [0] and info["adapter"]["preset"] == "rgb8"
    assert LandCoverPredictor(ColourProbe(), head, info).colours() == colormap(2)  # the head's recorded colours
    out = predict_scene(src, tmp_path / "lc.tif", LandCoverPredictor(ColourProbe(), head, info), tiling=Tiling(tile=64, overlap=16),
                        probabilities=tmp_path / "p.tif")  # fmt: skip
    with rasterio.open(out.out) as ds, rasterio.open(tmp_path / "p.tif") as p:
        cls = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.transform == TRANSFORM and ds.colormap(1)[1][:3] == (255, 127, 14)
        assert (cls[:, :56] == 0).all() and (cls[:, 72:] == 1).all()
        probs = p.read()
        assert p.count == 2 and np.allclose(probs.sum(0), 1, atol=1e-5) and p.descriptions == ("p_field", "p_water")


def test_the_prediction_runs_take_one_scene_path_and_write_every_file_they_promise(tmp_path: Path) -> None:
    from geodino.predict_runs import land_cover_run, train_run
    from geodino.runs import Hooks

    src, labels_path = two_class_scene(tmp_path)
    quiet = Hooks(notes=lambda n: None, warn=lambda m: None)
    tiny = {"weights": "random", "tiling": Tiling(tile=64, overlap=16), "hooks": quiet}
    trained = train_run(str(src), labels_path, tmp_path / "head.pt", model="geodino_tiny_mlp", layers="-1", epochs=3, **tiny)
    assert trained.head.is_file() and json.loads(trained.metrics.read_text())["split"].startswith("spatial blocks")
    lc = land_cover_run(src, tmp_path / "lc.tif", head=trained.head, vector=tmp_path / "lc.gpkg", **tiny)
    with rasterio.open(lc.result.out) as ds:
        assert ds.shape == (128, 128) and ds.transform == TRANSFORM and ds.dtypes[0] == "uint8" and lc.names == ["field", "water"]
    assert gpd.read_file(tmp_path / "lc.gpkg").crs.to_epsg() == 32633 and lc.polygons is not None and lc.polygons > 0


def test_predict_scene_refuses_what_it_cannot_write_before_any_tile_runs(tmp_path: Path) -> None:
    from geodino.errors import InputError
    from tests.scenes import PatchProbe

    src = write_raster(tmp_path / "s.tif", coordinate_raster(64, 64))
    probe = CanopyPredictor(PixelProbe(), "cpu")
    calls = []
    probe.model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(InputError, match=r"--resolution 0\.5 is finer than the scene's pixels"):
        predict_scene(src, tmp_path / "c.tif", probe, tiling=Tiling(tile=32, overlap=0), resolution=0.5)
    with pytest.raises(InputError, match="--resolution -2 must be positive"):
        predict_scene(src, tmp_path / "c.tif", probe, tiling=Tiling(tile=32, overlap=0), resolution=-2.0)
    with pytest.raises(InputError, match="run a PatchProbe with encode_scene"):
        predict_scene(src, tmp_path / "c.tif", PatchProbe(), tiling=Tiling(tile=32, overlap=0))  # type: ignore[arg-type]
    assert calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]
