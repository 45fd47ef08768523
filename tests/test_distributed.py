"""Block-wise Zarr runs from the shell: a 2-process dask cluster equals the single-process CLI bit for bit,
a run killed with SIGKILL resumes to the same result, and ``export`` writes the COG from the store."""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio, which this test uses)
import xarray as xr
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from geodino.engine import encode_scene
from geodino.errors import InputError
from geodino.featuremaps import open_features
from geodino.synthetic import write_scene
from tests import helpers
from tests.scenes import coordinate_raster, write_raster
from tests.test_cli_encode import assert_one_line_error, run

pytestmark = pytest.mark.slow  # fresh processes or a cluster: left out of the fast loop (make test-fast), run by make test

ROOT = Path(__file__).resolve().parents[1]
PLAN = ("--tile", "128", "--overlap", "32")


cli = functools.partial(helpers.cli, cwd=ROOT)  # python -m geodino.cli in a fresh process


def read_cog(path: Path) -> tuple[np.ndarray, object, object, tuple[str, ...]]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs, ds.descriptions


def test_two_worker_processes_equal_the_single_process_cli(tmp_path: Path, make_checkpoint) -> None:
    src = write_scene(tmp_path / "scene.tif", 700, 530)
    model = ("--model", "geodino_tiny_mlp", "--weights", make_checkpoint("geodino_tiny_mlp", seed=3))
    single = cli("encode", src, tmp_path / "single.tif", *model, *PLAN)
    assert single.returncode == 0, single.stderr
    dist = cli("encode", src, tmp_path / "dist.zarr", *model, *PLAN, "--format", "zarr", "--chunk", "12", "--workers", "2")
    assert dist.returncode == 0, dist.stderr
    assert "local cluster of 2 processes" in dist.stdout and "12 blocks of 12x12 cells" in dist.stdout, dist.stdout
    assert "12/12 blocks" in dist.stderr
    ref, transform, crs, names = read_cog(tmp_path / "single.tif")
    feats = open_features(tmp_path / "dist.zarr")
    assert feats.rio.transform() == transform and feats.rio.crs == crs and tuple(feats["feature"].values) == names
    assert feats.data.chunksize == (16, 12, 12)  # FEATURES_PER_CHUNK features per chunk
    np.testing.assert_array_equal(feats.values, ref)  # bit for bit, fp32 both
    assert feats.attrs["blocks"]["count"] == 12 and feats.attrs["weights_sha256"] != "random"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-geodino_tiny_mlp-3", "dist.zarr", "dist.zarr.json", "scene.tif", "single.tif", "single.tif.json"]  # fmt: skip

    exported = cli("export", tmp_path / "dist.zarr", tmp_path / "exported.tif")
    assert exported.returncode == 0, exported.stderr
    values, t2, crs2, names2 = read_cog(tmp_path / "exported.tif")
    np.testing.assert_array_equal(values, ref)
    assert (t2, crs2, names2) == (transform, crs, names)
    assert cog_validate(tmp_path / "exported.tif")[0]
    with rasterio.open(tmp_path / "exported.tif") as ds:
        assert ds.tags()["GEODINO_EXPORTED_FROM"] == str(tmp_path / "dist.zarr") and "GEODINO_WEIGHTS_SHA256" in ds.tags()


