"""Where and in which precision a model runs: device names and autocast, checked before any work."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import torch

from geodino.errors import InputError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU; otherwise the named device (checked)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} asked for but CUDA is not available here: use --device cpu")
    return dev


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """Autocast to bf16/fp16 on ``device``; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


#: glibc's mallopt parameter for the number of malloc arenas.
M_ARENA_MAX = -8


def limit_malloc_arenas(n: int = 2) -> bool:
    """Keep glibc to ``n`` malloc arenas in this process (call before threads start). The reader, compression and
    torch threads each get an arena by default, and freed row blocks linger in them: peak memory then grows with
    the scene's width (measured: tiny model 8192 vs 2048 px, 1.24-1.30 -> 1.18). No-op (False) without glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and libc.mallopt(M_ARENA_MAX, n))
    except (OSError, AttributeError):
        return False


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def trim_free_memory() -> None:
    """Hand memory freed since the last call back to the system (glibc's ``malloc_trim``; no-op without glibc): row
    blocks of a long run would otherwise stay resident in the allocator's free lists."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
