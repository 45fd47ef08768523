"""Rasters GIS tools read as meant: class names (RAT and categories), units, statistics, QGIS styles, valid COGs.

What GDAL sees is asked of GDAL itself (``tests/gdal.py``: ``gdalinfo -json`` through rasterio's libgdal), in files
written by a fresh ``geodino`` process where the command line is what users run.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from rio_cogeo.cogeo import cog_validate

from geodino.bandstats import BandStats, read_statistics
from geodino.job import Tiling
from geodino.predict import CanopyPredictor, predict_scene
from geodino.streams import CogFeatureStream
from tests.gdal import gdalinfo
from tests.helpers import cli, one_line_error
from tests.scenes import TRANSFORM, PixelProbe, coordinate_raster, write_raster
from tests.test_predict import two_class_scene

PLAN = ("--tile", "64", "--overlap", "16")


def ok(proc: object) -> object:
    assert getattr(proc, "returncode", None) == 0, getattr(proc, "stderr", proc)
    return proc


def valid_values(path: Path, band: int, nodata: float | None) -> np.ndarray:
    """Band ``band`` of the written raster, its valid cells only, as float64."""
    with rasterio.open(path) as ds:
        a = ds.read(band).astype(np.float64)
    return a[~np.isnan(a)] if nodata is None else a[a != nodata]


def assert_stats_of(path: Path, band: int, nodata: float | None) -> None:
    """The statistics stored for ``band`` are numpy's over the valid cells of the raster as written (exact)."""
    v = valid_values(path, band, nodata)
    with rasterio.open(path) as ds:
        tags, total = ds.tags(band), ds.width * ds.height
    assert float(tags["STATISTICS_MINIMUM"]) == v.min() and float(tags["STATISTICS_MAXIMUM"]) == v.max()
    assert float(tags["STATISTICS_MEAN"]) == pytest.approx(v.mean(), rel=1e-9, abs=1e-12)
    assert float(tags["STATISTICS_STDDEV"]) == pytest.approx(v.std(), rel=1e-6, abs=1e-9)
    assert float(tags["STATISTICS_VALID_PERCENT"]) == pytest.approx(100 * v.size / total)
    assert "STATISTICS_APPROXIMATE" not in tags


def qml_root(path: Path) -> ET.Element:
    text = path.read_text()
    assert text.startswith("<!DOCTYPE qgis")
    return ET.fromstring(text.split("\n", 1)[1])


def test_a_land_cover_cog_names_its_classes_for_gdal_and_qgis(tmp_path: Path) -> None:
    src, labels = two_class_scene(tmp_path)
    tiny = ("--model", "geodino_tiny_mlp", "--weights", "random", "--layers", "-1", *PLAN)
    ok(cli("train-head", src, labels, "--out", tmp_path / "head.pt", "--class-column", "kind", "--epochs", "3", *tiny, cwd=tmp_path))
    out = tmp_path / "lc.tif"
    ok(cli("land-cover", src, out, "--head", tmp_path / "head.pt", "--weights", "random", "--probabilities", tmp_path / "p.tif",
           *PLAN, cwd=tmp_path))  # fmt: skip
    info = gdalinfo(out)
    band = info["bands"][0]
    assert band["categories"] == ["field", "water"]  # gdalinfo -json lists the class names
    assert any(f.endswith("lc.tif.aux.xml") for f in info["files"])
    rat = info["rat"]
    assert rat["tableType"] == "thematic"
    fields = [(f["name"], f["usage"]) for f in rat["fieldDefn"]]
    assert fields == [("value", 5), ("class", 2), ("red", 6), ("green", 7), ("blue", 8), ("alpha", 9)]  # MinMax, Name, RGBA
    with rasterio.open(out) as ds:
        colours = ds.colormap(1)
        assert ds.tags()["GEODINO_CLASS_NAMES"] == f"the class values in column 'kind' of {labels}, as recorded by train-head"
    assert [r["f"] for r in rat["row"]] == [[i, name, *colours[i]] for i, name in enumerate(["field", "water"])]
    # the QGIS style: the colour table's colours, the class names as legend labels
    renderer = qml_root(tmp_path / "lc.qml").find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = [(int(e.get("value", "")), e.get("color"), int(e.get("alpha", "")), e.get("label")) for e in renderer.iter("paletteEntry")]
    assert entries == [(i, "#{:02x}{:02x}{:02x}".format(*colours[i][:3]), colours[i][3], n) for i, n in enumerate(["field", "water"])]
    # statistics of the class raster and of every probability band, numpy's over the valid cells; valid COGs
    assert_stats_of(out, 1, 255)
    for b in (1, 2):
        assert_stats_of(tmp_path / "p.tif", b, None)
    for cog in (out, tmp_path / "p.tif"):
        assert cog_validate(str(cog), quiet=True)[:2] == (True, [])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("lc", "p."))) == [
        "lc.qml", "lc.tif", "lc.tif.aux.xml", "lc.tif.json", "p.tif", "p.tif.json"]  # fmt: skip


