"""One run as one value: :func:`prepare_job` -> :class:`Job`, built once, before any weights load.

A Job holds the scene the model will see (absolute paths, bands chosen, resampled if asked), its
:class:`~geodino.adapter.BandAdapter`, the tile plan, the model's :class:`~geodino.tilemodel.ModelCard`
and the output grid. Every input check runs in :func:`prepare_job`, once. Three executors run a Job:
streaming (:func:`geodino.engine.stitch_job`, one pass writing a COG or Zarr), block-wise
(:func:`geodino.blocks.run_block` on a dask scheduler into a resumable Zarr store, :mod:`geodino.cluster`)
and lazy (:func:`geodino.api.lazy_job`, a dask-backed DataArray whose blocks are ``run_block`` calls);
they give the same values bit for bit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from odc.geo.geobox import GeoBox

import geodino
from geodino.adapter import BandAdapter, prepare
from geodino.errors import InputError
from geodino.outputs import OutputSet, check_targets
from geodino.scene import Scene, open_scene
from geodino.tilemodel import GRID, ModelCard, TileModel, card_of
from geodino.tiling import TilePlan

RGB = ("red", "green", "blue")


@dataclass(frozen=True, kw_only=True)
class Tiling:
    """How a scene is cut and run: tile and overlap in pixels (multiples of 16), tiles per batch, reader
    threads, and the floor of the blending window."""

    tile: int = 512
    overlap: int = 64
    batch_size: int = 4
    read_threads: int = 2
    blend_floor: float = 0.1

    def check(self) -> Tiling:
        """Range checks, before any work (the plan checks tile and overlap against the grid)."""
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: give at least 1")
        if self.read_threads < 0:
            raise InputError(f"--read-threads {self.read_threads}: give 0 (read in the main thread) or more")
        if not math.isfinite(self.blend_floor) or not 0 < self.blend_floor <= 1:
            raise InputError(f"blend floor {self.blend_floor}: give a value in (0, 1]")
        TilePlan(GRID, GRID, self.tile, self.overlap, GRID)
        return self


@dataclass(frozen=True, kw_only=True)
class BandChoice:
    """Which bands feed the model and how they are read: ``sensor`` preset, ``bands`` (common names, band
    names or 1-based indexes), ``gsd`` metres per pixel to resample to, ``allow_clipping``."""

    sensor: str | None = None
    bands: str | None = None
    gsd: float | None = None
    allow_clipping: bool = False


@dataclass(frozen=True)
class Outputs:
    """A run's output targets by role (``{"features": out, "tokens": None, ...}``), checked when the value is made
    (:func:`~geodino.outputs.check_targets`: against each other, the ``inputs`` and the ``overwrite`` rules)."""

    targets: tuple[tuple[str, Path | None], ...]
    inputs: tuple[str, ...]
    overwrite: bool = False

    @classmethod
    def of(cls, targets: Mapping[str, str | Path | None], inputs: Iterable[str | Path | None], overwrite: bool = False) -> Outputs:
        paths = tuple(str(p) for p in inputs if p is not None)
        return cls(tuple((k, Path(v) if v is not None else None) for k, v in targets.items()), paths, overwrite)

    def __post_init__(self) -> None:
        check_targets(dict(self.targets), self.inputs, self.overwrite)

    def open(self) -> OutputSet:
        """The run's :class:`~geodino.outputs.OutputSet` over these targets (locks, temporaries, commit)."""
        return OutputSet(dict(self.targets), self.inputs, self.overwrite)


@dataclass(frozen=True)
class RunRecord:
    """How an output was made: written as GeoTIFF tags (``GEODINO_*``) and Zarr attributes."""

    scene: tuple[str, ...]
    scene_grid: dict[str, object]
    model: dict[str, object]
    adapter: dict[str, object]
    content: str
    tile: int
    overlap: int
    patch: int
    out_stride: int
    tiles: int
    blend: str
    extra: dict[str, object] = field(default_factory=dict)
    version: str = geodino.__version__
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def as_dict(self) -> dict[str, object]:
        """The record as tags: the model's description spread at the top level, then the product's own entries."""
        return {
            "version": self.version, "created": self.created, "scene": list(self.scene), "scene_grid": self.scene_grid,
            **self.model, "content": self.content, "adapter": self.adapter, "tile": self.tile, "overlap": self.overlap,
            "patch": self.patch, "out_stride": self.out_stride, "tiles": self.tiles, "blend": self.blend, **self.extra,
        }  # fmt: skip


