"""The input contract from the command line, in fresh processes: refusals are one line with nothing
written, clipping is warned about and recorded, band order never changes the features, band files on
different grids and --gsd (issue #11)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

import geodino
from tests.helpers import cli
from tests.helpers import one_line_error as refused
from tests.scenes import write_raster
from tests.test_detect import LANDSAT_GRID, S2_GRID, band_files, reflectance, s2_bands

pytestmark = pytest.mark.slow  # fresh processes or a cluster: left out of the fast loop (make test-fast), run by make test

TINY = ["--model", "geodino_tiny_mlp", "--weights", "random", "--tile", "64", "--overlap", "16"]


def adapter_tag(path: Path) -> dict:
    with rasterio.open(path) as ds:
        return json.loads(ds.tags()["GEODINO_ADAPTER"])


def test_wrong_explicit_presets_exit_2_and_write_nothing(tmp_path: Path) -> None:
    sr = {f"SR_B{i}": reflectance(i, lo=100, hi=3000).astype(np.int16) for i in (1, 2, 3)}
    files = band_files(tmp_path / "le07", "LE07_L2SP_015033_20020101_20200916_02_T1_{}.TIF", sr, LANDSAT_GRID).values()
    out = tmp_path / "out.tif"
    refused(cli("encode", *files, out, "--sensor", "landsat-c2l2", *TINY), "--sensor landsat-c2l2 takes uint16 data", "is int16")
    pan = write_raster(tmp_path / "pan.tif", reflectance(1, lo=100, hi=4000)[None])
    refused(cli("encode", pan, out, "--sensor", "rgb8", "--bands", "1,1,1", *TINY), "--sensor rgb8 takes uint8 data", "is uint16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["le07", "pan.tif"]


def test_clipping_refused_then_allowed(tmp_path: Path) -> None:
    """Level-1 DNs under the Level-2 reflectance scaling: almost every pixel is below 0 reflectance (black)."""
    l1 = {f"B{i}": reflectance(i, lo=6000, hi=7200) for i in (2, 3, 4)}
    files = list(band_files(tmp_path / "l1", "LC08_L1TP_015033_20200101_20200823_02_T1_{}.TIF", l1, LANDSAT_GRID).values())
    out = tmp_path / "out.tif"
    line = refused(cli("encode", *files, out, "--sensor", "landsat-c2l2", *TINY), "fall below the stretch (black)", "--allow-clipping")
    assert "100% of the valid pixels of B4 (red" in line and not out.exists()
    ok = cli("encode", *files, out, "--sensor", "landsat-c2l2", "--allow-clipping", *TINY)
    assert ok.returncode == 0, ok.stderr
    assert adapter_tag(out)["clipped_low"] == [1.0, 1.0, 1.0]


def test_ten_percent_saturated_runs_with_a_warning_and_the_fractions_recorded(tmp_path: Path) -> None:
    bands = s2_bands(1000)
    for a in bands.values():
        a.ravel()[::10] = 10000
    files = band_files(tmp_path, "T33UUP_20230501T101031_{}_10m.tif", bands).values()
    out = tmp_path / "out.tif"
    r = cli("encode", *files, out, *TINY)
    assert r.returncode == 0, r.stderr
    assert "geodino: note: sentinel2-l2a: stretch clips more than 5% of a band's valid pixels" in r.stderr
    rec = adapter_tag(out)
    assert rec["clipped_high"] == pytest.approx([0.1] * 3, abs=0.01) and rec["preset"] == "sentinel2-l2a"
    assert [b["common"] for b in rec["inputs"]] == ["red", "green", "blue"] and "acquired 2023-05-01" in rec["stretch"]


def encode_api(paths: list[Path], **kw: object) -> np.ndarray:
    da = geodino.encode([str(p) for p in paths], "geodino_tiny_mlp", weights="random", tile=64, overlap=16, **kw)
    return da.values


def test_every_band_order_gives_bit_identical_features(tmp_path: Path, shared_data: Path) -> None:
    s2 = list(band_files(tmp_path, "T33UUP_20230501T101031_{}_10m.tif", s2_bands(1000)).values())
    first = encode_api(s2)
    for order in itertools.permutations(s2):
        assert np.array_equal(encode_api(list(order)), first, equal_nan=True)
    generated = {f"B{i}": reflectance(i, lo=8000, hi=14000) for i in (2, 3, 4)}
    lc08 = list(band_files(tmp_path / "lc08", "LC08_L2SP_015033_20200101_20200823_02_T1_SR_{}.TIF", generated, LANDSAT_GRID).values())
    first = encode_api(lc08)
    assert all(np.array_equal(encode_api(list(o)), first, equal_nan=True) for o in itertools.permutations(lc08))
    l8 = [shared_data / "landsat8_labels" / f"L8-B{b}-Elkton-VA.tiff" for b in (2, 3, 4)]
    first = encode_api(l8)
    assert all(np.array_equal(encode_api(list(o)), first, equal_nan=True) for o in itertools.permutations(l8))
    out = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for o, files in zip(out, (l8, l8[::-1]), strict=True):
        assert cli("encode", *files, o, *TINY).returncode == 0
    with rasterio.open(out[0]) as a, rasterio.open(out[1]) as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)
    assert adapter_tag(out[0]) == adapter_tag(out[1])


def s2_three_grids(folder: Path) -> dict[str, Path]:
    """One footprint (640 x 480 m) on three grids: 10 m B02-B04 and B08, 20 m B05 and B11, 60 m B01 with unreadable pixels."""
    files = band_files(folder, "T33UUP_20230501T101031_{}_10m.tif", s2_bands(1000))
    for b, seed in (("B05", 5), ("B11", 11)):
        files[b] = write_raster(folder / f"T33UUP_20230501T101031_{b}_20m.tif", reflectance(seed, (24, 32))[None] + 1000,
                                transform=Affine(20.0, 0, S2_GRID.c, 0, -20.0, S2_GRID.f))  # fmt: skip
    coarse = write_raster(folder / "T33UUP_20230501T101031_B01_60m.tif", reflectance(1, (8, 11))[None] + 1000,
                          transform=Affine(60.0, 0, S2_GRID.c, 0, -60.0, S2_GRID.f), tiled=True, blockxsize=16, blockysize=16)  # fmt: skip
    coarse.write_bytes(coarse.read_bytes()[:600])  # its header opens, its pixels cannot be read: proves it is never read
    files["B01"] = coarse
    return files


def test_mixed_resolution_band_files(tmp_path: Path) -> None:
    files = s2_three_grids(tmp_path / "s2")
    all_files = [files[b] for b in ("B01", "B11", "B02", "B05", "B04", "B08", "B03")]
    out = tmp_path / "ten.tif"
    r = cli("encode", *all_files, out, *TINY)
    assert r.returncode == 0, r.stderr
    assert "not read (bands not used): T33UUP_20230501T101031_B01_60m.tif" in r.stderr
    with rasterio.open(out) as ds:
        assert ds.transform == Affine(160.0, 0, S2_GRID.c, 0, -160.0, S2_GRID.f) and ds.shape == (3, 4)
    assert adapter_tag(out)["resampling"].startswith("not read")
    mixed = tmp_path / "mixed.tif"
    r = cli("encode", *all_files, mixed, "--bands", "B11,B08,B04", *TINY)
    assert r.returncode == 0, r.stderr
    rec = adapter_tag(mixed)
    assert "resampled on the fly (bilinear) onto the 10 m grid of the finest selected band: B11 (20 m)" in rec["resampling"]
    with rasterio.open(mixed) as ds:
        assert ds.transform == Affine(160.0, 0, S2_GRID.c, 0, -160.0, S2_GRID.f) and ds.shape == (3, 4)
    twenty = tmp_path / "twenty.tif"
    assert (
        cli(
            "encode", files["B05"], files["B11"], files["B04"], twenty, "--bands", "B11,B05,B04", "--sensor", "sentinel2-l2a-pb04", *TINY
        ).returncode
        == 0
    )


def test_gsd_resamples_before_tiling(tmp_path: Path) -> None:
    files = list(band_files(tmp_path, "T33UUP_20230501T101031_{}_10m.tif", s2_bands(1000)).values())
    out = tmp_path / "gsd.tif"
    r = cli("encode", *files, out, "--gsd", "25", *TINY)
    assert r.returncode == 0, r.stderr
    with rasterio.open(out) as ds:  # 640 x 480 m at 25 m: 26 x 20 px -> 2 x 2 cells of 400 m
        assert ds.transform == Affine(400.0, 0, S2_GRID.c, 0, -400.0, S2_GRID.f) and ds.shape == (2, 2)
    rec = adapter_tag(out)
    assert rec["gsd"] == 25.0 and "resampled from 10 x 10 m to 25 m (average, on the fly, --gsd)" in rec["resampling"]
    refused(cli("encode", *files, tmp_path / "x.tif", "--gsd", "-1", *TINY), "--gsd -1")
