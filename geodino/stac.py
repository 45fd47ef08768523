"""STAC Items as scenes: ``geodino encode item.json OUT``.

A local STAC Item JSON file (STAC 1.0 or 1.1, read with :mod:`pystac`) names the band files of a scene:
its data assets carrying a band with an ``eo`` common name (STAC 1.0 ``eo:bands``, STAC 1.1 ``bands`` with
``eo:common_name``, or ``eo:common_name`` on the asset itself), GeoTIFF/COG or of unstated media type.
Thumbnails, overviews and metadata are skipped, as is a multi-band asset (e.g. a ``visual`` RGB composite)
whose common names the other assets already give. Hrefs are local paths (absolute or relative to the
item file) or ``http(s)://`` URLs, read through GDAL's ``/vsicurl/``.

The item's id becomes :attr:`Scene.product` and its scalar properties join :attr:`Scene.tags`, so
:mod:`geodino.detect` sees ``platform``, ``datetime``, ``s2:processing_baseline`` and the like; an
offset and scale the red, green and blue assets agree on (``raster:bands``) become the tags
``stac:raster:offset`` and ``stac:raster:scale``.

Remote hrefs set GDAL defaults in ``os.environ`` (process-wide, so the reader threads and worker
processes started later see them too; a value the user set is kept): HTTP timeouts and retries
(:data:`REMOTE_GDAL_ENV`), and ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` so GDAL does not list
folders over HTTP looking for sidecar files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pystac

from geodino.bands import Band
from geodino.errors import InputError
from geodino.scene import Scene, open_scene

#: GDAL settings for ``/vsicurl/`` reads, set with ``os.environ.setdefault`` when an item has remote assets.
REMOTE_GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing over HTTP (no sidecar .aux.xml/.ovr/.msk)
    "GDAL_HTTP_CONNECTTIMEOUT": "15",  # seconds to connect
    "GDAL_HTTP_TIMEOUT": "60",  # seconds for one request
    "GDAL_HTTP_MAX_RETRY": "3",  # retries on 429/5xx and timeouts
    "GDAL_HTTP_RETRY_DELAY": "1",
}

#: Asset roles that are never band data.
_SKIP_ROLES = {"thumbnail", "overview", "metadata"}


class _Fields(NamedTuple):
    """What an asset says about one of its bands (values as the JSON gives them)."""

    name: str | None
    common: str | None
    offset: Any
    scale: Any
    data_type: Any


@dataclass(frozen=True)
class _Asset:
    """A selected asset: its key, GDAL path, and its bands (named by asset key or band name)."""

    key: str
    path: str
    bands: tuple[_Fields, ...]


def _read_item(path: str) -> pystac.Item:
    """The STAC Item in ``path``; one :class:`InputError` line for anything else."""
    try:
        d = pystac.StacIO.default().read_json(path)
    except FileNotFoundError:
        raise InputError(f"STAC item not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read STAC item {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise InputError(f"{path} is not valid JSON: {' '.join(str(exc).split())}") from None
    kind = d.get("type") if isinstance(d, dict) else None
    if kind != "Feature" or "assets" not in d:
        what = f"a STAC {kind}" if isinstance(kind, str) and kind in ("Collection", "Catalog") else "not a STAC Item"
        what = f"a GeoJSON {kind}" if kind == "FeatureCollection" else what
        raise InputError(f"{path} is {what}: give the JSON of one STAC Item (type Feature), whose assets are the band files")
    try:
        return pystac.Item.from_dict(d, href=os.path.abspath(path), migrate=False, preserve_dict=False)
    except (pystac.STACError, pystac.STACTypeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path} is not a valid STAC Item: {type(exc).__name__} {' '.join(str(exc).split())}") from None


def _gdal_path(href: str, folder: Path, key: str, item_path: str) -> str:
    """A local path (relative hrefs resolved against the item's folder) or ``/vsicurl/<url>``."""
    parts = urlsplit(href)
    if parts.scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if parts.scheme == "file":
        href = parts.path
    elif parts.scheme and len(parts.scheme) > 1:  # (one letter: a Windows drive)
        raise InputError(f"{item_path}: asset {key!r} has href {href}: only local paths and http(s) URLs are read")
    if href.startswith("/vsi"):
        return href
    path = Path(href) if os.path.isabs(href) else folder / href
    if not path.is_file():
        raise InputError(f"{item_path}: asset {key!r} file not found: {path}")
    return str(path)


def _band_fields(asset: pystac.Asset) -> list[_Fields]:
    """Every band's fields from STAC 1.1 ``bands``, STAC 1.0 ``eo:bands`` + ``raster:bands``, and (a
    single-band asset) fields on the asset itself; common names lower-cased."""
    f = asset.extra_fields
    raw, eo, rb = f.get("bands"), f.get("eo:bands"), f.get("raster:bands")
    raw = raw if isinstance(raw, list) else None
    eo = eo if isinstance(eo, list) else []
    rb = rb if isinstance(rb, list) else []
    n = len(raw) if raw is not None else max(len(eo), len(rb), 1)
    out = []
    for i in range(n):
        merged: dict[str, Any] = {k: v for k, v in f.items() if k not in ("bands", "eo:bands", "raster:bands")} if n == 1 else {}
        for src in ([raw[i]] if raw is not None and i < len(raw) else []) + [x[i] for x in (eo, rb) if i < len(x)]:
            merged.update(src if isinstance(src, dict) else {})
        common = merged.get("eo:common_name", merged.get("common_name"))
        common = common.strip().lower() if isinstance(common, str) and common.strip() else None
        offset = merged.get("raster:offset", merged.get("offset"))
        scale = merged.get("raster:scale", merged.get("scale"))
        name = merged.get("name") if n > 1 else None
        out.append(_Fields(name, common, offset, scale, merged.get("data_type")))
    return out


def _is_data(asset: pystac.Asset) -> bool:
    media = (asset.media_type or "").lower()
    roles = {r.lower() for r in asset.roles or ()}
    return not roles & _SKIP_ROLES and (not media or "tiff" in media)


def _select(item: pystac.Item, item_path: str) -> list[_Asset]:
    """The band-data assets in item order, without composites of bands given one by one, assets of another
    data type than red's (as ``data_type`` states it) or a second key for one file."""
    found = [(k, a, _band_fields(a)) for k, a in item.assets.items() if _is_data(a)]
    found = [(k, a, fields) for k, a, fields in found if any(f.common for f in fields)]
    single = {fields[0].common for _, _, fields in found if len(fields) == 1}
    found = [(k, a, fields) for k, a, fields in found if len(fields) == 1 or not {f.common for f in fields if f.common} <= single]
    red = next((f.data_type for _, _, fields in found for f in fields if f.common == "red" and f.data_type), None)
    folder = Path(os.path.abspath(item_path)).parent
    kept: list[_Asset] = []
    for key, asset, fields in found:
        if red is not None and fields[0].data_type not in (None, red):
            continue  # e.g. a float32 temperature asset beside uint16 reflectance
        path = _gdal_path(asset.href, folder, key, item_path)
        if path in {a.path for a in kept}:
            continue
        if len(fields) == 1:
            fields = [fields[0]._replace(name=key)]
        else:
            fields = [f._replace(name=f.name if isinstance(f.name, str) and f.name else f"{key}_{i + 1}") for i, f in enumerate(fields)]
        kept.append(_Asset(key, path, tuple(fields)))
    if not kept:
        raise InputError(
            f"{item_path}: no asset of STAC item {item.id!r} is a GeoTIFF band with an eo common name (red, green, blue, nir, ...): "
            f"its assets are {', '.join(item.assets) or 'none'}; pass the band files themselves"
        )
    return kept


def _raster_tags(assets: list[_Asset]) -> list[tuple[str, str]]:
    """``stac:raster:offset``/``scale`` when the red, green and blue bands all state the same values."""
    rgb = [f for a in assets for f in a.bands if f.common in ("red", "green", "blue")]
    tags = []
    for field, key in (("offset", "stac:raster:offset"), ("scale", "stac:raster:scale")):
        values = [getattr(f, field) for f in rgb]
        number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
        if len(rgb) >= 3 and all(number(x) and x == values[0] for x in values):
            tags.append((key, str(values[0])))
    return tags


def scene_from_item(path: str) -> Scene:
    """The :class:`Scene` of a local STAC Item JSON file: its band assets in item order, each band named by
    its asset key (or band name) with the item's common name, the item id as product and its properties as tags."""
    item = _read_item(path)
    assets = _select(item, path)
    if any(a.path.startswith("/vsicurl/") for a in assets):
        for k, v in REMOTE_GDAL_ENV.items():
            os.environ.setdefault(k, v)
    scene = open_scene([a.path for a in assets])
    bands: list[Band] = []
    for a in assets:
        found = sum(1 for p, _ in scene.band_sources if p == a.path)
        if found != len(a.bands):
            raise InputError(f"{path}: asset {a.key!r} lists {len(a.bands)} band(s) but {a.path} has {found} image band(s)")
        bands += [Band(str(f.name), "STAC asset", f.common, "STAC eo:bands" if f.common else "") for f in a.bands]
    props = [(k, str(v)) for k, v in item.properties.items() if isinstance(v, (str, int, float, bool)) and len(str(v)) < 200]
    tags = (*scene.tags, *props, *_raster_tags(assets))
    return replace(scene.with_bands(bands), product=item.id, tags=tags)


__all__ = ["REMOTE_GDAL_ENV", "scene_from_item"]
