"""Scenes: a frozen value describing one raster (or a stack of single-band files on one grid).

:func:`open_scene` reads only metadata; pixels are read window by window by :mod:`geodino.reader`.
A scene must be georeferenced with a north-up transform (no rotation or shear): the feature raster
is the scene grid coarsened 16x, and a rotated grid would need a warp the user should choose.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT

from geodino.bands import Band, canonical_band, description_common
from geodino.errors import InputError
from geodino.tiling import grid_crs

_COLOUR_NAMES = ("red", "green", "blue")
_BAND_IN_NAME = re.compile(r"(?:^|[_\-.])(?:SR_)?(B0*\d{1,2}A?)(?=$|[_\-.])", re.IGNORECASE)


@dataclass(frozen=True)
class Scene:
    """Metadata of a scene: grid, bands, dtype, nodata. One source file per band or one for all.

    ``band_sources[i]`` is ``(path, 1-based band index in that file)`` for scene band ``i``.
    """

    geobox: GeoBox
    band_names: tuple[str, ...]
    band_sources: tuple[tuple[str, int], ...]
    dtype: str
    nodata: float | None
    has_mask: bool  # an internal/per-dataset mask or alpha band declares invalid pixels
    tags: tuple[tuple[str, str], ...] = ()  # dataset metadata of every file (first file first), STAC properties
    offset: tuple[int, int] = (0, 0)  # (row, col) of the scene's first pixel in its files (a crop)
    bands: tuple[Band, ...] = ()  # what each band is, as the files (or a STAC item) say
    product: str = ""  # a product id (STAC item id), searched for sensor evidence with the paths
    band_grids: tuple[GeoBox, ...] = ()  # each band's own grid when the band files are on different grids
    warp: tuple[str, ...] = ()  # files read through a warped VRT onto ``warp_grid`` (resampled on the fly)
    warp_grid: GeoBox | None = None  # the uncropped grid the scene's pixels are on when anything is warped
    resampling: str = ""  # how warped files are resampled, and why (recorded in outputs)

    def __repr__(self) -> str:
        crop = f", crop at row {self.offset[0]} col {self.offset[1]}" if self.offset != (0, 0) else ""
        return f"Scene({self.describe()}; bands {', '.join(self.band_names)}; {', '.join(Path(p).name for p in self.paths)}{crop})"

    def absolute(self) -> Scene:
        """The same scene with local file paths made absolute (for workers started in other folders)."""
        local = lambda p: "://" not in p and not p.startswith("/vsi")  # noqa: E731
        absolute = lambda p: os.path.abspath(p) if local(p) else p  # noqa: E731
        sources = tuple((absolute(p), b) for p, b in self.band_sources)
        return replace(self, band_sources=sources, warp=tuple(absolute(p) for p in self.warp))

    def crop(self, row: int, col: int, height: int, width: int) -> Scene:
        """The part ``[row, row + height) x [col, col + width)`` (pixels of this scene) as a scene of its own."""
        h, w = self.shape
        if not (height > 0 and width > 0 and 0 <= row <= h - height and 0 <= col <= w - width):
            raise InputError(f"crop rows {row}-{row + height}, cols {col}-{col + width} is not inside the {w}x{h} scene")
        geobox = GeoBox((height, width), self.transform @ Affine.translation(col, row), self.geobox.crs)
        return replace(self, geobox=geobox, offset=(self.offset[0] + row, self.offset[1] + col))

    def with_bands(self, bands: Sequence[Band]) -> Scene:
        """The same scene with band identities from elsewhere (a STAC item, a preset layout)."""
        return replace(self, bands=tuple(bands), band_names=tuple(b.name for b in bands))

    def on_grid_of(self, indexes: Sequence[int]) -> tuple[Scene, tuple[str, ...]]:
        """The scene on the finest grid of the bands ``indexes`` (0-based), files of other bands left unread,
        selected bands on coarser grids resampled bilinearly on the fly; and notes saying what happened."""
        if not self.band_grids:
            return self, ()
        grid = _finest([self.band_grids[i] for i in indexes])
        if self.offset != (0, 0) and grid != self.geobox:
            raise InputError("a crop of band files on different grids cannot change grid: open the files of the bands you need")
        used = {self.band_sources[i][0] for i in indexes}
        warp = tuple(dict.fromkeys(self.band_sources[i][0] for i in indexes if self.band_grids[i] != grid))
        res = lambda g: f"{abs(g.affine.a):g} m" if g.crs.units[0].startswith("met") else f"{abs(g.affine.a):g}"  # noqa: E731
        notes = []
        unused = [Path(p).name for p in self.paths if p not in used]
        if unused:
            notes.append(f"not read (bands not used): {', '.join(unused)}")
        method = ""
        if warp:
            method = "bilinear"
            coarse = ", ".join(f"{self.bands[i].name if self.bands else self.band_names[i]} ({res(self.band_grids[i])})"
                               for i in indexes if self.band_sources[i][0] in warp)  # fmt: skip
            notes.append(f"resampled on the fly (bilinear) onto the {res(grid)} grid of the finest selected band: {coarse}")
        scene = replace(self, geobox=grid, warp=warp, warp_grid=grid if warp else None, resampling=method, band_grids=())
        return scene, tuple(notes)

    def at_gsd(self, gsd: float) -> tuple[Scene, str]:
        """The scene resampled to ``gsd`` metres per pixel (same origin and extent, rounded up), read through
        warped VRTs: area average when coarsening, bilinear when refining; and a note saying so."""
        crs = grid_crs(self.geobox)
        if not (isinstance(gsd, (int, float)) and math.isfinite(gsd) and gsd > 0):
            raise InputError(f"--gsd {gsd}: give a positive number of metres per pixel")
        if not crs.units[0].startswith("met"):
            raise InputError(f"--gsd is in metres but the scene's CRS ({self.crs}) is in {crs.units[0]}: warp it to a projected CRS first")
        a, (h, w) = self.transform, self.shape
        px = (abs(a.a), abs(a.e))
        if math.isclose(px[0], gsd) and math.isclose(px[1], gsd):
            return self, f"--gsd {gsd:g}: the scene is already at {gsd:g} m, nothing resampled"
        grid = GeoBox((math.ceil(h * px[1] / gsd), math.ceil(w * px[0] / gsd)), Affine(gsd, 0, a.c, 0, -gsd, a.f), crs)
        if grid.shape.x < 1 or grid.shape.y < 1 or grid.shape.x * grid.shape.y > 2**34:
            raise InputError(f"--gsd {gsd:g} gives a {grid.shape.x}x{grid.shape.y} px scene: choose a GSD nearer the native {px[0]:g} m")
        method = "average" if gsd > max(px) else "bilinear"
        scene = replace(self, geobox=grid, offset=(0, 0), warp=self.paths, warp_grid=grid, resampling=method, band_grids=())
        return scene, f"resampled from {px[0]:g} x {px[1]:g} m to {gsd:g} m ({method}, on the fly, --gsd)"

    @property
    def gsd(self) -> float | None:
        """Ground sampling distance in metres (mean of x and y; degrees converted at the scene's centre), None if unknown."""
        a, crs = self.transform, grid_crs(self.geobox)
        units = crs.units[0] if crs.units else ""
        if units.startswith("met"):
            return (abs(a.a) + abs(a.e)) / 2
        if crs.geographic:
            lat = math.radians(self.geobox.geographic_extent.centroid.coords[0][1])
            return (abs(a.a) * math.cos(lat) + abs(a.e)) / 2 * 111_320.0
        return None

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self.geobox.shape.yx

    @property
    def count(self) -> int:
        return len(self.band_names)

    @property
    def crs(self) -> str:
        """``EPSG:n`` when the CRS has a code, else its WKT."""
        crs = grid_crs(self.geobox)
        return f"EPSG:{crs.epsg}" if crs.epsg else crs.to_wkt()

    @property
    def transform(self) -> Affine:
        return self.geobox.affine

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for p, _ in self.band_sources))

    @property
    def evidence(self) -> tuple[str, ...]:
        """Text that may name the sensor or product: every path, the product id and the metadata values."""
        return (*sorted(self.paths), self.product, *(f"{k}={v}" for k, v in self.tags))

    def band_index(self, name_or_index: str) -> int:
        """0-based index of a band given by name (``B04``, ``red``) or 1-based index (``"3"``)."""
        key = name_or_index.strip()
        if key.isdigit():
            i = int(key) - 1
            if not 0 <= i < self.count:
                raise InputError(f"band {key} out of range: the scene has {self.count} bands ({', '.join(self.band_names)})")
            return i
        names = [canonical_band(n) for n in self.band_names]
        if canonical_band(key) in names:
            return names.index(canonical_band(key))
        raise InputError(f"no band named {key!r}: the scene's bands are {', '.join(self.band_names)}")

    def describe(self) -> str:
        h, w = self.shape
        a = self.transform
        return f"{w}x{h} px, {self.count} bands {self.dtype}, {self.crs}, pixel {a.a:g} x {-a.e:g}, nodata {self.nodata}"


