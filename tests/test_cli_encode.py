"""``geodino encode`` and ``geodino info`` from the shell: progress, summary, and one-line errors that leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from tests.helpers import one_line_error as assert_one_line_error
from tests.helpers import run
from tests.scenes import TRANSFORM, coordinate_raster, write_raster

TINY = ("--model", "geodino_tiny_mlp", "--weights", "random")


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "scene.tif", coordinate_raster(150, 170))


def test_encode_writes_the_raster_and_prints_progress_and_a_summary(tmp_path: Path, scene: Path) -> None:
    out = tmp_path / "out" / "feat.tif"
    out.parent.mkdir()
    result = run("encode", scene, out, *TINY, "--tile", "64", "--overlap", "16", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "RANDOM weights" in result.stderr and "12/12 tiles" in result.stderr and "tiles/s" in result.stderr
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 3 and summary[0].startswith(f"wrote {out}: 11x10 cells x 64 bands, EPSG:32633, 12 tiles")
    assert summary[1] == f"wrote {out}.json: STAC item" and (out.parent / "feat.tif.json").is_file()
    assert summary[2] == "preset: generic (scene-wide percentile stretch): 3 unnamed bands in file order"
    assert "geodino: note: scene.tif: its 3 bands carry no names or colour interpretation" in result.stderr
    with rasterio.open(out) as ds:
        assert ds.transform == TRANSFORM @ Affine.scale(16) and ds.count == 64
    assert sorted(p.name for p in out.parent.iterdir()) == ["feat.tif", "feat.tif.json"]


def test_info_describes_grid_bands_preset_plan_and_memory(scene: Path) -> None:
    result = run("info", scene, "--tile", "64", "--overlap", "16")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "170x150 px, 3 bands uint16, EPSG:32633, pixel 10 x 10" in out
    assert (
        "preset     generic (scene-wide percentile stretch): 3 unnamed bands in file order" in out
        and "11x10 cells, pixel 160 x 160" in out
        and "3x4 = 12 tiles of 64 px" in out
    )
    assert "GiB for dinov3_vitl16_sat493m" in out and "percentiles 2-98" in out


def bad_inputs(tmp_path: Path, scene: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    nogeo = write_raster(tmp_path / "nogeo.tif", coordinate_raster(40, 40), transform=None, crs=None)
    rotated = write_raster(tmp_path / "rot.tif", coordinate_raster(40, 40), transform=TRANSFORM @ Affine.rotation(10))
    five = write_raster(tmp_path / "five.tif", np.ones((5, 40, 40), np.float32))
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x17" * 300)
    existing = tmp_path / "existing.tif"
    existing.write_bytes(b"keep me")
    return {
        "no georeference": ([nogeo], ("has no georeference",)),
        "rotated": ([rotated], ("rotated or sheared", "gdalwarp")),
        "unmappable bands": (
            [five],
            ("cannot tell which bands of five.tif are red, green, blue", "1 (unknown)", "naip-rgbn", "--bands 1,2,3"),
        ),
        "tile": ([scene, "--tile", "100"], ("tile 100 must be a positive multiple of the patch size 16",)),
        "overlap": ([scene, "--tile", "64", "--overlap", "64"], ("overlap 64 must be smaller than the tile 64",)),
        "corrupt": ([corrupt], ("cannot read", "corrupt.tif")),
        "missing": ([tmp_path / "nope.tif"], ("scene not found",)),
        "existing": ([scene, "--out", existing], ("existing.tif exists: pass --overwrite",)),
        "bands": ([scene, "--bands", "B08,B04,B03"], ("no band B08, B04, B03 in scene.tif", "--bands 1,2,3")),
        "format": ([scene, "--format", "npy"], ("Invalid value for '--format': 'npy' is not one of cog, zarr",)),
        "precision": ([scene, "--precision", "fp8"], ("Invalid value for '--precision': 'fp8' is not one of fp32, bf16, fp16",)),
        "layers": ([scene, "--layers", "last"], ("--layers 'last'",)),
        "block index": ([scene, "--layers", "7"], ("block index 7 out of range for a model with 3 blocks",)),
    }


BAD = ("no georeference", "rotated", "unmappable bands", "tile", "overlap", "corrupt", "missing", "existing", "bands", "format")
BAD += ("precision", "layers", "block index")


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path: Path, scene: Path, case: str) -> None:
    args, fragments = bad_inputs(tmp_path, scene)[case]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    if "--out" not in args:
        args = [*args, tmp_path / "feat.tif"]
    result = run("encode", *args, *TINY)
    assert_one_line_error(result, *fragments)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written, nothing touched
    if case == "existing":
        assert (tmp_path / "existing.tif").read_bytes() == b"keep me"


def test_a_scene_without_an_output_is_one_line(scene: Path) -> None:
    assert_one_line_error(run("encode", scene, *TINY), "give the scene and the output")


def test_a_scene_that_breaks_while_reading_leaves_nothing_behind(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "big.tif", coordinate_raster(512, 512), tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    data = src.read_bytes()
    broken = tmp_path / "broken.tif"
    broken.write_bytes(data[: len(data) * 2 // 3])  # header and first blocks fine, later blocks missing
    result = run("encode", broken, tmp_path / "feat.tif", *TINY, "--tile", "128", "--overlap", "0")
    assert_one_line_error(result, "cannot read", "broken.tif", "scene statistics")  # the scene-wide stretch reads first
    preset = tmp_path / "fixed.yaml"  # a fixed stretch holding all of uint16 needs no statistics: the failure comes mid-scene
    preset.write_text('name: fixed\nrgb: ["1", "2", "3"]\nscale: 1.0\nstretch: {lo: 0, hi: 65535}\n')
    result = run("encode", broken, tmp_path / "feat.tif", *TINY, "--tile", "128", "--overlap", "0", "--sensor", preset)
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.stderr.splitlines()[-1]  # after the random-weights warning and the progress bar
    assert last.startswith("geodino: error: cannot read") and "broken.tif at rows 256-384" in last, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "broken.tif", "fixed.yaml"]


def test_a_model_failure_mid_scene_removes_temporaries_and_keeps_the_old_output(tmp_path: Path, scene: Path) -> None:
    from geodino.engine import EncodeOptions, encode_scene
    from tests.scenes import PatchProbe

    out = tmp_path / "feat.tif"
    out.write_bytes(b"old result")
    with pytest.raises(RuntimeError, match="stand-in model failure"):
        encode_scene(scene, out, PatchProbe(fail_after=2), EncodeOptions(tile=64, overlap=16, batch_size=1, overwrite=True, tokens=True))
    assert out.read_bytes() == b"old result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feat.tif", "scene.tif"]


def test_a_model_failure_lets_running_reads_end_before_their_files_close(
    tmp_path: Path, scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reader threads still reading when the run stops must finish before the reader closes their datasets (GDAL
    handles freed under a running read crashed a SIGTERMed run with ``free(): invalid size``)."""
    import time

    from geodino.engine import EncodeOptions, encode_scene
    from geodino.reader import SceneReader
    from tests.scenes import PatchProbe

    events: list[str] = []
    read, close = SceneReader.read_tile, SceneReader.close

    def slow_read(self: SceneReader, tile: object) -> object:
        time.sleep(0.05)
        try:
            return read(self, tile)  # type: ignore[arg-type]
        finally:
            events.append("read")  # ended (or failed: its dataset closed under it)

    def closing(self: SceneReader) -> None:
        events.append("close")
        close(self)

    monkeypatch.setattr(SceneReader, "read_tile", slow_read)
    monkeypatch.setattr(SceneReader, "close", closing)
    with pytest.raises(RuntimeError, match="stand-in model failure"):
        encode_scene(scene, tmp_path / "f.tif", PatchProbe(fail_after=1), EncodeOptions(tile=64, overlap=16, batch_size=1))
    time.sleep(0.3)  # a read left running would end by now
    assert events.count("close") == 1 and events[-1] == "close", events  # no read after the files closed
    assert "read" in events


