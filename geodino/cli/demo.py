"""``geodino demo``: the main job on a generated scene (what ``make demo`` runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from geodino.cli.app import app, console, guard
from geodino.demo import load_or_random, run_demo


@app.command("demo")
@guard
def demo_cmd(
    model: Annotated[str, typer.Option(help="weights spec")] = "dinov3_vitl16_sat493m",
    weights: Annotated[str | None, typer.Option(help="checkpoint, HF folder or 'random' (default: search, else random)")] = None,
    size: Annotated[int, typer.Option(help="side of the generated image, a multiple of 16")] = 512,
    seed: int = 0,
) -> None:
    """Build a DINOv3 backbone, encode a generated scene, and print what happened."""
    net, why_random = load_or_random(model, weights)
    if why_random:
        console.print(f"[yellow]No real weights found, using RANDOM weights[/]: {why_random}", soft_wrap=True)
    r = run_demo(net, size=size, seed=seed)
    console.print(f"model      {r.model}: {r.params / 1e6:.2f}M parameters")
    note = "  [bold red](RANDOM: features carry no meaning)[/]" if r.random_weights else ""
    console.print(f"weights    {r.weights}{note}")
    console.print(f"input      generated RGB scene, normalised with the spec's mean/std: {r.input_shape}")
    console.print(f"features   patch grid {r.patch_features_shape} (B, D, H/16, W/16), CLS {r.cls_shape}")
    console.print(f"time       {r.seconds:.2f} s for one forward pass on the CPU")
    pcs = ", ".join(f"{v:.1%}" for v in r.pca_explained)
    console.print(f"PCA        first 3 components of the patch features explain {pcs} of the variance")