def test_canopy_height_has_units_m_statistics_and_a_style(tmp_path: Path) -> None:
    raw = coordinate_raster(96, 128).astype(np.uint8)
    raw[:, :8, :8] = 0
    src = write_raster(tmp_path / "s.tif", raw, nodata=0, photometric="RGB")
    out = tmp_path / "chm.tif"
    ok(cli("canopy-height", src, out, "--head", "geodino_tiny_chmv2", "--weights", "random", *PLAN, cwd=tmp_path))
    band = gdalinfo(out)["bands"][0]
    assert band["unit"] == "m"
    v = valid_values(out, 1, None)
    assert v.size == 96 * 128 - 64  # the nodata corner is left out
    for key, want in (("minimum", v.min()), ("maximum", v.max()), ("mean", v.mean()), ("stdDev", v.std())):
        assert band[key] == pytest.approx(want, abs=5e-4)  # gdalinfo prints 3 decimals; the file holds them exactly:
    assert_stats_of(out, 1, None)
    with rasterio.open(out) as ds:
        assert ds.units == ("m",)
    assert cog_validate(str(out), quiet=True)[:2] == (True, [])
    stats = read_statistics(out)[0]
    assert stats is not None and stats.minimum == v.min() and not stats.approximate
    # the sidecars: the same unit and statistics for GDAL, a ramp over min..max in metres for QGIS
    pam = ET.parse(tmp_path / "chm.tif.aux.xml").getroot()
    assert pam.findtext("PAMRasterBand/UnitType") == "m"
    assert float(pam.find("PAMRasterBand/Metadata/MDI[@key='STATISTICS_MAXIMUM']").text or "") == v.max()  # type: ignore[union-attr]
    renderer = qml_root(tmp_path / "chm.qml").find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "singlebandpseudocolor"
    assert float(renderer.get("classificationMin", "")) == v.min() and float(renderer.get("classificationMax", "")) == v.max()
    items = list(renderer.iter("item"))
    assert float(items[0].get("value", "")) == v.min() and float(items[-1].get("value", "")) == v.max()
    assert all((i.get("label") or "").endswith(" m") for i in items)


def test_a_coarser_canopy_cog_holds_the_statistics_of_its_own_pixels(tmp_path: Path) -> None:
    raw = coordinate_raster(96, 128)
    raw[:, :8, :8] = 0
    src = write_raster(tmp_path / "s.tif", raw, nodata=0)
    res = predict_scene(src, tmp_path / "c.tif", CanopyPredictor(PixelProbe(), "cpu"), tiling=Tiling(tile=64, overlap=16), resolution=40.0)
    assert_stats_of(res.out, 1, None)
    assert gdalinfo(res.out)["bands"][0]["unit"] == "m" and cog_validate(str(res.out), quiet=True)[0]
    assert (tmp_path / "c.qml").is_file() and (tmp_path / "c.tif.aux.xml").is_file()


