"""``canopy-height``, ``train-head`` and ``land-cover``: prediction rasters from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from geodino.cli.app import TileBar, app, console, guard, print_notes, print_stages, warn
from geodino.cli.options import (
    AllowClipOpt,
    BandsOpt,
    CheckHashOpt,
    DeviceOpt,
    GsdOpt,
    OverlapOpt,
    OverwriteOpt,
    PrecisionOpt,
    ProfileOpt,
    SensorOpt,
    TileOpt,
    choice,
    tiling,
)  # fmt: skip
from geodino.errors import InputError

if TYPE_CHECKING:
    from geodino.predict import PredictResult


def _print_sidecars(res: PredictResult) -> None:
    """The files written beside a prediction COG for GIS tools."""
    from geodino.stacitem import item_path

    for role, what in (("aux", "GDAL sidecar (class names or unit, statistics)"), ("style", "QGIS style")):
        if role in res.extra:
            console.print(f"wrote {res.extra[role]}: {what}")
    for raster in (res.out, res.extra.get("probabilities")):
        if raster is not None and item_path(raster).exists():
            console.print(f"wrote {item_path(raster)}: STAC item")


def _stages(res: PredictResult) -> str:
    """`` (model 0.8 s, read wait 0.1 s, ...: I/O-bound)`` for the summary line."""
    return f" ({res.stages.line()})" if res.stages is not None else ""


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
    tile: TileOpt = 512,
    overlap: OverlapOpt = 64,
    batch_size: int = 2,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    resolution: Annotated[float | None, typer.Option(help="write at this coarser pixel size (map units), area mean")] = None,
    reference: Annotated[Path | None, typer.Option(help="lidar CHM to evaluate against (any grid and CRS)")] = None,
    overwrite: OverwriteOpt = False,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    check_hash: CheckHashOpt = True,
    profile: ProfileOpt = False,
) -> None:
    """Canopy height in metres with the CHMv2 head, as a COG; optionally evaluated against a reference CHM."""
    from geodino.predict_runs import canopy_run
    from geodino.runs import Hooks

    with TileBar() as bar:
        run = canopy_run(
            scene, out, head=head, weights=weights, backbone_weights=backbone_weights, tiling=tiling(tile, overlap, batch_size),
            choice=choice(sensor, bands, gsd, allow_clipping), device=device, precision=precision, resolution=resolution,
            reference=reference, overwrite=overwrite, check_hash=check_hash, hooks=Hooks(print_notes, warn, bar),
        )  # fmt: skip
    res, (h, w) = run.result, run.result.grid_shape
    console.print(f"wrote {res.out}: canopy height (m), {w}x{h} px, {res.crs}, {res.tiles} tiles in {res.seconds:.1f} s{_stages(res)}")
    console.print(f"preset: {res.adapter.reason}", markup=False, highlight=False)
    _print_sidecars(res)
    if profile and res.stages is not None:
        print_stages(res.stages, res.seconds)
    if run.evaluation is not None:
        ev = run.evaluation
        figures = f"MAE {ev['mae']:.3f} m, RMSE {ev['rmse']:.3f} m, bias {ev['bias']:+.3f} m, R2 {ev['r2']:.3f}"
        console.print(f"vs {reference}: {figures} ({ev['n']} px) -> {run.evaluation_path}")


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
    tile: TileOpt = 512,
    overlap: OverlapOpt = 64,
    epochs: int = 300,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    check_hash: CheckHashOpt = True,
) -> None:
    """Train a linear land-cover head (BatchNorm + 1x1 conv) on frozen features from labelled polygons or a label raster."""
    from geodino.predict_runs import train_run
    from geodino.runs import Hooks

    if len(scene) < 2:
        raise InputError("give the scene and the labels: geodino train-head SCENE... LABELS --out HEAD")
    *paths, labels = scene
    with TileBar("features") as bar, TileBar("training", unit="epochs", from_first=True) as trained:
        hooks = Hooks(print_notes, warn, bar, epochs=lambda epoch, n, loss: trained(epoch, n, f"loss {loss:.3f}"))
        run = train_run(
            paths, labels, out, class_column=class_column, model=model, weights=weights, layers=layers,
            tiling=tiling(tile, overlap, 4), choice=choice(sensor, bands, gsd, allow_clipping), epochs=epochs, device=device,
            overwrite=overwrite, check_hash=check_hash, hooks=hooks,
        )  # fmt: skip
    lab, losses = run.labels, run.result.losses
    metrics = cast("dict[str, Any]", run.result.info["metrics"])  # classification_metrics' JSON record
    m = metrics["validation"] or metrics["train"]
    which = "validation" if metrics["validation"] else "training (no held-out block)"
    console.print(f"wrote {run.head}: {lab.n_classes} classes ({', '.join(lab.names)}), loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    console.print(f"preset: {run.reason}", markup=False, highlight=False)
    ious = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in m["iou"].items())
    console.print(f"{which}: OA {m['overall_accuracy']:.3f}, mIoU {m['miou']:.3f}, IoU {ious}; {metrics['split']} -> {run.metrics}")


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
    tile: TileOpt = 512,
    overlap: OverlapOpt = 64,
    batch_size: int = 4,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    overwrite: OverwriteOpt = False,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    check_hash: CheckHashOpt = True,
    profile: ProfileOpt = False,
) -> None:
    """Land-cover classes (uint8 COG with a colour table, nodata 255) from a trained head."""
    from geodino.predict_runs import land_cover_run
    from geodino.runs import Hooks, split_output

    paths, out = split_output(scene, None, "geodino land-cover SCENE... OUT --head HEAD")
    with TileBar() as bar:
        run = land_cover_run(
            paths, out, head=head, weights=weights, probabilities=probabilities, vector=vector,
            tiling=tiling(tile, overlap, batch_size), choice=choice(sensor, bands, gsd, allow_clipping), device=device,
            precision=precision, overwrite=overwrite, check_hash=check_hash, hooks=Hooks(print_notes, warn, bar),
        )  # fmt: skip
    res, names = run.result, run.names
    summary = f"{len(names)} classes ({', '.join(names)}), {res.crs}, {res.tiles} tiles in {res.seconds:.1f} s{_stages(res)}"
    console.print(f"wrote {res.out}: {summary}")
    console.print(f"preset: {run.reason}", markup=False, highlight=False)
    _print_sidecars(res)
    if profile and res.stages is not None:
        print_stages(res.stages, res.seconds)
    if vector is not None:
        console.print(f"wrote {vector}: {run.polygons} polygons")
    if "probabilities" in res.extra:
        console.print(f"wrote {res.extra['probabilities']}: class probabilities")
