"""``geodino info``: never fails on a readable raster, says why no preset fits and what to pass, reports
invalid pixels, stretch, clipping and resampling; ``--json`` is one strict JSON document. The CLI runs in
fresh processes, several at once (each pays the import of torch); refusals are also checked in-process."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geodino.report import format_report, report_json, scene_report
from tests import helpers
from tests.scenes import write_raster

pytestmark = pytest.mark.slow  # fresh processes or a cluster: left out of the fast loop (make test-fast), run by make test

assert_one_line_error = functools.partial(helpers.one_line_error, quiet_stdout=True)

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120
TINY = ("--model", "geodino_tiny_mlp")


def run_all(*argvs: list[object]) -> list[subprocess.CompletedProcess[str]]:
    """``python -m geodino.cli ARGS...`` for each argument list, in parallel; results in order."""

    def one(args: list[object]) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "geodino.cli", *map(str, args)]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, env=os.environ.copy())

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(one, argvs))


def strict(text: str) -> dict:
    def no_constant(c: str) -> None:
        raise AssertionError(f"non-strict JSON constant {c}")

    return json.loads(text, parse_constant=no_constant)


def report_of(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return strict(proc.stdout)


def test_every_shared_raster_is_described(shared_data: Path) -> None:
    rasters = sorted(p for p in shared_data.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))
    landsat = sorted((shared_data / "landsat8_labels").glob("L8-B[234]-*.tiff"))
    s2 = shared_data / "sentinel2_l2a_8band" / "inference-img.tif"
    assert len(rasters) >= 10 and len(landsat) == 3 and s2 in rasters
    scenes = [[p] for p in rasters] + [landsat]
    procs = run_all(*(["info", *s, "--json"] for s in scenes), ["info", *landsat], ["info", s2])
    text_landsat, text_s2 = procs[len(scenes) :]
    reports = {}
    for scene, proc in zip(scenes, procs[: len(scenes)], strict=True):
        rep = report_of(proc)
        assert len(rep["bands"]) == rep["scene"]["count"], scene
        assert rep["preset"] is not None or rep["problem"] is not None, scene
        assert rep["tiles"]["count"] >= 1 and rep["memory"]["total"] > 0, scene
        assert 0.0 <= rep["validity"]["invalid_fraction"] <= 1.0, scene
        reports[tuple(scene)] = rep

    rep = reports[tuple(landsat)]
    assert rep["ok"] and rep["problem"] is None
    assert rep["preset"]["name"] == "generic" and "percentile" in rep["preset"]["reason"]
    red = next(b for b in rep["bands"] if b["common"] == "red")
    assert red["name"] == "B4" and red["common_from"] == "Landsat 8/9 OLI name table" and red["inputs"] == [1]
    assert red["file"].endswith("L8-B4-Elkton-VA.tiff") and red["name_from"] == "file name"
    assert [s["name"] for s in rep["stretch"]["inputs"]] == ["B4", "B3", "B2"]
    assert all(s["lo"] < s["hi"] and s["clipped_high"] <= 0.05 for s in rep["stretch"]["inputs"])

    rep = reports[(s2,)]
    assert not rep["ok"] and rep["preset"] is None and rep["stretch"] is None
    assert rep["problem"]["stage"] == "detect" and "cannot tell which bands" in rep["problem"]["message"]
    assert rep["problem"]["example_checked"] and "--bands" in rep["problem"]["example_args"]
    assert rep["problem"]["example"].startswith("geodino encode inference-img.tif OUT.tif ")
    assert len(rep["bands"]) == 8 and all(b["common"] is None for b in rep["bands"])

    rep = reports[(shared_data / "landsat7_rgb" / "RGB.byte.tif",)]  # the nodata collar: about a third invalid
    assert 0.25 < rep["validity"]["invalid_fraction"] < 0.4 and rep["validity"]["nodata"] > 0

    assert text_landsat.returncode == 0, text_landsat.stderr
    assert "B4 (name from file name): red (Landsat 8/9 OLI name table)" in text_landsat.stdout
    assert "preset     generic (scene-wide percentile stretch)" in text_landsat.stdout
    assert text_s2.returncode == 0, text_s2.stderr
    assert "problem    detect: cannot tell which bands" in text_s2.stdout
    assert "try        geodino encode inference-img.tif OUT.tif --bands" in text_s2.stdout


def test_two_unknown_float_bands_get_an_example_that_encodes(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((2, 96, 128)).astype(np.float32)
    src = write_raster(tmp_path / "two.tif", data)
    text, js = run_all(["info", src, *TINY], ["info", src, *TINY, "--json"])
    assert text.returncode == 0, text.stderr
    assert text.stdout.count(": unknown;") == 2 and "try        geodino encode two.tif OUT.tif --bands" in text.stdout
    rep = report_of(js)
    assert [(b["name"], b["common"]) for b in rep["bands"]] == [("1", None), ("2", None)]
    problem = rep["problem"]
    assert problem["stage"] == "detect" and problem["example_checked"]
    args = problem["example_args"]
    assert "--bands" in args and problem["example"].endswith(" ".join(args))

    (enc,) = run_all(["encode", src, tmp_path / "out.tif", *args, *TINY, "--weights", "random", "--tile", "64", "--overlap", "16"])
    assert enc.returncode == 0, enc.stderr
    assert (tmp_path / "out.tif").exists()


def test_nodata_share_resampling_and_bad_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(1, 5000, (3, 100, 200)).astype(np.uint16)
    data[:, rng.random((100, 200)) < 0.3] = 0
    holes = write_raster(tmp_path / "holes.tif", data, nodata=0)
    fine, coarse = Affine(10.0, 0, 500000.0, 0, -10.0, 4000000.0), Affine(20.0, 0, 500000.0, 0, -20.0, 4000000.0)
    files = [
        write_raster(tmp_path / f"T_{name}.tif", rng.integers(1, 5000, (1, 64 // k, 64 // k)).astype(np.uint16), t)
        for name, k, t in (("B02", 1, fine), ("B03", 1, fine), ("B04", 2, coarse), ("B11", 2, coarse))
    ]  # fmt: skip
    procs = run_all(
        ["info", holes, *TINY, "--json"],
        ["info", *files, *TINY, "--json"],
        ["info", *files, *TINY],
        ["info", *files[:3], *TINY, "--json", "--gsd", "20"],
        ["info", tmp_path / "missing.tif"],
        ["info", tmp_path / "missing.tif", "--json"],
        ["info", holes, "--tile", "100"],
    )
    rep = report_of(procs[0])
    assert rep["ok"] and rep["validity"]["invalid_fraction"] == pytest.approx(0.30, abs=0.02)
    assert rep["validity"]["nodata_value"] == 0 and rep["validity"]["nodata"] == rep["validity"]["invalid"]

    rep = report_of(procs[1])
    assert rep["ok"] and rep["scene"]["mixed_grids"]
    state = {Path(f["path"]).name: (f["read"], f["resampled"]) for f in rep["resampling"]["files"]}
    assert state == {"T_B02.tif": (True, False), "T_B03.tif": (True, False), "T_B04.tif": (True, True), "T_B11.tif": (False, False)}
    assert rep["resampling"]["method"] == "bilinear" and "not read (bands not used): T_B11.tif" in rep["resampling"]["description"]
    assert rep["features"]["pixel_size"] == [160.0, 160.0]
    assert procs[2].returncode == 0 and "T_B04.tif: pixel 20 x 20, 32x32 px, resampled" in procs[2].stdout, procs[2].stderr
    rep = report_of(procs[3])
    assert rep["resampling"]["method"] == "average" and rep["resampling"]["gsd_requested"] == 20
    assert rep["features"]["pixel_size"] == [320.0, 320.0] and "--gsd" in rep["resampling"]["description"]

    assert_one_line_error(procs[4], "scene not found", "missing.tif")
    assert_one_line_error(procs[5], "scene not found")
    assert_one_line_error(procs[6], "tile 100")


# --- refusals, in-process (no CLI start-up) -----------------------------------------------------------


def test_refusals_become_problems_with_a_checked_command(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    name = "S2A_MSIL2A_20230101T101010_N0509_R022_T33UUP_20230101T120000.tif"  # baseline 05.09: offset -1000 DN
    bright = write_raster(tmp_path / name, rng.integers(6000, 8000, (4, 64, 64)).astype(np.uint16))
    unnamed = scene_report([bright], "geodino_tiny_mlp")  # a product name tells the sensor, not the order of unnamed bands
    assert (
        unnamed["problem"]["stage"] == "detect" and "--sensor sentinel2-l2a if the bands are in its order" in unnamed["problem"]["message"]
    )
    rep = scene_report([bright], "geodino_tiny_mlp", sensor="sentinel2-l2a")
    assert rep["problem"]["stage"] == "clipping" and "white picture" in rep["problem"]["message"]
    assert rep["problem"]["example_args"] == ["--sensor", "sentinel2-l2a", "--allow-clipping"] and rep["problem"]["example_checked"]
    assert rep["preset"]["name"] == "sentinel2-l2a" and min(s["clipped_high"] for s in rep["stretch"]["inputs"]) > 0.5
    assert not rep["ok"] and scene_report([bright], "geodino_tiny_mlp", sensor="sentinel2-l2a", allow_clipping=True)["ok"]

    no_baseline = write_raster(tmp_path / "S2B_MSIL2A_scene.tif", rng.integers(1000, 3000, (4, 64, 64)).astype(np.uint16))
    rep = scene_report([no_baseline], "geodino_tiny_mlp", sensor="sentinel2-l2a")
    assert rep["problem"]["stage"] == "adapter" and "processing baseline" in rep["problem"]["message"]
    assert rep["preset"]["name"] == "sentinel2-l2a" and rep["problem"]["example_checked"]
    assert rep["problem"]["example_args"] == ["--sensor", "generic", "--bands", "1,2,3"]
    assert [b["inputs"] for b in rep["bands"]] == [[1], [2], [3], []]  # detection chose them; the offset refused

    floats = write_raster(tmp_path / "f.tif", rng.random((3, 40, 40)).astype(np.float32), nodata=float("nan"))
    rep = scene_report([floats], "geodino_tiny_mlp", sensor="sentinel2-l2a")
    assert rep["problem"]["stage"] == "detect" and "--sensor sentinel2-l2a takes uint16" in rep["problem"]["message"]
    assert strict(report_json(rep))["scene"]["nodata"] == "nan"

    plain = write_raster(tmp_path / "plain.tif", np.ones((1, 32, 32), np.uint8), transform=None, crs=None)
    rep = scene_report([plain], "geodino_tiny_mlp")
    assert rep["problem"]["stage"] == "scene" and "no georeference" in rep["problem"]["message"]
    assert len(rep["bands"]) == 1 and rep["tiles"] is None and any(line.startswith("problem") for line in format_report(rep))
    assert set(strict(report_json(rep))) == set(strict(report_json(scene_report([floats], "geodino_tiny_mlp"))))
