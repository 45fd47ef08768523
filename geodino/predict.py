"""Prediction rasters at pixel resolution: canopy height (CHMv2) and land cover (a trained linear head).

Both reuse the encoding engine: the same tile plan, threaded reader, scene-fixed adapter, streaming
stitcher (at stride 1: blending per pixel) and atomic COG writer. Predictors follow the extractor
interface (``normalize``, ``__call__`` -> :class:`~geodino.features.Tokens`, ``out_stride``, ``dim``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from torch import Tensor

import geodino
from geodino.adapter import BandAdapter
from geodino.engine import EncodeOptions, Progress, TileData, make_plan, prepare_scene, stream_tiles
from geodino.errors import InputError
from geodino.features import FeatureExtractor, Tokens, autocast, check_precision, resolve_device
from geodino.outputs import OutputSet, own_outputs
from geodino.scene import Scene, open_scene
from geodino.stitch import Stitcher
from geodino.writer import GDAL_CACHE_MB, NODATA_CLASS, FeatureWriter

if TYPE_CHECKING:
    from geodino.heads.chmv2 import CanopyHeightModel
    from geodino.landcover import LinearHead


class CanopyPredictor:
    """A canopy-height model on its device: ``(B, 3, T, T)`` in [0, 1] -> ``(B, 1, T, T)`` metres."""

    out_stride = 1
    dim = 1
    in_bands = 3

    def __init__(self, model: CanopyHeightModel, device: str | None = "auto", precision: str = "fp32") -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        self.model = model.to(self.device).eval()
        self.spec = model.spec  # HeadSpec: the CHMv2 normalisation
        self.patch = 16

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
    """Backbone features of the head's layers -> linear head -> logits upsampled x16 (bilinear):
    ``(B, 3, T, T)`` -> ``(B, C, T, T)``."""

    out_stride = 1

    def __init__(self, extractor: FeatureExtractor, head: LinearHead, info: dict[str, object]) -> None:
        self.extractor = extractor
        self.head = head.to(extractor.device).eval()
        self.info = info
        self.dim = int(head.n_classes)
        self.patch, self.spec, self.in_bands = extractor.patch, extractor.spec, extractor.in_bands

    def normalize(self, x: Tensor, valid: Tensor) -> Tensor:
        return self.extractor.normalize(x, valid)

    def __call__(self, x: Tensor) -> Tokens:
        feats = self.extractor(x).patches.to(self.extractor.device)
        with torch.inference_mode():
            logits = self.head(feats)
            up = F.interpolate(logits, scale_factor=self.patch, mode="bilinear", align_corners=False)
        return Tokens(up.float().cpu(), None, None)

    def describe(self) -> dict[str, object]:
        return {**self.extractor.describe(), "head": self.info}


@dataclass
class PredictResult:
    out: Path
    shape: tuple[int, int]
    tiles: int
    skipped: int
    seconds: float
    model_seconds: float
    adapter: BandAdapter
    metadata: dict[str, object] = field(repr=False)
    extra: dict[str, Path] = field(default_factory=dict)


def predict_scene(
    scene: Scene | str | Path | list[str],
    out: str | Path,
    predictor: CanopyPredictor | LandCoverPredictor,
    options: EncodeOptions = EncodeOptions(),
    kind: str = "canopy_height",
    progress: Progress | None = None,
    adapter: BandAdapter | None = None,
    resolution: float | None = None,
    probabilities: str | Path | None = None,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    class_names: list[str] | None = None,
    outputs: OutputSet | None = None,
) -> PredictResult:
    """Predict over a whole scene at pixel resolution and write a COG at ``out``.

    ``kind="canopy_height"``: float32 metres, NaN nodata. ``kind="land_cover"``: uint8 class index
    (argmax of the blended logits), nodata 255, colour table; ``probabilities`` adds a float32 COG of
    softmax class probabilities. ``outputs``: the run's :class:`~geodino.outputs.OutputSet` with the roles
    ``prediction`` (and ``probabilities``); its owner commits. Default: a set of its own, committed here.
    Nothing changes at the outputs if anything fails.
    """
    t_start = time.perf_counter()
    if not isinstance(scene, Scene):
        scene = open_scene(scene)
    classes = kind == "land_cover"
    if classes and predictor.dim > NODATA_CLASS:
        raise InputError(
            f"a class raster holds at most {NODATA_CLASS} classes (uint8, nodata {NODATA_CLASS}); this head has {predictor.dim}"
        )
    targets = {"prediction": out, "probabilities": probabilities}
    with own_outputs(outputs, targets, scene.paths, options.overwrite) as outs:
        return _predict(scene, outs, predictor, options, kind, progress, adapter, resolution, colormap, class_names, t_start)


def _predict(
    scene: Scene, outs: OutputSet, predictor: CanopyPredictor | LandCoverPredictor, options: EncodeOptions, kind: str,
    progress: Progress | None, adapter: BandAdapter | None, resolution: float | None,
    colormap: dict[int, tuple[int, int, int, int]] | None, class_names: list[str] | None, t_start: float,
) -> PredictResult:  # fmt: skip
    if adapter is None:
        scene, adapter = prepare_scene(scene, predictor.in_bands, options)
    plan = make_plan(scene, options, predictor.patch)
    classes = kind == "land_cover"
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        main = FeatureWriter(outs.temp("prediction"), scene.geobox, 1, "cog", "uint8" if classes else "float32")
        prob = FeatureWriter(outs.temp("probabilities"), scene.geobox, predictor.dim, "cog", "float32") if "probabilities" in outs else None
        try:

            def sink(row0: int, block: np.ndarray) -> None:
                if not classes:
                    main.write_rows(row0, block)
                    return
                nodata = np.isnan(block).all(axis=-1)
                label = np.nan_to_num(block, nan=-np.inf).argmax(axis=-1)
                if label.max(initial=0) >= NODATA_CLASS:  # (refused up front; never written modulo 256)
                    raise InputError(f"class index {label.max()} does not fit a uint8 class raster")
                label = label.astype(np.uint8)
                label[nodata] = NODATA_CLASS
                main.write_rows(row0, label[..., None])
                if prob is not None:
                    e = np.exp(block - np.nanmax(block, axis=-1, keepdims=True))
                    prob.write_rows(row0, e / e.sum(axis=-1, keepdims=True))

            stitcher = Stitcher(plan, predictor.dim, sink, options.blend_floor, stride=1)

            def on_tile(d: TileData, out_: np.ndarray, cv: np.ndarray, *_: object) -> None:
                stitcher.add(d.tile, out_, cv)

            model_seconds, skipped = stream_tiles(scene, plan, adapter, predictor, options, on_tile, stitcher.finish_row, progress)
            meta = {
                "version": geodino.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "product": kind,
                "units": "metres" if not classes else "class index",
                "scene": list(scene.paths),
                **predictor.describe(),
                "adapter": adapter.record(),
                "tile": plan.tile,
                "overlap": plan.overlap,
                "blend": f"raised cosine per pixel with floor {options.blend_floor}, zero on invalid pixels",
                "resolution": resolution,
            }
            extra: dict[str, Path] = {}
            if prob is not None:
                prob.finish({**meta, "product": "class_probabilities"}, [f"p_{n}" for n in class_names or []])
                extra["probabilities"] = outs.path("probabilities")
            main.finish(meta, ["class"] if classes else ["canopy_height_m"], colormap=colormap, resolution=resolution)
        except BaseException:
            main.abort()
            if prob is not None:
                prob.abort()
            raise
    return PredictResult(
        outs.path("prediction"), scene.shape, len(plan), skipped, time.perf_counter() - t_start, model_seconds, adapter, meta, extra
    )


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
