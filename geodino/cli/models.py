"""``geodino models``, ``download``, ``check-weights`` and ``convert``: the weights registry from the shell; ``geodino sensors``:
the sensor presets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.measure import Measurement
from rich.table import Column, Table

from geodino.cli.app import app, console, guard
from geodino.cli.options import LayoutOpt
from geodino.errors import InputError
from geodino.outputs import OutputSet

if TYPE_CHECKING:
    from geodino.sensors import SensorPreset

WeightsOpt = Annotated[str | None, typer.Option("--weights", help="checkpoint file, HF folder, or 'random'")]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="weights cache (default $GEODINO_CACHE or ~/.cache/geodino)")]


@app.command("models")
@guard
def models_cmd(pattern: Annotated[str, typer.Argument(help="glob over names")] = "*") -> None:
    """List the weights specs geodino can build."""
    from geodino.estimate import n_params
    from geodino.models import get_spec, list_models

    name_col, file_col = Column("name", no_wrap=True), Column("official file", no_wrap=True)
    table = Table(name_col, "arch", "params", "bands", "mean / std", file_col, title="DINOv3 weights specs")
    names = list_models(pattern)
    if not names:
        raise InputError(f"no model name matches {pattern!r} (a glob over whole names, e.g. '*sat*'): {', '.join(list_models())}")
    for name in names:
        s = get_spec(name)
        a = s.arch
        stats = f"{s.mean} / {s.std}"
        params = f"{n_params(s) / 1e6:,.1f}M"
        table.add_row(name, f"D={a.embed_dim} x{a.depth} {a.ffn}", params, ",".join(s.bands), stats, s.file_name or "(random only)")
    if not console.is_terminal:  # a pipe or a log: the table's natural width, names never cut to fit 80 columns
        table.width = max(console.width, Measurement.get(console, console.options.update_width(10_000), table).maximum)
    console.print(table)


@app.command("sensors")
@guard
def sensors_cmd(pattern: Annotated[str, typer.Argument(help="glob over names")] = "*") -> None:
    """List the sensor presets --sensor takes (and detection chooses from): bands fed as R,G,B, scaling, stretch."""
    import fnmatch

    from geodino.sensors import load_presets, sensors_dir

    presets = load_presets()
    names = sorted(n for n in presets if fnmatch.fnmatchcase(n, pattern))
    if not names:
        raise InputError(f"no sensor preset matches {pattern!r} (a glob over whole names, e.g. '*landsat*'): {', '.join(sorted(presets))}")
    columns = (Column("name", no_wrap=True), "data", "R,G,B", "scale, offset", "stretch", "description")
    table = Table(*columns, title=f"sensor presets ({sensors_dir()})")
    for name in names:
        table.add_row(*_preset_row(presets[name]))
    if not console.is_terminal:  # a pipe or a log: the table's natural width, as for models
        table.width = max(console.width, Measurement.get(console, console.options.update_width(10_000), table).maximum)
    console.print(table)


def _preset_row(p: SensorPreset) -> tuple[str, ...]:
    """A preset's row in ``geodino sensors``: name, data types it takes, bands fed as R,G,B, scaling, stretch, description."""
    lo_hi = f"{p.stretch_end('lo'):g} to {p.stretch_end('hi'):g}" if p.percentiles is None else ""
    stretch = f"percentiles {p.percentiles[0]:g}-{p.percentiles[1]:g}" if p.percentiles else lo_hi
    offset = p.offset if isinstance(p.offset, str) else f"{p.offset:g}"
    return p.name, ",".join(p.match_dtype) or "any", ",".join(p.rgb), f"{p.scale:g}, {offset}", stretch, p.description


@app.command("download")
@guard
def download_cmd(
    model: Annotated[str, typer.Argument(help="spec name, e.g. dinov3_vitl16_sat493m")],
    url: Annotated[str, typer.Option(help="the signed URL from Meta's access e-mail")],
    cache_dir: CacheOpt = None,
    check_hash: Annotated[bool, typer.Option(help="verify the sha256 prefix in the file name")] = True,
    deadline: Annotated[
        float | None, typer.Option(help="seconds allowed for the whole transfer (default: max(600, size / 100 kB/s))")
    ] = None,
) -> None:
    """Download a checkpoint (a backbone, or the CHMv2 head) into the cache (temporary name, verified, loaded, then kept).

    A file already in the cache is checked the same way and downloaded again when it fails; a file that
    does not load is removed from the cache."""
    from geodino.heads.chmv2 import HEADS, build_canopy_model
    from geodino.models import build_model, download, get_spec

    if model in HEADS:
        head = HEADS[model]
        # loading proves the head file fits (the backbone is separate); download() removes a file that does not
        path = download(
            url,
            spec=head,
            cache=cache_dir,
            check_hash=check_hash,
            deadline=deadline,
            verify=lambda p: build_canopy_model(head, p, "random", check_hash=False),
        )
        console.print(f"{head.name}: head weights ready at {path} (the backbone {head.backbone} is downloaded on its own)")
        return
    spec = get_spec(model)
    # loading proves the file fits the spec (download() already checked the hash) and removes it when not
    path = download(
        url, spec=spec, cache=cache_dir, check_hash=check_hash, deadline=deadline, verify=lambda p: build_model(spec, p, check_hash=False)
    )
    console.print(f"{spec.name}: weights ready at {path}")


@app.command("check-weights")
@guard
def check_weights_cmd(model: str, weights: WeightsOpt = None, cache_dir: CacheOpt = None, check_hash: bool = True) -> None:
    """Find and load a model's weights, and say where they came from."""
    from geodino.models import build_model

    m = build_model(model, weights, cache=cache_dir, check_hash=check_hash)
    info = m.weights_info
    assert info is not None  # build_model records where the weights came from
    verified = f", sha256 prefix {info.hash_verified} verified" if info.hash_verified else ""
    console.print(f"{info.spec}: loaded {info.source} ({info.layout} layout{verified})")


@app.command("convert")
@guard
def convert_cmd(
    model: str,
    src: Annotated[str, typer.Argument(help="checkpoint to read (Meta .pth, .safetensors or HF folder)")],
    dst: Annotated[Path, typer.Argument(help="where to write")],
    to: LayoutOpt = "hf",
    check_hash: bool = True,
) -> None:
    """Convert a checkpoint between Meta's and Hugging Face's layouts."""
    from geodino.models import build_model, save_checkpoint

    if dst.exists() or dst.is_symlink():
        raise InputError(f"{dst} exists; choose a new path")
    with OutputSet({"checkpoint": dst}, [src]) as outs:
        save_checkpoint(build_model(model, src, check_hash=check_hash), outs.temp("checkpoint"), layout=to)
        outs.commit()
    console.print(f"{model}: wrote {to} checkpoint {dst}")
