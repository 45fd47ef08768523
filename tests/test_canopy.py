"""canopy-height from the shell on the NEON RGB + lidar CHM pair (tiny CHMv2, random weights: nothing claimed about accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geodino.metrics import evaluate_height
from tests.helpers import run

TINY = ("--head", "geodino_tiny_chmv2", "--weights", "random", "--tile", "256", "--overlap", "32")


@pytest.fixture
def neon(shared_data: Path) -> tuple[Path, Path]:
    d = shared_data / "neon_rgb_chm"
    return d / "2019_BART_5_320000_4881000_image_crop.tif", d / "NEON_D01_BART_DP3_320000_4881000_CHM_crop.tif"


def test_neon_canopy_height_on_the_scene_grid_with_lidar_evaluation(tmp_path: Path, neon: tuple[Path, Path]) -> None:
    rgb, chm = neon
    out = tmp_path / "chm_pred.tif"
    r = run("canopy-height", rgb, out, *TINY, "--reference", chm)
    assert r.exit_code == 0, r.output
    assert "RANDOM weights" in r.stderr and f"vs {chm}: MAE" in r.stdout
    with rasterio.open(out) as ds, rasterio.open(rgb) as scene:
        assert ds.transform == scene.transform and ds.crs == scene.crs and ds.shape == scene.shape
        h = ds.read(1)
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata) and np.isfinite(h).all() and h.min() >= 0
        tags = ds.tags()
    assert (
        tags["GEODINO_PRODUCT"] == "canopy_height" and tags["GEODINO_UNITS"] == "metres" and tags["GEODINO_MODEL"] == "geodino_tiny_chmv2"
    )
    report = json.loads(out.with_suffix(".eval.json").read_text())
    with rasterio.open(chm) as ref:
        n_valid = int((ref.read(1) != ref.nodata).sum())
    assert report["n"] == n_valid and {"mae", "rmse", "bias", "r2"} <= set(report)
    assert report["mae"] == pytest.approx(evaluate_height(out, chm)["mae"])


def test_lidar_chm_against_itself_and_against_a_known_offset(tmp_path: Path, neon: tuple[Path, Path]) -> None:
    _, chm = neon
    assert evaluate_height(chm, chm)["mae"] == 0
    with rasterio.open(chm) as ds:
        data, profile = ds.read(1), ds.profile
    raised = np.where(data == ds.nodata, data, data + 2.0).astype(np.float32)
    with rasterio.open(tmp_path / "raised.tif", "w", **profile) as dst:
        dst.write(raised, 1)
    e = evaluate_height(tmp_path / "raised.tif", chm)
    assert e["mae"] == pytest.approx(2.0) and e["bias"] == pytest.approx(2.0) and e["rmse"] == pytest.approx(2.0)


def test_coarser_output_resolution_and_one_line_errors(tmp_path: Path, neon: tuple[Path, Path]) -> None:
    rgb, _ = neon
    out = tmp_path / "chm_1m.tif"
    r = run("canopy-height", rgb, out, *TINY, "--resolution", "1.0")
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as ds, rasterio.open(rgb) as scene:
        assert (
            ds.res == (1.0, 1.0) and ds.shape == (111, 121) and (ds.transform.c, ds.transform.f) == (scene.transform.c, scene.transform.f)
        )
    bad = run("canopy-height", rgb, tmp_path / "x.tif", *TINY, "--resolution", "0.01")
    assert bad.exit_code == 2 and bad.stderr.splitlines()[-1].startswith("geodino: error: --resolution 0.01 is finer")
    assert not (tmp_path / "x.tif").exists() and not [p for p in tmp_path.iterdir() if "geodino-" in p.name]
    missing = run("canopy-height", rgb, tmp_path / "y.tif", *TINY, "--reference", tmp_path / "nope.tif")
    assert missing.exit_code == 2 and "reference not found" in missing.stderr and not (tmp_path / "y.tif").exists()


def test_download_takes_the_chmv2_head_too(http_server, tmp_path: Path) -> None:
    from geodino.heads.chmv2 import build_canopy_model, save_canopy_model

    head = save_canopy_model(build_canopy_model("geodino_tiny_chmv2", "random", seed=2), tmp_path / "tiny_head.pth", layout="meta")
    http_server.files["tiny_head.pth"] = head.read_bytes()
    r = run("download", "geodino_tiny_chmv2", "--url", http_server.url("tiny_head.pth"), "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    assert (
        "geodino_tiny_chmv2: head weights ready at" in r.stdout and (tmp_path / "cache" / "tiny_head.pth").read_bytes() == head.read_bytes()
    )
