"""Pipeline speed against its own I/O floor, measured in one run (issue #13).

The stand-in model (``bench/standin.py``: ViT-L/16 output shapes, 1024 features per patch, costs almost
nothing) runs through the real CLI path (``geodino encode SCENE OUT --model bench.standin:vitl``) over a
generated scene, in a fresh process pinned to 1 or 2 cores. The I/O floor of the same job is measured in
the same run, on the same cores: decode the scene once, and write a raster of the feature grid's shape
(random values drawn before the clock starts; COG cases: a GeoTIFF with ZSTD level 1, predictor 3, 128-px
blocks, all cores, float16 as NBITS=16; Zarr: the same array into a Zarr store of geodino's chunk shape). One line per case::

    pipeline <format> <dtype> <cores> cores: <tiles/s> tiles/s = <ratio> x the I/O floor

Targets (issue #13): float32 COG, float16 COG and Zarr <= 1.5x their floor; 2 cores >= 1.6x 1 core.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOOR = r"""
import sys, time
import numpy as np, rasterio
scene, out, fmt, dtype, rows, cols, dim = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], *map(int, sys.argv[5:8])
block = np.random.default_rng(0).standard_normal((dim, 128, cols), dtype=np.float32)  # drawn before the clock starts
if dtype == "float16":
    block = block.astype(np.float16).astype(np.float32)
t0 = time.perf_counter()
with rasterio.open(scene) as ds:
    ds.read()
if fmt == "cog":
    opts = {"NBITS": "16"} if dtype == "float16" else {}
    with rasterio.open(out, "w", driver="GTiff", height=rows, width=cols, count=dim, dtype="float32", tiled=True,
                       blockxsize=128, blockysize=128, compress="ZSTD", zstd_level=1, predictor=3, interleave="band",
                       num_threads="ALL_CPUS", BIGTIFF="IF_SAFER", **opts) as dst:
        for r0 in range(0, rows, 128):
            h = min(128, rows - r0)
            dst.write(block[:, :h], window=((r0, r0 + h), (0, cols)))
else:  # the same array into a Zarr store, zarr's default compressor, whole chunks (geodino's chunk shape)
    import zarr
    from geodino.zarrstore import chunks_of
    arr = zarr.open_array(out, mode="w", shape=(dim, rows, cols), chunks=chunks_of(dim, 32, 256), dtype=dtype, zarr_format=2,
                          config={"write_empty_chunks": True})
    for r0 in range(0, rows, 128):
        h = min(128, rows - r0)
        arr[:, r0 : r0 + h, :] = block[:, :h].astype(dtype)
print(time.perf_counter() - t0)
"""


def pinned(cores: int) -> list[str]:
    """``taskset`` to the first ``cores`` CPUs, when there is one."""
    return ["taskset", "-c", ",".join(str(i) for i in range(cores))] if cores < (os.cpu_count() or 1) else []


def env(cores: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(cores), "GDAL_NUM_THREADS": str(cores)}


def floor_seconds(scene: Path, tmp: Path, fmt: str, dtype: str, grid: tuple[int, int], cores: int) -> float:
    out = tmp / f"floor.{'tif' if fmt == 'cog' else 'zarr'}"
    argv = [*pinned(cores), sys.executable, "-c", FLOOR, str(scene), str(out), fmt, dtype, *map(str, grid), "1024"]
    out = subprocess.run(argv, capture_output=True, text=True, env=env(cores), check=True).stdout
    return float(out.strip().splitlines()[-1])


def pipeline_seconds(scene: Path, tmp: Path, fmt: str, dtype: str, cores: int, tile: int, overlap: int) -> tuple[float, float]:
    """Wall seconds of the CLI run, and its seconds after the last tile (``finish`` of its summary line)."""
    out = tmp / f"f.{'tif' if fmt == 'cog' else 'zarr'}"
    argv = [*pinned(cores), sys.executable, "-m", "geodino.cli", "encode", str(scene), str(out), "--model", "bench.standin:vitl",
            "--format", fmt, "--dtype", dtype, "--tile", str(tile), "--overlap", str(overlap), "--overwrite"]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=env(cores), check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    found = re.search(r"finish ([0-9.]+) s", res.stdout)
    return wall, float(found.group(1)) if found else float("nan")


def startup_seconds(cores: int, fmt: str) -> float:
    """A fresh process importing what an encode run of ``fmt`` imports: not part of the pipeline, subtracted from its time."""
    imports = "import geodino.cli, geodino.engine, geodino.runs, geodino.streams, torch, rasterio, bench.standin"
    if fmt == "zarr":
        imports += ", geodino.cluster, dask.array, xarray, rioxarray, zarr"
    argv = [*pinned(cores), sys.executable, "-c", imports]
    t0 = time.perf_counter()
    subprocess.run(argv, env=env(cores), check=True, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="side of the generated scene, pixels")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="cog:float32,cog:float16,zarr:float32", help="format:dtype,...")
    ap.add_argument("--cores", default="1,2")
    args = ap.parse_args()
    from geodino.synthetic import write_scene
    from geodino.tiling import TilePlan

    plan = TilePlan(args.size, args.size, args.tile, args.overlap)
    cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    cores_list = [int(c) for c in args.cores.split(",") if int(c) <= (os.cpu_count() or 1)]
    with tempfile.TemporaryDirectory(dir=ROOT.parent) as d:
        tmp = Path(d)
        scene = write_scene(tmp / "scene.tif", args.size)
        print(f"scene {args.size}x{args.size}, {len(plan)} tiles of {args.tile} (overlap {args.overlap}), "
              f"features {plan.grid_shape[0]}x{plan.grid_shape[1]}x1024; median of {args.rounds} rounds")  # fmt: skip
        rates: dict[tuple[str, str, int], float] = {}
        for cores in cores_list:
            for fmt, dtype in cases:
                start = statistics.median(startup_seconds(cores, fmt) for _ in range(2))
                ratios, pipes, floors, tails = [], [], [], []
                for _ in range(args.rounds):  # alternating: a drift of the machine's speed hits both
                    f = floor_seconds(scene, tmp, fmt, dtype, plan.grid_shape, cores)
                    wall, tail = pipeline_seconds(scene, tmp, fmt, dtype, cores, args.tile, args.overlap)
                    p = wall - start
                    floors.append(f), pipes.append(p), ratios.append(p / f), tails.append(tail / p)
                p, f, r = statistics.median(pipes), statistics.median(floors), statistics.median(ratios)
                rates[(fmt, dtype, cores)] = len(plan) / p
                cs = f"{cores} core{'s' if cores != 1 else ''}"
                print(f"pipeline {fmt} {dtype} {cs}: {len(plan) / p:.1f} tiles/s = {r:.2f} x the I/O floor "
                      f"(pipeline {p:.2f} s, floor {f:.2f} s, after the last tile {100 * statistics.median(tails):.0f}% of the run, "
                      f"process start {start:.2f} s not counted)")  # fmt: skip
        if len(cores_list) > 1:
            for fmt, dtype in cases:
                lo, hi = rates[(fmt, dtype, cores_list[0])], rates[(fmt, dtype, cores_list[-1])]
                print(f"scaling {fmt} {dtype}: {cores_list[-1]} cores / {cores_list[0]} core = {hi / lo:.2f}x")


if __name__ == "__main__":
    main()
