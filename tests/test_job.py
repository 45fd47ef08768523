"""One Job, three executors: streaming, block-wise (dask, into a resumable Zarr store) and lazy give the same raster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geodino
from geodino.api import lazy_job
from geodino.cluster import encode_to_zarr
from geodino.engine import EncodeOptions, encode_scene
from geodino.errors import InputError
from geodino.job import BandChoice, Outputs, Tiling, prepare_job
from geodino.tilemodel import ModelCard, TileModel, TorchTileModel, card_of, load_factory
from tests.scenes import TRANSFORM, PatchProbe, coordinate_raster, write_raster


class Weighted(torch.nn.Module):
    """Pixel-local: ``2 x band 1 - band 2`` and ``band 3``, ``(B, 3, T, T) -> (B, 2, T, T)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([2 * x[:, 0] - x[:, 1], x[:, 2]], dim=1)


class Pooled(torch.nn.Module):
    """Patch-local at stride 4: the mean of each 4x4 cell of every band, ``(B, 3, T, T) -> (B, 3, T/4, T/4)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 4)


def models() -> dict[str, TileModel]:
    return {
        "features (stride 16)": PatchProbe(),
        "pixels (stride 1)": TorchTileModel(Weighted(), out_stride=1, channels=["a", "b"], device="cpu"),
        "cells of 4 px (stride 4)": TorchTileModel(Pooled(), out_stride=4, channels=3, device="cpu"),
    }


def three_ways(tmp: Path, src: Path, model: TileModel, tiling: Tiling, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    job = prepare_job(src, model, tiling=tiling)
    stream = encode_scene(job, tmp / "stream.tif", model, EncodeOptions(overwrite=True))
    with rasterio.open(stream.out) as ds:
        streamed, profile = ds.read(), (ds.transform, ds.crs, ds.shape, ds.descriptions)
    blockwise = encode_to_zarr(job, tmp / "blocks.zarr", model, EncodeOptions(fmt="zarr", overwrite=True), chunk=chunk)
    with xr.open_zarr(blockwise.out) as z:
        stored = z["features"].values
    lazy = lazy_job(job, model, chunk).compute().values
    return streamed, stored, lazy, profile


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(sorted(models())),
    h=st.integers(1, 150),
    w=st.integers(1, 150),
    tile_cells=st.integers(2, 5),
    overlap_cells=st.integers(0, 4),
    chunk=st.integers(1, 40),
    batch=st.integers(1, 3),
)
def test_the_three_executors_give_the_same_raster_bit_for_bit(
    tmp_path_factory: pytest.TempPathFactory, which: str, h: int, w: int, tile_cells: int, overlap_cells: int, chunk: int, batch: int
) -> None:
    model = models()[which]
    chunk = max(chunk, -(-max(h, w) // (model.out_stride * 8)))  # at most 8 x 8 blocks (150 x 150 in 1-cell blocks: minutes)
    tiling = Tiling(tile=16 * tile_cells, overlap=16 * min(overlap_cells, tile_cells - 1), batch_size=batch)
    tmp = tmp_path_factory.mktemp("exec")
    src = write_raster(tmp / "s.tif", coordinate_raster(h, w))
    streamed, stored, lazy, (transform, crs, shape, names) = three_ways(tmp, src, model, tiling, chunk)
    s = model.out_stride
    assert shape == (-(-h // s), -(-w // s)) and crs.to_epsg() == 32633 and names == model.channels
    assert transform == TRANSFORM @ transform.scale(s)  # the scene's grid, cells of s pixels
    np.testing.assert_array_equal(stored, streamed)
    np.testing.assert_array_equal(lazy, streamed)


def test_a_job_is_checked_once_before_any_work_and_says_what_it_runs(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", coordinate_raster(100, 70))
    model = TorchTileModel(Pooled(), out_stride=4, channels=["r", "g", "b"], device="cpu")
    job = prepare_job(src, model, tiling=Tiling(tile=64, overlap=16), choice=BandChoice(bands="3,2,1"))
    assert job.scene.paths == (str(src.resolve()),) and job.adapter.indexes == (2, 1, 0)
    assert job.grid_shape == (25, 18) and job.grid.affine == TRANSFORM @ TRANSFORM.scale(4) and job.channels == ("r", "g", "b")
    record = job.record(model, "test").as_dict()
    assert record["out_stride"] == 4 and record["model"] == "Pooled" and record["tiles"] == len(job.plan)
    assert record["weights_sha256"] == TorchTileModel(Pooled(), out_stride=4, channels=3).describe()["weights_sha256"]
    outputs = Outputs.of({"features": tmp_path / "f.tif", "tokens": None}, [src])
    assert prepare_job(src, model, tiling=Tiling(tile=64, overlap=16), outputs=outputs).outputs == outputs
    with pytest.raises(InputError, match="is also an input"):
        Outputs.of({"features": src}, [src])  # checked when made, before any job is prepared
    with pytest.raises(InputError, match="must divide 16"):
        card_of(ModelCard(("red",), 3, ("x",)))
    with pytest.raises(InputError, match="tile 40 must be a positive multiple"):
        prepare_job(src, model, tiling=Tiling(tile=40))
    with pytest.raises(InputError, match="--batch-size 0"):
        Tiling(batch_size=0).check()
    with pytest.raises(InputError, match="mean has 1 values for 2 input bands"):
        TorchTileModel(Weighted(), bands=("red", "nir"), channels=2, mean=(0.5,))


def test_a_model_whose_output_breaks_its_card_stops_the_run_and_writes_nothing(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", coordinate_raster(64, 64))
    liar = TorchTileModel(Pooled(), out_stride=16, channels=3, device="cpu")  # says 16, gives cells of 4 px
    with pytest.raises(geodino.GeodinoError, match=r"shape \(1, 3, 8, 8\).*promise \(1, 3, 2, 2\)"):
        encode_scene(src, tmp_path / "f.tif", liar, EncodeOptions(tile=32, overlap=0, batch_size=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_factories_are_refused_in_one_line_when_they_are_not_tile_models() -> None:
    with pytest.raises(InputError, match="registered name"):
        load_factory("no_colon_here")
    with pytest.raises(InputError, match="cannot import"):
        load_factory("geodino_no_such_module:make")
    with pytest.raises(InputError, match="has no callable"):
        load_factory("tests.test_job:nothing")
    with pytest.raises(InputError, match=r"wrap a torch module as geodino\.TorchTileModel"):
        load_factory("tests.test_job:Pooled")
    assert isinstance(load_factory("tests.test_job:probe"), PatchProbe)


def probe() -> PatchProbe:
    """A factory for ``--model tests.test_job:probe``."""
    return PatchProbe()


class Ratio(torch.nn.Module):
    """Pixel-local ``band 1 / (band 1 + band 2)``: 0/0 on the padding past the scene's edge (NaN there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] / (x[:, :1] + x[:, 1:2])