def test_the_output_name_decides_the_format_and_a_name_that_says_otherwise_is_refused(tmp_path: Path, scene: Path) -> None:
    """``encode scene.tif out.zarr`` once wrote a GeoTIFF named out.zarr, ``--format zarr out.tif`` a Zarr store named
    out.tif: neither opens where its name says."""
    import xarray as xr

    store = tmp_path / "f.zarr"
    result = run("encode", scene, store, *TINY, "--tile", "64", "--overlap", "16")
    assert result.exit_code == 0, result.output
    assert store.is_dir() and xr.open_zarr(store).features.shape == (64, 10, 11)
    refusals = {
        "x.tif": (["--format", "zarr"], ("--format zarr", "x.tif", "x.zarr")),
        "y.zarr": (["--format", "cog"], ("--format cog", "y.zarr", "y.tif")),
        "z.dat": ([], ("z.dat", ".tif", ".zarr", "--format")),
    }
    for name, (extra, fragments) in refusals.items():
        res = run("encode", scene, tmp_path / name, *TINY, *extra)
        assert_one_line_error(res, *fragments)
        assert not (tmp_path / name).exists()
    res = run("canopy-height", scene, tmp_path / "h.zarr", "--head", "geodino_tiny_chmv2", "--weights", "random")
    assert_one_line_error(res, "h.zarr", "COG", "h.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.zarr", "f.zarr.json", "scene.tif"]


