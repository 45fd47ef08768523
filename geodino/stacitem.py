"""STAC Item sidecars: every raster a run writes gets ``OUT.json`` beside it (``f.tif`` -> ``f.tif.json``,
``f.zarr`` -> ``f.zarr.json``), committed with it through the run's :class:`~geodino.outputs.OutputSet`.

The item is made with :mod:`pystac` from what the written file says about itself (its grid, band statistics and
units, and the run's record, read back by :func:`~geodino.outputinfo.output_info`), so it describes the file, not
the run's intentions:

- footprint and bbox in EPSG:4326, ``proj`` (v2.0.0: code, shape, transform, bbox), ``gsd`` in metres;
- the asset (``embeddings`` for feature rasters, as the draft embeddings extension requires, ``data`` for
  predictions) with ``raster:bands`` (v1.1.0: data type, nodata, unit, statistics, resolution);
- ``processing`` (v1.2.0): software and version, when, lineage in words; the full record as ``geodino:record``
  (model, weights sha256 or "random", adapter, tile and overlap);
- the run's other files as assets of its raster's item (:data:`COMPANIONS`: the tokens store, class polygons, the
  evaluation, the GDAL and QGIS sidecars), hrefs relative to the item;
- for feature rasters the fields of the draft embeddings extension (`geo-embeddings/embeddings-stac-specification`
  v0.0.1, a proposal) that fit an item: ``emb:runtime_parameters``.

``datetime`` is when geodino wrote the output (``geodino:datetime`` says so): the scene's acquisition time is not
known to geodino, and is not guessed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geodino.outputs import ITEM_ROLE

#: the sidecar's name: the output's name plus this
SUFFIX = ".json"
#: raster roles of a run that get an item (their sidecar's role is ``<role>_item``)
RASTER_ROLES = ("features", "prediction", "probabilities")
#: the items' STAC version: 1.0.0, the core the draft embeddings extension (v0.0.1) validates against (its schema
#: refers to the 1.0.0 item schema); every other extension used here validates on either core
STAC_VERSION = "1.0.0"
PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
EMBEDDINGS = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
#: the other files of a run that each raster role's item lists as assets
COMPANIONS = {"features": ("tokens",), "prediction": ("vector", "evaluation", "aux", "style")}
#: each companion's asset: role -> (media type, STAC role, title); a vector's media type comes from its suffix
_ASSETS = {
    "tokens": ("application/vnd+zarr", "metadata", "CLS and storage tokens per tile, with tile footprints"),
    "vector": ("", "data", "class polygons"),
    "evaluation": ("application/json", "metadata", "evaluation against the reference"),
    "aux": ("application/xml", "metadata", "GDAL sidecar: class names, or unit and statistics"),
    "style": ("text/xml", "style", "QGIS style"),
}
_VECTOR_TYPES = {".gpkg": "application/geopackage+sqlite3", ".geojson": "application/geo+json", ".fgb": "application/vnd.flatgeobuf"}
#: the record entries that are the run's parameters (``emb:runtime_parameters``)
RUNTIME = ("tile", "overlap", "patch", "out_stride", "layers", "precision", "device", "dtype", "blend")


def item_path(out: str | Path) -> Path:
    """The item sidecar of the output ``out``."""
    return Path(f"{out}{SUFFIX}")


def with_items(targets: Mapping[str, str | Path | None]) -> dict[str, str | Path | None]:
    """``targets`` plus an ``<role>_item`` sidecar for each raster role that is written."""
    out = dict(targets)
    for role in RASTER_ROLES:
        if targets.get(role) is not None:
            out[f"{role}{ITEM_ROLE}"] = item_path(str(targets[role]))
    return out


def _bands(path: Path, grid: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
    """``raster:bands`` entries of the raster at ``path``: data type, nodata, resolution, and the unit and statistics
    (:mod:`geodino.bandstats`) where a COG holds them."""
    import rasterio

    from geodino.bandstats import parse_statistics

    n = int(grid["bands"])
    common: dict[str, Any] = {"data_type": str(record.get("dtype") or grid["dtype"]), "spatial_resolution": abs(grid["transform"][0])}
    if grid.get("nodata") is not None:
        common["nodata"] = grid["nodata"]
    out = [dict(common) for _ in range(n)]
    if grid.get("format", "cog") != "cog" or not path.is_file():
        return out
    with rasterio.open(path) as ds:
        for band, unit, b in zip(out, ds.units, range(1, n + 1), strict=True):
            if unit:
                band["unit"] = unit
            st = parse_statistics(ds.tags(b))
            if st is None:
                continue
            values = {k: getattr(st, k) for k in ("minimum", "maximum", "mean", "stddev", "valid_percent")}
            if stats := {k: v for k, v in values.items() if v is not None and math.isfinite(v)}:
                band["statistics"] = stats
            if st.approximate:  # from an overview or a sample; the statistics object takes no other keys
                band["geodino:statistics_approximate"] = True
    return out


def build_item(path: str | Path, final: str | Path, companions: Mapping[str, Path] | None = None) -> Any:
    """The :class:`pystac.Item` of the geodino raster at ``path`` (a temporary), to be found at ``final``, listing the
    run's ``companions`` (role -> final path: tokens, polygons, evaluation, GIS sidecars) as assets too."""
    import pystac
    from affine import Affine
    from odc.geo.geobox import GeoBox
    from pyproj import CRS
    from pystac.extensions.projection import ProjectionExtension
    from shapely.geometry import mapping

    from geodino.outputinfo import output_info

    info = output_info(path)
    if info is None:
        raise ValueError(f"{path} is not a raster geodino wrote")
    grid, record = info["grid"], info["record"]
    assert isinstance(grid, dict) and isinstance(record, dict)
    grid["format"] = info["format"]
    final = Path(final)
    crs = CRS.from_user_input(grid["crs"])
    transform = Affine(*grid["transform"][:6])
    geobox = GeoBox((grid["height"], grid["width"]), transform, crs.to_wkt())
    footprint = geobox.extent.to_crs("EPSG:4326").geom
    created = str(record.get("created"))
    when = dt.datetime.fromisoformat(created) if created != "None" else dt.datetime.now(dt.UTC)
    features = "product" not in record
    props: dict[str, Any] = {
        "title": f"{record.get('content')} ({final.name})",
        "geodino:datetime": "when geodino wrote this output; the scene's acquisition time is not recorded",
        "processing:software": {"geodino": str(record.get("version"))},
        "processing:datetime": created,
        "processing:lineage": _lineage(record),
        "geodino:record": record,
    }
    unit = crs.axis_info[0].unit_name if crs.is_projected else None
    if unit in ("metre", "meter"):
        props["gsd"] = abs(transform.a)
    item = pystac.Item(final.name, mapping(footprint), list(footprint.bounds), when, props, stac_extensions=[PROCESSING])
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    proj.code = f"EPSG:{epsg}" if epsg else None
    if epsg is None:
        proj.wkt2 = crs.to_wkt()
    proj.shape = [grid["height"], grid["width"]]
    proj.transform = list(transform)[:6]
    proj.bbox = list(geobox.extent.boundingbox)
    _add_asset(item, "embeddings" if features else "data", final, info["format"] == "zarr", _bands(Path(path), grid, record))
    for role, where in (companions or {}).items():
        media, stac_role, title = _ASSETS[role]
        href = os.path.relpath(where, final.parent)
        item.add_asset(role, pystac.Asset(href if href.startswith(".") else f"./{href}", title=title, roles=[stac_role],
                                          media_type=media or _VECTOR_TYPES.get(where.suffix.lower())))  # fmt: skip
    if features:
        item.stac_extensions.append(EMBEDDINGS)
        item.properties["emb:runtime_parameters"] = {k: record[k] for k in RUNTIME if k in record}
    return item