def test_sidecars_are_outputs_refused_without_overwrite_and_replaced_with_it(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", coordinate_raster(64, 64))
    stale = tmp_path / "chm.tif.aux.xml"
    mdi = '<MDI key="STATISTICS_MEAN">99</MDI>'
    stale.write_text(f'<PAMDataset><PAMRasterBand band="1"><Metadata>{mdi}</Metadata></PAMRasterBand></PAMDataset>')
    chm = ("--head", "geodino_tiny_chmv2", "--weights", "random", "--tile", "32", "--overlap", "0")
    args = ("canopy-height", src, tmp_path / "chm.tif", *chm)
    one_line_error(cli(*args, cwd=tmp_path), "chm.tif.aux.xml exists", "--overwrite", alone=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chm.tif.aux.xml", "s.tif"]  # nothing written
    ok(cli(*args, "--overwrite", cwd=tmp_path))
    mean = gdalinfo(tmp_path / "chm.tif")["bands"][0]["mean"]  # GDAL lets the sidecar speak: it is the new one
    assert mean == pytest.approx(valid_values(tmp_path / "chm.tif", 1, None).mean(), abs=5e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chm.qml", "chm.tif", "chm.tif.aux.xml", "chm.tif.json", "s.tif"]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_streamed_feature_cog_without_overviews_has_exact_statistics(tmp_path: Path, dtype: str) -> None:
    from geodino.engine import EncodeOptions, encode_scene
    from tests.scenes import PatchProbe

    src = write_raster(tmp_path / "s.tif", coordinate_raster(200, 230))
    res = encode_scene(src, tmp_path / "f.tif", PatchProbe(), EncodeOptions(tile=64, overlap=16, dtype=dtype))  # type: ignore[arg-type]
    with rasterio.open(res.out) as ds:
        assert ds.overviews(1) == [] and ds.count == 6
    for b in range(1, 7):
        assert_stats_of(res.out, b, None)  # of the values as stored (half floats for float16)
    assert gdalinfo(res.out)["bands"][0]["minimum"] == pytest.approx(valid_values(res.out, 1, None).min(), abs=5e-4)
    assert cog_validate(str(res.out), quiet=True)[:2] == (True, [])


def test_a_streamed_feature_cog_with_overviews_takes_its_statistics_from_the_coarsest_and_says_so(tmp_path: Path) -> None:
    h, w, d = 520, 300, 3
    rng = np.random.default_rng(4)
    data = (rng.standard_normal((d, h, w)) * np.arange(1, d + 1)[:, None, None] + 5).astype(np.float32)
    data[:, :40, :50] = np.nan
    stream = CogFeatureStream(tmp_path / "f.tif", GeoBox((h, w), TRANSFORM, "EPSG:32633"), d, "float32", ["a", "b", "c"])
    for col0 in range(0, w, stream.strip_width):  # column strips, rows in pieces, as the stitcher gives them
        for r0 in range(0, h, 37):
            stream.push(data[:, r0 : r0 + 37, col0 : col0 + stream.strip_width], col0)
    stream.finish({}, {"GEODINO_X": "1"}, ["a", "b", "c"])
    path = tmp_path / "f.tif"
    assert cog_validate(str(path), quiet=True)[:2] == (True, [])
    with rasterio.open(path) as ds:
        levels = ds.overviews(1)
        assert levels == [2, 4]
        tags = [ds.tags(b) for b in (1, 2, 3)]
    with rasterio.open(path, OVERVIEW_LEVEL=len(levels) - 1) as ov:
        coarsest = ov.read().astype(np.float64)
    for b, t in enumerate(tags):
        v = coarsest[b][~np.isnan(coarsest[b])]
        assert t["STATISTICS_APPROXIMATE"] == "YES"
        assert float(t["STATISTICS_MINIMUM"]) == v.min() and float(t["STATISTICS_MAXIMUM"]) == v.max()
        assert float(t["STATISTICS_MEAN"]) == pytest.approx(v.mean(), rel=1e-9)
        assert float(t["STATISTICS_STDDEV"]) == pytest.approx(v.std(), rel=1e-6)
        assert float(t["STATISTICS_MEAN"]) == pytest.approx(np.nanmean(data[b]), abs=0.05 * (b + 1))  # near the raster's own
    info = gdalinfo(path)["bands"][2]
    assert info["metadata"][""]["STATISTICS_APPROXIMATE"] == "YES" and info["description"] == "c"


def test_a_1024_band_stream_keeps_room_for_every_band_statistics_and_the_record(tmp_path: Path) -> None:
    d = 1024
    names = [f"f{i:04d}" for i in range(d)]
    stream = CogFeatureStream(tmp_path / "f.tif", GeoBox((20, 24), TRANSFORM, "EPSG:32633"), d, "float16", names)
    data = np.random.default_rng(0).standard_normal((d, 20, 24)).astype(np.float32) * 1e-3 - 6e4
    stream.push(data)
    record = {"GEODINO_RECORD": json.dumps({"k": "x" * 200_000})}
    stream.finish({}, record, names)
    stats = read_statistics(tmp_path / "f.tif")
    assert all(s is not None for s in stats) and len(stats) == d
    assert_stats_of(tmp_path / "f.tif", d, None)


def test_band_stats_merge_chunks_and_threads_like_one_pass() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 90, 33)) * 3 + 1e4).astype(np.float32)  # far from zero: no cancellation allowed
    x[1, :, :5] = np.nan
    x[3] = np.nan
    s = BandStats(4)
    for r0 in range(0, 90, 13):
        s.add(x[2:, r0 : r0 + 13], b0=2)
        s.add(x[:2, r0 : r0 + 13])
    for b in range(3):
        v = x[b][~np.isnan(x[b])].astype(np.float64)
        got = s.band(b)
        assert (got.minimum, got.maximum) == (v.min(), v.max()) and got.valid_percent == pytest.approx(100 * v.size / x[b].size)
        assert got.mean == pytest.approx(v.mean(), rel=1e-12) and got.stddev == pytest.approx(v.std(), rel=1e-5)
    assert s.band(3).minimum is None and s.tags()[3] == {} and s.band(3).valid_percent == 0
    c = BandStats(1, nodata=255)
    c.add(np.array([[[0, 1, 255], [2, 2, 255]]], np.uint8))
    assert (c.band(0).minimum, c.band(0).maximum, c.band(0).mean, c.band(0).valid_percent) == (0, 2, 1.25, pytest.approx(400 / 6))


