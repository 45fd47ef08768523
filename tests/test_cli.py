"""The command line: listing specs, checking, converting and downloading weights, the demo, and one-line errors."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geodino.models import get_spec, list_models
from geodino.models.checkpoint import hash_in_name
from tests import helpers

run = functools.partial(helpers.run, columns=80)  # a pipe 80 columns wide: nothing may be folded
assert_one_line_error = functools.partial(helpers.one_line_error, quiet_stdout=True)

TINY = "geodino_tiny_mlp"
REPO = Path(__file__).resolve().parents[1]
COMMANDS = (
    "models",
    "sensors",
    "download",
    "check-weights",
    "convert",
    "demo",
    "encode",
    "info",
    "canopy-height",
    "train-head",
    "land-cover",
)


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEODINO_WEIGHTS", raising=False)
    monkeypatch.delenv("GEODINO_CACHE", raising=False)


def table_names(output: str) -> list[str]:
    """First cell of each body row of a rich table."""
    rows = [line.split("│") for line in output.splitlines() if line.startswith("│")]
    return [cells[1].strip() for cells in rows if cells[1].strip()]


# --- models ---------------------------------------------------------------------------------------


def test_models_lists_every_spec_in_full() -> None:
    result = run("models")
    assert result.exit_code == 0, result.output
    assert table_names(result.stdout) == list_models()
    assert "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth" in result.stdout
    for name in list_models():
        if (file_name := get_spec(name).file_name) is not None:
            assert file_name in result.stdout
    assert "…" not in result.stdout  # nothing cut short at 80 columns


def test_models_glob() -> None:
    result = run("models", "*sat*")
    assert result.exit_code == 0, result.output
    assert table_names(result.stdout) == ["dinov3_vit7b16_sat493m", "dinov3_vitl16_sat493m"]
    assert "lvd1689m" not in result.stdout


# --- check-weights ----------------------------------------------------------------------------------


def test_check_weights_prints_spec_and_path(make_checkpoint) -> None:
    ckpt = make_checkpoint(TINY, seed=1)
    result = run("check-weights", TINY, "--weights", str(ckpt))
    assert result.exit_code == 0, result.output
    assert TINY in result.stdout
    assert str(ckpt) in result.stdout
    assert f"sha256 prefix {hash_in_name(ckpt)} verified" in result.stdout


def test_check_weights_missing_path_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file.pth"
    assert_one_line_error(run("check-weights", TINY, "--weights", str(missing)), str(missing))


def test_check_weights_other_architecture_names_both_specs(make_checkpoint) -> None:
    other = make_checkpoint("geodino_tiny_swiglu", seed=1)
    line = assert_one_line_error(run("check-weights", TINY, "--weights", str(other)), "does not fit geodino_tiny_mlp")
    assert "fits geodino_tiny_swiglu" in line


def test_check_weights_corrupt_hash_is_one_line(make_checkpoint) -> None:
    ckpt = make_checkpoint(TINY, seed=1)
    wrong_hash = "0" * 8 if hash_in_name(ckpt) != "0" * 8 else "f" * 8
    wrong = ckpt.rename(ckpt.with_name(f"{get_spec(TINY).file_stem}-{wrong_hash}.pth"))
    assert_one_line_error(run("check-weights", TINY, "--weights", str(wrong)), wrong.name, "--no-check-hash")
    result = run("check-weights", TINY, "--weights", str(wrong), "--no-check-hash")
    assert result.exit_code == 0, result.output


def test_unknown_model_is_one_line() -> None:
    assert_one_line_error(run("check-weights", "dinov3_vitl16_sat", "--weights", "random"), "unknown model", "dinov3_vitl16_sat493m")


# --- convert --------------------------------------------------------------------------------------


def test_convert_to_hf_and_back(make_checkpoint, tmp_path: Path) -> None:
    src = make_checkpoint(TINY, seed=1)
    hf = tmp_path / "hf-model"
    result = run("convert", TINY, str(src), str(hf), "--to", "hf")
    assert result.exit_code == 0, result.output
    assert (hf / "config.json").is_file() and (hf / "model.safetensors").is_file()
    assert json.loads((hf / "config.json").read_text())["model_type"] == "dinov3_vit"

    back = tmp_path / "back.pth"
    result = run("convert", TINY, str(hf), str(back), "--to", "meta")
    assert result.exit_code == 0, result.output
    original = torch.load(src, weights_only=True)
    converted = torch.load(back, weights_only=True)
    assert set(original) <= set(converted)
    for key, value in original.items():
        assert torch.equal(converted[key], value), key

    result = run("check-weights", TINY, "--weights", str(hf))
    assert result.exit_code == 0, result.output
    assert "hf layout" in result.stdout


def test_convert_refuses_existing_destination(make_checkpoint, tmp_path: Path) -> None:
    src = make_checkpoint(TINY, seed=1)
    dst = tmp_path / "taken.pth"
    dst.write_bytes(b"keep me")
    assert_one_line_error(run("convert", TINY, str(src), str(dst), "--to", "meta"), "exists")
    assert dst.read_bytes() == b"keep me"
    assert_one_line_error(run("convert", TINY, str(src), str(tmp_path / "new"), "--to", "onnx"), "--to")
    assert not (tmp_path / "new").exists()


# --- download -------------------------------------------------------------------------------------


def test_download_prints_path(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.files[served.name] = served.read_bytes()
    cache = tmp_path / "cache"
    result = run("download", TINY, "--url", http_server.url(served.name, "Signature=abc"), "--cache-dir", str(cache))
    assert result.exit_code == 0, result.output
    assert str(cache / served.name) in result.stdout
    assert (cache / served.name).read_bytes() == served.read_bytes()


def test_download_bad_hash_is_one_line(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    wrong = "0" * 8 if hash_in_name(served) != "0" * 8 else "f" * 8
    name = f"{get_spec(TINY).file_stem}-{wrong}.pth"
    http_server.files[name] = served.read_bytes()
    cache = tmp_path / "cache"
    result = run("download", TINY, "--url", http_server.url(name, "Signature=secret"), "--cache-dir", str(cache))
    line = assert_one_line_error(result, name, f"expected {wrong}")
    assert "secret" not in line
    assert not any(cache.iterdir())


def test_download_404_is_one_line(http_server, tmp_path: Path) -> None:
    result = run("download", TINY, "--url", http_server.url("nothing-0123abcd.pth"), "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(result, "download failed", "Not Found")


# --- demo -----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the PNG is a picture, not a map
def test_demo_encodes_a_scene_to_a_cog_and_a_quicklook(tmp_path: Path) -> None:
    from geodino.synthetic import write_scene

    scene = write_scene(tmp_path / "scene.tif", 200, 150)
    result = run("demo", "--model", TINY, "--scene", str(scene), "--out-dir", str(tmp_path / "demo"), "--tile", "64", "--overlap", "16")
    assert result.exit_code == 0, result.output
    assert "(RANDOM: the features and the picture carry no meaning)" in result.stdout
    assert "10x13 cells x 64 bands, EPSG:32633" in result.stdout and "preset rgb8" in result.stdout
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["features.tif", "features.tif.json", "features_pca.png"]
    import rasterio

    with rasterio.open(tmp_path / "demo" / "features_pca.png") as png:
        assert (png.count, png.height, png.width, png.dtypes[0]) == (3, 13 * 40, 10 * 40, "uint8") and png.read().std() > 0


def test_demo_without_shared_data_generates_its_scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import geodino.demo

    monkeypatch.setattr(geodino.demo, "SHARED_SCENE", Path("no") / "such.tif")
    monkeypatch.setattr(geodino.demo, "GENERATED_SIDE", 96)
    result = run("demo", "--model", TINY, "--out-dir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert "generated 96x96 RGB scene" in result.stdout and "6x6 cells x 64 bands" in result.stdout


def test_demo_bad_tile_is_one_line(tmp_path: Path) -> None:
    result = run("demo", "--model", TINY, "--out-dir", str(tmp_path), "--tile", "50")
    assert_one_line_error(result, "tile 50 must be a positive multiple of the patch size 16")


# --- the script -----------------------------------------------------------------------------------


def test_cli_py_help() -> None:
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "cli.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS:
        assert command in proc.stdout


def test_version_help_and_python_m_geodino_in_a_fresh_process() -> None:
    import tomllib

    from geodino import __version__
    from tests.helpers import cli, one_line_error

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == declared
    r = cli("--version", module="geodino")
    assert r.returncode == 0 and r.stdout.strip() == f"geodino {declared}", r.stderr
    r = cli("--help", module="geodino")
    assert r.returncode == 0 and "encode" in r.stdout and "--version" in r.stdout, r.stderr
    r = cli("models", "sat*")
    one_line_error(r, "no model name matches 'sat*'", "'*sat*'", "dinov3_vitl16_sat493m", quiet_stdout=True)
    r = cli("models", "*sat*")
    assert r.returncode == 0 and "dinov3_vitl16_sat493m" in r.stdout and "lvd1689m" not in r.stdout


def test_progress_is_plain_lines_every_ten_seconds_and_at_the_end_when_stderr_is_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import io

    from rich.console import Console

    app = importlib.import_module("geodino.cli.app")  # the module (geodino.cli.app the attribute is the Typer app)

    log = io.StringIO()
    monkeypatch.setattr(app, "err_console", Console(file=log, force_terminal=False, width=200))
    now = [100.0]
    monkeypatch.setattr(app.time, "perf_counter", lambda: now[0])
    with app.TileBar(unit="tiles") as bar:
        for done, t in [(1, 101.0), (2, 105.0), (5, 112.0), (6, 115.0), (9, 122.5), (10, 125.0)]:
            now[0] = t
            bar(done, 10)
    assert log.getvalue().splitlines() == [
        "encoding 5/10 tiles, 0.42 tiles/s, 0:00:12, ETA 0:00:12",  # 10 s after the start
        "encoding 9/10 tiles, 0.40 tiles/s, 0:00:22, ETA 0:00:02",  # 10 s after the last line
        "encoding 10/10 tiles, 0.40 tiles/s, 0:00:25",  # the end
    ]


def test_the_command_line_starts_without_torch_gdal_or_dask() -> None:
    """``geodino --help`` must not pay for torch (about 1 s), rasterio or dask: commands import them when they run."""
    code = "import sys, geodino.cli; print(sorted(m for m in ('torch', 'rasterio', 'dask', 'xarray', 'numpy') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
