"""Looking at a scene through DINOv3's eyes: PCA colours, similarity to a point, k-means clusters (drawn by
:mod:`geodino.figures`).

Functions over a georeferenced feature :class:`xarray.DataArray` with dims ``(feature, y, x)`` (what
:func:`open_features` returns for a feature COG or Zarr written by ``geodino encode``). Results are
DataArrays on the same grid, with the CRS and coordinates kept. NaN cells (nodata) stay NaN / -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from rasterio.transform import rowcol

from geodino.errors import InputError, speaks_python
from geodino.pca import fit_pca, to_rgb8


@speaks_python
def open_features(path: str | Path, chunks: dict[str, int] | None = None) -> xr.DataArray:
    """A feature raster (COG or Zarr from ``geodino encode``) as a lazy DataArray ``(feature, y, x)`` with its CRS,
    the channel names as the ``feature`` coordinate and the run's record as ``attrs`` (the same from either format)."""
    import rioxarray

    from geodino.record import record_from_attrs, record_from_tags

    path = Path(path)
    if not path.exists():
        raise InputError(f"features not found: {path}")
    if path.suffix == ".zarr" or path.is_dir():
        ds = xr.open_zarr(path, decode_coords="all", chunks=chunks) if chunks else xr.open_zarr(path, decode_coords="all")
        if not ds.data_vars:
            raise InputError(f"{path} holds no arrays: not a feature store")
        da = ds["features"] if "features" in ds else ds[next(iter(ds.data_vars))]
        if "band_name" in da.coords:  # stores written before the one layout: (band, y, x) with band names apart
            da = da.assign_coords(band=da["band_name"].values).drop_vars("band_name").rename(band="feature")
        da.attrs = record_from_attrs({**da.attrs, **ds.attrs})
        return da
    opened = rioxarray.open_rasterio(path, chunks=chunks or {"band": -1, "y": 256, "x": 256}, mask_and_scale=True)
    if not isinstance(opened, xr.DataArray):  # a file of subdatasets (e.g. netCDF) opens as a Dataset or a list
        raise InputError(f"{path} holds several arrays (subdatasets): not a feature raster")
    names = opened.attrs.get("long_name")
    if isinstance(names, (tuple, list)) and len(names) == opened.sizes["band"]:
        opened = opened.assign_coords(band=list(names))
    opened.attrs = record_from_tags({k: str(v) for k, v in opened.attrs.items()})
    return opened.rename(band="feature").rename("features")