def test_pca_and_exported_cogs_hold_the_exact_statistics_of_what_they_store(tmp_path: Path) -> None:
    from geodino.engine import EncodeOptions, encode_scene
    from geodino.export import export_cog
    from tests.scenes import PatchProbe

    src = write_raster(tmp_path / "s.tif", coordinate_raster(200, 230))
    opts = {"tile": 64, "overlap": 16}
    pca = encode_scene(src, tmp_path / "pc.tif", PatchProbe(), EncodeOptions(pca=2, **opts))  # type: ignore[arg-type]
    store = encode_scene(src, tmp_path / "f.zarr", PatchProbe(), EncodeOptions(**opts))  # type: ignore[arg-type]
    exported = export_cog(store.out, tmp_path / "x.tif", dtype="float16")
    for path, bands in ((pca.out, 2), (exported, 6)):
        for b in range(1, bands + 1):
            assert_stats_of(path, b, None)  # of the projection; of the half floats stored
        assert cog_validate(str(path), quiet=True)[:2] == (True, [])


def test_a_large_streamed_cog_without_overviews_samples_its_rows_and_columns_and_says_so(tmp_path: Path) -> None:
    from geodino.cogstream import EXACT_STATS_VALUES, STATS_SAMPLE

    d, h, w = 96, 200, 256  # no overviews (256 cells), more values than are gathered exactly
    assert d * h * w > EXACT_STATS_VALUES
    data = np.random.default_rng(5).standard_normal((d, h, w)).astype(np.float32) + np.arange(d, dtype=np.float32)[:, None, None]
    data[:, 3:60, 7:90] = np.nan
    names = [f"f{i}" for i in range(d)]
    stream = CogFeatureStream(tmp_path / "f.tif", GeoBox((h, w), TRANSFORM, "EPSG:32633"), d, "float16", names)
    for col0 in range(0, w, stream.strip_width):
        for r0 in range(0, h, 50):
            stream.push(data[:, r0 : r0 + 50, col0 : col0 + stream.strip_width], col0)
    stream.finish({}, {}, names)
    with rasterio.open(tmp_path / "f.tif") as ds:
        assert ds.overviews(1) == []
        stored = ds.read(indexes=[1, d]).astype(np.float64)
        tags = [ds.tags(1), ds.tags(d)]
    for a, t in zip(stored, tags, strict=True):
        sample = a[::STATS_SAMPLE, ::STATS_SAMPLE]  # no overview: every 4th row and column
        v = sample[~np.isnan(sample)]
        assert t["STATISTICS_APPROXIMATE"] == "YES" and float(t["STATISTICS_MINIMUM"]) == v.min()
        assert float(t["STATISTICS_MAXIMUM"]) == v.max() and float(t["STATISTICS_MEAN"]) == pytest.approx(v.mean(), rel=1e-9)
        assert float(t["STATISTICS_VALID_PERCENT"]) == pytest.approx(100 * v.size / sample.size)
    assert cog_validate(str(tmp_path / "f.tif"), quiet=True)[:2] == (True, [])
