"""Peak memory of encode_scene against scene size: the peak RSS should hardly grow from a small to a large scene.

Generates two square RGB scenes (default 2048 and 8192 pixels) in a temporary folder, then encodes each in a
fresh subprocess with the tiny test model (random weights, CPU) to a COG; the child reports its own peak RSS
(``ru_maxrss``) after the encode. Prints both peaks and their ratio; exits 1 if the ratio misses the target.

    python bench/memory.py                      # 2048 vs 8192, tile 512, overlap 64, target ratio <= 1.25
    python bench/memory.py --small 1024 --large 4096

From a test: ``from memory import measure`` (bench/ on ``sys.path``) then ``measure(2048, tmp_path)`` -> MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "geodino_tiny_mlp"


def scene_path(size: int, workdir: Path) -> Path:
    """The generated ``size x size`` scene in ``workdir`` (written once, reused after)."""
    from geodino.synthetic import write_scene

    path = Path(workdir) / f"scene_{size}.tif"
    if not path.exists():
        write_scene(path, size)
    return path


def run_child(size: int, workdir: Path, tile: int = 512, overlap: int = 64, model: str = MODEL) -> dict[str, float]:
    """Encode the ``size`` scene of ``workdir`` in a fresh interpreter; its JSON report (peaks in KiB)."""
    scene = scene_path(size, workdir)
    cmd = [sys.executable, __file__, "--child", str(scene), str(Path(workdir) / f"features_{size}.tif"), "--model", model]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # bench.standin:vitl from the checkout
    proc = subprocess.run([*cmd, "--tile", str(tile), "--overlap", str(overlap)], capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {size} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(size: int, workdir: Path) -> float:
    """Peak RSS in MiB of encoding a generated ``size x size`` scene (generated in ``workdir`` first, not counted)."""
    return run_child(size, workdir)["peak_kib"] / 1024


def child(scene: str, out: str, tile: int, overlap: int, model: str = MODEL) -> None:
    """Encode ``scene`` to ``out`` and print ``{"peak_kib", "before_kib", "seconds", ...}`` as JSON on stdout."""
    from geodino.allocator import limit_malloc_arenas
    from geodino.engine import EncodeOptions, encode_scene
    from geodino.features import FeatureExtractor
    from geodino.models import build_model

    limit_malloc_arenas()  # as the CLI does

    if ":" in model:  # a model of one's own, e.g. bench.standin:vitl (ViT-L/16 output shapes, 1024 features)
        from geodino.tilemodel import load_factory

        extractor = load_factory(model)
    else:
        extractor = FeatureExtractor(build_model(model, "random"), device="cpu")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = encode_scene(scene, out, extractor, EncodeOptions(tile=tile, overlap=overlap, overwrite=True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    report = {"peak_kib": peak, "before_kib": before, "seconds": res.seconds, "tiles": res.tiles, "out_bytes": Path(out).stat().st_size}
    print(json.dumps(report))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2048)
    ap.add_argument("--large", type=int, default=8192)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--target", type=float, default=1.25)
    ap.add_argument("--model", default=MODEL, help="a registered model (random weights) or module:factory, e.g. bench.standin:vitl")
    ap.add_argument("--child", nargs=2, metavar=("SCENE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.tile, args.overlap, args.model)
        return 0

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for size in (args.small, args.large):
            scene_path(size, Path(tmp))
        t_gen = time.perf_counter() - t0
        reports = {}
        for size in (args.small, args.large):
            t0 = time.perf_counter()
            reports[size] = run_child(size, Path(tmp), args.tile, args.overlap, args.model)
            reports[size]["wall"] = time.perf_counter() - t0
    print(f"model {args.model} (random, cpu)  tile {args.tile} overlap {args.overlap}  COG output  scenes generated in {t_gen:.1f} s")
    for size, r in reports.items():
        print(
            f"{size:>6} x {size:<6} tiles {r['tiles']:>4}  peak RSS {r['peak_kib'] / 1024:7.1f} MiB"
            f"  (before encode {r['before_kib'] / 1024:.1f} MiB)  encode {r['seconds']:.1f} s, child {r['wall']:.1f} s"
            f"  output {r['out_bytes'] / 2**20:.1f} MiB"
        )
    ratio = reports[args.large]["peak_kib"] / reports[args.small]["peak_kib"]
    print(f"total {time.perf_counter() - t_start:.1f} s")
    print(f"RATIO peak_rss({args.large})/peak_rss({args.small}) = {ratio:.2f} (target <= {args.target:.2f})")
    return 0 if ratio <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
