"""The package as a user installs it: a wheel installed with ``pip install --prefix`` elsewhere, run from outside
the checkout (presets found through the installed distribution, not the checkout or ``sys.prefix``)."""

from __future__ import annotations

import os
import re
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


#: what a copy of the checkout leaves out when git cannot say what is tracked (a tree unpacked from the sdist)
_NOT_SOURCE = (".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", ".hypothesis", "demo_output", "out")


def _source_files() -> list[str]:
    """The checkout's files as git sees them (tracked, or new and not ignored); without git, the tree less build outputs."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        return sorted(name for name in listed.split("\0") if name and (ROOT / name).is_file())
    ignore = shutil.ignore_patterns(*_NOT_SOURCE)
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in ignore(folder, dirs)]
        found += [Path(folder, f).relative_to(ROOT).as_posix() for f in files if f not in ignore(folder, files)]
    return sorted(found)


@pytest.mark.slow
def test_the_sdist_holds_the_repository_and_its_tests_run_from_it(tmp_path: Path) -> None:
    """An sdist built from a copy of the checkout holds every file git tracks (the tests with their conftest, helpers and
    scenes, the presets, notebooks, bench, the env files and docs the tests read) and its tests pass, unpacked elsewhere."""
    import tarfile

    src, dist, unpacked = tmp_path / "src", tmp_path / "dist", tmp_path / "unpacked"
    files = _source_files()
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    build = "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])"
    built = subprocess.run([sys.executable, "-c", build, str(dist)], cwd=src, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    (sdist,) = dist.glob("geodino-*.tar.gz")
    with tarfile.open(sdist) as tar:
        top = f"{sdist.name.removesuffix('.tar.gz')}/"
        held = {m.name.removeprefix(top) for m in tar.getmembers() if m.isfile()}
        tar.extractall(unpacked, filter="data")
    assert not set(files) - held, f"the sdist misses {sorted(set(files) - held)}"
    assert {"tests/conftest.py", "tests/helpers.py", "tests/scenes.py", "configs/sensors/rgb8.yaml", "LICENSE"} <= held
    assert not [name for name in held if "__pycache__" in name or name.endswith(".pyc")]
    tree = unpacked / top
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEODINO_", "PYTEST_"))} | {"PYTHONPATH": str(tree)}
    where = subprocess.run([sys.executable, "-c", "import geodino, tests.helpers; print(geodino.__file__, tests.helpers.__file__)"],
                           cwd=tree, env=env, capture_output=True, text=True)  # fmt: skip
    assert where.returncode == 0 and all(Path(p).is_relative_to(tree) for p in where.stdout.split()), where.stdout + where.stderr
    chosen = ["tests/test_tiling.py", "tests/test_project.py", "tests/test_hubcache.py"]  # fixtures, helpers, scenes, the docs
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *chosen]
    ran = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert re.search(r"\b\d+ passed", ran.stdout) and " failed" not in ran.stdout, ran.stdout[-2000:]


@pytest.mark.slow
def test_without_the_distributed_extra_threads_work_and_cluster_runs_are_refused_in_one_line(tmp_path: Path) -> None:
    """``distributed`` is the optional extra ``geodino[distributed]``: without it a Zarr encode runs on dask's threads,
    and ``--workers`` / ``--scheduler`` are refused before any work with one line naming the extra."""
    from tests.helpers import cli, one_line_error

    (tmp_path / "nodistributed.py").write_text(
        "import sys\nsys.modules['distributed'] = None  # as if it were not installed\nfrom geodino.cli import main\nmain()\n"
    )
    write_raster(tmp_path / "scene.tif", coordinate_raster(64, 64).astype("uint8"))
    opts = ("--model", "geodino_tiny_mlp", "--weights", "random", "--sensor", "rgb8", "--tile", "64", "--overlap", "16")
    done = cli("encode", "scene.tif", "f.zarr", *opts, cwd=tmp_path, module="nodistributed")
    assert done.returncode == 0 and (tmp_path / "f.zarr").is_dir(), done.stderr
    for where in (("--workers", "1"), ("--scheduler", "tcp://127.0.0.1:9")):
        refused = cli("encode", "scene.tif", "g.zarr", *opts, *where, cwd=tmp_path, module="nodistributed")
        one_line_error(refused, "pip install 'geodino[distributed]'")
        assert not (tmp_path / "g.zarr").exists()
