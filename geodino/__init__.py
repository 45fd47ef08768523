"""geodino: georeferenced DINOv3 features and predictions for satellite and aerial scenes."""

from geodino.errors import GeodinoError, InputError, SpecError, WeightsError
from geodino.models import build_model, get_spec, list_models

__version__ = "0.1.0"

__all__ = ["GeodinoError", "InputError", "SpecError", "WeightsError", "__version__", "build_model", "get_spec", "list_models"]