def test_info_reads_geodino_s_own_outputs_back(tmp_path: Path, scene: Path) -> None:
    """``geodino info OUT`` on a COG or Zarr store geodino wrote says what it is and how it was made (it used to list
    1024 feature bands as scene bands of unknown identity)."""
    import json

    opts = (*TINY, "--tile", "64", "--overlap", "16")
    assert run("encode", scene, tmp_path / "f.tif", *opts, "--dtype", "float16").exit_code == 0
    assert run("encode", scene, tmp_path / "f.zarr", *opts).exit_code == 0
    text = run("info", tmp_path / "f.tif")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"output     {tmp_path / 'f.tif'}: a COG geodino 0.1.0 wrote on 20")
    assert lines[2].startswith("grid       11x10 cells x 64 bands float16 (IEEE half floats")
    assert lines[2].endswith("EPSG:32633, nodata nan")
    assert "model      geodino_tiny_mlp, weights RANDOM (the values carry no meaning)" in lines
    assert f"scene      {scene}" in lines
    docs = {}
    for name in ("f.tif", "f.zarr"):
        res = run("info", tmp_path / name, "--json")
        assert res.exit_code == 0, res.output
        docs[name] = json.loads(res.stdout)
    cog, zarr = docs["f.tif"], docs["f.zarr"]
    assert (cog["format"], zarr["format"]) == ("cog", "zarr") and cog["schema"] == zarr["schema"] == "geodino-output-info/1"
    for doc in (cog, zarr):
        g = doc["grid"]
        assert (g["width"], g["height"], g["bands"], g["crs"], g["nodata"]) == (11, 10, 64, "EPSG:32633", "nan")
        assert g["band_names"][0] == "L2_0000" and doc["record"]["model"] == "geodino_tiny_mlp" and doc["record"]["tile"] == 64
    assert cog["record"]["adapter"] == zarr["record"]["adapter"] and cog["record"]["dtype"] == "float16"
    differ = {k for k in {*cog["record"], *zarr["record"]} if cog["record"].get(k) != zarr["record"].get(k)}
    # what differs is the run, not the record's form: when, the dtype, and a streamed run's stages or a block run's blocks
    assert differ <= {"created", "dtype", "storage", "seconds_before_finish", "tiles_skipped_empty", "blocks", "completion"}, differ
