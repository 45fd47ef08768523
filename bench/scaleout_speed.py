"""Scale-out: a block-wise Zarr run on a local dask.distributed cluster of 2 worker processes against 1.

Generates a square RGB scene and runs ``encode_to_zarr`` (ViT-S/16, random weights, tile 512, overlap 64,
blocks of 128x128 cells) twice in this one run: on a local cluster of 1 worker process, then of 2, each
worker with 1 dask thread and ``--threads`` torch threads (default 1: on this 2-core machine each worker
gets a core, as each would get a GPU on a cluster). Times include starting the cluster. The two stores
must be equal bit for bit. Target: speedup (1 worker / 2 workers) >= 1.6.

    python bench/scaleout_speed.py                   # 4096 x 4096
    python bench/scaleout_speed.py --context         # also 1 worker with every core's torch threads, and
                                                     # the streaming single-process encode of the same scene
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from geodino.blocks import BlockPlan, ModelRef
from geodino.cluster import encode_to_zarr
from geodino.engine import EncodeOptions, encode_scene
from geodino.scene import open_scene
from geodino.synthetic import write_scene
from geodino.tiling import TilePlan


def run(scene: Path, out: Path, ref: ModelRef, options: EncodeOptions, chunk: int, workers: int, threads: int) -> float:
    t0 = time.perf_counter()
    encode_to_zarr(scene, out, ref, options, chunk, workers=workers, threads=threads)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dinov3_vits16_lvd1689m")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--context", action="store_true", help="also time 1 worker with all cores' torch threads")
    args = ap.parse_args()

    ref = ModelRef(args.model, "random", device="cpu")
    options = EncodeOptions(tile=args.tile, overlap=args.overlap, fmt="zarr", overwrite=True)
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_scene(Path(tmp) / "scene.tif", args.size)
        blocks = BlockPlan(TilePlan(*open_scene(scene).shape, options.tile, options.overlap), args.chunk)
        print(f"scene {args.size}x{args.size}, {args.model}, tile {args.tile} overlap {args.overlap}")
        print(f"  {len(blocks)} blocks of {args.chunk}x{args.chunk} cells")
        print(f"  tiles: {len(blocks.plan)} in the plan, {blocks.tiles_run()} run over the blocks (halos); cores {os.cpu_count()}")
        one = run(scene, Path(tmp) / "one.zarr", ref, options, args.chunk, 1, args.threads)
        two = run(scene, Path(tmp) / "two.zarr", ref, options, args.chunk, 2, args.threads)
        a = xr.open_zarr(Path(tmp) / "one.zarr")["features"].values
        b = xr.open_zarr(Path(tmp) / "two.zarr")["features"].values
        same = np.array_equal(a, b, equal_nan=True)
        print(f"  1 worker  x {args.threads} torch thread: {one:7.1f} s")
        print(f"  2 workers x {args.threads} torch thread: {two:7.1f} s")
        print(f"  speedup 2 workers / 1 worker = {one / two:.2f}  (target >= 1.6); stores equal bit for bit: {same}")
        if args.context:
            cores = os.cpu_count() or 1
            ctx = run(scene, Path(tmp) / "ctx.zarr", ref, options, args.chunk, 1, cores)
            print(f"  context: 1 worker x {cores} torch threads: {ctx:7.1f} s; 2 workers x {args.threads} / that = {ctx / two:.2f}")
            t0 = time.perf_counter()
            encode_scene(scene, Path(tmp) / "stream.tif", ref.extractor(), EncodeOptions(tile=args.tile, overlap=args.overlap))
            stream = time.perf_counter() - t0
            print(f"  context: streaming encode_scene in this process ({torch.get_num_threads()} torch threads, no halos): {stream:7.1f} s")


if __name__ == "__main__":
    main()
