"""What geodino runs over a scene's tiles: the :class:`TileModel` protocol, and plain torch modules as one.

A TileModel declares what it takes and gives, and does one thing: a batch in, a batch out.

- ``bands``: the identities of its input bands, in order (STAC common names such as ``red``, ``nir08``,
  or band names such as ``B04``); the scene's bands are chosen by them (``N = len(bands)``).
- ``out_stride``: pixels per output cell, a divisor of :data:`GRID` (16: one cell per 16x16 patch,
  4: one per 4x4 pixels, 1: per pixel). Tiles start on the 16-pixel grid, so every output cell of
  every tile lands exactly on a cell of the output raster.
- ``channels``: the names of its ``C`` output channels (the output raster's band names).
- ``normalize(x, valid)``: its preprocessing contract: ``x`` ``(B, N, T, T)`` float32 in [0, 1] on the CPU
  (geodino's scene-fixed stretch), ``valid`` ``(B, T, T)`` bool -> the model's input, on its device.
- ``__call__(x)``: that input -> ``(B, C, T/s, T/s)`` float32 (a tensor, or :class:`Tokens`
  whose ``patches`` are that tensor, with CLS/storage tokens where the model has them).
- ``describe()``: what the run record says about the model (name, weights and their sha256, ...).

:class:`TorchTileModel` makes any ``torch.nn.Module`` one; :func:`load_factory` reads ``package.module:factory``.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from geodino.device import autocast, check_precision, resolve_device
from geodino.errors import GeodinoError, InputError
from geodino.tiling import Tile

#: Tiles, overlaps and blocks are multiples of this many pixels (the DINOv3 patch): every stride divides it.
GRID = 16


@dataclass
class Tokens:
    """A model's outputs of one batch, float32 on the CPU (CLS and storage tokens where the model has them)."""

    patches: Tensor  # (B, L*D, t, t), or (B, C, T, T) for pixel-resolution predictors
    cls: Tensor | None  # (B, L, D)
    storage: Tensor | None  # (B, L, S, D)


@runtime_checkable
class TileModel(Protocol):
    """A model geodino runs over a scene's tiles (see the module docstring for shapes and units)."""

    @property
    def bands(self) -> tuple[str, ...]: ...
    @property
    def out_stride(self) -> int: ...
    @property
    def channels(self) -> tuple[str, ...]: ...
    def normalize(self, x: Tensor, valid: Tensor) -> Tensor: ...
    def __call__(self, x: Tensor) -> Tensor | Tokens: ...
    def describe(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class ModelCard:
    """What a job needs to know of a model before its weights load: input band identities, stride, channel names."""

    bands: tuple[str, ...]
    out_stride: int
    channels: tuple[str, ...]


def card_of(model: TileModel | ModelCard) -> ModelCard:
    """The :class:`ModelCard` of a model (checked: bands and channels given, the stride divides :data:`GRID`)."""
    card = ModelCard(tuple(str(b) for b in model.bands), int(model.out_stride), tuple(str(c) for c in model.channels))
    if not card.bands or not card.channels:
        raise InputError(
            f"the model declares {len(card.bands)} input bands and {len(card.channels)} output channels: give at least one of each"
        )
    if card.out_stride < 1 or GRID % card.out_stride:
        raise InputError(f"the model's out_stride {card.out_stride} must divide {GRID} (1, 2, 4, 8 or 16 pixels per output cell)")
    return card


def patches_of(result: Tensor | Tokens) -> Tokens:
    """A model's batch as :class:`Tokens` (float32, CPU): a bare tensor is the patches, with no CLS/storage tokens."""
    if isinstance(result, Tokens):
        return result
    return Tokens(result.float().cpu(), None, None)


class TorchTileModel:
    """A plain ``torch.nn.Module`` ``(B, N, T, T) -> (B, C, T/s, T/s)`` as a :class:`TileModel`.

    ``mean``/``std`` (one per band, on the [0, 1] scale) normalise its input as ``(x - mean) / std``; None keeps
    [0, 1]. Invalid pixels are 0 after normalisation. ``name`` names it in the run record (default its class).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        bands: Sequence[str] = ("red", "green", "blue"),
        out_stride: int = GRID,
        channels: Sequence[str] | int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | None = "auto",
        precision: str = "fp32",
        name: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        self.module = module.to(self.device).eval()
        self.bands = tuple(bands)
        self.out_stride = out_stride
        self.channels = tuple(f"c{i + 1}" for i in range(channels)) if isinstance(channels, int) else tuple(channels)
        n = len(self.bands)
        for what, v in (("mean", mean), ("std", std)):
            if v is not None and len(v) != n:
                raise InputError(f"{what} has {len(v)} values for {n} input bands")
        self.mean, self.std = (tuple(mean) if mean else None), (tuple(std) if std else None)
        self.name = name or type(module).__name__
        card_of(self)

    def normalize(self, x: Tensor, valid: Tensor) -> Tensor:
        """``(B, N, T, T)`` in [0, 1], ``(B, T, T)`` bool -> ``(B, N, T, T)`` on the device, 0 where invalid."""
        x = x.to(self.device)
        if self.mean is not None:
            x = x - torch.tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
        if self.std is not None:
            x = x / torch.tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
        return x * valid.to(self.device)[:, None]

    def __call__(self, x: Tensor) -> Tensor:
        """``(B, N, T, T)`` -> ``(B, C, T/s, T/s)`` float32 on the CPU."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.module(x).float().cpu()

    def describe(self) -> dict[str, object]:
        return {
            "model": self.name,
            "weights": f"torch module {type(self.module).__module__}.{type(self.module).__qualname__}",
            "weights_sha256": state_sha256(self.module),
            "random_weights": False,
            "bands": list(self.bands),
            "out_stride": self.out_stride,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "device": str(self.device),
            "precision": self.precision,
        }


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, shapes, bytes): the weights' identity for the record."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def refuse_backbone_options(
    weights: str | None, layers: str | Sequence[int] | None, mixer: object, device: str, precision: str, tokens: bool
) -> None:
    """One line for options that only a registered DINOv3 backbone takes, given with a model of one's own."""
    given = [name for name, used in (("--weights", weights is not None), ("--layers", layers not in (None, "-1", [-1], (-1,))),
             ("--mixer", mixer is not None), ("--device", device != "auto"), ("--precision", precision != "fp32"),
             ("--tokens", tokens)) if used]  # fmt: skip
    if given:
        raise InputError(
            f"only registered DINOv3 backbones take {', '.join(given)}; a model of your own (a TileModel) takes its weights, "
            "device and precision from its factory, and has no CLS/storage tokens"
        )


