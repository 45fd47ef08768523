"""Maps of georeferenced DataArrays: figures (matplotlib, :func:`plot`) and interactive maps (folium through odc-geo,
:func:`explore`).

One :func:`look` decides how a layer is drawn, for both: features ``(feature, y, x)`` as their PCA colours, three bands
``(band, y, x)`` as RGB (a scene's values stretched 2-98 % per band), classes and clusters in the palette of the class
COGs (a land-cover map's own ``attrs["colours"]``, else :data:`~geodino.labels.PALETTE`) with a discrete legend, any
other layer ``(y, x)`` through a colour map with a colour bar. Nodata (NaN, the raster's nodata value, class -1) is
transparent. Map ticks are few and short: kilometres in a projected CRS, degrees in a geographic one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from geodino.errors import InputError, speaks_python
from geodino.featuremaps import pca_rgb
from geodino.labels import PALETTE

if TYPE_CHECKING:
    import folium
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.colors import Colormap, Normalize
    from matplotlib.ticker import Formatter

#: Names of integer layers that hold classes (``kmeans`` gives ``cluster``), not values.
CLASS_LAYERS = ("class", "cluster", "land_cover")


@dataclass(frozen=True)
class Look:
    """A layer ready to draw: ``rgba`` ``(h, w, 4)`` floats in [0, 1] (alpha 0 on nodata); for classes and values also
    the masked ``values`` ``(h, w)`` with their colour map and norm, the class ``names`` and a ``label``."""

    rgba: np.ndarray
    values: np.ma.MaskedArray | None = None
    cmap: Colormap | None = None
    norm: Normalize | None = None
    names: tuple[str, ...] = ()
    label: str = ""


def _matplotlib(what: str = "geodino.plot") -> None:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise InputError(f"{what} draws with matplotlib: pip install 'geodino[notebook]' (or matplotlib)") from None


def _nodata(data: xr.DataArray, values: np.ndarray) -> np.ndarray:
    """Cells without data: NaN, or the raster's declared nodata value."""
    bad = np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    nodata = data.rio.nodata if hasattr(data, "rio") else None
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad |= values == nodata
    return np.asarray(bad)


def _is_classes(data: xr.DataArray) -> bool:
    return "class_names" in data.attrs or (data.name in CLASS_LAYERS and np.issubdtype(data.dtype, np.integer))


