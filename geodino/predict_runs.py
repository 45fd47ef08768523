"""The prediction commands as library calls: ``canopy-height``, ``train-head`` and ``land-cover``.

Each checks every input and output first, prepares one :class:`~geodino.job.Job`, builds the model, writes
its files through one :class:`~geodino.outputs.OutputSet` (evaluation, metrics and polygons included) and
commits them together; nothing is left behind on failure. The CLI only prints what they return.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from geodino.contract import CONTRACT_KEY, gsd_note, map_inputs
from geodino.device import check_precision, resolve_device
from geodino.errors import InputError
from geodino.estimate import check_memory, job_memory
from geodino.features import FeatureExtractor, check_layers, feature_card, parse_layers
from geodino.job import BandChoice, Outputs, Tiling, prepare_job
from geodino.labels import Labels, load_labels
from geodino.landcover import TrainResult, load_head, save_head, train_head
from geodino.metrics import check_reference
from geodino.models import get_spec
from geodino.predict import CanopyPredictor, LandCoverPredictor, PredictResult, check_resolution, predict_scene
from geodino.runs import Hooks, given_paths, load_backbone, random_note, scene_of
from geodino.scene import Scene
from geodino.sidecars import sidecar_targets
from geodino.stacitem import with_items
from geodino.tilemodel import ModelCard
from geodino.vectorize import check_vector_name
from geodino.writer import check_cog_name


@dataclass
class CanopyRun:
    result: PredictResult
    evaluation: dict[str, Any] | None
    evaluation_path: Path | None


def canopy_run(
    scene: str | Path | Sequence[str | Path] | Scene, out: str | Path, *, head: str = "dinov3_vitl16_chmv2", weights: str | None = None,
    backbone_weights: str | None = None, tiling: Tiling = Tiling(batch_size=2), choice: BandChoice = BandChoice(),
    device: str = "auto", precision: str = "fp32", resolution: float | None = None, reference: str | Path | None = None,
    overwrite: bool = False, check_hash: bool = True, hooks: Hooks | None = None,
) -> CanopyRun:  # fmt: skip
    """``geodino canopy-height``: metres from the CHMv2 head as a COG (and ``<out>.eval.json`` against ``reference``)."""
    from geodino.heads.chmv2 import build_canopy_model, get_head
    from geodino.metrics import evaluate_height

    hooks = hooks or Hooks()
    tiling.check()
    s = scene_of(scene)
    out = Path(out)
    report = out.with_suffix(".eval.json") if reference is not None else None
    inputs = [*given_paths(scene), *s.paths, weights, backbone_weights, reference]
    check_cog_name(out)
    outputs = Outputs.of(with_items({"prediction": out, **sidecar_targets(out), "evaluation": report}), inputs, overwrite)  # checked here
    check_resolution(resolution, s)
    resolve_device(device), check_precision(precision)
    if reference is not None:
        check_reference(Path(reference), s.geobox)
    spec = get_head(head)
    job = prepare_job(s, ModelCard(tuple(spec.bands), 1, CanopyPredictor.channels), tiling=tiling, choice=choice, outputs=outputs)
    hooks.notes([*job.adapter.notes, *filter(None, [gsd_note(job.adapter.gsd, spec.gsd, f"canopy-height head {spec.name}")])])
    check_memory(job_memory(job), f"--tile {tiling.tile}")
    with outputs.open() as outs:
        predictor = CanopyPredictor(build_canopy_model(head, weights, backbone_weights, check_hash=check_hash), device, precision)
        random_note(predictor, hooks, "predictions")
        res = predict_scene(job, out, predictor, resolution=resolution, progress=hooks.progress, outputs=outs)
        ev = evaluate_height(outs.temp("prediction"), Path(reference), outs.temp("evaluation"), prediction_name=out) if reference else None
        outs.commit()
    return CanopyRun(res, ev, report)


@dataclass
class TrainRun:
    result: TrainResult
    labels: Labels
    head: Path
    metrics: Path
    reason: str  # why this preset (the adapter's reason)


def train_run(
    scene: str | Path | Sequence[str | Path] | Scene, labels: str | Path, out: str | Path, *, class_column: str | None = None,
    model: str = "dinov3_vitl16_sat493m", weights: str | None = None, layers: str | Sequence[int] = "-4,-3,-2,-1",
    tiling: Tiling = Tiling(), choice: BandChoice = BandChoice(), epochs: int = 300, device: str = "auto",
    overwrite: bool = False, check_hash: bool = True, hooks: Hooks | None = None,
) -> TrainRun:  # fmt: skip
    """``geodino train-head``: a linear land-cover head (``out``, .pt) and its metrics (``<out>.metrics.json``)."""
    hooks = hooks or Hooks()
    if epochs < 1:
        raise InputError(f"--epochs {epochs}: give at least 1")
    tiling.check()
    s = scene_of(scene)
    out = Path(out)
    json_path = out.with_suffix(".metrics.json")
    outputs = Outputs.of({"head": out, "metrics": json_path}, [*given_paths(scene), *s.paths, labels, weights], overwrite)  # checked here
    parse_layers(layers)
    spec = get_spec(model)
    card = feature_card(spec.arch.depth, spec.arch.embed_dim, spec.bands, layers)
    job = prepare_job(s, card, tiling=tiling, choice=choice, outputs=outputs)
    hooks.notes(job.adapter.notes)
    lab = load_labels(job.scene, Path(labels), class_column)  # onto the grid the model sees
    check_layers(spec.arch.depth, layers)
    resolve_device(device)
    with outputs.open() as outs:
        extractor = FeatureExtractor(load_backbone(model, weights, check_hash), layers, device)
        random_note(extractor, hooks)
        res = train_head(job, lab, extractor, epochs=epochs, progress=hooks.progress, epoch_progress=hooks.epochs)
        save_head(outs.temp("head"), res.head, res.info)
        outs.temp("metrics").write_text(json.dumps(res.info["metrics"], indent=2))
        outs.commit()
    return TrainRun(res, lab, out, json_path, job.adapter.reason)


@dataclass
class LandCoverRun:
    result: PredictResult
    names: list[str]
    polygons: int | None
    reason: str


def land_cover_run(
    scene: str | Path | Sequence[str | Path] | Scene, out: str | Path, *, head: str | Path, weights: str | None = None,
    probabilities: str | Path | None = None, vector: str | Path | None = None, tiling: Tiling = Tiling(),
    choice: BandChoice = BandChoice(), device: str = "auto", precision: str = "fp32", overwrite: bool = False,
    check_hash: bool = True, hooks: Hooks | None = None,
) -> LandCoverRun:  # fmt: skip
    """``geodino land-cover``: classes (uint8 COG, colour table, nodata 255) from a trained head; optionally class
    probabilities (float32 COG) and polygons (``vector``, .gpkg). The head's bands are found by identity."""
    from geodino.vectorize import polygonize

    hooks = hooks or Hooks()
    tiling.check()
    s = scene_of(scene)
    out, head = Path(out), Path(head)
    targets = with_items({"prediction": out, **sidecar_targets(out), "probabilities": probabilities, "vector": vector})
    for raster in (out, probabilities):
        if raster is not None:
            check_cog_name(raster)
    outputs = Outputs.of(targets, [*given_paths(scene), *s.paths, head, weights], overwrite)  # checked here
    if vector is not None:
        check_vector_name(Path(vector))
    lc_head, info = load_head(head)
    resolve_device(device), check_precision(precision)
    # checked by load_head; None for heads written before contracts: bands chosen as before, with a note
    contract = cast("Mapping[str, Any] | None", info.get(CONTRACT_KEY))
    if contract is not None and len(contract["bands"]) != 3:
        raise InputError(f"{head} was trained on {len(contract['bands'])} input bands (a band mixer): land-cover feeds 3")
    mapped = map_inputs(contract, s, choice.sensor, choice.bands, f"head {head.name}", 3)
    choice = replace(choice, sensor=mapped.sensor, bands=mapped.bands)
    layers = cast("Sequence[int]", info["layers"])  # load_head checked the record's fields
    names = [str(n) for n in cast("Sequence[object]", info["names"])]
    spec = get_spec(str(info["model"]))
    dim = spec.arch.embed_dim * len(layers)
    if dim != lc_head.bn.num_features:
        raise InputError(f"{head} expects {lc_head.bn.num_features} feature channels, {info['model']} gives {dim}")
    job = prepare_job(s, ModelCard(tuple(spec.bands), 1, tuple(names)), tiling=tiling, choice=choice, outputs=outputs)
    trained_gsd = contract.get("gsd") if contract else None
    hooks.notes([*mapped.notes, *job.adapter.notes, *filter(None, [gsd_note(job.adapter.gsd, trained_gsd, f"head {head.name}")])])
    check_memory(job_memory(job), f"--tile {tiling.tile}")
    with outputs.open() as outs:
        extractor = FeatureExtractor(load_backbone(str(info["model"]), weights, check_hash), layers, device, precision)
        random_note(extractor, hooks, "predictions")
        predictor = LandCoverPredictor(extractor, lc_head, info)
        res = predict_scene(job, out, predictor, probabilities=probabilities, progress=hooks.progress, outputs=outs)
        n = polygonize(outs.temp("prediction"), outs.temp("vector"), names, layer=Path(vector).stem) if vector is not None else None
        outs.commit()
    return LandCoverRun(res, names, n, job.adapter.reason)
