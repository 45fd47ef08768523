"""Architectures and weights specs: the registry of every DINOv3 backbone geodino can build.

A :class:`WeightsSpec` is a :class:`~geodino.models.pretrained.PretrainedCfg`: it owns a model's
preprocessing contract (input bands, mean/std, patch size) and where its official checkpoint comes
from. The normalisation constants themselves live in :mod:`geodino.models.pretrained`, nowhere else.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass
from typing import Literal

from geodino.errors import SpecError
from geodino.models.pretrained import LVD1689M, SAT493M, PretrainedCfg
from geodino.models.pretrained import LVD1689M_MEAN as LVD1689M_MEAN  # re-exported: the constants' old home
from geodino.models.pretrained import LVD1689M_STD as LVD1689M_STD
from geodino.models.pretrained import SAT493M_MEAN as SAT493M_MEAN
from geodino.models.pretrained import SAT493M_STD as SAT493M_STD

FfnKind = Literal["mlp", "swiglu", "swiglu64"]
_URL_ROOT = "https://dl.fbaipublicfiles.com/dinov3/dinov3_{arch}"


@dataclass(frozen=True)
class ArchSpec:
    """Shape of a DINOv3 ViT. Field names follow the reference hub builders."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn: FfnKind = "mlp"
    ffn_ratio: float = 4.0
    qkv_bias: bool = True
    untie_local_cls_norm: bool = False
    n_storage_tokens: int = 4
    patch_size: int = 16
    in_chans: int = 3
    rope_base: float = 100.0
    layerscale_init: float = 1e-5
    norm_eps: float = 1e-5
    mask_k_bias: bool = True

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads")
        if self.head_dim % 4:
            raise ValueError(f"head_dim {self.head_dim} must be a multiple of 4 for 2-D RoPE")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        """Width of the FFN's hidden layer as stored in the checkpoint (after SwiGLU's 2/3 rule)."""
        hidden = int(self.embed_dim * self.ffn_ratio)
        if self.ffn == "mlp":
            return hidden
        align = 64 if self.ffn == "swiglu64" else 8
        d = int(hidden * 2 / 3)
        return d + (-d) % align

    @property
    def n_prefix_tokens(self) -> int:
        """CLS + storage tokens that precede the patch tokens."""
        return 1 + self.n_storage_tokens


@dataclass(frozen=True, kw_only=True)
class WeightsSpec(PretrainedCfg):
    """A named set of backbone weights: architecture plus the preprocessing contract and provenance
    it inherits from :class:`PretrainedCfg` (``mean``, ``std``, ``bands``, ``normalize``, ``file_name``, ...)."""

    arch_name: str
    arch: ArchSpec
    dataset: str

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.arch.in_chans
        if len(self.bands) != n:
            raise ValueError(f"{self.name}: bands, mean and std must each have in_chans={n} entries")

    @property
    def patch_size(self) -> int:
        return self.arch.patch_size

    @property
    def file_stem(self) -> str:
        """Official file name without the hash, e.g. ``dinov3_vitl16_pretrain_sat493m``."""
        return f"dinov3_{self.arch_name}_pretrain_{self.dataset}"

    @property
    def url_root(self) -> str:
        return _URL_ROOT.format(arch=self.arch_name)


_ARCHS: dict[str, ArchSpec] = {
    "vits16": ArchSpec(384, 12, 6, "mlp", 4.0),
    "vits16plus": ArchSpec(384, 12, 6, "swiglu", 6.0),
    "vitb16": ArchSpec(768, 12, 12, "mlp", 4.0),
    "vitl16": ArchSpec(1024, 24, 16, "mlp", 4.0),
    "vitl16plus": ArchSpec(1024, 24, 16, "swiglu", 6.0),
    "vith16plus": ArchSpec(1280, 32, 20, "swiglu", 6.0),
    "vit7b16": ArchSpec(4096, 40, 32, "swiglu64", 3.0, qkv_bias=False, untie_local_cls_norm=True),
    # Tiny architectures for fast tests: both FFN families, with and without qkv bias.
    "tiny_mlp": ArchSpec(64, 3, 4, "mlp", 4.0),
    "tiny_swiglu": ArchSpec(64, 2, 4, "swiglu", 4.0, qkv_bias=False, untie_local_cls_norm=True),
}

_LVD_HASHES = {
    "vits16": "08c60483",
    "vits16plus": "4057cbaa",
    "vitb16": "73cec8be",
    "vitl16": "8aa4cbdd",
    "vitl16plus": "46503df0",
    "vith16plus": "7c1da9a5",
    "vit7b16": "a955f4ea",
}
_SAT_HASHES = {"vitl16": "eadcf0ff", "vit7b16": "a6675841"}


def _official(arch_name: str, dataset: str, hash_prefix: str, arch: ArchSpec) -> WeightsSpec:
    sat = dataset == "sat493m"
    what = "Maxar RGB 0.6 m (SAT-493M)" if sat else "web images (LVD-1689M)"
    pre = SAT493M if sat else LVD1689M
    return WeightsSpec(
        name=f"dinov3_{arch_name}_{dataset}",
        arch_name=arch_name,
        arch=arch,
        dataset=dataset,
        mean=pre.mean,
        std=pre.std,
        bands=pre.bands,
        hash_prefix=hash_prefix,
        hf_repo=f"facebook/dinov3-{arch_name}-pretrain-{dataset}",
        description=f"DINOv3 {arch_name} pretrained on {what}",
    )


def _build_registry() -> dict[str, WeightsSpec]:
    specs: dict[str, WeightsSpec] = {}
    for arch_name, h in _LVD_HASHES.items():
        arch = _ARCHS[arch_name]
        if arch_name == "vitl16":  # only the SAT ViT-L unties the local-crop CLS norm
            arch = dataclasses.replace(arch, untie_local_cls_norm=False)
        specs[f"dinov3_{arch_name}_lvd1689m"] = _official(arch_name, "lvd1689m", h, arch)
    for arch_name, h in _SAT_HASHES.items():
        arch = dataclasses.replace(_ARCHS[arch_name], untie_local_cls_norm=True)
        specs[f"dinov3_{arch_name}_sat493m"] = _official(arch_name, "sat493m", h, arch)
    for arch_name in ("tiny_mlp", "tiny_swiglu"):
        name = f"geodino_{arch_name}"
        specs[name] = WeightsSpec(
            name=name,
            arch_name=arch_name,
            arch=_ARCHS[arch_name],
            dataset="random",
            mean=SAT493M.mean,
            std=SAT493M.std,
            licence="none (random weights)",
            description="tiny test architecture, random weights only (SAT normalisation)",
            random_only=True,
        )
    return specs


REGISTRY: dict[str, WeightsSpec] = _build_registry()


def list_models(pattern: str = "*", include_tiny: bool = True) -> list[str]:
    """Names of the registered weights specs matching a glob ``pattern``."""
    return sorted(n for n, s in REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (include_tiny or not s.random_only))


def get_spec(name: str | WeightsSpec) -> WeightsSpec:
    """Look up a spec by name; an unknown name raises :class:`SpecError` with suggestions."""
    if isinstance(name, WeightsSpec):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SpecError(f"unknown model '{name}'.{hint} Known: {', '.join(list_models())}") from None


def arch_of(name: str) -> ArchSpec:
    """The architecture of a named arch (``vitl16``) or weights spec (``dinov3_vitl16_sat493m``)."""
    if name in _ARCHS:
        return _ARCHS[name]
    return get_spec(name).arch
