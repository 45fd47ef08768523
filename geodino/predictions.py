"""The prediction commands as Python API calls: ``geodino.canopy_height``, ``geodino.train_head``, ``geodino.land_cover``.

Each takes a scene as :func:`geodino.open_scene` gives it (whole, a crop, or a band subset), a path or band files, and
the commands' options as keyword arguments; it runs the command's library call (:mod:`geodino.predict_runs`: the same
checks, files and records), streaming to its output as the command does, and returns the written raster opened
lazily (:func:`open_prediction`). Notes on what geodino decided come as ``UserWarning``; errors and notes name the
keyword arguments (``sensor=``), not the command's options.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from geodino.api import scene_choice
from geodino.engine import Progress
from geodino.errors import InputError, api_words, speaks_python
from geodino.job import BandChoice, Tiling
from geodino.predict_runs import TrainRun, canopy_run, land_cover_run, train_run
from geodino.runs import Hooks
from geodino.scene import Scene

SceneLike = xr.DataArray | Scene | str | Path | Sequence[str | Path]


def _warn(message: str) -> None:
    warnings.warn(f"geodino: {api_words(message)}", UserWarning, stacklevel=2)


def _notes(notes: Sequence[str]) -> None:
    for note in notes:
        _warn(note)


def _hooks(progress: Progress | None) -> Hooks:
    """Notes and warnings as ``UserWarning`` in the API's words; ``progress(done, total)`` per tile."""
    return Hooks(_notes, _warn, progress)


def _scene(scene: SceneLike, bands: str | None) -> tuple[Scene | str | Path | Sequence[str | Path], str | None]:
    """What a run takes: an array from :func:`geodino.open_scene` as its :class:`Scene` (cropped) and band subset;
    paths as given (a run guards the files it was given, a STAC item's too, against being overwritten)."""
    return scene_choice(scene, bands) if isinstance(scene, xr.DataArray) else (scene, bands)


@speaks_python
def open_prediction(path: str | Path) -> xr.DataArray:
    """A prediction raster geodino wrote (canopy height, land cover) as a lazy DataArray ``(y, x)``, nodata as NaN,
    the run's record in ``attrs["geodino"]``; land cover also with ``attrs["class_names"]`` and ``attrs["colours"]``
    (the COG's colour table), which :func:`geodino.plot` draws with a legend."""
    import rasterio
    import rioxarray

    from geodino.outputinfo import output_info

    info = output_info(path)
    if info is None or info["format"] != "cog":
        raise InputError(f"{path} is not a prediction COG written by geodino (canopy-height or land-cover)")
    record = info["record"]
    assert isinstance(record, dict)  # output_info's record is a mapping
    product = str(record.get("product", ""))
    opened = rioxarray.open_rasterio(path, masked=True, chunks={"band": 1, "y": 1024, "x": 1024})
    assert isinstance(opened, xr.DataArray)  # a single-array GeoTIFF (output_info read it)
    da = opened.squeeze("band", drop=True).rename(product or Path(path).stem)
    da.attrs = {k: v for k, v in da.attrs.items() if not k.startswith("GEODINO_")} | {"geodino": record}
    if product == "land_cover":
        head = record.get("head")
        names = head.get("names") if isinstance(head, dict) else None
        with rasterio.open(path) as ds:
            table = ds.colormap(1)
        n = len(names) if isinstance(names, list) else max(i for i in table if i != 255) + 1
        da.attrs["class_names"] = [str(v) for v in names] if isinstance(names, list) else [f"class {i}" for i in range(n)]
        da.attrs["colours"] = [list(table[i][:3]) for i in range(n)]
    return da


