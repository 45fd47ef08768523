"""Blocks of a job's output grid, each run on its own through the same loop as a whole scene.

A block is a ``chunk x chunk`` square of output cells (the Zarr chunk of a block-wise run). It is
computed by :func:`run_block`: the streaming executor (:func:`~geodino.engine.stitch_job`) over the
sub-plan of every tile of the scene-wide plan that touches it, in the same order, keeping only the
block's own cells. In dask's ``map_overlap`` vocabulary: ``depth`` = tile - patch pixels of
halo, ``boundary`` none (pixels past the scene are invalid, as in the whole-scene run), ``trim`` to the
block. So a block's cells equal the whole-scene run's bit for bit, whichever worker computes them.

The model travels to workers as a :class:`ModelRef` (names, or ``package.module:factory``, not weights)
and is built once per process, on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import rasterio
import torch

from geodino.engine import content_of, region_sink, stitch_job, sub_job
from geodino.errors import InputError
from geodino.features import FeatureExtractor
from geodino.job import Job
from geodino.tilemodel import TileModel, load_factory
from geodino.tiling import TilePlan
from geodino.writer import GDAL_CACHE_MB


@dataclass(frozen=True)
class Block:
    """Output cells ``[row0, row1) x [col0, col1)``; ``(i, j)`` is its place in the block grid."""

    i: int
    j: int
    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def key(self) -> str:
        return f"{self.i}_{self.j}"

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0


@dataclass(frozen=True)
class BlockPlan:
    """The output grid of ``plan`` cut into ``chunk x chunk``-cell blocks (the last ones smaller). ``scale``: output
    cells per 16-pixel grid cell (1 for features, 16 for a pixel-stride model)."""

    plan: TilePlan
    chunk: int = 128
    scale: int = 1

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise InputError(f"--chunk {self.chunk}: give a block side of at least 1 feature cell")

    @property
    def grid_shape(self) -> tuple[int, int]:
        """The output grid in cells: ``ceil(scene / stride)``."""
        s = self.plan.patch // self.scale
        return -(-self.plan.height // s), -(-self.plan.width // s)

    @property
    def shape(self) -> tuple[int, int]:
        """Blocks ``(rows, cols)``."""
        h, w = self.grid_shape
        return -(-h // self.chunk), -(-w // self.chunk)

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def blocks(self) -> Iterator[Block]:
        h, w = self.grid_shape
        c = self.chunk
        for i in range(self.shape[0]):
            for j in range(self.shape[1]):
                yield Block(i, j, i * c, min((i + 1) * c, h), j * c, min((j + 1) * c, w))

    @property
    def depth(self) -> int:
        """Halo in pixels read around a block (at most): a tile touching its edge cell reaches this far."""
        return self.plan.tile - self.plan.patch

    def record(self) -> dict[str, object]:
        """The block plan in dask's ``map_overlap`` terms, for the run's record."""
        return {
            "chunk": self.chunk, "count": len(self), "depth_px": self.depth, "boundary": "none (past the scene is invalid)",
            "trim": True, "tiles_run": self.tiles_run(),
        }  # fmt: skip

    def tiles_run(self) -> int:
        """Tiles run over all blocks (halo tiles are run once per block they touch)."""
        return sum(len(self.plan.for_cells(*self.grid_cells(b))) for b in self.blocks())

    def grid_cells(self, block: Block) -> tuple[int, int, int, int]:
        """The 16-pixel grid cells ``(row0, row1, col0, col1)`` under a block's output cells."""
        k = self.scale
        return block.row0 // k, -(-block.row1 // k), block.col0 // k, -(-block.col1 // k)


def auto_chunk(plan: TilePlan, workers: int = 1, largest: int = 256, smallest: int = 64, scale: int = 1) -> int:
    """Default block side in output cells: ``largest`` 16-pixel cells (halo tiles then cost at most ~17 % for tiles
    of 512/64), halved down to ``smallest`` until each of several workers gets at least two blocks; x ``scale``."""
    c = largest
    while workers > 1 and c > smallest and len(BlockPlan(plan, c)) < 2 * workers:
        c //= 2
    return c * scale


