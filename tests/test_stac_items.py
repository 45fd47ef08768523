"""STAC Item sidecars: every raster output gets ``OUT.json`` that pystac validates (core 1.1.0 and the extensions
it names, with the schemas shipped in ``tests/stac_schemas``: no network), describing the file as written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import Transformer
from pystac.validation import JsonSchemaSTACValidator

from geodino.stacitem import EMBEDDINGS, PROCESSING
from geodino.synthetic import write_scene
from tests.helpers import cli, one_line_error, run

SCHEMAS = Path(__file__).parent / "stac_schemas"
TINY = ("--model", "geodino_tiny_mlp", "--weights", "random", "--tile", "64", "--overlap", "16")


@pytest.fixture()
def offline_validator(monkeypatch: pytest.MonkeyPatch) -> Iterator[JsonSchemaSTACValidator]:
    """pystac's validator with the shipped extension schemas; any schema it would fetch fails the test."""

    def no_network(self: object, href: str) -> str:
        raise AssertionError(f"pystac tried to fetch {href}")

    monkeypatch.setattr(pystac.StacIO.default().__class__, "read_text", no_network)
    validator = JsonSchemaSTACValidator()
    for f in SCHEMAS.rglob("*.json"):
        schema = json.loads(f.read_text())
        validator.schema_cache[schema["$id"].rstrip("#")] = schema
    pystac.validation.set_validator(validator)
    yield validator
    pystac.validation.set_validator(JsonSchemaSTACValidator())


def _validated(path: Path) -> tuple[pystac.Item, dict[str, object]]:
    doc = json.loads(path.read_text())
    validated = pystac.validation.validate_dict(doc)  # the file as written: core + every extension it names
    assert len(validated) == 1 + len(doc["stac_extensions"]) and doc["stac_version"] == "1.0.0", validated
    return pystac.Item.from_dict(doc), doc


@pytest.mark.slow
def test_feature_outputs_get_items_that_validate_and_describe_the_file(tmp_path: Path, offline_validator: object) -> None:
    scene = write_scene(tmp_path / "scene.tif", 160, 96)
    for name in ("f.tif", "f.zarr"):
        r = cli("encode", scene, tmp_path / name, *TINY)
        assert r.returncode == 0, r.stderr
        item, doc = _validated(tmp_path / f"{name}.json")
        assert set(doc["stac_extensions"]) >= {EMBEDDINGS, PROCESSING, "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
                                               "https://stac-extensions.github.io/raster/v1.1.0/schema.json"}  # fmt: skip
        asset = item.assets["embeddings"]  # the draft embeddings extension's required asset
        assert asset.href == f"./{name}" and asset.media_type == (pystac.MediaType.COG if name.endswith(".tif") else pystac.MediaType.ZARR)
        props = item.properties
        assert props["proj:code"] == "EPSG:32633" and props["proj:shape"] == [10, 6]  # 160 x 96 px
        with rasterio.open(scene) as src:
            t = src.transform
            assert props["proj:transform"] == [16.0 * t.a, 0.0, t.c, 0.0, 16.0 * t.e, t.f]
            left, bottom, right, top = src.bounds
        assert props["proj:bbox"] == [left, bottom, right, top] and props["gsd"] == 16.0 * t.a
        lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform([left, right], [bottom, top])
        west, south, east, north = item.bbox
        assert west <= min(lon) and east >= max(lon) and south <= min(lat) and north >= max(lat)
        bands = asset.extra_fields["raster:bands"]
        assert len(bands) == 64 and bands[0]["data_type"] == "float32" and bands[0]["nodata"] == "nan"
        if name.endswith(".tif"):  # the COG's own statistics (a Zarr store holds none)
            with rasterio.open(tmp_path / name) as ds:
                values = ds.read(5)
            st = bands[4]["statistics"]
            assert np.isclose(st["minimum"], np.nanmin(values)) and np.isclose(st["maximum"], np.nanmax(values))
            assert np.isclose(st["mean"], np.nanmean(values), rtol=1e-5) and st["valid_percent"] == 100.0
        assert props["geodino:record"]["model"] == "geodino_tiny_mlp" and props["geodino:record"]["weights_sha256"] == "random"
        assert props["emb:runtime_parameters"]["tile"] == 64 and props["emb:runtime_parameters"]["overlap"] == 16
        assert "random weights" in props["processing:lineage"] and props["processing:software"]["geodino"]
        assert props["processing:datetime"] == props["geodino:record"]["created"]


@pytest.mark.slow
def test_a_canopy_height_cog_gets_a_data_item(tmp_path: Path, offline_validator: object) -> None:
    scene = write_scene(tmp_path / "scene.tif", 64, 64)
    r = cli("canopy-height", scene, tmp_path / "chm.tif", "--head", "geodino_tiny_chmv2", "--weights", "random", "--tile", "64",
            "--overlap", "16")  # fmt: skip
    assert r.returncode == 0, r.stderr
    item, doc = _validated(tmp_path / "chm.tif.json")
    assert EMBEDDINGS not in doc["stac_extensions"] and list(item.assets) == ["data", "aux", "style"]  # the run's other files
    assert item.assets["aux"].href == "./chm.tif.aux.xml" and item.assets["style"].href == "./chm.qml"
    assert all((tmp_path / a.href).is_file() for a in item.assets.values())
    band = item.assets["data"].extra_fields["raster:bands"][0]
    with rasterio.open(tmp_path / "chm.tif") as ds:
        assert band["data_type"] == ds.dtypes[0] and item.properties["proj:shape"] == [ds.height, ds.width]
        heights = ds.read(1, masked=True)
    assert band["unit"] == "m" and np.isclose(band["statistics"]["maximum"], heights.max())
    assert np.isclose(band["statistics"]["mean"], heights.mean(), rtol=1e-5)
    assert item.properties["geodino:record"]["product"] == "canopy_height"


def test_an_existing_item_is_refused_without_overwrite_and_left_as_it_was(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "scene.tif", 64, 64)
    (tmp_path / "f.tif.json").write_text("mine")
    r = run("encode", scene, tmp_path / "f.tif", *TINY)
    one_line_error(r, "f.tif.json exists")
    assert (tmp_path / "f.tif.json").read_text() == "mine" and not (tmp_path / "f.tif").exists()
    r = run("encode", scene, tmp_path / "f.tif", *TINY, "--overwrite", "--tokens")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "f.tif.json").read_text())
    assert doc["id"] == "f.tif" and np.isclose(doc["properties"]["gsd"], 16.0)
    tokens = doc["assets"]["tokens"]  # the run's other output, listed by the features' item
    assert tokens["roles"] == ["metadata"] and (tmp_path / tokens["href"]).is_dir() and tokens["href"].endswith(".tokens.zarr")
