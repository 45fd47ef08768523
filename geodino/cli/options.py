"""Options shared by the commands (rasterio's ``rio/options.py`` pattern): one definition each, and builders
of the library's option values from them.

An option with a fixed set of values takes the library's own tuple (:mod:`geodino.choices`): the shell completes it,
``--help`` shows it and a value outside it is one line, exit 2, before any work. The library checks the same tuple
for its Python callers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from geodino import choices

if TYPE_CHECKING:
    from geodino.job import BandChoice, Tiling


def _completer(values: Callable[[], list[str]]) -> Callable[[str], list[str]]:
    """Shell completion of the ``values()`` that start with what was typed (nothing offered when they cannot be read)."""

    def complete(incomplete: str) -> list[str]:
        try:
            return [v for v in values() if v.startswith(incomplete)]
        except Exception:  # completion runs at each <TAB>: a broken preset folder must not print a traceback
            return []

    return complete


def choice_option(values: tuple[str, ...], help: str, *decls: str) -> Any:
    """A typer option taking one of ``values`` (a :mod:`geodino.choices` tuple), shown as ``[a|b]`` and completed."""

    def parse(value: str | None) -> str | None:
        if value is not None and value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}")
        return value

    metavar = "[" + "|".join(values) + "]"
    return typer.Option(*decls, help=help, parser=parse, metavar=metavar, autocompletion=_completer(lambda: list(values)))


def _device(value: str) -> str:
    if not choices.is_device(value):
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices.DEVICES)} or cuda:N")
    return value


def _presets() -> list[str]:
    from geodino.sensors import load_presets

    return sorted(load_presets())


def _models() -> list[str]:
    from geodino.models import list_models

    return list(list_models())


SceneArg = Annotated[list[str], typer.Argument(help="a raster, or several single-band rasters on one grid (band files)")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="output path (default: the last argument)")]
ModelOpt = Annotated[
    str,
    typer.Option(
        help="weights spec (geodino models lists them) or package.module:factory (a TileModel)", autocompletion=_completer(_models)
    ),
]
WeightsOpt = Annotated[str | None, typer.Option(help="checkpoint, HF folder or 'random' (default: search the cache)")]
SensorOpt = Annotated[
    str | None,
    typer.Option(
        help="sensor preset name (geodino sensors lists them) or YAML file (default: detected from evidence)",
        autocompletion=_completer(_presets),
    ),
]
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
DeviceOpt = Annotated[
    str,
    typer.Option(
        help="auto (CUDA when present), cpu, cuda, cuda:N or mps",
        parser=_device,
        metavar="[" + "|".join(choices.DEVICES) + "|cuda:N]",
        autocompletion=_completer(lambda: list(choices.DEVICES)),
    ),
]
PrecisionOpt = Annotated[str, choice_option(choices.PRECISIONS, "arithmetic of the model's forward pass")]
FormatOpt = Annotated[
    str | None, choice_option(choices.FORMATS, "must agree with OUT's extension (.tif: cog, .zarr: zarr), which decides", "--format")
]
FeatureDtypeOpt = Annotated[str, choice_option(choices.FEATURE_DTYPES, "data type of the features on disk")]
LayoutOpt = Annotated[str, choice_option(choices.LAYOUTS, "checkpoint layout: Meta's .pth or a Hugging Face folder")]
ProfileOpt = Annotated[bool, typer.Option(help="print where the time went: seconds per stage (streamed runs)")]
OverwriteOpt = Annotated[bool, typer.Option(help="replace an existing output (one geodino wrote)")]


def tiling(tile: int, overlap: int, batch_size: int, read_threads: int = 2) -> Tiling:
    from geodino.job import Tiling

    return Tiling(tile=tile, overlap=overlap, batch_size=batch_size, read_threads=read_threads)


def choice(sensor: str | None, bands: str | None, gsd: float | None, allow_clipping: bool) -> BandChoice:
    from geodino.job import BandChoice

    return BandChoice(sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping)
