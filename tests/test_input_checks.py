"""Inputs refused in one line, or made safe: non-finite pixels, complex and alpha-only rasters, malformed
sensor presets, NaN/inf weights in heads and mixers, malformed head files, label rasters that are not classes."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import ColorInterp
from shapely.geometry import box

from geodino.adapter import make_adapter
from geodino.errors import InputError, WeightsError
from geodino.heads import build_canopy_model, get_head, random_decoder_state_dict
from geodino.labels import Labels, load_labels
from geodino.landcover import HEAD_FORMAT, LinearHead, load_head, train_head
from geodino.models.multiband import BandMixer
from geodino.reader import SceneReader
from geodino.scene import open_scene
from geodino.sensors import get_preset
from geodino.tiling import Tile
from tests.scenes import TRANSFORM, PatchProbe, write_raster


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# -- non-finite pixels ---------------------------------------------------------------------------


def _float_scene(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 64x64 float32 RGB scene, 3% of its pixels +inf in band 1, plus one NaN, one -inf in single bands."""
    rng = np.random.default_rng(0)
    data = rng.uniform(100, 200, (3, 64, 64)).astype(np.float32)
    bad = np.zeros((64, 64), bool)
    bad.flat[rng.choice(64 * 64, 123, replace=False)] = True  # 3%
    data[0][bad] = np.inf
    data[2, 0, 1], data[1, 0, 2] = np.nan, -np.inf  # non-finite in one band only
    bad[0, 1] = bad[0, 2] = True
    return write_raster(tmp_path / "f.tif", data), data, bad


def test_nonfinite_pixels_are_invalid_and_left_out_of_the_stretch(tmp_path: Path) -> None:
    src, data, bad = _float_scene(tmp_path)
    a = make_adapter(open_scene(src))
    assert a.preset == "generic" and (a.nonfinite_sampled, a.sampled) == (bad.sum(), 64 * 64)
    assert f"{bad.sum()} of 4096 sampled pixels non-finite (masked)" in a.stretch
    assert all(np.isfinite(a.lo)) and all(np.isfinite(a.hi))
    good = data[:, ~bad].astype(np.float64)
    assert a.lo == pytest.approx(tuple(np.percentile(good, 2, axis=1))) and a.hi == pytest.approx(tuple(np.percentile(good, 98, axis=1)))
    assert np.array_equal(a.valid(data), ~bad)
    assert a.record()["nonfinite_sampled"] == bad.sum() and '"sampled":4096' in a.to_json()
    with SceneReader(open_scene(src), a) as reader:
        td = reader.read_tile(Tile(0, 0, 0, 0, 4, 16))
    assert np.isfinite(td.x).all() and np.array_equal(td.valid, ~bad) and (td.x[:, bad] == 0).all()


def test_float_scene_with_a_fixed_stretch_is_still_sampled(tmp_path: Path) -> None:
    src, _, bad = _float_scene(tmp_path)
    preset = tmp_path / "fixed.yaml"
    preset.write_text('name: fixed\nrgb: ["1", "2", "3"]\nstretch: {lo: 100, hi: 200}\n')
    a = make_adapter(open_scene(src), sensor=str(preset))
    assert (a.lo, a.hi) == ((100.0,) * 3, (200.0,) * 3) and (a.nonfinite_sampled, a.sampled) == (bad.sum(), 4096)
    assert "fixed stretch from the preset" in a.stretch and "non-finite (masked)" in a.stretch


def test_integer_scene_with_a_fixed_stretch_reads_no_sample(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "u8.tif", np.full((3, 16, 16), 9, np.uint8), photometric="RGB")
    a = make_adapter(open_scene(src), sensor="rgb8")  # all of 0-255 fits 0-1 after /255: nothing can clip
    assert (a.nonfinite_sampled, a.sampled) == (0, 0) and "no sample read" in a.stretch and a.clipped_low == (0.0,) * 3


# -- rasters geodino cannot encode ----------------------------------------------------------------


