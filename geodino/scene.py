"""Scenes: a frozen value describing one raster (or a stack of single-band files on one grid).

:func:`open_scene` reads only metadata; pixels are read window by window by :mod:`geodino.reader`.
A scene must be georeferenced with a north-up transform (no rotation or shear): the feature raster
is the scene grid coarsened 16x, and a rotated grid would need a warp the user should choose.
"""

from __future__ import annotations

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
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from geodino.errors import InputError

_COLOUR_NAMES = {"red": "red", "green": "green", "blue": "blue", "alpha": "alpha"}
_BAND_IN_NAME = re.compile(r"(?:^|[_\-.])(?:SR_)?(B0*\d{1,2}A?)(?=$|[_\-.])", re.IGNORECASE)


def canonical_band(name: str) -> str:
    """Comparable band name: ``B04``/``b4``/``SR_B4`` -> ``B4``; ``Red`` -> ``red``; others lower-case."""
    n = name.strip()
    m = re.fullmatch(r"(?:SR_)?B0*(\d{1,2}A?)", n, re.IGNORECASE)
    if m:
        return "B" + m.group(1).upper()
    return n.lower()


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
    tags: tuple[tuple[str, str], ...] = ()
    offset: tuple[int, int] = (0, 0)  # (row, col) of the scene's first pixel in its files (a crop)

    def __repr__(self) -> str:
        crop = f", crop at row {self.offset[0]} col {self.offset[1]}" if self.offset != (0, 0) else ""
        return f"Scene({self.describe()}; bands {', '.join(self.band_names)}; {', '.join(Path(p).name for p in self.paths)}{crop})"

    def absolute(self) -> Scene:
        """The same scene with local file paths made absolute (for workers started in other folders)."""
        local = lambda p: "://" not in p and not p.startswith("/vsi")  # noqa: E731
        sources = tuple((os.path.abspath(p) if local(p) else p, b) for p, b in self.band_sources)
        return replace(self, band_sources=sources)

    def crop(self, row: int, col: int, height: int, width: int) -> Scene:
        """The part ``[row, row + height) x [col, col + width)`` (pixels of this scene) as a scene of its own."""
        h, w = self.shape
        if not (height > 0 and width > 0 and 0 <= row <= h - height and 0 <= col <= w - width):
            raise InputError(f"crop rows {row}-{row + height}, cols {col}-{col + width} is not inside the {w}x{h} scene")
        geobox = GeoBox((height, width), self.transform @ Affine.translation(col, row), self.geobox.crs)
        return replace(self, geobox=geobox, offset=(self.offset[0] + row, self.offset[1] + col))

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
        crs = self.geobox.crs
        return f"EPSG:{crs.epsg}" if crs.epsg else crs.to_wkt()

    @property
    def transform(self) -> Affine:
        return self.geobox.affine

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for p, _ in self.band_sources))

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


def _band_names(ds: rasterio.DatasetReader, path: str, single_file: bool) -> list[str]:
    names = []
    for i in range(ds.count):
        desc = ds.descriptions[i]
        ci = ds.colorinterp[i].name
        if desc:
            names.append(desc)
        elif ci in _COLOUR_NAMES and ci not in names:
            names.append(_COLOUR_NAMES[ci])
        else:
            m = _BAND_IN_NAME.search(Path(path).stem) if not single_file and ds.count == 1 else None
            names.append(m.group(1).upper() if m else str(i + 1))
    return names


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


def open_scene(paths: str | Path | Sequence[str | Path]) -> Scene:
    """Open a raster, or a list of single-band rasters on one grid (e.g. Landsat band files), as a :class:`Scene`.

    Only metadata is read. Band names come from band descriptions, then colour interpretation, then
    (for band files) a ``B<n>`` in the file name, else the 1-based index.
    """
    items = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    if not items:
        raise InputError("no scene given")
    names: list[str] = []
    sources: list[tuple[str, int]] = []
    first: dict[str, object] = {}
    nodata: float | None = None
    has_mask = False
    tags: dict[str, str] = {}
    for path in items:
        with _open(path) as ds:
            _check_grid(ds, path)
            grid = {"shape": ds.shape, "transform": ds.transform, "crs": ds.crs}
            if not first:
                first = {**grid, "dtype": ds.dtypes[0]}
                nodata = ds.nodata
                tags = {k: str(v) for k, v in ds.tags().items() if len(str(v)) < 200}
            elif grid != {k: first[k] for k in grid}:
                raise InputError(f"{path} is not on the grid of {items[0]}: band files must share shape, transform and CRS")
            if ds.dtypes[0] != first["dtype"] or len(set(ds.dtypes)) > 1:
                raise InputError(f"{path}: bands of different data types ({', '.join(sorted(set(ds.dtypes)))}) cannot be stacked")
            if ds.dtypes[0].startswith(("complex", "cint")):
                raise InputError(
                    f"{path} holds complex values ({ds.dtypes[0]}): geodino needs real-valued bands; "
                    "write the amplitude or intensity first, e.g. gdal_calc.py --calc 'abs(A)' --type Float32"
                )
            flags = ds.mask_flag_enums
            has_mask |= any(rasterio.enums.MaskFlags.per_dataset in f or rasterio.enums.MaskFlags.alpha in f for f in flags)
            kept = 0
            for i, name in enumerate(_band_names(ds, path, len(items) == 1)):
                if ds.colorinterp[i].name == "alpha":
                    continue
                names.append(name)
                sources.append((path, i + 1))
                kept += 1
            if not kept:
                raise InputError(f"{path} has no image bands: its {ds.count} band(s) are all alpha (transparency masks), nothing to encode")
    if len(set(canonical_band(n) for n in names)) < len(names) and len(items) > 1:
        raise InputError(f"band files give repeated band names {names}: rename the files or pass them in order with --bands")
    h, w = first["shape"]  # type: ignore[misc]
    geobox = GeoBox((h, w), first["transform"], first["crs"])  # type: ignore[arg-type]
    dtype = str(first["dtype"])
    if nodata is not None and np.isnan(nodata):
        nodata = float("nan")
    return Scene(geobox, tuple(names), tuple(sources), dtype, nodata, has_mask, tuple(sorted(tags.items())))
