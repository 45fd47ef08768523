"""The CHMv2 canopy-height head: parity with transformers' CHMv2ForDepthEstimation, Meta and HF layouts, errors.

transformers is the oracle: geodino writes its model as a Hugging Face folder (``save_canopy_model(layout="hf")``),
transformers loads it with ``from_pretrained`` (no missing, unexpected or mismatched key) and both compute heights
from the same random weights, drawn away from their init values (LayerScale up to 0.3, every bias non-zero).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from geodino.errors import InputError, WeightsError
from geodino.heads import (
    CHMV2_MEAN,
    DPTDecoder,
    bins_to_metres,
    build_canopy_model,
    get_head,
    head_meta_to_hf,
    hf_chmv2_config,
    mixlog_bins,
    random_decoder_state_dict,
    save_canopy_model,
)
from geodino.models import meta_to_hf, random_state_dict
from geodino.models.vit import DinoVisionTransformer
from tests.helpers import image

TOL_M = 1e-3  # metres
TINY = "geodino_tiny_chmv2"
VITL = "dinov3_vitl16_chmv2"


def _checkpoints(head: str, folder: Path, seed: int = 3) -> tuple[Path, Path, dict]:
    """Informative random head and backbone saved in Meta's layout: ``(head.pth, backbone.pth, head_sd)``."""
    spec = get_head(head)
    folder.mkdir(parents=True, exist_ok=True)
    head_sd = random_decoder_state_dict(spec.decoder, seed=seed, informative=True)
    torch.save(head_sd, folder / "head.pth")
    torch.save(random_state_dict(spec.backbone_spec, seed=seed, informative=True), folder / "backbone.pth")
    return folder / "head.pth", folder / "backbone.pth", head_sd


