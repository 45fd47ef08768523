"""STAC Items as input: band identities, product facts and offsets from the item; local and http(s) assets
(served with HTTP Range requests by a local server) encode exactly like the band files; one-line errors."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pystac
import pytest
import rasterio
from pystac.extensions.eo import Band as EOBand
from pystac.extensions.eo import EOExtension

from geodino.adapter import prepare
from geodino.errors import InputError
from geodino.scene import open_scene
from tests import helpers
from tests.helpers import serving
from tests.scenes import TRANSFORM, write_raster

pytestmark = pytest.mark.slow  # fresh processes or a cluster: left out of the fast loop (make test-fast), run by make test

TINY = ("--model", "geodino_tiny_mlp", "--weights", "random", "--tile", "64", "--overlap", "16")
ITEM_ID = "S2A_33UUP_20230501_0_L2A"
BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}
ORDER = ("nir", "red", "blue", "green")  # the item's (scrambled) asset order


@pytest.fixture
def band_files(tmp_path: Path) -> dict[str, Path]:
    """Four 64x80 px uint16 Sentinel-2 L2A band files (10 m, EPSG:32633) named the L2A way, by common name."""
    folder = tmp_path / "bands"
    folder.mkdir()
    rng = np.random.default_rng(11)
    return {
        common: write_raster(folder / f"T33UUP_20230501T101031_{band}_10m.tif", rng.integers(1000, 4001, (1, 64, 80), dtype=np.uint16))
        for common, band in BANDS.items()
    }


def write_item(path: Path, hrefs: dict[str, str], eo: bool = True, **properties: object) -> Path:
    """A STAC Item (written with pystac) whose assets, in ``hrefs`` order, are COGs with eo:bands (unless not ``eo``), plus a thumbnail."""
    x0, y1 = TRANSFORM.c, TRANSFORM.f
    item = pystac.Item(
        ITEM_ID,
        geometry=None,
        bbox=None,
        datetime=dt.datetime(2023, 5, 1, 10, 10, 31, tzinfo=dt.UTC),
        properties={"platform": "sentinel-2a", "s2:processing_baseline": "05.09", "proj:bbox": [x0, y1 - 640, x0 + 800, y1], **properties},
    )
    for key, href in hrefs.items():
        asset = pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data", "reflectance"])
        item.add_asset(key, asset)
        if eo:
            EOExtension.ext(asset, add_if_missing=True).bands = [EOBand.create(name=BANDS[key], common_name=key)]
    item.add_asset("thumbnail", pystac.Asset("thumb.jpg", media_type=pystac.MediaType.JPEG, roles=["thumbnail"]))
    item.save_object(include_self_link=False, dest_href=str(path))
    return path


def local_item(tmp_path: Path, files: dict[str, Path], **kw: object) -> Path:
    return write_item(tmp_path / "item.json", {k: os.path.relpath(files[k], tmp_path) for k in ORDER}, **kw)


def range_handler(root: Path, log: list[str]) -> type[BaseHTTPRequestHandler]:
    """Serves the files under ``root``: HEAD, GET, and GET with ``Range: bytes=a-b`` (206 + Content-Range)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.answer(body=False)

        def do_GET(self) -> None:
            self.answer(body=True)

        def answer(self, body: bool) -> None:
            log.append(f"{self.command} {self.path} {self.headers.get('Range', '')}")
            file = (root / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
            if not (file.is_file() and root in file.parents):
                self.send_error(404)
                return
            data = file.read_bytes()
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if m and body:
                a, b = int(m[1]), min(int(m[2] or len(data) - 1), len(data) - 1)
                if a >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
                data = data[a : b + 1]
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "image/tiff")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


