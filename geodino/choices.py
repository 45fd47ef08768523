"""The fixed sets of values geodino's options take: one owner of each list, for the library (which checks what
its callers pass) and the command line (which offers them as typed choices with shell completion).

Pure values and checks: no torch, GDAL or numpy, so the command line can build its options without them.
"""

from __future__ import annotations

import re

from geodino.errors import InputError

#: Output formats: a Cloud-Optimized GeoTIFF or a Zarr store.
FORMATS = ("cog", "zarr")
#: Data types of written rasters; uint8 for class rasters only.
DTYPES = ("float32", "float16", "uint8")
#: Data types of feature rasters (features are never integers).
FEATURE_DTYPES = ("float32", "float16")
#: Numeric precision of the model's forward pass (autocast), see :mod:`geodino.device`.
PRECISIONS = ("fp32", "bf16", "fp16")
#: Device names without an index; ``cuda:N`` names the N-th GPU.
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Checkpoint layouts: Meta's ``.pth`` or a Hugging Face folder.
LAYOUTS = ("meta", "hf")

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def is_device(name: str) -> bool:
    """Whether ``name`` is one of :data:`DEVICES` or ``cuda:N``."""
    return _DEVICE.fullmatch(name) is not None


def check_device(name: str) -> str:
    """``name`` when it is a device geodino runs on (:func:`is_device`), else one line naming the choices."""
    if not is_device(name):
        raise InputError(f"unknown device {name!r}: use {', '.join(DEVICES)} or cuda:N")
    return name


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``, else one line naming ``option`` and the choices."""
    if value not in choices:
        raise InputError(f"{option} {value!r}: use one of {', '.join(choices)}")
    return value
