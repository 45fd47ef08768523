"""The ViT's own behaviour: shapes, token order, input checks, RoPE, masked key bias, unused norms."""

from __future__ import annotations

import math

import pytest
import torch

from geodino.errors import InputError
from geodino.models import DinoVisionTransformer, build_model, get_spec, random_state_dict
from geodino.models.layers import apply_rope, default_periods
from tests.helpers import image

TINY = "geodino_tiny_mlp"


@pytest.fixture(scope="module")
def tiny() -> DinoVisionTransformer:
    spec = get_spec(TINY)
    model = DinoVisionTransformer(spec.arch)
    model.load_state_dict(random_state_dict(spec, seed=5, informative=True))
    return model.eval()


def test_forward_features_shapes_and_token_order(tiny: DinoVisionTransformer) -> None:
    x = image((64, 48), batch=3)
    with torch.inference_mode():
        out = tiny.forward_features(x)
        cls = tiny(x)
        normed = tiny.norm(out["x_prenorm"])
    assert out["x_norm_clstoken"].shape == (3, 64)
    assert out["x_storage_tokens"].shape == (3, 4, 64)
    assert out["x_norm_patchtokens"].shape == (3, 4 * 3, 64)
    assert out["x_prenorm"].shape == (3, 1 + 4 + 12, 64)
    assert out["masks"] is None
    assert torch.equal(out["x_norm_clstoken"], normed[:, 0])
    assert torch.equal(out["x_storage_tokens"], normed[:, 1:5])
    assert torch.equal(out["x_norm_patchtokens"], normed[:, 5:])
    assert torch.equal(cls, out["x_norm_clstoken"])


def test_intermediate_layers_variants(tiny: DinoVisionTransformer) -> None:
    x = image((64, 48))
    with torch.inference_mode():
        final = tiny.forward_features(x)
        (last,) = tiny.get_intermediate_layers(x)  # n=1: the last block, normed
        assert torch.allclose(last, final["x_norm_patchtokens"], atol=1e-6)
        (grid,) = tiny.get_intermediate_layers(x, reshape=True)
        assert grid.shape == (2, 64, 4, 3)
        for i in range(4):  # reshape is row-major over the patch grid
            for j in range(3):
                assert torch.equal(grid[:, :, i, j], last[:, i * 3 + j])
        two = tiny.get_intermediate_layers(x, n=2)
        by_index = tiny.get_intermediate_layers(x, n=[1, -1])
        assert all(torch.equal(a, b) for a, b in zip(two, by_index, strict=True))
        ((p, c, s),) = tiny.get_intermediate_layers(x, n=[2], return_class_token=True, return_extra_tokens=True)
        assert torch.allclose(p, last, atol=1e-6)
        assert torch.allclose(c, final["x_norm_clstoken"], atol=1e-6)
        assert torch.allclose(s, final["x_storage_tokens"], atol=1e-6)
        ((_, only_storage),) = tiny.get_intermediate_layers(x, n=[0], return_extra_tokens=True)
        assert only_storage.shape == (2, 4, 64)
        (raw,) = tiny.get_intermediate_layers(x, n=[2], norm=False)
        assert torch.equal(raw, final["x_prenorm"][:, 5:])


@pytest.mark.parametrize("n", [0, 4, [3], [-4]])
def test_intermediate_layers_out_of_range(tiny: DinoVisionTransformer, n) -> None:
    with pytest.raises(InputError):
        tiny.get_intermediate_layers(image((32, 32)), n=n)


