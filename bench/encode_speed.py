"""Encode speed: a whole-scene encode_scene (reads, stats, stitching, COG) against the model alone on the same tiles.

Generates a square RGB scene, then alternates per round: model-only (the plan's non-empty tiles pre-read
into memory, batched as the engine batches them, only ``extractor(extractor.normalize(x, valid))`` timed)
and end-to-end (``encode_scene`` to a COG). Prints each round's ratio end-to-end / model-only and the median.
Random weights: speed does not depend on values. Targets: CPU ratio <= 1.10; GPU end-to-end >= 85% of model-only.

    python bench/encode_speed.py                                    # CPU, ViT-S/16, 4096 x 4096, tile 512
    python bench/encode_speed.py --profile                          # + one instrumented end-to-end run: where the time goes
    python bench/encode_speed.py --device cuda --precision bf16 --batch-size 32 --size 8192   # adds MFU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import geodino.engine as engine
import geodino.job as job_module
from geodino.engine import EncodeOptions, EncodeResult, encode_scene
from geodino.features import FeatureExtractor
from geodino.job import prepare_job
from geodino.models import build_model
from geodino.reader import SceneReader
from geodino.scene import open_scene
from geodino.stitch import Stitcher
from geodino.synthetic import write_scene
from geodino.writer import FeatureWriter

Batch = tuple[torch.Tensor, torch.Tensor]


def load_batches(scene_path: Path, extractor: FeatureExtractor, options: EncodeOptions) -> tuple[list[Batch], int]:
    """The engine's plan and adapter; every non-empty tile read into memory, grouped ``batch_size`` per batch."""
    job = prepare_job(open_scene(scene_path), extractor, tiling=options.tiling, choice=options.choice)
    with SceneReader(job.scene, job.adapter) as reader:
        full = [d for d in map(reader.read_tile, job.plan.tiles()) if not d.empty]
    groups = [full[i : i + options.batch_size] for i in range(0, len(full), options.batch_size)]
    batches = [(torch.from_numpy(np.stack([d.x for d in g])), torch.from_numpy(np.stack([d.valid for d in g]))) for g in groups]
    return batches, len(full)


def model_only(extractor: FeatureExtractor, batches: list[Batch], sync: Callable[[], None]) -> float:
    """Seconds of ``extractor(extractor.normalize(x, valid))`` over all batches."""
    sync()
    t0 = time.perf_counter()
    for x, valid in batches:
        extractor(extractor.normalize(x, valid))
    sync()
    return time.perf_counter() - t0


def end_to_end(scene_path: Path, out: Path, extractor: FeatureExtractor, options: EncodeOptions) -> tuple[float, EncodeResult]:
    t0 = time.perf_counter()
    res = encode_scene(scene_path, out, extractor, options)
    return time.perf_counter() - t0, res


