"""Training labels on a scene's pixel grid, from polygons (any vector format, any CRS) or a label raster.

Coverage rule: a pixel takes the class of the polygon that contains its centre (GDAL's default
rasterisation; later polygons win where polygons overlap). Label rasters on another grid are
reprojected onto the scene grid with nearest neighbour. Unlabelled pixels are -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT

from geodino.errors import InputError
from geodino.scene import Scene
from geodino.tiling import grid_crs

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
DEFAULT_COLUMNS = ("class", "label", "class_id", "landcover", "lc")
#: Most classes a head takes: the class raster is uint8 with 255 as nodata, so classes are 0-253.
MAX_CLASSES = 254
#: Most distinct values a label raster may hold; more look like continuous values, not classes.
MAX_RASTER_VALUES = 100
#: Class colours (matplotlib's tab10), repeated past ten classes: the colour table of every class COG, the heads'
#: recorded colours and the maps of classes and clusters (:mod:`geodino.figures`).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194),
           (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip


def colormap(n: int) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table entries for classes ``0..n-1`` (255, nodata, is transparent)."""
    return {i: (*PALETTE[i % len(PALETTE)], 255) for i in range(n)} | {255: (0, 0, 0, 0)}


@dataclass(frozen=True)
class Labels:
    """``pixels`` ``(H, W)`` int16 class indexes on the scene grid (-1 unlabelled); ``values`` the original class values."""

    pixels: np.ndarray
    values: tuple[object, ...]
    names: tuple[str, ...]
    source: str
    column: str | None

    @property
    def n_classes(self) -> int:
        return len(self.values)


def _vector(scene: Scene, path: Path, column: str | None) -> Labels:
    import geopandas as gpd

    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # fiona/pyogrio raise many types for unreadable files
        raise InputError(f"cannot read labels {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if gdf.empty:
        raise InputError(f"labels {path} hold no features")
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    if column is None:
        found = [c for c in DEFAULT_COLUMNS if c in columns]
        if not found and len(columns) != 1:
            raise InputError(
                f"labels {path}: say which column holds the class with --class-column (columns: {', '.join(columns) or 'none'})"
            )
        column = found[0] if found else columns[0]
    elif column not in columns:
        raise InputError(f"labels {path} have no column {column!r} (columns: {', '.join(columns) or 'none'})")
    if gdf.crs is None:
        raise InputError(f"labels {path} have no CRS")
    gdf = gdf[gdf.geometry.notna() & gdf[column].notna()].to_crs(grid_crs(scene.geobox).to_wkt())
    values = tuple(sorted(gdf[column].unique().tolist()))
    index = {v: i for i, v in enumerate(values)}
    shapes = [(geom, index[v]) for geom, v in zip(gdf.geometry, gdf[column], strict=True) if not geom.is_empty]
    h, w = scene.shape
    pixels = (
        rasterize(shapes, out_shape=(h, w), transform=scene.transform, fill=-1, dtype="int16") if shapes else np.full((h, w), -1, np.int16)
    )
    return Labels(pixels, values, tuple(str(v) for v in values), str(path), column)


def _raster(scene: Scene, path: Path) -> Labels:
    h, w = scene.shape
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise InputError(f"label raster {path} has no CRS")
            nodata = ds.nodata
            if not ds.dtypes[0].startswith(("uint", "int")):  # float, complex
                raise InputError(
                    f"label raster {path} holds {ds.dtypes[0]} values: class labels must be integers "
                    "(a continuous raster is not a class map)"
                )
            with WarpedVRT(
                ds, crs=grid_crs(scene.geobox).to_wkt(), transform=scene.transform, width=w, height=h, resampling=Resampling.nearest
            ) as v:
                data = v.read(1)
                valid = v.read_masks(1) > 0
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read labels {path}: {str(exc).splitlines()[0]}") from None
    if nodata is not None:
        valid &= data != nodata
    values = tuple(int(v) for v in np.unique(data[valid]))
    if len(values) > MAX_RASTER_VALUES:
        raise InputError(
            f"label raster {path} holds {len(values)} distinct values on the scene: it looks like continuous values, "
            f"not classes (at most {MAX_RASTER_VALUES})"
        )
    lut = {v: i for i, v in enumerate(values)}
    pixels = np.full((h, w), -1, np.int16)
    for v, i in lut.items():
        pixels[valid & (data == v)] = i
    return Labels(pixels, values, tuple(str(v) for v in values), str(path), None)


def load_labels(scene: Scene, path: str | Path, column: str | None = None) -> Labels:
    """Labels on ``scene``'s pixel grid; refuses missing files, no overlap and fewer than two classes."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"labels not found: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"labels {path} are an empty file")
    labels = _raster(scene, path) if path.suffix.lower() in RASTER_SUFFIXES else _vector(scene, path, column)
    present = np.unique(labels.pixels[labels.pixels >= 0])
    if present.size == 0:
        raise InputError(f"labels {path} do not overlap the scene {scene.paths[0]} (after reprojection to {scene.crs})")
    if present.size < 2:
        raise InputError(f"labels {path} give a single class ({labels.names[int(present[0])]}) on the scene: a head needs at least two")
    if labels.n_classes > MAX_CLASSES:
        raise InputError(
            f"labels {path} give {labels.n_classes} classes: a head takes at most {MAX_CLASSES} "
            "(class rasters are uint8 with 255 as nodata)"
        )
    return labels
