"""Faults from the shell: runs killed (SIGKILL) or stopped (SIGTERM, SIGHUP, Ctrl-C) part way, two runs on one
output, a full disk, a symlinked output. Each case runs ``cli.py`` as a fresh process and checks what is left on
disk afterwards: the old outputs exactly as they were, no temporaries, no locks, no run folders."""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from shapely.geometry import box

from geodino.synthetic import write_scene
from geodino.zarrstore import check_sealed
from tests import helpers
from tests.helpers import serving

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--model", "geodino_tiny_mlp", "--weights", "random")
PLAN = ("--tile", "128", "--overlap", "32")
STARTUP = 180.0  # seconds a fresh CLI process may take to reach a given point (a loaded shared machine)
FINISH = 240.0  # seconds a whole small run may take


# --- processes --------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A CLI process with its stdout/stderr in files (no pipe to fill while it runs)."""

    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def send(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = FINISH) -> int:
        return self.popen.wait(timeout=timeout)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"pid {self.pid} rc {self.poll()}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Factory: start ``cli.py *args`` (cwd the repository, output in files under tmp_path/logs); every
    process still running at the end of the test is continued (if stopped) and killed."""
    logs = tmp_path / "logs"
    logs.mkdir()
    started: list[Proc] = []

    def start(*args: object, env: dict[str, str] | None = None, preexec_fn: Callable[[], None] | None = None) -> Proc:
        n = len(started)
        out, err = logs / f"{n}.out", logs / f"{n}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            popen = subprocess.Popen(
                [sys.executable, str(ROOT / "cli.py"), *map(str, args)],
                cwd=ROOT,
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "COLUMNS": "200", **(env or {})},
                preexec_fn=preexec_fn,
            )
        proc = Proc(popen, out, err)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for p in started:
            if p.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(p.pid, sig)
                    except ProcessLookupError:
                        break
                p.popen.wait(timeout=30)


def wait_for(what: str, cond: Callable[[], bool], proc: Proc | None = None, timeout: float = STARTUP, poll: float = 0.01) -> None:
    """Poll ``cond`` until true; fail when ``proc`` exits first or after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            if cond():
                return
            pytest.fail(f"the process ended before {what}: {proc.describe()}")
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f": {proc.describe()}" if proc else ""))
        time.sleep(poll)


def pause(seconds: float, proc: Proc) -> None:
    """Wait ``seconds`` (polled) or until ``proc`` exits."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None:
        time.sleep(0.005)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def temporaries(out: Path) -> list[str]:
    """Everything geodino put beside ``out`` (temporaries, lock, run folder)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.geodino-"))


def lock_holder(out: Path) -> str:
    try:
        return out.with_name(f".{out.name}.geodino-lock").read_text()
    except OSError:
        return ""


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("geodino: error:")]