@contextmanager
def instrumented() -> Iterator[dict[str, float]]:
    """Wrap the engine's stages (module attributes, patched only inside this block) and add up their seconds."""
    acc: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*a: object, **k: object) -> object:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[name] += time.perf_counter() - t0

        return wrapper

    def waited(fn: Callable, *a: object, **k: object) -> Iterator[object]:
        it = fn(*a, **k)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                acc["waiting for tile reads (prefetch)"] += time.perf_counter() - t0
            yield item

    stages = [
        (engine, "open_scene", "open_scene"),
        (job_module, "prepare", "detection and scene-wide stats (prepare)"),
        (engine, "cell_valid", "cell_valid"),
        (Stitcher, "add", "stitcher.add (blend, float64)"),
        (Stitcher, "finish_row", "stitcher.finish_row (incl. write_rows)"),
        (FeatureWriter, "write_rows", "  of which write_rows (temp GeoTIFF)"),
        (FeatureWriter, "__init__", "writer open (temp GeoTIFF)"),
        (FeatureWriter, "finish", "writer.finish (tags + COG + rename)"),
        (FeatureWriter, "_to_cog", "  of which COG copy"),
        (job_module.Job, "record", "run record"),
    ]
    with ExitStack() as stack:
        for owner, attr, name in stages:
            stack.enter_context(mock.patch.object(owner, attr, timed(name, getattr(owner, attr))))
        real_prefetch = engine.prefetch
        stack.enter_context(mock.patch.object(engine, "prefetch", lambda *a, **k: waited(real_prefetch, *a, **k)))
        yield acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dinov3_vits16_lvd1689m")
    ap.add_argument("--size", type=int, default=4096, help="side of the generated square scene, pixels")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense peak of the device at --precision (H100 SXM bf16: 989)")
    ap.add_argument("--profile", action="store_true", help="add one instrumented end-to-end run and print a time breakdown")
    args = ap.parse_args()

    extractor = FeatureExtractor(build_model(args.model, "random"), device=args.device, precision=args.precision)
    cuda = extractor.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    options = EncodeOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, overwrite=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        scene_path = write_scene(Path(tmp) / "scene.tif", args.size)
        t_gen = time.perf_counter() - t0
        out = Path(tmp) / "features.tif"
        batches, n_full = load_batches(scene_path, extractor, options)
        model_only(extractor, batches[:1], sync)  # warm-up
        t_model, t_e2e, results = [], [], []
        for _ in range(args.rounds):
            t_model.append(model_only(extractor, batches, sync))
            t, res = end_to_end(scene_path, out, extractor, options)
            t_e2e.append(t)
            results.append(res)
        breakdown: dict[str, float] = {}
        if args.profile:
            with instrumented() as breakdown:
                t_prof, res_prof = end_to_end(scene_path, out, extractor, options)
            out_mib = out.stat().st_size / 2**20

    res = results[-1]
    ratios = [e / m for e, m in zip(t_e2e, t_model, strict=True)]
    inner = [r.model_seconds / m for r, m in zip(results, t_model, strict=True)]
    med_e, med_m = statistics.median(t_e2e), statistics.median(t_model)
    mpx = args.size**2 / 1e6
    print(
        f"model {args.model}  scene {args.size}x{args.size} (generated in {t_gen:.1f} s)  tile {args.tile} overlap {args.overlap}"
        f"  batch {args.batch_size}  {extractor.device} {args.precision}  threads {torch.get_num_threads()}"
        f"  read threads {options.read_threads}"
    )
    print(f"tiles {res.tiles} ({n_full} encoded, {res.skipped} empty)  feature grid {res.grid_shape}  bands {res.bands}")
    fmt = lambda ts: ", ".join(f"{t:.2f}" for t in ts)  # noqa: E731
    print(f"model-only   median {med_m:.2f} s  {n_full / med_m:.2f} tiles/s  (rounds: {fmt(t_model)})")
    print(f"end-to-end   median {med_e:.2f} s  {n_full / med_e:.2f} tiles/s  {mpx / med_e:.2f} Mpx/s  (rounds: {fmt(t_e2e)})")
    print(f"model time inside end-to-end (EncodeResult.model_seconds): {fmt(r.model_seconds for r in results)} s")
    print(f"ratio end-to-end/model-only per round: {fmt(ratios)}")
    print(f"ratio model_seconds/model-only per round: {fmt(inner)}  (median {statistics.median(inner):.2f})")
    own = [t / r.model_seconds for t, r in zip(t_e2e, results, strict=True)]
    print(f"ratio end-to-end/its own model_seconds per round (same-run, less noisy): {fmt(own)}")
    if cuda:
        sys.path.insert(0, str(Path(__file__).parent))
        from backbone_speed import forward_flops  # type: ignore[import-not-found]

        flops = forward_flops(extractor.spec.arch, args.tile, args.tile) * n_full
        for name, t in (("model-only", med_m), ("end-to-end", med_e)):
            print(f"{name}: {flops / t / 1e12:.1f} TFLOP/s, MFU {flops / t / (args.peak_tflops * 1e12):.1%}")
        print(f"THROUGHPUT end_to_end/model_only = {med_m / med_e:.1%} (target >= 85%)")
    if args.profile:
        print(f"\nprofiled end-to-end run: {t_prof:.2f} s, model {res_prof.model_seconds:.2f} s, output {out_mib:.1f} MiB")
        for name, t in sorted(breakdown.items(), key=lambda kv: -kv[1]):
            print(f"  {name:42s} {t:7.2f} s")
        listed = res_prof.model_seconds + sum(t for k, t in breakdown.items() if not k.startswith(" "))
        print(f"  {'rest (batching, numpy/permute, loop)':42s} {t_prof - listed:7.2f} s")
    print(f"RATIO end_to_end/model_only = {statistics.median(ratios):.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
