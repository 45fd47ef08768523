"""Opt-in ways to feed N-band imagery to an RGB backbone: a learned band mixer and patch-embedding inflation.

Both start out *exactly* equal to the plain RGB path (the mixer picks the RGB bands, inflation gives
the extra bands zero weights), so nothing changes until they are trained. Limits, stated plainly:

* **BandMixer** (N -> 3, a 1x1 convolution before the spec's mean/std): learns a per-pixel linear
  mix only; it cannot add information the RGB-trained backbone has no features for, and it must
  be trained on labelled data or a task loss (geodino does not train it for you). Save it with
  :meth:`BandMixer.save` and use it with ``encode --mixer``: the file records the identities of its N
  input bands (common names where known) and the GSD, and ``encode`` selects a scene's bands by them
  (:func:`geodino.contract.map_inputs`); build it with :meth:`BandMixer.for_adapter` to record both.
* **inflate_patch_embed** (3 -> N input channels of the first layer): the extra bands contribute
  nothing until the patch embedding (at least) is fine-tuned; their normalisation is the scene
  stretch to [0, 1] followed by mean 0.5 / std 0.25, an assumption, not a statistic of any pretraining.
  Official checkpoints keep 3 input channels: an inflated model is saved and loaded as a new spec.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from geodino.bands import description_common
from geodino.contract import contract_problem, identity, mixer_contract
from geodino.errors import InputError
from geodino.models.checkpoint import first_nonfinite
from geodino.models.vit import DinoVisionTransformer

if TYPE_CHECKING:
    from geodino.adapter import BandAdapter

EXTRA_MEAN, EXTRA_STD = 0.5, 0.25


class BandMixer(nn.Module):
    """``(B, N, H, W)`` in [0, 1] -> ``(B, 3, H, W)``: a learned 1x1 convolution, initialised to select ``rgb``."""

    def __init__(
        self, n_bands: int, rgb: Sequence[int] = (0, 1, 2), band_names: Sequence[str] | None = None,
        bands: Sequence[Mapping[str, object]] | None = None, gsd: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if len(rgb) != 3 or not all(0 <= i < n_bands for i in rgb):
            raise InputError(f"rgb must be 3 band indexes in [0, {n_bands}), got {list(rgb)}")
        if bands is not None and len(bands) != n_bands:
            raise InputError(f"the band mixer takes {n_bands} bands, got {len(bands)} band identities")
        self.n_bands = n_bands
        self.band_names = list(band_names) if band_names else [str(i + 1) for i in range(n_bands)]
        # Identities of the input bands ({name, common}): given, else from the names ("nir" is a common name,
        # "3" or "B8" are not); None only for files saved before mixers recorded them (an unknown contract).
        self.bands: list[dict[str, str | None]] | None = (
            [identity(b) for b in bands] if bands is not None else [{"name": n, "common": description_common(n)} for n in self.band_names]
        )
        self.gsd = gsd  # metres per pixel of the imagery it was trained on (None: unknown)
        self.mix = nn.Conv2d(n_bands, 3, kernel_size=1, bias=True)
        assert self.mix.bias is not None  # built with bias=True
        with torch.no_grad():
            self.mix.weight.zero_()
            self.mix.bias.zero_()
            for out, i in enumerate(rgb):
                self.mix.weight[out, i, 0, 0] = 1.0

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.n_bands:
            raise InputError(f"the band mixer takes {self.n_bands} bands, got {x.shape[1]}")
        # An elementwise sum in band order rather than conv2d: the same result whatever the thread count,
        # so block-wise runs on workers with fewer threads equal the single-process run bit for bit.
        w, bias = self.mix.weight[:, :, 0, 0], self.mix.bias  # (3, N), (3,)
        assert bias is not None  # built with bias=True
        out = bias.view(1, 3, 1, 1).expand(x.shape[0], 3, *x.shape[2:])
        for i in range(self.n_bands):
            out = out + w[:, i].view(1, 3, 1, 1) * x[:, i : i + 1]
        return out

    @classmethod
    def for_adapter(cls, adapter: BandAdapter, rgb: Sequence[int] = (0, 1, 2)) -> BandMixer:
        """A mixer over the bands ``adapter`` selects, recording their identities and the GSD."""
        return cls(len(adapter.indexes), rgb, list(adapter.names), bands=adapter.selected(), gsd=adapter.gsd)

    def contract(self) -> dict[str, object] | None:
        """The input contract :func:`geodino.contract.map_inputs` enforces (None: unknown, an older file)."""
        return mixer_contract(self.bands, self.gsd)

    def save(self, path: str | Path) -> Path:
        """Write the mixer (weights, band names, band identities, GSD) to a ``.pt`` file."""
        blob = {"n_bands": self.n_bands, "band_names": self.band_names, "bands": self.bands, "gsd": self.gsd}
        torch.save({**blob, "state_dict": self.state_dict()}, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> BandMixer:
        """Read a mixer written by :meth:`save`; refuses other files and NaN/inf weights."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            mixer = cls(int(blob["n_bands"]), band_names=blob["band_names"])
            mixer.load_state_dict(blob["state_dict"])
        except (OSError, KeyError, RuntimeError, TypeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
            raise InputError(f"{path} is not a band mixer saved by geodino ({type(exc).__name__})") from None
        if blob.get("bands") is not None:  # older files have no identities: their contract stays unknown
            contract = mixer_contract(blob["bands"], blob.get("gsd"))
            if (problem := contract_problem(contract, mixer.n_bands)) is not None:
                raise InputError(f"band mixer {path} is not valid: {problem}")
            mixer.bands, mixer.gsd = [identity(b) for b in blob["bands"]], blob.get("gsd")
        else:
            mixer.bands, mixer.gsd = None, None
        if (bad := first_nonfinite(mixer.state_dict())) is not None:
            raise InputError(f"band mixer {path}: tensor '{bad}' holds NaN/inf values")
        return mixer.eval()


def inflate_patch_embed(model: DinoVisionTransformer, n_bands: int, rgb: Sequence[int], band_names: Sequence[str]) -> DinoVisionTransformer:
    """Give ``model`` an ``n_bands``-channel patch embedding, in place: bands ``rgb`` get the pretrained
    R, G, B filters, the others zero filters. Its spec becomes ``<name>+<n>band`` with ``band_names``."""
    old = model.patch_embed.proj
    if len(rgb) != old.in_channels or len(band_names) != n_bands or not all(0 <= i < n_bands for i in rgb):
        raise InputError(f"need {old.in_channels} rgb indexes in [0, {n_bands}) and {n_bands} band names")
    kernel, stride = (old.kernel_size[0], old.kernel_size[1]), (old.stride[0], old.stride[1])
    new = nn.Conv2d(n_bands, old.out_channels, kernel, stride, dtype=old.weight.dtype, device=old.weight.device)
    assert new.bias is not None and old.bias is not None  # the patch embedding has a bias
    with torch.no_grad():
        new.weight.zero_()
        for src, dst in enumerate(rgb):
            new.weight[:, dst] = old.weight[:, src]
        new.bias.copy_(old.bias)
    model.patch_embed.proj = new
    model.arch = dataclasses.replace(model.arch, in_chans=n_bands)
    spec = model.spec
    if spec is not None:
        mean, std = [EXTRA_MEAN] * n_bands, [EXTRA_STD] * n_bands
        for src, dst in enumerate(rgb):
            mean[dst], std[dst] = spec.mean[src], spec.std[src]
        model.spec = dataclasses.replace(
            spec, name=f"{spec.name}+{n_bands}band", arch=model.arch, bands=tuple(band_names), mean=tuple(mean), std=tuple(std)
        )
    return model
