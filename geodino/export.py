"""Feature Zarr store -> COG: streamed strip by strip through the same writer as ``geodino encode``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from odc.geo.geobox import GeoBox

from geodino.errors import InputError, OutputError
from geodino.lock import OutputLock
from geodino.outputs import OutputSet, check_targets, run_lock
from geodino.stacitem import with_items
from geodino.writer import BLOCK, HALF_FLOAT_COG, FeatureWriter, check_cog_name, check_format
from geodino.zarrstore import check_sealed

if TYPE_CHECKING:
    from geodino.engine import Progress

#: bytes of features held per strip while exporting
STRIP_BYTES = 256 * 2**20


def export_cog(
    store: str | Path, out: str | Path, dtype: str = "float32", overwrite: bool = False, progress: Progress | None = None
) -> Path:
    """Write the COG ``out`` from a feature store ``(feature, y, x)`` written by ``geodino encode --format zarr``:
    same grid, CRS, band names and ``GEODINO_*`` tags (plus ``GEODINO_EXPORTED_FROM``). Atomic, like encode.
    Unfinished stores and stores that lost chunks are refused (their completion record, not NaN, tells).
    ``progress(rows done, rows)`` after each strip read; writing the COG is then a logged step."""
    from geodino.featuremaps import open_features

    src = Path(store)
    check_cog_name(out)
    check_format("cog", dtype)
    if not (src / ".zmetadata").exists() and not (src / "zarr.json").exists():
        raise InputError(f"{src} is not a Zarr store written by geodino encode --format zarr")
    check_targets(with_items({"features": out}), [src], overwrite)
    check_sealed(src)
    try:
        feats = open_features(src)
    except Exception as exc:  # a store xarray cannot decode: not ours, or damaged
        raise InputError(
            f"{src} cannot be read as a feature store: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if feats.dims != ("feature", "y", "x") or feats.rio.crs is None:
        raise InputError(f"{src} is not a geodino feature store: want (feature, y, x) with a CRS, got {dict(feats.sizes)}")
    d, h, w = (feats.sizes[k] for k in ("feature", "y", "x"))
    geobox = GeoBox((h, w), feats.rio.transform(), feats.rio.crs.to_wkt())
    names = [str(n) for n in feats["feature"].values]
    meta = dict(feats.attrs)
    meta["exported_from"] = str(src)
    meta["dtype"] = dtype
    meta.pop("storage", None)
    if dtype == "float16":
        meta["storage"] = HALF_FLOAT_COG
    rows = max(1, min(BLOCK, STRIP_BYTES // max(1, w * d * 4)))
    with (
        OutputLock(
            run_lock(src), src, lambda holder: OutputError(f"{src} is being written by a geodino run ({holder}): export it when done")
        ),
        OutputSet(with_items({"features": out}), [src], overwrite) as outs,
        FeatureWriter(outs.temp("features"), geobox, d, "cog", dtype) as writer,
    ):  # the store is locked like an output, so no encode replaces it while it is read
        for r0 in range(0, h, rows):
            try:
                strip = np.asarray(feats.isel(y=slice(r0, r0 + rows)).values, dtype=np.float32)
            except Exception as exc:  # a truncated or corrupt chunk
                raise InputError(
                    f"{src} is damaged: rows {r0}-{r0 + rows} cannot be read ({type(exc).__name__}); encode it again"
                ) from None
            writer.write_rows(r0, strip.transpose(1, 2, 0))
            if progress is not None:
                progress(min(r0 + rows, h), h)
        writer.finish(meta, names)
        return outs.commit()["features"]