def _add_asset(item: Any, key: str, final: Path, zarr: bool, bands: list[dict[str, Any]]) -> None:
    """The raster's asset on ``item``: its href relative to the item, media type and ``raster:bands``."""
    import pystac
    from pystac.extensions.raster import RasterExtension

    media = pystac.MediaType.ZARR if zarr else pystac.MediaType.COG
    asset = pystac.Asset(f"./{final.name}", media_type=media, roles=["data"], title=key)
    item.add_asset(key, asset)
    RasterExtension.ext(asset, add_if_missing=True)
    asset.extra_fields["raster:bands"] = bands  # "nan" nodata as the extension spells it (JSON has no NaN)


def _lineage(record: Mapping[str, Any]) -> str:
    weights = "random weights" if record.get("random_weights") is True else f"weights sha256 {record.get('weights_sha256')}"
    scene = ", ".join(map(str, record.get("scene") or []))
    return (
        f"geodino {record.get('version')} ran {record.get('model')} ({weights}) over {scene} in tiles of "
        f"{record.get('tile')} px overlapping by {record.get('overlap')} px ({record.get('blend')})"
    )


def write_item(path: str | Path, final: str | Path, dest: str | Path, companions: Mapping[str, Path] | None = None) -> Path:
    """Write the item of the raster at ``path`` (found at ``final`` once committed) to ``dest``."""
    doc = build_item(path, final, companions).to_dict(include_self_link=False)
    doc["stac_version"] = STAC_VERSION
    Path(dest).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return Path(dest)


def write_items(outs: Any) -> None:
    """Write the item sidecar of each raster role of the :class:`~geodino.outputs.OutputSet` ``outs`` that has one
    (see :func:`with_items`), at its temporary, from the raster's temporary."""
    for role in RASTER_ROLES:
        if f"{role}{ITEM_ROLE}" in outs and _written(outs, role):
            companions = {r: outs.path(r) for r in COMPANIONS.get(role, ()) if _written(outs, r)}
            write_item(outs.temp(role), outs.path(role), outs.temp(f"{role}{ITEM_ROLE}"), companions)


def _written(outs: Any, role: str) -> bool:
    return role in outs and (outs.temp(role).exists() or outs.temp(role).is_symlink())
