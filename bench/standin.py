"""A stand-in TileModel with ViT-L/16 output shapes that costs (almost) nothing: for pipeline benchmarks.

``--model bench.standin:vitl`` (run from the checkout's root, or with it on PYTHONPATH): RGB in, 1024 random
float32 features per 16x16 patch out, ``(B, 3, T, T) -> (B, 1024, T/16, T/16)``: :data:`BANK` tiles of random
values drawn once, handed out in turn as views (reruns give the same raster). Costs nothing: the pipeline around
it (reads, blending, compression, writing) is what the benchmarks measure.
"""

from __future__ import annotations

import torch

import geodino

#: Distinct random tiles the stand-in cycles through: more than a COG tile row spans (256 cells = 9 tiles of 512/64),
#: so no compressed tile sees a tile's values twice (repeats would compress better than features do).
BANK = 16


class StandIn:
    bands = ("red", "green", "blue")
    out_stride = 16
    channels = tuple(f"f{i:04d}" for i in range(1024))

    def normalize(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return x  # geodino's reader already set invalid pixels to 0

    def __init__(self) -> None:
        self.bank: torch.Tensor | None = None
        self.next = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = x.shape
        shape = (len(self.channels), t // 16, t // 16)
        n = BANK * max(1, -(-b // BANK))  # room for whole batches
        if self.bank is None or tuple(self.bank.shape[1:]) != shape or self.bank.shape[0] < b:
            self.bank = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
        if self.next + b > self.bank.shape[0]:
            self.next = 0
        out = self.bank[self.next : self.next + b]  # a view: nothing computed here
        self.next += b
        return out

    def describe(self) -> dict[str, object]:
        return {"model": "vitl-shaped stand-in", "weights": "none", "weights_sha256": "none", "random_weights": True}


def vitl() -> geodino.TileModel:
    return StandIn()