def _bands(ds: rasterio.DatasetReader, path: str, single_file: bool) -> list[Band]:
    """Each band's name and stated common name: description, colour interpretation, ``B<n>`` in a band file's name, index."""
    bands: list[Band] = []
    for i in range(ds.count):
        desc = ds.descriptions[i]
        ci = ds.colorinterp[i].name
        colour = ci if ci in _COLOUR_NAMES and ci not in [b.name for b in bands] else None
        if desc:
            common, why = (description_common(desc), "description") if description_common(desc) else (colour, "colour interpretation")
            bands.append(Band(desc, "description", common, why if common else ""))
        elif colour:
            bands.append(Band(colour, "colour interpretation", colour, "colour interpretation"))
        else:
            m = _BAND_IN_NAME.search(Path(path).stem) if not single_file and ds.count == 1 else None
            bands.append(Band(m.group(1).upper(), "file name") if m else Band(str(i + 1), "index"))
    return bands


def _check_grid(ds: rasterio.DatasetReader, path: str) -> None:
    t = ds.transform
    if ds.crs is None or t == Affine.identity():
        raise InputError(f"{path} has no georeference (no CRS or an identity transform): assign one, e.g. gdal_translate -a_srs -a_ullr")
    if t.b != 0 or t.d != 0:
        raise InputError(
            f"{path} has a rotated or sheared transform ({t.b:g}, {t.d:g}): geodino needs a north-up grid; "
            "warp it first, e.g. gdalwarp -t_srs <its CRS> in.tif north_up.tif"
        )


