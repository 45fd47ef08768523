"""Canopy-height head specs: :class:`HeadSpec`, the head registry and the backbones only heads use.

A :class:`HeadSpec` is a :class:`~geodino.models.pretrained.PretrainedCfg`, like a backbone's
:class:`~geodino.models.WeightsSpec`: it owns the head's preprocessing contract (CHMv2's own mean/std,
:data:`~geodino.models.pretrained.CHMV2`, which differ from the SAT backbone's in the red mean) and its
provenance; the backbone comes from its own spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from geodino.errors import SpecError
from geodino.heads.dpt import DPTConfig
from geodino.models.pretrained import CHMV2, SAT493M, PretrainedCfg
from geodino.models.specs import REGISTRY, ArchSpec, WeightsSpec, get_spec

_HEAD_URL_ROOT = "https://dl.fbaipublicfiles.com/dinov3/chmv2"

#: Backbones only heads use. The tiny head needs four distinct blocks (Hugging Face refuses repeated
#: ``out_indices``), one more than ``geodino_tiny_mlp`` has.
EXTRA_BACKBONES: dict[str, WeightsSpec] = {
    "geodino_tiny_mlp4": WeightsSpec(
        name="geodino_tiny_mlp4",
        arch_name="tiny_mlp4",
        arch=ArchSpec(64, 4, 4, "mlp", 4.0),
        dataset="random",
        mean=SAT493M.mean,
        std=SAT493M.std,
        licence="none (random weights)",
        description="tiny 4-block test backbone of geodino_tiny_chmv2, random weights only",
        random_only=True,
    )
}


def resolve_backbone(name: str) -> WeightsSpec:
    """The backbone spec a head names: the models registry first, then :data:`EXTRA_BACKBONES`."""
    if name in REGISTRY or name not in EXTRA_BACKBONES:
        return get_spec(name)
    return EXTRA_BACKBONES[name]


@dataclass(frozen=True, kw_only=True)
class HeadSpec(PretrainedCfg):
    """A canopy-height head: its backbone and blocks, decoder sizes, height range; normalisation, expected
    GSD (metres per pixel of the imagery the head was trained on, None: unknown) and provenance from
    :class:`PretrainedCfg`. ``bands`` are the backbone's."""

    backbone: str  # backbone spec name
    layers: tuple[int, int, int, int]  # 0-based backbone blocks feeding the decoder
    decoder: DPTConfig
    mean: tuple[float, ...] = CHMV2.mean
    std: tuple[float, ...] = CHMV2.std
    gsd: float | None = CHMV2.gsd
    min_depth: float = 0.001
    max_depth: float = 96.0

    def __post_init__(self) -> None:
        super().__post_init__()
        backbone = self.backbone_spec
        arch = backbone.arch
        if self.bands != backbone.bands:
            raise ValueError(f"{self.name}: bands {self.bands} differ from its backbone's {backbone.bands}")
        if self.decoder.embed_dim != arch.embed_dim:
            raise ValueError(f"{self.name}: decoder embed_dim {self.decoder.embed_dim} != backbone {arch.embed_dim}")
        if len(set(self.layers)) != 4 or not all(0 <= i < arch.depth for i in self.layers):
            raise ValueError(f"{self.name}: layers must be 4 distinct blocks in [0, {arch.depth}), got {self.layers}")

    @property
    def backbone_spec(self) -> WeightsSpec:
        return resolve_backbone(self.backbone)

    @property
    def embed_dim(self) -> int:
        return self.decoder.embed_dim

    @property
    def n_bins(self) -> int:
        return self.decoder.n_bins

    @property
    def patch_size(self) -> int:
        return self.backbone_spec.patch_size

    @property
    def file_stem(self) -> str:
        """Official head file name without the hash, e.g. ``dinov3_vitl16_chmv2_dpt_head``."""
        return f"{self.name}_dpt_head"

    @property
    def url_root(self) -> str:
        return _HEAD_URL_ROOT


HEADS: dict[str, HeadSpec] = {
    "dinov3_vitl16_chmv2": HeadSpec(
        name="dinov3_vitl16_chmv2",
        backbone="dinov3_vitl16_sat493m",
        layers=(5, 11, 17, 23),
        decoder=DPTConfig(),
        hash_prefix="3703d643",
        hf_repo="facebook/dinov3-vitl16-chmv2-dpt-head",
        description="CHMv2 canopy height in metres (0-96 m): DPT head on the SAT-493M ViT-L",
    ),
    "geodino_tiny_chmv2": HeadSpec(
        name="geodino_tiny_chmv2",
        backbone="geodino_tiny_mlp4",
        layers=(0, 1, 2, 3),
        decoder=DPTConfig(embed_dim=64, post_process_channels=(8, 16, 32, 64), channels=32, n_hidden_channels=16, n_bins=32),
        licence="none (random weights)",
        description="tiny test head, random weights only (CHMv2 normalisation and height range)",
        random_only=True,
    ),
}


def list_heads() -> list[str]:
    return sorted(HEADS)


def get_head(name: str | HeadSpec) -> HeadSpec:
    """Look up a head spec by name; an unknown name raises :class:`SpecError`."""
    if isinstance(name, HeadSpec):
        return name
    if name not in HEADS:
        raise SpecError(f"unknown head '{name}'. Known: {', '.join(list_heads())}")
    return HEADS[name]
