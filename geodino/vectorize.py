"""Class rasters to polygons (geopandas, shapely), in the raster's CRS, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import shapes
from shapely.geometry import shape

from geodino.writer import NODATA_CLASS, remove_path


def polygonize(classes: str | Path, out: str | Path, names: list[str]) -> int:
    """Polygons of equal class (4-connected) from a uint8 class raster, nodata excluded; returns their count.

    Columns: ``class`` (index), ``name``, ``geometry``. Reads the whole raster.
    """
    import geopandas as gpd

    with rasterio.open(classes) as ds:
        data = ds.read(1)
        transform, crs = ds.transform, ds.crs
    mask = data != NODATA_CLASS
    rows = [(int(v), names[int(v)], shape(geom)) for geom, v in shapes(data, mask=mask, transform=transform)]
    gdf = gpd.GeoDataFrame(
        {"class": np.array([r[0] for r in rows], dtype=np.int32), "name": [r[1] for r in rows]},
        geometry=[r[2] for r in rows],
        crs=crs.to_wkt() if crs else None,
    )
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.geodino-{os.getpid()}{out.suffix}")
    try:
        layer = "".join(ch if ch.isalnum() else "_" for ch in out.stem) or "classes"
        gdf.to_file(tmp, driver="GPKG", layer=layer) if out.suffix.lower() == ".gpkg" else gdf.to_file(tmp)
        remove_path(out)
        os.replace(tmp, out)
    finally:
        remove_path(tmp)
    return len(gdf)
