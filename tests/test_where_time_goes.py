"""Where the time goes, for users: ``--profile`` on the prediction commands (the five stages, also kept in the
output's record) and ``geodino info --estimate`` (measured seconds per tile, the total, model- or I/O-bound).
The CLI runs in fresh processes, as a user's shell runs it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geodino.report import format_report, scene_report
from geodino.synthetic import write_scene
from tests.helpers import cli
from tests.scenes import coordinate_raster, write_raster

pytestmark = pytest.mark.slow  # fresh processes: left out of the fast loop (make test-fast), run by make test

STAGES = ("read", "model", "blend", "write", "finish")
BOUNDS = ("model-bound", "I/O-bound")
SMALL = ("--tile", "64", "--overlap", "16")


def test_canopy_height_profile_prints_the_stages_and_the_record_keeps_them(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "scene.tif", 160)
    out = tmp_path / "chm.tif"
    r = cli("canopy-height", scene, out, "--head", "geodino_tiny_chmv2", "--weights", "random", *SMALL, "--profile")
    assert r.returncode == 0, r.stderr
    summary = next(ln for ln in r.stdout.splitlines() if ln.startswith("wrote "))
    assert "read wait" in summary and "finish" in summary and summary.rstrip(")").endswith(BOUNDS)
    table = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.split() and ln.split()[0] in (*STAGES, "total")}
    assert list(table) == [*STAGES, "total"]
    assert all(float(table[k][1]) >= 0 and table[k][2] == "s" for k in table)
    assert table["total"][3] in BOUNDS and float(table["model"][1]) > 0
    with rasterio.open(out) as ds:
        recorded = json.loads(ds.tags()["GEODINO_SECONDS_BEFORE_FINISH"])
    assert set(recorded) == {*STAGES, "bound"} and recorded["bound"] in BOUNDS and recorded["model"] > 0


def test_info_estimate_measures_the_run_and_plain_info_does_not(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "scene.tif", 160)
    args = ["info", scene, "--model", "geodino_tiny_mlp", *SMALL, "--batch-size", "2"]
    with ThreadPoolExecutor(3) as pool:
        estimated, plain, text = pool.map(lambda a: cli(*a), [[*args, "--estimate", "--json"], [*args, "--json"], [*args, "--estimate"]])
    for r in (estimated, plain, text):
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    est = json.loads(estimated.stdout)["estimate"]
    assert "estimate" not in json.loads(plain.stdout)
    assert est["device"] in ("cpu", "cuda", "cuda:0") and est["batch_size"] == 2 and est["tile"] == 64
    assert est["tiles"] == json.loads(plain.stdout)["tiles"]["count"] == 9 and est["tiles_read"] == 4
    for key in ("model_s_per_tile", "read_s_per_tile", "write_s_per_tile", "write_mb_per_s", "seconds_per_tile", "total_s"):
        assert est[key] > 0, key
    assert est["write_bytes_per_tile"] == 10 * 10 * 64 * 4 / 9  # 10x10 cells x 64 channels of float32 over 9 tiles
    assert est["seconds_per_tile"] == max(est["model_s_per_tile"], est["io_s_per_tile"])
    assert est["total_s"] == pytest.approx(est["seconds_per_tile"] * est["tiles"]) and est["bound"] in BOUNDS
    assert est["bound"] == ("model-bound" if est["model_s_per_tile"] >= est["io_s_per_tile"] else "I/O-bound")
    lines = {ln.split()[0]: ln for ln in text.stdout.splitlines() if ln.split()}
    assert "random weights" in lines["model"] and lines["estimate"].endswith("(blending and finishing the COG not included)")
    assert any(b in lines["estimate"] for b in BOUNDS) and "read" in lines and "write" in lines


def test_no_estimate_where_encode_would_refuse(tmp_path: Path) -> None:
    two = write_raster(tmp_path / "two.tif", coordinate_raster(64, 64)[:2].astype(np.float32))  # two unnamed bands: no RGB
    report = scene_report(two, "geodino_tiny_mlp", tile=64, overlap=16, estimate=True)
    assert report["problem"] is not None and report["estimate"] is None
    assert any(ln.startswith("estimate") and "encode would refuse" in ln for ln in format_report(report))
    assert "estimate" not in scene_report(two, "geodino_tiny_mlp", tile=64, overlap=16)