def test_a_run_killed_part_way_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "scene.tif", 512, 512)
    args = ("encode", src, tmp_path / "out.zarr", "--model", "geodino_tiny_mlp", "--weights", "random", *PLAN, "--format", "zarr")
    args += ("--chunk", "4")
    done = tmp_path / ".out.zarr.geodino-run" / "done"
    command = [sys.executable, str(ROOT / "cli.py"), *map(str, args)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (done.is_dir() and len(list(done.iterdir())) >= 8) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = len(list(done.iterdir()))
    assert 8 <= finished < 64 and not (tmp_path / "out.zarr").exists()  # part way, nothing at the output yet

    other = cli(*args[:-2], "--chunk", "6")
    assert other.returncode == 2 and "unfinished run with other settings" in other.stderr  # the partial run is kept
    resumed = cli(*args[:-2])  # without --chunk: the unfinished run's block size is kept
    assert resumed.returncode == 0, resumed.stderr
    assert f"{finished} done before (resumed)" in resumed.stdout
    assert not (tmp_path / ".out.zarr.geodino-run").exists()

    whole = cli(*args[:2], tmp_path / "whole.zarr", *args[3:])
    assert whole.returncode == 0, whole.stderr
    a, b = xr.open_zarr(tmp_path / "out.zarr"), xr.open_zarr(tmp_path / "whole.zarr")
    np.testing.assert_array_equal(a["features"].values, b["features"].values)
    fa, fb = a["features"].attrs, b["features"].attrs  # the run record is the array's
    assert fa["blocks"] == fb["blocks"] and fa["adapter"] == fb["adapter"]
    assert cli(*args[:2], tmp_path / "single.tif", *args[3:-4]).returncode == 0
    np.testing.assert_array_equal(a["features"].values, read_cog(tmp_path / "single.tif")[0])


def test_block_runs_refuse_bad_requests_in_one_line(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "scene.tif", 64, 64)
    tiny = ("--model", "geodino_tiny_mlp", "--weights", "random")
    assert_one_line_error(run("encode", src, tmp_path / "o.tif", *tiny, "--workers", "2"), "name the output .zarr")
    assert_one_line_error(run("encode", src, tmp_path / "o.zarr", *tiny, "--format", "zarr", "--workers", "0"), "--workers 0")
    assert_one_line_error(run("encode", src, tmp_path / "o.zarr", *tiny, "--format", "zarr", "--chunk", "0"), "--chunk 0")
    both = run("encode", src, tmp_path / "o.zarr", *tiny, "--format", "zarr", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert_one_line_error(both, "not both")
    assert_one_line_error(run("export", tmp_path / "none.zarr", tmp_path / "o.tif"), "not a Zarr store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


@pytest.mark.parametrize("dtype", ["float16"])
def test_block_runs_store_half_floats_like_the_streaming_writer(tmp_path: Path, dtype: str) -> None:
    src = write_scene(tmp_path / "scene.tif", 200, 160)
    tiny = ("--model", "geodino_tiny_mlp", "--weights", "random", *PLAN, "--dtype", dtype)
    assert run("encode", src, tmp_path / "a.tif", *tiny).exit_code == 0
    assert run("encode", src, tmp_path / "b.zarr", *tiny, "--format", "zarr", "--chunk", "5").exit_code == 0
    z = xr.open_zarr(tmp_path / "b.zarr")["features"]
    assert z.dtype == np.float16
    np.testing.assert_array_equal(z.values.astype(np.float32), read_cog(tmp_path / "a.tif")[0])
    assert run("export", tmp_path / "b.zarr", tmp_path / "c.tif", "--dtype", "float16").exit_code == 0
    import rasterio

    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "c.tif") as c:
        assert a.tags()["GEODINO_STORAGE"] == c.tags()["GEODINO_STORAGE"] and "NBITS=16" in c.tags()["GEODINO_STORAGE"]


def test_an_existing_cluster_by_address_builds_the_model_once_per_worker(tmp_path: Path) -> None:
    from dask.distributed import Client, LocalCluster

    from geodino.blocks import ModelRef, loaded_models
    from geodino.cluster import BlockRunner, encode_to_zarr
    from geodino.engine import EncodeOptions

    src = write_scene(tmp_path / "scene.tif", 400, 400)
    ref = ModelRef("geodino_tiny_swiglu", "random", device="cpu")
    options = EncodeOptions(tile=128, overlap=32, fmt="zarr")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        seen, address = [], cluster.scheduler_address
        res = encode_to_zarr(src, tmp_path / "f.zarr", ref, options, chunk=5, scheduler=address, progress=lambda d, t: seen.append(d))
        per_worker = client.run(loaded_models)
        broken = broken_scene(tmp_path)  # a GDAL error on a worker comes back as the one-line InputError
        fixed = (tmp_path / "fixed.yaml").write_text('name: fixed\nrgb: ["1", "2", "3"]\nscale: 1.0\nstretch: {lo: 0, hi: 65535}\n')
        with pytest.raises(InputError, match=r"cannot read .*broken\.tif at rows"):
            encode_to_zarr(broken, tmp_path / "b.zarr", ref, dataclasses.replace(options, sensor=str(tmp_path / "fixed.yaml")), 4, address)
        assert fixed and not (tmp_path / "b.zarr").exists()
        with BlockRunner(address) as runner:  # a remote cluster's workers are counted (for the default block size)
            assert runner.n_workers == 2 and runner.where == f"dask.distributed at {address}"
    assert res.blocks == 25 and seen[-1] == 25 and "dask.distributed at tcp://" in res.scheduler
    assert sorted(per_worker.values()) == [1, 1]  # 25 blocks, one model per worker process
    whole = encode_scene(src, tmp_path / "whole.tif", ref.extractor(), EncodeOptions(tile=128, overlap=32))
    np.testing.assert_array_equal(open_features(res.out).values, read_cog(whole.out)[0])


def broken_scene(tmp_path: Path) -> Path:
    src = write_raster(tmp_path / "big.tif", coordinate_raster(512, 512), tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    data = src.read_bytes()
    (tmp_path / "broken.tif").write_bytes(data[: len(data) * 2 // 3])  # header and first blocks fine, later blocks missing
    return tmp_path / "broken.tif"


def test_a_zarr_run_records_absolute_paths_and_the_files_it_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geodino.runstore import file_identity
    from geodino.scene import open_scene

    monkeypatch.chdir(tmp_path)
    write_scene(tmp_path / "scene.tif", 64, 64)
    r = run("encode", "scene.tif", "o.zarr", "--model", "geodino_tiny_mlp", "--weights", "random", "--format", "zarr")
    assert r.exit_code == 0, r.output
    assert xr.open_zarr(tmp_path / "o.zarr").features.attrs["scene"] == [str(tmp_path / "scene.tif")]
    scene = open_scene("scene.tif").absolute()
    assert scene.paths == (str(tmp_path / "scene.tif"),) and file_identity(scene.paths)[0][1] == (tmp_path / "scene.tif").stat().st_size


def test_an_unfinished_run_resumes_only_with_the_same_settings_and_files(tmp_path: Path) -> None:
    from odc.geo.geobox import GeoBox

    from geodino.blocks import Block
    from geodino.runstore import ZarrRun, write_block

    run_ = ZarrRun(tmp_path / "o.zarr")
    grid = GeoBox((8, 8), Affine(160.0, 0, 500000.0, 0, -160.0, 4000000.0), "EPSG:32633")
    fp = {"model": "m", "scene_files": [["s.tif", 100, 1]]}
    assert run_.prepare(fp, grid, ["a", "b"], "float32", 4, {"model": "m"}, overwrite=False) == set()
    write_block(str(run_.folder), Block(0, 1, 0, 4, 4, 8), np.ones((2, 4, 4), np.float32), "float32")
    assert run_.prepare(fp, grid, ["a", "b"], "float32", 4, {}, overwrite=False) == {"0_1"} and run_.previous_chunk() is None
    rewritten = {**fp, "scene_files": [["s.tif", 100, 2]]}  # the scene file changed since
    with pytest.raises(InputError, match="other settings or input files"):
        run_.prepare(rewritten, grid, ["a", "b"], "float32", 4, {}, overwrite=False)
    assert run_.prepare(fp, grid, ["a", "b"], "float32", 4, {}, overwrite=True) == set()  # --overwrite starts again
    assert run_.done() == set()


def test_block_runs_refuse_what_they_cannot_do_in_one_line(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "scene.tif", 64, 64)
    tiny = ("--model", "geodino_tiny_mlp", "--weights", "random")
    assert_one_line_error(
        run("encode", src, tmp_path / "o.zarr", *tiny, "--format", "zarr", "--dtype", "int8"),
        "Invalid value for '--dtype': 'int8' is not one of float32, float16",
    )
    assert_one_line_error(run("encode", src, tmp_path / "o.tif", *tiny, "--chunk", "4"), "--chunk")
    bogus = run("encode", src, tmp_path / "o.zarr", *tiny, "--format", "zarr", "--scheduler", "bogus")  # refused before connecting
    assert_one_line_error(bogus, "--scheduler 'bogus' is not a dask scheduler address")
    assert dask.config.get("scheduler", None) is None  # the failed client did not become this process's default
    empty = tmp_path / "empty.zarr"
    xr.Dataset().to_zarr(empty, zarr_format=2)
    assert_one_line_error(run("export", empty, tmp_path / "e.tif"), "not a finished geodino feature store")
    flat = tmp_path / "flat.zarr"
    xr.DataArray(np.zeros((3, 4), np.float32), dims=("y", "x")).rio.write_crs("EPSG:32633").to_dataset(name="f").to_zarr(
        flat, zarr_format=2
    )
    assert_one_line_error(run("export", flat, tmp_path / "f.tif"), "not a finished geodino feature store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.zarr", "flat.zarr", "scene.tif"]


def test_an_unreachable_scheduler_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "scene.tif", 64, 64)
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    args = ("--model", "geodino_tiny_mlp", "--weights", "random", "--format", "zarr", "--scheduler", "tcp://127.0.0.1:9")
    r = cli("encode", src, tmp_path / "o.zarr", *args, env=env)
    assert r.returncode == 2 and r.stderr.splitlines()[-1].startswith("geodino: error: cannot reach the dask scheduler tcp://127.0.0.1:9")
    assert "Traceback" not in r.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_a_run_folder_cut_short_while_being_set_up_starts_again_with_default_blocks(tmp_path: Path) -> None:
    src = write_scene(tmp_path / "scene.tif", 100, 100)
    (tmp_path / ".o.zarr.geodino-run" / "done").mkdir(parents=True)  # killed before its store and run.json were written
    r = run("encode", src, tmp_path / "o.zarr", "--model", "geodino_tiny_mlp", "--weights", "random", *PLAN, "--format", "zarr")
    assert r.exit_code == 0, r.output
    assert "1 block of 256x256 cells" in r.stdout and "dask threaded scheduler" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr", "o.zarr.json", "scene.tif"]


def test_lazy_encode_on_a_cluster_started_elsewhere_reads_the_scene_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """geodino.encode with a relative path and a default dask.distributed client whose workers run in another folder."""
    from dask.distributed import Client, LocalCluster

    import geodino
    from geodino.blocks import ModelRef
    from geodino.engine import EncodeOptions

    elsewhere = tmp_path / "workers"
    elsewhere.mkdir()
    (tmp_path / "data").mkdir()
    write_scene(tmp_path / "data" / "scene.tif", 200, 200)
    monkeypatch.chdir(elsewhere)  # the workers start here, where there is no data/scene.tif
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster):
        monkeypatch.chdir(tmp_path)  # the user's folder: data/scene.tif is relative to it
        feats = geodino.encode("data/scene.tif", model="geodino_tiny_mlp", weights="random", tile=64, overlap=16, chunk=4)
        assert feats.attrs["scene"] == [str(tmp_path / "data" / "scene.tif")]
        values = feats.compute().values  # on the workers, whose working folder is `elsewhere`
    ref = ModelRef("geodino_tiny_mlp", "random")
    whole = encode_scene(tmp_path / "data" / "scene.tif", tmp_path / "whole.tif", ref.extractor(), EncodeOptions(tile=64, overlap=16))
    np.testing.assert_array_equal(values, read_cog(whole.out)[0])
