"""Command-line conventions (rio/GDAL): typed choices with completion, one-line usage errors, ``-v``/``-q`` logging,
``geodino sensors``, and progress lines when stderr is a pipe (training epochs, export rows, long steps)."""

from __future__ import annotations

import importlib
import io
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from geodino import choices
from geodino.errors import InputError
from tests.helpers import cli, one_line_error, run
from tests.scenes import coordinate_raster, write_raster

TINY = ("--model", "geodino_tiny_mlp", "--weights", "random")
PLAN = ("--layers", "-1", "--tile", "64", "--overlap", "16")


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """A 64x96 scene and a two-class label raster on its grid."""
    write_raster(tmp_path / "scene.tif", coordinate_raster(64, 96))
    rr, cc = np.indices((64, 96))
    write_raster(tmp_path / "labels.tif", ((rr // 16 + cc // 16) % 2).astype(np.uint8)[None])
    return tmp_path


# --- typed choices -----------------------------------------------------------------------------------------

BAD_CHOICES = [
    (("encode", "a.tif", "b.tif", "--format", "npy"), "Invalid value for '--format': 'npy' is not one of cog, zarr"),
    (("encode", "a.tif", "b.tif", "--dtype", "int8"), "Invalid value for '--dtype': 'int8' is not one of float32, float16"),
    (("encode", "a.tif", "b.tif", "--precision", "fp8"), "Invalid value for '--precision': 'fp8' is not one of fp32, bf16, fp16"),
    (("encode", "a.tif", "b.tif", "--device", "gpu"), "Invalid value for '--device': 'gpu' is not one of auto, cpu, cuda, mps or cuda:N"),
    (("canopy-height", "a.tif", "b.tif", "--device", "cuda:x"), "Invalid value for '--device': 'cuda:x'"),
    (("land-cover", "a.tif", "b.tif", "--head", "h.pt", "--precision", "half"), "Invalid value for '--precision': 'half'"),
    (("export", "f.zarr", "f.tif", "--dtype", "uint8"), "Invalid value for '--dtype': 'uint8' is not one of float32, float16"),
    (("convert", "geodino_tiny_mlp", "a.pth", "b", "--to", "onnx"), "Invalid value for '--to': 'onnx' is not one of meta, hf"),
]


@pytest.mark.parametrize(("args", "message"), BAD_CHOICES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_CHOICES])
def test_a_value_outside_an_option_s_choices_is_one_line_exit_2_before_any_work(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    r = cli(*args, cwd=tmp_path)  # a fresh process; the files named do not exist: the value is refused first
    line = one_line_error(r, message, "--help", quiet_stdout=True)
    assert "not found" not in line and list(tmp_path.iterdir()) == []


def test_usage_errors_are_one_line_not_click_s_usage_box(tmp_path: Path) -> None:
    for args, fragments in [
        (("encode", "--bogus"), ("No such option", "--bogus")),  # click words it "option: --bogus" or "option '--bogus'"
        (("encoed",), ("No such command 'encoed'",)),
        (("encode",), ("Missing argument",)),
        (("encode", "a.tif", "b.tif", "--tile", "big"), ("Invalid value for '--tile'",)),
        (("-v",), ("Missing command",)),
    ]:
        r = cli(*args, cwd=tmp_path)
        one_line_error(r, *fragments, quiet_stdout=True)
        assert "╭" not in r.stderr and "Usage:" not in r.stderr


def test_the_cli_s_choices_are_the_library_s_lists_which_the_library_checks_too() -> None:
    from geodino import device, writer

    assert writer.FORMATS is choices.FORMATS and writer.DTYPES is choices.DTYPES and writer.FEATURE_DTYPES is choices.FEATURE_DTYPES
    assert tuple(device.PRECISIONS) == choices.PRECISIONS
    help_text = run("encode", "--help", columns=300).stdout
    for values in (choices.FORMATS, choices.FEATURE_DTYPES, choices.PRECISIONS):
        assert "[" + "|".join(values) + "]" in help_text
    assert "[" + "|".join(choices.DEVICES) + "|cuda:N]" in help_text
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"):
        assert choices.check_device(ok) == ok
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "cpu:0", "tpu9"):
        with pytest.raises(InputError, match="use auto, cpu, cuda, mps or cuda:N"):
            device.resolve_device(bad)  # a Python caller gets the same check
    with pytest.raises(InputError, match="--precision 'fp8': use one of fp32, bf16, fp16"):
        device.check_precision("fp8")


def test_the_shell_completes_choices_presets_and_commands(tmp_path: Path) -> None:
    def complete(line: str) -> list[str]:
        words = line.split(" ")
        env = {"_GEODINO_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
        r = cli(cwd=tmp_path, env=env)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        return r.stdout.split()

    assert complete("geodino encode --dtype ") == list(choices.FEATURE_DTYPES)
    assert complete("geodino encode --format z") == ["zarr"]
    assert complete("geodino canopy-height --device c") == ["cpu", "cuda"]
    assert complete("geodino convert --to ") == list(choices.LAYOUTS)
    assert complete("geodino encode --sensor sentinel2-l2a-") == ["sentinel2-l2a-legacy", "sentinel2-l2a-pb04"]
    assert complete("geodino sen") == ["sensors"]


def test_sensors_lists_the_presets_and_a_pattern_that_matches_none_is_one_line() -> None:
    from geodino.sensors import load_presets

    r = cli("sensors")
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("│")}
    assert sorted(rows) == sorted(load_presets())
    assert "uint16" in rows["landsat-c2l2"] and "2.75e-05, -0.2" in rows["landsat-c2l2"] and "0 to 0.3" in rows["landsat-c2l2"]
    assert "percentiles 2-98" in rows["generic"] and "any" in rows["generic"]
    r = cli("sensors", "*landsat*")
    assert r.returncode == 0 and "landsat8-c2l1" in r.stdout and "naip-rgbn" not in r.stdout
    one_line_error(cli("sensors", "modis*"), "no sensor preset matches 'modis*'", "naip-rgbn", quiet_stdout=True)


# --- -v / -q and progress when piped ---------------------------------------------------------------------


def train(world: Path, *options: str, epochs: int = 3) -> tuple[str, str]:
    """``geodino [options] train-head`` in a fresh process with stderr a pipe: (stdout, stderr)."""
    for p in world.glob("head*"):
        p.unlink()
    r = cli(*options, "train-head", "scene.tif", "labels.tif", "--out", "head.pt", *TINY, *PLAN, "--epochs", str(epochs), cwd=world)
    assert r.returncode == 0, r.stderr
    assert (world / "head.pt").is_file() and r.stdout.startswith("wrote head.pt: 2 classes")
    return r.stdout, r.stderr


def test_train_head_prints_its_epochs_when_piped_and_quiet_prints_results_only(world: Path) -> None:
    stdout, stderr = train(world)
    lines = stderr.splitlines()
    assert lines[-2].startswith("features 2/2 tiles, ")
    first, last = stdout.splitlines()[0].split("loss ")[1].split(" -> ")  # the loss the summary reports
    assert lines[-1].startswith("training 3/3 epochs, ") and lines[-1].endswith(f", loss {last}"), lines
    assert not any(" info: " in ln or " debug: " in ln for ln in lines)  # the default shows no log records
    quiet_out, quiet_err = train(world, "-q")
    assert quiet_err == ""  # no notes, warnings or progress: errors only
    assert quiet_out.splitlines()[1:] == stdout.splitlines()[1:] and quiet_out.startswith(f"wrote head.pt: 2 classes (0, 1), loss {first}")


def test_verbose_shows_the_library_s_log_records(world: Path) -> None:
    _, stderr = train(world, "-v")
    assert f"geodino: info: scene statistics: a decimated read of 3 band(s) of {world / 'scene.tif'}" in stderr.splitlines()
    assert "geodino: info: training a linear head: 3 epochs on 2048 labelled pixels (4096 held out)" in stderr.splitlines()
    assert "debug" not in stderr
    _, stderr = train(world, "-vv", epochs=2)
    epochs = [ln for ln in stderr.splitlines() if ln.startswith("geodino: debug: epoch ")]
    assert [ln.split(":")[2] for ln in epochs] == [" epoch 1/2", " epoch 2/2"] and all(": loss " in ln for ln in epochs)
    assert any(ln.startswith("geodino: debug: scene statistics: ") and ": done in " in ln for ln in stderr.splitlines())


def test_export_prints_rows_when_piped(world: Path) -> None:
    r = run("encode", world / "scene.tif", world / "f.zarr", *TINY, *PLAN)
    assert r.exit_code == 0, r.output
    r = cli("export", "f.zarr", "f.tif", cwd=world)
    assert r.returncode == 0 and r.stdout.startswith(f"wrote {world / 'f.tif'}: from f.zarr"), r.stderr
    assert r.stderr.splitlines()[-1].startswith("exporting 4/4 rows, ")  # 64 px / 16 = 4 feature rows
    r = cli("-v", "export", "f.zarr", "g.tif", cwd=world)
    assert "geodino: info: finishing the COG of 64 bands" in r.stderr.splitlines(), r.stderr


def test_a_step_is_printed_once_it_has_run_a_few_seconds_then_periodically(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from geodino.steps import step

    app = importlib.import_module("geodino.cli.app")
    monkeypatch.setattr(app, "STEP_AFTER", 0.2)  # on a terminal
    monkeypatch.setattr(app, "LOG_EVERY", 1.0)  # in a log: the first line too, like the tile lines
    logger = logging.getLogger("geodino.test_steps")

    def shown(seconds: float, terminal: bool = False, verbosity: int = 0) -> list[str]:
        log = io.StringIO()
        monkeypatch.setattr(app, "err_console", Console(file=log, force_terminal=terminal, width=200))
        app.configure_logging(verbosity)
        with step(logger, "loading %s", "weights"):
            time.sleep(seconds)
        lines = log.getvalue().splitlines()
        time.sleep(0.5)  # the step has ended: nothing more
        assert log.getvalue().splitlines() == lines
        return lines

    try:
        assert shown(0.4) == []  # in a log, shorter than LOG_EVERY: nothing, and an error line would stand alone
        lines = shown(2.3)  # lines at about 1 s and 2 s
        assert 1 <= len(lines) <= 2 and all(ln.startswith("geodino: loading weights, 0:00:0") for ln in lines), lines
        assert shown(0.6, terminal=True) == ["geodino: loading weights, 0:00:00"]  # after STEP_AFTER on a terminal
        assert shown(1.5, verbosity=-1) == []  # -q
        assert shown(0.0, verbosity=1) == ["geodino: info: loading weights"]  # -v: the record itself, at once
    finally:
        app.configure_logging(0)