def test_a_model_that_divides_runs_where_padding_and_nodata_give_nan(tmp_path: Path) -> None:
    raw = coordinate_raster(50, 70) + 1  # no zeros inside the scene
    raw[:, :5, :5] = 0
    src = write_raster(tmp_path / "s.tif", raw, nodata=0)
    model = TorchTileModel(Ratio(), out_stride=1, channels=["ratio"], device="cpu")
    res = encode_scene(src, tmp_path / "r.tif", model, EncodeOptions(tile=32, overlap=16))
    with rasterio.open(res.out) as ds:
        got = ds.read(1)
    job = prepare_job(src, model)
    unit = job.adapter.to_unit(raw)
    with np.errstate(invalid="ignore"):
        want = (unit[0] / (unit[0] + unit[1])).astype(np.float32)
    assert np.isnan(got[:5, :5]).all() and np.isfinite(got[5:, 5:]).all()
    np.testing.assert_array_equal(got[5:, 5:], want[5:, 5:])


def test_a_factory_that_fails_and_backbone_options_given_with_a_model_of_ones_own_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_models.py").write_text("def make(:\n")
    (tmp_path / "raising_models.py").write_text("def make():\n    raise RuntimeError('no weights here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InputError, match="importing broken_models failed: SyntaxError"):
        load_factory("broken_models:make")
    with pytest.raises(InputError, match="the factory raised RuntimeError: no weights here"):
        load_factory("raising_models:make")
    src = write_raster(tmp_path / "s.tif", coordinate_raster(40, 40))
    for kw, named in (({"weights": "w.pt"}, "weights="), ({"layers": "5,11"}, "layers="), ({"precision": "bf16"}, "precision=")):
        with pytest.raises(InputError, match=f"only registered DINOv3 backbones take {named}; a model of your own"):
            geodino.encode(src, model=PatchProbe(), **kw)  # type: ignore[arg-type]
    nir = TorchTileModel(Ratio(), bands=("nir", "red"), out_stride=1, channels=["ratio"], device="cpu")
    with pytest.raises(InputError, match=r"no band nir, red in s\.tif.*; the model takes nir, red by identity"):
        prepare_job(src, nir)


def test_a_streamed_run_says_where_its_time_went(tmp_path: Path) -> None:
    from tests.helpers import run

    src = write_raster(tmp_path / "s.tif", coordinate_raster(100, 90))
    res = encode_scene(src, tmp_path / "f.tif", PatchProbe(), EncodeOptions(tile=32, overlap=16))
    st = res.stages
    assert st is not None and st.model == pytest.approx(res.model_seconds) and min(vars(st).values()) >= 0
    assert st.finish > 0 and st.write > 0 and st.read + st.model + st.blend + st.finish <= res.seconds
    with rasterio.open(res.out) as ds:
        recorded = json.loads(ds.tags()["GEODINO_SECONDS_BEFORE_FINISH"])
    assert set(recorded) == {"read", "model", "blend", "write", "finish", "bound"} and recorded["bound"] in ("model-bound", "I/O-bound")
    r = run("encode", src, tmp_path / "g.tif", "--model", "geodino_tiny_mlp", "--weights", "random", "--tile", "32", "--overlap", "16",
            "--profile")  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = [
        ln.split()[0]
        for ln in r.output.splitlines()
        if ln.split() and ln.split()[0] in ("read", "model", "blend", "write", "finish", "total")
    ]
    assert rows == ["read", "model", "blend", "write", "finish", "total"] and "bound)" in r.output
