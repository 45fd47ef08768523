"""Canopy-height speed: whole-scene predict_scene (reads, pixel-resolution blending, COG) against the model alone.

Generates a square RGB scene and builds the tiny CHMv2 head (``geodino_tiny_chmv2`` on the tiny backbone,
random weights), then alternates per round: model-only (the plan's non-empty tiles pre-read into memory,
batched as the engine batches them, only ``predictor(predictor.normalize(x, valid))`` timed) and end-to-end
(``predict_scene`` to a float32 COG). Target on CPU: end-to-end / model-only <= 1.15, i.e. blending every
pixel must not dominate.

    python bench/canopy_speed.py                       # CPU, 4096 x 4096, tile 512, overlap 64
    python bench/canopy_speed.py --head dinov3_vitl16_chmv2 --device cuda --precision bf16 --size 8192
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from encode_speed import load_batches, model_only  # type: ignore[import-not-found]

from geodino.engine import EncodeOptions
from geodino.heads.chmv2 import build_canopy_model
from geodino.predict import CanopyPredictor, predict_scene
from geodino.synthetic import write_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", default="geodino_tiny_chmv2")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--workers", type=int, default=None, help="reader threads (default: the engine's)")
    args = ap.parse_args()

    predictor = CanopyPredictor(build_canopy_model(args.head, "random"), device=args.device, precision=args.precision)
    sync = torch.cuda.synchronize if predictor.device.type == "cuda" else (lambda: None)
    options = EncodeOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, overwrite=True)
    if args.workers is not None:
        options = dataclasses.replace(options, read_threads=args.workers)
    t_model, t_e2e, inner = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_scene(Path(tmp) / "scene.tif", args.size)
        batches, n_full = load_batches(scene, predictor, options)  # type: ignore[arg-type]
        model_only(predictor, batches[:1], sync)  # warm-up
        for i in range(args.rounds):  # ABBA order: a slow drift of the machine's speed cancels within each pair of rounds
            if i % 2 == 0:
                t_model.append(model_only(predictor, batches, sync))
            t0 = time.perf_counter()
            res = predict_scene(scene, Path(tmp) / "chm.tif", predictor, tiling=options.tiling, overwrite=True)
            t_e2e.append(time.perf_counter() - t0)
            inner.append(res.model_seconds)
            if i % 2 == 1:
                t_model.append(model_only(predictor, batches, sync))
    fmt = lambda ts: ", ".join(f"{t:.2f}" for t in ts)  # noqa: E731
    med_m, med_e = statistics.median(t_model), statistics.median(t_e2e)
    print(f"head {args.head}  scene {args.size}x{args.size}  tile {args.tile} overlap {args.overlap}  batch {args.batch_size}"
          f"  {predictor.device} {args.precision}  threads {torch.get_num_threads()}  reader threads {options.read_threads}"
          f"  tiles {n_full}")  # fmt: skip
    print(f"model-only   median {med_m:.2f} s  {n_full / med_m:.2f} tiles/s  (rounds: {fmt(t_model)})")
    print(
        f"end-to-end   median {med_e:.2f} s  {n_full / med_e:.2f} tiles/s  {args.size**2 / 1e6 / med_e:.2f} Mpx/s  (rounds: {fmt(t_e2e)})"
    )
    print(f"ratio per round: {fmt(e / m for e, m in zip(t_e2e, t_model, strict=True))}; end-to-end / its own model time: "
          f"{fmt(e / i for e, i in zip(t_e2e, inner, strict=True))}")  # fmt: skip
    print(f"RATIO end_to_end/model_only = {statistics.median(e / m for e, m in zip(t_e2e, t_model, strict=True)):.2f} (target <= 1.15)")


if __name__ == "__main__":
    main()
