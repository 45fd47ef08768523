"""A catalogue of bad inputs, each run through ``python cli.py`` as a fresh process: exit code 2, exactly one
line on stderr starting ``geodino: error:``, no traceback, and the case's folder exactly as it was before
(every file byte-identical, no path added or removed, hidden ones and folders included).

Kinds: commands that destroyed data before (DAMAGE), that exited 0 with a wrong result (WRONG), that ended
in a traceback (TRACEBACK), and the classic one-line refusals. Each case gets its own folder; the processes
run three at a time in a session fixture and one test per case checks its stored result.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.enums import ColorInterp
from shapely.geometry import box

from tests.scenes import TRANSFORM, coordinate_raster, write_raster

pytestmark = pytest.mark.slow  # fresh processes or a cluster: left out of the fast loop (make test-fast), run by make test

ROOT = Path(__file__).resolve().parents[1]
SHARED = "$SHARED"  # in a case's arguments: the session folder of shared weights and the finished template store
TINY = "--model geodino_tiny_mlp --weights random"
TINY_FILE = f"--model geodino_tiny_mlp --weights {SHARED}/tiny.pth"  # no RANDOM-weights warning on stderr
PLAN = "--tile 64 --overlap 16"
CHM = f"--head geodino_tiny_chmv2 --weights {SHARED}/chmv2 {PLAN}"  # a Hugging Face folder: backbone and head
KILLED_RUN = f"encode scene.tif out.zarr {TINY_FILE} --tile 128 --overlap 32 --format zarr --chunk 4"
RUN_FOLDER = ".out.zarr.geodino-run"
WORKERS = 3
TIMEOUT = 300

Setup = Callable[[Path, Path], object]  # (the case's folder, the shared folder)


# --- setup helpers: files a case needs in its folder -------------------------------------------------------


def scene(d: Path, s: Path) -> Path:
    """``scene.tif``: 64x64 uint8 RGB, 10 m pixels, EPSG:32633."""
    return write_raster(d / "scene.tif", coordinate_raster(64, 64).astype(np.uint8), photometric="RGB")


def tagged_raster(path: Path, product: str = "features") -> Path:
    """A small raster carrying geodino's tags: an output of an earlier run (``--overwrite`` may replace it)."""
    write_raster(path, np.ones((1, 4, 4), np.float32))
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(GEODINO_PRODUCT=product, GEODINO_VERSION="0.1.0")
    return path


def head_file(path: Path, n_classes: int = 2, **info: object) -> Path:
    """A land-cover head for ``geodino_tiny_mlp`` (last block, 64 channels) in train-head's format."""
    from geodino.landcover import HEAD_FORMAT, LinearHead, save_head

    record = {"format": HEAD_FORMAT, "classes": list(range(n_classes)), "names": [f"c{i}" for i in range(n_classes)]}
    record |= {"model": "geodino_tiny_mlp", "layers": [-1], "weights": "random", **info}
    return save_head(path, LinearHead(64, n_classes), record)


def polygons(path: Path, x0: float = TRANSFORM.c, y0: float = TRANSFORM.f, column: str = "class") -> Path:
    """Two labelled boxes (classes 1 and 2) at ``(x0, y0)`` (default: inside the 640 m scene)."""
    geoms = [box(x0 + 10, y0 - 300, x0 + 300, y0 - 10), box(x0 + 330, y0 - 600, x0 + 600, y0 - 330)]
    gpd.GeoDataFrame({column: [1, 2]}, geometry=geoms, crs="EPSG:32633").to_file(path)
    return path


def label_raster(path: Path, values: int, dtype: str = "uint16") -> Path:
    """A label raster on the scene grid holding ``values`` distinct values."""
    return write_raster(path, (np.arange(64 * 64).reshape(1, 64, 64) % values).astype(dtype))


def preset(d: Path, text: str) -> Path:
    return _text(d / "p.yaml", 'name: p\nrgb: ["1", "2", "3"]\n' + text)


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tiny_state_dict(spec: str = "geodino_tiny_mlp", seed: int = 1) -> dict[str, torch.Tensor]:
    from geodino.models import get_spec, random_state_dict

    return random_state_dict(get_spec(spec), seed=seed)


def nan_checkpoint(d: Path, s: Path) -> None:
    sd = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tiny_state_dict().items()}
    torch.save(sd, d / "nan.pth")