@dataclass(frozen=True)
class ModelRef:
    """What a worker needs to build the model: spec name (or ``package.module:factory``), weights, layers, device,
    precision, band mixer.

    ``threads`` (torch CPU threads in the worker) is not part of the model's identity.
    """

    model: str
    weights: str | None = None
    layers: tuple[int, ...] = (-1,)
    device: str = "auto"
    precision: str = "fp32"
    mixer: str | None = None
    threads: int | None = field(default=None, compare=False)
    check_hash: bool = True  # verify the sha256 prefix in the weights' file name

    def inputs(self) -> list[str]:
        """The files this model reads (weights, band mixer): a run must never write over them."""
        return [p for p in (self.weights, self.mixer) if p not in (None, "random")]

    def extractor(self) -> TileModel:
        """The model, built on first use in this process and kept (one per ref)."""
        with _LOCK:
            if self not in _EXTRACTORS:
                from geodino.models import build_model
                from geodino.models.multiband import BandMixer

                if self.threads:
                    torch.set_num_threads(self.threads)
                if ":" in self.model:
                    _EXTRACTORS[self] = load_factory(self.model)
                    return _EXTRACTORS[self]
                mixer = BandMixer.load(self.mixer) if self.mixer else None
                net = build_model(self.model, self.weights, check_hash=self.check_hash)
                _EXTRACTORS[self] = FeatureExtractor(net, list(self.layers), self.device, self.precision, mixer)
            return _EXTRACTORS[self]


_EXTRACTORS: dict[ModelRef, TileModel] = {}
_LOCK = threading.Lock()


def release(ref: ModelRef | None = None) -> None:
    """Forget this process's extractor for ``ref`` (all of them for None), so its memory can be freed."""
    with _LOCK:
        if ref is None:
            _EXTRACTORS.clear()
        else:
            _EXTRACTORS.pop(ref, None)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def loaded_models() -> int:
    """How many extractors this process has built (one per worker per run, whatever the number of blocks)."""
    return len(_EXTRACTORS)


def block_record(job: Job, blocks: BlockPlan, model: TileModel, dtype: str = "float32") -> dict[str, object]:
    """The run record of a block-wise run: the job's, with its block plan."""
    return job.record(model, content_of(model), blocks=blocks.record(), pca=None, dtype=dtype, nodata="nan").as_dict()


def run_block(
    job: Job,
    model: ModelRef | TileModel,
    block: Block,
    scale: int | None = None,
    on_rows: Callable[[int, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Output of one block, ``(C, rows, cols)`` float32 (NaN where no valid input), equal to the same cells of a
    whole-scene run of ``job`` (``scale``: the job's, output cells per 16-pixel cell). ``on_rows(row, (C, r, cols))``:
    the block's rows handed over as they finish instead (``row`` counted from the block's first; returns an empty
    array then)."""
    net = model.extractor() if isinstance(model, ModelRef) else model
    k = scale or job.scale
    r0, r1, c0, c1 = BlockPlan(job.plan, 1, k).grid_cells(block)
    sub = sub_job(job, r0, r1, c0, c1)
    buf = np.full((job.dim, *block.shape) if on_rows is None else (0, 0, 0), np.nan, np.float32)

    def keep(row: int, part: np.ndarray) -> None:  # the block's own cells of the finished rows
        if on_rows is not None:
            on_rows(row - block.row0, part.transpose(2, 0, 1))
        else:
            buf[:, row - block.row0 : row - block.row0 + part.shape[0]] = part.transpose(2, 0, 1)

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        stitch_job(sub, net, region_sink(sub, (block.row0, block.row1), (block.col0, block.col1), keep, k))
    return buf
