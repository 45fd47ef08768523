"""PCA of feature vectors fitted on a sample, and RGB quicklooks of the first three components.

Used by ``encode --pca K`` (the sample is drawn from valid cells of every tile while encoding) and
by notebooks. Components are sign-fixed (largest loading positive) so reruns give the same image.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from geodino.errors import InputError


@dataclass(frozen=True)
class PCA:
    """``mean`` ``(D,)``, ``components`` ``(K, D)`` (rows orthonormal), ``explained`` ``(K,)`` variance ratios."""

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(..., D)`` -> ``(..., K)``; NaN rows stay NaN."""
        return ((x - self.mean) @ self.components.T).astype(np.float32)

    def record(self) -> dict[str, object]:
        return {"k": self.k, "explained_variance_ratio": [round(float(v), 6) for v in self.explained]}


def fit_pca(sample: np.ndarray, k: int) -> PCA:
    """Fit ``k`` components to ``sample`` ``(N, D)`` (float64 SVD of the centred sample)."""
    sample = sample[~np.isnan(sample).any(axis=1)].astype(np.float64)
    n, d = sample.shape
    if not 1 <= k <= min(n, d):
        raise InputError(f"PCA with k={k} needs 1 <= k <= min(samples {n}, dims {d})")
    mean = sample.mean(axis=0)
    _, s, vt = np.linalg.svd(sample - mean, full_matrices=False)
    var = s**2
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    return PCA(mean.astype(np.float32), comps.astype(np.float32), (var[:k] / var.sum()).astype(np.float32))


class CellSampler:
    """Keeps up to ``per_tile`` random valid cells of every tile, at most ``limit`` in all, for PCA fits."""

    def __init__(self, per_tile: int = 64, limit: int = 20000, seed: int = 0) -> None:
        self.per_tile, self.limit = per_tile, limit
        self.rng = np.random.default_rng(seed)
        self.parts: list[np.ndarray] = []
        self.count = 0

    def add(self, out: np.ndarray, cell_valid: np.ndarray) -> None:
        """``out`` ``(t, t, D)``, ``cell_valid`` ``(t, t)``."""
        if self.count >= self.limit:
            return
        cells = out[cell_valid]
        if len(cells) > self.per_tile:
            cells = cells[self.rng.choice(len(cells), self.per_tile, replace=False)]
        cells = cells[: self.limit - self.count]
        self.parts.append(np.array(cells, np.float32))
        self.count += len(cells)

    def sample(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros((0, 0), np.float32)


def to_rgb8(pcs: np.ndarray, lo_hi: tuple[float, float] = (2, 98)) -> np.ndarray:
    """``(3, H, W)`` components -> ``(3, H, W)`` uint8, each stretched between its percentiles; NaN -> 0."""
    out = np.zeros(pcs.shape, np.uint8)
    for i, band in enumerate(pcs):
        ok = ~np.isnan(band)
        if not ok.any():
            continue
        lo, hi = np.percentile(band[ok], lo_hi)
        scaled = np.clip((band - lo) / max(hi - lo, 1e-12), 0, 1) * 254 + 1
        out[i][ok] = scaled[ok].astype(np.uint8)
    return out


def write_quicklook(features: str | Path, png: str | Path, sample: int = 20000, seed: int = 0, min_side: int = 512) -> Path:
    """PCA RGB quicklook PNG of a feature raster (3 components fitted on a sample of its cells).

    Each cell becomes an ``f x f`` block of pixels, ``f`` the smallest integer making the longer side
    at least ``min_side``. Zero (black) marks nodata. Reads the whole raster: meant for quicklooks.
    """
    with rasterio.open(features) as ds:
        data = ds.read().transpose(1, 2, 0)  # (H, W, D)
    flat = data.reshape(-1, data.shape[-1])
    ok = ~np.isnan(flat).any(axis=1)
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(ok)
    if len(idx) > sample:
        idx = rng.choice(idx, sample, replace=False)
    k = min(3, data.shape[-1], len(idx))
    pcs = fit_pca(flat[idx], k).transform(data).transpose(2, 0, 1)
    if k < 3:
        pcs = np.concatenate([pcs, np.repeat(pcs[:1], 3 - k, axis=0)])
    rgb = to_rgb8(pcs)
    f = max(1, -(-min_side // max(rgb.shape[1:])))
    rgb = np.repeat(np.repeat(rgb, f, axis=1), f, axis=2)
    png = Path(png)
    with warnings.catch_warnings():  # a picture, not a map: the georeferenced data is the feature raster
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(png, "w", driver="PNG", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8") as dst:
            dst.write(rgb)
    return png
