"""Options shared by the commands (rasterio's ``rio/options.py`` pattern): one definition each, and builders
of the library's option values from them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from geodino.job import BandChoice, Tiling

SceneArg = Annotated[list[str], typer.Argument(help="a raster, or several single-band rasters on one grid (band files)")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="output path (default: the last argument)")]
ModelOpt = Annotated[str, typer.Option(help="weights spec (geodino models lists them) or package.module:factory (a TileModel)")]
WeightsOpt = Annotated[str | None, typer.Option(help="checkpoint, HF folder or 'random' (default: search the cache)")]
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
BatchOpt = Annotated[int, typer.Option(help="tiles per forward pass")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:N")]
PrecisionOpt = Annotated[str, typer.Option(help="fp32, bf16 or fp16")]
ProfileOpt = Annotated[bool, typer.Option(help="print where the time went: seconds per stage (streamed runs)")]
OverwriteOpt = Annotated[bool, typer.Option(help="replace an existing output (one geodino wrote)")]


def tiling(tile: int, overlap: int, batch_size: int, read_threads: int = 2) -> Tiling:
    from geodino.job import Tiling

    return Tiling(tile=tile, overlap=overlap, batch_size=batch_size, read_threads=read_threads)


def choice(sensor: str | None, bands: str | None, gsd: float | None, allow_clipping: bool) -> BandChoice:
    from geodino.job import BandChoice

    return BandChoice(sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping)