@speaks_python
def canopy_height(
    scene: SceneLike, out: str | Path, *, head: str = "dinov3_vitl16_chmv2", weights: str | None = None,
    backbone_weights: str | None = None, reference: str | Path | None = None, resolution: float | None = None,
    sensor: str | None = None, bands: str | None = None, gsd: float | None = None, allow_clipping: bool = False,
    tile: int = 512, overlap: int = 64, batch_size: int = 2, device: str = "auto", precision: str = "fp32",
    overwrite: bool = False, check_hash: bool = True, progress: Progress | None = None,
) -> xr.DataArray:  # fmt: skip
    """Canopy height in metres from the CHMv2 ``head`` (``weights``: its file, HF folder or ``"random"``), written to
    the COG ``out`` (``resolution``: an area mean at that coarser pixel size); returns it as :func:`open_prediction`
    does. ``reference``: a lidar CHM to evaluate against (any grid and CRS): the metrics land in
    ``attrs["evaluation"]`` and ``<out>.eval.json``. Other options as ``geodino canopy-height``'s."""
    s, bands = _scene(scene, bands)
    run = canopy_run(
        s, out, head=head, weights=weights, backbone_weights=backbone_weights, resolution=resolution, reference=reference,
        tiling=Tiling(tile=tile, overlap=overlap, batch_size=batch_size),
        choice=BandChoice(sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping),
        device=device, precision=precision, overwrite=overwrite, check_hash=check_hash, hooks=_hooks(progress),
    )  # fmt: skip
    da = open_prediction(run.result.out)
    if run.evaluation is not None:
        da.attrs["evaluation"] = run.evaluation
    return da


@speaks_python
def train_head(
    scene: SceneLike, labels: str | Path, out: str | Path, *, class_column: str | None = None,
    model: str = "dinov3_vitl16_sat493m", weights: str | None = None, layers: str | Sequence[int] = "-4,-3,-2,-1",
    sensor: str | None = None, bands: str | None = None, gsd: float | None = None, allow_clipping: bool = False,
    tile: int = 512, overlap: int = 64, batch_size: int = 4, epochs: int = 300, device: str = "auto",
    overwrite: bool = False, check_hash: bool = True, progress: Progress | None = None,
) -> TrainRun:  # fmt: skip
    """Train a linear land-cover head on frozen ``model`` features from ``labels`` (polygons in any vector format and
    CRS, or a label raster) and write it to ``out`` (.pt) with ``<out>.metrics.json``. Returns the run: ``.head`` (the
    file for :func:`land_cover`), ``.labels.names``, ``.result.losses`` and ``.result.info["metrics"]``."""
    s, bands = _scene(scene, bands)
    return train_run(
        s, labels, out, class_column=class_column, model=model, weights=weights, layers=layers, epochs=epochs,
        tiling=Tiling(tile=tile, overlap=overlap, batch_size=batch_size),
        choice=BandChoice(sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping),
        device=device, overwrite=overwrite, check_hash=check_hash, hooks=_hooks(progress),
    )  # fmt: skip


@speaks_python
def land_cover(
    scene: SceneLike, out: str | Path, *, head: str | Path, weights: str | None = None,
    probabilities: str | Path | None = None, vector: str | Path | None = None, sensor: str | None = None,
    bands: str | None = None, gsd: float | None = None, allow_clipping: bool = False, tile: int = 512, overlap: int = 64,
    batch_size: int = 4, device: str = "auto", precision: str = "fp32", overwrite: bool = False, check_hash: bool = True,
    progress: Progress | None = None,
) -> xr.DataArray:  # fmt: skip
    """Land-cover classes from a ``head`` written by :func:`train_head`, as a uint8 COG at ``out`` (colour table,
    nodata 255; ``probabilities``: also a float32 COG of class probabilities; ``vector``: also polygons, .gpkg).
    Returns the classes as :func:`open_prediction` does: class indexes, NaN for nodata, names and colours in attrs."""
    s, bands = _scene(scene, bands)
    run = land_cover_run(
        s, out, head=head, weights=weights, probabilities=probabilities, vector=vector,
        tiling=Tiling(tile=tile, overlap=overlap, batch_size=batch_size),
        choice=BandChoice(sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping),
        device=device, precision=precision, overwrite=overwrite, check_hash=check_hash, hooks=_hooks(progress),
    )  # fmt: skip
    return open_prediction(run.result.out)
