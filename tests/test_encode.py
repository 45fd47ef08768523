"""Encoding real scenes from ../shared/data and the outputs: COG validity, georeferencing, tags, Zarr, PCA, tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from geodino.engine import EncodeOptions, encode_scene
from geodino.errors import InputError
from geodino.features import FeatureExtractor
from geodino.models import build_model
from geodino.reader import cell_valid
from geodino.synthetic import write_scene


@pytest.fixture(scope="module")
def tiny() -> FeatureExtractor:
    return FeatureExtractor(build_model("geodino_tiny_mlp", "random"), device="cpu")


def grid_of(path: Path) -> tuple[Affine, int, int, object]:
    with rasterio.open(path) as ds:
        return ds.transform, ds.height, ds.width, ds.crs


def assert_feature_grid(out: Path, scene: Path, bands: int) -> np.ndarray:
    t, h, w, crs = grid_of(scene)
    with rasterio.open(out) as ds:
        assert ds.crs == crs and ds.transform == t @ Affine.scale(16)
        assert (ds.height, ds.width, ds.count) == (-(-h // 16), -(-w // 16), bands)
        return ds.read()


def test_landsat7_collar_becomes_nodata_cells(tmp_path: Path, shared_data: Path, tiny: FeatureExtractor) -> None:
    src = shared_data / "landsat7_rgb" / "RGB.byte.tif"
    res = encode_scene(src, tmp_path / "l7.tif", tiny, EncodeOptions(tile=256, overlap=64, sensor="landsat7-rgb"))
    feats = assert_feature_grid(res.out, src, 64)
    with rasterio.open(src) as ds:
        valid_px = (ds.read() != 0).any(axis=0)
    h, w = valid_px.shape
    padded = np.zeros((-(-h // 16) * 16, -(-w // 16) * 16), bool)
    padded[:h, :w] = valid_px
    expected_nodata = ~cell_valid(padded, 16)
    assert expected_nodata.mean() > 0.2  # the rotated footprint's collar
    assert np.array_equal(np.isnan(feats).all(axis=0), expected_nodata)
    assert np.isfinite(feats[:, ~expected_nodata]).all()
    assert res.adapter.preset == "landsat7-rgb" and res.adapter.nodata == 0 and "percentiles 2-98" in res.adapter.stretch


def test_sentinel2_eight_bands_take_red_green_blue_of_the_first_date(tmp_path: Path, shared_data: Path, tiny: FeatureExtractor) -> None:
    src = shared_data / "sentinel2_l2a_8band" / "inference-img.tif"
    # nothing in the file names its 8 bands or its processing baseline: refused, naming the bands and a way out
    with pytest.raises(InputError, match=r"cannot tell which bands of inference-img.tif are red, green, blue .* --bands 1,2,3"):
        encode_scene(src, tmp_path / "guess.tif", tiny, EncodeOptions(tile=256, overlap=32))
    assert not (tmp_path / "guess.tif").exists()
    res = encode_scene(src, tmp_path / "s2.tif", tiny, EncodeOptions(tile=256, overlap=32, sensor="sentinel2-l2a-legacy"))
    assert res.adapter.preset == "sentinel2-l2a-legacy" and res.adapter.indexes == (0, 1, 2) and res.adapter.names == ("B04", "B03", "B02")
    assert res.adapter.offset == 0.0 and "layout for 8 bands" in res.adapter.bands[0]["name_from"]
    feats = assert_feature_grid(res.out, src, 64)
    assert np.isfinite(feats).all()


def test_naip_rgbn_smaller_than_one_tile_maps_to_rgb(tmp_path: Path, shared_data: Path, tiny: FeatureExtractor) -> None:
    src = shared_data / "naip_rgbn_1m" / "m_3607717_sw_18_1_20160620_subset.tif"
    res = encode_scene(src, tmp_path / "naip.tif", tiny, EncodeOptions())
    assert res.tiles == 1 and res.adapter.preset == "naip-rgbn" and res.adapter.indexes == (0, 1, 2)
    feats = assert_feature_grid(res.out, src, 64)
    assert feats.shape[1:] == (19, 19) and np.isfinite(feats).all()


def test_landsat8_band_files_are_stacked(tmp_path: Path, shared_data: Path, tiny: FeatureExtractor) -> None:
    files = [shared_data / "landsat8_labels" / f"L8-B{b}-Elkton-VA.tiff" for b in range(1, 8)]
    res = encode_scene([str(f) for f in files], tmp_path / "l8.tif", tiny, EncodeOptions(tile=128, overlap=32, sensor="landsat8-c2l1"))
    assert res.adapter.names == ("B4", "B3", "B2") and res.adapter.indexes == (3, 2, 1)
    feats = assert_feature_grid(res.out, files[0], 64)
    assert np.isfinite(feats).all()
    assert res.metadata["scene"] == [str(f) for f in files]


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory, tiny: FeatureExtractor) -> tuple[Path, Path, object]:
    d = tmp_path_factory.mktemp("cog")
    src = write_scene(d / "scene.tif", 2304, 2112)
    res = encode_scene(src, d / "feat.tif", tiny, EncodeOptions(tile=512, overlap=64, batch_size=8, tokens=True))
    return src, res.out, res


def test_cog_validates_and_carries_its_provenance(cog: tuple[Path, Path, object]) -> None:
    _, out, _ = cog
    valid, errors, warnings = cog_validate(str(out))
    assert valid and not errors, (errors, warnings)
    with rasterio.open(out) as ds:
        assert ds.profile["tiled"] and ds.compression is not None and ds.block_shapes[0] == (64, 128)
        assert ds.overviews(1) == []  # 144 x 132 cells fit one 256-wide tile: no overviews (GDAL's AUTO rule)
        assert np.isnan(ds.nodata) and ds.descriptions[0] == "L2_0000" and ds.descriptions[-1] == "L2_0063"
        tags = ds.tags()
    assert tags["GEODINO_MODEL"] == "geodino_tiny_mlp" and tags["GEODINO_WEIGHTS"] == "random"
    assert tags["GEODINO_WEIGHTS_SHA256"] == "random" and tags["GEODINO_RANDOM_WEIGHTS"] == "true"
    assert json.loads(tags["GEODINO_LAYERS"]) == [2] and json.loads(tags["GEODINO_MEAN"]) == [0.43, 0.411, 0.296]
    assert json.loads(tags["GEODINO_ADAPTER"])["preset"] == "rgb8"
    assert (tags["GEODINO_TILE"], tags["GEODINO_OVERLAP"], tags["GEODINO_PATCH"]) == ("512", "64", "16")
    assert tags["GEODINO_VERSION"] == "0.1.0" and tags["GEODINO_DTYPE"] == "float32"
    assert not [p for p in out.parent.iterdir() if "geodino-" in p.name]  # no temporaries left


def test_cog_opens_in_rioxarray_with_the_scene_crs_and_transform(cog: tuple[Path, Path, object]) -> None:
    import rioxarray

    src, out, _ = cog
    da = rioxarray.open_rasterio(out)
    t, h, w, crs = grid_of(src)
    assert da.rio.crs == crs and da.rio.transform() == t @ Affine.scale(16)
    assert da.shape == (64, -(-h // 16), -(-w // 16))
    x0, y0 = float(da.x[0]), float(da.y[0])  # cell centres
    assert (x0, y0) == (t.c + 8 * t.a, t.f + 8 * t.e)


def test_tokens_sidecar_holds_cls_and_storage_per_tile_with_footprints(cog: tuple[Path, Path, object]) -> None:
    src, out, res = cog
    ds = xr.open_zarr(res.tokens_path)
    assert res.tokens_path == out.with_name("feat.tokens.zarr")
    assert ds.cls.shape == (res.tiles, 1, 64) and ds.storage.shape == (res.tiles, 1, 4, 64)
    t, *_ = grid_of(src)
    first = ds.isel(tile=0)
    assert (float(first.xmin), float(first.ymax)) == (t.c, t.f)
    assert float(first.xmax) - float(first.xmin) == 512 * t.a
    assert np.isfinite(ds.cls.values).all()


def test_zarr_output_float16_and_pca(tmp_path: Path, tiny: FeatureExtractor) -> None:
    src = write_scene(tmp_path / "scene.tif", 700, 530)
    full = encode_scene(src, tmp_path / "f32.tif", tiny, EncodeOptions(tile=256, overlap=32))
    half = encode_scene(src, tmp_path / "f16.tif", tiny, EncodeOptions(tile=256, overlap=32, dtype="float16"))
    with rasterio.open(full.out) as a, rasterio.open(half.out) as b:
        f32, f16 = a.read(), b.read()
        assert b.tags(1, "IMAGE_STRUCTURE").get("NBITS") == "16"  # GDAL 3.10 shows the half floats as Float32, NBITS=16
        assert b.tags()["GEODINO_DTYPE"] == "float16" and "reads them as Float32, NBITS=16" in b.tags()["GEODINO_STORAGE"]
        assert "GEODINO_STORAGE" not in a.tags()
    assert np.array_equal(f16, f32.astype(np.float16).astype(np.float32))
    z = encode_scene(src, tmp_path / "f.zarr", tiny, EncodeOptions(tile=256, overlap=32, fmt="zarr", pca=3))
    ds = xr.open_zarr(z.out, decode_coords="all")
    da = ds["features"]
    assert da.dims == ("feature", "y", "x") and list(da.feature.values) == ["PC1", "PC2", "PC3"]
    assert da.rio.crs.to_epsg() == 32633 and da.rio.transform() == grid_of(src)[0] @ Affine.scale(16)
    assert da.attrs["pca"]["k"] == 3 and da.attrs["model"] == "geodino_tiny_mlp"
    pcs = da.values.reshape(3, -1)
    expected = z.pca.transform(f32.reshape(64, -1).T).T
    assert np.allclose(pcs, expected, atol=1e-4)
    assert pcs[0].var() >= pcs[1].var() >= pcs[2].var()


def test_overview_factors_follow_gdal_auto() -> None:
    from geodino.cogfile import overview_factors

    assert overview_factors(100, 128) == []
    assert overview_factors(129, 40) == [2]
    assert overview_factors(256, 256) == [2]
    assert overview_factors(512, 300) == [2, 4]


@pytest.mark.slow
def test_peak_memory_hardly_grows_from_a_2048_to_an_8192_scene(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from memory import measure  # each size encoded in a fresh interpreter, tiny model, COG output

    small, large = measure(2048, tmp_path), measure(8192, tmp_path)
    assert large / small <= 1.25, (small, large)


def test_bf16_autocast_runs_and_stays_close_to_fp32(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "scene.tif", 128, 96)
    model = build_model("geodino_tiny_mlp", "random")
    outs = {}
    for precision in ("fp32", "bf16"):
        res = encode_scene(src, tmp_path / f"{precision}.tif", FeatureExtractor(model, device="cpu", precision=precision), EncodeOptions())
        assert res.metadata["precision"] == precision
        with rasterio.open(res.out) as ds:
            outs[precision] = ds.read()
    a, b = outs["fp32"].ravel(), outs["bf16"].ravel()
    assert not np.array_equal(a, b) and np.corrcoef(a, b)[0, 1] > 0.99