def _hf_reference(model, folder: Path) -> torch.nn.Module:
    """transformers' CHMv2ForDepthEstimation loaded from geodino's HF export, with no key problem."""
    from transformers import CHMv2ForDepthEstimation

    save_canopy_model(model, folder, layout="hf")
    ref, info = CHMv2ForDepthEstimation.from_pretrained(folder, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not problems, problems
    bb = ref.config.backbone_config
    assert bb.layer_norm_eps == model.backbone.arch.norm_eps == 1e-5 and not bb.key_bias
    assert list(bb.out_indices) == [i + 1 for i in model.spec.layers]
    return ref.eval()


def _compare(model, ref, shape: tuple[int, int]) -> float:
    """Max height difference (m) between geodino and transformers at ``shape``; checks the shape conventions."""
    x = image(shape, seed=5)
    h, w = shape
    with torch.inference_mode():
        ours = model(x)
        raw = bins_to_metres(model.logits(x), mixlog_bins(model.spec.n_bins, model.spec.min_depth, model.spec.max_depth))
        theirs = ref(pixel_values=x).predicted_depth  # (B, H', W'): the channel is squeezed
    out_h, out_w = 32 * -(-h // 32), 32 * -(-w // 32)  # one patch more along an odd patch-grid side
    assert ours.shape == (2, 1, h, w) and theirs.shape == (2, out_h, out_w) and raw.shape == (2, 1, out_h, out_w)
    diff = (raw[:, 0] - theirs).abs().max().item()
    # transformers' post_process_depth_estimation(target_sizes) resizes bilinearly with aligned corners.
    resized = F.interpolate(theirs[:, None], size=(h, w), mode="bilinear", align_corners=True)
    diff = max(diff, (ours - resized).abs().max().item())
    assert diff <= TOL_M, diff
    assert ours.std() > 1.0  # heights vary across pixels: the comparison exercises the weights
    return diff


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tiny")
    head_path, backbone_path, head_sd = _checkpoints(TINY, folder)
    model = build_canopy_model(TINY, head_path, backbone_path)
    return model, head_path, backbone_path, head_sd


@pytest.mark.parametrize("shape", [(64, 64), (64, 48)])
def test_tiny_parity(tiny, shape: tuple[int, int], tmp_path: Path) -> None:
    model = tiny[0]
    assert model.weights_info["head"]["layout"] == "meta" and not model.weights_info["random"]
    _compare(model, _hf_reference(model, tmp_path / "hf"), shape)


def test_backbone_eps_matters(tiny, tmp_path: Path) -> None:
    """CHMv2Config() defaults the backbone's LayerNorm eps to 1e-6; Meta's ViT uses 1e-5. The difference is far
    above the parity tolerance, so the export writes the eps explicitly and the parity test compares like with like."""
    import json

    from transformers import CHMv2ForDepthEstimation

    model = tiny[0]
    folder = save_canopy_model(model, tmp_path / "hf", layout="hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["backbone_config"]["layer_norm_eps"] == 1e-5
    config["backbone_config"]["layer_norm_eps"] = 1e-6
    (folder / "config.json").write_text(json.dumps(config))
    ref = CHMv2ForDepthEstimation.from_pretrained(folder).eval()
    x = image((64, 64), seed=5)
    with torch.inference_mode():
        assert (model(x)[:, 0] - ref(pixel_values=x).predicted_depth).abs().max() > 10 * TOL_M


def test_meta_round_trip(tiny, tmp_path: Path) -> None:
    model, _, backbone_path, head_sd = tiny
    assert all(torch.equal(v, head_sd[k]) for k, v in model.decoder.state_dict().items())
    saved = save_canopy_model(model, tmp_path / "again.pth", layout="meta")
    assert set(torch.load(saved, weights_only=True)) == set(head_sd)  # Meta's decoder keys, nothing else
    again = build_canopy_model(TINY, saved, backbone_path)
    x = image((64, 48))
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))
    assert again.weights_info["backbone"]["source"] == str(backbone_path)


def test_hf_round_trip(tiny, tmp_path: Path) -> None:
    model, *_ = tiny
    folder = save_canopy_model(model, tmp_path / "hf", layout="hf")
    x = image((64, 48))
    for source in (folder, folder / "model.safetensors"):
        again = build_canopy_model(TINY, source)
        info = again.weights_info
        assert info["head"]["layout"] == info["backbone"]["layout"] == "hf" and info["backbone"]["source"] == str(source)
        with torch.inference_mode():
            assert torch.equal(model(x), again(x))
    with pytest.raises(InputError, match="holds a backbone already"):
        build_canopy_model(TINY, folder, backbone_weights="random")


def test_hf_key_names_match_transformers() -> None:
    """geodino's HF names and shapes for the real-size model are exactly CHMv2ForDepthEstimation's, and the
    parameter count is the one published for facebook/dinov3-vitl16-chmv2-dpt-head (fusion projection included)."""
    from transformers import CHMv2Config, CHMv2ForDepthEstimation

    spec = get_head(VITL)
    with torch.device("meta"):
        ref = CHMv2ForDepthEstimation(CHMv2Config(**hf_chmv2_config(spec)))
        ours = {"backbone." + k: v for k, v in meta_to_hf(DinoVisionTransformer(spec.backbone_spec.arch).state_dict()).items()}
        ours.update(head_meta_to_hf(DPTDecoder(spec.decoder).state_dict()))
    theirs = ref.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert sum(v.numel() for v in theirs.values()) == 336_876_800
    assert "head.fusion_layers.0.projection.weight" in ours and "head.reassemble_stage.layers.2.resize.weight" not in ours


def test_official_name_wrong_hash(tiny, tmp_path: Path) -> None:
    fake = tmp_path / get_head(VITL).file_name
    fake.write_bytes(tiny[1].read_bytes())
    with pytest.raises(WeightsError) as err:
        build_canopy_model(VITL, fake, backbone_weights="random")
    msg = str(err.value)
    assert "\n" not in msg and fake.name in msg and "3703d643" in msg and "check_hash=False" in msg
    with pytest.raises(WeightsError, match="does not fit dinov3_vitl16_chmv2"):  # past the hash, the size check
        build_canopy_model(VITL, fake, backbone_weights="random", check_hash=False)
    with pytest.raises(WeightsError, match="official head checkpoint of dinov3_vitl16_chmv2, not of geodino_tiny_chmv2"):
        build_canopy_model(TINY, fake, check_hash=False)


def test_head_of_wrong_size(tiny, tmp_path: Path) -> None:
    _, head_path, backbone_path, head_sd = tiny
    with pytest.raises(WeightsError) as err:
        build_canopy_model(VITL, head_path, backbone_weights="random")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("head.pth does not fit dinov3_vitl16_chmv2: wrong shape: ")
    assert "(64, 128) vs (1024, 2048)" in msg and "which fits geodino_tiny_chmv2" in msg
    torch.save({k: v for k, v in head_sd.items() if not k.startswith("conv_depth.head.4.")}, tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match=r"missing: conv_depth\.head\.4\.weight, conv_depth\.head\.4\.bias\. .*incomplete"):
        build_canopy_model(TINY, tmp_path / "cut.pth", backbone_path)
    with pytest.raises(WeightsError) as err:  # the backbone file given as the head
        build_canopy_model(TINY, backbone_path)
    msg = str(err.value)
    assert "\n" not in msg and "missing: reassemble_blocks." in msg and "unexpected: cls_token" in msg
    assert "pass it as backbone_weights" in msg


def test_heights_bounds_and_bins() -> None:
    from transformers import CHMv2Config
    from transformers.models.chmv2.modeling_chmv2 import CHMv2FeaturesToDepth

    spec = get_head(VITL)
    ref = CHMv2FeaturesToDepth(CHMv2Config(**hf_chmv2_config(spec)))
    bins = mixlog_bins(spec.n_bins, spec.min_depth, spec.max_depth)
    assert torch.allclose(bins, ref._create_mixlog_bins(spec.n_bins, torch.device("cpu")), rtol=1e-6, atol=0)
    assert bins[0].item() == pytest.approx(0.001) and bins[-1].item() == pytest.approx(12.0) and (bins.diff() > 0).all()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, spec.n_bins, 4, 5, generator=g) * 3
    logits[0, :, 0, 0] = -1.0  # all bins off: uniform weights, the mean bin
    logits[0, :, 0, 1], logits[0, -1, 0, 1] = -1.0, 1e4  # one bin: the top, 96 m
    logits[0, :, 0, 2], logits[0, 0, 0, 2] = -1.0, 1e4  # the bottom, 8 x 0.001 m
    ours = bins_to_metres(logits, bins)
    assert torch.allclose(ours, ref(logits), rtol=1e-6, atol=1e-6)
    assert ours[0, 0, 0, 0].item() == pytest.approx(8 * bins.mean().item(), rel=1e-5)
    assert ours[0, 0, 0, 1].item() == pytest.approx(spec.max_depth, rel=1e-5)
    assert ours[0, 0, 0, 2].item() == pytest.approx(8 * spec.min_depth, rel=1e-3)
    # A height is a convex combination of the bins, x8: within [8 * min_depth, max_depth] up to rounding.
    assert ours.min() >= 8 * spec.min_depth * (1 - 1e-5) and ours.max() <= spec.max_depth * (1 + 1e-6)


