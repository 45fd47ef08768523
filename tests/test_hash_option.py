"""One way past a hash check everywhere: every command that loads weights takes --no-check-hash, the
Python API takes check_hash=, and the refusal names the option that exists where it is raised."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import geodino
from geodino.errors import WeightsError
from geodino.models import get_spec
from geodino.models.checkpoint import hash_in_name
from tests.helpers import run
from tests.scenes import write_raster

TINY = "geodino_tiny_mlp"
PLAN = ["--tile", "64", "--overlap", "16"]


def wrong_names(ckpt: Path, stem: str) -> list[Path]:
    """The checkpoint copied under the official name and under a renamed one, both promising a hash it does not have."""
    wrong = "0" * 8 if hash_in_name(ckpt) != "0" * 8 else "f" * 8
    out = []
    for name in (f"{stem}-{wrong}.pth", f"my_renamed_weights-{wrong}.pth"):
        path = ckpt.parent / "wrong" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(ckpt.read_bytes())
        out.append(path)
    return out


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_raster(tmp_path / "rgb.tif", rng.integers(0, 255, (3, 64, 96), dtype=np.uint8), photometric="RGB")


def refused_then_loaded(args: list[str | Path], out: Path) -> None:
    refused = run(*args)
    assert refused.exit_code == 2, refused.output
    line = refused.stderr.strip()
    assert "\n" not in line and "--no-check-hash" in line and "sha256 starts with" in line, refused.stderr
    assert not out.exists()
    passed = run(*args, "--no-check-hash")
    assert passed.exit_code == 0, passed.output
    assert out.exists()


def test_encode_train_head_land_cover_take_no_check_hash(make_checkpoint, scene: Path, tmp_path: Path) -> None:
    for i, ckpt in enumerate(wrong_names(make_checkpoint(TINY, seed=1), get_spec(TINY).file_stem)):
        out = tmp_path / f"features{i}.tif"
        refused_then_loaded(["encode", scene, out, "--model", TINY, "--weights", ckpt, *PLAN], out)
        rr, cc = np.indices((64, 96))
        labels = write_raster(tmp_path / f"labels{i}.tif", ((rr // 16 + cc // 16) % 2).astype(np.uint8)[None])
        head = tmp_path / f"head{i}.pt"
        refused_then_loaded(
            ["train-head", scene, labels, "--out", head, "--model", TINY, "--weights", ckpt, "--layers", "-1", "--epochs", "2", *PLAN], head
        )
        classes = tmp_path / f"classes{i}.tif"
        refused_then_loaded(["land-cover", scene, classes, "--head", head, "--weights", ckpt, *PLAN], classes)


def test_canopy_height_takes_no_check_hash(scene: Path, tmp_path: Path) -> None:
    from geodino.heads.chmv2 import build_canopy_model, get_head, save_canopy_model

    saved = save_canopy_model(build_canopy_model("geodino_tiny_chmv2", "random", seed=2), tmp_path / "tiny_head.pth", layout="meta")
    for i, ckpt in enumerate(wrong_names(saved, get_head("geodino_tiny_chmv2").file_stem)):
        out = tmp_path / f"height{i}.tif"
        refused_then_loaded(["canopy-height", scene, out, "--head", "geodino_tiny_chmv2", "--weights", ckpt, *PLAN], out)


def test_demo_takes_no_check_hash(make_checkpoint, scene: Path, tmp_path: Path) -> None:
    ckpt = wrong_names(make_checkpoint(TINY, seed=1), get_spec(TINY).file_stem)[0]
    out = tmp_path / "demo"
    args = ["demo", "--model", TINY, "--weights", ckpt, "--scene", scene, "--out-dir", out, "--tile", "64", "--overlap", "16"]
    refused = run(*args)
    assert refused.exit_code == 2 and "--no-check-hash" in refused.stderr, refused.output
    assert run(*args, "--no-check-hash").exit_code == 0
    assert (out / "features.tif").exists()


def test_python_api_takes_check_hash(make_checkpoint, scene: Path) -> None:
    ckpt = wrong_names(make_checkpoint(TINY, seed=1), get_spec(TINY).file_stem)[1]
    with pytest.raises(WeightsError, match=r"check_hash=False in Python"):
        geodino.encode(scene, TINY, weights=str(ckpt), tile=64, overlap=16)
    features = geodino.encode(scene, TINY, weights=str(ckpt), tile=64, overlap=16, check_hash=False).compute()
    assert features.shape[1:] == (4, 6) and np.isfinite(features.values).all()


def test_fresh_process_sees_the_option(make_checkpoint, scene: Path, tmp_path: Path) -> None:
    ckpt = wrong_names(make_checkpoint(TINY, seed=1), get_spec(TINY).file_stem)[0]
    out = tmp_path / "fresh.tif"
    argv = [sys.executable, "-m", "geodino.cli", "encode", str(scene), str(out), "--model", TINY, "--weights", str(ckpt), *PLAN]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and "--no-check-hash" in refused.stderr
    ok = subprocess.run([*argv, "--no-check-hash"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert out.exists()