def look(
    data: xr.DataArray, cmap: str | Colormap | None = None, vmin: float | None = None, vmax: float | None = None
) -> tuple[xr.DataArray, Look]:
    """How ``data`` is drawn (see the module's docstring), and the ``(y, x)`` or ``(band, y, x)`` layer it draws."""
    _matplotlib()
    import matplotlib as mpl
    from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize

    if "feature" in data.dims:
        data = pca_rgb(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data.isel({data.dims[0]: 0})
    if (data.ndim == 3 and data.shape[0] == 2) or data.ndim not in (2, 3):
        raise InputError(f"maps show one layer or 3 bands (RGB), got {dict(data.sizes)}: select them, e.g. da.isel(band=[2, 1, 0])")
    if data.ndim == 3:
        data = data.isel({data.dims[0]: slice(0, 3)})
        rgb = np.asarray(data.values, dtype=np.float32)
        bad = _nodata(data, rgb).all(axis=0) | np.isnan(rgb).any(axis=0)
        if bad.all():
            return data, Look(np.zeros((*rgb.shape[1:], 4)))
        if rgb[:, ~bad].max() > 1:  # scene values: stretch each band over its valid pixels
            lo, hi = np.percentile(rgb[:, ~bad], [2, 98], axis=1)
            rgb = (rgb - lo[:, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None]
        rgba = np.dstack([np.clip(np.nan_to_num(rgb.transpose(1, 2, 0)), 0, 1), ~bad])
        return data, Look(rgba)
    values = np.asarray(data.values)
    bad = _nodata(data, values)
    label = str(data.name or "")
    if _is_classes(data):
        names = [str(n) for n in data.attrs.get("class_names", ())]
        valid = values[~bad]
        k = len(names) or int(data.attrs.get("clusters", 0)) or (int(valid.max()) + 1 if (valid >= 0).any() else 1)
        names = names or [f"{label or 'class'} {i}" for i in range(k)]
        colours = data.attrs.get("colours") or [PALETTE[i % len(PALETTE)] for i in range(k)]
        bad |= (values < 0) | (values >= k)
        palette = ListedColormap(np.asarray(colours[:k], dtype=np.float64)[:, :3] / 255, name=f"{label or 'classes'} palette")
        listed = palette.with_extremes(bad=(0, 0, 0, 0))
        norm: Normalize = BoundaryNorm(np.arange(k + 1) - 0.5, k)
        masked = np.ma.masked_array(np.where(bad, 0, values).astype(np.int32), bad)
        return data, Look(listed(norm(masked)), masked, listed, norm, tuple(names), label)
    base = cmap if cmap is not None and not isinstance(cmap, str) else mpl.colormaps[cmap or "viridis"]
    colours = base.with_extremes(bad=(0, 0, 0, 0))
    masked = np.ma.masked_array(np.where(bad, 0, values).astype(np.float64), bad)
    lo = vmin if vmin is not None else (float(masked.min()) if masked.count() else 0.0)
    hi = vmax if vmax is not None else (float(masked.max()) if masked.count() else 1.0)
    norm = Normalize(lo, hi)
    return data, Look(colours(norm(masked)), masked, colours, norm, (), label)


def _short(axis: Axis, scale: float, unit: str) -> Formatter:
    """Tick labels with as many decimals as the tick step needs (``320.05``), in ``1/scale`` units."""
    from matplotlib.ticker import FuncFormatter

    def label(v: float, _pos: int | None = None) -> str:
        locs = axis.get_majorticklocs()
        step = abs(locs[1] - locs[0]) / scale if len(locs) > 1 else 1.0
        digits = max(0, -math.floor(math.log10(step))) if step > 0 else 0
        return f"{v / scale:,.{digits}f}{unit}"

    return FuncFormatter(label)


def map_ticks(ax: Axes, crs: object | None) -> None:
    """Four ticks a side, labelled in km (projected CRS in metres) or degrees (geographic), the CRS in the axis labels."""
    from matplotlib.ticker import MaxNLocator
    from pyproj import CRS

    names, scale, unit = ("x", "y"), 1.0, ""
    if crs is not None:
        c = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        code = f"EPSG:{c.to_epsg()}" if c.to_epsg() else c.name
        if c.is_geographic:
            names, unit = (f"longitude ({code})", f"latitude ({code})"), "°"
        elif c.axis_info and c.axis_info[0].unit_name in ("metre", "meter"):
            names, scale = (f"easting (km, {code})", f"northing (km, {code})"), 1000.0
        else:
            names = (f"x ({code})", f"y ({code})")
    for axis, name in ((ax.xaxis, names[0]), (ax.yaxis, names[1])):
        axis.set_major_locator(MaxNLocator(nbins=4))
        axis.set_major_formatter(_short(axis, scale, unit))
        axis.set_label_text(name)


def _extent(data: xr.DataArray) -> tuple[float, float, float, float]:
    ys, xs = data["y"].values, data["x"].values
    dx = abs(xs[1] - xs[0]) if len(xs) > 1 else 1.0
    dy = abs(ys[1] - ys[0]) if len(ys) > 1 else 1.0
    return xs.min() - dx / 2, xs.max() + dx / 2, ys.min() - dy / 2, ys.max() + dy / 2


@speaks_python
def plot(
    data: xr.DataArray, ax: Axes | None = None, title: str | None = None, *, cmap: str | Colormap | None = None,
    vmin: float | None = None, vmax: float | None = None, **imshow: Any,
) -> Axes:  # fmt: skip
    """Draw a DataArray on map coordinates (matplotlib) as :func:`look` says: RGB, classes with a legend of their
    colours, or values with a colour bar (``cmap``, ``vmin``/``vmax``: give two maps the same limits). Nodata is
    transparent; returns the ``Axes``."""
    _matplotlib()
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    data, lk = look(data, cmap, vmin, vmax)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    extent = _extent(data)
    if lk.values is None:
        ax.imshow(lk.rgba, extent=extent, **imshow)
    elif lk.names:
        ax.imshow(lk.values, cmap=lk.cmap, norm=lk.norm, extent=extent, **{"interpolation": "nearest", **imshow})
        colours = lk.cmap(np.arange(len(lk.names))) if lk.cmap is not None else np.zeros((len(lk.names), 4))
        handles = [Patch(facecolor=c, edgecolor="none", label=n) for c, n in zip(colours, lk.names, strict=True)]
        ax.legend(handles=handles, title=lk.label or None, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, frameon=False)
    else:
        image = ax.imshow(lk.values, cmap=lk.cmap, norm=lk.norm, extent=extent, **imshow)
        plt.colorbar(image, ax=ax, shrink=0.8, label=lk.label)
    map_ticks(ax, data.rio.crs if hasattr(data, "rio") else None)
    ax.set_title(title if title is not None else lk.label)
    return ax


@speaks_python
def explore(
    layers: xr.DataArray | Mapping[str, xr.DataArray], map: folium.Map | None = None, *, cmap: str | Colormap | None = None,
    vmin: float | None = None, vmax: float | None = None, tiles: str | None = "OpenStreetMap",
) -> folium.Map:  # fmt: skip
    """An interactive map (folium, through odc-geo's ``add_to``) of one layer or of named layers (``{"scene": ...,
    "PCA": features, "similarity": sim}``), each drawn as :func:`plot` draws it, nodata transparent, with a layer
    control. ``map``: add the layers to this map instead. The layers are PNGs inside the map; the base map's tiles
    load in the browser (``tiles=None``: none)."""
    try:
        import folium
        import odc.geo.xr  # noqa: F401  (registers .odc)
    except ModuleNotFoundError:
        raise InputError("geodino.explore draws with folium: pip install 'geodino[notebook]' (or folium)") from None
    _matplotlib("geodino.explore")
    named = {str(layers.name or "layer"): layers} if isinstance(layers, xr.DataArray) else dict(layers)
    if not named:
        raise InputError("explore needs at least one layer")
    new = map is None
    m = folium.Map(tiles=tiles, control_scale=True) if map is None else map
    bounds: Sequence[Sequence[float]] = []
    for name, layer in named.items():
        if not hasattr(layer, "rio") or layer.rio.crs is None:
            raise InputError(f"layer {name!r} has no CRS: explore places layers on the map by their CRS")
        data, lk = look(layer, cmap, vmin, vmax)
        rgba = xr.DataArray(
            np.round(lk.rgba * 255).astype(np.uint8), dims=("y", "x", "band"),
            coords={"y": data["y"].values, "x": data["x"].values, "band": ["r", "g", "b", "a"]},
        ).rio.write_crs(data.rio.crs)  # fmt: skip
        rgba.odc.add_to(m, name=name)
        bounds = bounds or rgba.odc.map_bounds()
    if new:
        m.fit_bounds(bounds)
        folium.LayerControl().add_to(m)
    return m