def test_model_contract(tiny) -> None:
    model = tiny[0]
    spec = model.spec
    assert spec.mean == CHMV2_MEAN != spec.backbone_spec.mean  # CHMv2's red mean is 0.420, the SAT backbone's 0.430
    x01 = torch.rand(1, 3, 32, 32)
    assert torch.allclose(spec.normalize(x01), (x01 - torch.tensor(spec.mean)[:, None, None]) / torch.tensor(spec.std)[:, None, None])
    with torch.inference_mode():
        heights = model(spec.normalize(x01))
    assert heights.shape == (1, 1, 32, 32) and heights.min() >= 8 * spec.min_depth * (1 - 1e-5)
    with pytest.raises(InputError, match="multiples of the patch size"):
        model(torch.randn(1, 3, 40, 32))
    random = build_canopy_model(TINY, "random", seed=1)
    assert random.weights_info["random"] and random.weights_info["backbone"]["layout"] == "random"
    assert build_canopy_model(TINY).weights_info["head"]["source"] == "random"  # random-only: nothing found, random


def test_weights_found_in_geodino_weights(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """weights=None looks in $GEODINO_WEIGHTS for the head (``<head>_dpt_head-<hash>.pth``) and the backbone
    (its own official-style name), and verifies the hashes the names carry."""
    model, head_path, backbone_path, _ = tiny
    spec = model.spec
    head_file = tmp_path / f"{spec.file_stem}-{hashlib.sha256(head_path.read_bytes()).hexdigest()[:8]}.pth"
    backbone_file = tmp_path / f"{spec.backbone_spec.file_stem}-{hashlib.sha256(backbone_path.read_bytes()).hexdigest()[:8]}.pth"
    head_file.write_bytes(head_path.read_bytes())
    backbone_file.write_bytes(backbone_path.read_bytes())
    monkeypatch.setenv("GEODINO_WEIGHTS", str(tmp_path))
    found = build_canopy_model(TINY)
    info = found.weights_info
    assert info["head"]["source"] == str(head_file) and info["backbone"]["source"] == str(backbone_file)
    assert info["head"]["hash_verified"] and info["backbone"]["hash_verified"] and not info["random"]
    x = image((32, 48))
    with torch.inference_mode():
        assert torch.equal(model(x), found(x))


def test_official_head_needs_weights() -> None:
    with pytest.raises(WeightsError, match="no weights for dinov3_vitl16_chmv2"):
        build_canopy_model(VITL)


@pytest.fixture(scope="module")
def vitl(sat_vitl_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """Real-size random CHMv2: SAT ViT-L from its official file name, the head under the official head file name."""
    _, backbone_path = sat_vitl_checkpoint
    spec = get_head(VITL)
    official = tmp_path_factory.mktemp("chmv2") / spec.file_name
    torch.save(random_decoder_state_dict(spec.decoder, seed=4, informative=True), official)
    with pytest.raises(WeightsError, match="the name promises 3703d643"):  # random weights cannot have the official hash
        build_canopy_model(VITL, official, backbone_path)
    model = build_canopy_model(VITL, official, backbone_path, check_hash=False)
    return model, _hf_reference(model, official.parent / "hf")


@pytest.mark.slow
def test_vitl_chmv2_parity(vitl) -> None:
    model, ref = vitl
    assert model.weights_info["head"]["hash_verified"] is None and model.weights_info["backbone"]["layout"] == "meta"
    _compare(model, ref, (224, 160))
