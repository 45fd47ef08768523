"""``canopy-height``, ``train-head`` and ``land-cover``: prediction rasters from the shell."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from geodino.adapter import prepare
from geodino.cli.app import TileBar, app, console, err_console, guard, print_notes
from geodino.cli.encode import AllowClipOpt, BandsOpt, CheckHashOpt, GsdOpt, SensorOpt, _model
from geodino.contract import CONTRACT_KEY, gsd_note, map_inputs
from geodino.engine import EncodeOptions, check_memory, check_options, estimate_memory, make_plan
from geodino.errors import InputError
from geodino.features import FeatureExtractor, check_precision, parse_layers, resolve_device
from geodino.labels import load_labels
from geodino.landcover import colormap, load_head, save_head, train_head
from geodino.metrics import check_reference
from geodino.models import get_spec
from geodino.outputs import OutputSet, check_targets
from geodino.predict import CanopyPredictor, LandCoverPredictor, check_resolution, predict_scene
from geodino.scene import open_scene
from geodino.vectorize import check_vector_name

Tile = Annotated[int, typer.Option(help="tile side in pixels, a multiple of 16")]
Overlap = Annotated[int, typer.Option(help="overlap in pixels, a multiple of 16")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")]
Precision = Annotated[str, typer.Option(help="fp32, bf16 or fp16")]


def _random_note(random: bool) -> None:
    if random:
        err_console.print("[yellow]geodino: using RANDOM weights: the predictions carry no meaning[/]")


@app.command("canopy-height")
@guard
def canopy_height_cmd(
    scene: Annotated[str, typer.Argument(help="RGB scene (e.g. NEON, NAIP, Maxar)")],
    out: Annotated[Path, typer.Argument(help="output COG, float32 metres")],
    head: Annotated[str, typer.Option(help="canopy-height head spec")] = "dinov3_vitl16_chmv2",
    weights: Annotated[str | None, typer.Option(help="head .pth, HF folder, or 'random' (default: search)")] = None,
    backbone_weights: Annotated[str | None, typer.Option(help="backbone weights for a Meta head file")] = None,
    sensor: SensorOpt = None,
    bands: BandsOpt = None,
    tile: Tile = 512,
    overlap: Overlap = 64,
    batch_size: int = 2,
    device: Device = "auto",
    precision: Precision = "fp32",
    resolution: Annotated[float | None, typer.Option(help="write at this coarser pixel size (map units), area mean")] = None,
    reference: Annotated[Path | None, typer.Option(help="lidar CHM to evaluate against (any grid and CRS)")] = None,
    overwrite: bool = False,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    check_hash: CheckHashOpt = True,
) -> None:
    """Canopy height in metres with the CHMv2 head, as a COG; optionally evaluated against a reference CHM."""
    from geodino.heads.chmv2 import build_canopy_model, get_head
    from geodino.metrics import evaluate_height

    options = EncodeOptions(
        tile, overlap, batch_size, overwrite=overwrite, sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping
    )
    check_options(options)
    s = open_scene(scene)
    report = out.with_suffix(".eval.json") if reference is not None else None
    inputs = [scene, *s.paths, weights, backbone_weights, reference]
    targets = {"prediction": out, "evaluation": report}
    check_targets(targets, inputs, overwrite)
    check_resolution(resolution, s)
    resolve_device(device), check_precision(precision)
    if reference is not None:
        check_reference(reference, s.geobox)
    spec = get_head(head)
    s, adapter = prepare(s, 3, sensor, bands, gsd, allow_clipping)
    print_notes([*adapter.notes, *filter(None, [gsd_note(adapter.gsd, spec.gsd, f"canopy-height head {spec.name}")])])
    plan = make_plan(s, options)
    check_memory(estimate_memory(plan, 1, batch_size, 0, 3, stride=1), f"--tile {tile}")
    with OutputSet(targets, inputs, overwrite) as outs:
        model = build_canopy_model(head, weights, backbone_weights, check_hash=check_hash)
        predictor = CanopyPredictor(model, device, precision)
        _random_note(bool(predictor.describe()["random_weights"]))
        with TileBar() as progress:
            res = predict_scene(s, out, predictor, options, "canopy_height", progress, adapter, resolution, outputs=outs)
        ev = evaluate_height(outs.temp("prediction"), reference, outs.temp("evaluation"), prediction_name=out) if reference else None
        outs.commit()
    console.print(f"wrote {res.out}: canopy height (m), {s.shape[1]}x{s.shape[0]} px, {s.crs}, {res.tiles} tiles in {res.seconds:.1f} s")
    console.print(f"preset: {adapter.reason}", markup=False, highlight=False)
    if ev is not None:
        figures = f"MAE {ev['mae']:.3f} m, RMSE {ev['rmse']:.3f} m, bias {ev['bias']:+.3f} m, R2 {ev['r2']:.3f}"
        console.print(f"vs {reference}: {figures} ({ev['n']} px) -> {report}")


@app.command("train-head")
@guard
def train_head_cmd(
    scene: Annotated[
        list[str], typer.Argument(help="SCENE... LABELS: scene raster(s), then polygons (any vector format/CRS) or a label raster")
    ],
    out: Annotated[Path, typer.Option("--out", help="head file to write (.pt)")],
    class_column: Annotated[
        str | None, typer.Option(help="attribute holding the class (default: class/label/..., or the only column)")
    ] = None,
    model: Annotated[str, typer.Option(help="backbone spec")] = "dinov3_vitl16_sat493m",
    weights: Annotated[str | None, typer.Option(help="backbone weights or 'random'")] = None,
    layers: Annotated[str, typer.Option(help="blocks whose features are concatenated")] = "-4,-3,-2,-1",
    sensor: SensorOpt = None,
    bands: BandsOpt = None,
    tile: Tile = 512,
    overlap: Overlap = 64,
    epochs: int = 300,
    device: Device = "auto",
    overwrite: bool = False,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    check_hash: CheckHashOpt = True,
) -> None:
    """Train a linear land-cover head (BatchNorm + 1x1 conv) on frozen features from labelled polygons or a label raster."""
    if len(scene) < 2:
        raise InputError("give the scene and the labels: geodino train-head SCENE... LABELS --out HEAD")
    *scene, labels = scene
    if epochs < 1:
        raise InputError(f"--epochs {epochs}: give at least 1")
    options = EncodeOptions(tile, overlap, 4, sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping)
    check_options(options)
    s = open_scene(scene)
    json_path = out.with_suffix(".metrics.json")
    targets = {"head": out, "metrics": json_path}
    inputs = [*scene, *s.paths, labels, weights]
    check_targets(targets, inputs, overwrite)
    parse_layers(layers)
    s, adapter = prepare(s, 3, sensor, bands, gsd, allow_clipping)  # the grid the labels go onto
    print_notes(adapter.notes)
    make_plan(s, options)
    lab = load_labels(s, Path(labels), class_column)
    resolve_device(device)
    with OutputSet(targets, inputs, overwrite) as outs:
        extractor = FeatureExtractor(_model(model, weights, check_hash), layers, device)
        _random_note(bool(extractor.describe()["random_weights"]))
        with TileBar("features") as progress:
            res = train_head(s, lab, extractor, options, epochs=epochs, progress=progress, adapter=adapter)
        save_head(outs.temp("head"), res.head, res.info)
        metrics = cast("dict[str, Any]", res.info["metrics"])  # classification_metrics' JSON record
        outs.temp("metrics").write_text(json.dumps(metrics, indent=2))
        path = outs.commit()["head"]
    m = metrics["validation"] or metrics["train"]
    which = "validation" if metrics["validation"] else "training (no held-out block)"
    console.print(f"wrote {path}: {lab.n_classes} classes ({', '.join(lab.names)}), loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}")
    console.print(f"preset: {adapter.reason}", markup=False, highlight=False)
    ious = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in m["iou"].items())
    console.print(f"{which}: OA {m['overall_accuracy']:.3f}, mIoU {m['miou']:.3f}, IoU {ious}; {metrics['split']} -> {json_path}")


@app.command("land-cover")
@guard
def land_cover_cmd(
    scene: Annotated[list[str], typer.Argument(help="SCENE... OUT: scene raster(s), then the output COG")],
    head: Annotated[Path, typer.Option("--head", help="head file from train-head")],
    weights: Annotated[str | None, typer.Option(help="backbone weights or 'random' (must match the head's)")] = None,
    probabilities: Annotated[Path | None, typer.Option(help="also write class probabilities (float32 COG)")] = None,
    vector: Annotated[Path | None, typer.Option(help="also write the classes as polygons (.gpkg)")] = None,
    sensor: SensorOpt = None,
    bands: BandsOpt = None,
    tile: Tile = 512,
    overlap: Overlap = 64,
    batch_size: int = 4,
    device: Device = "auto",
    precision: Precision = "fp32",
    overwrite: bool = False,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    check_hash: CheckHashOpt = True,
) -> None:
    """Land-cover classes (uint8 COG with a colour table, nodata 255) from a trained head."""
    from dataclasses import replace

    from geodino.vectorize import polygonize

    if len(scene) < 2:
        raise InputError("give the scene and the output: geodino land-cover SCENE... OUT --head HEAD")
    *paths, target = scene
    out = Path(target)
    options = EncodeOptions(
        tile, overlap, batch_size, overwrite=overwrite, sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping
    )
    check_options(options)
    s = open_scene(paths)
    targets = {"prediction": out, "probabilities": probabilities, "vector": vector}
    inputs = [*paths, *s.paths, head, weights]
    check_targets(targets, inputs, overwrite)
    if vector is not None:
        check_vector_name(vector)
    lc_head, info = load_head(head)
    resolve_device(device), check_precision(precision)
    # checked by load_head; None for heads written before contracts: bands chosen as before, with a note
    contract = cast("Mapping[str, Any] | None", info.get(CONTRACT_KEY))
    if contract is not None and len(contract["bands"]) != 3:
        raise InputError(f"{head} was trained on {len(contract['bands'])} input bands (a band mixer): land-cover feeds 3")
    inputs_map = map_inputs(contract, s, sensor, bands, f"head {head.name}", 3)
    options = replace(options, sensor=inputs_map.sensor, bands=inputs_map.bands)
    s, adapter = prepare(s, 3, inputs_map.sensor, inputs_map.bands, gsd, allow_clipping)
    trained_gsd = contract.get("gsd") if contract else None
    print_notes([*inputs_map.notes, *adapter.notes, *filter(None, [gsd_note(adapter.gsd, trained_gsd, f"head {head.name}")])])
    plan = make_plan(s, options)
    layers = cast("Sequence[int]", info["layers"])  # load_head checked the record's fields
    names = [str(n) for n in cast("Sequence[object]", info["names"])]
    dim = get_spec(str(info["model"])).arch.embed_dim * len(layers)
    if dim != lc_head.bn.num_features:
        raise InputError(f"{head} expects {lc_head.bn.num_features} feature channels, {info['model']} gives {dim}")
    check_memory(estimate_memory(plan, len(names), batch_size, 0, 3, stride=1), f"--tile {tile}")
    with OutputSet(targets, inputs, overwrite) as outs:
        extractor = FeatureExtractor(_model(str(info["model"]), weights, check_hash), layers, device, precision)
        _random_note(bool(extractor.describe()["random_weights"]))
        predictor = LandCoverPredictor(extractor, lc_head, {k: v for k, v in info.items() if k not in ("metrics",)})
        with TileBar() as progress:
            res = predict_scene(
                s, out, predictor, options, "land_cover", progress, adapter, None, probabilities, colormap(len(names)), names, outputs=outs
            )
        n = polygonize(outs.temp("prediction"), outs.temp("vector"), names, layer=vector.stem) if vector is not None else None
        outs.commit()
    console.print(f"wrote {res.out}: {len(names)} classes ({', '.join(names)}), {s.crs}, {res.tiles} tiles in {res.seconds:.1f} s")
    console.print(f"preset: {adapter.reason}", markup=False, highlight=False)
    if vector is not None:
        console.print(f"wrote {vector}: {n} polygons")
    for p in res.extra.values():
        console.print(f"wrote {p}: class probabilities")