def hf_folder_bad_config(d: Path, s: Path) -> None:
    from safetensors.torch import save_file

    from geodino.models import meta_to_hf

    _text(d / "hf" / "config.json", '{"model_type": "dinov3_vit", "hidden_size": 64,,}')
    save_file({k: v.contiguous() for k, v in meta_to_hf(tiny_state_dict()).items()}, str(d / "hf" / "model.safetensors"))


def plain_zarr(d: Path, s: Path) -> None:
    import zarr

    group = zarr.open_group(str(d / "plain.zarr"), mode="w", zarr_format=2)
    group.create_array("data", shape=(4, 4), dtype="float32")[:] = np.ones((4, 4), np.float32)
    zarr.consolidate_metadata(str(d / "plain.zarr"), zarr_format=2)


def store_copy(d: Path, s: Path) -> Path:
    """A copy of the finished template store (``store.zarr``: 4 chunks of 2x2 cells)."""
    return Path(shutil.copytree(s / "store.zarr", d / "store.zarr"))


def store_lost_chunk(d: Path, s: Path) -> None:
    chunks = sorted(p for p in (store_copy(d, s) / "features").iterdir() if not p.name.startswith("."))
    assert len(chunks) > 1, chunks
    chunks[1].unlink()


def store_corrupt_zmetadata(d: Path, s: Path) -> None:
    (store_copy(d, s) / ".zmetadata").write_text('{"zarr_consolidated_format": 1, "metadata": {')


def killed_zarr_run(d: Path, s: Path) -> None:
    """``KILLED_RUN`` on a 512x512 scene, killed with SIGKILL as soon as its first block is marked done."""
    write_raster(d / "scene.tif", coordinate_raster(512, 512))
    argv = [sys.executable, str(ROOT / "cli.py"), *shlex.split(KILLED_RUN.replace(SHARED, str(s)))]
    proc = subprocess.Popen(argv, cwd=d, env=base_env(s), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = d / RUN_FOLDER / "done"
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if done.is_dir() and any(not p.name.startswith(".") for p in done.iterdir()):
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run to kill ended by itself (exit {proc.returncode})"
    # The lock file of the killed process: the OS released its lock, the next run takes it over and removes it.
    (d / ".out.zarr.geodino-lock").unlink(missing_ok=True)


def killed_run_then_scene_rewritten(d: Path, s: Path) -> None:
    """The killed run, then its scene rewritten with other pixel values, same size and same mtime."""
    killed_zarr_run(d, s)
    path = d / "scene.tif"
    before = path.stat()
    write_raster(path, coordinate_raster(512, 512)[:, ::-1, :].copy())
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def nested_cwd(d: Path, s: Path) -> None:
    scene(d, s)
    _text(d / "work" / "notes.txt", "my notes\n")
    _text(d / "work" / "sub" / "draft.txt", "a draft\n")


def unrelated_folder(d: Path, s: Path) -> None:
    scene(d, s)
    _text(d / "results" / "thesis.txt", "four years of work\n")


def band_files(d: Path, s: Path) -> None:
    for i, b in enumerate((4, 3, 2, 5)):
        write_raster(d / f"B{b}.tif", (coordinate_raster(64, 64)[i % 3 : i % 3 + 1] * (i + 1)).astype(np.uint16))


def far_reference(d: Path, s: Path) -> None:
    """A reference CHM 100 km east of the scene (no pixel in common), and a chm.tif of an earlier run."""
    write_raster(d / "R.tif", np.full((1, 64, 64), 12.5, np.float32), transform=TRANSFORM @ Affine.translation(10_000, 0), nodata=-9999)
    tagged_raster(d / "chm.tif", "canopy_height")


def reference(d: Path, s: Path) -> None:
    write_raster(d / "ref.tif", np.full((1, 64, 64), 12.5, np.float32), nodata=-9999)


def landcover_inputs(d: Path, s: Path) -> None:
    """Scene, a valid head and an lc.tif of an earlier land-cover run."""
    scene(d, s)
    head_file(d / "head.pt")
    tagged_raster(d / "lc.tif", "land_cover")


def complex_raster(d: Path, s: Path) -> None:
    write_raster(d / "slc.tif", np.full((2, 32, 32), 1 + 2j, np.complex64))


def alpha_only(d: Path, s: Path) -> None:
    path = write_raster(d / "alpha.tif", np.full((1, 32, 32), 255, np.uint8))
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.alpha]