def test_complex_raster_is_refused(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "slc.tif", np.full((2, 8, 8), 1 + 2j, np.complex64))
    with pytest.raises(InputError) as err:
        open_scene(src)
    assert _one_line(err).startswith(f"{src} holds complex values (complex64): geodino needs real-valued bands")


@pytest.mark.parametrize("count", [1, 2])
def test_alpha_only_raster_is_refused(tmp_path: Path, count: int) -> None:
    src = write_raster(tmp_path / "alpha.tif", np.full((count, 8, 8), 255, np.uint8))
    with rasterio.open(src, "r+") as ds:
        ds.colorinterp = [ColorInterp.alpha] * count
    with pytest.raises(InputError) as err:
        open_scene(src)
    assert _one_line(err) == f"{src} has no image bands: its {count} band(s) are all alpha (transparency masks), nothing to encode"


def test_alpha_band_alone_is_dropped(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "rgba.tif", np.full((4, 8, 8), 255, np.uint8), photometric="RGB", alpha="YES")
    scene = open_scene(src)
    assert scene.band_names == ("red", "green", "blue") and scene.has_mask


# -- sensor presets -------------------------------------------------------------------------------


def _preset(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        get_preset(str(path))
    msg = _one_line(err)
    assert msg.startswith(f"sensor preset {path} is not valid: ")
    return msg.split(" is not valid: ", 1)[1]


BASE = 'name: p\nrgb: ["1", "2", "3"]\n'


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (BASE + "scale: .nan\n", "scale must be a finite non-zero number, not nan"),
        (BASE + "scale: .inf\n", "scale must be a finite non-zero number, not inf"),
        (BASE + "scale: 0\n", "scale must be a finite non-zero number, not 0"),
        (BASE + "offset: -.inf\n", "offset must be a finite number or 'auto', not -inf"),
        (BASE + "offset: automatic\n", "offset must be a finite number or 'auto', not 'automatic'"),
        (BASE + "stretch: {lo: 0.3, hi: 0.3}\n", "stretch lo 0.3 must be below hi 0.3"),
        (BASE + "stretch: {lo: 0, hi: .nan}\n", "stretch lo and hi must both be finite numbers, not 0 and nan"),
        (BASE + "stretch: {lo: 0}\n", "stretch lo and hi must both be finite numbers, not 0 and None"),
        (BASE + "stretch: {percentiles: [98, 2]}\n", "stretch percentiles must be [p, q] with 0 <= p < q <= 100, not [98, 2]"),
        (BASE + "stretch: {percentiles: [2, 101]}\n", "stretch percentiles must be [p, q] with 0 <= p < q <= 100"),
        (BASE + "stretch: {percentiles: [2, 98], lo: 0}\n", "stretch takes lo and hi, or percentiles, not both"),
        (BASE + "stretch: {low: 0, high: 1}\n", "unknown stretch key 'low'"),
        (BASE + "nodata: none\n", "nodata must be a number or null, not 'none'"),
        (BASE + "guess: maybe\n", "guess must be true or false, not 'maybe'"),
        (BASE + "bands: {3: [red, green]}\n", "bands 3 must be a list of 3 band names"),
        (BASE + "match: {dtypes: [uint8]}\n", "unknown match key 'dtypes' (known: dtype, count, products, metadata)"),
        (BASE + "match: {count: [three]}\n", "match count must be a band count or a list of them"),
        ("name: p\nrgb: []\n", "rgb must be a non-empty list of band names (strings)"),
        ("name: p\nrgb: red\n", "rgb must be a non-empty list of band names (strings)"),
        ("name: p\n", "rgb is missing"),
        ("- a\n- b\n", "it must hold a mapping of keys"),
        ("name: [p\n", "while parsing a flow sequence"),
    ],
)
def test_invalid_preset_is_refused_in_one_line(tmp_path: Path, text: str, error: str) -> None:
    assert error in _preset(tmp_path, text)


