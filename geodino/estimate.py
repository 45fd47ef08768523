"""Where the time of an ``encode`` run would go, measured on this machine (``geodino info --estimate``).

:func:`time_estimate` times the three streams of a run separately and adds them up for the scene's tile plan:

* **model**: the registered backbone built as ``encode`` builds it (last block, fp32), but with RANDOM weights
  (the time of a forward pass does not depend on the values), on the chosen device; one warm-up pass of
  ``batch_size`` random tiles of ``tile`` px, then one timed pass; seconds per tile = pass / ``batch_size``.
* **read**: a few real tiles of the scene (spread over the plan) read and adapted through
  :class:`~geodino.reader.SceneReader` as ``encode`` reads them, after one untimed read that opens the files.
* **write**: the feature bytes each tile adds to the output (cells x channels x 4 bytes of float32, over the
  plan's tiles) at a compression rate measured once per process: :func:`write_rate`, the TIFF predictor and
  ZSTD of 8 MiB of random float32 (incompressible: an upper bound) in one thread.

Reads run ahead in ``read_threads`` threads and the writer in its own thread, both overlapping the model, so a
run goes at the pace of its slowest stream: seconds per tile = max(model, I/O) with I/O = max(read /
``read_threads``, write); ``bound`` says which. Blending and the COG's finishing after the last tile are not in
the estimate (``encode --profile`` measures them).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from geodino.device import resolve_device
from geodino.errors import InputError
from geodino.features import FeatureExtractor, feature_card
from geodino.job import BandChoice, Job, Tiling, prepare_job
from geodino.models import build_model, get_spec
from geodino.models.specs import WeightsSpec
from geodino.reader import SceneReader
from geodino.tiling import TilePlan

#: Bytes compressed once to measure the writer's rate (:func:`write_rate`).
RATE_SAMPLE_BYTES = 8 * 2**20
#: Real tiles read to time the reads (fewer when the plan is smaller).
TILES_READ = 4


@functools.cache
def write_rate() -> float:
    """Bytes of float32 features per second through the TIFF predictor and ZSTD (:mod:`geodino.tiffcodec`), one
    thread, measured once per process on 8 MiB of random float32 (random values: the slowest, largest case)."""
    from geodino.tiffcodec import compress, predicted_tiles

    block = np.random.default_rng(0).random((RATE_SAMPLE_BYTES // (4 * 128 * 512), 128, 512), dtype=np.float32)
    t0 = time.perf_counter()
    pred = np.asarray(predicted_tiles(block, 128))
    for b in range(pred.shape[0]):
        for tx in range(pred.shape[1]):
            compress(pred[b, tx])
    return block.nbytes / max(time.perf_counter() - t0, 1e-9)


def model_seconds_per_tile(extractor: FeatureExtractor, tile: int, batch_size: int) -> float:
    """Seconds per tile of one forward pass of ``batch_size`` random tiles of ``tile`` px, after one warm-up pass."""
    x = torch.rand(batch_size, extractor.in_bands, tile, tile)
    valid = torch.ones(batch_size, tile, tile, dtype=torch.bool)

    def once() -> float:
        t0 = time.perf_counter()
        extractor(extractor.normalize(x, valid))  # returns tensors on the CPU: the device has finished
        if extractor.device.type == "cuda":
            torch.cuda.synchronize(extractor.device)
        return time.perf_counter() - t0

    once()
    return once() / batch_size


def read_seconds_per_tile(job: Job, n: int = TILES_READ) -> tuple[float, int]:
    """Mean seconds to read and adapt one tile of ``job`` (``n`` tiles spread over the plan, after one untimed read
    that opens the files) and how many were timed."""
    tiles = list(job.plan.tiles())
    picks = [tiles[int(i)] for i in np.unique(np.linspace(0, len(tiles) - 1, min(n, len(tiles))).round().astype(int))]
    with SceneReader(job.scene, job.adapter) as reader:
        reader.read_tile(picks[0])
        t0 = time.perf_counter()
        for t in picks:
            reader.read_tile(t)
        return (time.perf_counter() - t0) / len(picks), len(picks)


def time_estimate(
    paths: str | Path | Sequence[str | Path], model: str = "dinov3_vitl16_sat493m", *, tiling: Tiling = Tiling(),
    choice: BandChoice = BandChoice(), device: str = "auto",
) -> dict[str, object]:  # fmt: skip
    """Seconds per tile of the model, the reads and the writes of ``geodino encode`` with these options, the total
    for the scene's tile plan and whether the run would be ``model-bound`` or ``I/O-bound`` (see the module).
    Raises :class:`~geodino.errors.InputError` where encode would refuse the scene or the options."""
    spec = get_spec(model)
    card = feature_card(spec.arch.depth, spec.arch.embed_dim, spec.bands, "-1")
    job = prepare_job([str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)], card, tiling=tiling, choice=choice)
    dev = resolve_device(device)
    extractor = FeatureExtractor(build_model(spec, "random"), "-1", str(dev), "fp32")
    model_s = model_seconds_per_tile(extractor, tiling.tile, tiling.batch_size)
    read_s, n_read = read_seconds_per_tile(job)
    rows, cols = job.grid_shape
    tiles = len(job.plan)
    bytes_per_tile = rows * cols * job.dim * 4 / tiles
    rate = write_rate()
    write_s = bytes_per_tile / rate
    io_s = max(read_s / max(tiling.read_threads, 1), write_s)
    per_tile = max(model_s, io_s)
    return {
        "model": spec.name, "weights": "random (timing only)", "device": str(dev), "precision": "fp32",
        "batch_size": tiling.batch_size, "tile": tiling.tile, "tiles": tiles, "model_s_per_tile": model_s,
        "read_s_per_tile": read_s, "tiles_read": n_read, "read_threads": tiling.read_threads,
        "write_bytes_per_tile": bytes_per_tile, "write_mb_per_s": rate / 1e6, "write_s_per_tile": write_s,
        "io_s_per_tile": io_s, "seconds_per_tile": per_tile, "total_s": per_tile * tiles,
        "bound": "model-bound" if model_s >= io_s else "I/O-bound",
    }  # fmt: skip


def estimate_lines(est: dict[str, object]) -> list[tuple[str, str]]:
    """The estimate as ``(label, text)`` lines of ``geodino info``."""
    e = cast("dict[str, Any]", est)
    ms = lambda s: f"{s * 1e3:.3g} ms per tile"  # noqa: E731
    return [
        ("model", f"{ms(e['model_s_per_tile'])} on {e['device']} (batch {e['batch_size']} of {e['tile']} px, {e['model']}, "
                  "random weights: timing only)"),
        ("read", f"{ms(e['read_s_per_tile'])} ({e['tiles_read']} tiles read and adapted; {e['read_threads']} threads read ahead)"),
        ("write", f"{ms(e['write_s_per_tile'])} ({e['write_bytes_per_tile'] / 2**20:,.2f} MiB of float32 at "
                  f"{e['write_mb_per_s']:,.0f} MB/s, ZSTD measured here)"),
        ("estimate", f"~{e['total_s']:,.1f} s for {e['tiles']} tiles ({ms(e['seconds_per_tile'])}): {e['bound']} "
                     "(blending and finishing the COG not included)"),
    ]  # fmt: skip


__all__ = ["estimate_lines", "model_seconds_per_tile", "read_seconds_per_tile", "time_estimate", "write_rate"]


def check_memory(estimate: dict[str, int], what: str) -> None:
    """Refuse a job whose :func:`estimate_memory` exceeds the memory available now."""
    import psutil

    need, free = sum(estimate.values()), psutil.virtual_memory().available
    if need > free:
        parts = ", ".join(f"{k} {v / 2**30:.1f} GiB" for k, v in estimate.items())
        raise InputError(
            f"{what} needs about {need / 2**30:.1f} GiB ({parts}) but {free / 2**30:.1f} GiB are available: "
            "use a smaller --tile or --batch-size"
        )


def n_params(spec: WeightsSpec) -> int:
    """Parameters of a weights spec's backbone (counted on the meta device: nothing allocated)."""
    from geodino.models.vit import DinoVisionTransformer

    with torch.device("meta"):
        return sum(p.numel() for p in DinoVisionTransformer(spec.arch).parameters())


