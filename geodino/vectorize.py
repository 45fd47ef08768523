"""Class rasters to polygons (geopandas, shapely), in the raster's CRS (a run's ``vector`` output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import shapes
from shapely.geometry import shape

from geodino.errors import InputError
from geodino.writer import NODATA_CLASS

#: vector formats written by ``--vector``, by suffix (single files: a shapefile's sidecars could not be committed together)
VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".fgb": "FlatGeobuf"}


def check_vector_name(path: str | Path) -> Path:
    """Refuse a vector output whose suffix names no single-file format geodino writes."""
    path = Path(path)
    if path.suffix.lower() not in VECTOR_DRIVERS:
        raise InputError(f"--vector {path}: give a .gpkg, .geojson or .fgb file name")
    return path


def polygonize(classes: str | Path, dest: str | Path, names: list[str], layer: str | None = None) -> int:
    """Polygons of equal class (4-connected) from a uint8 class raster, nodata excluded, written at ``dest`` (the
    format from its suffix, see :data:`VECTOR_DRIVERS`); returns their count.

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
    dest = Path(dest)
    driver = VECTOR_DRIVERS[dest.suffix.lower()]
    layer = "".join(ch if ch.isalnum() else "_" for ch in (layer or dest.stem)) or "classes"
    gdf.to_file(dest, driver=driver, layer=layer) if driver == "GPKG" else gdf.to_file(dest, driver=driver)
    return len(gdf)