def test_every_preset_error_is_reported_together(tmp_path: Path) -> None:
    errors = _preset(tmp_path, "name: p\nrgb: []\nscale: .nan\ncolour: true\nstretch: {lo: 1, hi: 0}\n")
    assert errors == (
        "unknown key 'colour' (known: name, description, family, match, bands, standard_layout, rgb, scale, offset, nodata, "
        "stretch, guess); "
        "rgb must be a non-empty list of band names (strings); scale must be a finite non-zero number, not nan; "
        "stretch lo 1 must be below hi 0"
    )


def test_valid_preset_forms_still_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("name: ok\nrgb: [3, 2, 1]\nscale: 1e-4\nnodata: .nan\nmatch: {dtype: uint16, count: 4}\nstretch: {lo: 0, hi: 0.3}\n")
    p = get_preset(str(path))
    assert p.rgb == ("3", "2", "1") and p.scale == 1e-4 and np.isnan(p.nodata)  # type: ignore[arg-type]
    assert (p.match_dtype, p.match_count, p.stretch) == (("uint16",), (4,), {"lo": 0.0, "hi": 0.3})


# -- NaN/inf weights of heads and mixers ------------------------------------------------------------


def test_chmv2_head_with_nonfinite_weights_is_refused(tmp_path: Path) -> None:
    sd = random_decoder_state_dict(get_head("geodino_tiny_chmv2").decoder, seed=1)
    key = list(sd)[5]
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("inf")
    torch.save(sd, tmp_path / "head.pth")
    with pytest.raises(WeightsError) as err:
        build_canopy_model("geodino_tiny_chmv2", tmp_path / "head.pth", backbone_weights="random")
    assert _one_line(err) == f"checkpoint head.pth: tensor '{key}' holds NaN/inf values (a corrupt file or a diverged training run)"


def test_band_mixer_with_nonfinite_weights_is_refused(tmp_path: Path) -> None:
    mixer = BandMixer(4)
    with torch.no_grad():
        mixer.mix.bias[1] = float("nan")
    with pytest.raises(InputError) as err:
        BandMixer.load(mixer.save(tmp_path / "m.pt"))
    assert _one_line(err) == f"band mixer {tmp_path / 'm.pt'}: tensor 'mix.bias' holds NaN/inf values"


# -- land-cover head files ----------------------------------------------------------------------------


def _blob(**changes: object) -> dict:
    info = {"format": HEAD_FORMAT, "classes": [1, 2], "names": ["a", "b"], "model": "patch-probe", "layers": [0]}
    blob = {"info": info, "dim": 6, "state_dict": LinearHead(6, 2).state_dict()}
    for key, value in changes.items():
        if key in blob:
            blob[key] = value
        else:
            info[key] = value
    return blob


def test_a_well_formed_head_loads(tmp_path: Path) -> None:
    torch.save(_blob(), tmp_path / "h.pt")
    head, info = load_head(tmp_path / "h.pt")
    assert head.bn.num_features == 6 and head.n_classes == 2 and info["names"] == ["a", "b"]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"classes": "ab", "names": ["a", "b"]}, "classes must be a list of 2 to 254 values, not 'ab'"),
        ({"classes": list(range(255)), "names": [str(i) for i in range(255)]}, "classes must be a list of 2 to 254 values"),
        ({"names": ["a"]}, "names must be a list of 2 strings, not ['a']"),
        ({"model": 3}, "model must be a spec name, not 3"),
        ({"layers": "0"}, "layers must be a non-empty list of block indexes, not '0'"),
        ({"dim": "6"}, "dim must be a positive integer, not '6'"),
        ({"dim": 6.0}, "dim must be a positive integer, not 6.0"),
        ({"state_dict": [1, 2]}, "state_dict must be a dict of tensors"),
        ({"state_dict": LinearHead(7, 2).state_dict()}, "its state dict does not fit dim 6 and 2 classes (bn.bias (7,) vs (6,)"),
        ({"state_dict": LinearHead(6, 3).state_dict()}, "its state dict does not fit dim 6 and 2 classes (conv.bias (3,) vs (2,)"),
    ],
)
def test_malformed_head_is_refused_in_one_line(tmp_path: Path, changes: dict, problem: str) -> None:
    torch.save(_blob(**changes), tmp_path / "h.pt")
    with pytest.raises(InputError) as err:
        load_head(tmp_path / "h.pt")
    assert _one_line(err).startswith(f"land-cover head {tmp_path / 'h.pt'} is not valid: {problem}")


