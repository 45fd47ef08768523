"""The streaming executor of a :class:`~geodino.job.Job`, and encoding as a streamed job.

``Job -> SceneReader (threads) -> TileModel (batches) -> Stitcher (one tile row) -> sink (rows)``:
:func:`stitch_job` is the one loop over a job's tiles; :func:`encode_scene` (features, COG or Zarr),
:func:`~geodino.predict.predict_scene` (prediction rasters) and :func:`~geodino.blocks.run_block`
(one block of a block-wise or lazy run) are that loop with different sinks.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from geodino.adapter import BandAdapter
from geodino.allocator import trim_free_memory
from geodino.errors import InputError
from geodino.estimate import Stages
from geodino.features import FeatureExtractor
from geodino.job import BandChoice, Job, Tiling, as_job, own_outputs
from geodino.outputs import OutputSet, check_targets
from geodino.pca import PCA, CellSampler, fit_pca
from geodino.reader import SceneReader, TileData, prefetch
from geodino.scene import Scene, open_scene
from geodino.spill import Kept, TileSpill
from geodino.stacitem import with_items
from geodino.stitch import Sink, Stitcher
from geodino.tilemodel import TileModel, check_finite, check_shape, patches_of
from geodino.tiling import Tile
from geodino.tokens import TokenCollector, tokens_path
from geodino.writer import GDAL_CACHE_MB, HALF_FLOAT_COG, FeatureWriter, check_format, named_format, output_format

#: ``progress(tiles_done, tiles_total)``
Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class EncodeOptions:
    """The encode command's options, keyword-only, by concern: tiling (:attr:`tiling`), bands (:attr:`choice`)
    and output (``fmt``, ``dtype``, ``pca``, ``tokens``, ``overwrite``). Tile and overlap are multiples of 16 px."""

    tile: int = 512
    overlap: int = 64
    batch_size: int = 4
    read_threads: int = 2
    blend_floor: float = 0.1
    sensor: str | None = None
    bands: str | None = None
    gsd: float | None = None  # resample the scene to this many metres per pixel before tiling
    allow_clipping: bool = False  # run even when more than half of a band's valid pixels clip
    fmt: str | None = None  # cog or zarr; None: the one the output's extension names (see writer.output_format)
    dtype: str = "float32"
    pca: int | None = None
    tokens: bool = False
    overwrite: bool = False

    def for_output(self, out: str | Path) -> EncodeOptions:
        """These options with ``fmt`` decided for the output ``out`` (refused when its name says otherwise)."""
        return replace(self, fmt=output_format(out, self.fmt))

    def named_format(self, out: str | Path) -> str | None:
        """``fmt``, else the format ``out``'s name says (None: neither; :meth:`for_output` refuses that)."""
        return self.fmt or named_format(out)

    @property
    def tiling(self) -> Tiling:
        return Tiling(tile=self.tile, overlap=self.overlap, batch_size=self.batch_size, read_threads=self.read_threads,
                      blend_floor=self.blend_floor)  # fmt: skip

    @property
    def choice(self) -> BandChoice:
        return BandChoice(sensor=self.sensor, bands=self.bands, gsd=self.gsd, allow_clipping=self.allow_clipping)


@dataclass(kw_only=True)
class RunResult:
    """What a streamed run wrote: ``out``, its grid ``(rows, cols)`` and ``bands``, tiles run and skipped as empty,
    seconds (all, and in the model), the adapter, the record, the CRS; PCA, tokens and extra files where made."""

    out: Path
    grid_shape: tuple[int, int]
    bands: int
    tiles: int
    skipped: int
    seconds: float
    model_seconds: float
    adapter: BandAdapter
    metadata: dict[str, object] = field(repr=False)
    crs: str | None = None
    pca: PCA | None = None
    tokens_path: Path | None = None
    extra: dict[str, Path] = field(default_factory=dict)
    stages: Stages | None = None


EncodeResult = RunResult  # features (encode_scene)


def pca_names(k: int) -> list[str]:
    """Band names of a PCA output: ``PC1..PCk``."""
    return [f"PC{i + 1}" for i in range(k)]


def encode_targets(out: str | Path, options: EncodeOptions) -> dict[str, str | Path | None]:
    """The outputs of an encode run by role: the features, their STAC item and, with ``tokens``, the tokens store."""
    return with_items({"features": Path(out), "tokens": tokens_path(Path(out)) if options.tokens else None})


