"""Opt-in N-band input: the band mixer and patch-embedding inflation start exactly at the RGB path and are trainable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geodino.engine import EncodeOptions, encode_scene
from geodino.errors import InputError
from geodino.features import FeatureExtractor
from geodino.models import build_model
from geodino.models.multiband import BandMixer, inflate_patch_embed
from tests.scenes import write_raster


def rgbn(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 4, 64, 48, generator=torch.Generator().manual_seed(seed))


def test_untrained_mixer_selects_the_rgb_bands_and_learns() -> None:
    mixer = BandMixer(4, rgb=(2, 1, 0))
    x = rgbn()
    assert torch.equal(mixer(x), x[:, [2, 1, 0]])
    loss = (mixer(x) - x[:, [3, 3, 3]]).pow(2).mean()  # e.g. learn to bring in NIR
    loss.backward()
    assert mixer.mix.weight.grad[:, 3].abs().sum() > 0
    with pytest.raises(InputError, match="takes 4 bands, got 3"):
        mixer(x[:, :3])


def test_mixer_round_trips_and_refuses_other_files(tmp_path: Path) -> None:
    mixer = BandMixer(4, band_names=["red", "green", "blue", "nir"])
    with torch.no_grad():
        mixer.mix.weight[0, 3] = 0.25
    back = BandMixer.load(mixer.save(tmp_path / "mixer.pt"))
    assert back.band_names == ["red", "green", "blue", "nir"] and torch.equal(back.mix.weight, mixer.mix.weight)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a band mixer"):
        BandMixer.load(tmp_path / "other.pt")


def test_inflated_patch_embedding_equals_the_rgb_model_until_trained() -> None:
    rgb_model = build_model("geodino_tiny_mlp", "random", seed=3)
    model = inflate_patch_embed(build_model("geodino_tiny_mlp", "random", seed=3), 4, rgb=(0, 1, 2), band_names=["r", "g", "b", "nir"])
    assert model.arch.in_chans == 4 and model.spec.name == "geodino_tiny_mlp+4band" and model.spec.bands == ("r", "g", "b", "nir")
    assert model.spec.mean[:3] == rgb_model.spec.mean and model.spec.mean[3] == 0.5
    x = rgbn(1)
    with torch.no_grad():
        got = model.forward_features(x)["x_norm_patchtokens"]
        want = rgb_model.forward_features(x[:, :3])["x_norm_patchtokens"]
    assert torch.allclose(got, want, atol=1e-6)
    model.forward_features(x)["x_norm_patchtokens"].sum().backward()
    assert model.patch_embed.proj.weight.grad[:, 3].abs().sum() > 0  # the NIR filters can learn


def test_encode_with_a_mixer_takes_n_bands_and_matches_plain_rgb(tmp_path: Path) -> None:
    data = (np.random.default_rng(0).random((4, 70, 90)) * 255).astype(np.uint8)
    src = write_raster(tmp_path / "rgbn.tif", data, photometric="MINISBLACK")  # 4 bands, none of them alpha
    model = build_model("geodino_tiny_mlp", "random")
    plain = encode_scene(
        src, tmp_path / "plain.tif", FeatureExtractor(model, device="cpu"), EncodeOptions(tile=64, overlap=16, bands="1,2,3")
    )
    mixed_fx = FeatureExtractor(model, device="cpu", mixer=BandMixer(4, band_names=["red", "green", "blue", "nir"]))
    mixed = encode_scene(src, tmp_path / "mixed.tif", mixed_fx, EncodeOptions(tile=64, overlap=16, bands="1,2,3,4"))
    assert plain.adapter.indexes == (0, 1, 2) and mixed.adapter.indexes == (0, 1, 2, 3)
    with rasterio.open(plain.out) as a, rasterio.open(mixed.out) as b:
        assert np.allclose(a.read(), b.read(), atol=1e-5)
        assert json.loads(b.tags()["GEODINO_BAND_MIXER"])["bands"] == ["red", "green", "blue", "nir"]
        assert a.tags()["GEODINO_BAND_MIXER"] == "null"


def test_the_band_mixer_gives_the_same_bits_whatever_the_thread_count() -> None:
    mixer = BandMixer(5)
    with torch.no_grad():
        mixer.mix.weight.normal_()
        mixer.mix.bias.normal_()
    x = torch.rand(2, 5, 96, 96)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = mixer(x)
        torch.set_num_threads(max(2, threads))
        many = mixer(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)  # block-wise runs on 1-thread workers equal the single-process run
    torch.testing.assert_close(many, torch.nn.functional.conv2d(x, mixer.mix.weight, mixer.mix.bias))
