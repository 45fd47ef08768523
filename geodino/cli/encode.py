"""``geodino encode`` (a scene -> a georeferenced feature raster) and ``geodino info`` (what encode would do)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from geodino.adapter import BandAdapter, prepare
from geodino.blocks import ModelRef
from geodino.cli.app import TileBar, app, console, err_console, guard, print_notes
from geodino.cluster import check_request, encode_to_zarr
from geodino.engine import (
    EncodeOptions,
    check_memory,
    check_options,
    check_outputs,
    encode_scene,
    encode_targets,
    estimate_memory,
    make_plan,
    n_params,
)  # fmt: skip
from geodino.errors import InputError, WeightsError
from geodino.export import export_cog
from geodino.features import FeatureExtractor, check_precision, parse_layers, resolve_device
from geodino.models import build_model, get_spec
from geodino.models.multiband import BandMixer
from geodino.models.vit import DinoVisionTransformer
from geodino.outputs import OutputSet
from geodino.report import format_report, report_json, scene_report
from geodino.scene import Scene, open_scene

SceneArg = Annotated[list[str], typer.Argument(help="a raster, or several single-band rasters on one grid (band files)")]
ModelOpt = Annotated[str, typer.Option(help="weights spec (geodino models lists them)")]
SensorOpt = Annotated[str | None, typer.Option(help="sensor preset name or YAML file (default: detected from evidence)")]
BandsOpt = Annotated[
    str | None, typer.Option(help="bands for R,G,B: common names (red,green,blue), band names (B04,B03,B02) or 1-based indexes (3,2,1)")
]
GsdOpt = Annotated[float | None, typer.Option(help="resample the scene to this many metres per pixel first (default: native)")]
CheckHashOpt = Annotated[
    bool, typer.Option("--check-hash/--no-check-hash", help="verify the sha256 prefix in the weights' file name (official names)")
]
AllowClipOpt = Annotated[bool, typer.Option(help="run even when the stretch clips more than half of a band's pixels (e.g. snow)")]
TileOpt = Annotated[int, typer.Option(help="tile side in pixels, a multiple of 16")]
OverlapOpt = Annotated[int, typer.Option(help="overlap between tiles in pixels, a multiple of 16")]


def _model(model: str, weights: str | None, check_hash: bool = True) -> DinoVisionTransformer:
    try:
        return build_model(model, weights, check_hash=check_hash)
    except WeightsError as exc:
        if weights is None:
            raise WeightsError(f"{exc} (or pass --weights random to try the pipeline with random weights)") from None
        raise


@app.command("encode")
@guard
def encode_cmd(
    paths: SceneArg,
    model: ModelOpt = "dinov3_vitl16_sat493m",
    weights: Annotated[str | None, typer.Option(help="checkpoint, HF folder or 'random' (default: search the cache)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output path (default: the last argument)")] = None,
    sensor: SensorOpt = None,
    bands: BandsOpt = None,
    tile: TileOpt = 512,
    overlap: OverlapOpt = 64,
    batch_size: Annotated[int, typer.Option(help="tiles per forward pass")] = 4,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16 or fp16")] = "fp32",
    layers: Annotated[str, typer.Option(help="blocks to keep, e.g. -1 or 5,11,17,23 (concatenated)")] = "-1",
    fmt: Annotated[str, typer.Option("--format", help="cog or zarr")] = "cog",
    dtype: Annotated[str, typer.Option(help="float32 or float16 on disk")] = "float32",
    pca: Annotated[int | None, typer.Option(help="write K PCA components (fitted on a sample) instead of all features")] = None,
    tokens: Annotated[bool, typer.Option(help="also write CLS and storage tokens per tile (<out>.tokens.zarr)")] = False,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output")] = False,
    read_threads: Annotated[int, typer.Option(help="threads reading tiles ahead of the model")] = 2,
    mixer: Annotated[Path | None, typer.Option(help="a trained BandMixer (.pt): --bands selects its N input bands")] = None,
    workers: Annotated[int | None, typer.Option(help="Zarr: start a local dask cluster of N worker processes")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Zarr: 'threads' (default) or a dask.distributed address")] = None,
    chunk: Annotated[int | None, typer.Option(help="Zarr: block side in cells (default 256, less for many workers)")] = None,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    check_hash: CheckHashOpt = True,
) -> None:
    """Encode a scene: SCENE... OUT. Tiles on the 16-px patch grid, scene-fixed normalisation, streamed stitching.

    Zarr outputs are written block by block on a dask scheduler and resume after an interruption.
    """
    if out is None:
        if len(paths) < 2:
            raise InputError("give the scene and the output: geodino encode SCENE... OUT (or --out OUT)")
        *paths, last = paths
        out = Path(last)
    options = EncodeOptions(
        tile, overlap, batch_size, fmt, dtype, pca, tokens, overwrite, sensor, bands, read_threads, gsd=gsd, allow_clipping=allow_clipping
    )
    blockwise = fmt == "zarr" and not pca and not tokens
    if (workers is not None or scheduler is not None or chunk is not None) and not blockwise:
        raise InputError("--workers/--scheduler/--chunk write a Zarr store block by block: use --format zarr without --pca/--tokens")
    check_options(options)
    scene = open_scene(paths)  # every input check runs before the model is built
    spec = get_spec(model)
    inputs = [*paths, *scene.paths, weights, mixer]  # a STAC item is an input too
    check_outputs(out, options, inputs)
    n_layers = len(parse_layers(layers))
    if pca is not None and pca > spec.arch.embed_dim * n_layers:
        raise InputError(f"--pca {pca}: the features have {spec.arch.embed_dim * n_layers} channels ({spec.name}, {n_layers} layer(s))")
    resolve_device(device), check_precision(precision)
    band_mixer = BandMixer.load(mixer) if mixer is not None else None
    mixer_notes: tuple[str, ...] = ()
    if band_mixer is not None:  # its stored band identities select the scene's bands; --bands may override them
        from dataclasses import replace

        from geodino.contract import map_inputs

        mapped = map_inputs(band_mixer.contract(), scene, sensor, bands, f"band mixer {mixer}", band_mixer.n_bands, strict=False)
        sensor, bands, mixer_notes = mapped.sensor, mapped.bands, mapped.notes
        options = replace(options, sensor=sensor, bands=bands)
    scene, adapter = prepare(scene, band_mixer.n_bands if band_mixer else spec.arch.in_chans, sensor, bands, gsd, allow_clipping)
    if band_mixer is not None:
        from geodino.contract import gsd_note

        mixer_notes += tuple(filter(None, [gsd_note(adapter.gsd, band_mixer.gsd, f"band mixer {mixer}")]))
    print_notes([*mixer_notes, *adapter.notes])
    plan = make_plan(scene, options, spec.patch_size)
    check_memory(estimate_memory(plan, spec.arch.embed_dim * n_layers, batch_size, n_params(spec), len(adapter.indexes)), f"--tile {tile}")
    if blockwise:
        _encode_blocks(
            scene, out, model, weights, layers, device, precision, mixer, options, chunk, scheduler, workers, check_hash, adapter
        )
        console.print(f"preset: {adapter.reason}", markup=False, highlight=False)
        return
    with OutputSet(encode_targets(out, options), inputs, overwrite) as outs:  # locked before the model is built
        net = _model(model, weights, check_hash)
        extractor = FeatureExtractor(net, layers, device, precision, band_mixer)
        if extractor.describe()["random_weights"]:
            err_console.print("[yellow]geodino: using RANDOM weights: the features carry no meaning[/]")
        with TileBar() as progress:
            result = encode_scene(scene, out, extractor, options, progress, adapter, outputs=outs)
        outs.commit()
    rows, cols = result.grid_shape
    skipped = f" ({result.skipped} empty skipped)" if result.skipped else ""
    console.print(
        f"wrote {result.out}: {cols}x{rows} cells x {result.bands} bands, {scene.crs}, {result.tiles} tiles{skipped} "
        f"in {result.seconds:.1f} s (model {result.model_seconds:.1f} s), stretch: {result.adapter.stretch}"
    )
    console.print(f"preset: {adapter.reason}", markup=False, highlight=False)


def _encode_blocks(
    scene: Scene, out: Path, model: str, weights: str | None, layers: str, device: str, precision: str,
    mixer: Path | None, options: EncodeOptions, chunk: int | None, scheduler: str | None, workers: int | None,
    check_hash: bool = True,
    adapter: BandAdapter | None = None,
) -> None:  # fmt: skip
    check_request(options, chunk, scheduler, workers)
    if weights not in (None, "random") and Path(weights).exists():
        weights = str(Path(weights).resolve())  # workers may start in other folders
    ref = ModelRef(
        model, weights, tuple(parse_layers(layers)), device, precision, str(mixer.resolve()) if mixer else None, check_hash=check_hash
    )
    try:
        extractor = ref.extractor()  # built once here; the threaded scheduler reuses it
    except WeightsError as exc:
        if weights is None:
            raise WeightsError(f"{exc} (or pass --weights random to try the pipeline with random weights)") from None
        raise
    random_weights = extractor.describe()["random_weights"]
    del extractor  # encode_to_zarr reuses the cached one, or frees it when workers build their own
    if random_weights:
        err_console.print("[yellow]geodino: using RANDOM weights: the features carry no meaning[/]")
    with TileBar(unit="blocks") as progress:
        res = encode_to_zarr(scene, out, ref, options, chunk, scheduler, workers, progress, adapter=adapter)
    rows, cols = res.grid_shape
    resumed = f", {res.blocks_resumed} done before (resumed)" if res.blocks_resumed else ""
    blocks = f"{res.blocks} block{'s' if res.blocks != 1 else ''} of {res.chunk}x{res.chunk} cells"
    console.print(
        f"wrote {res.out}: {cols}x{rows} cells x {res.bands} bands, {scene.crs}, {blocks}"
        f"{resumed}, {res.tiles_run} tiles run (halos included) on the {res.scheduler} in {res.seconds:.1f} s"
    )


@app.command("export")
@guard
def export_cmd(
    store: Annotated[Path, typer.Argument(help="a feature Zarr store written by geodino encode")],
    out: Annotated[Path, typer.Argument(help="the COG to write")],
    dtype: Annotated[str, typer.Option(help="float32 or float16 on disk")] = "float32",
    overwrite: Annotated[bool, typer.Option(help="replace an existing output")] = False,
) -> None:
    """Write a feature COG from a Zarr store (streamed strip by strip, same tags as encode writes)."""
    res = export_cog(store, out, dtype, overwrite)
    console.print(f"wrote {res}: from {store}")


@app.command("info")
@guard
def info_cmd(
    paths: SceneArg,
    model: ModelOpt = "dinov3_vitl16_sat493m",
    sensor: SensorOpt = None,
    bands: BandsOpt = None,
    tile: TileOpt = 512,
    overlap: OverlapOpt = 64,
    batch_size: Annotated[int, typer.Option(help="tiles per forward pass (for the memory estimate)")] = 4,
    gsd: GsdOpt = None,
    allow_clipping: AllowClipOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as one JSON document on stdout")] = False,
) -> None:
    """Describe a scene and what encode would do with it: bands and where their identities come from, nodata and
    invalid pixels, preset and why (or why none fits and a command that works), stretch and clipping, resampling,
    feature grid, tile plan, memory. Exits 0 for any readable raster; 2 for missing/unreadable files or bad options.
    """
    report = scene_report(paths, model, sensor, bands, tile, overlap, batch_size, gsd, allow_clipping)
    if as_json:
        typer.echo(report_json(report))
        return
    for line in format_report(report):
        console.print(line, markup=False, highlight=False)
