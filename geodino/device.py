"""Where and in which precision a model runs: device names and autocast, checked before any work."""

from __future__ import annotations

import contextlib

import torch

from geodino import choices
from geodino.errors import InputError

#: The torch dtype of each precision name (the names: :data:`geodino.choices.PRECISIONS`).
PRECISIONS = dict(zip(choices.PRECISIONS, (torch.float32, torch.bfloat16, torch.float16), strict=True))


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU; otherwise the named device (checked:
    :func:`geodino.choices.check_device`, and present here)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(choices.check_device(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} asked for but CUDA is not available here: use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device} asked for but MPS is not available here: use --device cpu")
    return dev


def check_precision(precision: str) -> str:
    return choices.check_choice("--precision", precision, choices.PRECISIONS)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """Autocast to bf16/fp16 on ``device``; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])