@dataclass(frozen=True)
class Job:
    """One run: the prepared scene, its adapter, the tile plan, the tiling, the model's card and, for a command's run,
    its checked output targets."""

    scene: Scene
    adapter: BandAdapter
    plan: TilePlan
    tiling: Tiling
    card: ModelCard
    outputs: Outputs | None = None

    @property
    def stride(self) -> int:
        """Pixels per output cell."""
        return self.card.out_stride

    @property
    def scale(self) -> int:
        """Output cells per 16-pixel grid cell."""
        return self.plan.patch // self.stride

    @property
    def dim(self) -> int:
        return len(self.card.channels)

    @property
    def channels(self) -> tuple[str, ...]:
        return self.card.channels

    @property
    def grid(self) -> GeoBox:
        """The output raster's grid: the scene's CRS, transform x scale(stride), ``ceil(scene / stride)`` cells."""
        return self.scene.geobox if self.stride == 1 else self.scene.geobox.zoom_out(self.stride)

    @property
    def grid_shape(self) -> tuple[int, int]:
        h, w = self.scene.shape
        return -(-h // self.stride), -(-w // self.stride)

    def record(self, model: TileModel, content: str, **extra: object) -> RunRecord:
        """The run record of this job run by ``model`` (``extra``: the product's own entries)."""
        s, f = self.scene, self.tiling.blend_floor
        blend = f"raised cosine with floor {f}, zero on invalid cells, sums in float64"
        if self.stride != self.plan.patch:
            blend = f"raised cosine per {self.stride}-pixel output cell with floor {f}, zero on invalid cells, sums in float64"
        return RunRecord(
            tuple(s.paths),
            {"shape": list(s.shape), "transform": list(s.transform)[:6], "crs": s.crs, "offset": list(s.offset)},
            model.describe(),
            self.adapter.record(),
            content,
            self.plan.tile,
            self.plan.overlap,
            self.plan.patch,
            self.stride,
            len(self.plan),
            blend,
            dict(extra),
        )


def job_of(
    scene: Scene, adapter: BandAdapter, model: TileModel | ModelCard, tiling: Tiling = Tiling(), outputs: Outputs | None = None
) -> Job:
    """A Job for a scene already prepared (:func:`~geodino.adapter.prepare` returned ``scene`` and ``adapter``)."""
    tiling.check()
    card = card_of(model)
    if len(adapter.indexes) != len(card.bands):
        raise InputError(
            f"the adapter delivers {len(adapter.indexes)} bands but the model takes {len(card.bands)} ({', '.join(card.bands)})"
        )
    h, w = scene.shape
    return Job(scene.absolute(), adapter, TilePlan(h, w, tiling.tile, tiling.overlap, GRID), tiling, card, outputs)


def prepare_job(
    scene: Scene | str | Path | list[str],
    model: TileModel | ModelCard,
    *,
    tiling: Tiling = Tiling(),
    choice: BandChoice = BandChoice(),
    outputs: Outputs | None = None,
) -> Job:
    """The Job of running ``model`` over ``scene``: every input check, the band choice and the one statistics read;
    ``outputs`` (checked when made) travel with it.

    The scene's bands are chosen by the model's input identities (``choice.bands`` wins; RGB models go through
    detection, which also takes three unnamed bands of one file in order). Raises one-line
    :class:`~geodino.errors.InputError` for anything that cannot run.
    """
    tiling.check()
    card = card_of(model)
    if not isinstance(scene, Scene):
        scene = open_scene(scene)
    own = choice.bands is None and card.bands != RGB  # the model's input identities choose the bands
    bands = ",".join(card.bands) if own else choice.bands
    try:
        prepared, adapter = prepare(scene.absolute(), len(card.bands), choice.sensor, bands, choice.gsd, choice.allow_clipping,
                                    bands_from="the model's input bands" if own else "--bands")  # fmt: skip
    except InputError as exc:
        if not own or "; pass --bands" not in str(exc):
            raise
        found = str(exc).split("; pass --bands")[0]
        raise InputError(
            f"{found}; the model takes {', '.join(card.bands)} by identity: name the bands in the file (band descriptions, "
            "a STAC item) or pass --bands with the band numbers that hold them, in the model's order"
        ) from None
    return job_of(prepared, adapter, card, tiling, outputs)


def as_job(
    scene: Job | Scene | str | Path | list[str], model: TileModel | ModelCard, tiling: Tiling, choice: BandChoice,
    adapter: BandAdapter | None = None,
) -> Job:  # fmt: skip
    """``scene`` as a Job: a Job as given; a scene already prepared with its ``adapter`` (:func:`job_of`); else
    :func:`prepare_job` with ``tiling`` and ``choice``. What every executor's entry point accepts."""
    if isinstance(scene, Job):
        return scene
    if adapter is not None:
        return job_of(scene if isinstance(scene, Scene) else open_scene(scene), adapter, model, tiling)
    return prepare_job(scene, model, tiling=tiling, choice=choice)


@contextlib.contextmanager
def own_outputs(
    outputs: OutputSet | None, targets: Mapping[str, str | Path | None], inputs: Iterable[str | Path | None], overwrite: bool
) -> Iterator[OutputSet]:
    """``outputs`` as given (its owner commits), or a new set for ``targets`` committed when the block succeeds."""
    if outputs is not None:
        yield outputs
        return
    with OutputSet(targets, inputs, overwrite) as outs:
        yield outs
        outs.commit()
