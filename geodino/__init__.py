"""geodino: georeferenced DINOv3 features and predictions for satellite and aerial scenes."""

from geodino.errors import GeodinoError, InputError, SpecError, WeightsError

__version__ = "0.1.0"

__all__ = [
    "BandChoice",
    "GeodinoError",
    "InputError",
    "Job",
    "SpecError",
    "TileModel",
    "Tiling",
    "Tokens",
    "TorchTileModel",
    "WeightsError",
    "__version__",
    "build_model",
    "canopy_height",
    "canopy_run",
    "encode",
    "encode_run",
    "explore",
    "get_spec",
    "kmeans",
    "land_cover",
    "land_cover_run",
    "list_models",
    "open_features",
    "open_prediction",
    "open_scene",
    "pca_rgb",
    "plot",
    "prepare_job",
    "similarity",
    "train_head",
    "train_run",
]

_LAZY = {"open_scene": "geodino.api", "encode": "geodino.api", "encode_run": "geodino.runs"}
_LAZY |= dict.fromkeys(["open_features", "pca_rgb", "similarity", "kmeans"], "geodino.featuremaps")
_LAZY |= dict.fromkeys(["plot", "explore"], "geodino.figures")
_LAZY |= dict.fromkeys(["canopy_height", "train_head", "land_cover", "open_prediction"], "geodino.predictions")
_LAZY |= dict.fromkeys(["TileModel", "TorchTileModel", "Tokens"], "geodino.tilemodel")
_LAZY |= dict.fromkeys(["Job", "Tiling", "BandChoice", "prepare_job"], "geodino.job")
_LAZY |= dict.fromkeys(["canopy_run", "train_run", "land_cover_run"], "geodino.predict_runs")
_LAZY |= dict.fromkeys(["build_model", "get_spec", "list_models"], "geodino.models")  # torch: imported on first use


def __getattr__(name: str) -> object:
    """The API (:mod:`geodino.api`, :mod:`geodino.predictions`, :mod:`geodino.featuremaps`, :mod:`geodino.figures`,
    :mod:`geodino.models`, ...), imported on first use: a
    command starts without torch, xarray or dask until it needs them (``geodino --help`` in a fraction of a second)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geodino' has no attribute {name!r}")