def load_factory(spec: str) -> TileModel:
    """``package.module:factory`` -> the :class:`TileModel` the factory returns (called without arguments)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise InputError(f"--model {spec!r}: give a registered name (geodino models) or package.module:factory")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InputError(f"--model {spec}: cannot import {mod_name} ({exc}); is it on PYTHONPATH?") from None
    except Exception as exc:  # a syntax error or an exception while the user's module runs
        raise InputError(f"--model {spec}: importing {mod_name} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    factory: Callable[[], object] | None = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"--model {spec}: {mod_name} has no callable {attr}")
    try:
        model = factory()
    except Exception as exc:
        raise InputError(f"--model {spec}: the factory raised {type(exc).__name__}: {_first_line(exc)}") from None
    if isinstance(model, torch.nn.Module) or not isinstance(model, TileModel):
        raise InputError(
            f"--model {spec}: {attr}() returned a {type(model).__name__}, not a TileModel (bands, out_stride, channels, "
            "normalize, __call__, describe): wrap a torch module as geodino.TorchTileModel(module, channels=..., out_stride=...)"
        )
    card_of(model)
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def check_shape(out: torch.Tensor, batch: int, channels: int, cells: int) -> None:
    """Stop the run when the model's batch is not ``(batch, channels, cells, cells)``, as its card says."""
    want = (batch, channels, cells, cells)
    if tuple(out.shape) != want:
        raise GeodinoError(
            f"the model returned a batch of shape {tuple(out.shape)}, its channels and out_stride promise {want}: "
            "fix the model's channels or out_stride"
        )


def check_finite(out: torch.Tensor, cells: torch.Tensor, tiles: list[Tile]) -> None:
    """Stop the run when the model gave NaN or inf in a valid cell (``cells`` ``(B, h, w)``) of the batch ``out``
    ``(B, C, h, w)``; cells with no valid pixel (padding, nodata) may hold anything: they are not written."""
    if bool(torch.isfinite(out.sum(dim=1))[cells].all()):  # fast path: NaN/inf in any channel makes the sum non-finite
        return
    finite = (torch.isfinite(out) | ~cells[:, None]).flatten(1).all(1)  # (or a finite sum overflowed: look closer)
    if not bool(finite.all()):
        t = tiles[int((~finite).nonzero()[0])]
        r, c, h, w = t.px_window
        raise GeodinoError(
            f"the model gave NaN/inf for tile {t.row},{t.col} (pixel rows {r}-{r + h}, cols {c}-{c + w}) on valid pixels: "
            "check the model's weights (geodino check-weights for a registered one) and the input's values; nothing was written"
        )
