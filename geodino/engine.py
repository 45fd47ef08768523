"""The encoding job: the only place that knows the order of the stages.

``Scene -> TilePlan -> SceneReader (threads) -> FeatureExtractor -> Stitcher -> FeatureWriter``.
:func:`encode_scene` is what the CLI's ``encode``, the demo, the benchmarks and notebooks call.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import rasterio
import torch

import geodino
from geodino.adapter import BandAdapter, prepare
from geodino.errors import GeodinoError, InputError
from geodino.features import FeatureExtractor, Tokens
from geodino.outputs import OutputSet, check_targets, own_outputs
from geodino.pca import PCA, CellSampler, fit_pca
from geodino.reader import SceneReader, TileData, cell_valid, prefetch
from geodino.scene import Scene, open_scene
from geodino.stitch import Stitcher
from geodino.tiling import TilePlan, feature_geobox
from geodino.tokens import TokenCollector, tokens_path
from geodino.writer import GDAL_CACHE_MB, FeatureWriter, check_format

if TYPE_CHECKING:
    from geodino.models.specs import WeightsSpec

#: ``progress(tiles_done, tiles_total)``
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EncodeOptions:
    """How to tile, batch and write. Tile and overlap are in pixels, multiples of 16."""

    tile: int = 512
    overlap: int = 64
    batch_size: int = 4
    fmt: str = "cog"
    dtype: str = "float32"
    pca: int | None = None
    tokens: bool = False
    overwrite: bool = False
    sensor: str | None = None
    bands: str | None = None
    read_threads: int = 2
    blend_floor: float = 0.1
    gsd: float | None = None  # resample the scene to this many metres per pixel before tiling
    allow_clipping: bool = False  # run even when more than half of a band's valid pixels clip


@dataclass
class EncodeResult:
    out: Path
    grid_shape: tuple[int, int]
    bands: int
    tiles: int
    skipped: int
    seconds: float
    model_seconds: float
    adapter: BandAdapter
    metadata: dict[str, object] = field(repr=False)
    pca: PCA | None = None
    tokens_path: Path | None = None


def band_names(layers: list[int], dim: int, pca: int | None) -> list[str]:
    """``L<block>_<channel>`` for features of each layer, or ``PC1..PCk``."""
    if pca:
        return [f"PC{i + 1}" for i in range(pca)]
    return [f"L{layer}_{j:04d}" for layer in layers for j in range(dim)]


def encode_targets(out: str | Path, options: EncodeOptions) -> dict[str, Path | None]:
    """The outputs of an encode run by role: the features and, with ``tokens``, their sidecar."""
    return {"features": Path(out), "tokens": tokens_path(Path(out)) if options.tokens else None}


def check_outputs(out: str | Path, options: EncodeOptions, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse, before any work, bad options or outputs (see :func:`~geodino.outputs.check_targets`)."""
    check_options(options)
    return check_targets(encode_targets(out, options), inputs, options.overwrite)[0].path


def check_options(options: EncodeOptions) -> None:
    """Range checks of every option, before any work."""
    check_format(options.fmt, options.dtype)
    if options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size}: give at least 1")
    if options.read_threads < 0:
        raise InputError(f"--read-threads {options.read_threads}: give 0 (read in the main thread) or more")
    if options.pca is not None and options.pca < 1:
        raise InputError(f"--pca {options.pca}: give at least 1 component")
    if not math.isfinite(options.blend_floor) or not 0 < options.blend_floor <= 1:
        raise InputError(f"blend floor {options.blend_floor}: give a value in (0, 1]")


def make_plan(scene: Scene, options: EncodeOptions, patch: int = 16) -> TilePlan:
    h, w = scene.shape
    return TilePlan(h, w, options.tile, options.overlap, patch)


def prepare_scene(scene: Scene, n_inputs: int, options: EncodeOptions) -> tuple[Scene, BandAdapter]:
    """:func:`~geodino.adapter.prepare` with the run's options (sensor, bands, gsd, allow_clipping): the scene the
    model sees and its adapter, once per run."""
    return prepare(scene, n_inputs, options.sensor, options.bands, options.gsd, options.allow_clipping)