def check_outputs(out: str | Path, options: EncodeOptions, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse, before any work, bad options or outputs (see :func:`~geodino.outputs.check_targets`)."""
    check_options(options)
    return check_targets(encode_targets(out, options), inputs, options.overwrite)[0].path


def check_options(options: EncodeOptions) -> None:
    """Range checks of every option, before any work."""
    check_format(options.fmt, options.dtype)
    options.tiling.check()
    if options.pca is not None and options.pca < 1:
        raise InputError(f"--pca {options.pca}: give at least 1 component")


def content_of(model: TileModel, pca: PCA | None = None) -> str:
    """What an output's values are, for its record."""
    if pca is not None:
        of = "patch features" if isinstance(model, FeatureExtractor) else f"the outputs of {model.describe().get('model')}"
        return f"PCA of {of}, {pca.k} components"
    if isinstance(model, FeatureExtractor):
        return "DINOv3 patch features, one vector per 16x16-pixel patch"
    s = model.out_stride
    return f"outputs of {model.describe().get('model')}, one vector per {s}x{s}-pixel cell"


def encode_scene(
    scene: Job | Scene | str | Path | list[str],
    out: str | Path,
    extractor: TileModel,
    options: EncodeOptions = EncodeOptions(),
    progress: Progress | None = None,
    adapter: BandAdapter | None = None,
    outputs: OutputSet | None = None,
) -> EncodeResult:
    """Encode a whole scene with ``extractor`` (any :class:`~geodino.tilemodel.TileModel`) into a georeferenced
    raster at ``out`` (COG or Zarr), streamed.

    Output: ``(C, ceil(H/s), ceil(W/s))`` for a model of stride ``s`` (16: the patch grid), the scene's CRS and
    transform x scale(s), NaN nodata. ``scene`` may be a prepared :class:`~geodino.job.Job` (its tiling wins over
    ``options``'); else ``adapter``, when given, must come with the scene :func:`~geodino.adapter.prepare` returned.
    ``outputs``: the run's :class:`~geodino.outputs.OutputSet` (its owner commits); default one of its own,
    committed here. Nothing changes at ``out`` (or beside it) if anything fails.
    """
    check_options(options)  # the format: from ``out``'s name once the outputs are checked (see _encode)
    if not isinstance(scene, (Job, Scene)):
        scene = open_scene(scene)
    paths = scene.scene.paths if isinstance(scene, Job) else scene.paths
    # GDAL's block cache defaults to 5% of RAM and would fill with the scene's and the output's blocks:
    # bounded, memory stays flat with scene size (statistics read and reader threads included).
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), own_outputs(outputs, encode_targets(out, options), paths, options.overwrite) as outs:
        return _encode(as_job(scene, extractor, options.tiling, options.choice, adapter), outs, extractor, options, progress)


def _encode(job: Job, outs: OutputSet, model: TileModel, options: EncodeOptions, progress: Progress | None) -> EncodeResult:
    t_start = time.perf_counter()
    if options.pca is not None and options.pca > job.dim:
        raise InputError(f"--pca {options.pca}: the model gives {job.dim} channels")
    sampler = CellSampler() if options.pca else None
    tokens = TokenCollector(job.scene.geobox, job.plan) if options.tokens else None
    stream = list(job.channels) if options.pca is None else None  # PCA needs every feature first: written after the run
    fmt = output_format(outs.path("features"), options.fmt)
    with FeatureWriter(outs.temp("features"), job.grid, job.dim, fmt, options.dtype, stream, statistics=options.pca is None) as writer:

        def on_tile(d: TileData, out: np.ndarray, cv: np.ndarray, cls: torch.Tensor | None, storage: torch.Tensor | None) -> None:
            if sampler is not None:
                sampler.add(out, cv)
            if tokens is not None and cls is not None and storage is not None:
                tokens.add(d.tile, cls.cpu().numpy(), storage.cpu().numpy())

        stages = Stages()
        width = writer.strip_width if tokens is None and job.scale == 1 else None  # (tokens: once per tile)
        model_seconds, skipped = stitch_strips(job, model, writer, width, progress, on_tile, stages)
        pca = fit_pca(sampler.sample(), options.pca) if sampler is not None and options.pca else None
        storage = {"storage": HALF_FLOAT_COG} if fmt == "cog" and options.dtype == "float16" else {}
        record = job.record(model, content_of(model, pca), tiles_skipped_empty=skipped, pca=pca.record() if pca else None,
                            dtype=options.dtype, **storage, nodata="nan", seconds_before_finish=stages.record())  # fmt: skip
        meta = record.as_dict()
        names = pca_names(pca.k) if pca is not None else list(job.channels)
        writer.finish(meta, names, pca.transform if pca is not None else None)
        stages.write = writer.busy
        stages.end()
    tokens_out = None
    if tokens is not None and tokens.write(outs.temp("tokens"), meta) is not None:
        tokens_out = outs.path("tokens")
    return RunResult(
        out=outs.path("features"), grid_shape=job.grid_shape, bands=len(names), tiles=len(job.plan), skipped=skipped,
        seconds=time.perf_counter() - t_start, model_seconds=model_seconds, adapter=job.adapter, metadata=meta,
        crs=job.scene.crs, pca=pca, tokens_path=tokens_out, stages=stages,
    )  # fmt: skip


