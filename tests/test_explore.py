"""Notebook helpers on constructed features: PCA colours, similarity to a point (any CRS), k-means, opening rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from affine import Affine
from pyproj import Transformer

from geodino.engine import EncodeOptions, encode_scene
from geodino.errors import InputError
from geodino.featuremaps import cell_of, kmeans, open_features, pca_rgb, similarity
from geodino.features import FeatureExtractor
from geodino.figures import plot
from geodino.models import build_model
from geodino.synthetic import write_scene

T = Affine(160.0, 0.0, 500000.0, 0.0, -160.0, 4000000.0)


def features(values: np.ndarray) -> xr.DataArray:
    """``(D, h, w)`` values on a UTM 33N grid of 160 m cells."""
    d, h, w = values.shape
    x = T.c + T.a * (np.arange(w) + 0.5)
    y = T.f + T.e * (np.arange(h) + 0.5)
    da = xr.DataArray(values.astype(np.float32), dims=("feature", "y", "x"), coords={"feature": np.arange(d), "y": y, "x": x})
    return da.rio.write_crs("EPSG:32633").rio.write_transform(T)


def test_pca_rgb_follows_the_dominant_direction_and_keeps_nodata() -> None:
    rng = np.random.default_rng(0)
    u = rng.normal(size=16)
    u /= np.linalg.norm(u)
    ramp = np.linspace(-5, 5, 30)[None, :].repeat(20, 0)  # grows to the east
    vals = ramp[None] * u[:, None, None] + 0.05 * rng.normal(size=(16, 20, 30))
    vals[:, 0, 0] = np.nan
    rgb = pca_rgb(features(vals))
    assert rgb.dims == ("band", "y", "x") and rgb.shape == (3, 20, 30) and rgb.rio.crs.to_epsg() == 32633
    assert rgb.attrs["explained_variance_ratio"][0] > 0.95
    assert np.isnan(rgb[:, 0, 0]).all() and np.nanmin(rgb) >= 0 and np.nanmax(rgb) <= 1
    red = rgb.sel(band="PC1").values
    assert abs(np.corrcoef(red[1:, :].ravel(), ramp[1:, :].ravel())[0, 1]) > 0.95


def test_similarity_peaks_at_the_query_point_given_in_any_crs() -> None:
    vals = np.random.default_rng(1).normal(size=(8, 12, 15))
    feats = features(vals)
    sim = similarity(feats, (4, 7), crs="pixel")
    assert sim.values[4, 7] == pytest.approx(1.0) and np.nanargmax(sim.values) == 4 * 15 + 7 and sim.attrs["query_cell"] == [4, 7]
    x, y = T.c + T.a * 7.5, T.f + T.e * 4.5  # the cell's centre in UTM
    assert cell_of(feats, (x, y)) == (4, 7)
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x, y)
    assert cell_of(feats, (lon, lat), crs="EPSG:4326") == (4, 7)
    assert np.array_equal(similarity(feats, (lon, lat), crs="EPSG:4326").values, sim.values)
    with pytest.raises(InputError, match="outside the 15x12 feature grid"):
        cell_of(feats, (0.0, 0.0), crs="EPSG:4326")


def test_kmeans_recovers_planted_clusters() -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 10)) * 10
    truth = np.zeros((18, 24), int)
    truth[:, 8:16], truth[:, 16:] = 1, 2
    vals = centres[truth].transpose(2, 0, 1) + 0.3 * rng.normal(size=(10, 18, 24))
    vals[:, 0, :3] = np.nan
    labels = kmeans(features(vals), 3).values
    assert (labels[0, :3] == -1).all()
    ok = labels >= 0
    mapping = {int(t): int(np.bincount(labels[ok & (truth == t)]).argmax()) for t in range(3)}
    assert sorted(mapping.values()) == [0, 1, 2]
    assert np.array_equal(labels[ok], np.vectorize(mapping.get)(truth[ok]))


def test_open_features_reads_an_encoded_cog_lazily_with_its_crs(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "scene.tif", 200, 150)
    res = encode_scene(src, tmp_path / "f.tif", FeatureExtractor(build_model("geodino_tiny_mlp", "random"), device="cpu"), EncodeOptions())
    da = open_features(res.out)
    assert da.dims == ("feature", "y", "x") and da.shape == (64, 13, 10) and da.chunks is not None
    assert da.rio.crs.to_epsg() == 32633 and str(da.feature.values[0]) == "L2_0000"
    assert pca_rgb(da).shape == (3, 13, 10) and kmeans(da, 2).shape == (13, 10)
    z = encode_scene(
        src, tmp_path / "f.zarr", FeatureExtractor(build_model("geodino_tiny_mlp", "random"), device="cpu"), EncodeOptions(fmt="zarr")
    )
    dz = open_features(z.out)
    assert dz.dims == ("feature", "y", "x") and dz.rio.crs.to_epsg() == 32633 and str(dz.feature.values[-1]) == "L2_0063"
    assert np.allclose(dz.values, da.values, equal_nan=True)


def test_plot_draws_on_map_coordinates() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    feats = features(rng.normal(size=(8, 6, 10)))
    ax = plot(feats)  # features -> their PCA colours
    assert ax.get_xlim() == (T.c, T.c + 10 * 160) and ax.get_ylim() == (T.f - 6 * 160, T.f)
    assert ax.get_xlabel() == "easting (km, EPSG:32633)" and ax.get_images()[0].get_array().shape == (6, 10, 4)  # RGBA: nodata transparent
    ax = plot(kmeans(feats, 3))  # classes: nearest, masked below 0, a legend of 3 swatches (no colour bar)
    assert ax.get_images()[0].get_interpolation() == "nearest" and len(ax.figure.axes) == 1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cluster 0", "cluster 1", "cluster 2"]
    dn = features(rng.integers(0, 255, (1, 6, 10)).astype(np.float32)).astype(np.uint8).rename("dn").isel(feature=0)
    assert plot(dn).get_images()[0].get_cmap().name == "viridis"  # integer DNs are not class labels
    with pytest.raises(InputError, match="one layer or 3 bands"):
        plot(features(rng.normal(size=(2, 6, 10))).rename(feature="band"))
    plt.close("all")


def test_open_scene_stacks_band_files_lazily(tmp_path: Path) -> None:
    import geodino
    from tests.scenes import write_raster

    files = [write_raster(tmp_path / f"L8_B{b}.tif", np.full((1, 20, 30), b, np.uint16)) for b in (4, 3, 2)]
    da = geodino.open_scene(files)
    assert da.dims == ("band", "y", "x") and list(da["band"].values) == ["B4", "B3", "B2"] and da.chunks is not None
    assert da.attrs["geodino_scene"] == [str(f) for f in files] and da.rio.crs == "EPSG:32633"
    np.testing.assert_array_equal(da.values[:, 0, 0], [4, 3, 2])