def files(content: dict[str, str | bytes]) -> Setup:
    """A setup step writing ``content`` (relative path -> text or bytes)."""

    def write(d: Path, s: Path) -> None:
        for name, data in content.items():
            path = d / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)

    return write


# --- the catalogue ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    args: str  # shell words after ``python cli.py``; $SHARED is the shared folder
    expect: tuple[str, ...]  # fragments of the error line
    setup: tuple[Setup, ...] = ()
    cwd: str = "."  # relative to the case's folder
    env: dict[str, str] = field(default_factory=dict)
    slow: bool = False  # started first (its setup runs a process of its own)


def case(id: str, args: str, expect: str | tuple[str, ...], *setup: Setup, **kw: object) -> Case:
    return Case(id, args, (expect,) if isinstance(expect, str) else expect, setup, **kw)  # type: ignore[arg-type]


LC = "land-cover scene.tif lc.tif --head head.pt --weights random"
TRAIN = f"train-head scene.tif labels.gpkg --out head.pt {TINY}"
ENC = f"encode scene.tif out.tif {TINY}"
ZARR = f"encode scene.tif out.zarr --format zarr {TINY}"
ZARR_FILE = f"encode scene.tif out.zarr --format zarr {TINY_FILE}"
PRESET = f"encode scene.tif out.tif --sensor p.yaml {TINY}"
LABEL_RASTER = f"train-head scene.tif lab.tif --out head.pt {TINY}"
LONG_NAME = "f" * 246 + ".tif"  # 250 bytes
S = (scene,)
labels = (scene, lambda d, s: polygons(d / "labels.gpkg"))
a_head = (scene, lambda d, s: head_file(d / "head.pt"))
a_store = (store_copy,)
rotated = lambda d, s: write_raster(d / "rot.tif", coordinate_raster(32, 32), transform=TRANSFORM @ Affine.rotation(10))  # noqa: E731
checkpoint = lambda d, s: torch.save(tiny_state_dict(), d / "ckpt.pth")  # noqa: E731
cache_file = files({"cache": "not a folder\n"})
BAD_HEADS = {
    "not-a-torch-file": lambda d, s: (d / "head.pt").write_bytes(b"not a head at all"),
    "wrong-keys": lambda d, s: torch.save({"weights": torch.zeros(3), "labels": [1, 2]}, d / "head.pt"),
    "classes-not-a-list": lambda d, s: head_file(d / "head.pt", classes="ab"),
}
BAD_PRESETS = {
    "rgb-not-a-list": ("name: p\nrgb: red\n", "rgb"),
    "percentiles-reversed": ('name: p\nrgb: ["1", "2", "3"]\nstretch: {percentiles: [98, 2]}\n', "percentiles"),
    "offset-abc": ('name: p\nrgb: ["1", "2", "3"]\noffset: abc\n', "offset"),
}

# fmt: off
DAMAGE = [  # data destroyed before
    case("damage-overwrite-unrelated-folder-cog", f"encode scene.tif results --overwrite {TINY}", ("results", "did not write"),
         unrelated_folder),
    case("damage-overwrite-unrelated-folder-zarr", f"encode scene.tif results --format zarr --overwrite {TINY}",
         ("results", "did not write"), unrelated_folder),
    case("damage-out-dotdot-from-nested-cwd", f"encode ../../scene.tif .. --overwrite {TINY}", "working folder", nested_cwd,
         cwd="work/sub"),
    case("damage-out-dot", f"encode ../scene.tif . --overwrite {TINY}", "working folder", nested_cwd, cwd="work"),
    case("damage-out-is-the-scene-cog", f"encode scene.tif scene.tif --overwrite {TINY}", "input", *S),
    case("damage-out-is-the-scene-zarr", f"encode scene.tif scene.tif --format zarr --overwrite {TINY}", "input", *S),
    case("damage-out-is-the-scene-canopy", f"canopy-height scene.tif scene.tif --overwrite {CHM}", "input", *S),
    case("damage-band-files-forgotten-out", f"encode B4.tif B3.tif B2.tif B5.tif --sensor landsat8-c2l1 --overwrite {TINY}",
         ("B5.tif", "did you forget OUT"), band_files),
    case("damage-canopy-reference-without-overlap", f"canopy-height scene.tif chm.tif --overwrite --reference R.tif {CHM}",
         "does not overlap", scene, far_reference),
    case("damage-landcover-vector-folder-missing-overwrite", f"{LC} --vector nodir/lc.gpkg --overwrite", "nodir", landcover_inputs),
    case("damage-canopy-eval-json-exists", f"canopy-height scene.tif chm.tif --reference ref.tif {CHM}", ("chm.eval.json", "--overwrite"),
         scene, reference, files({"chm.eval.json": '{"mae": 1.0}\n'})),
    case("damage-train-head-metrics-json-exists", TRAIN, ("head.metrics.json", "--overwrite"),
         *labels, files({"head.metrics.json": '{"train": {}}\n'})),
    case("damage-landcover-vector-is-out", f"{LC} --vector lc.tif --overwrite", "twice", landcover_inputs),
    case("damage-landcover-probabilities-is-out", f"{LC} --probabilities lc.tif --overwrite", "twice", landcover_inputs),
    case("damage-landcover-vector-unsupported-suffix", f"{LC} --vector lc.shp --overwrite", ("--vector", "lc.shp"), landcover_inputs),
]

