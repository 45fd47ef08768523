"""Weights fetched with ``hf download`` into the Hugging Face hub cache are found (refs/main first, then the newest
snapshot that holds weights), the cache folder follows huggingface_hub's rules, and outputs record the snapshot."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geodino.errors import WeightsError
from geodino.models import build_model, find_weights, get_spec, save_checkpoint
from geodino.models.hubcache import hub_cache_dir, snapshots
from geodino.models.specs import WeightsSpec
from geodino.outputinfo import output_info
from tests.helpers import cli, hub_snapshot
from tests.scenes import coordinate_raster, write_raster

#: the tiny architecture under a made-up hub repo: what an official spec does, at test size
TINY_HF = dataclasses.replace(get_spec("geodino_tiny_mlp"), name="tiny_hf", hf_repo="facebook/geodino-tiny-test", random_only=False)
HUB_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME")


def _hf_files(spec: WeightsSpec, seed: int, folder: Path) -> dict[str, Path]:
    """Random weights of ``spec`` as a Hugging Face folder (config.json + model.safetensors)."""
    saved = save_checkpoint(build_model(spec, "random", seed=seed), folder, layout="hf")
    return {p.name: p for p in saved.iterdir()}


def _features(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model.forward_features(torch.ones(1, 3, 32, 32))["x_norm_patchtokens"]


def _older(path: Path, seconds: int) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def test_hub_cache_dir_follows_the_documented_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in HUB_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", "~/hf")
    assert hub_cache_dir() == tmp_path / "home" / "hf" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("SOMEWHERE", str(tmp_path / "there"))
    monkeypatch.setenv("HF_HUB_CACHE", "$SOMEWHERE/hub")
    assert hub_cache_dir() == tmp_path / "there" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", "")  # empty means unset
    assert hub_cache_dir() == tmp_path / "legacy"


def test_hub_cache_dir_agrees_with_huggingface_hub(tmp_path: Path) -> None:
    """The same folder as huggingface_hub itself computes (installed with transformers for the tests; geodino never
    imports it), for each variable that moves the cache."""
    pytest.importorskip("huggingface_hub")
    cases = [{}, {"XDG_CACHE_HOME": "xdg"}, {"HF_HOME": "home"}, {"HF_HOME": "home", "HUGGINGFACE_HUB_CACHE": "legacy"}]
    cases.append({"HF_HOME": "home", "HUGGINGFACE_HUB_CACHE": "legacy", "HF_HUB_CACHE": "hub"})
    code = (
        "import json, os, sys, importlib; import huggingface_hub.constants as c; from geodino.models.hubcache import hub_cache_dir\n"
        "for case in json.loads(sys.argv[1]):\n"
        "    for k in ('HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HOME', 'XDG_CACHE_HOME'): os.environ.pop(k, None)\n"
        "    os.environ.update({k: os.path.join(sys.argv[2], v) for k, v in case.items()})\n"
        "    importlib.reload(c); print(json.dumps([c.HF_HUB_CACHE, str(hub_cache_dir())]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in HUB_VARS} | {"HOME": str(tmp_path / "h")}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(cases), str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    pairs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(pairs) == len(cases) and all(theirs == mine for theirs, mine in pairs), pairs


def test_refs_main_wins_then_the_newest_snapshot_that_holds_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    with pytest.raises(WeightsError) as err:  # nothing cached: the message names the hub cache among the places looked
        find_weights(TINY_HF)
    assert f"Hugging Face cache {hub}" in str(err.value) and "\n" not in str(err.value)

    main = hub_snapshot(hub, TINY_HF.hf_repo, "a" * 40, _hf_files(TINY_HF, 1, tmp_path / "w1"), main=True)
    newer = hub_snapshot(hub, TINY_HF.hf_repo, "b" * 40, _hf_files(TINY_HF, 2, tmp_path / "w2"))
    _older(main, 3600)
    assert (main / "model.safetensors").is_symlink() and (main / "model.safetensors").resolve().parent.name == "blobs"
    assert find_weights(TINY_HF) == main
    model = build_model(TINY_HF)  # what encode does with no --weights
    assert model.weights_info.source == str(main) and model.weights_info.layout == "hf"
    assert torch.equal(_features(model), _features(build_model(TINY_HF, "random", seed=1)))
    assert not torch.allclose(_features(model), _features(build_model(TINY_HF, "random", seed=2)))

    (hub / "models--facebook--geodino-tiny-test" / "refs" / "main").unlink()  # no ref: the newest snapshot
    assert find_weights(TINY_HF) == newer
    partial = hub_snapshot(hub, TINY_HF.hf_repo, "c" * 40, {"config.json": main / "config.json"}, main=True)
    assert partial not in snapshots(hub / "models--facebook--geodino-tiny-test")  # a config alone holds no weights
    assert find_weights(TINY_HF) == newer
    (newer / "model.safetensors").resolve().unlink()  # a blob gone (a cleaned cache): its snapshot no longer counts
    assert find_weights(TINY_HF) == main

    # the HF layout inside geodino's own cache (or a folder passed as weights) follows the same order
    assert find_weights(TINY_HF, hub) == main
    # geodino's own cache comes first
    own = tmp_path / "own"
    save_checkpoint(build_model(TINY_HF, "random", seed=3), own / "geodino-tiny-test", layout="hf")
    assert find_weights(TINY_HF, cache=own) == own / "geodino-tiny-test"


def test_hf_home_locates_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsError, match=f"Hugging Face cache {tmp_path / 'hf' / 'hub'}"):
        find_weights(TINY_HF)
    snap = hub_snapshot(tmp_path / "hf" / "hub", TINY_HF.hf_repo, "d" * 40, _hf_files(TINY_HF, 4, tmp_path / "w"), main=True)
    assert find_weights(TINY_HF) == snap


@pytest.mark.slow
def test_encode_in_a_fresh_process_uses_weights_from_the_hub_cache(tmp_path: Path) -> None:
    """``hf download facebook/dinov3-vits16-pretrain-lvd1689m`` then ``geodino encode --model dinov3_vits16_lvd1689m``:
    the snapshot ``refs/main`` names is used (not a newer one) and the output records it."""
    spec = get_spec("dinov3_vits16_lvd1689m")
    assert spec.hf_repo == "facebook/dinov3-vits16-pretrain-lvd1689m"
    hub = tmp_path / "hf" / "hub"
    files = _hf_files(spec, 1, tmp_path / "w")
    main = hub_snapshot(hub, spec.hf_repo, "1" * 40, files, main=True)
    newer = hub_snapshot(hub, spec.hf_repo, "2" * 40, files)
    _older(main, 3600)
    write_raster(tmp_path / "scene.tif", coordinate_raster(64, 64).astype("uint8"))
    env = {"HF_HUB_CACHE": "", "HF_HOME": str(tmp_path / "hf")}  # only HF_HOME says where the cache is
    args = ("encode", "scene.tif", "f.tif", "--model", spec.name, "--sensor", "rgb8", "--tile", "64", "--overlap", "16")
    done = cli(*args, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "RANDOM" not in done.stderr  # real (if randomly drawn) weights from a file, not --weights random
    record = output_info(tmp_path / "f.tif")
    assert record is not None
    assert record["record"]["weights"] == str(main) and record["record"]["model"] == spec.name, record["record"]
    assert str(newer) not in json.dumps(record)
    # with nothing cached the refusal is one line that names the hub cache
    (hub / "models--facebook--dinov3-vits16-pretrain-lvd1689m").rename(tmp_path / "moved")
    done = cli(*args[:2], "g.tif", *args[3:], cwd=tmp_path, env=env)
    assert done.returncode == 2 and f"Hugging Face cache {hub}" in done.stderr, done.stderr
    assert not (tmp_path / "g.tif").exists()