def estimate_memory(
    plan: TilePlan, dim: int, batch_size: int, n_params: int, in_bands: int = 3, stride: int | None = None
) -> dict[str, int]:
    """Rough peak bytes of a job, by part (independent of the scene's height). ``dim``: channels stitched at
    ``stride`` pixels (default the patch: features; 1 for prediction rasters)."""
    s = stride or plan.patch
    t, cols = plan.tile // s, plan.grid_shape[1] * plan.patch // s
    tokens = plan.tile_cells**2
    return {
        "stitch buffer": (t * (cols + t) * (dim + 1)) * 8,
        "tiles read ahead": max(8, 2 * batch_size) * in_bands * plan.tile**2 * 5,
        "model weights": n_params * 4,
        "activations": batch_size * tokens * dim * 4 * 12,
    }


def job_memory(job: Job, n_params: int = 0) -> dict[str, int]:
    """:func:`estimate_memory` of a job (``n_params``: the model's parameters, if known)."""
    return estimate_memory(job.plan, job.dim, job.tiling.batch_size, n_params, len(job.card.bands), job.stride)


@dataclass
class Stages:
    """Seconds per stage of a streamed run: the main thread waiting for tiles (``read``: reads run ahead in
    threads), in the model, blending and handing rows to the writer (``blend``, back-pressure included); the writer's
    busy time (``write``: staging rows for a stream's compression pool, or a temporary GeoTIFF's writer thread); and
    ``finish``: from the end of the last tile's model call to the end of the run (the last rows blended, the last
    block rows compressed, the file closed)."""

    read: float = 0.0
    model: float = 0.0
    blend: float = 0.0
    write: float = 0.0
    finish: float = 0.0
    last_tile: float = field(default=0.0, repr=False)  # perf_counter() when the last model call ended

    def end(self) -> None:
        """The run is done: ``finish`` is the time since the last tile."""
        self.finish = time.perf_counter() - self.last_tile if self.last_tile else 0.0

    @property
    def bound(self) -> str:
        """``model-bound`` when the model took most of the main thread's time, else ``I/O-bound``."""
        return "model-bound" if self.model >= self.read + self.blend + self.finish else "I/O-bound"

    def record(self) -> dict[str, object]:
        return {k: round(v, 3) for k, v in vars(self).items() if k != "last_tile"} | {"bound": self.bound}

    def line(self) -> str:
        """``model 0.8 s, read wait 0.1 s, blend 0.7 s, writer 1.0 s, finish 1.5 s: I/O-bound``."""
        return (f"model {self.model:.1f} s, read wait {self.read:.1f} s, blend {self.blend:.1f} s, writer {self.write:.1f} s, "
                f"finish {self.finish:.1f} s: {self.bound}")  # fmt: skip
