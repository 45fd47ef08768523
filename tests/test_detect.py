"""Bands known by identity, presets chosen from evidence (with the reason recorded), presets checked
against the data, the Sentinel-2 offset from facts: never a silent guess (issue #11)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geodino.adapter import prepare
from geodino.errors import InputError
from geodino.scene import open_scene
from tests.scenes import write_raster

S2_GRID = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 5000000.0)
LANDSAT_GRID = Affine(30.0, 0.0, 300000.0, 0.0, -30.0, 5000000.0)


def band_files(folder: Path, pattern: str, bands: dict[str, np.ndarray], transform: Affine = S2_GRID) -> dict[str, Path]:
    """One single-band GeoTIFF per band, named ``pattern.format(band)``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {b: write_raster(folder / pattern.format(b), a[None], transform=transform) for b, a in bands.items()}


def reflectance(seed: int, shape: tuple[int, int] = (48, 64), lo: int = 200, hi: int = 2500) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, shape).astype(np.uint16)


def s2_bands(offset_dn: int = 0) -> dict[str, np.ndarray]:
    return {b: reflectance(i) + offset_dn for i, b in enumerate(("B02", "B03", "B04", "B08"))}


def adapt(paths: list[Path] | Path, **kw: object):
    return prepare(open_scene([str(p) for p in paths] if isinstance(paths, list) else str(paths)), **kw)[1]


def selected(adapter) -> list[str | None]:
    return [b["common"] for b in adapter.selected()]


# --- band order never matters -----------------------------------------------------------------------


def test_sentinel2_band_files_in_every_order_give_one_record(tmp_path: Path) -> None:
    files = band_files(tmp_path, "T33UUP_20230501T101031_{}_10m.tif", s2_bands(1000))
    records = set()
    for order in itertools.permutations(files.values()):
        a = adapt(list(order))
        assert a.preset == "sentinel2-l2a" and selected(a) == ["red", "green", "blue"] and a.names == ("B04", "B03", "B02")
        records.add(json.dumps(a.record(), sort_keys=True))
    assert len(records) == 1  # 24 orders, one record
    three = adapt([files["B04"], files["B03"], files["B02"]])  # with or without B08: the same preset and preprocessing
    assert (three.preset, three.offset, three.lo, three.hi, three.names) == (a.preset, a.offset, a.lo, a.hi, a.names)
    assert "'T33UUP_20230501T101031_B02_10m' in" in a.reason and "acquired 2023-05-01" in a.stretch and a.offset == pytest.approx(-0.1)


def test_shared_landsat8_files_in_every_order_identified_not_scaled_as_l2(shared_data: Path) -> None:
    files = [shared_data / "landsat8_labels" / f"L8-B{b}-Elkton-VA.tiff" for b in (2, 3, 4)]
    records = {json.dumps(adapt(list(order)).record(), sort_keys=True) for order in itertools.permutations(files)}
    assert len(records) == 1
    a = adapt(files)
    assert a.preset == "generic" and a.names == ("B4", "B3", "B2") and a.scale == 1.0 and a.offset == 0.0
    assert selected(a) == ["red", "green", "blue"] and all(b["common_from"] == "Landsat 8/9 OLI name table" for b in a.selected())
    assert "'L8' in L8-B2-Elkton-VA.tiff" in a.reason and "no product id or metadata says the processing level" in a.reason


def test_same_name_different_band_on_landsat_4_7(tmp_path: Path) -> None:
    names = {f"SR_B{i}": reflectance(i, lo=7500, hi=15000) for i in (1, 2, 3, 4)}
    files = band_files(tmp_path, "LE07_L2SP_015033_20020101_20200916_02_T1_{}.TIF", names, LANDSAT_GRID)
    a = adapt(list(files.values()))
    assert a.preset == "landsat-tm-c2l2" and a.names == ("B3", "B2", "B1")  # red is B3 on TM/ETM+, B4 on OLI
    assert "'LE07_L2SP' in LE07_L2SP_" in a.reason


