"""The weights registry: every released architecture, its preprocessing contract and provenance."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from geodino.errors import SpecError
from geodino.heads import CHMV2_MEAN, CHMV2_STD, HeadSpec, get_head
from geodino.models import REGISTRY, DinoVisionTransformer, Preprocessing, PretrainedCfg, WeightsSpec, get_spec, list_models
from geodino.models.pretrained import CHMV2, LVD1689M, SAT493M, official_spec_of
from geodino.models.specs import LVD1689M_MEAN, SAT493M_MEAN, SAT493M_STD


def _params(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in DinoVisionTransformer(get_spec(name).arch).parameters())


def test_every_released_architecture_is_registered() -> None:
    names = set(list_models(include_tiny=False))
    archs = {"vits16", "vits16plus", "vitb16", "vitl16", "vitl16plus", "vith16plus", "vit7b16"}
    assert names == {f"dinov3_{a}_lvd1689m" for a in archs} | {"dinov3_vitl16_sat493m", "dinov3_vit7b16_sat493m"}
    assert {"geodino_tiny_mlp", "geodino_tiny_swiglu"} <= set(list_models())
    assert list_models("*sat*") == ["dinov3_vit7b16_sat493m", "dinov3_vitl16_sat493m"]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("dinov3_vitl16_sat493m", 303_156_224),  # reference: "303.16M" from the module shapes
        ("dinov3_vit7b16_sat493m", 6_716_043_264),  # reference: 6,716,043,264
    ],
)
def test_parameter_counts_match_the_reference(name: str, params: int) -> None:
    assert _params(name) == params


@pytest.mark.parametrize(
    ("name", "hidden", "qkv_bias", "local_norm"),
    [
        ("dinov3_vits16_lvd1689m", 1536, True, False),
        ("dinov3_vits16plus_lvd1689m", 1536, True, False),
        ("dinov3_vitb16_lvd1689m", 3072, True, False),
        ("dinov3_vitl16_lvd1689m", 4096, True, False),
        ("dinov3_vitl16_sat493m", 4096, True, True),
        ("dinov3_vith16plus_lvd1689m", 5120, True, False),
        ("dinov3_vit7b16_lvd1689m", 8192, False, True),
        ("dinov3_vit7b16_sat493m", 8192, False, True),
    ],
)
def test_architecture_flags(name: str, hidden: int, qkv_bias: bool, local_norm: bool) -> None:
    a = get_spec(name).arch
    assert (a.ffn_hidden, a.qkv_bias, a.untie_local_cls_norm) == (hidden, qkv_bias, local_norm)
    assert (a.patch_size, a.n_storage_tokens, a.norm_eps, a.rope_base) == (16, 4, 1e-5, 100.0)


def test_preprocessing_contract_is_consistent() -> None:
    for spec in REGISTRY.values():
        assert len(spec.bands) == len(spec.mean) == len(spec.std) == spec.arch.in_chans == 3
        assert spec.bands == ("red", "green", "blue")
    sat = get_spec("dinov3_vitl16_sat493m")
    assert (sat.mean, sat.std) == (SAT493M_MEAN, SAT493M_STD) == ((0.430, 0.411, 0.296), (0.213, 0.156, 0.143))
    assert get_spec("dinov3_vitl16_lvd1689m").mean == LVD1689M_MEAN == (0.485, 0.456, 0.406)


def test_official_names_and_sources() -> None:
    sat = get_spec("dinov3_vitl16_sat493m")
    assert sat.file_name == "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
    assert get_spec("dinov3_vit7b16_sat493m").file_name == "dinov3_vit7b16_pretrain_sat493m-a6675841.pth"
    assert sat.hf_repo == "facebook/dinov3-vitl16-pretrain-sat493m"
    assert sat.url_hint == "https://dl.fbaipublicfiles.com/dinov3/dinov3_vitl16/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
    assert sat.licence == "DINOv3 License"
    tiny = get_spec("geodino_tiny_mlp")
    assert tiny.random_only and tiny.file_name is None and tiny.url_hint is None


def test_normalize_uses_the_spec_statistics() -> None:
    spec = get_spec("dinov3_vitl16_sat493m")
    x = torch.rand(2, 3, 8, 8)
    out = spec.normalize(x)
    for c in range(3):
        expected = (x[:, c] - spec.mean[c]) / spec.std[c]
        assert torch.allclose(out[:, c], expected, atol=1e-6)


def test_backbone_and_head_specs_are_one_family() -> None:
    sat, head = get_spec("dinov3_vitl16_sat493m"), get_head("dinov3_vitl16_chmv2")
    assert isinstance(sat, PretrainedCfg) and isinstance(head, PretrainedCfg)
    for shared in ("normalize", "file_name", "url_hint", "is_official_file"):  # written once, for both kinds
        assert getattr(WeightsSpec, shared) is getattr(HeadSpec, shared) is getattr(PretrainedCfg, shared)
    assert PretrainedCfg.normalize is Preprocessing.normalize
    assert head.url_hint == "https://dl.fbaipublicfiles.com/dinov3/chmv2/dinov3_vitl16_chmv2_dpt_head-3703d643.pth"
    assert official_spec_of(f"/x/{head.file_name}", [sat, head]) is head and official_spec_of("/x/other.pth", [sat, head]) is None


def test_normalisation_constants_have_one_home() -> None:
    assert SAT493M_MEAN is SAT493M.mean and SAT493M_STD is SAT493M.std and LVD1689M_MEAN is LVD1689M.mean  # re-exports
    assert CHMV2_MEAN is CHMV2.mean and CHMV2_STD is CHMV2.std and CHMV2.gsd == 0.6
    assert CHMV2.mean == (0.420, 0.411, 0.296) and CHMV2.std == SAT493M.std  # only the red mean differs
    head = get_head("dinov3_vitl16_chmv2")
    assert (head.mean, head.std, head.gsd, head.bands) == (CHMV2.mean, CHMV2.std, CHMV2.gsd, head.backbone_spec.bands)
    assert get_spec("dinov3_vitl16_sat493m").gsd is None  # backbones state no GSD


def test_spec_checks_its_preprocessing() -> None:
    tiny = get_spec("geodino_tiny_mlp")
    with pytest.raises(ValueError, match="one entry per channel"):
        dataclasses.replace(tiny, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="in_chans=3"):
        dataclasses.replace(tiny, bands=("a", "b", "c", "d"), mean=(0.5,) * 4, std=(0.2,) * 4)
    with pytest.raises(ValueError, match="differ from its backbone"):
        dataclasses.replace(get_head("geodino_tiny_chmv2"), bands=("b", "g", "r"))
    with pytest.raises(TypeError):
        PretrainedCfg(name="x", mean=(0.5,), std=(0.2,), bands=("a",))  # abstract: no file naming of its own


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(SpecError, match="Did you mean dinov3_vitl16_sat493m"):
        get_spec("dinov3_vitl16_sat493")
    with pytest.raises(SpecError, match="unknown model 'resnet50'"):
        get_spec("resnet50")
