"""Small generated scenes and a patch-local stand-in model for the encoding tests."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from geodino.features import Tokens
from geodino.models import get_spec

CRS = "EPSG:32633"
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)


def coordinate_raster(h: int, w: int) -> np.ndarray:
    """``(3, h, w)`` uint16 encoding each pixel's place: row, column, and a mix of both."""
    rr, cc = np.mgrid[0:h, 0:w]
    return np.stack([rr + 1, cc + 1, (rr * 7 + cc * 13) % 4001 + 1]).astype(np.uint16)


def write_raster(path: Path, data: np.ndarray, transform: Affine | None = TRANSFORM, crs: str | None = CRS, **kw: object) -> Path:
    """Write ``(C, H, W)`` as a GeoTIFF (``transform``/``crs`` None for an ungeoreferenced file)."""
    c, h, w = data.shape
    profile: dict[str, object] = {"driver": "GTiff", "height": h, "width": w, "count": c, "dtype": data.dtype.name, **kw}
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return path


class PatchProbe:
    """Stand-in for a backbone whose output for each 16x16 patch depends on that patch only: the
    patch's top-left and centre pixels of every input band, ``(B, 3, T, T) -> (B, 6, T/16, T/16)``.

    ``normalize`` keeps the [0, 1] adapter output (invalid pixels -> 0), so the expected raster can be
    computed directly from the adapter applied to the whole scene.
    """

    patch = 16
    layers: ClassVar[list[int]] = [0]
    embed_dim = 6
    dim = 6
    bands = ("red", "green", "blue")
    out_stride = 16
    channels = ("r_tl", "g_tl", "b_tl", "r_c", "g_c", "b_c")  # each patch's top-left, then centre pixel

    def __init__(self, fail_after: int | None = None) -> None:
        self.spec = get_spec("geodino_tiny_mlp")
        self.calls = 0  # batches run
        self.tiles = 0  # tiles run
        self.fail_after = fail_after

    def normalize(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return x * valid[:, None]

    def __call__(self, x: torch.Tensor) -> Tokens:
        self.calls += 1
        self.tiles += x.shape[0]
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("stand-in model failure")
        patches = torch.cat([x[:, :, ::16, ::16], x[:, :, 8::16, 8::16]], dim=1)
        b = x.shape[0]
        return Tokens(patches, torch.zeros(b, 1, 6), torch.zeros(b, 1, 0, 6))

    def describe(self) -> dict[str, object]:
        return {"model": "patch-probe", "weights": "random", "weights_sha256": "random", "random_weights": True, "layers": self.layers}


def expected_probe(unit: np.ndarray) -> np.ndarray:
    """What :class:`PatchProbe` stitched over a scene must give: ``(3, H, W)`` adapter output -> ``(6, ceil(H/16), ceil(W/16))``."""
    c, h, w = unit.shape
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    padded = np.zeros((c, hp, wp), np.float32)
    padded[:, :h, :w] = unit
    return np.concatenate([padded[:, ::16, ::16], padded[:, 8::16, 8::16]])


class IdentitySpec:
    """A spec whose normalisation leaves the [0, 1] adapter output as it is."""

    name = "identity"
    bands = ("red", "green", "blue")
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x


class PixelProbe(torch.nn.Module):
    """Stand-in canopy-height model: the height of a pixel is 10 x its first input band (pixel-local)."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = IdentitySpec()
        self.weights_info = {"random": True, "head": "pixel-probe"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * x[:, :1]


class ColourProbe:
    """Stand-in backbone for land cover: each patch's features are its mean colour, ``(B, 3, T/16, T/16)``."""

    patch = 16
    layers: ClassVar[list[int]] = [0]
    embed_dim = dim = 3
    out_stride = 16
    bands = ("red", "green", "blue")
    channels = ("mean_red", "mean_green", "mean_blue")

    def __init__(self) -> None:
        self.spec = IdentitySpec()
        self.device = torch.device("cpu")

    def normalize(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return x * valid[:, None]

    def __call__(self, x: torch.Tensor) -> Tokens:
        return Tokens(torch.nn.functional.avg_pool2d(x, 16), None, None)

    def describe(self) -> dict[str, object]:
        return {"model": "colour-probe", "weights": "random", "weights_sha256": "random", "random_weights": True, "layers": self.layers}