# --- presets: a positive example and a near miss each ---------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "preset", "scale"),
    [
        ("LC08_L2SP_015033_20200101_20200823_02_T1_SR_{}.TIF", "landsat-c2l2", 2.75e-5),
        ("LC09_L1TP_015033_20220101_20220102_02_T1_{}.TIF", "landsat8-c2l1", 1.0),
    ],
)
def test_landsat_level_from_the_product_id(tmp_path: Path, prefix: str, preset: str, scale: float) -> None:
    files = band_files(tmp_path, prefix, {f"B{i}": reflectance(i, lo=8000, hi=14000) for i in (2, 3, 4)}, LANDSAT_GRID)
    a = adapt(list(files.values()))
    assert a.preset == preset and a.scale == pytest.approx(scale) and a.names == ("B4", "B3", "B2")


def test_landsat_without_level_evidence_gets_a_percentile_stretch(tmp_path: Path) -> None:
    files = band_files(tmp_path, "LC08_{}.TIF", {f"B{i}": reflectance(i) for i in (2, 3, 4)}, LANDSAT_GRID)
    a = adapt(list(files.values()))
    assert a.preset == "generic" and a.names == ("B4", "B3", "B2") and "percentiles 2-98" in a.stretch


def test_int16_surface_reflectance_is_never_scaled_as_c2l2(tmp_path: Path) -> None:
    sr = {f"SR_B{i}": reflectance(i, lo=100, hi=3000).astype(np.int16) for i in (1, 2, 3)}
    files = list(band_files(tmp_path, "LE07_L2SP_015033_20020101_20200916_02_T1_{}.TIF", sr, LANDSAT_GRID).values())
    a = adapt(files)
    assert a.preset == "generic" and a.names == ("B3", "B2", "B1")  # a uint16 preset does not take int16
    with pytest.raises(InputError, match=r"^--sensor landsat-c2l2 takes uint16 data but .* is int16"):
        adapt(files, sensor="landsat-c2l2")


@pytest.mark.parametrize(
    ("folder", "date", "offset", "why"),
    [
        ("S2B_MSIL2A_20220301T101031_N0400_R022_T33UUP_20220301T130000.SAFE", "20220301", -0.1, "processing baseline N0400"),
        ("S2A_MSIL2A_20180601T101031_N0206_R022_T33UUP_20180601T120000.SAFE", "20180601", 0.0, "processing baseline N0206"),
        ("plain", "20220301", -0.1, "acquired 2022-03-01 (on or after 2022-01-25"),
        ("plain", "20211231", 0.0, "acquired 2021-12-31 (before 2022-01-25"),
    ],
)
def test_sentinel2_offset_from_facts(tmp_path: Path, folder: str, date: str, offset: float, why: str) -> None:
    files = band_files(tmp_path / folder, f"T33UUP_{date}T101031_{{}}_10m.tif", s2_bands(1000))
    a = adapt(list(files.values()))
    assert a.preset == "sentinel2-l2a" and a.offset == pytest.approx(offset) and why in a.stretch


def test_sentinel2_snowy_crop_of_a_2018_product_keeps_no_offset(tmp_path: Path) -> None:
    """The old brightness heuristic gave -1000 to bright crops; facts give the same answer for any crop."""
    bright = {b: reflectance(i, lo=5000, hi=9000) for i, b in enumerate(("B02", "B03", "B04"))}
    files = list(band_files(tmp_path / "S2A_MSIL2A_20180103T101031_N0206_R022_T33UUP_20180103T120000.SAFE",
                            "T33UUP_20180103T101031_{}_10m.tif", bright).values())  # fmt: skip
    with pytest.raises(InputError, match=r"100% of the valid pixels .* above the stretch .*--allow-clipping"):
        adapt(files)  # snow is brighter than the 0-0.3 reflectance stretch
    a = adapt(files, allow_clipping=True)
    assert a.offset == 0.0 and "N0206" in a.stretch and a.clipped_high == (1.0, 1.0, 1.0)