def encode_scene(
    scene: Scene | str | Path | list[str],
    out: str | Path,
    extractor: FeatureExtractor,
    options: EncodeOptions = EncodeOptions(),
    progress: Progress | None = None,
    adapter: BandAdapter | None = None,
    outputs: OutputSet | None = None,
) -> EncodeResult:
    """Encode a whole scene into a georeferenced feature raster at ``out`` (COG or Zarr).

    Output: ``(bands, ceil(H/16), ceil(W/16))`` with the scene's CRS and transform x scale(16), NaN nodata.
    ``adapter`` defaults to :func:`~geodino.adapter.prepare` with ``options`` (sensor, bands, gsd, allow_clipping);
    a given ``adapter`` must come with the scene :func:`~geodino.adapter.prepare` returned.
    ``outputs``: the run's :class:`~geodino.outputs.OutputSet` (its owner commits); default one of its own,
    committed here. Nothing changes at ``out`` (or beside it) if anything fails.
    """
    check_options(options)
    if not isinstance(scene, Scene):
        scene = open_scene(scene)
    # GDAL's block cache defaults to 5% of RAM and would fill with the scene's and the output's blocks:
    # bounded, memory stays flat with scene size (statistics read and reader threads included).
    with (
        rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB),
        own_outputs(outputs, encode_targets(out, options), scene.paths, options.overwrite) as outs,
    ):
        return _encode(scene, outs, extractor, options, progress, adapter)


def _encode(
    scene: Scene,
    outs: OutputSet,
    extractor: FeatureExtractor,
    options: EncodeOptions,
    progress: Progress | None,
    adapter: BandAdapter | None,
) -> EncodeResult:
    t_start = time.perf_counter()
    if adapter is None:
        scene, adapter = prepare_scene(scene, getattr(extractor, "in_bands", 3), options)
    plan = make_plan(scene, options, extractor.patch)
    fgeo = feature_geobox(scene.geobox, plan.patch)
    sampler = CellSampler() if options.pca else None
    tokens = TokenCollector(scene.geobox, plan) if options.tokens else None
    with FeatureWriter(outs.temp("features"), fgeo, extractor.dim, options.fmt, options.dtype) as writer:
        stitcher = Stitcher(plan, extractor.dim, writer.write_rows, options.blend_floor)

        def on_tile(d: TileData, out: np.ndarray, cv: np.ndarray, cls: torch.Tensor | None, storage: torch.Tensor | None) -> None:
            stitcher.add(d.tile, out, cv)
            if sampler is not None:
                sampler.add(out, cv)
            if tokens is not None and cls is not None and storage is not None:
                tokens.add(d.tile, cls.numpy(), storage.numpy())

        model_seconds, skipped = stream_tiles(scene, plan, adapter, extractor, options, on_tile, stitcher.finish_row, progress)
        pca = fit_pca(sampler.sample(), options.pca) if sampler is not None and options.pca else None
        meta = run_metadata(scene, plan, adapter, extractor, options, pca, skipped)
        names = band_names(extractor.layers, extractor.embed_dim, options.pca)
        writer.finish(meta, names, pca.transform if pca is not None else None)
    tokens_out = None
    if tokens is not None and tokens.write(outs.temp("tokens"), meta) is not None:
        tokens_out = outs.path("tokens")
    return EncodeResult(
        outs.path("features"),
        plan.grid_shape,
        len(names),
        len(plan),
        skipped,
        time.perf_counter() - t_start,
        model_seconds,
        adapter,
        meta,
        pca,
        tokens_out,
    )


#: ``on_tile(data, out (t, t, C), cell_valid (t, t), cls, storage)`` for each non-empty tile, in plan order.
TileSink = Callable[[TileData, np.ndarray, np.ndarray, "torch.Tensor | None", "torch.Tensor | None"], None]


