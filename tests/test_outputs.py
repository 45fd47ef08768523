"""The output layer in-process: checks, commit order, orphans, locks; a model giving NaN; quiet workers on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from geodino.engine import EncodeOptions, encode_scene
from geodino.errors import GeodinoError, InputError, OutputError
from geodino.features import Tokens
from geodino.lock import OutputLock
from geodino.outputs import OutputSet, check_targets, remove_orphans
from geodino.synthetic import write_scene
from tests.scenes import PatchProbe

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def test_commit_replaces_every_output_at_once_and_keeps_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(b"old a")
    with OutputSet({"main": tmp_path / "a.tif", "side": tmp_path / "a.json"}, overwrite=True) as outs:
        outs.temp("main").write_bytes(b"new a")
        outs.temp("side").write_text("{}")
        assert (tmp_path / "a.tif").read_bytes() == b"old a"  # nothing visible before the commit
        assert outs.commit() == {"main": tmp_path / "a.tif", "side": tmp_path / "a.json"}
    assert snapshot(tmp_path) == {"a.json": b"{}", "a.tif": b"new a"}


def test_a_failure_before_the_commit_leaves_the_old_outputs_exactly(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(b"old a")
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError), OutputSet({"main": tmp_path / "a.tif", "side": tmp_path / "a.json"}, overwrite=True) as outs:
        outs.temp("main").write_bytes(b"new a")
        raise RuntimeError("evaluation failed after the prediction")
    assert snapshot(tmp_path) == before


def test_a_failed_move_during_the_commit_puts_the_old_outputs_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.tif").write_bytes(b"old a")
    (tmp_path / "b.tif").write_bytes(b"old b")
    before = snapshot(tmp_path)
    real = os.replace

    def failing(src: object, dst: object) -> None:  # the new b cannot be moved in (after a was)
        if Path(str(dst)) == tmp_path / "b.tif" and "-b.tif" in str(src):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    targets = {"a": tmp_path / "a.tif", "b": tmp_path / "b.tif"}
    with (
        pytest.raises(OutputError, match=r"No space left on device writing .*a\.tif .*nothing was changed"),
        OutputSet(targets, overwrite=True) as outs,
    ):
        outs.temp("a").write_bytes(b"new a")
        outs.temp("b").write_bytes(b"new b")
        outs.commit()
    assert snapshot(tmp_path) == before


def test_an_old_output_moved_aside_by_a_killed_commit_is_put_back(tmp_path: Path) -> None:
    out = tmp_path / "a.tif"
    (tmp_path / ".a.tif.geodino-999999-old-main").write_bytes(b"old a")  # what a SIGKILL inside a commit leaves
    (tmp_path / ".a.tif.geodino-999999-main.tif.rows.tif").write_bytes(b"scratch")
    with OutputSet({"main": out}):
        pass
    assert snapshot(tmp_path) == {"a.tif": b"old a"}


def test_orphans_of_other_outputs_and_the_run_folder_are_kept(tmp_path: Path) -> None:
    from geodino.outputs import Target

    keep = [".b.tif.geodino-1-main.tif", ".a.tif.geodino-run", ".a.tif.geodino-lock", "a.tif.geodino-1-x", ".a.tif.geodino-x1"]
    for name in [*keep, ".a.tif.geodino-123-main.tif", ".a.tif.geodino-77.rows.tif"]:
        (tmp_path / name).write_text("")
    removed = remove_orphans(Target("main", tmp_path / "a.tif"))
    assert sorted(p.name for p in removed) == [".a.tif.geodino-123-main.tif", ".a.tif.geodino-77.rows.tif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_checks_refuse_inputs_duplicates_foreign_folders_and_parents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = write_scene(tmp_path / "scene.tif", 32, 32)
    (tmp_path / "link.tif").hardlink_to(scene)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("x")
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    cases = {
        "is also an input": ({"m": scene}, [scene]),
        "is also an input: ": ({"m": tmp_path / "link.tif"}, [scene]),  # a hard link of the input
        "given twice": ({"m": tmp_path / "o.tif", "p": tmp_path / "o.tif"}, []),
        "geodino did not write": ({"m": tmp_path / "mine"}, []),
        "working folder or one of its parents": ({"m": ".."}, []),
        "working folder or one of its parents ": ({"m": "."}, []),
        "does not exist": ({"m": tmp_path / "nowhere" / "o.tif"}, []),
        "bytes: at most 200": ({"m": tmp_path / ("x" * 210 + ".tif")}, []),
        "holds the input": ({"m": tmp_path}, [scene]),
    }
    for fragment, (targets, inputs) in cases.items():
        with pytest.raises(InputError, match=fragment.strip()):
            check_targets(targets, inputs, overwrite=True)
    with pytest.raises(InputError, match="exists: pass --overwrite"):
        check_targets({"m": tmp_path / "mine" / "thesis.txt"}, [], overwrite=False)
    with pytest.raises(InputError, match="folder geodino did not write"):  # not "pass --overwrite", which would refuse it
        check_targets({"m": tmp_path / "mine"}, [], overwrite=False)
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "x"


def test_a_folder_geodino_wrote_may_be_replaced_and_a_symlink_is_replaced_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.tif"
    target.write_bytes(b"keep me")
    (tmp_path / "out.tif").symlink_to(target)
    with OutputSet({"m": tmp_path / "out.tif"}, overwrite=True) as outs:
        outs.temp("m").write_bytes(b"new")
        outs.commit()
    assert not (tmp_path / "out.tif").is_symlink() and (tmp_path / "out.tif").read_bytes() == b"new"
    assert target.read_bytes() == b"keep me"
    with OutputSet({"m": tmp_path / "f.zarr"}) as outs:  # a folder output gets geodino's marker at commit
        outs.temp("m").mkdir()
        outs.commit()
    assert (tmp_path / "f.zarr" / ".geodino").is_file()
    check_targets({"m": tmp_path / "f.zarr"}, [], overwrite=True)  # so --overwrite may replace it


def test_a_held_lock_names_its_holder_and_a_released_one_is_gone(tmp_path: Path) -> None:
    out = tmp_path / "o.tif"
    with OutputSet({"m": out}):
        text = (tmp_path / ".o.tif.geodino-lock").read_text()
        assert text.startswith(f"pid {os.getpid()} on ")
        with pytest.raises(OutputError, match=f"being written by another geodino run \\(pid {os.getpid()} on "), OutputSet({"m": out}):
            pass
    assert not (tmp_path / ".o.tif.geodino-lock").exists()
    with OutputLock(tmp_path / "x.lock", "x"):  # taken again once free
        pass


class NanAfter(PatchProbe):
    """A stand-in model whose second batch gives NaN for its second tile."""

    def __call__(self, x: torch.Tensor) -> Tokens:
        out = super().__call__(x)
        if self.calls == 2:
            out.patches[1, 0, 0, 0] = float("nan")
        return out


def test_a_model_giving_nan_stops_the_run_naming_the_tile_and_writes_nothing(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "scene.tif", 64, 96)
    before = snapshot(tmp_path)
    with pytest.raises(GeodinoError, match=r"the model gave NaN/inf for tile 0,3 \(pixel rows 0-32, cols 48-80\)"):
        encode_scene(scene, tmp_path / "f.tif", NanAfter(), EncodeOptions(tile=32, overlap=16, batch_size=2))  # type: ignore[arg-type]
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_ctrl_c_with_worker_processes_prints_no_traceback(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", 512, 512)
    args = ["encode", "s.tif", "o.zarr", "--format", "zarr", "--workers", "2", "--model", "geodino_tiny_mlp", "--weights", "random"]
    args += ["--tile", "64", "--overlap", "16", "--chunk", "4"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        done = tmp_path / ".o.zarr.geodino-run" / "done"
        deadline = time.monotonic() + 180
        while not (done.is_dir() and any(done.iterdir())) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "distributed" not in err, err
    assert err.splitlines()[-1].startswith("geodino: error: interrupted: ") and "run the same command again to resume" in err
    assert np.any([p.name for p in (tmp_path / ".o.zarr.geodino-run" / "done").iterdir()])


def test_review_cases_paths_through_links_inside_inputs_and_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geodino.outputs import absolute

    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "L2").symlink_to(tmp_path / "sub" / "deep")
    monkeypatch.chdir(tmp_path)
    assert absolute("L2/../old.tif") == tmp_path / "sub" / "old.tif"  # as the system resolves it, not as text
    assert absolute("..") == tmp_path.parent
    scene = write_scene(tmp_path / "sub" / "scene.tif", 32, 32)
    with pytest.raises(InputError, match="is also an input"):
        check_targets({"m": "L2/../scene.tif"}, [scene], overwrite=True)
    with pytest.raises(InputError, match="is also an input"):
        check_targets({"m": scene}, [f"file://{scene}"], overwrite=True)
    store = tmp_path / "in.zarr"
    store.mkdir()
    with pytest.raises(InputError, match="is inside the input"):
        check_targets({"m": store / "features" / "0.1.0"}, [store], overwrite=True)
    with pytest.raises(InputError, match="did you forget OUT"):  # a sidecar over someone's raster, not only the main output
        check_targets({"m": tmp_path / "new.tif", "probabilities": scene}, [], overwrite=True)


def test_a_move_refused_during_the_commit_is_one_line_and_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "b.tif").write_bytes(b"old b")
    before = snapshot(tmp_path)
    real = os.replace

    def refusing(src: object, dst: object) -> None:
        if Path(str(dst)) == tmp_path / "b.tif" and "-b.tif" in str(src):
            raise PermissionError(1, "Operation not permitted")
        real(src, dst)

    monkeypatch.setattr(os, "replace", refusing)
    targets = {"a": tmp_path / "a.tif", "b": tmp_path / "b.tif"}
    refused = pytest.raises(OutputError, match=r"cannot move .*b\.tif into place \(Operation not permitted\); nothing was changed")
    with refused, OutputSet(targets, overwrite=True) as outs:
        outs.temp("a").write_bytes(b"new a")
        outs.temp("b").write_bytes(b"new b")
        outs.commit()
    assert snapshot(tmp_path) == before  # the new a.tif, moved in first, was taken out again
