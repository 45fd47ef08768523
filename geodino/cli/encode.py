"""``geodino encode`` (a scene -> a georeferenced feature raster) and ``geodino info`` (what encode would do)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from geodino.cli.app import TileBar, app, console, guard, print_notes, print_stages, warn
from geodino.cli.options import (
    AllowClipOpt,
    BandsOpt,
    BatchOpt,
    CheckHashOpt,
    DeviceOpt,
    FeatureDtypeOpt,
    FormatOpt,
    GsdOpt,
    ModelOpt,
    OutOpt,
    OverlapOpt,
    OverwriteOpt,
    PrecisionOpt,
    ProfileOpt,
    SceneArg,
    SensorOpt,
    TileOpt,
    WeightsOpt,
)  # fmt: skip


@app.command("encode")
@guard
def encode_cmd(
    paths: SceneArg,
    model: ModelOpt = "dinov3_vitl16_sat493m",
    weights: WeightsOpt = None,
    out: OutOpt = None,
    sensor: SensorOpt = None,
    bands: BandsOpt = None,
    tile: TileOpt = 512,
    overlap: OverlapOpt = 64,
    batch_size: BatchOpt = 4,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    layers: Annotated[str, typer.Option(help="blocks to keep, e.g. -1 or 5,11,17,23 (concatenated)")] = "-1",
    fmt: FormatOpt = None,
    dtype: FeatureDtypeOpt = "float32",
    pca: Annotated[int | None, typer.Option(help="write K PCA components (fitted on a sample) instead of all features")] = None,
    tokens: Annotated[bool, typer.Option(help="also write CLS and storage tokens per tile (<out>.tokens.zarr)")] = False,
    overwrite: OverwriteOpt = False,
    read_threads: Annotated[int, typer.Option(help="threads reading tiles ahead of the model")] = 2,
    mixer: Annotated[Path | None, typer.Option(help="a trained BandMixer (.pt): --bands selects its N input bands")] = None,
    workers: Annotated[int | None, typer.Option(help="Zarr: start a local dask cluster of N worker processes")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Zarr: 'threads' (default) or a dask.distributed address")] = None,
    chunk: Annotated[int | None, typer.Option(help="Zarr: block side in cells (default 256, less for many workers)")] = None,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    check_hash: CheckHashOpt = True,
    profile: ProfileOpt = False,
) -> None:
    """Encode a scene: SCENE... OUT. Tiles on the 16-px patch grid, scene-fixed normalisation, streamed stitching.

    Zarr outputs are written block by block on a dask scheduler and resume after an interruption.
    """
    from geodino.cluster import ZarrResult
    from geodino.engine import EncodeOptions
    from geodino.runs import Hooks, encode_run, split_output
    from geodino.stacitem import item_path

    paths, target = split_output(paths, out, "geodino encode SCENE... OUT (or --out OUT)")
    options = EncodeOptions(
        tile=tile, overlap=overlap, batch_size=batch_size, read_threads=read_threads, sensor=sensor, bands=bands, gsd=gsd,
        allow_clipping=allow_clipping, fmt=fmt, dtype=dtype, pca=pca, tokens=tokens, overwrite=overwrite,
    )  # fmt: skip
    blockwise = options.named_format(target) == "zarr" and not pca and not tokens
    with TileBar(unit="blocks" if blockwise else "tiles") as bar:
        res = encode_run(
            paths, target, model=model, weights=weights, layers=layers, device=device, precision=precision, mixer=mixer,
            options=options, workers=workers, scheduler=scheduler, chunk=chunk, check_hash=check_hash,
            hooks=Hooks(notes=print_notes, warn=warn, progress=bar),
        )  # fmt: skip
    rows, cols = res.grid_shape
    crs = res.crs
    if isinstance(res, ZarrResult):
        resumed = f", {res.blocks_resumed} done before (resumed)" if res.blocks_resumed else ""
        blocks = f"{res.blocks} block{'s' if res.blocks != 1 else ''} of {res.chunk}x{res.chunk} cells"
        console.print(
            f"wrote {res.out}: {cols}x{rows} cells x {res.bands} bands, {crs}, {blocks}"
            f"{resumed}, {res.tiles_run} tiles run (halos included) on the {res.scheduler} in {res.seconds:.1f} s"
        )
    else:
        skipped = f" ({res.skipped} empty skipped)" if res.skipped else ""
        console.print(
            f"wrote {res.out}: {cols}x{rows} cells x {res.bands} bands, {crs}, {res.tiles} tiles{skipped} "
            f"in {res.seconds:.1f} s ({res.stages.line() if res.stages else f'model {res.model_seconds:.1f} s'}), "
            f"stretch: {res.adapter.stretch}"
        )
    console.print(f"wrote {item_path(res.out)}: STAC item")
    console.print(f"preset: {res.adapter.reason}", markup=False, highlight=False)
    if profile and not isinstance(res, ZarrResult) and res.stages is not None:
        print_stages(res.stages, res.seconds)


@app.command("export")
@guard
def export_cmd(
    store: Annotated[Path, typer.Argument(help="a feature Zarr store written by geodino encode")],
    out: Annotated[Path, typer.Argument(help="the COG to write")],
    dtype: FeatureDtypeOpt = "float32",
    overwrite: Annotated[bool, typer.Option(help="replace an existing output")] = False,
) -> None:
    """Write a feature COG from a Zarr store (streamed strip by strip, same tags as encode writes)."""
    from geodino.export import export_cog
    from geodino.stacitem import item_path

    with TileBar("exporting", unit="rows") as bar:
        res = export_cog(store, out, dtype, overwrite, progress=bar)
    console.print(f"wrote {res}: from {store}")
    console.print(f"wrote {item_path(res)}: STAC item")


@app.command("info")
@guard
def info_cmd(
    paths: SceneArg,
    model: ModelOpt = "dinov3_vitl16_sat493m",
    sensor: SensorOpt = None,
    bands: BandsOpt = None,
    tile: TileOpt = 512,
    overlap: OverlapOpt = 64,
    batch_size: Annotated[int, typer.Option(help="tiles per forward pass (for the memory and time estimates)")] = 4,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as one JSON document on stdout")] = False,
    estimate: Annotated[
        bool, typer.Option(help="also measure where the time would go: model (random weights), reads, writes (takes seconds)")
    ] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Describe a scene and what encode would do with it: bands and where their identities come from, nodata and
    invalid pixels, preset and why (or why none fits and a command that works), stretch and clipping, resampling,
    feature grid, tile plan, memory; with --estimate, seconds per tile of the model on --device, of the reads and of the
    writes, the total for the scene and whether it would be model-bound or I/O-bound. Exits 0 for any readable raster;
    2 for missing/unreadable files or bad options. Given an output geodino wrote (a COG or Zarr store), says what
    it is, its grid and how it was made (its run record).
    """
    from geodino.outputinfo import format_output, output_info
    from geodino.report import format_report, report_json, scene_report

    product = output_info(paths[0]) if len(paths) == 1 else None
    if product is not None:
        if as_json:
            typer.echo(json.dumps(product, indent=1, default=str))
            return
        for line in format_output(product):
            console.print(line, markup=False, highlight=False)
        return
    report = scene_report(paths, model, sensor, bands, tile, overlap, batch_size, gsd, allow_clipping, estimate, device)
    if as_json:
        typer.echo(report_json(report))
        return
    for line in format_report(report):
        console.print(line, markup=False, highlight=False)