WRONG = [  # exit 0 with a wrong result before
    case("wrong-landcover-head-of-300-classes", "land-cover scene.tif lc.tif --head big.pt --weights random", ("big.pt", "classes"),
         scene, lambda d, s: head_file(d / "big.pt", 300)),
    case("wrong-nan-checkpoint-check-weights", "check-weights geodino_tiny_mlp --weights nan.pth", ("nan.pth", "NaN"), nan_checkpoint),
    case("wrong-nan-checkpoint-encode", "encode scene.tif out.tif --model geodino_tiny_mlp --weights nan.pth", ("nan.pth", "NaN"),
         scene, nan_checkpoint),
    case("wrong-preset-scale-nan", PRESET, ("p.yaml", "scale"), scene, lambda d, s: preset(d, "scale: .nan\n")),
    case("wrong-preset-stretch-lo-above-hi", PRESET, ("p.yaml", "stretch"), scene, lambda d, s: preset(d, "stretch: {lo: 0.3, hi: 0.1}\n")),
    case("wrong-preset-unknown-key", PRESET, ("p.yaml", "colour"), scene, lambda d, s: preset(d, "colour: true\n")),
    case("wrong-encode-dtype-uint8", f"{ENC} --dtype uint8", "--dtype", *S),
    case("wrong-export-dtype-uint8", "export store.zarr out.tif --dtype uint8", "--dtype", *a_store),
    case("wrong-zarr-resume-after-scene-rewritten", KILLED_RUN, "unfinished run", killed_run_then_scene_rewritten, slow=True),
    case("wrong-export-store-with-a-deleted-chunk", "export store.zarr out.tif", ("store.zarr", "chunk"), store_lost_chunk),
    case("wrong-export-unfinished-run-store", f"export {RUN_FOLDER}/features.zarr out.tif", ("features.zarr", "finished"),
         killed_zarr_run, slow=True),
    case("wrong-complex-raster", f"encode slc.tif out.tif {TINY}", ("slc.tif", "complex"), complex_raster),
    case("wrong-train-head-label-raster-of-300-classes", LABEL_RASTER, ("lab.tif", "300"),
         scene, lambda d, s: label_raster(d / "lab.tif", 300)),
    case("wrong-train-head-float-label-raster", LABEL_RASTER, ("lab.tif", "float32"),
         scene, lambda d, s: label_raster(d / "lab.tif", 5, "float32")),
    case("wrong-train-head-label-raster-of-101-values", LABEL_RASTER, ("lab.tif", "101"),
         scene, lambda d, s: label_raster(d / "lab.tif", 101)),
]