def _table(features: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """``(feature, y, x)`` -> ``(y*x, feature)`` float32 values and a mask of cells with data."""
    if features.dims[0] != "feature":
        features = features.transpose("feature", ...)
    values = np.asarray(features.values, dtype=np.float32)
    flat = values.reshape(values.shape[0], -1).T
    return flat, np.asarray(~np.isnan(flat).any(axis=1))  # asarray: for the type (numpy's stubs)


def _like(features: xr.DataArray, data: np.ndarray, name: str, extra_dim: tuple[str, list[object]] | None = None) -> xr.DataArray:
    """A DataArray on the features' grid (coordinates and CRS kept)."""
    coords = {k: v for k, v in features.coords.items() if "feature" not in v.dims}
    dims: tuple[str, ...] = ("y", "x")
    if extra_dim is not None:
        dims = (extra_dim[0], "y", "x")
        coords[extra_dim[0]] = extra_dim[1]
    out = xr.DataArray(data, dims=dims, coords=coords, name=name)
    if hasattr(features, "rio") and features.rio.crs is not None:
        out = out.rio.write_crs(features.rio.crs)
    return out


@speaks_python
def pca_rgb(features: xr.DataArray, sample: int = 20000, seed: int = 0) -> xr.DataArray:
    """First three principal components as an RGB image ``(band=3, y, x)`` in [0, 1] (2-98 % stretch each).

    Fitted on up to ``sample`` cells; the explained variance ratios are in ``attrs``.
    """
    flat, ok = _table(features)
    idx = np.flatnonzero(ok)
    if len(idx) > sample:
        idx = np.random.default_rng(seed).choice(idx, sample, replace=False)
    pca = fit_pca(flat[idx], min(3, flat.shape[1], len(idx)))
    pcs = np.full((flat.shape[0], 3), np.nan, np.float32)
    pcs[ok, : pca.k] = pca.transform(flat[ok])
    h, w = features.sizes["y"], features.sizes["x"]
    rgb8 = to_rgb8(pcs.T.reshape(3, h, w))
    rgb = np.where(np.isnan(pcs.T.reshape(3, h, w)), np.nan, (rgb8.astype(np.float32) - 1) / 254)
    out = _like(features, rgb, "pca_rgb", ("band", ["PC1", "PC2", "PC3"]))
    out.attrs["explained_variance_ratio"] = [float(v) for v in pca.explained]
    return out


def cell_of(features: xr.DataArray, point: Sequence[float], crs: str | None = None) -> tuple[int, int]:
    """``(row, col)`` of the cell holding ``point``: map coordinates ``(x, y)`` in ``crs`` (default: the
    features' CRS; e.g. ``"EPSG:4326"`` for lon, lat), or integer pixel indexes ``(row, col)`` with ``crs="pixel"``."""
    if crs == "pixel":
        row, col = int(point[0]), int(point[1])
    else:
        x, y = float(point[0]), float(point[1])
        if crs is not None:
            from pyproj import Transformer

            x, y = Transformer.from_crs(crs, features.rio.crs, always_xy=True).transform(x, y)
        row, col = rowcol(features.rio.transform(), x, y)
    h, w = features.sizes["y"], features.sizes["x"]
    if not (0 <= row < h and 0 <= col < w):
        raise InputError(f"point {tuple(point)} ({crs or 'features CRS'}) falls outside the {w}x{h} feature grid")
    return row, col


@speaks_python
def similarity(features: xr.DataArray, point: Sequence[float], crs: str | None = None) -> xr.DataArray:
    """Cosine similarity ``(y, x)`` of every cell's feature vector to the vector of the cell at ``point``."""
    row, col = cell_of(features, point, crs)
    flat, ok = _table(features)
    w = features.sizes["x"]
    query = flat[row * w + col]
    if np.isnan(query).any():
        raise InputError(f"the cell at {tuple(point)} has no data (nodata)")
    norms = np.linalg.norm(flat, axis=1) * np.linalg.norm(query)
    sim = np.where(ok, (flat @ query) / np.maximum(norms, 1e-12), np.nan)
    out = _like(features, sim.reshape(features.sizes["y"], w).astype(np.float32), "similarity")
    out.attrs["query_cell"] = [row, col]
    return out


@speaks_python
def kmeans(features: xr.DataArray, k: int, iterations: int = 50, seed: int = 0) -> xr.DataArray:
    """k-means clusters ``(y, x)`` (int, -1 for nodata) of the feature vectors (k-means++ start, Lloyd steps)."""
    flat, ok = _table(features)
    data = flat[ok].astype(np.float64)
    if not 1 <= k <= len(data):
        raise InputError(f"k={k} needs 1 <= k <= {len(data)} cells with data")
    rng = np.random.default_rng(seed)
    centres = [data[rng.integers(len(data))]]
    for _ in range(1, k):  # k-means++: far points are likelier next centres
        d2 = np.min([((data - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(data[rng.choice(len(data), p=d2 / d2.sum())] if d2.sum() > 0 else data[rng.integers(len(data))])
    c = np.stack(centres)
    labels = np.zeros(len(data), np.int64)
    for _ in range(iterations):
        d = (data**2).sum(1)[:, None] - 2 * data @ c.T + (c**2).sum(1)[None]
        new = d.argmin(1)
        if _ > 0 and np.array_equal(new, labels):
            break
        labels = new
        c = np.stack([data[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
    out = np.full(flat.shape[0], -1, np.int32)
    out[ok] = labels
    clusters = _like(features, out.reshape(features.sizes["y"], features.sizes["x"]), "cluster")
    clusters.attrs["clusters"] = k  # the maps draw k colours (geodino.figures), also when a cluster ends up empty
    return clusters
