"""The top-level Python API: each function from a fresh interpreter, errors in keyword words, and its maps.

Fresh processes matter here: ``geodino``'s top-level names resolve on first use, so a name that works only after
another test imported its module would pass in-process and fail for a user.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr
from affine import Affine

import geodino
from geodino.engine import EncodeOptions, encode_scene
from geodino.errors import InputError, api_words
from geodino.features import FeatureExtractor
from geodino.labels import PALETTE
from geodino.models import build_model
from geodino.predict_runs import train_run
from geodino.synthetic import write_scene
from tests.scenes import TRANSFORM, write_raster
from tests.test_predict import two_class_scene

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "geodino_tiny_mlp", "weights": "random"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scene.tif, features f.tif, the two-class scene two.tif with labels.gpkg, and a head trained on it (fixture_head.pt)."""
    d = tmp_path_factory.mktemp("api")
    write_scene(d / "scene.tif", 200, 150)
    encode_scene(d / "scene.tif", d / "f.tif", FeatureExtractor(build_model("geodino_tiny_mlp", "random"), device="cpu"), EncodeOptions())
    src, labels = two_class_scene(d)
    with pytest.warns(UserWarning, match="RANDOM"):
        train_run(src, labels, d / "fixture_head.pt", model="geodino_tiny_mlp", weights="random", layers="-1", epochs=20)
    return d


FRESH = {
    "open_scene": "da = geodino.open_scene('scene.tif'); s = da.geodino.scene\n"
    "assert da.dims == ('band', 'y', 'x') and da.chunks and type(s).__name__ == 'Scene' and s.shape == (200, 150)\n"
    "assert da.isel(y=slice(16, 48), x=slice(32, 96)).geodino.scene.offset == (16, 32)",
    "encode": "f = geodino.encode('scene.tif', model='geodino_tiny_mlp', weights='random')\n"
    "assert f.dims == ('feature', 'y', 'x') and f.chunks and f.shape[1:] == (13, 10)\n"
    "assert np.isfinite(f.compute().values).all()",
    "canopy_height": "h = geodino.canopy_height('scene.tif', 'h.tif', head='geodino_tiny_chmv2', weights='random', tile=64, overlap=16)\n"
    "assert h.dims == ('y', 'x') and h.chunks and h.shape == (200, 150) and h.attrs['geodino']['product'] == 'canopy_height'\n"
    "assert float(h.min()) >= 0",
    "train_head": "r = geodino.train_head('two.tif', 'labels.gpkg', 'head.pt', model='geodino_tiny_mlp', weights='random', layers='-1',"
    " epochs=20, tile=64, overlap=16)\n"
    "assert r.head.is_file() and r.labels.names == ('field', 'water')",
    "land_cover": "c = geodino.land_cover('two.tif', 'lc.tif', head='fixture_head.pt', weights='random', tile=64, overlap=16)\n"
    "assert c.chunks and c.attrs['class_names'] == ['field', 'water'] and c.attrs['colours'] == [[31, 119, 180], [255, 127, 14]]\n"
    "assert set(np.unique(c.values)) <= {0.0, 1.0}",
    "open_features": "f = geodino.open_features('f.tif')\nassert f.dims == ('feature', 'y', 'x') and f.chunks and f.rio.crs",
    "pca_rgb": "rgb = geodino.pca_rgb(geodino.open_features('f.tif'))\nassert rgb.shape == (3, 13, 10) and rgb.rio.crs",
    "similarity": "s = geodino.similarity(geodino.open_features('f.tif'), (2, 3), crs='pixel')\nassert abs(float(s[2, 3]) - 1) < 1e-5",
    "kmeans": "k = geodino.kmeans(geodino.open_features('f.tif'), 3)\nassert k.attrs['clusters'] == 3 and k.values.max() == 2",
    "plot": "import matplotlib\nmatplotlib.use('Agg')\nax = geodino.plot(geodino.open_scene('scene.tif'))\n"
    "ax.figure.savefig('p.png')\nassert ax.get_xlabel().startswith('easting (km')",
    # the interactive map is built with the network unreachable: its layers are PNGs inside it, tiles load in a browser
    "explore": "import socket\ndef refuse(*a, **k): raise OSError('no network here')\n"
    "socket.socket.connect = refuse; socket.create_connection = refuse\n"
    "m = geodino.explore({'scene': geodino.open_scene('scene.tif'), 'PCA': geodino.open_features('f.tif')})\n"
    "html = m.get_root().render()\nassert html.count('L.imageOverlay') == 2 and 'data:image/png;base64' in html",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FRESH))
