"""geodino.tiffcodec + geodino.cogfile: tiles predicted like libtiff, compressed, written out of order
from threads into a COG whose IFDs come last; GDAL reads it back exactly and rio-cogeo validates it."""

from __future__ import annotations

import math
import random
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import ColorInterp
from rasterio.transform import Affine
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from geodino.cogfile import CogFile, CogLayout, read_ifds, template_tags
from geodino.tiffcodec import compress, compress_bound, encode_block_row, predict, unpredict

CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
COLORMAP = {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255), 255: (0, 0, 0, 0)}


# --- helpers -------------------------------------------------------------------------------------


def overview(a: np.ndarray) -> np.ndarray:
    """Next level of ``a (count, h, w)``: NaN-aware 2x2 mean (floats) or top-left sample (uint8), ceil sizes."""
    c, h, w = a.shape
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a[:, ::2, ::2])
    p = np.full((c, -(-h // 2) * 2, -(-w // 2) * 2), np.nan, a.dtype)
    p[:, :h, :w] = a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN 2x2 cells stay NaN
        return np.nanmean(p.reshape(c, p.shape[1] // 2, 2, p.shape[2] // 2, 2), axis=(2, 4)).astype(a.dtype)


def pyramid(x: np.ndarray, layout: CogLayout) -> list[np.ndarray]:
    """Level arrays of ``layout`` from full-resolution ``x``, each from the previous one (factors 2, 4, 8...)."""
    levels = [x]
    for _ in layout.factors:
        levels.append(overview(levels[-1]))
    for lv, a in enumerate(levels):
        assert a.shape[1:] == layout.shape(lv)
    return levels


def write_cog(path: Path, layout: CogLayout, tags: dict, levels: list[np.ndarray], seed: int = 0, skip: tuple | None = None) -> None:
    """Encode every block row of every level and write its tiles in a shuffled order from 4 threads."""
    rows = [(lv, ty) for lv in range(layout.levels) for ty in range(layout.tiles(lv)[0])]
    random.Random(seed).shuffle(rows)
    b = layout.block
    as_torch = layout.dtype == "float16"  # one path through torch tensors, the others through numpy

    def task(lv: int, ty: int, cog: CogFile) -> None:
        block = levels[lv][:, ty * b : (ty + 1) * b]
        tiles = encode_block_row(torch.from_numpy(np.ascontiguousarray(block)) if as_torch else block, b, bands_per_task=2)
        random.Random(seed + lv * 1000 + ty).shuffle(tiles)
        for band, tx, payload in tiles:
            if (lv, band, ty, tx) != skip:
                cog.write(lv, band, ty, tx, payload)

    with CogFile(path, layout, tags) as cog, ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(task, lv, ty, cog) for lv, ty in rows]:
            f.result()


def reference_gtiff(
    path: Path, x: np.ndarray, dtype: str, nodata: float, descriptions: list[str], tags: dict, colormap: dict | None
) -> None:
    """The same raster written by GDAL (plain GTiff) for comparing georeferencing and metadata."""
    opts = {"NBITS": "16"} if dtype == "float16" else {}
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=x.shape[2],
        height=x.shape[1],
        count=x.shape[0],
        dtype=x.dtype,
        crs=CRS,
        transform=TRANSFORM,
        nodata=nodata,
        **opts,
    ) as ds:
        ds.write(x)
        ds.descriptions = tuple(descriptions)
        ds.update_tags(**tags)
        if colormap:
            ds.write_colormap(1, colormap)


def same_nodata(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


def check_cog(path: Path, ref: Path, levels: list[np.ndarray], layout: CogLayout, predictor: str) -> None:
    """Data of every level, validity, layout and metadata of the COG against what was written and GDAL's file."""
    valid, errors, warns = cog_validate(path, quiet=True)
    assert (valid, errors, warns) == (True, [], [])
    with rasterio.open(path) as ds, rasterio.open(ref) as gd:
        assert (ds.height, ds.width, ds.count) == (layout.height, layout.width, layout.count)
        assert ds.block_shapes == [(layout.block, layout.block)] * layout.count
        assert ds.compression.value.lower() == "zstd"
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == predictor
        assert ds.count == 1 or ds.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == "BAND"
        assert ds.crs == gd.crs and ds.transform == gd.transform
        assert same_nodata(ds.nodata, gd.nodata)
        assert ds.descriptions == gd.descriptions
        assert ds.tags() == gd.tags()
        assert ds.dtypes == gd.dtypes
        assert ds.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") == gd.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
        assert ds.overviews(1) == list(layout.factors)
        full = ds.read()
        assert np.array_equal(full, levels[0].astype(full.dtype), equal_nan=True)
        assert np.array_equal(full, gd.read(), equal_nan=True)
        # a window from the middle across tile boundaries (gdalinfo-like subset read)
        win = Window(col_off=layout.width // 2 - 17, row_off=layout.height // 2 - 23, width=41, height=47)
        assert np.array_equal(ds.read(window=win), gd.read(window=win), equal_nan=True)
    for i in range(len(layout.factors)):
        with rasterio.open(path, OVERVIEW_LEVEL=i) as ov:
            got = ov.read()
            assert got.shape[1:] == layout.shape(i + 1)
            assert np.array_equal(got, levels[i + 1].astype(got.dtype), equal_nan=True)


def file_version(path: Path) -> int:
    return struct.unpack("<H", path.read_bytes()[2:4])[0]


# --- tiffcodec -----------------------------------------------------------------------------------


def special_values(dtype: np.dtype) -> np.ndarray:
    fi = np.finfo(dtype)
    nan_payload = np.array([0x7FC00001 if dtype == np.float32 else 0x7E01], dtype=np.uint32 if dtype == np.float32 else np.uint16).view(
        dtype
    )
    return np.array(
        [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, fi.smallest_subnormal, -fi.smallest_subnormal, fi.tiny, fi.max, -fi.max, 1.0],
        dtype=dtype,
    ).tolist() + [nan_payload[0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
def test_predict_round_trip_is_bitwise(dtype: type) -> None:
    rng = np.random.default_rng(1)
    if dtype == np.uint8:
        x = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)
    else:
        x = (rng.standard_normal((3, 5, 13)) * 1000).astype(dtype)
        sv = np.array(special_values(np.dtype(dtype)), dtype=dtype)
        x.reshape(-1)[: sv.size] = sv
        x[2, 4, -sv.size :] = sv
    p = predict(torch.from_numpy(x))
    assert p.dtype == torch.uint8 and p.shape == (*x.shape[:2], x.shape[2] * x.itemsize)
    back = unpredict(p.numpy(), dtype)
    assert back.dtype == x.dtype and back.shape == x.shape
    assert back.tobytes() == x.tobytes()


def test_compress_bound_is_zstd_bound() -> None:
    assert compress_bound(0) == 64  # ZSTD_COMPRESSBOUND(0)
    assert compress_bound(65536) == 65536 + 256 + (131072 - 65536) // 2048
    assert compress_bound(1 << 20) == (1 << 20) + (1 << 12)
    noise = np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8)
    frame = compress(noise)
    assert len(frame) <= compress_bound(noise.size)
    assert numcodecs.Zstd().decode(frame) == noise.tobytes()


@pytest.mark.parametrize(("dtype", "predictor"), [("float32", "3"), ("float16", "3"), ("uint8", "2")])
def test_tiles_match_gdal_predictor(tmp_path: Path, dtype: str, predictor: str) -> None:
    """GDAL's (libtiff's) own tiles, decompressed, are byte for byte our predicted tiles; our COG reads back like GDAL's file."""
    rng = np.random.default_rng(2)
    count, h, w = 2, 256, 384
    if dtype == "uint8":
        x = rng.integers(0, 6, (count, h, w), dtype=np.uint8)
    else:
        x = rng.standard_normal((count, h, w)).astype(dtype).astype(np.float32)
        x[0, 10:20, 30:40] = np.nan
    gdal = tmp_path / "gdal.tif"
    opts = {"NBITS": "16"} if dtype == "float16" else {}
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=x.dtype, crs=CRS, transform=TRANSFORM)
    opts |= {"COMPRESS": "ZSTD", "PREDICTOR": predictor, "TILED": "YES", "BLOCKXSIZE": "128", "BLOCKYSIZE": "128", "INTERLEAVE": "BAND"}
    with rasterio.open(gdal, "w", **profile, **opts) as ds:
        ds.write(x)
    ifd = read_ifds(gdal)[0]
    offsets = np.frombuffer(ifd[324][2], dtype="<u4")
    counts = np.frombuffer(ifd[325][2], dtype="<u4")
    raw = gdal.read_bytes()
    src = torch.from_numpy(x.astype(dtype))
    for band in range(count):
        for ty in range(2):
            for tx in range(3):
                i = (band * 2 + ty) * 3 + tx  # GDAL's separate planes: band after band, row-major
                theirs = numcodecs.Zstd().decode(raw[offsets[i] : offsets[i] + counts[i]])
                ours = predict(src[band : band + 1, ty * 128 : (ty + 1) * 128, tx * 128 : (tx + 1) * 128])
                assert theirs == ours.numpy().tobytes()
    layout = CogLayout(h, w, count, dtype, factors=())
    ours_path = tmp_path / "ours.tif"
    write_cog(ours_path, layout, template_tags(CRS, TRANSFORM, count, dtype, None, None, {}), [x.astype(dtype)])
    with rasterio.open(ours_path) as a, rasterio.open(gdal) as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)
        assert a.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == predictor


def test_encode_block_row_pads_partial_tiles() -> None:
    x = np.arange(3 * 50 * 130, dtype=np.float32).reshape(3, 50, 130)
    tiles = encode_block_row(x, 128)
    assert [(b, tx) for b, tx, _ in tiles] == [(b, tx) for b in range(3) for tx in range(2)]
    with ThreadPoolExecutor(2) as pool:
        assert encode_block_row(x, 128, bands_per_task=1, executor=pool) == tiles
    raw = numcodecs.Zstd().decode(dict(((b, tx), p) for b, tx, p in tiles)[(1, 1)])
    tile = unpredict(np.frombuffer(raw, np.uint8).reshape(1, 128, 512), np.float32)[0]
    assert np.array_equal(tile[:50, :2], x[1, :, 128:])
    assert np.isnan(tile[50:]).all() and np.isnan(tile[:, 2:]).all()
    u = encode_block_row(np.zeros((1, 3, 3), np.uint8), 16)
    assert unpredict(np.frombuffer(numcodecs.Zstd().decode(u[0][2]), np.uint8).reshape(1, 16, 16), np.uint8)[0, 3:].min() == 255


# --- cogfile -------------------------------------------------------------------------------------


def test_layout_shapes_and_bigtiff_choice() -> None:
    lay = CogLayout(300, 200, 4, "float32", factors=(2, 4))
    assert [lay.shape(i) for i in range(3)] == [(300, 200), (150, 100), (75, 50)]
    assert [lay.tiles(i) for i in range(3)] == [(3, 2), (2, 1), (1, 1)]
    assert lay.ntiles(0) == 24 and not lay.is_bigtiff
    assert CogLayout(301, 201, 1, "uint8", factors=(2, 4, 8)).shape(3) == (38, 26)
    assert CogLayout(300, 200, 4, "float32", bigtiff=True).is_bigtiff
    assert CogLayout(20000, 20000, 1024, "float16", factors=(2, 4)).is_bigtiff
    assert not CogLayout(2048, 2048, 64, "float32").is_bigtiff
    with pytest.raises(ValueError, match="dtype"):
        CogLayout(10, 10, 1, "int16")


@pytest.mark.parametrize("bigtiff", [False, True])
def test_float32_cog_round_trip(tmp_path: Path, bigtiff: bool) -> None:
    rng = np.random.default_rng(3)
    count, h, w = 5, 300, 200
    x = rng.standard_normal((count, h, w)).astype(np.float32)
    x[rng.random((count, h, w)) < 0.05] = np.nan
    x[:, :4, :4] = np.nan  # an all-NaN overview cell
    layout = CogLayout(h, w, count, "float32", factors=(2, 4), bigtiff=bigtiff)
    desc = [f"feature_{i}" for i in range(count)]
    meta = {"geodino_model": "dinov3_vits16", "geodino_run": '{"a": [1, 2]}'}
    tags = template_tags(CRS, TRANSFORM, count, "float32", float("nan"), desc, meta)
    levels = pyramid(x, layout)
    path, ref = tmp_path / "f32.tif", tmp_path / "ref.tif"
    write_cog(path, layout, tags, levels)
    reference_gtiff(ref, x, "float32", float("nan"), desc, meta, None)
    check_cog(path, ref, levels, layout, "3")
    assert file_version(path) == (43 if bigtiff else 42)
    ifds = read_ifds(path)
    assert len(ifds) == 3 and [i[254][2] for i in ifds] == [b"\0\0\0\0", b"\1\0\0\0", b"\1\0\0\0"]
    assert all(42113 in i for i in ifds) and 42112 in ifds[0] and 42112 not in ifds[1]


def test_float16_cog_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    count, h, w = 3, 130, 260
    x = (rng.standard_normal((count, h, w)) * 100).astype(np.float16)
    x[1, 50:70, 100:200] = np.nan
    x[2, 0, :8] = [np.inf, -np.inf, -0.0, 6e-8, 65504, -65504, 1e-5, 0]
    layout = CogLayout(h, w, count, "float16", factors=(2,))
    desc = ["a", "b", "c"]
    tags = template_tags(CRS, TRANSFORM, count, "float16", float("nan"), desc, {"k": "v"})
    levels = pyramid(x, layout)
    path, ref = tmp_path / "f16.tif", tmp_path / "ref.tif"
    write_cog(path, layout, tags, levels)
    reference_gtiff(ref, x.astype(np.float32), "float16", float("nan"), desc, {"k": "v"}, None)
    check_cog(path, ref, levels, layout, "3")
    with rasterio.open(path) as ds:
        assert ds.dtypes[0] == "float32" and ds.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "16"
        assert np.array_equal(ds.read(3)[0, :8], x[2, 0, :8].astype(np.float32))


def test_uint8_classes_with_colormap(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    h, w = 200, 300
    x = rng.integers(0, 4, (1, h, w), dtype=np.uint8)
    x[0, 150:, 250:] = 255
    layout = CogLayout(h, w, 1, "uint8", factors=(2, 4))
    tags = template_tags(CRS, TRANSFORM, 1, "uint8", 255, ["land_cover"], {"classes": "water,tree,crop,built"}, COLORMAP)
    levels = pyramid(x, layout)
    path, ref = tmp_path / "classes.tif", tmp_path / "ref.tif"
    write_cog(path, layout, tags, levels)
    reference_gtiff(ref, x, "uint8", 255, ["land_cover"], {"classes": "water,tree,crop,built"}, COLORMAP)
    check_cog(path, ref, levels, layout, "2")
    with rasterio.open(path) as ds, rasterio.open(ref) as gd:
        assert ds.colormap(1) == gd.colormap(1)
        assert ds.colorinterp == (ColorInterp.palette,)
        assert ds.nodata == 255
    assert all(320 in i for i in read_ifds(path))


def test_small_raster_without_overviews_and_sparse_tile(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 150, 140)).astype(np.float32)
    layout = CogLayout(150, 140, 2, "float32", factors=())
    tags = template_tags(CRS, TRANSFORM, 2, "float32", float("nan"), ["p", "q"], {})
    path = tmp_path / "small.tif"
    write_cog(path, layout, tags, [x], skip=(0, 1, 1, 1))  # band 2, tile (1, 1) never written
    assert cog_validate(path, quiet=True)[:2] == (True, [])
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == []
        got = ds.read()
    expected = x.copy()
    expected[1, 128:, 128:] = np.nan  # a missing tile reads as nodata
    assert np.array_equal(got, expected, equal_nan=True)
    ifd = read_ifds(path)[0]
    assert np.frombuffer(ifd[325][2], "<u4")[7] == 0 and np.frombuffer(ifd[324][2], "<u4")[7] == 0


def test_tile_leader_trailer_and_regions(tmp_path: Path) -> None:
    """Every tile is ``size | payload | last 4 bytes``; overview regions precede full resolution, smallest first."""
    x = np.random.default_rng(7).standard_normal((2, 300, 200)).astype(np.float32)
    layout = CogLayout(300, 200, 2, "float32", factors=(2, 4))
    path = tmp_path / "t.tif"
    write_cog(path, layout, template_tags(CRS, TRANSFORM, 2, "float32", float("nan"), None, {}), pyramid(x, layout))
    raw = path.read_bytes()
    assert raw[8:50].startswith(b"GDAL_STRUCTURAL_METADATA_SIZE=") and b"BLOCK_ORDER" not in raw[:300]
    spans = []
    for ifd in read_ifds(path):
        offs, cnts = np.frombuffer(ifd[324][2], "<u4"), np.frombuffer(ifd[325][2], "<u4")
        for o, n in zip(offs.tolist(), cnts.tolist(), strict=True):
            assert struct.unpack("<I", raw[o - 4 : o])[0] == n
            assert raw[o + n : o + n + 4] == raw[o + n - 4 : o + n]
        spans.append((int(offs.min()), int((offs + cnts).max())))
    assert spans[2][1] <= spans[1][0] and spans[1][1] <= spans[0][0]
    assert struct.unpack("<I", raw[4:8])[0] < 300


def test_failure_inside_with_removes_file(tmp_path: Path) -> None:
    layout = CogLayout(100, 100, 1, "float32", factors=())
    tags = template_tags(CRS, TRANSFORM, 1, "float32", float("nan"), None, {})
    path = tmp_path / "bad.tif"
    tile = encode_block_row(np.zeros((1, 100, 100), np.float32))[0][2]
    with pytest.raises(RuntimeError, match="boom"), CogFile(path, layout, tags) as cog:
        cog.write(0, 0, 0, 0, tile)
        assert path.exists()
        raise RuntimeError("boom")
    assert not path.exists()
    with pytest.raises(ValueError, match="twice"), CogFile(path, layout, tags) as cog:
        cog.write(0, 0, 0, 0, tile)
        cog.write(0, 0, 0, 0, tile)
    assert not path.exists()


def test_overview_region_overflow_is_refused(tmp_path: Path) -> None:
    layout = CogLayout(256, 256, 1, "uint8", factors=(2,))
    tags = template_tags(CRS, TRANSFORM, 1, "uint8", 255, None, {})
    path = tmp_path / "over.tif"
    with pytest.raises(ValueError, match="overflows"), CogFile(path, layout, tags) as cog:
        cog.write(1, 0, 0, 0, b"x" * (layout.worst_bytes(1) - 7))  # one byte past the worst case with leader and trailer
    assert not path.exists()


def test_the_numpy_predictor_equals_the_torch_one() -> None:
    from geodino.tiffcodec import predicted_tiles

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float16, np.uint8):
        block = (rng.standard_normal((3, 20, 70)) * 50).astype(dtype)
        if dtype != np.uint8:
            block[0, 0, :5] = [np.nan, np.inf, -np.inf, -0.0, 1e-42 if dtype == np.float32 else 6e-8]
        want = predicted_tiles(torch.from_numpy(block), 32, 32).numpy()
        got = predicted_tiles(block, 32, 32)
        assert isinstance(got, np.ndarray) and got.shape == want.shape == (3, 3, 32, 32 * np.dtype(dtype).itemsize)
        assert np.array_equal(got, want)