TRACEBACKS = [  # a traceback before
    case("tb-output-name-of-250-bytes", f"encode scene.tif {LONG_NAME} {TINY}", "bytes", *S),
    case("tb-alpha-only-raster", f"encode alpha.tif out.tif {TINY}", ("alpha.tif", "alpha"), alpha_only),
    case("tb-read-threads-negative", f"{ENC} --read-threads -1", "--read-threads", *S),
    case("tb-layers-empty", f"{ENC} --layers ''", "--layers", *S),
    case("tb-tile-100000-memory", f"{ENC} --tile 100000", "100000", *S),
    case("tb-batch-size-0", f"{ENC} --batch-size 0", "--batch-size", *S),
    case("tb-pca-0", f"{ENC} --pca 0", "--pca", *S),
    case("tb-workers-0", f"{ZARR} --workers 0", "--workers", *S),
    case("tb-chunk-0", f"{ZARR} --chunk 0", "chunk", *S),
    case("tb-train-head-epochs-0", f"{TRAIN} --epochs 0", "--epochs", *labels),
    case("tb-train-head-out-folder-missing", f"train-head scene.tif labels.gpkg --out missing/head.pt {TINY}", "missing", *labels),
    case("tb-train-head-out-existing-folder", f"train-head scene.tif labels.gpkg --out heads --overwrite {TINY}", "heads",
         *labels, files({"heads/notes.txt": "mine\n"})),
    case("tb-landcover-vector-folder-missing", f"{LC} --vector missing/lc.gpkg", "missing", *a_head),
    *[case(f"tb-head-{name}", LC, "head.pt", scene, setup) for name, setup in BAD_HEADS.items()],
    *[case(f"tb-preset-{name}", PRESET, ("p.yaml", word), scene, files({"p.yaml": text})) for name, (text, word) in BAD_PRESETS.items()],
    case("tb-hf-folder-invalid-config-json-check-weights", "check-weights geodino_tiny_mlp --weights hf", "config.json",
         hf_folder_bad_config),
    case("tb-hf-folder-invalid-config-json-encode", "encode scene.tif out.tif --model geodino_tiny_mlp --weights hf", "config.json",
         scene, hf_folder_bad_config),
    case("tb-export-plain-folder", "export folder out.tif", "folder", files({"folder/data.txt": "1 2 3\n"})),
    case("tb-export-plain-zarr-store", "export plain.zarr out.tif", "plain.zarr", plain_zarr),
    case("tb-export-corrupt-zmetadata", "export store.zarr out.tif", "store.zarr", store_corrupt_zmetadata),
    case("tb-download-not-a-url", "download geodino_tiny_mlp --url notaurl --cache-dir cache", ("notaurl", "URL")),
    case("tb-download-file-url", "download geodino_tiny_mlp --url file:///etc/passwd --cache-dir cache", "file://"),
    case("tb-download-cache-dir-is-a-file", "download geodino_tiny_mlp --url http://127.0.0.1:9/geodino_tiny_mlp.pth --cache-dir cache",
         "cache", cache_file),
    case("tb-check-weights-cache-dir-is-a-file", "check-weights dinov3_vitl16_sat493m --cache-dir cache", "cache", cache_file),
    case("tb-scheduler-not-an-address", f"{ZARR} --scheduler 'not an address'", "--scheduler", *S),
    case("tb-scheduler-unreachable", f"{ZARR_FILE} --scheduler tcp://127.0.0.1:1", "scheduler", *S,
         env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}),
    case("tb-workers-and-scheduler", f"{ZARR} --workers 2 --scheduler tcp://x:1", "both", *S),
]