def cli(cwd: Path, *args: object, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m geodino.cli ...`` in a fresh process in ``cwd`` (tests.helpers.cli), without GDAL settings."""
    return helpers.cli(*args, cwd=cwd, env=env, timeout=timeout)


def read(path: Path) -> tuple[np.ndarray, object]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform


def test_item_names_bands_and_gives_the_product_facts(tmp_path: Path, band_files: dict[str, Path]) -> None:
    scene = open_scene(local_item(tmp_path, band_files))
    assert [Path(p).name for p in scene.paths] == [band_files[k].name for k in ORDER]
    assert [(b.name, b.name_from, b.common, b.common_from) for b in scene.bands] == [(k, "STAC asset", k, "STAC eo:bands") for k in ORDER]
    assert scene.band_names == ORDER and scene.product == ITEM_ID
    tags = dict(scene.tags)
    assert tags["platform"] == "sentinel-2a" and tags["s2:processing_baseline"] == "05.09"
    assert tags["datetime"].startswith("2023-05-01T10:10:31") and "proj:bbox" not in tags  # only scalar properties
    assert "stac:raster:offset" not in tags  # the item states no raster:bands
    _, adapter = prepare(scene)
    assert adapter.preset == "sentinel2-l2a" and adapter.offset == pytest.approx(-0.1)
    assert "processing baseline 05.09" in adapter.stretch
    assert adapter.indexes == (1, 3, 2) and adapter.names == ("red", "green", "blue")


def test_stac_1_1_bands_and_raster_offset(tmp_path: Path, band_files: dict[str, Path]) -> None:
    """STAC 1.1 ``bands`` with ``eo:common_name`` and ``raster:offset``; an agreed RGB offset decides the Sentinel-2 offset."""
    path = local_item(tmp_path, band_files, eo=False, **{"s2:product_type": "S2MSI2A"})
    item = pystac.Item.from_file(str(path))
    for key in ORDER:
        item.assets[key].extra_fields["bands"] = [{"name": BANDS[key], "eo:common_name": key, "raster:offset": 0.0, "raster:scale": 0.0001}]
    item.save_object(include_self_link=False, dest_href=str(path))
    scene = open_scene(path)
    assert [b.common for b in scene.bands] == list(ORDER)
    assert dict(scene.tags)["stac:raster:offset"] == "0.0" and dict(scene.tags)["stac:raster:scale"] == "0.0001"
    _, adapter = prepare(scene)
    assert adapter.preset == "sentinel2-l2a" and adapter.offset == 0.0 and "STAC item's raster:bands" in adapter.stretch


def test_composites_other_formats_metadata_and_other_data_types_are_left_out(tmp_path: Path, band_files: dict[str, Path]) -> None:
    """An Earth Search-like STAC 1.0 item: a visual RGB composite, JPEG 2000 copies, a metadata file and a float32 asset
    (none of them exists: they are never opened) beside the uint16 bands with raster:bands offset -0.1."""
    path = local_item(tmp_path, band_files)
    item = pystac.Item.from_file(str(path))
    for key in ORDER:
        item.assets[key].extra_fields["raster:bands"] = [{"data_type": "uint16", "offset": -0.1, "scale": 0.0001, "nodata": 0}]
    rgb = [{"name": BANDS[c], "common_name": c} for c in ("red", "green", "blue")]
    extra = {
        "visual": pystac.Asset("TCI.tif", media_type=pystac.MediaType.COG, roles=["visual"], extra_fields={"eo:bands": rgb}),
        "red-jp2": pystac.Asset("B04.jp2", media_type=pystac.MediaType.JPEG2000, roles=["data"], extra_fields={"eo:bands": rgb[:1]}),
        "granule_metadata": pystac.Asset("MTD_TL.xml", media_type=pystac.MediaType.XML, roles=["metadata"]),
        "lwir": pystac.Asset("ST.tif", roles=["data"], extra_fields={"eo:bands": [{"name": "ST", "common_name": "lwir"}],
                                                                      "raster:bands": [{"data_type": "float32"}]}),
    }  # fmt: skip
    for key, asset in extra.items():
        item.add_asset(key, asset)
    item.save_object(include_self_link=False, dest_href=str(path))
    scene = open_scene(path)
    assert scene.band_names == ORDER and len(scene.paths) == 4
    assert dict(scene.tags)["stac:raster:offset"] == "-0.1" and dict(scene.tags)["stac:raster:scale"] == "0.0001"
    _, adapter = prepare(scene)
    assert adapter.offset == pytest.approx(-0.1) and "offset -0.1 from the STAC item's raster:bands" in adapter.stretch


def test_multiband_asset_gives_one_band_per_listed_band(tmp_path: Path, band_files: dict[str, Path]) -> None:
    data = np.concatenate([read(band_files[c])[0] for c in ("red", "green", "blue", "nir")])
    write_raster(tmp_path / "image.tif", data)
    item = pystac.Item("m_3811_naip", None, None, dt.datetime(2023, 5, 1, tzinfo=dt.UTC), {})
    item.add_asset("image", pystac.Asset("image.tif", roles=["data"]))
    common = ("red", "green", "blue", "nir")
    item.assets["image"].extra_fields["bands"] = [{"name": f"b{i + 1}", "eo:common_name": c} for i, c in enumerate(common)]
    item.save_object(include_self_link=False, dest_href=str(tmp_path / "naip.json"))
    scene = open_scene(tmp_path / "naip.json")
    assert [(b.name, b.common) for b in scene.bands] == [(f"b{i + 1}", c) for i, c in enumerate(common)]
    assert scene.band_sources == tuple((str(tmp_path / "image.tif"), i) for i in range(1, 5))
    item.assets["image"].extra_fields["bands"] = item.assets["image"].extra_fields["bands"][:3]
    item.save_object(include_self_link=False, dest_href=str(tmp_path / "naip.json"))
    with pytest.raises(InputError, match="asset 'image' lists 3 band"):
        open_scene(tmp_path / "naip.json")


def test_http_assets_encode_like_the_band_files(tmp_path: Path, band_files: dict[str, Path]) -> None:
    log: list[str] = []
    with serving(range_handler(tmp_path, log)) as base:
        item = write_item(tmp_path / "remote.json", {k: f"{base}/bands/{band_files[k].name}" for k in ORDER})
        remote = cli(tmp_path, "encode", item, tmp_path / "from_item.tif", *TINY)
    assert remote.returncode == 0, remote.stderr
    assert any("bytes=" in line for line in log), log  # read with HTTP Range requests
    assert not [line for line in log if line.split()[1].endswith(("/", ".aux.xml", ".ovr", ".msk"))], log  # no folder listing
    direct = cli(tmp_path, "encode", *(band_files[k] for k in ORDER), tmp_path / "from_files.tif", *TINY)
    assert direct.returncode == 0, direct.stderr
    (a, ta), (b, tb) = read(tmp_path / "from_item.tif"), read(tmp_path / "from_files.tif")
    assert a.shape == (64, 4, 5) and np.array_equal(a, b) and ta == tb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD = {
    "collection": "is a STAC Collection",
    "no eo bands": "no asset of STAC item",
    "missing asset": "asset 'red' file not found",
    "dead url": "cannot read /vsicurl/http://127.0.0.1:",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_items_fail_in_one_line(tmp_path: Path, band_files: dict[str, Path], case: str) -> None:
    if case == "collection":
        extent = pystac.Extent(pystac.SpatialExtent([[0.0, 0.0, 1.0, 1.0]]), pystac.TemporalExtent([[None, None]]))
        pystac.Collection("c", "a collection", extent).save_object(include_self_link=False, dest_href=str(tmp_path / "item.json"))
    elif case == "no eo bands":
        local_item(tmp_path, band_files, eo=False)
    elif case == "missing asset":
        local_item(tmp_path, band_files)
        band_files["red"].unlink()
    else:
        write_item(tmp_path / "item.json", {k: f"http://127.0.0.1:{free_port()}/{band_files[k].name}" for k in ORDER})
    start = time.monotonic()
    proc = cli(tmp_path, "encode", "item.json", "out.tif", *TINY, timeout=60)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("geodino: error: "), proc.stderr
    assert BAD[case] in lines[0] and "Traceback" not in proc.stderr + proc.stdout, lines[0]
    assert not (tmp_path / "out.tif").exists() and time.monotonic() - start < 30


def test_a_server_that_never_answers_times_out_with_the_users_gdal_settings(tmp_path: Path, band_files: dict[str, Path]) -> None:
    """The HTTP timeouts stay the user's when set (os.environ.setdefault); a silent server ends in one line, not a hang."""
    with socket.socket() as silent:  # connections complete in the backlog, nothing is ever accepted or answered
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        write_item(tmp_path / "item.json", {k: f"http://127.0.0.1:{port}/{band_files[k].name}" for k in ORDER})
        start = time.monotonic()
        settings = {"GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_MAX_RETRY": "0"}
        proc = cli(tmp_path, "encode", "item.json", "out.tif", *TINY, timeout=60, env=settings)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "timed out" in lines[0].lower(), proc.stderr
    assert time.monotonic() - start < 20 and not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type": "Feature",', "is not valid JSON"),
        ('{"a": 1}', "not a STAC Item"),
        ("[1, 2]", "not a STAC Item"),
        ('{"type": "FeatureCollection", "features": []}', "a GeoJSON FeatureCollection"),
        ('{"type": "Feature", "stac_version": "1.0.0", "id": "x", "assets": {}}', "not a valid STAC Item"),
    ],
)
def test_not_an_item_is_an_input_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(InputError, match=message):
        open_scene(tmp_path / "x.json")
    with pytest.raises(InputError, match="STAC item not found"):
        open_scene(tmp_path / "nope.json")