def test_each_top_level_function_works_in_a_fresh_interpreter(name: str, files: Path) -> None:
    code = f"import numpy as np\nimport geodino\n{FRESH[name]}\nprint('ok')"
    r = subprocess.run([sys.executable, "-c", code], cwd=files, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_every_name_the_api_lists_resolves() -> None:
    wanted = {"open_scene", "encode", "canopy_height", "train_head", "land_cover", "open_features", "pca_rgb", "similarity",
              "kmeans", "plot", "explore", "open_prediction"}  # fmt: skip
    assert wanted <= set(geodino.__all__)
    assert all(callable(getattr(geodino, n)) for n in wanted)
    assert geodino.explore.__module__ == "geodino.figures"  # not shadowed by a submodule of that name


def test_errors_of_api_calls_name_keyword_arguments(files: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        geodino.encode(files / "scene.tif", **TINY, sensor="landsat8-c2l1")
    assert "sensor='landsat8-c2l1' takes uint16 data" in str(exc.value) and "--" not in str(exc.value)
    with pytest.raises(InputError, match=r"^epochs=0: give at least 1$"):
        geodino.train_head(files / "two.tif", files / "labels.gpkg", tmp_path / "h.pt", **TINY, epochs=0)
    (tmp_path / "h.tif").write_bytes(b"")
    with pytest.raises(InputError, match=r"exists: pass overwrite=True to replace it"):
        geodino.canopy_height(files / "scene.tif", tmp_path / "h.tif", head="geodino_tiny_chmv2", weights="random")
    with pytest.raises(InputError, match=r"^layers='x': give block indexes"):
        geodino.encode(files / "scene.tif", **{**TINY, "layers": "x"})


def test_api_words_rewrites_options_and_keeps_quoted_commands() -> None:
    assert api_words("pass --sensor (one of a, b) or --sensor generic with --bands 4,3,2.") == (
        "pass sensor= (one of a, b) or sensor='generic' with bands='4,3,2'."
    )
    assert api_words("use --gsd 0.6, --tile 256, --no-check-hash or --allow-clipping") == (
        "use gsd=0.6, tile=256, check_hash=False or allow_clipping=True"
    )
    download = "run 'geodino download x --url URL', pass --weights PATH, or use --weights random"
    assert api_words(download) == "run 'geodino download x --url URL', pass weights=PATH, or use weights='random'"
    example = "say which with --bands, e.g. geodino encode a.tif b.tif OUT.tif --bands 1,2,3, or pass --sensor"
    assert api_words(example) == "say which with bands=, e.g. bands='1,2,3', or pass sensor="


def _agg() -> None:
    import matplotlib

    matplotlib.use("Agg")


def test_class_maps_use_the_cog_palette_with_one_swatch_per_class(files: Path, tmp_path: Path) -> None:
    _agg()
    import matplotlib.pyplot as plt

    out = tmp_path / "lc.tif"
    classes = geodino.land_cover(files / "two.tif", out, head=files / "fixture_head.pt", weights="random", tile=64, overlap=16)
    with rasterio.open(out) as ds:
        table = ds.colormap(1)
    legend = geodino.plot(classes).get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["field", "water"]
    swatches = [tuple(round(c * 255) for c in p.get_facecolor()[:3]) for p in legend.get_patches()]
    assert swatches == [table[0][:3], table[1][:3]]
    clusters = geodino.kmeans(geodino.open_features(files / "f.tif"), 6)
    clusters = clusters.where(clusters != 5, 4)  # cluster 5 left empty: still 6 swatches, as k-means gave 6 clusters
    clusters.attrs["clusters"] = 6
    legend = geodino.plot(clusters.astype(np.int32).rename("cluster")).get_legend()
    assert len(legend.get_texts()) == 6
    assert [tuple(round(c * 255) for c in p.get_facecolor()[:3]) for p in legend.get_patches()] == PALETTE[:6]
    plt.close("all")


def test_nodata_is_transparent_and_two_maps_share_limits(tmp_path: Path) -> None:
    _agg()
    import matplotlib.pyplot as plt

    from geodino.figures import look

    data = np.full((3, 32, 48), 120, np.uint8)
    data[:, :, 40:] = 0  # nodata collar
    data[0, 5, 5] = 0  # one band at 0 is data
    src = write_raster(tmp_path / "collar.tif", data, nodata=0)
    _, lk = look(geodino.open_scene(src))
    assert (lk.rgba[:, 40:, 3] == 0).all() and (lk.rgba[:, :40, 3] == 1).all()
    values = xr.DataArray(np.linspace(0, 30, 32 * 48, dtype=np.float32).reshape(32, 48), dims=("y", "x"), name="height")
    values = values.assign_coords(y=TRANSFORM.f - 10 * (np.arange(32) + 0.5), x=TRANSFORM.c + 10 * (np.arange(48) + 0.5))
    values = values.where(values > 3).rio.write_crs("EPSG:32633")
    ax = geodino.plot(values, vmin=0, vmax=40)
    image = ax.get_images()[0]
    assert (image.norm.vmin, image.norm.vmax) == (0, 40) and image.get_array().mask.sum() == int(values.isnull().sum())
    assert image.get_cmap().get_bad()[3] == 0  # masked cells drawn transparent, not black
    ax.figure.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert 2 <= len(ticks) <= 5 and all(len(t) <= 7 for t in ticks)  # few short labels (km), no overlap
    plt.close("all")


def test_explore_draws_named_layers_with_a_layer_control(files: Path) -> None:
    import folium

    feats = geodino.open_features(files / "f.tif")
    m = geodino.explore({"PCA": feats, "similarity": geodino.similarity(feats, (2, 3), crs="pixel")}, cmap="magma")
    kinds = [type(c).__name__ for c in m._children.values()]
    assert kinds.count("ImageOverlay") == 2 and kinds.count("LayerControl") == 1
    again = geodino.explore(feats, map=m)  # added to the same map, without a second layer control
    assert again is m and [type(c).__name__ for c in m._children.values()].count("LayerControl") == 1
    assert isinstance(m, folium.Map)
    with pytest.raises(InputError, match="has no CRS"):
        geodino.explore(xr.DataArray(np.zeros((4, 4)), dims=("y", "x"), name="plain"))


def test_scene_value_of_a_crop(files: Path) -> None:
    da = geodino.open_scene(files / "scene.tif")
    part = da.isel(y=slice(16, 80), x=slice(32, 96))
    scene = part.geodino.scene
    assert scene.offset == (16, 32) and scene.shape == (64, 64)
    assert scene.transform == Affine(1.0, 0.0, float(part.x[0]) - 0.5, 0.0, -1.0, float(part.y[0]) + 0.5)