CLASSIC = [  # one-line refusals
    case("scene-not-found", f"encode nope.tif out.tif {TINY}", ("nope.tif", "not found")),
    case("scene-corrupt", f"encode bad.tif out.tif {TINY}", "bad.tif", files({"bad.tif": b"II*\x00" + b"\x17" * 300})),
    case("scene-ungeoreferenced", f"encode nogeo.tif out.tif {TINY}", "georeference",
         lambda d, s: write_raster(d / "nogeo.tif", coordinate_raster(32, 32), transform=None, crs=None)),
    case("scene-rotated", f"encode rot.tif out.tif {TINY}", "rotated", rotated),
    case("info-missing-scene", "info nothere.tif", ("nothere.tif", "not found")),  # info reports a readable scene it cannot encode
    case("band-files-in-different-crs", f"encode B4.tif B3.tif B2.tif out.tif --sensor landsat8-c2l1 {TINY}", ("B2.tif", "CRS"),
         band_files, lambda d, s: write_raster(d / "B2.tif", np.ones((1, 64, 64), np.uint16), crs="EPSG:32634")),
    case("unknown-sensor", f"{ENC} --sensor sentinel9", "sentinel9", *S),
    case("unknown-model", "encode scene.tif out.tif --model dinov3_vitl16_sat --weights random", ("dinov3_vitl16_sat", "unknown"), *S),
    case("bands-out-of-range", f"{ENC} --bands 4,2,1", ("band 4", "range"), *S),
    case("bands-unknown-name", f"{ENC} --bands B08,B04,B03", "B08", *S),
    case("tile-not-a-multiple-of-16", f"{ENC} --tile 100", "tile 100", *S),
    case("overlap-not-below-tile", f"{ENC} --tile 64 --overlap 64", "overlap 64", *S),
    case("unknown-format", f"{ENC} --format npy", "--format", *S),
    case("unknown-precision", f"{ENC} --precision fp8", "--precision", *S),
    case("unknown-device", f"{ENC} --device tpu9", "tpu9", *S),
    case("cuda-without-cuda", f"{ENC} --device cuda", "CUDA", *S),
    case("existing-out-cog", ENC, ("out.tif", "--overwrite"), scene, lambda d, s: tagged_raster(d / "out.tif")),
    case("existing-out-zarr", ZARR, ("out.zarr", "--overwrite"),
         scene, files({"out.zarr/features/0.0.0": b"\0" * 64, "out.zarr/.geodino": '{"role": "features"}'})),
    case("existing-out-canopy", f"canopy-height scene.tif chm.tif {CHM}", ("chm.tif", "--overwrite"),
         scene, lambda d, s: tagged_raster(d / "chm.tif", "canopy_height")),
    case("existing-out-land-cover", LC, ("lc.tif", "--overwrite"), landcover_inputs),
    case("existing-out-train-head", TRAIN, ("head.pt", "--overwrite"), *labels, lambda d, s: head_file(d / "head.pt")),
    case("out-folder-missing-encode", f"encode scene.tif nodir/out.tif {TINY}", "nodir", *S),
    case("out-folder-missing-canopy", f"canopy-height scene.tif nodir/chm.tif {CHM}", "nodir", *S),
    case("out-folder-missing-export", "export store.zarr nodir/out.tif", "nodir", *a_store),
    case("encode-without-out", f"encode scene.tif {TINY}", "OUT", *S),
    case("weights-file-missing", "encode scene.tif out.tif --model geodino_tiny_mlp --weights nope.pth", "nope.pth", *S),
    case("weights-folder-without-weights", "encode scene.tif out.tif --model geodino_tiny_mlp --weights wdir", "wdir",
         scene, files({"wdir/README.txt": "weights go here\n"})),
    case("mixer-file-missing", f"{ENC} --mixer nope.pt", "nope.pt", *S),
    case("mixer-file-corrupt", f"{ENC} --mixer mixer.pt", "mixer.pt", scene, files({"mixer.pt": b"PK\x03\x04 not a mixer"})),
    case("labels-file-missing", f"train-head scene.tif nope.gpkg --out head.pt {TINY}", ("nope.gpkg", "not found"), *S),
    case("labels-without-overlap", TRAIN, ("labels.gpkg", "overlap"), scene, lambda d, s: polygons(d / "labels.gpkg", 0.0, 1000.0)),
    case("labels-unknown-class-column", f"{TRAIN} --class-column landuse", "landuse", *labels),
    case("reference-file-missing", f"canopy-height scene.tif chm.tif --reference nope.tif {CHM}", ("nope.tif", "reference"), *S),
    case("resolution-0", f"canopy-height scene.tif chm.tif --resolution 0 {CHM}", "--resolution", *S),
    case("resolution-finer-than-the-pixels", f"canopy-height scene.tif chm.tif --resolution 0.5 {CHM}", ("--resolution", "finer"), *S),
    case("convert-to-an-existing-dst", "convert geodino_tiny_mlp ckpt.pth taken.pth --to meta", ("taken.pth", "exists"),
         checkpoint, files({"taken.pth": b"keep me"})),
    case("convert-to-xyz", "convert geodino_tiny_mlp ckpt.pth new --to xyz", "--to", checkpoint),
    case("export-of-a-missing-path", "export nope.zarr out.tif", "nope.zarr"),
    case("train-head-scene-only", f"train-head scene.tif --out head.pt {TINY}", "labels", *S),
    case("land-cover-scene-only", "land-cover scene.tif --head head.pt", "output", *a_head),
]
# fmt: on

CASES = [*DAMAGE, *WRONG, *TRACEBACKS, *CLASSIC]


