"""The Zarr layout of feature stores: one ``features (band, y, x)`` variable with band names, cell-centre
coordinates, CRS and transform, NaN nodata and the run's record in the attributes; a completion record
(:func:`seal_store`) that :func:`check_sealed` compares with the chunks on disk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from odc.geo.geobox import GeoBox

from geodino.errors import InputError
from geodino.tiling import grid_crs

if TYPE_CHECKING:
    import xarray as xr


def zarr_attrs(metadata: dict[str, object]) -> dict[str, object]:
    """Metadata as Zarr/xarray attributes: scalars as they are, the rest as JSON."""
    return {k: (v if isinstance(v, (str, int, float, bool)) else json.dumps(v)) for k, v in metadata.items()}


def feature_dataset(data: object, geobox: GeoBox, band_names: Sequence[str], metadata: dict[str, object]) -> xr.Dataset:
    """The one Zarr layout of feature rasters: ``features (band, y, x)`` (``data``, dask or numpy) with a
    ``band_name`` coordinate, cell-centre coordinates, CRS and transform in ``spatial_ref``, NaN nodata
    and the run's record in the attributes. Returns an :class:`xarray.Dataset`."""
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    from geodino.tiling import cell_centres

    y, x = cell_centres(geobox)
    attrs = zarr_attrs(metadata)
    coords = {"band": np.arange(1, len(band_names) + 1), "y": y, "x": x, "band_name": ("band", list(band_names))}
    arr = xr.DataArray(data, dims=("band", "y", "x"), coords=coords, attrs=attrs)
    arr = arr.rio.write_crs(grid_crs(geobox).to_wkt()).rio.write_transform(geobox.affine).rio.write_nodata(np.nan, encoded=False)
    ds = arr.to_dataset(name="features")
    ds.attrs = attrs
    return ds


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
