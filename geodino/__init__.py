"""geodino: georeferenced DINOv3 features and predictions for satellite and aerial scenes."""

from geodino.errors import GeodinoError, InputError, SpecError, WeightsError
from geodino.models import build_model, get_spec, list_models

__version__ = "0.1.0"

__all__ = [
    "GeodinoError",
    "InputError",
    "SpecError",
    "WeightsError",
    "__version__",
    "build_model",
    "encode",
    "get_spec",
    "kmeans",
    "list_models",
    "open_features",
    "open_scene",
    "pca_rgb",
    "plot",
    "similarity",
]

_LAZY = {"open_scene": "geodino.api", "encode": "geodino.api"}
_LAZY |= dict.fromkeys(["open_features", "pca_rgb", "similarity", "kmeans", "plot"], "geodino.explore")


def __getattr__(name: str) -> object:
    """The notebook API (:mod:`geodino.api`, :mod:`geodino.explore`), imported on first use: the CLI starts without xarray/dask."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geodino' has no attribute {name!r}")
