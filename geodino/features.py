"""The model side of encoding: device, precision and which layers, around one built backbone.

:class:`FeatureExtractor` maps a normalised batch ``(B, 3, T, T)`` to patch features
``(B, L*D, T/16, T/16)`` (the chosen layers concatenated) plus CLS ``(B, L, D)`` and storage tokens
``(B, L, S, D)``, always returned as float32 on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from geodino.errors import InputError
from geodino.models.multiband import BandMixer
from geodino.models.vit import DinoVisionTransformer

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU; otherwise the named device (checked)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} asked for but CUDA is not available here: use --device cpu")
    return dev


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


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


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """Autocast to bf16/fp16 on ``device``; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


@dataclass
class Tokens:
    """Outputs of one batch, float32 on the CPU."""

    patches: Tensor  # (B, L*D, t, t), or (B, C, T, T) for pixel-resolution predictors
    cls: Tensor | None  # (B, L, D)
    storage: Tensor | None  # (B, L, S, D)


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
