"""What deciding the input costs (issue #11): detection + the scene-wide statistics read + the clipping check
(``adapter.prepare``) against reading every tile of the scene once, and tiles of a 20 m band resampled on the fly
(warped VRT) against the same tiles of a 10 m band read directly. Ratios are measured in one run.

Generates Sentinel-2-like band files (uint16, tiled, DEFLATE): B02, B03, B04 at 10 m and B11 at 20 m.

    python bench/input_contract.py              # 4096 x 4096 px at 10 m
    python bench/input_contract.py --size 8192
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from geodino.adapter import prepare
from geodino.engine import EncodeOptions
from geodino.reader import SceneReader
from geodino.scene import open_scene
from geodino.tiling import TilePlan

NAME = "T33UUP_20230501T101031_{}_{}m.tif"


def write_band(path: Path, size: int, pixel: float, seed: int) -> None:
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "uint16", "crs": "EPSG:32633",
               "transform": Affine(pixel, 0, 300000.0, 0, -pixel, 5000000.0), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate"}  # fmt: skip
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            h = min(512, size - row)
            block = 1000 + (np.add.outer(np.arange(row, row + h), np.arange(size)) % 2000) + rng.integers(0, 200, (h, size))
            dst.write(block.astype(np.uint16)[None], window=((row, row + h), (0, size)))


def read_all_tiles(scene, adapter, options: EncodeOptions) -> float:
    plan = TilePlan(*scene.shape, options.tile, options.overlap)
    t0 = time.perf_counter()
    with SceneReader(scene, adapter) as reader:
        for tile in plan.tiles():
            reader.read_tile(tile)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="side of the 10 m bands, pixels")
    args = ap.parse_args()
    options = EncodeOptions(tile=512, overlap=64)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        files = {b: d / NAME.format(b, 10) for b in ("B02", "B03", "B04")}
        for i, path in enumerate(files.values()):
            write_band(path, args.size, 10.0, i)
        files["B11"] = d / NAME.format("B11", 20)
        write_band(files["B11"], args.size // 2, 20.0, 11)
        paths = [str(p) for p in files.values()]

        t0 = time.perf_counter()
        scene, adapter = prepare(open_scene(paths))
        decide = time.perf_counter() - t0
        full = read_all_tiles(scene, adapter, options)
        print(f"scene {args.size}x{args.size} px, B02-B04 at 10 m + B11 at 20 m; preset {adapter.preset}; {adapter.reason}")
        print(f"prepare (detect + {adapter.sampled:,} px statistics read + clipping): {decide:.2f} s; every tile read once: {full:.2f} s;"
              f" ratio {decide / full:.3f}")  # fmt: skip

        direct_scene, direct = prepare(open_scene(paths), bands="B11,B03,B02")
        warped = read_all_tiles(direct_scene, direct, options)
        print(f"with B11 (20 m) resampled bilinearly onto the 10 m grid on the fly: {warped:.2f} s for every tile;"
              f" ratio to the 10 m bands read directly {warped / full:.2f} ({direct.resampling})")  # fmt: skip


if __name__ == "__main__":
    main()
