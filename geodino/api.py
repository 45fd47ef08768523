"""The notebook API: a scene as a lazy georeferenced DataArray, and its DINOv3 features as another.

``geodino.open_scene(path)`` -> ``(band, y, x)`` DataArray backed by the file (dask chunks, CRS).
``geodino.encode(scene, model=...)`` -> ``(feature, y, x)`` DataArray on the model's output grid whose
dask blocks are :func:`~geodino.blocks.run_block` calls (:func:`lazy_job`, the lazy executor of a
:class:`~geodino.job.Job`): the same loop as the CLI, computed by
``.compute()`` / ``.to_zarr()`` on the threaded scheduler, or on a ``dask.distributed`` cluster when a
client is active. Values equal ``geodino encode`` with the same settings, bit for bit.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from geodino.blocks import BlockPlan, ModelRef, auto_chunk, block_record, run_block
from geodino.errors import InputError, api_words, speaks_python
from geodino.features import FeatureExtractor, parse_layers
from geodino.job import BandChoice, Job, Tiling, prepare_job
from geodino.models.vit import DinoVisionTransformer
from geodino.scene import Scene
from geodino.scene import open_scene as scene_of
from geodino.tilemodel import TileModel, refuse_backbone_options
from geodino.zarrstore import feature_array

SCENE_ATTR = "geodino_scene"


@speaks_python
def open_scene(paths: str | Path | Sequence[str | Path], chunks: dict[str, int] | None = None) -> xr.DataArray:
    """A raster (or band files on one grid) as a lazy DataArray ``(band, y, x)`` with CRS, band names as the
    ``band`` coordinate and the source files in ``attrs["geodino_scene"]``. Only metadata is read.

    ``da.geodino.scene`` is the :class:`~geodino.scene.Scene` value behind it (or behind a crop of it)."""
    import rioxarray

    scene = scene_of(paths)
    if scene.band_grids:
        raise InputError(
            "these band files are on different grids: open the files of one grid here, or pass the paths to "
            "geodino.encode, which resamples the bands it needs"
        )
    chunks = chunks or {"band": -1, "y": 1024, "x": 1024}
    parts = []
    for path in scene.paths:
        da = rioxarray.open_rasterio(path, chunks=chunks, lock=False)
        assert isinstance(da, xr.DataArray)  # a scene's files are plain rasters (open_scene read them with rasterio)
        keep = [b for p, b in scene.band_sources if p == path]  # alpha bands are masks, not bands
        parts.append(da.sel(band=keep))
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim="band")
    out = out.assign_coords(band=list(scene.band_names))
    out.name = Path(scene.paths[0]).stem
    out.attrs[SCENE_ATTR] = list(scene.paths)  # shown in the repr
    out.encoding[SCENE_ATTR] = list(scene.paths)  # kept by selections, dropped by arithmetic, where, astype
    return out


def scene_choice(x: xr.DataArray | Scene | str | Path | Sequence[str | Path], bands: str | None) -> tuple[Scene, str | None]:
    """The :class:`Scene` behind ``x`` (a DataArray from :func:`open_scene`, whole or a contiguous crop, a Scene or paths)
    and the bands to use: ``bands``, or the band subset the array selected (comma-separated names)."""
    if isinstance(x, Scene):
        return x, bands
    if not isinstance(x, xr.DataArray):
        return scene_of(x), bands
    if SCENE_ATTR not in x.attrs:
        raise InputError("encode takes a scene from geodino.open_scene (or a path): write other arrays to a GeoTIFF (da.rio.to_raster)")
    if SCENE_ATTR not in x.encoding:
        raise InputError(
            "this array's values were changed after geodino.open_scene (arithmetic, where, astype): encode reads the "
            "scene's files, so write the changed array to a GeoTIFF (da.rio.to_raster) and encode that"
        )
    if x.ndim != 3 or x.sizes.get("y", 0) == 0 or x.sizes.get("x", 0) == 0:
        raise InputError(
            f"encode needs a (band, y, x) array with pixels, got dims {dict(x.sizes)}: keep band as a list, e.g. isel(band=[0])"
        )
    scene = scene_of(x.encoding[SCENE_ATTR])
    if tuple(x.shape[-2:]) != scene.shape or tuple(x.rio.transform(recalc=True))[:6] != tuple(scene.transform)[:6]:
        scene = _crop(scene, x)
    chosen = [str(b) for b in x["band"].values]
    if chosen != list(scene.band_names):
        if bands is not None:
            raise InputError("give the bands either as a band subset of the array or as bands=..., not both")
        bands = ",".join(chosen)
    return scene, bands


@xr.register_dataarray_accessor("geodino")
class SceneAccessor:
    """``da.geodino.scene``: the :class:`~geodino.scene.Scene` value (files, grid, bands, nodata) behind an array from
    :func:`open_scene`, cropped as the array is; its band subset is what :func:`encode` passes as ``bands``."""

    def __init__(self, da: xr.DataArray) -> None:
        self._da = da

    @property
    def scene(self) -> Scene:
        return speaks_python(scene_choice)(self._da, None)[0]


def _active_workers() -> int:
    """Workers of the active ``dask.distributed`` client, if any (1 otherwise)."""
    try:
        from dask.distributed import default_client

        return max(1, len(default_client().scheduler_info().get("workers", {})))
    except (ImportError, ValueError):
        return 1


def _crop(scene: Scene, x: xr.DataArray) -> Scene:
    """The crop of ``scene`` that ``x`` (sliced from it with ``isel``/``sel``) covers; refuses resampled arrays."""
    f, t = scene.transform, x.rio.transform(recalc=True)
    col, row = (t.c - f.c) / f.a, (t.f - f.f) / f.e
    if not np.allclose((t.a, t.b, t.d, t.e), (f.a, f.b, f.d, f.e)) or abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        raise InputError(
            "encode takes the scene from geodino.open_scene or a contiguous crop of it (isel/sel on y and x); "
            "this one is resampled or shifted: write it to a GeoTIFF first (da.rio.to_raster) and encode that"
        )
    return scene.crop(round(row), round(col), x.sizes["y"], x.sizes["x"])


@speaks_python
def encode(
    scene: xr.DataArray | Scene | str | Path | Sequence[str | Path],
    model: str | TileModel | DinoVisionTransformer = "dinov3_vitl16_sat493m",
    weights: str | None = None,
    layers: str | Sequence[int] | None = None,
    tile: int = 512,
    overlap: int = 64,
    chunk: int | None = None,
    batch_size: int = 4,
    sensor: str | None = None,
    bands: str | None = None,
    device: str = "auto",
    precision: str = "fp32",
    gsd: float | None = None,
    allow_clipping: bool = False,
    check_hash: bool = True,
) -> xr.DataArray:
    """Lazy outputs ``(feature, y, x)`` of ``model`` over ``scene`` on its output grid (DINOv3: one cell per 16x16
    pixels), CRS and cell-centre coordinates set, the run's record in ``attrs``. One dask block per ``chunk x chunk``
    cells (default 256 16-pixel cells, less when an active ``dask.distributed`` client has several workers).

    A DataArray names the files to read (and, through selections, the part and the bands); its values
    are not used, so an array whose values were changed is refused.

    ``model``: a spec name or ``package.module:factory`` (built once per process or worker, with ``weights``: a
    checkpoint, HF folder or ``"random"``), a DINOv3 backbone, or any :class:`~geodino.tilemodel.TileModel`.
    ``sensor``/``bands``: as the CLI's (default: detected from evidence; bands by common name, name or
    1-based index); ``gsd``: resample to this many metres per pixel first; ``allow_clipping``: run even when
    the stretch clips more than half of a band's pixels; ``check_hash=False`` loads weights whose file name
    promises another sha256. What geodino decided is in ``attrs["adapter"]``; notes come as ``UserWarning``.
    """
    import rioxarray  # noqa: F401  (registers .rio, used below; a fresh process may not have imported it yet)

    scene, bands = scene_choice(scene, bands)
    scene = scene.absolute()  # the blocks may run on workers started in other folders
    net: TileModel
    held: ModelRef | TileModel
    if isinstance(model, str):
        ref = ModelRef(model, weights, tuple(parse_layers(layers)), device, precision, check_hash=check_hash)
        held, net = ref, ref.extractor()
    elif isinstance(model, DinoVisionTransformer):
        net = held = FeatureExtractor(model, layers, device, precision)
    else:
        refuse_backbone_options(weights, layers, None, device, precision, False)
        net = held = model
    tiling = Tiling(tile=tile, overlap=overlap, batch_size=batch_size)
    job = prepare_job(scene, net, tiling=tiling, choice=BandChoice(sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping))
    for note in job.adapter.notes:
        warnings.warn(f"geodino: {api_words(note)}", UserWarning, stacklevel=3)
    return lazy_job(job, held, chunk or auto_chunk(job.plan, _active_workers(), scale=job.scale), net)


def lazy_job(job: Job, model: ModelRef | TileModel, chunk: int, built: TileModel | None = None) -> xr.DataArray:
    """The lazy executor: ``job``'s output ``(feature, y, x)`` as a DataArray of ``chunk x chunk``-cell dask blocks,
    each a :func:`~geodino.blocks.run_block` call (``built``: ``model`` already built, for the record)."""
    import dask
    import dask.array as da
    import rioxarray  # noqa: F401

    net = built or (model.extractor() if isinstance(model, ModelRef) else model)
    blocks = BlockPlan(job.plan, chunk, job.scale)
    name = f"geodino-encode-{uuid.uuid4().hex[:12]}"
    held = model if isinstance(model, ModelRef) else dask.delayed(model, name=f"{name}-model", traverse=False)
    rows: list[list[da.Array]] = [[] for _ in range(blocks.shape[0])]
    for b in blocks.blocks():
        task = dask.delayed(run_block, pure=False, traverse=False)(job, held, b, dask_key_name=f"{name}-{b.key}")
        rows[b.i].append(da.from_delayed(task, shape=(job.dim, *b.shape), dtype=np.float32, name=f"{name}-array-{b.key}"))
    return feature_array(da.block(rows), job.grid, job.channels, block_record(job, blocks, net))