def test_sentinel2_offset_from_metadata_and_refused_without_facts(tmp_path: Path) -> None:
    data = np.stack(list(s2_bands(1000).values()))
    tagged = write_raster(tmp_path / "S2A_MSIL2A_tile.tif", data, transform=S2_GRID)
    import rasterio

    with rasterio.open(tagged, "r+") as ds:
        ds.update_tags(BOA_ADD_OFFSET_B4="-1000")
        for i, b in enumerate(("B02", "B03", "B04", "B08"), 1):
            ds.set_band_description(i, b)
    a = adapt(tagged)
    assert a.offset == pytest.approx(-0.1) and "BOA_ADD_OFFSET_B4" in a.stretch
    bare = write_raster(tmp_path / "S2A_MSIL2A_bare.tif", data, transform=S2_GRID)
    with rasterio.open(bare, "r+") as ds:
        for i, b in enumerate(("B02", "B03", "B04", "B08"), 1):
            ds.set_band_description(i, b)
    with pytest.raises(InputError, match=r"sentinel2-l2a-pb04 .* sentinel2-l2a-legacy"):
        adapt(bare)
    assert adapt(bare, sensor="sentinel2-l2a-legacy").offset == 0.0


def test_one_band_is_pan_and_other_presets_refuse_it(tmp_path: Path) -> None:
    pan = write_raster(tmp_path / "pan.tif", reflectance(3, lo=100, hi=4000)[None])
    a = adapt(pan)
    assert a.preset == "pan" and a.indexes == (0, 0, 0) and "replicated" in a.reason
    with pytest.raises(InputError, match=r"^--sensor rgb8 takes uint8 data but pan.tif is uint16"):
        adapt(pan, sensor="rgb8", bands="1,1,1")


def test_naip_by_name_and_unnamed_four_bands_refused(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 255, (4, 32, 32), dtype=np.uint8)
    naip = write_raster(tmp_path / "m_3607717_sw_18_1_20160620.tif", data, photometric="MINISBLACK")
    assert adapt(naip).preset == "naip-rgbn" and "'m_3607717_sw_18_1_20160620'" in adapt(naip).reason
    other = write_raster(tmp_path / "four.tif", data, photometric="MINISBLACK")
    with pytest.raises(InputError, match=r"cannot tell which bands of four.tif are red, green, blue.*--bands 1,2,3"):
        adapt(other)


def test_generic_never_takes_the_first_three_of_many(tmp_path: Path) -> None:
    stack = write_raster(tmp_path / "eight.tif", np.stack([reflectance(i) for i in range(8)]))
    with pytest.raises(InputError, match=r"no band red, green, blue in eight.tif \(generic\)"):
        adapt(stack, sensor="generic")
    assert adapt(stack, bands="4,3,2").indexes == (3, 2, 1)


def test_three_unnamed_bands_are_taken_in_file_order_and_said(tmp_path: Path) -> None:
    a = adapt(write_raster(tmp_path / "three.tif", np.stack([reflectance(i) for i in range(3)])))
    assert a.preset == "generic" and a.indexes == (0, 1, 2)
    assert any("taken as red, green, blue in file order" in n for n in a.notes)
    assert [b["common_from"] for b in a.selected()] == ["file order (3 unnamed bands)"] * 3


def test_explicit_preset_of_another_family_is_refused(tmp_path: Path) -> None:
    files = band_files(tmp_path, "T33UUP_20230501T101031_{}_10m.tif", s2_bands(1000))
    with pytest.raises(InputError, match=r"--sensor landsat-c2l2 is for Landsat 8/9 OLI bands but the scene is Sentinel-2"):
        adapt(list(files.values()), sensor="landsat-c2l2")


