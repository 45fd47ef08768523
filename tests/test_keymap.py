"""Meta <-> Hugging Face key mapping: complete against transformers, and round-tripping exactly."""

from __future__ import annotations

import pytest
import torch

from geodino.models import get_spec, hf_config, hf_to_meta, list_models, meta_to_hf, random_state_dict
from geodino.models.keymap import EXTRA_PREFIX


@pytest.mark.parametrize("name", list_models())
def test_mapped_keys_and_shapes_equal_transformers_model(name: str) -> None:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    spec = get_spec(name)
    with torch.device("meta"):
        from geodino.models import DinoVisionTransformer

        meta_sd = DinoVisionTransformer(spec.arch).state_dict()
        hf_sd = DINOv3ViTModel(DINOv3ViTConfig(**hf_config(spec.arch))).state_dict()
    mapped = meta_to_hf(meta_sd)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in hf_sd.items()}


@pytest.fixture(params=["geodino_tiny_mlp", "geodino_tiny_swiglu"])
def tiny_sd(request):
    spec = get_spec(request.param)
    return spec, random_state_dict(spec, seed=3, informative=True)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def test_meta_hf_meta_round_trip_with_extras_is_bit_exact(tiny_sd) -> None:
    spec, sd = tiny_sd
    hf = meta_to_hf(sd, keep_extras=True)
    assert any(k.startswith(EXTRA_PREFIX) for k in hf)
    _assert_same(hf_to_meta(hf, spec.arch), sd)


def test_meta_hf_meta_plain_round_trip(tiny_sd) -> None:
    """Without extras every tensor HF stores comes back bit-exact; the rest is regenerated canonically."""
    spec, sd = tiny_sd
    back = hf_to_meta(meta_to_hf(sd), spec.arch)
    assert back.keys() == sd.keys()
    d = spec.arch.embed_dim
    for k, v in sd.items():
        if k.endswith("attn.qkv.bias"):
            assert torch.equal(back[k][:d], v[:d]) and torch.equal(back[k][2 * d :], v[2 * d :])
            assert torch.equal(back[k][d : 2 * d], torch.zeros(d))  # the masked key bias, whose effect is nil
        elif k.startswith("local_cls_norm"):
            assert torch.equal(back[k], torch.ones(d) if k.endswith("weight") else torch.zeros(d))
        else:  # includes bias_mask and rope periods, regenerated to the canonical values
            assert torch.equal(back[k], v), k


def test_hf_meta_hf_round_trip_is_bit_exact(tiny_sd) -> None:
    spec, sd = tiny_sd
    hf = meta_to_hf(sd)
    _assert_same(meta_to_hf(hf_to_meta(hf, spec.arch)), hf)


def test_older_and_wrapped_hf_keys_are_read(tiny_sd) -> None:
    """transformers 4.x saved ``layer.N.*`` without ``model.``; wrappers add prefixes (``backbone.``)."""
    spec, sd = tiny_sd
    hf = meta_to_hf(sd)
    legacy = {k.removeprefix("model."): v for k, v in hf.items()}
    wrapped = {f"backbone.{k}": v for k, v in hf.items()}
    _assert_same(hf_to_meta(legacy, spec.arch), hf_to_meta(hf, spec.arch))
    _assert_same(hf_to_meta(wrapped, spec.arch), hf_to_meta(hf, spec.arch))


def test_unknown_keys_are_errors(tiny_sd) -> None:
    spec, sd = tiny_sd
    with pytest.raises(KeyError, match=r"no Hugging Face name for Meta key 'head\.weight'"):
        meta_to_hf({**sd, "head.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="no Meta name"):
        hf_to_meta({**meta_to_hf(sd), "pooler.dense.weight": torch.zeros(1)}, spec.arch)
    with pytest.raises(KeyError, match=r"embeddings\.cls_token"):
        hf_to_meta({"foo": torch.zeros(1)}, spec.arch)


def test_mlp_names_must_fit_the_ffn() -> None:
    swiglu_hf = meta_to_hf(random_state_dict(get_spec("geodino_tiny_swiglu")))
    with pytest.raises(KeyError, match="does not fit a mlp FFN"):
        hf_to_meta(swiglu_hf, get_spec("geodino_tiny_mlp").arch)
