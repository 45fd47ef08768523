"""Generated scenes for the demo, benchmarks and tests on machines without ``../shared/data``.

:func:`write_scene` writes a georeferenced RGB uint8 GeoTIFF of any size window by window, so
generating a 8192 x 8192 scene never holds it in memory. The picture is aerial-like: Voronoi
'fields' with their own colour and texture, crossed by straight 'roads'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

#: A UTM zone 33N origin with 1 m pixels: where generated scenes are placed.
CRS = "EPSG:32633"
ORIGIN = (400000.0, 5300000.0)


def scene_transform(pixel: float = 1.0, origin: tuple[float, float] = ORIGIN) -> Affine:
    return Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1])


def render(row0: int, col0: int, height: int, width: int, size: int, seed: int = 0, n_regions: int = 24) -> np.ndarray:
    """``(3, height, width)`` float32 in [0, 1]: the window at ``(row0, col0)`` of a ``size``-wide generated scene."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, size=(n_regions, 2))
    colours = rng.uniform(0.1, 0.7, size=(n_regions, 3)).astype(np.float32)
    freq = rng.uniform(0.05, 0.4, size=n_regions).astype(np.float32)
    yy, xx = np.mgrid[row0 : row0 + height, col0 : col0 + width].astype(np.float32)
    best = np.full((height, width), np.inf, np.float32)
    label = np.zeros((height, width), np.int64)
    for i, (cy, cx) in enumerate(centres):
        d = (yy - cy) ** 2 + (xx - cx) ** 2
        closer = d < best
        best[closer] = d[closer]
        label[closer] = i
    texture = 0.08 * np.sin(freq[label] * (xx + yy))
    noise = np.random.default_rng((seed, row0, col0)).normal(0, 0.02, (3, height, width)).astype(np.float32)
    img = colours[label].transpose(2, 0, 1) + texture[None] + noise
    for offset in (0.3, 0.7):
        road = np.abs(yy - offset * size - 0.2 * (xx - size / 2)) < max(2, size // 128)
        img[:, road] = 0.85
    return np.clip(img, 0.0, 1.0)


def write_scene(path: str | Path, height: int, width: int | None = None, seed: int = 0, pixel: float = 1.0, block: int = 1024) -> Path:
    """Write a generated RGB uint8 GeoTIFF (tiled, DEFLATE, band descriptions red/green/blue), block by block."""
    width = width or height
    path = Path(path)
    profile = {
        "driver": "GTiff", "height": height, "width": width, "count": 3, "dtype": "uint8", "crs": CRS,
        "transform": scene_transform(pixel), "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "photometric": "RGB",
    }  # fmt: skip
    size = max(height, width)
    with rasterio.open(path, "w", **profile) as dst:
        dst.descriptions = ("red", "green", "blue")
        for r in range(0, height, block):
            for c in range(0, width, block):
                h, w = min(block, height - r), min(block, width - c)
                img = render(r, c, h, w, size, seed)
                dst.write((img * 255).round().astype(np.uint8), window=((r, r + h), (c, c + w)))
    return path
