"""Any model over a real scene: plain torch modules as TileModels, from Python and as ``--model package.module:factory``."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

import geodino
from geodino.job import prepare_job
from tests.helpers import cli, one_line_error

pytestmark = pytest.mark.slow  # fresh processes

NAIP = Path("naip_rgbn_5m") / "m_4709963_se_14_1_20200831.tif"  # R, G, B, NIR (uint8, nodata 0)

#: A module a user would write: plain torch, no geodino base class; factories return TileModels.
USER_MODULE = '''
import torch
import geodino


class NirMinusRed(torch.nn.Module):
    """Pixel-local: (B, 2, T, T) [nir, red] -> (B, 1, T, T) nir - red."""

    def forward(self, x):
        return x[:, :1] - x[:, 1:2]


class CellMean(torch.nn.Module):
    """Patch-local at stride 4: (B, 2, T, T) -> (B, 2, T/4, T/4), the mean of each 4x4 cell."""

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 4)


def difference():
    return geodino.TorchTileModel(NirMinusRed(), bands=("nir", "red"), out_stride=1, channels=["nir_minus_red"], device="cpu")


def cells():
    return geodino.TorchTileModel(CellMean(), bands=("nir", "red"), out_stride=4, channels=["nir", "red"], device="cpu")
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "user_models.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_models", None)
    return str(tmp_path)


def direct(src: Path, module: torch.nn.Module, stride: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """The model run once on the whole scene: ``(C, ceil(H/s), ceil(W/s))``, NaN where a cell has no valid pixel."""
    job = prepare_job(src, geodino.TorchTileModel(module, bands=("nir", "red"), out_stride=stride, channels=1, device="cpu"))
    with rasterio.open(src) as ds:
        raw = ds.read([i + 1 for i in job.adapter.indexes])
    valid = job.adapter.valid(raw, None)
    unit = job.adapter.to_unit(raw)
    unit[:, ~valid] = 0.0
    h, w = valid.shape
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    x = np.zeros((1, 2, hp, wp), np.float32)
    x[0, :, :h, :w] = unit
    pad_valid = np.zeros((hp, wp), bool)
    pad_valid[:h, :w] = valid
    with torch.inference_mode():
        out = module(torch.from_numpy(x))[0].numpy()
    cells = pad_valid.reshape(hp // stride, stride, wp // stride, stride).any(axis=(1, 3))
    out = np.where(cells, out, np.nan)[:, : -(-h // stride), : -(-w // stride)]
    return out.astype(np.float32), job.adapter.indexes


@pytest.mark.parametrize(("factory", "stride"), [("difference", 1), ("cells", 4)])
def test_a_plain_torch_model_runs_over_a_real_scene_from_the_cli_and_from_python(
    shared_data: Path, user_module: str, tmp_path: Path, factory: str, stride: int
) -> None:
    import user_models

    src = shared_data / NAIP
    module = user_models.NirMinusRed() if stride == 1 else user_models.CellMean()
    want, indexes = direct(src, module, stride)
    assert indexes == (3, 0)  # nir is band 4, red band 1: chosen by identity, not by position
    out = tmp_path / "cli.tif"
    r = cli("encode", src, out, "--model", f"user_models:{factory}", "--tile", "128", "--overlap", "32", env={"PYTHONPATH": user_module})
    assert r.returncode == 0, r.stderr
    lazy = geodino.encode(src, model=getattr(user_models, factory)(), tile=96, overlap=16, chunk=600 // stride)  # 2 x 2 blocks
    with rasterio.open(src) as s, rasterio.open(out) as f:
        assert f.crs == s.crs and f.transform == s.transform @ s.transform.scale(stride) and f.shape == want.shape[1:]
        got = f.read()
        tags = f.tags()
    assert "nan" in str(f.nodata) and tags["GEODINO_MODEL"] == type(module).__name__ and tags["GEODINO_OUT_STRIDE"] == str(stride)
    np.testing.assert_array_equal(got, want)  # every cell, edges and nodata included, whatever the tiling
    np.testing.assert_array_equal(lazy.values, want)
    assert lazy.rio.transform() == f.transform and list(lazy["feature"].values) == list(getattr(user_models, factory)().channels)
    assert "preset: naip-rgbn" in r.stdout and "bands nir,red from the model's input bands" in r.stdout and f"wrote {out}" in r.stdout


def test_a_factory_that_is_not_a_tile_model_is_one_line(user_module: str, shared_data: Path, tmp_path: Path) -> None:
    r = cli("encode", shared_data / NAIP, tmp_path / "x.tif", "--model", "user_models:NirMinusRed", env={"PYTHONPATH": user_module})
    one_line_error(r, "returned a NirMinusRed, not a TileModel", "geodino.TorchTileModel")
    assert not (tmp_path / "x.tif").exists()
