"""The one layout of feature arrays, in memory (the lazy API) and in Zarr stores (the CLI, block-wise runs).

``features (feature, y, x)``: one vector per output cell; ``feature`` holds the channel names, ``y``/``x`` the cell
centres with their CF attributes (``standard_name``, ``units``, ``axis``); ``spatial_ref`` is a scalar
coordinate holding the CRS (CF grid mapping: ``crs_wkt``, ``spatial_ref``, ``GeoTransform``) that the array
names in ``grid_mapping`` and ``coordinates``, so plain ``xr.open_zarr`` gives ``.rio.crs`` and ``.odc.geobox``;
``_CRS`` (GDAL's own Zarr CRS attribute) lets GDAL >= 3.4 see it too (GDAL reads CF grid mappings only from
3.9). NaN is nodata. The run's record (:mod:`geodino.record`) is in the array's attributes as JSON values; the
group's attributes hold only the completion record (:func:`seal_store`, which :func:`check_sealed` compares
with the chunks on disk).

Chunks hold :data:`FEATURES_PER_CHUNK` features, so reading one feature for display decodes 1/64 of a ViT-L
store rather than all of it (a COG keeps each feature in its own plane for the same reason), while a chunk of
16 x 32 x 256 cells (512 KiB of float32) stays large enough for zstd and few enough files for a filesystem.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from odc.geo.geobox import GeoBox

from geodino.errors import InputError
from geodino.record import record_attrs
from geodino.tiling import grid_crs

if TYPE_CHECKING:
    import xarray as xr

#: dims of every feature array geodino writes or returns
DIMS = ("feature", "y", "x")
#: features per Zarr chunk (the chunk's other sides are set by the writer)
FEATURES_PER_CHUNK = 16
#: what the features are, for CF readers (``long_name``; values are dimensionless: ``units`` 1)
LONG_NAME = "DINOv3 patch features"


def feature_array(data: object, geobox: GeoBox, names: Sequence[str], metadata: dict[str, object]) -> xr.DataArray:
    """``data`` (``(feature, y, x)``, dask or numpy) in the one layout (module docstring), named ``features``."""
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    from geodino.tiling import cell_centres

    y, x = cell_centres(geobox)
    wkt = grid_crs(geobox).to_wkt()
    attrs = record_attrs(metadata)
    arr = xr.DataArray(data, dims=DIMS, coords={"feature": list(names), "y": y, "x": x}, attrs=attrs, name="features")
    arr = arr.rio.write_crs(wkt).rio.write_transform(geobox.affine).rio.write_coordinate_system()
    arr = arr.rio.write_nodata(np.nan, encoded=False)
    arr.attrs.update({"long_name": LONG_NAME, "units": "1", "_CRS": gdal_crs(geobox)})
    arr.attrs.pop("grid_mapping", None)  # kept in the encoding, where xarray's writer looks for it
    arr.encoding.update({"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"})
    return arr


def gdal_crs(geobox: GeoBox) -> dict[str, str]:
    """GDAL's ``_CRS`` attribute: an OGC URL where the CRS has an EPSG code (short, read first), else its WKT."""
    crs = grid_crs(geobox)
    epsg = crs.to_epsg()
    return {"url": f"http://www.opengis.net/def/crs/EPSG/0/{epsg}"} if epsg else {"wkt": crs.to_wkt()}


def feature_dataset(data: object, geobox: GeoBox, names: Sequence[str], metadata: dict[str, object]) -> xr.Dataset:
    """:func:`feature_array` as the Dataset a store holds (what ``DataArray.to_dataset()`` of the lazy API gives)."""
    return feature_array(data, geobox, names, metadata).to_dataset()


def chunks_of(dim: int, rows: int, cols: int) -> tuple[int, int, int]:
    """Zarr chunks of a ``dim``-feature store written ``rows x cols`` cells at a time."""
    return (min(dim, FEATURES_PER_CHUNK), rows, cols)


def _chunk_keys(array_dir: Path) -> tuple[list[str], set[str]]:
    """Every chunk key a v2 Zarr array should hold, and the chunk files it holds."""
    meta = json.loads((array_dir / ".zarray").read_text())
    sep = meta.get("dimension_separator") or "."
    counts = [-(-n // c) for n, c in zip(meta["shape"], meta["chunks"], strict=True)]
    expected = [sep.join(map(str, idx)) for idx in np.ndindex(*counts)]
    present = {str(p.relative_to(array_dir)).replace("/", sep) for p in array_dir.rglob("*") if p.is_file() and not p.name.startswith(".")}
    return expected, present


def remove_partials(store: Path) -> int:
    """Remove chunk temporaries (``*.partial``, left by a killed write) from a Zarr store; returns how many."""
    found = [p for p in store.rglob("*.partial") if p.is_file()] if store.is_dir() else []
    for p in found:
        p.unlink()
    return len(found)


def seal_store(store: Path, blocks: int | None = None) -> None:
    """Record in a finished feature store that it is complete: its blocks and the chunks that are empty by
    design (all NaN, so not written). :func:`check_sealed` compares the store with this record."""
    import zarr

    remove_partials(store)
    expected, present = _chunk_keys(store / "features")
    record = {"complete": True, "blocks": blocks, "chunks": len(expected), "empty_chunks": [k for k in expected if k not in present]}
    group = zarr.open_group(str(store), mode="r+", zarr_format=2)
    group.attrs["completion"] = json.dumps(record)
    zarr.consolidate_metadata(str(store), zarr_format=2)


def check_sealed(store: Path) -> None:
    """Refuse a feature store that is unfinished (no completion record) or has lost chunks since it was sealed."""
    try:
        attrs = json.loads((store / ".zattrs").read_text())
        record = json.loads(attrs["completion"])
        expected, present = _chunk_keys(store / "features")
    except (OSError, KeyError, ValueError, TypeError):
        raise InputError(f"{store} is not a finished geodino feature store (no completion record): finish its encode run first") from None
    missing = [k for k in expected if k not in present and k not in set(record.get("empty_chunks", []))]
    if missing or record.get("chunks") != len(expected):
        raise InputError(
            f"{store} is damaged: {len(missing)} chunk(s) missing since it was written "
            f"(first: features/{missing[0] if missing else '?'}); encode it again"
        )
    partial = [p for p in store.rglob("*.partial")]
    if partial:
        raise InputError(f"{store} holds chunk temporaries ({partial[0].name}): it was not finished cleanly; encode it again")
