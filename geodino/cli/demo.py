"""``geodino demo``: the main job on a real or generated scene (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from geodino.cli.app import TileBar, app, console, guard


@app.command("demo")
@guard
def demo_cmd(
    model: Annotated[str, typer.Option(help="weights spec")] = "dinov3_vitl16_sat493m",
    weights: Annotated[str | None, typer.Option(help="checkpoint, HF folder or 'random' (default: search, else random)")] = None,
    out_dir: Annotated[Path, typer.Option(help="where features.tif and features_pca.png go")] = Path("demo_output"),
    scene: Annotated[str | None, typer.Option(help="scene to encode (default: ../shared/data NAIP crop, else generated)")] = None,
    tile: int = 512,
    overlap: int = 64,
    check_hash: Annotated[
        bool, typer.Option("--check-hash/--no-check-hash", help="verify the sha256 prefix in the weights' file name")
    ] = True,
) -> None:
    """Encode a whole scene into a georeferenced feature COG plus a PCA quicklook, and say what happened."""
    from geodino.demo import load_or_random, run_demo

    net, why_random = load_or_random(model, weights, check_hash)
    if why_random:
        console.print(f"[bold yellow]No real weights found, using RANDOM weights[/]: {why_random}")
    with TileBar() as progress:
        r = run_demo(net, out_dir, scene, tile, overlap, progress=progress)
    res = r.result
    n_params = sum(p.numel() for p in net.parameters())
    console.print(f"scene      {r.scene} ({r.scene_origin})")
    console.print(f"adapter    {res.adapter.preset}: bands {', '.join(res.adapter.names)}; {res.adapter.stretch}")
    console.print(f"preset     {res.adapter.reason}", markup=False, highlight=False)
    console.print(f"model      {net.spec.name if net.spec else model}: {n_params / 1e6:.2f}M parameters")
    note = "  [bold red](RANDOM: the features and the picture carry no meaning)[/]" if r.random_weights else ""
    console.print(f"weights    {net.weights_info.source if net.weights_info else '?'}{note}")
    rows, cols = res.grid_shape
    grid = cast("dict[str, object]", res.metadata["scene_grid"])
    console.print(f"features   {r.features}: {cols}x{rows} cells x {res.bands} bands, {grid['crs']}")
    console.print(f"time       {res.tiles} tiles in {res.seconds:.1f} s (model {res.model_seconds:.1f} s)")
    console.print(f"quicklook  {r.quicklook}: first 3 PCA components of the features as RGB")