def _open(path: str) -> rasterio.DatasetReader:
    if not (os.path.exists(path) or "://" in path or path.startswith("/vsi")):
        raise InputError(f"scene not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"cannot read {path} as a raster: {str(exc).splitlines()[0]}") from None


def _finest(grids: Sequence[GeoBox]) -> GeoBox:
    """The grid with the smallest pixels (the first of equals)."""
    return min(grids, key=lambda g: abs(g.affine.a * g.affine.e))


def open_scene(paths: str | Path | Sequence[str | Path]) -> Scene:
    """Open a raster, or a list of single-band rasters (e.g. Landsat or Sentinel-2 band files), as a :class:`Scene`.

    A single ``.json`` path is a STAC Item (:func:`geodino.stac.scene_from_item`). Only metadata is read.
    Band names come from band descriptions, then colour interpretation, then
    (for band files) a ``B<n>`` in the file name, else the 1-based index. Band files may be on different
    grids of one CRS (Sentinel-2 at 10/20/60 m): the scene is then on the finest grid until
    :meth:`Scene.on_grid_of` picks the grid of the bands actually used.
    """
    items = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    if not items:
        raise InputError("no scene given")
    if len(items) == 1 and items[0].lower().endswith(".json"):
        from geodino.stac import scene_from_item  # a STAC Item: its assets, band identities and properties

        return scene_from_item(items[0])
    bands: list[Band] = []
    sources: list[tuple[str, int]] = []
    grids: list[GeoBox] = []
    first: dict[str, object] = {}
    nodata: float | None = None
    has_mask = False
    tags: dict[str, str] = {}
    for path in items:
        with _open(path) as ds:
            _check_grid(ds, path)
            grid = GeoBox(ds.shape, ds.transform, ds.crs)
            if not first:
                first = {"crs": ds.crs, "dtype": ds.dtypes[0]}
                nodata = ds.nodata
            elif ds.crs != first["crs"]:
                raise InputError(
                    f"{path} is not in the CRS of {items[0]}: band files must share one CRS (warp them first, e.g. gdalwarp -t_srs)"
                )
            for k, v in ds.tags().items():
                if len(str(v)) < 200:
                    tags.setdefault(k, str(v))
            if ds.dtypes[0] != first["dtype"] or len(set(ds.dtypes)) > 1:
                raise InputError(
                    f"{path}: bands of different data types ({', '.join(sorted({*ds.dtypes, str(first['dtype'])}))}) cannot be stacked"
                )
            if ds.dtypes[0].startswith(("complex", "cint")):
                raise InputError(
                    f"{path} holds complex values ({ds.dtypes[0]}): geodino needs real-valued bands; "
                    "write the amplitude or intensity first, e.g. gdal_calc.py --calc 'abs(A)' --type Float32"
                )
            flags = ds.mask_flag_enums
            has_mask |= any(rasterio.enums.MaskFlags.per_dataset in f or rasterio.enums.MaskFlags.alpha in f for f in flags)
            kept = 0
            for i, band in enumerate(_bands(ds, path, len(items) == 1)):
                if ds.colorinterp[i].name == "alpha":
                    continue
                bands.append(band)
                sources.append((path, i + 1))
                grids.append(grid)
                kept += 1
            if not kept:
                raise InputError(f"{path} has no image bands: its {ds.count} band(s) are all alpha (transparency masks), nothing to encode")
    names = [b.name for b in bands]
    named = [canonical_band(b.name) for b in bands if b.name_from != "index"]  # index names are replaced later (STAC)
    if len(set(named)) < len(named) and len(items) > 1:
        raise InputError(
            f"band files give repeated band names ({', '.join(names)}): two dates or two products of one band? "
            "encode one date at a time (or stack them into one raster with band descriptions)"
        )
    dtype = str(first["dtype"])
    if nodata is not None and np.isnan(nodata):
        nodata = float("nan")
    mixed = len(set(grids)) > 1
    geobox = _finest(grids) if mixed else grids[0]
    return Scene(
        geobox, tuple(names), tuple(sources), dtype, nodata, has_mask, tuple(tags.items()), bands=tuple(bands),
        band_grids=tuple(grids) if mixed else (),
    )  # fmt: skip


def open_source(scene: Scene, path: str) -> tuple[rasterio.io.DatasetReaderBase, list[rasterio.io.DatasetReaderBase]]:
    """A dataset to read ``path``'s pixels on the scene's grid (a warped VRT when the scene resamples it), and
    every handle to close afterwards."""
    ds = _open(path)
    if path not in scene.warp or scene.warp_grid is None:
        return ds, [ds]
    g = scene.warp_grid
    crs = grid_crs(g).to_wkt()
    vrt = WarpedVRT(ds, crs=crs, transform=g.affine, width=g.shape.x, height=g.shape.y, resampling=Resampling[scene.resampling])
    return vrt, [vrt, ds]