def test_head_with_nonfinite_weights_is_refused(tmp_path: Path) -> None:
    blob = _blob()
    blob["state_dict"]["bn.running_var"][2] = float("inf")
    torch.save(blob, tmp_path / "h.pt")
    with pytest.raises(InputError) as err:
        load_head(tmp_path / "h.pt")
    assert _one_line(err).endswith("is not valid: tensor 'bn.running_var' holds NaN/inf values")


@pytest.mark.parametrize("blob", [[1, 2], {"info": [1]}, {"info": {"format": "other/1"}}])
def test_other_files_are_not_heads(tmp_path: Path, blob: object) -> None:
    torch.save(blob, tmp_path / "h.pt")
    with pytest.raises(InputError, match="is not a land-cover head written by geodino train-head"):
        load_head(tmp_path / "h.pt")


# -- labels and training ------------------------------------------------------------------------------


@pytest.fixture
def scene_path(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "s.tif", np.full((3, 20, 20), 100, np.uint8))


def test_float_label_raster_is_refused(tmp_path: Path, scene_path: Path) -> None:
    lab = write_raster(tmp_path / "lab.tif", np.ones((1, 20, 20), np.float32))
    with pytest.raises(InputError) as err:
        load_labels(open_scene(scene_path), lab)
    assert _one_line(err).startswith(f"label raster {lab} holds float32 values: class labels must be integers")


def test_label_raster_with_many_values_looks_continuous(tmp_path: Path, scene_path: Path) -> None:
    many = write_raster(tmp_path / "many.tif", np.arange(400, dtype=np.uint16).reshape(1, 20, 20) % 101)
    with pytest.raises(InputError) as err:
        load_labels(open_scene(scene_path), many)
    assert _one_line(err).startswith(f"label raster {many} holds 101 distinct values on the scene: it looks like continuous values")
    ok = write_raster(tmp_path / "ok.tif", np.arange(400, dtype=np.uint16).reshape(1, 20, 20) % 100)
    assert load_labels(open_scene(scene_path), ok).n_classes == 100


def test_more_than_254_classes_are_refused(tmp_path: Path, scene_path: Path) -> None:
    x0, y0 = TRANSFORM.c, TRANSFORM.f
    cells = [(i // 20, i % 20) for i in range(255)]
    polys = [box(x0 + 10 * c + 2, y0 - 10 * r - 8, x0 + 10 * c + 8, y0 - 10 * r - 2) for r, c in cells]
    gpd.GeoDataFrame({"class": range(255)}, geometry=polys, crs="EPSG:32633").to_file(tmp_path / "l.gpkg")
    with pytest.raises(InputError) as err:
        load_labels(open_scene(scene_path), tmp_path / "l.gpkg")
    assert _one_line(err).startswith(f"labels {tmp_path / 'l.gpkg'} give 255 classes: a head takes at most 254")


def _labels(n: int) -> Labels:
    pixels = (np.arange(400).reshape(20, 20) % n).astype(np.int16)
    return Labels(pixels, tuple(range(n)), tuple(str(i) for i in range(n)), "made.tif", None)


@pytest.mark.parametrize("epochs", [0, -3])
def test_train_head_needs_at_least_one_epoch(scene_path: Path, epochs: int) -> None:
    with pytest.raises(InputError, match=f"^epochs must be >= 1, not {epochs}$"):
        train_head(open_scene(scene_path), _labels(2), PatchProbe(), epochs=epochs)  # type: ignore[arg-type]


def test_train_head_refuses_more_than_254_classes(scene_path: Path) -> None:
    with pytest.raises(InputError) as err:
        train_head(open_scene(scene_path), _labels(255), PatchProbe())  # type: ignore[arg-type]
    assert _one_line(err).startswith("labels made.tif give 255 classes: a head takes 2 to 254")