def assert_interrupted(proc: Proc, sig: int) -> None:
    """Exit 128 + sig, the last stderr line the one-line 'interrupted' error, no traceback."""
    rc = proc.wait(timeout=120)
    err = proc.stderr
    assert rc == 128 + sig, f"expected exit {128 + sig} after {signal.Signals(sig).name}: {proc.describe()}"
    assert "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("geodino: error: interrupted"), err
    assert len(error_lines(err)) == 1, err


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of a file, or of every file under a folder (by relative path); symlinks by their target."""
    if path.is_symlink():
        return {".": f"link:{os.readlink(path)}"}
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def read_cog(path: Path) -> tuple[np.ndarray, object, object]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.transform, ds.crs


def assert_same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN positions differ"
    assert np.array_equal(a, b, equal_nan=True)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), "not bit for bit"


# --- inputs made once per module -----------------------------------------------------------------------


def cli_in_process(*args: object) -> None:
    r = helpers.run(*args)
    assert r.exit_code == 0, r.output


@dataclass(frozen=True)
class Inputs:
    small: Path  # 256 px: old outputs
    mid: Path  # 512 px: short runs
    big: Path  # 1024 px: runs long enough to be stopped
    holes: Path  # 1000 px with nodata holes: the chaos run (NaN cells)
    old_cog: Path  # a COG geodino wrote (from `small`)
    old_zarr: Path  # a Zarr store geodino wrote (from `small`)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    d = tmp_path_factory.mktemp("inputs")
    small, mid, big = write_scene(d / "small.tif", 256), write_scene(d / "mid.tif", 512), write_scene(d / "big.tif", 1024)
    holes = write_scene(d / "holes.tif", 1000, seed=3)
    with rasterio.open(holes, "r+") as ds:  # empty tiles (skipped, NaN cells) and a band of invalid pixels
        ds.nodata = 0
        ds.write(np.zeros((3, 380, 420), np.uint8), window=((0, 380), (0, 420)))
        ds.write(np.zeros((3, 40, 1000), np.uint8), window=((700, 740), (0, 1000)))
    old = d / "old"
    old.mkdir()
    cli_in_process("encode", small, old / "old.tif", *TINY, *PLAN)
    cli_in_process("encode", small, old / "old.zarr", *TINY, *PLAN, "--format", "zarr")
    return Inputs(small, mid, big, holes, old / "old.tif", old / "old.zarr")


def place_old(src: Path, dest: Path) -> dict[str, str]:
    """Copy an old output to ``dest``; returns its digest."""
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)
    return tree_digest(dest)


# --- 1. chaos: a Zarr run killed again and again ends equal to an uninterrupted one ------------------------


@pytest.mark.slow
def test_a_zarr_run_killed_ten_times_at_random_points_ends_bit_for_bit_equal(
    tmp_path: Path, inputs: Inputs, launch: Callable[..., Proc]
) -> None:
    work, ref_dir = tmp_path / "work", tmp_path / "ref"
    work.mkdir(), ref_dir.mkdir()
    out, ref = work / "out.zarr", ref_dir / "out.zarr"
    args = ("encode", inputs.holes, out, *TINY, *PLAN, "--format", "zarr", "--chunk", "9")  # 63x63 cells: 49 blocks
    ref_args = (*args[:2], ref, *args[3:])
    done_dir = work / ".out.zarr.geodino-run" / "done"

    def n_done() -> int:
        try:
            return sum(1 for p in done_dir.iterdir() if not p.name.startswith("."))
        except OSError:
            return 0

    reference = launch(*ref_args)  # the uninterrupted run, alongside
    rng = random.Random(20240611)
    history: list[str] = []
    while len(history) < 10:
        before = n_done()
        proc = launch(*args)
        if rng.random() < 0.25:  # anywhere from taking the lock on: model build, run folder set-up, first blocks
            wait_for("the lock", lambda p=proc: lock_holder(out).startswith(f"pid {p.pid} "), proc)
            delay = rng.uniform(0.0, 1.5)
            how = f"{delay:.3f} s after the lock"
            pause(delay, proc)
        else:  # part way through a block after 1 or 2 more finished
            k = rng.randint(1, 2)
            wait_for(f"{k} more done markers", lambda k=k, b=before: n_done() >= b + k, proc)
            delay = rng.uniform(0.0, 0.15)
            how = f"{delay:.3f} s after {k} more blocks"
            pause(delay, proc)
        assert proc.poll() is None, f"the run finished before kill {len(history) + 1} ({history}): {proc.describe()}"
        proc.send(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        after = n_done()
        history.append(f"{how}: {before} -> {after} blocks")
        assert after >= before, history  # finished blocks are never lost
        assert not out.exists() and set(names(work)) <= {".out.zarr.geodino-lock", ".out.zarr.geodino-run"}, (history, names(work))
    assert n_done() < 49, history

    kept = n_done()
    final = launch(*args)
    assert final.wait() == 0, final.describe()
    assert "49 blocks of 9x9 cells" in final.stdout, final.stdout
    if kept:
        assert f"{kept} done before (resumed)" in final.stdout, (kept, final.stdout)
    assert reference.wait() == 0, reference.describe()

    assert names(work) == ["out.zarr", "out.zarr.json"], history  # no run folder, no lock, no temporaries
    found = subprocess.run(["find", str(out), "-name", "*.partial"], capture_output=True, text=True, check=True).stdout
    assert found == ""
    check_sealed(out)
    a, b = xr.open_zarr(out), xr.open_zarr(ref)
    fa, fb = a["features"].values, b["features"].values
    assert fa.shape == (64, 63, 63) and np.isnan(fa).all(axis=0).sum() > 100  # the nodata holes are NaN cells
    assert_same_bits(fa, fb)
    assert a.rio.transform() == b.rio.transform() and a.rio.crs == b.rio.crs
    assert a["spatial_ref"].attrs == b["spatial_ref"].attrs
    assert {k: v for k, v in a.attrs.items() if k != "created"} == {k: v for k, v in b.attrs.items() if k != "created"}
    assert json.loads(a.attrs["completion"])["blocks"] == 49


# --- 2. SIGTERM / SIGHUP / Ctrl-C while writing a COG --------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_mid_run_removes_the_temporaries_and_keeps_the_old_output(
    tmp_path: Path, inputs: Inputs, launch: Callable[..., Proc], sig: signal.Signals
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    scene = work / "scene.tif"
    shutil.copy2(inputs.big, scene)
    out = work / "out.tif"
    old = place_old(inputs.old_cog, out)
    before = names(work)
    proc = launch("encode", scene, out, *TINY, "--tile", "64", "--overlap", "32", "--batch-size", "2", "--overwrite")
    temp = f".out.tif.geodino-{proc.pid}-"
    wait_for("its temporary", lambda: any(n.startswith(temp) for n in names(work)), proc)
    pause(0.3, proc)
    assert proc.poll() is None, proc.describe()
    proc.send(sig)
    assert_interrupted(proc, sig)
    assert names(work) == before, names(work)
    assert tree_digest(out) == old


# --- 3. SIGTERM while train-head encodes ------------------------------------------------------------


def test_sigterm_mid_train_head_leaves_no_temporary_folder_and_no_head(tmp_path: Path, inputs: Inputs, launch: Callable[..., Proc]) -> None:
    tmp, work = tmp_path / "tmp", tmp_path / "work"
    tmp.mkdir(), work.mkdir()
    x0, y0 = 400000.0, 5300000.0
    labels = tmp_path / "labels.geojson"
    polys = [box(x0 + 50, y0 - 450, x0 + 400, y0 - 50), box(x0 + 600, y0 - 950, x0 + 950, y0 - 600)]
    gpd.GeoDataFrame({"class": [1, 2]}, geometry=polys, crs="EPSG:32633").to_file(labels)
    head = work / "head.pt"
    args = ("train-head", inputs.big, labels, "--out", head, *TINY, "--layers", "-2,-1", "--tile", "64", "--overlap", "32")
    proc = launch(*args, "--epochs", "5", env={"TMPDIR": str(tmp)})

    def encoding() -> bool:
        return any(p.name.startswith("geodino-train-") and any(p.iterdir()) for p in tmp.iterdir() if p.is_dir())

    wait_for("the temporary feature raster in TMPDIR", encoding, proc)
    pause(0.3, proc)
    assert proc.poll() is None, proc.describe()
    proc.send(signal.SIGTERM)
    assert_interrupted(proc, signal.SIGTERM)
    assert [n for n in names(tmp) if n.startswith("geodino-train-")] == [], names(tmp)
    assert names(work) == [], names(work)  # no head, no metrics, no lock, no temporaries


# --- 4. SIGTERM mid download ------------------------------------------------------------------------


@pytest.fixture
def trickle_server() -> Iterator[str]:
    """An HTTP server promising 50 MB for ``/weights/<name>`` and sending 1 kB every 50 ms; yields its base URL."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(50_000_000))
            self.end_headers()
            end = time.monotonic() + 300
            while not stop.is_set() and time.monotonic() < end:
                try:
                    self.wfile.write(b"\0" * 1024)
                    self.wfile.flush()
                except OSError:
                    return
                stop.wait(0.05)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as base:
        try:
            yield base
        finally:
            stop.set()