def test_clipping_warns_above_5_percent_and_records_the_fractions(tmp_path: Path) -> None:
    bands = s2_bands(1000)
    for a in bands.values():
        a.ravel()[::10] = 10000  # 10% saturated
    files = band_files(tmp_path, "T33UUP_20230501T101031_{}_10m.tif", bands)
    a = adapt(list(files.values()))
    assert all(h == pytest.approx(0.1, abs=0.01) for h in a.clipped_high) and all(lo == 0 for lo in a.clipped_low)
    assert any("clips more than 5%" in n for n in a.notes)


# --- found by a hostile review ------------------------------------------------------------------------


def test_a_product_name_does_not_name_the_bands_of_an_unnamed_stack(tmp_path: Path) -> None:
    """An S2 L2A export in spectral order (B02, B03, B04, B08) with no band names: the preset's layout is not assumed."""
    stack = write_raster(tmp_path / "S2A_MSIL2A_20220301T101010_N0400_R022_T33UUP_stack.tif", np.stack(list(s2_bands(1000).values())))
    with pytest.raises(InputError, match=r"pass --sensor sentinel2-l2a if the bands are in its order B04, B03, B02, B08"):
        adapt(stack)
    a = adapt(stack, sensor="sentinel2-l2a")  # the user vouches for the order
    assert a.names == ("B04", "B03", "B02") and any(
        "names none of its bands: taken in the sentinel2-l2a preset's order" in n for n in a.notes
    )


def test_sensor_hints_are_whole_tokens(tmp_path: Path) -> None:
    files = band_files(tmp_path / "data_minneapolis", "B{}.TIF", {str(i): reflectance(i) for i in (1, 2, 3, 4)}, LANDSAT_GRID)
    with pytest.raises(InputError) as err:  # 'oli' inside 'minneapolis' is not Landsat OLI
        adapt(list(files.values()))
    assert "--bands B4,B3,B2 if it is Landsat 8/9 OLI or --bands B3,B2,B1 if it is Landsat 4-7 TM/ETM+" in str(err.value)
    tm = band_files(tmp_path / "minneapolis" / "landsat5", "B{}.TIF", {str(i): reflectance(i) for i in (1, 2, 3)}, LANDSAT_GRID)
    assert adapt(list(tm.values())).names == ("B3", "B2", "B1")


@pytest.mark.parametrize(("tag", "offset"), [("N0509", -0.1), ("05.09", -0.1), ("02.06", 0.0)])
def test_baseline_tags_in_any_spelling_and_malformed_ones_are_no_facts(tmp_path: Path, tag: str, offset: float) -> None:
    import rasterio

    paths = []
    for b, a in s2_bands(1000).items():
        path = write_raster(tmp_path / f"S2B_MSIL2A_{b}.tif", a[None], transform=S2_GRID)
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(PROCESSING_BASELINE=tag, BOA_ADD_OFFSET_B2="n/a")
        paths.append(path)
    assert adapt(paths).offset == pytest.approx(offset)
    for p in paths:
        with rasterio.open(p, "r+") as ds:
            ds.update_tags(PROCESSING_BASELINE="unknown")
    with pytest.raises(InputError, match="nothing says the processing baseline"):
        adapt(paths)


def test_broad_common_names_take_the_one_narrow_band(shared_data: Path) -> None:
    files = [shared_data / "landsat8_labels" / f"L8-B{b}-Elkton-VA.tiff" for b in (5, 4, 3)]
    assert adapt(files, bands="nir,red,green").names == ("B5", "B4", "B3")


def test_repeated_band_names_say_what_to_do(tmp_path: Path) -> None:
    a = band_files(tmp_path / "d1", "T33UUP_20220301T101010_{}_10m.tif", s2_bands(1000))
    b = band_files(tmp_path / "d2", "T33UUP_20220601T101010_{}_10m.tif", s2_bands(1000))
    with pytest.raises(InputError, match="encode one date at a time"):
        open_scene([str(a["B04"]), str(a["B03"]), str(b["B04"])])
