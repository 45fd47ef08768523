"""What a geodino output says about itself: its grid and its run record, read back from a COG's ``GEODINO_*`` tags or
a Zarr store's attributes (``geodino info OUT``).

Records are read back by :mod:`geodino.record`, so a COG and a Zarr store of the same run give the same record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geodino.record import record_from_attrs, record_from_tags

#: The ``--json`` document's schema name.
SCHEMA = "geodino-output-info/1"


def output_info(path: str | Path) -> dict[str, object] | None:
    """``{"schema", "path", "format", "grid", "record"}`` for a COG or Zarr store geodino wrote; None for anything else
    (a scene: ``geodino info`` then describes it as one)."""
    p = Path(path)
    if p.is_dir() and ((p / ".zmetadata").exists() or (p / "zarr.json").exists()):
        return _zarr_info(p)
    if not p.is_file():
        return None
    import rasterio

    try:
        with rasterio.open(p) as ds:
            tags = ds.tags()
            if "GEODINO_VERSION" not in tags:
                return None
            record = record_from_tags(tags)
            structure = ds.tags(1, "IMAGE_STRUCTURE")
            grid = {
                "width": ds.width, "height": ds.height, "bands": ds.count, "dtype": ds.dtypes[0], "nbits": structure.get("NBITS"),
                "crs": ds.crs.to_string() if ds.crs else None, "transform": list(ds.transform)[:6], "nodata": _nodata(ds.nodata),
                "band_names": list(ds.descriptions), "block": list(ds.block_shapes[0]), "overviews": ds.overviews(1),
            }  # fmt: skip
    except rasterio.errors.RasterioIOError:
        return None
    return {"schema": SCHEMA, "path": str(p), "format": "cog", "grid": grid, "record": record}


def _nodata(v: object) -> object:
    """GDAL's nodata or a Zarr fill value, NaN as ``"nan"`` (JSON has no NaN)."""
    if not isinstance(v, (int, float, np.floating, np.integer)):
        return None
    f = float(v)
    return "nan" if f != f else f


def _crs_name(wkt: str) -> str:
    """``EPSG:n`` where the WKT has an EPSG code, else the WKT."""
    from pyproj import CRS

    crs = CRS.from_wkt(wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else wkt


def _zarr_info(p: Path) -> dict[str, object] | None:
    import zarr

    try:
        group = zarr.open_group(str(p), mode="r")
        array = group["features"]
    except (KeyError, ValueError, OSError):
        return None
    attrs = {**dict(group.attrs), **dict(array.attrs)}  # the group: stores from before the one layout
    if "version" not in attrs or not isinstance(array, zarr.Array):
        return None
    record = record_from_attrs(attrs)
    names = group.get("feature", group.get("band_name"))  # band_name: stores from before the one layout
    ref = group.get("spatial_ref")
    wkt = ref.attrs.get("crs_wkt") if ref is not None else None
    shape = tuple(int(n) for n in array.shape)
    gt = ref.attrs.get("GeoTransform") if ref is not None else None  # GDAL's order: c a b f d e
    c, a, b, f, d, e = (float(v) for v in gt.split()) if isinstance(gt, str) else (np.nan,) * 6
    grid = {"width": shape[-1], "height": shape[-2], "bands": shape[0], "dtype": str(array.dtype), "chunks": list(array.chunks),
            "crs": _crs_name(wkt) if isinstance(wkt, str) else None, "transform": [a, b, c, d, e, f], "nodata": _nodata(array.fill_value),
            "band_names": [str(n) for n in np.asarray(names[:]).tolist()] if isinstance(names, zarr.Array) else []}  # fmt: skip
    return {"schema": SCHEMA, "path": str(p), "format": "zarr", "grid": grid, "record": record}


def format_output(info: dict[str, object]) -> list[str]:
    """``geodino info OUT``'s lines: what the output is, its grid, and how it was made."""
    g, r = info["grid"], info["record"]
    assert isinstance(g, dict) and isinstance(r, dict)
    kind = "COG" if info["format"] == "cog" else "Zarr store"
    names = [str(n) for n in g.get("band_names") or [] if n]
    storage = f" ({r['storage']})" if r.get("storage") else ""
    lines = [
        f"output     {info['path']}: a {kind} geodino {r.get('version')} wrote on {r.get('created')}",
        f"content    {r.get('content')}" + (f", {r['product']} in {r['units']}" if r.get("product") and r.get("units") else ""),
        f"grid       {g['width']}x{g['height']} cells x {g['bands']} bands {r.get('dtype') or g['dtype']}{storage}"
        + (f", {g['crs']}" if g.get("crs") else "") + (f", nodata {g['nodata']}" if "nodata" in g else ""),
    ]  # fmt: skip
    if names:
        lines.append(f"bands      {names[0]} .. {names[-1]}" if len(names) > 2 else f"bands      {', '.join(names)}")
    weights = "RANDOM (the values carry no meaning)" if r.get("random_weights") in (True, "true", "True") else r.get("weights")
    lines += [
        f"model      {r.get('model')}, weights {weights}",
        f"scene      {', '.join(map(str, r['scene'])) if isinstance(r.get('scene'), list) else r.get('scene')}",
        f"tiles      {r.get('tiles')} of {r.get('tile')} px, overlap {r.get('overlap')} px; blend: {r.get('blend')}",
    ]
    adapter = r.get("adapter")
    if isinstance(adapter, dict):
        lines.append(f"adapter    preset {adapter.get('preset')}, bands {', '.join(map(str, adapter.get('names') or []))}")
    return lines
