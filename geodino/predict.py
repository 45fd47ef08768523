r"""Prediction rasters at pixel resolution: canopy height (CHMv2) and land cover (a trained linear head).

Both are Jobs run by the streaming executor (:func:`~geodino.engine.stitch_job`): the same tile plan,
threaded reader, scene-fixed adapter and streaming stitcher (at stride 1: blending per pixel), with a
sink that writes metres or classes into an atomic COG. The predictors are
:class:`~geodino.tilemodel.TileModel`\ s of stride 1; which raster is written follows from the predictor.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from torch import Tensor

from geodino.adapter import BandAdapter
from geodino.engine import Progress, RunResult, stitch_job
from geodino.errors import InputError
from geodino.estimate import Stages
from geodino.features import FeatureExtractor, Tokens, autocast, check_precision, resolve_device
from geodino.job import BandChoice, Job, Tiling, as_job, own_outputs
from geodino.outputs import OutputSet
from geodino.scene import Scene, open_scene
from geodino.sidecars import class_pam, class_style, ramp_style, sidecar_targets, value_pam
from geodino.writer import GDAL_CACHE_MB, NODATA_CLASS, FeatureWriter, check_cog_name

if TYPE_CHECKING:
    from geodino.heads.chmv2 import CanopyHeightModel
    from geodino.landcover import LinearHead


class CanopyPredictor:
    """A canopy-height model on its device (a :class:`~geodino.tilemodel.TileModel` of stride 1):
    ``(B, 3, T, T)`` in [0, 1] -> ``(B, 1, T, T)`` metres."""

    out_stride = 1
    channels = ("canopy_height_m",)
    units = "metres"
    unit = "m"  # the band's unit type in the COG (GDAL's UNITTYPE)

    def __init__(self, model: CanopyHeightModel, device: str | None = "auto", precision: str = "fp32") -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        self.model = model.to(self.device).eval()
        self.spec = model.spec  # HeadSpec: the CHMv2 normalisation
        self.bands = tuple(self.spec.bands)

    def normalize(self, x: Tensor, valid: Tensor) -> Tensor:
        x = self.spec.normalize(x.to(self.device))
        return x * valid.to(self.device)[:, None]

    def __call__(self, x: Tensor) -> Tokens:
        with torch.inference_mode(), autocast(self.device, self.precision):
            heights = self.model(x)
        return Tokens(heights.float().cpu(), None, None)

    def describe(self) -> dict[str, object]:
        info = dict(getattr(self.model, "weights_info", None) or {})
        return {"model": self.spec.name, "weights": info, "random_weights": bool(info.get("random", True)), "mean": list(self.spec.mean),
                "std": list(self.spec.std), "device": str(self.device), "precision": self.precision}  # fmt: skip


class LandCoverPredictor:
    """Backbone features of the head's layers -> linear head -> logits upsampled x16 (bilinear), a
    :class:`~geodino.tilemodel.TileModel` of stride 1: ``(B, 3, T, T)`` -> ``(B, C, T, T)``, one channel per class
    (named by the head's record, ``info["names"]``); written as the argmax class, uint8."""

    out_stride = 1
    units = "class index"

    def __init__(self, extractor: FeatureExtractor, head: LinearHead, info: dict[str, object]) -> None:
        self.extractor = extractor
        self.head = head.to(extractor.device).eval()
        self.info = info
        n = int(head.n_classes)
        names = info.get("names")
        self.channels = tuple(str(v) for v in names) if isinstance(names, list) and len(names) == n else tuple(str(i) for i in range(n))
        self.patch, self.bands = extractor.patch, extractor.bands
        if n > NODATA_CLASS:
            raise InputError(f"a class raster holds at most {NODATA_CLASS} classes (uint8, nodata {NODATA_CLASS}); this head has {n}")

    def normalize(self, x: Tensor, valid: Tensor) -> Tensor:
        return self.extractor.normalize(x, valid)

    def __call__(self, x: Tensor) -> Tokens:
        feats = self.extractor(x).patches.to(self.extractor.device)
        with torch.inference_mode():
            logits = self.head(feats)
            up = F.interpolate(logits, scale_factor=self.patch, mode="bilinear", align_corners=False)
        return Tokens(up.float().cpu(), None, None)

    def colours(self) -> dict[int, tuple[int, int, int, int]]:
        """The colour table of the class raster: the head's recorded colours, else the default palette."""
        from geodino.labels import colormap

        table = colormap(len(self.channels))
        stored = self.info.get("colours")
        if isinstance(stored, list) and len(stored) == len(self.channels):
            table.update({i: (int(c[0]), int(c[1]), int(c[2]), 255) for i, c in enumerate(stored)})
        return table

    def describe(self) -> dict[str, object]:
        return {**self.extractor.describe(), "head": {k: v for k, v in self.info.items() if k != "metrics"}}


Predictor = CanopyPredictor | LandCoverPredictor


PredictResult = RunResult  # prediction rasters (predict_scene); probabilities in ``extra``


def predict_scene(
    scene: Job | Scene | str | Path | list[str],
    out: str | Path,
    predictor: Predictor,
    *,
    tiling: Tiling = Tiling(),
    choice: BandChoice = BandChoice(),
    overwrite: bool = False,
    resolution: float | None = None,
    probabilities: str | Path | None = None,
    progress: Progress | None = None,
    adapter: BandAdapter | None = None,
    outputs: OutputSet | None = None,
) -> PredictResult:
    """Predict over a whole scene at pixel resolution and write a COG at ``out``.

    A :class:`CanopyPredictor` writes float32 metres, NaN nodata (``resolution``: an area mean at that coarser
    pixel size). A :class:`LandCoverPredictor` writes the uint8 class index (argmax of the blended logits), nodata
    255, with its colour table; ``probabilities`` adds a float32 COG of softmax class probabilities. ``scene`` may
    be a prepared :class:`~geodino.job.Job`. The COG's band carries its statistics (and ``m`` as the unit of heights);
    ``OUT.tif.aux.xml`` and ``OUT.qml`` beside it name the classes (or the unit) for GDAL and QGIS
    (:mod:`geodino.sidecars`). ``outputs``: the run's :class:`~geodino.outputs.OutputSet` with the roles ``prediction``
    (and ``probabilities``, and the sidecars ``aux`` and ``style`` where it declares them); its owner commits.
    Nothing changes at the outputs if anything fails.
    """
    t_start = time.perf_counter()
    if not isinstance(predictor, (CanopyPredictor, LandCoverPredictor)):
        raise InputError(f"predict_scene writes canopy height or land cover; run a {type(predictor).__name__} with encode_scene")
    if not isinstance(scene, (Job, Scene)):
        scene = open_scene(scene)
    check_resolution(resolution, scene.scene if isinstance(scene, Job) else scene)
    classes = isinstance(predictor, LandCoverPredictor)
    if probabilities is not None and not classes:
        raise InputError("class probabilities come with a land-cover head, not a canopy-height model")
    paths = scene.scene.paths if isinstance(scene, Job) else scene.paths
    for path in (out, probabilities):
        if path is not None:
            check_cog_name(path)
    targets = {"prediction": out, "probabilities": probabilities, **sidecar_targets(out)}
    with own_outputs(outputs, targets, paths, overwrite) as outs, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        return _predict(as_job(scene, predictor, tiling, choice, adapter), outs, predictor, progress, resolution, t_start)


def _predict(
    job: Job, outs: OutputSet, predictor: Predictor, progress: Progress | None, resolution: float | None, t_start: float
) -> PredictResult:
    classes = isinstance(predictor, LandCoverPredictor)
    names = list(job.channels)
    main = FeatureWriter(outs.temp("prediction"), job.grid, 1, "cog", "uint8" if classes else "float32")
    prob = FeatureWriter(outs.temp("probabilities"), job.grid, job.dim, "cog", "float32") if "probabilities" in outs else None
    try:

        def sink(row0: int, block: np.ndarray) -> None:
            if not classes:
                main.write_rows(row0, block)
                return
            nodata = np.isnan(block).all(axis=-1)
            label = np.nan_to_num(block, nan=-np.inf).argmax(axis=-1).astype(np.uint8)  # < 255 classes (checked)
            label[nodata] = NODATA_CLASS
            main.write_rows(row0, label[..., None])
            if prob is not None:
                e = np.exp(block - np.nanmax(block, axis=-1, keepdims=True))
                prob.write_rows(row0, e / e.sum(axis=-1, keepdims=True))

        stages = Stages()
        model_seconds, skipped = stitch_job(job, predictor, sink, progress, stages=stages)
        product = "land_cover" if classes else "canopy_height"
        content = f"land-cover classes ({', '.join(names)})" if classes else "canopy height in metres"
        names_of = class_names_source(predictor.info) if isinstance(predictor, LandCoverPredictor) else None
        record = job.record(predictor, content, product=product, units=predictor.units, resolution=resolution,
                            tiles_skipped_empty=skipped, seconds_before_finish=stages.record(),
                            **({"class_names": names_of} if names_of else {}))  # fmt: skip
        meta = record.as_dict()
        extra: dict[str, Path] = {}
        if prob is not None:
            prob.finish({**meta, "product": "class_probabilities", "units": "probability"}, [f"p_{n}" for n in names])
            extra["probabilities"] = outs.path("probabilities")
        colours = predictor.colours() if isinstance(predictor, LandCoverPredictor) else None
        units = () if isinstance(predictor, LandCoverPredictor) else (predictor.unit,)
        main.finish(meta, ["class"] if classes else ["canopy_height_m"], colormap=colours, resolution=resolution, units=units)
        extra |= _write_sidecars(outs, predictor, main)
        stages.write = main.busy + (prob.busy if prob is not None else 0.0)
        stages.end()
    except BaseException:
        main.abort()
        if prob is not None:
            prob.abort()
        raise
    return RunResult(
        out=outs.path("prediction"), grid_shape=job.grid_shape, bands=1, tiles=len(job.plan), skipped=skipped,
        seconds=time.perf_counter() - t_start, model_seconds=model_seconds, adapter=job.adapter, metadata=meta,
        crs=job.scene.crs, extra=extra, stages=stages,
    )  # fmt: skip


def class_names_source(info: dict[str, object]) -> str:
    """Where a head's class names come from, for the record: train-head names classes by their values in the labels."""
    column, labels = info.get("class_column"), info.get("labels")
    where = f"column {column!r} of {labels}" if column else f"the label raster {labels}"
    return f"the class values in {where}, as recorded by train-head"


def _write_sidecars(outs: OutputSet, predictor: Predictor, main: FeatureWriter) -> dict[str, Path]:
    """``OUT.tif.aux.xml`` and ``OUT.qml`` at their temporaries, where the run declared them: ``{role: final path}``."""
    stats = main.stats.band(0)
    if isinstance(predictor, LandCoverPredictor):
        names, colours = list(predictor.channels), predictor.colours()
        values = predictor.info.get("classes")
        labels = [str(v) for v in values] if isinstance(values, list) and len(values) == len(names) else None
        labels = labels if labels != names else None  # the RAT's label column only where it says more than the names
        texts = {"aux": class_pam(names, colours, labels), "style": class_style(names, colours)}
    else:
        texts = {"aux": value_pam(predictor.unit, stats), "style": ramp_style(predictor.unit, stats)}
    written = {}
    for role, text in texts.items():
        if role in outs:
            outs.temp(role).write_text(text, encoding="utf-8")
            written[role] = outs.path(role)
    return written


def check_resolution(resolution: float | None, scene: Scene | None = None) -> float | None:
    """Refuse, before any work, a ``--resolution`` that is not positive or finer than the scene's pixels."""
    if resolution is not None and not (resolution > 0 and math.isfinite(resolution)):
        raise InputError(f"--resolution {resolution:g} must be positive (map units of the scene's CRS)")
    if resolution is not None and scene is not None:
        a = scene.transform
        if resolution < abs(a.a) or resolution < abs(a.e):
            raise InputError(f"--resolution {resolution:g} is finer than the scene's pixels ({abs(a.a):g} x {abs(a.e):g})")
        h, w = scene.shape
        if resolution > max(h * abs(a.e), w * abs(a.a)):
            raise InputError(f"--resolution {resolution:g} is larger than the scene ({w * abs(a.a):g} x {h * abs(a.e):g} map units)")
    return resolution