class TileModel(Protocol):
    """What :func:`stream_tiles` runs: a feature extractor or a predictor (``out_stride`` optional, default the patch)."""

    def normalize(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor: ...
    def __call__(self, x: torch.Tensor) -> Tokens: ...


def stream_tiles(
    scene: Scene,
    plan: TilePlan,
    adapter: BandAdapter,
    extractor: TileModel,
    options: EncodeOptions,
    on_tile: TileSink,
    on_row_done: Callable[[], None],
    progress: Progress | None = None,
) -> tuple[float, int]:
    """Read every tile of ``plan`` ahead in threads, run non-empty ones through ``extractor`` in batches,
    and hand each output to ``on_tile`` in plan order; ``on_row_done`` after each tile row.

    ``extractor`` outputs ``(B, C, T/s, T/s)`` with ``s = extractor.out_stride`` (16: patch grid, 1: pixels).
    Returns ``(model seconds, tiles skipped as empty)``.
    """
    stride = getattr(extractor, "out_stride", plan.patch)
    last_col = plan.tile_cols.stop - 1
    model_seconds, done, skipped = 0.0, 0, 0
    pending: list[TileData] = []

    def flush() -> None:
        nonlocal model_seconds, done, skipped
        full = [d for d in pending if not d.empty]
        outs: Iterator[tuple[Any, Any, Any]] = iter(())
        if full:
            x = torch.from_numpy(np.stack([d.x for d in full]))
            valid = torch.from_numpy(np.stack([d.valid for d in full]))
            t0 = time.perf_counter()
            res = extractor(extractor.normalize(x, valid))
            model_seconds += time.perf_counter() - t0
            check_finite(res.patches, full)
            cls = res.cls if res.cls is not None else [None] * len(full)
            storage = res.storage if res.storage is not None else [None] * len(full)
            outs = iter(zip(res.patches.permute(0, 2, 3, 1).numpy(), cls, storage, strict=True))
        for d in pending:
            if d.empty:
                skipped += 1
            else:
                out, cls_i, storage_i = next(outs)
                on_tile(d, out, cell_valid(d.valid, stride), cls_i, storage_i)
            if d.tile.col == last_col:
                on_row_done()
            done += 1
            if progress:
                progress(done, len(plan))
        pending.clear()

    with SceneReader(scene, adapter) as reader:
        for data in prefetch(reader.read_tile, plan.tiles(), workers=options.read_threads, ahead=max(8, 2 * options.batch_size)):
            pending.append(data)
            if sum(not d.empty for d in pending) >= options.batch_size:
                flush()
        flush()
    return model_seconds, skipped


def check_finite(out: torch.Tensor, tiles: list[TileData]) -> None:
    """Stop the run when the model gave NaN or inf for any tile of the batch ``out`` ``(B, C, h, w)``."""
    finite = torch.isfinite(out).flatten(1).all(1)
    if not bool(finite.all()):
        t = tiles[int((~finite).nonzero()[0])].tile
        r, c, h, w = t.px_window
        raise GeodinoError(
            f"the model gave NaN/inf for tile {t.row},{t.col} (pixel rows {r}-{r + h}, cols {c}-{c + w}): "
            "check the weights (geodino check-weights) and the input's values; nothing was written"
        )


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


def run_metadata(
    scene: Scene, plan: TilePlan, adapter: BandAdapter, extractor: FeatureExtractor, options: EncodeOptions, pca: PCA | None, skipped: int
) -> dict[str, object]:
    """The record of how an output was made (GeoTIFF tags / Zarr attrs)."""
    model = extractor.describe()
    return {
        "version": geodino.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scene": list(scene.paths),
        "scene_grid": {"shape": list(scene.shape), "transform": list(scene.transform)[:6], "crs": scene.crs, "offset": list(scene.offset)},
        **model,
        "content": f"PCA of patch features, {pca.k} components" if pca else "DINOv3 patch features, one vector per 16x16-pixel patch",
        "adapter": adapter.record(),
        "tile": plan.tile,
        "overlap": plan.overlap,
        "patch": plan.patch,
        "tiles": len(plan),
        "tiles_skipped_empty": skipped,
        "blend": f"raised cosine with floor {options.blend_floor}, zero on invalid cells, sums in float64",
        "pca": pca.record() if pca else None,
        "dtype": options.dtype,
        "nodata": "nan",
    }


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
