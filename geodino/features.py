"""The model side of encoding: device, precision and which layers, around one built backbone.

:class:`FeatureExtractor` maps a normalised batch ``(B, 3, T, T)`` to patch features
``(B, L*D, T/16, T/16)`` (the chosen layers concatenated) plus CLS ``(B, L, D)`` and storage tokens
``(B, L, S, D)``, always returned as float32 on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from geodino.device import autocast, check_precision, resolve_device
from geodino.errors import InputError
from geodino.models.multiband import BandMixer
from geodino.models.vit import DinoVisionTransformer
from geodino.tilemodel import GRID, ModelCard, Tokens

__all__ = ["FeatureExtractor", "Tokens", "autocast", "check_precision", "feature_card", "parse_layers", "resolve_device"]


def parse_layers(text: str | Sequence[int] | None) -> list[int]:
    """``"-1"``, ``"5,11,17,23"`` or a sequence -> block indexes (negatives count from the end)."""
    if text is None:
        return [-1]
    if isinstance(text, str):
        try:
            layers = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise InputError(f"--layers {text!r}: give block indexes like -1 or 5,11,17,23") from None
    else:
        layers = [int(t) for t in text]
    if not layers:
        raise InputError(f"--layers {text!r}: give at least one block index, like -1 or 5,11,17,23")
    return layers


class FeatureExtractor:
    """A backbone on its device with a precision and a set of layers; built once, called per batch."""

    out_stride = 16  # one output cell per 16x16-pixel patch

    def __init__(
        self,
        model: DinoVisionTransformer,
        layers: str | Sequence[int] | None = None,
        device: str | None = "auto",
        precision: str = "fp32",
        mixer: BandMixer | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        self.model = model.to(self.device).eval()
        self.mixer = mixer.to(self.device).eval() if mixer is not None else None
        self.layers = model.resolve_layers(parse_layers(layers))
        self.spec = model.spec
        self.embed_dim = model.embed_dim
        self.patch = model.spec.patch_size if model.spec else 16

    @property
    def in_bands(self) -> int:
        """Bands the adapter must deliver: the mixer's input, else the backbone's."""
        return self.mixer.n_bands if self.mixer is not None else self.model.arch.in_chans

    @property
    def dim(self) -> int:
        """Channels of the stitched feature raster: layers x embed_dim."""
        return len(self.layers) * self.embed_dim

    @property
    def bands(self) -> tuple[str, ...]:
        """Identities of the input bands (:class:`~geodino.tilemodel.TileModel`): the mixer's, else the spec's."""
        if self.mixer is not None:
            return tuple(self.mixer.band_names)
        return tuple(self.spec.bands) if self.spec else ("red", "green", "blue")[: self.in_bands]

    @property
    def channels(self) -> tuple[str, ...]:
        """Output channel names: ``L<block>_<channel>`` for each layer's features."""
        return tuple(f"L{layer}_{j:04d}" for layer in self.layers for j in range(self.embed_dim))

    def normalize(self, x: Tensor, valid: Tensor) -> Tensor:
        """``(B, N, T, T)`` in [0, 1] and ``(B, T, T)`` validity -> model input on the device; invalid pixels -> 0 (the mean)."""
        x = x.to(self.device, non_blocking=True)
        if self.mixer is not None:
            with torch.inference_mode():
                x = self.mixer(x)
        x = self.spec.normalize(x) if self.spec else x
        return x * valid.to(self.device, non_blocking=True)[:, None]

    def __call__(self, x: Tensor) -> Tokens:
        """Normalised ``(B, 3, T, T)`` on the device -> :class:`Tokens`."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            outs = self.model.get_intermediate_layers(x, n=self.layers, reshape=True, return_class_token=True, return_extra_tokens=True)
        patches = torch.cat([o[0] for o in outs], dim=1).float().cpu()
        cls = torch.stack([o[1] for o in outs], dim=1).float().cpu()
        storage = torch.stack([o[2] for o in outs], dim=1).float().cpu()
        return Tokens(patches, cls, storage)

    def describe(self) -> dict[str, object]:
        """What the output tags record about the model run."""
        info = self.model.weights_info
        spec = self.spec
        return {
            "model": spec.name if spec else type(self.model).__name__,
            "weights": info.source if info else "unknown",
            "weights_layout": info.layout if info else "unknown",
            "weights_sha256": info.sha256 if info else None,
            "random_weights": bool(info is None or info.is_random),
            "layers": self.layers,
            "embed_dim": self.embed_dim,
            "mean": list(spec.mean) if spec else None,
            "std": list(spec.std) if spec else None,
            "device": str(self.device),
            "precision": self.precision,
            "band_mixer": None
            if self.mixer is None
            else {"bands": self.mixer.band_names, "weight": self.mixer.mix.weight.flatten(1).tolist()},
        }


def check_layers(depth: int, layers: str | Sequence[int] | None) -> list[int]:
    """``--layers`` as 0-based block indexes of a ``depth``-block backbone; one line for an index out of range."""
    blocks = []
    for i in parse_layers(layers):
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise InputError(f"block index {i} out of range for a model with {depth} blocks")
        blocks.append(j)
    return blocks


def feature_card(depth: int, embed_dim: int, bands: Sequence[str], layers: str | Sequence[int] | None = None) -> ModelCard:
    """The :class:`~geodino.tilemodel.ModelCard` of a DINOv3 extractor, from its spec alone (no weights):
    ``bands`` in, one ``L<block>_<channel>`` vector per 16x16 patch out (indexes out of range are left to
    :func:`check_layers`, which the run calls when it has checked its other inputs)."""
    blocks = [i + depth if i < 0 else i for i in parse_layers(layers)]
    return ModelCard(tuple(bands), GRID, tuple(f"L{layer}_{j:04d}" for layer in blocks for j in range(embed_dim)))