def test_side_not_multiple_of_patch_size_is_refused(tiny: DinoVisionTransformer) -> None:
    with pytest.raises(InputError, match=r"input of 50x48 pixels.*multiples of the patch size 16.*crop to 48x48 or pad to 64x48"):
        tiny(image((50, 48)))
    with pytest.raises(InputError, match=r"shape \(B, 3, H, W\)"):
        tiny(torch.zeros(1, 4, 32, 32))
    with pytest.raises(InputError, match="float"):
        tiny(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_batch_elements_are_independent(tiny: DinoVisionTransformer) -> None:
    x = image((48, 48), batch=3)
    with torch.inference_mode():
        together = tiny.forward_features(x)["x_norm_patchtokens"]
        alone = tiny.forward_features(x[1:2])["x_norm_patchtokens"]
    assert torch.allclose(together[1:2], alone, atol=1e-5)


def test_rope_periods_and_angles() -> None:
    periods = default_periods(64, 100.0)  # ViT-L head_dim
    assert periods.shape == (16,)
    assert torch.allclose(periods, torch.tensor([100 ** (i / 16) for i in range(16)]))
    assert periods[0] == 1.0 and abs(periods[-1].item() - 74.989) < 1e-3
    model = build_model(TINY, "random")
    sin, cos = model.rope_embed(2, 3)
    assert sin.shape == cos.shape == (6, 16)
    # patch (row 0, col 2): y = 2*(0.5/2)-1 = -0.5, x = 2*(2.5/3)-1 = 2/3; layout [y | x | y | x] per period
    p = model.rope_embed.periods
    y_angles = 2 * math.pi * -0.5 / p
    x_angles = 2 * math.pi * (2 / 3) / p
    assert torch.allclose(sin[2], torch.sin(torch.cat([y_angles, x_angles, y_angles, x_angles])), atol=1e-6)


def test_rope_rotates_patches_only_and_preserves_norms() -> None:
    q = torch.randn(2, 4, 5 + 6, 16)
    model = build_model(TINY, "random")
    sin, cos = model.rope_embed(2, 3)
    out = apply_rope(q, sin, cos, n_prefix=5)
    assert torch.equal(out[:, :, :5], q[:, :, :5])
    assert not torch.allclose(out[:, :, 5:], q[:, :, 5:])
    assert torch.allclose(out.norm(dim=-1), q.norm(dim=-1), atol=1e-5)  # a rotation


def test_checkpoint_periods_are_used(tiny: DinoVisionTransformer) -> None:
    x = image((48, 48))
    rounded = DinoVisionTransformer(tiny.arch).eval()
    sd = dict(tiny.state_dict())
    sd["rope_embed.periods"] = sd["rope_embed.periods"] * 1.5
    rounded.load_state_dict(sd)
    assert torch.equal(rounded.rope_embed.periods, sd["rope_embed.periods"])
    with torch.inference_mode():
        a = tiny.forward_features(x)["x_norm_patchtokens"]
        b = rounded.forward_features(x)["x_norm_patchtokens"]
    assert (a - b).abs().max() > 1e-5  # well above fp32 noise (~1e-7) on these values


def _with(model: DinoVisionTransformer, edit) -> torch.Tensor:
    other = DinoVisionTransformer(model.arch).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        edit(other)
    with torch.inference_mode():
        return other.forward_features(image((48, 32)))["x_norm_patchtokens"]


def test_key_bias_is_masked_and_local_cls_norm_unused(tiny: DinoVisionTransformer) -> None:
    base = _with(tiny, lambda m: None)
    d = tiny.arch.embed_dim
    k_bias = _with(tiny, lambda m: m.blocks[0].attn.qkv.bias[d : 2 * d].add_(5.0))
    q_bias = _with(tiny, lambda m: m.blocks[0].attn.qkv.bias[:d].add_(5.0))
    assert torch.equal(base, k_bias)
    assert not torch.allclose(base, q_bias, atol=1e-3)
    swiglu = build_model("geodino_tiny_swiglu", "random")
    assert hasattr(swiglu, "local_cls_norm") and not hasattr(tiny, "local_cls_norm")
    base = _with(swiglu, lambda m: None)
    assert torch.equal(base, _with(swiglu, lambda m: m.local_cls_norm.weight.mul_(3.0)))


def test_random_weights_are_seeded_and_reference_like() -> None:
    a, b, c = (build_model(TINY, "random", seed=s) for s in (0, 0, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)
    assert torch.all(a.blocks[0].ls1.gamma == 1e-5)
    w = a.blocks[0].mlp.fc1.weight
    assert w.abs().max() <= 0.04 and 0.015 < w.std() < 0.02
    assert a.weights_info.is_random and a.weights_info.seed == 0 and not a.training