#: ``on_tile(data, out (t, t, C), cell_valid (t, t), cls, storage)`` for each non-empty tile, in plan order (on the CPU).
TileSink = Callable[[TileData, np.ndarray, np.ndarray, "torch.Tensor | None", "torch.Tensor | None"], None]
#: ``on_tile(data, out (C, t, t), cell_valid (t, t), cls, storage)``: the same, as tensors on the model's device
#: (``data``: a :class:`~geodino.spill.Kept` for a tile a previous strip ran).
DeviceTileSink = Callable[[TileData | Kept, torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], None]


def model_device(model: TileModel) -> torch.device:
    """Where a model computes (its ``device`` attribute, else the CPU): tiles are blended there."""
    return torch.device(getattr(model, "device", None) or "cpu")


def stitch_job(
    job: Job,
    model: TileModel,
    sink: Sink,
    progress: Progress | None = None,
    on_tile: TileSink | None = None,
    stages: Stages | None = None,
    spill: TileSpill | None = None,
) -> tuple[float, int]:
    """Run ``model`` over every tile of ``job`` and hand the blended output rows to ``sink(row0, (rows, cols, C))``
    as soon as they are final (rows in output cells, counted from the job's grid). ``on_tile`` sees each raw tile
    output too (once: not again when a strip takes it from ``spill``); ``stages`` adds up where the time goes.
    Returns ``(model seconds, tiles skipped as empty)``."""
    stitcher = Stitcher(job.plan, job.dim, sink, job.tiling.blend_floor, job.stride, model_device(model))

    def add(d: TileData | Kept, out: torch.Tensor, cv: torch.Tensor, cls: torch.Tensor | None, storage: torch.Tensor | None) -> None:
        stitcher.add(d.tile, out, cv)
        if on_tile is not None and isinstance(d, TileData):
            on_tile(d, out.cpu().permute(1, 2, 0).numpy(), cv.cpu().numpy(), cls, storage)

    return stream_tiles(job, model, add, stitcher.finish_row, progress, stages, spill)


def region_sink(sub: Job, rows: tuple[int, int], cols: tuple[int, int], keep: Callable[[int, np.ndarray], None], scale: int = 1) -> Sink:
    """A sink for :func:`stitch_job` over ``sub`` (a sub-job) that keeps the output cells ``[rows) x [cols)`` of each
    finished row band: ``keep(row, part (r, cols, C))``, ``row`` in grid rows (``scale``: output cells per 16 px)."""
    first = sub.plan.cell_bounds[2] * scale  # the sub-job's rows start at its first tile's column

    def sink(row: int, block: np.ndarray) -> None:
        lo, hi = max(row, rows[0]), min(row + block.shape[0], rows[1])
        if lo < hi:
            keep(lo, block[lo - row : hi - row, cols[0] - first : cols[1] - first])

    return sink


def stitch_strips(
    job: Job, model: TileModel, writer: FeatureWriter, width: int | None, progress: Progress | None, on_tile: TileSink | None,
    stages: Stages,
) -> tuple[float, int]:  # fmt: skip
    """:func:`stitch_job` in column strips of ``width`` cells (None or a narrower grid: one), left to right, each the
    sub-job of the tiles touching it (values equal to the whole run's): the row of tiles held, and so memory, no
    longer grows with the scene's width. A tile on a strip's right edge runs once: the next strip takes its output
    from a :class:`~geodino.spill.TileSpill` beside the output. Returns ``(model seconds, empty tiles)``."""
    cols = job.grid_shape[1]
    if width is None or cols <= width:
        return stitch_job(job, model, writer.write_rows, progress, on_tile, stages)
    strips = [(c0, min(c0 + width, cols)) for c0 in range(0, cols, width)]
    subs = [sub_job(job, 0, job.grid_shape[0], c0, c1) for c0, c1 in strips]
    total, base, model_seconds, skipped = sum(len(s.plan) for s in subs), 0, 0.0, 0
    with TileSpill(job.dim, job.plan.tile_cells, writer.out.parent) as spill:
        for (c0, c1), sub in zip(strips, subs, strict=True):
            sink = region_sink(sub, (0, job.grid_shape[0]), (c0, c1), functools.partial(_write_strip, writer, c0))
            spill.strip(c1 if c1 < cols else None)

            def step(done: int, _: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + done, total)

            m, k = stitch_job(sub, model, sink, step, on_tile, stages, spill)
            model_seconds, skipped, base = model_seconds + m, skipped + k, base + len(sub.plan)
    return model_seconds, skipped


