"""A stand-in TileModel with ViT-L/16 output shapes that costs (almost) nothing: for pipeline benchmarks.

``--model bench.standin:vitl`` (run from the checkout's root, or with it on PYTHONPATH): RGB in, 1024 random
float32 features per 16x16 patch out, ``(B, 3, T, T) -> (B, 1024, T/16, T/16)``: one block of random values
drawn once and returned for every batch (reruns give the same raster). Costs nothing: the pipeline around it
(reads, blending, compression, writing) is what the benchmarks measure.
"""

from __future__ import annotations

import torch

import geodino


class StandIn:
    bands = ("red", "green", "blue")
    out_stride = 16
    channels = tuple(f"f{i:04d}" for i in range(1024))

    def normalize(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return x  # geodino's reader already set invalid pixels to 0

    def __init__(self) -> None:
        self.base: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = x.shape
        shape = (b, len(self.channels), t // 16, t // 16)
        if self.base is None or self.base.shape[1:] != shape[1:] or self.base.shape[0] < b:
            self.base = torch.randn(max(b, 8), *shape[1:], generator=torch.Generator().manual_seed(0))
        return self.base[:b]  # the model's output as it would sit in its memory: nothing computed here

    def describe(self) -> dict[str, object]:
        return {"model": "vitl-shaped stand-in", "weights": "none", "weights_sha256": "none", "random_weights": True}


def vitl() -> geodino.TileModel:
    return StandIn()