# --- running the catalogue -----------------------------------------------------------------------------------


@dataclass
class Result:
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    setup_error: str | None = None
    seconds: float = 0.0


def base_env(shared: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEODINO_WEIGHTS", "GEODINO_SENSORS")}
    return env | {"COLUMNS": "200", "GEODINO_CACHE": str(shared.parent / "no-cache")}


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (hidden ones and folders included): sha256 of files, ``dir``, or a link's target."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                found[rel] = "link -> " + os.readlink(p)
            elif p.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def execute(c: Case, root: Path, shared: Path) -> Result:
    d = root / c.id
    d.mkdir()
    res = Result()
    t0 = time.monotonic()
    try:
        for step in c.setup:
            step(d, shared)
    except Exception:
        res.setup_error = traceback.format_exc()
        return res
    res.before = snapshot(d)
    argv = [sys.executable, str(ROOT / "cli.py"), *(a.replace(SHARED, str(shared)) for a in shlex.split(c.args))]
    try:
        proc = subprocess.run(argv, cwd=d / c.cwd, capture_output=True, text=True, env=base_env(shared) | c.env, timeout=TIMEOUT)
        res.returncode, res.stdout, res.stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        out, err = (b.decode(errors="replace") if isinstance(b, bytes) else b or "" for b in (exc.stdout, exc.stderr))
        res.stdout, res.stderr = out, f"(timed out after {TIMEOUT} s)\n{err}"
    res.after = snapshot(d)
    res.seconds = time.monotonic() - t0
    return res


def make_shared(folder: Path) -> None:
    """Weights files (no RANDOM-weights warning) and a finished feature store to copy."""
    from geodino.heads import build_canopy_model, save_canopy_model

    folder.mkdir()
    torch.save(tiny_state_dict(seed=3), folder / "tiny.pth")
    save_canopy_model(build_canopy_model("geodino_tiny_chmv2", "random", seed=2), folder / "chmv2", layout="hf")
    scene(folder, folder)
    argv = [sys.executable, str(ROOT / "cli.py"), "encode", "scene.tif", "store.zarr", *shlex.split(f"{TINY} {PLAN}")]
    proc = subprocess.run([*argv, "--format", "zarr", "--chunk", "2"], cwd=folder, capture_output=True, text=True, env=base_env(folder))
    assert proc.returncode == 0, f"cannot build the template store: {proc.stderr}"


@pytest.fixture(scope="session")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    root = tmp_path_factory.mktemp("bad-inputs")
    shared = root / "_shared"
    make_shared(shared)
    cases = root / "cases"
    cases.mkdir()
    order = sorted(CASES, key=lambda c: not c.slow)  # processes of their own in the setup: start them first
    with ThreadPoolExecutor(WORKERS) as pool:
        results = dict(zip([c.id for c in order], pool.map(lambda c: execute(c, cases, shared), order), strict=True))
    return results


def test_the_catalogue_is_complete() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 80
    commands = {c.args.split()[0] for c in CASES}
    assert commands == {"encode", "export", "info", "canopy-height", "train-head", "land-cover", "download", "check-weights", "convert"}


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(c: Case, bad_runs: dict[str, Result]) -> None:
    if c.id == "cuda-without-cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = bad_runs[c.id]
    assert r.setup_error is None, r.setup_error
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    added, removed = sorted(r.after.keys() - r.before.keys()), sorted(r.before.keys() - r.after.keys())
    changed = sorted(p for p in r.before.keys() & r.after.keys() if r.after[p] != r.before[p])
    error = lines[-1] if lines else ""
    broken = {  # every rule is checked and all broken ones are reported together
        "a traceback": "Traceback" in r.stdout + r.stderr,
        f"exit code {r.returncode}, not 2": r.returncode != 2,
        f"{len(lines)} lines on stderr, not 1": len(lines) != 1,
        "the error line does not start with 'geodino: error: '": not error.startswith("geodino: error: "),
        **{f"{f!r} not in the error line": f not in error for f in c.expect},
        f"left behind: {added}": bool(added),
        f"removed: {removed}": bool(removed),
        f"changed: {changed}": bool(changed),
    }
    problems = [rule for rule, hit in broken.items() if hit]
    assert not problems, "; ".join(problems) + f"\n--- stderr\n{r.stderr}--- stdout\n{r.stdout}"