def _write_strip(writer: FeatureWriter, col0: int, row: int, part: np.ndarray) -> None:
    writer.write_rows(row, part, col0)


def batch_of(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """``(B, ...)`` tensor of same-shaped arrays, assembled in pinned memory and copied asynchronously to a GPU."""
    if device.type != "cuda":
        return torch.from_numpy(np.stack(arrays))
    buf = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.from_numpy(arrays[0][:0]).dtype, pin_memory=True)
    np.stack(arrays, out=buf.numpy())
    return buf.to(device, non_blocking=True)


def stream_tiles(
    job: Job,
    model: TileModel,
    on_tile: DeviceTileSink,
    on_row_done: Callable[[], None],
    progress: Progress | None = None,
    stages: Stages | None = None,
    spill: TileSpill | None = None,
) -> tuple[float, int]:
    """Read every tile of ``job.plan`` ahead in threads, run non-empty ones through ``model`` in batches, and hand
    each output ``(C, T/s, T/s)`` (on the model's device) to ``on_tile`` in plan order; ``on_row_done`` after each
    tile row. With ``spill``, tiles the previous strip kept are taken from it (not read, not run) and those the next
    strip needs are kept. Returns ``(model seconds, tiles skipped as empty)``.
    """
    plan, stride, tiling = job.plan, job.stride, job.tiling
    last_col = plan.tile_cols.stop - 1
    model_seconds, done, skipped = 0.0, 0, 0
    pending: list[TileData | Kept] = []
    t_out = plan.tile // stride
    st = stages or Stages()
    device = model_device(model)

    def flush() -> None:
        nonlocal model_seconds, done, skipped
        full = [d for d in pending if isinstance(d, TileData) and not d.empty]
        outs: Iterator[tuple[Any, Any, Any, Any]] = iter(())
        if full:
            x, valid = batch_of([d.x for d in full], device), batch_of([d.valid for d in full], device)
            t0 = time.perf_counter()
            res = patches_of(model(model.normalize(x, valid)))
            patches = res.patches
            if patches.device.type == "cuda":
                torch.cuda.synchronize(patches.device)  # the model's time, not the blend's
            st.last_tile = time.perf_counter()
            dt = st.last_tile - t0
            model_seconds += dt
            st.model += dt
            check_shape(patches, len(full), job.dim, t_out)
            cells = batch_of([d.cells(stride) for d in full], patches.device)
            check_finite(patches, cells, [d.tile for d in full])
            patches = patches.float()
            cls = res.cls if res.cls is not None else [None] * len(full)
            storage = res.storage if res.storage is not None else [None] * len(full)
            outs = iter(zip(patches, cells, cls, storage, strict=True))
        t0 = time.perf_counter()
        for d in pending:
            if isinstance(d, Kept):  # run by the previous strip (or empty there: counted there)
                if d.out is not None and d.cells is not None:
                    on_tile(d, d.out.to(device), d.cells.to(device), None, None)
            elif d.empty:
                skipped += 1
                if spill is not None and spill.wants(d.tile):
                    spill.save(d.tile, None, None)
            else:
                out, cv, cls_i, storage_i = next(outs)
                if spill is not None and spill.wants(d.tile):  # the next strip needs it too
                    spill.save(d.tile, out, cv)
                on_tile(d, out, cv, cls_i, storage_i)
            if d.tile.col == last_col:
                on_row_done()
                trim_free_memory()  # the finished rows' blocks, freed: back to the system (flat memory)
            done += 1
            if progress:
                progress(done, len(plan))
        st.blend += time.perf_counter() - t0
        pending.clear()

    with SceneReader(job.scene, job.adapter) as reader:

        def read(tile: Tile) -> TileData | Kept:
            kept = spill.load(tile) if spill is not None else None
            return kept if kept is not None else reader.read_tile(tile)

        tiles = prefetch(read, plan.tiles(), workers=tiling.read_threads, ahead=max(8, 2 * tiling.batch_size))
        with contextlib.closing(tiles):  # on any exit, reads still running end before the reader closes their files
            while (data := _timed_next(tiles, st)) is not None:
                pending.append(data)
                if sum(isinstance(d, TileData) and not d.empty for d in pending) >= tiling.batch_size:
                    flush()
            flush()
    return model_seconds, skipped


def _timed_next(tiles: Iterator[TileData | Kept], stages: Stages) -> TileData | Kept | None:
    t0 = time.perf_counter()
    data = next(tiles, None)
    stages.read += time.perf_counter() - t0
    return data


def sub_job(job: Job, row0: int, row1: int, col0: int, col1: int) -> Job:
    """The job of the tiles touching grid cells ``[row0, row1) x [col0, col1)`` (16-pixel cells)."""
    return replace(job, plan=job.plan.for_cells(row0, row1, col0, col1))
