"""Accuracy of prediction rasters: canopy height against a lidar reference, land cover against labels.

:func:`evaluate_height` resamples the prediction onto the reference grid (any CRS; area mean, so a
0.1 m prediction is averaged into each 1 m reference pixel) and compares where both have data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geodino.errors import InputError


def regression_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, bias (mean of pred - ref) and R^2 over pixels finite in both; ``n`` pixels used."""
    ok = np.isfinite(pred) & np.isfinite(ref)
    if not ok.any():
        raise InputError("the prediction and the reference share no valid pixels")
    p, r = pred[ok].astype(np.float64), ref[ok].astype(np.float64)
    err = p - r
    ss_tot = float(((r - r.mean()) ** 2).sum())
    r2 = 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "bias": float(err.mean()),
        "r2": r2,
        "n": int(ok.sum()),
    }


def check_reference(reference: str | Path, scene: GeoBox) -> None:
    """Refuse, before any work, a reference raster that is missing, unreadable, without a CRS, or not overlapping
    the scene's footprint (compared in the reference's CRS)."""
    if not Path(reference).exists():
        raise InputError(f"reference not found: {reference}")
    try:
        with rasterio.open(reference) as ds:
            crs, bounds = ds.crs, ds.bounds
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read the reference {reference}: {str(exc).splitlines()[0]}") from None
    if crs is None:
        raise InputError(f"reference {reference} has no CRS")
    x0, y0, x1, y1 = scene.extent.to_crs(crs.to_wkt()).boundingbox
    if x1 <= bounds.left or x0 >= bounds.right or y1 <= bounds.bottom or y0 >= bounds.top:
        raise InputError(f"reference {reference} does not overlap the scene: nothing to evaluate against")


def evaluate_height(
    prediction: str | Path, reference: str | Path, report: str | Path | None = None, prediction_name: str | Path | None = None
) -> dict[str, object]:
    """Compare a canopy-height raster with a reference (e.g. lidar CHM) on the reference's grid.

    Returns the metrics plus what was compared; writes them as JSON to ``report`` when given
    (``prediction_name``: the prediction's final path when ``prediction`` is a run's temporary).
    """
    try:
        with rasterio.open(reference) as ref_ds:
            ref = ref_ds.read(1, masked=True).astype(np.float64).filled(np.nan)
            grid = {"crs": ref_ds.crs, "transform": ref_ds.transform, "width": ref_ds.width, "height": ref_ds.height}
        with rasterio.open(prediction) as src, WarpedVRT(src, resampling=Resampling.average, nodata=np.nan, **grid) as vrt:
            pred = vrt.read(1).astype(np.float64)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read {str(exc).splitlines()[0]}") from None
    if grid["crs"] is None:
        raise InputError(f"reference {reference} has no CRS")
    result: dict[str, object] = {
        **regression_metrics(pred, ref),
        "prediction": str(prediction_name or prediction),
        "reference": str(reference),
        "grid": "reference",
        "resampling": "area mean of the prediction onto the reference pixels",
    }
    if report is not None:
        Path(report).write_text(json.dumps(result, indent=2))
    return result


def classification_metrics(pred: np.ndarray, truth: np.ndarray, n_classes: int, names: list[str] | None = None) -> dict[str, object]:
    """Confusion matrix (rows truth, columns prediction), per-class IoU, mIoU and overall accuracy.

    ``pred`` and ``truth`` are class indexes; pixels with ``truth`` outside ``[0, n_classes)`` are ignored.
    mIoU averages the classes present in ``truth`` or ``pred``.
    """
    ok = (truth >= 0) & (truth < n_classes)
    t, p = truth[ok].astype(np.int64), pred[ok].astype(np.int64)
    cm = np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    names = names or [str(i) for i in range(n_classes)]
    return {
        "overall_accuracy": float(inter.sum() / max(cm.sum(), 1)),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou, strict=True)},
        "confusion": cm.tolist(),
        "classes": names,
        "n": int(cm.sum()),
    }
