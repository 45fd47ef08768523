"""Band statistics gathered from rows as they are written, stored the way GDAL stores its own.

:class:`BandStats` takes rows ``(D, r, W)`` in any order (each cell once) and keeps, per band, the valid-cell
count, minimum, maximum, mean and the sum of squared deviations (merged chunk by chunk: Chan et al.), in
float64. :meth:`BandStats.tags` gives GDAL's band metadata items (``STATISTICS_MINIMUM``, ``_MAXIMUM``,
``_MEAN``, ``_STDDEV`` (population), ``_VALID_PERCENT``, and ``STATISTICS_APPROXIMATE=YES`` when they come from
an overview): in a GeoTIFF's ``GDAL_METADATA`` tag, ``gdalinfo``, QGIS and ``rasterio``'s ``ds.tags(b)`` /
``ds.stats()`` read them without computing anything. :func:`read_statistics` reads them back from a file.

Who gathers what: prediction, PCA and exported rasters from every written row (exact); streamed feature COGs
(up to 1024 bands) from their coarsest overview level, which the stream makes anyway (approximate, and marked
so), or from the full resolution when the COG has no overviews (exact).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: GDAL's band metadata keys for statistics.
KEYS = ("STATISTICS_MINIMUM", "STATISTICS_MAXIMUM", "STATISTICS_MEAN", "STATISTICS_STDDEV", "STATISTICS_VALID_PERCENT")
APPROXIMATE = "STATISTICS_APPROXIMATE"


@dataclass(frozen=True)
class Statistics:
    """One band's statistics over its valid cells (None where it has none); ``approximate``: from an overview."""

    minimum: float | None
    maximum: float | None
    mean: float | None
    stddev: float | None
    valid_percent: float
    approximate: bool = False


class BandStats:
    """Running statistics of ``count`` bands, fed from any thread. ``nodata``: the invalid value (None: NaN is
    invalid); ``approximate``: the rows are an overview of the raster, not the raster."""

    def __init__(self, count: int, nodata: float | None = None, approximate: bool = False) -> None:
        self.count, self.nodata, self.approximate = count, nodata, approximate
        self._lock = threading.Lock()
        self.cells = np.zeros(count, np.int64)  # cells seen per band, valid or not
        self.n = np.zeros(count, np.int64)
        self.mean = np.zeros(count, np.float64)
        self.m2 = np.zeros(count, np.float64)
        self.min = np.full(count, np.inf)
        self.max = np.full(count, -np.inf)

    def add(self, rows: np.ndarray, b0: int = 0) -> None:
        """Fold in rows ``(d, r, W)`` of bands ``b0 .. b0 + d`` (band-major; float16 counts as stored; read only during
        the call). Float rows without NaN take a fast path (float64 sums, float32 deviations from the chunk's mean);
        the rest is reduced in float64."""
        d, r, w = rows.shape
        if b0 < 0 or b0 + d > self.count:
            raise ValueError(f"bands {b0}..{b0 + d} of statistics of {self.count}")
        x = rows.reshape(d, r * w)
        if x.dtype == np.float16:
            x = x.astype(np.float32)
        sums = x.sum(axis=1, dtype=np.float64) if r * w else np.zeros(d)
        if self.nodata is None and x.dtype.kind == "f" and not np.isnan(sums).any():  # no NaN cell: no mask, no copy
            n = np.full(d, r * w, np.int64)
            lo, hi = x.min(axis=1, initial=np.inf), x.max(axis=1, initial=-np.inf)
            mean = sums / max(1, r * w)
            dev = x - mean.astype(x.dtype)[:, None]
            m2 = np.square(dev, out=dev).sum(axis=1).astype(np.float64)
        else:
            invalid = np.isnan(x) if self.nodata is None else x == self.nodata
            valid = ~invalid
            n = valid.sum(axis=1)
            xf = x.astype(np.float64)
            lo = np.where(valid, xf, np.inf).min(axis=1, initial=np.inf)
            hi = np.where(valid, xf, -np.inf).max(axis=1, initial=-np.inf)
            mean = np.where(valid, xf, 0).sum(axis=1) / np.maximum(n, 1)
            dev = np.where(valid, xf - mean[:, None], 0)
            m2 = np.einsum("ij,ij->i", dev, dev)
        with self._lock:
            self.cells[b0 : b0 + d] += r * w
            self._merge(slice(b0, b0 + d), n, mean, m2, np.asarray(lo, np.float64), np.asarray(hi, np.float64))

    def _merge(self, at: slice, n: np.ndarray, mean: np.ndarray, m2: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Chan's pairwise update of count, mean and squared deviations of bands ``at``; min and max."""
        n0 = self.n[at]
        total = n0 + n
        safe = np.maximum(total, 1)
        delta = mean - self.mean[at]
        self.m2[at] += m2 + delta * delta * n0 * n / safe
        self.mean[at] += delta * n / safe
        self.n[at] = total
        self.min[at], self.max[at] = np.minimum(self.min[at], lo), np.maximum(self.max[at], hi)

    def band(self, b: int) -> Statistics:
        """Statistics of band ``b`` (0-based)."""
        valid = 100.0 * float(self.n[b]) / float(self.cells[b]) if self.cells[b] else 0.0
        if not self.n[b]:
            return Statistics(None, None, None, None, valid, self.approximate)
        std = float(np.sqrt(max(0.0, self.m2[b] / self.n[b])))
        return Statistics(float(self.min[b]), float(self.max[b]), float(self.mean[b]), std, valid, self.approximate)

    def tags(self) -> list[dict[str, str]]:
        """GDAL's band metadata items of every band (empty for a band with no valid cell)."""
        return [statistics_tags(self.band(b)) for b in range(self.count)]


def statistics_tags(s: Statistics) -> dict[str, str]:
    """GDAL's band metadata items of ``s`` (``repr`` of the float64 values: exact round trips)."""
    if s.minimum is None or s.maximum is None or s.mean is None or s.stddev is None:
        return {}
    values = (s.minimum, s.maximum, s.mean, s.stddev, s.valid_percent)
    return {k: repr(float(v)) for k, v in zip(KEYS, values, strict=True)} | ({APPROXIMATE: "YES"} if s.approximate else {})


#: The longest items :func:`statistics_tags` can give: room kept for a band's statistics before they are known.
WIDEST = statistics_tags(Statistics(*(-2.2250738585072014e-308,) * 4, valid_percent=-2.2250738585072014e-308, approximate=True))


def parse_statistics(tags: dict[str, str]) -> Statistics | None:
    """The statistics in one band's metadata ``tags`` (``ds.tags(b)``), or None where they are missing."""
    if not all(k in tags for k in KEYS):
        return None
    lo, hi, mean, std, valid = (float(tags[k]) for k in KEYS)
    return Statistics(lo, hi, mean, std, valid, tags.get(APPROXIMATE, "").upper() == "YES")


def read_statistics(path: str | Path) -> list[Statistics | None]:
    """The statistics stored in the raster at ``path``, band by band (None: none stored for that band)."""
    import rasterio

    with rasterio.open(path) as ds:
        return [parse_statistics(ds.tags(b)) for b in range(1, ds.count + 1)]
