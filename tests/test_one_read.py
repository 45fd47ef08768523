"""Every run reads the scene statistics once, and lazy encodes carry absolute paths (issue #12)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import geodino
import geodino.adapter
from tests.helpers import run
from tests.scenes import write_raster

TINY = ("--model", "geodino_tiny_mlp", "--weights", "random", "--tile", "64", "--overlap", "16")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the scene-wide statistics reads (the decimated read of ``prepare``)."""
    calls: list[int] = []
    real = geodino.adapter.decimated_read

    def counting(*args: object, **kw: object):
        calls.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(geodino.adapter, "decimated_read", counting)
    return calls


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_raster(tmp_path / "s.tif", rng.integers(100, 4000, (3, 80, 96)).astype(np.uint16))  # percentile stretch


@pytest.mark.parametrize("fmt", ["cog", "zarr"])
def test_encode_reads_the_statistics_once(reads: list[int], scene: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"f.{'tif' if fmt == 'cog' else 'zarr'}"
    r = run("encode", scene, out, *TINY, "--format", fmt)
    assert r.exit_code == 0, r.output
    assert len(reads) == 1


def test_train_head_reads_the_statistics_once(reads: list[int], scene: Path, tmp_path: Path) -> None:
    rr, cc = np.indices((80, 96))
    labels = write_raster(tmp_path / "labels.tif", ((rr // 16 + cc // 16) % 2).astype(np.uint8)[None])
    r = run("train-head", scene, labels, "--out", tmp_path / "head.pt", *TINY, "--layers", "-1", "--epochs", "2")
    assert r.exit_code == 0, r.output
    assert len(reads) == 1


def test_lazy_encode_reads_once_and_keeps_absolute_paths(reads: list[int], scene: Path, tmp_path: Path) -> None:
    here = os.getcwd()
    os.chdir(scene.parent)
    try:
        lazy = geodino.encode("s.tif", "geodino_tiny_mlp", weights="random", tile=64, overlap=16)
    finally:
        os.chdir(here)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)  # a worker started in another folder: a relative path would not be found
    try:
        values = lazy.values
    finally:
        os.chdir(here)
    assert np.isfinite(values).all() and len(reads) == 1
    assert lazy.attrs["scene"] == [str(scene)]  # recorded absolute
