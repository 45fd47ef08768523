"""The package as a user installs it: a wheel installed with ``pip install --prefix`` elsewhere, run from outside
the checkout (presets found through the installed distribution, not the checkout or ``sys.prefix``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.scenes import coordinate_raster, write_raster

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_installed_with_prefix_encodes_with_a_preset_from_outside_the_checkout(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    wheels, src = tmp_path / "wheels", tmp_path / "src"  # built from a copy: setuptools leaves build/ in the source folder
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("geodino", "configs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    argv = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)]
    built = subprocess.run(argv, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("geodino-*.whl")
    prefix = tmp_path / "prefix"
    # --ignore-installed: pip would otherwise uninstall the geodino this interpreter runs before installing elsewhere
    argv = [*pip, "install", "--no-deps", "--ignore-installed", "--prefix", str(prefix), str(wheel)]
    inst = subprocess.run(argv, capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr[-3000:]
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    assert (site / "geodino" / "py.typed").exists() and (prefix / "share" / "geodino" / "sensors" / "rgb8.yaml").exists()
    work = tmp_path / "work"
    work.mkdir()
    write_raster(work / "scene.tif", coordinate_raster(64, 64).astype("uint8"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEODINO_", "GDAL_", "CPL_"))} | {"PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import geodino, geodino.sensors as s; print(geodino.__file__); print(s.sensors_dir())"],
                           cwd=work, env=env, capture_output=True, text=True)  # fmt: skip
    assert where.returncode == 0, where.stderr
    module, presets = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(presets) == (prefix / "share" / "geodino" / "sensors").resolve()
    argv = [sys.executable, "-m", "geodino", "encode", "scene.tif", "f.tif", "--model", "geodino_tiny_mlp", "--weights", "random"]
    run = subprocess.run([*argv, "--sensor", "rgb8", "--tile", "64", "--overlap", "16"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "preset: rgb8" in run.stdout and (work / "f.tif").exists()
    mine = subprocess.run([sys.executable, "-c", "import geodino; print(geodino.__file__)"], cwd=work, capture_output=True, text=True)
    assert mine.returncode == 0 and not Path(mine.stdout.strip()).is_relative_to(prefix), mine.stderr  # this install untouched
    licence = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True).stdout
    assert "licenses/LICENSE" in licence
