"""Loading checkpoints: official names and renamed files, layouts, repairs, and one clear error otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from geodino.errors import WeightsError
from geodino.models import DinoVisionTransformer, build_model, get_spec, random_state_dict, save_checkpoint
from geodino.models.checkpoint import check_fit, sha256_file
from tests.helpers import image

TINY = "geodino_tiny_mlp"


def _patches(model: DinoVisionTransformer, shape=(48, 32)) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward_features(image(shape))["x_norm_patchtokens"]


@pytest.fixture
def tiny_sd() -> dict:
    return random_state_dict(get_spec(TINY), seed=2, informative=True)


def _save(sd: dict, path: Path) -> Path:
    torch.save(sd, path)
    return path


# -- the SAT ViT-L in the official layout --------------------------------------------------------


@pytest.mark.slow
def test_sat_checkpoint_official_name_and_renamed(sat_vitl_checkpoint, tmp_path: Path) -> None:
    sd, official = sat_vitl_checkpoint
    spec = get_spec("dinov3_vitl16_sat493m")
    assert official.name == "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
    # Random weights cannot have the promised hash: the default load says so, in one sentence.
    with pytest.raises(WeightsError, match=r"sha256 starts with [0-9a-f]{8}, the name promises eadcf0ff.*check_hash=False"):
        build_model(spec, official)
    by_name = build_model(spec, official, check_hash=False)
    renamed = tmp_path / "my_sat_backbone.pth"
    os.link(official, renamed)  # the reference fails here with unexpected local_cls_norm keys
    by_rename = build_model(spec, renamed)
    assert by_rename.weights_info.hash_verified is None and by_rename.weights_info.layout == "meta"
    assert torch.equal(by_name.local_cls_norm.weight, sd["local_cls_norm.weight"])
    for key, value in sd.items():
        assert torch.equal(by_rename.state_dict()[key], value), key
    x = image((64, 64), batch=1)
    with torch.inference_mode():
        assert torch.equal(by_name(x), by_rename(x))


def test_sat_and_lvd_vitl_files_are_told_apart(sat_vitl_checkpoint) -> None:
    sd, _ = sat_vitl_checkpoint
    sat, lvd = get_spec("dinov3_vitl16_sat493m"), get_spec("dinov3_vitl16_lvd1689m")
    with torch.device("meta"):
        sat_shapes = {k: v.shape for k, v in DinoVisionTransformer(sat.arch).state_dict().items()}
        lvd_shapes = {k: v.shape for k, v in DinoVisionTransformer(lvd.arch).state_dict().items()}
    with pytest.raises(WeightsError, match=r"does not fit dinov3_vitl16_lvd1689m: unexpected: local_cls_norm.*fits dinov3_vitl16_sat493m"):
        check_fit(sd, lvd_shapes, lvd, "x.pth")
    no_local = {k: v for k, v in sd.items() if not k.startswith("local_cls_norm")}
    with pytest.raises(WeightsError, match=r"does not fit dinov3_vitl16_sat493m: missing: local_cls_norm.*fits dinov3_vitl16_lvd1689m"):
        check_fit(no_local, sat_shapes, sat, "x.pth")


def test_official_file_of_another_spec_is_refused(tiny_sd, tmp_path: Path) -> None:
    path = _save(tiny_sd, tmp_path / "dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth")
    with pytest.raises(WeightsError, match="is the official checkpoint of dinov3_vitl16_lvd1689m, not of dinov3_vitl16_sat493m"):
        build_model("dinov3_vitl16_sat493m", path)


# -- repairs the reference needs by hand -----------------------------------------------------------


def test_missing_or_nan_bias_mask_is_repaired(tiny_sd, tmp_path: Path) -> None:
    full = build_model(TINY, _save(tiny_sd, tmp_path / "full.pth"))
    no_mask = {k: v for k, v in tiny_sd.items() if not k.endswith("bias_mask")}
    nan_mask = {k: (torch.full_like(v, float("nan")) if k.endswith("bias_mask") else v) for k, v in tiny_sd.items()}
    for name, sd in (("no_mask", no_mask), ("nan_mask", nan_mask)):
        model = build_model(TINY, _save(sd, tmp_path / f"{name}.pth"))
        out = _patches(model)
        assert torch.isfinite(out).all()
        assert torch.equal(out, _patches(full))


def test_missing_periods_are_computed_and_bf16_periods_kept(tiny_sd, tmp_path: Path) -> None:
    no_periods = {k: v for k, v in tiny_sd.items() if k != "rope_embed.periods"}
    model = build_model(TINY, _save(no_periods, tmp_path / "a.pth"))
    assert torch.equal(model.rope_embed.periods, tiny_sd["rope_embed.periods"])
    bf16 = {**tiny_sd, "rope_embed.periods": tiny_sd["rope_embed.periods"].to(torch.bfloat16)}
    model = build_model(TINY, _save(bf16, tmp_path / "b.pth"))
    assert model.rope_embed.periods.dtype == torch.float32
    assert torch.equal(model.rope_embed.periods, bf16["rope_embed.periods"].float())


@pytest.mark.parametrize("wrap", ["model", "teacher"])
def test_wrapped_training_checkpoints(tiny_sd, tmp_path: Path, wrap: str) -> None:
    inner = tiny_sd if wrap == "model" else {f"backbone.{k}": v for k, v in tiny_sd.items()}
    reference = build_model(TINY, _save(tiny_sd, tmp_path / "flat.pth"))
    model = build_model(TINY, _save({wrap: inner, "iteration": torch.tensor(5)}, tmp_path / "wrapped.pth"))
    assert torch.equal(_patches(model), _patches(reference))


def test_load_in_bf16_keeps_rope_and_mask_in_fp32(tiny_sd, tmp_path: Path) -> None:
    model = build_model(TINY, _save(tiny_sd, tmp_path / "w.pth"), dtype=torch.bfloat16)
    assert model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert model.rope_embed.periods.dtype == torch.float32
    assert model.blocks[0].attn.qkv.bias_mask.dtype == torch.float32
    fp32 = _patches(build_model(TINY, tmp_path / "w.pth"))
    with torch.inference_mode():
        out = model.forward_features(image((48, 32)).bfloat16())["x_norm_patchtokens"]
    assert (out.float() - fp32).abs().max() < 0.1


# -- layouts -------------------------------------------------------------------------------------


def test_hf_folder_saved_by_transformers_loads(tiny_sd, tmp_path: Path) -> None:
    from tests.helpers import hf_reference

    spec = get_spec(TINY)
    ref = hf_reference(spec, tiny_sd, tmp_path / "ref")
    ref.save_pretrained(tmp_path / "saved_by_transformers")
    model = build_model(TINY, tmp_path / "saved_by_transformers")
    assert model.weights_info.layout == "hf"
    meta = build_model(TINY, _save(tiny_sd, tmp_path / "w.pth"))
    assert torch.allclose(_patches(model), _patches(meta), atol=1e-6)
    # a bare .safetensors file (no config.json beside it) also loads
    bare = tmp_path / "bare" / "weights.safetensors"
    bare.parent.mkdir()
    os.link(tmp_path / "saved_by_transformers" / "model.safetensors", bare)
    assert torch.equal(_patches(build_model(TINY, bare)), _patches(model))


def test_save_checkpoint_round_trips_both_layouts(tiny_sd, tmp_path: Path) -> None:
    model = build_model(TINY, _save(tiny_sd, tmp_path / "w.pth"))
    save_checkpoint(model, tmp_path / "hf", layout="hf")
    save_checkpoint(model, tmp_path / "meta.pth", layout="meta")
    for src in (tmp_path / "hf", tmp_path / "meta.pth"):
        assert torch.equal(_patches(build_model(TINY, src)), _patches(model))
    with pytest.raises(ValueError, match="layout"):
        save_checkpoint(model, tmp_path / "x", layout="onnx")


def test_hf_config_that_disagrees_with_the_spec(tiny_sd, tmp_path: Path) -> None:
    model = build_model(TINY, _save(tiny_sd, tmp_path / "w.pth"))
    folder = save_checkpoint(model, tmp_path / "hf", layout="hf")
    cfg = (folder / "config.json").read_text().replace('"num_hidden_layers": 3', '"num_hidden_layers": 12')
    (folder / "config.json").write_text(cfg)
    with pytest.raises(WeightsError, match=r"hf does not fit geodino_tiny_mlp: its config.json has num_hidden_layers=12 \(spec: 3\)"):
        build_model(TINY, folder)


# -- errors ------------------------------------------------------------------------------------


def test_other_architecture_gives_one_clear_error(tmp_path: Path) -> None:
    path = _save(random_state_dict(get_spec("geodino_tiny_swiglu")), tmp_path / "swiglu.pth")
    with pytest.raises(WeightsError) as err:
        build_model(TINY, path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("swiglu.pth does not fit geodino_tiny_mlp: missing: blocks.0.attn.qkv.bias, ")
    assert "unexpected: " in msg and "Likely cause: it looks like a embed_dim 64, 2 blocks, swiglu FFN" in msg
    assert msg.endswith("which fits geodino_tiny_swiglu")


def test_not_a_backbone_checkpoint(tmp_path: Path) -> None:
    path = _save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "classifier.pth")
    with pytest.raises(WeightsError, match="Likely cause: it is not a DINOv3 backbone checkpoint"):
        build_model(TINY, path)


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_truncated_files(tiny_sd, tmp_path: Path, kind: str) -> None:
    if kind == "pth":
        full = _save(tiny_sd, tmp_path / "full.pth")
    else:
        full = save_checkpoint(build_model(TINY, _save(tiny_sd, tmp_path / "w.pth")), tmp_path / "hf", layout="hf") / "model.safetensors"
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"cut\.\w+: cannot read .*truncated"):
        build_model(TINY, cut)


def test_garbage_and_pickled_objects_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all" * 100)
    with pytest.raises(WeightsError, match=r"junk\.pth: cannot read checkpoint"):
        build_model(TINY, junk)
    evil = tmp_path / "evil.pth"
    torch.save({"weights": Path("/etc/passwd")}, evil)  # an arbitrary object: weights_only refuses it
    with pytest.raises(WeightsError, match=r"evil\.pth: cannot read checkpoint"):
        build_model(TINY, evil)


def test_hash_in_name_is_verified(tiny_sd, tmp_path: Path) -> None:
    plain = _save(tiny_sd, tmp_path / "w.pth")
    stem = get_spec(TINY).file_stem
    good = tmp_path / f"{stem}-{sha256_file(plain)[:8]}.pth"
    os.link(plain, good)
    assert build_model(TINY, good).weights_info.hash_verified == sha256_file(plain)[:8]
    bad = tmp_path / f"{stem}-00000000.pth"
    os.link(plain, bad)
    with pytest.raises(WeightsError, match="the name promises 00000000"):
        build_model(TINY, bad)
    assert build_model(TINY, bad, check_hash=False).weights_info.hash_verified is None


def test_sharded_hf_folder_loads(tiny_sd, tmp_path: Path) -> None:
    """Large HF checkpoints (the 7B) come as shards listed in model.safetensors.index.json."""
    import json

    from safetensors.torch import load_file, save_file

    model = build_model(TINY, _save(tiny_sd, tmp_path / "w.pth"))
    folder = save_checkpoint(model, tmp_path / "hf", layout="hf")
    full = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    keys = sorted(full)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    for name, part in shards.items():
        save_file({k: full[k] for k in part}, str(folder / name))
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.equal(_patches(build_model(TINY, folder)), _patches(model))


# -- NaN/inf values and unreadable side files ------------------------------------------------------

NAN_MSG = "checkpoint {}: tensor '{}' holds NaN/inf values (a corrupt file or a diverged training run)"


def _poisoned(sd: dict, key: str, value: float) -> dict:
    t = sd[key].clone()
    t.view(-1)[-1] = value
    return {**sd, key: t}


@pytest.mark.parametrize(
    ("key", "value"), [("blocks.0.attn.qkv.weight", float("nan")), ("norm.bias", float("inf")), ("rope_embed.periods", float("-inf"))]
)
def test_nonfinite_tensor_is_refused_by_name(tiny_sd, tmp_path: Path, key: str, value: float) -> None:
    path = _save(_poisoned(tiny_sd, key, value), tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as err:
        build_model(TINY, path)
    assert str(err.value) == NAN_MSG.format("bad.pth", key)


def test_nonfinite_tensor_in_hf_folder_is_named_as_in_the_file(tiny_sd, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = save_checkpoint(build_model(TINY, _save(tiny_sd, tmp_path / "w.pth")), tmp_path / "hf", layout="hf")
    sd = load_file(str(folder / "model.safetensors"))
    save_file(_poisoned(sd, "model.layer.1.mlp.up_proj.weight", float("inf")), str(folder / "model.safetensors"))
    with pytest.raises(WeightsError) as err:
        build_model(TINY, folder)
    assert str(err.value) == NAN_MSG.format("hf", "model.layer.1.mlp.up_proj.weight")


def test_check_weights_refuses_nonfinite_tensors_in_one_line(tiny_sd, tmp_path: Path) -> None:
    from tests.helpers import one_line_error, run

    path = _save(_poisoned(tiny_sd, "cls_token", float("nan")), tmp_path / "nan.pth")
    one_line_error(run("check-weights", TINY, "--weights", path, columns=300), "nan.pth: tensor 'cls_token' holds NaN/inf values")


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("config.json", '{"hidden_size": 64,', "config.json: not a valid JSON file (Expecting"),
        ("config.json", "[1, 2]", "config.json: must hold a JSON object, not a list"),
        ("model.safetensors.index.json", "{oops", "model.safetensors.index.json: not a valid JSON file"),
        ("model.safetensors.index.json", '{"metadata": {}}', "model.safetensors.index.json: needs a weight_map"),
    ],
)
def test_unreadable_hf_json_is_one_line(tiny_sd, tmp_path: Path, name: str, text: str, fragment: str) -> None:
    folder = save_checkpoint(build_model(TINY, _save(tiny_sd, tmp_path / "w.pth")), tmp_path / "hf", layout="hf")
    (folder / name).write_text(text)
    with pytest.raises(WeightsError) as err:
        build_model(TINY, folder)
    assert fragment in str(err.value) and "\n" not in str(err.value)
