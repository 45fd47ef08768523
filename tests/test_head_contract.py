"""Heads and band mixers carry their input contract (band identities, stretch policy, GSD) and enforce it.

Every CLI run is a fresh process (``python cli.py ...``) on scenes made here: Landsat 8 band files whose
names say what they are (``L8-B4-x.tif`` is red), one-band panchromatic rasters and 8-bit RGB. Tiny
random backbones and heads: nothing is claimed about accuracy, only about which bands feed the model.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geodino.adapter import prepare
from geodino.contract import CONTRACT_KEY, gsd_note, map_inputs
from geodino.errors import InputError
from geodino.landcover import load_head
from geodino.models.multiband import BandMixer
from geodino.scene import open_scene
from tests import helpers
from tests.scenes import write_raster

pytestmark = pytest.mark.slow  # fresh processes or a cluster: left out of the fast loop (make test-fast), run by make test

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--model", "geodino_tiny_mlp", "--weights", "random", "--layers", "-2,-1", "--tile", "64", "--overlap", "16", "--epochs", "10")
APPLY = ("--weights", "random", "--tile", "64", "--overlap", "16")
SIDE = 64


one_line_error = functools.partial(helpers.one_line_error, alone=False)  # after the random-weights warning


def grid(px: float) -> Affine:
    return Affine(px, 0.0, 500000.0, 0.0, -px, 4000000.0)


def procs(folder: Path, *runs: tuple[object, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``python cli.py ARGS`` for each of ``runs`` at once, each in a fresh process; their results in order."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEODINO_WEIGHTS", "GEODINO_SENSORS")}
    env |= {"COLUMNS": "200", "GEODINO_CACHE": str(folder / "no-cache")}
    started = [
        subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *map(str, r)], cwd=folder, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for r in runs
    ]  # fmt: skip
    out = []
    for p, r in zip(started, runs, strict=True):
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(r, p.returncode, stdout, stderr))
    return out


def cli(folder: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return procs(folder, args)[0]


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, r.stderr
    return r


def classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Landsat 8 band files B2..B5 (uint16, 10 m), two one-band pan scenes, 8-bit RGB scenes at 10 m and 0.6 m,
    a uint16 RGB scene, and a label raster (two classes, left and right half)."""
    d = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[0:SIDE, 0:SIDE]
    for b in (2, 3, 4, 5):
        band = 8000 + 300 * b * (cc >= SIDE // 2) + 40 * ((rr * b + cc) % 17) + rng.integers(0, 500, (SIDE, SIDE))
        write_raster(d / f"L8-B{b}-x.tif", band[None].astype(np.uint16))
    for name in ("pan.tif", "pan2.tif"):
        write_raster(d / name, rng.integers(100, 20000, (1, SIDE, SIDE)).astype(np.uint16))
    rgb = rng.integers(0, 256, (3, SIDE, SIDE)).astype(np.uint8)
    write_raster(d / "rgb.tif", rgb, grid(10.0), photometric="RGB")
    write_raster(d / "rgb06.tif", rgb, grid(0.6), photometric="RGB")
    write_raster(d / "rgb16.tif", rgb.astype(np.uint16) * 100, grid(10.0), photometric="RGB")
    labels = np.where(cc < SIDE // 2, 1, 2).astype(np.uint8)[None]
    write_raster(d / "labels.tif", labels, nodata=0)
    write_raster(d / "labels06.tif", labels, grid(0.6), nodata=0)
    l8 = [d / f"L8-B{b}-x.tif" for b in (2, 3, 4)]
    ok(procs(d, ("train-head", *l8, d / "labels.tif", "--out", d / "l8.pt", *TINY))[0])
    return d


def test_the_head_records_its_contract_and_band_order_does_not_matter(world: Path) -> None:
    _, info = load_head(world / "l8.pt")
    contract = info[CONTRACT_KEY]
    assert contract["preset"] == "generic" and contract["stretch"] == "percentile" and contract["gsd"] == 10.0
    assert [(b["name"], b["common"]) for b in contract["bands"]] == [("B4", "red"), ("B3", "green"), ("B2", "blue")]
    assert isinstance(info["adapter"], dict) and contract["scene_bands"] == 3  # the adapter record is kept beside it
    files = {b: world / f"L8-B{b}-x.tif" for b in (2, 3, 4)}
    trained, shuffled = procs(
        world,
        ("land-cover", files[2], files[3], files[4], world / "lc-234.tif", "--head", world / "l8.pt", *APPLY),
        ("land-cover", files[4], files[2], files[3], world / "lc-423.tif", "--head", world / "l8.pt", *APPLY),
    )
    ok(trained), ok(shuffled)
    a, b = classes(world / "lc-234.tif"), classes(world / "lc-423.tif")
    assert a.shape == (1, SIDE, SIDE) and np.array_equal(a, b)
    assert "red (B4) <- band 1 B4 (L8-B4-x.tif)" in shuffled.stderr and "mapped by identity" in shuffled.stderr
    assert "own percentiles" in shuffled.stderr and "pixels are" not in shuffled.stderr  # same GSD: no GSD note


def test_a_missing_band_or_contradicting_bands_are_one_line_before_any_model(world: Path) -> None:
    no_red, wrong = procs(
        world,
        ("land-cover", world / "L8-B2-x.tif", world / "L8-B3-x.tif", world / "nored.tif", "--head", world / "l8.pt", *APPLY),
        ("land-cover", *(world / f"L8-B{b}-x.tif" for b in (2, 3, 4)), world / "wrong.tif", "--head", world / "l8.pt",
         "--bands", "1,2,3", *APPLY),
    )  # fmt: skip
    one_line_error(no_red, "lacks the band(s) red (B4)", "1 B2 (blue", "2 B3 (green")
    one_line_error(wrong, "--bands 1,2,3 selects", "trained on red (B4), green (B3), blue (B2)", "bands 3,2,1 of this scene")
    assert "RANDOM" not in no_red.stderr + wrong.stderr  # refused before the model was built
    assert not (world / "nored.tif").exists() and not (world / "wrong.tif").exists()


def test_heads_on_unnamed_pan_bands_are_not_mapped_onto_rgb_by_position(world: Path) -> None:
    ok(cli(world, "train-head", world / "pan.tif", world / "labels.tif", "--out", world / "pan111.pt", *TINY, "--bands", "1,1,1"))
    _, info = load_head(world / "pan111.pt")
    assert info[CONTRACT_KEY]["bands"] == [{"name": "1", "common": None}] * 3 and info[CONTRACT_KEY]["scene_bands"] == 1
    on_rgb = cli(world, "land-cover", world / "rgb.tif", world / "p-rgb.tif", "--head", world / "pan111.pt", *APPLY)
    one_line_error(on_rgb, "band 1 (unnamed)", "of a 1-band scene", "the identities do not match", "1 red", "pass --bands")
    assert not (world / "p-rgb.tif").exists()
    contract = info[CONTRACT_KEY]
    on_pan = map_inputs(contract, open_scene(world / "pan2.tif"), None, None, "head h", 3)  # same layout, unnamed too
    assert on_pan.bands == "1,1,1" and on_pan.sensor == "generic" and "mapped by position" in on_pan.notes[0]
    explicit = map_inputs(contract, open_scene(world / "rgb.tif"), None, "1,1,1", "head h", 3)  # the user says which band
    assert explicit.bands == "1,1,1" and "taken as given (its inputs have no known identity)" in explicit.notes[0]
    pan_head = {"preset": "pan", "stretch": "percentile", "bands": [{"name": "1", "common": "pan"}] * 3, "scene_bands": 1, "gsd": 10.0}
    assert map_inputs(pan_head, open_scene(world / "pan2.tif"), None, None, "head h", 3).sensor == "pan"
    with pytest.raises(InputError, match=r"lacks the band.s. pan that head h takes"):
        map_inputs(pan_head, open_scene(world / "rgb.tif"), None, None, "head h", 3)


def test_a_head_without_a_contract_still_loads_and_runs_as_before(world: Path) -> None:
    blob = torch.load(world / "l8.pt", weights_only=True)
    del blob["info"][CONTRACT_KEY]
    torch.save(blob, world / "old.pt")
    head, info = load_head(world / "old.pt")
    assert CONTRACT_KEY not in info and head.n_classes == 2
    r = ok(cli(world, "land-cover", *(world / f"L8-B{b}-x.tif" for b in (2, 3, 4)), world / "old.tif", "--head", world / "old.pt", *APPLY))
    assert "records no input contract" in r.stderr
    assert np.array_equal(classes(world / "old.tif"), classes(world / "lc-234.tif"))  # detection picks the same bands here


def test_a_fixed_stretch_head_keeps_its_preset_and_warns_about_the_gsd(world: Path) -> None:
    ok(cli(world, "train-head", world / "rgb06.tif", world / "labels06.tif", "--out", world / "rgb8.pt", *TINY))
    contract = load_head(world / "rgb8.pt")[1][CONTRACT_KEY]
    assert contract["preset"] == "rgb8" and contract["stretch"] == "fixed" and contract["gsd"] == pytest.approx(0.6)
    coarse = ok(cli(world, "land-cover", world / "rgb.tif", world / "f10.tif", "--head", world / "rgb8.pt", *APPLY))
    assert "stretch: preset rgb8 (fixed stretch, as in training)" in coarse.stderr
    assert "10 m, 16.7x coarser than the 0.6 m head rgb8.pt expects" in coarse.stderr and "--gsd 0.6" in coarse.stderr
    assert map_inputs(contract, open_scene(world / "rgb06.tif"), None, None, "head h", 3).sensor == "rgb8"
    assert map_inputs(contract, open_scene(world / "rgb06.tif"), "generic", None, "head h", 3).sensor == "generic"  # --sensor wins
    with pytest.raises(InputError, match=r"fixed .physical. stretch of preset rgb8, which does not fit this scene .*uint16.*pass --sensor"):
        map_inputs(contract, open_scene(world / "rgb16.tif"), None, None, "head h", 3)


def test_gsd_note_is_given_beyond_four_times_either_way() -> None:
    assert gsd_note(0.6, 0.6, "x") is None and gsd_note(2.4, 0.6, "x") is None and gsd_note(0.15, 0.6, "x") is None
    assert gsd_note(None, 0.6, "x") is None and gsd_note(10.0, None, "x") is None
    assert "16.7x coarser than the 0.6 m head h expects" in (gsd_note(10.0, 0.6, "head h") or "")
    assert "6.0x finer" in (gsd_note(0.1, 0.6, "head h") or "") and "--gsd 0.6" in (gsd_note(0.1, 0.6, "head h") or "")


def test_canopy_height_warns_when_the_scene_gsd_is_far_from_the_heads(world: Path) -> None:
    from geodino.heads.chmv2 import get_head

    assert get_head("dinov3_vitl16_chmv2").gsd == 0.6 and get_head("geodino_tiny_chmv2").gsd == 0.6
    args = ("--head", "geodino_tiny_chmv2", "--weights", "random", "--tile", "64", "--overlap", "16")
    far = ok(cli(world, "canopy-height", world / "rgb.tif", world / "chm10.tif", *args))
    assert "16.7x coarser than the 0.6 m canopy-height head geodino_tiny_chmv2 expects" in far.stderr  # (0.6 m: no note, see above)


def test_a_band_mixer_selects_bands_by_its_stored_identities(world: Path) -> None:
    files = [world / f"L8-B{b}-x.tif" for b in (2, 3, 4, 5)]
    _, adapter = prepare(open_scene(files), 4, None, "blue,green,red,nir08")
    mixer = BandMixer.for_adapter(adapter, rgb=(2, 1, 0))
    mixer.save(world / "mixer.pt")
    back = BandMixer.load(world / "mixer.pt")
    assert [b["common"] for b in back.bands] == ["blue", "green", "red", "nir08"] and back.gsd == 10.0
    torch.save({"n_bands": 4, "band_names": ["a", "b", "c", "d"], "state_dict": mixer.state_dict()}, world / "oldmixer.pt")
    assert BandMixer.load(world / "oldmixer.pt").contract() is None  # an older file: unknown contract
    enc = ("--model", "geodino_tiny_mlp", "--weights", "random", "--tile", "64", "--overlap", "16", "--mixer")
    a, b = procs(
        world,
        ("encode", *files, world / "m-a.tif", *enc, world / "mixer.pt"),
        ("encode", *files[::-1], world / "m-b.tif", *enc, world / "mixer.pt"),
    )
    ok(a), ok(b)
    with rasterio.open(world / "m-a.tif") as x, rasterio.open(world / "m-b.tif") as y:
        assert np.array_equal(x.read(), y.read(), equal_nan=True)
    assert "nir08 (B5) <- band 1 B5 (L8-B5-x.tif)" in b.stderr
    contract = back.contract()
    with pytest.raises(InputError, match=r"lacks the band.s. nir08 \(B5\).*--bands with 4 bands overrides them"):
        map_inputs(contract, open_scene(files[:3]), None, None, "mixer m", 4, strict=False)
    override = map_inputs(contract, open_scene(files), None, "1,2,3,3", "mixer m", 4, strict=False)
    assert override.bands == "1,2,3,3" and "overriding the bands it was trained on" in override.notes[0]
    with pytest.raises(InputError, match="takes 4 bands but 3 were selected"):
        map_inputs(contract, open_scene(files), None, "1,2,3", "mixer m", 4, strict=False)
