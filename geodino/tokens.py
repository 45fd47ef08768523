"""Per-tile CLS and storage tokens, written as a georeferenced Zarr sidecar (``<out stem>.tokens.zarr``).

Each tile's global tokens come with its place in the tile grid and its footprint in the scene's CRS
(the whole ``tile x tile`` window, including any part past the scene edge). Held in memory until
the end: ``(1 + S) * L * D`` floats per tile, e.g. 20 KiB for ViT-L with one layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from geodino.tiling import Tile, TilePlan, grid_crs, tile_geobox


def tokens_path(out: Path) -> Path:
    """``feat.tif`` / ``feat.zarr`` -> ``feat.tokens.zarr`` beside it."""
    return out.with_name(out.stem + ".tokens.zarr")


class TokenCollector:
    """Collects ``cls`` ``(L, D)`` and ``storage`` ``(L, S, D)`` of each encoded tile."""

    def __init__(self, scene: GeoBox, plan: TilePlan) -> None:
        self.scene, self.plan = scene, plan
        self.rows: list[tuple[int, int, float, float, float, float]] = []
        self.cls: list[np.ndarray] = []
        self.storage: list[np.ndarray] = []

    def add(self, tile: Tile, cls: np.ndarray, storage: np.ndarray) -> None:
        x0, y0, x1, y1 = tile_geobox(self.scene, tile).boundingbox
        self.rows.append((tile.row, tile.col, x0, y0, x1, y1))
        self.cls.append(np.asarray(cls, np.float32))
        self.storage.append(np.asarray(storage, np.float32))

    def write(self, dest: Path, metadata: dict[str, object]) -> Path | None:
        """Write the sidecar at ``dest`` (a temporary of the run's outputs); None if no tile was encoded."""
        import xarray as xr

        if not self.rows:
            return None
        meta = np.array(self.rows)
        ds = xr.Dataset(
            {
                "cls": (("tile", "layer", "dim"), np.stack(self.cls)),
                "storage": (("tile", "layer", "storage_token", "dim"), np.stack(self.storage)),
                "tile_row": ("tile", meta[:, 0].astype(np.int32)),
                "tile_col": ("tile", meta[:, 1].astype(np.int32)),
                "xmin": ("tile", meta[:, 2]),
                "ymin": ("tile", meta[:, 3]),
                "xmax": ("tile", meta[:, 4]),
                "ymax": ("tile", meta[:, 5]),
            },
            attrs={"crs": grid_crs(self.scene).to_wkt(), **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}},
        )
        ds.to_zarr(dest, mode="w", consolidated=True, zarr_format=2)
        return dest
