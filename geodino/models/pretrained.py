"""What every pretrained model geodino knows shares: its preprocessing and the provenance of its file.

Modelled on timm's ``PretrainedCfg``. :class:`Preprocessing` is the input contract (bands, mean/std,
the ground sample distance it was trained at) with the one ``normalize``; :class:`PretrainedCfg`
adds the name and where the official weights come from (file stem and hash, URL, Hugging Face repo,
licence). Backbone specs (:class:`~geodino.models.specs.WeightsSpec`) and canopy-height head specs
(:class:`~geodino.heads.specs.HeadSpec`) are both ``PretrainedCfg``. Every normalisation constant
geodino uses is defined here, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor

RGB = ("red", "green", "blue")
DINOV3_LICENCE = "DINOv3 License"


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """A model's input contract: one ``bands``, ``mean`` and ``std`` entry per input channel, and the
    metres per pixel of the imagery it was trained on (``gsd``; None: unknown or not fixed)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    bands: tuple[str, ...] = RGB
    gsd: float | None = None

    def __post_init__(self) -> None:
        if not len(self.bands) == len(self.mean) == len(self.std):
            raise ValueError(
                f"bands, mean and std must have one entry per channel, got {len(self.bands)}, {len(self.mean)}, {len(self.std)}"
            )

    def normalize(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` reflectance-like values in [0, 1] -> the model's input ``(x - mean) / std``,
        ``(B, C, H, W)`` in ``x``'s dtype and device (``C == len(self.mean)``)."""
        from kornia.enhance import normalize  # kornia adds ~0.25 s to an import; only normalising needs it

        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)
        return normalize(x, mean, std)


#: SAT-493M backbones (DINOv3 README): Maxar RGB.
SAT493M = Preprocessing(mean=(0.430, 0.411, 0.296), std=(0.213, 0.156, 0.143))
#: LVD-1689M (web image) backbones: the ImageNet statistics.
LVD1689M = Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
#: The CHMv2 canopy-height head (Meta's CHMv2 notebook, transformers' CHMv2 image processor): red mean 0.420,
#: not SAT-493M's 0.430. Its GSD: the backbone's SAT-493M pretraining set is "Maxar RGB ortho-rectified imagery
#: at 0.6 meter resolution" (DINOv3 MODEL_CARD, quoted in shared/reference/dinov3.md section 1), and the head was
#: trained on Maxar imagery of about that GSD too (the reference notes do not state the head's own figure).
CHMV2 = Preprocessing(mean=(0.420, *SAT493M.mean[1:]), std=SAT493M.std, gsd=0.6)

SAT493M_MEAN, SAT493M_STD = SAT493M.mean, SAT493M.std
LVD1689M_MEAN, LVD1689M_STD = LVD1689M.mean, LVD1689M.std
CHMV2_MEAN, CHMV2_STD, CHMV2_GSD = CHMV2.mean, CHMV2.std, CHMV2.gsd


@dataclass(frozen=True, kw_only=True)
class PretrainedCfg(Preprocessing, ABC):
    """A named pretrained model: its :class:`Preprocessing` and the provenance of its official weights.

    Subclasses say how the official file is named (:attr:`file_stem`) and where it is served from
    (:attr:`url_root`); ``hash_prefix`` is None for specs that have random weights only.
    """

    name: str
    hash_prefix: str | None = None
    hf_repo: str | None = None
    licence: str = DINOV3_LICENCE
    description: str = ""
    random_only: bool = False

    @property
    @abstractmethod
    def file_stem(self) -> str:
        """Official file name without the hash and suffix."""

    @property
    @abstractmethod
    def url_root(self) -> str:
        """The folder URL that serves the official file."""

    @property
    def file_name(self) -> str | None:
        """Official file name (``<stem>-<hash>.pth``), None for random-only specs."""
        return f"{self.file_stem}-{self.hash_prefix}.pth" if self.hash_prefix else None

    @property
    def url_hint(self) -> str | None:
        """Unsigned official URL; the working (signed) one comes from Meta's access form."""
        return f"{self.url_root}/{self.file_name}" if self.file_name else None

    def is_official_file(self, path: str | Path) -> bool:
        """Whether ``path`` carries this spec's official file name (``<stem>-<hash>.pth`` or ``<stem>.pth``)."""
        name = Path(path).name
        return self.file_name is not None and (name.startswith(self.file_stem + "-") or name == self.file_stem + ".pth")


SpecT = TypeVar("SpecT", bound=PretrainedCfg)


def official_spec_of(path: str | Path, specs: Iterable[SpecT]) -> SpecT | None:
    """The spec of ``specs`` whose official file name ``path`` carries, if any."""
    return next((spec for spec in specs if spec.is_official_file(path)), None)