def test_sigterm_mid_download_removes_the_partial_file_and_the_lock(
    tmp_path: Path, launch: Callable[..., Proc], trickle_server: str
) -> None:
    cache = tmp_path / "cache"
    name = "geodino_tiny_mlp-0123abcd.pth"
    proc = launch("download", "geodino_tiny_mlp", "--url", f"{trickle_server}/weights/{name}", "--cache-dir", cache)

    def receiving() -> bool:
        return cache.is_dir() and any(p.name.startswith(f"{name}.part-") and p.stat().st_size > 0 for p in cache.iterdir())

    wait_for("the partial file to receive bytes", receiving, proc)
    assert (cache / f"{name}.lock").read_text().startswith(f"pid {proc.pid} ")
    proc.send(signal.SIGTERM)
    assert_interrupted(proc, signal.SIGTERM)
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert names(cache) == [], names(cache)


# --- 5. orphans of a SIGKILLed run --------------------------------------------------------------------


def test_temporaries_and_the_lock_of_a_killed_run_are_cleared_by_the_next(
    tmp_path: Path, inputs: Inputs, launch: Callable[..., Proc]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out.tif"
    (work / "notes.txt").write_text("mine")  # neither geodino's nor beside-out: stays
    (work / ".other.tif.geodino-1-features.tif").write_text("another output's")  # another output's temporary: stays
    args = ("encode", inputs.mid, out, *TINY, "--tile", "64", "--overlap", "32")
    proc = launch(*args)
    wait_for("its features temporary", lambda: any(n.startswith(f".out.tif.geodino-{proc.pid}-features") for n in temporaries(out)), proc)
    pause(0.2, proc)
    assert proc.poll() is None, proc.describe()
    proc.send(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    left = temporaries(out)
    assert ".out.tif.geodino-lock" in left and lock_holder(out).startswith(f"pid {proc.pid} on "), left
    assert any(n.startswith(f".out.tif.geodino-{proc.pid}-features") for n in left), left
    assert not out.exists()

    again = launch(*args)
    assert again.wait() == 0, again.describe()
    assert names(work) == sorted([".other.tif.geodino-1-features.tif", "notes.txt", "out.tif", "out.tif.json"]), names(work)
    values, transform, crs = read_cog(out)
    assert values.shape == (64, 32, 32) and not np.isnan(values).any()
    with rasterio.open(inputs.mid) as src:
        assert crs == src.crs and transform == src.transform @ src.transform.scale(16)


# --- 6. two runs on one output ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["cog", "zarr"])
def test_a_second_run_on_an_output_being_written_is_refused_and_the_first_completes(
    tmp_path: Path, inputs: Inputs, launch: Callable[..., Proc], make_checkpoint: Callable[..., Path], fmt: str
) -> None:
    weights = make_checkpoint("geodino_tiny_mlp", seed=5)  # real weights: no RANDOM note on stderr
    work, ref_dir = tmp_path / "work", tmp_path / "ref"
    work.mkdir(), ref_dir.mkdir()
    suffix = ".tif" if fmt == "cog" else ".zarr"
    out, ref = work / f"out{suffix}", ref_dir / f"out{suffix}"
    extra = ("--format", "zarr", "--chunk", "8") if fmt == "zarr" else ()
    args = ("--model", "geodino_tiny_mlp", "--weights", weights, *PLAN, *extra)
    a = launch("encode", inputs.mid, out, *args)
    sequential = launch("encode", inputs.mid, ref, *args)  # the same command on its own
    try:
        wait_for("A's lock", lambda: lock_holder(out).startswith(f"pid {a.pid} on "), a)
        a.send(signal.SIGSTOP)  # A holds the lock for as long as B takes
        b = launch("encode", inputs.mid, out, *args, "--overwrite")
        rc_b = b.wait()
        held = lock_holder(out)
    finally:
        a.send(signal.SIGCONT)
    assert rc_b == 2, b.describe()
    lines = b.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geodino: error: "), b.stderr
    assert "being written by another geodino run" in lines[0] and f"pid {a.pid} " in lines[0] and str(out) in lines[0], lines[0]
    assert held.startswith(f"pid {a.pid} on "), held  # B neither took nor removed A's lock
    assert a.wait() == 0, a.describe()
    assert sequential.wait() == 0, sequential.describe()
    assert names(work) == [out.name, f"{out.name}.json"], names(work)  # B left nothing, A nothing but its output (+ item)
    if fmt == "cog":
        got, want = read_cog(out), read_cog(ref)
        assert_same_bits(got[0], want[0])
        assert got[1:] == want[1:]
        assert got[0].shape == (64, 32, 32)
    else:
        za, zb = xr.open_zarr(out), xr.open_zarr(ref)
        assert_same_bits(za["features"].values, zb["features"].values)
        assert za.rio.transform() == zb.rio.transform() and za.rio.crs == zb.rio.crs
        assert za["features"].shape == (64, 32, 32)
        check_sealed(out)


# --- 7. a full disk -----------------------------------------------------------------------------------

#: bytes per file: more than a lock, a run record or Zarr metadata (8 kB), less than any output of mid.tif (a Zarr
#: chunk of 16 features: 60 kB)
LIMIT = {"cog": 100_000, "zarr": 40_000}


def _limit_file_size(limit: int) -> Callable[[], None]:
    def limit_it() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_it


@pytest.mark.parametrize("fmt", ["cog", "zarr"])
def test_a_full_disk_is_one_line_and_changes_nothing(tmp_path: Path, inputs: Inputs, launch: Callable[..., Proc], fmt: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    out = work / ("out.tif" if fmt == "cog" else "out.zarr")
    old = place_old(inputs.old_cog if fmt == "cog" else inputs.old_zarr, out)
    extra = ("--format", "zarr") if fmt == "zarr" else ()
    proc = launch("encode", inputs.mid, out, *TINY, *PLAN, *extra, "--overwrite", preexec_fn=_limit_file_size(LIMIT[fmt]))
    rc = proc.wait()
    err = proc.stderr
    assert rc == 2, proc.describe()
    assert "Traceback" not in err, err
    errors = error_lines(err)
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert str(out) in errors[0] and "nothing was changed" in errors[0], errors[0]
    assert names(work) == [out.name], names(work)
    assert tree_digest(out) == old


# --- 8. --overwrite onto a symlink --------------------------------------------------------------------


def test_overwrite_replaces_a_symlinked_output_and_leaves_its_target_alone(
    tmp_path: Path, inputs: Inputs, launch: Callable[..., Proc]
) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    target = elsewhere / "kept.tif"
    kept = place_old(inputs.old_cog, target)
    out = work / "out.tif"
    out.symlink_to(target)
    proc = launch("encode", inputs.mid, out, *TINY, *PLAN, "--overwrite")
    assert proc.wait() == 0, proc.describe()
    assert not out.is_symlink() and out.is_file()
    assert read_cog(out)[0].shape == (64, 32, 32)  # the new output (the old one was 16x16 cells)
    assert tree_digest(target) == kept and names(elsewhere) == ["kept.tif"]
    assert names(work) == ["out.tif", "out.tif.json"], names(work)
